//! One invocation: a fresh store from the pre-instantiated component, the sandbox's
//! limits armed, the call, then commit or roll back the plugin's transaction.

use super::bindings::{log::Level, reader, types};
use super::failure::{classify, Commit, Violation, STDERR_LINES_IN_REASON};
use super::limits::{InvocationLimiter, LimitExceeded};
use super::share::Work;
use super::{Abort, Outcome, Plugin};
use crate::capabilities::db::{DbSession, ResultCaps};
use crate::capabilities::log::{truncate, LogBudget};
use crate::capabilities::output::GuestOutput;
use crate::capabilities::wasi::Wasi;
use crate::capabilities::HostState;
use crate::event::Event;
use std::time::{Duration, Instant};
use tracing::Instrument;
use wasmtime::component::Instance;
use wasmtime::{CallHook, Store, UpdateDeadline};

/// What happened to one event.
#[derive(Debug)]
pub struct Invocation {
    pub outcome: Outcome,
    pub elapsed: Duration,
    /// What the plugin logged (the first `limits.log_messages` messages).
    pub logs: Vec<(Level, String)>,
    /// What it printed (bounded by `limits.output_bytes` per stream).
    pub output: GuestOutput,
    /// The linear memory its instance held at the end.
    pub memory_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct ReadRequest {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct ReadResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Rows the read's `execute` statements changed (and committed): an on-read repair.
    pub rows_written: u64,
}

impl Plugin {
    /// Runs the handler on one event. Effects are committed only when the outcome is `Ok`.
    /// No inbox: the same event runs again if handled again (fixtures, `plugin invoke`).
    pub async fn handle(&self, event: &Event) -> Invocation {
        self.invoke_handler(event, false).await
    }

    /// Handles a delivered event effectively once: the event id goes into the plugin's
    /// inbox in the same transaction as the handler's effects, and an id already there
    /// means `Duplicate` without running the handler.
    pub async fn deliver(&self, event: &Event) -> Invocation {
        self.invoke_handler(event, true).await
    }

    async fn invoke_handler(&self, event: &Event, inbox: bool) -> Invocation {
        let span = tracing::info_span!("handle", plugin = %self.name, event_id = %event.id, routing_key = %event.event_type);
        let wit_event = types::Event::from(event);
        let started = Instant::now();
        // Waiting for room in the plugin's own share is not part of the invocation.
        let _permit = self
            .share
            .enter(Work::Delivery)
            .instrument(span.clone())
            .await;
        let mut store = self.new_store(Work::Delivery, Some(event.id.to_string()));
        let result = self
            .run(
                &mut store,
                Strict::Yes,
                |r: &Option<Result<(), types::HandlerError>>| matches!(r, Some(Ok(()))),
                async |store, instance| {
                    if inbox {
                        let db = &mut store.data_mut().db;
                        let new = db
                            .record_delivery(
                                &event.source,
                                &event.id.0,
                                &event.event_type,
                                self.legacy_inbox,
                            )
                            .await
                            .map_err(|e| wasmtime::Error::msg(format!("inbox: {}", e.message)))?;
                        if !new {
                            return Ok(None);
                        }
                    }
                    let handler = self.handler.load(&mut *store, &instance)?;
                    handler.call_handle(&mut *store, &wit_event).await.map(Some)
                },
            )
            .instrument(span.clone())
            .await;
        let max = self.runtime.inner.limits.reason_bytes;
        let outcome = match result {
            Ok(None) => Outcome::Duplicate,
            Ok(Some(Ok(()))) => Outcome::Ok,
            Ok(Some(Err(types::HandlerError::Retryable(r)))) => {
                Outcome::Retryable(truncate(r, max))
            }
            Ok(Some(Err(types::HandlerError::Permanent(r)))) => {
                Outcome::Permanent(truncate(r, max))
            }
            Err(aborted) => aborted,
        };
        let elapsed = started.elapsed();
        span.in_scope(|| match &outcome {
            Outcome::Ok => tracing::debug!(?elapsed, "handled"),
            Outcome::Duplicate => tracing::debug!(?elapsed, "already handled; skipped"),
            other => tracing::warn!(?elapsed, outcome = %other, "not handled"),
        });
        Invocation {
            outcome,
            elapsed,
            logs: take_logs(&mut store),
            output: store.data().wasi.output(),
            memory_bytes: store.data().limiter.memory_used,
        }
    }

    /// Runs the read hook. Its transaction commits when the status is below 500.
    pub async fn read(
        &self,
        request: ReadRequest,
    ) -> (Result<ReadResponse, Outcome>, Vec<(Level, String)>) {
        let Some(indices) = &self.reader else {
            let missing = Outcome::Permanent(format!("plugin {} has no read hook", self.name));
            return (Err(missing), Vec::new());
        };
        let span = tracing::info_span!("read", plugin = %self.name, path = %request.path);
        let wit_request = reader::Request {
            method: request.method,
            path: request.path,
            query: request.query,
        };
        let wall = self.runtime.inner.limits.wall_time;
        let Ok(_permit) = tokio::time::timeout(wall, self.share.enter(Work::Read)).await else {
            let busy = Abort::Capacity(format!(
                "plugin {} is running limits.reads_per_plugin ({}) reads and none finished within {wall:?}",
                self.name, self.runtime.inner.limits.reads_per_plugin
            ));
            return (Err(Outcome::Aborted(busy)), Vec::new());
        };
        let mut store = self.new_store(Work::Read, None);
        if wit_request.method == "HEAD" {
            store.data_mut().db.set_read_only();
        }
        let limits = &self.runtime.inner.limits;
        // The answer is checked as soon as it leaves the plugin; one that is refused never
        // commits and never leaves the host.
        let result = self
            .run(
                &mut store,
                Strict::No,
                |r: &Result<reader::Response, String>| matches!(r, Ok(a) if a.status < 500),
                async |store, instance| {
                    let reader = indices.load(&mut *store, &instance)?;
                    let answer = reader.call_read(&mut *store, &wit_request).await?;
                    Ok(answer_fits(&answer, limits).map(|()| answer))
                },
            )
            .instrument(span)
            .await;
        let response = match result {
            Ok(Ok(r)) => Ok(ReadResponse {
                status: r.status,
                headers: r.headers,
                body: r.body,
                // Committed only below 500 (see `run` above).
                rows_written: if r.status < 500 {
                    store.data().db.rows_written()
                } else {
                    0
                },
            }),
            Ok(Err(refused)) => Err(Outcome::Permanent(refused)),
            Err(outcome) => Err(outcome),
        };
        (response, take_logs(&mut store))
    }

    /// Asks the plugin for its subscriptions and migrations (at load; nothing is committed).
    pub(super) async fn describe(
        &self,
    ) -> Result<(Vec<String>, Vec<super::bindings::migrations::Migration>), Outcome> {
        let _permit = self.share.enter(Work::Load).await;
        let mut store = self.new_store(Work::Load, None);
        let described = self
            .run(
                &mut store,
                Strict::No,
                |_| false,
                async |store, instance| {
                    let handler = self.handler.load(&mut *store, &instance)?;
                    let subscriptions = handler.call_subscriptions(&mut *store).await?;
                    let migrations = self.migrations.load(&mut *store, &instance)?;
                    Ok((
                        subscriptions,
                        migrations.call_migrations(&mut *store).await?,
                    ))
                },
            )
            .await;
        store.data().log_guest_output();
        described
    }

    fn new_store(&self, work: Work, event_id: Option<String>) -> Store<HostState> {
        let shared = &self.runtime.inner;
        let limits = &shared.limits;
        let caps = ResultCaps {
            max_rows: limits.db_max_rows,
            max_bytes: limits.db_max_result_bytes,
            max_statement: limits.db_statement_bytes,
        };
        let db = DbSession::new(
            self.pool(work).clone(),
            shared.admin_pool.clone(),
            self.identity.clone(),
            caps,
            self.has_code.clone(),
        );
        let limiter = InvocationLimiter {
            memory: limits.memory,
            table_elements: limits.table_elements,
            memory_used: 0,
        };
        let log = LogBudget::new(limits.log_messages, limits.log_message_bytes);
        let state = HostState::new(
            self.name.clone(),
            event_id,
            db,
            shared.auth.clone(),
            limiter,
            log,
            Wasi::new(
                self.name.clone(),
                self.version().into(),
                limits.output_bytes,
            ),
        );
        let mut store = Store::new(&shared.engine, state);
        store.limiter(|state| &mut state.limiter);
        // The CPU clock runs only while WebAssembly does: every host call (and the epoch
        // check below, during which the invocation may yield) stops it.
        store.call_hook(|mut ctx, hook| {
            let cpu = &mut ctx.data_mut().cpu;
            match hook {
                CallHook::CallingWasm | CallHook::ReturningFromHost => cpu.enter_wasm(),
                CallHook::CallingHost | CallHook::ReturningFromWasm => cpu.leave_wasm(),
            }
            Ok(())
        });
        // Every tick checks the CPU budget and yields to the scheduler, so a busy plugin
        // never holds an executor thread for long and the wall-clock timeout below can
        // fire even in an endless loop.
        let limit = limits.cpu_time;
        store.epoch_deadline_callback(move |ctx| {
            let used = ctx.data().cpu.used();
            if used >= limit {
                return Err(LimitExceeded::CpuTime { used, limit }.into());
            }
            Ok(UpdateDeadline::Yield(1))
        });
        store.set_epoch_deadline(1);
        store
    }

    /// Instantiates, calls, and commits when `commit_if` approves the result, all within
    /// the wall-clock deadline. Any other end rolls back. A sandbox violation fails the
    /// invocation whatever the plugin returned; under [`Strict::Yes`] so does a success
    /// claimed after a failed statement (PostgreSQL aborted the transaction, so nothing of
    /// it could commit).
    async fn run<R>(
        &self,
        store: &mut Store<HostState>,
        strict: Strict,
        commit_if: impl FnOnce(&R) -> bool,
        call: impl AsyncFnOnce(&mut Store<HostState>, Instance) -> wasmtime::Result<R>,
    ) -> Result<R, Outcome> {
        let wall = self.runtime.inner.limits.wall_time;
        let attempt = async {
            let instance = self.pre.instantiate_async(&mut *store).await?;
            let result = call(&mut *store, instance).await?;
            let db = &mut store.data_mut().db;
            if let Some(violation) = db.violation() {
                return Err(wasmtime::Error::new(Violation(violation.to_string())));
            }
            let commit = commit_if(&result);
            if commit && db.aborted() {
                db.rollback().await.map_err(|e| Commit(e.to_string()))?;
                if strict == Strict::Yes {
                    return Err(wasmtime::Error::new(Commit(
                        "the plugin reported success after a statement failed; PostgreSQL had aborted its transaction, so nothing was committed".into(),
                    )));
                }
            } else if commit {
                db.commit().await.map_err(|e| Commit(e.to_string()))?;
            } else {
                db.rollback().await.map_err(|e| Commit(e.to_string()))?;
            }
            Ok::<_, wasmtime::Error>(result)
        };
        let ended = tokio::time::timeout(wall, attempt).await;
        // Whatever the plugin made of it, an invocation that found no connection was
        // short of room, and its rollback above left nothing behind.
        let db = &store.data().db;
        if let Some(reason) = db.unavailable().filter(|_| db.violation().is_none()) {
            let reason = reason.to_string();
            store.data_mut().db.abandon();
            return Err(Outcome::Aborted(Abort::Capacity(reason)));
        }
        match ended {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(error)) => {
                let _ = store.data_mut().db.rollback().await;
                let stderr = store.data().wasi.stderr.last_lines(STDERR_LINES_IN_REASON);
                Err(classify(
                    error,
                    &stderr,
                    self.runtime.inner.limits.reason_bytes,
                ))
            }
            Err(_) => {
                store.data_mut().db.abandon();
                Err(Outcome::Aborted(Abort::Deadline(format!(
                    "wall-clock deadline of {wall:?} passed (the invocation was abandoned and its database session terminated)"
                ))))
            }
        }
    }
}

/// Whether a claimed success over an aborted transaction is an error (deliveries) or
/// merely commits nothing (reads, loads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strict {
    Yes,
    No,
}

fn take_logs(store: &mut Store<HostState>) -> Vec<(Level, String)> {
    store.data().log_guest_output();
    let state = store.data_mut();
    let dropped = state.log.dropped();
    if dropped > 0 {
        tracing::warn!(plugin = %state.plugin, event_id = state.event_id.as_deref().unwrap_or("-"), dropped,
            "the plugin logged more than limits.log_messages ({}) messages; the rest were dropped", state.log.max_messages);
    }
    std::mem::take(&mut state.logs)
}

/// Checks a read's answer against the limits on what a plugin may hand back.
fn answer_fits(answer: &reader::Response, limits: &crate::config::Limits) -> Result<(), String> {
    if crate::http::answer::final_status(answer.status).is_none() {
        return Err(format!(
            "the read answered with status {}, which is not a final HTTP status (200 to 599)",
            answer.status
        ));
    }
    if answer.body.len() > limits.read_body_bytes {
        return Err(format!(
            "the read's answer body of {} bytes exceeds limits.read_body_bytes ({})",
            answer.body.len(),
            limits.read_body_bytes
        ));
    }
    if answer.headers.len() > limits.read_headers {
        return Err(format!(
            "the read's answer has {} headers; limits.read_headers is {}",
            answer.headers.len(),
            limits.read_headers
        ));
    }
    if let Some((name, _)) = answer
        .headers
        .iter()
        .find(|(n, v)| n.len() + v.len() > limits.read_header_bytes)
    {
        return Err(format!(
            "the read's answer header {:?} exceeds limits.read_header_bytes ({})",
            truncate(name.clone(), 64),
            limits.read_header_bytes
        ));
    }
    Ok(())
}

impl From<&Event> for types::Event {
    fn from(event: &Event) -> Self {
        types::Event {
            id: event.id.to_string(),
            source: event.source.clone(),
            type_: event.event_type.clone(),
            time: event.time.to_rfc3339(),
            subject: event.subject.clone(),
            aggregate_type: event.aggregate_type.clone(),
            schema_version: event.schema_version,
            data: event.data.to_string(),
            headers: event.headers.clone(),
        }
    }
}
