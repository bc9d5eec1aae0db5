//! The event as eventhost carries it: CloudEvents 1.0 in structured JSON mode, plus the
//! outbox's aggregate type and schema version as extension attributes.

pub mod data;
mod structured;

pub use structured::{Data, Parts};

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

    /// The parts of its structured-mode body, borrowed.
    pub fn parts(&self) -> Parts<'_> {
        Parts {
            id: &self.id.0,
            source: &self.source,
            event_type: &self.event_type,
            time: self.time,
            subject: &self.subject,
            aggregate_type: &self.aggregate_type,
            schema_version: self.schema_version,
            data: Data::Value(&self.data),
            headers: &self.headers,
        }
    }

    /// The structured-mode JSON of this event.
    pub fn to_json(&self) -> Value {
        self.parts().to_value()
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
mod tests;
