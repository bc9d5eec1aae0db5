//! Settings for the plugin consumers (queues, retries, concurrency, hot loading) and the
//! host's HTTP API.

use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How delivered events reach the plugins.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerConfig {
    /// Consume and dispatch events inside `eventhost serve`.
    pub enabled: bool,
    /// Every `<name>.wasm` here is loaded as plugin `<name>` (`_` reads as `-`); adding,
    /// replacing or removing a file takes effect without a restart.
    pub plugin_dir: PathBuf,
    /// How often the plugin directory is checked for changes.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// Broker names start `<queue_prefix>.<plugin>` (see [`crate::broker::topology`]).
    pub queue_prefix: String,
    /// Partition queues per plugin. Events are spread over them by aggregate, and each
    /// has one active consumer across all hosts (the broker picks it), so up to this many
    /// hosts share a plugin's work while each aggregate's events stay in order. Every
    /// host must use the same number.
    pub partitions: u16,
    /// Declare quorum queues (replicated) instead of classic ones. A queue's type is
    /// fixed when it is first declared.
    pub quorum_queues: bool,
    /// Deliveries each plugin handles at once (events of one aggregate still go one
    /// after another).
    pub concurrency: u16,
    /// Unacknowledged deliveries the broker may push to each plugin's consumer.
    pub prefetch: u16,
    /// Attempts (the first one included) before a failing event is dead-lettered.
    pub max_attempts: u32,
    /// How a failed delivery is retried: `in-place` (it waits in its aggregate's lane,
    /// unacknowledged, so the aggregate's later events stay behind it) or `queue` (through
    /// the delay queues; the aggregate's later events overtake it).
    pub retry: RetryMode,
    /// Delays before the 1st, 2nd, ... retry; the last one repeats.
    #[serde(deserialize_with = "durations")]
    pub retry_delays: Vec<Duration>,
    /// What an aggregate's later events do once one of its events became a dead letter:
    /// `go-on` (they are handled as usual) or `hold` (they are parked in the dead-letter
    /// queue behind it, in order, until it is replayed and handled or released).
    pub on_dead_letter: DeadLetterMode,
    /// On shutdown, how long in-flight deliveries may take to finish before the
    /// process exits anyway (they are then redelivered; the inbox drops the repeats).
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Deadline of one plugin load (compile, provisioning, migrations); its database
    /// sessions are terminated at the deadline. A load past it is tried again later.
    #[serde(with = "humantime_serde")]
    pub load_timeout: Duration,
    /// A delivery in flight when the host died this many times is dead-lettered instead
    /// of being handed to the plugin again (a message that crashes the process).
    pub max_crashes: u32,
    /// How long each plugin's inbox remembers a handled event (an event arriving again
    /// later is handled again). Longer than any window in which an event can come back:
    /// redeliveries and retries, dead-letter replays, and backfills from the outbox's
    /// kept rows (`relay.retention`).
    #[serde(with = "humantime_serde")]
    pub inbox_retention: Duration,
    /// How often each host prunes its plugins' inboxes.
    #[serde(with = "humantime_serde")]
    pub inbox_prune_interval: Duration,
    /// Inbox rows deleted per pruning transaction.
    pub inbox_prune_batch: u32,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            plugin_dir: PathBuf::from("plugins.d"),
            reload_interval: Duration::from_secs(2),
            queue_prefix: "eventhost".into(),
            partitions: 4,
            quorum_queues: false,
            concurrency: 8,
            prefetch: 64,
            max_attempts: 5,
            retry: RetryMode::InPlace,
            retry_delays: [1, 5, 30, 120].map(Duration::from_secs).to_vec(),
            on_dead_letter: DeadLetterMode::GoOn,
            shutdown_timeout: Duration::from_secs(30),
            load_timeout: Duration::from_secs(60),
            max_crashes: 3,
            inbox_retention: Duration::from_secs(30 * 24 * 3600),
            inbox_prune_interval: Duration::from_secs(10 * 60),
            inbox_prune_batch: 5000,
        }
    }
}

/// Each partition is a queue (and, on a quorum cluster, a Raft group): a bound on what
/// one plugin may ask of the broker.
pub const MAX_PARTITIONS: u16 = 64;

impl ConsumerConfig {
    pub fn validate(&self) -> Result<(), String> {
        let word = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
        if self.queue_prefix.is_empty()
            || self.queue_prefix.len() > 100
            || !self.queue_prefix.chars().all(word)
        {
            return Err(
                "consumer.queue_prefix must be 1 to 100 letters, digits, '-', '_' or '.'".into(),
            );
        }
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            return Err(format!("consumer.partitions must be 1 to {MAX_PARTITIONS}"));
        }
        if self.concurrency == 0 {
            return Err("consumer.concurrency must be at least 1".into());
        }
        if self.prefetch < self.concurrency {
            return Err(format!(
                "consumer.prefetch ({}) must be at least consumer.concurrency ({})",
                self.prefetch, self.concurrency
            ));
        }
        if self.max_attempts == 0 {
            return Err("consumer.max_attempts must be at least 1".into());
        }
        if self.max_attempts > 1 && self.retry_delays.is_empty() {
            return Err("consumer.retry_delays must not be empty when max_attempts > 1".into());
        }
        if self.retry_delays.iter().any(|d| d.is_zero()) {
            return Err("consumer.retry_delays must all be longer than 0".into());
        }
        if self.max_crashes < 2 {
            // A first redelivery cannot tell a crash from a restart (see consumer::crashes).
            return Err("consumer.max_crashes must be at least 2".into());
        }
        if self.load_timeout < Duration::from_secs(1) {
            return Err("consumer.load_timeout must be at least 1s".into());
        }
        if self.inbox_retention < Duration::from_secs(24 * 3600) {
            return Err("consumer.inbox_retention must be at least 1 day".into());
        }
        if self.inbox_prune_interval < Duration::from_secs(1) {
            return Err("consumer.inbox_prune_interval must be at least 1s".into());
        }
        if !(1..=100_000).contains(&self.inbox_prune_batch) {
            return Err("consumer.inbox_prune_batch must be 1 to 100000".into());
        }
        if self.reload_interval < Duration::from_millis(100) {
            return Err("consumer.reload_interval must be at least 100ms".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetryMode {
    InPlace,
    Queue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeadLetterMode {
    GoOn,
    Hold,
}

/// The host's own HTTP API: plugin reads, health, metrics, admin.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Bearer token for the mutating admin routes (`EVENTHOST_ADMIN_TOKEN` overrides it).
    /// Without one they are disabled.
    pub admin_token: Option<Secret>,
    /// Largest request body on any route (413 beyond it).
    pub max_body_bytes: usize,
    /// A client must send a request's headers within this (else the connection closes);
    /// it also ends idle keep-alive connections.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest time a request may take to answer (503 beyond it).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// On shutdown, how long requests in flight may take to finish.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Who may open the dashboard at `/ui`.
    pub ui: UiAccess,
}

/// Who may open the dashboard. Its actions (reload, replays) always need the admin token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UiAccess {
    /// Signing in with the admin token opens every page.
    Token,
    /// The read-only pages are open to anyone who reaches the listener.
    OpenRead,
    /// No dashboard.
    Off,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            admin_token: None,
            max_body_bytes: 64 << 10,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 1024,
            drain_timeout: Duration::from_secs(10),
            ui: UiAccess::Token,
        }
    }
}

impl HttpConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self
            .admin_token
            .as_ref()
            .is_some_and(|t| t.expose().len() < 16)
        {
            return Err("http.admin_token must be at least 16 characters".into());
        }
        if self.max_connections == 0 || self.max_connections > 1 << 20 {
            return Err("http.max_connections must be 1 to 1048576".into());
        }
        if self.max_body_bytes > 1 << 30 {
            return Err("http.max_body_bytes must be at most 1 GiB".into());
        }
        for (field, value) in [
            ("http.header_read_timeout", self.header_read_timeout),
            ("http.request_timeout", self.request_timeout),
        ] {
            if value < Duration::from_millis(10) {
                return Err(format!("{field} must be at least 10ms"));
            }
        }
        Ok(())
    }
}

/// A value that never appears in `Debug` output or logs.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A list of humantime durations (`["1s", "30s", "2m"]`), each error naming the value.
fn durations<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Duration>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .map(|text| {
            humantime::parse_duration(text)
                .map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}")))
        })
        .collect()
}
