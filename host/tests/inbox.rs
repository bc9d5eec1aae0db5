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

/// The inbox forgets events handled longer ago than the retention, in bounded batches,
/// and keeps the rest: a recent event is still a duplicate, a forgotten one runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_forgets_what_is_older_than_its_retention() {
    use eventhost::consumer::inbox;
    let host = TestHost::default().await;
    let probe = host.load("probe").await;
    let old = event("probe.insert", "p-1", json!({}));
    let recent = event("probe.insert", "p-2", json!({}));
    assert_eq!(probe.deliver(&old).await.outcome, Outcome::Ok);
    assert_eq!(probe.deliver(&recent).await.outcome, Outcome::Ok);
    // 25 more old rows, so pruning takes several batches.
    sqlx::query(
        "INSERT INTO plugin_probe._eventhost_inbox (event_id, source, event_type, handled_at)
         SELECT 'filler-' || n, 'test', 'probe.insert', now() - interval '40 days'
         FROM generate_series(1, 25) n",
    )
    .execute(&host.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE plugin_probe._eventhost_inbox SET handled_at = now() - interval '31 days' WHERE event_id = $1")
        .bind(&old.id.0)
        .execute(&host.pool)
        .await
        .unwrap();
    let retention = std::time::Duration::from_secs(30 * 24 * 3600);
    let pruned = inbox::prune(&host.pool, "probe", retention, 10)
        .await
        .unwrap();
    assert_eq!(pruned, 26);
    assert_eq!(count(&probe, "SELECT * FROM _eventhost_inbox").await, 1);
    assert_eq!(probe.deliver(&recent).await.outcome, Outcome::Duplicate);
    // Forgotten, so the handler runs again (and meets its own row of the first time).
    let again = probe.deliver(&old).await.outcome;
    assert!(
        matches!(&again, Outcome::Retryable(r) if r.contains("notes_pkey")),
        "{again:?}"
    );
    assert_eq!(
        inbox::prune(&host.pool, "probe", retention, 10)
            .await
            .unwrap(),
        0
    );
    host.stop().await;
}

/// An inbox of the earlier layout (a `uuid` key, no source) is converted when the plugin
/// loads, and the events it recorded stay duplicates whatever source they come with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbox_of_the_earlier_layout_is_converted_and_still_knows_its_events() {
    let host = TestHost::default().await;
    let known = event("probe.insert", "p-1", json!({}));
    // The plugin's schema and role as a first load made them, then the inbox put back as
    // it was, owned by the plugin's role, with one handled event.
    host.load("probe").await;
    sqlx::raw_sql(
        "DROP TABLE plugin_probe._eventhost_inbox;
         CREATE TABLE plugin_probe._eventhost_inbox (
             event_id uuid PRIMARY KEY, event_type text NOT NULL,
             handled_at timestamptz NOT NULL DEFAULT now());
         DO $$ BEGIN
             EXECUTE format('ALTER TABLE plugin_probe._eventhost_inbox OWNER TO %I',
                 (SELECT r.rolname FROM pg_roles r JOIN pg_namespace n ON n.nspowner = r.oid
                  WHERE n.nspname = 'plugin_probe'));
         END $$;",
    )
    .execute(&host.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO plugin_probe._eventhost_inbox (event_id, event_type)
         VALUES ($1::uuid, 'probe.insert')",
    )
    .bind(&known.id.0)
    .execute(&host.pool)
    .await
    .unwrap();
    let probe = host.load("probe").await;
    assert_eq!(probe.deliver(&known).await.outcome, Outcome::Duplicate);
    assert_eq!(count(&probe, "SELECT * FROM notes").await, 0);
    let fresh = event("probe.insert", "p-1", json!({}));
    assert_eq!(probe.deliver(&fresh).await.outcome, Outcome::Ok);
    let sources = probe
        .query_json("SELECT source FROM _eventhost_inbox ORDER BY handled_at")
        .await
        .unwrap();
    assert_eq!(
        sources,
        vec![json!({"source": ""}), json!({"source": fresh.source})]
    );
    // Once the old rows are pruned, a later load stops looking for them.
    let legacy_index = "SELECT to_regclass('plugin_probe._eventhost_inbox_legacy')::text";
    let index: Option<String> = sqlx::query_scalar(legacy_index)
        .fetch_one(&host.pool)
        .await
        .unwrap();
    assert!(index.is_some(), "the converted inbox finds its old rows");
    sqlx::query("UPDATE plugin_probe._eventhost_inbox SET handled_at = now() - interval '40 days' WHERE source = ''")
        .execute(&host.pool)
        .await
        .unwrap();
    let retention = std::time::Duration::from_secs(30 * 24 * 3600);
    let pruned = eventhost::consumer::inbox::prune(&host.pool, "probe", retention, 100)
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    let reloaded = host.load("probe").await;
    let index: Option<String> = sqlx::query_scalar(legacy_index)
        .fetch_one(&host.pool)
        .await
        .unwrap();
    assert_eq!(index, None, "no old rows left, nothing to look for");
    assert_eq!(reloaded.deliver(&fresh).await.outcome, Outcome::Duplicate);
    host.stop().await;
}
