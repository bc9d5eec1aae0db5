//! Outage bookkeeping shared by the relay's tasks: each outage is logged once when it
//! starts and once when it ends, however many tasks notice it.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Health {
    broker_down: AtomicBool,
    database_down: AtomicBool,
}

impl Health {
    pub fn broker_failed(&self, error: &dyn Display) {
        if !self.broker_down.swap(true, Ordering::Relaxed) {
            tracing::warn!(%error, "RabbitMQ unreachable; events stay pending and will be published when it is back");
        } else {
            tracing::debug!(%error, "RabbitMQ still unreachable");
        }
    }

    pub fn broker_lost(&self, reason: &str) {
        self.broker_failed(&format!("connection lost: {reason}"));
    }

    pub fn broker_recovered(&self) {
        if self.broker_down.swap(false, Ordering::Relaxed) {
            tracing::info!("RabbitMQ reachable again; publishing the backlog");
        }
    }

    pub fn database_failed(&self, error: &dyn Display) {
        if !self.database_down.swap(true, Ordering::Relaxed) {
            tracing::warn!(%error, "PostgreSQL unreachable; the relay retries");
        } else {
            tracing::debug!(%error, "PostgreSQL still unreachable");
        }
    }

    pub fn database_recovered(&self) {
        if self.database_down.swap(false, Ordering::Relaxed) {
            tracing::info!("PostgreSQL reachable again");
        }
    }
}

/// Exponential reconnect delays: base, 2·base, ... up to max.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            current: base,
        }
    }

    pub fn next(&mut self) -> Duration {
        let delay = self.current;
        self.current = (self.current * 2).min(self.max);
        delay
    }

    pub fn reset(&mut self) {
        self.current = self.base;
    }
}
