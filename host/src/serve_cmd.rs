//! `eventhost serve` and `eventhost relay`: the long-running processes.

use anyhow::{Context, Result};
use clap::Args;
use eventhost::config::Config;
use eventhost::outbox::Relay;
use eventhost::{auth_service, database, fixtures};
use std::path::PathBuf;
use std::process::ExitCode;
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
    #[arg(long)]
    exchange: Option<String>,
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

/// The relay alone: `serve` with the auth service off and the relay on.
pub async fn relay(args: &ConfigArgs) -> Result<ExitCode> {
    let mut config = args.load()?;
    config.relay.enabled = true;
    config.auth_service.enabled = false;
    run(config).await
}

/// Everything this host runs: migrations, the relay and the reference auth service.
pub async fn serve(args: &ConfigArgs) -> Result<ExitCode> {
    run(args.load()?).await
}

async fn run(config: Config) -> Result<ExitCode> {
    let pool = open_database(&config).await?;
    let shutdown = shutdown_signal();
    let mut tasks = tokio::task::JoinSet::new();
    if config.relay.enabled {
        let relay = Relay::new(pool.clone(), config.broker.clone(), config.relay.clone());
        let token = shutdown.clone();
        tasks.spawn(async move {
            relay.run(token).await;
            Ok(())
        });
        tracing::info!(exchange = %config.broker.exchange, broker = %eventhost::broker::redacted(&config.broker.url), "relay started");
    }
    if config.auth_service.enabled {
        let listen = config.auth_service.listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on auth_service.listen = {listen}"))?;
        let app = auth_service::router(pool.clone(), config.auth_service.source.clone());
        let token = shutdown.clone();
        tasks.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await
                .context("auth service stopped")
        });
        tracing::info!(%listen, "auth service listening");
    }
    if tasks.is_empty() {
        anyhow::bail!("nothing to serve: relay.enabled and auth_service.enabled are both false");
    }
    while let Some(result) = tasks.join_next().await {
        result.context("task panicked")??;
    }
    Ok(ExitCode::SUCCESS)
}
