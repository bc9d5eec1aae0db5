//! The event as eventhost carries it: CloudEvents 1.0 in structured JSON mode, plus the
//! outbox's aggregate type and schema version as extension attributes.

use chrono::{DateTime, FixedOffset};
use serde_json::{Map, Value};
use std::fmt;
use uuid::Uuid;

/// The unique id of an event; redeliveries carry the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub Uuid);

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

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
    /// (`datacontenttype` absent or `application/json`).
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
        if let Some(ct) = map.get("datacontenttype") {
            if ct
                .as_str()
                .map(|s| s.split(';').next().unwrap_or("").trim())
                != Some("application/json")
            {
                return Err(invalid(
                    "datacontenttype",
                    format!("must be application/json, got {ct}"),
                ));
            }
        }
        let id = required_str(&map, "id")?;
        let id = Uuid::parse_str(id)
            .map_err(|_| invalid("id", format!("must be a UUID, got {id:?}")))?;
        let time = required_str(&map, "time")?;
        let time = DateTime::parse_from_rfc3339(time)
            .map_err(|e| invalid("time", format!("must be an RFC 3339 timestamp ({e})")))?;
        let schema_version = match map.get("schemaversion") {
            None => 1,
            Some(v) => parse_version(v)?,
        };
        let event = Event {
            id: EventId(id),
            source: non_empty(&map, "source")?,
            event_type: non_empty(&map, "type")?,
            time,
            subject: non_empty(&map, "subject")?,
            aggregate_type: non_empty(&map, "aggregatetype")?,
            schema_version,
            data: map.remove("data").ok_or(EventError::Missing("data"))?,
            headers: headers(&map)?,
        };
        Ok(event)
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
        map.insert("datacontenttype".into(), "application/json".into());
        map.insert("aggregatetype".into(), self.aggregate_type.into());
        map.insert("schemaversion".into(), self.schema_version.into());
        for (name, value) in self.headers {
            map.insert(name, value.into());
        }
        map.insert("data".into(), self.data);
        Value::Object(map)
    }
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

    #[test]
    fn bad_attributes_are_named() {
        let mut v = sample();
        v["id"] = json!("not-a-uuid");
        assert!(Event::from_json(v)
            .unwrap_err()
            .to_string()
            .contains("`id`"));
        let mut v = sample();
        v.as_object_mut().unwrap().remove("subject");
        assert_eq!(
            Event::from_json(v).unwrap_err(),
            EventError::Missing("subject")
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
