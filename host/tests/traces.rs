//! One event, one trace: the producer's request, the relay's publish, the delivery and the
//! plugin's invocation (its log lines as events) land in the trace the caller's
//! `traceparent` started, read from an in-memory exporter. The host runs in this process
//! (this binary's only test owns the global subscriber).

mod common;

use common::outbox::amqp_url;
use common::serve::free_port;
use common::{plugin_path, server_url};
use eventhost::app::App;
use eventhost::config::Config;
use eventhost::fixtures::ScratchDatabase;
use opentelemetry::trace::{SpanId, SpanKind};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn find<'a>(spans: &'a [SpanData], name: &str) -> Option<&'a SpanData> {
    spans.iter().find(|s| s.name == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_is_one_trace_from_the_request_to_the_plugin() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    // What `eventhost serve` installs, its logs going nowhere, the plugin's debug lines
    // let through.
    let filter = tracing_subscriber::EnvFilter::new("warn,eventhost=info,plugin=debug");
    let subscriber = eventhost::telemetry::subscriber(std::io::sink, filter, Some(&provider));
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let scratch = ScratchDatabase::create(&server_url(), "eventhost_traces")
        .await
        .expect("scratch database");
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::copy(plugin_path("user_stats"), plugins.join("user_stats.wasm")).unwrap();
    let tag = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    let (api, auth) = (free_port(), free_port());
    let config = Config::parse(&format!(
        r#"database_url = "{db}"
[broker]
url = "{amqp}"
exchange = "eventhost.traces.{tag}"
[relay]
poll_interval = "200ms"
[consumer]
plugin_dir = "{plugins}"
queue_prefix = "traces.{tag}"
[http]
listen = "127.0.0.1:{api}"
[auth_service]
listen = "127.0.0.1:{auth}"
"#,
        db = scratch.url,
        amqp = amqp_url(),
        plugins = plugins.display(),
    ))
    .expect("config");
    let shutdown = CancellationToken::new();
    let app = App::start(config, shutdown.clone()).await.expect("start");
    let http = reqwest::Client::new();
    let started = Instant::now();
    while !matches!(http.get(format!("http://127.0.0.1:{api}/readyz")).send().await,
                    Ok(r) if r.status() == 200)
    {
        assert!(started.elapsed() < Duration::from_secs(60), "not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let response = http
        .post(format!("http://127.0.0.1:{auth}/auth/register"))
        .header("traceparent", format!("00-{TRACE}-{CALLER_SPAN}-01"))
        .json(&serde_json::json!({"email": "traced@example.com", "name": "Tracy"}))
        .send()
        .await
        .expect("register");
    assert_eq!(response.status(), 201);
    let user: serde_json::Value = response.json().await.unwrap();
    let user = user["id"].as_str().unwrap().to_string();

    // Spans arrive as they end: the request's may end after the delivery's.
    let wanted = [
        "POST /auth/register",
        "publish user.created",
        "deliver",
        "handle",
    ];
    let started = Instant::now();
    let spans = loop {
        let spans: Vec<SpanData> = exporter
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(|s| s.span_context.trace_id().to_string() == TRACE)
            .collect();
        if wanted.iter().all(|name| find(&spans, name).is_some()) {
            break spans;
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "not every span of {wanted:?} is in the trace: {:?}; all spans: {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>(),
            exporter
                .get_finished_spans()
                .unwrap()
                .iter()
                .map(|s| format!(
                    "{} {} parent {}",
                    s.name,
                    s.span_context.trace_id(),
                    s.parent_span_id
                ))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
    let span = |name: &str| {
        find(&spans, name).unwrap_or_else(|| panic!("no span {name:?} in the trace: {names:?}"))
    };
    let request = span("POST /auth/register");
    let publish = span("publish user.created");
    let deliver = span("deliver");
    let handle = span("handle");

    assert_eq!(request.span_kind, SpanKind::Server);
    assert_eq!(request.parent_span_id.to_string(), CALLER_SPAN);
    assert_eq!(publish.span_kind, SpanKind::Producer);
    assert_eq!(publish.parent_span_id, request.span_context.span_id());
    assert_eq!(deliver.span_kind, SpanKind::Consumer);
    assert_eq!(deliver.parent_span_id, request.span_context.span_id());
    assert_eq!(handle.parent_span_id, deliver.span_context.span_id());
    assert_ne!(handle.parent_span_id, SpanId::INVALID);
    let logged = format!("stats of user {user}: created");
    assert!(
        handle.events.iter().any(|e| e.name == logged),
        "the plugin's log line is not an event of its invocation: {:?}",
        handle.events.iter().map(|e| &e.name).collect::<Vec<_>>()
    );

    shutdown.cancel();
    app.stopped().await.expect("stopped");
    provider.shutdown().ok();
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = conn.create_channel().await.expect("channel");
    let consumer = eventhost::config::ConsumerConfig {
        queue_prefix: format!("traces.{tag}"),
        ..Default::default()
    };
    let queues = eventhost::broker::topology::PluginQueues::of(&consumer, "user-stats");
    common::delete_topology(&channel, &format!("eventhost.traces.{tag}"), &[&queues]).await;
    conn.close(200, "done".into()).await.ok();
    scratch.drop_now().await.ok();
}
