//! `/metrics` in both text formats, read back by the reference parsers (the Prometheus
//! Python client's 0.0.4 parser and its strict OpenMetrics parser), and every series of
//! a loaded plugin present at zero before anything happened.

mod common;

use common::TestHost;
use eventhost::metrics::{Disposition, Format, Metrics};
use serde_json::Value;

/// `[{name, type, samples: [[name, labels, value]]}]` as the reference parser reads `text`.
fn parsed(text: &str, format: Format) -> Vec<Value> {
    let parser = match format {
        Format::Prometheus => "from prometheus_client.parser import text_string_to_metric_families",
        Format::OpenMetrics => {
            "from prometheus_client.openmetrics.parser import text_string_to_metric_families"
        }
    };
    let script = format!(
        "import json, sys\n{parser}\nout = [dict(name=f.name, type=f.type, samples=[[s.name, s.labels, s.value] for s in f.samples]) for f in text_string_to_metric_families(sys.stdin.read())]\nprint(json.dumps(out))\n"
    );
    let python = common::toolchains().python;
    let mut child = std::process::Command::new(python)
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the reference parser");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the {format:?} parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("parser output")
}

fn family<'a>(families: &'a [Value], name: &str) -> &'a Value {
    families
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no family {name} in {families:?}"))
}

fn sample(family: &Value, name: &str, plugin: &str) -> Option<f64> {
    family["samples"].as_array()?.iter().find_map(|s| {
        (s[0] == name && s[1]["plugin"] == plugin)
            .then(|| s[2].as_f64())
            .flatten()
    })
}

#[tokio::test]
async fn both_formats_parse_with_the_reference_parsers_and_plugin_series_start_at_zero() {
    let host = TestHost::default().await;
    let metrics = Metrics::default();
    metrics.plugin_loaded("fresh");
    metrics.plugin_loaded("busy");
    metrics.record(
        "busy",
        Disposition::Handled,
        Some(std::time::Duration::from_millis(3)),
    );
    for format in [Format::Prometheus, Format::OpenMetrics] {
        let text = metrics
            .render(&host.pool, None, format)
            .await
            .expect("render");
        let families = parsed(&text, format);
        let handled = family(&families, "eventhost_plugin_handled");
        assert_eq!(
            handled["type"], "counter",
            "{format:?}: counters typed as counters"
        );
        assert_eq!(
            sample(handled, "eventhost_plugin_handled_total", "fresh"),
            Some(0.0),
            "{format:?}"
        );
        assert_eq!(
            sample(handled, "eventhost_plugin_handled_total", "busy"),
            Some(1.0),
            "{format:?}"
        );
        for name in [
            "eventhost_plugin_dead_lettered",
            "eventhost_plugin_retried",
            "eventhost_plugin_duplicates",
            "eventhost_plugin_parked",
            "eventhost_plugin_reload_failures",
        ] {
            let counter = family(&families, name);
            assert_eq!(counter["type"], "counter", "{format:?} {name}");
            assert_eq!(
                sample(counter, &format!("{name}_total"), "fresh"),
                Some(0.0),
                "{format:?} {name}"
            );
        }
        let durations = family(&families, "eventhost_plugin_handler_duration_seconds");
        assert_eq!(durations["type"], "histogram");
        assert_eq!(
            sample(
                durations,
                "eventhost_plugin_handler_duration_seconds_count",
                "fresh"
            ),
            Some(0.0)
        );
        assert_eq!(
            family(&families, "eventhost_outbox_backlog")["type"],
            "gauge"
        );
    }
    host.stop().await;
}
