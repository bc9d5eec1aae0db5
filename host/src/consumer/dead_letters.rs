//! `eventhost dlq`: read a plugin's dead-letter queue without consuming it, and replay
//! dead letters through the plugin's queue with their attempts reset. Messages are taken
//! with `basic.get` and left unacknowledged, so closing the channel puts back whatever was
//! only looked at; a replayed one is acked only after its copy was confirmed.

use super::headers;
use crate::broker::topology::PluginQueues;
use crate::broker::{self, BrokerError};
use crate::broker::{publish_confirmed, To};
use crate::capabilities::log::truncate;
use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use serde::Serialize;
use std::collections::HashSet;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeadLetter {
    /// The event's id (the AMQP `message_id` when the body is not a CloudEvent).
    pub event_id: Option<String>,
    pub event_type: String,
    pub attempts: u32,
    pub error: String,
    pub failed_at: Option<String>,
    /// Parked behind this dead letter (`on_dead_letter = "hold"`): replaying that one
    /// replays this one after it.
    pub held_behind: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("dead-letter queue {queue} not found (has plugin {plugin} ever run on this broker?): {source}")]
    NoQueue {
        queue: String,
        plugin: String,
        source: lapin::Error,
    },
    #[error("reading {queue} failed: {source}")]
    Get { queue: String, source: lapin::Error },
    #[error("replaying to {queue} failed: {reason}")]
    Replay { queue: String, reason: String },
}

/// Which dead letters to replay.
#[derive(Debug, Clone)]
pub enum Selection {
    All,
    EventIds(Vec<String>),
}

impl Selection {
    fn takes(&self, letter: &DeadLetter) -> bool {
        match self {
            Self::All => true,
            Self::EventIds(ids) => [&letter.event_id, &letter.held_behind]
                .into_iter()
                .flatten()
                .any(|id| ids.contains(id)),
        }
    }
}

/// Messages in `queue` now, after checking it exists.
async fn depth(channel: &Channel, queue: &str, plugin: &str) -> Result<u32, DeadLetterError> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .map(|q| q.message_count())
        .map_err(|source| DeadLetterError::NoQueue {
            queue: queue.to_string(),
            plugin: plugin.to_string(),
            source,
        })
}

fn describe(delivery: &lapin::message::Delivery) -> DeadLetter {
    let properties = &delivery.properties;
    DeadLetter {
        // The CloudEvent's own id (what holds and the inbox know it by); the AMQP
        // `message_id` for a message that is not one.
        event_id: super::binary_mode::event(properties, &delivery.data)
            .map(|event| event.id.0)
            .ok()
            .or_else(|| properties.message_id().as_ref().map(|id| id.to_string())),
        event_type: headers::routing_key(delivery),
        attempts: headers::attempts(properties),
        error: headers::text(properties, headers::ERROR).unwrap_or_default(),
        failed_at: headers::text(properties, headers::FAILED_AT),
        held_behind: headers::text(properties, headers::HELD_BEHIND),
    }
}

/// Walks the queue once (as deep as it was at the start, `limit` messages at most),
/// calling `visit` on each message; `visit` returns whether it took the message (then it
/// is acked).
async fn walk<F>(
    connection: &Connection,
    plugin: &str,
    queues: &PluginQueues,
    limit: u32,
    mut visit: F,
) -> Result<(), DeadLetterError>
where
    F: AsyncFnMut(&Channel, &lapin::message::Delivery, DeadLetter) -> Result<bool, DeadLetterError>,
{
    let channel = broker::confirm_channel(connection).await?;
    let depth = depth(&channel, &queues.dead, plugin).await?;
    let result = async {
        for _ in 0..depth.min(limit) {
            let got = channel
                .basic_get(queues.dead.as_str().into(), BasicGetOptions::default())
                .await
                .map_err(|source| DeadLetterError::Get {
                    queue: queues.dead.clone(),
                    source,
                })?;
            let Some(message) = got else { break };
            let letter = describe(&message.delivery);
            if visit(&channel, &message.delivery, letter).await? {
                message
                    .delivery
                    .acker
                    .ack(BasicAckOptions::default())
                    .await
                    .map_err(|source| DeadLetterError::Get {
                        queue: queues.dead.clone(),
                        source,
                    })?;
            }
        }
        Ok(())
    }
    .await;
    // Everything looked at and not acked goes back to the queue.
    let _ = channel.close(200, "dead letters inspected".into()).await;
    result
}

pub async fn list(
    connection: &Connection,
    plugin: &str,
    queues: &PluginQueues,
) -> Result<Vec<DeadLetter>, DeadLetterError> {
    let mut letters = Vec::new();
    walk(
        connection,
        plugin,
        queues,
        u32::MAX,
        async |_, _, letter| {
            letters.push(letter);
            Ok(false)
        },
    )
    .await?;
    Ok(letters)
}

/// A dead letter with its AMQP headers and body, for the dashboard.
#[derive(Debug, Clone)]
pub struct Inspected {
    pub letter: DeadLetter,
    pub headers: Vec<(String, String)>,
    /// The body as text (bytes that are not UTF-8 replaced), cut at [`BODY_SHOWN`].
    pub body: String,
}

/// Bytes of a body [`inspect`] keeps.
pub const BODY_SHOWN: usize = 64 << 10;
/// Headers [`inspect`] keeps per letter, and bytes of each value: any AMQP client may
/// have published the message, with tables as large as the broker allows.
const HEADERS_SHOWN: usize = 64;
const HEADER_SHOWN: usize = 1024;

/// The first `limit` dead letters in full, without removing them.
pub async fn inspect(
    connection: &Connection,
    plugin: &str,
    queues: &PluginQueues,
    limit: u32,
) -> Result<Vec<Inspected>, DeadLetterError> {
    let mut letters = Vec::new();
    walk(
        connection,
        plugin,
        queues,
        limit,
        async |_, delivery, letter| {
            let headers = delivery
                .properties
                .headers()
                .as_ref()
                .map(|table| {
                    table
                        .inner()
                        .iter()
                        .take(HEADERS_SHOWN)
                        .map(|(k, v)| (k.to_string(), truncate(headers::display(v), HEADER_SHOWN)))
                        .collect()
                })
                .unwrap_or_default();
            let shown = &delivery.data[..delivery.data.len().min(BODY_SHOWN)];
            let mut body = String::from_utf8_lossy(shown).into_owned();
            if delivery.data.len() > BODY_SHOWN {
                body.push_str(&format!(" [cut: {} bytes in all]", delivery.data.len()));
            }
            letters.push(Inspected {
                letter,
                headers,
                body,
            });
            Ok(false)
        },
    )
    .await?;
    Ok(letters)
}

/// What a replay did.
#[derive(Debug, Default)]
pub struct Replayed {
    pub replayed: Vec<DeadLetter>,
    /// Selected but left in the queue: parked behind a head that is still held and was
    /// not replayed before them (they would only be parked again, out of order).
    pub waiting: Vec<DeadLetter>,
}

/// Puts the selected dead letters back on the plugin's entry, in queue order. A parked
/// letter goes only behind its head (replaying a head replays what is parked behind it)
/// or once its aggregate is no longer held: `held` are the heads held now.
pub async fn replay(
    connection: &Connection,
    plugin: &str,
    queues: &PluginQueues,
    selection: &Selection,
    held: &HashSet<String>,
) -> Result<Replayed, DeadLetterError> {
    let mut done = Replayed::default();
    let mut heads_sent = HashSet::new();
    walk(
        connection,
        plugin,
        queues,
        u32::MAX,
        async |channel, delivery, letter| {
            if !selection.takes(&letter) {
                return Ok(false);
            }
            if let Some(head) = &letter.held_behind {
                if held.contains(head) && !heads_sent.contains(head) {
                    done.waiting.push(letter);
                    return Ok(false);
                }
            }
            let properties = headers::replayed(&delivery.properties);
            publish_confirmed(
                channel,
                To::Exchange(&queues.entry),
                &delivery.data,
                properties,
            )
            .await
            .map_err(|reason| DeadLetterError::Replay {
                queue: queues.entry.clone(),
                reason,
            })?;
            if let Some(id) = &letter.event_id {
                heads_sent.insert(id.clone());
            }
            done.replayed.push(letter);
            Ok(true)
        },
    )
    .await?;
    Ok(done)
}
