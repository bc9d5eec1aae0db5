//! Failures as the host acts on them: `Permanent` goes to the dead letters at once,
//! `Retryable` is delivered again with backoff.

use crate::{DbError, HandlerError};

/// SQLSTATE classes that fail the same way on every delivery: data exceptions (22),
/// integrity constraint violations (23), syntax errors and access rule violations (42),
/// and program limits (54: the host's caps on rows, result bytes and statement size).
const PERMANENT_CLASSES: [&str; 4] = ["22", "23", "42", "54"];

impl DbError {
    /// Whether running the same statement again can succeed.
    pub fn is_permanent(&self) -> bool {
        PERMANENT_CLASSES
            .iter()
            .any(|class| self.code.starts_with(class))
    }

    /// `database error <SQLSTATE>: <message>`, the reason a failure carries.
    pub fn reason(&self) -> String {
        format!("database error {}: {}", self.code, self.message)
    }
}

/// So `?` on a `db` call works inside `handle`.
impl From<DbError> for HandlerError {
    fn from(err: DbError) -> Self {
        if err.is_permanent() {
            HandlerError::Permanent(err.reason())
        } else {
            HandlerError::Retryable(err.reason())
        }
    }
}

impl HandlerError {
    pub fn permanent(reason: impl Into<String>) -> Self {
        HandlerError::Permanent(reason.into())
    }

    pub fn retryable(reason: impl Into<String>) -> Self {
        HandlerError::Retryable(reason.into())
    }
}
