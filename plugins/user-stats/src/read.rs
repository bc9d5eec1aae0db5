//! `GET stats/{user_id}` with on-read repair: a stats row that should exist but does
//! not (its event was lost, or came before this plugin) is created on first read.

use crate::payload::is_uuid;
use eventhost_plugin::auth::lookup_user;
use eventhost_plugin::db::{execute, query};
use eventhost_plugin::log::{log, Level};
use eventhost_plugin::{Request, Response, Value};
use serde_json::{json, Map, Value as Json};

const STATS_COLUMNS: &str =
    "user_id, active, role, bid_count, total_bid_amount::text AS total_bid_amount,
     created_via, user_created_at, created_at, updated_at";

pub fn route(req: Request) -> Response {
    let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    match (req.method.as_str(), segments.as_slice()) {
        // A HEAD runs read-only: a missing row is reported (500 on the refused repair),
        // never created.
        ("GET" | "HEAD", ["stats", user_id]) => get_stats(user_id),
        (_, ["stats", _]) => reply(405, json!({ "error": "only GET and HEAD are supported" })),
        _ => reply(
            404,
            json!({ "error": format!("no route for {}", req.path) }),
        ),
    }
}

fn get_stats(user_id: &str) -> Response {
    if !is_uuid(user_id) {
        return reply(
            400,
            json!({ "error": format!("user id must be a UUID, got {user_id:?}") }),
        );
    }
    let user_id = user_id.to_ascii_lowercase();
    match load(&user_id) {
        Ok(Some(stats)) => return reply(200, with_repaired(stats, false)),
        Ok(None) => {}
        Err(e) => return reply(500, json!({ "error": e })),
    }
    let user = match lookup_user(&user_id) {
        Ok(Some(user)) => user,
        Ok(None) => return reply(404, json!({ "error": format!("user {user_id} not found") })),
        Err(e) => return reply(503, json!({ "error": format!("auth lookup failed: {e}") })),
    };
    // Concurrent repairs of one user race here; the primary key lets exactly one insert win.
    let created = execute(
        "INSERT INTO user_stats (user_id, active, role, created_via, user_created_at)
         VALUES ($1, $2, $3, 'repair', $4::timestamptz)
         ON CONFLICT (user_id) DO NOTHING",
        &[
            Value::Uuid(user_id.clone()),
            Value::Boolean(user.active),
            Value::Text(user.role),
            Value::Text(user.created_at),
        ],
    );
    if let Err(e) = created {
        return reply(
            500,
            json!({ "error": format!("repair failed: {} {}", e.code, e.message) }),
        );
    }
    log(
        Level::Info,
        &format!("self-healing triggered for user {user_id}"),
    );
    match load(&user_id) {
        Ok(Some(stats)) => reply(200, with_repaired(stats, true)),
        Ok(None) => reply(500, json!({ "error": "repaired row vanished" })),
        Err(e) => reply(500, json!({ "error": e })),
    }
}

/// The stats row as a JSON object with camelCase keys, if it exists.
fn load(user_id: &str) -> Result<Option<Map<String, Json>>, String> {
    let sql = format!("SELECT {STATS_COLUMNS} FROM user_stats WHERE user_id = $1");
    let rows = query(&sql, &[Value::Uuid(user_id.to_string())])
        .map_err(|e| format!("stats lookup failed: {} {}", e.code, e.message))?;
    let Some(row) = rows.rows.into_iter().next() else {
        return Ok(None);
    };
    let mut out = Map::new();
    for (column, value) in rows.columns.iter().zip(row) {
        out.insert(camel_case(column), value.into_json());
    }
    Ok(Some(out))
}

fn with_repaired(mut stats: Map<String, Json>, repaired: bool) -> Json {
    stats.insert("repaired".into(), Json::Bool(repaired));
    Json::Object(stats)
}

fn camel_case(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn reply(status: u16, body: Json) -> Response {
    Response::json(status, &body)
}
