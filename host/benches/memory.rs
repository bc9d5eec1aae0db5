//! Host memory while a plugin asks for far more than it may have.
//!
//! The probe asks `db.query` for 1 GiB of rows (1,048,576 rows of 1 KiB) and, as a
//! baseline in the same process, for a result just inside the caps (`db_max_result_bytes`,
//! 8 MiB by default). The host's resident set is sampled every millisecond from
//! `/proc/self/statm` during each ask; the figures are the highest RSS seen over
//! `ROUNDS` asks against the idle RSS before the first, and the median time of an ask.
//! Run: `bash scripts/bench.sh memory`.

mod common;

use eventhost::config::{AuthBackend, Limits};
use eventhost::fixtures::ScratchDatabase;
use eventhost::runtime::Runtime;
use eventhost::{Event, Outcome};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROUNDS: usize = 5;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Runs `work` while a thread records the highest RSS seen; returns (peak, elapsed).
async fn peak_during<F: std::future::Future<Output = Outcome>>(
    work: F,
) -> (u64, Duration, Outcome) {
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(rss_bytes()));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_bytes(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let started = Instant::now();
    let outcome = work.await;
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    (peak.load(Ordering::Relaxed), elapsed, outcome)
}

fn ask(rows: u64, row_bytes: u64) -> Event {
    Event::from_json(serde_json::json!({
        "specversion": "1.0", "id": uuid::Uuid::new_v4().to_string(), "source": "bench",
        "type": "probe.huge-result", "time": "2026-12-02T10:00:00Z", "subject": "x",
        "aggregatetype": "probe", "data": { "rows": rows, "row_bytes": row_bytes },
    }))
    .expect("bench event")
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let server = common::server_url();
    let wasm = common::read_wasm("probe")?;
    let scratch = ScratchDatabase::create(&server, "eventhost_bench").await?;
    let limits = Limits::default();
    let (cap_bytes, cap_rows) = (limits.db_max_result_bytes as u64, limits.db_max_rows as u64);
    let (pool, runtime) = Runtime::open(&scratch.url, limits, AuthBackend::Postgres).await?;
    let probe = runtime
        .load(
            eventhost::PluginName::parse("probe").map_err(anyhow::Error::msg)?,
            &wasm,
        )
        .await?;

    // Inside the caps: rows of 1 KiB up to 90 % of the byte cap (and under the row cap).
    let row = 1024u64;
    let inside = (cap_bytes * 9 / 10 / (row + 8)).min(cap_rows);
    // The 1 GiB ask goes first, so the idle figure is not inflated by memory the allocator
    // kept from the other case.
    let cases = [
        ("1 GiB of rows", 1 << 20, row),
        ("inside the caps", inside, row),
    ];
    let _ = probe.handle(&ask(10, row)).await; // warm-up
    println!(
        "machine: {} cores; {ROUNDS} rounds each; db_max_result_bytes {} MiB, db_max_rows {cap_rows}; medians",
        std::thread::available_parallelism()?,
        mib(cap_bytes)
    );
    println!("| plugin asks for | idle RSS | peak RSS during | peak above idle | time | outcome |");
    println!("|---|---|---|---|---|---|");
    for (label, rows, bytes) in cases {
        let (mut idle, mut peak, mut time) = (Vec::new(), Vec::new(), Vec::new());
        let mut last = None;
        for _ in 0..ROUNDS {
            tokio::time::sleep(Duration::from_millis(200)).await;
            idle.push(rss_bytes());
            let (p, t, outcome) =
                peak_during(async { probe.handle(&ask(rows, bytes)).await.outcome }).await;
            peak.push(p);
            time.push(t);
            last = Some(outcome);
        }
        let (idle, peak) = (idle[0], peak.into_iter().max().expect("rounds ran"));
        let outcome = last.expect("rounds ran");
        let shown = match &outcome {
            Outcome::Ok => "ok".to_string(),
            other => other
                .reason()
                .unwrap_or_default()
                .chars()
                .take(70)
                .collect(),
        };
        println!(
            "| {label} ({rows} × {bytes} B) | {:.1} MiB | {:.1} MiB | **{:.1} MiB** | {:.0} ms | {shown} |",
            mib(idle),
            mib(peak),
            mib(peak.saturating_sub(idle)),
            median(time).as_secs_f64() * 1e3
        );
    }
    pool.close().await;
    drop(probe);
    scratch.drop_now().await?;
    Ok(())
}
