//! `GET /plugins/<plugin>/<path>`: the plugin's read hook, in its own transaction and the
//! same sandbox as its handler (this is where on-read repair happens).

use super::{error, ApiState};
use crate::runtime::{Outcome, ReadRequest};
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use std::sync::Arc;

/// `GET` and `HEAD` (axum routes `HEAD` here and drops the body). A `HEAD` runs the hook
/// with method `HEAD` in a read-only transaction, so it cannot write (no on-read repair).
pub async fn read(
    method: Method,
    State(state): State<Arc<ApiState>>,
    Path((plugin, path)): Path<(String, String)>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let Some(slot) = state.registry.get(&plugin) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no plugin named {plugin:?} is loaded"),
        );
    };
    // Held for the whole read: a reload meanwhile does not change the version serving it.
    let plugin = slot.current();
    if !plugin.has_reader() {
        return error(
            StatusCode::NOT_FOUND,
            format!("plugin {} has no read hook", plugin.name()),
        );
    }
    let request = ReadRequest {
        method: if method == Method::HEAD {
            "HEAD"
        } else {
            "GET"
        }
        .into(),
        path,
        query,
    };
    let request_path = request.path.clone();
    let (result, _logs) = plugin.read(request).await;
    match result {
        Ok(answer) => {
            if answer.rows_written > 0 {
                let journal = state.registry.journal();
                journal.repaired(
                    plugin.name().as_str(),
                    &request_path,
                    answer.status,
                    answer.rows_written,
                );
            }
            super::answer::to_response(plugin.name().as_str(), answer)
        }
        // Traps, deadlines and an unreachable database: nothing was committed; try again.
        Err(outcome @ (Outcome::Aborted(_) | Outcome::Retryable(_))) => {
            error(StatusCode::SERVICE_UNAVAILABLE, outcome.to_string())
        }
        // The plugin's answer was refused (over a limit) or it broke a sandbox rule.
        Err(outcome) => error(StatusCode::BAD_GATEWAY, outcome.to_string()),
    }
}
