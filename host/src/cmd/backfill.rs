//! `eventhost plugin backfill <plugin>`: the events a plugin missed, from the outbox's
//! published rows (kept for `relay.retention`), into its queue.

use super::args::ConfigArgs;
use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use eventhost::broker::{self, topology::PluginQueues};
use eventhost::{database, outbox, PluginName};
use std::process::ExitCode;

pub async fn run(
    config: &ConfigArgs,
    plugin: &str,
    since: Option<&str>,
    all: bool,
) -> Result<ExitCode> {
    let since = match (since, all) {
        (Some(text), false) => Some(
            DateTime::parse_from_rfc3339(text)
                .with_context(|| format!("--since takes an RFC 3339 time, got {text:?}"))?
                .with_timezone(&Utc),
        ),
        (None, true) => None,
        _ => bail!("say from when: --since TIME (RFC 3339), or --all for every event kept"),
    };
    let config = config.load()?;
    let name = PluginName::parse(plugin).map_err(anyhow::Error::msg)?;
    let queues = PluginQueues::of(&config.consumer, name.as_str());
    let pool = database::connect(&config.database_url, 2).await?;
    // The subscriptions the plugin's queue was last bound with, by whichever host.
    let patterns: Vec<String> = sqlx::query_scalar(
        "SELECT pattern FROM eventhost_queue_bindings WHERE queue = $1 AND exchange = $2",
    )
    .bind(&queues.entry)
    .bind(&config.broker.exchange)
    .fetch_all(&pool)
    .await
    .context("reading the plugin's bindings")?;
    if patterns.is_empty() {
        bail!(
            "{} has no bindings on {}: load the plugin (its queue is made then) before a backfill",
            queues.entry,
            config.broker.exchange
        );
    }
    let connection = broker::connect(&config.broker, "eventhost backfill")
        .await
        .context("connecting to RabbitMQ")?;
    let channel = broker::confirm_channel(&connection).await?;
    let report = outbox::backfill(
        &pool,
        &channel,
        &queues.entry,
        &patterns,
        since,
        config.relay.max_message_bytes,
    )
    .await?;
    let _ = connection.close(200, "done".into()).await;
    println!(
        "backfilled {} event(s) to {} ({} not subscribed, {} unreadable)",
        report.sent, queues.entry, report.skipped, report.unreadable
    );
    Ok(ExitCode::SUCCESS)
}
