//! A server span per HTTP request on both listeners, continuing the caller's W3C trace
//! (`traceparent`), so a producer's request and the event it writes share one trace.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub async fn trace_request(request: Request, next: Next) -> Response {
    if !super::enabled() {
        return next.run(request).await;
    }
    let method = request.method().clone();
    // The route's pattern, never the raw path: a caller must not mint span names.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "(no route)".to_string());
    let span = tracing::info_span!(
        "http request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    let traceparent = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok());
    super::continue_trace(&span, traceparent);
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}
