//! Logs and traces. Logs go to stderr as before (`RUST_LOG`). Traces are OpenTelemetry
//! spans made from the host's `tracing` spans, exported over OTLP (HTTP/protobuf) when the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set.
//!
//! One event is one trace across processes, joined by the W3C `traceparent` it carries:
//! the producer's HTTP request (whose span becomes the event's parent), the relay's publish,
//! the consumer's delivery and the plugin's invocation, with the plugin's log lines as
//! span events.

pub mod http;
mod publish;

pub use publish::PublishSpan;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// What is logged to stderr unless `RUST_LOG` says otherwise.
const DEFAULT_LOG: &str = "warn,eventhost=info,plugin=info,sqlx::postgres::notice=off";

/// Whether spans are exported; checked before work only traces need (the relay's
/// per-message spans, reading `traceparent`s).
static ENABLED: AtomicBool = AtomicBool::new(false);

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Flushes and stops the exporter when dropped (at the end of `main`).
pub struct Guard(Option<SdkTracerProvider>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            if let Err(error) = provider.shutdown() {
                eprintln!("warning: could not flush the last traces: {error}");
            }
        }
    }
}

/// Installs the process's subscriber: logs to stderr, and traces over OTLP when the
/// environment turns them on (see [`otlp_from_env`]).
pub fn init() -> Guard {
    let (provider, problem) = match otlp_from_env() {
        Ok(provider) => (provider, None),
        Err(problem) => (None, Some(problem)),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG));
    subscriber(std::io::stderr, filter, provider.as_ref()).init();
    if let Some(problem) = problem {
        tracing::warn!(%problem, "traces are not exported");
    }
    Guard(provider)
}

/// The host's subscriber: what `filter` lets through (in `eventhost`: `RUST_LOG`, default
/// [`DEFAULT_LOG`]) is logged to `writer` and, when a `provider` is given, becomes spans
/// and span events ([`layer`]). One filter for both: per-layer filters lost spans under tracing-subscriber
/// 0.3.23 (the spans of later requests and deliveries never started, seen in
/// `host/tests/traces.rs` and `e2e_traces.rs`), so traces take what the logs take.
pub fn subscriber<W>(
    writer: W,
    filter: EnvFilter,
    provider: Option<&SdkTracerProvider>,
) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(writer))
        .with(provider.map(layer))
}

/// An OTLP exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` or `..._TRACES_ENDPOINT` is set,
/// unless `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. The exporter itself
/// reads the other standard variables (`OTEL_EXPORTER_OTLP_HEADERS`, `..._TIMEOUT`,
/// `..._COMPRESSION`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_*`,
/// `OTEL_TRACES_SAMPLER`).
fn otlp_from_env() -> Result<Option<SdkTracerProvider>, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if !export_wanted(var)? {
        return Ok(None);
    }
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    let named_in_attributes =
        var("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| a.contains("service.name="));
    if var("OTEL_SERVICE_NAME").is_none() && !named_in_attributes {
        resource = resource.with_service_name("eventhost");
    }
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    ))
}

/// Whether the standard variables (read through `var`) ask for OTLP export that this
/// build can do; an error names the variable asking for something else.
fn export_wanted(var: impl Fn(&str) -> Option<String>) -> Result<bool, String> {
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(false);
    }
    match var("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
        None | Some("otlp") => {}
        Some("none") => return Ok(false),
        Some(other) => {
            return Err(format!(
                "OTEL_TRACES_EXPORTER={other:?}: only \"otlp\" and \"none\" are supported"
            ))
        }
    }
    if var("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
        && var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
    {
        return Ok(false);
    }
    // The traces-specific variable wins over the general one.
    let protocol = [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]
    .into_iter()
    .find_map(|name| var(name).map(|value| (name, value)));
    if let Some((name, protocol)) = protocol.filter(|(_, p)| p.trim() != "http/protobuf") {
        return Err(format!(
            "{name}={protocol:?}: only \"http/protobuf\" is built in"
        ));
    }
    Ok(true)
}

/// The layer that turns the host's spans into OpenTelemetry spans of `provider`, and its
/// events (plugins' log lines among them) into span events. `provider` also becomes the
/// global provider (the relay's publish spans come from it).
pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    opentelemetry::global::set_tracer_provider(provider.clone());
    ENABLED.store(true, Ordering::Relaxed);
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("eventhost"))
        .with_tracked_inactivity(false)
        .with_threads(false)
}

/// The trace context a W3C `traceparent` names (an empty context when it is malformed).
pub fn context_of(traceparent: &str) -> Context {
    struct One<'a>(&'a str);
    impl Extractor for One<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            (key == "traceparent").then_some(self.0)
        }
        fn keys(&self) -> Vec<&str> {
            vec!["traceparent"]
        }
    }
    TraceContextPropagator::new().extract_with_context(&Context::new(), &One(traceparent))
}

/// The `traceparent` of a context; `None` when it holds no valid span.
pub fn traceparent_of(context: &Context) -> Option<String> {
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(context, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the trace `traceparent` names, when traces are exported and
/// the value is a valid trace context. Call before the span is first entered.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    if !enabled() {
        return;
    }
    let Some(traceparent) = traceparent else {
        return;
    };
    let parent = context_of(traceparent);
    if parent.span().span_context().is_valid() {
        // Fails only when the span is disabled by the filter: then there is nothing to link.
        let _ = span.set_parent(parent);
    }
}

/// The current span's `traceparent`, when traces are exported (what an event written
/// now carries, so the relay and the consumer continue the trace under this span).
pub fn current_traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    traceparent_of(&tracing::Span::current().context())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(vars: &[(&str, &str)]) -> Result<bool, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        export_wanted(|name| vars.get(name).cloned())
    }

    #[test]
    fn the_standard_variables_decide_the_export() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert_eq!(wanted(&[]), Ok(false), "no endpoint, no export");
        assert_eq!(wanted(&[endpoint]), Ok(true));
        let traces = (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://collector:4318/v1/traces",
        );
        assert_eq!(wanted(&[traces]), Ok(true));
        assert_eq!(
            wanted(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")]),
            Ok(false)
        );
        assert_eq!(
            wanted(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]),
            Ok(false)
        );
        let zipkin = wanted(&[endpoint, ("OTEL_TRACES_EXPORTER", "zipkin")]).unwrap_err();
        assert!(zipkin.contains("OTEL_TRACES_EXPORTER"), "{zipkin}");
        let grpc = wanted(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap_err();
        assert!(grpc.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{grpc}");
        // The traces-specific protocol wins over the general one.
        let both = [
            endpoint,
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ];
        assert_eq!(wanted(&both), Ok(true));
    }

    #[test]
    fn traceparents_round_trip_and_malformed_ones_are_empty() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(traceparent_of(&context_of(tp)).as_deref(), Some(tp));
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            assert_eq!(traceparent_of(&context_of(bad)), None, "{bad:?}");
        }
    }
}
