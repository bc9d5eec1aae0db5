//! audit-log: an append-only record of every event, one row per event id, and a read
//! hook that lists one aggregate's events in the order they happened.

wit_bindgen::generate!({ world: "plugin", path: "../../wit" });

use eventhost::plugin::db::{execute, query, DbError, Value};
use exports::eventhost::plugin::handler::{Event, HandlerError};
use exports::eventhost::plugin::migrations::Migration;
use exports::eventhost::plugin::reader::{Request, Response};
use serde_json::{json, Value as Json};

struct AuditLog;

const SCHEMA: &str = "
CREATE TABLE audit_events (
    -- Arrival order; breaks ties between events of one aggregate with the same time.
    seq            bigserial PRIMARY KEY,
    event_id       uuid NOT NULL UNIQUE,
    event_type     text NOT NULL,
    source         text NOT NULL,
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    schema_version integer NOT NULL,
    occurred_at    timestamptz NOT NULL,
    payload        jsonb NOT NULL,
    headers        jsonb NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_events_by_aggregate ON audit_events (aggregate_type, aggregate_id, occurred_at, seq);
";

impl exports::eventhost::plugin::handler::Guest for AuditLog {
    fn subscriptions() -> Vec<String> {
        vec!["#".into()]
    }

    fn handle(event: Event) -> Result<(), HandlerError> {
        let headers: serde_json::Map<String, Json> = event
            .headers
            .into_iter()
            .map(|(k, v)| (k, Json::String(v)))
            .collect();
        execute(
            "INSERT INTO audit_events (event_id, event_type, source, aggregate_type, aggregate_id,
                                       schema_version, occurred_at, payload, headers)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (event_id) DO NOTHING",
            &[
                Value::Uuid(event.id),
                Value::Text(event.type_),
                Value::Text(event.source),
                Value::Text(event.aggregate_type),
                Value::Text(event.subject),
                Value::Int32(event.schema_version as i32),
                Value::Timestamp(event.time),
                Value::Json(event.data),
                Value::Json(Json::Object(headers).to_string()),
            ],
        )
        .map_err(db_error)?;
        Ok(())
    }
}

fn db_error(err: DbError) -> HandlerError {
    let reason = format!("database error {}: {}", err.code, err.message);
    if err.code.starts_with("22") || err.code.starts_with("23") {
        HandlerError::Permanent(reason)
    } else {
        HandlerError::Retryable(reason)
    }
}

impl exports::eventhost::plugin::migrations::Guest for AuditLog {
    fn migrations() -> Vec<Migration> {
        vec![Migration {
            version: 1,
            name: "audit_events".into(),
            sql: SCHEMA.into(),
        }]
    }
}

impl exports::eventhost::plugin::reader::Guest for AuditLog {
    /// `GET events/{aggregate_type}/{aggregate_id}`: that aggregate's events, oldest first.
    fn read(req: Request) -> Response {
        let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
        match (req.method.as_str(), segments.as_slice()) {
            ("GET", ["events", aggregate_type, aggregate_id]) => {
                list_events(aggregate_type, aggregate_id)
            }
            _ => reply(
                404,
                json!({ "error": format!("no route for {} {}", req.method, req.path) }),
            ),
        }
    }
}

fn list_events(aggregate_type: &str, aggregate_id: &str) -> Response {
    let rows = query(
        "SELECT event_id, event_type, source, schema_version, occurred_at, payload, headers, recorded_at
         FROM audit_events WHERE aggregate_type = $1 AND aggregate_id = $2
         ORDER BY occurred_at, seq",
        &[Value::Text(aggregate_type.into()), Value::Text(aggregate_id.into())],
    );
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => return reply(500, json!({ "error": format!("{} {}", e.code, e.message) })),
    };
    let events: Vec<Json> = rows
        .rows
        .into_iter()
        .map(|row| {
            let fields = rows
                .columns
                .iter()
                .zip(row)
                .map(|(name, value)| (name.clone(), to_json(value)));
            Json::Object(fields.collect())
        })
        .collect();
    reply(
        200,
        json!({ "aggregateType": aggregate_type, "aggregateId": aggregate_id, "events": events }),
    )
}

fn to_json(v: Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Boolean(b) => Json::Bool(b),
        Value::Int32(i) => json!(i),
        Value::Int64(i) => json!(i),
        Value::Float64(f) => json!(f),
        Value::Text(s) | Value::Timestamp(s) | Value::Uuid(s) => Json::String(s),
        Value::Json(s) => serde_json::from_str(&s).unwrap_or(Json::String(s)),
        Value::Bytes(b) => json!(b),
    }
}

fn reply(status: u16, body: Json) -> Response {
    Response {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.to_string().into_bytes(),
    }
}

export!(AuditLog);
