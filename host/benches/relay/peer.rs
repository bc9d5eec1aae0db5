//! The relay bench's third contender: `bench/peer-relay`, a peer outbox relay on
//! ruststream-sqlx (its own package, on sqlx 0.9), run as a process over a table holding
//! the same messages as the relay's backlog.

use eventhost::outbox;
use sqlx::PgPool;

/// The peer relay (`bench/peer-relay`, on ruststream-sqlx): its binary, from
/// `EVENTHOST_PEER_RELAY` (set by `scripts/bench.sh relay`), else the release build's.
pub fn binary() -> Option<std::path::PathBuf> {
    let path = std::env::var("EVENTHOST_PEER_RELAY")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| super::common::target_dir().join("release/peer-relay"));
    path.exists().then_some(path)
}

const TABLE: &str = "peer_relay_outbox";
/// The peer's best setting as measured from outside: batches of 1,000, 4 workers.
pub const BATCH: u32 = 1000;
pub const WORKERS: u32 = 4;

/// The peer's backlog: the same bodies, routing keys and ids as the relay's, one row each.
pub async fn fill(pool: &PgPool, messages: &[outbox::Outgoing]) -> anyhow::Result<()> {
    sqlx::query(&format!("TRUNCATE {TABLE}"))
        .execute(pool)
        .await?;
    for chunk in messages.chunks(1000) {
        let keys: Vec<String> = chunk.iter().map(|m| m.routing_key.to_string()).collect();
        let ids: Vec<String> = chunk
            .iter()
            .map(|m| {
                m.properties
                    .message_id()
                    .as_ref()
                    .map(|id| id.to_string())
                    .unwrap_or_default()
            })
            .collect();
        let bodies: Vec<Vec<u8>> = chunk.iter().map(|m| m.body.clone()).collect();
        sqlx::query(&format!(
            "INSERT INTO {TABLE} (routing_key, message_id, payload) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[])"
        ))
        .bind(&keys)
        .bind(&ids)
        .bind(&bodies)
        .execute(pool)
        .await?;
    }
    sqlx::query(&format!("VACUUM ANALYZE {TABLE}"))
        .execute(pool)
        .await?;
    Ok(())
}

/// Runs the peer over its backlog; its own figure (from its start to its last commit).
pub fn drain(
    binary: &std::path::Path,
    url: &str,
    amqp: &str,
    exchange: &str,
    setup: bool,
) -> anyhow::Result<f64> {
    let mut command = std::process::Command::new(binary);
    command.args([
        "--database-url",
        url,
        "--amqp-url",
        amqp,
        "--exchange",
        exchange,
        "--table",
        TABLE,
    ]);
    if setup {
        command.arg("--setup-only");
    } else {
        command.args([
            "--batch",
            &BATCH.to_string(),
            "--workers",
            &WORKERS.to_string(),
        ]);
        command.args(["--expect", &super::BACKLOG.to_string()]);
    }
    let ran = command.output()?;
    let out = String::from_utf8_lossy(&ran.stdout);
    anyhow::ensure!(
        ran.status.success(),
        "peer-relay failed: {out}{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    if setup {
        return Ok(0.0);
    }
    // `peer-relay: N rows in S s, R events/s`
    out.split(", ")
        .nth(1)
        .and_then(|rate| rate.split_whitespace().next())
        .and_then(|rate| rate.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("cannot read the peer's figure in {out:?}"))
}
