//! The reference auth service's data: each change writes the `users` row and its event
//! in one transaction through the producer API.

use crate::outbox::{self, NewEvent, ProducerError};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

pub const AGGREGATE: &str = "user";

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub role: String,
    pub active: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("email {0:?} is already registered")]
    EmailTaken(String),
    #[error("no user {0}")]
    NotFound(Uuid),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Outbox(#[from] ProducerError),
}

/// Who is writing the events: their CloudEvents source and the caller's trace context.
pub struct Producer<'a> {
    pub source: &'a str,
    pub traceparent: Option<String>,
}

impl Producer<'_> {
    fn event(&self, user: Uuid, event_type: &str, payload: serde_json::Value) -> NewEvent {
        let event = NewEvent::new(
            self.source,
            AGGREGATE,
            user.to_string(),
            event_type,
            payload,
        );
        match &self.traceparent {
            Some(tp) => event.with_header("traceparent", tp.clone()),
            None => event,
        }
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

const COLUMNS: &str = "id, email, name, role, active, created_at";

async fn commit_with(mut tx: Transaction<'_, Postgres>, event: NewEvent) -> Result<(), UserError> {
    outbox::enqueue(&mut tx, std::slice::from_ref(&event)).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn register(
    pool: &PgPool,
    producer: &Producer<'_>,
    email: &str,
    name: &str,
    role: &str,
) -> Result<User, UserError> {
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query_as::<_, User>(&format!(
        "INSERT INTO users (id, email, name, role) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (email) DO NOTHING RETURNING {COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(email)
    .bind(name)
    .bind(role)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(user) = inserted else {
        return Err(UserError::EmailTaken(email.to_string()));
    };
    let payload = json!({
        "userId": user.id, "email": user.email, "name": user.name, "role": user.role,
        "isActive": user.active, "createdAt": rfc3339(user.created_at),
    });
    let event = producer
        .event(user.id, "user.created", payload)
        .with_occurred_at(user.created_at);
    commit_with(tx, event).await?;
    Ok(user)
}

pub async fn get(pool: &PgPool, id: Uuid) -> Result<User, UserError> {
    sqlx::query_as::<_, User>(&format!("SELECT {COLUMNS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(UserError::NotFound(id))
}

/// Sets `active`; writes `user.activated` / `user.deactivated` only when it changes.
pub async fn set_active(
    pool: &PgPool,
    producer: &Producer<'_>,
    id: Uuid,
    active: bool,
) -> Result<User, UserError> {
    let mut tx = pool.begin().await?;
    let changed = sqlx::query_as::<_, User>(&format!(
        "UPDATE users SET active = $2 WHERE id = $1 AND active <> $2 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(active)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(user) = changed else {
        drop(tx);
        return get(pool, id).await;
    };
    let event_type = if active {
        "user.activated"
    } else {
        "user.deactivated"
    };
    let payload = json!({
        "userId": user.id, "email": user.email, "isActive": user.active,
        "changedAt": rfc3339(Utc::now()),
    });
    commit_with(tx, producer.event(user.id, event_type, payload)).await?;
    Ok(user)
}

/// Sets the role; writes `user.role.changed` (with the previous role) only when it changes.
pub async fn set_role(
    pool: &PgPool,
    producer: &Producer<'_>,
    id: Uuid,
    role: &str,
) -> Result<User, UserError> {
    let mut tx = pool.begin().await?;
    // The row lock taken here serializes concurrent changes to one user.
    let previous: Option<String> =
        sqlx::query_scalar("SELECT role FROM users WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let previous = previous.ok_or(UserError::NotFound(id))?;
    let user = sqlx::query_as::<_, User>(&format!(
        "UPDATE users SET role = $2 WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(role)
    .fetch_one(&mut *tx)
    .await?;
    if previous == role {
        tx.commit().await?;
        return Ok(user);
    }
    let payload = json!({
        "userId": user.id, "email": user.email, "role": user.role, "previousRole": previous,
        "changedAt": rfc3339(Utc::now()),
    });
    commit_with(tx, producer.event(user.id, "user.role.changed", payload)).await?;
    Ok(user)
}
