//! Prometheus metrics: per-plugin outcome counters and handler durations, the relay's
//! counters, and the outbox backlog (read from PostgreSQL at each scrape).

mod exposition;
mod recent;

pub use exposition::Format;
pub use recent::RecentFigures;

use crate::outbox::RelayStats;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use sqlx::PgPool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabel {
    pub plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabel {
    pub task: String,
}

type PerPlugin = Family<PluginLabel, Counter>;
type PerTask<M> = Family<TaskLabel, M>;
type Durations = Family<PluginLabel, Histogram, fn() -> Histogram>;

/// What the consumers count. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    handled: PerPlugin,
    duplicates: PerPlugin,
    retried: PerPlugin,
    dead_lettered: PerPlugin,
    parked: PerPlugin,
    durations: Durations,
    reload_failures: PerPlugin,
    outbox_pending: Gauge,
    outbox_dead: Gauge,
    outbox_oldest: Gauge<f64, AtomicU64>,
    relay_published: Counter,
    relay_failed: Counter,
    task_restarts: PerTask<Counter>,
    task_up: PerTask<Gauge>,
    recent: recent::Recent,
}

fn label(plugin: &str) -> PluginLabel {
    PluginLabel {
        plugin: plugin.to_string(),
    }
}

fn handler_buckets() -> Histogram {
    // 0.5 ms to ~4 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("eventhost");
        let handled = PerPlugin::default();
        let duplicates = PerPlugin::default();
        let retried = PerPlugin::default();
        let dead_lettered = PerPlugin::default();
        let parked = PerPlugin::default();
        let durations = Durations::new_with_constructor(handler_buckets);
        let reload_failures = PerPlugin::default();
        let outbox_pending = Gauge::default();
        let outbox_dead = Gauge::default();
        let outbox_oldest = Gauge::<f64, AtomicU64>::default();
        let relay_published = Counter::default();
        let relay_failed = Counter::default();
        let task_restarts = PerTask::<Counter>::default();
        let task_up = PerTask::<Gauge>::default();
        let r = &mut registry;
        r.register(
            "task_restarts",
            "Times a long-running part of the host (relay, consumer, plugin watcher, HTTP) stopped unexpectedly and was restarted",
            task_restarts.clone(),
        );
        r.register(
            "task_up",
            "1 while a long-running part of the host is running, 0 while it waits to be restarted",
            task_up.clone(),
        );
        r.register(
            "plugin_handled",
            "Events a plugin handled and committed",
            handled.clone(),
        );
        r.register(
            "plugin_duplicates",
            "Deliveries skipped because the plugin's inbox already had the event id",
            duplicates.clone(),
        );
        r.register(
            "plugin_retried",
            "Failed deliveries sent to the retry path",
            retried.clone(),
        );
        r.register(
            "plugin_dead_lettered",
            "Deliveries sent to the plugin's dead-letter queue",
            dead_lettered.clone(),
        );
        r.register(
            "plugin_parked",
            "Deliveries parked in the dead-letter queue behind their aggregate's dead letter (on_dead_letter = hold)",
            parked.clone(),
        );
        r.register(
            "plugin_handler_duration_seconds",
            "Time per delivery in the plugin (instantiate, handle, commit)",
            durations.clone(),
        );
        r.register(
            "plugin_reload_failures",
            "Plugin files refused at (re)load; the previous version keeps serving",
            reload_failures.clone(),
        );
        r.register(
            "outbox_backlog",
            "Outbox events waiting to be published",
            outbox_pending.clone(),
        );
        r.register(
            "outbox_dead",
            "Outbox events that exhausted their publication attempts",
            outbox_dead.clone(),
        );
        r.register(
            "outbox_oldest_pending_seconds",
            "Age of the oldest unpublished outbox event",
            outbox_oldest.clone(),
        );
        r.register(
            "outbox_published",
            "Outbox events this process published (broker-confirmed)",
            relay_published.clone(),
        );
        r.register(
            "outbox_failed_attempts",
            "Failed publication attempts in this process",
            relay_failed.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                handled,
                duplicates,
                retried,
                dead_lettered,
                parked,
                durations,
                reload_failures,
                outbox_pending,
                outbox_dead,
                outbox_oldest,
                relay_published,
                relay_failed,
                task_restarts,
                task_up,
                recent: recent::Recent::default(),
            }),
        }
    }
}

/// A plugin's counts in this process since it started, and its recent figures.
#[derive(Debug, Clone, Default)]
pub struct PluginSummary {
    pub handled: u64,
    pub duplicates: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    pub parked: u64,
    pub recent: RecentFigures,
}

/// Which counter a delivery's end moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Handled,
    Duplicate,
    Retried,
    DeadLettered,
    Parked,
}

impl Metrics {
    fn family(&self, disposition: Disposition) -> &PerPlugin {
        match disposition {
            Disposition::Handled => &self.inner.handled,
            Disposition::Duplicate => &self.inner.duplicates,
            Disposition::Retried => &self.inner.retried,
            Disposition::DeadLettered => &self.inner.dead_lettered,
            Disposition::Parked => &self.inner.parked,
        }
    }

    pub fn record(&self, plugin: &str, disposition: Disposition, elapsed: Option<Duration>) {
        let label = label(plugin);
        self.family(disposition).get_or_create(&label).inc();
        if let Some(elapsed) = elapsed {
            self.inner
                .durations
                .get_or_create(&label)
                .observe(elapsed.as_secs_f64());
            self.inner.recent.handled(plugin, elapsed);
        }
    }

    /// The reason of a failed delivery, kept as the plugin's latest error.
    pub fn failed(&self, plugin: &str, error: &str) {
        self.inner.recent.failed(plugin, error);
    }

    /// The plugin's count of deliveries that ended as `disposition`.
    fn count(&self, disposition: Disposition, label: &PluginLabel) -> u64 {
        self.family(disposition).get_or_create(label).get()
    }

    /// Deliveries the plugin finished (handled and duplicates), for rates.
    pub fn delivered(&self, plugin: &str) -> u64 {
        let label = label(plugin);
        self.count(Disposition::Handled, &label) + self.count(Disposition::Duplicate, &label)
    }

    /// The plugin's counters and recent figures, for the dashboard.
    pub fn plugin_summary(&self, plugin: &str) -> PluginSummary {
        let label = label(plugin);
        let count = |d: Disposition| self.count(d, &label);
        PluginSummary {
            handled: count(Disposition::Handled),
            duplicates: count(Disposition::Duplicate),
            retried: count(Disposition::Retried),
            dead_lettered: count(Disposition::DeadLettered),
            parked: count(Disposition::Parked),
            recent: self.inner.recent.figures(plugin),
        }
    }

    /// Makes every per-plugin series exist, at zero, from the moment the plugin loads, so
    /// a dashboard can tell "none yet" from "not there".
    pub fn plugin_loaded(&self, plugin: &str) {
        let label = label(plugin);
        for disposition in [
            Disposition::Handled,
            Disposition::Duplicate,
            Disposition::Retried,
            Disposition::DeadLettered,
            Disposition::Parked,
        ] {
            drop(self.family(disposition).get_or_create(&label));
        }
        drop(self.inner.durations.get_or_create(&label));
        drop(self.inner.reload_failures.get_or_create(&label));
    }

    pub fn reload_failed(&self, plugin: &str) {
        let label = label(plugin);
        self.inner.reload_failures.get_or_create(&label).inc();
    }

    /// A supervised task started (`up`) or stopped unexpectedly.
    pub fn task_state(&self, task: &str, up: bool) {
        let label = TaskLabel {
            task: task.to_string(),
        };
        self.inner.task_up.get_or_create(&label).set(i64::from(up));
    }

    pub fn task_restarted(&self, task: &str) {
        let label = TaskLabel {
            task: task.to_string(),
        };
        self.inner.task_restarts.get_or_create(&label).inc();
    }

    /// The exposition in `format`. Refreshes the outbox gauges from PostgreSQL first (a
    /// failed query leaves the last values and is reported in the error).
    pub async fn render(
        &self,
        pool: &PgPool,
        relay: Option<&RelayStats>,
        format: Format,
    ) -> Result<String, sqlx::Error> {
        let inner = &self.inner;
        let refreshed = crate::outbox::backlog(pool).await;
        if let Ok((pending, dead, oldest)) = &refreshed {
            inner.outbox_pending.set(*pending);
            inner.outbox_dead.set(*dead);
            inner.outbox_oldest.set(oldest.unwrap_or(0.0));
        }
        if let Some(stats) = relay {
            sync_counter(&inner.relay_published, &stats.published);
            sync_counter(&inner.relay_failed, &stats.failed_attempts);
        }
        refreshed.map(|_| match format {
            Format::OpenMetrics => self.encode_registry(),
            Format::Prometheus => exposition::prometheus_text(&self.encode_registry()),
        })
    }

    /// The registry as OpenMetrics text, as it stands.
    pub(crate) fn encode_registry(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.inner.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// Moves a Prometheus counter up to the relay's own atomic count.
fn sync_counter(counter: &Counter, source: &AtomicU64) {
    let target = source.load(Ordering::Relaxed);
    let current = counter.get();
    if target > current {
        counter.inc_by(target - current);
    }
}
