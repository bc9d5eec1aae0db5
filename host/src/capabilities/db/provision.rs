//! Gives each plugin its own PostgreSQL role and schema, and its own small pools of
//! connections logged in as that role.
//!
//! Isolation rests on PostgreSQL's privileges, not on reading the plugin's SQL: the role
//! owns its schema and nothing else, is a member of no role, has no attribute beyond
//! LOGIN, and may not call the advisory lock functions. So `SET ROLE`,
//! `SET SESSION AUTHORIZATION`, `pg_read_file`, `COPY ... PROGRAM`, reads of other
//! schemas and locks the host relies on all fail with "permission denied".

use super::role::{assert_role, identity, legacy_role_name, schema_name, ROLE_LOCK_TIMEOUT};
use crate::config::Limits;
use crate::runtime::PluginName;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Executor};

pub use super::role::{reassert, repair, PluginIdentity};
use std::sync::Arc;
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
    #[error("schema {schema} belongs to role {owner}, not to the plugin's role {role}; drop it or hand it over (ALTER SCHEMA ... OWNER TO {role}), then reload")]
    ForeignSchema {
        schema: String,
        owner: String,
        role: String,
    },
    #[error("plugin roles could call {function}, and the host could not revoke it ({source}); connect the host as a superuser, or run once as one: REVOKE EXECUTE ON FUNCTION {function} FROM PUBLIC")]
    Seal {
        function: String,
        source: sqlx::Error,
    },
}

/// The advisory lock functions. Plugins may not call them: advisory locks share one key
/// space per database, so a plugin holding a key could block the host (outbox writers,
/// the purge, provisioning) or another plugin. Unlocking stays allowed (it is harmless).
const ADVISORY_LOCKS: &str = "SELECT p.oid::regprocedure::text FROM pg_proc p \
     WHERE p.pronamespace = 'pg_catalog'::regnamespace \
       AND p.proname ~ '^pg_(try_)?advisory_(xact_)?lock(_shared)?$' \
       AND has_function_privilege('public', p.oid, 'EXECUTE') ORDER BY 1";

async fn seal_advisory_locks(conn: &mut PgConnection) -> Result<(), ProvisionError> {
    let open: Vec<String> = sqlx::query_scalar(ADVISORY_LOCKS)
        .fetch_all(&mut *conn)
        .await
        .map_err(|source| ProvisionError::Seal {
            function: "pg_advisory_lock(bigint)".into(),
            source,
        })?;
    for function in open {
        // regprocedure text is a quoted, schema-qualified signature: safe to splice.
        let revoke = format!("REVOKE EXECUTE ON FUNCTION pg_catalog.{function} FROM PUBLIC");
        conn.execute(revoke.as_str())
            .await
            .map_err(|source| ProvisionError::Seal { function, source })?;
    }
    Ok(())
}

/// Creates (or re-asserts) the role and schema and returns the identity. Idempotent, and
/// serialised so several hosts loading the same plugin at once agree on one identity.
pub async fn provision(
    admin: &PgPool,
    plugin: &PluginName,
    limits: &Limits,
) -> Result<PluginIdentity, ProvisionError> {
    let schema = schema_name(plugin);
    let setup = |role: &str| {
        let (role, schema) = (role.to_string(), schema.clone());
        move |source| ProvisionError::Setup {
            role,
            schema,
            source,
        }
    };
    let mut tx = admin.begin().await.map_err(setup("?"))?;
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('eventhost.provision'))")
        .await
        .map_err(setup("?"))?;
    tx.execute(ROLE_LOCK_TIMEOUT).await.map_err(setup("?"))?;
    seal_advisory_locks(&mut tx).await?;
    let id = identity(&mut tx, plugin, &schema)
        .await
        .map_err(setup("?"))?;
    assert_role(&mut tx, &id, limits).await?;
    let owner: Option<String> =
        sqlx::query_scalar("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1")
            .bind(&id.schema)
            .fetch_optional(&mut *tx)
            .await
            .map_err(setup(&id.role))?;
    let database: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(&mut *tx)
        .await
        .map_err(setup(&id.role))?;
    match owner {
        Some(owner) if owner == id.role => {}
        Some(owner) if owner == legacy_role_name(plugin, &database) => {
            // Everything of the old role in this database (the schema and its tables).
            let reassign = format!("REASSIGN OWNED BY \"{owner}\" TO {}", id.role);
            tx.execute(reassign.as_str())
                .await
                .map_err(setup(&id.role))?;
        }
        Some(owner) => {
            return Err(ProvisionError::ForeignSchema {
                schema: id.schema.clone(),
                owner,
                role: id.role.clone(),
            })
        }
        None => {}
    }
    for ddl in [
        format!(
            "CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}",
            id.schema, id.role
        ),
        format!("REVOKE ALL ON SCHEMA {} FROM PUBLIC", id.schema),
    ] {
        tx.execute(ddl.as_str()).await.map_err(setup(&id.role))?;
    }
    tx.commit().await.map_err(setup(&id.role))?;
    Ok(id)
}

/// Whether the plugin's schema holds functions or procedures (code that can run SQL of
/// its own choosing inside its sessions).
pub async fn has_code(admin: &PgPool, id: &PluginIdentity) -> Result<bool, ProvisionError> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1)",
    )
    .bind(&id.schema)
    .fetch_one(admin)
    .await
    .map_err(|source| ProvisionError::Setup {
        role: id.role.clone(),
        schema: id.schema.clone(),
        source,
    })
}

/// Prepared statements kept per plugin connection.
pub const STATEMENT_CACHE: usize = 64;

/// How the plugin's connections log in: as its role, with its schema on the search path
/// and the host's limits as startup options. Startup options outrank settings stored on
/// the role, and `RESET ALL` returns to them after every invocation.
pub fn connect_options(
    admin_options: &PgConnectOptions,
    id: &PluginIdentity,
    limits: &Limits,
) -> PgConnectOptions {
    let timeout_ms = limits.statement_timeout.as_millis().to_string();
    let idle_ms = limits.wall_time.as_millis().to_string();
    let work_mem = format!("{}kB", limits.db_work_mem_kib);
    admin_options
        .clone()
        .username(&id.role)
        .password(&id.password)
        .application_name(&format!("eventhost plugin {}", id.role))
        .options([
            ("search_path", id.schema.as_str()),
            ("statement_timeout", timeout_ms.as_str()),
            ("lock_timeout", timeout_ms.as_str()),
            ("idle_in_transaction_session_timeout", idle_ms.as_str()),
            // Set here so a role setting cannot close idle pooled connections under us.
            ("idle_session_timeout", "0"),
            ("work_mem", work_mem.as_str()),
            // Notices a plugin raises would otherwise reach the host's log, unbounded.
            ("client_min_messages", "error"),
        ])
        .log_statements(tracing::log::LevelFilter::Trace)
        // Prepared statements are cached per connection; with `limits.db_statement_bytes`
        // this bounds what a plugin's SQL text can pin in the host.
        .statement_cache_capacity(STATEMENT_CACHE)
        // sqlx would log a slow statement's full text at WARN: the plugin's, unbounded.
        .log_slow_statements(tracing::log::LevelFilter::Off, Duration::from_secs(1))
}

/// Settings written on the role apply to every session that logs in after: a new
/// connection that finds any wipes them and is dropped; the pool then connects again.
const ROLE_SETTINGS: &str = "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_db_role_setting \
     WHERE setrole = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)), \
     pg_catalog.pg_backend_pid()";

/// One of the plugin's own small pools, so one plugin cannot starve others of connections.
pub fn plugin_pool(admin: &PgPool, id: &Arc<PluginIdentity>, limits: &Limits, size: u32) -> PgPool {
    let (repair_pool, repair_id) = (admin.clone(), id.clone());
    PgPoolOptions::new()
        .after_connect(move |conn, _| {
            let (admin, id) = (repair_pool.clone(), repair_id.clone());
            Box::pin(async move {
                let (carried, pid): (bool, i32) =
                    sqlx::query_as(ROLE_SETTINGS).fetch_one(&mut *conn).await?;
                if carried {
                    tracing::warn!(role = %id.role, "the plugin's role had settings of its own; wiped them");
                    repair(&admin, &id).await?;
                    // The server ends the session, not the client: sqlx closes a refused
                    // connection without saying goodbye, and over TLS that close waits
                    // for an answer an idle backend never sends.
                    sqlx::query("SELECT pg_terminate_backend($1)")
                        .bind(pid)
                        .execute(&admin)
                        .await?;
                    return Err(sqlx::Error::Protocol(
                        "the session carried settings written on the plugin's role".into(),
                    ));
                }
                Ok(())
            })
        })
        .max_connections(size)
        .min_connections(0)
        // No ping before each use: it is a round trip per invocation, and a dead
        // connection already fails the invocation cleanly (retried, never half-applied).
        .test_before_acquire(false)
        // Half the wall time at most, so a full pool is reported as such (capacity: the
        // delivery waits, no attempt spent) before the invocation's deadline passes.
        .acquire_timeout((limits.wall_time / 2).min(Duration::from_secs(30)))
        .idle_timeout(Duration::from_secs(300))
        .connect_lazy_with(connect_options(&admin.connect_options(), id, limits))
}
