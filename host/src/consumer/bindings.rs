//! Declares a plugin's queues and keeps its queue's bindings equal to its current
//! subscriptions: the patterns last bound are remembered in `eventhost_queue_bindings`,
//! so a pattern a new plugin version dropped is unbound.

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
) -> Result<(), BindingError> {
    let database = |source| BindingError::Database {
        queue: queues.main.clone(),
        source,
    };
    let stale: Vec<String> = sqlx::query_scalar(
        "SELECT pattern FROM eventhost_queue_bindings WHERE queue = $1 AND exchange = $2",
    )
    .bind(&queues.main)
    .bind(exchange)
    .fetch_all(pool)
    .await
    .map_err(database)?;
    topology::declare_plugin(channel, exchange, queues, quorum, subscriptions, &stale).await?;
    let mut tx = pool.begin().await.map_err(database)?;
    sqlx::query(
        "DELETE FROM eventhost_queue_bindings
         WHERE queue = $1 AND exchange = $2 AND NOT (pattern = ANY($3))",
    )
    .bind(&queues.main)
    .bind(exchange)
    .bind(subscriptions)
    .execute(&mut *tx)
    .await
    .map_err(database)?;
    sqlx::query(
        "INSERT INTO eventhost_queue_bindings (queue, exchange, pattern)
         SELECT $1, $2, unnest($3::text[]) ON CONFLICT DO NOTHING",
    )
    .bind(&queues.main)
    .bind(exchange)
    .bind(subscriptions)
    .execute(&mut *tx)
    .await
    .map_err(database)?;
    tx.commit().await.map_err(database)?;
    Ok(())
}
