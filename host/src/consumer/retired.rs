//! Versions that stopped serving (replaced, or their file removed) while work they began
//! still runs: deliveries and reads in flight finish on the version that started them,
//! so such a version is draining until the last of them lets go of it.

use crate::runtime::Plugin;
use chrono::{DateTime, Utc};
use std::sync::{Mutex, Weak};

struct RetiredVersion {
    plugin: String,
    version: String,
    since: DateTime<Utc>,
    /// Weak: the registry must not keep a retired version alive.
    held: Weak<Plugin>,
}

/// A version still draining.
#[derive(Debug, Clone, PartialEq)]
pub struct Draining {
    pub plugin: String,
    pub version: String,
    pub since: DateTime<Utc>,
}

#[derive(Default)]
pub struct Retired {
    versions: Mutex<Vec<RetiredVersion>>,
}

impl Retired {
    pub fn retire(&self, plugin: &std::sync::Arc<Plugin>) {
        let mut versions = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        versions.retain(|v| v.held.strong_count() > 0);
        versions.push(RetiredVersion {
            plugin: plugin.name().to_string(),
            version: plugin.digest()[..12].to_string(),
            since: Utc::now(),
            held: std::sync::Arc::downgrade(plugin),
        });
    }

    /// The retired versions something still holds, oldest first; the rest are forgotten.
    pub fn draining(&self) -> Vec<Draining> {
        let mut versions = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        versions.retain(|v| v.held.strong_count() > 0);
        versions
            .iter()
            .map(|v| Draining {
                plugin: v.plugin.clone(),
                version: v.version.clone(),
                since: v.since,
            })
            .collect()
    }
}
