//! Several hosts, one order: three `eventhost serve` processes on one PostgreSQL and one
//! RabbitMQ share the plugins' partitions. Hundreds of users change role and active flag
//! in quick succession through the outbox, handlers fail transiently now and then, and
//! one host is killed with SIGKILL mid-run. Every effect lands exactly once, in each
//! user's order, the final state is each user's last event, and the work was shared.

mod common;

use common::serve::{Extra, ServeWorld};
use eventhost::outbox::{self, NewEvent};
use serde_json::json;
use std::time::{Duration, Instant};
use uuid::Uuid;

const USERS: usize = 200;
const EVENTS_PER_USER: usize = 8;
const WAIT: Duration = Duration::from_secs(180);

/// One user's lifecycle: created, then role changes and (de)activations in a mixed
/// order, so the last writer differs per user. Returns the events and the final state.
fn lifecycle(user: Uuid, variant: usize) -> (Vec<NewEvent>, (String, bool)) {
    let event = |event_type: &str, data: serde_json::Value| {
        NewEvent::new("e2e-hosts", "user", user.to_string(), event_type, data)
    };
    let roles = ["bidder", "seller", "admin", "viewer"];
    let mut role = roles[variant % roles.len()].to_string();
    let mut active = true;
    let mut events = vec![event(
        "user.created",
        json!({ "userId": user, "role": role, "active": true }),
    )];
    for step in 1..EVENTS_PER_USER {
        match (variant + step) % 3 {
            0 => {
                role = roles[(variant + step) % roles.len()].to_string();
                events.push(event(
                    "user.role.changed",
                    json!({ "userId": user, "role": role }),
                ));
            }
            1 => {
                active = false;
                events.push(event("user.deactivated", json!({ "userId": user })));
            }
            _ => {
                active = true;
                events.push(event("user.activated", json!({ "userId": user })));
            }
        }
    }
    (events, (role, active))
}

async fn handled(host: &ServeWorld) -> f64 {
    host.metric("eventhost_plugin_handled_total", "audit-log")
        .await
        .max(0.0)
        + host
            .metric("eventhost_plugin_handled_total", "user-stats")
            .await
            .max(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_share_the_partitions_and_keep_each_users_order_through_a_kill() {
    let extra = Extra {
        consumer: "partitions = 6\nmax_attempts = 1000\nretry_delays = [\"50ms\", \"200ms\"]",
        env: &[("FAILPOINTS", "consumer-transient=3%return")],
        ..Extra::default()
    };
    let mut first = ServeWorld::start_with(&["user_stats", "audit_log"], extra).await;
    let mut others = [first.peer(), first.peer()];
    for host in &mut others {
        host.spawn().await;
    }

    let users: Vec<Uuid> = (0..USERS).map(|_| Uuid::new_v4()).collect();
    let mut finals = Vec::new();
    let mut steps: Vec<Vec<NewEvent>> = (0..EVENTS_PER_USER).map(|_| Vec::new()).collect();
    for (i, user) in users.iter().enumerate() {
        let (events, last) = lifecycle(*user, i);
        finals.push((user.to_string(), last.0, last.1));
        for (step, event) in events.into_iter().enumerate() {
            steps[step].push(event);
        }
    }
    let total = (USERS * EVENTS_PER_USER) as i64;

    // Every user's next event, a round at a time, in quick succession; one host dies
    // halfway, once at least two hosts have done some of the work.
    let mut worked_before_kill = 0;
    for (round, events) in steps.iter().enumerate() {
        for chunk in events.chunks(50) {
            let mut tx = first.pool.begin().await.expect("begin");
            outbox::enqueue(&mut tx, chunk).await.expect("enqueue");
            tx.commit().await.expect("commit");
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        if round == EVENTS_PER_USER / 2 {
            let start = Instant::now();
            loop {
                let mut working = 0;
                for host in std::iter::once(&first).chain(others.iter()) {
                    if handled(host).await > 0.0 {
                        working += 1;
                    }
                }
                if working >= 2 || start.elapsed() > Duration::from_secs(60) {
                    worked_before_kill = working;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            first.kill9();
        }
    }
    // The first host started alone and took every partition; it gave some up.
    assert!(
        first.log().contains("partition handed over"),
        "no partition was handed over:\n{}",
        first.log()
    );
    assert!(
        worked_before_kill >= 2,
        "only {worked_before_kill} host(s) had handled anything before the kill:\n{}",
        first.log()
    );

    // Exactly once in each plugin.
    let audit = "SELECT count(*) FROM plugin_audit_log.audit_events";
    others[0].wait_count(audit, total, WAIT).await;
    let inbox = "SELECT count(*) FROM plugin_user_stats._eventhost_inbox";
    others[0].wait_count(inbox, total, WAIT).await;
    let distinct = others[0]
        .count("SELECT count(DISTINCT event_id) FROM plugin_audit_log.audit_events")
        .await;
    assert_eq!(distinct, total, "an event recorded twice");

    // Each user's events were applied in the order they were written.
    let out_of_order: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (
             SELECT o.aggregate_id,
                    array_agg(o.event_id ORDER BY o.seq) AS written,
                    array_agg(o.event_id ORDER BY a.seq) AS applied
             FROM outbox_events o
             JOIN plugin_audit_log.audit_events a ON a.event_id = o.event_id::text
             GROUP BY o.aggregate_id
         ) per_user WHERE written <> applied",
    )
    .fetch_one(&first.pool)
    .await
    .expect("order check");
    assert_eq!(
        out_of_order, 0,
        "users whose events were applied out of order"
    );

    // The final state is each user's last event.
    let rows: Vec<(String, Option<String>, bool)> =
        sqlx::query_as("SELECT user_id::text, role, active FROM plugin_user_stats.user_stats")
            .fetch_all(&first.pool)
            .await
            .expect("user stats");
    assert_eq!(rows.len(), USERS);
    let stale: Vec<&(String, String, bool)> = finals
        .iter()
        .filter(|(user, role, active)| {
            !rows
                .iter()
                .any(|(u, r, a)| u == user && r.as_deref() == Some(role.as_str()) && a == active)
        })
        .collect();
    assert!(
        stale.is_empty(),
        "{} users with a stale state, e.g. {:?}",
        stale.len(),
        stale.first()
    );

    // The survivors took over: both handled events after the kill... at least one did,
    // and between them and the killed host the work was shared.
    let mut survivors_working = 0;
    for host in &others {
        if handled(host).await > 0.0 {
            survivors_working += 1;
        }
    }
    assert!(survivors_working >= 1, "no surviving host handled anything");
    let retried = others[0]
        .metric("eventhost_plugin_retried_total", "audit-log")
        .await
        + others[1]
            .metric("eventhost_plugin_retried_total", "audit-log")
            .await;
    assert!(retried > 0.0, "no transient failure was injected");

    for host in others {
        host.finish().await;
    }
    first.finish().await;
}
