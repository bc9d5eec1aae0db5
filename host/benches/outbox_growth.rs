//! Do the outbox's queries stay flat as the table grows? For each size (default 100,000,
//! 1,000,000 and 10,000,000 published rows; `EVENTHOST_BENCH_OUTBOX_SIZES`, comma
//! separated) next to a fixed backlog of 10,000 pending rows, the medians of:
//!
//! * the relay's claim of 500 rows (in a transaction rolled back, so every round claims
//!   the same backlog);
//! * the backlog the metrics read at each scrape (`outbox::backlog`: pending and dead
//!   counts, the oldest pending age);
//! * the purge of the published rows past the retention (half of them), in its
//!   transactions of 5,000 rows: the time per transaction.
//!
//! Run: `bash scripts/bench.sh outbox-growth`.

mod common;

use eventhost::fixtures::ScratchDatabase;
use eventhost::outbox;
use sqlx::PgPool;
use std::time::{Duration, Instant};

const PENDING: i64 = 10_000;
const ROUNDS: usize = 20;
const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

fn median_ms(samples: &mut [Duration]) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

/// `published` rows published over the last 14 days (half past the retention), then the
/// pending backlog, 10 events per aggregate.
async fn fill(pool: &PgPool, published: i64) -> anyhow::Result<()> {
    sqlx::raw_sql("TRUNCATE outbox_events")
        .execute(pool)
        .await?;
    for (status, rows) in [("published", published), ("pending", PENDING)] {
        sqlx::query(
            "INSERT INTO outbox_events (event_id, aggregate_type, aggregate_id, event_type, source,
                 payload, occurred_at, headers, status, published_at)
             SELECT gen_random_uuid(), 'user', 'user-' || (n / 10), 'user.created', 'bench',
                    jsonb_build_object('n', n, 'note', repeat('x', 200)), now(),
                    '{\"traceparent\": \"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\"}',
                    $2, CASE WHEN $2 = 'published'
                             THEN now() - (n * (14 * 86400.0 / $1)) * interval '1 second' END
             FROM generate_series(1, $1) n",
        )
        .bind(rows)
        .bind(status)
        .execute(pool)
        .await?;
    }
    sqlx::raw_sql("VACUUM ANALYZE outbox_events")
        .execute(pool)
        .await?;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let sizes: Vec<i64> = std::env::var("EVENTHOST_BENCH_OUTBOX_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100_000, 1_000_000, 10_000_000]);
    let scratch = ScratchDatabase::create(&common::server_url(), "eventhost_bench").await?;
    let pool = eventhost::database::connect(&scratch.url, 4).await?;
    eventhost::database::migrate(&pool).await?;
    println!("outbox growth: {PENDING} pending rows next to N published ones; medians of {ROUNDS} (2 cores, shared)");
    println!("| published rows | fill | claim 500 | backlog (metrics) | purge, per 5,000 rows |");
    println!("|---|---|---|---|---|");
    for published in sizes {
        let t = Instant::now();
        fill(&pool, published).await?;
        let filled = t.elapsed().as_secs_f64();
        let (mut claims, mut backlogs) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let mut tx = pool.begin().await?;
            let t = Instant::now();
            let claimed = outbox::claim(&mut tx, 500).await?;
            claims.push(t.elapsed());
            anyhow::ensure!(claimed.len() == 500, "claimed {}", claimed.len());
            tx.rollback().await?;

            let t = Instant::now();
            let (pending, _, _) = outbox::backlog(&pool).await?;
            backlogs.push(t.elapsed());
            anyhow::ensure!(pending == PENDING, "pending {pending}");
        }
        let t = Instant::now();
        let purged = outbox::purge(&pool, RETENTION, 5000).await?.unwrap_or(0);
        let per_batch = t.elapsed().as_secs_f64() * 1e3 / (purged as f64 / 5000.0).max(1.0);
        println!(
            "| {published} | {filled:.0} s | {:.2} ms | {:.2} ms | {per_batch:.1} ms ({purged} rows) |",
            median_ms(&mut claims),
            median_ms(&mut backlogs),
        );
    }
    pool.close().await;
    scratch.drop_now().await?;
    Ok(())
}
