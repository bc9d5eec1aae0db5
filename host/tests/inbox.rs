//! Effectively-once delivery: the plugin's inbox row commits with the handler's effects,
//! so a redelivered event changes nothing, and a failed attempt leaves no trace.

mod common;

use common::{event, TestHost};
use eventhost::Outcome;
use serde_json::json;

async fn count(plugin: &eventhost::runtime::Plugin, sql: &str) -> usize {
    plugin.query_json(sql).await.expect("query").len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_event_is_a_duplicate_and_commits_nothing_new() {
    let host = TestHost::default().await;
    let probe = host.load("probe").await;
    let e = event("probe.insert", "p-1", json!({}));

    assert_eq!(probe.deliver(&e).await.outcome, Outcome::Ok);
    assert_eq!(probe.deliver(&e).await.outcome, Outcome::Duplicate);
    assert_eq!(probe.deliver(&e).await.outcome, Outcome::Duplicate);
    assert_eq!(count(&probe, "SELECT * FROM notes").await, 1);
    let inbox = probe
        .query_json("SELECT event_id::text, event_type FROM _eventhost_inbox")
        .await
        .unwrap();
    assert_eq!(
        inbox,
        vec![json!({ "event_id": e.id.to_string(), "event_type": "probe.insert" })]
    );

    // Another event is not a duplicate of the first.
    let other = event("probe.insert", "p-1", json!({}));
    assert_eq!(probe.deliver(&other).await.outcome, Outcome::Ok);
    assert_eq!(count(&probe, "SELECT * FROM notes").await, 2);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attempt_leaves_no_inbox_row_so_the_retry_runs_the_handler() {
    let host = TestHost::default().await;
    let probe = host.load("probe").await;
    for kind in ["probe.retry", "probe.permanent", "probe.panic"] {
        let e = event(kind, "p-1", json!({}));
        let first = probe.deliver(&e).await.outcome;
        assert_ne!(first, Outcome::Ok, "{kind}");
        let again = probe.deliver(&e).await.outcome;
        assert_eq!(
            again.class(),
            first.class(),
            "{kind}: the handler ran again"
        );
    }
    assert_eq!(count(&probe, "SELECT * FROM _eventhost_inbox").await, 0);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_of_one_event_commit_its_effects_once() {
    let host = TestHost::default().await;
    let probe = std::sync::Arc::new(host.load("probe").await);
    let e = event("probe.insert", "p-1", json!({}));
    let mut handles = Vec::new();
    for _ in 0..4 {
        let (probe, e) = (probe.clone(), e.clone());
        handles.push(tokio::spawn(async move { probe.deliver(&e).await.outcome }));
    }
    let mut outcomes = Vec::new();
    for h in handles {
        outcomes.push(h.await.unwrap());
    }
    let ok = outcomes.iter().filter(|o| **o == Outcome::Ok).count();
    assert_eq!(ok, 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Ok | Outcome::Duplicate)),
        "{outcomes:?}"
    );
    assert_eq!(count(&probe, "SELECT * FROM notes").await, 1);
    host.stop().await;
}
