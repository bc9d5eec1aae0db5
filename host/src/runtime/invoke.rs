//! One invocation: a fresh store from the pre-instantiated component, the sandbox's
//! limits armed, the call, then commit or roll back the plugin's transaction.

use super::bindings::{log::Level, reader, types};
use super::limits::{InvocationLimiter, LimitExceeded};
use super::{Abort, Outcome, Plugin};
use crate::capabilities::db::DbSession;
use crate::capabilities::HostState;
use crate::event::Event;
use std::time::{Duration, Instant};
use tracing::Instrument;
use wasmtime::component::Instance;
use wasmtime::{Store, Trap, UpdateDeadline};

/// What happened to one event.
#[derive(Debug)]
pub struct Invocation {
    pub outcome: Outcome,
    pub elapsed: Duration,
    /// What the plugin logged (the first 100 messages).
    pub logs: Vec<(Level, String)>,
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
        let mut store = self.new_store(Some(event.id.to_string()));
        let result = self
            .run(
                &mut store,
                |r: &Option<Result<(), types::HandlerError>>| matches!(r, Some(Ok(()))),
                async |store, instance| {
                    if inbox {
                        let db = &mut store.data_mut().db;
                        let new = db
                            .record_delivery(event.id.0, &event.event_type)
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
        let outcome = match result {
            Ok(None) => Outcome::Duplicate,
            Ok(Some(Ok(()))) => Outcome::Ok,
            Ok(Some(Err(types::HandlerError::Retryable(r)))) => Outcome::Retryable(r),
            Ok(Some(Err(types::HandlerError::Permanent(r)))) => Outcome::Permanent(r),
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
            logs: std::mem::take(&mut store.data_mut().logs),
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
        let mut store = self.new_store(None);
        let result = self
            .run(
                &mut store,
                |r: &reader::Response| r.status < 500,
                async |store, instance| {
                    let reader = indices.load(&mut *store, &instance)?;
                    reader.call_read(&mut *store, &wit_request).await
                },
            )
            .instrument(span)
            .await;
        let response = result.map(|r| ReadResponse {
            status: r.status,
            headers: r.headers,
            body: r.body,
        });
        (response, std::mem::take(&mut store.data_mut().logs))
    }

    /// Asks the plugin for its subscriptions and migrations (at load; nothing is committed).
    pub(super) async fn describe(
        &self,
    ) -> Result<(Vec<String>, Vec<super::bindings::migrations::Migration>), Outcome> {
        let mut store = self.new_store(None);
        self.run(
            &mut store,
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
        .await
    }

    fn new_store(&self, event_id: Option<String>) -> Store<HostState> {
        let shared = &self.runtime.inner;
        let limits = &shared.limits;
        let db = DbSession::new(self.pool.clone(), shared.admin_pool.clone());
        let limiter = InvocationLimiter {
            memory: limits.memory,
            table_elements: limits.table_elements,
        };
        let state = HostState::new(
            self.name.clone(),
            event_id,
            db,
            shared.auth.clone(),
            limiter,
        );
        let mut store = Store::new(&shared.engine, state);
        store.limiter(|state| &mut state.limiter);
        // Every tick that finds the plugin's code running counts against its CPU budget and
        // yields to the scheduler, so a busy plugin never holds an executor thread for long
        // and the wall-clock timeout below can fire even in an endless loop.
        let budget = limits.cpu_ticks();
        store.epoch_deadline_callback(move |mut ctx| {
            let state = ctx.data_mut();
            state.cpu_ticks += 1;
            if state.cpu_ticks >= budget {
                return Err(LimitExceeded::CpuTime {
                    ticks: state.cpu_ticks,
                }
                .into());
            }
            Ok(UpdateDeadline::Yield(1))
        });
        store.set_epoch_deadline(1);
        store
    }

    /// Instantiates, calls, and commits when `commit_if` approves the result, all within
    /// the wall-clock deadline. Any other end rolls back.
    async fn run<R>(
        &self,
        store: &mut Store<HostState>,
        commit_if: impl FnOnce(&R) -> bool,
        call: impl AsyncFnOnce(&mut Store<HostState>, Instance) -> wasmtime::Result<R>,
    ) -> Result<R, Outcome> {
        let wall = self.runtime.inner.limits.wall_time;
        let attempt = async {
            let instance = self.pre.instantiate_async(&mut *store).await?;
            let result = call(&mut *store, instance).await?;
            let db = &mut store.data_mut().db;
            if commit_if(&result) {
                db.commit().await.map_err(|e| Commit(e.to_string()))?;
            } else {
                db.rollback().await.map_err(|e| Commit(e.to_string()))?;
            }
            Ok::<_, wasmtime::Error>(result)
        };
        match tokio::time::timeout(wall, attempt).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(error)) => {
                let _ = store.data_mut().db.rollback().await;
                Err(classify(error))
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

#[derive(Debug, thiserror::Error)]
#[error("commit failed: {0}")]
struct Commit(String);

fn classify(error: wasmtime::Error) -> Outcome {
    if let Some(limit) = error.downcast_ref::<LimitExceeded>() {
        return Outcome::Aborted(Abort::Limit(limit.to_string()));
    }
    if let Some(trap) = error.downcast_ref::<Trap>() {
        let hint = match trap {
            Trap::UnreachableCodeReached => " (a Rust plugin panicked or aborted)",
            Trap::StackOverflow => " (unbounded recursion?)",
            _ => "",
        };
        return Outcome::Aborted(Abort::Trap(format!("{trap}{hint}")));
    }
    Outcome::Aborted(Abort::Host(format!("{error:#}")))
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
