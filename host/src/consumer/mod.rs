//! The consumer side: every plugin has its own queue (see [`crate::broker::topology`]) and
//! its own consumer on this process's connection. The supervisor here connects, follows
//! the set of plugins (hot loading adds, rebinds and stops consumers) and reconnects
//! with backoff when RabbitMQ goes away.

mod binary_mode;
pub mod bindings;
mod crashes;
pub mod dead_letters;
mod delivery;
pub mod headers;
pub mod holds;
pub mod inbox;
pub mod journal;
mod lanes;
mod partitions;
mod queue;
pub mod registry;
mod reroute;
pub mod retired;
pub mod watcher;

pub use registry::{Registry, SlotStatus};
pub use watcher::Watcher;

use crate::broker;
use crate::config::{BrokerConfig, ConsumerConfig};
use crate::event::Event;
use crate::metrics::Metrics;
use crate::outbox::health::Backoff;
use crate::runtime::Invocation;
use lapin::Connection;
use sqlx::PgPool;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What handles a plugin's deliveries: a loaded plugin's slot, or (in the benchmark) a
/// native handler doing the same work.
pub trait Target: Send + Sync + 'static {
    fn deliver<'a>(
        &'a self,
        event: &'a Event,
    ) -> Pin<Box<dyn Future<Output = Invocation> + Send + 'a>>;
}

/// A plugin as the consumer sees it.
#[derive(Clone)]
pub struct Subscriber {
    pub name: String,
    pub subscriptions: Vec<String>,
    pub target: Arc<dyn Target>,
    /// Which version this host serves, so hosts agree on bindings ([`bindings`]); `None`
    /// reconciles the bindings to `subscriptions` unconditionally.
    pub version: Option<PluginVersion>,
}

/// A plugin version as deployed: the component's SHA-256 and its file's time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginVersion {
    pub digest: String,
    pub deployed_at: chrono::DateTime<chrono::Utc>,
}

/// The plugins whose consumers are running (queue declared and bound, deliveries
/// flowing), for readiness and for starting the relay only once queues can receive.
#[derive(Debug, Default)]
pub struct Consuming {
    /// Running consumers per plugin (0 or 1).
    names: Mutex<HashMap<String, usize>>,
}

impl Consuming {
    fn set(&self, name: &str, on: bool) {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let count = names.entry(name.to_string()).or_default();
        if on {
            *count += 1;
        } else {
            *count = count.saturating_sub(1);
        }
    }

    pub fn covers<'a>(&self, plugins: impl IntoIterator<Item = &'a str>) -> bool {
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        plugins
            .into_iter()
            .all(|p| names.get(p).is_some_and(|n| *n > 0))
    }

    /// Waits until every one of `plugins` is consuming; false after `limit`.
    pub async fn wait_for(&self, plugins: &[String], limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while !self.covers(plugins.iter().map(String::as_str)) {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

#[derive(Clone)]
pub struct Settings {
    /// Where to connect, and the events exchange the plugin queues bind to.
    pub broker: BrokerConfig,
    pub config: ConsumerConfig,
    pub metrics: Metrics,
    pub pool: PgPool,
    pub consuming: Arc<Consuming>,
}

pub struct Consumer {
    settings: Arc<Settings>,
    subscribers: watch::Receiver<Arc<Vec<Subscriber>>>,
    connected: Arc<AtomicBool>,
}

/// A running plugin consumer.
struct Running {
    generation: u64,
    subscriptions: Vec<String>,
    stop: CancellationToken,
}

type Finished = (String, u64, Result<(), queue::ConsumeError>);

impl Consumer {
    pub fn new(settings: Settings, subscribers: watch::Receiver<Arc<Vec<Subscriber>>>) -> Self {
        Self {
            settings: Arc::new(settings),
            subscribers,
            connected: Arc::default(),
        }
    }

    /// Reports its connection state into `flag`, true while connected to RabbitMQ (for
    /// `/readyz`; one flag across restarts of the consumer).
    pub fn reporting_to(mut self, flag: Arc<AtomicBool>) -> Self {
        self.connected = flag;
        self
    }

    /// Consumes until `shutdown`; then every plugin consumer stops taking deliveries,
    /// finishes and settles what it has, and the connection is closed.
    pub async fn run(mut self, shutdown: CancellationToken) {
        // A consumer restarted after a panic starts from "not connected".
        self.connected.store(false, Ordering::Relaxed);
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
        let mut down_since: Option<Instant> = None;
        while !shutdown.is_cancelled() {
            let name = format!("eventhost consumer (pid {})", std::process::id());
            let attempt = async {
                let connection = broker::connect(&self.settings.broker, &name).await?;
                let channel = connection
                    .create_channel()
                    .await
                    .map_err(broker::BrokerError::Channel)?;
                broker::declare_exchange(&channel, &self.settings.broker.exchange).await?;
                let _ = channel.close(200, "declared".into()).await;
                Ok::<_, broker::BrokerError>(connection)
            };
            let connection = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = attempt => c,
            };
            let reason = match connection {
                Ok(connection) => {
                    if let Some(since) = down_since.take() {
                        tracing::info!(down_for = ?since.elapsed(), "RabbitMQ reachable again; consuming");
                    }
                    backoff.reset();
                    self.connected.store(true, Ordering::Relaxed);
                    let connection = Arc::new(connection);
                    let lost = self.serve(&connection, &shutdown).await;
                    self.connected.store(false, Ordering::Relaxed);
                    let close = connection.close(200, "eventhost stopping".into());
                    let _ = tokio::time::timeout(Duration::from_secs(5), close).await;
                    match lost {
                        None => return,
                        Some(reason) => reason,
                    }
                }
                Err(e) => e.to_string(),
            };
            if down_since.is_none() {
                tracing::warn!(%reason, "RabbitMQ unreachable; consumers paused, reconnecting");
                down_since = Some(Instant::now());
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff.next()) => {}
            }
        }
    }

    /// Runs one consumer per plugin on `connection` until shutdown (`None`) or until the
    /// connection is lost (`Some(reason)`).
    async fn serve(
        &mut self,
        connection: &Arc<Connection>,
        shutdown: &CancellationToken,
    ) -> Option<String> {
        let mut running: HashMap<String, Running> = HashMap::new();
        let mut tasks: JoinSet<Finished> = JoinSet::new();
        let mut ids: HashMap<tokio::task::Id, (String, u64)> = HashMap::new();
        let mut retry_at: HashMap<String, Instant> = HashMap::new();
        let mut generation = 0u64;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        self.subscribers.mark_changed();
        let lost = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break None,
                changed = self.subscribers.changed() => {
                    if changed.is_err() {
                        break None; // the registry is gone: the process is stopping
                    }
                }
                Some(finished) = tasks.join_next() => {
                    let (name, gen, result) = match finished {
                        Ok(finished) => finished,
                        Err(e) => {
                            // A plugin consumer panicked: it starts again like a failed one.
                            let Some((name, gen)) = ids.remove(&e.id()) else { continue };
                            self.settings.metrics.task_restarted(&format!("consumer/{name}"));
                            (name, gen, Err(queue::ConsumeError::Panicked(e.to_string())))
                        }
                    };
                    ids.retain(|_, (n, g)| !(n == &name && *g == gen));
                    if running.get(&name).is_some_and(|r| r.generation == gen) {
                        running.remove(&name);
                    }
                    if let Err(error) = result {
                        if !connection.status().connected() {
                            self.connected.store(false, Ordering::Relaxed);
                            break Some(error.to_string());
                        }
                        tracing::error!(plugin = %name, %error, "plugin consumer failed; retrying in 5s");
                        retry_at.insert(name, Instant::now() + Duration::from_secs(5));
                    }
                }
                _ = tick.tick() => {}
            }
            let current = self.subscribers.borrow_and_update().clone();
            for subscriber in current.iter() {
                if let Some(run) = running.get(&subscriber.name) {
                    if run.subscriptions != subscriber.subscriptions {
                        // New subscriptions: stop its consumer; the new one (which rebinds)
                        // starts once the old one has drained and closed, so no two lanes
                        // ever run one aggregate.
                        run.stop.cancel();
                    }
                    continue;
                } else if retry_at
                    .get(&subscriber.name)
                    .is_some_and(|t| *t > Instant::now())
                {
                    continue;
                }
                retry_at.remove(&subscriber.name);
                generation += 1;
                let stop = shutdown.child_token();
                running.insert(
                    subscriber.name.clone(),
                    Running {
                        generation,
                        subscriptions: subscriber.subscriptions.clone(),
                        stop: stop.clone(),
                    },
                );
                let (connection, settings, subscriber) = (
                    connection.clone(),
                    self.settings.clone(),
                    subscriber.clone(),
                );
                let (gen, task_name) = (generation, subscriber.name.clone());
                let task = tasks.spawn(async move {
                    let name = subscriber.name.clone();
                    let result = queue::consume(connection, subscriber, &settings, stop).await;
                    (name, gen, result)
                });
                ids.insert(task.id(), (task_name, gen));
            }
            running.retain(|name, run| {
                let keep = current.iter().any(|s| &s.name == name);
                if !keep {
                    run.stop.cancel();
                }
                keep
            });
        };
        for run in running.values() {
            run.stop.cancel();
        }
        while tasks.join_next().await.is_some() {}
        lost
    }
}
