//! What every benchmark needs from the machine: the servers' URLs (overridable, as in the
//! tests) and the built plugin components.

#![allow(dead_code)]

use std::path::PathBuf;

pub fn server_url() -> String {
    std::env::var("EVENTHOST_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn amqp_url() -> String {
    std::env::var("EVENTHOST_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn target_dir() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// Where `scripts/build-plugins.sh` put the component `<stem>.wasm`.
pub fn wasm(stem: &str) -> PathBuf {
    target_dir().join(format!("wasm32-wasip2/release/{stem}.wasm"))
}

/// Where `scripts/build-guests.sh` put the Python or JavaScript component `<stem>.wasm`.
pub fn guest_wasm(stem: &str) -> PathBuf {
    target_dir().join(format!("guests/{stem}.wasm"))
}

/// The component's bytes, or an error that says how to build it.
pub fn read_wasm(stem: &str) -> anyhow::Result<Vec<u8>> {
    let path = wasm(stem);
    std::fs::read(&path)
        .map_err(|e| anyhow::anyhow!("{}: {e} (run scripts/build-plugins.sh)", path.display()))
}
