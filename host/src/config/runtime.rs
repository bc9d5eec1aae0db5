//! Settings for the plugin runtime, with the defaults an operator gets when silent.

use serde::Deserialize;
use std::time::Duration;

/// What one invocation of a plugin (one event, or one read) may use.
///
/// Every limit is per invocation and enforced by the host, not by the plugin:
/// * `cpu_time`: time spent running the plugin's WebAssembly code, counted in epoch
///   ticks of `epoch_tick` (so measured to within one tick); an endless loop is
///   trapped when it runs out.
/// * `wall_time`: the whole invocation from instantiation to commit, including time the
///   plugin waits on host calls (queries, auth lookups). At expiry the invocation is
///   abandoned, its transaction rolled back and its database session terminated, so a
///   plugin that lifts its own `statement_timeout` still cannot outlive it.
/// * `memory`: the largest linear memory a plugin instance may grow to, in bytes.
/// * `table_elements`: the largest table (function references) an instance may have.
/// * `statement_timeout`: PostgreSQL's `statement_timeout` for the plugin's session;
///   a first line of defence, since the plugin may change it; `wall_time` is the bound.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    #[serde(with = "humantime_serde")]
    pub cpu_time: Duration,
    #[serde(with = "humantime_serde")]
    pub wall_time: Duration,
    pub memory: usize,
    pub table_elements: usize,
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub epoch_tick: Duration,
    /// Plugin instances alive at once across the host (the pooling allocator's slots).
    pub max_instances: u32,
    /// PostgreSQL connections per plugin; also the plugin role's connection limit.
    pub db_connections: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            cpu_time: Duration::from_millis(500),
            wall_time: Duration::from_secs(10),
            memory: 64 << 20,
            table_elements: 20_000,
            statement_timeout: Duration::from_secs(5),
            epoch_tick: Duration::from_millis(5),
            max_instances: 256,
            db_connections: 4,
        }
    }
}

impl Limits {
    /// Checks the combination once, naming the field at fault.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("cpu_time", self.cpu_time),
            ("wall_time", self.wall_time),
            ("statement_timeout", self.statement_timeout),
            ("epoch_tick", self.epoch_tick),
        ];
        for (field, value) in positive {
            if value.is_zero() {
                return Err(format!("limits.{field} must be greater than zero"));
            }
        }
        if self.epoch_tick > self.cpu_time {
            return Err("limits.epoch_tick must not exceed limits.cpu_time".into());
        }
        if self.memory < 1 << 20 {
            return Err(
                "limits.memory must be at least 1 MiB (a Rust plugin needs about 1.1 MiB)".into(),
            );
        }
        if self.max_instances == 0 || self.db_connections == 0 {
            return Err("limits.max_instances and limits.db_connections must be at least 1".into());
        }
        Ok(())
    }

    /// The CPU budget in epoch ticks (at least one).
    pub fn cpu_ticks(&self) -> u64 {
        (self.cpu_time.as_micros() / self.epoch_tick.as_micros().max(1)).max(1) as u64
    }
}

/// Where `auth.lookup-user` gets its answers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "backend", rename_all = "kebab-case", deny_unknown_fields)]
pub enum AuthBackend {
    /// The reference `users` table in the host's database.
    #[default]
    Postgres,
    /// An external auth service: `GET {url}/auth/users/{id}` answering 200 with the user
    /// as JSON, or 404.
    Http {
        url: String,
        #[serde(with = "humantime_serde", default = "default_auth_timeout")]
        timeout: Duration,
    },
}

fn default_auth_timeout() -> Duration {
    Duration::from_secs(2)
}
