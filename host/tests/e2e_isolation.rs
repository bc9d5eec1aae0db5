//! The sandbox through the real `eventhost serve`: a hostile plugin flooding its own reads
//! and trying to end the host's transaction does not fail another plugin's reads or
//! deliveries.

mod common;

use common::serve::{cloud_event, ServeWorld};
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_plugin_under_serve_fails_only_itself() {
    let world = ServeWorld::start(&["user_stats", "probe"]).await;
    let world = std::sync::Arc::new(world);
    // 300 slow reads of the probe at once: more than the whole instance pool held before
    // plugins had shares, and far more than the probe's share.
    let flood: Vec<_> = (0..300)
        .map(|_| {
            let world = world.clone();
            tokio::spawn(async move { world.get("/plugins/probe/sleep/300").await.0 })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Meanwhile: registrations reach user-stats, and its reads answer.
    let mut users = Vec::new();
    for i in 0..5 {
        let id = world
            .register(&format!("flood{i}@example.com"))
            .await
            .expect("register");
        let (status, body) = world.get(&format!("/plugins/user-stats/stats/{id}")).await;
        assert_eq!(
            status, 200,
            "a user-stats read failed during the flood: {body}"
        );
        users.push(id);
    }
    // And the probe's attempt to commit its own way is dead-lettered at once.
    let escape = Uuid::new_v4();
    let body = cloud_event(escape, "probe.end-transaction", "x", json!("COMMIT"));
    world
        .publish("probe.end-transaction", &body, Some(&escape.to_string()))
        .await;

    // Handled by the event path (the reads above may have made the rows first).
    world
        .wait_metric("eventhost_plugin_handled_total", "user-stats", 5.0, WAIT)
        .await;
    world
        .wait_metric("eventhost_plugin_dead_lettered_total", "probe", 1.0, WAIT)
        .await;
    for metric in [
        "eventhost_plugin_retried_total",
        "eventhost_plugin_dead_lettered_total",
    ] {
        assert_eq!(
            world.metric(metric, "user-stats").await,
            0.0,
            "{metric}: {}",
            world.log()
        );
    }
    let mut statuses = std::collections::BTreeMap::new();
    for task in flood {
        *statuses.entry(task.await.unwrap()).or_insert(0) += 1;
    }
    // The flood is the probe's own problem: its reads either ran or were turned away
    // (503) once its share and its connections were busy for too long.
    assert!(
        statuses.keys().all(|s| *s == 200 || *s == 503) && statuses.get(&200) > Some(&0),
        "{statuses:?}\n{}",
        world.log()
    );
    assert_eq!(
        world.count("SELECT count(*) FROM plugin_probe.notes").await,
        0,
        "the escape attempt committed"
    );
    let (code, out) = world.cli(&["dlq", "list", "probe", "--json"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("sandbox") && out.contains("COMMIT"), "{out}");
    std::sync::Arc::into_inner(world)
        .expect("no other owner")
        .finish()
        .await;
}

/// One HTTP/1.1 response off `bytes`: (status, body, bytes it took).
fn parse_response(bytes: &[u8]) -> Option<(u16, Vec<u8>, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head) = response.parse(bytes).ok()? else {
        return None;
    };
    let length: usize = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())?;
    let body = bytes.get(head..head + length)?.to_vec();
    Some((response.code?, body, head + length))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugins_headers_cannot_split_a_keep_alive_connection() {
    use std::io::{Read, Write};
    let world = ServeWorld::start(&["probe"]).await;
    // The plugin claims the framing: chunked, a short length, and a forged second
    // response inside its body.
    let forged = "0\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged";
    let query = format!(
        "status=200&h=transfer-encoding:chunked&h=content-length:3&h=connection:keep-alive&h=x-fine:yes&text={}",
        forged.replace('\r', "%0D").replace('\n', "%0A").replace(' ', "%20").replace(':', "%3A")
    );
    let address = world.api.trim_start_matches("http://").to_string();
    let (answers, raw) = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let first = format!("GET /plugins/probe/answer?{query} HTTP/1.1\r\nhost: x\r\n\r\n");
        stream.write_all(first.as_bytes()).unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        let mut raw = Vec::new();
        let mut answers = Vec::new();
        let mut buf = [0u8; 4096];
        while answers.len() < 2 {
            let n = stream.read(&mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            answers.clear();
            let mut at = 0;
            while let Some((status, body, used)) = parse_response(&raw[at..]) {
                answers.push((status, body));
                at += used;
            }
        }
        (answers, raw)
    })
    .await
    .unwrap();
    let shown = String::from_utf8_lossy(&raw).to_string();
    assert_eq!(answers.len(), 2, "{shown}");
    assert_eq!(answers[0], (200, forged.as_bytes().to_vec()), "{shown}");
    assert_eq!(
        answers[1],
        (200, b"ok\n".to_vec()),
        "the second request got someone else's answer: {shown}"
    );
    assert!(shown.contains("x-fine: yes"), "{shown}");
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_reload_needs_the_bearer_token() {
    let world = ServeWorld::start(&["probe"]).await;
    let url = format!("{}/admin/plugins/reload", world.api);
    let client = reqwest::Client::new();
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(status(client.post(&url).send().await.unwrap()), 401);
    let wrong = client
        .post(&url)
        .bearer_auth("e2e-admin-token-0123456788")
        .send()
        .await
        .unwrap();
    assert_eq!(status(wrong), 401);
    let right = client
        .post(&url)
        .bearer_auth(common::serve::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(status(right), 202);
    // Reading stays open.
    assert_eq!(world.get("/admin/plugins").await.0, 200);
    world.finish().await;
}
