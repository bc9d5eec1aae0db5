//! How an invocation that did not return becomes an [`Outcome`]: a sandbox violation, a
//! limit, a trap (with the end of the guest's stderr), a full pool, or a host error.

use super::limits::LimitExceeded;
use super::{Abort, Outcome};
use crate::capabilities::log::truncate;
use wasmtime::Trap;

#[derive(Debug, thiserror::Error)]
#[error("commit failed: {0}")]
pub(super) struct Commit(pub(super) String);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct Violation(pub(super) String);

/// A trap's reason carries the end of the guest's stderr, where language runtimes put
/// the traceback or the exception.
pub(super) const STDERR_LINES_IN_REASON: usize = 20;

pub(super) fn classify(error: wasmtime::Error, stderr: &[String], reason_bytes: usize) -> Outcome {
    // The end of stderr is what matters (the exception line comes last): when the reason
    // is too long, the stderr loses its start, not its end.
    let with_stderr = |reason: String| {
        let reason = truncate(reason, reason_bytes);
        if stderr.is_empty() {
            return reason;
        }
        let head = format!("{reason}; the plugin's stderr ended with:\n");
        let tail = stderr.join("\n");
        let room = reason_bytes.saturating_sub(head.len());
        if tail.len() <= room {
            return head + &tail;
        }
        let start = (tail.len() - room.saturating_sub(4)..=tail.len())
            .find(|&i| tail.is_char_boundary(i))
            .unwrap_or(tail.len());
        format!("{head}...\n{}", &tail[start..])
    };
    if let Some(violation) = error.downcast_ref::<Violation>() {
        return Outcome::Permanent(violation.0.clone());
    }
    if let Some(limit) = error.downcast_ref::<LimitExceeded>() {
        return Outcome::Aborted(Abort::Limit(limit.to_string()));
    }
    if let Some(full) = error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
        return Outcome::Aborted(Abort::Capacity(full.to_string()));
    }
    if let Some(trap) = error.downcast_ref::<Trap>() {
        let hint = match trap {
            Trap::UnreachableCodeReached => {
                " (the plugin panicked, aborted or raised an uncaught exception)"
            }
            Trap::StackOverflow => " (unbounded recursion?)",
            _ => "",
        };
        return Outcome::Aborted(Abort::Trap(with_stderr(format!("{trap}{hint}"))));
    }
    Outcome::Aborted(Abort::Host(with_stderr(format!("{error:#}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_stderr_keeps_its_last_line_within_the_reason_limit() {
        let mut stderr: Vec<String> = (0..20)
            .map(|n| format!("frame {n} {}", "x".repeat(300)))
            .collect();
        stderr.push("ValueError: the line that matters".into());
        let trap = wasmtime::Error::new(Trap::UnreachableCodeReached);
        let Outcome::Aborted(Abort::Trap(reason)) = classify(trap, &stderr, 1024) else {
            panic!("a trap");
        };
        assert!(reason.len() <= 1024, "{} bytes", reason.len());
        assert!(reason.starts_with("wasm trap"), "{reason}");
        assert!(
            reason.ends_with("ValueError: the line that matters"),
            "{reason}"
        );
    }
}
