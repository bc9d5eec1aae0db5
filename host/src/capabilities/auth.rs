//! The `auth` import: "does this user exist?", answered by the reference `users` table or
//! by an external auth service over HTTP.

use super::HostState;
use crate::config::AuthBackend;
use crate::runtime::bindings::auth::{Host, User};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("users table lookup failed: {0}")]
    Database(#[from] sqlx::Error),
    /// Without its URL: the configured base may carry credentials.
    #[error("auth service request failed: {0}")]
    Http(reqwest::Error),
    #[error("auth service answered {status} for user {id}")]
    Status {
        id: Uuid,
        status: reqwest::StatusCode,
    },
    #[error("invalid auth service URL {url:?}: {reason}")]
    Config { url: String, reason: String },
}

impl From<reqwest::Error> for AuthError {
    fn from(e: reqwest::Error) -> Self {
        Self::Http(e.without_url())
    }
}

/// One lookup backend, shared by every invocation.
#[derive(Clone)]
pub enum AuthLookup {
    Postgres(PgPool),
    Http {
        client: reqwest::Client,
        base: reqwest::Url,
    },
}

/// A user as the auth service's JSON shows it (camelCase or snake_case).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserJson {
    id: Uuid,
    email: String,
    name: String,
    role: String,
    active: bool,
    #[serde(alias = "created_at")]
    created_at: DateTime<Utc>,
}

impl From<UserJson> for User {
    fn from(u: UserJson) -> Self {
        User {
            id: u.id.to_string(),
            email: u.email,
            name: u.name,
            role: u.role,
            active: u.active,
            created_at: u.created_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        }
    }
}

impl AuthLookup {
    pub fn new(backend: &AuthBackend, admin_pool: &PgPool) -> Result<Self, AuthError> {
        match backend {
            AuthBackend::Postgres => Ok(Self::Postgres(admin_pool.clone())),
            AuthBackend::Http {
                url,
                timeout,
                ca_file,
            } => {
                let config = |reason: String| AuthError::Config {
                    url: crate::config::redact::url(url),
                    reason,
                };
                let mut base = reqwest::Url::parse(url).map_err(|e| config(e.to_string()))?;
                if !matches!(base.scheme(), "http" | "https") {
                    return Err(config("scheme must be http or https".into()));
                }
                if !base.path().ends_with('/') {
                    base.set_path(&format!("{}/", base.path()));
                }
                let mut client = reqwest::Client::builder().timeout(*timeout);
                if let Some(path) = ca_file {
                    let pem = std::fs::read(path).map_err(|e| {
                        config(format!(
                            "cannot read auth.ca_file = {}: {e}",
                            path.display()
                        ))
                    })?;
                    let roots = reqwest::Certificate::from_pem_bundle(&pem)
                        .map_err(|e| config(format!("auth.ca_file = {}: {e}", path.display())))?;
                    for root in roots {
                        client = client.add_root_certificate(root);
                    }
                }
                let client = client.build()?;
                Ok(Self::Http { client, base })
            }
        }
    }

    pub async fn lookup(&self, id: Uuid) -> Result<Option<User>, AuthError> {
        match self {
            Self::Postgres(pool) => {
                let row: Option<(Uuid, String, String, String, bool, DateTime<Utc>)> =
                    sqlx::query_as(
                        "SELECT id, email, name, role, active, created_at FROM users WHERE id = $1",
                    )
                    .bind(id)
                    .fetch_optional(pool)
                    .await?;
                Ok(row.map(|(id, email, name, role, active, created_at)| {
                    UserJson {
                        id,
                        email,
                        name,
                        role,
                        active,
                        created_at,
                    }
                    .into()
                }))
            }
            Self::Http { client, base } => {
                let url =
                    base.join(&format!("auth/users/{id}"))
                        .map_err(|e| AuthError::Config {
                            url: crate::config::redact::url(base.as_str()),
                            reason: e.to_string(),
                        })?;
                let response = client.get(url).send().await?;
                match response.status() {
                    reqwest::StatusCode::NOT_FOUND => Ok(None),
                    s if s.is_success() => Ok(Some(response.json::<UserJson>().await?.into())),
                    status => Err(AuthError::Status { id, status }),
                }
            }
        }
    }
}

impl Host for HostState {
    async fn lookup_user(&mut self, id: String) -> Result<Option<User>, String> {
        // A malformed id names no user; that is an answer, not a failure.
        let Ok(id) = Uuid::parse_str(&id) else {
            return Ok(None);
        };
        self.auth.lookup(id).await.map_err(|e| {
            tracing::warn!(plugin = %self.plugin, event_id = ?self.event_id, error = %e, "auth lookup failed");
            e.to_string()
        })
    }
}
