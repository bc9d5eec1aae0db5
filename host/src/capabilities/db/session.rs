//! One invocation's database session: a connection of the plugin's own pool (logged in as
//! the plugin's role) and the transaction the host opens on the plugin's first statement.

use super::values::{bind, decode_row, error, signature};
use crate::runtime::bindings::db::{DbError, Rows, Value};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{
    PgArguments, PgConnection, PgPool, PgQueryResult, PgRow, PgStatement, Postgres,
};
use sqlx::query::Query;
use sqlx::{Column, Executor, Row, Statement};
use std::future::Future;
use std::pin::Pin;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Holds the invocation's transaction until the host commits or rolls it back.
///
/// If the invocation is abandoned mid-flight (its wall-clock deadline passed, so this is
/// dropped while a query may still run on the server), the connection is closed instead of
/// going back to the pool, and its server backend is terminated through the host's own
/// pool: a plugin that lifted its `statement_timeout` cannot keep a query running.
pub struct DbSession {
    plugin_pool: PgPool,
    admin_pool: PgPool,
    open: Option<OpenTx>,
}

struct OpenTx {
    conn: PoolConnection<Postgres>,
    backend_pid: i32,
}

impl DbSession {
    pub fn new(plugin_pool: PgPool, admin_pool: PgPool) -> Self {
        Self {
            plugin_pool,
            admin_pool,
            open: None,
        }
    }

    async fn tx(&mut self) -> Result<&mut OpenTx, DbError> {
        if self.open.is_none() {
            let mut conn = self
                .plugin_pool
                .acquire()
                .await
                .map_err(|e| error(format!("no database connection for the plugin: {e}")))?;
            // BEGIN and the backend pid in one round trip; the pid is what lets the host
            // terminate this session if the invocation is abandoned.
            let begun = begin(&mut conn).await;
            let backend_pid = match begun.and_then(|row| row.try_get::<i32, _>(0)) {
                Ok(pid) => pid,
                Err(e) => {
                    conn.close_on_drop();
                    return Err(to_db_error(e));
                }
            };
            self.open = Some(OpenTx { conn, backend_pid });
        }
        Ok(self.open.as_mut().expect("opened above"))
    }

    pub async fn query(&mut self, sql: String, params: Vec<Value>) -> Result<Rows, DbError> {
        let keyed = keyed_sql(&sql, &params);
        let conn: &mut PgConnection = &mut self.tx().await?.conn;
        let statement = prepare(conn, &keyed).await.map_err(to_db_error)?;
        let columns = statement
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        let rows = fetch_all(conn, bind(statement.query(), params)?)
            .await
            .map_err(to_db_error)?;
        let rows = rows.iter().map(decode_row).collect::<Result<_, _>>()?;
        Ok(Rows { columns, rows })
    }

    pub async fn execute(&mut self, sql: String, params: Vec<Value>) -> Result<u64, DbError> {
        let keyed = keyed_sql(&sql, &params);
        let conn: &mut PgConnection = &mut self.tx().await?.conn;
        let done = execute(conn, bind(sqlx::query(&keyed), params)?)
            .await
            .map_err(to_db_error)?;
        Ok(done.rows_affected())
    }

    /// Opens the invocation's transaction with the event's inbox row. False when the
    /// event's effects were already committed (a redelivery or a duplicate): the caller
    /// then skips the handler and commits nothing new.
    pub async fn record_delivery(
        &mut self,
        event_id: uuid::Uuid,
        event_type: &str,
    ) -> Result<bool, DbError> {
        let conn: &mut PgConnection = &mut self.tx().await?.conn;
        let query = sqlx::query(
            "INSERT INTO _eventhost_inbox (event_id, event_type) VALUES ($1, $2) \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(event_id)
        .bind(event_type.to_string());
        let done = execute(conn, query).await.map_err(to_db_error)?;
        Ok(done.rows_affected() == 1)
    }

    /// Commits what the plugin wrote; a no-op if it ran no statement.
    pub async fn commit(&mut self) -> Result<(), sqlx::Error> {
        self.finish("COMMIT").await
    }

    pub async fn rollback(&mut self) -> Result<(), sqlx::Error> {
        self.finish("ROLLBACK").await
    }

    async fn finish(&mut self, verb: &'static str) -> Result<(), sqlx::Error> {
        let Some(mut open) = self.open.take() else {
            return Ok(());
        };
        match execute_simple(&mut open.conn, verb).await {
            Ok(_) => Ok(()),
            Err(e) => {
                // The session's state is unknown: never hand it to the next invocation.
                open.conn.close_on_drop();
                Err(e)
            }
        }
    }
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
        let Some(mut open) = self.open.take() else {
            return;
        };
        open.conn.close_on_drop();
        let pid = open.backend_pid;
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

// Each sqlx call sits behind a function with named lifetimes: awaited directly inside
// the generated `Send` import futures, rustc cannot prove sqlx's executor futures `Send`
// for every lifetime ("implementation of `Executor` is not general enough").

/// A plain string runs over the simple-query protocol, so both statements go in one
/// round trip.
fn begin(conn: &mut PgConnection) -> BoxFuture<'_, Result<PgRow, sqlx::Error>> {
    Box::pin(conn.fetch_one("BEGIN; SELECT pg_backend_pid()"))
}

fn prepare<'c, 's: 'c>(
    conn: &'c mut PgConnection,
    sql: &'s str,
) -> BoxFuture<'c, Result<PgStatement<'s>, sqlx::Error>> {
    Box::pin(conn.prepare(sql))
}

fn fetch_all<'c, 'q: 'c>(
    conn: &'c mut PgConnection,
    query: Query<'q, Postgres, PgArguments>,
) -> BoxFuture<'c, Result<Vec<PgRow>, sqlx::Error>> {
    Box::pin(query.fetch_all(conn))
}

fn execute<'c, 'q: 'c>(
    conn: &'c mut PgConnection,
    query: Query<'q, Postgres, PgArguments>,
) -> BoxFuture<'c, Result<PgQueryResult, sqlx::Error>> {
    Box::pin(query.execute(conn))
}

fn execute_simple<'c>(
    conn: &'c mut PgConnection,
    sql: &'static str,
) -> BoxFuture<'c, Result<PgQueryResult, sqlx::Error>> {
    Box::pin(conn.execute(sql))
}

/// The SQL as sent: with parameters, suffixed by their types (see [`signature`]).
fn keyed_sql(sql: &str, params: &[Value]) -> String {
    if params.is_empty() {
        sql.to_string()
    } else {
        format!("{sql}\n/* eventhost param types: {} */", signature(params))
    }
}

pub fn to_db_error(e: sqlx::Error) -> DbError {
    match &e {
        sqlx::Error::Database(db) => DbError {
            code: db.code().map(|c| c.into_owned()).unwrap_or_default(),
            message: db.message().to_string(),
        },
        other => error(other.to_string()),
    }
}
