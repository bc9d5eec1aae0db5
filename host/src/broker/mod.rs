//! RabbitMQ: connecting (bounded in time), declaring the events exchange and the
//! plugins' queues ([`topology`]), and opening publisher channels with confirms.
//! Reconnection is the caller's loop: a lapin connection that failed is dropped and a new
//! one made.

pub mod topology;

use crate::config::BrokerConfig;
use lapin::options::{ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot connect to RabbitMQ at {target}: {reason}")]
    Connect { target: String, reason: String },
    #[error("cannot declare exchange {exchange:?}: {source}")]
    Declare {
        exchange: String,
        source: lapin::Error,
    },
    #[error("cannot open a channel: {0}")]
    Channel(#[source] lapin::Error),
    /// A PRECONDITION_FAILED here usually means the queue exists with other arguments
    /// (e.g. classic vs quorum).
    #[error("cannot declare queue {queue:?}: {source}")]
    Queue { queue: String, source: lapin::Error },
    /// A COMMAND_INVALID "unknown exchange type" means the consistent-hash exchange
    /// plugin is not enabled on the broker.
    #[error("cannot declare the plugin exchange {exchange:?} (x-consistent-hash; is rabbitmq_consistent_hash_exchange enabled?): {source}")]
    Entry {
        exchange: String,
        source: lapin::Error,
    },
    #[error("cannot bind {queue:?} with {pattern:?}: {source}")]
    Binding {
        queue: String,
        pattern: String,
        source: lapin::Error,
    },
}

/// Connects once, giving up after `connect_timeout`. `name` shows in RabbitMQ's
/// management UI, so operators can tell the relay's connections from the consumer's.
/// `amqps://` URLs are verified against the public roots and `broker.ca_file`.
pub async fn connect(config: &BrokerConfig, name: &str) -> Result<Connection, BrokerError> {
    let target = crate::config::redact::url(&config.url);
    let failed = |reason: String| BrokerError::Connect {
        target: target.clone(),
        reason,
    };
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let mut tls = OwnedTLSConfig::default();
    if let Some(path) = &config.ca_file {
        let pem = tokio::fs::read_to_string(path).await.map_err(|e| {
            failed(format!(
                "cannot read broker.ca_file = {}: {e}",
                path.display()
            ))
        })?;
        tls.cert_chain = Some(pem);
    }
    let runtime = lapin::runtime::default_runtime().map_err(|e| failed(e.to_string()))?;
    match tokio::time::timeout(
        config.connect_timeout,
        Connection::connect_with_config(&config.url, properties, tls, runtime),
    )
    .await
    {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(BrokerError::Connect {
            target,
            reason: e.to_string(),
        }),
        Err(_) => Err(BrokerError::Connect {
            target,
            reason: format!("no answer within {:?}", config.connect_timeout),
        }),
    }
}

/// Declares the durable topic exchange events are published to (idempotent).
pub async fn declare_exchange(channel: &Channel, exchange: &str) -> Result<(), BrokerError> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            options,
            FieldTable::default(),
        )
        .await
        .map_err(|source| BrokerError::Declare {
            exchange: exchange.to_string(),
            source,
        })
}

/// A new channel in confirm mode: every publish on it is acked or nacked by the broker.
pub async fn confirm_channel(connection: &Connection) -> Result<Channel, BrokerError> {
    let channel = connection
        .create_channel()
        .await
        .map_err(BrokerError::Channel)?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(BrokerError::Channel)?;
    Ok(channel)
}

/// A channel in confirm mode with the exchange declared: ready to publish.
pub async fn publisher_channel(
    connection: &Connection,
    exchange: &str,
) -> Result<Channel, BrokerError> {
    let channel = confirm_channel(connection).await?;
    declare_exchange(&channel, exchange).await?;
    Ok(channel)
}

/// Where [`publish_confirmed`] sends a message.
#[derive(Debug, Clone, Copy)]
pub enum To<'a> {
    /// Straight to this queue (through the default exchange).
    Queue(&'a str),
    /// To an exchange that routes on headers, not on the routing key (a plugin's entry).
    Exchange(&'a str),
}

/// Publishes and waits for the broker's ack.
pub async fn publish_confirmed(
    channel: &Channel,
    to: To<'_>,
    body: &[u8],
    properties: lapin::BasicProperties,
) -> Result<(), String> {
    let (exchange, routing_key, target) = match to {
        To::Queue(queue) => ("", queue, queue),
        To::Exchange(exchange) => (exchange, "", exchange),
    };
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            lapin::options::BasicPublishOptions::default(),
            body,
            properties,
        )
        .await
        .map_err(|e| e.to_string())?;
    let confirmation = confirm.await.map_err(|e| e.to_string())?;
    if confirmation.is_nack() {
        return Err(format!("the broker refused the message for {target}"));
    }
    Ok(())
}
