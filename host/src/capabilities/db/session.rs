//! One invocation's database session: a connection of the plugin's own pool (logged in as
//! the plugin's role) and the transaction the host opens on the plugin's first statement.
//!
//! Every invocation starts from a clean session. The host ends each transaction with a
//! reset of what a session can carry over (settings, `LISTEN`, cursors, temporary tables,
//! sequence state), and, for plugins with code of their own, checks at the next `BEGIN`, in
//! the same round trip, for the one thing the reset cannot clear (prepared statements made
//! by that code); a connection that has one is closed instead of used. Settings written on
//! the plugin's role are caught when a connection is made (`provision::plugin_pool`).

use super::provision::{self, PluginIdentity};
use super::session_sql::{
    BEGIN, BEGIN_AND_CHECK, BEGIN_READ_ONLY, BEGIN_READ_ONLY_AND_CHECK, COMMIT_AND_RESET,
    RECORD_DELIVERY, RECORD_DELIVERY_OR_LEGACY, ROLLBACK_AND_RESET,
};
use super::statement::{defines_code, refused_keyword};
use super::values::{bind, decode_row, error, row_bytes};
use super::wire::{begin, execute, execute_simple, fetch, keyed_sql, prepare, to_db_error};
use crate::runtime::bindings::db::{DbError, Rows, Value};
use futures_lite::stream::StreamExt;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool, Postgres};
use sqlx::{Column, Connection, Row, Statement};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Connections tried per invocation before giving up on a pool of dirty ones.
const MAX_CONNECT_TRIES: usize = 4;

/// What one `db` call may bring into the host.
#[derive(Debug, Clone, Copy)]
pub struct ResultCaps {
    pub max_rows: usize,
    pub max_bytes: usize,
    /// Bytes of one statement's SQL (prepared statements are cached per connection).
    pub max_statement: usize,
}

/// Holds the invocation's transaction until the host commits or rolls it back.
///
/// If the invocation is abandoned mid-flight (its wall-clock deadline passed, so this is
/// dropped while a query may still run on the server), the connection is closed instead of
/// going back to the pool, and its server backend is terminated through the host's own
/// pool: a plugin that lifted its `statement_timeout` cannot keep a query running.
pub struct DbSession {
    plugin_pool: PgPool,
    admin_pool: PgPool,
    identity: Arc<PluginIdentity>,
    caps: ResultCaps,
    /// Whether the plugin has (or has sent) code of its own; shared by its invocations.
    has_code: Arc<AtomicBool>,
    open: Option<OpenTx>,
    /// The plugin tried something only the host may do: the invocation fails permanently.
    violation: Option<String>,
    /// A statement failed on the server, so PostgreSQL has aborted the transaction.
    failed: bool,
    /// Rows the plugin's `execute` calls reported changed (a read that wrote repaired).
    rows_written: u64,
    /// The host cut a result off mid-stream: the connection has unread rows and the
    /// transaction is lost; it is abandoned rather than reused.
    lost: Option<String>,
    /// No connection could be had in time (the plugin's pool, or its role's connection
    /// limit on the server, was full): not the event's fault, so not one of its attempts.
    unavailable: Option<String>,
    /// The transaction is opened `READ ONLY` (a `HEAD` read: nothing it runs may write).
    read_only: bool,
}

struct OpenTx {
    conn: PoolConnection<Postgres>,
    backend_pid: i32,
}

impl DbSession {
    pub fn new(
        plugin_pool: PgPool,
        admin_pool: PgPool,
        identity: Arc<PluginIdentity>,
        caps: ResultCaps,
        has_code: Arc<AtomicBool>,
    ) -> Self {
        Self {
            plugin_pool,
            admin_pool,
            identity,
            caps,
            has_code,
            open: None,
            violation: None,
            unavailable: None,
            failed: false,
            rows_written: 0,
            lost: None,
            read_only: false,
        }
    }

    /// Opens the transaction read-only: any write fails with SQLSTATE 25006.
    pub fn set_read_only(&mut self) {
        self.read_only = true;
    }

    /// Rows the plugin's `execute` statements changed in this invocation.
    pub fn rows_written(&self) -> u64 {
        self.rows_written
    }

    /// Why the invocation must fail permanently, if the plugin broke a sandbox rule.
    pub fn violation(&self) -> Option<&str> {
        self.violation.as_deref()
    }

    /// Why no database connection could be had, if none could.
    pub fn unavailable(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }

    /// True when a statement failed, so nothing of this transaction can commit.
    pub fn aborted(&self) -> bool {
        self.failed || self.lost.is_some() || self.unavailable.is_some()
    }

    async fn tx(&mut self) -> Result<&mut OpenTx, DbError> {
        // Once a connection was missing, no later statement gets one either: the
        // invocation must not commit half of what it meant to.
        let refused = self.violation.as_ref().or(self.lost.as_ref());
        if let Some(reason) = refused.or(self.unavailable.as_ref()) {
            return Err(DbError {
                code: "25P02".into(),
                message: format!("current transaction is aborted: {reason}"),
            });
        }
        if self.open.is_none() {
            self.open = Some(self.begin().await?);
        }
        Ok(self.open.as_mut().expect("opened above"))
    }

    /// A clean connection with the transaction begun. A connection that carries anything
    /// from an earlier invocation is closed and another one taken.
    async fn begin(&mut self) -> Result<OpenTx, DbError> {
        let mut repaired = false;
        for _ in 0..MAX_CONNECT_TRIES {
            let mut conn = match self.plugin_pool.acquire().await {
                Ok(conn) => conn,
                Err(e) if is_unavailable(&e) => {
                    let reason = format!("no database connection for the plugin in time: {e}");
                    self.unavailable = Some(reason.clone());
                    return Err(error(reason));
                }
                // PostgreSQL refused the login itself: the plugin may have changed its
                // role's password, or written a setting that fails every login. The host's
                // role definition wins; then try once more.
                Err(sqlx::Error::Database(e)) if !repaired => {
                    tracing::warn!(role = %self.identity.role, error = %e, "a plugin login was refused; restoring the role");
                    self.repair().await?;
                    repaired = true;
                    continue;
                }
                Err(e) => return Err(error(format!("no database connection for the plugin: {e}"))),
            };
            let check = self.has_code.load(Ordering::Relaxed);
            let sql = match (check, self.read_only) {
                (true, true) => BEGIN_READ_ONLY_AND_CHECK,
                (true, false) => BEGIN_AND_CHECK,
                (false, true) => BEGIN_READ_ONLY,
                (false, false) => BEGIN,
            };
            let state = match begin(&mut conn, sql).await.and_then(|row| {
                let pid = row.try_get::<i32, _>(0)?;
                let statements = match check {
                    true => Some((row.try_get::<i64, _>(1)?, row.try_get::<i64, _>(2)?)),
                    false => None,
                };
                Ok((pid, statements))
            }) {
                Ok(state) => state,
                Err(e) => {
                    discard(conn);
                    return Err(to_db_error(e));
                }
            };
            let (backend_pid, statements) = state;
            let cached = conn.cached_statements_size() as i64;
            let Some((from_sql, protocol)) = statements.filter(|&(f, p)| f != 0 || p != cached)
            else {
                return Ok(OpenTx { conn, backend_pid });
            };
            tracing::warn!(
                role = %self.identity.role, from_sql, protocol, cached,
                "a plugin session kept prepared statements from an earlier invocation; closing it"
            );
            discard(conn);
        }
        Err(error("no clean database connection for the plugin"))
    }

    async fn repair(&self) -> Result<(), DbError> {
        provision::repair(&self.admin_pool, &self.identity)
            .await
            .map_err(|e| error(format!("could not restore the plugin role: {e}")))
    }

    /// Refuses what only the host may do; the refusal also fails the invocation.
    fn screen(&mut self, sql: &str) -> Result<(), DbError> {
        if sql.len() > self.caps.max_statement {
            return Err(DbError {
                code: "54000".into(),
                message: format!(
                    "a statement of {} bytes exceeds limits.db_statement_bytes ({})",
                    sql.len(),
                    self.caps.max_statement
                ),
            });
        }
        if defines_code(sql) {
            self.has_code.store(true, Ordering::Relaxed);
        }
        if let Some(keyword) = refused_keyword(sql) {
            let reason = format!(
                "sandbox: `{keyword}` is refused; transactions and prepared statements are the host's (each invocation runs in one transaction the host commits)"
            );
            self.violation.get_or_insert(reason.clone());
            return Err(DbError {
                code: "EH001".into(),
                message: reason,
            });
        }
        Ok(())
    }

    /// Marks the transaction aborted when PostgreSQL reported an error.
    fn note(&mut self, e: sqlx::Error) -> DbError {
        if matches!(e, sqlx::Error::Database(_)) {
            self.failed = true;
        }
        to_db_error(e)
    }

    pub async fn query(&mut self, sql: String, params: Vec<Value>) -> Result<Rows, DbError> {
        self.screen(&sql)?;
        let keyed = keyed_sql(&sql, &params);
        let caps = self.caps;
        let conn: &mut PgConnection = &mut self.tx().await?.conn;
        let statement = match prepare(conn, &keyed).await {
            Ok(statement) => statement,
            Err(e) => return Err(self.note(e)),
        };
        let columns: Vec<String> = statement
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        let query = bind(statement.query(), params)?;
        let mut bytes: usize = columns.iter().map(String::len).sum();
        let mut rows = Vec::new();
        let mut stream = fetch(conn, query);
        // Rows are decoded as they arrive, so the caps apply before the result is held.
        let cut = loop {
            let Some(next) = stream.next().await else {
                break None;
            };
            let row = match next {
                Ok(row) => row,
                Err(e) => {
                    drop(stream);
                    return Err(self.note(e));
                }
            };
            // Counted as received, before decoding makes a copy.
            bytes += row_bytes(&row);
            if rows.len() == caps.max_rows {
                let m = format!(
                    "the query returned more than limits.db_max_rows ({}) rows",
                    caps.max_rows
                );
                break Some(limit_error(m));
            }
            if bytes > caps.max_bytes {
                let m = format!(
                    "the query returned more than limits.db_max_result_bytes ({}) bytes",
                    caps.max_bytes
                );
                break Some(limit_error(m));
            }
            // A decoder that panics on a value the plugin chose must not take the host's
            // task with it.
            let decoded =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode_row(&row)))
                    .unwrap_or_else(|_| Err(error("a value could not be decoded")));
            match decoded {
                Ok(values) => rows.push(values),
                // The rest of the result is still on the wire.
                Err(e) => break Some(e),
            }
        };
        drop(stream);
        if let Some(err) = cut {
            self.lost = Some(err.message.clone());
            return Err(err);
        }
        Ok(Rows { columns, rows })
    }

    pub async fn execute(&mut self, sql: String, params: Vec<Value>) -> Result<u64, DbError> {
        self.screen(&sql)?;
        let keyed = keyed_sql(&sql, &params);
        let conn: &mut PgConnection = &mut self.tx().await?.conn;
        let query = bind(sqlx::query(&keyed), params)?;
        match execute(conn, query).await {
            Ok(done) => {
                self.rows_written += done.rows_affected();
                Ok(done.rows_affected())
            }
            Err(e) => Err(self.note(e)),
        }
    }

    /// Opens the invocation's transaction with the event's inbox row. False when the
    /// event's effects were already committed (a redelivery or a duplicate): the caller
    /// then skips the handler and commits nothing new.
    /// The inbox keys on `source` and `id` as given (CloudEvents makes only the pair
    /// unique); while the inbox holds rows from before sources were kept (`legacy`:
    /// source `''`), such a row matches any source.
    pub async fn record_delivery(
        &mut self,
        source: &str,
        event_id: &str,
        event_type: &str,
        legacy: bool,
    ) -> Result<bool, DbError> {
        let conn: &mut PgConnection = &mut self.tx().await?.conn;
        let sql = match legacy {
            true => RECORD_DELIVERY_OR_LEGACY,
            false => RECORD_DELIVERY,
        };
        let query = sqlx::query(sql)
            .bind(source.to_string())
            .bind(event_id.to_string())
            .bind(event_type.to_string());
        let done = execute(conn, query).await.map_err(to_db_error)?;
        Ok(done.rows_affected() == 1)
    }

    /// Commits what the plugin wrote; a no-op if it ran no statement.
    pub async fn commit(&mut self) -> Result<(), sqlx::Error> {
        self.finish(COMMIT_AND_RESET).await
    }

    pub async fn rollback(&mut self) -> Result<(), sqlx::Error> {
        self.finish(ROLLBACK_AND_RESET).await
    }

    async fn finish(&mut self, sql: &'static str) -> Result<(), sqlx::Error> {
        if self.lost.is_some() {
            self.abandon();
            return Ok(());
        }
        let Some(mut open) = self.open.take() else {
            return Ok(());
        };
        match execute_simple(&mut open.conn, sql).await {
            Ok(_) => Ok(()),
            Err(e) => {
                // The session's state is unknown: never hand it to the next invocation.
                discard(open.conn);
                Err(e)
            }
        }
    }
}

fn limit_error(message: String) -> DbError {
    DbError {
        code: "54000".into(),
        message: format!("{message}; the statement failed and the transaction is aborted"),
    }
}

/// The pool stayed full, or the server refused the login for want of room (the role's
/// `CONNECTION LIMIT`, or the server's): capacity, not a fault of the event or plugin.
/// (sqlx also reports a pool timeout while PostgreSQL refuses connections; the delivery
/// then waits for it, as it does for a database that is down.)
fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut => true,
        // too_many_connections (the role's limit or the server's); not disk full and such.
        sqlx::Error::Database(db) => db.code().as_deref() == Some("53300"),
        _ => false,
    }
}

/// Takes a connection out of its pool for good, without the pool's graceful close: that
/// close waits for the server, and on a TLS connection the server already dropped (a
/// terminated backend) it never finishes, holding the pool's slot (sqlx 0.8). Dropping
/// the detached connection just closes the socket.
fn discard(conn: sqlx::pool::PoolConnection<sqlx::Postgres>) {
    drop(conn.detach());
}

impl Drop for DbSession {
    fn drop(&mut self) {
        self.abandon();
    }
}

impl DbSession {
    /// Gives up the transaction without a round trip: the connection is closed rather than
    /// pooled and its backend terminated, since a query may still be running on it.
    pub fn abandon(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        let pid = open.backend_pid;
        discard(open.conn);
        let admin = self.admin_pool.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let result = sqlx::query("SELECT pg_terminate_backend($1)").bind(pid).execute(&admin).await;
                match result {
                    Ok(_) => tracing::debug!(pid, "terminated an abandoned plugin session"),
                    Err(e) => tracing::warn!(pid, error = %e, "could not terminate an abandoned plugin session"),
                }
            });
        }
    }
}
