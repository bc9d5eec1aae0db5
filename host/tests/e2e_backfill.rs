//! Backfill through the real `eventhost serve`: a plugin loaded after events were
//! published is fed them from the outbox's kept rows, while the host keeps serving, and
//! running it again changes nothing (the plugin's inbox).

mod common;

use common::serve::ServeWorld;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);
const AUDIT: &str = "SELECT count(*) FROM plugin_audit_log.audit_events";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_loaded_late_is_fed_what_it_missed_once() {
    let mut world = ServeWorld::start(&["user_stats"]).await;
    for i in 0..3 {
        world
            .register(&format!("early{i}@example.com"))
            .await
            .expect("registered");
    }
    world
        .wait_count(
            "SELECT count(*) FROM outbox_events WHERE status = 'published'",
            3,
            WAIT,
        )
        .await;
    world.add_plugin("audit_log");
    let start = Instant::now();
    loop {
        let (status, ready) = world.get("/readyz").await;
        if status == 200 && ready["plugins_loaded"] == 2 {
            break;
        }
        assert!(start.elapsed() < WAIT, "audit-log not consuming: {ready}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // It saw nothing of what came before its queue; live events reach it meanwhile.
    assert_eq!(world.count(AUDIT).await, 0);
    world
        .register("live@example.com")
        .await
        .expect("registered");
    world.wait_count(AUDIT, 1, WAIT).await;

    let (code, out) = world.cli(&["plugin", "backfill", "audit-log", "--all"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("backfilled 4 event(s)"), "{out}");
    world.wait_count(AUDIT, 4, WAIT).await;

    // Again: the inbox drops every one of them.
    let (code, out) = world.cli(&["plugin", "backfill", "audit-log", "--all"]);
    assert_eq!(code, 0, "{out}");
    world
        .wait_metric("eventhost_plugin_duplicates_total", "audit-log", 4.0, WAIT)
        .await;
    assert_eq!(world.count(AUDIT).await, 4);

    // From a point in time: nothing was published after now.
    let now = chrono::Utc::now().to_rfc3339();
    let (code, out) = world.cli(&["plugin", "backfill", "audit-log", "--since", &now]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("backfilled 0 event(s)"), "{out}");
    // A plugin that never loaded has no queue to feed.
    let (code, _) = world.cli(&["plugin", "backfill", "probe", "--all"]);
    assert_eq!(code, 2);
    world.finish().await;
}
