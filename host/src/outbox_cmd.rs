//! `eventhost outbox status` and `eventhost outbox replay`.

use anyhow::{bail, Result};
use eventhost::database;
use eventhost::outbox::{self, ReplaySelector};
use std::process::ExitCode;
use std::time::Duration;
use uuid::Uuid;

/// Prints the backlog. Exit code: 0 healthy, 1 when there are dead rows or the oldest
/// pending row is older than `max_pending_age`, 2 when the database cannot be read.
pub async fn status(
    database_url: &str,
    max_pending_age: Option<Duration>,
    json: bool,
) -> Result<ExitCode> {
    let pool = database::connect(database_url, 1).await?;
    let status = outbox::status(&pool).await?;
    if json {
        println!("{}", serde_json::to_string(&status)?);
    } else {
        println!(
            "pending    {} ({} waiting to retry)",
            status.pending, status.retrying
        );
        println!("published  {}", status.published);
        println!("dead       {}", status.dead);
        match status.oldest_pending_seconds {
            Some(age) => println!("oldest pending  {age:.1}s"),
            None => println!("oldest pending  -"),
        }
    }
    let too_old = match (max_pending_age, status.oldest_pending_seconds) {
        (Some(limit), Some(age)) => age > limit.as_secs_f64(),
        _ => false,
    };
    if status.dead > 0 || too_old {
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn replay(
    database_url: &str,
    all: bool,
    ids: &[String],
    event_type: Option<&str>,
) -> Result<ExitCode> {
    let selector = match (all, ids.is_empty(), event_type) {
        (true, true, None) => ReplaySelector::All,
        (false, false, None) => {
            let parsed: Result<Vec<Uuid>, _> = ids.iter().map(|id| Uuid::parse_str(id)).collect();
            match parsed {
                Ok(ids) => ReplaySelector::Ids(ids),
                Err(_) => bail!("--id takes event ids (UUIDs)"),
            }
        }
        (false, true, Some(t)) => ReplaySelector::EventType(t.to_string()),
        _ => {
            bail!("say which dead events to replay: exactly one of --all, --id ID..., --type TYPE")
        }
    };
    let pool = database::connect(database_url, 1).await?;
    let revived = outbox::replay(&pool, &selector).await?;
    println!("{revived} dead event(s) back to pending");
    Ok(ExitCode::SUCCESS)
}
