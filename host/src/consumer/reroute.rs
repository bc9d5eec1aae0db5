//! Messages from other publishers carry no partitioning key, so they all arrive in one
//! partition. Each is sent back through the plugin's entry with its aggregate's key, as the
//! relay would have sent it, and handled there in its aggregate's partition.

use super::delivery::{nack, pause, Context};
use super::headers;
use crate::broker::{publish_confirmed, To};
use crate::outbox::health::Backoff;
use lapin::message::Delivery;
use std::time::Duration;

/// Sends a message from another publisher back through the entry with its partitioning
/// key, retrying in place (its lane waits, so the aggregate's next message cannot go
/// first). False when it was not sent: the host is stopping or the channel is gone, and
/// closing the channel returns it to the queue ahead of its aggregate's later messages.
pub async fn send_to_partition(ctx: &Context, delivery: &Delivery, aggregate: &str) -> bool {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        let properties = headers::partitioned(delivery, aggregate);
        let entry = To::Exchange(&ctx.queues.entry);
        let Err(error) = publish_confirmed(&ctx.channel, entry, &delivery.data, properties).await
        else {
            tracing::debug!(%aggregate, "sent to its aggregate's partition");
            return true;
        };
        if !ctx.channel.status().connected() {
            tracing::warn!(%error, "channel lost before the delivery reached its partition");
            return false;
        }
        tracing::warn!(%error, "could not send the delivery to its partition; trying again");
        if !pause(ctx, &mut backoff).await {
            nack(delivery).await;
            return false;
        }
    }
}
