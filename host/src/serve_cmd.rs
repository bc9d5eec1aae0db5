//! `eventhost serve` and `eventhost relay`: the long-running processes.

use anyhow::{Context, Result};
use clap::Args;
use eventhost::config::Config;
use eventhost::consumer::{self, Consumer, Registry, Watcher};
use eventhost::metrics::Metrics;
use eventhost::outbox::Relay;
use eventhost::runtime::{Runtime, RuntimeSettings};
use eventhost::{auth_service, database, fixtures, http};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Where the configuration comes from: a TOML file, then flags / environment on top.
#[derive(Args)]
pub struct ConfigArgs {
    /// TOML configuration file (every section optional; see the README).
    #[arg(long, env = "EVENTHOST_CONFIG")]
    config: Option<PathBuf>,
    /// PostgreSQL URL of the host's database (overrides `database_url`).
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// RabbitMQ URL (overrides `broker.url`).
    #[arg(long, env = "AMQP_URL")]
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
    pub fn load(&self) -> Result<Config> {
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
        config.validate()?;
        Ok(config)
    }
}

/// Cancelled on Ctrl-C or SIGTERM.
fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! { _ = ctrl_c => {}, _ = term => {} }
        tracing::info!("shutting down: finishing in-flight batches");
        trigger.cancel();
    });
    token
}

async fn open_database(config: &Config) -> Result<sqlx::PgPool> {
    fixtures::ensure_database(&config.database_url)
        .await
        .context("creating the database")?;
    // Every batch in flight holds a connection; the auth service and the purge need a few more.
    let relay = config.relay.workers * config.relay.pipeline;
    let pool = database::connect(&config.database_url, relay + 6).await?;
    database::migrate(&pool).await?;
    Ok(pool)
}

/// The relay alone: `serve` with only the relay on.
pub async fn relay(args: &ConfigArgs) -> Result<ExitCode> {
    let mut config = args.load()?;
    config.relay.enabled = true;
    config.auth_service.enabled = false;
    config.consumer.enabled = false;
    config.http.enabled = false;
    run(config).await
}

/// Everything this host runs: migrations, the plugins and their consumers, the relay, the
/// HTTP API and the reference auth service.
pub async fn serve(args: &ConfigArgs) -> Result<ExitCode> {
    run(args.load()?).await
}

/// The plugins: loaded from the directory once before anything consumes, then watched.
struct Plugins {
    registry: Arc<Registry>,
    scanned: Arc<AtomicBool>,
    rescan: Arc<Notify>,
}

async fn load_plugins(
    config: &Config,
    pool: &sqlx::PgPool,
    metrics: &Metrics,
    tasks: &mut JoinSet<Result<()>>,
    shutdown: &CancellationToken,
) -> Result<Plugins> {
    let plugins = Plugins {
        registry: Arc::new(Registry::default()),
        scanned: Arc::default(),
        rescan: Arc::new(Notify::new()),
    };
    if !config.consumer.enabled {
        return Ok(plugins);
    }
    let runtime = Runtime::new(RuntimeSettings {
        limits: config.limits.clone(),
        auth: config.auth.clone(),
        admin_pool: pool.clone(),
    })?;
    let dir = &config.consumer.plugin_dir;
    let mut watcher = Watcher::new(runtime, plugins.registry.clone(), metrics.clone(), dir);
    let report = watcher
        .scan()
        .await
        .with_context(|| format!("cannot read consumer.plugin_dir = {}", dir.display()))?;
    plugins.scanned.store(true, Ordering::Relaxed);
    if report.loaded.is_empty() {
        tracing::warn!(dir = %dir.display(), "no plugin loaded; add <name>.wasm files to the plugin directory");
    } else {
        tracing::info!(dir = %dir.display(), plugins = ?report.loaded, "plugins loaded");
    }
    let (interval, rescan, token) = (
        config.consumer.reload_interval,
        plugins.rescan.clone(),
        shutdown.clone(),
    );
    tasks.spawn(async move {
        watcher.run(interval, rescan, token).await;
        Ok(())
    });
    Ok(plugins)
}

async fn run(config: Config) -> Result<ExitCode> {
    let pool = open_database(&config).await?;
    let shutdown = shutdown_signal();
    let metrics = Metrics::default();
    let mut tasks = JoinSet::new();
    let plugins = load_plugins(&config, &pool, &metrics, &mut tasks, &shutdown).await?;

    let mut consumer_state = None;
    let consuming = Arc::new(consumer::Consuming::default());
    if config.consumer.enabled {
        let settings = consumer::Settings {
            broker: config.broker.clone(),
            config: config.consumer.clone(),
            metrics: metrics.clone(),
            pool: pool.clone(),
            consuming: consuming.clone(),
        };
        let consumer = Consumer::new(settings, plugins.registry.subscribers());
        consumer_state = Some((consumer.connected(), consuming.clone()));
        let token = shutdown.clone();
        tasks.spawn(async move {
            consumer.run(token).await;
            Ok(())
        });
    }
    let mut relay = None;
    if config.relay.enabled {
        // Events published before a plugin's queue is bound would reach no queue: the
        // relay starts once the plugins loaded at start-up are consuming.
        let names = plugins.registry.names();
        if config.consumer.enabled && !consuming.wait_for(&names, Duration::from_secs(60)).await {
            tracing::warn!(plugins = ?names, "plugin queues not bound after 60s; starting the relay anyway");
        }
        let started = Relay::new(pool.clone(), config.broker.clone(), config.relay.clone());
        relay = Some(started.clone());
        let token = shutdown.clone();
        tasks.spawn(async move {
            started.run(token).await;
            Ok(())
        });
        tracing::info!(exchange = %config.broker.exchange, broker = %eventhost::broker::redacted(&config.broker.url), "relay started");
    }
    if config.http.enabled {
        let admin_token = match std::env::var("EVENTHOST_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
        {
            Some(t) if t.len() < 16 => anyhow::bail!(
                "invalid config: EVENTHOST_ADMIN_TOKEN must be at least 16 characters"
            ),
            Some(t) => Some(eventhost::config::Secret::new(t)),
            None => config.http.admin_token.clone(),
        };
        let state = http::ApiState {
            registry: plugins.registry.clone(),
            metrics,
            pool: pool.clone(),
            consumer: consumer_state,
            plugins_scanned: plugins.scanned.clone(),
            rescan: plugins.rescan.clone(),
            relay,
            admin_token,
        };
        serve_http(
            &mut tasks,
            "http.listen",
            config.http.listen,
            http::router(state),
            &shutdown,
        )
        .await?;
    }
    if config.auth_service.enabled {
        let app = auth_service::router(pool.clone(), config.auth_service.source.clone());
        let listen = config.auth_service.listen;
        serve_http(&mut tasks, "auth_service.listen", listen, app, &shutdown).await?;
    }
    if tasks.is_empty() {
        anyhow::bail!("nothing to serve: consumer, relay, http and auth_service are all disabled");
    }
    while let Some(result) = tasks.join_next().await {
        result.context("task panicked")??;
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn serve_http(
    tasks: &mut JoinSet<Result<()>>,
    field: &'static str,
    listen: SocketAddr,
    app: axum::Router,
    shutdown: &CancellationToken,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {field} = {listen}"))?;
    let token = shutdown.clone();
    tasks.spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await
            .with_context(|| format!("HTTP server on {listen} stopped"))
    });
    tracing::info!(%listen, "{field}: listening");
    Ok(())
}
