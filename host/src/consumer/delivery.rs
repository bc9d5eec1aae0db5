//! One delivery, start to settle: parse the CloudEvent, run the plugin (inbox + effects in
//! one transaction), then ack, send to the retry path, or dead-letter. A message leaves
//! the plugin's queue only after its effects committed or its retry / dead letter was
//! confirmed by the broker; anything else leaves it there to be delivered again.

use super::headers;
use super::lanes::Gate;
use super::Target;
use crate::broker::topology::PluginQueues;
use crate::broker::{publish_confirmed, To};
use crate::event::Event;
use crate::metrics::{Disposition, Metrics};
use crate::outbox::health::Backoff;
use crate::runtime::{Abort, Outcome};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Channel;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What every delivery of one plugin's consumer shares.
pub struct Context {
    pub plugin: String,
    pub target: Arc<dyn Target>,
    pub channel: Channel,
    pub queues: PluginQueues,
    pub max_attempts: u32,
    pub max_crashes: u32,
    pub metrics: Metrics,
    pub pool: PgPool,
    pub shutdown: CancellationToken,
    /// Retries in place (`consumer.retry = "in-place"`): the delays, and the gate that lets
    /// a waiting delivery give its slot to other aggregates. `None`: through the retry
    /// queues.
    pub retry: Option<(Vec<Duration>, Gate)>,
    /// `consumer.on_dead_letter = "hold"`: an aggregate with a dead letter is held
    /// (see [`super::holds`]).
    pub hold: bool,
}

/// Where a delivery goes once the plugin is done with it.
enum Verdict {
    /// Handled or a duplicate: counted already, nothing to forward.
    Ack,
    Retry {
        attempts: u32,
        error: String,
    },
    Dead {
        attempts: u32,
        error: String,
    },
    /// Its aggregate is held behind the dead letter `head`: parked in the dead-letter
    /// queue behind it, not run.
    Parked {
        attempts: u32,
        head: String,
    },
    /// Leave it in the queue (shutting down while the database is unreachable).
    Requeue,
    /// From another publisher, without the partitioning key: sent back through the
    /// plugin's entry with it, so the aggregate's events meet in one partition. Such
    /// messages all arrive in one partition, so they go back in the order published.
    Partition {
        aggregate: String,
    },
}

/// The aggregate a delivery belongs to, for ordering; `None` for unparseable bodies.
pub fn parse(delivery: &Delivery) -> (Option<String>, Result<Event, String>) {
    match super::binary_mode::event(&delivery.properties, &delivery.data) {
        Ok(event) => (Some(aggregate(&event)), Ok(event)),
        Err(e) => (None, Err(format!("malformed event: {e}"))),
    }
}

fn aggregate(event: &Event) -> String {
    format!("{}/{}", event.aggregate_type, event.subject)
}

/// How long a delivery may stay unacknowledged through in-place retries (counted from
/// its arrival, so the events waiting behind it count too) before its next retry goes
/// through the delay queues instead: well inside RabbitMQ's `consumer_timeout` (30 min
/// by default), past which the broker would close the channel.
const IN_PLACE_LIMIT: Duration = Duration::from_secs(10 * 60);

pub async fn handle(
    ctx: Arc<Context>,
    delivery: Delivery,
    event: Result<Event, String>,
    received: Instant,
) {
    if ctx.shutdown.is_cancelled() {
        // Stopping: a delivery that has not started goes back to the queue unrun, so an
        // aggregate's later events never run ahead of one put back (a waiting retry).
        nack(&delivery).await;
        return;
    }
    let failed_before = headers::attempts(&delivery.properties);
    let again = delivery.redelivered;
    let (verdict, span, noted) = match event {
        Err(reason) => {
            let span = tracing::warn_span!("deliver", plugin = %ctx.plugin, routing_key = %delivery.routing_key);
            span.in_scope(|| tracing::warn!(%reason, "dead-lettering an unreadable message"));
            let dead = Verdict::Dead {
                attempts: failed_before.saturating_add(1),
                error: reason,
            };
            (dead, span, None)
        }
        Ok(event)
            if ctx.queues.partitions.len() > 1
                && !headers::has_partition_key(&delivery.properties) =>
        {
            let span = tracing::debug_span!("deliver", plugin = %ctx.plugin, event_id = %event.id, routing_key = %event.event_type);
            let aggregate = aggregate(&event);
            (Verdict::Partition { aggregate }, span, None)
        }
        Ok(event) => {
            let span = tracing::info_span!("deliver", plugin = %ctx.plugin, event_id = %event.id, routing_key = %event.event_type, otel.kind = "consumer");
            crate::telemetry::continue_trace(&span, event.header("traceparent"));
            let verdict = decide(&ctx, &event, failed_before, received, again)
                .instrument(span.clone())
                .await;
            (verdict, span, again.then_some(event))
        }
    };
    settle(&ctx, delivery, verdict).instrument(span).await;
    if let Some(event) = noted {
        // Settled or put back on purpose: either way the host did not die on it.
        super::crashes::settled(&ctx.pool, &ctx.plugin, &event).await;
    }
}

/// Runs the event unless its aggregate is held; with holds on, a dead letter holds its
/// aggregate and a handled head releases it, both before the delivery is settled.
async fn decide(
    ctx: &Context,
    event: &Event,
    failed_before: u32,
    received: Instant,
    again: bool,
) -> Verdict {
    use super::holds::{self, Check};
    let aggregate = aggregate(event);
    let mut head = false;
    if ctx.hold {
        let check = durably(ctx, "read the aggregate's hold", || {
            holds::check(&ctx.pool, &ctx.plugin, &aggregate, event)
        });
        match check.await {
            Some(Ok(Check::Free)) => {}
            Some(Ok(Check::Head)) => head = true,
            Some(Ok(Check::Behind(head))) => {
                let attempts = failed_before;
                return Verdict::Parked { attempts, head };
            }
            // A key PostgreSQL refuses can never have been held.
            Some(Err(error)) => {
                tracing::warn!(%error, "PostgreSQL refuses the aggregate's key; it cannot be held")
            }
            None => return Verdict::Requeue,
        }
    }
    let verdict = match again {
        true => redelivered(ctx, event, failed_before, received).await,
        false => run(ctx, event, failed_before, received).await,
    };
    let noted = match &verdict {
        Verdict::Dead { error, .. } if ctx.hold => {
            let hold = || holds::hold(&ctx.pool, &ctx.plugin, &aggregate, event, error);
            durably(ctx, "hold the aggregate", hold).await
        }
        Verdict::Ack if head => {
            tracing::info!("dead letter handled; its aggregate goes on");
            let release = || holds::handled(&ctx.pool, &ctx.plugin, &aggregate, event);
            durably(ctx, "release the aggregate", release).await
        }
        _ => Some(Ok(())),
    };
    match noted {
        Some(Ok(())) => verdict,
        Some(Err(error)) => {
            tracing::warn!(%error, "PostgreSQL refuses the aggregate's hold; its later events go on");
            verdict
        }
        None => Verdict::Requeue,
    }
}

/// A database step the delivery's order depends on, tried again while PostgreSQL is
/// unreachable (not the event's fault); `None` when the host stops first (the delivery
/// then goes back to the queue). Any other error is the step's answer: it would fail the
/// same way again (an aggregate key with a NUL character, or too long for an index entry).
async fn durably<T, F, Fut>(
    ctx: &Context,
    what: &str,
    mut step: F,
) -> Option<Result<T, sqlx::Error>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    loop {
        match step().await {
            Err(error) if !crate::database::reachable(&ctx.pool).await => {
                tracing::warn!(%error, "PostgreSQL unreachable; could not {what}, trying again");
                if !pause(ctx, &mut backoff).await {
                    return None;
                }
            }
            done => return Some(done),
        }
    }
}

/// Waits out the next backoff step; false when the host stops first.
pub(super) async fn pause(ctx: &Context, backoff: &mut Backoff) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(backoff.next()) => true,
        _ = ctx.shutdown.cancelled() => false,
    }
}

/// A message the broker gave out before without it being settled: unless the host
/// stopped while handling it `max_crashes` times, it is handled as usual.
async fn redelivered(
    ctx: &Context,
    event: &Event,
    failed_before: u32,
    received: Instant,
) -> Verdict {
    use super::crashes;
    match crashes::before(&ctx.pool, &ctx.plugin, event, ctx.max_crashes).await {
        crashes::Verdict::Handle => run(ctx, event, failed_before, received).await,
        crashes::Verdict::GiveUp(times) => Verdict::Dead {
            attempts: failed_before.saturating_add(1),
            error: format!("host stopped while handling it {times} times"),
        },
    }
}

async fn run(ctx: &Context, event: &Event, failed_before: u32, received: Instant) -> Verdict {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    let mut failed_before = failed_before;
    loop {
        // Tests make the process die mid-delivery here (`FAILPOINTS=consumer-dispatch=return`).
        fail::fail_point!("consumer-dispatch", |_| std::process::abort());
        let invocation = match injected_failure() {
            Some(failed) => failed,
            None => ctx.target.deliver(event).await,
        };
        let elapsed = Some(invocation.elapsed);
        let attempts = failed_before.saturating_add(1);
        return match invocation.outcome {
            Outcome::Ok => {
                ctx.metrics
                    .record(&ctx.plugin, Disposition::Handled, elapsed);
                Verdict::Ack
            }
            Outcome::Duplicate => {
                ctx.metrics
                    .record(&ctx.plugin, Disposition::Duplicate, elapsed);
                Verdict::Ack
            }
            Outcome::Permanent(error) => Verdict::Dead {
                attempts,
                error: format!("permanent: {error}"),
            },
            // No room in the host right now is not the event's fault either.
            Outcome::Aborted(Abort::Capacity(error)) => {
                tracing::warn!(%error, "no capacity for the delivery; holding it until there is");
                if pause(ctx, &mut backoff).await {
                    continue;
                }
                Verdict::Requeue
            }
            // PostgreSQL being down is not the event's fault: wait for it instead of
            // burning the event's attempts.
            Outcome::Aborted(Abort::Host(error))
                if !crate::database::reachable(&ctx.pool).await =>
            {
                tracing::warn!(%error, "PostgreSQL unreachable; holding the delivery until it is back");
                if pause(ctx, &mut backoff).await {
                    continue;
                }
                Verdict::Requeue
            }
            other => {
                let error = other.to_string();
                if attempts >= ctx.max_attempts {
                    Verdict::Dead {
                        attempts,
                        error: format!("{error} (attempt {attempts} of {})", ctx.max_attempts),
                    }
                } else if let Some((delays, gate)) = ctx.retry.as_ref().filter(|(delays, _)| {
                    received.elapsed() + delay_for(delays, attempts) <= IN_PLACE_LIMIT
                }) {
                    // In place: the delivery stays unacknowledged in its lane, so the
                    // aggregate's later events wait behind it; other aggregates go on.
                    let delay = delay_for(delays, attempts);
                    ctx.metrics.record(&ctx.plugin, Disposition::Retried, None);
                    ctx.metrics.failed(&ctx.plugin, &error);
                    tracing::info!(%error, attempts, retry_in = ?delay, "delivery failed; retrying in place");
                    tokio::select! {
                        _ = gate.outside(tokio::time::sleep(delay)) => {
                            failed_before = attempts;
                            continue;
                        }
                        _ = ctx.shutdown.cancelled() => Verdict::Requeue,
                    }
                } else {
                    Verdict::Retry { attempts, error }
                }
            }
        };
    }
}

/// A transient failure instead of the handler's run, when a test asks for one
/// (`FAILPOINTS=consumer-transient=5%return`); never in a build without `failpoints`.
fn injected_failure() -> Option<crate::runtime::Invocation> {
    #[cfg(feature = "failpoints")]
    if fail::eval("consumer-transient", |_| ()).is_some() {
        return Some(crate::runtime::Invocation {
            outcome: Outcome::Retryable("injected transient failure".into()),
            elapsed: Duration::ZERO,
            logs: Vec::new(),
            output: Default::default(),
            memory_bytes: 0,
        });
    }
    None
}

/// The delay before the retry after the `attempts`-th failure (the last one repeats).
fn delay_for(delays: &[Duration], attempts: u32) -> Duration {
    let last = delays.len().saturating_sub(1);
    delays
        .get((attempts.max(1) as usize - 1).min(last))
        .copied()
        .unwrap_or(Duration::from_secs(1))
}

async fn settle(ctx: &Context, delivery: Delivery, verdict: Verdict) {
    let forward = match &verdict {
        Verdict::Ack => None,
        Verdict::Requeue => {
            nack(&delivery).await;
            return;
        }
        Verdict::Partition { aggregate } => {
            if !super::reroute::send_to_partition(ctx, &delivery, aggregate).await {
                return;
            }
            None
        }
        Verdict::Retry { attempts, error } => {
            // A delay queue exists whenever max_attempts > 1 (config validation).
            let queue = ctx
                .queues
                .retry_queue(*attempts)
                .unwrap_or(&ctx.queues.dead);
            tracing::info!(%error, attempts, retry_queue = queue, "delivery failed; will retry");
            Some((queue, Disposition::Retried, *attempts, error.clone()))
        }
        Verdict::Dead { attempts, error } => {
            tracing::warn!(%error, attempts, dead_letter_queue = %ctx.queues.dead, "dead-lettering");
            Some((
                ctx.queues.dead.as_str(),
                Disposition::DeadLettered,
                *attempts,
                error.clone(),
            ))
        }
        Verdict::Parked { attempts, head } => {
            tracing::info!(%head, dead_letter_queue = %ctx.queues.dead, "aggregate held behind a dead letter; parking the delivery");
            let error = format!("held: its aggregate waits behind dead letter {head}");
            Some((
                ctx.queues.dead.as_str(),
                Disposition::Parked,
                *attempts,
                error,
            ))
        }
    };
    if let Some((queue, disposition, attempts, error)) = forward {
        let mut properties = headers::failed(&delivery, &ctx.plugin, attempts, &error);
        if let Verdict::Parked { head, .. } = &verdict {
            properties = headers::parked(properties, head);
        }
        if let Err(error) =
            publish_confirmed(&ctx.channel, To::Queue(queue), &delivery.data, properties).await
        {
            // Not acked: the broker redelivers it and it is tried again.
            tracing::warn!(%error, queue, "could not forward the delivery; leaving it in the queue");
            nack(&delivery).await;
            return;
        }
        ctx.metrics.record(&ctx.plugin, disposition, None);
        if disposition != Disposition::Parked {
            ctx.metrics.failed(&ctx.plugin, &error);
        }
    }
    if let Err(error) = delivery.acker.ack(BasicAckOptions::default()).await {
        // The channel is gone: the broker redelivers, and the inbox drops the repeat.
        tracing::debug!(%error, "ack failed; the message will be redelivered");
    }
}

pub(super) async fn nack(delivery: &Delivery) {
    let requeue = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    if let Err(error) = delivery.acker.nack(requeue).await {
        tracing::debug!(%error, "nack failed; the message will be redelivered");
    }
}
