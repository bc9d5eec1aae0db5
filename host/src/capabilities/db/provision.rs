//! Gives each plugin its own PostgreSQL role and schema, and its own small pools of
//! connections logged in as that role.
//!
//! Isolation rests on PostgreSQL's privileges, not on reading the plugin's SQL: the role
//! owns its schema and nothing else, is a member of no role, has no attribute beyond
//! LOGIN, and may not call the advisory lock functions. So `SET ROLE`,
//! `SET SESSION AUTHORIZATION`, `pg_read_file`, `COPY ... PROGRAM`, reads of other
//! schemas and locks the host relies on all fail with "permission denied".

use crate::config::Limits;
use crate::runtime::PluginName;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Executor};
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

/// Names and credentials of one plugin's database identity.
#[derive(Clone)]
pub struct PluginIdentity {
    pub role: String,
    pub schema: String,
    password: String,
}

/// The password stays out of logs and `Debug` output.
impl std::fmt::Debug for PluginIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginIdentity")
            .field("role", &self.role)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

fn ident(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

pub fn schema_name(plugin: &PluginName) -> String {
    format!("plugin_{}", ident(plugin.as_str()))
}

/// Roles are cluster-wide, so a role name carries the database's OID, which no other
/// database on the server shares (names do not suffice: `shop-x` and `shop_x` would
/// both read `shop_x`). The readable database prefix is cut to keep within 63 bytes.
pub fn role_name(plugin: &PluginName, database: &str, database_oid: u32) -> String {
    let tail = format!("_{database_oid}__{}", ident(plugin.as_str()));
    let room = 63usize.saturating_sub(tail.len());
    let mut db = ident(database);
    // An unquoted identifier starts with a letter or `_`.
    if !db.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
        db.insert(0, 'd');
    }
    db.truncate(room.min(20));
    format!("{db}{tail}")
}

/// What earlier versions of the host named the role; a schema still owned by it is
/// handed over to the new role.
fn legacy_role_name(plugin: &PluginName, database: &str) -> String {
    let role = format!("{}__{}", ident(database), ident(plugin.as_str()));
    if role.len() > 63 {
        let digest = hex::encode(&Sha256::digest(role.as_bytes())[..4]);
        return format!("{}_{digest}", &role[..54]);
    }
    role
}

/// The SCRAM-SHA-256 verifier of `password`, as PostgreSQL stores it: the host sends this
/// instead of the password, so no statement it runs (or logs, when slow) carries the
/// password itself.
fn scram_verifier(password: &str) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    const ITERATIONS: u32 = 4096;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mac = |key: &[u8], data: &[u8]| {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
        m.update(data);
        m.finalize().into_bytes()
    };
    let salt = *uuid::Uuid::new_v4().as_bytes();
    let mut block = salt.to_vec();
    block.extend_from_slice(&1u32.to_be_bytes());
    let mut u = mac(password.as_bytes(), &block);
    let mut salted = u;
    for _ in 1..ITERATIONS {
        u = mac(password.as_bytes(), &u);
        salted.iter_mut().zip(u.iter()).for_each(|(s, x)| *s ^= x);
    }
    let stored = Sha256::digest(mac(&salted, b"Client Key"));
    let server = mac(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256${ITERATIONS}:{}${}:{}",
        b64.encode(salt),
        b64.encode(stored),
        b64.encode(server)
    )
}

/// How long the host waits for a lock on a plugin's role (a plugin can hold one in an
/// open transaction by altering its own role) before giving up on this attempt.
const ROLE_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '3s'";

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
    seal_advisory_locks(&mut *tx).await?;
    let id = identity(&mut *tx, plugin, &schema)
        .await
        .map_err(setup("?"))?;
    assert_role(&mut *tx, &id, limits).await?;
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

/// The plugin's row in `eventhost_plugin_roles`, made on first sight with a new role name
/// and a random password.
async fn identity(
    conn: &mut PgConnection,
    plugin: &PluginName,
    schema: &str,
) -> Result<PluginIdentity, sqlx::Error> {
    let found: Option<(String, String)> =
        sqlx::query_as("SELECT role, password FROM eventhost_plugin_roles WHERE plugin = $1")
            .bind(plugin.as_str())
            .fetch_optional(&mut *conn)
            .await?;
    let (role, password) = match found {
        Some(found) => found,
        None => {
            let (database, oid): (String, i64) = sqlx::query_as(
                "SELECT datname::text, oid::int8 FROM pg_database WHERE datname = current_database()",
            )
            .fetch_one(&mut *conn)
            .await?;
            let role = role_name(plugin, &database, oid as u32);
            let password = format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            );
            sqlx::query(
                "INSERT INTO eventhost_plugin_roles (plugin, role, password) VALUES ($1, $2, $3)",
            )
            .bind(plugin.as_str())
            .bind(&role)
            .bind(&password)
            .execute(&mut *conn)
            .await?;
            (role, password)
        }
    };
    Ok(PluginIdentity {
        role,
        schema: schema.to_string(),
        password,
    })
}

/// Puts the role back the way the host made it: attributes, connection limit, the host's
/// password, no memberships and no settings of its own (a plugin may write its own role's
/// settings and password; they are undone here, at every load and after its migrations).
pub async fn assert_role(
    conn: &mut PgConnection,
    id: &PluginIdentity,
    limits: &Limits,
) -> Result<(), ProvisionError> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(&id.role)
            .fetch_one(&mut *conn)
            .await
            .map_err(|source| ProvisionError::Attributes {
                role: id.role.clone(),
                source,
            })?;
    // Identifiers are built from [a-z0-9_] only and the verifier is base64, so they are
    // safe to splice; DDL takes no bind parameters.
    let attributes = format!(
        "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS CONNECTION LIMIT {} PASSWORD '{}'",
        limits.role_connection_limit(), scram_verifier(&id.password)
    );
    let verb = if exists { "ALTER" } else { "CREATE" };
    conn.execute(format!("{verb} ROLE {} WITH {attributes}", id.role).as_str())
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
    .fetch_all(&mut *conn)
    .await
    .map_err(|source| ProvisionError::Attributes {
        role: id.role.clone(),
        source,
    })?;
    if !memberships.is_empty() {
        return Err(ProvisionError::Membership {
            role: id.role.clone(),
            memberships: memberships.join(", "),
        });
    }
    wipe_settings(conn, &id.role)
        .await
        .map_err(|source| ProvisionError::Attributes {
            role: id.role.clone(),
            source,
        })
}

/// Removes every setting written on the role (`ALTER ROLE ... [IN DATABASE ...] SET`).
async fn wipe_settings(conn: &mut PgConnection, role: &str) -> Result<(), sqlx::Error> {
    let databases: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT d.datname::text FROM pg_db_role_setting s LEFT JOIN pg_database d ON d.oid = s.setdatabase
         WHERE s.setrole = (SELECT oid FROM pg_roles WHERE rolname = $1)",
    )
    .bind(role)
    .fetch_all(&mut *conn)
    .await?;
    for database in databases {
        let reset = match database {
            None => format!("ALTER ROLE {role} RESET ALL"),
            Some(db) => format!(
                "ALTER ROLE {role} IN DATABASE \"{}\" RESET ALL",
                db.replace('"', "\"\"")
            ),
        };
        conn.execute(reset.as_str()).await?;
    }
    Ok(())
}

/// Puts the host's password back on the role and wipes its settings: what a plugin may
/// change about its own role, undone while it runs (a refused login, a dirty session).
pub async fn repair(admin: &PgPool, id: &PluginIdentity) -> Result<(), sqlx::Error> {
    let mut tx = admin.begin().await?;
    tx.execute(ROLE_LOCK_TIMEOUT).await?;
    let password = format!(
        "ALTER ROLE {} PASSWORD '{}'",
        id.role,
        scram_verifier(&id.password)
    );
    tx.execute(password.as_str()).await?;
    wipe_settings(&mut *tx, &id.role).await?;
    tx.commit().await
}

/// Whether the plugin's schema holds functions or procedures (code that can run SQL of
/// its own choosing inside its sessions).
pub async fn has_code(admin: &PgPool, id: &PluginIdentity) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1)",
    )
    .bind(&id.schema)
    .fetch_one(admin)
    .await
}

/// Re-asserts the role after the plugin's own SQL ran (its migrations).
pub async fn reassert(
    admin: &PgPool,
    id: &PluginIdentity,
    limits: &Limits,
) -> Result<(), ProvisionError> {
    let failed = |source| ProvisionError::Attributes {
        role: id.role.clone(),
        source,
    };
    let mut tx = admin.begin().await.map_err(failed)?;
    tx.execute(ROLE_LOCK_TIMEOUT).await.map_err(failed)?;
    assert_role(&mut *tx, id, limits).await?;
    tx.commit().await.map_err(failed)
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
     WHERE setrole = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user))";

/// One of the plugin's own small pools, so one plugin cannot starve others of connections.
pub fn plugin_pool(admin: &PgPool, id: &Arc<PluginIdentity>, limits: &Limits, size: u32) -> PgPool {
    let (repair_pool, repair_id) = (admin.clone(), id.clone());
    PgPoolOptions::new()
        .after_connect(move |conn, _| {
            let (admin, id) = (repair_pool.clone(), repair_id.clone());
            Box::pin(async move {
                let carried: bool = sqlx::query_scalar(ROLE_SETTINGS).fetch_one(&mut *conn).await?;
                if carried {
                    tracing::warn!(role = %id.role, "the plugin's role had settings of its own; wiped them");
                    repair(&admin, &id).await?;
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
        .acquire_timeout(limits.wall_time.min(Duration::from_secs(30)))
        .idle_timeout(Duration::from_secs(300))
        .connect_lazy_with(connect_options(&admin.connect_options(), id, limits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_differ_per_database_and_fit() {
        let plugin = PluginName::parse("user-stats").unwrap();
        let a = role_name(&plugin, "shop-x", 16384);
        let b = role_name(&plugin, "shop_x", 16385);
        assert_ne!(a, b);
        assert_eq!(a, "shop_x_16384__user_stats");
        let long = PluginName::parse(&"a".repeat(40)).unwrap();
        let name = role_name(&long, &"d".repeat(60), u32::MAX);
        assert!(name.len() <= 63, "{name}");
        assert!(name.ends_with(&format!("_{}__{}", u32::MAX, "a".repeat(40))));
    }

    #[test]
    fn verifiers_are_salted_and_never_carry_the_password() {
        let (a, b) = (scram_verifier("pw-123"), scram_verifier("pw-123"));
        assert!(a.starts_with("SCRAM-SHA-256$4096:"), "{a}");
        assert_ne!(a, b, "a fresh salt each time");
        assert!(!a.contains("pw-123"));
    }

    #[test]
    fn the_password_is_not_in_debug_output() {
        let id = PluginIdentity {
            role: "r".into(),
            schema: "s".into(),
            password: "secret-password".into(),
        };
        assert!(!format!("{id:?}").contains("secret-password"));
    }
}
