//! The relay: workers that publish batches, a listener that wakes them on NOTIFY, and a
//! purger. Each reconnects by itself with backoff; outages are logged once when they
//! start and once when they end.

use super::batch::{self, BatchReport, BatchSettings, Confirmed};
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
use tokio::task::JoinSet;
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
        while let Some(ended) = tasks.join_next().await {
            // One part panicking stops the relay, so that its supervisor restarts all of it
            // instead of running on without, say, its workers.
            if let Err(e) = ended {
                if e.is_panic() {
                    tasks.abort_all();
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        }
    }
}

/// What a finished batch means for its worker.
enum After {
    /// The broker connection broke: reconnect.
    BrokerLost,
    /// `released_held_rows`: the batch held rows back (or rolled back), and its commit
    /// just unlocked them, so they may be publishable now.
    Done { released_held_rows: bool },
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
            let opened = async {
                let connection = broker::connect(&self.broker, &name).await?;
                let channel = broker::publisher_channel(&connection, &self.broker.exchange).await?;
                Ok::<_, broker::BrokerError>((connection, channel))
            };
            let (connection, channel) = match opened.await {
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
    ///
    /// Up to `relay.pipeline` batches are in flight: each batch's confirms are awaited
    /// (and its rows marked) by a task of its own while the worker claims and sends the
    /// next, so the broker sees a steady stream rather than bursts, and a new event need
    /// not wait for the previous batch's confirms. Each batch's rows are locked by its
    /// own transaction, so the order rule treats them like another relay's.
    async fn publish_until_lost(
        &self,
        channel: &lapin::Channel,
        settings: &BatchSettings<'_>,
        wake: &mut watch::Receiver<u64>,
        shutdown: &CancellationToken,
    ) {
        let pipeline = self.config.pipeline.max(1) as usize;
        let mut in_flight: JoinSet<Result<BatchReport, sqlx::Error>> = JoinSet::new();
        let mut db_backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            while let Some(done) = in_flight.try_join_next() {
                if let After::BrokerLost = self.finished(done) {
                    return self.drain(&mut in_flight).await;
                }
            }
            if shutdown.is_cancelled() {
                return self.drain(&mut in_flight).await;
            }
            if in_flight.len() >= pipeline {
                if let Some(done) = in_flight.join_next().await {
                    if let After::BrokerLost = self.finished(done) {
                        return self.drain(&mut in_flight).await;
                    }
                }
                continue;
            }
            wake.mark_unchanged();
            // Tests make the relay panic here (`FAILPOINTS=relay-batch=1*panic`).
            fail::fail_point!("relay-batch");
            let sent = match batch::send(&self.pool, channel, settings).await {
                Ok(sent) => sent,
                Err(e) => {
                    self.health.database_failed(&e);
                    if !pause(db_backoff.next(), shutdown).await {
                        return self.drain(&mut in_flight).await;
                    }
                    continue;
                }
            };
            self.health.database_recovered();
            db_backoff.reset();
            let report = sent.report();
            let full = report.claimed as u32 >= settings.batch_size && report.sent > 0;
            let blocked = report.blocked > 0;
            let (timeout, retry) = (settings.confirm_timeout, settings.retry);
            in_flight.spawn(async move { sent.finish(timeout, retry).await });
            if full {
                continue;
            }
            // Idle, or rows waiting for another batch: wait for a NOTIFY, the poll
            // interval, or (when some rows wait) a batch of ours to finish or, briefly,
            // another relay's to commit. Batches in flight finish meanwhile; one that held
            // rows back releases their locks, so claim again at once.
            let wait = if blocked {
                Duration::from_millis(20).min(self.config.poll_interval)
            } else {
                self.config.poll_interval
            };
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                tokio::select! {
                    _ = wake.changed() => break,
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = shutdown.cancelled() => break,
                    Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                        match self.finished(done) {
                            After::BrokerLost => return self.drain(&mut in_flight).await,
                            After::Done { released_held_rows } => {
                                if blocked || released_held_rows {
                                    break;
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Records a finished batch and says what it means for the worker.
    fn finished(
        &self,
        done: Result<Result<BatchReport, sqlx::Error>, tokio::task::JoinError>,
    ) -> After {
        match done {
            Ok(Ok(mut report)) => {
                let lost = report.broker_lost.take();
                let released_held_rows = report.blocked > 0;
                self.record(report);
                match lost {
                    Some(reason) => {
                        self.health.broker_lost(&reason);
                        After::BrokerLost
                    }
                    None => After::Done { released_held_rows },
                }
            }
            // The rows stay pending (their transaction rolled back) and are published
            // again later: at least once.
            Ok(Err(e)) => {
                self.health.database_failed(&e);
                After::Done {
                    released_held_rows: true,
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "relay batch task failed");
                After::Done {
                    released_held_rows: true,
                }
            }
        }
    }

    /// Lets every batch in flight finish (confirms awaited, rows marked).
    async fn drain(&self, in_flight: &mut JoinSet<Result<BatchReport, sqlx::Error>>) {
        while let Some(done) = in_flight.join_next().await {
            self.finished(done);
        }
    }

    fn record(&self, report: BatchReport) {
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
        if !report.confirmed.is_empty() && self.confirmed.receiver_count() > 0 {
            let _ = self.confirmed.send(Arc::new(report.confirmed));
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
