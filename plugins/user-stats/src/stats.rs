//! The stats table's statements. Every write is idempotent on its own key, so a replayed
//! or duplicated event never counts twice even without the host's inbox. A failed
//! statement becomes the handler's failure through the kit's `From<DbError>`: bad data,
//! broken constraints and bad SQL are permanent, the rest retryable.

use crate::payload::{BidPlaced, RoleChanged, UserCreated};
use eventhost_plugin::db::execute;
use eventhost_plugin::log::{log, Level};
use eventhost_plugin::{HandlerError, Value};

pub fn user_created(e: &UserCreated) -> Result<(), HandlerError> {
    let created = execute(
        "INSERT INTO user_stats (user_id, active, role, created_via, user_created_at)
         VALUES ($1, $2, $3, 'event', $4::timestamptz)
         ON CONFLICT (user_id) DO NOTHING",
        &[
            Value::uuid(&e.user_id),
            Value::Boolean(e.active),
            e.role.as_deref().into(),
            e.created_at.as_deref().into(),
        ],
    )?;
    let what = if created == 1 {
        "created"
    } else {
        "already there"
    };
    log(
        Level::Debug,
        &format!("stats of user {}: {what}", e.user_id),
    );
    Ok(())
}

/// Upserts: a status change for a user whose `user.created` never arrived still
/// leaves a correct row behind.
pub fn set_active(user_id: &str, active: bool) -> Result<(), HandlerError> {
    execute(
        "INSERT INTO user_stats (user_id, active, created_via) VALUES ($1, $2, 'event')
         ON CONFLICT (user_id) DO UPDATE SET active = EXCLUDED.active, updated_at = now()",
        &[Value::uuid(user_id), Value::Boolean(active)],
    )?;
    Ok(())
}

pub fn set_role(e: &RoleChanged) -> Result<(), HandlerError> {
    execute(
        "INSERT INTO user_stats (user_id, role, created_via) VALUES ($1, $2, 'event')
         ON CONFLICT (user_id) DO UPDATE SET role = EXCLUDED.role, updated_at = now()",
        &[Value::uuid(&e.user_id), e.role.as_str().into()],
    )?;
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
            Value::uuid(&e.bid_id),
            Value::uuid(&e.user_id),
            e.amount.as_str().into(),
            e.placed_at.as_deref().into(),
        ],
    )?;
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
        &[Value::uuid(&e.user_id), e.amount.as_str().into()],
    )?;
    Ok(())
}
