//! The reference auth service: registers and changes users over HTTP JSON, writing each
//! change and its event in one transaction (see [`users`]). It is what the seeds' auth
//! services did by hand, and what the `auth` import's HTTP backend can point at.

pub mod users;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;
use std::sync::Arc;
use users::{Producer, UserError};
use uuid::Uuid;

struct AppState {
    pool: PgPool,
    source: String,
}

pub fn router(pool: PgPool, source: String) -> Router {
    Router::new()
        .route("/auth/register", post(register))
        .route("/auth/users/{id}", get(get_user))
        .route("/auth/users/{id}/deactivate", post(deactivate))
        .route("/auth/users/{id}/activate", post(activate))
        .route("/auth/users/{id}/role", post(set_role))
        .with_state(Arc::new(AppState { pool, source }))
}

/// An error answer: status and `{"error": "..."}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<UserError> for ApiError {
    fn from(e: UserError) -> Self {
        let status = match &e {
            UserError::EmailTaken(_) => StatusCode::CONFLICT,
            UserError::NotFound(_) => StatusCode::NOT_FOUND,
            UserError::Database(_) | UserError::Outbox(_) => {
                tracing::error!(error = %e, "auth service request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError(status, e.to_string())
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| bad_request(format!("user id {id:?} is not a UUID")))
}

/// Every POST must be JSON (`application/json` or `application/*+json`), or carry no
/// body and no content type at all. What an HTML form can send (urlencoded, multipart,
/// `text/plain`) is refused with 415, so a page on another site cannot register or change
/// users through a visitor's browser: a JSON post from elsewhere needs a CORS preflight,
/// which this service never grants.
fn json_only(headers: &HeaderMap, body: &Bytes) -> Result<(), ApiError> {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("?").to_string());
    let Some(content_type) = content_type else {
        if body.is_empty() {
            return Ok(());
        }
        return Err(unsupported(
            "a request body needs Content-Type: application/json",
        ));
    };
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let json = media == "application/json"
        || media
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"));
    if json {
        Ok(())
    } else {
        Err(unsupported(&format!(
            "Content-Type {content_type:?} is not accepted: send application/json"
        )))
    }
}

fn unsupported(message: &str) -> ApiError {
    ApiError(StatusCode::UNSUPPORTED_MEDIA_TYPE, message.into())
}

/// Parses a JSON body ourselves so a missing field is a 400 that names it.
fn parse_body<T: for<'de> Deserialize<'de>>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, ApiError> {
    json_only(headers, body)?;
    serde_json::from_slice(body).map_err(|e| bad_request(format!("invalid request body: {e}")))
}

/// Continues the caller's W3C trace (same trace id, a new span id) when it sent one.
fn traceparent(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    let parts: Vec<&str> = value.trim().split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    match parts.as_slice() {
        [version, trace, parent, flags]
            if hex(version, 2)
                && hex(trace, 32)
                && hex(parent, 16)
                && hex(flags, 2)
                && *trace != "0".repeat(32) =>
        {
            let span = &crate::outbox::new_traceparent()[36..52];
            Some(format!("00-{}-{span}-{flags}", trace.to_ascii_lowercase()))
        }
        _ => None,
    }
}

fn producer<'a>(state: &'a AppState, headers: &HeaderMap) -> Producer<'a> {
    Producer {
        source: &state.source,
        // The request's own span when traces are exported, else the caller's trace with
        // a new span id.
        traceparent: crate::telemetry::current_traceparent().or_else(|| traceparent(headers)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterRequest {
    email: String,
    name: String,
    #[serde(default)]
    role: Option<String>,
}

fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    email.len() <= 254
        && !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn valid_role(role: &str) -> Result<(), ApiError> {
    let ok = !role.is_empty()
        && role.len() <= 64
        && role
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(bad_request(
            "role must be 1-64 lowercase letters, digits, '_' or '-'",
        ))
    }
}

async fn register(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: RegisterRequest = parse_body(&headers, &body)?;
    let email = request.email.trim().to_lowercase();
    if !valid_email(&email) {
        return Err(bad_request(format!(
            "email {:?} is not a valid address",
            request.email
        )));
    }
    let name = request.name.trim();
    // Characters, not bytes: "Zoë" is three.
    if name.is_empty() || name.chars().count() > 200 {
        return Err(bad_request("name must be 1-200 characters"));
    }
    let role = request.role.as_deref().unwrap_or("user");
    valid_role(role)?;
    let user =
        users::register(&state.pool, &producer(&state, &headers), &email, name, role).await?;
    tracing::info!(user_id = %user.id, "user registered");
    Ok((StatusCode::CREATED, Json(json!({ "id": user.id }))).into_response())
}

async fn get_user(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<users::User>, ApiError> {
    Ok(Json(users::get(&state.pool, parse_id(&id)?).await?))
}

async fn deactivate(
    state: State<Arc<AppState>>,
    headers: HeaderMap,
    id: Path<String>,
    body: Bytes,
) -> Result<Json<users::User>, ApiError> {
    set_active(state, headers, id, body, false).await
}

async fn activate(
    state: State<Arc<AppState>>,
    headers: HeaderMap,
    id: Path<String>,
    body: Bytes,
) -> Result<Json<users::User>, ApiError> {
    set_active(state, headers, id, body, true).await
}

async fn set_active(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
    active: bool,
) -> Result<Json<users::User>, ApiError> {
    json_only(&headers, &body)?;
    let id = parse_id(&id)?;
    let user = users::set_active(&state.pool, &producer(&state, &headers), id, active).await?;
    Ok(Json(user))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleRequest {
    role: String,
}

async fn set_role(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<users::User>, ApiError> {
    let id = parse_id(&id)?;
    let request: RoleRequest = parse_body(&headers, &body)?;
    valid_role(&request.role)?;
    let user = users::set_role(&state.pool, &producer(&state, &headers), id, &request.role).await?;
    Ok(Json(user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_checked() {
        assert!(valid_email("ann@example.com"));
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "a b@example.com",
            "a@b@c.com",
        ] {
            assert!(!valid_email(bad), "{bad}");
        }
    }

    #[test]
    fn incoming_trace_is_continued_with_a_new_span() {
        let mut headers = HeaderMap::new();
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        headers.insert("traceparent", incoming.parse().unwrap());
        let tp = traceparent(&headers).unwrap();
        assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert_ne!(tp, incoming);
        assert!(tp.ends_with("-01"));
        headers.insert("traceparent", "garbage".parse().unwrap());
        assert_eq!(traceparent(&headers), None);
    }
}
