//! Plugins written in Python (componentize-py) and JavaScript (componentize-js) on the
//! stock host: the same effects as the Rust reference, and what the host does for guests
//! of any language (output kept, exceptions reported, nothing granted).
//! Components come from `scripts/build-guests.sh`.

mod common;

use common::{event, guest_path, plugin_path, repo_path, TestHost};
use eventhost::config::{AuthBackend, Limits};
use eventhost::runtime::{Abort, LoadError, Outcome, Plugin};
use serde_json::json;

/// Every column but the ones each plugin fills in itself (`seq`, `recorded_at`), as text,
/// so any difference in bytes shows.
async fn audit_rows(host: &TestHost, plugin: &Plugin) -> Vec<Vec<String>> {
    let sql = format!(
        "SELECT ARRAY[event_id::text, event_type, source, aggregate_type, aggregate_id,
                      schema_version::text, occurred_at::text, payload::text, headers::text]
         FROM {}.audit_events ORDER BY seq",
        plugin.schema()
    );
    sqlx::query_scalar(&sql)
        .fetch_all(&host.pool)
        .await
        .expect("read audit_events")
}

#[tokio::test]
async fn audit_log_in_python_and_javascript_has_the_rust_plugins_effects() {
    let host = TestHost::default().await;
    let fixtures = repo_path("tests/fixtures/audit-log");
    let rust = host.load("audit_log").await;
    let mut effects = Vec::new();
    for plugin in [
        rust,
        host.load_guest("audit_log_py").await,
        host.load_guest("audit_log_js").await,
    ] {
        let reports = eventhost::fixtures::run_dir(&plugin, &host.pool, &fixtures)
            .await
            .expect("run the audit-log fixtures");
        for report in &reports {
            assert!(
                report.passed(),
                "{} {}: {:?}",
                plugin.name(),
                report.file,
                report.failures
            );
        }
        effects.push((plugin.name().to_string(), audit_rows(&host, &plugin).await));
    }
    let (reference, rows) = &effects[0];
    assert_eq!(rows.len(), 3, "the fixtures record three distinct events");
    for (name, other) in &effects[1..] {
        assert_eq!(other, rows, "{name} differs from {reference}");
    }
    host.stop().await;
}

async fn outcome_of(plugin: &Plugin, event_type: &str) -> eventhost::runtime::Invocation {
    plugin.handle(&event(event_type, "s1", json!({}))).await
}

fn trap_reason(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Aborted(Abort::Trap(reason)) => reason,
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[tokio::test]
async fn an_uncaught_exception_is_the_reason_with_its_traceback_or_stack() {
    let host = TestHost::default().await;
    let python = host.load_guest("py_probe").await;
    let raised = outcome_of(&python, "probe.raise").await;
    let reason = trap_reason(&raised.outcome);
    assert!(
        reason.contains("Traceback (most recent call last)"),
        "{reason}"
    );
    assert!(
        reason.contains("ValueError: deliberate failure for s1"),
        "{reason}"
    );
    assert!(
        !reason.contains("Rust"),
        "the reason is language-neutral: {reason}"
    );
    let stdout = raised.output.stdout.as_deref().unwrap_or_default();
    assert!(
        stdout.starts_with("py-probe handling "),
        "stdout is kept: {stdout:?}"
    );

    let js = host.load_guest("js_probe").await;
    let thrown = outcome_of(&js, "probe.throw").await;
    let reason = trap_reason(&thrown.outcome);
    assert!(reason.contains("about to fail on purpose"), "{reason}");
    assert!(
        reason.contains("TypeError: deliberate failure for s1"),
        "{reason}"
    );
    assert_eq!(outcome_of(&js, "probe.noop").await.outcome, Outcome::Ok);
    host.stop().await;
}

#[tokio::test]
async fn a_guest_is_granted_no_environment_files_or_network() {
    let host = TestHost::default().await;
    let python = host.load_guest("py_probe").await;
    let seen = outcome_of(&python, "probe.world").await.outcome;
    assert_eq!(
        seen,
        Outcome::Permanent("env={} argv=[] files=refused (FileNotFoundError)".into())
    );
    // componentize-js links wasi:http; the request reaches the host and is refused.
    let js = host.load_guest("js_probe").await;
    let fetched = outcome_of(&js, "probe.fetch").await;
    let reason = trap_reason(&fetched.outcome);
    assert!(
        reason.contains("outgoing HTTP request GET http://127.0.0.1:9/denied denied"),
        "{reason}"
    );
    host.stop().await;
}

#[tokio::test]
async fn what_a_guest_prints_is_bounded_per_invocation() {
    let limits = Limits {
        output_bytes: 4096,
        ..Limits::default()
    };
    let host = TestHost::start(limits, AuthBackend::Postgres).await;
    let python = host.load_guest("py_probe").await;
    let chatty = outcome_of(&python, "probe.chatty").await;
    assert_eq!(
        chatty.outcome,
        Outcome::Ok,
        "a full buffer never fails the guest"
    );
    let stderr = chatty.output.stderr.expect("stderr kept");
    assert!(stderr.starts_with("line 0 of a guest"), "the start is kept");
    assert!(
        stderr.contains(" bytes skipped ...]"),
        "the middle is counted"
    );
    assert!(stderr
        .trim_end()
        .ends_with("line 2999 of a guest that never stops talking"));
    assert!(stderr.len() < 4096 + 64, "{} bytes kept", stderr.len());
    host.stop().await;
}

#[tokio::test]
async fn a_component_over_a_limit_is_refused_naming_the_limit_and_key() {
    let limits = Limits {
        component_core_instances: 8,
        ..Limits::default()
    };
    let host = TestHost::start(limits, AuthBackend::Postgres).await;
    let refused = host
        .runtime
        .load_file(&guest_path("audit_log_py"))
        .await
        .err()
        .expect("a Python component has more than 8 core instances");
    let LoadError::TooLarge(limit) = &refused else {
        panic!("expected a limit refusal, got: {refused}");
    };
    assert_eq!((limit.key, limit.limit), ("component_core_instances", 8));
    assert!(limit.value > 8, "{refused}");
    let message = refused.to_string();
    assert!(
        message.contains("limits.component_core_instances"),
        "{message}"
    );
    assert!(!message.contains("not a valid"), "{message}");
    // The Rust reference fits the same limits.
    assert!(host
        .runtime
        .load_file(&plugin_path("audit_log"))
        .await
        .is_ok());
    host.stop().await;
}
