//! CloudEvents over AMQP in binary content mode: the attributes travel as message headers
//! (`cloudEvents:` or `cloudEvents_` per the AMQP binding, or `ce-` / `ce_` as some SDKs
//! send them over AMQP 0-9-1), `datacontenttype` is the message's content type and the
//! body is the data. A message in structured mode (`application/cloudevents+json`, or no
//! attribute headers) is the JSON body as it stands.

use crate::event::{Event, EventError};
use lapin::types::AMQPValue;
use lapin::BasicProperties;
use serde_json::{Map, Value};

const PREFIXES: [&str; 4] = ["cloudEvents:", "cloudEvents_", "ce-", "ce_"];

pub fn event(properties: &BasicProperties, body: &[u8]) -> Result<Event, EventError> {
    let content_type = properties
        .content_type()
        .as_ref()
        .map(|c| c.as_str().to_string());
    let structured = content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("application/cloudevents"));
    let attributes = if structured {
        None
    } else {
        attributes(properties)
    };
    let Some(mut map) = attributes else {
        return Event::from_json_bytes(body);
    };
    let json = content_type
        .as_deref()
        .is_none_or(crate::event::is_json_media_type);
    if let Some(content_type) = content_type {
        map.insert("datacontenttype".into(), content_type.into());
    }
    if !body.is_empty() {
        let (member, data) = match json {
            true => (
                "data",
                serde_json::from_slice(body).map_err(|e| EventError::Invalid {
                    name: "data".into(),
                    problem: format!("(the body of a binary-mode CloudEvent) is not JSON: {e}"),
                })?,
            ),
            false => crate::event::data::from_body(body),
        };
        map.insert(member.into(), data);
    }
    Event::from_json(Value::Object(map))
}

/// The CloudEvents attributes among the headers, by name without the prefix; `None` when
/// there is no `specversion` among them (not a binary-mode CloudEvent).
fn attributes(properties: &BasicProperties) -> Option<Map<String, Value>> {
    let headers = properties.headers().as_ref()?.inner();
    let mut map = Map::new();
    for (name, value) in headers.iter() {
        let name = name.as_str();
        let Some((prefix, attribute)) = PREFIXES
            .iter()
            .find_map(|p| strip_prefix_ignoring_case(name, p).map(|a| (*p, a)))
        else {
            continue;
        };
        let attribute = attribute.to_ascii_lowercase();
        if let (true, "time", AMQPValue::LongLongInt(ms)) =
            (prefix.starts_with("cloudEvents"), attribute.as_str(), value)
        {
            // Under the AMQP binding's prefixes a 64-bit integer `time` is an AMQP 1.0
            // timestamp, milliseconds since the epoch (what the SDKs' AMQP binding sends).
            // Other integers stay text, and the RFC 3339 check refuses them.
            if let Some(time) = chrono::DateTime::from_timestamp_millis(*ms) {
                map.insert(attribute, time.to_rfc3339().into());
                continue;
            }
        }
        let text = match value {
            AMQPValue::LongString(_) | AMQPValue::ShortString(_) => {
                super::headers::string_value(value).unwrap_or_default()
            }
            AMQPValue::LongUInt(n) => n.to_string(),
            AMQPValue::LongInt(n) => n.to_string(),
            AMQPValue::LongLongInt(n) => n.to_string(),
            AMQPValue::ShortUInt(n) => n.to_string(),
            AMQPValue::ShortInt(n) => n.to_string(),
            AMQPValue::Boolean(b) => b.to_string(),
            // An AMQP timestamp (seconds) for `time`.
            AMQPValue::Timestamp(t) => chrono::DateTime::from_timestamp(*t as i64, 0)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
            _ => continue,
        };
        map.insert(attribute, text.into());
    }
    map.contains_key("specversion").then_some(map)
}

fn strip_prefix_ignoring_case<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let head = name.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &name[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldTable, LongString, ShortString};

    fn properties(headers: &[(&str, &str)], content_type: Option<&str>) -> BasicProperties {
        let mut table = FieldTable::default();
        for (k, v) in headers {
            table.insert(
                ShortString::from(*k),
                AMQPValue::LongString(LongString::from(*v)),
            );
        }
        let mut p = BasicProperties::default().with_headers(table);
        if let Some(c) = content_type {
            p = p.with_content_type(ShortString::from(c));
        }
        p
    }

    #[test]
    fn every_prefix_of_the_bindings_is_read() {
        for prefix in PREFIXES {
            let attr = |n: &str| format!("{prefix}{n}");
            let names = [
                attr("specversion"),
                attr("id"),
                attr("source"),
                attr("type"),
                attr("subject"),
            ];
            let values = [
                "1.0",
                "7f0c1a52-2f35-4d47-9d51-1d0c5e0f7a11",
                "shop",
                "order.placed",
                "o-1",
            ];
            let pairs: Vec<(&str, &str)> = names.iter().map(String::as_str).zip(values).collect();
            let p = properties(&pairs, Some("application/json"));
            let event = event(&p, br#"{"total": 3}"#).unwrap_or_else(|e| panic!("{prefix}: {e}"));
            assert_eq!(
                (event.subject.as_str(), event.event_type.as_str()),
                ("o-1", "order.placed")
            );
            assert_eq!(event.data, serde_json::json!({ "total": 3 }));
        }
    }

    #[test]
    fn structured_messages_text_bytes_and_bad_json_are_told_apart() {
        let structured = properties(
            &[("ce-specversion", "1.0")],
            Some("application/cloudevents+json"),
        );
        assert!(matches!(
            event(&structured, b"{oops"),
            Err(EventError::NotJson(_))
        ));
        let binary = properties(
            &[
                ("ce-specversion", "1.0"),
                ("ce-id", "x"),
                ("ce-source", "s"),
                ("ce-type", "note.made"),
            ],
            Some("text/plain"),
        );
        let text = event(&binary, b"plain words").unwrap();
        assert_eq!(text.data, serde_json::json!("plain words"));
        assert_eq!(text.header("datacontenttype"), Some("text/plain"));
        let bytes = event(&binary, &[0xff, 0x00, 0x80]).unwrap();
        assert_eq!(bytes.data, serde_json::json!("/wCA"));
        assert_eq!(bytes.header("database64"), Some("true"));
        assert_eq!(
            Event::from_json(bytes.to_json()).unwrap(),
            bytes,
            "republished as data_base64"
        );
        let binary = properties(
            &[("ce-specversion", "1.0"), ("ce-id", "x")],
            Some("application/json"),
        );
        let refused = event(&binary, b"plain words").unwrap_err().to_string();
        assert!(refused.contains("`data`"), "{refused}");
    }

    /// The SDKs' AMQP binding sends `time` as an AMQP timestamp: an integer of
    /// milliseconds since the epoch.
    #[test]
    fn an_integer_time_is_milliseconds_since_the_epoch() {
        let mut p = properties(
            &[
                ("cloudEvents_specversion", "1.0"),
                ("cloudEvents_id", "42"),
                ("cloudEvents_source", "shop"),
                ("cloudEvents_type", "order.placed"),
            ],
            Some("application/json"),
        );
        let mut headers = p.headers().clone().unwrap();
        headers.insert(
            "cloudEvents_time".into(),
            AMQPValue::LongLongInt(1_764_979_200_123),
        );
        p = p.with_headers(headers);
        let read = event(&p, b"{}").unwrap();
        assert_eq!(read.time.to_rfc3339(), "2025-12-06T00:00:00.123+00:00");
        assert_eq!(read.id.0, "42");
        // Not under the AMQP binding's prefix: no guessing the unit, the time is refused.
        let mut p = properties(
            &[
                ("ce-specversion", "1.0"),
                ("ce-id", "43"),
                ("ce-source", "shop"),
                ("ce-type", "order.placed"),
            ],
            Some("application/json"),
        );
        let mut headers = p.headers().clone().unwrap();
        headers.insert("ce-time".into(), AMQPValue::LongLongInt(1_764_979_200));
        p = p.with_headers(headers);
        let refused = event(&p, b"{}").unwrap_err().to_string();
        assert!(refused.contains("`time`"), "{refused}");
    }
}
