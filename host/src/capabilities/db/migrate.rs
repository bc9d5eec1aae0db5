//! Applies a plugin's own migrations (from its `migrations` export) into its schema, as its
//! role, each version once. The record of what ran lives in the plugin's schema, so the
//! plugin's tables and their history move together.

use super::provision::{connect_options, PluginIdentity};
use crate::config::Limits;
use crate::runtime::bindings::migrations::Migration;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::Connection;
use std::sync::Mutex;

/// The PostgreSQL backends a load is using, so that a load past its deadline (or
/// cancelled at shutdown, or dropped) can have them terminated: dropping a client leaves
/// a backend running whatever it was running (a migration may `SET statement_timeout =
/// 0`). A session is forgotten once it is done, so a pooled connection that goes back
/// to other work is never terminated.
pub struct Backends {
    admin: PgPool,
    pids: Mutex<Vec<i32>>,
}

impl Backends {
    pub fn new(admin: &PgPool) -> Self {
        Self {
            admin: admin.clone(),
            pids: Mutex::default(),
        }
    }

    fn pids(&self) -> std::sync::MutexGuard<'_, Vec<i32>> {
        self.pids.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn track(&self, conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(conn)
            .await?;
        self.pids().push(pid);
        Ok(())
    }

    /// The sessions ended by themselves (committed, or failed and dropped).
    fn forget_all(&self) {
        self.pids().clear();
    }

    /// Terminates every tracked backend (those already gone are skipped).
    pub async fn terminate(&self) {
        let pids = std::mem::take(&mut *self.pids());
        terminate(&self.admin, pids).await;
    }
}

async fn terminate(admin: &PgPool, pids: Vec<i32>) {
    if pids.is_empty() {
        return;
    }
    let ended = sqlx::query("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid")
        .bind(&pids)
        .execute(admin)
        .await;
    if let Err(error) = ended {
        tracing::error!(?pids, %error, "cannot terminate the sessions of a cancelled plugin load");
    }
}

/// A load dropped mid-way (its task aborted) still ends its sessions.
impl Drop for Backends {
    fn drop(&mut self) {
        let pids = std::mem::take(&mut *self.pids());
        if pids.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let admin = self.admin.clone();
            runtime.spawn(async move { terminate(&admin, pids).await });
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("migration versions must be unique and ascending; version {0} is out of order")]
    Order(u32),
    #[error("migration {version} ({name}) was applied with different SQL; applied migrations must never change, add a new version instead")]
    Changed { version: u32, name: String },
    #[error("migration {version} ({name}) failed: {source}")]
    Failed {
        version: u32,
        name: String,
        source: sqlx::Error,
    },
    #[error("could not reach the plugin's schema: {0}")]
    Connect(#[source] sqlx::Error),
}

/// The inbox, keyed on the event's `id` and `source` as given. An inbox from before
/// (a `uuid` key, no source) is converted in place; its rows get the source `''`, which
/// the duplicate check matches with any source, so their events still count as handled.
/// Rows older than `consumer.inbox_retention` are pruned by `handled_at`
/// (`consumer::inbox`). The conversion and the index build run without the plugin's
/// statement timeout (they are the host's, bounded by `consumer.load_timeout`).
const INBOX: &str = "
SET LOCAL statement_timeout = 0;
CREATE TABLE IF NOT EXISTS _eventhost_inbox (
    event_id text NOT NULL, source text NOT NULL, event_type text NOT NULL,
    handled_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, source));
DO $$
DECLARE key text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = '_eventhost_inbox' AND column_name = 'source') THEN
        SELECT conname INTO key FROM pg_constraint
        WHERE conrelid = '_eventhost_inbox'::regclass AND contype = 'p';
        -- One rewrite of the table and one index build.
        EXECUTE format('ALTER TABLE _eventhost_inbox DROP CONSTRAINT %I,
                            ALTER COLUMN event_id TYPE text,
                            ADD COLUMN source text NOT NULL DEFAULT '''',
                            ADD PRIMARY KEY (event_id, source)', key);
        ALTER TABLE _eventhost_inbox ALTER COLUMN source DROP DEFAULT;
        -- Finds the old rows while any are left (see `legacy_rows`).
        CREATE INDEX _eventhost_inbox_legacy ON _eventhost_inbox (event_id) WHERE source = '';
    END IF;
END $$;
CREATE INDEX IF NOT EXISTS _eventhost_inbox_handled_at ON _eventhost_inbox (handled_at);";

/// Whether the plugin's inbox still holds rows of the earlier layout (source `''`), which
/// every delivery must then also look for. Only a converted inbox can; once the last
/// has been pruned, the index that finds them goes and later loads skip the look.
pub async fn legacy_rows(admin: &PgPool, schema: &str) -> Result<bool, MigrationError> {
    let index = format!("{schema}._eventhost_inbox_legacy");
    let indexed: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(&index)
        .fetch_one(admin)
        .await
        .map_err(MigrationError::Connect)?;
    if !indexed {
        return Ok(false);
    }
    let left: bool = sqlx::query_scalar(&format!(
        "SELECT EXISTS (SELECT 1 FROM {schema}._eventhost_inbox WHERE source = '')"
    ))
    .fetch_one(admin)
    .await
    .map_err(MigrationError::Connect)?;
    if !left {
        sqlx::query(&format!("DROP INDEX IF EXISTS {index}"))
            .execute(admin)
            .await
            .map_err(MigrationError::Connect)?;
    }
    Ok(left)
}

fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

/// Returns how many migrations were newly applied. Its sessions are tracked in
/// `backends` while it runs; once it returns (either way) they have ended or gone back to
/// the pool, and are forgotten, so only a cancelled run leaves any to terminate.
pub async fn apply(
    admin: &PgPool,
    admin_options: &PgConnectOptions,
    id: &PluginIdentity,
    limits: &Limits,
    migrations: &[Migration],
    backends: &Backends,
) -> Result<usize, MigrationError> {
    let applied = apply_tracked(admin, admin_options, id, limits, migrations, backends).await;
    backends.forget_all();
    applied
}

async fn apply_tracked(
    admin: &PgPool,
    admin_options: &PgConnectOptions,
    id: &PluginIdentity,
    limits: &Limits,
    migrations: &[Migration],
    backends: &Backends,
) -> Result<usize, MigrationError> {
    for pair in migrations.windows(2) {
        if pair[1].version <= pair[0].version {
            return Err(MigrationError::Order(pair[1].version));
        }
    }
    // Two hosts loading the same plugin: the second waits, then finds everything applied.
    // The lock is taken by the host (plugin roles may not take advisory locks) and held
    // until the plugin's migrations are committed.
    let mut guard = admin.begin().await.map_err(MigrationError::Connect)?;
    backends
        .track(&mut guard)
        .await
        .map_err(MigrationError::Connect)?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('eventhost.migrations.' || $1))")
        .bind(&id.schema)
        .execute(&mut *guard)
        .await
        .map_err(MigrationError::Connect)?;
    let mut conn = sqlx::PgConnection::connect_with(&connect_options(admin_options, id, limits))
        .await
        .map_err(MigrationError::Connect)?;
    backends
        .track(&mut conn)
        .await
        .map_err(MigrationError::Connect)?;
    let mut tx = conn.begin().await.map_err(MigrationError::Connect)?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS _eventhost_migrations (
             version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&mut *tx)
    .await
    .map_err(MigrationError::Connect)?;
    // The inbox: ids of events whose effects this plugin committed (see
    // `DbSession::record_delivery`). In the plugin's schema so the row commits in the same
    // transaction as the handler's writes.
    sqlx::Executor::execute(&mut *tx, INBOX)
        .await
        .map_err(MigrationError::Connect)?;
    let applied: Vec<(i32, String)> =
        sqlx::query_as("SELECT version, checksum FROM _eventhost_migrations")
            .fetch_all(&mut *tx)
            .await
            .map_err(MigrationError::Connect)?;
    let mut newly = 0;
    for m in migrations {
        let sum = checksum(&m.sql);
        match applied.iter().find(|(v, _)| *v as u32 == m.version) {
            Some((_, s)) if *s == sum => continue,
            Some(_) => {
                return Err(MigrationError::Changed {
                    version: m.version,
                    name: m.name.clone(),
                })
            }
            None => {}
        }
        let (version, name) = (m.version, m.name.clone());
        let failed = move |source| MigrationError::Failed {
            version,
            name,
            source,
        };
        // A plain string runs through the simple-query protocol, so several statements are
        // allowed (`raw_sql` would do the same, but its future is not `Send` for every
        // lifetime, and hot loading runs in a spawned task).
        if let Err(e) = sqlx::Executor::execute(&mut *tx, m.sql.as_str()).await {
            return Err(failed(e));
        }
        sqlx::query(
            "INSERT INTO _eventhost_migrations (version, name, checksum) VALUES ($1, $2, $3)",
        )
        .bind(m.version as i32)
        .bind(&m.name)
        .bind(&sum)
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        newly += 1;
    }
    tx.commit().await.map_err(MigrationError::Connect)?;
    guard.commit().await.map_err(MigrationError::Connect)?;
    Ok(newly)
}
