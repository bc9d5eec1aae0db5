//! The host's HTTP API: plugin reads (`/plugins/<plugin>/<path>`), health and readiness,
//! Prometheus metrics and the plugin admin endpoints.

mod admin;
pub mod answer;
mod errors;
mod limits;
mod reads;
pub mod server;
pub mod ui;

pub use limits::RequestLimits;
pub use server::{ListenError, Listener};

use crate::config::HttpConfig;
use crate::consumer::{Consuming, Registry};
use crate::metrics::Metrics;
use crate::outbox::Relay;
use crate::supervisor::TaskHealth;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use sqlx::PgPool;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

pub struct ApiState {
    pub registry: Arc<Registry>,
    pub metrics: Metrics,
    pub pool: PgPool,
    /// The consumer's connection flag and running consumers; `None` when this process
    /// does not consume.
    pub consumer: Option<(Arc<AtomicBool>, Arc<Consuming>)>,
    /// Set once the plugin directory was scanned at start-up.
    pub plugins_scanned: Arc<AtomicBool>,
    /// Wakes the plugin directory watcher (`POST /admin/plugins/reload`).
    pub rescan: Arc<Notify>,
    pub relay: Option<Relay>,
    /// Bearer token of the mutating admin routes; `None` disables them.
    pub admin_token: Option<crate::config::Secret>,
    /// The supervised parts of the host; one that is down makes `/readyz` red.
    pub tasks: Arc<TaskHealth>,
    /// The dashboard at `/ui`; `None` when `http.ui = "off"`.
    pub dashboard: Option<Arc<ui::Dashboard>>,
}

pub fn router(state: ApiState, config: &HttpConfig) -> Router {
    let ui = match state.dashboard.is_some() {
        true => ui::routes(),
        false => Router::new(),
    };
    let api = Router::new()
        .route("/plugins/{plugin}/{*path}", get(reads::read))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/admin/plugins", get(admin::list))
        .route("/admin/plugins/reload", post(admin::reload))
        .merge(ui)
        .with_state(Arc::new(state));
    with_limits(api, config)
}

/// Every route of `router` under the body size cap and the request deadline, every error
/// (the framework's too) in the one JSON shape, and a span per request when traces are on.
pub fn with_limits(router: Router, config: &HttpConfig) -> Router {
    let limits = RequestLimits {
        max_body_bytes: config.max_body_bytes,
        request_timeout: config.request_timeout,
    };
    router
        .fallback(errors::no_route)
        .layer(axum::middleware::from_fn_with_state(
            limits,
            limits::enforce,
        ))
        .layer(axum::middleware::from_fn(errors::uniform))
        .layer(axum::middleware::from_fn(
            crate::telemetry::http::trace_request,
        ))
}

/// An error answer: status and `{"error": "..."}`.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Alive: the process answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready: PostgreSQL answers, RabbitMQ is connected (when consuming), the plugins were
/// loaded and each is consuming from its bound queue, and no supervised part of the host
/// is waiting to be restarted. 503 with the failing checks otherwise.
async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
    let database = crate::database::reachable(&state.pool).await;
    let broker = state
        .consumer
        .as_ref()
        .is_none_or(|(connected, _)| connected.load(Ordering::Relaxed));
    let names = state.registry.names();
    let consuming = state
        .consumer
        .as_ref()
        .is_none_or(|(_, c)| c.covers(names.iter().map(String::as_str)));
    // With the consumer on, ready means its plugins are loaded and consuming; with it off,
    // that the plugin directory was read (what it held serves reads).
    let scanned = state.plugins_scanned.load(Ordering::Relaxed);
    let plugins = match state.consumer {
        Some(_) => scanned && !names.is_empty() && consuming,
        None => scanned,
    };
    let down = state.tasks.down();
    let ready = database && broker && plugins && down.is_empty();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": ready,
        "checks": {
            "postgresql": database, "rabbitmq": broker, "plugins": plugins, "tasks": down.is_empty(),
        },
        "tasks_down": down,
        "plugins_loaded": names.len(),
    });
    (status, Json(body)).into_response()
}

/// Prometheus text 0.0.4, or OpenMetrics when the scraper's `Accept` asks for it.
async fn metrics(State(state): State<Arc<ApiState>>, headers: axum::http::HeaderMap) -> Response {
    let relay = state.relay.as_ref().map(|r| r.stats());
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = crate::metrics::Format::negotiate(accept);
    match state.metrics.render(&state.pool, relay, format).await {
        Ok(text) => ([(header::CONTENT_TYPE, format.content_type())], text).into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot read the outbox backlog: {e}"),
        ),
    }
}
