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

pub fn target_dir() -> PathBuf {
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

/// The durable queue `<exchange>.sink`, bound to every routing key unless `bound` is false
/// (then the broker drops what is published): so the broker writes every message, as in
/// production. Returns its name.
pub async fn sink_queue(
    channel: &lapin::Channel,
    exchange: &str,
    bound: bool,
) -> anyhow::Result<String> {
    use lapin::options::{QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    let queue = format!("{exchange}.sink");
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.as_str().into(), durable, FieldTable::default())
        .await?;
    if bound {
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(queue)
}

/// CPU seconds (user + system) used so far by processes named `comm` (from `/proc`, in
/// clock ticks), or by this process (from `getrusage`, in microseconds).
pub fn cpu_seconds(comm: Option<&str>) -> f64 {
    let ticks = |stat: &str| -> f64 {
        // Fields after the parenthesised name: utime and stime are the 12th and 13th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (field(11) + field(12)) / 100.0
    };
    match comm {
        None => {
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: getrusage writes into the struct we own; RUSAGE_SELF is always valid.
            unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
            let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            seconds(usage.ru_utime) + seconds(usage.ru_stime)
        }
        Some(name) => std::fs::read_dir("/proc")
            .map(|dir| {
                dir.flatten()
                    .filter(|e| {
                        std::fs::read_to_string(e.path().join("comm"))
                            .is_ok_and(|c| c.trim() == name)
                    })
                    .map(|e| {
                        ticks(&std::fs::read_to_string(e.path().join("stat")).unwrap_or_default())
                    })
                    .sum()
            })
            .unwrap_or(0.0),
    }
}
