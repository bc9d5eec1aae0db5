//! The dashboard at `/ui` over plain HTTP: sign-in, sessions and CSRF, what each access
//! mode shows, the outbox replay, refused files. (The browser test is `e2e_ui_browser.rs`.)

mod common;

use common::serve::{plugin_row, Extra, ServeWorld, ADMIN_TOKEN};
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);
/// An outbox row's failure reason carries it.
const HOSTILE: &str = "<script>window.__eventhostXss=1</script>";

/// A client that keeps no cookies and follows no redirects, so each answer is seen.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn hidden_csrf(page: &str) -> String {
    let at = page
        .find(r#"name="csrf" value=""#)
        .expect("a CSRF field in the page")
        + 19;
    page[at..at + 64].to_string()
}

/// The page at `url` as the session of `cookie` sees it.
async fn signed_in_page(http: &reqwest::Client, url: &str, cookie: &str) -> String {
    let answer = http.get(url).header("cookie", cookie).send().await.unwrap();
    answer.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_needs_the_token_and_its_forms_need_the_csrf_token() {
    let world = ServeWorld::start(&["probe"]).await;
    let http = client();
    let url = |path: &str| format!("{}{path}", world.api);

    let answer = http.get(url("/ui")).send().await.unwrap();
    assert_eq!(answer.status(), 303);
    assert_eq!(answer.headers()["location"], "/ui/login");
    let part = http.get(url("/ui/part/plugins")).send().await.unwrap();
    assert_eq!(part.status(), 401);

    let wrong = http
        .post(url("/ui/login"))
        .form(&[("token", "guess-guess-guess")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    let signed = http
        .post(url("/ui/login"))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 303);
    let cookie = signed.headers()["set-cookie"].to_str().unwrap().to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let session = cookie.split(';').next().unwrap().to_string();

    let page = http
        .get(url("/ui"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let page = page.text().await.unwrap();
    assert!(page.contains(r#"data-plugin="probe""#), "{page}");
    let csrf = hidden_csrf(&page);

    // Every form posted without the session's CSRF token, or with another, is refused.
    for path in [
        "/ui/reload",
        "/ui/outbox/replay",
        "/ui/dead/probe/replay",
        "/ui/logout",
    ] {
        for form in [
            vec![("scope", "all".to_string())],
            vec![("scope", "all".to_string()), ("csrf", "0".repeat(64))],
        ] {
            let forged = http
                .post(url(path))
                .header("cookie", &session)
                .form(&form)
                .send()
                .await
                .unwrap();
            assert_eq!(forged.status(), 403, "{path} {form:?}");
        }
        let anonymous = http
            .post(url(path))
            .form(&[("scope", "all")])
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), 401, "{path}");
    }
    let reload = http
        .post(url("/ui/reload"))
        .header("cookie", &session)
        .form(&[("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 303);
    // What the action did shows once, on the next page, from the session (not the address).
    assert_eq!(reload.headers()["location"], "/ui");
    let next = signed_in_page(&http, &url("/ui"), &session).await;
    assert!(
        next.contains("Scanning the plugin directory now."),
        "{next}"
    );
    let again = signed_in_page(&http, &url("/ui"), &session).await;
    assert!(!again.contains("Scanning the plugin directory now."));
    // The bearer token acts without a session (scripts; no browser sends it by itself).
    let bearer = http
        .post(url("/ui/reload"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 303);
    assert_eq!(
        bearer.headers()["x-eventhost-done"],
        "Scanning the plugin directory now."
    );

    // An outbox dead row, listed with its reason escaped, replayed by id after a confirmation.
    let dead = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO outbox_events (event_id, aggregate_type, aggregate_id, event_type, source, payload, occurred_at, status, attempts, last_error) \
         VALUES ($1, 'user', 'u-1', 'user.created', 'e2e', '{}', now(), 'dead', 5, $2)",
    )
    .bind(dead)
    .bind(HOSTILE)
    .execute(&world.pool)
    .await
    .unwrap();
    let listed = world.ui_part("outbox").await;
    assert!(listed.contains(&dead.to_string()), "{listed}");
    assert!(
        listed.contains("&lt;script&gt;window.__eventhostXss=1&lt;/script&gt;")
            && !listed.contains(HOSTILE),
        "{listed}"
    );
    let selected = [
        ("csrf", csrf.as_str()),
        ("scope", "selected"),
        ("id", &dead.to_string()),
    ];
    let ask = http
        .post(url("/ui/outbox/replay"))
        .header("cookie", &session)
        .form(&selected)
        .send()
        .await
        .unwrap();
    assert_eq!(ask.status(), 200);
    let ask = ask.text().await.unwrap();
    assert!(
        ask.contains("Confirm replay") && ask.contains(&dead.to_string()),
        "{ask}"
    );
    let status =
        format!("SELECT count(*) FROM outbox_events WHERE event_id = '{dead}' AND status = 'dead'");
    assert_eq!(world.count(&status).await, 1, "asking changed nothing");
    let mut confirmed = selected.to_vec();
    confirmed.push(("confirm", "yes"));
    let run = http
        .post(url("/ui/outbox/replay"))
        .header("cookie", &session)
        .form(&confirmed)
        .send()
        .await
        .unwrap();
    assert_eq!(run.status(), 303);
    assert_eq!(
        run.headers()["x-eventhost-done"],
        "Put 1 outbox row(s) back to pending."
    );
    assert_eq!(
        world.count(&status).await,
        0,
        "the row is pending (or published) again"
    );

    // Signed out, the cookie opens nothing.
    let out = http
        .post(url("/ui/logout"))
        .header("cookie", &session)
        .form(&[("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    let after = http
        .get(url("/ui"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 303);
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_read_shows_the_pages_to_anyone_but_no_action() {
    let extra = Extra {
        http: r#"ui = "open-read""#,
        ..Extra::default()
    };
    let world = ServeWorld::start_with(&["probe"], extra).await;
    let http = client();
    let page = http.get(format!("{}/ui", world.api)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains(r#"data-plugin="probe""#), "{page}");
    assert!(
        !page.contains("/ui/reload"),
        "no action offered to a reader"
    );
    let act = http
        .post(format!("{}/ui/reload", world.api))
        .form(&[("csrf", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(act.status(), 401);
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_means_no_dashboard() {
    let extra = Extra {
        http: r#"ui = "off""#,
        ..Extra::default()
    };
    let world = ServeWorld::start_with(&["probe"], extra).await;
    let answer = client()
        .get(format!("{}/ui", world.api))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_plugin_file_shows_with_its_reason() {
    let world = ServeWorld::start(&["probe"]).await;
    std::fs::write(
        world.plugin_dir().join("broken.wasm"),
        b"not a component <b>",
    )
    .unwrap();
    let start = std::time::Instant::now();
    let plugins = loop {
        let plugins = world.ui_part("plugins").await;
        if plugins.contains(r#"data-plugin="broken""#) {
            break plugins;
        }
        assert!(
            start.elapsed() < WAIT,
            "no row for the refused file: {plugins}\n{}",
            world.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let row = plugin_row(&plugins, "broken").unwrap();
    assert!(row.contains("refused"), "{row}");
    assert!(
        row.contains(r#"class="reason""#),
        "the reason is shown: {row}"
    );
    let activity = world.ui_part("activity").await;
    assert!(activity.contains("broken"), "{activity}");
    // The plugin that loaded keeps serving beside it.
    assert!(plugins.contains(r#"data-plugin="probe""#));
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_plugin_shows_draining_while_a_read_it_began_runs() {
    let world = ServeWorld::start(&["probe"]).await;
    let http = client();
    let slow = {
        let url = format!("{}/plugins/probe/sleep/3000", world.api);
        let http = http.clone();
        tokio::spawn(async move { http.get(url).send().await.map(|r| r.status().as_u16()) })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::remove_file(world.plugin_dir().join("probe.wasm")).unwrap();
    let row = async || plugin_row(&world.ui_part("plugins").await, "probe");
    let start = std::time::Instant::now();
    loop {
        match row().await {
            Some(r) if r.contains("draining") => break,
            other => assert!(
                start.elapsed() < Duration::from_millis(2400),
                "no draining row while the read runs: {other:?}\n{}",
                world.log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        slow.await.unwrap().unwrap(),
        200,
        "the read finished on its version"
    );
    let start = std::time::Instant::now();
    while let Some(r) = row().await {
        assert!(start.elapsed() < WAIT, "still listed once drained: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    world.finish().await;
}
