//! The dashboard at `/ui`: in a real headless Chromium (Debian's, driven by
//! playwright-core from `tests/ui/dashboard.cjs`) against a real `eventhost serve`, and
//! its sign-in, CSRF and access rules over plain HTTP.

mod common;

use common::serve::{cloud_event, Extra, ServeWorld, ADMIN_TOKEN};
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);
/// Both the event's body and its failure reason carry it.
const HOSTILE: &str = "<script>window.__eventhostXss=1</script>";

/// What `scripts/browser.sh` exports (installing Chromium and playwright-core once).
fn browser_env() -> Vec<(String, String)> {
    let ran = Command::new("bash")
        .arg(common::repo_path("scripts/browser.sh"))
        .output()
        .expect("run scripts/browser.sh");
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    String::from_utf8_lossy(&ran.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

/// The browser script, and its lines as they come.
struct Browser {
    child: std::process::Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Browser {
    fn start(world: &ServeWorld, screenshot: &std::path::Path) -> Self {
        let mut child = Command::new("node")
            .arg(common::repo_path("tests/ui/dashboard.cjs"))
            .args([world.api.as_str(), ADMIN_TOKEN])
            .arg(screenshot)
            .envs(browser_env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node (is Node.js installed?)");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self { child, lines }
    }

    /// The next step the script reports; its value after the name.
    fn expect(&mut self, step: &str, world: &ServeWorld) -> String {
        let line = self
            .lines
            .next()
            .unwrap_or_else(|| panic!("the browser script ended before {step}\n{}", world.log()))
            .expect("read the browser script");
        let rest = line
            .strip_prefix(&format!("STEP {step}"))
            .unwrap_or_else(|| {
                panic!(
                    "waiting for {step}, the browser said: {line}\n{}",
                    world.log()
                )
            });
        rest.trim().to_string()
    }

    fn go(&mut self) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin
            .write_all(b"go\n")
            .and_then(|_| stdin.flush())
            .expect("write to the browser script");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_watches_counts_opens_a_dead_letter_and_replays_it_in_a_browser() {
    let world = ServeWorld::start(&["probe"]).await;
    let screenshot = std::env::var("EVENTHOST_UI_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| world.dir.path().join("dashboard.png"));
    let mut browser = Browser::start(&world, &screenshot);
    let counts = browser.expect("signed-in", &world);
    assert_eq!(counts, "0 0", "a fresh host has handled nothing");

    // Three events the plugin handles, one it refuses with a reason holding markup.
    for _ in 0..3 {
        let id = Uuid::new_v4();
        let body = cloud_event(id, "probe.insert", &Uuid::new_v4().to_string(), json!({}));
        world
            .publish("probe.insert", &body, Some(&id.to_string()))
            .await;
    }
    let gated = Uuid::new_v4();
    let body = cloud_event(
        gated,
        "probe.gated",
        &Uuid::new_v4().to_string(),
        json!({ "key": HOSTILE }),
    );
    world
        .publish("probe.gated", &body, Some(&gated.to_string()))
        .await;
    browser.go();
    browser.expect("counted", &world);
    let opened = browser.expect("opened", &world);
    assert_eq!(
        opened,
        gated.to_string(),
        "the dead letter opened is the refused event"
    );

    // The fix the operator made elsewhere; then the replay from the page.
    sqlx::query("INSERT INTO plugin_probe.allowed_keys (key) VALUES ($1)")
        .bind(HOSTILE)
        .execute(&world.pool)
        .await
        .unwrap();
    browser.go();
    browser.expect("replayed", &world);
    let note = format!("SELECT count(*) FROM plugin_probe.notes WHERE event_id = '{gated}'");
    world.wait_count(&note, 1, WAIT).await;
    browser.expect("landed", &world);
    browser.expect("done", &world);
    let status = browser.child.wait().expect("browser script exit");
    assert!(status.success(), "browser script: {status}");
    assert!(
        screenshot.exists(),
        "no screenshot at {}",
        screenshot.display()
    );
    world.finish().await;
}

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
    let next = http
        .get(url("/ui"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        next.contains("Scanning the plugin directory now."),
        "{next}"
    );
    let again = http
        .get(url("/ui"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
    let listed = http
        .get(url("/ui/part/outbox"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
    let http = client();
    let part = |name: &'static str| {
        let http = http.clone();
        let url = format!("{}/ui/part/{name}", world.api);
        async move {
            http.get(url)
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let start = std::time::Instant::now();
    let plugins = loop {
        let plugins = part("plugins").await;
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
    let row = &plugins[plugins.find(r#"data-plugin="broken""#).unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(row.contains("refused"), "{row}");
    assert!(
        row.contains(r#"class="reason""#),
        "the reason is shown: {row}"
    );
    let activity = part("activity").await;
    assert!(activity.contains("broken"), "{activity}");
    // The plugin that loaded keeps serving beside it.
    assert!(plugins.contains(r#"data-plugin="probe""#));
    world.finish().await;
}
