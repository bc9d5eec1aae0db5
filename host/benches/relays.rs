//! Relay throughput with 1, 2 and 4 `eventhost relay` processes on one outbox (issue 16's
//! scale curve). The relays start first, idle; then one transaction commits a backlog of
//! `EVENTHOST_BENCH_EVENTS` pending rows (default 100,000; 10,000 aggregates), the
//! relays wake on its NOTIFY, and the clock runs from that commit until no row is pending.
//! One durable queue is bound to the exchange, so the broker writes every message. Rounds
//! take turns (1, 2, 4 processes, then again, 3 times); medians. On 2 cores the curve is
//! expected flat: what matters is that more relays lose no throughput.
//! Run: `bash scripts/bench.sh relays`.

mod common;

use eventhost::fixtures::ScratchDatabase;
use lapin::options::QueuePurgeOptions;
use lapin::{Connection, ConnectionProperties};
use sqlx::PgPool;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROUNDS: usize = 3;
const COUNTS: [usize; 3] = [1, 2, 4];

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

async fn pending(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM outbox_events WHERE status = 'pending'")
            .fetch_one(pool)
            .await?,
    )
}

/// Starts `count` relay processes and waits until each has connected (their LISTEN
/// connections show up in `pg_stat_activity`).
async fn start(
    config: &std::path::Path,
    count: usize,
    pool: &PgPool,
) -> anyhow::Result<Vec<Child>> {
    let relays: Vec<Child> = (0..count)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_eventhost"))
                .args(["relay", "--config"])
                .arg(config)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    loop {
        let listening: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
        )
        .fetch_one(pool)
        .await?;
        if listening as usize >= count {
            // Give their publishing connections a moment to open too.
            tokio::time::sleep(Duration::from_millis(500)).await;
            return Ok(relays);
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "relays did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn stop(relays: Vec<Child>) {
    for mut relay in relays {
        unsafe { libc::kill(relay.id() as i32, libc::SIGTERM) };
        let _ = relay.wait();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let events: i64 = std::env::var("EVENTHOST_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let scratch = ScratchDatabase::create(&common::server_url(), "eventhost_bench").await?;
    let pool = eventhost::database::connect(&scratch.url, 4).await?;
    eventhost::database::migrate(&pool).await?;
    let exchange = format!("eventhost.bench.relays.{}", &scratch.name[16..]);
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = \"{}\"\n[broker]\nurl = \"{}\"\nexchange = \"{exchange}\"\n",
            scratch.url,
            common::amqp_url()
        ),
    )?;
    let amqp = Connection::connect(&common::amqp_url(), ConnectionProperties::default()).await?;
    let channel = eventhost::broker::publisher_channel(&amqp, &exchange).await?;
    let queue = common::sink_queue(&channel, &exchange, true).await?;

    println!("relays: {events} events per round, {ROUNDS} rounds, alternating (2 cores, shared)");
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); COUNTS.len()];
    for round in 0..ROUNDS {
        for (i, &count) in COUNTS.iter().enumerate() {
            sqlx::raw_sql("TRUNCATE outbox_events")
                .execute(&pool)
                .await?;
            channel
                .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
                .await?;
            let relays = start(&config, count, &pool).await?;
            let t = Instant::now();
            sqlx::query(
                "INSERT INTO outbox_events (event_id, aggregate_type, aggregate_id, event_type,
                     source, payload, occurred_at, headers)
                 SELECT gen_random_uuid(), 'user', 'user-' || (n % 10000), 'user.updated', 'bench',
                        jsonb_build_object('n', n, 'note', repeat('x', 200)), now(),
                        '{\"traceparent\": \"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\"}'
                 FROM generate_series(1, $1) n",
            )
            .bind(events)
            .execute(&pool)
            .await?;
            let committed = t.elapsed();
            loop {
                if pending(&pool).await? == 0 {
                    break;
                }
                anyhow::ensure!(t.elapsed() < Duration::from_secs(600), "relays stalled");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let drained = t.elapsed() - committed;
            stop(relays);
            let rate = events as f64 / drained.as_secs_f64();
            println!("  round {round}: {count} relay(s)  {rate:8.0} events/s");
            rates[i].push(rate);
        }
    }
    println!("| relay processes | events/s (median) | vs 1 relay | per process |");
    println!("|---|---|---|---|");
    let one = median(&mut rates[0].clone());
    for (i, &count) in COUNTS.iter().enumerate() {
        let rate = median(&mut rates[i]);
        println!(
            "| {count} | {rate:.0} | {:.2}× | {:.0} |",
            rate / one,
            rate / count as f64
        );
    }
    let _ = channel
        .queue_delete(queue.as_str().into(), Default::default())
        .await;
    let _ = channel
        .exchange_delete(exchange.as_str().into(), Default::default())
        .await;
    pool.close().await;
    scratch.drop_now().await?;
    Ok(())
}
