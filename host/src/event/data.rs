//! An event's data. JSON data (no `datacontenttype`, or a JSON media type) is the JSON
//! value itself. Data of any other media type is carried too, as a JSON string, with its
//! media type in the header `datacontenttype` so the plugin can tell: text as the text,
//! bytes (`data_base64` in structured mode, a body that is not UTF-8 in binary mode) as
//! base64, with the header `database64` = `true`.

use super::{invalid, is_json_media_type, EventError};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{Map, Value};

pub const CONTENT_TYPE: &str = "datacontenttype";
pub const BASE64: &str = "database64";

/// Takes the data out of a structured event's members: the data, and the headers that
/// describe it (none for JSON data).
pub(super) fn take(
    map: &mut Map<String, Value>,
) -> Result<(Value, Vec<(String, String)>), EventError> {
    let content_type = match map.remove(CONTENT_TYPE) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            return Err(invalid(
                CONTENT_TYPE,
                format!("must be a string, got {other}"),
            ))
        }
    };
    let json = content_type.as_deref().is_none_or(is_json_media_type);
    let mut headers = Vec::new();
    // A `null` data is no data.
    let given = map.remove("data").filter(|d| !d.is_null());
    let data = match (given, map.remove("data_base64")) {
        (Some(_), Some(_)) => return Err(invalid("data_base64", "must not come with `data`")),
        (data, None) => data.unwrap_or(Value::Null),
        (None, Some(Value::String(encoded))) => {
            if let Err(e) = STANDARD.decode(encoded.as_bytes()) {
                return Err(invalid("data_base64", format!("is not base64 ({e})")));
            }
            headers.push((BASE64.to_string(), "true".to_string()));
            Value::String(encoded)
        }
        (None, Some(other)) => {
            return Err(invalid(
                "data_base64",
                format!("must be a string, got {other}"),
            ))
        }
    };
    if !json || !headers.is_empty() {
        let content_type = content_type.unwrap_or_else(|| "application/octet-stream".into());
        headers.insert(0, (CONTENT_TYPE.to_string(), content_type));
    }
    Ok((data, headers))
}

/// What an event's headers say of its data when it is written in structured mode.
pub(super) struct Described<'a> {
    /// `application/json` unless a header says otherwise.
    pub content_type: &'a str,
    /// `data`, or `data_base64` for bytes.
    pub member: &'static str,
    /// The other headers: extension attributes, members of their own.
    pub extensions: Vec<(&'a str, &'a str)>,
}

impl<'a> Described<'a> {
    pub(super) fn of(headers: &'a [(String, String)]) -> Self {
        let mut described = Described {
            content_type: "application/json",
            member: "data",
            extensions: Vec::with_capacity(headers.len()),
        };
        for (name, value) in headers {
            match name.as_str() {
                CONTENT_TYPE => described.content_type = value,
                BASE64 => described.member = "data_base64",
                _ => described.extensions.push((name, value)),
            }
        }
        described
    }
}

/// A binary-mode body whose media type is not JSON, as a structured member: the text, or
/// base64 when it is not UTF-8.
pub fn from_body(body: &[u8]) -> (&'static str, Value) {
    match std::str::from_utf8(body) {
        Ok(text) => ("data", Value::String(text.to_string())),
        Err(_) => ("data_base64", Value::String(STANDARD.encode(body))),
    }
}
