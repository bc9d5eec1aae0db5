//! One relay batch, in two halves so a worker can keep the broker busy:
//! [`send`] claims rows (locking them in the batch's own transaction) and publishes them
//! pipelined on a confirm channel; [`SentBatch::finish`] awaits the confirms, marks what
//! the broker accepted and commits. Nothing is marked published before its confirm, and
//! the row locks last only from claim to commit.

use super::message;
use super::order::{self, Hold};
use super::store::{self, Failure, RetryPolicy};
use crate::telemetry::PublishSpan;
use chrono::{DateTime, Utc};
use lapin::options::BasicPublishOptions;
use lapin::{Channel, Confirmation, PublisherConfirm};
use sqlx::{PgPool, Postgres, Transaction};
use std::collections::HashSet;
use std::time::Instant;
use tokio::time::Duration;
use uuid::Uuid;

/// One event the broker confirmed, and when.
#[derive(Debug, Clone, Copy)]
pub struct Confirmed {
    pub event_id: Uuid,
    pub at: Instant,
}

#[derive(Debug, Default)]
pub struct BatchReport {
    pub claimed: usize,
    /// Rows waiting for an earlier event of their aggregate in another batch.
    pub blocked: usize,
    pub sent: usize,
    pub confirmed: Vec<Confirmed>,
    pub failed: usize,
    pub dead: u64,
    /// The broker connection broke (or stalled) during the batch: reconnect. Rows it
    /// did not confirm stay pending and are not counted as failed attempts.
    pub broker_lost: Option<String>,
}

pub struct BatchSettings<'a> {
    pub exchange: &'a str,
    pub batch_size: u32,
    pub max_message_bytes: usize,
    pub confirm_timeout: Duration,
    pub retry: RetryPolicy,
}

/// A message the broker has not confirmed yet.
struct InFlight {
    event_id: Uuid,
    /// The row's address, for the mark.
    ctid: String,
    aggregate: (String, String),
    confirm: PublisherConfirm,
    span: Option<PublishSpan>,
}

/// A claimed batch whose messages are on their way.
pub struct SentBatch {
    tx: Transaction<'static, Postgres>,
    in_flight: Vec<InFlight>,
    failures: Vec<Failure>,
    postponed: Vec<(Uuid, DateTime<Utc>)>,
    report: BatchReport,
    started: Instant,
    sent_at: Instant,
}

/// Claims a batch and publishes what the order rule lets go.
pub async fn send(
    pool: &PgPool,
    channel: &Channel,
    settings: &BatchSettings<'_>,
) -> Result<SentBatch, sqlx::Error> {
    let started = Instant::now();
    let mut tx = pool.begin().await?;
    let rows = store::claim(&mut tx, settings.batch_size).await?;
    let mut batch = SentBatch {
        tx,
        in_flight: Vec::with_capacity(rows.len()),
        failures: Vec::new(),
        postponed: Vec::new(),
        report: BatchReport {
            claimed: rows.len(),
            ..BatchReport::default()
        },
        started,
        sent_at: started,
    };
    // Aggregates with an event that could not be sent in this batch: their later events
    // wait too, so the retry cannot be overtaken.
    let mut held: HashSet<(String, String)> = HashSet::new();
    let holds = order::publishable(&rows);
    let mut ready = Vec::with_capacity(rows.len());
    for (row, hold) in rows.into_iter().zip(holds) {
        match hold {
            None => {}
            Some(Hold::Busy) => {
                batch.report.blocked += 1;
                continue;
            }
            Some(Hold::Retry(at)) => {
                batch.postponed.push((row.event_id, at));
                continue;
            }
        }
        let aggregate = (row.aggregate_type.clone(), row.aggregate_id.clone());
        if held.contains(&aggregate) {
            continue;
        }
        let (event_id, ctid) = (row.event_id, row.ctid.clone());
        match message::build(row, settings.max_message_bytes) {
            Ok(outgoing) => ready.push((event_id, ctid, aggregate, outgoing)),
            Err(error) => {
                tracing::warn!(%event_id, %error, "event cannot be published");
                batch.failures.push(Failure { event_id, error });
                held.insert(aggregate);
            }
        }
    }
    publish_all(channel, settings.exchange, ready, &mut batch).await;
    batch.report.sent = batch.in_flight.len();
    batch.sent_at = Instant::now();
    Ok(batch)
}

/// Publishes the messages in order with one hand-off to lapin's I/O thread for the lot:
/// each publish is polled once, in order, which queues its frames and takes its delivery
/// tag, and only then are the sends awaited together. Awaiting each publish before the
/// next (a thread wake-up per message) halves the rate here.
async fn publish_all(
    channel: &Channel,
    exchange: &str,
    ready: Vec<(Uuid, String, (String, String), message::Outgoing)>,
    batch: &mut SentBatch,
) {
    let mut keys = Vec::with_capacity(ready.len());
    let mut bodies = Vec::with_capacity(ready.len());
    let mut heads = Vec::with_capacity(ready.len());
    for (event_id, ctid, aggregate, outgoing) in ready {
        let span = outgoing.traced.as_ref().and_then(|(id, traceparent)| {
            PublishSpan::start(
                exchange,
                outgoing.routing_key.as_str(),
                id,
                traceparent.as_deref(),
            )
        });
        keys.push((event_id, ctid, aggregate, span));
        bodies.push(outgoing.body);
        heads.push((outgoing.routing_key, outgoing.properties));
    }
    let mut publishes = Vec::with_capacity(bodies.len());
    for (body, (routing_key, properties)) in bodies.iter().zip(heads) {
        let mut publish = Box::pin(channel.basic_publish(
            exchange.into(),
            routing_key,
            BasicPublishOptions::default(),
            body,
            properties,
        ));
        let first = futures_lite::future::poll_once(publish.as_mut()).await;
        publishes.push((publish, first));
    }
    for ((event_id, ctid, aggregate, span), (publish, first)) in keys.into_iter().zip(publishes) {
        let sent = match first {
            Some(result) => result,
            None => publish.await,
        };
        match sent {
            Ok(confirm) => batch.in_flight.push(InFlight {
                event_id,
                ctid,
                aggregate,
                confirm,
                span,
            }),
            Err(e) => {
                if let Some(span) = span {
                    span.failed(&e.to_string());
                }
                batch.report.broker_lost.get_or_insert(e.to_string());
            }
        }
    }
}

impl SentBatch {
    pub fn report(&self) -> &BatchReport {
        &self.report
    }

    /// Awaits the confirms (up to `confirm_timeout`), marks and commits.
    pub async fn finish(
        mut self,
        confirm_timeout: Duration,
        retry: RetryPolicy,
    ) -> Result<BatchReport, sqlx::Error> {
        let deadline = tokio::time::Instant::now() + confirm_timeout;
        let mut published = Vec::with_capacity(self.in_flight.len());
        for sent in std::mem::take(&mut self.in_flight) {
            let InFlight {
                event_id,
                ctid,
                aggregate,
                confirm,
                span,
            } = sent;
            let outcome = tokio::time::timeout_at(deadline, confirm).await;
            if let Some(span) = span {
                match &outcome {
                    Ok(Ok(Confirmation::Ack(_))) => span.confirmed(),
                    Ok(Ok(_)) => span.failed("broker refused the message (basic.nack)"),
                    Ok(Err(e)) => span.failed(&e.to_string()),
                    Err(_) => span.failed("no confirm within relay.confirm_timeout"),
                }
            }
            match outcome {
                Ok(Ok(Confirmation::Ack(_))) => {
                    published.push(ctid);
                    self.report.confirmed.push(Confirmed {
                        event_id,
                        at: Instant::now(),
                    });
                }
                Ok(Ok(Confirmation::Nack(_))) | Ok(Ok(Confirmation::NotRequested)) => {
                    // Later events of this aggregate may already be accepted: the retry of
                    // this one will arrive after them. Rare (a broker-internal error), so loud.
                    tracing::warn!(%event_id, aggregate_type = %aggregate.0, aggregate_id = %aggregate.1,
                        "broker refused the event (nack); it will be retried, possibly after later events of its aggregate");
                    self.failures.push(Failure {
                        event_id,
                        error: "broker refused the message (basic.nack)".into(),
                    });
                }
                Ok(Err(e)) => {
                    self.report.broker_lost.get_or_insert(e.to_string());
                }
                Err(_) => {
                    self.report.broker_lost.get_or_insert(format!(
                        "no confirm within relay.confirm_timeout ({confirm_timeout:?})"
                    ));
                }
            }
        }
        let confirmed_at = Instant::now();
        let mut tx = self.tx;
        let published: Vec<&str> = published.iter().map(String::as_str).collect();
        store::mark_published(&mut tx, &published).await?;
        store::postpone(&mut tx, &self.postponed).await?;
        self.report.dead = store::mark_failed(&mut tx, &self.failures, retry).await?;
        tx.commit().await?;
        self.report.failed = self.failures.len();
        tracing::debug!(
            claimed = self.report.claimed,
            published = published.len(),
            send_ms = (self.sent_at - self.started).as_secs_f64() * 1e3,
            confirm_ms = (confirmed_at - self.sent_at).as_secs_f64() * 1e3,
            mark_ms = confirmed_at.elapsed().as_secs_f64() * 1e3,
            "relay batch"
        );
        Ok(self.report)
    }
}
