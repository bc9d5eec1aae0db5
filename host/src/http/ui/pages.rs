//! The dashboard's HTML, server-rendered with maud: every value is escaped on the way
//! out, so a plugin's failure reason or an event body shows as text whatever it holds.
//! Each section renders on its own too, for the live updates.

use super::chart::sparkline;
use super::history::Sample;
use super::session::Access;
use crate::consumer::dead_letters::Inspected;
use crate::consumer::journal::{Refusal, Repair};
use crate::consumer::SlotStatus;
use crate::metrics::PluginSummary;
use crate::outbox::DeadRow;
use chrono::{DateTime, SecondsFormat, Utc};
use maud::{html, Markup, DOCTYPE};
use std::time::Duration;

/// One row of the plugins table.
pub struct PluginRow {
    pub name: String,
    /// `None` for a plugin whose file was refused before any version served.
    pub status: Option<SlotStatus>,
    pub refusal: Option<String>,
    /// A file of this name is loading now.
    pub loading: bool,
    /// Versions of it that stopped serving while work they began still runs.
    pub draining: Vec<String>,
    pub summary: PluginSummary,
    pub depth: Option<u64>,
}

/// The consumer's layout, shown beside each plugin.
pub struct Layout {
    pub partitions: u16,
    pub concurrency: u16,
}

fn time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn millis(d: Option<Duration>) -> String {
    d.map_or("–".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
}

fn count(n: Option<u64>) -> String {
    n.map_or("–".into(), |n| n.to_string())
}

fn csrf_field(access: &Access) -> Markup {
    html! { input type="hidden" name="csrf" value=(access.csrf()); }
}

/// The page around a body.
pub fn page(title: &str, access: &Access, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · eventhost" }
                link rel="stylesheet" href="/ui/assets/style.css";
                script src="/ui/assets/app.js" defer {}
            }
            body {
                header {
                    a.brand href="/ui" { "eventhost" }
                    nav {
                        a href="/ui#plugins" { "Plugins" }
                        a href="/ui#flow" { "Flow" }
                        a href="/ui#dead-letters" { "Dead letters" }
                        a href="/ui#outbox" { "Outbox" }
                        a href="/ui#activity" { "Activity" }
                    }
                    @if access.is_admin() && !access.csrf().is_empty() {
                        form.inline method="post" action="/ui/logout" {
                            (csrf_field(access))
                            button type="submit" { "Sign out" }
                        }
                    } @else if !access.is_admin() {
                        a.signin href="/ui/login" { "Sign in" }
                    }
                }
                main { (body) }
            }
        }
    }
}

pub fn login(message: Option<&str>, can_sign_in: bool) -> Markup {
    html! {
        section.login {
            h1 { "Sign in" }
            @if let Some(message) = message { p.notice.error { (message) } }
            @if can_sign_in {
                form method="post" action="/ui/login" {
                    label for="token" { "Admin token (" code { "http.admin_token" } ")" }
                    input #token type="password" name="token" autocomplete="current-password" required;
                    button type="submit" { "Sign in" }
                }
            } @else {
                p { "No admin token is configured: set " code { "http.admin_token" } " or "
                    code { "EVENTHOST_ADMIN_TOKEN" } " to use the dashboard." }
            }
        }
    }
}

/// A section that refreshes itself from `part` every few seconds (with JavaScript).
pub fn live(id: &str, part: &str, inner: Markup) -> Markup {
    html! { section id=(id) data-part=(part) { (inner) } }
}

pub fn notice(text: &str) -> Markup {
    html! { p.notice role="status" { (text) } }
}

pub fn plugins(rows: &[PluginRow], layout: &Layout, access: &Access) -> Markup {
    html! {
        h2 { "Plugins" }
        @if access.is_admin() {
            form.inline method="post" action="/ui/reload" {
                (csrf_field(access))
                button type="submit" { "Reload plugin directory" }
            }
        }
        p.hint { "Counts since this process started. "
            (layout.partitions) " partition(s) per plugin, up to " (layout.concurrency) " deliveries at once, in per-aggregate lanes. "
            "Times over the latest 512 deliveries." }
        table.plugins {
            thead { tr {
                th { "plugin" } th { "version" } th { "state" } th { "subscriptions" }
                th.num { "handled" } th.num { "duplicates" } th.num { "retried" } th.num { "dead-lettered" }
                th.num { "p50" } th.num { "p99" } th.num { "queued" } th { "last error" }
            } }
            tbody {
                @if rows.is_empty() { tr { td colspan="12" { "No plugin loaded." } } }
                @for row in rows {
                    tr data-plugin=(row.name) {
                        td.name { (row.name) }
                        td.version {
                            @if let Some(s) = &row.status {
                                code title=(format!("SHA-256 of the component, deployed {}", time(&s.deployed_at))) { (s.version) }
                            } @else { "–" }
                        }
                        td.state {
                            @match (&row.status, row.loading, row.draining.is_empty()) {
                                (Some(s), _, _) => span class=(format!("state {}", s.state)) { (s.state) },
                                (None, true, _) => span.state.loading { "loading" },
                                (None, false, false) => span.state.draining { "draining" },
                                (None, false, true) => span.state.refused { "refused" },
                            }
                            @if row.loading && row.status.is_some() { div.hint { "a new version is loading" } }
                            @if !row.draining.is_empty() {
                                div.hint { "draining: " (row.draining.join(", ")) " (work it began is finishing)" }
                            }
                            @if let Some(reason) = &row.refusal { div.reason { (reason) } }
                        }
                        td.subscriptions {
                            @if let Some(s) = &row.status { (s.subscriptions.join(", ")) }
                        }
                        td.num.handled { (row.summary.handled) }
                        td.num.duplicates { (row.summary.duplicates) }
                        td.num.retried { (row.summary.retried) }
                        td.num.dead-lettered { (row.summary.dead_lettered) }
                        td.num { (millis(row.summary.recent.p50)) }
                        td.num { (millis(row.summary.recent.p99)) }
                        td.num.queued { (count(row.depth)) }
                        td.last-error {
                            @if let Some((at, error)) = &row.summary.recent.last_error {
                                time { (time(at)) } " " span.reason { (error) }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub fn flow(samples: &[Sample], plugins: &[String]) -> Markup {
    let series = |f: &dyn Fn(&Sample) -> Option<f64>| samples.iter().map(f).collect::<Vec<_>>();
    let latest = samples.last();
    html! {
        h2 { "Flow" }
        p.hint { "The last hour, a sample every 10 s"
            @if let Some(s) = latest { " (latest " time { (time(&s.at)) } ")" } "." }
        div.charts {
            (sparkline("outbox pending", "events", &series(&|s| s.pending.map(|v| v as f64))))
            (sparkline("outbox dead", "events", &series(&|s| s.dead.map(|v| v as f64))))
            (sparkline("oldest pending", "s", &series(&|s| s.oldest_pending_seconds.or(s.pending.map(|_| 0.0)))))
            (sparkline("relay publishing", "events/s", &series(&|s| s.published_rate)))
        }
        @for name in plugins {
            h3 { (name) }
            div.charts {
                (sparkline("deliveries", "events/s", &series(&|s| s.plugins.get(name).map(|p| p.rate))))
                (sparkline("queued", "messages", &series(&|s| s.plugins.get(name).and_then(|p| p.depth.map(|d| d as f64)))))
                (sparkline("dead letters", "messages", &series(&|s| s.plugins.get(name).and_then(|p| p.dead.map(|d| d as f64)))))
            }
        }
    }
}

/// The loaded plugins with their dead-letter queue's depth at the latest sample.
pub fn dead_letter_index(plugins: &[(String, Option<u64>)]) -> Markup {
    html! {
        h2 { "Dead letters" }
        table {
            thead { tr { th { "plugin" } th.num { "in its dead-letter queue" } th {} } }
            tbody {
                @for (name, dead) in plugins {
                    tr data-plugin=(name) {
                        td { (name) }
                        td.num.dead { (count(*dead)) }
                        td { a href=(format!("/ui/dead/{name}")) { "open" } }
                    }
                }
            }
        }
    }
}

/// A plugin's dead letters; each one's headers and body open on click (`<details>`
/// opens without script).
pub fn dead_letters(plugin: &str, letters: &[Inspected], access: &Access) -> Markup {
    html! {
        h2 { "Dead letters of " (plugin) }
        p.hint { (letters.len()) " shown (up to 200, oldest first). Replaying puts them back on the plugin's queue with their attempts reset, as "
            code { "eventhost dlq replay" } " does." }
        form method="post" action=(format!("/ui/dead/{plugin}/replay")) {
            (csrf_field(access))
            table.letters {
                thead { tr {
                    th {} th { "event id" } th { "type" } th.num { "attempts" } th { "failed at" } th { "reason" }
                } }
                tbody {
                    @if letters.is_empty() { tr { td colspan="6" { "None." } } }
                    @for l in letters {
                        @let id = l.letter.event_id.clone().unwrap_or_default();
                        tr.letter data-event-id=(id) {
                            td { @if access.is_admin() && !id.is_empty() { input type="checkbox" name="id" value=(id) aria-label="select"; } }
                            td { code { (if id.is_empty() { "–" } else { id.as_str() }) } }
                            td { (l.letter.event_type) }
                            td.num { (l.letter.attempts) }
                            td { (l.letter.failed_at.as_deref().unwrap_or("–")) }
                            td.reason {
                                (l.letter.error)
                                @if let Some(head) = &l.letter.held_behind { div.hint { "parked behind " code { (head) } } }
                                // Bodies and headers are the events' data: signed-in operators only.
                                @if access.is_admin() {
                                    details.body {
                                        summary { "headers and body" }
                                        table.headers { @for (k, v) in &l.headers { tr { th { (k) } td { (v) } } } }
                                        pre { (l.body) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if access.is_admin() {
                button type="submit" name="scope" value="selected" { "Replay selected" }
                " "
                button type="submit" name="scope" value="all" { "Replay all" }
            }
        }
    }
}

pub fn outbox(rows: &[DeadRow], access: &Access) -> Markup {
    html! {
        h2 { "Outbox dead rows" }
        p.hint { "Events the relay gave up publishing. Replaying puts them back to pending, as "
            code { "eventhost outbox replay" } " does." }
        form method="post" action="/ui/outbox/replay" {
            (csrf_field(access))
            table.dead-rows {
                thead { tr {
                    th {} th { "event id" } th { "type" } th { "aggregate" } th.num { "attempts" } th { "created" } th { "last error" }
                } }
                tbody {
                    @if rows.is_empty() { tr { td colspan="7" { "None." } } }
                    @for r in rows {
                        tr data-event-id=(r.event_id) {
                            td { @if access.is_admin() { input type="checkbox" name="id" value=(r.event_id) aria-label="select"; } }
                            td { code { (r.event_id) } }
                            td { (r.event_type) }
                            td { (r.aggregate_type) "/" (r.aggregate_id) }
                            td.num { (r.attempts) }
                            td { (time(&r.created_at)) }
                            td.reason { (r.last_error.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
            @if access.is_admin() && !rows.is_empty() {
                button type="submit" name="scope" value="selected" { "Replay selected" }
                " "
                button type="submit" name="scope" value="all" { "Replay all" }
            }
        }
    }
}

pub fn activity(repairs: &[Repair], refusals: &[Refusal]) -> Markup {
    html! {
        h2 { "Activity" }
        h3 { "Recent on-read repairs" }
        p.hint { "Reads whose statements changed rows, and committed." }
        table.repairs {
            thead { tr { th { "at" } th { "plugin" } th { "path" } th.num { "status" } th.num { "rows written" } } }
            tbody {
                @if repairs.is_empty() { tr { td colspan="5" { "None since this process started." } } }
                @for r in repairs {
                    tr { td { (time(&r.at)) } td { (r.plugin) } td { code { (r.path) } } td.num { (r.status) } td.num { (r.rows_written) } }
                }
            }
        }
        h3 { "Recent refusals of plugin files" }
        table.refusals {
            thead { tr { th { "at" } th { "plugin" } th { "reason" } } }
            tbody {
                @if refusals.is_empty() { tr { td colspan="3" { "None since this process started." } } }
                @for r in refusals {
                    tr { td { (time(&r.at)) } td { (r.plugin) } td.reason { (r.reason) } }
                }
            }
        }
    }
}

/// Asks before a replay; the form repeats the selection with `confirm=yes`.
pub fn confirm(
    action: &str,
    what: &str,
    ids: &[String],
    all: bool,
    back: &str,
    access: &Access,
) -> Markup {
    html! {
        section.confirm {
            h2 { "Confirm" }
            p { (what) }
            @if !all { ul { @for id in ids { li { code { (id) } } } } }
            form method="post" action=(action) {
                (csrf_field(access))
                input type="hidden" name="confirm" value="yes";
                input type="hidden" name="scope" value=(if all { "all" } else { "selected" });
                @for id in ids { input type="hidden" name="id" value=(id); }
                button type="submit" { "Confirm replay" }
                " "
                a href=(back) { "Cancel" }
            }
        }
    }
}
