//! `eventhost dlq list <plugin>` and `eventhost dlq replay <plugin>`.

use super::args::ConfigArgs;
use super::printable;
use anyhow::{Context, Result};
use eventhost::broker::{self, topology::PluginQueues};
use eventhost::config::Config;
use eventhost::consumer::dead_letters::{self, DeadLetter, Selection};
use eventhost::consumer::holds;
use eventhost::{database, PluginName};
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum DlqCommand {
    /// Event id, type, attempts and last error of each dead letter (they stay queued).
    List {
        plugin: String,
        #[command(flatten)]
        config: ConfigArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back through the plugin's queue, attempts reset.
    Replay {
        plugin: String,
        #[command(flatten)]
        config: ConfigArgs,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
        /// Dead letters with these event ids.
        #[arg(long = "id", value_name = "EVENT_ID")]
        ids: Vec<String>,
    },
    /// Aggregates held behind a dead letter (`consumer.on_dead_letter = "hold"`).
    Holds {
        plugin: String,
        #[command(flatten)]
        config: ConfigArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Give up on an aggregate's dead letter: its later events go on without it (replay
    /// the parked ones with --id to run them).
    Release {
        plugin: String,
        #[command(flatten)]
        config: ConfigArgs,
        /// The aggregate, as `dlq holds` shows it (`<aggregate type>/<id>`).
        #[arg(long, value_name = "AGGREGATE")]
        aggregate: String,
    },
}

pub async fn run(command: DlqCommand) -> Result<ExitCode> {
    match command {
        DlqCommand::List {
            plugin,
            config,
            json,
        } => list(&config, &plugin, json).await,
        DlqCommand::Replay {
            plugin,
            config,
            all,
            ids,
        } => replay(&config, &plugin, all, &ids).await,
        DlqCommand::Holds {
            plugin,
            config,
            json,
        } => holds(&config, &plugin, json).await,
        DlqCommand::Release {
            plugin,
            config,
            aggregate,
        } => release(&config, &plugin, &aggregate).await,
    }
}

/// The config and the plugin's name, checked.
fn load(args: &ConfigArgs, plugin: &str) -> Result<(Config, PluginName)> {
    let config = args.load()?;
    let name = PluginName::parse(plugin).map_err(anyhow::Error::msg)?;
    Ok((config, name))
}

async fn database(config: &Config) -> Result<sqlx::PgPool> {
    Ok(database::connect(&config.database_url, 1).await?)
}

async fn holds(args: &ConfigArgs, plugin: &str, json: bool) -> Result<ExitCode> {
    let (config, name) = load(args, plugin)?;
    let pool = database(&config).await?;
    let held = holds::list(&pool, name.as_str())
        .await
        .context("reading the held aggregates")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&held)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<40}  {:<36}  {:<25}  reason",
        "aggregate", "head (dead letter)", "since"
    );
    for h in &held {
        let since = h
            .held_since
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        println!(
            "{:<40}  {:<36}  {since:<25}  {}",
            printable(&h.aggregate),
            printable(&h.head_event_id),
            printable(&h.reason)
        );
    }
    println!("{} aggregate(s) held for {name}", held.len());
    Ok(ExitCode::SUCCESS)
}

/// Exit 1 when the aggregate was not held.
async fn release(args: &ConfigArgs, plugin: &str, aggregate: &str) -> Result<ExitCode> {
    let (config, name) = load(args, plugin)?;
    let pool = database(&config).await?;
    let released = holds::release(&pool, name.as_str(), aggregate)
        .await
        .context("releasing the aggregate")?;
    if released {
        println!("released {aggregate} for {name}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{aggregate} is not held for {name}");
        Ok(ExitCode::from(1))
    }
}

async fn open(config: &Config, name: &PluginName) -> Result<(lapin::Connection, PluginQueues)> {
    let queues = PluginQueues::of(&config.consumer, name.as_str());
    let connection = broker::connect(&config.broker, "eventhost dlq")
        .await
        .context("connecting to RabbitMQ")?;
    Ok((connection, queues))
}

fn print(letters: &[DeadLetter], json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(letters)?);
        return Ok(());
    }
    println!(
        "{:<36}  {:<24}  {:>8}  last error",
        "event id", "type", "attempts"
    );
    for l in letters {
        let id = printable(l.event_id.as_deref().unwrap_or("-"));
        println!(
            "{id:<36}  {:<24}  {:>8}  {}",
            printable(&l.event_type),
            l.attempts,
            printable(&l.error)
        );
    }
    Ok(())
}

/// Lists the plugin's dead letters without removing them.
async fn list(args: &ConfigArgs, plugin: &str, json: bool) -> Result<ExitCode> {
    let (config, name) = load(args, plugin)?;
    let (connection, queues) = open(&config, &name).await?;
    let letters = dead_letters::list(&connection, name.as_str(), &queues).await?;
    let _ = connection.close(200, "done".into()).await;
    print(&letters, json)?;
    if !json {
        println!("{} dead letter(s) in {}", letters.len(), queues.dead);
    }
    Ok(ExitCode::SUCCESS)
}

/// Puts dead letters (all, or those with the given event ids) back on the plugin's queue.
/// Exit 1 when some requested ids were not found.
async fn replay(args: &ConfigArgs, plugin: &str, all: bool, ids: &[String]) -> Result<ExitCode> {
    if all != ids.is_empty() {
        anyhow::bail!("say what to replay: --all, or one or more --id EVENT_ID");
    }
    let (config, name) = load(args, plugin)?;
    let pool = database(&config).await?;
    let (connection, queues) = open(&config, &name).await?;
    let selection = if all {
        Selection::All
    } else {
        Selection::EventIds(ids.to_vec())
    };
    let held = holds::list(&pool, name.as_str())
        .await
        .context("reading the held aggregates")?
        .into_iter()
        .map(|hold| hold.head_event_id.to_string())
        .collect();
    let done = dead_letters::replay(&connection, name.as_str(), &queues, &selection, &held).await?;
    let _ = connection.close(200, "done".into()).await;
    let replayed = done.replayed;
    for letter in &done.waiting {
        let id = printable(letter.event_id.as_deref().unwrap_or("-"));
        let head = printable(letter.held_behind.as_deref().unwrap_or("-"));
        println!("left {id} in place: it waits behind dead letter {head}, still held (replay that one, or `dlq release` its aggregate)");
    }
    println!(
        "replayed {} dead letter(s) to {}",
        replayed.len(),
        queues.entry
    );
    let parked = replayed.iter().filter(|l| l.held_behind.is_some()).count();
    if parked > 0 {
        println!("({parked} of them parked behind a held aggregate's dead letter)");
    }
    let seen = |id: &&String| {
        let found = |l: &DeadLetter| l.event_id.as_ref() == Some(*id);
        replayed.iter().any(found) || done.waiting.iter().any(found)
    };
    let missing: Vec<&String> = ids.iter().filter(|id| !seen(id)).collect();
    if !missing.is_empty() {
        eprintln!("not found in {}: {missing:?}", queues.dead);
    }
    if missing.is_empty() && done.waiting.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(1))
    }
}
