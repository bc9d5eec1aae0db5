//! The operator dashboard at `/ui`: plugins, flow, dead letters, outbox dead rows and
//! recent activity. Server-rendered HTML that reads fine with JavaScript off; a small
//! embedded script refreshes the live sections in place. Every action is a POST that
//! carries the session's CSRF token (or the bearer token), and goes through the same
//! code as the CLI command it mirrors.

mod actions;
mod chart;
pub mod history;
mod pages;
mod session;

pub use history::{History, Sources};
pub use session::Sessions;

use super::ApiState;
use crate::broker::topology::PluginQueues;
use crate::config::{BrokerConfig, ConsumerConfig, UiAccess};
use crate::consumer::dead_letters;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::Markup;
use pages::{Layout, PluginRow};
use session::Access;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Dead letters shown on a plugin's page at most.
const LETTERS_SHOWN: u32 = 200;
/// Outbox dead rows shown at most.
const DEAD_ROWS_SHOWN: u32 = 200;

/// What the dashboard needs beyond the API's state.
pub struct Dashboard {
    pub sessions: Sessions,
    pub history: Arc<History>,
    pub broker: BrokerConfig,
    pub consumer: ConsumerConfig,
    /// One walk over a dead-letter queue at a time (listing or replaying): each holds
    /// the letters it looked at unacknowledged, hidden from any other walk.
    walks: Arc<tokio::sync::Semaphore>,
}

impl Dashboard {
    pub fn new(
        token: Option<crate::config::Secret>,
        mode: UiAccess,
        history: Arc<History>,
        broker: BrokerConfig,
        consumer: ConsumerConfig,
    ) -> Self {
        Self {
            sessions: Sessions::new(token, mode),
            history,
            broker,
            consumer,
            walks: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }
}

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(|| async { Redirect::to("/ui") }))
        .route("/ui/login", get(login_form).post(actions::login))
        .route("/ui/logout", post(actions::logout))
        .route("/ui/part/{section}", get(part))
        .route("/ui/dead/{plugin}", get(dead_letters_page))
        .route(
            "/ui/dead/{plugin}/replay",
            post(actions::replay_dead_letters),
        )
        .route("/ui/outbox/replay", post(actions::replay_outbox))
        .route("/ui/reload", post(actions::reload))
        .route("/ui/assets/{file}", get(asset))
        .layer(axum::middleware::map_response(protect))
}

/// No framing, no sniffing, no caching, and scripts and styles only from the page's own
/// origin: even markup that slipped past escaping could not run a script.
async fn protect(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

fn dashboard(state: &ApiState) -> &Dashboard {
    state
        .dashboard
        .as_deref()
        .expect("the /ui routes exist only with a dashboard")
}

/// The request's access, or the answer to give instead (the sign-in page for a browser).
fn reader(state: &ApiState, headers: &HeaderMap) -> Result<Access, Box<Response>> {
    let access = dashboard(state).sessions.access(headers);
    if access.can_read() {
        Ok(access)
    } else {
        Err(Box::new(Redirect::to("/ui/login").into_response()))
    }
}

fn html(markup: Markup) -> Response {
    Html(markup.into_string()).into_response()
}

async fn login_form(State(state): State<Arc<ApiState>>) -> Response {
    let sessions = &dashboard(&state).sessions;
    let access = Access::None;
    html(pages::page(
        "Sign in",
        &access,
        pages::login(None, sessions.can_sign_in()),
    ))
}

/// The plugins as the dashboard lists them: loaded ones, and names whose only file was
/// refused.
fn plugin_rows(state: &ApiState) -> Vec<PluginRow> {
    let latest = dashboard(state).history.latest();
    let sampled = |name: &str| latest.as_ref().and_then(|s| s.plugins.get(name)).cloned();
    let mut rows: BTreeMap<String, PluginRow> = BTreeMap::new();
    let loading = state.registry.loading();
    let draining = state.registry.draining();
    let draining_of = |name: &str| -> Vec<String> {
        draining
            .iter()
            .filter(|d| d.plugin == name)
            .map(|d| d.version.clone())
            .collect()
    };
    for status in state.registry.statuses() {
        let sample = sampled(&status.name).unwrap_or_default();
        rows.insert(
            status.name.clone(),
            PluginRow {
                name: status.name.clone(),
                summary: state.metrics.plugin_summary(&status.name),
                refusal: status.last_error.clone(),
                loading: loading.contains(&status.name),
                draining: draining_of(&status.name),
                status: Some(status),
                depth: sample.depth,
            },
        );
    }
    // Names with no version serving: loading for the first time, or refused.
    let unloaded = |name: &str, refusal: Option<String>| PluginRow {
        name: name.to_string(),
        status: None,
        refusal,
        loading: loading.iter().any(|l| l == name),
        draining: draining_of(name),
        summary: Default::default(),
        depth: None,
    };
    for name in draining.iter().map(|d| &d.plugin).chain(&loading) {
        rows.entry(name.clone())
            .or_insert_with(|| unloaded(name, None));
    }
    for (name, reason) in state.registry.refused_now() {
        let row = rows
            .entry(name.clone())
            .or_insert_with(|| unloaded(&name, None));
        if row.status.is_none() {
            row.refusal = Some(reason);
        }
    }
    rows.into_values().collect()
}

fn layout(state: &ApiState) -> Layout {
    let consumer = &dashboard(state).consumer;
    Layout {
        partitions: consumer.partitions,
        concurrency: consumer.concurrency,
    }
}

/// One section's inner HTML (the live updates fetch these).
async fn section(state: &ApiState, access: &Access, name: &str) -> Option<Markup> {
    let board = dashboard(state);
    Some(match name {
        "plugins" => pages::plugins(&plugin_rows(state), &layout(state), access),
        "flow" => pages::flow(&board.history.samples(), &state.registry.names()),
        // Names and the sampled depth only: no counters or percentiles to compute again.
        "dead-letters" => {
            let latest = board.history.latest();
            let plugins: Vec<(String, Option<u64>)> = state
                .registry
                .names()
                .into_iter()
                .map(|name| {
                    let dead = latest.as_ref().and_then(|s| s.plugins.get(&name)?.dead);
                    (name, dead)
                })
                .collect();
            pages::dead_letter_index(&plugins)
        }
        "outbox" => match crate::outbox::dead_rows(&state.pool, DEAD_ROWS_SHOWN).await {
            Ok(rows) => pages::outbox(&rows, access),
            Err(e) => pages::notice(&format!("cannot read the outbox: {e}")),
        },
        "activity" => pages::activity(
            &state.registry.journal().repairs(),
            &state.registry.journal().refusals(),
        ),
        _ => return None,
    })
}

const SECTIONS: [&str; 5] = ["plugins", "flow", "dead-letters", "outbox", "activity"];

async fn index(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    let access = match reader(&state, &headers) {
        Ok(access) => access,
        Err(answer) => return *answer,
    };
    let mut body = String::new();
    if let Some(done) = dashboard(&state).sessions.take_notice(&headers) {
        body.push_str(&pages::notice(&done).into_string());
    }
    for name in SECTIONS {
        if let Some(inner) = section(&state, &access, name).await {
            let part = format!("/ui/part/{name}");
            body.push_str(&pages::live(name, &part, inner).into_string());
        }
    }
    html(pages::page("Dashboard", &access, maud::PreEscaped(body)))
}

async fn part(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    // A script fetches these: no redirect to a page it cannot show.
    let access = dashboard(&state).sessions.access(&headers);
    if !access.can_read() {
        return super::error(StatusCode::UNAUTHORIZED, "sign in at /ui/login");
    }
    match section(&state, &access, &name).await {
        Some(inner) => html(inner),
        None => super::error(StatusCode::NOT_FOUND, format!("no section {name:?}")),
    }
}

async fn dead_letters_page(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(plugin): Path<String>,
) -> Response {
    let access = match reader(&state, &headers) {
        Ok(access) => access,
        Err(answer) => return *answer,
    };
    let Ok(name) = crate::PluginName::parse(&plugin) else {
        return super::error(StatusCode::NOT_FOUND, format!("no plugin named {plugin:?}"));
    };
    let board = dashboard(&state);
    let queues = PluginQueues::of(&board.consumer, name.as_str());
    let (broker, plugin) = (board.broker.clone(), name.to_string());
    let Ok(walk) = board.walks.clone().try_acquire_owned() else {
        let busy =
            pages::notice("A listing or replay of dead letters is running; reload in a moment.");
        return html(pages::page(
            &format!("Dead letters of {name}"),
            &access,
            busy,
        ));
    };
    let listed = on_own_thread(move || async move {
        let _walk = walk;
        let connection = crate::broker::connect(&broker, "eventhost dashboard")
            .await
            .map_err(|e| e.to_string())?;
        let letters = dead_letters::inspect(&connection, &plugin, &queues, LETTERS_SHOWN).await;
        let _ = connection.close(200, "dead letters shown".into()).await;
        letters.map_err(|e| e.to_string())
    });
    let body = match listed.await {
        Ok(letters) => pages::dead_letters(name.as_str(), &letters, &access),
        Err(e) => pages::notice(&format!("cannot read the dead letters: {e}")),
    };
    let notice = board
        .sessions
        .take_notice(&headers)
        .map(|n| pages::notice(&n));
    html(pages::page(
        &format!("Dead letters of {name}"),
        &access,
        maud::html! { @if let Some(n) = notice { (n) } (body) },
    ))
}

/// Runs the future `make` builds on one of the runtime's blocking threads. The
/// dead-letter walks hold borrows across an async closure, so their futures are not
/// `Send`, and axum's handlers must be.
async fn on_own_thread<T, F, Fut>(make: F) -> Result<T, String>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, String>>,
    T: Send + 'static,
{
    let handle = tokio::runtime::Handle::current();
    match tokio::task::spawn_blocking(move || handle.block_on(make())).await {
        Ok(result) => result,
        Err(e) => Err(format!("the broker work stopped: {e}")),
    }
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.js" => (
            include_str!("assets/app.js"),
            "text/javascript; charset=utf-8",
        ),
        "style.css" => (include_str!("assets/style.css"), "text/css; charset=utf-8"),
        _ => return super::error(StatusCode::NOT_FOUND, "no such asset"),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}
