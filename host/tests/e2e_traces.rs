//! `eventhost serve` exports its spans over OTLP when the standard environment variables
//! say so: a collector stand-in on loopback receives them, in the caller's trace.

mod common;

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use common::serve::{Extra, ServeWorld};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

type Received = Arc<Mutex<Vec<(String, Bytes)>>>;

/// Accepts OTLP/HTTP exports on `/v1/traces`, keeping each body with its content type.
async fn collector() -> (String, Received) {
    let received: Received = Arc::default();
    let kept = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |headers: HeaderMap, body: Bytes| {
            let kept = kept.clone();
            async move {
                let content_type = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                kept.lock().unwrap().push((content_type, body));
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

/// A short protobuf string field: its tag (wire type 2), its length, its bytes.
fn field(number: u8, text: &str) -> Vec<u8> {
    assert!(text.len() < 128, "a one-byte length");
    let mut bytes = vec![(number << 3) | 2, text.len() as u8];
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_in_the_callers_trace() {
    let (endpoint, received) = collector().await;
    let world = ServeWorld::start_with(
        &["user_stats"],
        Extra {
            env: &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
                ("OTEL_SERVICE_NAME", "eventhost-e2e-traces"),
                ("OTEL_BSP_SCHEDULE_DELAY", "100"),
                ("RUST_LOG", "warn,eventhost=info,plugin=debug"),
            ],
            ..Extra::default()
        },
    )
    .await;
    let response = reqwest::Client::new()
        .post(format!("{}/auth/register", world.auth))
        .header("traceparent", format!("00-{TRACE}-b7ad6b7169203331-01"))
        .json(&serde_json::json!({"email": "otlp@example.com", "name": "Otto"}))
        .send()
        .await
        .expect("register");
    assert_eq!(response.status(), 201);

    let user: serde_json::Value = response.json().await.unwrap();
    let user = user["id"].as_str().unwrap().to_string();

    // The trace id travels as 16 raw bytes in the protobuf body; a span's name is field 5
    // of its `Span` message, an event's name field 2 of its `Event`.
    let trace_id = hex::decode(TRACE).unwrap();
    let wanted = [
        field(5, "POST /auth/register"),
        field(5, "publish user.created"),
        field(5, "deliver"),
        field(5, "handle"),
        // The plugin's log line, an event of its invocation's span.
        field(2, &format!("stats of user {user}: created")),
    ];
    let started = Instant::now();
    loop {
        let bodies = received.lock().unwrap().clone();
        let ours: Vec<&Bytes> = bodies
            .iter()
            .map(|(_, body)| body)
            .filter(|body| contains(body, &trace_id))
            .collect();
        let all = wanted
            .iter()
            .all(|name| ours.iter().any(|body| contains(body, name)));
        if all {
            assert!(
                bodies.iter().all(|(ct, _)| ct == "application/x-protobuf"),
                "OTLP over HTTP/protobuf"
            );
            assert!(
                ours.iter().all(|b| contains(b, b"eventhost-e2e-traces")),
                "the service name from OTEL_SERVICE_NAME"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not every span reached the collector in the caller's trace ({} exports: {:?}):\n{}",
            bodies.len(),
            bodies
                .iter()
                .map(|(_, b)| String::from_utf8_lossy(b)
                    .chars()
                    .filter(|c| c.is_ascii_graphic() || *c == ' ')
                    .collect::<String>())
                .collect::<Vec<_>>(),
            world.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    world.finish().await;
}
