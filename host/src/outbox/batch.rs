//! One relay batch: claim rows, publish them pipelined on a confirm channel, wait for the
//! confirms, mark what the broker accepted, commit. The row locks are held only for this
//! (short) transaction; nothing is marked published before its confirm.

use super::message;
use super::order::{self, Hold};
use super::store::{self, Failure, RetryPolicy};
use crate::event::EventId;
use lapin::options::BasicPublishOptions;
use lapin::{Channel, Confirmation};
use sqlx::PgPool;
use std::collections::HashSet;
use std::time::Instant;
use tokio::time::Duration;

/// One event the broker confirmed, and when.
#[derive(Debug, Clone, Copy)]
pub struct Confirmed {
    pub event_id: EventId,
    pub at: Instant,
}

#[derive(Debug, Default)]
pub struct BatchReport {
    pub claimed: usize,
    /// Rows waiting for an earlier event of their aggregate in another relay's batch.
    pub blocked: usize,
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

pub async fn run(
    pool: &PgPool,
    channel: &Channel,
    settings: &BatchSettings<'_>,
) -> Result<BatchReport, sqlx::Error> {
    let started = Instant::now();
    let mut tx = pool.begin().await?;
    let rows = store::claim(&mut tx, settings.batch_size).await?;
    let claimed_at = Instant::now();
    let mut report = BatchReport {
        claimed: rows.len(),
        ..BatchReport::default()
    };
    if rows.is_empty() {
        tx.rollback().await?;
        return Ok(report);
    }

    // Aggregates with an event that could not be sent in this batch: their later events
    // wait too, so the retry cannot be overtaken.
    let mut held: HashSet<(String, String)> = HashSet::new();
    let mut failures = Vec::new();
    let mut in_flight = Vec::with_capacity(rows.len());
    let mut postponed = Vec::new();
    let holds = order::publishable(&rows);
    for (row, hold) in rows.into_iter().zip(holds) {
        match hold {
            None => {}
            Some(Hold::Busy) => {
                report.blocked += 1;
                continue;
            }
            Some(Hold::Retry(at)) => {
                postponed.push((row.event_id, at));
                continue;
            }
        }
        let aggregate = (row.aggregate_type.clone(), row.aggregate_id.clone());
        if report.broker_lost.is_some() || held.contains(&aggregate) {
            continue;
        }
        let event_id = EventId(row.event_id);
        let outgoing = match message::build(row, settings.max_message_bytes) {
            Ok(outgoing) => outgoing,
            Err(error) => {
                tracing::warn!(%event_id, %error, "event cannot be published");
                failures.push(Failure {
                    event_id: event_id.0,
                    error,
                });
                held.insert(aggregate);
                continue;
            }
        };
        match channel
            .basic_publish(
                settings.exchange.into(),
                outgoing.routing_key,
                BasicPublishOptions::default(),
                &outgoing.body,
                outgoing.properties,
            )
            .await
        {
            Ok(confirm) => in_flight.push((event_id, aggregate, confirm)),
            Err(e) => report.broker_lost = Some(e.to_string()),
        }
    }

    let sent_at = Instant::now();
    let deadline = tokio::time::Instant::now() + settings.confirm_timeout;
    let mut published = Vec::with_capacity(in_flight.len());
    for (event_id, aggregate, confirm) in in_flight {
        match tokio::time::timeout_at(deadline, confirm).await {
            Ok(Ok(Confirmation::Ack(_))) => {
                published.push(event_id.0);
                report.confirmed.push(Confirmed {
                    event_id,
                    at: Instant::now(),
                });
            }
            Ok(Ok(Confirmation::Nack(_))) | Ok(Ok(Confirmation::NotRequested)) => {
                // Later events of this aggregate may already be accepted: the retry of this
                // one will arrive after them. Rare (a broker-internal error), so loud.
                tracing::warn!(%event_id, aggregate_type = %aggregate.0, aggregate_id = %aggregate.1,
                    "broker refused the event (nack); it will be retried, possibly after later events of its aggregate");
                failures.push(Failure {
                    event_id: event_id.0,
                    error: "broker refused the message (basic.nack)".into(),
                });
            }
            Ok(Err(e)) => {
                report.broker_lost.get_or_insert(e.to_string());
            }
            Err(_) => {
                report.broker_lost.get_or_insert(format!(
                    "no confirm within relay.confirm_timeout ({:?})",
                    settings.confirm_timeout
                ));
            }
        }
    }

    let confirmed_at = Instant::now();
    store::mark_published(&mut tx, &published).await?;
    store::postpone(&mut tx, &postponed).await?;
    report.dead = store::mark_failed(&mut tx, &failures, settings.retry).await?;
    tx.commit().await?;
    report.failed = failures.len();
    tracing::debug!(
        claimed = report.claimed,
        published = published.len(),
        claim_ms = (claimed_at - started).as_secs_f64() * 1e3,
        send_ms = (sent_at - claimed_at).as_secs_f64() * 1e3,
        confirm_ms = (confirmed_at - sent_at).as_secs_f64() * 1e3,
        mark_ms = confirmed_at.elapsed().as_secs_f64() * 1e3,
        "relay batch"
    );
    Ok(report)
}
