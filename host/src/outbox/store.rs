//! The SQL over `outbox_events`: the relay's claim and marks, the purge, and the
//! operators' status and replay. Everything that knows the table's layout is here.

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use std::time::Duration;
use uuid::Uuid;

/// Advisory lock keys (two-int form, class 7460/7461): per-aggregate producer locks,
/// and the single purge lock.
const PURGE_LOCK: (i32, i32) = (7461, 1);
/// The LISTEN/NOTIFY channel the insert trigger signals.
pub const NOTIFY_CHANNEL: &str = "eventhost_outbox";

/// A claimed row, with the nearest earlier pending row of its aggregate (if any).
#[derive(Debug, sqlx::FromRow)]
pub struct ClaimedRow {
    /// The row version's address. A relay batch marks its rows by it (no index lookup),
    /// which is safe only because [`claim`]'s lock keeps the version in place until the
    /// batch commits; rows read without that lock (backfill) must never be written by it.
    pub ctid: String,
    pub seq: i64,
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub event_type: String,
    pub source: String,
    /// The JSON text as PostgreSQL returned it: checked, not parsed into a tree, since
    /// the relay only copies it into the message.
    pub payload: Json<Box<RawValue>>,
    pub schema_version: i32,
    pub occurred_at: DateTime<Utc>,
    pub headers: Value,
    pub previous_seq: Option<i64>,
    /// When the previous row is waiting for a retry: until when.
    pub previous_retry_at: Option<DateTime<Utc>>,
}

/// Claims up to `limit` due pending rows in `seq` order, locking them (skipping rows
/// other relays hold) until the caller's transaction ends. Which of them may be
/// published is decided by [`super::order::publishable`].
pub async fn claim(conn: &mut PgConnection, limit: u32) -> Result<Vec<ClaimedRow>, sqlx::Error> {
    sqlx::query_as::<_, ClaimedRow>(
        "WITH candidates AS ( \
             SELECT ctid::text AS ctid, seq, event_id, aggregate_type, aggregate_id, event_type, source, payload, \
                    schema_version, occurred_at, headers \
             FROM outbox_events \
             WHERE status = 'pending' AND next_attempt_at <= now() \
             ORDER BY seq LIMIT $1 \
             FOR UPDATE SKIP LOCKED) \
         SELECT c.*, prev.seq AS previous_seq, \
                CASE WHEN prev.next_attempt_at > now() THEN prev.next_attempt_at END \
                    AS previous_retry_at \
         FROM candidates c \
         LEFT JOIN LATERAL ( \
             SELECT p.seq, p.next_attempt_at FROM outbox_events p \
             WHERE p.status = 'pending' AND p.aggregate_type = c.aggregate_type \
               AND p.aggregate_id = c.aggregate_id AND p.seq < c.seq \
             ORDER BY p.seq DESC LIMIT 1) prev ON true \
         ORDER BY c.seq",
    )
    .bind(limit as i64)
    .fetch_all(conn)
    .await
}

/// Rows waiting behind a retrying event of their aggregate inherit its retry time, so
/// later claims pass over them instead of filling batches with rows that cannot go.
pub async fn postpone(
    conn: &mut PgConnection,
    rows: &[(Uuid, DateTime<Utc>)],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let times: Vec<DateTime<Utc>> = rows.iter().map(|r| r.1).collect();
    sqlx::query(
        "UPDATE outbox_events o SET next_attempt_at = d.at \
         FROM unnest($1::uuid[], $2::timestamptz[]) AS d(id, at) WHERE o.event_id = d.id",
    )
    .bind(&ids)
    .bind(&times)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks claimed rows published, by the addresses [`claim`] returned (in the same
/// transaction). A random-UUID primary key lookup per row cost about a fifth of the
/// relay's database time; the address is a direct heap fetch.
pub async fn mark_published(conn: &mut PgConnection, ctids: &[&str]) -> Result<(), sqlx::Error> {
    if ctids.is_empty() {
        return Ok(());
    }
    let marked = sqlx::query(
        "UPDATE outbox_events SET status = 'published', published_at = now() \
         WHERE ctid = ANY($1::text[]::tid[]) AND status = 'pending'",
    )
    .bind(ctids)
    .execute(conn)
    .await?
    .rows_affected();
    if marked != ctids.len() as u64 {
        // Cannot happen while the claim's row locks hold; if it ever does, the rows
        // stay pending and are published again (at least once), never lost. Logged
        // here, since the caller reports database errors as an unreachable server.
        tracing::error!(
            marked,
            claimed = ctids.len(),
            "outbox rows moved while claimed; the batch rolls back and will be published again"
        );
        return Err(sqlx::Error::Protocol(format!(
            "marked {marked} of {} claimed outbox rows published; the batch rolls back",
            ctids.len()
        )));
    }
    Ok(())
}

/// A failed publication of one row, with the reason stored as `last_error`.
#[derive(Debug, Clone)]
pub struct Failure {
    pub event_id: Uuid,
    pub error: String,
}

/// When a failed row is tried again, and when it gives up.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

/// Counts a failed attempt on each row: the next try waits `min(max, base * 2^attempts)`
/// scaled by a random factor in [0.5, 1) (so relays retrying together spread out); the
/// row becomes `dead` at `max_attempts`. Returns how many became dead.
pub async fn mark_failed(
    conn: &mut PgConnection,
    failures: &[Failure],
    policy: RetryPolicy,
) -> Result<u64, sqlx::Error> {
    if failures.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = failures.iter().map(|f| f.event_id).collect();
    let errors: Vec<&str> = failures.iter().map(|f| f.error.as_str()).collect();
    let dead: Vec<bool> = sqlx::query_scalar(
        "UPDATE outbox_events o SET \
             attempts = o.attempts + 1, \
             last_error = f.error, \
             status = CASE WHEN o.attempts + 1 >= $3 THEN 'dead' ELSE 'pending' END, \
             next_attempt_at = now() + make_interval(secs => \
                 least($5::float8, $4::float8 * power(2::float8, o.attempts)) \
                 * (0.5 + random() / 2)) \
         FROM unnest($1::uuid[], $2::text[]) AS f(id, error) \
         WHERE o.event_id = f.id \
         RETURNING o.status = 'dead'",
    )
    .bind(&ids)
    .bind(&errors)
    .bind(policy.max_attempts as i32)
    .bind(policy.base.as_secs_f64())
    .bind(policy.max.as_secs_f64())
    .fetch_all(conn)
    .await?;
    Ok(dead.into_iter().filter(|d| *d).count() as u64)
}

/// Deletes published rows older than `retention`, `batch` rows per transaction, until
/// none are left. Only one cleaner runs at a time: returns `None` when another holds
/// the purge lock.
pub async fn purge(
    pool: &PgPool,
    retention: Duration,
    batch: u32,
) -> Result<Option<u64>, sqlx::Error> {
    let mut total = 0;
    // Where the last batch ended: the next one starts there instead of stepping over the
    // index entries of every row deleted before it (they stay until vacuum).
    let mut from: Option<DateTime<Utc>> = None;
    loop {
        let mut tx = pool.begin().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, $2)")
            .bind(PURGE_LOCK.0)
            .bind(PURGE_LOCK.1)
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            return Ok(if total == 0 { None } else { Some(total) });
        }
        // By the rows' physical addresses, in the order they were published: no probe
        // of the primary key (random UUIDs, an index far larger than memory at millions
        // of rows) per deleted row.
        let (deleted, last): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
            "WITH gone AS ( \
                 DELETE FROM outbox_events WHERE ctid = ANY(ARRAY( \
                     SELECT ctid FROM outbox_events \
                     WHERE status = 'published' \
                       AND published_at < now() - make_interval(secs => $1) \
                       AND published_at >= coalesce($3, '-infinity') \
                     ORDER BY published_at LIMIT $2)) \
                 RETURNING published_at) \
             SELECT count(*), max(published_at) FROM gone",
        )
        .bind(retention.as_secs_f64())
        .bind(batch as i64)
        .bind(from)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        let deleted = deleted.max(0) as u64;
        from = last.or(from);
        total += deleted;
        if deleted < batch as u64 {
            return Ok(Some(total));
        }
    }
}

/// The backlog as operators see it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Status {
    pub pending: i64,
    /// Pending rows waiting for a retry after a failed attempt.
    pub retrying: i64,
    pub published: i64,
    pub dead: i64,
    /// Age of the oldest pending row, in seconds.
    pub oldest_pending_seconds: Option<f64>,
}

pub async fn status(pool: &PgPool) -> Result<Status, sqlx::Error> {
    let row: (i64, i64, i64, i64, Option<f64>) = sqlx::query_as(
        "SELECT \
             (SELECT count(*) FROM outbox_events WHERE status = 'pending'), \
             (SELECT count(*) FROM outbox_events WHERE status = 'pending' AND next_attempt_at > now()), \
             (SELECT count(*) FROM outbox_events WHERE status = 'published'), \
             (SELECT count(*) FROM outbox_events WHERE status = 'dead'), \
             (SELECT extract(epoch FROM now() - created_at)::float8 FROM outbox_events \
              WHERE status = 'pending' ORDER BY seq LIMIT 1)",
    )
    .fetch_one(pool)
    .await?;
    Ok(Status {
        pending: row.0,
        retrying: row.1,
        published: row.2,
        dead: row.3,
        oldest_pending_seconds: row.4,
    })
}

/// What the metrics report: pending and dead rows and the oldest pending age. Unlike
/// [`status`] it never counts published rows, which can be millions.
pub async fn backlog(pool: &PgPool) -> Result<(i64, i64, Option<f64>), sqlx::Error> {
    sqlx::query_as(
        "SELECT \
             (SELECT count(*) FROM outbox_events WHERE status = 'pending'), \
             (SELECT count(*) FROM outbox_events WHERE status = 'dead'), \
             (SELECT extract(epoch FROM now() - created_at)::float8 FROM outbox_events \
              WHERE status = 'pending' ORDER BY seq LIMIT 1)",
    )
    .fetch_one(pool)
    .await
}

/// A row that exhausted its publication attempts, as the dashboard lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct DeadRow {
    pub event_id: Uuid,
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The oldest `limit` dead rows (the partial index of dead rows serves it).
pub async fn dead_rows(pool: &PgPool, limit: u32) -> Result<Vec<DeadRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT event_id, event_type, aggregate_type, aggregate_id, attempts, last_error, created_at \
         FROM outbox_events WHERE status = 'dead' ORDER BY seq LIMIT $1",
    )
    .bind(limit as i64)
    .fetch_all(pool)
    .await
}

/// Which dead rows `replay` revives.
#[derive(Debug, Clone)]
pub enum ReplaySelector {
    All,
    Ids(Vec<Uuid>),
    EventType(String),
}

/// Puts dead rows back to pending with a fresh attempt count and wakes the relays.
/// Returns how many were revived.
pub async fn replay(pool: &PgPool, selector: &ReplaySelector) -> Result<u64, sqlx::Error> {
    let (ids, event_type) = match selector {
        ReplaySelector::All => (None, None),
        ReplaySelector::Ids(ids) => (Some(ids.as_slice()), None),
        ReplaySelector::EventType(event_type) => (None, Some(event_type.as_str())),
    };
    let mut tx = pool.begin().await?;
    let revived = sqlx::query(
        "UPDATE outbox_events SET status = 'pending', attempts = 0, next_attempt_at = now() \
         WHERE status = 'dead' \
           AND ($1::uuid[] IS NULL OR event_id = ANY($1)) \
           AND ($2::text IS NULL OR event_type = $2)",
    )
    .bind(ids)
    .bind(event_type)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if revived > 0 {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(NOTIFY_CHANNEL)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(revived)
}
