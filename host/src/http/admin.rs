//! `GET /admin/plugins` (what serves, which version, its subscriptions and state) and
//! `POST /admin/plugins/reload` (scan the plugin directory now). Mutating routes need the
//! configured bearer token; without one configured they are disabled, not open.

use super::{error, ApiState};
use crate::config::Secret;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;

pub async fn list(State(state): State<Arc<ApiState>>) -> Response {
    Json(json!({ "plugins": state.registry.statuses() })).into_response()
}

/// Checks `Authorization: Bearer <token>` against the configured token, in constant time.
pub fn authorize(configured: Option<&Secret>, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(token) = configured else {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "the admin API is disabled: set http.admin_token or EVENTHOST_ADMIN_TOKEN",
        )));
    };
    if bearer_matches(token, headers) {
        return Ok(());
    }
    let mut denied = error(
        StatusCode::UNAUTHORIZED,
        "a valid admin bearer token is required",
    );
    denied.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    Err(Box::new(denied))
}

/// Whether the request carries `Authorization: Bearer <token>`, compared in constant time.
pub(super) fn bearer_matches(token: &Secret, headers: &HeaderMap) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    same(given.as_bytes(), token.expose().as_bytes())
}

/// Compares the digests, so the time taken says nothing about where the values differ or
/// how long the token is.
pub(super) fn same(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

pub async fn reload(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    if let Err(denied) = authorize(state.admin_token.as_ref(), &headers) {
        return *denied;
    }
    state.rescan.notify_one();
    (
        StatusCode::ACCEPTED,
        Json(json!({ "status": "scanning the plugin directory; see GET /admin/plugins" })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        headers
    }

    #[test]
    fn admin_routes_need_the_token_and_are_off_without_one() {
        let token = Secret::new("correct-horse-battery".into());
        assert!(authorize(Some(&token), &bearer("correct-horse-battery")).is_ok());
        for headers in [bearer("correct-horse-batter"), bearer(""), HeaderMap::new()] {
            let denied = authorize(Some(&token), &headers).unwrap_err();
            assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
        }
        let off = authorize(None, &bearer("anything")).unwrap_err();
        assert_eq!(off.status(), StatusCode::FORBIDDEN);
    }
}
