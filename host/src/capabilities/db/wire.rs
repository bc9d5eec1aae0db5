//! The sqlx calls of a plugin session, each behind a function with named lifetimes, and
//! how their errors reach the plugin.

use super::values::{error, signature};
use crate::runtime::bindings::db::{DbError, Value};
use sqlx::postgres::{PgArguments, PgConnection, PgQueryResult, PgRow, PgStatement, Postgres};
use sqlx::query::Query;
use sqlx::Executor;
use std::future::Future;
use std::pin::Pin;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

// Each sqlx call sits behind a function with named lifetimes: awaited directly inside
// the generated `Send` import futures, rustc cannot prove sqlx's executor futures `Send`
// for every lifetime ("implementation of `Executor` is not general enough").

/// A plain string runs over the simple-query protocol, so all statements go in one
/// round trip.
pub(super) fn begin<'c>(
    conn: &'c mut PgConnection,
    sql: &'static str,
) -> BoxFuture<'c, Result<PgRow, sqlx::Error>> {
    Box::pin(conn.fetch_one(sql))
}

pub(super) fn prepare<'c, 's: 'c>(
    conn: &'c mut PgConnection,
    sql: &'s str,
) -> BoxFuture<'c, Result<PgStatement<'s>, sqlx::Error>> {
    Box::pin(conn.prepare(sql))
}

pub(super) fn fetch<'c, 'q: 'c>(
    conn: &'c mut PgConnection,
    query: Query<'q, Postgres, PgArguments>,
) -> Pin<Box<dyn futures_lite::Stream<Item = Result<PgRow, sqlx::Error>> + Send + 'c>> {
    query.fetch(conn)
}

pub(super) fn execute<'c, 'q: 'c>(
    conn: &'c mut PgConnection,
    query: Query<'q, Postgres, PgArguments>,
) -> BoxFuture<'c, Result<PgQueryResult, sqlx::Error>> {
    Box::pin(query.execute(conn))
}

pub(super) fn execute_simple<'c>(
    conn: &'c mut PgConnection,
    sql: &'static str,
) -> BoxFuture<'c, Result<PgQueryResult, sqlx::Error>> {
    Box::pin(conn.execute(sql))
}

/// The SQL as sent: with parameters, suffixed by their types (see [`signature`]).
pub(super) fn keyed_sql(sql: &str, params: &[Value]) -> String {
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
