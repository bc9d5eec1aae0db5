//! A test plugin that misbehaves on request. The event type picks the behaviour; `data`
//! carries the SQL for the `sql` case. No read hook: it also proves that hook is optional.

wit_bindgen::generate!({ world: "handler-plugin", path: "../../../wit" });

use eventhost::plugin::db::{execute, query, Value};
use exports::eventhost::plugin::handler::{Event, HandlerError};
use exports::eventhost::plugin::migrations::Migration;

struct Probe;

impl exports::eventhost::plugin::handler::Guest for Probe {
    fn subscriptions() -> Vec<String> {
        vec!["probe.#".into()]
    }

    fn handle(event: Event) -> Result<(), HandlerError> {
        match event.type_.as_str() {
            "probe.noop" => Ok(()),
            "probe.insert" => {
                execute(
                    "INSERT INTO notes (event_id) VALUES ($1)",
                    &[Value::Uuid(event.id)],
                )
                .map_err(|e| HandlerError::Retryable(e.message))?;
                Ok(())
            }
            // Permanent failure until `data.key` is in `allowed_keys`: a rejection that an
            // operator can fix (insert the key), then replay the dead letter.
            "probe.gated" => {
                let data: serde_json::Value = serde_json::from_str(&event.data)
                    .map_err(|e| HandlerError::Permanent(format!("data is not JSON: {e}")))?;
                let key = data["key"].as_str().unwrap_or_default().to_string();
                let found = query(
                    "SELECT 1 FROM allowed_keys WHERE key = $1",
                    &[Value::Text(key.clone())],
                )
                .map_err(|e| HandlerError::Retryable(e.message))?;
                if found.rows.is_empty() {
                    return Err(HandlerError::Permanent(format!(
                        "key {key:?} is not in allowed_keys"
                    )));
                }
                execute(
                    "INSERT INTO notes (event_id) VALUES ($1)",
                    &[Value::Uuid(event.id)],
                )
                .map_err(|e| HandlerError::Retryable(e.message))?;
                Ok(())
            }
            "probe.retry" => Err(HandlerError::Retryable("asked to retry".into())),
            "probe.permanent" => Err(HandlerError::Permanent("asked to fail".into())),
            "probe.loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "probe.memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
            }
            "probe.panic" => panic!("probe asked to panic"),
            // Writes a note, then runs each statement of `data` (a JSON list of SQL
            // strings) in order: ok only if all succeeded, else the first failure's SQLSTATE.
            "probe.sql" => {
                execute(
                    "INSERT INTO notes (event_id) VALUES ($1)",
                    &[Value::Uuid(event.id)],
                )
                .map_err(|e| HandlerError::Retryable(e.message))?;
                let statements: Vec<String> = serde_json::from_str(&event.data).map_err(|e| {
                    HandlerError::Permanent(format!("data must be a list of SQL strings: {e}"))
                })?;
                for sql in statements {
                    query(&sql, &[]).map_err(|e| {
                        HandlerError::Permanent(format!("{}: {}", e.code, e.message))
                    })?;
                }
                Ok(())
            }
            // Lifts the statement timeout it was given, then sleeps far past any deadline.
            "probe.sleep" => {
                execute("SET statement_timeout = 0", &[])
                    .map_err(|e| HandlerError::Permanent(e.message))?;
                query("SELECT pg_sleep(3600)", &[])
                    .map(|_| ())
                    .map_err(|e| HandlerError::Permanent(format!("{}: {}", e.code, e.message)))
            }
            other => Err(HandlerError::Permanent(format!("unknown probe {other}"))),
        }
    }
}

impl exports::eventhost::plugin::migrations::Guest for Probe {
    fn migrations() -> Vec<Migration> {
        vec![
            Migration {
                version: 1,
                name: "notes".into(),
                sql: "CREATE TABLE notes (event_id uuid PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())"
                    .into(),
            },
            Migration {
                version: 2,
                name: "allowed_keys".into(),
                sql: "CREATE TABLE allowed_keys (key text PRIMARY KEY)".into(),
            },
        ]
    }
}

export!(Probe);
