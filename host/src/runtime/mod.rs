//! The plugin runtime: compiles components once, pre-instantiates them, and runs each
//! event or read in a fresh, limited store.

pub mod bindings;
pub mod compiled;
pub mod component_limits;
mod engine;
mod failure;
mod invoke;
pub mod limits;
mod outcome;
mod plugin;
mod share;
mod version;

pub use invoke::{Invocation, ReadRequest, ReadResponse};
pub use outcome::{Abort, Outcome};
pub use plugin::{LoadError, Plugin};
pub use share::{ShareError, Work};

use crate::capabilities::auth::{AuthError, AuthLookup};
use crate::capabilities::HostState;
use crate::config::{AuthBackend, Limits};
use sqlx::postgres::{PgConnectOptions, PgPool};
use std::fmt;
use std::sync::Arc;
use wasmtime::component::Linker;
use wasmtime::Engine;

/// A plugin's name: lowercase letters, digits and `-`; it names its queue, schema and
/// role, and its URL path. `user_stats.wasm` (as cargo names it) loads as `user-stats`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PluginName(Arc<str>);

impl PluginName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let name = raw.replace('_', "-");
        let valid = (1..=40).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && !name.ends_with('-')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if valid {
            Ok(Self(name.into()))
        } else {
            Err(format!(
                "invalid plugin name {raw:?}: use 1-40 lowercase letters, digits and '-', starting with a letter"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PluginName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid limits: {0}")]
    Limits(String),
    #[error("could not create the wasmtime engine: {0:#}")]
    Engine(wasmtime::Error),
    #[error("could not start the epoch thread: {0}")]
    Ticker(#[from] std::io::Error),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// What the runtime needs from the rest of the host.
pub struct RuntimeSettings {
    pub limits: Limits,
    pub auth: AuthBackend,
    /// The host's own pool (admin rights: creates plugin roles, terminates sessions).
    pub admin_pool: PgPool,
    /// Where compiled components are kept (see `compiled`).
    pub compile_cache: compiled::CompileCache,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Database(#[from] crate::database::DatabaseError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Cheap to clone; every loaded [`Plugin`] holds one.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Shared>,
}

struct Shared {
    engine: Engine,
    linker: Linker<HostState>,
    limits: Limits,
    admin_pool: PgPool,
    admin_options: PgConnectOptions,
    auth: AuthLookup,
    ledger: Arc<share::Ledger>,
    compile_cache: compiled::CompileCache,
}

impl Runtime {
    pub fn new(settings: RuntimeSettings) -> Result<Self, RuntimeError> {
        settings.limits.validate().map_err(RuntimeError::Limits)?;
        let engine = engine::engine(&settings.limits).map_err(RuntimeError::Engine)?;
        let linker = engine::linker(&engine).map_err(RuntimeError::Engine)?;
        engine::start_epoch_ticker(&engine, settings.limits.epoch_tick)?;
        let admin_options = (*settings.admin_pool.connect_options()).clone();
        let ledger = share::Ledger::new(settings.limits.max_instances);
        let auth = AuthLookup::new(&settings.auth, &settings.admin_pool)?;
        Ok(Self {
            inner: Arc::new(Shared {
                engine,
                linker,
                limits: settings.limits,
                admin_pool: settings.admin_pool,
                admin_options,
                auth,
                ledger,
                compile_cache: settings.compile_cache,
            }),
        })
    }

    /// Connects to the host's database at `url`, applies the host's migrations, and builds
    /// a runtime on that pool, with the default compile cache.
    pub async fn open(
        url: &str,
        limits: Limits,
        auth: AuthBackend,
    ) -> Result<(PgPool, Self), OpenError> {
        let pool = crate::database::connect(url, 8).await?;
        crate::database::migrate(&pool).await?;
        let settings = RuntimeSettings {
            limits,
            auth,
            admin_pool: pool.clone(),
            compile_cache: compiled::CompileCache::new(crate::config::default_compile_cache()),
        };
        Ok((pool, Self::new(settings)?))
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }
}
