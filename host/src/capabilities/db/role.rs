//! A plugin's role: its name, the host's credentials for it, and putting it back the way
//! the host made it whenever the plugin may have changed it (a role may alter its own
//! settings and password; PostgreSQL has no privilege against that).

use super::provision::ProvisionError;
use crate::config::Limits;
use crate::runtime::PluginName;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::Executor;

/// Names and credentials of one plugin's database identity.
#[derive(Clone)]
pub struct PluginIdentity {
    pub role: String,
    pub schema: String,
    pub(super) password: String,
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
pub(super) fn legacy_role_name(plugin: &PluginName, database: &str) -> String {
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
pub(super) const ROLE_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '3s'";

/// The plugin's row in `eventhost_plugin_roles`, made on first sight with a new role name
/// and a random password.
pub(super) async fn identity(
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

/// Puts the role back the way the host made it: attributes, connection limit, no
/// memberships, and (through [`restore`]) the host's password and no settings of its own
/// (a plugin may write its own role's settings and password; they are undone here, at
/// every load and after its migrations).
pub async fn assert_role(
    conn: &mut PgConnection,
    id: &PluginIdentity,
    limits: &Limits,
) -> Result<(), ProvisionError> {
    let failed = |source| ProvisionError::Attributes {
        role: id.role.clone(),
        source,
    };
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(&id.role)
            .fetch_one(&mut *conn)
            .await
            .map_err(failed)?;
    // Identifiers are built from [a-z0-9_] only, so they are safe to splice; DDL takes no
    // bind parameters.
    let attributes = format!(
        "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS CONNECTION LIMIT {}",
        limits.role_connection_limit()
    );
    let verb = if exists { "ALTER" } else { "CREATE" };
    conn.execute(format!("{verb} ROLE {} WITH {attributes}", id.role).as_str())
        .await
        .map_err(failed)?;
    let memberships: Vec<String> = sqlx::query_scalar(
        "SELECT g.rolname::text FROM pg_auth_members m
         JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles r ON r.oid = m.member
         WHERE r.rolname = $1 ORDER BY 1",
    )
    .bind(&id.role)
    .fetch_all(&mut *conn)
    .await
    .map_err(failed)?;
    if !memberships.is_empty() {
        return Err(ProvisionError::Membership {
            role: id.role.clone(),
            memberships: memberships.join(", "),
        });
    }
    restore(conn, id).await.map_err(failed)
}

/// The host's password (as a SCRAM verifier, so no statement carries the password itself)
/// and no settings written on the role (`ALTER ROLE ... [IN DATABASE ...] SET`).
async fn restore(conn: &mut PgConnection, id: &PluginIdentity) -> Result<(), sqlx::Error> {
    // The verifier is base64, so it is safe to splice.
    let password = format!(
        "ALTER ROLE {} PASSWORD '{}'",
        id.role,
        scram_verifier(&id.password)
    );
    conn.execute(password.as_str()).await?;
    let databases: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT d.datname::text FROM pg_db_role_setting s LEFT JOIN pg_database d ON d.oid = s.setdatabase
         WHERE s.setrole = (SELECT oid FROM pg_roles WHERE rolname = $1)",
    )
    .bind(&id.role)
    .fetch_all(&mut *conn)
    .await?;
    for database in databases {
        let reset = match database {
            None => format!("ALTER ROLE {} RESET ALL", id.role),
            Some(db) => format!(
                "ALTER ROLE {} IN DATABASE \"{}\" RESET ALL",
                id.role,
                db.replace('"', "\"\"")
            ),
        };
        conn.execute(reset.as_str()).await?;
    }
    Ok(())
}

/// [`restore`] while the plugin runs (a refused login, a session that found role settings).
pub async fn repair(admin: &PgPool, id: &PluginIdentity) -> Result<(), sqlx::Error> {
    let mut tx = admin.begin().await?;
    tx.execute(ROLE_LOCK_TIMEOUT).await?;
    restore(&mut tx, id).await?;
    tx.commit().await
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
    assert_role(&mut tx, id, limits).await?;
    tx.commit().await.map_err(failed)
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
