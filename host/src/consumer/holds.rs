//! `consumer.on_dead_letter = "hold"`: when an event becomes a dead letter, its
//! aggregate's later events do not go on without it. The aggregate is held (a row in
//! PostgreSQL, so every host sees it and it survives restarts and handovers) and its
//! later events are parked in the dead-letter queue behind the head, in order. Replaying
//! the head replays what was parked behind it; once the head is handled the hold goes,
//! and the parked events follow it in their original order.
//!
//! The hold is written before the head's dead letter is acked, and the check runs in the
//! aggregate's lane: the next event of the aggregate can only be looked at after both.

use crate::event::Event;
use sqlx::PgPool;

/// A held aggregate, for operators.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct Hold {
    pub aggregate: String,
    pub head_event_id: String,
    pub reason: String,
    pub held_since: chrono::DateTime<chrono::Utc>,
}

/// What a delivery of a held-mode plugin may do.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// The aggregate is not held.
    Free,
    /// The aggregate is held behind this very event (a replayed head): run it.
    Head,
    /// Held behind another event: park this one behind it.
    Behind(String),
}

pub async fn check(
    pool: &PgPool,
    plugin: &str,
    aggregate: &str,
    event: &Event,
) -> Result<Check, sqlx::Error> {
    let head: Option<(String, String)> = sqlx::query_as(
        "SELECT head_event_id, head_source FROM eventhost_held_aggregates
         WHERE plugin = $1 AND aggregate = $2",
    )
    .bind(plugin)
    .bind(aggregate)
    .fetch_optional(pool)
    .await?;
    Ok(match head {
        None => Check::Free,
        // A head held before sources were kept (`''`) is matched by its id alone.
        Some((id, source)) if id == event.id.0 && (source == event.source || source.is_empty()) => {
            Check::Head
        }
        Some((id, _)) => Check::Behind(id),
    })
}

/// Holds the aggregate behind `event` unless it is held already (then the first head
/// stays the head).
pub async fn hold(
    pool: &PgPool,
    plugin: &str,
    aggregate: &str,
    event: &Event,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO eventhost_held_aggregates (plugin, aggregate, head_event_id, head_source, reason)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (plugin, aggregate) DO NOTHING",
    )
    .bind(plugin)
    .bind(aggregate)
    .bind(&event.id.0)
    .bind(&event.source)
    // A plugin's reason may carry NUL characters, which PostgreSQL text cannot.
    .bind(reason.replace('\0', ""))
    .execute(pool)
    .await?;
    Ok(())
}

/// The head was handled: its aggregate goes on.
pub async fn handled(
    pool: &PgPool,
    plugin: &str,
    aggregate: &str,
    event: &Event,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM eventhost_held_aggregates
         WHERE plugin = $1 AND aggregate = $2 AND head_event_id = $3
           AND head_source IN ($4, '')",
    )
    .bind(plugin)
    .bind(aggregate)
    .bind(&event.id.0)
    .bind(&event.source)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn list(pool: &PgPool, plugin: &str) -> Result<Vec<Hold>, sqlx::Error> {
    sqlx::query_as(
        "SELECT aggregate, head_event_id, reason, held_since FROM eventhost_held_aggregates
         WHERE plugin = $1 ORDER BY held_since, aggregate",
    )
    .bind(plugin)
    .fetch_all(pool)
    .await
}

/// An operator gives up on a head: the aggregate goes on without it. Returns whether it
/// was held.
pub async fn release(pool: &PgPool, plugin: &str, aggregate: &str) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("DELETE FROM eventhost_held_aggregates WHERE plugin = $1 AND aggregate = $2")
            .bind(plugin)
            .bind(aggregate)
            .execute(pool)
            .await?;
    Ok(done.rows_affected() > 0)
}
