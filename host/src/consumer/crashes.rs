//! Crash loops end. A message that kills the process (abort, out-of-memory kill) comes
//! back from RabbitMQ marked `redelivered`, and would kill it again forever. For a
//! redelivered message the host notes in PostgreSQL that handling started, and clears
//! the note once the message is settled; a note still there when the message comes back
//! again means the host stopped while handling it.
//!
//! The first delivery is not noted (that would cost every delivery a write): a
//! `redelivered` flag alone cannot tell a crash from a restart that merely returned
//! prefetched messages, so the first crash is assumed, and `consumer.max_crashes` counts
//! it. Redelivered messages are rare, so the notes cost nothing in the steady state.

use crate::event::Event;
use sqlx::PgPool;

/// Whether to hand a redelivered message to the plugin.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go on; the start is noted.
    Handle,
    /// The host stopped this many times while handling it.
    GiveUp(u32),
}

/// Counts the crashes so far (the unsettled noted starts, plus the assumed first one);
/// at `max_crashes` gives up, otherwise notes this start. A database error lets the
/// delivery through (its handler needs the database anyway and will retry).
pub async fn before(pool: &PgPool, plugin: &str, event: &Event, max_crashes: u32) -> Verdict {
    let noted: Result<Option<i32>, _> = sqlx::query_scalar(
        "SELECT starts FROM eventhost_inflight WHERE plugin = $1 AND event_id = $2 AND source = $3",
    )
    .bind(plugin)
    .bind(&event.id.0)
    .bind(&event.source)
    .fetch_optional(pool)
    .await;
    let crashes = match noted {
        Ok(starts) => 1 + starts.unwrap_or(0).max(0) as u32,
        Err(error) => {
            tracing::warn!(%error, "cannot read the crash notes; handling the redelivery");
            return Verdict::Handle;
        }
    };
    if crashes >= max_crashes {
        return Verdict::GiveUp(crashes);
    }
    let noted = sqlx::query(
        "INSERT INTO eventhost_inflight (plugin, event_id, source, starts) VALUES ($1, $2, $3, 1)
         ON CONFLICT (plugin, event_id, source) DO UPDATE SET starts = eventhost_inflight.starts + 1",
    )
    .bind(plugin)
    .bind(&event.id.0)
    .bind(&event.source)
    .execute(pool)
    .await;
    if let Err(error) = noted {
        tracing::warn!(%error, "cannot note the redelivery's start");
    }
    Verdict::Handle
}

/// The message was settled (acked, retried or dead-lettered): forget its notes.
pub async fn settled(pool: &PgPool, plugin: &str, event: &Event) {
    let cleared = sqlx::query(
        "DELETE FROM eventhost_inflight WHERE plugin = $1 AND event_id = $2 AND source = $3",
    )
    .bind(plugin)
    .bind(&event.id.0)
    .bind(&event.source)
    .execute(pool)
    .await;
    if let Err(error) = cleared {
        tracing::warn!(%error, "cannot clear the redelivery's crash note");
    }
}

/// Notes older than a week: left by a crash between a message's settling and its note's
/// deletion (that message is gone), so they would never be read again.
pub async fn purge_stale(pool: &PgPool, plugin: &str) {
    let purged = sqlx::query(
        "DELETE FROM eventhost_inflight WHERE plugin = $1 AND first_seen < now() - interval '7 days'",
    )
    .bind(plugin)
    .execute(pool)
    .await;
    if let Err(error) = purged {
        tracing::warn!(%error, "cannot purge old crash notes");
    }
}
