//! Each plugin's queues, declared by the host:
//!
//! * `<prefix>.<plugin>`: the plugin's durable queue, bound to the events exchange with
//!   its subscriptions (topic patterns);
//! * `<prefix>.<plugin>.retry.<delay>`: one queue per retry delay. A failed delivery is
//!   published there; when its TTL runs out the broker dead-letters it back to the
//!   plugin's queue, so retries wait without holding a consumer;
//! * `<prefix>.<plugin>.dead`: dead letters, kept for inspection and replay.
//!
//! Classic or quorum queues; a queue's type is fixed once declared, so switching needs
//! the old queues deleted (the broker refuses the declaration, and the error says why).

use super::BrokerError;
use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::Channel;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct PluginQueues {
    pub main: String,
    /// (delay, queue), shortest first.
    pub retries: Vec<(Duration, String)>,
    pub dead: String,
}

impl PluginQueues {
    /// The queues of `plugin` under the consumer settings (prefix and retry delays).
    pub fn of(consumer: &crate::config::ConsumerConfig, plugin: &str) -> Self {
        Self::new(&consumer.queue_prefix, plugin, &consumer.retry_delays)
    }

    pub fn new(prefix: &str, plugin: &str, retry_delays: &[Duration]) -> Self {
        let main = format!("{prefix}.{plugin}");
        let retries = retry_delays
            .iter()
            .map(|d| (*d, format!("{main}.retry.{}ms", d.as_millis())))
            .collect();
        Self {
            dead: format!("{main}.dead"),
            main,
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

/// Declares the plugin's queues and binds its queue to `exchange` with each of
/// `subscriptions`, removing the bindings in `stale` (patterns it no longer has).
/// Idempotent; the exchange must exist.
pub async fn declare_plugin(
    channel: &Channel,
    exchange: &str,
    queues: &PluginQueues,
    quorum: bool,
    subscriptions: &[String],
    stale: &[String],
) -> Result<(), BrokerError> {
    declare(channel, &queues.main, arguments(quorum)).await?;
    declare(channel, &queues.dead, arguments(quorum)).await?;
    for (delay, queue) in &queues.retries {
        let mut args = arguments(quorum);
        args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(delay.as_millis() as i64),
        );
        // Expired messages go back to the plugin's queue through the default exchange.
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from("")),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(LongString::from(queues.main.as_str())),
        );
        declare(channel, queue, args).await?;
    }
    let binding = |pattern: &str, source| BrokerError::Binding {
        queue: queues.main.clone(),
        pattern: pattern.to_string(),
        source,
    };
    for pattern in subscriptions {
        channel
            .queue_bind(
                queues.main.as_str().into(),
                exchange.into(),
                pattern.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| binding(pattern, e))?;
    }
    for pattern in stale.iter().filter(|p| !subscriptions.contains(p)) {
        channel
            .queue_unbind(
                queues.main.as_str().into(),
                exchange.into(),
                pattern.as_str().into(),
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
        let q = PluginQueues::new("eventhost", "user-stats", &delays);
        assert_eq!(q.main, "eventhost.user-stats");
        assert_eq!(q.dead, "eventhost.user-stats.dead");
        assert_eq!(q.retry_queue(1), Some("eventhost.user-stats.retry.1000ms"));
        assert_eq!(q.retry_queue(2), Some("eventhost.user-stats.retry.30000ms"));
        assert_eq!(q.retry_queue(9), Some("eventhost.user-stats.retry.30000ms"));
        assert_eq!(PluginQueues::new("e", "p", &[]).retry_queue(1), None);
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
