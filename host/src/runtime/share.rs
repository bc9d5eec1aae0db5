//! Each plugin's share of the host. When a plugin loads, instance slots for all the work
//! it may run at once (deliveries, reads, and one load of a new version) are reserved from
//! the engine's pool; within its share, each kind of work has its own concurrency limit.
//! So one plugin's load can exhaust only its own share, never another plugin's slots, and
//! the pooling allocator can never run out under a plugin that stays within its share.

use super::PluginName;
use crate::config::Limits;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The kinds of work a plugin's instances do; each has its own part of the share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    Delivery,
    Read,
    Load,
}

#[derive(Debug, thiserror::Error)]
#[error("no room for plugin {plugin}'s share of {slots} instances: {reserved} of limits.max_instances ({capacity}) are reserved by the plugins loaded; raise limits.max_instances or lower limits.deliveries_per_plugin / limits.reads_per_plugin")]
pub struct ShareError {
    plugin: String,
    slots: u32,
    reserved: u32,
    capacity: u32,
}

/// One plugin's share; every loaded version of the plugin holds the same one.
pub struct Share {
    name: PluginName,
    slots: u32,
    deliveries: Arc<Semaphore>,
    reads: Arc<Semaphore>,
    loads: Arc<Semaphore>,
    ledger: Arc<Ledger>,
}

impl Share {
    /// Waits for room for one unit of `work`; the permit is held for the invocation.
    pub async fn enter(&self, work: Work) -> OwnedSemaphorePermit {
        let semaphore = match work {
            Work::Delivery => &self.deliveries,
            Work::Read => &self.reads,
            Work::Load => &self.loads,
        };
        // The semaphores are never closed, so acquiring cannot fail.
        semaphore
            .clone()
            .acquire_owned()
            .await
            .expect("share semaphores are never closed")
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut state = self.ledger.state.lock().unwrap_or_else(|e| e.into_inner());
        state.reserved -= self.slots;
        // A newer share of the same name may have been registered meanwhile: keep it.
        if state
            .shares
            .get(&self.name)
            .is_some_and(|w| w.strong_count() == 0)
        {
            state.shares.remove(&self.name);
        }
    }
}

/// The host's record of the shares handed out.
pub struct Ledger {
    capacity: u32,
    state: Mutex<LedgerState>,
}

#[derive(Default)]
struct LedgerState {
    reserved: u32,
    shares: HashMap<PluginName, Weak<Share>>,
}

impl Ledger {
    pub fn new(capacity: u32) -> Arc<Self> {
        Arc::new(Self {
            capacity,
            state: Mutex::default(),
        })
    }

    /// The plugin's share: the one its loaded versions hold, or a new reservation.
    pub fn share(
        self: &Arc<Self>,
        name: &PluginName,
        limits: &Limits,
    ) -> Result<Arc<Share>, ShareError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(share) = state.shares.get(name).and_then(Weak::upgrade) {
            return Ok(share);
        }
        let slots = limits.plugin_share();
        if state.reserved + slots > self.capacity {
            return Err(ShareError {
                plugin: name.to_string(),
                slots,
                reserved: state.reserved,
                capacity: self.capacity,
            });
        }
        state.reserved += slots;
        let permits = |n: u32| Arc::new(Semaphore::new(n as usize));
        let share = Arc::new(Share {
            name: name.clone(),
            slots,
            deliveries: permits(limits.deliveries_per_plugin),
            reads: permits(limits.reads_per_plugin),
            loads: permits(1),
            ledger: self.clone(),
        });
        state.shares.insert(name.clone(), Arc::downgrade(&share));
        Ok(share)
    }

    #[cfg(test)]
    fn reserved(&self) -> u32 {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reserved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_instances: 25,
            deliveries_per_plugin: 4,
            reads_per_plugin: 7,
            ..Limits::default()
        }
    }

    #[test]
    fn shares_are_reserved_once_per_plugin_and_released_with_the_last_version() {
        let ledger = Ledger::new(25);
        let a = PluginName::parse("a").unwrap();
        let first = ledger.share(&a, &limits()).unwrap();
        let again = ledger.share(&a, &limits()).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "two versions share one share");
        assert_eq!(ledger.reserved(), 12);
        let b = ledger
            .share(&PluginName::parse("b").unwrap(), &limits())
            .unwrap();
        let err = ledger
            .share(&PluginName::parse("c").unwrap(), &limits())
            .err()
            .expect("a third share does not fit in 25 slots");
        assert!(
            err.to_string().contains("limits.max_instances (25)"),
            "{err}"
        );
        drop(b);
        assert_eq!(ledger.reserved(), 12);
        ledger
            .share(&PluginName::parse("c").unwrap(), &limits())
            .unwrap();
        drop((first, again));
    }

    #[tokio::test]
    async fn each_kind_of_work_has_its_own_limit() {
        let ledger = Ledger::new(25);
        let share = ledger
            .share(&PluginName::parse("a").unwrap(), &limits())
            .unwrap();
        let mut reads = Vec::new();
        for _ in 0..7 {
            reads.push(share.enter(Work::Read).await);
        }
        let eighth = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            share.enter(Work::Read),
        )
        .await;
        assert!(eighth.is_err(), "an eighth read must wait");
        // Reads at their limit do not hold up deliveries.
        let delivery = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            share.enter(Work::Delivery),
        )
        .await;
        assert!(delivery.is_ok());
    }
}
