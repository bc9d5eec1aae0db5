//! End to end, register → stats and audit rows committed, through the real relay, RabbitMQ
//! and the consumer, with the two reference plugins as WebAssembly components next to
//! native Rust handlers running the same SQL in the same kind of transaction (inbox row
//! first, then the plugin's statements), in alternating rounds of the same run:
//!
//! * throughput: `EVENTHOST_BENCH_EVENTS` registrations (default 3 000) are committed
//!   first (users row + outbox row, as the auth service does); then the consumer and the
//!   relay start and the clock runs until both plugins committed every event;
//! * latency: registrations at a steady 200/s for 15 s while everything runs; for each
//!   user, from the registration transaction's start (`users.created_at`) to the
//!   user-stats transaction's start (`user_stats.created_at`), which commits right after.
//!
//! The native twins write to schemas provisioned from the same components (same tables,
//! same inbox), through a pool of the same size. Run: `bash scripts/bench.sh pipeline`.

mod common;

use eventhost::auth_service::users::{self, Producer};
use eventhost::config::{BrokerConfig, ConsumerConfig, Limits, RelayConfig};
use eventhost::consumer::{self, Consumer, Consuming, Registry, Subscriber, Target};
use eventhost::fixtures::ScratchDatabase;
use eventhost::metrics::Metrics;
use eventhost::outbox::Relay;
use eventhost::runtime::{Invocation, Outcome, PluginName, Runtime, RuntimeSettings};
use eventhost::Event;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const RATE: u64 = 200;
const LATENCY_SECONDS: u64 = 15;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the native handlers run: the reference plugins' statements, verbatim.
#[derive(Clone, Copy)]
enum Native {
    UserStats,
    AuditLog,
}

struct NativeHandler {
    kind: Native,
    pool: PgPool,
}

impl NativeHandler {
    async fn run(&self, event: &Event) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let new = sqlx::query(
            "INSERT INTO _eventhost_inbox (source, event_id, event_type) VALUES ($1, $2, $3) \
             ON CONFLICT (event_id, source) DO NOTHING",
        )
        .bind(&event.source)
        .bind(&event.id.0)
        .bind(&event.event_type)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !new {
            return Ok(false);
        }
        let data = &event.data;
        match self.kind {
            Native::UserStats => {
                let user: uuid::Uuid = data["userId"]
                    .as_str()
                    .unwrap_or_default()
                    .parse()
                    .unwrap_or_default();
                sqlx::query(
                    "INSERT INTO user_stats (user_id, active, role, created_via, user_created_at)
                     VALUES ($1, $2, $3, 'event', $4::timestamptz)
                     ON CONFLICT (user_id) DO NOTHING",
                )
                .bind(user)
                .bind(data["isActive"].as_bool().unwrap_or(true))
                .bind(data["role"].as_str())
                .bind(data["createdAt"].as_str())
                .execute(&mut *tx)
                .await?;
            }
            Native::AuditLog => {
                let headers: serde_json::Map<String, serde_json::Value> = event
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect();
                sqlx::query(
                    "INSERT INTO audit_events (event_id, event_type, source, aggregate_type, aggregate_id,
                                               schema_version, occurred_at, payload, headers)
                     VALUES ($1, $2, $3, $4, $5, $6, $7::timestamptz, $8::jsonb, $9::jsonb)
                     ON CONFLICT (source, event_id) DO NOTHING",
                )
                .bind(&event.id.0)
                .bind(&event.event_type)
                .bind(&event.source)
                .bind(&event.aggregate_type)
                .bind(&event.subject)
                .bind(event.schema_version as i32)
                .bind(event.time.to_rfc3339())
                .bind(data.to_string())
                .bind(serde_json::Value::Object(headers).to_string())
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }
}

impl Target for NativeHandler {
    fn deliver<'a>(
        &'a self,
        event: &'a Event,
    ) -> Pin<Box<dyn Future<Output = Invocation> + Send + 'a>> {
        Box::pin(async move {
            let started = Instant::now();
            let outcome = match self.run(event).await {
                Ok(true) => Outcome::Ok,
                Ok(false) => Outcome::Duplicate,
                Err(e) => Outcome::Retryable(e.to_string()),
            };
            Invocation {
                outcome,
                elapsed: started.elapsed(),
                logs: Vec::new(),
                output: Default::default(),
                memory_bytes: 0,
            }
        })
    }
}

struct Bench {
    pool: PgPool,
    amqp: String,
    wasm: Vec<Subscriber>,
    native: Vec<Subscriber>,
}

fn subscriber(name: &str, subscriptions: &[&str], target: Arc<dyn Target>) -> Subscriber {
    Subscriber {
        name: name.into(),
        subscriptions: subscriptions.iter().map(|s| s.to_string()).collect(),
        target,
        version: None,
    }
}

/// Relay and consumer for one round, on an exchange and queues of the round's own.
struct Pipeline {
    metrics: Metrics,
    stop: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
    /// The events exchange and the plugins' entries.
    exchanges: Vec<String>,
    queues: Vec<String>,
}

impl Bench {
    async fn start(&self, subscribers: &[Subscriber]) -> anyhow::Result<Pipeline> {
        let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        let exchange = format!("bench.pipeline.{tag}");
        let broker = BrokerConfig {
            url: self.amqp.clone(),
            exchange: exchange.clone(),
            ..BrokerConfig::default()
        };
        let config = ConsumerConfig {
            queue_prefix: format!("bench.{tag}"),
            ..ConsumerConfig::default()
        };
        let consuming = Arc::new(Consuming::default());
        let metrics = Metrics::default();
        let settings = consumer::Settings {
            broker: broker.clone(),
            config: config.clone(),
            metrics: metrics.clone(),
            pool: self.pool.clone(),
            consuming: consuming.clone(),
        };
        let (_keep, watch) = tokio::sync::watch::channel(Arc::new(subscribers.to_vec()));
        let consumer = Consumer::new(settings, watch);
        let stop = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        let token = stop.clone();
        tasks.spawn(async move {
            let _keep = _keep;
            consumer.run(token).await
        });
        let names: Vec<String> = subscribers.iter().map(|s| s.name.clone()).collect();
        anyhow::ensure!(
            consuming.wait_for(&names, Duration::from_secs(30)).await,
            "consumers did not start"
        );
        let relay = Relay::new(self.pool.clone(), broker, RelayConfig::default());
        let token = stop.clone();
        tasks.spawn(async move { relay.run(token).await });
        let (mut queues, mut exchanges) = (Vec::new(), vec![exchange]);
        for name in &names {
            let plugin = eventhost::broker::topology::PluginQueues::of(&config, name);
            queues.extend(plugin.partitions);
            queues.extend(plugin.retries.into_iter().map(|(_, queue)| queue));
            queues.push(plugin.dead);
            exchanges.push(plugin.entry);
        }
        Ok(Pipeline {
            metrics,
            stop,
            tasks,
            exchanges,
            queues,
        })
    }

    /// Mean time per delivery in each plugin (instantiate or begin, handle, commit).
    async fn mean_handler_ms(&self, pipeline: &Pipeline) -> anyhow::Result<String> {
        let text = pipeline
            .metrics
            .render(&self.pool, None, eventhost::metrics::Format::Prometheus)
            .await?;
        let value = |prefix: &str| -> Vec<(String, f64)> {
            text.lines()
                .filter_map(|l| l.strip_prefix(prefix))
                .filter_map(|l| {
                    let (labels, v) = l.split_once(' ')?;
                    Some((labels.to_string(), v.parse().ok()?))
                })
                .collect()
        };
        let sums = value("eventhost_plugin_handler_duration_seconds_sum");
        let counts = value("eventhost_plugin_handler_duration_seconds_count");
        Ok(sums
            .iter()
            .zip(counts)
            .map(|((labels, sum), (_, count))| format!("{labels} {:.2} ms", 1000.0 * sum / count))
            .collect::<Vec<_>>()
            .join(", "))
    }

    async fn stop(&self, mut pipeline: Pipeline) -> anyhow::Result<()> {
        pipeline.stop.cancel();
        while pipeline.tasks.join_next().await.is_some() {}
        let conn =
            lapin::Connection::connect(&self.amqp, lapin::ConnectionProperties::default()).await?;
        let channel = conn.create_channel().await?;
        for queue in &pipeline.queues {
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await?;
        }
        for exchange in &pipeline.exchanges {
            channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await?;
        }
        conn.close(200, "done".into()).await?;
        Ok(())
    }

    async fn register(&self, label: &str, n: usize) -> anyhow::Result<()> {
        let producer = Producer {
            source: "bench",
            traceparent: None,
        };
        for i in 0..n {
            users::register(
                &self.pool,
                &producer,
                &format!("{label}-{i}@example.com"),
                "Bench",
                "user",
            )
            .await?;
        }
        Ok(())
    }

    async fn count(&self, sql: &str) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(sql).fetch_one(&self.pool).await?)
    }

    /// Waits until both of the kind's tables hold `expected` rows.
    async fn wait_rows(&self, schemas: (&str, &str), expected: i64) -> anyhow::Result<()> {
        let stats = format!("SELECT count(*) FROM {}.user_stats", schemas.0);
        let audit = format!("SELECT count(*) FROM {}.audit_events", schemas.1);
        let deadline = Instant::now() + Duration::from_secs(600);
        while self.count(&stats).await? < expected || self.count(&audit).await? < expected {
            anyhow::ensure!(Instant::now() < deadline, "pipeline stalled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let server = common::server_url();
    let amqp = common::amqp_url();
    let rounds = env_or("EVENTHOST_BENCH_ROUNDS", 3);
    let only = std::env::var("EVENTHOST_BENCH_ONLY").ok();
    let events = env_or("EVENTHOST_BENCH_EVENTS", 3000);
    let scratch = ScratchDatabase::create(&server, "eventhost_bench").await?;
    let pool = eventhost::database::connect(&scratch.url, 16).await?;
    eventhost::database::migrate(&pool).await?;
    let limits = Limits::default();
    let runtime = Runtime::new(RuntimeSettings {
        limits: limits.clone(),
        auth: Default::default(),
        admin_pool: pool.clone(),
        compile_cache: eventhost::runtime::compiled::CompileCache::new(None),
    })?;
    let registry = Registry::default();
    let mut native = Vec::new();
    for (stem, name, kind) in [
        ("user_stats", "user-stats", Native::UserStats),
        ("audit_log", "audit-log", Native::AuditLog),
    ] {
        let path = common::wasm(stem);
        let bytes = std::fs::read(&path)?;
        registry.install(runtime.load_file(&path).await?, &path);
        // The native twin's schema: provisioned from the same component, so same tables.
        let twin = runtime
            .load(
                PluginName::parse(&format!("native-{name}")).map_err(anyhow::Error::msg)?,
                &bytes,
            )
            .await?;
        let options: PgConnectOptions = scratch.url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(limits.db_connections)
            .test_before_acquire(false) // as the plugin pools
            .connect_with(options.options([("search_path", twin.schema())]))
            .await?;
        native.push(subscriber(
            &format!("native-{name}"),
            &[if name == "user-stats" { "user.#" } else { "#" }],
            Arc::new(NativeHandler { kind, pool }),
        ));
    }
    let slot = |name: &str| registry.get(name).expect("loaded") as Arc<dyn Target>;
    let bench = Bench {
        pool: pool.clone(),
        amqp,
        wasm: vec![
            subscriber("user-stats", &["user.#", "bid.placed"], slot("user-stats")),
            subscriber("audit-log", &["#"], slot("audit-log")),
        ],
        native,
    };
    let schemas = |wasm: bool| {
        if wasm {
            ("plugin_user_stats", "plugin_audit_log")
        } else {
            ("plugin_native_user_stats", "plugin_native_audit_log")
        }
    };

    println!("pipeline: {events} registrations per round, {rounds} rounds each, alternating (2 cores, shared)");
    let (mut wasm_rates, mut native_rates) = (Vec::new(), Vec::new());
    let (mut wasm_done, mut native_done) = (0i64, 0i64);
    for round in 0..rounds * 2 {
        let is_wasm = round % 2 == 0;
        // EVENTHOST_BENCH_ONLY=wasm|native runs one kind, for profiling it alone.
        if only
            .as_deref()
            .is_some_and(|k| k != if is_wasm { "wasm" } else { "native" })
        {
            continue;
        }
        bench.register(&format!("r{round}"), events).await?;
        let subscribers = if is_wasm { &bench.wasm } else { &bench.native };
        let pipeline = bench.start(subscribers).await?;
        let started = Instant::now();
        let (host_cpu, pg_cpu) = (
            common::cpu_seconds(None),
            common::cpu_seconds(Some("postgres")),
        );
        let done = if is_wasm {
            &mut wasm_done
        } else {
            &mut native_done
        };
        *done += events as i64;
        bench.wait_rows(schemas(is_wasm), *done).await?;
        let rate = events as f64 / started.elapsed().as_secs_f64();
        let per_event = |cpu: f64| 1e6 * cpu / events as f64;
        let (host_cpu, pg_cpu) = (
            per_event(common::cpu_seconds(None) - host_cpu),
            per_event(common::cpu_seconds(Some("postgres")) - pg_cpu),
        );
        let per_delivery = bench.mean_handler_ms(&pipeline).await?;
        bench.stop(pipeline).await?;
        println!(
            "  round {round}: {:<6} {rate:>7.0} events/s  cpu per event: host {host_cpu:.0} µs, postgres {pg_cpu:.0} µs  (mean per delivery: {per_delivery})",
            if is_wasm { "wasm" } else { "native" }
        );
        if is_wasm {
            wasm_rates.push(rate)
        } else {
            native_rates.push(rate)
        }
    }
    let (w, n) = (median(&mut wasm_rates), median(&mut native_rates));
    println!(
        "throughput (median): wasm {w:.0} events/s, native {n:.0} events/s, wasm/native = {:.1} %",
        100.0 * w / n
    );

    for is_wasm in [true, false] {
        let label = if is_wasm { "lat-wasm" } else { "lat-native" };
        let subscribers = if is_wasm { &bench.wasm } else { &bench.native };
        let pipeline = bench.start(subscribers).await?;
        let producer = Producer {
            source: "bench",
            traceparent: None,
        };
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
        let total = RATE * LATENCY_SECONDS;
        for i in 0..total {
            tick.tick().await;
            users::register(
                &pool,
                &producer,
                &format!("{label}-{i}@example.com"),
                "Bench",
                "user",
            )
            .await?;
        }
        let done = if is_wasm {
            &mut wasm_done
        } else {
            &mut native_done
        };
        *done += total as i64;
        bench.wait_rows(schemas(is_wasm), *done).await?;
        bench.stop(pipeline).await?;
        let (p50, p99, max): (f64, f64, f64) = sqlx::query_as(&format!(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms)::float8
             FROM (SELECT extract(epoch FROM s.created_at - u.created_at) * 1000 ::float8 AS ms
                   FROM users u JOIN {}.user_stats s ON s.user_id = u.id WHERE u.email LIKE '{label}-%') t",
            schemas(is_wasm).0
        ))
        .fetch_one(&pool)
        .await?;
        println!("latency at {RATE} registrations/s, {}: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms", if is_wasm { "wasm" } else { "native" });
    }
    pool.close().await;
    scratch.drop_now().await?;
    Ok(())
}
