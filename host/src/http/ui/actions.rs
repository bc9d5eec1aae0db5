//! The dashboard's POSTs: sign in and out, reload the plugin directory, replay dead
//! letters and outbox dead rows. Each checks the session's CSRF token (or the bearer
//! token); replays ask for confirmation first and then run the CLI's own code.

use super::pages;
use super::session::{self, csrf_ok, Access, SignInRefused};
use super::{dashboard, html, on_own_thread, ApiState};
use crate::broker::topology::PluginQueues;
use crate::consumer::dead_letters::{self, Selection};
use crate::consumer::holds;
use crate::outbox::ReplaySelector;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use std::sync::Arc;

/// A form's fields, repeated names (`id`) included.
type Fields = Vec<(String, String)>;

/// The urlencoded body, whatever its declared type (a bearer client may send none).
fn fields(body: &Bytes) -> Fields {
    form_urlencoded::parse(body).into_owned().collect()
}

fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn ids(fields: &Fields) -> Vec<String> {
    fields
        .iter()
        .filter(|(k, v)| k == "id" && !v.is_empty())
        .map(|(_, v)| v.clone())
        .collect()
}

/// The access of a request allowed to act, or the refusal.
fn actor(state: &ApiState, headers: &HeaderMap, fields: &Fields) -> Result<Access, Box<Response>> {
    let access = dashboard(state).sessions.access(headers);
    if !access.is_admin() {
        return Err(Box::new(super::super::error(
            StatusCode::UNAUTHORIZED,
            "sign in with the admin token at /ui/login",
        )));
    }
    if !csrf_ok(&access, field(fields, "csrf")) {
        return Err(Box::new(super::super::error(
            StatusCode::FORBIDDEN,
            "the form's CSRF token is missing or stale: reload the page and try again",
        )));
    }
    Ok(access)
}

/// The header a script (bearer token, no session) reads what an action did from.
pub const DONE_HEADER: &str = "x-eventhost-done";

/// After an action: back to `to`, with what was done kept as the session's notice for
/// the next page (and in [`DONE_HEADER`] for scripts).
fn done(state: &ApiState, headers: &HeaderMap, to: &str, what: &str) -> Response {
    dashboard(state).sessions.set_notice(headers, what);
    let mut answer = Redirect::to(to).into_response();
    if let Ok(value) = HeaderValue::from_str(what) {
        answer.headers_mut().insert(DONE_HEADER, value);
    }
    answer
}

pub async fn login(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = fields(&body);
    let sessions = &dashboard(&state).sessions;
    let given = field(&fields, "token").unwrap_or("");
    let id = match sessions.sign_in(given) {
        Ok(id) => id,
        Err(refused) => {
            let (status, message) = match refused {
                SignInRefused::WrongToken => {
                    (StatusCode::UNAUTHORIZED, "That is not the admin token.")
                }
                SignInRefused::TooManyFailures => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many failed sign-ins in the last minute; wait and try again.",
                ),
            };
            let login = pages::login(Some(message), sessions.can_sign_in());
            let page = pages::page("Sign in", &Access::None, login);
            return (status, html(page)).into_response();
        }
    };
    with_cookie(&headers, "/ui", &id, session::LIFETIME.as_secs())
}

/// A redirect to `to` that sets the session cookie (`max_age` 0 expires it). `Secure`
/// when the request came through a TLS-terminating proxy that says so.
fn with_cookie(headers: &HeaderMap, to: &str, value: &str, max_age: u64) -> Response {
    let tls = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = format!(
        "{}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        session::COOKIE,
        if tls { "; Secure" } else { "" }
    );
    let mut answer = Redirect::to(to).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        answer.headers_mut().insert(header::SET_COOKIE, value);
    }
    answer
}

pub async fn logout(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = fields(&body);
    if let Err(refused) = actor(&state, &headers, &fields) {
        return *refused;
    }
    dashboard(&state).sessions.sign_out(&headers);
    with_cookie(&headers, "/ui/login", "", 0)
}

pub async fn reload(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = fields(&body);
    if let Err(refused) = actor(&state, &headers, &fields) {
        return *refused;
    }
    state.rescan.notify_one();
    done(
        &state,
        &headers,
        "/ui",
        "Scanning the plugin directory now.",
    )
}

/// What a replay form selected: everything, or ids (none is an error to show).
fn selection(fields: &Fields) -> (bool, Vec<String>) {
    (field(fields, "scope") == Some("all"), ids(fields))
}

pub async fn replay_dead_letters(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(plugin): Path<String>,
    body: Bytes,
) -> Response {
    let fields = fields(&body);
    let access = match actor(&state, &headers, &fields) {
        Ok(access) => access,
        Err(refused) => return *refused,
    };
    let Ok(name) = crate::PluginName::parse(&plugin) else {
        return super::super::error(StatusCode::NOT_FOUND, format!("no plugin named {plugin:?}"));
    };
    let back = format!("/ui/dead/{name}");
    let (all, ids) = selection(&fields);
    if !all && ids.is_empty() {
        return done(
            &state,
            &headers,
            &back,
            "Nothing selected: tick the dead letters to replay.",
        );
    }
    if field(&fields, "confirm") != Some("yes") {
        let what = match all {
            true => format!("Replay every dead letter of {name} to its queue?"),
            false => format!(
                "Replay {} dead letter(s) of {name} to its queue?",
                ids.len()
            ),
        };
        let action = format!("/ui/dead/{name}/replay");
        let form = pages::confirm(&action, &what, &ids, all, &back, &access);
        return html(pages::page("Confirm replay", &access, form));
    }
    let board = dashboard(&state);
    let queues = PluginQueues::of(&board.consumer, name.as_str());
    let selection = match all {
        true => Selection::All,
        false => Selection::EventIds(ids),
    };
    let held = match holds::list(&state.pool, name.as_str()).await {
        Ok(held) => held
            .into_iter()
            .map(|h| h.head_event_id.to_string())
            .collect(),
        Err(e) => {
            return done(
                &state,
                &headers,
                &back,
                &format!("Replay failed: cannot read the held aggregates: {e}"),
            )
        }
    };
    let (broker, plugin, entry) = (board.broker.clone(), name.to_string(), queues.entry.clone());
    // One walk of the dead-letter queues at a time: letters another walk holds unacked
    // are invisible to this one, which would end early and leave them behind.
    let Ok(walk) = board.walks.clone().acquire_owned().await else {
        return done(
            &state,
            &headers,
            &back,
            "Replay failed: the host is stopping.",
        );
    };
    let replayed = on_own_thread(move || async move {
        let _walk = walk;
        let connection = crate::broker::connect(&broker, "eventhost dashboard")
            .await
            .map_err(|e| e.to_string())?;
        let done = dead_letters::replay(&connection, &plugin, &queues, &selection, &held).await;
        let _ = connection.close(200, "replayed".into()).await;
        done.map_err(|e| e.to_string())
    });
    match replayed.await {
        Ok(result) => {
            let mut what = format!(
                "Replayed {} dead letter(s) to {entry}.",
                result.replayed.len()
            );
            if !result.waiting.is_empty() {
                what.push_str(&format!(
                    " {} left in place: they wait behind a dead letter that is still held.",
                    result.waiting.len()
                ));
            }
            tracing::info!(plugin = %name, replayed = result.replayed.len(), "dead letters replayed from the dashboard");
            done(&state, &headers, &back, &what)
        }
        Err(e) => done(&state, &headers, &back, &format!("Replay failed: {e}")),
    }
}

pub async fn replay_outbox(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = fields(&body);
    let access = match actor(&state, &headers, &fields) {
        Ok(access) => access,
        Err(refused) => return *refused,
    };
    let (all, ids) = selection(&fields);
    let parsed: Result<Vec<uuid::Uuid>, _> = ids.iter().map(|id| id.parse()).collect();
    let Ok(uuids) = parsed else {
        return done(
            &state,
            &headers,
            "/ui",
            "Replay refused: an outbox event id is not a UUID.",
        );
    };
    if !all && uuids.is_empty() {
        return done(
            &state,
            &headers,
            "/ui",
            "Nothing selected: tick the outbox rows to replay.",
        );
    }
    if field(&fields, "confirm") != Some("yes") {
        let what = match all {
            true => "Put every dead outbox row back to pending?".to_string(),
            false => format!("Put {} dead outbox row(s) back to pending?", ids.len()),
        };
        let form = pages::confirm("/ui/outbox/replay", &what, &ids, all, "/ui#outbox", &access);
        return html(pages::page("Confirm replay", &access, form));
    }
    let selector = match all {
        true => ReplaySelector::All,
        false => ReplaySelector::Ids(uuids),
    };
    match crate::outbox::replay(&state.pool, &selector).await {
        Ok(n) => {
            tracing::info!(revived = n, "outbox dead rows replayed from the dashboard");
            done(
                &state,
                &headers,
                "/ui",
                &format!("Put {n} outbox row(s) back to pending."),
            )
        }
        Err(e) => done(&state, &headers, "/ui", &format!("Replay failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_read_repeated_ids() {
        let fields: Fields = vec![
            ("csrf".into(), "t".into()),
            ("id".into(), "a".into()),
            ("id".into(), "".into()),
            ("id".into(), "b".into()),
            ("scope".into(), "selected".into()),
        ];
        assert_eq!(
            selection(&fields),
            (false, vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(field(&fields, "csrf"), Some("t"));
        assert_eq!(field(&fields, "confirm"), None);
    }
}
