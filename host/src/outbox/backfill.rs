//! Backfill: the outbox keeps published rows for `relay.retention` (then the purge
//! removes them), so a plugin can be fed the events it missed (a new plugin, or one whose
//! bug was fixed) straight from them. Each matching event is published to the plugin's
//! own entry only (so to its aggregate's partition), as the relay built it, and confirmed; the plugin's inbox drops the
//! ones it already handled, so a backfill can be run again or overlap live traffic.

use super::message;
use super::store::ClaimedRow;
use crate::broker::{publish_confirmed, To};
use chrono::{DateTime, Utc};
use lapin::Channel;
use sqlx::PgPool;
use uuid::Uuid;

/// Published rows read (and messages in flight) at a time.
const BATCH: i64 = 500;

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("cannot read the outbox: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot publish event {event_id} to {entry}: {reason}")]
    Publish {
        event_id: Uuid,
        entry: String,
        reason: String,
    },
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct BackfillReport {
    /// Events published to the plugin's entry.
    pub sent: u64,
    /// Published events the plugin does not subscribe to.
    pub skipped: u64,
    /// Rows that could not be made into a message (counted, not sent).
    pub unreadable: u64,
}

/// Publishes to the plugin's `entry` every published outbox event since `since` (all that are kept,
/// when `None`) whose type matches one of `patterns`, in publication order.
pub async fn backfill(
    pool: &PgPool,
    channel: &Channel,
    entry: &str,
    patterns: &[String],
    since: Option<DateTime<Utc>>,
    max_bytes: usize,
) -> Result<BackfillReport, BackfillError> {
    let mut report = BackfillReport::default();
    let since = since.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let mut cursor: (DateTime<Utc>, i64) = (since, i64::MIN);
    // What was published by now: events published while the backfill runs reach the
    // plugin through its entry's bindings anyway.
    let until: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(pool).await?;
    loop {
        let rows: Vec<(DateTime<Utc>, ClaimedRow)> = sqlx::query_as::<_, Published>(
            "SELECT published_at, ctid::text AS ctid, seq, event_id, aggregate_type, aggregate_id, event_type, source,
                    payload, schema_version, occurred_at, headers,
                    NULL::bigint AS previous_seq, NULL::timestamptz AS previous_retry_at
             FROM outbox_events
             WHERE status = 'published' AND published_at >= $1 AND published_at <= $4
               AND (published_at, seq) > ($1, $2)
             ORDER BY published_at, seq LIMIT $3",
        )
        .bind(cursor.0)
        .bind(cursor.1)
        .bind(BATCH)
        .bind(until)
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|p| (p.published_at, p.row))
        .collect();
        let Some((at, last)) = rows.last().map(|(at, row)| (*at, row.seq)) else {
            return Ok(report);
        };
        cursor = (at, last);
        for (_, row) in rows {
            if !patterns
                .iter()
                .any(|p| crate::broker::topology::topic_matches(p, &row.event_type))
            {
                report.skipped += 1;
                continue;
            }
            let event_id = row.event_id;
            let Ok(outgoing) = message::build(row, max_bytes) else {
                report.unreadable += 1;
                continue;
            };
            publish_confirmed(
                channel,
                To::Exchange(entry),
                &outgoing.body,
                outgoing.properties,
            )
            .await
            .map_err(|reason| BackfillError::Publish {
                event_id,
                entry: entry.to_string(),
                reason,
            })?;
            report.sent += 1;
        }
    }
}

/// A published row and when it was published (the backfill's cursor).
struct Published {
    published_at: DateTime<Utc>,
    row: ClaimedRow,
}

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for Published {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        Ok(Self {
            published_at: row.try_get("published_at")?,
            row: ClaimedRow::from_row(row)?,
        })
    }
}
