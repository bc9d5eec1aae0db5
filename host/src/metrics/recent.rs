//! Per-plugin figures the dashboard shows beside the counters: handling-time percentiles
//! over the latest deliveries, and the latest failure's reason (Prometheus keeps neither).

use chrono::{DateTime, Utc};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// Deliveries the percentiles are taken over.
const WINDOW: usize = 512;

#[derive(Default)]
struct PluginRecent {
    durations: VecDeque<Duration>,
    last_error: Option<(DateTime<Utc>, String)>,
}

#[derive(Default)]
pub(super) struct Recent {
    plugins: Mutex<HashMap<String, PluginRecent>>,
}

/// What [`Recent`] knows of one plugin.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecentFigures {
    /// p50 and p99 handling time over the latest deliveries, if there were any.
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    pub last_error: Option<(DateTime<Utc>, String)>,
}

impl Recent {
    fn with<T>(&self, plugin: &str, f: impl FnOnce(&mut PluginRecent) -> T) -> T {
        let mut plugins = self.plugins.lock().unwrap_or_else(|e| e.into_inner());
        f(plugins.entry(plugin.to_string()).or_default())
    }

    pub(super) fn handled(&self, plugin: &str, elapsed: Duration) {
        self.with(plugin, |p| {
            if p.durations.len() == WINDOW {
                p.durations.pop_front();
            }
            p.durations.push_back(elapsed);
        });
    }

    pub(super) fn failed(&self, plugin: &str, error: &str) {
        self.with(plugin, |p| {
            p.last_error = Some((Utc::now(), error.to_string()))
        });
    }

    pub(super) fn figures(&self, plugin: &str) -> RecentFigures {
        let plugins = self.plugins.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = plugins.get(plugin) else {
            return RecentFigures::default();
        };
        let mut sorted: Vec<Duration> = p.durations.iter().copied().collect();
        sorted.sort_unstable();
        let at = |q: f64| {
            (!sorted.is_empty())
                .then(|| sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)])
        };
        RecentFigures {
            p50: at(0.50),
            p99: at(0.99),
            last_error: p.last_error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_cover_the_latest_window_only() {
        let recent = Recent::default();
        assert_eq!(recent.figures("p"), RecentFigures::default());
        for _ in 0..WINDOW {
            recent.handled("p", Duration::from_secs(10));
        }
        for ms in 1..=WINDOW as u64 {
            recent.handled("p", Duration::from_millis(ms));
        }
        let figures = recent.figures("p");
        assert_eq!(
            figures.p50,
            Some(Duration::from_millis(WINDOW as u64 / 2 + 1))
        );
        assert_eq!(figures.p99, Some(Duration::from_millis(507)));
        recent.failed("p", "boom");
        assert_eq!(recent.figures("p").last_error.unwrap().1, "boom");
        assert_eq!(recent.figures("other"), RecentFigures::default());
    }
}
