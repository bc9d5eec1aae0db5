//! Each plugin's broker objects, declared by the host:
//!
//! * `<prefix>.<plugin>`: the plugin's entry, a consistent-hash exchange bound to the
//!   events exchange with the plugin's subscriptions (topic patterns). It hashes the
//!   [`AGGREGATE_HEADER`], so all of an aggregate's events reach the same partition;
//! * `<prefix>.<plugin>.p<i>`: the partition queues, each with a single active consumer
//!   across every host consuming it (RabbitMQ hands the partition to another consumer
//!   when that one goes away), so one process at a time handles an aggregate;
//! * `<prefix>.<plugin>.delay.<ms>ms`: one queue per retry delay. A failed delivery sent
//!   there waits without holding a consumer; when its TTL runs out the broker
//!   dead-letters it back to the entry, which hashes it to its partition again;
//! * `<prefix>.<plugin>.dead`: dead letters, kept for inspection and replay;
//! * `<prefix>.<plugin>.hosts`: a transient queue nothing is routed to; each host
//!   consuming the plugin keeps one consumer on it, so its consumer count is the number
//!   of hosts (what the hosts share the partitions by).
//!
//! Classic or quorum queues; a queue's type is fixed once declared, so switching needs
//! the old queues deleted (the broker refuses the declaration, and the error says why).
//! A message without the header (a publisher other than eventhost's) still routes,
//! always to the same partition.

use super::BrokerError;
use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, ExchangeUnbindOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};
use std::time::Duration;

/// The header the relay sets to the event's `<aggregate type>/<aggregate id>`: the
/// partitioning key.
pub const AGGREGATE_HEADER: &str = "x-eventhost-aggregate";

#[derive(Debug, Clone, PartialEq)]
pub struct PluginQueues {
    /// The plugin's entry exchange: retries, replays and backfills are published here.
    pub entry: String,
    /// The partition queues, in order.
    pub partitions: Vec<String>,
    /// (delay, queue), shortest first.
    pub retries: Vec<(Duration, String)>,
    pub dead: String,
    /// The presence queue: one consumer per host.
    pub hosts: String,
}

impl PluginQueues {
    /// The queues of `plugin` under the consumer settings (prefix, partitions, delays).
    pub fn of(consumer: &crate::config::ConsumerConfig, plugin: &str) -> Self {
        Self::new(
            &consumer.queue_prefix,
            plugin,
            consumer.partitions,
            &consumer.retry_delays,
        )
    }

    pub fn new(prefix: &str, plugin: &str, partitions: u16, retry_delays: &[Duration]) -> Self {
        let entry = format!("{prefix}.{plugin}");
        let retries = retry_delays
            .iter()
            .map(|d| (*d, format!("{entry}.delay.{}ms", d.as_millis())))
            .collect();
        Self {
            partitions: (0..partitions.max(1))
                .map(|i| format!("{entry}.p{i}"))
                .collect(),
            dead: format!("{entry}.dead"),
            hosts: format!("{entry}.hosts"),
            entry,
            retries,
        }
    }

    /// The retry queue for the `attempt`-th failure (1-based); the longest delay repeats.
    pub fn retry_queue(&self, attempt: u32) -> Option<&str> {
        let last = self.retries.len().checked_sub(1)?;
        let index = (attempt.max(1) as usize - 1).min(last);
        Some(self.retries[index].1.as_str())
    }
}

fn arguments(quorum: bool) -> FieldTable {
    let mut table = FieldTable::default();
    if quorum {
        table.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(LongString::from("quorum")),
        );
    }
    table
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

async fn declare(channel: &Channel, queue: &str, arguments: FieldTable) -> Result<(), BrokerError> {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), options, arguments)
        .await
        .map(|_| ())
        .map_err(|source| BrokerError::Queue {
            queue: queue.to_string(),
            source,
        })
}

/// The entry exchange; the broker refuses it when the consistent-hash exchange plugin
/// is not enabled (`rabbitmq-plugins enable rabbitmq_consistent_hash_exchange`).
async fn declare_entry(channel: &Channel, entry: &str) -> Result<(), BrokerError> {
    let mut args = FieldTable::default();
    args.insert("hash-header".into(), text(AGGREGATE_HEADER));
    let options = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            entry.into(),
            ExchangeKind::Custom("x-consistent-hash".into()),
            options,
            args,
        )
        .await
        .map_err(|source| BrokerError::Entry {
            exchange: entry.to_string(),
            source,
        })
}

/// Declares the plugin's exchange and queues and binds its entry to `exchange` with each
/// of `subscriptions`, removing the bindings in `stale` (patterns it no longer has).
/// Idempotent; the events exchange must exist.
pub async fn declare_plugin(
    channel: &Channel,
    exchange: &str,
    queues: &PluginQueues,
    quorum: bool,
    subscriptions: &[String],
    stale: &[String],
) -> Result<(), BrokerError> {
    declare_entry(channel, &queues.entry).await?;
    for partition in &queues.partitions {
        let mut args = arguments(quorum);
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        declare(channel, partition, args).await?;
        // Equal weights: every partition takes the same share of the hash ring.
        channel
            .queue_bind(
                partition.as_str().into(),
                queues.entry.as_str().into(),
                "1".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|source| BrokerError::Binding {
                queue: partition.clone(),
                pattern: "1".into(),
                source,
            })?;
    }
    declare(channel, &queues.dead, arguments(quorum)).await?;
    for (delay, queue) in &queues.retries {
        let mut args = arguments(quorum);
        args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(delay.as_millis() as i64),
        );
        // Expired messages go back through the entry, to their aggregate's partition.
        args.insert("x-dead-letter-exchange".into(), text(&queues.entry));
        declare(channel, queue, args).await?;
    }
    let binding = |pattern: &str, source| BrokerError::Binding {
        queue: queues.entry.clone(),
        pattern: pattern.to_string(),
        source,
    };
    for pattern in subscriptions {
        channel
            .exchange_bind(
                queues.entry.as_str().into(),
                exchange.into(),
                pattern.as_str().into(),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| binding(pattern, e))?;
    }
    for pattern in stale.iter().filter(|p| !subscriptions.contains(p)) {
        channel
            .exchange_unbind(
                queues.entry.as_str().into(),
                exchange.into(),
                pattern.as_str().into(),
                ExchangeUnbindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| binding(pattern, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_retry_ladder() {
        let delays = [Duration::from_secs(1), Duration::from_secs(30)];
        let q = PluginQueues::new("eventhost", "user-stats", 2, &delays);
        assert_eq!(q.entry, "eventhost.user-stats");
        assert_eq!(
            q.partitions,
            ["eventhost.user-stats.p0", "eventhost.user-stats.p1"]
        );
        assert_eq!(q.dead, "eventhost.user-stats.dead");
        assert_eq!(q.retry_queue(1), Some("eventhost.user-stats.delay.1000ms"));
        assert_eq!(q.retry_queue(2), Some("eventhost.user-stats.delay.30000ms"));
        assert_eq!(q.retry_queue(9), Some("eventhost.user-stats.delay.30000ms"));
        assert_eq!(PluginQueues::new("e", "p", 1, &[]).retry_queue(1), None);
        assert_eq!(PluginQueues::new("e", "p", 0, &[]).partitions, ["e.p.p0"]);
    }
}

/// Whether an AMQP topic `pattern` (`*` one word, `#` zero or more) matches `key`, as the
/// broker would route it. Patterns come from plugins: this is a table over (pattern word,
/// key word), so no pattern can make it backtrack.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = key.split('.').collect();
    // matched[j]: the pattern words so far match the first j key words.
    let mut matched = vec![false; key.len() + 1];
    matched[0] = true;
    for word in &pattern {
        let mut next = vec![false; key.len() + 1];
        for j in 0..=key.len() {
            next[j] = match *word {
                "#" => matched[j] || (j > 0 && next[j - 1]),
                "*" => j > 0 && matched[j - 1],
                w => j > 0 && matched[j - 1] && key[j - 1] == w,
            };
        }
        matched = next;
    }
    matched[key.len()]
}

#[cfg(test)]
mod matching {
    use super::topic_matches;

    #[test]
    fn topic_patterns_match_as_the_broker_routes() {
        for (pattern, key, expected) in [
            ("user.#", "user.created", true),
            ("user.#", "user", true),
            ("user.*", "user.role.changed", false),
            ("user.*", "user.created", true),
            ("#", "anything.at.all", true),
            ("bid.placed", "bid.placed", true),
            ("bid.placed", "bid.placed.x", false),
            ("*.created", "user.created", true),
            ("a.#.z", "a.b.c.z", true),
            ("a.#.z", "a.z", true),
            ("a.#.z", "a.b", false),
            ("user.*.#", "user", false),
        ] {
            assert_eq!(topic_matches(pattern, key), expected, "{pattern} vs {key}");
        }
        // A plugin's worst pattern against a long key answers at once.
        let pattern = vec!["#"; 120].join(".") + ".x";
        let key = vec!["a"; 120].join(".");
        assert!(!topic_matches(&pattern, &key));
    }
}
