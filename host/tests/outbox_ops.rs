//! The outbox's table side against the real PostgreSQL: atomic producer writes, the
//! purge, and the operators' `outbox status` / `outbox replay` commands.

mod common;

use common::outbox::{user_event, OutboxWorld};
use eventhost::outbox::{self, NewEvent};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_transaction_leaves_neither_row() {
    let world = OutboxWorld::start().await;
    let id = uuid::Uuid::new_v4();
    let write = |commit: bool| {
        let pool = world.pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("INSERT INTO users (id, email, name) VALUES ($1, $2, 'Ann')")
                .bind(id)
                .bind(format!("{id}@example.com"))
                .execute(&mut *tx)
                .await
                .unwrap();
            outbox::enqueue(&mut tx, &[user_event(&id.to_string(), "user.created", 1)])
                .await
                .unwrap();
            if commit {
                tx.commit().await.unwrap()
            } else {
                tx.rollback().await.unwrap()
            }
        }
    };
    let counts = || async {
        let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
            .fetch_one(&world.pool)
            .await
            .unwrap();
        let events: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_events")
            .fetch_one(&world.pool)
            .await
            .unwrap();
        (users, events)
    };
    write(false).await;
    assert_eq!(counts().await, (0, 0), "rollback must leave neither row");
    write(true).await;
    assert_eq!(counts().await, (1, 1), "commit must write both rows");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_rows_past_retention_are_purged_in_batches() {
    let world = OutboxWorld::start().await;
    let events: Vec<NewEvent> = (0..25)
        .map(|n| user_event("u-1", "user.updated", n))
        .collect();
    world.enqueue(&events).await;
    sqlx::query(
        "UPDATE outbox_events SET status = 'published', \
         published_at = CASE WHEN seq % 5 = 0 THEN now() ELSE now() - interval '2 hours' END",
    )
    .execute(&world.pool)
    .await
    .unwrap();
    let purged = outbox::purge(&world.pool, Duration::from_secs(3600), 7)
        .await
        .unwrap();
    assert_eq!(purged, Some(20));
    assert_eq!(world.count("published").await, 5, "recent rows stay");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_the_backlog_and_replay_dead_events_from_the_command_line() {
    let world = OutboxWorld::start().await;
    world
        .enqueue(&[
            user_event("u-1", "user.updated", 0),
            user_event("u-2", "user.deactivated", 0),
        ])
        .await;
    sqlx::query(
        "UPDATE outbox_events SET status = 'dead', attempts = 12, last_error = 'test' \
         WHERE event_type = 'user.deactivated'",
    )
    .execute(&world.pool)
    .await
    .unwrap();
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_eventhost"))
            .args(args)
            .args(["--database-url", world.database_url()])
            .output()
            .expect("run eventhost");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).to_string(),
        )
    };
    let (code, out) = cli(&["outbox", "status", "--json"]);
    assert_eq!(code, Some(1), "dead events make status exit 1: {out}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (status["pending"].as_i64(), status["dead"].as_i64()),
        (Some(1), Some(1))
    );

    let (code, _) = cli(&["outbox", "replay"]);
    assert_eq!(code, Some(2), "replay needs a selector");
    let (code, out) = cli(&["outbox", "replay", "--type", "user.deactivated"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("1 dead event(s)"), "{out}");
    let (dead, attempts): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'dead'), sum(attempts) FROM outbox_events",
    )
    .fetch_one(&world.pool)
    .await
    .unwrap();
    assert_eq!((dead, attempts), (0, 0));

    let (code, out) = cli(&["outbox", "status"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("pending    2"), "{out}");
    let (code, _) = cli(&["outbox", "status", "--max-pending-age", "1ms"]);
    assert_eq!(code, Some(1), "a backlog older than allowed exits 1");
    world.stop().await;
}
