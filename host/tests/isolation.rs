//! A plugin cannot reach past its session, its transaction or its role: the hostile probe
//! tries each, against the real PostgreSQL, through the library and `plugin invoke`.

mod common;

use common::probe::{assert_clean, read, report};
use common::{event, TestHost};
use eventhost::config::{AuthBackend, Limits};
use eventhost::Outcome;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

/// One connection per pool, so every invocation reuses the connection the one before it
/// left behind.
fn one_connection() -> Limits {
    Limits {
        db_connections: 1,
        db_read_connections: 1,
        statement_timeout: Duration::from_secs(1),
        ..Limits::default()
    }
}

/// The probe's session report, from an event or a read.
#[tokio::test]
async fn every_invocation_starts_from_a_clean_session() {
    let host = TestHost::start(one_connection(), AuthBackend::Postgres).await;
    let probe = host.load("probe").await;
    let dirty = probe
        .handle(&event("probe.dirty-session", "x", json!({})))
        .await;
    assert_eq!(
        dirty.outcome,
        Outcome::Ok,
        "the dirtying itself must commit"
    );
    assert_clean(&report(&probe).await, probe.schema());

    // The limit it lifted is back: a sleep past the host's statement timeout is cancelled.
    let sleep = event("probe.sql", "x", json!(["SELECT pg_sleep(3)"]));
    let outcome = probe.handle(&sleep).await.outcome;
    assert!(
        matches!(&outcome, Outcome::Permanent(r) if r.starts_with("57014")),
        "{outcome:?}"
    );

    // Reads too: a read dirties its session, the next read finds it clean.
    assert_eq!(read(&probe, "dirty").await.0, 200);
    let (status, body) = read(&probe, "session").await;
    assert_eq!(status, 200);
    assert_clean(&body, probe.schema());

    // Clean sessions are reused, not reconnected each time.
    let mut backends = BTreeSet::new();
    for _ in 0..10 {
        backends.insert(report(&probe).await["backend"].as_i64().unwrap());
    }
    assert_eq!(backends.len(), 1, "one pooled connection serves them all");
    host.stop().await;
}

/// Whether `verifier` (pg_authid's SCRAM-SHA-256 entry) was made from `password`.
fn scram_matches(verifier: &str, password: &str) -> bool {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    type HmacSha256 = Hmac<sha2::Sha256>;
    let b64 = base64::engine::general_purpose::STANDARD;
    let Some(rest) = verifier.strip_prefix("SCRAM-SHA-256$") else {
        return false;
    };
    let (params, keys) = rest.split_once('$').unwrap();
    let (iterations, salt) = params.split_once(':').unwrap();
    let (_, server_key) = keys.split_once(':').unwrap();
    let salt = b64.decode(salt).unwrap();
    let mut block = salt.clone();
    block.extend_from_slice(&1u32.to_be_bytes());
    let mac = |key: &[u8], data: &[u8]| {
        let mut m = HmacSha256::new_from_slice(key).unwrap();
        m.update(data);
        m.finalize().into_bytes().to_vec()
    };
    let mut u = mac(password.as_bytes(), &block);
    let mut salted = u.clone();
    for _ in 1..iterations.parse::<u32>().unwrap() {
        u = mac(password.as_bytes(), &u);
        salted.iter_mut().zip(&u).for_each(|(s, x)| *s ^= x);
    }
    b64.encode(mac(&salted, b"Server Key")) == server_key
}

async fn role_state(host: &TestHost, role: &str) -> (i64, bool) {
    let settings: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_db_role_setting WHERE setrole = (SELECT oid FROM pg_roles WHERE rolname = $1)",
    )
    .bind(role)
    .fetch_one(&host.pool)
    .await
    .unwrap();
    let (verifier, password): (String, String) = sqlx::query_as(
        "SELECT a.rolpassword, r.password FROM pg_authid a JOIN eventhost_plugin_roles r ON r.role = a.rolname::text WHERE a.rolname = $1",
    )
    .bind(role)
    .fetch_one(&host.pool)
    .await
    .unwrap();
    (settings, scram_matches(&verifier, &password))
}

#[tokio::test]
async fn settings_written_on_the_plugin_role_have_no_effect_and_are_wiped() {
    let host = TestHost::start(one_connection(), AuthBackend::Postgres).await;
    let probe = host.load("probe").await;
    assert_eq!(role_state(&host, probe.role()).await, (0, true));
    let attack = probe
        .handle(&event("probe.role-settings", "x", json!({})))
        .await;
    assert_eq!(attack.outcome, Outcome::Ok, "{:?}", attack.logs);
    // They do not reach the sessions the plugin already has.
    assert_clean(&report(&probe).await, probe.schema());
    // A new session finds them, has them wiped and starts over clean. (The pooled
    // connection is killed here to force one; its next use fails once, as any dead
    // connection does.)
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1")
        .bind(probe.role())
        .execute(&host.pool)
        .await
        .unwrap();
    let _ = probe.handle(&event("probe.insert", "x", json!({}))).await;
    assert_clean(&report(&probe).await, probe.schema());
    assert_eq!(
        role_state(&host, probe.role()).await.0,
        0,
        "role settings survived"
    );
    // A reload puts the host's password back.
    let reloaded = host.load("probe").await;
    assert_eq!(role_state(&host, reloaded.role()).await, (0, true));

    // The same from a plugin's own migration (the probe loaded as `alter-role`).
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("alter_role.wasm");
    std::fs::copy(common::plugin_path("probe"), &copy).unwrap();
    let altered = host.runtime.load_file(&copy).await.expect("loads");
    assert_eq!(role_state(&host, altered.role()).await, (0, true));
    let r = report(&altered).await;
    assert_eq!(r["statement_timeout"], "1s", "{r}");
    assert_eq!(r["work_mem"], "4MB", "{r}");
    host.stop().await;
}

#[tokio::test]
async fn plugins_cannot_take_advisory_locks() {
    let host = TestHost::default().await;
    let probe = host.load("probe").await;
    // The key the host's provisioning uses, and plain ones.
    let provision_key: i64 = sqlx::query_scalar("SELECT hashtext('eventhost.provision')::int8")
        .fetch_one(&host.pool)
        .await
        .unwrap();
    for key in [provision_key, 1, 42] {
        let outcome = probe
            .handle(&event("probe.advisory-lock", "x", json!({ "key": key })))
            .await
            .outcome;
        assert!(
            matches!(&outcome, Outcome::Permanent(r) if r.starts_with("42501")),
            "{outcome:?}"
        );
    }
    for sql in [
        "SELECT pg_try_advisory_lock(1)",
        "SELECT pg_advisory_xact_lock(1)",
        "SELECT pg_try_advisory_xact_lock(1)",
        "SELECT pg_advisory_lock_shared(1)",
        "SELECT pg_advisory_lock(1, 2)",
        "SELECT pg_try_advisory_xact_lock_shared(1, 2)",
    ] {
        let outcome = probe
            .handle(&event("probe.sql", "x", json!([sql])))
            .await
            .outcome;
        assert!(
            matches!(&outcome, Outcome::Permanent(r) if r.starts_with("42501")),
            "{sql}: {outcome:?}"
        );
    }
    // The host still takes its own: loading another plugin provisions under the lock.
    host.load("audit_log").await;
    host.stop().await;
}

#[tokio::test]
async fn a_plugin_cannot_end_the_hosts_transaction() {
    let host = TestHost::default().await;
    let probe = host.load("probe").await;
    let create = "CREATE PROCEDURE probe_commit() LANGUAGE plpgsql AS $$ BEGIN COMMIT; END $$";
    let made = probe
        .handle(&event("probe.sql", "x", json!([create])))
        .await
        .outcome;
    assert_eq!(made, Outcome::Ok);
    let spellings = [
        "COMMIT",
        "commit work",
        "END",
        "ROLLBACK",
        "ABORT",
        "COMMIT AND CHAIN",
        "ROLLBACK AND CHAIN",
        "PREPARE TRANSACTION 'probe'",
        "SAVEPOINT s",
        "RELEASE SAVEPOINT s",
        "ROLLBACK TO SAVEPOINT s",
        "START TRANSACTION",
        "BEGIN",
        "/* hidden */ COMMIT",
        "-- hidden\nCOMMIT",
        ";COMMIT",
        "COMMIT; SELECT 1",
        "SELECT 1; COMMIT",
        "CALL probe_commit()",
        "DO $$ BEGIN COMMIT; END $$",
        "DO $$ BEGIN EXECUTE 'COMMIT'; END $$",
    ];
    for sql in spellings {
        let attempt = event("probe.end-transaction", "x", json!(sql));
        let invocation = probe.deliver(&attempt).await;
        assert!(
            matches!(
                invocation.outcome,
                Outcome::Permanent(_) | Outcome::Retryable(_)
            ),
            "{sql:?}: {:?}",
            invocation.outcome
        );
        let notes = probe
            .query_json("SELECT event_id FROM notes")
            .await
            .unwrap();
        assert_eq!(
            notes.len(),
            1,
            "{sql:?} committed {notes:?} (besides the procedure's note)"
        );
        let inbox = probe
            .query_json(&format!(
                "SELECT 1 FROM _eventhost_inbox WHERE event_id = '{}'",
                attempt.id
            ))
            .await
            .unwrap();
        assert!(
            inbox.is_empty(),
            "{sql:?}: the inbox row committed without its effects"
        );
    }
    // What the host refuses outright fails the invocation permanently.
    let refused = probe
        .deliver(&event("probe.end-transaction", "x", json!("COMMIT")))
        .await;
    assert!(
        matches!(&refused.outcome, Outcome::Permanent(r) if r.contains("sandbox")),
        "{:?}",
        refused.outcome
    );
    // And the plugin keeps working, effects and inbox row together.
    let fine = event("probe.insert", "x", json!({}));
    assert_eq!(probe.deliver(&fine).await.outcome, Outcome::Ok);
    assert_eq!(probe.deliver(&fine).await.outcome, Outcome::Duplicate);
    host.stop().await;
}

#[tokio::test]
async fn plugin_roles_are_unique_per_database_and_hosts_agree_on_them() {
    use eventhost::fixtures::ScratchDatabase;
    use eventhost::runtime::{Runtime, RuntimeSettings};
    let host_on = |pool: &sqlx::PgPool| {
        let admin_pool = pool.clone();
        Runtime::new(RuntimeSettings {
            limits: Limits::default(),
            auth: AuthBackend::Postgres,
            admin_pool,
            compile_cache: eventhost::runtime::compiled::CompileCache::new(None),
        })
        .unwrap()
    };
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let mut hosts = Vec::new();
    for name in [format!("eh_{tag}-x"), format!("eh_{tag}_x")] {
        let db = ScratchDatabase::create_named(&common::server_url(), &name)
            .await
            .unwrap();
        let pool = eventhost::database::connect(&db.url, 4).await.unwrap();
        eventhost::database::migrate(&pool).await.unwrap();
        let runtime = host_on(&pool);
        let probe = runtime
            .load_file(&common::plugin_path("probe"))
            .await
            .unwrap();
        assert_eq!(
            probe
                .handle(&event("probe.insert", "x", json!({})))
                .await
                .outcome,
            Outcome::Ok
        );
        hosts.push((db, pool, runtime, probe));
    }
    let (a, b) = (&hosts[0], &hosts[1]);
    assert_ne!(a.3.role(), b.3.role(), "two databases share a plugin role");
    for (_, pool, _, probe) in &hosts {
        let owner: String = sqlx::query_scalar(
            "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1",
        )
        .bind(probe.schema())
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(&owner, probe.role());
    }

    // A second host on the first database, its URL spelled differently, agrees on the role
    // and leaves the credentials as they are.
    let url = a.0.url.replace("127.0.0.1", "localhost");
    assert_ne!(url, a.0.url);
    let pool = eventhost::database::connect(&url, 4).await.unwrap();
    let before: String =
        sqlx::query_scalar("SELECT password FROM eventhost_plugin_roles WHERE plugin = 'probe'")
            .fetch_one(&pool)
            .await
            .unwrap();
    let other = host_on(&pool);
    let again = other
        .load_file(&common::plugin_path("probe"))
        .await
        .unwrap();
    assert_eq!(again.role(), a.3.role());
    let (verifier, after): (String, String) = sqlx::query_as(
        "SELECT a.rolpassword, r.password FROM pg_authid a JOIN eventhost_plugin_roles r ON r.role = a.rolname::text WHERE r.plugin = 'probe'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(before, after);
    assert!(
        scram_matches(&verifier, &after),
        "the role's password is not the stored one"
    );
    assert_eq!(
        again
            .handle(&event("probe.insert", "x", json!({})))
            .await
            .outcome,
        Outcome::Ok
    );
    assert_eq!(
        a.3.handle(&event("probe.insert", "x", json!({})))
            .await
            .outcome,
        Outcome::Ok
    );
    drop((again, other));
    pool.close().await;
    for (db, pool, _, _) in hosts {
        pool.close().await;
        db.drop_now().await.unwrap();
    }
}

#[tokio::test]
async fn plugin_invoke_runs_each_event_in_a_clean_sandbox() {
    use eventhost::fixtures::ScratchDatabase;
    let db = ScratchDatabase::create(&common::server_url(), "eventhost_test")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let escape = event("probe.end-transaction", "x", json!("COMMIT"));
    let files: Vec<_> = [
        event("probe.dirty-session", "x", json!({})),
        event("probe.session-report", "x", json!({})),
        escape.clone(),
        event("probe.advisory-lock", "x", json!({ "key": 7 })),
    ]
    .iter()
    .enumerate()
    .map(|(i, e)| {
        let path = dir.path().join(format!("{i}.json"));
        std::fs::write(&path, e.to_json().to_string()).unwrap();
        path
    })
    .collect();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_eventhost"))
        .args(["plugin", "invoke", "--statement-timeout", "1s"])
        .arg(common::plugin_path("probe"))
        .args(&files)
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].contains("probe.dirty-session")
            && lines[0].ends_with(")")
            && lines[0].contains("-> ok"),
        "{stdout}"
    );
    let report: Value = serde_json::from_str(lines[2].split_once("] ").unwrap().1).unwrap();
    assert_eq!(report["statement_timeout"], "1s", "{stdout}");
    assert_eq!(report["listening"], 0, "{stdout}");
    assert_eq!(report["temp_tables"], 0, "{stdout}");
    assert!(
        stdout.contains("-> permanent: sandbox: `COMMIT` is refused"),
        "{stdout}"
    );
    assert!(stdout.contains("-> permanent: 42501"), "{stdout}");
    let pool = eventhost::database::connect(&db.url, 1).await.unwrap();
    let notes: i64 = sqlx::query_scalar("SELECT count(*) FROM plugin_probe.notes")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(notes, 0, "the escape attempt committed");
    pool.close().await;
    db.drop_now().await.unwrap();
}

#[tokio::test]
async fn a_schema_left_by_an_earlier_role_is_handed_over_and_a_strangers_is_refused() {
    let host = TestHost::default().await;
    let database: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(&host.pool)
        .await
        .unwrap();
    // What earlier versions named the role: `<database>__<plugin>`.
    let legacy = format!("{}__probe", database.replace('-', "_"));
    for ddl in [
        format!("CREATE ROLE {legacy} LOGIN"),
        format!("CREATE SCHEMA plugin_probe AUTHORIZATION {legacy}"),
        "CREATE TABLE plugin_probe.kept (x int)".to_string(),
        format!("ALTER TABLE plugin_probe.kept OWNER TO {legacy}"),
    ] {
        sqlx::query(&ddl).execute(&host.pool).await.unwrap();
    }
    let probe = host.load("probe").await;
    let owners: Vec<String> = sqlx::query_scalar(
        "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'plugin_probe'
         UNION ALL SELECT tableowner::text FROM pg_tables WHERE schemaname = 'plugin_probe' AND tablename = 'kept'",
    )
    .fetch_all(&host.pool)
    .await
    .unwrap();
    assert_eq!(
        owners,
        vec![probe.role().to_string(), probe.role().to_string()]
    );
    sqlx::query(&format!("DROP ROLE {legacy}"))
        .execute(&host.pool)
        .await
        .unwrap();

    // A schema that belongs to some other role is not taken over.
    let stranger = format!(
        "stranger_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    sqlx::query(&format!("CREATE ROLE {stranger}"))
        .execute(&host.pool)
        .await
        .unwrap();
    sqlx::query(&format!(
        "CREATE SCHEMA plugin_audit_log AUTHORIZATION {stranger}"
    ))
    .execute(&host.pool)
    .await
    .unwrap();
    let refused = host
        .runtime
        .load_file(&common::plugin_path("audit_log"))
        .await
        .err()
        .expect("refused");
    assert!(refused.to_string().contains(&stranger), "{refused}");
    sqlx::query("DROP SCHEMA plugin_audit_log")
        .execute(&host.pool)
        .await
        .unwrap();
    sqlx::query(&format!("DROP ROLE {stranger}"))
        .execute(&host.pool)
        .await
        .unwrap();
    host.stop().await;
}
