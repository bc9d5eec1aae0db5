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
