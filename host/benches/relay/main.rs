//! Relay throughput and latency, next to a raw lapin publisher and a peer relay in the
//! same run:
//!
//! * `raw lapin`: one channel in confirm mode publishing the relay's own messages (same
//!   bodies, properties and headers, built by the relay's code), persistent, with up to
//!   1 000 unconfirmed messages in flight (a sliding window): what the broker alone
//!   accepts with confirms on this machine. Also the same bodies with only delivery
//!   mode, content type and message id (`minimal properties`), which the broker takes
//!   faster;
//! * `floor`: the same backlog read in `seq` order 500 rows at a time, with no lock,
//!   order probe or mark, built and sent the relay's way: the least any relay that
//!   reads its rows from PostgreSQL can do;
//! * `relay`: a backlog of 100 000 outbox rows (10 000 aggregates × 10 events) drained
//!   by one relay with default settings, counted when rows are marked published;
//! * `peer`: `bench/peer-relay` (ruststream-sqlx's row-lock task queue, lapin with
//!   confirms per batch) at its best setting over a table of the same 100 000 bodies,
//!   publishing them with minimal properties; left out when its binary is not built;
//! * latency: producers commit one event each at a steady 500 events/s while the relay
//!   runs; each event's time from its producer's commit to its broker confirm.
//!
//! Every variant publishes to an exchange with one durable queue bound, so the broker
//! really persists every message. Rounds alternate the variants; figures are medians.
//! Run: `bash scripts/bench.sh relay`.

#[path = "../common/mod.rs"]
mod common;
mod peer;

use eventhost::config::{BrokerConfig, RelayConfig};
use eventhost::fixtures::ScratchDatabase;
use eventhost::outbox::{self, NewEvent, Relay};
use lapin::options::{
    BasicPublishOptions, ExchangeDeleteOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::{Channel, Connection, ConnectionProperties, PublisherConfirm};
use sqlx::PgPool;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const BACKLOG: usize = 100_000;
const AGGREGATES: usize = 10_000;

const RATE: u64 = 500;
const LATENCY_SECONDS: u64 = 20;

fn payload(user: usize, n: usize) -> serde_json::Value {
    // About 300 bytes of data, like the seeds' user.created; ~650-byte messages.
    serde_json::json!({
        "userId": format!("9e8d7c6b-5a4f-4e3d-8c2b-{user:012}"), "email": "john.doe@example.com",
        "firstName": "John", "lastName": "Doe", "role": "doctor", "isActive": true,
        "phoneNumber": "+263 77 123 4567", "mustChangePassword": false,
        "createdAt": "2026-11-23T09:59:58Z", "n": n
    })
}

fn event(user: usize, n: usize) -> NewEvent {
    NewEvent::new(
        "bench",
        "user",
        format!("user-{user}"),
        "user.updated",
        payload(user, n),
    )
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

async fn fill(pool: &PgPool) -> anyhow::Result<()> {
    let mut batch = Vec::with_capacity(1000);
    for n in 0..BACKLOG / AGGREGATES {
        for user in 0..AGGREGATES {
            batch.push(event(user, n));
            if batch.len() == 1000 {
                let mut tx = pool.begin().await?;
                outbox::enqueue(&mut tx, &batch).await?;
                tx.commit().await?;
                batch.clear();
            }
        }
    }
    Ok(())
}

/// Sends messages the way the relay sends them: each publish polled once, in order, so
/// one hand-off to lapin's I/O thread carries a whole slice, with a sliding window of up
/// to 1,000 unconfirmed messages.
struct Sender<'a> {
    channel: &'a Channel,
    exchange: &'a str,
    window: VecDeque<PublisherConfirm>,
}

impl<'a> Sender<'a> {
    const SLICE: usize = 250;
    const WINDOW: usize = 1000;

    fn new(channel: &'a Channel, exchange: &'a str) -> Self {
        let window = VecDeque::with_capacity(Self::WINDOW + Self::SLICE);
        Self {
            channel,
            exchange,
            window,
        }
    }

    async fn send(&mut self, messages: &[outbox::Outgoing]) -> anyhow::Result<()> {
        for slice in messages.chunks(Self::SLICE) {
            let mut sends = Vec::with_capacity(slice.len());
            for message in slice {
                let mut publish = Box::pin(self.channel.basic_publish(
                    self.exchange.into(),
                    message.routing_key.clone(),
                    BasicPublishOptions::default(),
                    &message.body,
                    message.properties.clone(),
                ));
                let first = futures_lite::future::poll_once(publish.as_mut()).await;
                sends.push((publish, first));
            }
            for (publish, first) in sends {
                let confirm = match first {
                    Some(sent) => sent?,
                    None => publish.await?,
                };
                self.window.push_back(confirm);
            }
            while self.window.len() > Self::WINDOW {
                anyhow::ensure!(self.window.pop_front().unwrap().await?.is_ack(), "nack");
            }
        }
        Ok(())
    }

    async fn finish(self) -> anyhow::Result<()> {
        for confirm in self.window {
            anyhow::ensure!(confirm.await?.is_ack(), "nack");
        }
        Ok(())
    }
}

/// The raw publisher: the relay's messages, built beforehand, sent the relay's way.
async fn raw_publish(
    channel: &Channel,
    exchange: &str,
    messages: &[outbox::Outgoing],
) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut sender = Sender::new(channel, exchange);
    sender.send(messages).await?;
    sender.finish().await?;
    Ok(messages.len() as f64 / start.elapsed().as_secs_f64())
}

/// The next 500 backlog rows after `seq`, as the relay's claim returns them but with
/// no lock and no order probe.
async fn read_after(pool: &PgPool, seq: i64) -> anyhow::Result<Vec<outbox::ClaimedRow>> {
    Ok(sqlx::query_as(
        "SELECT ctid::text AS ctid, seq, event_id, aggregate_type, aggregate_id, event_type, \
                source, payload, schema_version, occurred_at, headers, \
                NULL::bigint AS previous_seq, NULL::timestamptz AS previous_retry_at \
         FROM outbox_events WHERE status = 'pending' AND seq > $1 ORDER BY seq LIMIT 500",
    )
    .bind(seq)
    .fetch_all(pool)
    .await?)
}

fn build_all(rows: Vec<outbox::ClaimedRow>) -> anyhow::Result<Vec<outbox::Outgoing>> {
    rows.into_iter()
        .map(|row| outbox::build_message(row, usize::MAX).map_err(|e| anyhow::anyhow!(e)))
        .collect()
}

/// The floor of any outbox relay: reads the backlog's rows in `seq` order, 500 at a
/// time (no lock, no order probe, no mark), builds each message with the relay's code
/// and sends it the relay's way. No relay can read its rows from PostgreSQL for less;
/// the rows stay pending for the relay's own run.
async fn floor_drain(pool: &PgPool, channel: &Channel, exchange: &str) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut sender = Sender::new(channel, exchange);
    let (mut after, mut sent) = (i64::MIN, 0usize);
    loop {
        let rows = read_after(pool, after).await?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        let messages = build_all(rows)?;
        sent += messages.len();
        sender.send(&messages).await?;
    }
    sender.finish().await?;
    anyhow::ensure!(sent == BACKLOG, "the floor read {sent} rows");
    Ok(sent as f64 / start.elapsed().as_secs_f64())
}

/// CPU used by this process, PostgreSQL and RabbitMQ since a point, for where each
/// contender's time goes.
struct Cpu([f64; 3]);

impl Cpu {
    fn read() -> [f64; 3] {
        [
            common::cpu_seconds(None),
            common::cpu_seconds(Some("postgres")),
            common::cpu_seconds(Some("beam.smp")),
        ]
    }

    fn now() -> Self {
        Self(Self::read())
    }

    fn per_message(&self, messages: usize) -> String {
        let now = Self::read();
        let us = |i: usize| (now[i] - self.0[i]) * 1e6 / messages as f64;
        format!(
            "bench process {:.0} µs, PostgreSQL {:.0} µs, RabbitMQ {:.0} µs",
            us(0),
            us(1),
            us(2)
        )
    }
}

/// The relay's settings: defaults, or `EVENTHOST_BENCH_BATCH`, `EVENTHOST_BENCH_WORKERS`
/// and `EVENTHOST_BENCH_PIPELINE` to explore others.
fn relay_config() -> RelayConfig {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
    let default = RelayConfig::default();
    RelayConfig {
        batch_size: env("EVENTHOST_BENCH_BATCH").unwrap_or(default.batch_size),
        workers: env("EVENTHOST_BENCH_WORKERS").unwrap_or(default.workers),
        pipeline: env("EVENTHOST_BENCH_PIPELINE").unwrap_or(default.pipeline),
        ..default
    }
}

async fn relay_drain(pool: &PgPool, broker: &BrokerConfig) -> anyhow::Result<f64> {
    let relay = Relay::new(pool.clone(), broker.clone(), relay_config());
    let token = CancellationToken::new();
    let start = Instant::now();
    let task = {
        let (relay, token) = (relay.clone(), token.clone());
        tokio::spawn(async move { relay.run(token).await })
    };
    while relay.stats().published.load(Ordering::Relaxed) < BACKLOG as u64 {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(300), "relay stalled");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = BACKLOG as f64 / start.elapsed().as_secs_f64();
    token.cancel();
    task.await?;
    Ok(rate)
}

/// Commit → confirm at a steady rate, with the relay already running.
async fn latency(pool: &PgPool, broker: &BrokerConfig) -> anyhow::Result<Vec<Duration>> {
    let relay = Relay::new(pool.clone(), broker.clone(), relay_config());
    let mut confirmed = relay.subscribe();
    let token = CancellationToken::new();
    let task = {
        let (relay, token) = (relay.clone(), token.clone());
        tokio::spawn(async move { relay.run(token).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let total = (RATE * LATENCY_SECONDS) as usize;
    let collector = tokio::spawn(async move {
        let mut at: HashMap<Uuid, Instant> = HashMap::with_capacity(total);
        while at.len() < total {
            match confirmed.recv().await {
                Ok(batch) => at.extend(batch.iter().map(|c| (c.event_id, c.at))),
                Err(e) => anyhow::bail!("confirm stream: {e}"),
            }
        }
        Ok(at)
    });
    // Four producers, each committing one event per tick, together RATE per second.
    let mut producers = Vec::new();
    for p in 0..4usize {
        let pool = pool.clone();
        producers.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(4_000_000 / RATE));
            let mut commits = Vec::with_capacity(total / 4);
            for n in 0..total / 4 {
                tick.tick().await;
                let e = event(p * 1_000_000 + n, 0);
                let mut tx = pool.begin().await?;
                outbox::enqueue(&mut tx, std::slice::from_ref(&e)).await?;
                tx.commit().await?;
                commits.push((e.id, Instant::now()));
            }
            Ok::<_, anyhow::Error>(commits)
        }));
    }
    let mut commits = Vec::with_capacity(total);
    for p in producers {
        commits.extend(p.await??);
    }
    let at = tokio::time::timeout(Duration::from_secs(60), collector).await???;
    token.cancel();
    task.await?;
    let mut latencies: Vec<Duration> = commits
        .iter()
        .map(|(id, committed)| at[id].saturating_duration_since(*committed))
        .collect();
    latencies.sort();
    Ok(latencies)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let server = common::server_url();
    let amqp = common::amqp_url();
    let scratch = ScratchDatabase::create(&server, "eventhost_bench").await?;
    let pool = eventhost::database::connect(&scratch.url, 8).await?;
    eventhost::database::migrate(&pool).await?;
    let broker = BrokerConfig {
        url: amqp.clone(),
        exchange: format!("eventhost.bench.{}", &scratch.name[16..]),
        ..BrokerConfig::default()
    };
    let connection = Connection::connect(&amqp, ConnectionProperties::default()).await?;
    let channel = eventhost::broker::publisher_channel(&connection, &broker.exchange).await?;
    // The exchange (and so the queue) is new for this run.
    let bound = std::env::var("EVENTHOST_BENCH_NO_QUEUE").is_err();
    let queue = common::sink_queue(&channel, &broker.exchange, bound).await?;

    // The raw publisher sends exactly what the relay sends: the backlog's rows as
    // PostgreSQL returns them, made into messages by the relay's own code beforehand.
    fill(&pool).await?;
    let mut rows: Vec<outbox::ClaimedRow> = Vec::with_capacity(BACKLOG);
    loop {
        let batch = read_after(&pool, rows.last().map_or(i64::MIN, |r| r.seq)).await?;
        if batch.is_empty() {
            break;
        }
        rows.extend(batch);
    }
    let build = Instant::now();
    let messages = build_all(rows)?;
    println!(
        "message build: {:.2} µs per message (this process, alone)",
        build.elapsed().as_secs_f64() * 1e6 / messages.len() as f64
    );
    println!("message body: {} bytes", messages[0].body.len());

    // The same bodies with only delivery mode, content type and message id: what the raw
    // publisher sent before it sent the relay's own messages, kept to show what the
    // broker spends on the relay's headers and properties.
    let minimal: Vec<outbox::Outgoing> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| outbox::Outgoing {
            traced: None,
            routing_key: m.routing_key.clone(),
            body: m.body.clone(),
            properties: lapin::BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type(outbox::CONTENT_TYPE.into())
                .with_message_id(format!("raw-{i}").into()),
        })
        .collect();
    let (mut raw, mut light, mut floored, mut relayed, mut peered) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let peer = peer::binary();
    match &peer {
        Some(binary) => {
            peer::drain(binary, &scratch.url, &amqp, &broker.exchange, true)?;
        }
        None => println!(
            "peer relay: not built (cargo build --release -p eventhost-peer-relay); left out"
        ),
    }
    let rounds: usize = std::env::var("EVENTHOST_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for round in 0..rounds {
        channel
            .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
            .await?;
        let cpu = Cpu::now();
        let r = raw_publish(&channel, &broker.exchange, &messages).await?;
        let raw_cpu = cpu.per_message(BACKLOG);
        channel
            .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
            .await?;
        let l = raw_publish(&channel, &broker.exchange, &minimal).await?;
        channel
            .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
            .await?;
        sqlx::query("TRUNCATE outbox_events").execute(&pool).await?;
        fill(&pool).await?;
        sqlx::query("VACUUM ANALYZE outbox_events")
            .execute(&pool)
            .await?;
        let cpu = Cpu::now();
        let f = floor_drain(&pool, &channel, &broker.exchange).await?;
        let floor_cpu = cpu.per_message(BACKLOG);
        channel
            .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
            .await?;
        let cpu = Cpu::now();
        let y = relay_drain(&pool, &broker).await?;
        let relay_cpu = cpu.per_message(BACKLOG);
        let p = match &peer {
            Some(binary) => {
                channel
                    .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
                    .await?;
                peer::fill(&pool, &messages).await?;
                let p = peer::drain(binary, &scratch.url, &amqp, &broker.exchange, false)?;
                peered.push(p);
                format!(", peer {p:.0} events/s: relay / peer {:.2}", y / p)
            }
            None => String::new(),
        };
        println!(
            "round {round}: raw lapin {r:.0} msg/s (minimal properties {l:.0}), floor {f:.0} msg/s ({:.1} %), relay {y:.0} events/s: relay / raw {:.1} %{p}",
            100.0 * f / r,
            100.0 * y / r
        );
        println!("  CPU per message: raw {raw_cpu}; floor {floor_cpu}; relay {relay_cpu}");
        raw.push(r);
        floored.push(f);
        light.push(l);
        relayed.push(y);
    }
    let (r, l, y) = (median(&mut raw), median(&mut light), median(&mut relayed));
    let f = median(&mut floored);
    println!(
        "median: raw lapin {r:.0} msg/s, floor {f:.0} msg/s ({:.1} % of raw), relay {y:.0} events/s, relay / raw {:.1} %, relay / floor {:.1} % (raw with minimal properties {l:.0} msg/s: relay / that {:.1} %)",
        100.0 * f / r,
        100.0 * y / r,
        100.0 * y / f,
        100.0 * y / l
    );
    if !peered.is_empty() {
        let p = median(&mut peered);
        println!(
            "median: peer relay (ruststream-sqlx 0.7.1, batches of {}, {} workers, minimal properties) {p:.0} events/s: peer / raw with minimal properties {:.1} %, relay / peer {:.2}",
            peer::BATCH,
            peer::WORKERS,
            100.0 * p / l,
            y / p
        );
    }

    channel
        .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
        .await?;
    sqlx::query("TRUNCATE outbox_events").execute(&pool).await?;
    let latencies = latency(&pool, &broker).await?;
    println!(
        "latency commit → confirm at {RATE} events/s over {LATENCY_SECONDS} s ({} events): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3,
    );

    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    channel
        .exchange_delete(
            broker.exchange.as_str().into(),
            ExchangeDeleteOptions::default(),
        )
        .await?;
    pool.close().await;
    scratch.drop_now().await?;
    Ok(())
}
