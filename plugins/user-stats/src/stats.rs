//! The stats table's statements. Every write is idempotent on its own key, so a replayed
//! or duplicated event never counts twice even without the host's inbox.

use crate::eventhost::plugin::db::{execute, DbError, Value};
use crate::exports::eventhost::plugin::handler::HandlerError;
use crate::payload::{BidPlaced, RoleChanged, UserCreated};

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn uuid(s: &str) -> Value {
    Value::Uuid(s.to_string())
}

fn opt_text(s: &Option<String>) -> Value {
    s.as_deref().map_or(Value::Null, text)
}

/// Bad data (class 22) and broken constraints (class 23) will fail again on every
/// delivery; anything else (locks, cancellations, connection trouble) may pass later.
pub fn db_error(err: DbError) -> HandlerError {
    let reason = format!("database error {}: {}", err.code, err.message);
    if err.code.starts_with("22") || err.code.starts_with("23") || err.code.starts_with("42") {
        HandlerError::Permanent(reason)
    } else {
        HandlerError::Retryable(reason)
    }
}

pub fn user_created(e: &UserCreated) -> Result<(), HandlerError> {
    execute(
        "INSERT INTO user_stats (user_id, active, role, created_via, user_created_at)
         VALUES ($1, $2, $3, 'event', $4::timestamptz)
         ON CONFLICT (user_id) DO NOTHING",
        &[
            uuid(&e.user_id),
            Value::Boolean(e.active),
            opt_text(&e.role),
            opt_text(&e.created_at),
        ],
    )
    .map_err(db_error)?;
    Ok(())
}

/// Upserts: a status change for a user whose `user.created` never arrived still
/// leaves a correct row behind.
pub fn set_active(user_id: &str, active: bool) -> Result<(), HandlerError> {
    execute(
        "INSERT INTO user_stats (user_id, active, created_via) VALUES ($1, $2, 'event')
         ON CONFLICT (user_id) DO UPDATE SET active = EXCLUDED.active, updated_at = now()",
        &[uuid(user_id), Value::Boolean(active)],
    )
    .map_err(db_error)?;
    Ok(())
}

pub fn set_role(e: &RoleChanged) -> Result<(), HandlerError> {
    execute(
        "INSERT INTO user_stats (user_id, role, created_via) VALUES ($1, $2, 'event')
         ON CONFLICT (user_id) DO UPDATE SET role = EXCLUDED.role, updated_at = now()",
        &[uuid(&e.user_id), text(&e.role)],
    )
    .map_err(db_error)?;
    Ok(())
}

/// Counts the bid only if its id was not counted before: both statements run in the
/// invocation's one transaction, so the ledger row and the counters move together.
pub fn bid_placed(e: &BidPlaced) -> Result<(), HandlerError> {
    let newly_counted = execute(
        "INSERT INTO counted_bids (bid_id, user_id, amount, placed_at)
         VALUES ($1, $2, $3::numeric, $4::timestamptz)
         ON CONFLICT (bid_id) DO NOTHING",
        &[
            uuid(&e.bid_id),
            uuid(&e.user_id),
            text(&e.amount),
            opt_text(&e.placed_at),
        ],
    )
    .map_err(db_error)?;
    if newly_counted == 0 {
        return Ok(());
    }
    execute(
        "INSERT INTO user_stats (user_id, created_via, bid_count, total_bid_amount)
         VALUES ($1, 'event', 1, $2::numeric)
         ON CONFLICT (user_id) DO UPDATE SET
             bid_count = user_stats.bid_count + 1,
             total_bid_amount = user_stats.total_bid_amount + EXCLUDED.total_bid_amount,
             updated_at = now()",
        &[uuid(&e.user_id), text(&e.amount)],
    )
    .map_err(db_error)?;
    Ok(())
}
