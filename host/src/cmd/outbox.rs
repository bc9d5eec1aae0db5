//! `eventhost outbox status` and `eventhost outbox replay`.

use anyhow::{bail, Result};
use eventhost::database;
use eventhost::outbox::{self, ReplaySelector};
use std::process::ExitCode;
use std::time::Duration;
use uuid::Uuid;

use super::args::DbArgs;

#[derive(clap::Subcommand)]
pub enum OutboxCommand {
    /// Counts of pending, published and dead events and the oldest pending age.
    /// Exits 0 when healthy, 1 when there are dead events or (with --max-pending-age)
    /// the backlog is older than allowed, 2 on error.
    Status {
        #[command(flatten)]
        db: DbArgs,
        /// Exit 1 when the oldest pending event is older than this (e.g. 30s).
        #[arg(long, value_parser = humantime::parse_duration)]
        max_pending_age: Option<Duration>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Put dead events back to pending (attempts reset) for the relay to publish.
    Replay {
        #[command(flatten)]
        db: DbArgs,
        /// Every dead event.
        #[arg(long)]
        all: bool,
        /// Dead events with these ids.
        #[arg(long = "id", value_name = "EVENT_ID")]
        ids: Vec<String>,
        /// Dead events of this type (e.g. user.created).
        #[arg(long = "type", value_name = "EVENT_TYPE")]
        event_type: Option<String>,
    },
}

pub async fn run(command: OutboxCommand) -> Result<ExitCode> {
    match command {
        OutboxCommand::Status {
            db,
            max_pending_age,
            json,
        } => status(&db.database_url, max_pending_age, json).await,
        OutboxCommand::Replay {
            db,
            all,
            ids,
            event_type,
        } => replay(&db.database_url, all, &ids, event_type.as_deref()).await,
    }
}

/// Prints the backlog. Exit code: 0 healthy, 1 when there are dead rows or the oldest
/// pending row is older than `max_pending_age`, 2 when the database cannot be read.
async fn status(
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

async fn replay(
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
