//! The edge through the real `eventhost serve`: a stuck plugin load holds nothing up and
//! leaves no backend behind, a panicking relay is restarted, a message that kills the
//! host ends as a dead letter, and the HTTP limits answer in the API's JSON shape.
//! Faults are injected with `FAILPOINTS` (the tests build with the `failpoints` feature).

mod common;

use common::serve::{cloud_event, Extra, ServeWorld};
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

/// A sample of `/metrics` without a plugin label (`name{labels} value`).
async fn metric_line(world: &ServeWorld, series: &str) -> Option<f64> {
    let (_, body) = world.get("/metrics").await;
    let text = body.as_str().unwrap_or_default().to_string();
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// A user registered through the auth service gets its stats row: outbox, relay,
/// consumer and plugin all work.
async fn registration_reaches_user_stats(world: &ServeWorld, email: &str) {
    let id = world.register(email).await.expect("registered");
    let sql = format!("SELECT count(*) FROM plugin_user_stats.user_stats WHERE user_id = '{id}'");
    world.wait_count(&sql, 1, WAIT).await;
}

const SLEEPERS: &str = "SELECT count(*) FROM pg_stat_activity \
     WHERE datname = current_database() AND query LIKE '%pg_sleep(3600)%' AND pid <> pg_backend_pid()";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_plugin_load_holds_up_nothing_and_leaves_no_backend_behind() {
    let mut world = ServeWorld::start_with(
        &["user_stats"],
        Extra {
            consumer: "load_timeout = \"3s\"\nshutdown_timeout = \"5s\"",
            renamed: &[("probe", "stuck_migration")],
            unready: true,
            ..Extra::default()
        },
    )
    .await;
    // The stuck migration is running...
    world.wait_count_at_least(SLEEPERS, 1, WAIT).await;
    world.wait_listening().await;
    // ...and meanwhile the API answers and the other plugin loads and handles events.
    let (status, _) = world.get("/healthz").await;
    assert_eq!(status, 200);
    registration_reaches_user_stats(&world, "edge@example.com").await;
    // At the deadline its backend is terminated, and the load is tried again (backoff).
    world
        .wait_metric(
            "eventhost_plugin_reload_failures_total",
            "stuck-migration",
            2.0,
            WAIT,
        )
        .await;
    assert!(
        world.log().contains("consumer.load_timeout"),
        "{}",
        world.log()
    );
    // SIGTERM while a retry is stuck again: the host exits 0 and leaves no backend.
    world.wait_count_at_least(SLEEPERS, 1, WAIT).await;
    let started = Instant::now();
    let status = world.terminate();
    assert!(status.success(), "{status}\n{}", world.log());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "exit took {:?}",
        started.elapsed()
    );
    world.wait_count(SLEEPERS, 0, Duration::from_secs(5)).await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_relay_is_restarted_counted_and_red_while_down() {
    let mut world = ServeWorld::start_with(
        &["user_stats"],
        Extra {
            env: &[("FAILPOINTS", "relay-batch=3*panic(injected relay fault)")],
            unready: true,
            ..Extra::default()
        },
    )
    .await;
    // Backoff 0.5 s, 1 s, 2 s: red for a few seconds, naming the relay.
    world.wait_listening().await;
    let start = Instant::now();
    loop {
        let (_, ready) = world.get("/readyz").await;
        if ready["tasks_down"] == json!(["relay"]) {
            assert_eq!(ready["ready"], false, "{ready}");
            break;
        }
        assert!(start.elapsed() < WAIT, "relay never reported down: {ready}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let series = r#"eventhost_task_restarts_total{task="relay"}"#;
    while metric_line(&world, series).await < Some(3.0) {
        assert!(start.elapsed() < WAIT, "{}", world.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    world.wait_ready().await;
    assert!(world.log().contains("injected relay fault"));
    // Restarted, it publishes (and the fault, spent, is not hit again).
    registration_reaches_user_stats(&world, "relay@example.com").await;
    assert_eq!(metric_line(&world, series).await, Some(3.0));
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_kills_the_host_becomes_a_dead_letter_after_max_crashes() {
    let mut world = ServeWorld::start_with(
        &["probe"],
        Extra {
            consumer: "max_crashes = 2",
            env: &[("FAILPOINTS", "consumer-dispatch=return")],
            ..Extra::default()
        },
    )
    .await;
    let id = Uuid::new_v4();
    let body = cloud_event(id, "probe.insert", "crash-1", json!({}));
    world
        .publish("probe.insert", &body, Some(&id.to_string()))
        .await;
    // It aborts on the delivery, and again on the redelivery.
    for round in 1..=2 {
        let status = world.exited(WAIT).await;
        assert!(!status.success(), "round {round}: {status}");
        world.launch();
    }
    // The third time it does not hand the message over: it is a dead letter.
    world.wait_ready().await;
    let start = Instant::now();
    loop {
        let (code, out) = world.cli(&["dlq", "list", "probe", "--json"]);
        if code == 0 && out.contains(&id.to_string()) {
            assert!(
                out.contains("host stopped while handling it 2 times"),
                "{out}"
            );
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "no dead letter: {out}\n{}",
            world.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        world.count("SELECT count(*) FROM eventhost_inflight").await,
        0
    );
    assert_eq!(
        world.count("SELECT count(*) FROM plugin_probe.notes").await,
        0,
        "the plugin never handled it"
    );
    world.finish().await;
}

/// Sends `request` on a fresh connection and reads until the server closes it.
async fn raw(addr: &str, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_limits_answer_in_json_and_slow_or_idle_clients_are_cut_off() {
    let mut world = ServeWorld::start_with(
        &["probe"],
        Extra {
            http: "max_body_bytes = 1024\nheader_read_timeout = \"1s\"\nrequest_timeout = \"1s\"\nmax_connections = 4",
            ..Extra::default()
        },
    )
    .await;
    let addr = world.api.trim_start_matches("http://").to_string();
    // A declared body over the cap, and a chunked one.
    let big = "x".repeat(2048);
    let declared = format!(
        "POST /admin/plugins/reload HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{big}",
        big.len()
    );
    let answer = raw(&addr, declared.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("http.max_body_bytes"), "{answer}");
    let chunked = format!(
        "POST /admin/plugins/reload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n800\r\n{big}\r\n0\r\n\r\n"
    );
    let answer = raw(&addr, chunked.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#"{"error":"#), "{answer}");

    // A read slower than the request deadline: 503, and the read's work is rolled back.
    let (status, body) = world.get("/plugins/probe/sleep/3000").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("http.request_timeout"),
        "{body}"
    );

    // Headers that never finish: the connection is closed.
    let answer = raw(&addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer:?}"
    );

    // Four idle connections fill the cap: a fifth client waits until they are cut off.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let fifth = tokio::spawn({
        let addr = addr.clone();
        async move {
            raw(
                &addr,
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!fifth.is_finished(), "served past the connection cap");
    let answer = fifth.await.expect("fifth client");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(idle);

    // SIGTERM with a read in flight: it is answered, then the host exits 0.
    let api = world.api.clone();
    let slow = tokio::spawn(async move {
        reqwest::get(format!("{api}/plugins/probe/sleep/700"))
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = world.pid().expect("running").to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert_eq!(slow.await.expect("joined").expect("answered"), 200);
    let status = world.exited(WAIT).await;
    assert!(status.success(), "{status}\n{}", world.log());
    world.finish().await;
}
