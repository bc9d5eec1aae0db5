//! What operators want to see without searching the logs: plugin files refused at load
//! and reads that repaired state. Bounded, in memory, per process (the dashboard shows
//! them; the logs keep the full history).

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;

/// Entries kept per list; the oldest go first.
const KEPT: usize = 50;

/// A plugin file the host would not serve.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    pub at: DateTime<Utc>,
    pub plugin: String,
    pub reason: String,
}

/// A read that changed the plugin's rows (and committed): an on-read repair.
#[derive(Debug, Clone, Serialize)]
pub struct Repair {
    pub at: DateTime<Utc>,
    pub plugin: String,
    pub path: String,
    pub status: u16,
    pub rows_written: u64,
}

#[derive(Default)]
pub struct Journal {
    refusals: Mutex<VecDeque<Refusal>>,
    repairs: Mutex<VecDeque<Repair>>,
}

fn push<T>(list: &Mutex<VecDeque<T>>, entry: T) {
    let mut list = list.lock().unwrap_or_else(|e| e.into_inner());
    if list.len() == KEPT {
        list.pop_front();
    }
    list.push_back(entry);
}

/// Newest first.
fn newest<T: Clone>(list: &Mutex<VecDeque<T>>) -> Vec<T> {
    let list = list.lock().unwrap_or_else(|e| e.into_inner());
    list.iter().rev().cloned().collect()
}

impl Journal {
    pub fn refused(&self, plugin: &str, reason: &str) {
        push(
            &self.refusals,
            Refusal {
                at: Utc::now(),
                plugin: plugin.to_string(),
                reason: reason.to_string(),
            },
        );
    }

    pub fn repaired(&self, plugin: &str, path: &str, status: u16, rows_written: u64) {
        push(
            &self.repairs,
            Repair {
                at: Utc::now(),
                plugin: plugin.to_string(),
                path: path.to_string(),
                status,
                rows_written,
            },
        );
    }

    pub fn refusals(&self) -> Vec<Refusal> {
        newest(&self.refusals)
    }

    pub fn repairs(&self) -> Vec<Repair> {
        newest(&self.repairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_entries_first_and_a_bounded_number() {
        let journal = Journal::default();
        for n in 0..KEPT + 5 {
            journal.refused("p", &format!("reason {n}"));
        }
        let refusals = journal.refusals();
        assert_eq!(refusals.len(), KEPT);
        assert_eq!(refusals[0].reason, format!("reason {}", KEPT + 4));
        assert_eq!(refusals[KEPT - 1].reason, "reason 5");
        assert!(journal.repairs().is_empty());
    }
}
