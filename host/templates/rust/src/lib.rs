//! {{name}}: records each event it receives once, and answers how many events one
//! subject has had. Change it into your plugin: subscriptions, tables, handler, reads.

use eventhost_plugin::db::{execute, query};
use eventhost_plugin::{export_plugin, Event, HandlerError, Migration, Request, Response, Value};
use serde_json::json;

struct Plugin;

impl eventhost_plugin::Handler for Plugin {
    fn subscriptions() -> Vec<String> {
        vec!["#".into()]
    }

    /// Effects must be idempotent: the same event may arrive twice.
    fn handle(event: Event) -> Result<(), HandlerError> {
        execute(
            "INSERT INTO events_seen (source, event_id, event_type, subject) VALUES ($1, $2, $3, $4)
             ON CONFLICT (source, event_id) DO NOTHING",
            &[event.source.into(), event.id.into(), event.type_.into(), event.subject.into()],
        )?;
        Ok(())
    }
}

impl eventhost_plugin::Migrations for Plugin {
    fn migrations() -> Vec<Migration> {
        vec![Migration {
            version: 1,
            name: "events_seen".into(),
            sql: "CREATE TABLE events_seen (
                      source     text NOT NULL,
                      event_id   text NOT NULL,
                      event_type text NOT NULL,
                      subject    text NOT NULL,
                      seen_at    timestamptz NOT NULL DEFAULT now(),
                      PRIMARY KEY (source, event_id)
                  )"
            .into(),
        }]
    }
}

impl eventhost_plugin::Reader for Plugin {
    /// `GET subjects/{subject}`: how many events that subject has had.
    fn read(request: Request) -> Response {
        let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
        let ["subjects", subject] = segments.as_slice() else {
            return Response::no_route(&request.method, &request.path);
        };
        match query(
            "SELECT count(*)::int AS events FROM events_seen WHERE subject = $1",
            &[(*subject).into()],
        ) {
            Ok(rows) => {
                let events = rows.into_objects().remove(0).remove("events");
                Response::json(200, &json!({ "subject": subject, "events": events }))
            }
            Err(e) => Response::json(500, &json!({ "error": e.reason() })),
        }
    }
}

export_plugin!(Plugin);
