//! The plugins' queues on the real RabbitMQ: bindings follow subscriptions, the retry
//! queues hand messages back after their delay, quorum queues can be chosen, and a
//! conflicting re-declaration is a clear error.

mod common;

use eventhost::broker::topology::{declare_plugin, PluginQueues};
use eventhost::broker::{declare_exchange, BrokerError};
use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::time::Duration;

struct World {
    connection: Connection,
    channel: Channel,
    prefix: String,
    exchange: String,
}

impl World {
    async fn start() -> Self {
        let connection =
            Connection::connect(&common::outbox::amqp_url(), ConnectionProperties::default())
                .await
                .expect("RabbitMQ (scripts/services.sh starts it)");
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let prefix = format!(
            "eventhost.test.{}",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        );
        let exchange = format!("{prefix}.events");
        declare_exchange(&channel, &exchange).await.unwrap();
        Self {
            connection,
            channel,
            prefix,
            exchange,
        }
    }

    /// Declares `queues` on this world's exchange with the given subscriptions.
    async fn declare(
        &self,
        queues: &PluginQueues,
        quorum: bool,
        subscriptions: &[&str],
        stale: &[&str],
    ) -> Result<(), BrokerError> {
        declare_plugin(
            &self.channel,
            &self.exchange,
            queues,
            quorum,
            &strings(subscriptions),
            &strings(stale),
        )
        .await
    }

    async fn publish(&self, exchange: &str, routing_key: &str, body: &[u8]) {
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
    }

    /// The bodies now in `queue` (taken off it).
    async fn drain(&self, queue: &str) -> Vec<String> {
        let mut bodies = Vec::new();
        while let Some(message) = self
            .channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            bodies.push(String::from_utf8_lossy(&message.delivery.data).to_string());
        }
        bodies
    }

    async fn stop(self, queues: &[&PluginQueues]) {
        let channel = self.connection.create_channel().await.unwrap();
        common::delete_topology(&channel, &self.exchange, queues).await;
        let _ = self.connection.close(200, "done".into()).await;
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_follow_the_subscriptions() {
    let world = World::start().await;
    let queues = PluginQueues::new(&world.prefix, "stats", &[Duration::from_millis(200)]);
    world
        .declare(&queues, false, &["user.#"], &[])
        .await
        .unwrap();
    world.publish(&world.exchange, "user.created", b"u1").await;
    world
        .publish(&world.exchange, "user.role.changed", b"u2")
        .await;
    world.publish(&world.exchange, "bid.placed", b"b1").await;
    assert_eq!(world.drain(&queues.main).await, ["u1", "u2"]);

    // The plugin now subscribes to bids only: the old pattern is unbound.
    world
        .declare(&queues, false, &["bid.placed"], &["user.#"])
        .await
        .unwrap();
    world.publish(&world.exchange, "user.created", b"u3").await;
    world.publish(&world.exchange, "bid.placed", b"b2").await;
    assert_eq!(world.drain(&queues.main).await, ["b2"]);
    assert!(world.drain(&queues.dead).await.is_empty());
    world.stop(&[&queues]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_queue_hands_the_message_back_after_its_delay() {
    let world = World::start().await;
    let queues = PluginQueues::new(&world.prefix, "stats", &[Duration::from_millis(300)]);
    world.declare(&queues, false, &["#"], &[]).await.unwrap();
    world
        .publish("", queues.retry_queue(1).unwrap(), b"again")
        .await;
    assert!(
        world.drain(&queues.main).await.is_empty(),
        "not before its delay"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let back = loop {
        let got = world.drain(&queues.main).await;
        if !got.is_empty() || tokio::time::Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(back, ["again"]);
    world.stop(&[&queues]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queues_can_be_chosen_and_a_type_change_is_refused_clearly() {
    let world = World::start().await;
    let queues = PluginQueues::new(&world.prefix, "audit", &[Duration::from_secs(1)]);
    world.declare(&queues, true, &["#"], &[]).await.unwrap();
    world.publish(&world.exchange, "user.created", b"q").await;
    assert_eq!(world.drain(&queues.main).await, ["q"]);

    // The broker closes a channel that fails a declaration: use a fresh one.
    let channel = world.connection.create_channel().await.unwrap();
    let err = declare_plugin(
        &channel,
        &world.exchange,
        &queues,
        false,
        &strings(&["#"]),
        &[],
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BrokerError::Queue { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains(&queues.main), "{message}");
    assert!(message.to_uppercase().contains("PRECONDITION"), "{message}");
    world.stop(&[&queues]).await;
}

/// A rolling upgrade: hosts serving different versions of a plugin agree on its queue's
/// bindings. The newest deployed version's subscriptions win; an older host restarting
/// never removes them; deploying the old file anew (a rollback) makes it the newest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_with_different_versions_keep_the_newest_versions_bindings() {
    use eventhost::consumer::bindings;
    use eventhost::consumer::PluginVersion;
    let world = World::start().await;
    let scratch =
        eventhost::fixtures::ScratchDatabase::create(&common::server_url(), "eventhost_bind")
            .await
            .expect("scratch database");
    let pool = eventhost::database::connect(&scratch.url, 4).await.unwrap();
    eventhost::database::migrate(&pool).await.unwrap();
    let queues = PluginQueues::new(&world.prefix, "stats", &[Duration::from_millis(200)]);
    let at = |secs: i64| chrono::DateTime::from_timestamp(1_790_000_000 + secs, 0).unwrap();
    let old = |deployed_at| PluginVersion {
        digest: "a".repeat(64),
        deployed_at,
    };
    let new = PluginVersion {
        digest: "b".repeat(64),
        deployed_at: at(100),
    };
    let host = |subscriptions: &'static [&'static str], version: PluginVersion| {
        let (world, pool, queues) = (&world, &pool, &queues);
        async move {
            bindings::apply(
                &world.channel,
                pool,
                &world.exchange,
                queues,
                false,
                &strings(subscriptions),
                Some(&version),
            )
            .await
            .unwrap()
        }
    };
    let routed = || async {
        for key in ["user.created", "bid.placed", "user.role.changed"] {
            world.publish(&world.exchange, key, key.as_bytes()).await;
        }
        world.drain(&queues.main).await
    };
    host(&["user.created", "bid.placed"], old(at(0))).await;
    assert_eq!(routed().await, ["user.created", "bid.placed"]);
    // The new version drops bids and adds role changes.
    host(&["user.created", "user.role.changed"], new.clone()).await;
    assert_eq!(routed().await, ["user.created", "user.role.changed"]);
    // An old host restarts: it changes nothing.
    host(&["user.created", "bid.placed"], old(at(0))).await;
    assert_eq!(routed().await, ["user.created", "user.role.changed"]);
    // The old file deployed again, later than the new one: a rollback wins.
    host(&["user.created", "bid.placed"], old(at(200))).await;
    assert_eq!(routed().await, ["user.created", "bid.placed"]);
    pool.close().await;
    let _ = scratch.drop_now().await;
    world.stop(&[&queues]).await;
}
