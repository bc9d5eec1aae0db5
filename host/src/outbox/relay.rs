//! The relay: workers that publish batches, a listener that wakes them on NOTIFY, and a
//! purger. Each reconnects by itself with backoff; outages are logged once when they
//! start and once when they end.

use super::batch::{self, BatchSettings, Confirmed};
use super::health::{Backoff, Health};
use super::store::{self, RetryPolicy, NOTIFY_CHANNEL};
use crate::broker;
use crate::config::{BrokerConfig, RelayConfig};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Counters for metrics and tests.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub published: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub dead: AtomicU64,
    pub purged: AtomicU64,
}

#[derive(Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    broker: BrokerConfig,
    config: RelayConfig,
    health: Health,
    stats: RelayStats,
    confirmed: broadcast::Sender<Arc<Vec<Confirmed>>>,
}

impl Relay {
    pub fn new(pool: PgPool, broker: BrokerConfig, config: RelayConfig) -> Self {
        let (confirmed, _) = broadcast::channel(1024);
        Self {
            inner: Arc::new(Inner {
                pool,
                broker,
                config,
                health: Health::default(),
                stats: RelayStats::default(),
                confirmed,
            }),
        }
    }

    pub fn stats(&self) -> &RelayStats {
        &self.inner.stats
    }

    /// Each batch's confirmed events, as the broker confirmed them (for latency
    /// measurements and tests; a slow subscriber misses batches rather than slowing the relay).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Vec<Confirmed>>> {
        self.inner.confirmed.subscribe()
    }

    /// Runs until `shutdown` is cancelled. In-flight batches finish (confirms awaited,
    /// rows marked) before it returns.
    pub async fn run(&self, shutdown: CancellationToken) {
        let (wake, _) = watch::channel(0u64);
        let wake = Arc::new(wake);
        let mut tasks = tokio::task::JoinSet::new();
        {
            let (inner, wake, shutdown) = (self.inner.clone(), wake.clone(), shutdown.clone());
            tasks.spawn(async move { inner.listen(&wake, &shutdown).await });
        }
        for worker in 0..self.inner.config.workers {
            let (inner, wake, shutdown) = (self.inner.clone(), wake.subscribe(), shutdown.clone());
            let span = tracing::info_span!("relay_worker", worker);
            tasks.spawn(async move { inner.work(worker, wake, &shutdown).await }.instrument(span));
        }
        {
            let (inner, shutdown) = (self.inner.clone(), shutdown.clone());
            tasks.spawn(async move { inner.purge_loop(&shutdown).await });
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// Sleeps, unless shut down first; says whether to go on.
async fn pause(duration: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(duration) => true,
        _ = shutdown.cancelled() => false,
    }
}

impl Inner {
    fn settings(&self) -> BatchSettings<'_> {
        BatchSettings {
            exchange: &self.broker.exchange,
            batch_size: self.config.batch_size,
            max_message_bytes: self.config.max_message_bytes,
            confirm_timeout: self.config.confirm_timeout,
            retry: RetryPolicy {
                max_attempts: self.config.max_attempts,
                base: self.config.backoff_base,
                max: self.config.backoff_max,
            },
        }
    }

    /// LISTENs for new rows and bumps `wake`. After a reconnect it bumps once more, since
    /// notifications sent during the outage are lost.
    async fn listen(&self, wake: &watch::Sender<u64>, shutdown: &CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        while !shutdown.is_cancelled() {
            let listener = async {
                let mut listener = PgListener::connect_with(&self.pool).await?;
                listener.listen(NOTIFY_CHANNEL).await?;
                Ok::<_, sqlx::Error>(listener)
            };
            let mut listener = match listener.await {
                Ok(listener) => listener,
                Err(e) => {
                    self.health.database_failed(&e);
                    if !pause(backoff.next(), shutdown).await {
                        return;
                    }
                    continue;
                }
            };
            backoff.reset();
            wake.send_modify(|n| *n += 1);
            loop {
                let notification = tokio::select! {
                    n = listener.try_recv() => n,
                    _ = shutdown.cancelled() => return,
                };
                match notification {
                    Ok(Some(_)) => wake.send_modify(|n| *n += 1),
                    // The connection dropped: reconnect and catch up.
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }

    async fn work(
        &self,
        worker: u32,
        mut wake: watch::Receiver<u64>,
        shutdown: &CancellationToken,
    ) {
        let settings = self.settings();
        let name = format!("eventhost relay worker {worker}");
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(15));
        while !shutdown.is_cancelled() {
            let channel = match broker::connect(&self.broker, &name).await {
                Ok(connection) => broker::publisher_channel(&connection, &self.broker.exchange)
                    .await
                    .map(|channel| (connection, channel)),
                Err(e) => Err(e),
            };
            let (connection, channel) = match channel {
                Ok(pair) => pair,
                Err(e) => {
                    self.health.broker_failed(&e);
                    if !pause(backoff.next(), shutdown).await {
                        return;
                    }
                    continue;
                }
            };
            self.health.broker_recovered();
            backoff.reset();
            self.publish_until_lost(&channel, &settings, &mut wake, shutdown)
                .await;
            let _ = connection
                .close(200, "relay stopping or reconnecting".into())
                .await;
        }
    }

    /// Publishes batches on one channel until the broker connection is lost or shutdown.
    async fn publish_until_lost(
        &self,
        channel: &lapin::Channel,
        settings: &BatchSettings<'_>,
        wake: &mut watch::Receiver<u64>,
        shutdown: &CancellationToken,
    ) {
        let mut db_backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        while !shutdown.is_cancelled() {
            wake.mark_unchanged();
            let report = match batch::run(&self.pool, channel, settings).await {
                Ok(report) => report,
                Err(e) => {
                    self.health.database_failed(&e);
                    if !pause(db_backoff.next(), shutdown).await {
                        return;
                    }
                    continue;
                }
            };
            self.health.database_recovered();
            db_backoff.reset();
            self.record(&report);
            if let Some(reason) = report.broker_lost {
                self.health.broker_lost(&reason);
                return;
            }
            let published = report.confirmed.len() + report.failed;
            let full = report.claimed as u32 >= settings.batch_size;
            if full && published > 0 {
                continue;
            }
            // Idle, or only rows waiting for another relay's batch: wait for a NOTIFY, the
            // poll interval, or (when blocked) briefly for the other batch to commit.
            let wait = if report.blocked > 0 {
                Duration::from_millis(20).min(self.config.poll_interval)
            } else {
                self.config.poll_interval
            };
            tokio::select! {
                _ = wake.changed() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    fn record(&self, report: &batch::BatchReport) {
        let stats = &self.stats;
        stats
            .published
            .fetch_add(report.confirmed.len() as u64, Ordering::Relaxed);
        stats
            .failed_attempts
            .fetch_add(report.failed as u64, Ordering::Relaxed);
        stats.dead.fetch_add(report.dead, Ordering::Relaxed);
        if report.dead > 0 {
            tracing::warn!(
                count = report.dead,
                "events became dead letters (see `eventhost outbox status`)"
            );
        }
        if !report.confirmed.is_empty() {
            let _ = self.confirmed.send(Arc::new(report.confirmed.clone()));
        }
    }

    /// Deletes old published rows every `purge_interval`; the purge lock makes one relay
    /// of many do it.
    async fn purge_loop(&self, shutdown: &CancellationToken) {
        loop {
            match store::purge(&self.pool, self.config.retention, self.config.purge_batch).await {
                Ok(Some(n)) if n > 0 => {
                    self.stats.purged.fetch_add(n, Ordering::Relaxed);
                    tracing::info!(rows = n, "purged published outbox rows past retention");
                }
                Ok(_) => {}
                Err(e) => self.health.database_failed(&e),
            }
            if !pause(self.config.purge_interval, shutdown).await {
                return;
            }
        }
    }
}
