//! Arguments several commands share: where the configuration and the database are, and
//! the sandbox limits of the local plugin commands.

use clap::Args;
use eventhost::config::{AuthBackend, Config, Secret};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where the configuration comes from: a TOML file, then flags / environment on top.
#[derive(Args)]
pub struct ConfigArgs {
    /// TOML configuration file (every section optional; see the README).
    #[arg(long, env = "EVENTHOST_CONFIG")]
    config: Option<PathBuf>,
    /// PostgreSQL URL of the host's database (overrides `database_url`).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// RabbitMQ URL (overrides `broker.url`).
    #[arg(long, env = "AMQP_URL", hide_env_values = true)]
    amqp_url: Option<String>,
    /// Events exchange (overrides `broker.exchange`).
    #[arg(long, env = "EVENTHOST_EXCHANGE")]
    exchange: Option<String>,
    /// Directory of plugin components, `<name>.wasm` (overrides `consumer.plugin_dir`).
    #[arg(long, env = "EVENTHOST_PLUGIN_DIR")]
    plugin_dir: Option<PathBuf>,
    /// Address of the host's HTTP API: plugin reads, /healthz, /readyz, /metrics, /admin
    /// (overrides `http.listen`).
    #[arg(long, env = "EVENTHOST_LISTEN")]
    listen: Option<SocketAddr>,
    /// Address of the reference auth service (overrides `auth_service.listen`).
    #[arg(long, env = "EVENTHOST_AUTH_LISTEN")]
    auth_listen: Option<SocketAddr>,
    /// Prefix of the plugin queue names (overrides `consumer.queue_prefix`).
    #[arg(long, env = "EVENTHOST_QUEUE_PREFIX")]
    queue_prefix: Option<String>,
}

impl ConfigArgs {
    /// The file's config with the overrides applied, then validated. The admin token is
    /// taken from `EVENTHOST_ADMIN_TOKEN` only (a flag would show it in `ps`).
    pub fn load(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(url) = &self.database_url {
            config.database_url = url.clone();
        }
        if let Some(url) = &self.amqp_url {
            config.broker.url = url.clone();
        }
        if let Some(exchange) = &self.exchange {
            config.broker.exchange = exchange.clone();
        }
        if let Some(dir) = &self.plugin_dir {
            config.consumer.plugin_dir = dir.clone();
        }
        if let Some(listen) = self.listen {
            config.http.listen = listen;
        }
        if let Some(listen) = self.auth_listen {
            config.auth_service.listen = listen;
        }
        if let Some(prefix) = &self.queue_prefix {
            config.consumer.queue_prefix = prefix.clone();
        }
        if let Some(token) = std::env::var("EVENTHOST_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
        {
            config.http.admin_token = Some(Secret::new(token));
        }
        config.validate()?;
        Ok(config)
    }
}

#[derive(Args)]
pub struct DbArgs {
    /// PostgreSQL URL of the host's database (created if missing).
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/eventhost"
    )]
    pub database_url: String,
}

#[derive(Args)]
pub struct SandboxArgs {
    /// TOML configuration file whose `[limits]` and `auth` apply (the flags below win),
    /// so a plugin is tested under the limits it will be served with.
    #[arg(long, env = "EVENTHOST_CONFIG")]
    config: Option<PathBuf>,
    /// Base URL of an external auth service for the `auth` import; default: the `users` table.
    #[arg(long, env = "EVENTHOST_AUTH_URL", hide_env_values = true)]
    auth_url: Option<String>,
    /// CPU time per invocation (e.g. 500ms).
    #[arg(long, value_parser = humantime::parse_duration)]
    cpu_time: Option<Duration>,
    /// Wall-clock deadline per invocation, host calls included (e.g. 10s).
    #[arg(long, value_parser = humantime::parse_duration)]
    wall_time: Option<Duration>,
    /// Linear memory limit per plugin instance, in MiB.
    #[arg(long)]
    memory_mib: Option<usize>,
    /// PostgreSQL statement_timeout for plugin sessions (e.g. 5s).
    #[arg(long, value_parser = humantime::parse_duration)]
    statement_timeout: Option<Duration>,
}

impl SandboxArgs {
    /// The limits and auth backend: the config file's (or the defaults), then the flags.
    pub fn sandbox(&self) -> anyhow::Result<(eventhost::config::Limits, AuthBackend)> {
        let config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        let auth = match &self.auth_url {
            Some(url) => AuthBackend::Http {
                url: url.clone(),
                timeout: Duration::from_secs(2),
                ca_file: None,
            },
            None => config.auth,
        };
        let mut limits = config.limits;
        if let Some(v) = self.cpu_time {
            limits.cpu_time = v;
        }
        if let Some(v) = self.wall_time {
            limits.wall_time = v;
        }
        if let Some(v) = self.memory_mib {
            limits.memory = v.saturating_mul(1 << 20);
        }
        if let Some(v) = self.statement_timeout {
            limits.statement_timeout = v;
        }
        limits
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid limits: {e}"))?;
        Ok((limits, auth))
    }
}
