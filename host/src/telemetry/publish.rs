//! The relay's span per published event: a producer span under the trace the event
//! carries, open from the publish until the broker's confirm.

use opentelemetry::global::{self, BoxedSpan};
use opentelemetry::trace::{Span, SpanKind, Status, Tracer};
use opentelemetry::KeyValue;

pub struct PublishSpan(BoxedSpan);

impl PublishSpan {
    /// `None` unless traces are exported (so an untraced relay pays nothing per event).
    pub fn start(
        exchange: &str,
        routing_key: &str,
        event_id: &str,
        traceparent: Option<&str>,
    ) -> Option<Self> {
        if !super::enabled() {
            return None;
        }
        let parent = traceparent.map(super::context_of).unwrap_or_default();
        let tracer = global::tracer("eventhost");
        let span = tracer
            .span_builder(format!("publish {routing_key}"))
            .with_kind(SpanKind::Producer)
            .with_attributes([
                KeyValue::new("messaging.system", "rabbitmq"),
                KeyValue::new("messaging.operation.type", "send"),
                KeyValue::new("messaging.destination.name", exchange.to_string()),
                KeyValue::new(
                    "messaging.rabbitmq.destination.routing_key",
                    routing_key.to_string(),
                ),
                KeyValue::new("messaging.message.id", event_id.to_string()),
            ])
            .start_with_context(&tracer, &parent);
        Some(Self(span))
    }

    /// The broker confirmed it.
    pub fn confirmed(mut self) {
        self.0.end();
    }

    /// Refused or never confirmed: the span ends as an error with `why`.
    pub fn failed(mut self, why: &str) {
        self.0.set_status(Status::error(why.to_string()));
        self.0.end();
    }
}
