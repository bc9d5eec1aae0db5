//! Every combination of the consumer, the relay and the auth service turned on and off
//! (the HTTP API on, to look): each `eventhost serve` becomes ready, answers `/healthz`,
//! serves plugin reads, and does exactly the work of the parts it runs.

mod common;

use common::serve::{Extra, ServeWorld};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn switch(on: bool) -> &'static str {
    if on {
        "enabled = true"
    } else {
        "enabled = false"
    }
}

async fn mode(consumer: bool, relay: bool, auth: bool) {
    let label = format!("consumer {consumer}, relay {relay}, auth service {auth}");
    let world = ServeWorld::start_with(
        &["audit_log"],
        Extra {
            consumer: switch(consumer),
            relay: switch(relay),
            auth_service: switch(auth),
            ..Extra::default()
        },
    )
    .await;
    // `start_with` returned once `/readyz` said 200.
    let (status, _) = world.get("/healthz").await;
    assert_eq!(status, 200, "{label}: /healthz");
    let (status, ready) = world.get("/readyz").await;
    assert_eq!(status, 200, "{label}: /readyz {ready}");
    let (status, read) = world.get("/plugins/audit-log/events/user/nobody").await;
    assert_eq!(status, 200, "{label}: plugin reads are served: {read}");
    assert_eq!(read["events"], serde_json::json!([]), "{label}");

    let registered = world
        .register(&format!("modes-{}@example.com", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(
        registered.is_ok(),
        auth,
        "{label}: registration {registered:?}"
    );
    if auth {
        let published = "SELECT count(*) FROM outbox_events WHERE status = 'published'";
        if relay {
            world.wait_count(published, 1, WAIT).await;
        } else {
            tokio::time::sleep(Duration::from_millis(800)).await;
            assert_eq!(
                world.count(published).await,
                0,
                "{label}: no relay, nothing published"
            );
        }
        let recorded = "SELECT count(*) FROM plugin_audit_log.audit_events";
        if relay && consumer {
            world.wait_count(recorded, 1, WAIT).await;
        } else {
            tokio::time::sleep(Duration::from_millis(400)).await;
            assert_eq!(world.count(recorded).await, 0, "{label}: nothing consumed");
        }
    }
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_on() {
    mode(true, true, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_off() {
    mode(false, true, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_off() {
    mode(true, false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_service_off() {
    mode(true, true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_and_relay_off() {
    mode(false, false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_and_auth_service_off() {
    mode(false, true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_auth_service_off() {
    mode(true, false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_api() {
    mode(false, false, false).await;
}
