//! RabbitMQ stopped and started under a running `eventhost serve`. In its own test binary
//! because it stops the shared broker: cargo runs test binaries one after another, so no
//! other test is using RabbitMQ meanwhile.

mod common;

use common::serve::{register_many, ServeWorld};
use std::process::Command;
use std::time::Duration;

fn rabbitmqctl(action: &str) {
    let status = Command::new("rabbitmqctl")
        .args(["-q", action])
        .status()
        .unwrap_or_else(|e| panic!("rabbitmqctl {action}: {e} (is RabbitMQ installed here?)"));
    assert!(status.success(), "rabbitmqctl {action} failed: {status}");
}

/// Starts the broker again even if the test fails half way.
struct BrokerStopped;

impl BrokerStopped {
    fn stop() -> Self {
        rabbitmqctl("stop_app");
        Self
    }
}

impl Drop for BrokerStopped {
    fn drop(&mut self) {
        rabbitmqctl("start_app");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_stopped_and_started_during_1000_registrations_loses_and_doubles_nothing() {
    let world = ServeWorld::start(&["user_stats", "audit_log"]).await;
    let run = tokio::spawn(register_many(world.auth.clone(), "outage", 1000, 4));
    world
        .wait_count_at_least(
            "SELECT count(*) FROM plugin_audit_log.audit_events",
            200,
            Duration::from_secs(30),
        )
        .await;
    let stopped = BrokerStopped::stop();
    // Registrations go on (they only need PostgreSQL); their events wait in the outbox.
    world
        .wait_count_at_least("SELECT count(*) FROM users", 500, Duration::from_secs(60))
        .await;
    world
        .wait_readiness("rabbitmq", false, Duration::from_secs(30))
        .await;
    drop(stopped);
    assert_eq!(run.await.expect("registrations"), 1000);
    world
        .assert_every_user_handled_once(1000, Duration::from_secs(120))
        .await;
    world
        .wait_readiness("rabbitmq", true, Duration::from_secs(30))
        .await;
    assert_eq!(world.get("/readyz").await.0, 200);
    world.finish().await;
}
