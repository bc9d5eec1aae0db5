//! Hostile plugins are contained: each misbehaviour ends that invocation with a clear
//! reason, the host keeps serving, and nothing outside the plugin's schema changes.

mod common;

use common::{event, TestHost};
use eventhost::config::{AuthBackend, Limits};
use eventhost::runtime::{Abort, Plugin};
use eventhost::Outcome;
use serde_json::json;
use std::time::{Duration, Instant};

fn tight_limits() -> Limits {
    Limits {
        cpu_time: Duration::from_millis(200),
        wall_time: Duration::from_secs(2),
        memory: 16 << 20,
        // Deliberately generous: the sleep test must be ended by the host's deadline.
        statement_timeout: Duration::from_secs(60),
        ..Limits::default()
    }
}

async fn still_serving(probe: &Plugin) {
    let e = event("probe.insert", "x", json!({}));
    assert_eq!(
        probe.handle(&e).await.outcome,
        Outcome::Ok,
        "the host must keep serving the plugin"
    );
    let rows = probe
        .query_json(&format!("SELECT 1 FROM notes WHERE event_id = '{}'", e.id))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
}

#[tokio::test]
async fn endless_loop_is_stopped_by_the_cpu_limit() {
    let host = TestHost::start(tight_limits(), AuthBackend::Postgres).await;
    let probe = host.load("probe").await;
    let started = Instant::now();
    let outcome = probe
        .handle(&event("probe.loop", "x", json!({})))
        .await
        .outcome;
    assert!(
        matches!(&outcome, Outcome::Aborted(Abort::Limit(m)) if m.contains("cpu time limit")),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "stopped by cpu time, not by the wall deadline"
    );
    assert_eq!(outcome.class(), "retryable");
    still_serving(&probe).await;
    host.stop().await;
}

#[tokio::test]
async fn unbounded_memory_growth_is_stopped_by_the_memory_limit() {
    let host = TestHost::start(tight_limits(), AuthBackend::Postgres).await;
    let probe = host.load("probe").await;
    let outcome = probe
        .handle(&event("probe.memory", "x", json!({})))
        .await
        .outcome;
    assert!(
        matches!(&outcome, Outcome::Aborted(Abort::Limit(m)) if m.contains("memory limit exceeded") && m.contains("16777216")),
        "{outcome:?}"
    );
    still_serving(&probe).await;
    host.stop().await;
}

#[tokio::test]
async fn a_panic_becomes_an_error() {
    let host = TestHost::start(tight_limits(), AuthBackend::Postgres).await;
    let probe = host.load("probe").await;
    let outcome = probe
        .handle(&event("probe.panic", "x", json!({})))
        .await
        .outcome;
    assert!(
        matches!(&outcome, Outcome::Aborted(Abort::Trap(m)) if m.contains("panicked")),
        "{outcome:?}"
    );
    still_serving(&probe).await;
    host.stop().await;
}

#[tokio::test]
async fn lifting_the_statement_timeout_does_not_outlive_the_deadline() {
    let host = TestHost::start(tight_limits(), AuthBackend::Postgres).await;
    let probe = host.load("probe").await;
    let started = Instant::now();
    let outcome = probe
        .handle(&event("probe.sleep", "x", json!({})))
        .await
        .outcome;
    let elapsed = started.elapsed();
    assert!(
        matches!(&outcome, Outcome::Aborted(Abort::Deadline(_))),
        "{outcome:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    // The server-side sleep is gone too, not just the host's wait for it.
    let mut sleeping = -1;
    for _ in 0..50 {
        sleeping = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND query LIKE '%pg_sleep%'",
        )
        .bind(probe.role())
        .fetch_one(&host.pool)
        .await
        .unwrap();
        if sleeping == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sleeping, 0, "the plugin's pg_sleep is still running");
    still_serving(&probe).await;
    host.stop().await;
}

/// Each attempt, as the list of statements the probe runs in order.
fn escapes(marker: &str) -> Vec<Vec<String>> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        s(&["SELECT * FROM public.users"]),
        s(&["UPDATE public.users SET name = 'pwned'"]),
        s(&["DROP TABLE public.users"]),
        s(&["SELECT * FROM plugin_user_stats.user_stats"]),
        s(&["DELETE FROM plugin_user_stats.user_stats"]),
        s(&["SELECT * FROM public._sqlx_migrations"]),
        s(&["SET ROLE postgres"]),
        s(&["RESET ROLE", "SELECT * FROM public.users"]),
        s(&["SET search_path = public", "SELECT * FROM users"]),
        s(&["SET SESSION AUTHORIZATION postgres"]),
        s(&["SELECT pg_read_file('/etc/passwd')"]),
        s(&["SELECT lo_import('/etc/passwd')"]),
        vec![format!("COPY (SELECT 1) TO PROGRAM 'touch {marker}'")],
        s(&["CREATE TABLE public.planted (x int)"]),
        s(&["ALTER ROLE CURRENT_USER SUPERUSER"]),
        s(&["GRANT postgres TO CURRENT_USER"]),
        s(&["CREATE EXTENSION IF NOT EXISTS dblink"]),
    ]
}

#[tokio::test]
async fn sql_cannot_escape_the_plugins_schema() {
    let host = TestHost::start(tight_limits(), AuthBackend::Postgres).await;
    let user_stats = host.load("user_stats").await;
    let probe = host.load("probe").await;
    let user = uuid::Uuid::new_v4();
    sqlx::query("INSERT INTO users (id, email, name) VALUES ($1, 'victim@example.com', 'Victim')")
        .bind(user)
        .execute(&host.pool)
        .await
        .unwrap();
    let created = event("user.created", &user.to_string(), json!({ "userId": user }));
    assert_eq!(user_stats.handle(&created).await.outcome, Outcome::Ok);

    let snapshot = || async {
        let users: String = sqlx::query_scalar("SELECT json_agg(u ORDER BY id)::text FROM users u")
            .fetch_one(&host.pool)
            .await
            .unwrap();
        let stats: String =
            sqlx::query_scalar("SELECT json_agg(s)::text FROM plugin_user_stats.user_stats s")
                .fetch_one(&host.pool)
                .await
                .unwrap();
        let public_tables: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
                .fetch_one(&host.pool)
                .await
                .unwrap();
        let role_flags: (bool, i64) = sqlx::query_as(
            "SELECT rolsuper, (SELECT count(*) FROM pg_auth_members m WHERE m.member = r.oid) FROM pg_roles r WHERE rolname = $1",
        )
        .bind(probe.role())
        .fetch_one(&host.pool)
        .await
        .unwrap();
        (users, stats, public_tables, role_flags)
    };
    let before = snapshot().await;
    let marker = std::env::temp_dir().join(format!("eventhost-escape-{}", uuid::Uuid::new_v4()));

    for statements in escapes(&marker.display().to_string()) {
        let attempt = event("probe.sql", "x", json!(statements));
        let outcome = probe.handle(&attempt).await.outcome;
        let Outcome::Permanent(reason) = &outcome else {
            panic!("{statements:?} was not refused: {outcome:?}")
        };
        // 42501 is "insufficient privilege"; an extension that is not installed is refused too.
        let refused = reason.starts_with("42501") || statements[0].contains("EXTENSION");
        assert!(refused, "{statements:?}: {reason}");
        // The attempt's own write (a note) was rolled back with it.
        let notes = probe
            .query_json(&format!(
                "SELECT 1 FROM notes WHERE event_id = '{}'",
                attempt.id
            ))
            .await
            .unwrap();
        assert!(notes.is_empty(), "{statements:?} committed");
    }
    assert_eq!(
        snapshot().await,
        before,
        "something outside the plugin's schema changed"
    );
    assert!(!marker.exists(), "COPY ... PROGRAM ran");
    still_serving(&probe).await;
    host.stop().await;
}
