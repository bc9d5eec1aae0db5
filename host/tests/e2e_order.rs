//! Order through retries, through the real `eventhost serve`: while an event waits to be
//! retried, its aggregate's later events wait behind it, and other aggregates go on.

mod common;

use common::serve::{cloud_event, Extra, ServeWorld};
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

fn note(id: Uuid) -> String {
    format!("SELECT count(*) FROM plugin_probe.notes WHERE event_id = '{id}'")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_event_holds_its_aggregate_back_and_no_other() {
    let world = ServeWorld::start_with(
        &["probe"],
        Extra {
            consumer: "max_attempts = 100",
            ..Extra::default()
        },
    )
    .await;
    let (first, second, elsewhere) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    for (id, event_type, subject, data) in [
        (first, "probe.wait-key", "order-1", json!({ "key": "k1" })),
        (second, "probe.insert", "order-1", json!({})),
        (elsewhere, "probe.insert", "order-2", json!({})),
    ] {
        let body = cloud_event(id, event_type, subject, data);
        world
            .publish(event_type, &body, Some(&id.to_string()))
            .await;
    }
    // Another aggregate is not held up...
    world.wait_count(&note(elsewhere), 1, WAIT).await;
    // ...while the first event fails and is retried, and the second waits behind it.
    world
        .wait_metric("eventhost_plugin_retried_total", "probe", 2.0, WAIT)
        .await;
    assert_eq!(world.count(&note(second)).await, 0, "it overtook the retry");
    // The cause goes away: the first is handled, then the second.
    sqlx::query("INSERT INTO plugin_probe.allowed_keys VALUES ('k1')")
        .execute(&world.pool)
        .await
        .expect("insert the key");
    world.wait_count(&note(second), 1, WAIT).await;
    assert_eq!(world.count(&note(first)).await, 1);
    let in_order: bool = sqlx::query_scalar(
        "SELECT (SELECT at FROM plugin_probe.notes WHERE event_id = $1)
              < (SELECT at FROM plugin_probe.notes WHERE event_id = $2)",
    )
    .bind(first)
    .bind(second)
    .fetch_one(&world.pool)
    .await
    .expect("note times");
    assert!(in_order, "the aggregate's events were handled out of order");
    world.finish().await;
}

/// `on_dead_letter = "hold"`: the aggregate's later events (those queued and those
/// arriving after) are parked behind its dead letter, in order, while other aggregates go
/// on; replaying the dead letter replays them after it, and once it is handled the
/// aggregate flows again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_hold_a_dead_letter_holds_its_aggregate_until_it_is_replayed() {
    let world = ServeWorld::start_with(
        &["probe"],
        Extra {
            consumer: "on_dead_letter = \"hold\"",
            ..Extra::default()
        },
    )
    .await;
    let key = format!("k-{}", Uuid::new_v4());
    let (head, behind, elsewhere, later, after) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let send = |id: Uuid, event_type: &'static str, subject: &'static str| {
        let body = cloud_event(id, event_type, subject, json!({ "key": key }));
        let world = &world;
        async move {
            world
                .publish(event_type, &body, Some(&id.to_string()))
                .await
        }
    };
    send(head, "probe.gated", "held-1").await;
    send(behind, "probe.insert", "held-1").await;
    send(elsewhere, "probe.insert", "held-2").await;
    world.wait_count(&note(elsewhere), 1, WAIT).await;
    world
        .wait_metric("eventhost_plugin_parked_total", "probe", 1.0, WAIT)
        .await;
    // An event of the held aggregate arriving later is parked too.
    send(later, "probe.insert", "held-1").await;
    world
        .wait_metric("eventhost_plugin_parked_total", "probe", 2.0, WAIT)
        .await;
    assert_eq!(
        world.count(&note(behind)).await,
        0,
        "it went on past the dead letter"
    );
    assert_eq!(
        world.count(&note(later)).await,
        0,
        "it went on past the dead letter"
    );

    let (code, out) = world.cli(&["dlq", "holds", "probe", "--json"]);
    assert_eq!(code, 0, "{out}");
    let held: Vec<serde_json::Value> = serde_json::from_str(&out).expect("dlq holds --json");
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["aggregate"], "user/held-1");
    assert_eq!(held[0]["head_event_id"], head.to_string());

    // A parked event alone is not replayed while its head is held.
    let (code, out) = world.cli(&["dlq", "replay", "probe", "--id", &later.to_string()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("waits behind dead letter"), "{out}");

    // Fixed; replaying the head replays what was parked behind it, in order.
    sqlx::query("INSERT INTO plugin_probe.allowed_keys VALUES ($1)")
        .bind(&key)
        .execute(&world.pool)
        .await
        .expect("insert the key");
    let (code, out) = world.cli(&["dlq", "replay", "probe", "--id", &head.to_string()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("replayed 3"), "{out}");
    world.wait_count(&note(later), 1, WAIT).await;
    let order: Vec<Uuid> = sqlx::query_scalar(
        "SELECT event_id FROM plugin_probe.notes WHERE event_id = ANY($1) ORDER BY at",
    )
    .bind(vec![head, behind, later])
    .fetch_all(&world.pool)
    .await
    .expect("notes");
    assert_eq!(order, vec![head, behind, later], "replayed out of order");

    // The hold is gone: the aggregate's next event runs at once.
    send(after, "probe.insert", "held-1").await;
    world.wait_count(&note(after), 1, WAIT).await;
    let (_, out) = world.cli(&["dlq", "holds", "probe", "--json"]);
    assert_eq!(out.trim(), "[]");
    let (_, out) = world.cli(&["dlq", "list", "probe", "--json"]);
    assert_eq!(out.trim(), "[]");
    world.finish().await;
}

/// An aggregate key PostgreSQL cannot store (a NUL character) cannot be held: its dead
/// letter still becomes a dead letter and its later events go on, instead of the
/// delivery waiting forever on a statement that can never succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_hold_an_aggregate_key_postgres_refuses_goes_on() {
    let world = ServeWorld::start_with(
        &["probe"],
        Extra {
            consumer: "on_dead_letter = \"hold\"",
            ..Extra::default()
        },
    )
    .await;
    let subject = "nul\u{0}key";
    let (failing, next) = (Uuid::new_v4(), Uuid::new_v4());
    for (id, event_type) in [(failing, "probe.permanent"), (next, "probe.insert")] {
        let body = cloud_event(id, event_type, subject, json!({}));
        world
            .publish(event_type, &body, Some(&id.to_string()))
            .await;
    }
    world
        .wait_metric("eventhost_plugin_dead_lettered_total", "probe", 1.0, WAIT)
        .await;
    world.wait_count(&note(next), 1, WAIT).await;
    let (_, out) = world.cli(&["dlq", "holds", "probe", "--json"]);
    assert_eq!(out.trim(), "[]");
    world.finish().await;
}
