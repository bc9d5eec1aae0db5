//! The dashboard's POSTs: sign in and out, reload the plugin directory, replay dead
//! letters and outbox dead rows. Each checks the session's CSRF token (or the bearer
//! token); replays ask for confirmation first and then run the CLI's own code.

use super::pages;
use super::session::{self, csrf_ok, Access};
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

/// After an action: back to `to`, with what was done as a notice.
fn done(to: &str, what: &str) -> Response {
    Redirect::to(&url_with_notice(to, what)).into_response()
}

fn url_with_notice(to: &str, what: &str) -> String {
    let encoded: String = what
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("{to}?done={encoded}")
}

pub async fn login(State(state): State<Arc<ApiState>>, body: Bytes) -> Response {
    let fields = fields(&body);
    let sessions = &dashboard(&state).sessions;
    let given = field(&fields, "token").unwrap_or("");
    let Some(id) = sessions.sign_in(given) else {
        let page = pages::page(
            "Sign in",
            &Access::None,
            pages::login(Some("That is not the admin token."), sessions.can_sign_in()),
        );
        return (StatusCode::UNAUTHORIZED, html(page)).into_response();
    };
    let cookie = format!(
        "{}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}",
        session::COOKIE,
        session::LIFETIME.as_secs()
    );
    let mut answer = Redirect::to("/ui").into_response();
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
    let mut answer = Redirect::to("/ui/login").into_response();
    let expired = format!(
        "{}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0",
        session::COOKIE
    );
    if let Ok(value) = HeaderValue::from_str(&expired) {
        answer.headers_mut().insert(header::SET_COOKIE, value);
    }
    answer
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
    done("/ui", "Scanning the plugin directory now.")
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
        return done(&back, "Nothing selected: tick the dead letters to replay.");
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
                &back,
                &format!("Replay failed: cannot read the held aggregates: {e}"),
            )
        }
    };
    let (broker, plugin, entry) = (board.broker.clone(), name.to_string(), queues.entry.clone());
    let replayed = on_own_thread(move || async move {
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
            done(&back, &what)
        }
        Err(e) => done(&back, &format!("Replay failed: {e}")),
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
        return done("/ui", "Replay refused: an outbox event id is not a UUID.");
    };
    if !all && uuids.is_empty() {
        return done("/ui", "Nothing selected: tick the outbox rows to replay.");
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
            done("/ui", &format!("Put {n} outbox row(s) back to pending."))
        }
        Err(e) => done("/ui", &format!("Replay failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_travel_encoded_and_forms_read_repeated_ids() {
        assert_eq!(
            url_with_notice("/ui", "Put 2 row(s) <back>."),
            "/ui?done=Put%202%20row%28s%29%20%3Cback%3E."
        );
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
