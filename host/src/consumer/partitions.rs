//! A plugin's partitions as this host consumes them: one channel and one consumer per
//! partition queue. Every host consumes every partition and RabbitMQ keeps one of them
//! active per partition; this host only decides when to step back from one.
//!
//! RabbitMQ makes the first consumer that subscribed active and keeps it so, so a host
//! started first would keep every partition while later ones wait. To share the work,
//! a host that is active on more than its share (partitions / consuming hosts, rounded
//! up) hands one partition over: it stops taking its deliveries, lets the ones it took
//! finish and settle, then closes that partition's channel, which returns what it had
//! not started to the head of the queue and activates the next waiting consumer; then
//! it subscribes again at the back of the line. An aggregate's events are never in two
//! hosts' hands at once: the next host gets them only after the close.

use crate::broker::topology::PluginQueues;
use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A partition counts as this host's while its deliveries came within this.
const ACTIVE_WINDOW: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("cannot open a channel for {queue}: {source}")]
    Channel { queue: String, source: lapin::Error },
    #[error("cannot consume from {queue}: {source}")]
    Consume { queue: String, source: lapin::Error },
}

/// What a partition's reader hands the plugin's consumer.
pub struct Incoming {
    pub partition: usize,
    /// Which subscription of the partition read it (a reopened one starts anew).
    pub generation: u64,
    /// `None`: the partition's consumer ended (channel lost or cancelled by the broker).
    pub delivery: Option<Result<Delivery, lapin::Error>>,
}

/// Decrements its partition's count of started deliveries when the delivery is done
/// (settled, or dropped unrun).
pub struct Started(Arc<AtomicUsize>);

impl Drop for Started {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Partition {
    queue: String,
    generation: u64,
    channel: Channel,
    /// Stops its reader: set while handing the partition over.
    hold: CancellationToken,
    started: Arc<AtomicUsize>,
    last_delivery: Option<Instant>,
    handing_over: Option<Instant>,
}

pub struct Partitions {
    connection: Arc<Connection>,
    /// This host's consumer on the plugin's presence queue (counted by the others).
    presence: (Channel, lapin::Consumer),
    hosts_queue: String,
    prefetch: u16,
    tag: String,
    partitions: Vec<Partition>,
    incoming: mpsc::Sender<Incoming>,
    /// Handovers so far (for the log and the tests).
    pub handovers: u64,
}

impl Partitions {
    /// Subscribes to every partition of `queues`; deliveries arrive on the receiver.
    pub async fn subscribe(
        connection: Arc<Connection>,
        queues: &PluginQueues,
        prefetch: u16,
        tag: String,
    ) -> Result<(Self, mpsc::Receiver<Incoming>), PartitionError> {
        let (incoming, receiver) = mpsc::channel(queues.partitions.len().max(1));
        let presence = present(&connection, &queues.hosts, &tag).await?;
        let mut this = Self {
            connection,
            presence,
            hosts_queue: queues.hosts.clone(),
            prefetch,
            tag,
            partitions: Vec::new(),
            incoming,
            handovers: 0,
        };
        for (index, queue) in queues.partitions.iter().enumerate() {
            let partition = this.open(index, queue, 0).await?;
            this.partitions.push(partition);
        }
        Ok((this, receiver))
    }

    async fn open(
        &self,
        index: usize,
        queue: &str,
        generation: u64,
    ) -> Result<Partition, PartitionError> {
        let channel_error = |source| PartitionError::Channel {
            queue: queue.to_string(),
            source,
        };
        let channel = self
            .connection
            .create_channel()
            .await
            .map_err(channel_error)?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(channel_error)?;
        let tag = format!("{}-{queue}", self.tag);
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|source| PartitionError::Consume {
                queue: queue.to_string(),
                source,
            })?;
        let hold = CancellationToken::new();
        let (stop, incoming) = (hold.clone(), self.incoming.clone());
        // The consumer lives in this task until its channel closes: dropping it earlier
        // would cancel it, handing the partition over with deliveries still in flight.
        tokio::spawn(async move {
            loop {
                let delivery = tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    next = consumer.next() => next,
                };
                let ended = delivery.is_none();
                let incoming_delivery = Incoming {
                    partition: index,
                    generation,
                    delivery,
                };
                let sent = incoming.send(incoming_delivery).await;
                if ended || sent.is_err() {
                    return;
                }
            }
            // Held: deliveries not taken stay unacknowledged until the channel closes.
            while consumer.next().await.is_some() {}
        });
        Ok(Partition {
            queue: queue.to_string(),
            generation,
            channel,
            hold,
            started: Arc::default(),
            last_delivery: None,
            handing_over: None,
        })
    }

    /// Takes a delivery read from a partition: `None` when that partition is being
    /// handed over or was since (the delivery is dropped unacknowledged and returns to
    /// the queue at the close).
    pub fn take(&mut self, from: &Incoming) -> Option<Started> {
        from.delivery.as_ref()?;
        let p = self.partitions.get_mut(from.partition)?;
        if p.handing_over.is_some() || p.generation != from.generation {
            return None;
        }
        p.last_delivery = Some(Instant::now());
        p.started.fetch_add(1, Ordering::AcqRel);
        Some(Started(p.started.clone()))
    }

    /// Whether a partition's consumer ending is this host's own doing (a handover).
    pub fn expected_end_of(&self, partition: usize, generation: u64) -> bool {
        self.partitions
            .get(partition)
            .is_none_or(|p| p.handing_over.is_some() || p.generation != generation)
    }

    /// One round of sharing: finishes handovers whose deliveries are done, and starts one
    /// if this host holds more than its share. Errors reopening a partition are returned
    /// (the plugin's consumer then restarts).
    pub async fn share(&mut self) -> Result<(), PartitionError> {
        for index in 0..self.partitions.len() {
            let p = &mut self.partitions[index];
            // Its started deliveries finish first (an in-place retry among them holds
            // the handover as long as it holds its aggregate).
            if p.handing_over.is_none() || p.started.load(Ordering::Acquire) > 0 {
                continue;
            }
            let _ = p
                .channel
                .close(200, "handing the partition over".into())
                .await;
            self.handovers += 1;
            tracing::info!(queue = %p.queue, "partition handed over; waiting in line for it again");
            let (queue, generation) = (p.queue.clone(), p.generation + 1);
            let reopened = self.open(index, &queue, generation).await?;
            self.partitions[index] = reopened;
        }
        if self.partitions.iter().any(|p| p.handing_over.is_some()) {
            return Ok(()); // one at a time
        }
        let hosts = self.hosts().await;
        let share = self.partitions.len().div_ceil(hosts.max(1));
        let active: Vec<usize> = (0..self.partitions.len())
            .filter(|i| {
                let p = &self.partitions[*i];
                p.handing_over.is_none()
                    && p.last_delivery.is_some_and(|t| t.elapsed() < ACTIVE_WINDOW)
            })
            .collect();
        if hosts > 1 && active.len() > share {
            // The least busy one: its handover waits for the fewest deliveries.
            let index = *active
                .iter()
                .min_by_key(|i| self.partitions[**i].started.load(Ordering::Acquire))
                .unwrap_or(&active[0]);
            let p = &mut self.partitions[index];
            tracing::info!(queue = %p.queue, hosts, share, active = active.len(), "handing a partition over to share the work");
            p.hold.cancel();
            p.handing_over = Some(Instant::now());
        }
        Ok(())
    }

    /// How many hosts consume this plugin (consumers of the presence queue).
    async fn hosts(&self) -> usize {
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        match self
            .presence
            .0
            .queue_declare(
                self.hosts_queue.as_str().into(),
                passive,
                FieldTable::default(),
            )
            .await
        {
            Ok(queue) => (queue.consumer_count() as usize).max(1),
            Err(e) => {
                tracing::warn!(queue = %self.hosts_queue, error = %e, "cannot count the hosts");
                1
            }
        }
    }

    /// Closes every partition's channel (after the plugin's deliveries drained).
    pub async fn close(&self, limit: Duration) {
        for p in &self.partitions {
            let close = p.channel.close(200, "eventhost consumer stopping".into());
            let _ = tokio::time::timeout(limit, close).await;
        }
        let close = self
            .presence
            .0
            .close(200, "eventhost consumer stopping".into());
        let _ = tokio::time::timeout(limit, close).await;
    }
}

/// Declares the presence queue (transient: it goes with the last host) and consumes it.
async fn present(
    connection: &Connection,
    queue: &str,
    tag: &str,
) -> Result<(Channel, lapin::Consumer), PartitionError> {
    let failed = |source| PartitionError::Channel {
        queue: queue.to_string(),
        source,
    };
    let channel = connection.create_channel().await.map_err(failed)?;
    let options = QueueDeclareOptions {
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .map_err(failed)?;
    let consumer = channel
        .basic_consume(
            queue.into(),
            format!("{tag}-presence").as_str().into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|source| PartitionError::Consume {
            queue: queue.to_string(),
            source,
        })?;
    Ok((channel, consumer))
}
