//! Each plugin's inbox forgets handled events after `consumer.inbox_retention`, deleted
//! in bounded batches (oldest first, rows another host is deleting skipped), so the table
//! stays the size of the retention window and its key lookups stay as fast as on day one.

use crate::capabilities::db::schema_name;
use crate::runtime::PluginName;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Deletes the inbox rows of `plugin` handled longer than `retention` ago, `batch` per
/// transaction, until none is left; returns how many went.
pub async fn prune(
    pool: &PgPool,
    plugin: &str,
    retention: Duration,
    batch: u32,
) -> Result<u64, sqlx::Error> {
    let name = PluginName::parse(plugin).map_err(sqlx::Error::Protocol)?;
    let inbox = format!("{}._eventhost_inbox", schema_name(&name));
    // Each batch starts where the last one ended, not at the index entries of the rows
    // already deleted (they stay until vacuum).
    let sql = format!(
        "WITH gone AS (
             DELETE FROM {inbox} WHERE ctid = ANY(ARRAY(
                 SELECT ctid FROM {inbox}
                 WHERE handled_at < now() - make_interval(secs => $1)
                   AND handled_at >= coalesce($3, '-infinity')
                 ORDER BY handled_at LIMIT $2 FOR UPDATE SKIP LOCKED))
             RETURNING handled_at)
         SELECT count(*), max(handled_at) FROM gone"
    );
    let mut total = 0;
    let mut from: Option<DateTime<Utc>> = None;
    loop {
        let (deleted, last): (i64, Option<DateTime<Utc>>) = sqlx::query_as(&sql)
            .bind(retention.as_secs_f64())
            .bind(i64::from(batch))
            .bind(from)
            .fetch_one(pool)
            .await?;
        let deleted = deleted.max(0) as u64;
        total += deleted;
        from = last.or(from);
        if deleted < u64::from(batch) {
            return Ok(total);
        }
    }
}

/// Prunes every `interval` until `stop`; a failure is logged and tried again next time.
pub async fn prune_every(
    pool: PgPool,
    plugin: String,
    retention: Duration,
    interval: Duration,
    batch: u32,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match prune(&pool, &plugin, retention, batch).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(%plugin, pruned, "inbox pruned"),
            Err(error) => tracing::warn!(%plugin, %error, "cannot prune the inbox"),
        }
    }
}
