//! The relay against the real PostgreSQL and RabbitMQ: its publication (what a plain
//! AMQP client sees), outages, concurrency, ordering, dead letters and replay.

mod common;

use common::outbox::{fast_relay, user_event, OutboxWorld, Proxy};
use eventhost::config::BrokerConfig;
use eventhost::outbox::{self, NewEvent, ReplaySelector};
use eventhost::Event;
use lapin::types::AMQPValue;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_publishes_a_cloudevent_with_its_properties_and_marks_the_row() {
    let world = OutboxWorld::start().await;
    let mut observer = world.observe().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let event = user_event("u-1", "user.created", 1)
        .with_header("traceparent", traceparent)
        .with_header("tenant", "acme")
        .with_schema_version(2);
    world.enqueue(std::slice::from_ref(&event)).await;
    let relay = world.relay(fast_relay());

    let delivery = observer
        .next(Duration::from_secs(20))
        .await
        .expect("a message");
    assert_eq!(delivery.exchange.as_str(), world.broker.exchange);
    assert_eq!(delivery.routing_key.as_str(), "user.created");
    let p = &delivery.properties;
    assert_eq!(p.delivery_mode(), &Some(2), "persistent");
    assert_eq!(
        p.message_id().as_ref().map(|s| s.as_str().to_string()),
        Some(event.id.to_string())
    );
    assert_eq!(
        p.content_type().as_ref().map(|s| s.as_str()),
        Some("application/cloudevents+json")
    );
    assert_eq!(p.kind().as_ref().map(|s| s.as_str()), Some("user.created"));
    assert_eq!(p.timestamp(), &Some(event.occurred_at.timestamp() as u64));
    let headers = p.headers().as_ref().expect("headers").inner();
    let header = |name: &str| match headers.get(name) {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        other => panic!("header {name}: {other:?}"),
    };
    assert_eq!(header("traceparent"), traceparent);
    assert_eq!(header("tenant"), "acme");

    let body = Event::from_json_bytes(&delivery.data).expect("body is a structured CloudEvent");
    assert_eq!(body.id.0, event.id.to_string());
    assert_eq!(body.event_type, "user.created");
    assert_eq!(body.subject, "u-1");
    assert_eq!(body.aggregate_type, "user");
    assert_eq!(body.source, "tests");
    assert_eq!(body.schema_version, 2);
    assert_eq!(body.data, json!({ "userId": "u-1", "n": 1 }));
    assert_eq!(
        body.time.timestamp_micros(),
        event.occurred_at.timestamp_micros()
    );
    assert!(body
        .headers
        .contains(&("traceparent".to_string(), traceparent.to_string())));

    world
        .wait_for("published", 1, Duration::from_secs(10))
        .await;
    let (status, published_at): (String, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT status, published_at FROM outbox_events WHERE event_id = $1")
            .bind(event.id)
            .fetch_one(&world.pool)
            .await
            .unwrap();
    assert_eq!(status, "published");
    assert!(published_at.is_some());
    assert!(
        observer.next(Duration::from_millis(500)).await.is_none(),
        "published once"
    );
    relay.stop().await;
    observer.close().await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_broker_down_events_wait_and_drain_when_it_is_back() {
    let world = OutboxWorld::start().await;
    let mut observer = world.observe().await;
    let proxy = Proxy::start("127.0.0.1:5672").await;
    proxy.cut();
    let broker = BrokerConfig {
        url: proxy.url(),
        ..world.broker.clone()
    };
    let relay = world.relay_via(broker, fast_relay());

    // Registration goes through the auth service while the broker is unreachable.
    let app = eventhost::auth_service::router(world.pool.clone(), "auth-service".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..3 {
        let response = client
            .post(format!("http://{addr}/auth/register"))
            .json(&json!({ "email": format!("user{i}@example.com"), "name": "Ann" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let body: serde_json::Value = response.json().await.unwrap();
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        world.count("pending").await,
        3,
        "events wait while the broker is down"
    );
    let attempts: i64 = sqlx::query_scalar("SELECT coalesce(sum(attempts), 0) FROM outbox_events")
        .fetch_one(&world.pool)
        .await
        .unwrap();
    assert_eq!(attempts, 0, "an outage is not the events' fault");
    assert!(observer.next(Duration::from_millis(200)).await.is_none());

    proxy.restore();
    let deliveries = observer.take(3, Duration::from_secs(30)).await;
    let mut subjects: Vec<String> = deliveries
        .iter()
        .map(|d| Event::from_json_bytes(&d.data).unwrap().subject)
        .collect();
    subjects.sort();
    ids.sort();
    assert_eq!(subjects, ids);
    world
        .wait_for("published", 3, Duration::from_secs(10))
        .await;

    // A second outage in the middle of running: the relay reconnects again by itself.
    proxy.cut();
    world
        .enqueue(&[user_event("u-late", "user.created", 1)])
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.restore();
    let late = observer.take(1, Duration::from_secs(30)).await;
    assert_eq!(
        Event::from_json_bytes(&late[0].data).unwrap().subject,
        "u-late"
    );

    server.abort();
    relay.stop().await;
    observer.close().await;
    world.stop().await;
}

/// Publishes `per_aggregate` events for each of `aggregates` users, interleaved, in
/// chunks of 1 000 per transaction. Returns them in write order.
async fn fill(world: &OutboxWorld, aggregates: usize, per_aggregate: u64) -> Vec<NewEvent> {
    let mut events = Vec::new();
    for n in 0..per_aggregate {
        for a in 0..aggregates {
            events.push(user_event(&format!("user-{a}"), "user.updated", n));
        }
    }
    for chunk in events.chunks(1000) {
        world.enqueue(chunk).await;
    }
    events
}

/// Every message id once, and per aggregate the payload's `n` strictly increasing.
fn assert_once_and_in_order(deliveries: &[lapin::message::Delivery], expected: usize) {
    let mut seen = HashSet::new();
    let mut last: HashMap<String, i64> = HashMap::new();
    for d in deliveries {
        let event = Event::from_json_bytes(&d.data).unwrap();
        assert!(
            seen.insert(event.id.clone()),
            "event {} published twice",
            event.id
        );
        let n = event.data["n"].as_i64().unwrap();
        if let Some(prev) = last.insert(event.subject.clone(), n) {
            assert!(
                n > prev,
                "aggregate {} out of order: {n} arrived after {prev}",
                event.subject
            );
        }
    }
    assert_eq!(seen.len(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_publish_ten_thousand_rows_each_exactly_once_and_in_aggregate_order() {
    let world = OutboxWorld::start().await;
    let mut observer = world.observe().await;
    fill(&world, 200, 50).await;
    let config = eventhost::config::RelayConfig {
        batch_size: 300,
        ..fast_relay()
    };
    let (a, b) = (world.relay(config.clone()), world.relay(config));
    let deliveries = observer.take(10_000, Duration::from_secs(120)).await;
    world
        .wait_for("published", 10_000, Duration::from_secs(30))
        .await;
    assert!(
        observer.next(Duration::from_secs(1)).await.is_none(),
        "no extra copies"
    );
    assert_once_and_in_order(&deliveries, 10_000);
    let by_a = a
        .relay
        .stats()
        .published
        .load(std::sync::atomic::Ordering::Relaxed);
    let by_b = b
        .relay
        .stats()
        .published
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(by_a + by_b, 10_000);
    a.stop().await;
    b.stop().await;
    observer.close().await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_aggregates_events_arrive_in_order_while_it_is_written_to() {
    let world = OutboxWorld::start().await;
    let mut observer = world.observe().await;
    // No polling to fall back on: a held row must be picked up as soon as what held it
    // is done, not at the next poll.
    let config = eventhost::config::RelayConfig {
        batch_size: 7,
        workers: 3,
        poll_interval: Duration::from_secs(300),
        ..fast_relay()
    };
    let (a, b) = (world.relay(config.clone()), world.relay(config));
    // Written while the relays run, from two concurrent producers of one aggregate.
    let write = |offset: u64| {
        let pool = world.pool.clone();
        async move {
            for n in 0..150u64 {
                let mut tx = pool.begin().await.unwrap();
                let seq = offset + n * 2;
                outbox::enqueue(&mut tx, &[user_event("the-one", "user.updated", seq)])
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
        }
    };
    tokio::join!(write(0), write(1));
    let deliveries = observer.take(300, Duration::from_secs(30)).await;
    // Order is commit order: compare with the outbox's sequence, which the producer's
    // per-aggregate lock makes equal to it.
    let seq_order: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT event_id FROM outbox_events ORDER BY seq")
            .fetch_all(&world.pool)
            .await
            .unwrap();
    let arrival: Vec<uuid::Uuid> = deliveries
        .iter()
        .map(|d| {
            Event::from_json_bytes(&d.data)
                .unwrap()
                .id
                .0
                .parse::<uuid::Uuid>()
                .unwrap()
        })
        .collect();
    assert_eq!(
        arrival, seq_order,
        "events of one aggregate arrive in outbox order"
    );
    a.stop().await;
    b.stop().await;
    observer.close().await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_keeps_failing_ends_dead_without_blocking_others_and_replay_revives_it() {
    let world = OutboxWorld::start().await;
    let mut observer = world.observe().await;
    let poison = NewEvent::new(
        "tests",
        "user",
        "u-poison",
        "user.updated",
        json!({ "n": 0, "blob": "x".repeat(4096) }),
    );
    let after_poison = user_event("u-poison", "user.updated", 1);
    let other = user_event("u-other", "user.updated", 0);
    world
        .enqueue(&[poison.clone(), after_poison.clone(), other.clone()])
        .await;
    let small = eventhost::config::RelayConfig {
        max_message_bytes: 2048,
        max_attempts: 3,
        ..fast_relay()
    };
    let relay = world.relay(small);

    // The other aggregate is not held up by the failing one.
    let first = observer.take(1, Duration::from_secs(20)).await;
    assert_eq!(
        Event::from_json_bytes(&first[0].data).unwrap().id.0,
        other.id.to_string()
    );
    world.wait_for("dead", 1, Duration::from_secs(20)).await;
    let (attempts, error): (i32, String) = sqlx::query_as(
        "SELECT attempts, last_error FROM outbox_events WHERE event_id = $1 AND status = 'dead'",
    )
    .bind(poison.id)
    .fetch_one(&world.pool)
    .await
    .unwrap();
    assert_eq!(attempts, 3);
    assert!(error.contains("max_message_bytes"), "{error}");
    // Its aggregate's next event waited while it was retried, and goes once it is dead.
    let next = observer.take(1, Duration::from_secs(20)).await;
    assert_eq!(
        Event::from_json_bytes(&next[0].data).unwrap().id.0,
        after_poison.id.to_string()
    );

    world
        .wait_for("published", 2, Duration::from_secs(10))
        .await;
    let status = outbox::status(&world.pool).await.unwrap();
    assert_eq!((status.pending, status.published, status.dead), (0, 2, 1));

    // The operator raises the limit and replays it.
    relay.stop().await;
    let relay = world.relay(fast_relay());
    assert_eq!(
        outbox::replay(
            &world.pool,
            &ReplaySelector::EventType("user.created".into())
        )
        .await
        .unwrap(),
        0,
        "no dead user.created"
    );
    assert_eq!(
        outbox::replay(&world.pool, &ReplaySelector::Ids(vec![poison.id]))
            .await
            .unwrap(),
        1
    );
    let revived = observer.take(1, Duration::from_secs(20)).await;
    assert_eq!(
        Event::from_json_bytes(&revived[0].data).unwrap().id.0,
        poison.id.to_string()
    );
    world
        .wait_for("published", 3, Duration::from_secs(10))
        .await;
    assert_eq!(world.count("dead").await, 0);
    relay.stop().await;
    observer.close().await;
    world.stop().await;
}
