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
