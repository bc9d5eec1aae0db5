//! Loading a plugin: compile once, check the contract version, pre-instantiate, give it a
//! database identity, ask it for its subscriptions and migrations, apply those.

use super::bindings::{handler, migrations, reader};
use super::component_limits::{self, ComponentLimit};
use super::share::{Share, ShareError, Work};
use super::version::{self, VersionError};
use super::{Abort, Outcome, PluginName, Runtime};
use crate::capabilities::db::migrate::{self, Backends, MigrationError};
use crate::capabilities::db::provision::{self, PluginIdentity, ProvisionError};
use crate::capabilities::HostState;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use wasmtime::component::InstancePre;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("not a valid WebAssembly component: {0:#}")]
    Compile(wasmtime::Error),
    #[error(transparent)]
    TooLarge(#[from] ComponentLimit),
    #[error(transparent)]
    Version(#[from] VersionError),
    #[error("the component needs imports this host does not provide (plugins may import only eventhost:plugin and wasi:*): {0:#}")]
    Link(wasmtime::Error),
    #[error("the component's exports do not match this host's eventhost:plugin contract: {0:#}")]
    Exports(wasmtime::Error),
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    #[error(transparent)]
    Share(#[from] ShareError),
    #[error("the plugin failed while reporting its subscriptions and migrations: {0}")]
    Init(Outcome),
    #[error("invalid subscription {pattern:?}: {reason}")]
    Subscription { pattern: String, reason: String },
    #[error("the plugin declared {count} subscriptions; limits.max_subscriptions is {limit} (each one is a broker binding)")]
    TooManySubscriptions { count: usize, limit: usize },
    #[error(transparent)]
    Migration(#[from] MigrationError),
    #[error("the load took longer than consumer.load_timeout ({0:?}); its database sessions were terminated")]
    Deadline(Duration),
    #[error("the load was cancelled (the host is stopping)")]
    Cancelled,
}

impl LoadError {
    /// Worth trying again unchanged: the database was unreachable or busy, or the load ran
    /// out of time (a lock held elsewhere, say). Everything else needs a new file.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Deadline(_) | Self::Read { .. } | Self::Share(_) => true,
            Self::Init(Outcome::Aborted(Abort::Capacity(_) | Abort::Host(_))) => true,
            Self::Provision(ProvisionError::Setup { source, .. }) => unavailable(source),
            Self::Migration(MigrationError::Connect(source)) => unavailable(source),
            Self::Migration(MigrationError::Failed { source, .. }) => unavailable(source),
            _ => false,
        }
    }
}

/// The database was out of reach, shutting down, full, or the statement lost a race
/// (deadlock, serialization): nothing about the plugin itself.
fn unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") // connection exception
                || code.starts_with("57P") // operator intervention: shutdown, cannot connect now
                || code.starts_with("53") // insufficient resources
                || code == "40001" // serialization failure
                || code == "40P01" // deadlock
                || code == "55P03" // lock not available (another host provisioning)
                || code == "57014" // canceled: a statement or lock timeout
        }),
        _ => false,
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NameError(String);

/// A loaded, ready plugin. Invocations (see `invoke.rs`) each get a fresh store.
pub struct Plugin {
    pub(super) name: PluginName,
    pub(super) runtime: Runtime,
    pub(super) identity: Arc<PluginIdentity>,
    /// Its own connections, one pool per kind of work, so its reads cannot take the
    /// connections its deliveries need.
    pub(super) delivery_pool: PgPool,
    pub(super) read_pool: PgPool,
    pub(super) share: Arc<Share>,
    /// Whether its schema holds functions or procedures (or it has sent `CREATE` / `DO`):
    /// only then can its sessions make prepared statements that the reset cannot clear.
    pub(super) has_code: Arc<AtomicBool>,
    /// Whether its inbox still holds rows of the earlier layout, which deliveries must
    /// also look for (`migrate::legacy_rows`).
    pub(super) legacy_inbox: bool,
    pub(super) pre: InstancePre<HostState>,
    pub(super) handler: handler::GuestIndices,
    pub(super) migrations: migrations::GuestIndices,
    pub(super) reader: Option<reader::GuestIndices>,
    subscriptions: Vec<String>,
    digest: String,
}

impl Plugin {
    pub fn name(&self) -> &PluginName {
        &self.name
    }

    /// Routing-key patterns, as the plugin declared them at load.
    pub fn subscriptions(&self) -> &[String] {
        &self.subscriptions
    }

    pub fn has_reader(&self) -> bool {
        self.reader.is_some()
    }

    /// SHA-256 of the `.wasm` file: tells two versions of a plugin apart.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The first 12 hex digits of [`Plugin::digest`], as logs show the version.
    pub fn version(&self) -> &str {
        &self.digest[..12]
    }

    /// The PostgreSQL schema holding the plugin's tables.
    pub fn schema(&self) -> &str {
        &self.identity.schema
    }

    pub fn role(&self) -> &str {
        &self.identity.role
    }
}

impl Runtime {
    /// Loads `path`, naming the plugin after the file (`user_stats.wasm` → `user-stats`).
    pub async fn load_file(&self, path: &Path) -> Result<Plugin, LoadError> {
        let (name, bytes) = read_named(path, &self.inner.limits).await?;
        self.load(name, &bytes).await
    }

    pub async fn load(&self, name: PluginName, bytes: &[u8]) -> Result<Plugin, LoadError> {
        self.load_tracked(name, bytes, &Backends::new(&self.inner.admin_pool))
            .await
    }

    /// [`Runtime::load_file`] within `deadline`, or until `cancel`: then the load stops and
    /// the database sessions it opened are terminated, whatever they were running.
    pub async fn load_file_within(
        &self,
        path: &Path,
        deadline: Duration,
        cancel: &CancellationToken,
    ) -> Result<Plugin, LoadError> {
        let (name, bytes) = read_named(path, &self.inner.limits).await?;
        let backends = Backends::new(&self.inner.admin_pool);
        let ended = tokio::select! {
            loaded = self.load_tracked(name, &bytes, &backends) => return loaded,
            _ = tokio::time::sleep(deadline) => LoadError::Deadline(deadline),
            _ = cancel.cancelled() => LoadError::Cancelled,
        };
        backends.terminate().await;
        Err(ended)
    }

    async fn load_tracked(
        &self,
        name: PluginName,
        bytes: &[u8],
        backends: &Backends,
    ) -> Result<Plugin, LoadError> {
        let shared = &self.inner;
        component_limits::check_size(bytes.len() as u64, &shared.limits)?;
        let digest = hex::encode(Sha256::digest(bytes));
        // Cranelift is CPU-bound for up to seconds: keep it off the async workers.
        let engine = shared.engine.clone();
        let owned = bytes.to_vec();
        let (cache, key) = (shared.compile_cache.clone(), digest.clone());
        let started = std::time::Instant::now();
        let (component, source) =
            tokio::task::spawn_blocking(move || cache.component(&engine, &owned, &key))
                .await
                .map_err(|e| LoadError::Compile(wasmtime::Error::msg(e.to_string())))?
                .map_err(|e| match component_limits::recognise(&e, &shared.limits) {
                    Some(limit) => LoadError::TooLarge(limit),
                    None => LoadError::Compile(e),
                })?;
        let compile_time = started.elapsed();
        version::check(&component, &shared.engine)?;
        let pre = shared
            .linker
            .instantiate_pre(&component)
            .map_err(LoadError::Link)?;
        let handler = handler::GuestIndices::new(&pre).map_err(LoadError::Exports)?;
        let migrations = migrations::GuestIndices::new(&pre).map_err(LoadError::Exports)?;
        let reader = reader::GuestIndices::new(&pre).ok();

        let share = shared.ledger.share(&name, &shared.limits)?;
        let identity =
            Arc::new(provision::provision(&shared.admin_pool, &name, &shared.limits).await?);
        let pool =
            |size| provision::plugin_pool(&shared.admin_pool, &identity, &shared.limits, size);
        let (delivery_pool, read_pool) = (
            pool(shared.limits.db_connections),
            pool(shared.limits.db_read_connections),
        );
        let mut plugin = Plugin {
            name,
            runtime: self.clone(),
            identity,
            delivery_pool,
            read_pool,
            share,
            has_code: Arc::new(AtomicBool::new(false)),
            legacy_inbox: false,
            pre,
            handler,
            migrations,
            reader,
            subscriptions: Vec::new(),
            digest,
        };
        let (subscriptions, migrations) = plugin.describe().await.map_err(LoadError::Init)?;
        if subscriptions.len() > shared.limits.max_subscriptions {
            return Err(LoadError::TooManySubscriptions {
                count: subscriptions.len(),
                limit: shared.limits.max_subscriptions,
            });
        }
        for pattern in &subscriptions {
            check_pattern(pattern)?;
        }
        if subscriptions.is_empty() {
            return Err(LoadError::Subscription {
                pattern: String::new(),
                reason: "the plugin subscribes to nothing".into(),
            });
        }
        plugin.subscriptions = subscriptions;
        let applied = migrate::apply(
            &shared.admin_pool,
            &shared.admin_options,
            &plugin.identity,
            &shared.limits,
            &migrations,
            backends,
        )
        .await?;
        // Whatever the migrations did to the plugin's own role is undone.
        provision::reassert(&shared.admin_pool, &plugin.identity, &shared.limits).await?;
        plugin.legacy_inbox =
            migrate::legacy_rows(&shared.admin_pool, &plugin.identity.schema).await?;
        let has_code = provision::has_code(&shared.admin_pool, &plugin.identity).await?;
        plugin.has_code.store(has_code, Ordering::Relaxed);
        tracing::info!(
            plugin = %plugin.name, schema = %plugin.identity.schema, migrations_applied = applied,
            subscriptions = ?plugin.subscriptions, read_hook = plugin.reader.is_some(),
            component = ?source, component_ms = compile_time.as_millis() as u64, "plugin loaded"
        );
        Ok(plugin)
    }
}

/// The plugin's name (from the file name) and the file's bytes; a file over
/// `limits.component_bytes` is refused unread.
async fn read_named(
    path: &Path,
    limits: &crate::config::Limits,
) -> Result<(PluginName, Vec<u8>), LoadError> {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let name = PluginName::parse(stem).map_err(NameError)?;
    let unreadable = |source| LoadError::Read {
        path: path.display().to_string(),
        source,
    };
    let size = tokio::fs::metadata(path).await.map_err(unreadable)?.len();
    component_limits::check_size(size, limits)?;
    // Read at most one byte past the limit: the file may grow after the check.
    use tokio::io::AsyncReadExt;
    let file = tokio::fs::File::open(path).await.map_err(unreadable)?;
    let mut bytes = Vec::new();
    file.take(limits.component_bytes as u64 + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(unreadable)?;
    // What was read is checked again by `load_tracked`, whatever path the bytes came by.
    Ok((name, bytes))
}

/// AMQP topic patterns: dot-separated words of letters, digits, `-` and `_`, or `*` / `#`.
fn check_pattern(pattern: &str) -> Result<(), LoadError> {
    let bad = |reason: &str| LoadError::Subscription {
        pattern: pattern.to_string(),
        reason: reason.into(),
    };
    if pattern.is_empty() || pattern.len() > 255 {
        return Err(bad("must be 1 to 255 characters"));
    }
    for word in pattern.split('.') {
        let ok = word == "*"
            || word == "#"
            || (!word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        if !ok {
            return Err(bad(
                "each dot-separated word must be `*`, `#`, or letters, digits, `-`, `_`",
            ));
        }
    }
    Ok(())
}

impl Plugin {
    /// Runs a read-only query as the plugin's role (on its schema) and returns the rows as
    /// JSON objects, as PostgreSQL's `to_json` renders each column. For tests and fixtures.
    pub async fn query_json(&self, sql: &str) -> Result<Vec<serde_json::Value>, sqlx::Error> {
        // A connection of its own, closed afterwards: this SQL is not the plugin's, and
        // must not leave anything on a connection the plugin's invocations use.
        let mut conn =
            <sqlx::PgConnection as sqlx::Connection>::connect_with(&provision::connect_options(
                &self.runtime.inner.admin_options,
                &self.identity,
                &self.runtime.inner.limits,
            ))
            .await?;
        let mut tx = sqlx::Connection::begin(&mut conn).await?;
        sqlx::Executor::execute(&mut *tx, "SET TRANSACTION READ ONLY").await?;
        let wrapped = format!("SELECT coalesce(json_agg(t), '[]'::json) FROM ({sql}) AS t");
        let rows: sqlx::types::Json<Vec<serde_json::Value>> =
            sqlx::query_scalar(&wrapped).fetch_one(&mut *tx).await?;
        tx.rollback().await?;
        sqlx::Connection::close(conn).await?;
        Ok(rows.0)
    }

    /// The plugin's pool for a kind of work.
    pub(super) fn pool(&self, work: Work) -> &PgPool {
        match work {
            Work::Read => &self.read_pool,
            Work::Delivery | Work::Load => &self.delivery_pool,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_patterns() {
        for ok in ["#", "user.*", "user.#", "bid.placed", "a-b.c_d"] {
            assert!(check_pattern(ok).is_ok(), "{ok}");
        }
        for bad in ["", "user.", "user..x", "us er", "user.*x"] {
            assert!(check_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn plugin_names() {
        assert_eq!(
            PluginName::parse("user_stats").unwrap().as_str(),
            "user-stats"
        );
        assert!(PluginName::parse("User").is_err());
        assert!(PluginName::parse("../etc").is_err());
        assert!(PluginName::parse("").is_err());
    }
}
