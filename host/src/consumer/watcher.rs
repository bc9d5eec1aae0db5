//! Hot loading: the plugin directory is scanned every `reload_interval`. A new or changed
//! `<name>.wasm` is compiled, validated, provisioned and migrated *before* it replaces the
//! serving version; a file that fails any step is refused with its reason and the
//! previous version keeps serving. A removed file stops its plugin.

use super::registry::Registry;
use crate::metrics::Metrics;
use crate::runtime::{PluginName, Runtime};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A file as last seen: a change in either means "load it again".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

pub struct Watcher {
    runtime: Runtime,
    registry: Arc<Registry>,
    metrics: Metrics,
    dir: PathBuf,
    seen: HashMap<PathBuf, (PluginName, Stamp)>,
}

/// What one scan did, for logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    pub loaded: Vec<String>,
    pub refused: Vec<(String, String)>,
    pub removed: Vec<String>,
}

impl Watcher {
    pub fn new(runtime: Runtime, registry: Arc<Registry>, metrics: Metrics, dir: &Path) -> Self {
        Self {
            runtime,
            registry,
            metrics,
            dir: dir.to_path_buf(),
            seen: HashMap::new(),
        }
    }

    /// Loads what changed since the last scan. An unreadable directory refuses nothing
    /// and removes nothing (it is reported and the plugins keep serving).
    pub async fn scan(&mut self) -> Result<ScanReport, std::io::Error> {
        let mut report = ScanReport::default();
        let files = wasm_files(&self.dir).await?;
        for (path, stamp) in &files {
            if self.seen.get(path).map(|(_, s)| s) == Some(stamp) {
                continue;
            }
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            let name = match PluginName::parse(stem) {
                Ok(name) => name,
                Err(reason) => {
                    tracing::error!(file = %path.display(), %reason, "plugin file refused");
                    report.refused.push((stem.to_string(), reason));
                    continue;
                }
            };
            self.seen.insert(path.clone(), (name.clone(), *stamp));
            match self.runtime.load_file(path).await {
                Ok(plugin) => {
                    self.registry.install(plugin, path);
                    report.loaded.push(name.to_string());
                }
                Err(error) => {
                    let error = error.to_string();
                    tracing::error!(plugin = %name, file = %path.display(), %error, "plugin refused; the previous version (if any) keeps serving");
                    self.metrics.reload_failed(name.as_str());
                    self.registry.refused(&name, &error);
                    report.refused.push((name.to_string(), error));
                }
            }
        }
        let gone: Vec<PathBuf> = self
            .seen
            .keys()
            .filter(|path| !files.iter().any(|(p, _)| p == *path))
            .cloned()
            .collect();
        for path in gone {
            if let Some((name, _)) = self.seen.remove(&path) {
                if self.registry.remove(&name) {
                    tracing::info!(plugin = %name, file = %path.display(), "plugin file removed; plugin stopped (its queue keeps its events)");
                    report.removed.push(name.to_string());
                }
            }
        }
        Ok(report)
    }

    /// Scans every `interval`, and whenever `rescan` is notified, until cancelled.
    pub async fn run(
        mut self,
        interval: Duration,
        rescan: Arc<Notify>,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
                _ = rescan.notified() => {}
            }
            if let Err(error) = self.scan().await {
                tracing::warn!(dir = %self.dir.display(), %error, "cannot read the plugin directory");
            }
        }
    }
}

async fn wasm_files(dir: &Path) -> Result<Vec<(PathBuf, Stamp)>, std::io::Error> {
    let mut files = Vec::new();
    let mut entries = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("wasm") {
            continue;
        }
        let Ok(meta) = entry.metadata().await else {
            continue; // removed between listing and stat
        };
        if meta.is_file() {
            let stamp = Stamp {
                modified: meta.modified().ok(),
                len: meta.len(),
            };
            files.push((path, stamp));
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}
