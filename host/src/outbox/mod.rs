//! The transactional outbox: producers write events in their own transaction
//! ([`enqueue`]); the [`Relay`] publishes them to RabbitMQ and marks them; operators
//! inspect and replay with [`status`] and [`replay`].

mod backfill;
mod batch;
pub(crate) mod health;
mod message;
mod order;
mod producer;
mod relay;
mod store;

pub use backfill::{backfill, BackfillError, BackfillReport};
pub use batch::Confirmed;
pub use message::CONTENT_TYPE;
/// The message the relay publishes for a row, for benchmarks that publish the same.
pub use message::{build as build_message, Outgoing};
pub use producer::{enqueue, new_traceparent, NewEvent, ProducerError};
pub use relay::{Relay, RelayStats};
pub use store::{
    backlog, dead_rows, purge, replay, status, DeadRow, ReplaySelector, Status, NOTIFY_CHANNEL,
};
/// The relay's claim, for benchmarks of the outbox's queries.
pub use store::{claim, ClaimedRow};
