//! The shipped fixtures pass through both reference plugins, and a wrong expectation
//! fails with a message that shows what differed.

mod common;

use common::{plugin_path, repo_path, server_url, TestHost};
use std::process::Command;

/// Loads the plugin into a fresh database and runs a shipped fixture directory through it.
async fn assert_fixtures_pass(file_stem: &str, dir: &str, at_least: usize) {
    let host = TestHost::default().await;
    let plugin = host.load(file_stem).await;
    let reports = eventhost::fixtures::run_dir(&plugin, &host.pool, &repo_path(dir))
        .await
        .unwrap();
    let failed: Vec<_> = reports.iter().filter(|r| !r.passed()).collect();
    assert!(
        reports.len() >= at_least,
        "fixtures found: {}",
        reports.len()
    );
    assert!(failed.is_empty(), "failed fixtures: {failed:#?}");
    host.stop().await;
}

#[tokio::test]
async fn user_stats_fixtures_pass() {
    assert_fixtures_pass("user_stats", "tests/fixtures/user-stats", 15).await;
}

#[tokio::test]
async fn audit_log_fixtures_pass() {
    assert_fixtures_pass("audit_log", "tests/fixtures/audit-log", 5).await;
}

const WRONG: &str = r#"{
  "description": "deliberately wrong: expects ok and a row that is not there",
  "event": { "specversion": "1.0", "id": "d0000000-0000-4000-8000-000000000001", "source": "tests",
             "type": "user.created", "time": "2026-11-23T10:00:00Z", "subject": "x", "aggregatetype": "user",
             "data": { "email": "no-id@example.com" } },
  "expect": { "outcome": "ok",
              "sql": [{ "query": "SELECT count(*) AS n FROM user_stats", "rows": [{ "n": 1 }] }] }
}"#;

#[tokio::test]
async fn wrong_expectation_fails_with_a_diff() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("01_wrong.json"), WRONG).unwrap();
    let host = TestHost::default().await;
    let plugin = host.load("user_stats").await;
    let reports = eventhost::fixtures::run_dir(&plugin, &host.pool, dir.path())
        .await
        .unwrap();
    assert_eq!(reports.len(), 1);
    let failures = reports[0].failures.join("\n");
    assert!(
        failures.contains("outcome: expected ok, got permanent"),
        "{failures}"
    );
    assert!(failures.contains("missing field `userId`"), "{failures}");
    assert!(
        failures.contains("-    \"n\": 1") && failures.contains("+    \"n\": 0"),
        "{failures}"
    );
    host.stop().await;
}

#[test]
fn cli_plugin_test_exit_codes() {
    let bin = env!("CARGO_BIN_EXE_eventhost");
    let base = server_url();
    let good = Command::new(bin)
        .args(["plugin", "test"])
        .arg(plugin_path("audit_log"))
        .arg(repo_path("tests/fixtures/audit-log"))
        .env("DATABASE_URL", &base)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&good.stdout);
    assert_eq!(
        good.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(stdout.contains("0 failed"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("01_wrong.json"), WRONG).unwrap();
    let bad = Command::new(bin)
        .args(["plugin", "test"])
        .arg(plugin_path("user_stats"))
        .arg(dir.path())
        .env("DATABASE_URL", &base)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL 01_wrong.json") && stdout.contains("1 failed"),
        "{stdout}"
    );
}
