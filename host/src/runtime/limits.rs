//! The per-store half of the sandbox: memory and table growth, checked by wasmtime on
//! every `memory.grow` / `table.grow` and at instantiation.

use std::fmt;
use wasmtime::ResourceLimiter;

/// Why an invocation was stopped by a limit; found again in the error chain wasmtime returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitExceeded {
    Memory { limit: usize, wanted: usize },
    Table { limit: usize, wanted: usize },
    CpuTime { ticks: u64 },
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
            Self::CpuTime { ticks } => write!(f, "cpu time limit exceeded after {ticks} epoch ticks"),
        }
    }
}

impl std::error::Error for LimitExceeded {}

/// Refuses growth past the configured sizes with an error (a trap), so the invocation ends
/// with a reason that says which limit it hit rather than an allocator abort.
pub struct InvocationLimiter {
    pub memory: usize,
    pub table_elements: usize,
}

impl ResourceLimiter for InvocationLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            return Err(LimitExceeded::Memory {
                limit: self.memory,
                wanted: desired,
            }
            .into());
        }
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
