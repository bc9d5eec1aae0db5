//! A test plugin that misbehaves on request: the hostile plugin of the sandbox tests. The
//! event type picks the behaviour and `data` carries its parameters; the read hook has
//! hostile paths too. Loaded under some names it also misbehaves at load (see
//! `subscriptions` and `migrations`), since those exports take no input.

wit_bindgen::generate!({ world: "plugin", path: "../../../wit" });

use eventhost::plugin::db::{execute, query, Value};
use eventhost::plugin::log::{log, Level};
use exports::eventhost::plugin::handler::{Event, HandlerError};
use exports::eventhost::plugin::migrations::Migration;
use exports::eventhost::plugin::reader::{Request, Response};
use serde_json::{json, Value as Json};

struct Probe;

/// Everything a session can carry to the next invocation, set at once.
const DIRTY_SESSION: &[&str] = &[
    "SELECT nextval('probe_seq')",
    "SET statement_timeout = 0",
    "SET lock_timeout = 0",
    "SET idle_in_transaction_session_timeout = 0",
    "SET search_path = public",
    "SET work_mem = '2GB'",
    "SELECT set_config('probe.marker', 'dirty', false)",
    "LISTEN probe_channel",
    "CREATE TEMP TABLE probe_tmp (x int)",
    "DECLARE probe_cursor CURSOR WITH HOLD FOR SELECT 1",
    "DO $$ BEGIN EXECUTE 'PREPARE probe_statement AS SELECT 1'; END $$",
];

/// What the session looks like from inside, as one JSON object.
const SESSION_REPORT: &str = "SELECT json_build_object(
    'statement_timeout', current_setting('statement_timeout'),
    'lock_timeout', current_setting('lock_timeout'),
    'idle_in_transaction_session_timeout', current_setting('idle_in_transaction_session_timeout'),
    'search_path', current_setting('search_path'),
    'work_mem', current_setting('work_mem'),
    'marker', coalesce(current_setting('probe.marker', true), ''),
    'listening', (SELECT count(*) FROM pg_listening_channels()),
    'temp_tables', (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()),
    'cursors', (SELECT count(*) FROM pg_cursors WHERE name <> ''),
    'prepared', (SELECT count(*) FROM pg_prepared_statements WHERE from_sql),
    'advisory_locks', (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()),
    'backend', pg_backend_pid()
)::text";

/// The plugin's own schema, which carries its name (`plugin_<name>`).
fn schema() -> String {
    query("SELECT current_schema()::text", &[])
        .ok()
        .and_then(|r| r.rows.into_iter().next())
        .and_then(|row| match row.into_iter().next() {
            Some(Value::Text(s)) => Some(s),
            _ => None,
        })
        .unwrap_or_default()
}

fn data(event: &Event) -> Result<Json, HandlerError> {
    serde_json::from_str(&event.data)
        .map_err(|e| HandlerError::Permanent(format!("data is not JSON: {e}")))
}

fn note(id: &str) -> Result<(), HandlerError> {
    execute(
        "INSERT INTO notes (event_id) VALUES ($1)",
        &[Value::Uuid(id.to_string())],
    )
    .map(drop)
    .map_err(|e| HandlerError::Retryable(e.message))
}

fn sql_error(e: eventhost::plugin::db::DbError) -> HandlerError {
    HandlerError::Permanent(format!("{}: {}", e.code, e.message))
}

fn report() -> Result<String, HandlerError> {
    let rows = query(SESSION_REPORT, &[]).map_err(sql_error)?;
    match rows
        .rows
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next())
    {
        Some(Value::Text(report)) => Ok(report),
        other => Err(HandlerError::Permanent(format!("no report: {other:?}"))),
    }
}

fn dirty() -> Result<(), HandlerError> {
    for sql in DIRTY_SESSION {
        execute(sql, &[]).map_err(sql_error)?;
    }
    Ok(())
}

/// Whether the event's `data.key` is in `allowed_keys` (`Err(key)` when it is not).
fn allowed_key(event: &Event) -> Result<Result<(), String>, HandlerError> {
    let key = data(event)?["key"].as_str().unwrap_or_default().to_string();
    let found = query(
        "SELECT 1 FROM allowed_keys WHERE key = $1",
        &[Value::Text(key.clone())],
    )
    .map_err(|e| HandlerError::Retryable(e.message))?;
    Ok(if found.rows.is_empty() {
        Err(key)
    } else {
        Ok(())
    })
}

impl exports::eventhost::plugin::handler::Guest for Probe {
    fn subscriptions() -> Vec<String> {
        // Loaded as `many-subs`: a flood of bindings.
        if schema().contains("many_subs") {
            return (0..20_000).map(|i| format!("probe.flood.{i}")).collect();
        }
        vec!["probe.#".into()]
    }

    fn handle(event: Event) -> Result<(), HandlerError> {
        match event.type_.as_str() {
            "probe.noop" => Ok(()),
            "probe.insert" => note(&event.id),
            // Permanent failure until `data.key` is in `allowed_keys`: a rejection that an
            // operator can fix (insert the key), then replay the dead letter.
            "probe.gated" => match allowed_key(&event)? {
                Ok(()) => note(&event.id),
                Err(key) => Err(HandlerError::Permanent(format!(
                    "key {key:?} is not in allowed_keys"
                ))),
            },
            "probe.retry" => Err(HandlerError::Retryable("asked to retry".into())),
            // Retryable until `data.key` is in `allowed_keys`: a transient failure the test
            // ends when it chooses (then it writes its note).
            "probe.wait-key" => match allowed_key(&event)? {
                Ok(()) => note(&event.id),
                Err(key) => Err(HandlerError::Retryable(format!("waiting for key {key:?}"))),
            },
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
                note(&event.id)?;
                let statements: Vec<String> = serde_json::from_str(&event.data).map_err(|e| {
                    HandlerError::Permanent(format!("data must be a list of SQL strings: {e}"))
                })?;
                for sql in statements {
                    query(&sql, &[]).map_err(sql_error)?;
                }
                Ok(())
            }
            // Lifts the statement timeout it was given, then sleeps far past any deadline.
            "probe.sleep" => {
                execute("SET statement_timeout = 0", &[]).map_err(sql_error)?;
                query("SELECT pg_sleep(3600)", &[])
                    .map(drop)
                    .map_err(sql_error)
            }
            // Leaves everything a session can keep for the next invocation, and commits.
            "probe.dirty-session" => dirty(),
            // Logs what its session carries, as JSON.
            "probe.session-report" => {
                log(Level::Info, &report()?);
                Ok(())
            }
            // Writes settings and a password on its own role.
            "probe.role-settings" => {
                for sql in [
                    "ALTER ROLE CURRENT_USER SET statement_timeout = 0",
                    "ALTER ROLE CURRENT_USER SET work_mem = '2GB'",
                    "DO $$ BEGIN EXECUTE format('ALTER ROLE CURRENT_USER IN DATABASE %I SET lock_timeout = 0', current_database()); END $$",
                    "ALTER ROLE CURRENT_USER PASSWORD 'chosen-by-the-plugin'",
                ] {
                    execute(sql, &[]).map_err(sql_error)?;
                }
                Ok(())
            }
            // `data`: {"key": n}. Tries to hold an advisory lock.
            "probe.advisory-lock" => {
                let key = data(&event)?["key"].as_i64().unwrap_or(0);
                query("SELECT pg_advisory_lock($1)", &[Value::Int64(key)])
                    .map(drop)
                    .map_err(sql_error)
            }
            // `data`: one SQL string meant to end the host's transaction. Writes a note
            // before and after it, then fails: nothing may stay committed.
            "probe.end-transaction" => {
                let sql = data(&event)?.as_str().unwrap_or_default().to_string();
                note(&event.id)?;
                let answer = execute(&sql, &[]);
                log(Level::Info, &format!("{sql:?} -> {answer:?}"));
                let _ = execute(
                    "INSERT INTO notes (event_id) VALUES (gen_random_uuid())",
                    &[],
                );
                Err(HandlerError::Retryable(
                    "failing after trying to end the transaction".into(),
                ))
            }
            // `data`: {"rows": n, "row_bytes": m}. Asks for n rows of m bytes each.
            "probe.huge-result" => {
                let d = data(&event)?;
                let rows = d["rows"].as_i64().unwrap_or(1);
                let bytes = d["row_bytes"].as_i64().unwrap_or(1) as i32;
                let got = query(
                    "SELECT repeat('x', $2::int4) FROM generate_series(1, $1::int8)",
                    &[Value::Int64(rows), Value::Int32(bytes)],
                )
                .map_err(sql_error)?;
                log(Level::Info, &format!("got {} rows", got.rows.len()));
                Ok(())
            }
            // `data`: {"count": n, "bytes": m}. Logs n messages of m bytes.
            "probe.log-flood" => {
                let d = data(&event)?;
                let message = "x".repeat(d["bytes"].as_u64().unwrap_or(1) as usize);
                for _ in 0..d["count"].as_u64().unwrap_or(1) {
                    log(Level::Info, &message);
                }
                Ok(())
            }
            // `data`: {"bytes": n}. Fails with a reason of n bytes.
            "probe.huge-reason" => {
                let n = data(&event)?["bytes"].as_u64().unwrap_or(1) as usize;
                Err(HandlerError::Permanent("r".repeat(n)))
            }
            // `data`: {"calls": n, "sleep_ms": m}. Makes n host calls, each sleeping m ms
            // in PostgreSQL (0: a trivial query): host time, not plugin CPU time.
            "probe.host-calls" => {
                let d = data(&event)?;
                let seconds = d["sleep_ms"].as_f64().unwrap_or(0.0) / 1000.0;
                for _ in 0..d["calls"].as_u64().unwrap_or(1) {
                    if seconds > 0.0 {
                        query("SELECT pg_sleep($1)", &[Value::Float64(seconds)])
                    } else {
                        query("SELECT 1", &[])
                    }
                    .map_err(sql_error)?;
                }
                Ok(())
            }
            other => Err(HandlerError::Permanent(format!("unknown probe {other}"))),
        }
    }
}

impl exports::eventhost::plugin::migrations::Guest for Probe {
    fn migrations() -> Vec<Migration> {
        let mut list = vec![
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
            Migration {
                version: 3,
                name: "a sequence".into(),
                sql: "CREATE SEQUENCE probe_seq".into(),
            },
        ];
        // Loaded as `alter-role`: its migration writes settings on its own role.
        if schema().contains("alter_role") {
            list.push(Migration {
                version: 4,
                name: "role settings".into(),
                sql: "ALTER ROLE CURRENT_USER SET statement_timeout = 0;
                      ALTER ROLE CURRENT_USER SET work_mem = '2GB';"
                    .into(),
            });
        }
        // Loaded as `stuck-migration`: a migration that outlasts any deadline, having
        // switched off the statement timeout first.
        if schema().contains("stuck_migration") {
            list.push(Migration {
                version: 4,
                name: "sleeps an hour".into(),
                sql: "SET statement_timeout = 0; SELECT pg_sleep(3600);".into(),
            });
        }
        list
    }
}

impl exports::eventhost::plugin::reader::Guest for Probe {
    /// `session`: the session report; `dirty`: dirties the session; `sleep/<ms>`: a slow
    /// read; `answer?status=&headers=&body=&h=name:value&text=`: writes a note, then
    /// answers with that status, that many headers (plus the `h` ones) and a body of that
    /// many bytes (or `text`); anything else: 200 "ok".
    fn read(request: Request) -> Response {
        let answer = |status: u16, body: String| Response {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into_bytes(),
        };
        let failed =
            |e: HandlerError| answer(500, json!({ "error": format!("{e:?}") }).to_string());
        match request.path.split_once('/').unwrap_or((&request.path, "")) {
            ("session", _) => report().map(|r| answer(200, r)).unwrap_or_else(failed),
            ("dirty", _) => dirty()
                .map(|()| answer(200, "{}".into()))
                .unwrap_or_else(failed),
            ("sleep", ms) => {
                let seconds = ms.parse::<f64>().unwrap_or(0.0) / 1000.0;
                query("SELECT pg_sleep($1)", &[Value::Float64(seconds)])
                    .map(|_| answer(200, "{}".into()))
                    .unwrap_or_else(|e| failed(sql_error(e)))
            }
            ("answer", _) => {
                let param = |key: &str| {
                    request
                        .query
                        .iter()
                        .find(|(k, _)| k == key)
                        .and_then(|(_, v)| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                if let Err(e) = execute(
                    "INSERT INTO notes (event_id) VALUES (gen_random_uuid())",
                    &[],
                ) {
                    return failed(sql_error(e));
                }
                // `h=name:value` (repeatable) adds a header of the plugin's choosing, and
                // `text=...` replaces the body.
                let chosen = request
                    .query
                    .iter()
                    .filter(|(k, _)| k == "h")
                    .filter_map(|(_, v)| v.split_once(':'))
                    .map(|(n, v)| (n.to_string(), v.to_string()));
                let text = request.query.iter().find(|(k, _)| k == "text");
                Response {
                    status: param("status") as u16,
                    headers: (0..param("headers"))
                        .map(|i| (format!("x-probe-{i}"), "v".into()))
                        .chain(chosen)
                        .collect(),
                    body: match text {
                        Some((_, t)) => t.clone().into_bytes(),
                        None => vec![b'x'; param("body") as usize],
                    },
                }
            }
            _ => answer(200, "\"ok\"".into()),
        }
    }
}

export!(Probe);
