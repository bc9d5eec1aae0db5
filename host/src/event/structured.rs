//! Writing an event in structured mode. The members go into a map keyed by name, so the
//! body lists them by name and a header named like a member replaces it, the same for a
//! parsed [`super::Event`] and for the relay, which writes each outbox row's payload as
//! the JSON text PostgreSQL returned instead of building a tree from it first.

use super::data;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// An event's data: a parsed value, or JSON text taken as it is.
#[derive(Debug, Clone, Copy)]
pub enum Data<'a> {
    Value(&'a Value),
    Text(&'a RawValue),
}

/// Everything a structured-mode body holds, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    pub id: &'a str,
    pub source: &'a str,
    pub event_type: &'a str,
    pub time: chrono::DateTime<chrono::FixedOffset>,
    pub subject: &'a str,
    pub aggregate_type: &'a str,
    pub schema_version: u32,
    pub data: Data<'a>,
    /// Extension attributes, including the data's own (`datacontenttype`, `database64`).
    pub headers: &'a [(String, String)],
}

#[derive(Serialize)]
#[serde(untagged)]
enum Member<'a> {
    Text(Cow<'a, str>),
    Number(u32),
    Value(&'a Value),
    Json(&'a RawValue),
}

impl<'a> Parts<'a> {
    fn members(&self) -> BTreeMap<&'a str, Member<'a>> {
        let text = |s: &'a str| Member::Text(Cow::Borrowed(s));
        let mut members = BTreeMap::new();
        members.insert("specversion", text("1.0"));
        members.insert("id", text(self.id));
        members.insert("source", text(self.source));
        members.insert("type", text(self.event_type));
        members.insert("time", Member::Text(Cow::Owned(self.time.to_rfc3339())));
        members.insert("subject", text(self.subject));
        members.insert("aggregatetype", text(self.aggregate_type));
        members.insert("schemaversion", Member::Number(self.schema_version));
        let described = data::Described::of(self.headers);
        for (name, value) in described.extensions {
            members.insert(name, text(value));
        }
        members.insert(data::CONTENT_TYPE, text(described.content_type));
        let data = match self.data {
            Data::Value(value) => Member::Value(value),
            Data::Text(json) => Member::Json(json),
        };
        members.insert(described.member, data);
        members
    }

    /// The body's bytes, compact: JSON text data (PostgreSQL prints jsonb with a space
    /// after every `:` and `,`) loses its whitespace, so the body is as long as one
    /// written from a parsed value, and `relay.max_message_bytes` means what it did.
    pub fn to_vec(&self) -> serde_json::Result<Vec<u8>> {
        let mut body = serde_json::to_vec(&self.members())?;
        if let Data::Text(_) = self.data {
            compact(&mut body);
        }
        Ok(body)
    }

    /// The body as a JSON value.
    pub fn to_value(&self) -> Value {
        // Only strings, numbers and JSON already parsed or checked: cannot fail.
        serde_json::to_value(self.members()).unwrap_or(Value::Null)
    }
}

/// Removes the whitespace between the tokens of a valid JSON text, in place; strings
/// are kept byte for byte.
fn compact(json: &mut Vec<u8>) {
    let (mut in_string, mut escaped) = (false, false);
    json.retain(|&byte| {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            return true;
        }
        match byte {
            b'"' => {
                in_string = true;
                true
            }
            b' ' | b'\n' | b'\r' | b'\t' => false,
            _ => true,
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parts<'a>(data: Data<'a>, headers: &'a [(String, String)]) -> Parts<'a> {
        Parts {
            id: "e-1",
            source: "tests",
            event_type: "user.created",
            time: chrono::DateTime::parse_from_rfc3339("2026-12-06T10:00:00+00:00").unwrap(),
            subject: "u-1",
            aggregate_type: "user",
            schema_version: 2,
            data,
            headers,
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn json_text_is_written_as_the_same_members_as_a_parsed_value() {
        let value = json!({"name": "Ann", "tags": ["a", {"b": null}], "n": 1.5});
        // As PostgreSQL prints jsonb: spaces, its own key order.
        let text = RawValue::from_string(
            r#"{"n": 1.5, "name": "Ann", "tags": ["a", {"b": null}]}"#.into(),
        )
        .unwrap();
        let headers = pairs(&[("traceparent", "00-ab-cd-01"), ("tenant", "t1")]);
        let from_text: Value =
            serde_json::from_slice(&parts(Data::Text(&text), &headers).to_vec().unwrap()).unwrap();
        let from_value = parts(Data::Value(&value), &headers).to_value();
        assert_eq!(from_text, from_value);
        assert_eq!(from_text["data"], value);
        assert_eq!(from_text["traceparent"], "00-ab-cd-01");
        assert_eq!(from_text["schemaversion"], 2);
        assert_eq!(from_text["datacontenttype"], "application/json");
    }

    #[test]
    fn json_text_data_is_written_compact_with_its_strings_intact() {
        let text = RawValue::from_string(
            "{\"a b\": \" x , y : \\\" z \", \"list\": [1, 2.50, {\"k\": \"\\\\\"}],\n\t\"n\": null}".into(),
        )
        .unwrap();
        let body = parts(Data::Text(&text), &[]).to_vec().unwrap();
        let body = String::from_utf8(body).unwrap();
        assert!(
            body.contains(r#""data":{"a b":" x , y : \" z ","list":[1,2.50,{"k":"\\"}],"n":null}"#),
            "{body}"
        );
        let parsed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["data"]["a b"], " x , y : \" z ");
    }

    #[test]
    fn the_data_headers_choose_the_member_and_media_type() {
        let encoded = RawValue::from_string(r#""aGVsbG8=""#.into()).unwrap();
        let headers = pairs(&[
            ("datacontenttype", "application/octet-stream"),
            ("database64", "true"),
        ]);
        let body: Value =
            serde_json::from_slice(&parts(Data::Text(&encoded), &headers).to_vec().unwrap())
                .unwrap();
        assert_eq!(body["data_base64"], "aGVsbG8=");
        assert_eq!(body["datacontenttype"], "application/octet-stream");
        assert!(body.get("data").is_none() && body.get("database64").is_none());
    }

    #[test]
    fn a_header_named_like_a_member_replaces_it_as_before() {
        let value = json!(1);
        let headers = pairs(&[("subject", "from-a-header")]);
        assert_eq!(
            parts(Data::Value(&value), &headers).to_value()["subject"],
            "from-a-header"
        );
    }
}
