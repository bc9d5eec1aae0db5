//! Test world: every test gets its own throwaway database on the real PostgreSQL, the
//! host migrated into it, and a runtime; plugins come from the wasm32-wasip2 build.

#![allow(dead_code)]

pub mod outbox;
pub mod probe;
pub mod serve;

use eventhost::config::{AuthBackend, Limits};
use eventhost::fixtures::ScratchDatabase;
use eventhost::runtime::{Plugin, Runtime};
use sqlx::PgPool;
use std::path::PathBuf;

pub struct TestHost {
    pub pool: PgPool,
    pub runtime: Runtime,
    scratch: ScratchDatabase,
}

pub fn server_url() -> String {
    std::env::var("EVENTHOST_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Where `scripts/build-plugins.sh` (or `cargo build --target wasm32-wasip2 --release`)
/// put the components.
pub fn plugin_path(file_stem: &str) -> PathBuf {
    built("wasm32-wasip2/release", file_stem)
}

/// Where `scripts/build-guests.sh` put the Python and JavaScript components.
pub fn guest_path(file_stem: &str) -> PathBuf {
    built("guests", file_stem)
}

fn built(dir: &str, file_stem: &str) -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join(dir).join(format!("{file_stem}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the plugins first (scripts/build-plugins.sh)",
        path.display()
    );
    path
}

/// What `scripts/toolchains.sh` exports (installing what is missing, once): the guest
/// toolchains' `PATH` entries, and `EVENTHOST_TEST_PYTHON`, a Python with the reference
/// parsers the tests check the host's output with.
pub struct Toolchains {
    pub path: String,
    pub python: String,
}

pub fn toolchains() -> Toolchains {
    let ran = std::process::Command::new("bash")
        .arg(repo_path("scripts/toolchains.sh"))
        .arg("--with-cargo-component")
        .output()
        .expect("run scripts/toolchains.sh");
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let out = String::from_utf8_lossy(&ran.stdout).into_owned();
    let value = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=\"")))
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or_else(|| panic!("scripts/toolchains.sh did not export {name}: {out:?}"))
            .to_string()
    };
    let path = value("PATH");
    Toolchains {
        path: path.strip_suffix(":$PATH").unwrap_or(&path).to_string(),
        python: value("EVENTHOST_TEST_PYTHON"),
    }
}

pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

impl TestHost {
    pub async fn start(limits: Limits, auth: AuthBackend) -> Self {
        let scratch = ScratchDatabase::create(&server_url(), "eventhost_test")
            .await
            .expect(
                "create a scratch database (is PostgreSQL running? scripts/services.sh starts it)",
            );
        let (pool, runtime) = Runtime::open(&scratch.url, limits, auth)
            .await
            .expect("open the host database");
        Self {
            pool,
            runtime,
            scratch,
        }
    }

    pub async fn default() -> Self {
        Self::start(Limits::default(), AuthBackend::Postgres).await
    }

    pub async fn load(&self, file_stem: &str) -> Plugin {
        self.runtime
            .load_file(&plugin_path(file_stem))
            .await
            .expect("plugin loads")
    }

    pub async fn load_guest(&self, file_stem: &str) -> Plugin {
        self.runtime
            .load_file(&guest_path(file_stem))
            .await
            .expect("guest plugin loads")
    }

    pub async fn stop(self) {
        self.pool.close().await;
        self.scratch
            .drop_now()
            .await
            .expect("drop the scratch database");
    }
}

/// A structured CloudEvent with a fresh id.
pub fn event(event_type: &str, subject: &str, data: serde_json::Value) -> eventhost::Event {
    eventhost::Event::from_json(serde_json::json!({
        "specversion": "1.0",
        "id": uuid::Uuid::new_v4().to_string(),
        "source": "tests",
        "type": event_type,
        "time": "2026-11-23T10:00:00Z",
        "subject": subject,
        "aggregatetype": event_type.split('.').next().unwrap_or("test"),
        "data": data,
    }))
    .expect("valid test event")
}

/// Deletes plugins' exchanges and queues (partitions, delay and dead-letter) and the events exchange: a test's
/// broker leftovers. Errors are ignored (the test is over either way).
pub async fn delete_topology(
    channel: &lapin::Channel,
    exchange: &str,
    queues: &[&eventhost::broker::topology::PluginQueues],
) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    for q in queues {
        let names = q
            .partitions
            .iter()
            .chain([&q.dead])
            .chain(q.retries.iter().map(|r| &r.1));
        for name in names {
            let _ = channel
                .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = channel
            .exchange_delete(q.entry.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = channel
        .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
        .await;
}
