//! What a plugin hands the host is bounded, the CPU limit counts only its own code, and
//! each plugin has its own share of instances and connections: the hostile probe tries
//! each, against the real PostgreSQL.

mod common;

use common::probe::{read, read_with};
use common::{event, TestHost};
use eventhost::config::{AuthBackend, Limits};
use eventhost::runtime::{Abort, ReadRequest};
use eventhost::Outcome;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn what_a_plugin_hands_the_host_is_bounded() {
    let limits = Limits {
        db_max_rows: 100,
        db_max_result_bytes: 1 << 20,
        log_messages: 10,
        log_message_bytes: 100,
        reason_bytes: 1000,
        max_subscriptions: 100,
        read_body_bytes: 1000,
        read_headers: 5,
        read_header_bytes: 100,
        ..Limits::default()
    };
    let host = TestHost::start(limits, AuthBackend::Postgres).await;
    let probe = host.load("probe").await;
    let rows = |rows: u64, row_bytes: u64| {
        event(
            "probe.huge-result",
            "x",
            json!({ "rows": rows, "row_bytes": row_bytes }),
        )
    };
    assert_eq!(probe.handle(&rows(100, 10)).await.outcome, Outcome::Ok);
    for (ask, cap) in [
        (rows(1_000_000, 10), "db_max_rows"),
        (rows(100, 100_000), "db_max_result_bytes"),
    ] {
        let outcome = probe.handle(&ask).await.outcome;
        assert!(
            matches!(&outcome, Outcome::Permanent(r) if r.starts_with("54000") && r.contains(cap)),
            "{outcome:?}"
        );
    }
    // The cut-off connection is not reused half-read.
    assert_eq!(probe.handle(&rows(5, 5)).await.outcome, Outcome::Ok);
    // Values chosen to break a decoder, and a statement too long to cache, are errors.
    let long = format!("SELECT '{}'", "x".repeat(100_000));
    for (sql, expect) in [
        (
            "SELECT 'infinity'::timestamptz",
            "timestamp out of the range",
        ),
        (
            "SELECT '-infinity'::timestamp",
            "timestamp out of the range",
        ),
        (long.as_str(), "db_statement_bytes"),
    ] {
        let outcome = probe
            .handle(&event("probe.sql", "x", json!([sql])))
            .await
            .outcome;
        assert!(
            matches!(&outcome, Outcome::Permanent(r) if r.contains(expect)),
            "{}: {outcome:?}",
            &sql[..40.min(sql.len())]
        );
    }

    let flood = probe
        .handle(&event(
            "probe.log-flood",
            "x",
            json!({ "count": 5000, "bytes": 10_000 }),
        ))
        .await;
    assert_eq!(flood.outcome, Outcome::Ok);
    assert_eq!(flood.logs.len(), 10, "log calls per invocation are capped");
    assert!(
        flood.logs.iter().all(|(_, m)| m.len() < 200),
        "log messages are cut"
    );

    let reason = probe
        .handle(&event(
            "probe.huge-reason",
            "x",
            json!({ "bytes": 30_000_000 }),
        ))
        .await
        .outcome
        .reason()
        .unwrap();
    assert!(reason.len() < 1100, "a reason of {} bytes", reason.len());

    // A read's answer over a cap is refused, and the read's write rolled back with it.
    let notes = || async { probe.query_json("SELECT 1 FROM notes").await.unwrap().len() };
    let before = notes().await;
    let fine = read_with(
        &probe,
        "answer",
        &[("status", "200"), ("body", "10"), ("headers", "2")],
    )
    .await;
    assert_eq!(
        fine.map(|a| (a.status, a.body.len(), a.headers.len())),
        Ok((200, 10, 2))
    );
    assert_eq!(notes().await, before + 1);
    for (query, cap) in [
        (
            &[("status", "200"), ("body", "5000")][..],
            "read_body_bytes",
        ),
        (&[("status", "200"), ("headers", "6")][..], "read_headers"),
        (&[("status", "0")][..], "not a final HTTP status"),
        (&[("status", "101")][..], "not a final HTTP status"),
        (&[("status", "999")][..], "not a final HTTP status"),
    ] {
        let refused = read_with(&probe, "answer", query).await;
        assert!(
            matches!(&refused, Err(Outcome::Permanent(r)) if r.contains(cap)),
            "{query:?}: {:?}",
            refused.map(|a| a.status)
        );
        assert_eq!(
            notes().await,
            before + 1,
            "{query:?}: the refused read's write committed"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("many_subs.wasm");
    std::fs::copy(common::plugin_path("probe"), &copy).unwrap();
    let refused = host.runtime.load_file(&copy).await.err().expect("refused");
    assert!(
        refused.to_string().contains("20000 subscriptions")
            && refused.to_string().contains("limits.max_subscriptions"),
        "{refused}"
    );
    host.stop().await;
}

#[tokio::test]
async fn the_cpu_limit_counts_only_the_plugins_own_code() {
    let limits = Limits {
        cpu_time: Duration::from_millis(50),
        ..Limits::default()
    };
    let host = TestHost::start(limits, AuthBackend::Postgres).await;
    let probe = host.load("probe").await;
    for calls in [
        json!({ "calls": 2000, "sleep_ms": 0 }),
        json!({ "calls": 40, "sleep_ms": 5 }),
    ] {
        let invocation = probe
            .handle(&event("probe.host-calls", "x", calls.clone()))
            .await;
        assert_eq!(
            invocation.outcome,
            Outcome::Ok,
            "{calls}: {:?}",
            invocation.elapsed
        );
        assert!(
            invocation.elapsed > Duration::from_millis(50),
            "{calls} was too quick to prove anything"
        );
    }
    let spin = probe
        .handle(&event("probe.loop", "x", json!({})))
        .await
        .outcome;
    assert!(
        matches!(&spin, Outcome::Aborted(Abort::Limit(m)) if m.contains("cpu time limit")),
        "{spin:?}"
    );
    host.stop().await;
}

#[tokio::test]
async fn one_plugins_load_cannot_fail_another_plugins_work() {
    let limits = Limits {
        reads_per_plugin: 4,
        deliveries_per_plugin: 2,
        // Room for exactly the two plugins' shares: a shared pool would run dry at once.
        max_instances: 2 * (4 + 2 + 1),
        wall_time: Duration::from_secs(2),
        ..Limits::default()
    };
    let host = TestHost::start(limits, AuthBackend::Postgres).await;
    let probe = std::sync::Arc::new(host.load("probe").await);
    let stats = host.load("user_stats").await;
    let flood: Vec<_> = (0..60)
        .map(|_| {
            let probe = probe.clone();
            tokio::spawn(async move {
                let request = ReadRequest {
                    method: "GET".into(),
                    path: "sleep/300".into(),
                    query: Vec::new(),
                };
                probe.read(request).await.0.map(|a| a.status)
            })
        })
        .collect();
    // Slow deliveries of the probe beyond its share wait for room; none fails for it.
    let slow: Vec<_> = (0..6)
        .map(|_| {
            let probe = probe.clone();
            tokio::spawn(async move {
                let e = event(
                    "probe.host-calls",
                    "x",
                    json!({ "calls": 1, "sleep_ms": 200 }),
                );
                probe.deliver(&e).await.outcome
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..5 {
        let user = uuid::Uuid::new_v4();
        sqlx::query("INSERT INTO users (id, email, name) VALUES ($1, $2, 'Flood')")
            .bind(user)
            .bind(format!("{user}@example.com"))
            .execute(&host.pool)
            .await
            .unwrap();
        let created = event("user.created", &user.to_string(), json!({ "userId": user }));
        assert_eq!(
            stats.deliver(&created).await.outcome,
            Outcome::Ok,
            "a delivery failed during the flood"
        );
        let (status, _) = read(&stats, &format!("stats/{user}")).await;
        assert_eq!(status, 200, "a read failed during the flood");
    }
    for task in slow {
        let outcome = task.await.unwrap();
        assert_eq!(
            outcome,
            Outcome::Ok,
            "a delivery waiting for its plugin's share failed"
        );
    }
    let mut busy = 0;
    for task in flood {
        match task.await.unwrap() {
            Ok(200) => {}
            Err(Outcome::Aborted(Abort::Capacity(m))) if m.contains("reads_per_plugin") => {
                busy += 1
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(
        busy > 0,
        "60 reads of 300 ms, 4 at a time, cannot all finish within 2 s"
    );
    host.stop().await;
}
