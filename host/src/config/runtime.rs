//! Settings for the plugin runtime, with the defaults an operator gets when silent.

use serde::Deserialize;
use std::time::Duration;

/// What one invocation of a plugin (one event, or one read) may use, and each plugin's
/// share of the host. The README's sandbox table lists every field with its default.
///
/// Every limit is enforced by the host, not by the plugin:
/// * `cpu_time`: time spent running the plugin's WebAssembly code only (host calls and
///   waits are not counted), checked at every epoch tick of `epoch_tick`.
/// * `wall_time`: the whole invocation from instantiation to commit, host calls included.
///   At expiry the invocation is abandoned, its transaction rolled back and its database
///   session terminated, so a plugin that lifts its own `statement_timeout` still cannot
///   outlive it.
/// * `memory` / `table_elements`: the largest linear memory and table of an instance.
/// * `statement_timeout`, `db_work_mem_kib`: the plugin session's PostgreSQL settings,
///   set at connection start and restored after every invocation.
/// * `db_max_rows` / `db_max_result_bytes`: what one `db.query` may return; the rows are
///   streamed from PostgreSQL and the statement fails as soon as either is passed.
///   `db_statement_bytes`: the SQL text of one statement.
/// * `log_messages` / `log_message_bytes`, `reason_bytes`, `max_subscriptions`,
///   `read_body_bytes` / `read_headers` / `read_header_bytes`: what a plugin may hand back.
/// * `deliveries_per_plugin` / `reads_per_plugin`: instances of one plugin running at
///   once, per kind of work; each plugin's share (plus one for loading) is reserved from
///   `max_instances` when it loads.
/// * `db_connections` / `db_read_connections`: each plugin's own pools, one per kind.
/// * `component_bytes`, `component_core_instances`, `component_memories`,
///   `component_tables`: what one component may be made of, checked when it loads. The
///   defaults admit what componentize-py and componentize-js produce (a Python component
///   is ~18 MB of 14 core instances).
/// * `output_bytes`: what the guest's stdout and stderr keep per invocation, each.
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
    /// Deliveries (and `plugin invoke` / fixture events) of one plugin running at once.
    pub deliveries_per_plugin: u32,
    /// HTTP reads of one plugin running at once; more wait up to `wall_time`, then 503.
    pub reads_per_plugin: u32,
    /// PostgreSQL connections per plugin for deliveries.
    pub db_connections: u32,
    /// PostgreSQL connections per plugin for reads.
    pub db_read_connections: u32,
    /// Host processes expected to share the database. A plugin's role is cluster-wide, so
    /// its `CONNECTION LIMIT` makes room for this many processes' pools; every host of a
    /// deployment should say the same.
    pub db_hosts: u32,
    /// PostgreSQL `work_mem` of plugin sessions, in KiB.
    pub db_work_mem_kib: u32,
    pub db_max_rows: usize,
    pub db_max_result_bytes: usize,
    /// Bytes of one statement's SQL text.
    pub db_statement_bytes: usize,
    pub log_messages: usize,
    pub log_message_bytes: usize,
    pub reason_bytes: usize,
    pub max_subscriptions: usize,
    pub read_body_bytes: usize,
    pub read_headers: usize,
    /// Name plus value of one header of a read's answer.
    pub read_header_bytes: usize,
    /// Size of a `.wasm` file the host agrees to load.
    pub component_bytes: usize,
    /// Core module instances in one component (the program, its libc, adapters, shims).
    pub component_core_instances: u32,
    /// Linear memories defined in one component.
    pub component_memories: u32,
    /// Tables defined in one component.
    pub component_tables: u32,
    /// Bytes of guest stdout, and of guest stderr, kept per invocation: the first half
    /// and the last half, with the number of bytes skipped between them.
    pub output_bytes: usize,
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
            max_instances: 512,
            deliveries_per_plugin: 8,
            reads_per_plugin: 8,
            db_connections: 4,
            db_read_connections: 4,
            db_hosts: 4,
            db_work_mem_kib: 4096,
            db_max_rows: 10_000,
            db_max_result_bytes: 8 << 20,
            db_statement_bytes: 64 << 10,
            log_messages: 1000,
            log_message_bytes: 8 << 10,
            reason_bytes: 4 << 10,
            max_subscriptions: 100,
            read_body_bytes: 4 << 20,
            read_headers: 64,
            read_header_bytes: 8 << 10,
            component_bytes: 64 << 20,
            component_core_instances: 32,
            component_memories: 2,
            component_tables: 8,
            output_bytes: 16 << 10,
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
            // PostgreSQL takes timeouts in milliseconds as a 32-bit integer.
            if value.as_millis() > i32::MAX as u128 {
                return Err(format!("limits.{field} must be at most {} ms", i32::MAX));
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
        let at_least_one = [
            ("max_instances", self.max_instances as usize),
            ("deliveries_per_plugin", self.deliveries_per_plugin as usize),
            ("reads_per_plugin", self.reads_per_plugin as usize),
            ("db_connections", self.db_connections as usize),
            ("db_read_connections", self.db_read_connections as usize),
            ("db_hosts", self.db_hosts as usize),
            ("db_max_rows", self.db_max_rows),
            ("db_max_result_bytes", self.db_max_result_bytes),
            ("db_statement_bytes", self.db_statement_bytes),
            ("log_message_bytes", self.log_message_bytes),
            ("reason_bytes", self.reason_bytes),
            ("max_subscriptions", self.max_subscriptions),
            ("read_header_bytes", self.read_header_bytes),
            ("component_bytes", self.component_bytes),
            (
                "component_core_instances",
                self.component_core_instances as usize,
            ),
            ("component_memories", self.component_memories as usize),
            ("component_tables", self.component_tables as usize),
            ("output_bytes", self.output_bytes),
        ];
        for (field, value) in at_least_one {
            if value == 0 {
                return Err(format!("limits.{field} must be at least 1"));
            }
        }
        if self.db_hosts > 1000 || self.role_connection_limit() > 100_000 {
            return Err("limits.db_hosts must be at most 1000, and (db_connections + db_read_connections + 1) × db_hosts at most 100000".into());
        }
        let per_component = [
            ("component_core_instances", self.component_core_instances),
            ("component_memories", self.component_memories),
            ("component_tables", self.component_tables),
        ];
        for (field, value) in per_component {
            if self
                .max_instances
                .checked_mul(value)
                .is_none_or(|total| total > 1 << 20)
            {
                return Err(format!(
                    "limits.max_instances × limits.{field} must be at most 1048576 (the pooling allocator reserves that many slots)"
                ));
            }
        }
        if self.db_work_mem_kib < 64 {
            return Err("limits.db_work_mem_kib must be at least 64 (PostgreSQL's minimum)".into());
        }
        if self.plugin_share() > self.max_instances {
            return Err(format!(
                "limits.max_instances ({}) must hold at least one plugin's share (deliveries_per_plugin + reads_per_plugin + 1 = {})",
                self.max_instances,
                self.plugin_share()
            ));
        }
        Ok(())
    }

    /// Instance slots reserved for each loaded plugin: its deliveries, its reads, and one
    /// for loading a new version of it.
    pub fn plugin_share(&self) -> u32 {
        self.deliveries_per_plugin
            .saturating_add(self.reads_per_plugin)
            .saturating_add(1)
    }

    /// The plugin role's `CONNECTION LIMIT`: both pools plus one for its migrations, for
    /// each of `db_hosts` processes.
    pub fn role_connection_limit(&self) -> u32 {
        self.db_connections
            .saturating_add(self.db_read_connections)
            .saturating_add(1)
            .saturating_mul(self.db_hosts)
    }
}

/// Where `auth.lookup-user` gets its answers.
#[derive(Clone, Default, Deserialize)]
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
        /// PEM file of the CA certificate(s) trusted for an `https://` URL, on top of the
        /// public roots.
        #[serde(default)]
        ca_file: Option<std::path::PathBuf>,
    },
}

/// Credentials in the URL stay out of `Debug` output.
impl std::fmt::Debug for AuthBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Postgres => f.write_str("Postgres"),
            Self::Http {
                url,
                timeout,
                ca_file,
            } => f
                .debug_struct("Http")
                .field("url", &crate::config::redact::url(url))
                .field("timeout", timeout)
                .field("ca_file", ca_file)
                .finish(),
        }
    }
}

fn default_auth_timeout() -> Duration {
    Duration::from_secs(2)
}
