//! An outbox row as the AMQP message the relay publishes: CloudEvents 1.0 structured
//! JSON body, persistent, `message_id` = event id, routing key = event type, and the
//! row's headers (trace context included) as AMQP headers, plus the aggregate header
//! the plugins' entries partition on.

use super::store::ClaimedRow;
use crate::broker::topology::AGGREGATE_HEADER;
use crate::event::{Data, Parts};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use serde_json::Value;

pub const CONTENT_TYPE: &str = "application/cloudevents+json";
/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

pub struct Outgoing {
    /// The event's id and `traceparent` for its publish span, when traces are exported.
    pub traced: Option<(String, Option<String>)>,
    pub routing_key: ShortString,
    pub body: Vec<u8>,
    pub properties: BasicProperties,
}

/// Builds the message, or says why this row cannot be published (counted as a failed
/// attempt: such a row ends `dead` rather than blocking its aggregate for ever).
pub fn build(row: ClaimedRow, max_bytes: usize) -> Result<Outgoing, String> {
    let headers = header_pairs(row.headers)?;
    let mut table = FieldTable::default();
    for (name, value) in &headers {
        table.insert(
            name.as_str().into(),
            AMQPValue::LongString(LongString::from(value.as_str())),
        );
    }
    // The partitioning key of the plugins' entries; the same key orders the lanes.
    table.insert(
        AGGREGATE_HEADER.into(),
        AMQPValue::LongString(LongString::from(format!(
            "{}/{}",
            row.aggregate_type, row.aggregate_id
        ))),
    );
    let timestamp = row.occurred_at.timestamp().max(0) as u64;
    let message_id = row.event_id.to_string();
    let parts = Parts {
        id: &message_id,
        source: &row.source,
        event_type: &row.event_type,
        time: row.occurred_at.fixed_offset(),
        subject: &row.aggregate_id,
        aggregate_type: &row.aggregate_type,
        schema_version: u32::try_from(row.schema_version).unwrap_or(1),
        data: Data::Text(&row.payload.0),
        headers: &headers,
    };
    let body = parts.to_vec().map_err(|e| format!("cannot encode: {e}"))?;
    let traced = crate::telemetry::enabled().then(|| {
        let traceparent = headers
            .iter()
            .find(|(name, _)| name == "traceparent")
            .map(|(_, value)| value.clone());
        (message_id.clone(), traceparent)
    });
    let routing_key = row.event_type;
    if body.len() > max_bytes {
        return Err(format!(
            "message of {} bytes exceeds relay.max_message_bytes ({max_bytes})",
            body.len()
        ));
    }
    let properties = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type(CONTENT_TYPE.into())
        .with_message_id(message_id.into())
        .with_type(routing_key.as_str().into())
        .with_timestamp(timestamp)
        .with_app_id("eventhost".into())
        .with_headers(table);
    Ok(Outgoing {
        traced,
        routing_key: routing_key.into(),
        body,
        properties,
    })
}

/// The stored headers object as string pairs; anything else is refused with a reason
/// (rows written by hand may not follow the producer API's rules).
fn header_pairs(headers: Value) -> Result<Vec<(String, String)>, String> {
    let Value::Object(map) = headers else {
        return Err(format!("headers must be a JSON object, got {headers}"));
    };
    map.into_iter()
        .map(|(name, value)| match value {
            Value::String(s) if !name.is_empty() && name.len() <= 255 => Ok((name, s)),
            other => Err(format!("header {name:?} must be a string, got {other}")),
        })
        .collect()
}
