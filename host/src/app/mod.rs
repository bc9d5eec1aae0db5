//! The application: every long-running part of the host (plugin watcher, consumer, relay,
//! HTTP API, reference auth service) built from one [`Config`], owned and supervised here,
//! and shut down in one place. `eventhost serve`, `eventhost relay` and the tests all
//! start exactly this.

use crate::supervisor::Supervisor;

use crate::config::{Config, UiAccess};
use crate::consumer::{self, Consumer, Consuming, Registry, Watcher};
use crate::database::{self, DatabaseError};
use crate::http::{self, ListenError, Listener};
use crate::metrics::Metrics;
use crate::outbox::Relay;
use crate::runtime::compiled::CompileCache;
use crate::runtime::{Runtime, RuntimeError, RuntimeSettings};
use crate::{auth_service, fixtures};
use sqlx::PgPool;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot create the host's database: {0}")]
    CreateDatabase(#[source] sqlx::Error),
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error("cannot start the plugin runtime: {0}")]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("nothing to serve: consumer, relay, http and auth_service are all disabled")]
    Nothing,
    #[error("still running {0:?} after the shutdown timeout; exiting anyway")]
    Stuck(Duration),
}

/// A started host. Dropping it does not stop it: cancel the shutdown token, then
/// [`App::stopped`].
pub struct App {
    supervisor: Supervisor,
    shutdown: CancellationToken,
    shutdown_timeout: Duration,
}

/// Connections of the plugins' admin pool: one per parallel load, and as many again
/// for auth lookups, repairs and terminations.
const PLUGINS_ADMIN_POOL: u32 = 2 * consumer::watcher::PARALLEL_LOADS as u32;

/// Longest the relay waits at start-up for the plugins' queues.
pub const RELAY_WAIT: Duration = Duration::from_secs(15);

/// The plugins: the registry the watcher fills, and whether its first scan is done.
struct Plugins {
    registry: Arc<Registry>,
    scanned: Arc<AtomicBool>,
    rescan: Arc<Notify>,
}

impl App {
    /// Opens the database (creating and migrating it), binds the listeners, and starts
    /// every enabled part. Returns once all are running; plugins load in the background.
    pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Self, AppError> {
        let pool = open_database(&config).await?;
        let metrics = Metrics::default();
        let mut supervisor = Supervisor::new(metrics.clone(), shutdown.clone());
        let plugins = Plugins {
            registry: Arc::new(Registry::default()),
            scanned: Arc::default(),
            rescan: Arc::new(Notify::new()),
        };
        // Bound first, so a taken port fails the start before anything runs.
        let api = match config.http.enabled {
            true => Some(
                Listener::bind(
                    "http.listen",
                    config.http.listen,
                    config.http.max_connections,
                )
                .await?,
            ),
            false => None,
        };
        let auth = match config.auth_service.enabled {
            true => Some(
                Listener::bind(
                    "auth_service.listen",
                    config.auth_service.listen,
                    config.http.max_connections,
                )
                .await?,
            ),
            false => None,
        };
        let consuming = Arc::new(Consuming::default());
        let connected = Arc::new(AtomicBool::new(false));
        // Plugins load for the consumer and for the API's reads: a host with the consumer
        // off still serves `GET /plugins/...`.
        if config.consumer.enabled || config.http.enabled {
            // The plugins' own pool for provisioning, migrations, role repair and auth
            // lookups: loads holding sessions cannot take the relay's or the API's.
            let plugins_admin = database::connect(&config.database_url, PLUGINS_ADMIN_POOL).await?;
            start_watcher(
                &config,
                &plugins_admin,
                &metrics,
                &plugins,
                &mut supervisor,
                &shutdown,
            )?;
        }
        if config.consumer.enabled {
            let settings = consumer::Settings {
                broker: config.broker.clone(),
                config: config.consumer.clone(),
                metrics: metrics.clone(),
                pool: pool.clone(),
                consuming: consuming.clone(),
            };
            let (registry, flag, token) = (
                plugins.registry.clone(),
                connected.clone(),
                shutdown.clone(),
            );
            supervisor.spawn("consumer", move || {
                let consumer = Consumer::new(settings.clone(), registry.subscribers())
                    .reporting_to(flag.clone());
                consumer.run(token.clone())
            });
        }
        let relay = config
            .relay
            .enabled
            .then(|| Relay::new(pool.clone(), config.broker.clone(), config.relay.clone()));
        if let Some(relay) = relay.clone() {
            let wait = config.consumer.enabled.then(|| {
                (
                    plugins.scanned.clone(),
                    plugins.registry.clone(),
                    consuming.clone(),
                )
            });
            let token = shutdown.clone();
            let mut first = true;
            supervisor.spawn("relay", move || {
                // Only the first start waits: a restarted relay publishes at once.
                let wait = if std::mem::take(&mut first) {
                    wait.clone()
                } else {
                    None
                };
                let (relay, token) = (relay.clone(), token.clone());
                async move {
                    if let Some((scanned, registry, consuming)) = wait {
                        tokio::select! {
                            _ = token.cancelled() => return,
                            _ = queues_ready(&scanned, &registry, &consuming) => {}
                        }
                    }
                    relay.run(token).await
                }
            });
            tracing::info!(exchange = %config.broker.exchange, broker = %crate::config::redact::url(&config.broker.url), "relay started");
        }
        if let Some(listener) = api {
            let dashboard = (config.http.ui != UiAccess::Off).then(|| {
                let history = Arc::new(http::ui::History::default());
                let sources = Arc::new(http::ui::Sources {
                    pool: pool.clone(),
                    registry: plugins.registry.clone(),
                    metrics: metrics.clone(),
                    relay: relay.clone(),
                    broker: config.broker.clone(),
                    consumer: config.consumer.clone(),
                });
                // Sampled only when someone can open the dashboard.
                let seen =
                    config.http.ui == UiAccess::OpenRead || config.http.admin_token.is_some();
                let (sampler, token) = (history.clone(), shutdown.clone());
                if seen {
                    supervisor.spawn("dashboard_history", move || {
                        let (sampler, sources, token) =
                            (sampler.clone(), sources.clone(), token.clone());
                        async move { sampler.run(&sources, &token).await }
                    });
                }
                Arc::new(http::ui::Dashboard::new(
                    config.http.admin_token.clone(),
                    config.http.ui,
                    history,
                    config.broker.clone(),
                    config.consumer.clone(),
                ))
            });
            let state = http::ApiState {
                registry: plugins.registry.clone(),
                metrics: metrics.clone(),
                pool: pool.clone(),
                consumer: config
                    .consumer
                    .enabled
                    .then(|| (connected.clone(), consuming.clone())),
                plugins_scanned: plugins.scanned.clone(),
                rescan: plugins.rescan.clone(),
                relay,
                admin_token: config.http.admin_token.clone(),
                tasks: supervisor.health(),
                dashboard,
            };
            let app = http::router(state, &config.http);
            spawn_http(&mut supervisor, "http", listener, app, &config, &shutdown);
        }
        if let Some(listener) = auth {
            let app = auth_service::router(pool.clone(), config.auth_service.source.clone());
            let app = http::with_limits(app, &config.http);
            spawn_http(
                &mut supervisor,
                "auth_service",
                listener,
                app,
                &config,
                &shutdown,
            );
        }
        if supervisor.is_empty() {
            return Err(AppError::Nothing);
        }
        Ok(Self {
            supervisor,
            shutdown,
            shutdown_timeout: config.consumer.shutdown_timeout + config.http.drain_timeout,
        })
    }

    /// Waits for the shutdown token, then for every part to stop, for at most the
    /// shutdown timeouts (consumer deliveries, then HTTP drain).
    pub async fn stopped(self) -> Result<(), AppError> {
        self.shutdown.cancelled().await;
        // Plus the closes that follow: channels and connections (5 s each at most).
        let limit = self.shutdown_timeout + Duration::from_secs(12);
        tokio::time::timeout(limit, self.supervisor.join())
            .await
            .map_err(|_| AppError::Stuck(limit))?;
        tracing::info!("stopped");
        Ok(())
    }
}

async fn open_database(config: &Config) -> Result<PgPool, AppError> {
    fixtures::ensure_database(&config.database_url)
        .await
        .map_err(AppError::CreateDatabase)?;
    // Every batch in flight holds a connection; the auth service and the purge need a few more.
    let relay = config.relay.workers * config.relay.pipeline;
    let pool = database::connect(&config.database_url, relay + 6).await?;
    database::migrate(&pool).await?;
    Ok(pool)
}

fn start_watcher(
    config: &Config,
    pool: &PgPool,
    metrics: &Metrics,
    plugins: &Plugins,
    supervisor: &mut Supervisor,
    shutdown: &CancellationToken,
) -> Result<(), AppError> {
    let runtime = Runtime::new(RuntimeSettings {
        limits: config.limits.clone(),
        auth: config.auth.clone(),
        admin_pool: pool.clone(),
        compile_cache: CompileCache::new(config.compile_cache()),
    })?;
    let (registry, metrics, consumer) = (
        plugins.registry.clone(),
        metrics.clone(),
        config.consumer.clone(),
    );
    let (scanned, rescan, token) = (
        plugins.scanned.clone(),
        plugins.rescan.clone(),
        shutdown.clone(),
    );
    supervisor.spawn("plugin_watcher", move || {
        let watcher = Watcher::new(
            runtime.clone(),
            registry.clone(),
            metrics.clone(),
            &consumer,
        );
        watcher.run(scanned.clone(), rescan.clone(), token.clone())
    });
    Ok(())
}

fn spawn_http(
    supervisor: &mut Supervisor,
    task: &'static str,
    listener: Listener,
    app: axum::Router,
    config: &Config,
    shutdown: &CancellationToken,
) {
    tracing::info!(listen = %listener.addr, "{task}: listening");
    let (http, token) = (config.http.clone(), shutdown.clone());
    supervisor.spawn(task, move || {
        let (listener, app, http, token) =
            (listener.clone(), app.clone(), http.clone(), token.clone());
        async move { http::server::serve(listener, app, &http, token).await }
    });
}

/// Events published before a plugin's queue is first declared would reach no queue: the
/// relay starts once the plugins of the first scan are consuming, or after
/// [`RELAY_WAIT`] at most (a slow or stuck plugin load does not hold it longer).
async fn queues_ready(scanned: &AtomicBool, registry: &Registry, consuming: &Consuming) {
    let deadline = Instant::now() + RELAY_WAIT;
    while !scanned.load(Ordering::Relaxed) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let names = registry.names();
    let left = deadline.saturating_duration_since(Instant::now());
    if !consuming.wait_for(&names, left).await {
        tracing::warn!(plugins = ?names, wait = ?RELAY_WAIT, "plugin queues not all bound; starting the relay anyway");
    }
}
