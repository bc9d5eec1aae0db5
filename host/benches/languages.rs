//! The same plugin, `audit-log`, in Rust, Python (componentize-py) and JavaScript
//! (componentize-js), on one host in one process:
//!
//! * cold load: compiling the component (`Component::new`, what every load cost before the
//!   compile cache), median of `COLD_ROUNDS`;
//! * warm load: the component from the compile cache (digest check + deserialise), median
//!   of `WARM_ROUNDS`; and a whole warm `Runtime::load` (cache, provisioning, the plugin's
//!   subscriptions and migrations, pools), median of `LOAD_ROUNDS`;
//! * per invocation: `Plugin::handle` of one `user.created` event (one INSERT in the
//!   plugin's transaction), median of `EVENTS`, with the ratio to Rust; and the host
//!   process's CPU per invocation over those `EVENTS` (user and system time, so the
//!   instance, the plugin's code and the host's side of the database round trips;
//!   PostgreSQL's own CPU is not in it);
//! * `user-stats`, the other Rust reference plugin, on the same event, for its CPU;
//! * memory per instance: the linear memory one instance holds after handling an event.
//!
//! Run: `bash scripts/bench.sh languages`.

mod common;

use eventhost::database;
use eventhost::fixtures::ScratchDatabase;
use eventhost::runtime::compiled::{CompileCache, Source};
use eventhost::runtime::{Runtime, RuntimeSettings};
use eventhost::{Event, Outcome, PluginName};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const COLD_ROUNDS: usize = 3;
const WARM_ROUNDS: usize = 15;
const LOAD_ROUNDS: usize = 5;
const EVENTS: usize = 300;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn user_created() -> Event {
    let user = uuid::Uuid::new_v4().to_string();
    Event::from_json(serde_json::json!({
        "specversion": "1.0", "id": uuid::Uuid::new_v4().to_string(), "source": "auth-service",
        "type": "user.created", "time": "2026-12-04T10:00:00Z", "subject": user,
        "aggregatetype": "user", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "data": { "userId": user, "email": "ada@example.com", "name": "Ada", "role": "user" }
    }))
    .expect("bench event")
}

struct Row {
    language: &'static str,
    size: usize,
    cold: Duration,
    warm: Duration,
    load: Duration,
    invoke: Duration,
    cpu: Duration,
    memory: usize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cache_dir =
        std::env::temp_dir().join(format!("eventhost-bench-cache-{}", std::process::id()));
    let scratch = ScratchDatabase::create(&common::server_url(), "eventhost_bench").await?;
    let pool = database::connect(&scratch.url, 8).await?;
    database::migrate(&pool).await?;
    let runtime = Runtime::new(RuntimeSettings {
        limits: Default::default(),
        auth: Default::default(),
        admin_pool: pool.clone(),
        compile_cache: CompileCache::new(Some(cache_dir.clone())),
    })?;
    let plugins: [(&str, &str, PathBuf); 4] = [
        ("audit-log, Rust", "audit-log", common::wasm("audit_log")),
        (
            "audit-log, Python",
            "audit-log-py",
            common::guest_wasm("audit_log_py"),
        ),
        (
            "audit-log, JavaScript",
            "audit-log-js",
            common::guest_wasm("audit_log_js"),
        ),
        ("user-stats, Rust", "user-stats", common::wasm("user_stats")),
    ];
    let mut rows = Vec::new();
    for (language, name, path) in plugins {
        let bytes = std::fs::read(&path).map_err(|e| {
            anyhow::anyhow!("{}: {e} (run scripts/build-plugins.sh)", path.display())
        })?;
        let digest = hex::encode(Sha256::digest(&bytes));
        let engine = runtime.engine().clone();

        let mut cold = Vec::new();
        for _ in 0..COLD_ROUNDS {
            let (engine, bytes) = (engine.clone(), bytes.clone());
            let started = Instant::now();
            tokio::task::spawn_blocking(move || {
                wasmtime::component::Component::new(&engine, &bytes)
            })
            .await?
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
            cold.push(started.elapsed());
        }

        let cache = CompileCache::new(Some(cache_dir.clone()));
        cache
            .component(&engine, &bytes, &digest)
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let mut warm = Vec::new();
        for _ in 0..WARM_ROUNDS {
            let started = Instant::now();
            let (_, source) = cache
                .component(&engine, &bytes, &digest)
                .map_err(|e| anyhow::anyhow!("{e:#}"))?;
            warm.push(started.elapsed());
            anyhow::ensure!(source == Source::Cached, "{language}: the cache missed");
        }

        let name = PluginName::parse(name).map_err(anyhow::Error::msg)?;
        let mut load = Vec::new();
        let mut plugin = None;
        for _ in 0..LOAD_ROUNDS {
            drop(plugin.take());
            let started = Instant::now();
            plugin = Some(runtime.load(name.clone(), &bytes).await?);
            load.push(started.elapsed());
        }
        let plugin = plugin.expect("loaded");

        let mut invoke = Vec::new();
        let mut memory = 0;
        let cpu_before = common::cpu_seconds(None);
        for _ in 0..EVENTS {
            let invocation = plugin.handle(&user_created()).await;
            anyhow::ensure!(
                invocation.outcome == Outcome::Ok,
                "{language}: {}",
                invocation.outcome
            );
            invoke.push(invocation.elapsed);
            memory = invocation.memory_bytes;
        }
        let cpu = Duration::from_secs_f64((common::cpu_seconds(None) - cpu_before) / EVENTS as f64);
        rows.push(Row {
            language,
            size: bytes.len(),
            cold: median(cold),
            warm: median(warm),
            load: median(load),
            invoke: median(invoke),
            cpu,
            memory,
        });
    }

    println!(
        "machine: {} cores (shared); medians: cold {COLD_ROUNDS}, warm {WARM_ROUNDS}, whole load {LOAD_ROUNDS}, invocations {EVENTS}",
        std::thread::available_parallelism()?
    );
    println!("| plugin | .wasm | cold load (compile) | warm load (cache) | whole warm load | per invocation | vs Rust | host CPU per invocation | memory per instance |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let rust = rows[0].invoke;
    for r in &rows {
        println!(
            "| {} | {:.1} MB | {:.0} ms | {:.1} ms | {:.1} ms | {:.3} ms | {:.2}× | {:.0} µs | {:.1} MiB |",
            r.language,
            r.size as f64 / 1e6,
            ms(r.cold),
            ms(r.warm),
            ms(r.load),
            ms(r.invoke),
            r.invoke.as_secs_f64() / rust.as_secs_f64(),
            r.cpu.as_secs_f64() * 1e6,
            r.memory as f64 / (1 << 20) as f64
        );
    }
    pool.close().await;
    scratch.drop_now().await?;
    let _ = std::fs::remove_dir_all(&cache_dir);
    Ok(())
}
