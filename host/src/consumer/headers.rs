//! The AMQP headers a failed delivery carries on the retry path and in the dead-letter
//! queue: how many attempts failed, the last error, the plugin, when, and the original
//! routing key (a message coming back from a delay queue arrives with the queue's name).

use crate::broker::topology::AGGREGATE_HEADER;
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;

pub const ATTEMPTS: &str = "x-eventhost-attempts";
pub const ERROR: &str = "x-eventhost-error";
pub const PLUGIN: &str = "x-eventhost-plugin";
pub const FAILED_AT: &str = "x-eventhost-failed-at";
pub const ROUTING_KEY: &str = "x-eventhost-routing-key";
/// On a parked message (`on_dead_letter = "hold"`): the dead letter it waits behind.
pub const HELD_BEHIND: &str = "x-eventhost-held-behind";

const PERSISTENT: u8 = 2;
/// Error texts are cut here so a huge trap message cannot bloat every copy.
const MAX_ERROR_BYTES: usize = 4096;

fn get<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    properties.headers().as_ref()?.inner().get(name)
}

/// Failed attempts so far (0 for a first delivery).
pub fn attempts(properties: &BasicProperties) -> u32 {
    match get(properties, ATTEMPTS) {
        Some(AMQPValue::LongUInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => (*n).max(0) as u32,
        Some(AMQPValue::LongLongInt(n)) => (*n).clamp(0, u32::MAX as i64) as u32,
        Some(AMQPValue::ShortUInt(n)) => u32::from(*n),
        Some(AMQPValue::ShortInt(n)) => (*n).max(0) as u32,
        _ => 0,
    }
}

pub fn text(properties: &BasicProperties, name: &str) -> Option<String> {
    string_value(get(properties, name)?)
}

/// A header's value, when it is a string (long or short).
pub fn string_value(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// Any header's value as text, for people: strings as they are, numbers and the rest
/// as AMQP types print.
pub fn display(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::Timestamp(t) => t.to_string(),
        AMQPValue::Boolean(b) => b.to_string(),
        other => string_value(other).unwrap_or_else(|| format!("{other:?}")),
    }
}

/// The event's routing key, wherever the message has travelled.
pub fn routing_key(delivery: &Delivery) -> String {
    text(&delivery.properties, ROUTING_KEY).unwrap_or_else(|| delivery.routing_key.to_string())
}

/// The delivery's properties plus the failure headers, persistent.
pub fn failed(delivery: &Delivery, plugin: &str, attempts: u32, error: &str) -> BasicProperties {
    forwarded(
        delivery,
        [
            (ATTEMPTS, AMQPValue::LongUInt(attempts)),
            (ERROR, long(truncate(error))),
            (PLUGIN, long(plugin)),
            (FAILED_AT, long(&chrono::Utc::now().to_rfc3339())),
        ],
    )
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// The delivery's properties, persistent, with its headers plus `added` and its original
/// routing key: what the host sends on for it.
fn forwarded<'a>(
    delivery: &Delivery,
    added: impl IntoIterator<Item = (&'a str, AMQPValue)>,
) -> BasicProperties {
    let mut table = delivery.properties.headers().clone().unwrap_or_default();
    for (name, value) in added {
        table.insert(ShortString::from(name), value);
    }
    table.insert(ShortString::from(ROUTING_KEY), long(&routing_key(delivery)));
    delivery
        .properties
        .clone()
        .with_headers(table)
        .with_delivery_mode(PERSISTENT)
}

/// A parked message's properties: the failure headers plus the head it waits behind.
pub fn parked(properties: BasicProperties, head: &str) -> BasicProperties {
    let mut table = properties.headers().clone().unwrap_or_default();
    table.insert(ShortString::from(HELD_BEHIND), long(head));
    properties.with_headers(table)
}

/// The properties of a message from another publisher, sent back through the plugin's
/// entry with its partitioning key (`aggregate`) and its routing key set, as the relay
/// would have sent it.
pub fn partitioned(delivery: &Delivery, aggregate: &str) -> BasicProperties {
    forwarded(delivery, [(AGGREGATE_HEADER, long(aggregate))])
}

/// Whether the message carries its partitioning key (every message the relay sent).
pub fn has_partition_key(properties: &BasicProperties) -> bool {
    get(properties, AGGREGATE_HEADER).is_some()
}

/// The properties a replayed dead letter goes back with: its failure headers dropped, so
/// it starts again with a full set of attempts.
pub fn replayed(properties: &BasicProperties) -> BasicProperties {
    let kept: FieldTable = properties
        .headers()
        .as_ref()
        .map(|table| {
            table
                .inner()
                .iter()
                .filter(|(name, _)| keep_on_replay(name.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<std::collections::BTreeMap<_, _>>()
                .into()
        })
        .unwrap_or_default();
    properties
        .clone()
        .with_headers(kept)
        .with_delivery_mode(PERSISTENT)
}

/// Failure bookkeeping (ours and the broker's `x-death` family) is dropped; the original
/// routing key and the partitioning key stay.
fn keep_on_replay(name: &str) -> bool {
    name == ROUTING_KEY
        || name == AGGREGATE_HEADER
        || !(name.starts_with("x-eventhost-")
            || name.starts_with("x-death")
            || name.starts_with("x-first-death")
            || name.starts_with("x-last-death"))
}

fn truncate(error: &str) -> &str {
    if error.len() <= MAX_ERROR_BYTES {
        return error;
    }
    let mut end = MAX_ERROR_BYTES;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    &error[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_round_trip_and_replay_clears_them() {
        let mut table = FieldTable::default();
        table.insert("traceparent".into(), AMQPValue::LongString("00-abc".into()));
        table.insert(ATTEMPTS.into(), AMQPValue::LongUInt(3));
        table.insert(ERROR.into(), AMQPValue::LongString("boom".into()));
        table.insert(
            AGGREGATE_HEADER.into(),
            AMQPValue::LongString("user/u-1".into()),
        );
        let props = BasicProperties::default().with_headers(table);
        assert_eq!(attempts(&props), 3);
        assert_eq!(text(&props, ERROR).as_deref(), Some("boom"));
        let again = replayed(&props);
        assert_eq!(attempts(&again), 0);
        assert_eq!(text(&again, ERROR), None);
        assert_eq!(text(&again, "traceparent").as_deref(), Some("00-abc"));
        assert!(has_partition_key(&again), "a replay keeps its partition");
        assert!(!has_partition_key(&BasicProperties::default()));
        assert_eq!(attempts(&BasicProperties::default()), 0);
    }

    #[test]
    fn long_errors_are_cut_on_a_char_boundary() {
        let long = "é".repeat(MAX_ERROR_BYTES);
        let cut = truncate(&long);
        assert!(cut.len() <= MAX_ERROR_BYTES && cut.chars().all(|c| c == 'é'));
    }
}
