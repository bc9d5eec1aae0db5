//! Event payloads, checked field by field so a bad event names the field it got wrong.
//!
//! Field names follow the producers' notes: camelCase (`userId`), with snake_case
//! (`user_id`) accepted too.

use eventhost_plugin::HandlerError;
use serde_json::{Map, Value};

type Object = Map<String, Value>;

fn permanent(reason: String) -> HandlerError {
    HandlerError::Permanent(reason)
}

/// The value under `camel` or its snake_case twin.
fn field<'a>(data: &'a Object, camel: &str) -> Option<&'a Value> {
    data.get(camel)
        .or_else(|| data.get(&snake_case(camel)))
        .filter(|v| !v.is_null())
}

fn snake_case(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn required_str<'a>(data: &'a Object, name: &str) -> Result<&'a str, HandlerError> {
    match field(data, name) {
        None => Err(permanent(format!("missing field `{name}`"))),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(permanent(format!(
            "field `{name}` must be a string, got {}",
            type_name(other)
        ))),
    }
}

fn optional_str(data: &Object, name: &str) -> Result<Option<String>, HandlerError> {
    match field(data, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(permanent(format!(
            "field `{name}` must be a string, got {}",
            type_name(other)
        ))),
    }
}

fn optional_bool(data: &Object, name: &str) -> Result<Option<bool>, HandlerError> {
    match field(data, name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(permanent(format!(
            "field `{name}` must be a boolean, got {}",
            type_name(other)
        ))),
    }
}

/// A UUID in its hyphenated form (PostgreSQL checks it again on insert).
fn required_uuid(data: &Object, name: &str) -> Result<String, HandlerError> {
    let s = required_str(data, name)?;
    if is_uuid(s) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(permanent(format!(
            "field `{name}` must be a UUID, got {s:?}"
        )))
    }
}

pub fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A decimal amount given as a JSON number or a string of digits; kept as text so no
/// float rounding touches money.
fn required_amount(data: &Object, name: &str) -> Result<String, HandlerError> {
    let text = match field(data, name) {
        None => return Err(permanent(format!("missing field `{name}`"))),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(permanent(format!(
                "field `{name}` must be a number, got {}",
                type_name(other)
            )))
        }
    };
    let digits = text.strip_prefix('-').unwrap_or(&text);
    let mut parts = digits.splitn(2, '.');
    let whole = parts.next().unwrap_or("");
    let frac = parts.next().unwrap_or("0");
    let valid = !whole.is_empty()
        && whole.len() <= 18
        && frac.len() <= 2
        && whole
            .chars()
            .chain(frac.chars())
            .all(|c| c.is_ascii_digit());
    if !valid || text.starts_with('-') {
        return Err(permanent(format!(
            "field `{name}` must be a non-negative amount with at most 2 decimals, got {text:?}"
        )));
    }
    Ok(text)
}

pub fn user_id(data: &Object) -> Result<String, HandlerError> {
    required_uuid(data, "userId")
}

pub struct UserCreated {
    pub user_id: String,
    pub role: Option<String>,
    pub active: bool,
    pub created_at: Option<String>,
}

impl UserCreated {
    pub fn from_json(data: &Object) -> Result<Self, HandlerError> {
        let active = match optional_bool(data, "active")? {
            Some(a) => Some(a),
            None => optional_bool(data, "isActive")?,
        };
        Ok(Self {
            user_id: user_id(data)?,
            role: optional_str(data, "role")?,
            active: active.unwrap_or(true),
            created_at: optional_str(data, "createdAt")?,
        })
    }
}

pub struct RoleChanged {
    pub user_id: String,
    pub role: String,
}

impl RoleChanged {
    pub fn from_json(data: &Object) -> Result<Self, HandlerError> {
        Ok(Self {
            user_id: user_id(data)?,
            role: required_str(data, "role")?.to_string(),
        })
    }
}

pub struct BidPlaced {
    pub bid_id: String,
    pub user_id: String,
    pub amount: String,
    pub placed_at: Option<String>,
}

impl BidPlaced {
    pub fn from_json(data: &Object) -> Result<Self, HandlerError> {
        let placed_at = match optional_str(data, "placedAt")? {
            Some(t) => Some(t),
            None => optional_str(data, "timestamp")?,
        };
        Ok(Self {
            bid_id: required_uuid(data, "bidId")?,
            user_id: user_id(data)?,
            amount: required_amount(data, "amount")?,
            placed_at,
        })
    }
}
