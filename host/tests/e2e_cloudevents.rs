//! CloudEvents as other publishers send them, with the reference clients: the CloudEvents
//! Python SDK (its RabbitMQ binding, structured and binary, and its AMQP binding) and
//! pika with a hand-written body; and what the relay publishes, read back by the SDK.

mod common;

use common::outbox::amqp_url;
use common::serve::{Extra, ServeWorld};
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn client() -> String {
    common::repo_path("tests/clients/cloudevents_client.py")
        .display()
        .to_string()
}

/// Publishes `events` (see `tests/clients/cloudevents_client.py`) to the world's exchange
/// with the SDK and pika, in order, each confirmed.
fn publish(world: &ServeWorld, events: &Value) {
    let mut child = Command::new(common::toolchains().python)
        .args([&client(), "publish", &amqp_url(), &world.exchange])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the CloudEvents client");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(events.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "publishing with the SDK failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn audit_rows(source: &str, id: &str) -> String {
    format!(
        "SELECT count(*) FROM plugin_audit_log.audit_events
         WHERE source = '{source}' AND event_id = '{id}'"
    )
}

/// Any spec-valid CloudEvent is handled, in either content mode, whatever string its id
/// is: ids are keys together with the source, so two publishers' `1` are two events, and
/// the same source and id again is a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_and_a_plain_client_publish_events_that_are_handled() {
    let world = ServeWorld::start(&["audit_log"]).await;
    let shop = "https://shop.example/orders";
    let events = json!([
        // The SDK's structured mode; no subject: ordered by its own id.
        {"mode": "structured", "attributes": {"id": "01JEZ8C6Q9X7W3V2T1S0R9P8N7", "source": shop,
         "type": "order.placed"}, "data": {"total": "12.50"}},
        // Binary, `ce-` headers; a counter id.
        {"mode": "binary-rabbitmq", "attributes": {"id": "1", "source": shop, "type": "order.paid",
         "subject": "order-7"}, "data": {"paid": true}},
        // Binary, the AMQP binding's `cloudEvents_` properties and a millisecond timestamp;
        // the same id from another source.
        {"mode": "binary-amqp", "attributes": {"id": "1", "source": "https://billing.example",
         "type": "invoice.sent", "subject": "invoice-3", "time": "2026-12-06T09:30:00.250Z"},
         "data": {"amount": 4}},
        // No SDK: only the required attributes, a body by hand.
        {"mode": "plain", "attributes": {"specversion": "1.0", "id": "counter 2", "source": shop,
         "type": "order.shipped"}},
        // The SDK's binary event again: a duplicate.
        {"mode": "binary-rabbitmq", "attributes": {"id": "1", "source": shop, "type": "order.paid",
         "subject": "order-7"}, "data": {"paid": true}},
    ]);
    publish(&world, &events);
    world
        .wait_count(&audit_rows(shop, "01JEZ8C6Q9X7W3V2T1S0R9P8N7"), 1, WAIT)
        .await;
    world
        .wait_count(&audit_rows("https://billing.example", "1"), 1, WAIT)
        .await;
    world
        .wait_count(&audit_rows(shop, "counter 2"), 1, WAIT)
        .await;
    world.wait_count(&audit_rows(shop, "1"), 1, WAIT).await;
    world
        .wait_metric("eventhost_plugin_duplicates_total", "audit-log", 1.0, WAIT)
        .await;
    let inbox = "SELECT count(*) FROM plugin_audit_log._eventhost_inbox";
    assert_eq!(
        world.count(inbox).await,
        4,
        "one inbox row per source and id"
    );
    // The defaults and what each binding carried.
    let checks = [
        format!(
            "{} AND aggregate_type = 'order' AND aggregate_id = event_id
             AND payload = '{{\"total\": \"12.50\"}}'::jsonb",
            audit_rows(shop, "01JEZ8C6Q9X7W3V2T1S0R9P8N7")
        ),
        format!(
            "{} AND aggregate_id = 'order-7' AND payload = '{{\"paid\": true}}'::jsonb",
            audit_rows(shop, "1")
        ),
        format!(
            "{} AND aggregate_id = 'invoice-3'
             AND occurred_at = '2026-12-06T09:30:00.250Z'::timestamptz",
            audit_rows("https://billing.example", "1")
        ),
        format!(
            "{} AND payload = 'null'::jsonb AND aggregate_id = 'counter 2'",
            audit_rows(shop, "counter 2")
        ),
    ];
    for sql in checks {
        assert_eq!(world.count(&sql).await, 1, "{sql}");
    }
    world.finish().await;
}

/// Data that is not JSON is handled too, as a JSON string with its media type in the
/// headers. Only what is truly unusable is a dead letter, and its reason names the
/// attribute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_data_is_handled_and_only_unusable_events_are_dead_letters() {
    let world = ServeWorld::start(&["audit_log"]).await;
    let events = json!([
        {"mode": "binary-rabbitmq", "attributes": {"id": "x-1", "source": "s", "type": "note.made",
         "datacontenttype": "text/plain"}, "data": "plain words"},
        {"mode": "plain", "attributes": {"specversion": "1.0", "id": "", "source": "s",
         "type": "note.made"}},
        {"mode": "plain", "attributes": {"specversion": "1.0", "id": "x-3", "type": "note.made"}},
        {"mode": "plain", "attributes": {"specversion": "1.0", "id": "x-4", "source": "s",
         "type": "note.made", "data_base64": "%%%"}},
    ]);
    publish(&world, &events);
    world
        .wait_count(
            &format!(
                "{} AND payload = '\"plain words\"'::jsonb
                 AND headers->>'datacontenttype' = 'text/plain'",
                audit_rows("s", "x-1")
            ),
            1,
            WAIT,
        )
        .await;
    world
        .wait_metric(
            "eventhost_plugin_dead_lettered_total",
            "audit-log",
            3.0,
            WAIT,
        )
        .await;
    let (code, out) = world.cli(&["dlq", "list", "audit-log", "--json"]);
    assert_eq!(code, 0, "{out}");
    let letters: Vec<Value> = serde_json::from_str(&out).expect("dlq list --json");
    let reasons: Vec<&str> = letters.iter().filter_map(|l| l["error"].as_str()).collect();
    for expected in [
        "attribute `id` must not be empty",
        "missing attribute `source`",
        "attribute `data_base64` is not base64",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "no reason with {expected:?} in {reasons:?}"
        );
    }
    world.finish().await;
}

/// What the relay publishes is a CloudEvent the SDK reads, with the attributes and
/// extensions the README lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_relay_publishes_parses_with_the_sdk() {
    let world = ServeWorld::start(&["audit_log"]).await;
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = conn.create_channel().await.expect("channel");
    let queue = format!("{}.sdk-reader", world.prefix);
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare");
    channel
        .queue_bind(
            queue.as_str().into(),
            world.exchange.as_str().into(),
            "user.created".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    let user = world
        .register("sdk.reader@example.com")
        .await
        .expect("register");
    let out = Command::new(common::toolchains().python)
        .args([&client(), "read", &amqp_url(), &queue, "1"])
        .output()
        .expect("run the CloudEvents client");
    assert!(
        out.status.success(),
        "the SDK could not read the relay's message: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    let a = &read["attributes"];
    assert_eq!(a["specversion"], "1.0");
    assert_eq!(a["type"], "user.created");
    assert_eq!(a["subject"], user.to_string());
    assert_eq!(a["aggregatetype"], "user");
    assert_eq!(a["datacontenttype"], "application/json");
    assert!(a["id"].as_str().is_some_and(|id| !id.is_empty()), "{a}");
    assert!(a["time"].as_str().is_some(), "{a}");
    assert!(
        a["traceparent"]
            .as_str()
            .is_some_and(|t| t.starts_with("00-")),
        "{a}"
    );
    assert_eq!(read["data"]["userId"], user.to_string());
    conn.close(200, "done".into()).await.ok();
    world.finish().await;
}

/// Events from other publishers carry no partitioning key; each goes back through the
/// plugin's entry with its aggregate's, so it reaches the partition the relay's events of
/// that aggregate use, and one aggregate's events keep their order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_publishers_events_reach_their_aggregates_partition_in_order() {
    let world = ServeWorld::start_with(
        &["audit_log", "user_stats"],
        Extra {
            consumer: "partitions = 4",
            ..Extra::default()
        },
    )
    .await;
    // user-stats refuses these payloads (no userId): its dead letters show the headers
    // each message went through the partitions with.
    let subjects: Vec<String> = (0..6).map(|s| format!("user-{s}")).collect();
    let mut events = Vec::new();
    for n in 0..5 {
        for subject in &subjects {
            events.push(json!({"mode": "binary-rabbitmq", "attributes": {
                "id": format!("{subject}/{n}"), "source": "https://legacy.example",
                "type": "user.created", "subject": subject}, "data": {"n": n}}));
        }
    }
    publish(&world, &Value::Array(events));
    let all = "SELECT count(*) FROM plugin_audit_log.audit_events";
    world.wait_count(all, 30, WAIT).await;
    for subject in &subjects {
        let order: Vec<i64> = sqlx::query_scalar(
            "SELECT (payload->>'n')::bigint FROM plugin_audit_log.audit_events
             WHERE aggregate_id = $1 ORDER BY seq",
        )
        .bind(subject)
        .fetch_all(&world.pool)
        .await
        .unwrap();
        assert_eq!(order, vec![0, 1, 2, 3, 4], "{subject} out of order");
    }
    world
        .wait_metric(
            "eventhost_plugin_dead_lettered_total",
            "user-stats",
            30.0,
            WAIT,
        )
        .await;
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = conn.create_channel().await.expect("channel");
    let dead = format!("{}.user-stats.dead", world.prefix);
    let mut keys = std::collections::BTreeSet::new();
    while let Some(message) = channel
        .basic_get(dead.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("get")
    {
        let headers = message
            .delivery
            .properties
            .headers()
            .clone()
            .unwrap_or_default();
        match headers.inner().get("x-eventhost-aggregate") {
            Some(AMQPValue::LongString(key)) => {
                keys.insert(String::from_utf8_lossy(key.as_bytes()).into_owned());
            }
            other => panic!("a dead letter without its partitioning key: {other:?}"),
        }
    }
    let expected: std::collections::BTreeSet<String> =
        subjects.iter().map(|s| format!("user/{s}")).collect();
    assert_eq!(keys, expected);
    conn.close(200, "done".into()).await.ok();
    world.finish().await;
}
