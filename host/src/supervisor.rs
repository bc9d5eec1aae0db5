//! Supervision of the host's long-running parts (see [`crate::app`]). Each part runs in its own task, made afresh by
//! its factory; a part that panics or stops before shutdown is counted, marked down (so
//! `/readyz` turns red), and started again after a backoff.

use crate::metrics::Metrics;
use crate::outbox::health::Backoff;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A part that ran this long before failing starts again without waiting.
const STABLE: Duration = Duration::from_secs(60);

/// Which supervised parts are running, for readiness.
#[derive(Debug, Default)]
pub struct TaskHealth {
    up: Mutex<BTreeMap<&'static str, bool>>,
}

impl TaskHealth {
    fn set(&self, task: &'static str, up: bool) {
        self.up
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(task, up);
    }

    /// The parts that are down, waiting to be restarted.
    pub fn down(&self) -> Vec<&'static str> {
        let up = self.up.lock().unwrap_or_else(|e| e.into_inner());
        up.iter().filter(|(_, up)| !**up).map(|(t, _)| *t).collect()
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, bool> {
        self.up.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

pub struct Supervisor {
    tasks: JoinSet<()>,
    health: Arc<TaskHealth>,
    metrics: Metrics,
    shutdown: CancellationToken,
    backoff: (Duration, Duration),
}

impl Supervisor {
    pub fn new(metrics: Metrics, shutdown: CancellationToken) -> Self {
        Self {
            tasks: JoinSet::new(),
            health: Arc::default(),
            metrics,
            shutdown,
            backoff: (Duration::from_millis(500), Duration::from_secs(30)),
        }
    }

    /// Shortens the restart backoff (tests).
    pub fn with_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = (first, max);
        self
    }

    pub fn health(&self) -> Arc<TaskHealth> {
        self.health.clone()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Runs `make()` until shutdown, starting it again whenever it panics or returns early.
    /// Each run must stop by itself once the shutdown token is cancelled.
    pub fn spawn<F, Fut>(&mut self, task: &'static str, mut make: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (health, metrics, shutdown) = (
            self.health.clone(),
            self.metrics.clone(),
            self.shutdown.clone(),
        );
        let mut backoff = Backoff::new(self.backoff.0, self.backoff.1);
        self.tasks.spawn(async move {
            loop {
                health.set(task, true);
                metrics.task_state(task, true);
                let started = Instant::now();
                let ended = tokio::spawn(make()).await;
                if shutdown.is_cancelled() {
                    return;
                }
                let why = match ended {
                    Ok(()) => "stopped before shutdown".to_string(),
                    Err(e) if e.is_panic() => format!("panicked: {}", panic_message(e)),
                    Err(e) => e.to_string(),
                };
                health.set(task, false);
                metrics.task_state(task, false);
                metrics.task_restarted(task);
                if started.elapsed() >= STABLE {
                    backoff.reset();
                }
                let delay = backoff.next();
                tracing::error!(task, reason = %why, restart_in = ?delay, "host task failed; restarting it");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        });
    }

    /// Waits until every part has stopped (after shutdown).
    pub async fn join(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

fn panic_message(error: tokio::task::JoinError) -> String {
    let payload = error.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_panicking_part_is_restarted_counted_and_marked_down_meanwhile() {
        let metrics = Metrics::default();
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor::new(metrics.clone(), shutdown.clone())
            .with_backoff(Duration::from_millis(200), Duration::from_millis(200));
        let health = supervisor.health();
        let runs = Arc::new(AtomicUsize::new(0));
        let (counter, token) = (runs.clone(), shutdown.clone());
        supervisor.spawn("relay", move || {
            let (runs, token) = (counter.clone(), token.clone());
            async move {
                if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("injected");
                }
                token.cancelled().await;
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            health.down(),
            vec!["relay"],
            "down while waiting to restart"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2, "started again once");
        assert!(
            health.down().is_empty(),
            "up again: {:?}",
            health.snapshot()
        );
        shutdown.cancel();
        supervisor.join().await;
        let text = metrics.encode_registry();
        assert!(
            text.contains(r#"eventhost_task_restarts_total{task="relay"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"eventhost_task_up{task="relay"} 1"#),
            "{text}"
        );
    }
}
