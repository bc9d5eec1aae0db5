//! SQL values from Rust values, and result cells back to JSON.

use crate::{Rows, Value};
use serde_json::{json, Map, Value as Json};

impl Value {
    pub fn uuid(id: impl Into<String>) -> Self {
        Value::Uuid(id.into())
    }

    /// An RFC 3339 timestamp.
    pub fn timestamp(at: impl Into<String>) -> Self {
        Value::Timestamp(at.into())
    }

    /// JSON for a `json` / `jsonb` parameter.
    pub fn json(value: &Json) -> Self {
        Value::Json(value.to_string())
    }

    /// The cell as JSON: numbers and booleans as such, `json` columns parsed, everything
    /// else (text, timestamps, UUIDs) as strings, bytes as an array of numbers.
    pub fn into_json(self) -> Json {
        match self {
            Value::Null => Json::Null,
            Value::Boolean(b) => Json::Bool(b),
            Value::Int32(i) => json!(i),
            Value::Int64(i) => json!(i),
            Value::Float64(f) => json!(f),
            Value::Text(s) | Value::Timestamp(s) | Value::Uuid(s) => Json::String(s),
            Value::Json(s) => serde_json::from_str(&s).unwrap_or(Json::String(s)),
            Value::Bytes(b) => json!(b),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}

impl From<&String> for Value {
    fn from(s: &String) -> Self {
        Value::Text(s.clone())
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Boolean(b)
    }
}

impl From<i32> for Value {
    fn from(i: i32) -> Self {
        Value::Int32(i)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int64(i)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float64(f)
    }
}

impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Self {
        Value::Bytes(b)
    }
}

/// `None` is SQL `NULL`.
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

impl Rows {
    /// Each row as a JSON object keyed by column name (see [`Value::into_json`]).
    pub fn into_objects(self) -> Vec<Map<String, Json>> {
        let columns = self.columns;
        self.rows
            .into_iter()
            .map(|row| {
                columns
                    .iter()
                    .cloned()
                    .zip(row.into_iter().map(Value::into_json))
                    .collect()
            })
            .collect()
    }
}
