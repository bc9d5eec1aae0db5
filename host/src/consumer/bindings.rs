//! Declares a plugin's queues and keeps its queue's bindings equal to its current
//! subscriptions: the patterns last bound are remembered in `eventhost_queue_bindings`,
//! so a pattern a new plugin version dropped is unbound.
//!
//! Several hosts may serve different versions of a plugin (a rolling upgrade). Each
//! records its version and the file's time in `eventhost_plugin_versions`; only the
//! newest deployed version reconciles the bindings, and a host serving an older one
//! keeps the newest's bindings as they are (it never removes them). Hosts do this one
//! at a time per queue (an advisory lock), so two starting at once converge.

use super::PluginVersion;
use crate::broker::topology::{self, PluginQueues};
use crate::broker::BrokerError;
use lapin::Channel;
use sqlx::PgPool;

#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("cannot read or record the bindings of {queue}: {source}")]
    Database { queue: String, source: sqlx::Error },
}

pub async fn apply(
    channel: &Channel,
    pool: &PgPool,
    exchange: &str,
    queues: &PluginQueues,
    quorum: bool,
    subscriptions: &[String],
    version: Option<&PluginVersion>,
) -> Result<(), BindingError> {
    let database = |source| BindingError::Database {
        queue: queues.entry.clone(),
        source,
    };
    // Held until the bindings are recorded: one host at a time reconciles this queue.
    let mut turn = pool.begin().await.map_err(database)?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('eventhost.bindings.' || $1))")
        .bind(&queues.entry)
        .execute(&mut *turn)
        .await
        .map_err(database)?;
    if let Some(version) = version {
        if let Some(newest) = newer_version(&mut turn, exchange, queues, subscriptions, version)
            .await
            .map_err(database)?
        {
            tracing::warn!(
                queue = %queues.entry, ours = %short(&version.digest), newest = %short(&newest.0),
                "a newer version of this plugin is deployed on another host; keeping its bindings"
            );
            topology::declare_plugin(channel, exchange, queues, quorum, &newest.1, &[]).await?;
            return turn.commit().await.map_err(database);
        }
    }
    let stale: Vec<String> = sqlx::query_scalar(
        "SELECT pattern FROM eventhost_queue_bindings WHERE queue = $1 AND exchange = $2",
    )
    .bind(&queues.entry)
    .bind(exchange)
    .fetch_all(&mut *turn)
    .await
    .map_err(database)?;
    topology::declare_plugin(channel, exchange, queues, quorum, subscriptions, &stale).await?;
    // Everything on the one connection that holds the lock: a second one per plugin,
    // with every plugin starting at once, could exhaust the pool.
    sqlx::query(
        "DELETE FROM eventhost_queue_bindings
         WHERE queue = $1 AND exchange = $2 AND NOT (pattern = ANY($3))",
    )
    .bind(&queues.entry)
    .bind(exchange)
    .bind(subscriptions)
    .execute(&mut *turn)
    .await
    .map_err(database)?;
    sqlx::query(
        "INSERT INTO eventhost_queue_bindings (queue, exchange, pattern)
         SELECT $1, $2, unnest($3::text[]) ON CONFLICT DO NOTHING",
    )
    .bind(&queues.entry)
    .bind(exchange)
    .bind(subscriptions)
    .execute(&mut *turn)
    .await
    .map_err(database)?;
    turn.commit().await.map_err(database)
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// Records this host's version, then the newest deployed version's digest and
/// subscriptions if that is another one (`None` when this host's is the newest).
async fn newer_version(
    conn: &mut sqlx::PgConnection,
    exchange: &str,
    queues: &PluginQueues,
    subscriptions: &[String],
    version: &PluginVersion,
) -> Result<Option<(String, Vec<String>)>, sqlx::Error> {
    sqlx::query(
        "INSERT INTO eventhost_plugin_versions (queue, exchange, digest, deployed_at, subscriptions)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (queue, exchange, digest) DO UPDATE
         SET deployed_at = GREATEST(eventhost_plugin_versions.deployed_at, EXCLUDED.deployed_at),
             subscriptions = EXCLUDED.subscriptions",
    )
    .bind(&queues.entry)
    .bind(exchange)
    .bind(&version.digest)
    .bind(version.deployed_at)
    .bind(subscriptions)
    .execute(&mut *conn)
    .await?;
    let newest: (String, Vec<String>) = sqlx::query_as(
        "SELECT digest, subscriptions FROM eventhost_plugin_versions
         WHERE queue = $1 AND exchange = $2 ORDER BY deployed_at DESC, digest LIMIT 1",
    )
    .bind(&queues.entry)
    .bind(exchange)
    .fetch_one(&mut *conn)
    .await?;
    Ok((newest.0 != version.digest).then_some(newest))
}
