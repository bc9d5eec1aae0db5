//! One plugin's consumer on one connection: declare its queues and bindings, then take
//! deliveries from every partition and hand them to the lanes until cancelled or the
//! channel is lost. On the way out it stops taking deliveries, lets every started one
//! finish and settle, then closes the channel (which returns the rest).

use super::delivery::{self, Context};
use super::lanes::Lanes;
use super::partitions::Partitions;
use super::{bindings, Settings, Subscriber};
use crate::broker::topology::PluginQueues;
use crate::broker::{self, BrokerError};
use crate::config::{DeadLetterMode, RetryMode};
use lapin::Connection;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Partition(#[from] super::partitions::PartitionError),
    #[error(transparent)]
    Bindings(#[from] bindings::BindingError),
    #[error("the plugin consumer panicked: {0}")]
    Panicked(String),
    #[error("the delivery stream of {queue} ended: {reason}")]
    Lost { queue: String, reason: String },
}

/// How often the host checks whether it holds more than its share of the partitions.
const SHARE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Longest wait for the broker to confirm a channel's close.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Marks a plugin as consuming while alive, so a consumer that panics or is aborted
/// never stays counted.
struct ConsumingGuard<'a> {
    consuming: &'a super::Consuming,
    plugin: String,
}

impl<'a> ConsumingGuard<'a> {
    fn on(consuming: &'a super::Consuming, plugin: &str) -> Self {
        consuming.set(plugin, true);
        Self {
            consuming,
            plugin: plugin.to_string(),
        }
    }
}

impl Drop for ConsumingGuard<'_> {
    fn drop(&mut self) {
        self.consuming.set(&self.plugin, false);
    }
}

pub async fn consume(
    connection: Arc<Connection>,
    subscriber: Subscriber,
    settings: &Settings,
    shutdown: CancellationToken,
) -> Result<(), ConsumeError> {
    let config = &settings.config;
    let queues = PluginQueues::of(config, &subscriber.name);
    // Declarations, and the retries and dead letters published (confirmed).
    let channel = broker::confirm_channel(&connection).await?;
    bindings::apply(
        &channel,
        &settings.pool,
        &settings.broker.exchange,
        &queues,
        config.quorum_queues,
        &subscriber.subscriptions,
        subscriber.version.as_ref(),
    )
    .await?;
    super::crashes::purge_stale(&settings.pool, &subscriber.name).await;
    // The inbox is pruned while this consumer runs (every host does it; they skip each
    // other's rows).
    let pruning = shutdown.child_token();
    let _stop_pruning = pruning.clone().drop_guard();
    tokio::spawn(super::inbox::prune_every(
        settings.pool.clone(),
        subscriber.name.clone(),
        config.inbox_retention,
        config.inbox_prune_interval,
        config.inbox_prune_batch,
        pruning,
    ));
    let tag = format!("eventhost-{}-{}", subscriber.name, std::process::id());
    let (mut partitions, mut deliveries) =
        Partitions::subscribe(connection.clone(), &queues, config.prefetch, tag).await?;
    tracing::info!(plugin = %subscriber.name, entry = %queues.entry, partitions = queues.partitions.len(), subscriptions = ?subscriber.subscriptions, "consuming");
    let consuming = ConsumingGuard::on(&settings.consuming, &subscriber.name);

    let mut lanes = Lanes::new(usize::from(config.concurrency));
    let context = Arc::new(Context {
        plugin: subscriber.name.clone(),
        target: subscriber.target.clone(),
        channel: channel.clone(),
        queues: queues.clone(),
        max_attempts: config.max_attempts,
        max_crashes: config.max_crashes,
        metrics: settings.metrics.clone(),
        pool: settings.pool.clone(),
        shutdown: shutdown.clone(),
        retry: match config.retry {
            RetryMode::InPlace => Some((config.retry_delays.clone(), lanes.gate())),
            RetryMode::Queue => None,
        },
        hold: config.on_dead_letter == DeadLetterMode::Hold,
    });
    let panicked = lanes.panicked();
    let mut share = tokio::time::interval(SHARE_EVERY);
    share.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ended = loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            // Its message stays unacknowledged: closing the channel returns it to the queue.
            _ = panicked.cancelled() => break Err("a delivery panicked (a host bug); restarting the consumer".to_string()),
            _ = share.tick() => match partitions.share().await {
                Ok(()) => continue,
                Err(e) => break Err(e.to_string()),
            },
            incoming = deliveries.recv() => incoming,
        };
        let Some(incoming) = incoming else {
            break Err("the partition readers stopped".to_string());
        };
        let started = partitions.take(&incoming);
        match (incoming.delivery, started) {
            (Some(Ok(delivery)), Some(started)) => {
                let (key, event) = delivery::parse(&delivery);
                let received = std::time::Instant::now();
                let context = context.clone();
                lanes.submit(key, async move {
                    delivery::handle(context, delivery, event, received).await;
                    drop(started);
                });
            }
            // Read from a partition being handed over: it returns to the queue.
            (Some(Ok(_)), None) => {}
            (Some(Err(e)), _) => break Err(e.to_string()),
            (None, _) if partitions.expected_end_of(incoming.partition, incoming.generation) => {}
            (None, _) => break Err("consumer cancelled by the broker".to_string()),
        }
    };
    drop(consuming);
    if panicked.is_cancelled() {
        settings
            .metrics
            .task_restarted(&format!("consumer/{}", subscriber.name));
    }
    // No basic.cancel before the drain: a cancelled consumer hands its partitions to
    // another host at once, which would run an aggregate's next events beside the ones
    // still in flight here. Closing the channel after the drain hands them over, with
    // the deliveries not yet run back in the queue ahead of the rest.
    let in_flight = lanes.in_flight();
    if in_flight > 0 {
        tracing::info!(plugin = %subscriber.name, in_flight, "finishing in-flight deliveries");
    }
    if tokio::time::timeout(config.shutdown_timeout, lanes.drain())
        .await
        .is_err()
    {
        tracing::warn!(plugin = %subscriber.name, timeout = ?config.shutdown_timeout, "in-flight deliveries did not finish in time; they will be redelivered");
    }
    partitions.close(CLOSE_TIMEOUT).await;
    let close = channel.close(200, "eventhost consumer stopping".into());
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
    ended.map_err(|reason| ConsumeError::Lost {
        queue: queues.entry,
        reason,
    })
}
