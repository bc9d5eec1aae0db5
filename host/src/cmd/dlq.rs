//! `eventhost dlq list <plugin>` and `eventhost dlq replay <plugin>`.

use super::args::ConfigArgs;
use anyhow::{Context, Result};
use eventhost::broker::{self, topology::PluginQueues};
use eventhost::consumer::dead_letters::{self, DeadLetter, Selection};
use eventhost::PluginName;
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
    }
}

async fn open(
    args: &ConfigArgs,
    plugin: &str,
) -> Result<(lapin::Connection, PluginName, PluginQueues)> {
    let config = args.load()?;
    let name = PluginName::parse(plugin).map_err(anyhow::Error::msg)?;
    let queues = PluginQueues::of(&config.consumer, name.as_str());
    let connection = broker::connect(&config.broker, "eventhost dlq")
        .await
        .context("connecting to RabbitMQ")?;
    Ok((connection, name, queues))
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
        let id = l.event_id.as_deref().unwrap_or("-");
        println!(
            "{id:<36}  {:<24}  {:>8}  {}",
            l.event_type, l.attempts, l.error
        );
    }
    Ok(())
}

/// Lists the plugin's dead letters without removing them.
async fn list(args: &ConfigArgs, plugin: &str, json: bool) -> Result<ExitCode> {
    let (connection, name, queues) = open(args, plugin).await?;
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
    let (connection, name, queues) = open(args, plugin).await?;
    let selection = if all {
        Selection::All
    } else {
        Selection::EventIds(ids.to_vec())
    };
    let replayed = dead_letters::replay(&connection, name.as_str(), &queues, &selection).await?;
    let _ = connection.close(200, "done".into()).await;
    println!(
        "replayed {} dead letter(s) to {}",
        replayed.len(),
        queues.entry
    );
    let missing: Vec<&String> = ids
        .iter()
        .filter(|id| !replayed.iter().any(|l| l.event_id.as_ref() == Some(*id)))
        .collect();
    if missing.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("not found in {}: {missing:?}", queues.dead);
        Ok(ExitCode::from(1))
    }
}
