//! Hot loading: the plugin directory is scanned every `reload_interval`. A new or changed
//! `<name>.wasm` is compiled, validated, provisioned and migrated *before* it replaces the
//! serving version; a file that fails any step is refused with its reason and the
//! previous version keeps serving. A removed file stops its plugin.
//!
//! Each load runs in its own task under `consumer.load_timeout`, so a slow or stuck one
//! holds up no other load, and none holds up the scan. A load that failed for a
//! transient reason (database unreachable, deadline) is tried again with backoff; a
//! permanent refusal is reported once and stands until the file changes.

use super::registry::Registry;
use crate::config::ConsumerConfig;
use crate::metrics::Metrics;
use crate::outbox::health::Backoff;
use crate::runtime::{LoadError, Plugin, PluginName, Runtime};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A file as last seen: a change in either means "load it again".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

/// A file whose last load failed for a transient reason.
struct Retry {
    stamp: Stamp,
    at: Instant,
    backoff: Backoff,
}

type Loaded = (PathBuf, PluginName, Stamp, Result<Plugin, LoadError>);

pub struct Watcher {
    runtime: Runtime,
    registry: Arc<Registry>,
    metrics: Metrics,
    dir: PathBuf,
    interval: Duration,
    load_timeout: Duration,
    /// Files whose current version is settled: loaded, or refused for good (a file
    /// whose name is not a plugin name has none).
    settled: HashMap<PathBuf, (Option<PluginName>, Stamp)>,
    loading: HashMap<PathBuf, Stamp>,
    retry: HashMap<PathBuf, Retry>,
    loads: JoinSet<Loaded>,
    /// Loads that run at once; the rest wait their turn (each holds database sessions).
    slots: Arc<Semaphore>,
    cancel: CancellationToken,
}

/// Plugin loads that run at the same time.
pub const PARALLEL_LOADS: usize = 4;

impl Watcher {
    pub fn new(
        runtime: Runtime,
        registry: Arc<Registry>,
        metrics: Metrics,
        config: &ConsumerConfig,
    ) -> Self {
        Self {
            runtime,
            registry,
            metrics,
            dir: config.plugin_dir.clone(),
            interval: config.reload_interval,
            load_timeout: config.load_timeout,
            settled: HashMap::new(),
            loading: HashMap::new(),
            retry: HashMap::new(),
            loads: JoinSet::new(),
            slots: Arc::new(Semaphore::new(PARALLEL_LOADS)),
            cancel: CancellationToken::new(),
        }
    }

    /// Scans every `reload_interval` and whenever `rescan` is notified, until `shutdown`;
    /// `scanned` is set once every file of the first scan has been loaded or refused (or
    /// failed for now). At shutdown, loads in progress are cancelled and their database
    /// sessions terminated before this returns.
    pub async fn run(
        mut self,
        scanned: Arc<AtomicBool>,
        rescan: Arc<Notify>,
        shutdown: CancellationToken,
    ) {
        self.cancel = shutdown.child_token();
        self.scan_logged().await;
        loop {
            if self.loading.is_empty() {
                scanned.store(true, Ordering::Relaxed);
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.interval) => self.scan_logged().await,
                _ = rescan.notified() => self.scan_logged().await,
                Some(done) = self.loads.join_next() => match done {
                    Ok(loaded) => self.finish(loaded),
                    Err(e) => tracing::error!(error = %e, "a plugin load task failed"),
                },
            }
        }
        self.cancel.cancel();
        while self.loads.join_next().await.is_some() {}
    }

    async fn scan_logged(&mut self) {
        if let Err(error) = self.scan().await {
            tracing::warn!(dir = %self.dir.display(), %error, "cannot read consumer.plugin_dir; the plugins keep serving");
        }
    }

    /// Starts a load for every file that changed and is not settled, loading, or waiting
    /// to be retried; stops plugins whose file is gone. An unreadable directory loads
    /// and removes nothing.
    async fn scan(&mut self) -> Result<(), std::io::Error> {
        let files = wasm_files(&self.dir).await?;
        let now = Instant::now();
        for (path, stamp) in &files {
            if self.settled.get(path).map(|(_, s)| s) == Some(stamp)
                || self.loading.contains_key(path)
            {
                continue;
            }
            match self.retry.get(path) {
                Some(r) if r.stamp == *stamp && r.at > now => continue,
                Some(r) if r.stamp != *stamp => {
                    self.retry.remove(path); // a new file starts afresh
                }
                _ => {}
            }
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            let name = match PluginName::parse(stem) {
                Ok(name) => name,
                Err(reason) => {
                    tracing::error!(file = %path.display(), %reason, "plugin file refused");
                    let reason = format!("{}: {reason}", path.display());
                    self.registry.journal().refused(stem, &reason);
                    self.settled.insert(path.clone(), (None, *stamp));
                    continue;
                }
            };
            self.loading.insert(path.clone(), *stamp);
            self.registry.set_loading(&name, true);
            let (runtime, path, stamp) = (self.runtime.clone(), path.clone(), *stamp);
            let (deadline, cancel) = (self.load_timeout, self.cancel.clone());
            let slots = self.slots.clone();
            self.loads.spawn(async move {
                let loaded = match slots.acquire_owned().await {
                    Ok(_slot) => runtime.load_file_within(&path, deadline, &cancel).await,
                    Err(_) => Err(LoadError::Cancelled),
                };
                (path, name, stamp, loaded)
            });
        }
        let present = |path: &PathBuf| files.iter().any(|(p, _)| p == path);
        self.retry.retain(|path, _| present(path));
        let gone: Vec<PathBuf> = self
            .settled
            .keys()
            .filter(|p| !present(p))
            .cloned()
            .collect();
        for path in gone {
            if let Some((Some(name), _)) = self.settled.remove(&path) {
                if self.registry.remove(&name) {
                    tracing::info!(plugin = %name, file = %path.display(), "plugin file removed; plugin stopped (its queue keeps its events)");
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self, (path, name, stamp, loaded): Loaded) {
        self.loading.remove(&path);
        self.registry.set_loading(&name, false);
        let error = match loaded {
            // Removed (or replaced) while it loaded: the next scan decides.
            Ok(_) if !still_there(&path, stamp) => return,
            Ok(plugin) => {
                self.metrics.plugin_loaded(name.as_str());
                self.registry.install(plugin, &path);
                self.retry.remove(&path);
                self.settled.insert(path, (Some(name), stamp));
                return;
            }
            Err(LoadError::Cancelled) => return,
            Err(error) => error,
        };
        let reason = error.to_string();
        self.metrics.reload_failed(name.as_str());
        self.registry.refused(&name, &reason);
        if error.is_transient() {
            let retry = self.retry.entry(path.clone()).or_insert_with(|| Retry {
                stamp,
                at: Instant::now(),
                backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
            });
            let delay = retry.backoff.next();
            retry.at = Instant::now() + delay;
            tracing::warn!(plugin = %name, file = %path.display(), error = %reason, retry_in = ?delay, "plugin load failed; trying again");
        } else {
            tracing::error!(plugin = %name, file = %path.display(), error = %reason, "plugin refused until its file changes; the previous version (if any) keeps serving");
            self.retry.remove(&path);
            self.settled.insert(path, (Some(name), stamp));
        }
    }
}

/// The file is still in place, unchanged since its load began.
fn still_there(path: &Path, stamp: Stamp) -> bool {
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.len() == stamp.len && meta.modified().ok() == stamp.modified)
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
