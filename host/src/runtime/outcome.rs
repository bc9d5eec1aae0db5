//! How an invocation ended, in the terms the dispatcher acts on.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The handler succeeded and its effects are committed.
    Ok,
    /// The event's effects were committed before (its id is in the plugin's inbox): the
    /// handler did not run and nothing new was committed.
    Duplicate,
    /// The handler asked to be retried later; nothing was committed.
    Retryable(String),
    /// The handler declared the event impossible; nothing was committed.
    Permanent(String),
    /// The host stopped or lost the invocation; nothing was committed. Retried like
    /// `Retryable`, since a deadline or a crash may not recur.
    Aborted(Abort),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Abort {
    /// The plugin trapped (a Rust panic is an `unreachable` trap).
    Trap(String),
    /// A sandbox limit stopped it (cpu time, memory, table).
    Limit(String),
    /// The wall-clock deadline passed, possibly while it waited on a host call.
    Deadline(String),
    /// The host could not run or commit it (database unreachable, commit failed).
    Host(String),
    /// The host had no room for it right now (the plugin's share is in use, or the
    /// engine's instance pool is full). Not the event's fault: deliveries wait and retry
    /// in place without counting an attempt.
    Capacity(String),
}

impl Outcome {
    /// `ok`, `retryable` or `permanent`: the three classes a fixture expects.
    pub fn class(&self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Duplicate => "duplicate",
            Self::Permanent(_) => "permanent",
            Self::Retryable(_) | Self::Aborted(_) => "retryable",
        }
    }

    pub fn reason(&self) -> Option<String> {
        match self {
            Self::Ok | Self::Duplicate => None,
            Self::Retryable(r) | Self::Permanent(r) => Some(r.clone()),
            Self::Aborted(a) => Some(a.to_string()),
        }
    }
}

impl fmt::Display for Abort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Trap(m) => write!(f, "plugin trapped: {m}"),
            Self::Limit(m) => write!(f, "{m}"),
            Self::Deadline(m) => write!(f, "{m}"),
            Self::Host(m) => write!(f, "host error: {m}"),
            Self::Capacity(m) => write!(f, "no capacity: {m}"),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason() {
            None => f.write_str(self.class()),
            Some(reason) => write!(f, "{}: {reason}", self.class()),
        }
    }
}
