//! Does handling slow down as a plugin's inbox grows? Two copies of `audit-log` in one
//! database: `audit-log` with an empty inbox, `audit-log-big` with millions of rows in
//! its inbox (default 5,000,000; `EVENTHOST_BENCH_INBOX_ROWS`), half of them past the
//! retention. Rounds alternate between the two, so drift on the shared machine hits both;
//! each figure is the median per event over all rounds. Then the expired half is pruned
//! (`consumer::inbox::prune`, batches of 5,000) and the rate is printed.
//! Run: `bash scripts/bench.sh inbox`.

mod common;

use eventhost::config::{AuthBackend, Limits};
use eventhost::consumer::inbox;
use eventhost::fixtures::ScratchDatabase;
use eventhost::runtime::{Plugin, Runtime};
use eventhost::{Event, Outcome};
use std::time::{Duration, Instant};

const ROUNDS: usize = 12;
const PER_ROUND: usize = 200;
const RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

fn event(n: usize) -> Event {
    Event::from_json(serde_json::json!({
        "specversion": "1.0", "id": uuid::Uuid::new_v4().to_string(), "source": "bench",
        "type": "user.created", "subject": format!("user-{}", n % 500), "aggregatetype": "user",
        "data": { "userId": "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b", "email": "john.doe@example.com",
                  "name": "John Doe", "role": "user", "isActive": true }
    }))
    .expect("bench event")
}

fn median(samples: &mut [Duration]) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e6
}

async fn deliver(plugin: &Plugin, n: usize) -> anyhow::Result<Duration> {
    let e = event(n);
    let t = Instant::now();
    let outcome = plugin.deliver(&e).await.outcome;
    let took = t.elapsed();
    anyhow::ensure!(outcome == Outcome::Ok, "{outcome:?}");
    Ok(took)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let rows: i64 = std::env::var("EVENTHOST_BENCH_INBOX_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000_000);
    let wasm = common::read_wasm("audit_log")?;
    let scratch = ScratchDatabase::create(&common::server_url(), "eventhost_bench").await?;
    let (pool, runtime) =
        Runtime::open(&scratch.url, Limits::default(), AuthBackend::Postgres).await?;
    let name = |n: &str| eventhost::PluginName::parse(n).map_err(anyhow::Error::msg);
    let small = runtime.load(name("audit-log")?, &wasm).await?;
    let big = runtime.load(name("audit-log-big")?, &wasm).await?;

    let t = Instant::now();
    // Ids and sources as long as real ones; handled over the last 60 days, so half expired.
    sqlx::query(
        "INSERT INTO plugin_audit_log_big._eventhost_inbox (event_id, source, event_type, handled_at)
         SELECT gen_random_uuid()::text, 'eventhost/auth-service', 'user.created',
                now() - (n * (60 * 86400.0 / $1)) * interval '1 second'
         FROM generate_series(1, $1) n",
    )
    .bind(rows)
    .execute(&pool)
    .await?;
    sqlx::raw_sql("VACUUM ANALYZE plugin_audit_log_big._eventhost_inbox")
        .execute(&pool)
        .await?;
    println!(
        "filled audit-log-big's inbox with {rows} rows in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let (mut empty, mut full) = (Vec::new(), Vec::new());
    let mut n = 0;
    for round in 0..=ROUNDS {
        for _ in 0..PER_ROUND {
            n += 1;
            let (a, b) = (deliver(&small, n).await?, deliver(&big, n).await?);
            if round > 0 {
                empty.push(a);
                full.push(b);
            }
        }
    }
    let (empty, full) = (median(&mut empty), median(&mut full));
    println!(
        "handling one event (audit-log, Rust), median of {} each:",
        ROUNDS * PER_ROUND
    );
    println!("  inbox empty:          {empty:8.1} µs");
    println!(
        "  inbox of {rows:>9} rows: {full:8.1} µs   ({:.3}× the empty one)",
        full / empty
    );

    let t = Instant::now();
    let pruned = inbox::prune(&pool, "audit-log-big", RETENTION, 5000).await?;
    let took = t.elapsed().as_secs_f64();
    println!(
        "pruned {pruned} expired rows in {took:.1} s ({:.0} rows/s, batches of 5000)",
        pruned as f64 / took
    );
    drop((small, big));
    pool.close().await;
    scratch.drop_now().await?;
    Ok(())
}
