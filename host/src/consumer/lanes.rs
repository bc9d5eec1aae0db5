//! Concurrency with order: up to `concurrency` jobs run at once, but jobs with the same
//! key (an event's aggregate) run one after another in submission order. A job whose key
//! is busy waits in that key's queue, not in front of other keys' jobs.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;
type Waiting = Arc<Mutex<HashMap<String, VecDeque<Job>>>>;

pub struct Lanes {
    permits: Arc<Semaphore>,
    waiting: Waiting,
    tasks: JoinSet<()>,
    /// Cancelled when a job panics (a host bug): its owner should stop and start again.
    panicked: CancellationToken,
}

/// Runs a job; a panic is caught and reported through `panicked`. Once any job has
/// panicked no further job starts: the ones left are dropped unrun (for deliveries:
/// unacknowledged, so they return to the queue in order when the channel closes).
async fn guarded(job: Job, panicked: &CancellationToken) {
    use futures_lite::FutureExt;
    if panicked.is_cancelled() {
        return;
    }
    if std::panic::AssertUnwindSafe(job)
        .catch_unwind()
        .await
        .is_err()
    {
        panicked.cancel();
    }
}

/// Lets a running job wait (for a retry's delay) without holding one of the lanes'
/// slots, so other keys keep flowing while its own key stays blocked behind it.
#[derive(Clone)]
pub struct Gate(Arc<Semaphore>);

impl Gate {
    /// Runs `wait` with the caller's slot lent back to the lanes; takes a slot again after.
    pub async fn outside<F: Future>(&self, wait: F) -> F::Output {
        struct Lent<'a>(&'a Semaphore, bool, Arc<Semaphore>);
        impl Drop for Lent<'_> {
            fn drop(&mut self) {
                if !self.1 && self.0.forget_permits(1) == 0 {
                    // Dropped mid-wait with every slot taken: take the lent one back as
                    // soon as one is free, so the lanes never run more than their bound.
                    let slots = self.2.clone();
                    tokio::spawn(async move {
                        if let Ok(slot) = slots.acquire_owned().await {
                            slot.forget();
                        }
                    });
                }
            }
        }
        self.0.add_permits(1);
        let mut lent = Lent(&self.0, false, self.0.clone());
        let out = wait.await;
        if let Ok(slot) = self.0.acquire().await {
            slot.forget();
        }
        lent.1 = true;
        out
    }
}

impl Lanes {
    /// A gate onto these lanes' slots, for the jobs.
    pub fn gate(&self) -> Gate {
        Gate(self.permits.clone())
    }

    pub fn new(concurrency: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrency)),
            waiting: Arc::default(),
            tasks: JoinSet::new(),
            panicked: CancellationToken::new(),
        }
    }

    /// Cancelled once any job has panicked.
    pub fn panicked(&self) -> CancellationToken {
        self.panicked.clone()
    }

    /// Runs `job` once a permit is free and every earlier job with the same key is done.
    /// `None` keys are unordered.
    pub fn submit(&mut self, key: Option<String>, job: impl Future<Output = ()> + Send + 'static) {
        while self.tasks.try_join_next().is_some() {}
        let job: Job = Box::pin(job);
        let (permits, panicked) = (self.permits.clone(), self.panicked.clone());
        let Some(key) = key else {
            self.tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                guarded(job, &panicked).await;
            });
            return;
        };
        {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(queue) = waiting.get_mut(&key) {
                queue.push_back(job);
                return;
            }
            waiting.insert(key.clone(), VecDeque::new());
        }
        let waiting = self.waiting.clone();
        self.tasks.spawn(async move {
            let mut job = job;
            loop {
                {
                    let _permit = permits.acquire().await;
                    guarded(job, &panicked).await;
                }
                let mut queues = waiting.lock().unwrap_or_else(|e| e.into_inner());
                match queues.get_mut(&key).and_then(VecDeque::pop_front) {
                    Some(next) => job = next,
                    None => {
                        queues.remove(&key);
                        return;
                    }
                }
            }
        });
    }

    /// Jobs submitted and not finished (running or waiting).
    pub fn in_flight(&mut self) -> usize {
        while self.tasks.try_join_next().is_some() {}
        let waiting: usize = self
            .waiting
            .lock()
            .map(|w| w.values().map(VecDeque::len).sum())
            .unwrap_or(0);
        self.tasks.len() + waiting
    }

    /// Waits for every submitted job to finish.
    pub async fn drain(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn a_job_waiting_outside_the_gate_lets_other_keys_run_but_not_its_own() {
        let mut lanes = Lanes::new(1);
        let gate = lanes.gate();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (first, second, other) = (log.clone(), log.clone(), log.clone());
        lanes.submit(Some("a".into()), async move {
            gate.outside(tokio::time::sleep(Duration::from_millis(100)))
                .await;
            first.lock().unwrap().push("a1");
        });
        lanes.submit(Some("a".into()), async move {
            second.lock().unwrap().push("a2");
        });
        lanes.submit(Some("b".into()), async move {
            other.lock().unwrap().push("b");
        });
        lanes.drain().await;
        assert_eq!(*log.lock().unwrap(), ["b", "a1", "a2"]);
    }

    #[tokio::test]
    async fn after_a_panic_no_further_job_starts() {
        let mut lanes = Lanes::new(1);
        let ran = Arc::new(AtomicUsize::new(0));
        lanes.submit(Some("a".into()), async { panic!("injected") });
        for key in ["a", "b"] {
            let ran = ran.clone();
            lanes.submit(Some(key.into()), async move {
                ran.fetch_add(1, Ordering::SeqCst);
            });
        }
        lanes.drain().await;
        assert!(lanes.panicked().is_cancelled());
        assert_eq!(ran.load(Ordering::SeqCst), 0, "a job ran after the panic");
    }

    #[tokio::test]
    async fn same_key_in_order_other_keys_concurrently() {
        let mut lanes = Lanes::new(4);
        let log = Arc::new(Mutex::new(Vec::new()));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        for i in 0..12u64 {
            let key = format!("k{}", i % 3);
            let (log, running, peak) = (log.clone(), running.clone(), peak.clone());
            lanes.submit(Some(key.clone()), async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                // Later jobs sleep less, so any reordering within a key would show.
                tokio::time::sleep(Duration::from_millis(30 - 2 * i)).await;
                log.lock().unwrap().push((key, i));
                running.fetch_sub(1, Ordering::SeqCst);
            });
        }
        lanes.drain().await;
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 12);
        for k in ["k0", "k1", "k2"] {
            let order: Vec<u64> = log
                .iter()
                .filter(|(key, _)| key == k)
                .map(|e| e.1)
                .collect();
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(order, sorted, "key {k} ran out of order");
        }
        // Three keys: three at once, never more than one per key.
        assert_eq!(peak.load(Ordering::SeqCst), 3);
        assert_eq!(lanes.in_flight(), 0);
    }

    #[tokio::test]
    async fn concurrency_is_bounded() {
        let mut lanes = Lanes::new(2);
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        for i in 0..8 {
            let (running, peak) = (running.clone(), peak.clone());
            let key = (i % 2 == 0).then(|| format!("k{i}"));
            lanes.submit(key, async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                running.fetch_sub(1, Ordering::SeqCst);
            });
        }
        lanes.drain().await;
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }
}
