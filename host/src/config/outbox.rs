//! Settings for the broker connection, the relay and the reference auth service.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where events are published (and, later, consumed).
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// AMQP 0-9-1 URL of RabbitMQ.
    pub url: String,
    /// The topic exchange events are published to (routing key = event type). The host
    /// declares it durable.
    pub exchange: String,
    /// How long one connection attempt may take before it counts as an outage.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// PEM file of the CA certificate(s) that signed the broker's certificate, trusted on
    /// top of the public roots (`amqps://` URLs only).
    pub ca_file: Option<PathBuf>,
}

/// The URL's password stays out of `Debug` output.
impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("url", &crate::config::redact::url(&self.url))
            .field("exchange", &self.exchange)
            .field("connect_timeout", &self.connect_timeout)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            exchange: "eventhost.events".into(),
            connect_timeout: Duration::from_secs(5),
            ca_file: None,
        }
    }
}

/// How the relay claims, publishes, retries and purges outbox rows.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// Run the relay inside `eventhost serve`.
    pub enabled: bool,
    /// Rows claimed (and messages in flight) per batch.
    pub batch_size: u32,
    /// Independent publishing loops, each with its own AMQP connection. One is usually
    /// best: the broker takes a steady stream on one connection faster than several.
    pub workers: u32,
    /// Batches each worker keeps in flight: the next is claimed and sent while the
    /// previous one awaits its confirms (each batch holds its own transaction).
    pub pipeline: u32,
    /// Fallback poll when no NOTIFY arrives (new rows wake the relay at once).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Failed publications before a row becomes `dead`.
    pub max_attempts: u32,
    /// First retry delay; doubles per failed attempt, with jitter, up to `backoff_max`.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Longest wait for the broker's confirms of one batch; past it the connection is
    /// treated as lost and the unconfirmed rows stay pending.
    #[serde(with = "humantime_serde")]
    pub confirm_timeout: Duration,
    /// Largest message body the relay will publish; a bigger event counts as a failed
    /// attempt (and ends `dead`), rather than being sent for the broker to refuse.
    pub max_message_bytes: usize,
    /// Published rows are deleted once older than this.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    #[serde(with = "humantime_serde")]
    pub purge_interval: Duration,
    /// Rows deleted per purge transaction.
    pub purge_batch: u32,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            batch_size: 500,
            workers: 1,
            pipeline: 3,
            poll_interval: Duration::from_secs(1),
            max_attempts: 12,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            confirm_timeout: Duration::from_secs(30),
            max_message_bytes: 8 << 20,
            retention: Duration::from_secs(7 * 24 * 3600),
            purge_interval: Duration::from_secs(60),
            purge_batch: 5_000,
        }
    }
}

impl RelayConfig {
    pub fn validate(&self) -> Result<(), String> {
        let counts = [
            ("batch_size", self.batch_size),
            ("workers", self.workers),
            ("pipeline", self.pipeline),
            ("max_attempts", self.max_attempts),
            ("purge_batch", self.purge_batch),
        ];
        for (field, value) in counts {
            if value == 0 {
                return Err(format!("relay.{field} must be at least 1"));
            }
        }
        if self.batch_size > 10_000 {
            return Err("relay.batch_size must be at most 10000".into());
        }
        let durations = [
            ("poll_interval", self.poll_interval),
            ("backoff_base", self.backoff_base),
            ("confirm_timeout", self.confirm_timeout),
            ("purge_interval", self.purge_interval),
        ];
        for (field, value) in durations {
            if value.is_zero() {
                return Err(format!("relay.{field} must be greater than zero"));
            }
        }
        if self.backoff_max < self.backoff_base {
            return Err("relay.backoff_max must not be shorter than relay.backoff_base".into());
        }
        if self.max_message_bytes < 1024 {
            return Err("relay.max_message_bytes must be at least 1024".into());
        }
        Ok(())
    }
}

/// The reference auth service (`POST /auth/register`, ...), served by `eventhost serve`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthServiceConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// The CloudEvents `source` of the events it writes.
    pub source: String,
}

impl Default for AuthServiceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            source: "eventhost/auth-service".into(),
        }
    }
}
