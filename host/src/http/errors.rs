//! One error shape on every route and listener: `application/json` `{"error": "..."}`.
//! The host's own handlers answer so already; this catches what the framework answers by
//! itself (no such route, a method the route does not take, an extractor's rejection),
//! which would otherwise be an empty or plain-text body. A plugin's own answer is the
//! plugin's and passes untouched, and so do the dashboard's HTML pages.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::BodyExt;

/// What no route matched gets (the JSON shape, through `uniform`).
pub async fn no_route() -> axum::http::StatusCode {
    axum::http::StatusCode::NOT_FOUND
}

/// Marks a response as a plugin's read answer (see `answer::to_response`).
#[derive(Clone, Copy)]
pub struct PluginAnswer;

/// What the framework said, kept to this many bytes in the JSON error.
const DETAIL_BYTES: usize = 1024;

pub async fn uniform(request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let response = next.run(request).await;
    let status = response.status();
    // JSON is the shape already; HTML is the dashboard's own page (a sign-in refused,
    // say), meant for a person, never something the framework writes.
    let shaped = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if status.as_u16() < 400 || shaped || response.extensions().get::<PluginAnswer>().is_some() {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let said = match body_text(response.into_body()).await {
        Some(text) if !text.trim().is_empty() => text.trim().to_string(),
        _ => String::new(),
    };
    let message = match status.as_u16() {
        404 => format!("no route for {method} {path}"),
        405 => format!("{path} does not take {method}"),
        _ if !said.is_empty() => said,
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    let mut answer = super::error(status, message);
    if let Some(allow) = allow {
        answer.headers_mut().insert(header::ALLOW, allow);
    }
    if method == Method::HEAD {
        *answer.body_mut() = Body::empty();
    }
    answer
}

/// The body as text, at most `DETAIL_BYTES` of it (framework rejections are short).
async fn body_text(body: Body) -> Option<String> {
    let bytes = http_body_util::Limited::new(body, 64 << 10)
        .collect()
        .await
        .ok()?
        .to_bytes();
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(DETAIL_BYTES)]);
    Some(text.into_owned())
}
