//! Talking to the hostile probe plugin (`tests/plugins/probe`): its session report and
//! its reads.

use super::event;
use eventhost::runtime::{Plugin, ReadRequest, ReadResponse};
use eventhost::Outcome;
use serde_json::{json, Value};

pub async fn report(probe: &Plugin) -> Value {
    let invocation = probe
        .handle(&event("probe.session-report", "x", json!({})))
        .await;
    assert_eq!(invocation.outcome, Outcome::Ok, "{:?}", invocation.logs);
    serde_json::from_str(&invocation.logs.last().expect("a report").1).unwrap()
}

pub async fn read_with(
    plugin: &Plugin,
    path: &str,
    query: &[(&str, &str)],
) -> Result<ReadResponse, Outcome> {
    let request = ReadRequest {
        method: "GET".into(),
        path: path.into(),
        query: query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    plugin.read(request).await.0
}

pub async fn read(probe: &Plugin, path: &str) -> (u16, Value) {
    let answer = read_with(probe, path, &[]).await.expect("the read ran");
    let body = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    (answer.status, body)
}

pub fn assert_clean(report: &Value, schema: &str) {
    let expect = json!({
        "statement_timeout": "1s",
        "lock_timeout": "1s",
        "idle_in_transaction_session_timeout": "10s",
        "search_path": schema,
        "work_mem": "4MB",
        "marker": "",
        "listening": 0,
        "temp_tables": 0,
        "cursors": 0,
        "prepared": 0,
        "advisory_locks": 0,
    });
    for (key, want) in expect.as_object().unwrap() {
        assert_eq!(&report[key], want, "{key} carried over: {report}");
    }
}
