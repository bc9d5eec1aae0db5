//! The loaded plugins. Each has a slot holding the version that serves now; replacing a
//! version swaps the slot, while deliveries and reads already running keep the version
//! they started with. Consumers follow the set of plugins and their subscriptions
//! through a watch channel.

use super::journal::Journal;
use super::retired::{Draining, Retired};
use super::{Subscriber, Target};
use crate::event::Event;
use crate::runtime::{Invocation, Plugin, PluginName};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

pub struct Slot {
    current: RwLock<Arc<Plugin>>,
    status: RwLock<SlotStatus>,
}

/// What `/admin/plugins` shows for one plugin.
#[derive(Debug, Clone, Serialize)]
pub struct SlotStatus {
    pub name: String,
    /// The first 12 hex digits of the serving component's SHA-256.
    pub version: String,
    pub contract: String,
    pub file: PathBuf,
    pub subscriptions: Vec<String>,
    pub read_hook: bool,
    /// `serving`, or `serving-previous` when the newest file was refused.
    pub state: &'static str,
    pub loaded_at: DateTime<Utc>,
    /// The file's modification time: when this version was deployed, as far as the host
    /// can tell (the newest deployed version's subscriptions win across hosts).
    pub deployed_at: DateTime<Utc>,
    /// Why the newest file was refused, if it was.
    pub last_error: Option<String>,
}

impl Slot {
    /// The version serving now; hold the `Arc` for the whole invocation.
    pub fn current(&self) -> Arc<Plugin> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn status(&self) -> SlotStatus {
        self.status
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Target for Slot {
    fn deliver<'a>(
        &'a self,
        event: &'a Event,
    ) -> Pin<Box<dyn Future<Output = Invocation> + Send + 'a>> {
        let plugin = self.current();
        Box::pin(async move { plugin.deliver(event).await })
    }
}

fn status_of(plugin: &Plugin, file: &Path) -> SlotStatus {
    SlotStatus {
        name: plugin.name().to_string(),
        version: plugin.digest()[..12].to_string(),
        contract: format!(
            "{}@{}",
            crate::runtime::bindings::WIT_PACKAGE,
            crate::runtime::bindings::WIT_VERSION
        ),
        file: file.to_path_buf(),
        subscriptions: plugin.subscriptions().to_vec(),
        read_hook: plugin.has_reader(),
        state: "serving",
        loaded_at: Utc::now(),
        deployed_at: std::fs::metadata(file)
            .and_then(|m| m.modified())
            .map(DateTime::<Utc>::from)
            .unwrap_or_else(|_| Utc::now()),
        last_error: None,
    }
}

pub struct Registry {
    slots: RwLock<BTreeMap<PluginName, Arc<Slot>>>,
    subscribers: watch::Sender<Arc<Vec<Subscriber>>>,
    journal: Journal,
    /// Plugins with a file loading now (a first version or a replacement).
    loading: RwLock<BTreeSet<String>>,
    /// Why each plugin's newest file was refused, until a version of it loads or its
    /// file is removed.
    refused_now: RwLock<BTreeMap<String, String>>,
    /// Versions replaced or removed while work they began may still run.
    retired: Retired,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            slots: RwLock::default(),
            subscribers: watch::Sender::new(Arc::new(Vec::new())),
            journal: Journal::default(),
            loading: RwLock::default(),
            refused_now: RwLock::default(),
            retired: Retired::default(),
        }
    }
}

impl Registry {
    pub fn get(&self, name: &str) -> Option<Arc<Slot>> {
        let name = PluginName::parse(name).ok()?;
        self.read().get(&name).cloned()
    }

    pub fn statuses(&self) -> Vec<SlotStatus> {
        self.read().values().map(|slot| slot.status()).collect()
    }

    fn forget_refusal(&self, name: &PluginName) {
        let mut refused = self.refused_now.write().unwrap_or_else(|e| e.into_inner());
        refused.remove(name.as_str());
    }

    /// Plugins whose newest file was refused, with the reason (until a version loads or
    /// the file goes).
    pub fn refused_now(&self) -> BTreeMap<String, String> {
        let refused = self.refused_now.read().unwrap_or_else(|e| e.into_inner());
        refused.clone()
    }

    /// Versions that stopped serving while work they began still runs.
    pub fn draining(&self) -> Vec<Draining> {
        self.retired.draining()
    }

    /// Marks `name` as having a file loading now, or no longer.
    pub fn set_loading(&self, name: &PluginName, on: bool) {
        let mut loading = self.loading.write().unwrap_or_else(|e| e.into_inner());
        match on {
            true => loading.insert(name.to_string()),
            false => loading.remove(name.as_str()),
        };
    }

    /// The plugins with a file loading now.
    pub fn loading(&self) -> Vec<String> {
        let loading = self.loading.read().unwrap_or_else(|e| e.into_inner());
        loading.iter().cloned().collect()
    }

    /// Recent refusals and on-read repairs.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The loaded plugins' names, in order.
    pub fn names(&self) -> Vec<String> {
        self.read().keys().map(|name| name.to_string()).collect()
    }

    /// The plugins and their subscriptions, updated whenever either changes.
    pub fn subscribers(&self) -> watch::Receiver<Arc<Vec<Subscriber>>> {
        self.subscribers.subscribe()
    }

    /// Serves `plugin` from now on, in place of any earlier version.
    pub fn install(&self, plugin: Plugin, file: &Path) {
        self.forget_refusal(plugin.name());
        let status = status_of(&plugin, file);
        let plugin = Arc::new(plugin);
        let changed_subscriptions = {
            let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
            match slots.get(plugin.name()) {
                Some(slot) => {
                    let old = std::mem::replace(
                        &mut *slot.current.write().unwrap_or_else(|e| e.into_inner()),
                        plugin,
                    );
                    self.retired.retire(&old);
                    let mut current = slot.status.write().unwrap_or_else(|e| e.into_inner());
                    let changed = old.subscriptions() != status.subscriptions.as_slice();
                    tracing::info!(plugin = %status.name, from = %current.version, to = %status.version, "plugin replaced");
                    *current = status;
                    changed
                }
                None => {
                    let slot = Slot {
                        current: RwLock::new(plugin.clone()),
                        status: RwLock::new(status),
                    };
                    slots.insert(plugin.name().clone(), Arc::new(slot));
                    true
                }
            }
        };
        if changed_subscriptions {
            self.publish();
        }
    }

    /// Records that the newest file for `name` was refused; its previous version, if any,
    /// keeps serving.
    pub fn refused(&self, name: &PluginName, error: &str) {
        self.journal.refused(name.as_str(), error);
        let mut refused = self.refused_now.write().unwrap_or_else(|e| e.into_inner());
        refused.insert(name.to_string(), error.to_string());
        drop(refused);
        if let Some(slot) = self.read().get(name) {
            let mut status = slot.status.write().unwrap_or_else(|e| e.into_inner());
            status.state = "serving-previous";
            status.last_error = Some(error.to_string());
        }
    }

    /// Stops serving `name` (its file was removed). Its queue stays and keeps collecting
    /// events until the plugin comes back.
    pub fn remove(&self, name: &PluginName) -> bool {
        self.forget_refusal(name);
        let removed = self
            .slots
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        let Some(slot) = removed else {
            return false;
        };
        self.retired.retire(&slot.current());
        self.publish();
        true
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<PluginName, Arc<Slot>>> {
        self.slots.read().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self) {
        let subscribers = self
            .read()
            .iter()
            .map(|(name, slot)| {
                let current = slot.current();
                Subscriber {
                    name: name.to_string(),
                    subscriptions: current.subscriptions().to_vec(),
                    target: slot.clone(),
                    version: Some(super::PluginVersion {
                        digest: current.digest().to_string(),
                        deployed_at: slot.status().deployed_at,
                    }),
                }
            })
            .collect();
        self.subscribers.send_replace(Arc::new(subscribers));
    }
}
