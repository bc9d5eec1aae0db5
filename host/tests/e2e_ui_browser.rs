//! The dashboard at `/ui` in a real headless Chromium (Debian's, driven by
//! playwright-core from `tests/ui/dashboard.cjs`) against a real `eventhost serve`: what
//! an operator sees and does, JavaScript on and off.

mod common;

use common::serve::{cloud_event, ServeWorld, ADMIN_TOKEN};
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
