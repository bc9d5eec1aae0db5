//! The SQL text a session sends around the plugin's statements: how a transaction opens
//! (and what it checks while it does), and how it ends, back to a clean session.

/// Opens the transaction and reports the session's backend, in one round trip.
pub(super) const BEGIN: &str = "BEGIN; SELECT pg_catalog.pg_backend_pid()";
/// The same, for a `HEAD` read. The `SELECT` is the transaction's first query, so the
/// plugin can no longer switch it to read-write.
pub(super) const BEGIN_READ_ONLY: &str = "BEGIN READ ONLY; SELECT pg_catalog.pg_backend_pid()";

/// [`BEGIN`], and the named prepared statements on this connection: ones made by SQL
/// (`PREPARE` run by a function or a `DO` block of the plugin's) are an earlier
/// invocation's, and fewer protocol-level ones than sqlx has cached means one was
/// deallocated under it. Only plugins that have code of their own can make either, so
/// only their sessions pay for the check (it costs about as much as a round trip).
/// Everything else a session can carry over is cleared by the reset (`reset!`) at the end of each
/// transaction, and role settings are checked when a connection is made
/// (`provision::plugin_pool`).
pub(super) const BEGIN_AND_CHECK: &str = "BEGIN; SELECT pg_catalog.pg_backend_pid(), \
    count(*) FILTER (WHERE p.from_sql), count(*) FILTER (WHERE NOT p.from_sql) \
    FROM pg_catalog.pg_prepared_statement() p";
pub(super) const BEGIN_READ_ONLY_AND_CHECK: &str =
    "BEGIN READ ONLY; SELECT pg_catalog.pg_backend_pid(), \
    count(*) FILTER (WHERE p.from_sql), count(*) FILTER (WHERE NOT p.from_sql) \
    FROM pg_catalog.pg_prepared_statement() p";

/// With the host's `COMMIT` / `ROLLBACK`, in the same round trip: back to the settings the
/// host connected with, and nothing else carried to the next invocation.
macro_rules! reset {
    () => {
        "RESET ALL; UNLISTEN *; CLOSE ALL; DISCARD TEMP; DISCARD SEQUENCES"
    };
}
// Committing, the reset runs inside the transaction, before `COMMIT` (settings reset and
// `UNLISTEN` take effect with it): if any part fails, nothing commits, so "commit failed"
// is always true. Rolling back undoes the transaction's own `SET`s anyway; the reset after
// it clears what is not transactional (sequence state, cursors held from earlier).
pub(super) const COMMIT_AND_RESET: &str = concat!(reset!(), "; COMMIT");
pub(super) const ROLLBACK_AND_RESET: &str = concat!("ROLLBACK; ", reset!());

/// The event's inbox row, unless it is there already.
pub(super) const RECORD_DELIVERY: &str =
    "INSERT INTO _eventhost_inbox (source, event_id, event_type) VALUES ($1, $2, $3) \
     ON CONFLICT (event_id, source) DO NOTHING";
/// The same, while rows of the earlier layout (source `''`, any source) may match.
pub(super) const RECORD_DELIVERY_OR_LEGACY: &str =
    "INSERT INTO _eventhost_inbox (source, event_id, event_type) \
     SELECT $1, $2, $3 WHERE NOT EXISTS \
         (SELECT 1 FROM _eventhost_inbox WHERE event_id = $2 AND source = '') \
     ON CONFLICT (event_id, source) DO NOTHING";
