//! audit-log: an append-only record of every event, one row per event id, and a read
//! hook that lists one aggregate's events in the order they happened.

use eventhost_plugin::db::{execute, query};
use eventhost_plugin::{export_plugin, Event, HandlerError, Migration, Request, Response, Value};
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

/// CloudEvents ids are any string, unique together with the source.
const ANY_EVENT_ID: &str = "
ALTER TABLE audit_events ALTER COLUMN event_id TYPE text;
ALTER TABLE audit_events DROP CONSTRAINT audit_events_event_id_key;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_source_event_id_key UNIQUE (source, event_id);
";

impl eventhost_plugin::Handler for AuditLog {
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
             ON CONFLICT (source, event_id) DO NOTHING",
            &[
                Value::Text(event.id),
                Value::Text(event.type_),
                Value::Text(event.source),
                Value::Text(event.aggregate_type),
                Value::Text(event.subject),
                Value::Int32(event.schema_version as i32),
                Value::Timestamp(event.time),
                Value::Json(event.data),
                Value::json(&Json::Object(headers)),
            ],
        )?;
        Ok(())
    }
}

impl eventhost_plugin::Migrations for AuditLog {
    fn migrations() -> Vec<Migration> {
        vec![
            Migration {
                version: 1,
                name: "audit_events".into(),
                sql: SCHEMA.into(),
            },
            Migration {
                version: 2,
                name: "any_event_id".into(),
                sql: ANY_EVENT_ID.into(),
            },
        ]
    }
}

impl eventhost_plugin::Reader for AuditLog {
    /// `GET events/{aggregate_type}/{aggregate_id}`: that aggregate's events, oldest first.
    fn read(req: Request) -> Response {
        let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
        match (req.method.as_str(), segments.as_slice()) {
            ("GET" | "HEAD", ["events", aggregate_type, aggregate_id]) => {
                list_events(aggregate_type, aggregate_id)
            }
            _ => Response::no_route(&req.method, &req.path),
        }
    }
}

fn list_events(aggregate_type: &str, aggregate_id: &str) -> Response {
    let rows = query(
        "SELECT event_id, event_type, source, schema_version, occurred_at, payload, headers, recorded_at
         FROM audit_events WHERE aggregate_type = $1 AND aggregate_id = $2
         ORDER BY occurred_at, seq",
        &[aggregate_type.into(), aggregate_id.into()],
    );
    match rows {
        Ok(rows) => Response::json(
            200,
            &json!({ "aggregateType": aggregate_type, "aggregateId": aggregate_id, "events": rows.into_objects() }),
        ),
        Err(e) => Response::json(
            500,
            &json!({ "error": format!("{} {}", e.code, e.message) }),
        ),
    }
}

export_plugin!(AuditLog);
