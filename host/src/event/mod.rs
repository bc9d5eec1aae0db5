//! The event as eventhost carries it: CloudEvents 1.0 in structured JSON mode, plus the
//! outbox's aggregate type and schema version as extension attributes.

pub mod data;

use chrono::{DateTime, FixedOffset};
use serde_json::{Map, Value};
use std::fmt;

/// The id of an event as its publisher gave it: any non-empty string (CloudEvents asks
/// only that `source` + `id` be unique per event). Redeliveries carry the same one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub String);

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The longest `id`, `source`, `subject` or `aggregatetype` accepted, in bytes: they are
/// keys (the inbox's, the partitions', the holds'), and PostgreSQL indexes only keys of a
/// few kilobytes.
pub const MAX_KEY_BYTES: usize = 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: EventId,
    pub source: String,
    /// Also the routing key.
    pub event_type: String,
    pub time: DateTime<FixedOffset>,
    /// The aggregate's id (CloudEvents `subject`).
    pub subject: String,
    pub aggregate_type: String,
    pub schema_version: u32,
    pub data: Value,
    /// Extension attributes that are not ours (e.g. `traceparent`), in the order given.
    pub headers: Vec<(String, String)>,
}

/// Why a JSON document is not an event; names the attribute at fault.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EventError {
    #[error("event is not valid JSON: {0}")]
    NotJson(String),
    #[error("event must be a JSON object")]
    NotAnObject,
    #[error("missing attribute `{0}`")]
    Missing(&'static str),
    #[error("attribute `{name}` {problem}")]
    Invalid { name: String, problem: String },
}

fn invalid(name: &str, problem: impl Into<String>) -> EventError {
    EventError::Invalid {
        name: name.to_string(),
        problem: problem.into(),
    }
}

const KNOWN: &[&str] = &[
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "subject",
    "datacontenttype",
    "data",
    "data_base64",
    // eventhost's own mark of base64 data (see `data`), never a publisher's extension.
    "database64",
    "aggregatetype",
    "schemaversion",
];

/// Whether `name` is an attribute eventhost sets itself (so not a free extension/header).
pub fn is_reserved_attribute(name: &str) -> bool {
    KNOWN.contains(&name)
}

impl Event {
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self, EventError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| EventError::NotJson(e.to_string()))?;
        Self::from_json(value)
    }

    /// Reads a structured-mode CloudEvent. `specversion` must be 1.0; `data` must be JSON
    /// (`datacontenttype` absent or `application/json`). The attributes CloudEvents makes
    /// optional get eventhost's defaults when absent:
    /// * `subject` (the aggregate, and so the ordering key): the event's `id`, so such an
    ///   event is ordered after nothing;
    /// * `aggregatetype`: the first dot-separated word of `type` (`order.placed` → `order`);
    /// * `time`: when this host read the event;
    /// * `data`: JSON `null`.
    pub fn from_json(value: Value) -> Result<Self, EventError> {
        let Value::Object(mut map) = value else {
            return Err(EventError::NotAnObject);
        };
        match map.get("specversion") {
            None => return Err(EventError::Missing("specversion")),
            Some(Value::String(v)) if v == "1.0" => {}
            Some(other) => {
                return Err(invalid(
                    "specversion",
                    format!("must be \"1.0\", got {other}"),
                ))
            }
        }
        let (data, data_headers) = data::take(&mut map)?;
        let id = key(&map, "id")?;
        let time = match optional_str(&map, "time")? {
            Some(time) => DateTime::parse_from_rfc3339(time)
                .map_err(|e| invalid("time", format!("must be an RFC 3339 timestamp ({e})")))?,
            None => chrono::Utc::now().fixed_offset(),
        };
        let schema_version = match map.get("schemaversion") {
            None => 1,
            Some(v) => parse_version(v)?,
        };
        let event_type = non_empty(&map, "type")?;
        let subject = match optional_key(&map, "subject")? {
            Some(subject) => subject,
            None => id.clone(),
        };
        let aggregate_type = match optional_key(&map, "aggregatetype")? {
            Some(kind) => kind,
            None => event_type
                .split('.')
                .next()
                .unwrap_or(&event_type)
                .to_string(),
        };
        let event = Event {
            id: EventId(id),
            source: key(&map, "source")?,
            event_type,
            time,
            subject,
            aggregate_type,
            schema_version,
            data,
            headers: {
                let mut headers = headers(&map)?;
                headers.extend(data_headers);
                headers
            },
        };
        Ok(event)
    }

    /// An extension attribute's value (`traceparent`, say).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The structured-mode JSON of this event.
    pub fn to_json(&self) -> Value {
        self.clone().into_json()
    }

    /// The same, consuming the event (what the relay publishes: no copy of the payload).
    pub fn into_json(self) -> Value {
        let mut map = Map::new();
        map.insert("specversion".into(), "1.0".into());
        map.insert("id".into(), self.id.to_string().into());
        map.insert("source".into(), self.source.into());
        map.insert("type".into(), self.event_type.into());
        map.insert("time".into(), self.time.to_rfc3339().into());
        map.insert("subject".into(), self.subject.into());
        map.insert("aggregatetype".into(), self.aggregate_type.into());
        map.insert("schemaversion".into(), self.schema_version.into());
        data::put(&mut map, self.data, self.headers);
        Value::Object(map)
    }
}

/// `application/json`, `text/json` or `application/<anything>+json`, any parameters.
pub fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let essence = essence.to_ascii_lowercase();
    essence == "application/json"
        || essence == "text/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn required_str<'a>(
    map: &'a Map<String, Value>,
    name: &'static str,
) -> Result<&'a str, EventError> {
    match map.get(name) {
        None | Some(Value::Null) => Err(EventError::Missing(name)),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(invalid(name, format!("must be a string, got {other}"))),
    }
}

/// An optional attribute: absent (or `null`) is `None`; present, it must be a string.
fn optional_str<'a>(
    map: &'a Map<String, Value>,
    name: &'static str,
) -> Result<Option<&'a str>, EventError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => required_str(map, name).map(Some),
    }
}

fn optional_key(
    map: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, EventError> {
    match optional_str(map, name)? {
        None => Ok(None),
        Some(_) => key(map, name).map(Some),
    }
}

/// A non-empty string of at most [`MAX_KEY_BYTES`], taken as given (blanks included:
/// the spec asks only for a non-empty string).
fn key(map: &Map<String, Value>, name: &'static str) -> Result<String, EventError> {
    let s = required_str(map, name)?.to_string();
    if s.is_empty() {
        return Err(invalid(name, "must not be empty"));
    }
    if s.len() > MAX_KEY_BYTES {
        return Err(invalid(
            name,
            format!("is {} bytes long, more than {MAX_KEY_BYTES}", s.len()),
        ));
    }
    Ok(s)
}

fn non_empty(map: &Map<String, Value>, name: &'static str) -> Result<String, EventError> {
    let s = required_str(map, name)?;
    if s.trim().is_empty() {
        return Err(invalid(name, "must not be empty"));
    }
    Ok(s.to_string())
}

fn parse_version(v: &Value) -> Result<u32, EventError> {
    let parsed = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse::<u64>().ok(),
        _ => None,
    };
    parsed
        .filter(|n| *n >= 1)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            invalid(
                "schemaversion",
                format!("must be a positive integer, got {v}"),
            )
        })
}

/// CloudEvents extension attributes: lowercase alphanumeric names with string values.
fn headers(map: &Map<String, Value>) -> Result<Vec<(String, String)>, EventError> {
    let mut out = Vec::new();
    for (name, value) in map {
        if KNOWN.contains(&name.as_str()) {
            continue;
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            return Err(invalid(
                name,
                "is not a valid extension name (lowercase letters and digits)",
            ));
        }
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(invalid(
                    name,
                    format!("must be a string, number or boolean, got {other}"),
                ))
            }
        };
        out.push((name.clone(), text));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "specversion": "1.0", "id": "7f0c1a52-2f35-4d47-9d51-1d0c5e0f7a11",
            "source": "auth-service", "type": "user.created",
            "time": "2026-11-23T10:00:00Z", "subject": "u-1", "aggregatetype": "user",
            "schemaversion": 2, "traceparent": "00-abc-def-01", "data": {"userId": "u-1"}
        })
    }

    #[test]
    fn structured_cloudevent_round_trips() {
        let event = Event::from_json(sample()).unwrap();
        assert_eq!(event.schema_version, 2);
        assert_eq!(
            event.headers,
            vec![("traceparent".to_string(), "00-abc-def-01".to_string())]
        );
        assert_eq!(Event::from_json(event.to_json()).unwrap(), event);
    }

    /// Only `specversion`, `id`, `source` and `type` are required by CloudEvents; the
    /// others eventhost needs get their documented defaults.
    #[test]
    fn a_minimal_spec_valid_event_gets_the_defaults() {
        let before = chrono::Utc::now();
        let event = Event::from_json(json!({
            "specversion": "1.0", "id": "7f0c1a52-2f35-4d47-9d51-1d0c5e0f7a11",
            "source": "https://shop.example/orders", "type": "order.placed"
        }))
        .unwrap();
        assert_eq!(
            event.subject, "7f0c1a52-2f35-4d47-9d51-1d0c5e0f7a11",
            "ordered by its id"
        );
        assert_eq!(event.aggregate_type, "order");
        assert_eq!(event.data, Value::Null);
        assert_eq!(event.schema_version, 1);
        assert!(
            event.time >= before && event.time <= chrono::Utc::now(),
            "received now"
        );
        assert_eq!(
            Event::from_json(event.to_json()).unwrap(),
            event,
            "what is republished parses the same"
        );
    }

    /// CloudEvents allows any non-empty string as `id`: a ULID, a counter, text with spaces.
    #[test]
    fn any_string_id_is_kept_as_given() {
        for id in [
            "01J9Z3M8Q4W7E2R5T6Y8U0I3O5",
            "42",
            " ",
            " spaced id ",
            "ünïcode/ü",
        ] {
            let mut v = sample();
            v["id"] = json!(id);
            let event = Event::from_json(v).unwrap();
            assert_eq!(event.id.0, id);
            assert_eq!(Event::from_json(event.to_json()).unwrap().id.0, id);
        }
    }

    #[test]
    fn json_media_types_are_json() {
        for ct in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "text/json",
            "application/vnd.shop+json",
        ] {
            assert!(is_json_media_type(ct), "{ct}");
        }
        for ct in [
            "text/plain",
            "application/xml",
            "application/jsonx",
            "image/svg+json",
            "",
        ] {
            assert!(!is_json_media_type(ct), "{ct}");
        }
    }

    /// Data that is not JSON is carried as a JSON string, its media type (and base64 for
    /// bytes) in the headers, and goes back out the way it came.
    #[test]
    fn text_and_bytes_are_carried_with_their_media_type() {
        let mut v = sample();
        v["datacontenttype"] = json!("text/csv");
        v["data"] = json!("a,b\n1,2");
        let text = Event::from_json(v).unwrap();
        assert_eq!(text.data, json!("a,b\n1,2"));
        assert_eq!(text.header("datacontenttype"), Some("text/csv"));
        assert_eq!(text.to_json()["datacontenttype"], "text/csv");
        assert_eq!(Event::from_json(text.to_json()).unwrap(), text);

        let mut v = sample();
        v.as_object_mut().unwrap().remove("data");
        v["data_base64"] = json!("/wCA");
        let bytes = Event::from_json(v).unwrap();
        assert_eq!(bytes.data, json!("/wCA"));
        assert_eq!(
            bytes.header("datacontenttype"),
            Some("application/octet-stream")
        );
        assert_eq!(bytes.header("database64"), Some("true"));
        let out = bytes.to_json();
        assert_eq!(out["data_base64"], "/wCA");
        assert!(
            out.get("data").is_none() && out.get("database64").is_none(),
            "{out}"
        );
        assert_eq!(Event::from_json(out).unwrap(), bytes);

        let mut v = sample();
        v["data_base64"] = json!("/wCA");
        let both = Event::from_json(v).unwrap_err().to_string();
        assert!(
            both.contains("`data_base64` must not come with `data`"),
            "{both}"
        );
        let mut v = sample();
        v.as_object_mut().unwrap().remove("data");
        v["data_base64"] = json!("not base64!");
        let bad = Event::from_json(v).unwrap_err().to_string();
        assert!(bad.contains("`data_base64` is not base64"), "{bad}");
    }

    #[test]
    fn bad_attributes_are_named() {
        let mut v = sample();
        v["id"] = json!("");
        assert!(Event::from_json(v)
            .unwrap_err()
            .to_string()
            .contains("`id`"));
        let mut v = sample();
        v["id"] = json!("x".repeat(MAX_KEY_BYTES + 1));
        assert!(Event::from_json(v)
            .unwrap_err()
            .to_string()
            .contains("`id` is 1025 bytes"));
        let mut v = sample();
        v["id"] = json!(7);
        assert!(Event::from_json(v)
            .unwrap_err()
            .to_string()
            .contains("`id` must be a string"));
        let mut v = sample();
        v["subject"] = json!("");
        assert!(Event::from_json(v)
            .unwrap_err()
            .to_string()
            .contains("`subject`"));
        let mut v = sample();
        v.as_object_mut().unwrap().remove("source");
        assert_eq!(
            Event::from_json(v).unwrap_err(),
            EventError::Missing("source")
        );
        let mut v = sample();
        v["time"] = json!("yesterday");
        assert!(Event::from_json(v)
            .unwrap_err()
            .to_string()
            .contains("`time`"));
        assert!(matches!(
            Event::from_json_bytes(b"{oops"),
            Err(EventError::NotJson(_))
        ));
    }
}
