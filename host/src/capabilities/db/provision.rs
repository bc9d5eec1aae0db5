//! Gives each plugin its own PostgreSQL role and schema, and its own small pool of
//! connections logged in as that role.
//!
//! Isolation rests on PostgreSQL's privileges, not on reading the plugin's SQL: the role
//! owns its schema and nothing else, is a member of no role, and has no attribute beyond
//! LOGIN. So `SET ROLE`, `SET SESSION AUTHORIZATION`, `pg_read_file`, `COPY ... PROGRAM`
//! and reads of other schemas all fail with "permission denied" whatever the plugin sends.

use crate::config::Limits;
use crate::runtime::PluginName;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Executor};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("could not set up role {role} and schema {schema}: {source}")]
    Setup {
        role: String,
        schema: String,
        source: sqlx::Error,
    },
    #[error("role {role} is a member of {memberships}; a plugin role must hold no other role's privileges (REVOKE them, then reload)")]
    Membership { role: String, memberships: String },
    #[error("role {role} exists with superuser or other extra attributes and could not be reset: {source}")]
    Attributes { role: String, source: sqlx::Error },
}

/// Names and credentials of one plugin's database identity.
#[derive(Debug, Clone)]
pub struct PluginIdentity {
    pub role: String,
    pub schema: String,
    password: String,
}

impl PluginIdentity {
    /// Roles are cluster-wide, so the role name carries the database name: two databases
    /// on one server (say, two test runs) never share a plugin role.
    pub fn new(plugin: &PluginName, database: &str, secret: &str) -> Self {
        let plugin_ident = plugin.as_str().replace('-', "_");
        let db_ident: String = database
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        let mut role = format!("{db_ident}__{plugin_ident}");
        if role.len() > 63 {
            let digest = hex::encode(&Sha256::digest(role.as_bytes())[..4]);
            role = format!("{}_{digest}", &role[..54]);
        }
        let password = hex::encode(&Sha256::digest(format!("{secret}\0{role}").as_bytes())[..16]);
        Self {
            role,
            schema: format!("plugin_{plugin_ident}"),
            password,
        }
    }
}

/// Creates (or re-asserts) the role and schema. Idempotent, and serialised by an advisory
/// lock so several hosts loading the same plugin at once do not trip over each other.
pub async fn provision(
    admin: &PgPool,
    id: &PluginIdentity,
    limits: &Limits,
) -> Result<(), ProvisionError> {
    let setup = |source| ProvisionError::Setup {
        role: id.role.clone(),
        schema: id.schema.clone(),
        source,
    };
    let mut tx = admin.begin().await.map_err(setup)?;
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('eventhost.provision'))")
        .await
        .map_err(setup)?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(&id.role)
            .fetch_one(&mut *tx)
            .await
            .map_err(setup)?;
    // Identifiers are built from [a-z0-9_] only and the password is hex, so they are safe
    // to splice; DDL takes no bind parameters.
    let attributes = format!(
        "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS CONNECTION LIMIT {} PASSWORD '{}'",
        limits.db_connections, id.password
    );
    let verb = if exists { "ALTER" } else { "CREATE" };
    tx.execute(format!("{verb} ROLE {} WITH {attributes}", id.role).as_str())
        .await
        .map_err(|source| ProvisionError::Attributes {
            role: id.role.clone(),
            source,
        })?;
    let memberships: Vec<String> = sqlx::query_scalar(
        "SELECT g.rolname::text FROM pg_auth_members m
         JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles r ON r.oid = m.member
         WHERE r.rolname = $1 ORDER BY 1",
    )
    .bind(&id.role)
    .fetch_all(&mut *tx)
    .await
    .map_err(setup)?;
    if !memberships.is_empty() {
        return Err(ProvisionError::Membership {
            role: id.role.clone(),
            memberships: memberships.join(", "),
        });
    }
    for ddl in [
        format!(
            "CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}",
            id.schema, id.role
        ),
        format!("ALTER SCHEMA {} OWNER TO {}", id.schema, id.role),
        format!("REVOKE ALL ON SCHEMA {} FROM PUBLIC", id.schema),
        format!("ALTER ROLE {} SET search_path = {}", id.role, id.schema),
    ] {
        tx.execute(ddl.as_str()).await.map_err(setup)?;
    }
    tx.commit().await.map_err(setup)
}

/// How the plugin's connections log in: as its role, with its schema first on the search
/// path and the configured statement timeout.
pub fn connect_options(
    admin_options: &PgConnectOptions,
    id: &PluginIdentity,
    limits: &Limits,
) -> PgConnectOptions {
    let timeout_ms = limits.statement_timeout.as_millis().to_string();
    admin_options
        .clone()
        .username(&id.role)
        .password(&id.password)
        .application_name(&format!("eventhost plugin {}", id.role))
        .options([
            ("search_path", id.schema.as_str()),
            ("statement_timeout", timeout_ms.as_str()),
            ("lock_timeout", timeout_ms.as_str()),
        ])
        .log_statements(tracing::log::LevelFilter::Trace)
}

/// The plugin's own small pool, so one plugin cannot starve others of connections.
pub fn plugin_pool(
    admin_options: &PgConnectOptions,
    id: &PluginIdentity,
    limits: &Limits,
) -> PgPool {
    PgPoolOptions::new()
        .max_connections(limits.db_connections)
        .min_connections(0)
        // No ping before each use: it is a round trip per invocation, and a dead
        // connection already fails the invocation cleanly (retried, never half-applied).
        .test_before_acquire(false)
        .acquire_timeout(limits.wall_time.min(Duration::from_secs(30)))
        .idle_timeout(Duration::from_secs(300))
        .connect_lazy_with(connect_options(admin_options, id, limits))
}
