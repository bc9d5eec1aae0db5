//! The plugins' queues on the real RabbitMQ: bindings follow subscriptions, the retry
//! queues hand messages back after their delay, quorum queues can be chosen, and a
//! conflicting re-declaration is a clear error.

mod common;

use eventhost::broker::topology::AGGREGATE_HEADER;
use eventhost::broker::topology::{declare_plugin, PluginQueues};
use eventhost::broker::{declare_exchange, BrokerError};
use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::collections::HashMap;
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

    /// The bodies now in `queue`, through a consumer (quorum queues with a single active
    /// consumer refuse basic.get).
    async fn consume_all(&self, queue: &str) -> Vec<String> {
        use futures_lite::StreamExt;
        let channel = self.connection.create_channel().await.unwrap();
        let options = lapin::options::BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        let mut stream = channel
            .basic_consume(queue.into(), "drain".into(), options, FieldTable::default())
            .await
            .unwrap();
        let mut bodies = Vec::new();
        while let Ok(Some(Ok(d))) =
            tokio::time::timeout(Duration::from_millis(500), stream.next()).await
        {
            bodies.push(String::from_utf8_lossy(&d.data).to_string());
        }
        let _ = channel.close(200, "drained".into()).await;
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
    let queues = PluginQueues::new(&world.prefix, "stats", 1, &[Duration::from_millis(200)]);
    world
        .declare(&queues, false, &["user.#"], &[])
        .await
        .unwrap();
    world.publish(&world.exchange, "user.created", b"u1").await;
    world
        .publish(&world.exchange, "user.role.changed", b"u2")
        .await;
    world.publish(&world.exchange, "bid.placed", b"b1").await;
    assert_eq!(world.drain(&queues.partitions[0]).await, ["u1", "u2"]);

    // The plugin now subscribes to bids only: the old pattern is unbound.
    world
        .declare(&queues, false, &["bid.placed"], &["user.#"])
        .await
        .unwrap();
    world.publish(&world.exchange, "user.created", b"u3").await;
    world.publish(&world.exchange, "bid.placed", b"b2").await;
    assert_eq!(world.drain(&queues.partitions[0]).await, ["b2"]);
    assert!(world.drain(&queues.dead).await.is_empty());
    world.stop(&[&queues]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_queue_hands_the_message_back_after_its_delay() {
    let world = World::start().await;
    let queues = PluginQueues::new(&world.prefix, "stats", 1, &[Duration::from_millis(300)]);
    world.declare(&queues, false, &["#"], &[]).await.unwrap();
    world
        .publish("", queues.retry_queue(1).unwrap(), b"again")
        .await;
    assert!(
        world.drain(&queues.partitions[0]).await.is_empty(),
        "not before its delay"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let back = loop {
        let got = world.drain(&queues.partitions[0]).await;
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
    let queues = PluginQueues::new(&world.prefix, "audit", 1, &[Duration::from_secs(1)]);
    world.declare(&queues, true, &["#"], &[]).await.unwrap();
    world.publish(&world.exchange, "user.created", b"q").await;
    assert_eq!(world.consume_all(&queues.partitions[0]).await, ["q"]);

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
    assert!(message.contains(&queues.partitions[0]), "{message}");
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
    let queues = PluginQueues::new(&world.prefix, "stats", 1, &[Duration::from_millis(200)]);
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
        world.drain(&queues.partitions[0]).await
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

impl World {
    async fn publish_for(
        &self,
        exchange: &str,
        routing_key: &str,
        aggregate: Option<&str>,
        body: &str,
    ) {
        let mut headers = lapin::types::FieldTable::default();
        if let Some(aggregate) = aggregate {
            headers.insert(
                AGGREGATE_HEADER.into(),
                lapin::types::AMQPValue::LongString(aggregate.into()),
            );
        }
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default().with_headers(headers),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
    }

    /// Which partition holds each body (taking them off).
    async fn partition_of(&self, queues: &PluginQueues) -> HashMap<String, usize> {
        let mut at = HashMap::new();
        for (i, partition) in queues.partitions.iter().enumerate() {
            for body in self.drain(partition).await {
                assert!(at.insert(body, i).is_none(), "a message in two partitions");
            }
        }
        at
    }
}

/// The entry spreads aggregates over the partitions and keeps each aggregate in one, in
/// publication order; a message without the header still arrives; a retry comes back to
/// its aggregate's partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_keep_each_aggregate_together_and_in_order() {
    let world = World::start().await;
    let queues = PluginQueues::new(&world.prefix, "stats", 4, &[Duration::from_millis(200)]);
    world
        .declare(&queues, false, &["user.#"], &[])
        .await
        .unwrap();
    for n in 0..5 {
        for user in 0..40 {
            let aggregate = format!("user/u{user}");
            let body = format!("u{user}:{n}");
            world
                .publish_for(&world.exchange, "user.created", Some(&aggregate), &body)
                .await;
        }
    }
    world
        .publish_for(&world.exchange, "user.created", None, "headerless")
        .await;
    let mut per_partition: Vec<Vec<String>> = Vec::new();
    for partition in &queues.partitions {
        per_partition.push(world.drain(partition).await);
    }
    let total: usize = per_partition.iter().map(Vec::len).sum();
    assert_eq!(total, 201, "every message routed exactly once");
    assert!(per_partition
        .iter()
        .any(|p| p.contains(&"headerless".to_string())));
    let used = per_partition.iter().filter(|p| !p.is_empty()).count();
    assert!(
        used >= 3,
        "40 aggregates spread over {used} of 4 partitions"
    );
    for user in 0..40 {
        let prefix = format!("u{user}:");
        let homes: Vec<&Vec<String>> = per_partition
            .iter()
            .filter(|p| p.iter().any(|b| b.starts_with(&prefix)))
            .collect();
        assert_eq!(homes.len(), 1, "u{user} in {} partitions", homes.len());
        let order: Vec<&String> = homes[0].iter().filter(|b| b.starts_with(&prefix)).collect();
        let expected: Vec<String> = (0..5).map(|n| format!("u{user}:{n}")).collect();
        assert_eq!(order, expected.iter().collect::<Vec<_>>());
    }

    // A retry goes through the delay queue and back through the entry.
    world
        .publish_for(&world.exchange, "user.created", Some("user/u7"), "first")
        .await;
    let home = world.partition_of(&queues).await["first"];
    world
        .publish_for(
            "",
            queues.retry_queue(1).unwrap(),
            Some("user/u7"),
            "retried",
        )
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let back = loop {
        let at = world.partition_of(&queues).await;
        if !at.is_empty() || tokio::time::Instant::now() > deadline {
            break at;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(back.get("retried"), Some(&home));
    world.stop(&[&queues]).await;
}

/// Each partition has one active consumer: a second host's consumer gets nothing until
/// the first one's channel closes, then takes over what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_has_one_active_consumer_and_fails_over() {
    use futures_lite::StreamExt;
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
    let world = World::start().await;
    let queues = PluginQueues::new(&world.prefix, "stats", 1, &[Duration::from_secs(1)]);
    world.declare(&queues, false, &["#"], &[]).await.unwrap();
    let partition = queues.partitions[0].as_str();
    let consumer = |tag: &'static str| {
        let connection = &world.connection;
        async move {
            let channel = connection.create_channel().await.unwrap();
            channel
                .basic_qos(1, BasicQosOptions::default())
                .await
                .unwrap();
            let stream = channel
                .basic_consume(
                    partition.into(),
                    tag.into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
            (channel, stream)
        }
    };
    let (first, mut first_stream) = consumer("first").await;
    let (_second, mut second_stream) = consumer("second").await;
    for n in 0..3 {
        world
            .publish(&world.exchange, "user.created", format!("m{n}").as_bytes())
            .await;
    }
    let m0 = tokio::time::timeout(Duration::from_secs(5), first_stream.next())
        .await
        .expect("the first consumer is active")
        .unwrap()
        .unwrap();
    assert_eq!(m0.data, b"m0");
    m0.ack(BasicAckOptions::default()).await.unwrap();
    let m1 = first_stream.next().await.unwrap().unwrap();
    assert_eq!(m1.data, b"m1");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), second_stream.next())
            .await
            .is_err(),
        "the waiting consumer gets nothing while the first is active"
    );
    // The first host goes away with m1 unacknowledged: the second takes m1, then m2.
    first.close(200, "gone".into()).await.unwrap();
    let mut taken = Vec::new();
    for _ in 0..2 {
        let d = tokio::time::timeout(Duration::from_secs(5), second_stream.next())
            .await
            .expect("the second consumer takes over")
            .unwrap()
            .unwrap();
        taken.push(String::from_utf8_lossy(&d.data).to_string());
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_eq!(taken, ["m1", "m2"]);
    world.stop(&[&queues]).await;
}
