//! Cost of one plugin invocation, next to its baselines in the same process:
//!
//! * `raw wasmtime`: new store + instantiate from the same `InstancePre`'s component + one
//!   `handle` call, with no host state at all: what wasmtime alone costs;
//! * `eventhost, no SQL`: `Plugin::handle` on a handler that returns at once: the same,
//!   plus everything eventhost adds (host state, WASI context, limits, deadline, outcome);
//! * `native SQL` vs `eventhost SQL`: one INSERT in its own transaction, from a native Rust
//!   function on a pooled connection vs from the plugin through the `db` import.
//!
//! Each variant runs right after its baseline, pair by pair, so drift on a shared machine
//! hits both alike; each figure is the median over all invocations, and the overhead is
//! also given as the median of the pairs' differences. Run: `bash scripts/bench.sh`.

mod common;

use eventhost::config::{AuthBackend, Limits};
use eventhost::fixtures::ScratchDatabase;
use eventhost::runtime::bindings::{handler, types};
use eventhost::runtime::Runtime;
use eventhost::{Event, Outcome};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker};
use wasmtime::Store;

const ROUNDS: usize = 15;
const PER_ROUND: usize = 400;
const SQL_PER_ROUND: usize = 100;

/// wasmtime 48 has its own error type (its `anyhow` feature is off here).
fn wt<T>(result: wasmtime::Result<T>) -> anyhow::Result<T> {
    result.map_err(|e| anyhow::anyhow!("{e:#}"))
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn probe_event(event_type: &str) -> Event {
    // About 300 bytes of JSON data, like a user.created payload.
    Event::from_json(serde_json::json!({
        "specversion": "1.0", "id": uuid::Uuid::new_v4().to_string(), "source": "bench",
        "type": event_type, "time": "2026-11-23T10:00:00Z", "subject": "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b",
        "aggregatetype": "probe",
        "data": { "userId": "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b", "email": "john.doe@example.com",
                  "firstName": "John", "lastName": "Doe", "role": "doctor", "isActive": true,
                  "phoneNumber": "+263 77 123 4567", "mustChangePassword": false,
                  "createdAt": "2026-11-23T09:59:58Z", "note": "a payload of roughly three hundred bytes" }
    }))
    .expect("bench event")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let server = common::server_url();
    let wasm = common::read_wasm("probe")?;

    let scratch = ScratchDatabase::create(&server, "eventhost_bench").await?;
    let (pool, runtime) =
        Runtime::open(&scratch.url, Limits::default(), AuthBackend::Postgres).await?;
    let plugin = runtime
        .load(
            eventhost::PluginName::parse("probe").map_err(anyhow::Error::msg)?,
            &wasm,
        )
        .await?;

    // Raw wasmtime: same engine and component, imports stubbed (the no-op handler calls none).
    let engine = runtime.engine().clone();
    let component = wt(Component::new(&engine, &wasm))?;
    let mut linker: Linker<()> = Linker::new(&engine);
    wt(linker.define_unknown_imports_as_traps(&component))?;
    let raw_pre = wt(linker.instantiate_pre(&component))?;
    let raw_indices = wt(handler::GuestIndices::new(&raw_pre))?;

    sqlx::raw_sql("CREATE TABLE native_notes (event_id uuid PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())")
        .execute(&pool)
        .await?;

    let noop = probe_event("probe.noop");
    let noop_wit = types::Event::from(&noop);
    let (mut raw, mut host, mut native, mut wasm_sql) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut host_delta, mut sql_ratio): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
    for round in 0..=ROUNDS {
        let warmup = round == 0;
        for _ in 0..PER_ROUND {
            let t = Instant::now();
            let mut store = Store::new(&engine, ());
            store.set_epoch_deadline(u64::MAX / 2);
            let instance = wt(raw_pre.instantiate_async(&mut store).await)?;
            let guest = wt(raw_indices.load(&mut store, &instance))?;
            wt(guest.call_handle(&mut store, &noop_wit).await)?
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            drop(store);
            let raw_took = t.elapsed();
            let t = Instant::now();
            let invocation = plugin.handle(&noop).await;
            let host_took = t.elapsed();
            anyhow::ensure!(
                invocation.outcome == Outcome::Ok,
                "{:?}",
                invocation.outcome
            );
            if !warmup {
                raw.push(raw_took);
                host.push(host_took);
                host_delta.push(host_took.as_secs_f64() - raw_took.as_secs_f64());
            }
        }
        for _ in 0..SQL_PER_ROUND {
            let id = uuid::Uuid::new_v4();
            let t = Instant::now();
            let mut tx = pool.begin().await?;
            sqlx::query("INSERT INTO native_notes (event_id) VALUES ($1)")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            let native_took = t.elapsed();
            let event = probe_event("probe.insert");
            let t = Instant::now();
            let invocation = plugin.handle(&event).await;
            let wasm_took = t.elapsed();
            anyhow::ensure!(
                invocation.outcome == Outcome::Ok,
                "{:?}",
                invocation.outcome
            );
            if !warmup {
                native.push(native_took);
                wasm_sql.push(wasm_took);
                sql_ratio.push(wasm_took.as_secs_f64() / native_took.as_secs_f64());
            }
        }
    }
    let (raw, host, native, wasm_sql) = (
        median(&mut raw),
        median(&mut host),
        median(&mut native),
        median(&mut wasm_sql),
    );
    let notes: i64 = sqlx::query_scalar("SELECT count(*) FROM plugin_probe.notes")
        .fetch_one(&pool)
        .await?;
    anyhow::ensure!(
        notes as usize == ROUNDS * SQL_PER_ROUND + SQL_PER_ROUND,
        "plugin inserts missing: {notes}"
    );

    println!(
        "machine: {} cores; {ROUNDS} rounds (+1 warm-up), medians",
        std::thread::available_parallelism()?
    );
    let median_f = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (host_delta, sql_ratio) = (median_f(&mut host_delta), median_f(&mut sql_ratio));
    println!("| path | median per event | vs baseline | median of pairs |");
    println!("|---|---|---|---|");
    println!(
        "| raw wasmtime: new store + instantiate + call | {:.1} µs | baseline | |",
        micros(raw)
    );
    println!(
        "| eventhost, no SQL: Plugin::handle (no-op handler) | {:.1} µs | +{:.1} µs | +{:.1} µs |",
        micros(host),
        micros(host) - micros(raw),
        host_delta * 1e6
    );
    println!(
        "| native Rust: BEGIN, INSERT, COMMIT | {:.1} µs | baseline | |",
        micros(native)
    );
    println!(
        "| eventhost: handler does the same INSERT via db.execute, commit | {:.1} µs | {:+.1}% | {:+.1}% |",
        micros(wasm_sql),
        (wasm_sql.as_secs_f64() / native.as_secs_f64() - 1.0) * 100.0,
        (sql_ratio - 1.0) * 100.0
    );
    pool.close().await;
    drop(plugin);
    scratch.drop_now().await?;
    Ok(())
}
