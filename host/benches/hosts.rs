//! Several `eventhost serve` processes on one PostgreSQL and one RabbitMQ (issue 13),
//! through the real binary and the two reference plugins:
//!
//! * throughput with 1, 2 and 3 hosts: the hosts start and share the plugins' 6
//!   partitions; then `EVENTHOST_BENCH_EVENTS` `user.created` events (default 3 000) are
//!   written to the outbox and the clock runs until both plugins committed every one.
//!   Rounds take turns (1, 2, 3 hosts, then again), each in a fresh database;
//! * failover: two hosts, one partition per plugin, events written at a steady 100/s;
//!   the active host is killed with SIGKILL and the clock runs from the kill to the next
//!   effect committed in the plugins' tables (by the standby, now active). The killed
//!   host comes back as the standby and the next kill hits the other one.
//!
//! Run: `bash scripts/bench.sh hosts`.

#[path = "../tests/common/mod.rs"]
#[allow(unused)]
mod world;

use eventhost::outbox::{self, NewEvent};
use serde_json::json;
use std::time::{Duration, Instant};
use uuid::Uuid;
use world::serve::{Extra, ServeWorld};

const PLUGINS: [&str; 2] = ["user_stats", "audit_log"];
const PARTITIONS: usize = 6;
const WAIT: Duration = Duration::from_secs(300);
/// Effects in both plugins' tables: a stats row and an audit entry per event.
const EFFECTS: &str = "SELECT (SELECT count(*) FROM plugin_audit_log.audit_events)
                            + (SELECT count(*) FROM plugin_user_stats._eventhost_inbox)";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn created(user: Uuid) -> NewEvent {
    let data = json!({ "userId": user, "email": format!("{user}@example.com"), "role": "bidder", "active": true });
    NewEvent::new(
        "bench-hosts",
        "user",
        user.to_string(),
        "user.created",
        data,
    )
}

async fn write(host: &ServeWorld, events: &[NewEvent]) {
    let mut tx = host.pool.begin().await.expect("begin");
    outbox::enqueue(&mut tx, events).await.expect("enqueue");
    tx.commit().await.expect("commit");
}

async fn effects(host: &ServeWorld) -> i64 {
    host.count(EFFECTS).await
}

async fn handled(host: &ServeWorld) -> f64 {
    let mut sum = 0.0;
    for plugin in ["user-stats", "audit-log"] {
        sum += host
            .metric("eventhost_plugin_handled_total", plugin)
            .await
            .max(0.0);
    }
    sum
}

/// Starts `n` hosts and, under a steady trickle of events (a host only counts the
/// partitions it is seen active on), waits until the first (which took every partition)
/// handed over enough of them for the others' fair shares; then lets the trickle drain.
async fn hosts(n: usize, partitions: usize) -> Vec<ServeWorld> {
    let consumer = format!("partitions = {partitions}");
    let extra = Extra {
        consumer: &consumer,
        ..Extra::default()
    };
    let first = ServeWorld::start_with(&PLUGINS, extra).await;
    let mut all = vec![first];
    for _ in 1..n {
        let mut peer = all[0].peer();
        peer.spawn().await;
        all.push(peer);
    }
    let owed = (partitions - partitions.div_ceil(n)) * PLUGINS.len();
    let stop = tokio_util::sync::CancellationToken::new();
    let trickle = steady(&all[0], stop.clone());
    let start = Instant::now();
    while all[0].log().matches("partition handed over").count() < owed {
        if start.elapsed() > Duration::from_secs(90) {
            eprintln!("  (partitions not fully shared after 90 s)");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    let written = trickle.await.expect("trickle");
    while effects(&all[0]).await < 2 * written as i64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    all
}

async fn finish(hosts: Vec<ServeWorld>) {
    let mut hosts = hosts;
    let first = hosts.remove(0);
    for peer in hosts {
        peer.finish().await;
    }
    first.finish().await;
}

struct Round {
    hosts: usize,
    per_second: f64,
    shares: Vec<f64>,
}

async fn throughput(n: usize, events: usize) -> Round {
    let all = hosts(n, PARTITIONS).await;
    let batch: Vec<NewEvent> = (0..events).map(|_| created(Uuid::new_v4())).collect();
    let mut before = Vec::new();
    for host in &all {
        before.push(handled(host).await);
    }
    let already = effects(&all[0]).await;
    let start = Instant::now();
    for chunk in batch.chunks(500) {
        write(&all[0], chunk).await;
    }
    let expected = 2 * events as i64;
    while effects(&all[0]).await < already + expected {
        assert!(start.elapsed() < WAIT, "not every event handled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = start.elapsed();
    let mut shares = Vec::new();
    for (host, before) in all.iter().zip(before) {
        shares.push((handled(host).await - before) / expected as f64);
    }
    finish(all).await;
    Round {
        hosts: n,
        per_second: events as f64 / elapsed.as_secs_f64(),
        shares,
    }
}

/// Writes an event every 10 ms until cancelled; returns how many.
fn steady(
    host: &ServeWorld,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<usize> {
    let pool = host.pool.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut written = 0;
        while !stop.is_cancelled() {
            written += 1;
            tick.tick().await;
            let mut tx = pool.begin().await.expect("begin");
            outbox::enqueue(&mut tx, &[created(Uuid::new_v4())])
                .await
                .expect("enqueue");
            tx.commit().await.expect("commit");
        }
        written
    })
}

/// Kill → next effect, `kills` times; the killed host returns as the standby.
async fn failover(kills: usize) -> Vec<Duration> {
    let mut all = hosts(2, 1).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = steady(&all[0], stop.clone());
    let mut active = 0;
    let mut times = Vec::new();
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let other = 1 - active;
        let before = handled(&all[active]).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            handled(&all[active]).await > before,
            "host {active} is not the active one"
        );
        all[active].kill9();
        let killed = Instant::now();
        let seen = effects(&all[other]).await;
        while effects(&all[other]).await <= seen {
            assert!(
                killed.elapsed() < Duration::from_secs(60),
                "no effect after the kill"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        times.push(killed.elapsed());
        all[active].spawn().await;
        active = other;
    }
    stop.cancel();
    let _ = writer.await;
    finish(all).await;
    times
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let events = env_or("EVENTHOST_BENCH_EVENTS", 3000);
    let rounds = env_or("EVENTHOST_BENCH_ROUNDS", 3);
    println!("throughput: {events} user.created events, both plugins, {PARTITIONS} partitions");
    let mut results: Vec<Round> = Vec::new();
    for round in 1..=rounds {
        for n in 1..=3 {
            let r = throughput(n, events).await;
            let shares: Vec<String> = r
                .shares
                .iter()
                .map(|s| format!("{:.0}%", s * 100.0))
                .collect();
            println!(
                "  round {round}, {n} host(s): {:.0} events/s (handled per host: {})",
                r.per_second,
                shares.join(" / ")
            );
            results.push(r);
        }
    }
    let base = median(
        results
            .iter()
            .filter(|r| r.hosts == 1)
            .map(|r| r.per_second)
            .collect(),
    );
    for n in 1..=3 {
        let m = median(
            results
                .iter()
                .filter(|r| r.hosts == n)
                .map(|r| r.per_second)
                .collect(),
        );
        println!(
            "  median, {n} host(s): {m:.0} events/s ({:.2} x one host)",
            m / base
        );
    }
    let kills = env_or("EVENTHOST_BENCH_KILLS", 5);
    println!("failover: 2 hosts, 1 partition per plugin, 100 events/s, {kills} SIGKILLs");
    let times = failover(kills).await;
    for (i, t) in times.iter().enumerate() {
        println!(
            "  kill {}: next effect after {:.1} ms",
            i + 1,
            t.as_secs_f64() * 1e3
        );
    }
    let ms: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1e3).collect();
    let max = ms.iter().cloned().fold(0.0, f64::max);
    println!("  median {:.1} ms, max {max:.1} ms", median(ms));
}
