//! `GET /admin/plugins` (what serves, which version, its subscriptions and state) and
//! `POST /admin/plugins/reload` (scan the plugin directory now).

use super::ApiState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;

pub async fn list(State(state): State<Arc<ApiState>>) -> Response {
    Json(json!({ "plugins": state.registry.statuses() })).into_response()
}

pub async fn reload(State(state): State<Arc<ApiState>>) -> Response {
    state.rescan.notify_one();
    (
        StatusCode::ACCEPTED,
        Json(json!({ "status": "scanning the plugin directory; see GET /admin/plugins" })),
    )
        .into_response()
}
