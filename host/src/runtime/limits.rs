//! The per-store half of the sandbox: memory and table growth, checked by wasmtime on
//! every `memory.grow` / `table.grow` and at instantiation.

use std::fmt;
use std::time::{Duration, Instant};
use wasmtime::ResourceLimiter;

/// Why an invocation was stopped by a limit; found again in the error chain wasmtime returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitExceeded {
    Memory { limit: usize, wanted: usize },
    Table { limit: usize, wanted: usize },
    CpuTime { used: Duration, limit: Duration },
}

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory { limit, wanted } => write!(
                f,
                "memory limit exceeded: the plugin tried to grow its linear memory to {wanted} bytes (limit {limit})"
            ),
            Self::Table { limit, wanted } => {
                write!(f, "table limit exceeded: the plugin tried to grow a table to {wanted} elements (limit {limit})")
            }
            Self::CpuTime { used, limit } => write!(
                f,
                "cpu time limit exceeded: the plugin's code ran for {} ms (limit {} ms; time in host calls is not counted)",
                used.as_millis(),
                limit.as_millis()
            ),
        }
    }
}

impl std::error::Error for LimitExceeded {}

/// Refuses growth past the configured sizes with an error (a trap), so the invocation ends
/// with a reason that says which limit it hit rather than an allocator abort.
pub struct InvocationLimiter {
    pub memory: usize,
    pub table_elements: usize,
    /// Bytes of linear memory the instance holds (initial sizes plus growth, all memories).
    pub memory_used: usize,
}

impl ResourceLimiter for InvocationLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // The limit is on the instance's linear memory as a whole, however many memories
        // the component defines.
        let after = self
            .memory_used
            .saturating_add(desired.saturating_sub(current));
        if after > self.memory {
            return Err(LimitExceeded::Memory {
                limit: self.memory,
                wanted: after,
            }
            .into());
        }
        self.memory_used = after;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            return Err(LimitExceeded::Table {
                limit: self.table_elements,
                wanted: desired,
            }
            .into());
        }
        Ok(true)
    }
}

/// Time the plugin's WebAssembly code has run, and nothing else. Wasmtime's call hooks
/// stop it on every exit to the host (imports, and the epoch check itself, during which the
/// invocation may yield to the scheduler) and start it again on return, so a plugin waiting
/// on PostgreSQL, or parked while other tasks run, is not charged.
#[derive(Debug, Default)]
pub struct CpuClock {
    running_since: Option<Instant>,
    used: Duration,
}

impl CpuClock {
    pub fn enter_wasm(&mut self) {
        self.running_since.get_or_insert_with(Instant::now);
    }

    pub fn leave_wasm(&mut self) {
        if let Some(since) = self.running_since.take() {
            self.used += since.elapsed();
        }
    }

    pub fn used(&self) -> Duration {
        self.used + self.running_since.map_or(Duration::ZERO, |s| s.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_counts_only_time_inside_wasm() {
        let mut clock = CpuClock::default();
        clock.enter_wasm();
        std::thread::sleep(Duration::from_millis(20));
        clock.leave_wasm();
        let inside = clock.used();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(clock.used(), inside, "time outside wasm is not counted");
        assert!(inside >= Duration::from_millis(20));
        clock.leave_wasm();
        assert_eq!(clock.used(), inside, "leaving twice counts nothing");
    }
}
