//! The producer API: write events into `outbox_events` inside the caller's transaction,
//! so the business change and its events commit together or not at all.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Postgres, Transaction};
use std::collections::BTreeMap;
use uuid::Uuid;

/// One event to publish. `new` fills in a fresh id, the current time, schema version 1
/// and a new W3C `traceparent`; the `with_*` methods change them.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The event id: a UUID for events written here (other publishers may use any string).
    pub id: Uuid,
    /// CloudEvents `source`: who produced it (e.g. `auth-service`).
    pub source: String,
    /// The kind of thing the event is about (e.g. `user`).
    pub aggregate_type: String,
    /// Which one (the CloudEvents `subject`); events of one aggregate stay in order.
    pub aggregate_id: String,
    /// Also the routing key (e.g. `user.created`).
    pub event_type: String,
    pub payload: Value,
    pub schema_version: u32,
    pub occurred_at: DateTime<Utc>,
    /// Message headers and CloudEvents extensions: lowercase letters and digits only.
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    #[error("event {id}: {field} {problem}")]
    Invalid {
        id: Uuid,
        field: &'static str,
        problem: String,
    },
    #[error("cannot write to the outbox: {0}")]
    Database(#[from] sqlx::Error),
}

impl NewEvent {
    pub fn new(
        source: impl Into<String>,
        aggregate_type: impl Into<String>,
        aggregate_id: impl Into<String>,
        event_type: impl Into<String>,
        payload: Value,
    ) -> Self {
        let mut headers = BTreeMap::new();
        headers.insert("traceparent".to_string(), new_traceparent());
        Self {
            // Time-ordered (v7): the primary key takes new ids at its right edge instead of
            // at random leaf pages, for the producers' inserts and the relay's marks.
            id: Uuid::now_v7(),
            source: source.into(),
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
            event_type: event_type.into(),
            payload,
            schema_version: 1,
            occurred_at: Utc::now(),
            headers,
        }
    }

    /// Sets a header; `traceparent` replaces the generated one (continue the caller's trace).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    pub fn with_schema_version(mut self, version: u32) -> Self {
        self.schema_version = version;
        self
    }

    pub fn with_occurred_at(mut self, at: DateTime<Utc>) -> Self {
        self.occurred_at = at;
        self
    }

    fn validate(&self) -> Result<(), ProducerError> {
        let fail = |field, problem: &str| {
            Err(ProducerError::Invalid {
                id: self.id,
                field,
                problem: problem.to_string(),
            })
        };
        for (field, value) in [
            ("source", &self.source),
            ("aggregate_type", &self.aggregate_type),
            ("aggregate_id", &self.aggregate_id),
        ] {
            if value.trim().is_empty() {
                return fail(field, "must not be empty");
            }
        }
        if !is_routing_key(&self.event_type) {
            return fail(
                "event_type",
                "must be 1-255 characters of letters, digits, '.', '-' and '_' (it is the routing key)",
            );
        }
        if self.schema_version == 0 || self.schema_version > i32::MAX as u32 {
            return fail("schema_version", "must be a positive 32-bit integer");
        }
        for name in self.headers.keys() {
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
            if !valid || crate::event::is_reserved_attribute(name) {
                return fail(
                    "headers",
                    &format!("name {name:?} must be 1-64 lowercase letters or digits and not a CloudEvents attribute"),
                );
            }
        }
        Ok(())
    }
}

fn is_routing_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// A W3C trace context for an event that starts its own trace (sampled).
pub fn new_traceparent() -> String {
    let trace = Uuid::new_v4().simple().to_string();
    let span = &Uuid::new_v4().simple().to_string()[..16];
    format!("00-{trace}-{span}-01")
}

/// Writes `events` to the outbox in `tx`. Nothing is visible to the relay until the
/// caller commits; a rollback discards them with the rest of the transaction.
///
/// Per-aggregate order: the call first takes a transaction-scoped advisory lock per
/// aggregate it writes (in a fixed order, so two producers cannot deadlock on them). Two
/// transactions writing events of one aggregate are therefore serialized, and the
/// outbox's sequence order for that aggregate is its commit order, which is the order
/// the relay publishes in. Events of one call get sequence numbers in slice order.
pub async fn enqueue(
    tx: &mut Transaction<'_, Postgres>,
    events: &[NewEvent],
) -> Result<(), ProducerError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut aggregates = Vec::with_capacity(events.len());
    let n = events.len();
    let (mut ids, mut agg_types, mut agg_ids, mut types, mut sources) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut payloads, mut versions, mut times, mut headers) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for event in events {
        event.validate()?;
        aggregates.push(format!(
            "{}\u{1f}{}",
            event.aggregate_type, event.aggregate_id
        ));
        ids.push(event.id);
        agg_types.push(event.aggregate_type.as_str());
        agg_ids.push(event.aggregate_id.as_str());
        types.push(event.event_type.as_str());
        sources.push(event.source.as_str());
        payloads.push(sqlx::types::Json(&event.payload));
        versions.push(event.schema_version as i32);
        times.push(event.occurred_at);
        headers.push(sqlx::types::Json(&event.headers));
    }
    aggregates.sort_unstable();
    aggregates.dedup();
    // The InitPlan `(SELECT count(*) FROM locks)` runs before the first row is inserted,
    // so every lock is held before any sequence number is drawn.
    sqlx::query(
        "WITH locks AS ( \
             SELECT pg_advisory_xact_lock(7460, hashtext(k)) FROM unnest($1::text[]) AS k) \
         INSERT INTO outbox_events (event_id, aggregate_type, aggregate_id, event_type, source, \
                                    payload, schema_version, occurred_at, headers) \
         SELECT * FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], \
                              $7::jsonb[], $8::int4[], $9::timestamptz[], $10::jsonb[]) \
         WHERE (SELECT count(*) FROM locks) >= 0",
    )
    .bind(&aggregates)
    .bind(&ids)
    .bind(&agg_types)
    .bind(&agg_ids)
    .bind(&types)
    .bind(&sources)
    .bind(&payloads)
    .bind(&versions)
    .bind(&times)
    .bind(&headers)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn traceparent_is_w3c_shaped() {
        let tp = new_traceparent();
        let parts: Vec<_> = tp.split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(
            (parts[0], parts[1].len(), parts[2].len(), parts[3]),
            ("00", 32, 16, "01")
        );
    }

    #[test]
    fn invalid_events_name_the_field() {
        let ok = NewEvent::new("svc", "user", "u1", "user.created", json!({}));
        assert!(ok.validate().is_ok());
        let bad = NewEvent::new("svc", "user", "u1", "user.*", json!({}));
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("event_type"));
        let bad = NewEvent::new("svc", "user", " ", "user.created", json!({}));
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("aggregate_id"));
        let bad = ok.clone().with_header("Trace-Id", "x");
        assert!(bad.validate().unwrap_err().to_string().contains("headers"));
        let bad = ok.with_header("subject", "x");
        assert!(bad.validate().is_err());
    }
}
