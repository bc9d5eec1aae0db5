//! The last hour of the flow, sampled in memory every [`STEP`]: outbox backlog, relay
//! publish rate, and per plugin its delivery rate and queue depths. No external store;
//! a restart starts the charts empty.

use crate::broker::topology::PluginQueues;
use crate::config::{BrokerConfig, ConsumerConfig};
use crate::consumer::Registry;
use crate::metrics::Metrics;
use crate::outbox::Relay;
use chrono::{DateTime, Utc};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use sqlx::PgPool;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub const STEP: Duration = Duration::from_secs(10);
/// One hour of samples.
const KEPT: usize = 360;

#[derive(Debug, Clone, Default)]
pub struct PluginSample {
    /// Deliveries finished per second (handled and duplicates) since the last sample.
    pub rate: f64,
    /// Messages ready in the partition queues, and in the dead-letter queue.
    pub depth: Option<u64>,
    pub dead: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub at: DateTime<Utc>,
    pub pending: Option<i64>,
    pub dead: Option<i64>,
    pub oldest_pending_seconds: Option<f64>,
    /// Events this process's relay published per second since the last sample.
    pub published_rate: Option<f64>,
    pub plugins: BTreeMap<String, PluginSample>,
}

/// Where the sampler reads from.
pub struct Sources {
    pub pool: PgPool,
    pub registry: Arc<Registry>,
    pub metrics: Metrics,
    pub relay: Option<Relay>,
    pub broker: BrokerConfig,
    pub consumer: ConsumerConfig,
}

#[derive(Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    pub fn samples(&self) -> Vec<Sample> {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.iter().cloned().collect()
    }

    pub fn latest(&self) -> Option<Sample> {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.back().cloned()
    }

    fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() == KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// Samples every `STEP` until `shutdown`; the first sample is taken at once.
    pub async fn run(&self, sources: &Sources, shutdown: &CancellationToken) {
        let mut counters = Counters::default();
        let mut broker: Option<lapin::Connection> = None;
        let mut tick = tokio::time::interval(STEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => break,
            }
            // A hung query or broker call costs one sample, not the charts.
            match tokio::time::timeout(STEP, take(sources, &mut counters, &mut broker)).await {
                Ok(sample) => self.push(sample),
                Err(_) => {
                    tracing::debug!("dashboard: a sample took longer than {STEP:?}; skipped");
                    broker.take();
                }
            }
        }
        if let Some(connection) = broker {
            let _ = connection.close(200, "dashboard stopping".into()).await;
        }
    }
}

/// The counters at the last sample, for rates.
#[derive(Default)]
struct Counters {
    at: Option<Instant>,
    published: u64,
    delivered: BTreeMap<String, u64>,
}

fn rate(now: u64, before: u64, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        return 0.0;
    }
    now.saturating_sub(before) as f64 / seconds
}

async fn take(
    sources: &Sources,
    counters: &mut Counters,
    broker: &mut Option<lapin::Connection>,
) -> Sample {
    let now = Instant::now();
    let seconds = counters
        .at
        .map(|at| now.duration_since(at).as_secs_f64())
        .unwrap_or(0.0);
    counters.at = Some(now);
    let backlog = crate::outbox::backlog(&sources.pool).await.ok();
    let published_rate = sources.relay.as_ref().map(|relay| {
        let published = relay.stats().published.load(Ordering::Relaxed);
        let r = rate(published, counters.published, seconds);
        counters.published = published;
        r
    });
    let mut plugins = BTreeMap::new();
    let connected = connect(&sources.broker, broker).await;
    for name in sources.registry.names() {
        let delivered = sources.metrics.delivered(&name);
        let before = counters.delivered.insert(name.clone(), delivered);
        let queues = PluginQueues::of(&sources.consumer, &name);
        // A channel per plugin: a queue not declared yet closes the channel it was asked on.
        let channel = match connected {
            Some(connection) => connection.create_channel().await.ok(),
            None => None,
        };
        let (depth, dead) = match channel {
            Some(channel) => {
                let counted = depths(&channel, &queues).await;
                let _ = channel.close(200, "sampled".into()).await;
                counted
            }
            None => (None, None),
        };
        let sample = PluginSample {
            rate: before.map_or(0.0, |b| rate(delivered, b, seconds)),
            depth,
            dead,
        };
        plugins.insert(name, sample);
    }
    Sample {
        at: Utc::now(),
        pending: backlog.map(|b| b.0),
        dead: backlog.map(|b| b.1),
        oldest_pending_seconds: backlog.and_then(|b| b.2),
        published_rate,
        plugins,
    }
}

/// The sampler's own connection, reconnecting (once per sample) when it broke. `None`
/// while the broker is unreachable: the depths are then left out of the sample.
async fn connect<'a>(
    config: &BrokerConfig,
    connection: &'a mut Option<lapin::Connection>,
) -> Option<&'a lapin::Connection> {
    if connection.as_ref().is_some_and(|c| !c.status().connected()) {
        *connection = None;
    }
    if connection.is_none() {
        match crate::broker::connect(config, "eventhost dashboard").await {
            Ok(c) => *connection = Some(c),
            Err(e) => {
                tracing::debug!(error = %e, "dashboard: broker unreachable; no queue depths");
                return None;
            }
        }
    }
    connection.as_ref()
}

/// Ready messages in the partition queues and in the dead-letter queue. A queue that does
/// not exist (yet) closes the channel; what could not be read is `None`.
async fn depths(channel: &lapin::Channel, queues: &PluginQueues) -> (Option<u64>, Option<u64>) {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let count = async |queue: &str| {
        channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
            .ok()
            .map(|q| u64::from(q.message_count()))
    };
    let mut depth = Some(0);
    for queue in &queues.partitions {
        depth = match (depth, count(queue).await) {
            (Some(total), Some(n)) => Some(total + n),
            _ => None,
        };
    }
    (depth, count(&queues.dead).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_one_hour_of_samples_and_rates_never_go_negative() {
        let history = History::default();
        for _ in 0..KEPT + 10 {
            history.push(Sample {
                at: Utc::now(),
                pending: Some(1),
                dead: Some(0),
                oldest_pending_seconds: None,
                published_rate: None,
                plugins: BTreeMap::new(),
            });
        }
        assert_eq!(history.samples().len(), KEPT);
        assert_eq!(rate(10, 5, 2.0), 2.5);
        assert_eq!(rate(3, 5, 2.0), 0.0, "a counter reset reads as zero");
        assert_eq!(rate(10, 5, 0.0), 0.0);
    }
}
