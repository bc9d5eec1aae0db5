//! End to end: the real `eventhost serve` process, the real PostgreSQL and RabbitMQ, the
//! built plugins. Each test has its own database, exchange, queues and ports.

mod common;

use common::serve::{cloud_event, ServeWorld};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);
const STATS: &str = "plugin_user_stats.user_stats";
const AUDIT: &str = "plugin_audit_log.audit_events";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_reaches_both_plugins_and_the_host_stops_cleanly() {
    let mut world = ServeWorld::start(&["user_stats", "audit_log"]).await;
    let id = world.register("ann@example.com").await.expect("register");
    let stats =
        format!("SELECT count(*) FROM {STATS} WHERE user_id = '{id}' AND created_via = 'event'");
    world.wait_count(&stats, 1, WAIT).await;
    let audit = format!(
        "SELECT count(*) FROM {AUDIT} WHERE aggregate_id = '{id}' AND event_type = 'user.created'"
    );
    world.wait_count(&audit, 1, WAIT).await;

    let (status, body) = world.get(&format!("/plugins/user-stats/stats/{id}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["createdVia"], "event");
    assert_eq!(body["repaired"], false);
    let (status, body) = world
        .get(&format!("/plugins/audit-log/events/user/{id}"))
        .await;
    assert_eq!(status, 200, "{body}");

    assert_eq!(
        world
            .metric("eventhost_plugin_handled_total", "user-stats")
            .await,
        1.0
    );
    assert_eq!(
        world
            .metric("eventhost_plugin_handled_total", "audit-log")
            .await,
        1.0
    );
    let (_, metrics) = world.get("/metrics").await;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    for name in [
        "eventhost_outbox_backlog 0",
        "eventhost_outbox_published_total 1",
        "eventhost_plugin_handler_duration_seconds_count{plugin=\"audit-log\"} 1",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    let (status, admin) = world.get("/admin/plugins").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = admin["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["audit-log", "user-stats"]);
    assert_eq!(
        admin["plugins"][1]["subscriptions"],
        json!(["user.#", "bid.placed"])
    );
    assert_eq!(world.get("/healthz").await.0, 200);
    assert_eq!(world.get("/plugins/nope/x").await.0, 404);

    let exit = world.terminate();
    assert!(
        exit.success(),
        "SIGTERM should end with exit 0, got {exit}\n{}",
        world.log()
    );
    assert!(world.log().contains("stopped"), "{}", world.log());
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_read_repair_creates_missing_stats_once() {
    let world = ServeWorld::start(&["user_stats"]).await;
    let insert = |id: Uuid, email: &str| {
        sqlx::query("INSERT INTO users (id, email, name, role) VALUES ($1, $2, 'Direct', 'admin')")
            .bind(id)
            .bind(email.to_string())
    };
    // A user whose event never reached the plugin.
    let lost = Uuid::new_v4();
    insert(lost, "lost@example.com")
        .execute(&world.pool)
        .await
        .unwrap();
    let (status, body) = world
        .get(&format!("/plugins/user-stats/stats/{lost}"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["repaired"], true);
    assert_eq!(body["role"], "admin");
    let row =
        format!("SELECT count(*) FROM {STATS} WHERE user_id = '{lost}' AND created_via = 'repair'");
    assert_eq!(world.count(&row).await, 1);
    let (status, body) = world
        .get(&format!("/plugins/user-stats/stats/{lost}"))
        .await;
    assert_eq!(
        (status, body["repaired"].clone()),
        (200, Value::Bool(false))
    );
    // The dashboard lists the repair once: the second read wrote nothing.
    let activity = world.ui_part("activity").await;
    assert_eq!(
        activity.matches(&format!("stats/{lost}")).count(),
        1,
        "{activity}"
    );

    let (status, _) = world
        .get(&format!("/plugins/user-stats/stats/{}", Uuid::new_v4()))
        .await;
    assert_eq!(status, 404);

    let racing = Uuid::new_v4();
    insert(racing, "racing@example.com")
        .execute(&world.pool)
        .await
        .unwrap();
    // 20 concurrent first reads of one missing row: all answer 200, one row results.
    let url = format!("{}/plugins/user-stats/stats/{racing}", world.api);
    let start = Arc::new(tokio::sync::Barrier::new(20));
    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (url, start) = (url.clone(), start.clone());
        reads.spawn(async move {
            let client = reqwest::Client::new();
            start.wait().await;
            let response = client.get(&url).send().await.expect("GET");
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        });
    }
    let answers = reads.join_all().await;
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    let repaired = answers
        .iter()
        .filter(|(_, b)| b["repaired"] == true)
        .count();
    assert!(repaired >= 1, "one read did the repair: {answers:?}");
    let row = format!("SELECT count(*) FROM {STATS} WHERE user_id = '{racing}'");
    assert_eq!(world.count(&row).await, 1);
    world.finish().await;
}

/// Publishes `body` to the world's exchange as a plain AMQP client would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_message_published_twice_has_one_effect() {
    let world = ServeWorld::start(&["user_stats", "audit_log"]).await;
    let (event_id, user) = (Uuid::new_v4(), Uuid::new_v4());
    let body = cloud_event(
        event_id,
        "user.created",
        &user.to_string(),
        json!({ "userId": user, "role": "user" }),
    );
    world
        .publish("user.created", &body, Some(&event_id.to_string()))
        .await;
    world
        .publish("user.created", &body, Some(&event_id.to_string()))
        .await;
    for plugin in ["user-stats", "audit-log"] {
        world
            .wait_metric("eventhost_plugin_duplicates_total", plugin, 1.0, WAIT)
            .await;
        assert_eq!(
            world.metric("eventhost_plugin_handled_total", plugin).await,
            1.0,
            "{plugin}"
        );
    }
    let audit = format!("SELECT count(*) FROM {AUDIT} WHERE event_id = '{event_id}'");
    assert_eq!(world.count(&audit).await, 1);
    let inbox = format!(
        "SELECT count(*) FROM plugin_audit_log._eventhost_inbox WHERE event_id = '{event_id}'"
    );
    assert_eq!(world.count(&inbox).await, 1);
    let stats = format!("SELECT count(*) FROM {STATS} WHERE user_id = '{user}'");
    assert_eq!(world.count(&stats).await, 1);
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_become_dead_letters_with_reasons_and_replay_after_a_fix() {
    let world = ServeWorld::start(&["probe"]).await;
    let subject = Uuid::new_v4().to_string();
    let gated = Uuid::new_v4();
    let retried = Uuid::new_v4();
    world
        .publish("probe.gated", b"{ this is not json", None)
        .await;
    let body = cloud_event(gated, "probe.gated", &subject, json!({ "key": "blue" }));
    world
        .publish("probe.gated", &body, Some(&gated.to_string()))
        .await;
    let body = cloud_event(
        retried,
        "probe.retry",
        &Uuid::new_v4().to_string(),
        json!({}),
    );
    world
        .publish("probe.retry", &body, Some(&retried.to_string()))
        .await;
    // The consumer keeps going after them.
    let fine = Uuid::new_v4();
    let body = cloud_event(fine, "probe.insert", &Uuid::new_v4().to_string(), json!({}));
    world
        .publish("probe.insert", &body, Some(&fine.to_string()))
        .await;
    let note =
        |id: Uuid| format!("SELECT count(*) FROM plugin_probe.notes WHERE event_id = '{id}'");
    world.wait_count(&note(fine), 1, WAIT).await;

    // Malformed and rejected at once; the retryable one after 3 attempts (200 ms, 400 ms).
    world
        .wait_metric("eventhost_plugin_dead_lettered_total", "probe", 3.0, WAIT)
        .await;
    assert_eq!(
        world
            .metric("eventhost_plugin_retried_total", "probe")
            .await,
        2.0
    );
    let (code, out) = world.cli(&["dlq", "list", "probe", "--json"]);
    assert_eq!(code, 0, "{out}");
    let letters: Vec<Value> = serde_json::from_str(&out).expect("dlq list --json");
    assert_eq!(letters.len(), 3, "{letters:?}");
    let by_id = |id: &str| {
        letters
            .iter()
            .find(|l| l["event_id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let malformed = letters
        .iter()
        .find(|l| l["event_id"].is_null())
        .expect("the malformed one");
    assert!(
        malformed["error"]
            .as_str()
            .unwrap()
            .contains("malformed event"),
        "{malformed}"
    );
    assert_eq!(malformed["event_type"], "probe.gated");
    let rejected = by_id(&gated.to_string());
    assert!(
        rejected["error"]
            .as_str()
            .unwrap()
            .contains("\"blue\" is not in allowed_keys"),
        "{rejected}"
    );
    assert_eq!(rejected["attempts"], 1);
    let exhausted = by_id(&retried.to_string());
    assert_eq!(exhausted["attempts"], 3, "{exhausted}");
    assert!(
        exhausted["error"]
            .as_str()
            .unwrap()
            .contains("asked to retry"),
        "{exhausted}"
    );
    // Listing does not consume.
    let (_, again) = world.cli(&["dlq", "list", "probe", "--json"]);
    assert_eq!(serde_json::from_str::<Vec<Value>>(&again).unwrap().len(), 3);

    // The fix: the key the plugin was missing. Then replay everything.
    sqlx::query("INSERT INTO plugin_probe.allowed_keys (key) VALUES ('blue')")
        .execute(&world.pool)
        .await
        .unwrap();
    let (code, out) = world.cli(&["dlq", "replay", "probe", "--id", &gated.to_string()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("replayed 1"), "{out}");
    world.wait_count(&note(gated), 1, WAIT).await;
    let (code, _) = world.cli(&["dlq", "replay", "probe", "--all"]);
    assert_eq!(code, 0);
    // The malformed message cannot be fixed by a replay: it comes back, with its reason,
    // and the retryable one is dead again after three more attempts. Nothing is lost.
    world
        .wait_metric("eventhost_plugin_dead_lettered_total", "probe", 5.0, WAIT)
        .await;
    let (_, out) = world.cli(&["dlq", "list", "probe", "--json"]);
    let left: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().all(|l| l["event_id"] != gated.to_string()));
    let (code, _) = world.cli(&[
        "dlq",
        "replay",
        "probe",
        "--id",
        &Uuid::new_v4().to_string(),
    ]);
    assert_eq!(code, 1, "an id not in the queue is reported");
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_wasm_is_refused_while_the_old_version_serves_and_removal_stops_it() {
    let world = ServeWorld::start(&["audit_log"]).await;
    let file = world.plugin_dir().join("audit_log.wasm");
    let (_, before) = world.get("/admin/plugins").await;
    let version = before["plugins"][0]["version"].clone();
    std::fs::write(&file, b"\0asm not really").unwrap();
    let mut status = Value::Null;
    for _ in 0..100 {
        let (_, admin) = world.get("/admin/plugins").await;
        status = admin["plugins"][0].clone();
        if status["state"] == "serving-previous" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status["state"], "serving-previous", "{status}");
    assert_eq!(status["version"], version);
    assert!(
        status["last_error"]
            .as_str()
            .unwrap()
            .contains("not a valid WebAssembly component"),
        "{status}"
    );
    world
        .wait_metric(
            "eventhost_plugin_reload_failures_total",
            "audit-log",
            1.0,
            WAIT,
        )
        .await;
    // Still handling events on the old version.
    let id = world.register("bob@example.com").await.unwrap();
    world
        .wait_count(
            &format!("SELECT count(*) FROM {AUDIT} WHERE aggregate_id = '{id}'"),
            1,
            WAIT,
        )
        .await;

    std::fs::remove_file(&file).unwrap();
    let mut gone = false;
    for _ in 0..100 {
        let (_, admin) = world.get("/admin/plugins").await;
        if admin["plugins"].as_array().is_some_and(|p| p.is_empty()) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "removing the file stops the plugin");
    assert_eq!(
        world.get("/readyz").await.0,
        503,
        "no plugin loaded: not ready"
    );
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_a_run_then_restart_loses_and_doubles_nothing() {
    let mut world = ServeWorld::start(&["user_stats", "audit_log"]).await;
    let run = tokio::spawn(common::serve::register_many(
        world.auth.clone(),
        "crash",
        1000,
        4,
    ));
    world
        .wait_count_at_least(
            "SELECT count(*) FROM plugin_audit_log.audit_events",
            300,
            WAIT,
        )
        .await;
    world.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    world.spawn().await;
    assert_eq!(run.await.expect("registrations"), 1000);
    world
        .assert_every_user_handled_once(1000, Duration::from_secs(120))
        .await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_one_aggregate_are_handled_in_order_while_aggregates_run_concurrently() {
    let world = ServeWorld::start(&["audit_log"]).await;
    let http = reqwest::Client::new();
    let mut users = Vec::new();
    for i in 0..8 {
        users.push(
            world
                .register(&format!("order-{i}@example.com"))
                .await
                .unwrap(),
        );
    }
    // Each user's role changes in sequence, all users at once: interleaved in the outbox.
    let mut changes = tokio::task::JoinSet::new();
    for id in users.clone() {
        let (http, auth) = (http.clone(), world.auth.clone());
        changes.spawn(async move {
            for n in 0..12 {
                let url = format!("{auth}/auth/users/{id}/role");
                let role = format!("role-{n}");
                let response = http
                    .post(url)
                    .json(&json!({ "role": role }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
        });
    }
    changes.join_all().await;
    world
        .wait_count(&format!("SELECT count(*) FROM {AUDIT}"), 8 * 13, WAIT)
        .await;
    for id in users {
        let published: Vec<Uuid> = sqlx::query_scalar(
            "SELECT event_id FROM outbox_events WHERE aggregate_id = $1 ORDER BY seq",
        )
        .bind(id.to_string())
        .fetch_all(&world.pool)
        .await
        .unwrap();
        let handled: Vec<Uuid> = sqlx::query_scalar(&format!(
            "SELECT event_id::uuid FROM {AUDIT} WHERE aggregate_id = $1 ORDER BY seq"
        ))
        .bind(id.to_string())
        .fetch_all(&world.pool)
        .await
        .unwrap();
        assert_eq!(published.len(), 13);
        assert_eq!(handled, published, "user {id}: handled out of outbox order");
    }
    world.finish().await;
}

/// A valid component with different bytes: the original plus a custom section.
fn with_custom_section(mut wasm: Vec<u8>, note: &str) -> Vec<u8> {
    let mut payload = vec![4u8];
    payload.extend_from_slice(b"note");
    payload.extend_from_slice(note.as_bytes());
    assert!(payload.len() < 128, "one-byte LEB128 length");
    wasm.push(0); // custom section id
    wasm.push(payload.len() as u8);
    wasm.extend(payload);
    wasm
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_dropped_in_takes_over_without_a_restart() {
    let world = ServeWorld::start(&["audit_log"]).await;
    let (_, before) = world.get("/admin/plugins").await;
    let old = before["plugins"][0]["version"]
        .as_str()
        .unwrap()
        .to_string();
    let file = world.plugin_dir().join("audit_log.wasm");
    let next = with_custom_section(std::fs::read(&file).unwrap(), "v2");
    let staged = world.plugin_dir().join(".audit_log.wasm.tmp");
    std::fs::write(&staged, next).unwrap();
    std::fs::rename(&staged, &file).unwrap();
    let mut now = Value::Null;
    for _ in 0..100 {
        let (_, admin) = world.get("/admin/plugins").await;
        now = admin["plugins"][0].clone();
        if now["version"] != old.as_str() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(now["version"], old.as_str(), "{now}");
    assert_eq!(now["state"], "serving");
    let id = world.register("carol@example.com").await.unwrap();
    world
        .wait_count(
            &format!("SELECT count(*) FROM {AUDIT} WHERE aggregate_id = '{id}'"),
            1,
            WAIT,
        )
        .await;
    assert_eq!(
        world
            .metric("eventhost_plugin_reload_failures_total", "audit-log")
            .await,
        0.0
    );
    world.finish().await;
}

#[test]
fn serve_documents_its_flags_and_a_bad_value_names_its_field() {
    let bin = common::serve::binary();
    let help = std::process::Command::new(bin)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--plugin-dir",
        "EVENTHOST_PLUGIN_DIR",
        "--listen",
        "--amqp-url",
        "AMQP_URL",
        "DATABASE_URL",
        "--config",
    ] {
        assert!(
            help.contains(flag),
            "{flag} missing from serve --help:\n{help}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[consumer]\nconcurrency = 0\n").unwrap();
    let out = std::process::Command::new(bin)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("consumer.concurrency"), "{stderr}");
    std::fs::write(&config, "[consumer]\nretry_delays = [\"soon\"]\n").unwrap();
    let out = std::process::Command::new(bin)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(2) && stderr.contains("retry_delays"),
        "{stderr}"
    );
}

/// A CloudEvent with only the attributes the spec requires (`specversion`, `id`,
/// `source`, `type`), as a plain AMQP client publishes it, is handled with eventhost's
/// documented defaults instead of being dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minimal_spec_valid_cloudevent_is_handled_with_the_defaults() {
    let world = ServeWorld::start(&["audit_log"]).await;
    let id = Uuid::new_v4();
    let body = json!({ "specversion": "1.0", "id": id, "source": "https://shop.example", "type": "order.placed" });
    world
        .publish("order.placed", body.to_string().as_bytes(), None)
        .await;
    let sql = format!(
        "SELECT count(*) FROM plugin_audit_log.audit_events
         WHERE event_id = '{id}' AND aggregate_type = 'order' AND aggregate_id = '{id}'
           AND payload = 'null'::jsonb AND occurred_at > now() - interval '1 minute'"
    );
    world.wait_count(&sql, 1, WAIT).await;
    world.finish().await;
}

/// CloudEvents in binary content mode over AMQP: the attributes as headers (both
/// prefixes of the AMQP binding, and the `ce-` some SDKs send), the data as the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_mode_cloudevents_are_handled() {
    use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
    let world = ServeWorld::start(&["audit_log"]).await;
    let mut ids = Vec::new();
    for prefix in ["cloudEvents:", "cloudEvents_", "ce-"] {
        let id = Uuid::new_v4();
        ids.push(id);
        let mut headers = FieldTable::default();
        for (name, value) in [
            ("specversion", "1.0".to_string()),
            ("id", id.to_string()),
            ("source", "https://shop.example".to_string()),
            ("type", "order.placed".to_string()),
            ("subject", format!("order-{prefix}")),
        ] {
            headers.insert(
                ShortString::from(format!("{prefix}{name}")),
                AMQPValue::LongString(LongString::from(value)),
            );
        }
        let properties = lapin::BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ShortString::from("application/json"))
            .with_headers(headers);
        world
            .publish_with("order.placed", br#"{"total": "12.50"}"#, properties)
            .await;
    }
    for (id, prefix) in ids.iter().zip(["cloudEvents:", "cloudEvents_", "ce-"]) {
        let sql = format!(
            "SELECT count(*) FROM plugin_audit_log.audit_events
             WHERE event_id = '{id}' AND aggregate_id = 'order-{prefix}'
               AND payload = '{{\"total\": \"12.50\"}}'::jsonb"
        );
        world.wait_count(&sql, 1, WAIT).await;
    }
    world.finish().await;
}
