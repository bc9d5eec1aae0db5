//! The imports behave as the contract says: auth over HTTP, concurrent on-read repairs,
//! and components that are not plugins are refused with a clear message.

mod common;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use common::{event, TestHost};
use eventhost::config::{AuthBackend, Limits};
use eventhost::runtime::{LoadError, ReadRequest};
use eventhost::{Outcome, PluginName};
use serde_json::{json, Value};
use std::time::Duration;

fn get_request(path: String) -> ReadRequest {
    ReadRequest {
        method: "GET".into(),
        path,
        query: Vec::new(),
    }
}

/// A stand-in external auth service on port 0 that knows exactly one user.
async fn auth_service(known: uuid::Uuid) -> String {
    let app = Router::new().route(
        "/auth/users/{id}",
        get(move |Path(id): Path<uuid::Uuid>| async move {
            if id == known {
                Ok(Json(json!({ "id": id, "email": "ext@example.com", "name": "External", "role": "nurse",
                                "active": true, "createdAt": "2026-01-02T03:04:05Z" })))
            } else {
                Err(StatusCode::NOT_FOUND)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn on_read_repair_asks_an_http_auth_service() {
    let known = uuid::Uuid::new_v4();
    let url = auth_service(known).await;
    let auth = AuthBackend::Http {
        url,
        timeout: Duration::from_secs(2),
        ca_file: None,
    };
    let host = TestHost::start(Limits::default(), auth).await;
    let plugin = host.load("user_stats").await;

    let (response, logs) = plugin.read(get_request(format!("stats/{known}"))).await;
    let response = response.unwrap();
    assert_eq!(response.status, 200);
    let body: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(body["role"], "nurse");
    assert_eq!(body["repaired"], true);
    assert!(
        logs.iter()
            .any(|(_, m)| m == &format!("self-healing triggered for user {known}")),
        "{logs:?}"
    );

    let unknown = uuid::Uuid::new_v4();
    let (response, _) = plugin.read(get_request(format!("stats/{unknown}"))).await;
    assert_eq!(response.unwrap().status, 404);
    let rows = plugin
        .query_json("SELECT user_id FROM user_stats")
        .await
        .unwrap();
    assert_eq!(rows, vec![json!({ "user_id": known })]);
    host.stop().await;
}

#[tokio::test]
async fn auth_service_down_is_a_503_not_a_404() {
    let auth = AuthBackend::Http {
        url: "http://127.0.0.1:9".into(),
        timeout: Duration::from_millis(500),
        ca_file: None,
    };
    let host = TestHost::start(Limits::default(), auth).await;
    let plugin = host.load("user_stats").await;
    let (response, _) = plugin
        .read(get_request(format!("stats/{}", uuid::Uuid::new_v4())))
        .await;
    assert_eq!(response.unwrap().status, 503);
    host.stop().await;
}

#[tokio::test]
async fn concurrent_repairs_of_one_user_make_one_row() {
    let host = TestHost::default().await;
    let plugin = std::sync::Arc::new(host.load("user_stats").await);
    let user = uuid::Uuid::new_v4();
    sqlx::query("INSERT INTO users (id, email, name) VALUES ($1, 'race@example.com', 'Race')")
        .bind(user)
        .execute(&host.pool)
        .await
        .unwrap();
    let reads = (0..20).map(|_| {
        let plugin = plugin.clone();
        tokio::spawn(async move {
            plugin
                .read(get_request(format!("stats/{user}")))
                .await
                .0
                .map(|r| r.status)
        })
    });
    for read in futures_join(reads).await {
        assert_eq!(read, Ok(200));
    }
    let rows = plugin
        .query_json(&format!(
            "SELECT created_via FROM user_stats WHERE user_id = '{user}'"
        ))
        .await
        .unwrap();
    assert_eq!(rows, vec![json!({ "created_via": "repair" })]);
    host.stop().await;
}

/// `HEAD` runs the read hook in a read-only transaction: user-stats' on-read repair cannot
/// write, so the row appears only with the `GET` after it.
#[tokio::test]
async fn a_head_read_cannot_write() {
    let host = TestHost::default().await;
    let plugin = host.load("user_stats").await;
    let user = uuid::Uuid::new_v4();
    sqlx::query("INSERT INTO users (id, email, name) VALUES ($1, 'head@example.com', 'Head')")
        .bind(user)
        .execute(&host.pool)
        .await
        .unwrap();
    let rows = format!("SELECT created_via FROM user_stats WHERE user_id = '{user}'");
    let head = ReadRequest {
        method: "HEAD".into(),
        ..get_request(format!("stats/{user}"))
    };
    let (answer, _) = plugin.read(head).await;
    let answer = answer.expect("the hook ran");
    let body = String::from_utf8_lossy(&answer.body).into_owned();
    assert_eq!(
        answer.status, 500,
        "the repair's INSERT was refused: {body}"
    );
    assert!(body.contains("25006"), "read-only transaction: {body}");
    assert!(
        plugin.query_json(&rows).await.unwrap().is_empty(),
        "nothing written"
    );
    let (answer, _) = plugin.read(get_request(format!("stats/{user}"))).await;
    assert_eq!(answer.unwrap().status, 200);
    assert_eq!(
        plugin.query_json(&rows).await.unwrap(),
        vec![json!({ "created_via": "repair" })]
    );
    host.stop().await;
}

async fn futures_join<T>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test]
async fn broken_components_are_refused_with_a_reason() {
    let host = TestHost::default().await;
    let name = PluginName::parse("broken").unwrap();
    let garbage = host
        .runtime
        .load(name.clone(), b"\0asm not really")
        .await
        .err()
        .unwrap();
    assert!(matches!(garbage, LoadError::Compile(_)), "{garbage}");
    assert!(
        garbage
            .to_string()
            .contains("not a valid WebAssembly component"),
        "{garbage}"
    );

    let bad_name = host
        .runtime
        .load_file(std::path::Path::new("/tmp/Not_A_Name!.wasm"))
        .await
        .err()
        .unwrap();
    assert!(
        bad_name.to_string().contains("invalid plugin name"),
        "{bad_name}"
    );
    host.stop().await;
}

#[tokio::test]
async fn handler_without_sql_commits_nothing_and_errors_roll_back() {
    let host = TestHost::default().await;
    let probe = host.load("probe").await;
    assert_eq!(
        probe
            .handle(&event("probe.noop", "x", json!({})))
            .await
            .outcome,
        Outcome::Ok
    );
    let retry = probe
        .handle(&event("probe.retry", "x", json!({})))
        .await
        .outcome;
    assert_eq!(retry, Outcome::Retryable("asked to retry".into()));
    let permanent = probe
        .handle(&event("probe.permanent", "x", json!({})))
        .await
        .outcome;
    assert_eq!(permanent.class(), "permanent");
    assert!(probe
        .query_json("SELECT * FROM notes")
        .await
        .unwrap()
        .is_empty());
    host.stop().await;
}

/// A plugin's role makes room for every host of the deployment, and a delivery that finds
/// no connection in time is short of room, which is not one of its attempts: nothing
/// commits, and the same event goes through once there is room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_connection_in_time_is_capacity_not_a_failed_attempt() {
    let limits = Limits {
        db_connections: 1,
        db_read_connections: 1,
        db_hosts: 3,
        wall_time: Duration::from_secs(4),
        ..Limits::default()
    };
    let host = TestHost::start(limits, AuthBackend::Postgres).await;
    let probe = std::sync::Arc::new(host.load("probe").await);
    let limit: i32 = sqlx::query_scalar("SELECT rolconnlimit FROM pg_roles WHERE rolname = $1")
        .bind(probe.role())
        .fetch_one(&host.pool)
        .await
        .expect("the role");
    assert_eq!(limit, 3 * (1 + 1 + 1), "room for three hosts' pools");
    // One delivery holds the plugin's only delivery connection until its deadline...
    let holder = {
        let probe = probe.clone();
        tokio::spawn(async move { probe.handle(&event("probe.sleep", "a", json!({}))).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // ...so the next one finds none in time.
    let note = event("probe.insert", "b", json!({}));
    let invocation = probe.handle(&note).await;
    assert!(
        matches!(
            invocation.outcome,
            Outcome::Aborted(eventhost::runtime::Abort::Capacity(_))
        ),
        "{:?} {:?}",
        invocation.outcome,
        invocation.logs
    );
    let notes = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM plugin_probe.notes")
            .fetch_one(&host.pool)
            .await
            .expect("notes")
    };
    assert_eq!(notes().await, 0, "something committed without a connection");
    holder.await.expect("the holder ends at its deadline");
    assert_eq!(probe.handle(&note).await.outcome, Outcome::Ok);
    assert_eq!(notes().await, 1);
    host.stop().await;
}
