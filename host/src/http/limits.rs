//! Limits every request meets before its route: a body size cap (413) and a deadline for
//! the answer (503), both answered with the API's JSON error shape.

use super::error;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
}

pub async fn enforce(
    State(limits): State<RequestLimits>,
    request: Request,
    next: Next,
) -> Response {
    let deadline = limits.request_timeout;
    let answer = async {
        let request = match read_body(request, limits.max_body_bytes).await {
            Ok(request) => request,
            Err(refused) => return refused,
        };
        next.run(request).await
    };
    match tokio::time::timeout(deadline, answer).await {
        Ok(response) => response,
        // Dropping the route's future rolls back a plugin read's transaction.
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the request took longer than http.request_timeout ({deadline:?})"),
        ),
    }
}

/// Reads the body up to `max` bytes (a declared length over it is refused unread).
async fn read_body(request: Request, max: usize) -> Result<Request, Response> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than http.max_body_bytes ({max} bytes)"),
        )
    };
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(too_large());
    }
    let (parts, body) = request.into_parts();
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(Request::from_parts(parts, Body::from(collected.to_bytes()))),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body: {e}"),
        )),
    }
}
