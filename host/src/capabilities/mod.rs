//! What a plugin can reach: exactly its imports. Each capability is one module that owns
//! its binding implementation and its per-invocation state; [`HostState`] composes them
//! into the data of one wasmtime store.

pub mod auth;
pub mod db;
pub mod log;

use crate::runtime::bindings::log::Level;
use crate::runtime::limits::{CpuClock, InvocationLimiter};
use crate::runtime::PluginName;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Per-invocation state: lives exactly as long as the store of one event or one read.
pub struct HostState {
    pub plugin: PluginName,
    pub event_id: Option<String>,
    pub db: db::DbSession,
    pub auth: auth::AuthLookup,
    pub limiter: InvocationLimiter,
    /// Time the plugin's code has run for (see `Limits::cpu_time`).
    pub cpu: CpuClock,
    pub log: log::LogBudget,
    /// What the plugin logged, kept for `plugin invoke` / fixtures (bounded).
    pub logs: Vec<(Level, String)>,
    /// WASI is linked because every `wasm32-wasip2` std guest imports it, but the context
    /// grants nothing: no preopened directories, no environment, no arguments, no
    /// sockets, stdin empty and stdout/stderr discarded.
    wasi: WasiCtx,
    table: ResourceTable,
}

impl HostState {
    pub fn new(
        plugin: PluginName,
        event_id: Option<String>,
        db: db::DbSession,
        auth: auth::AuthLookup,
        limiter: InvocationLimiter,
        log: log::LogBudget,
    ) -> Self {
        Self {
            plugin,
            event_id,
            db,
            auth,
            limiter,
            cpu: CpuClock::default(),
            log,
            logs: Vec::new(),
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// `types` declares records only; the generated trait has nothing to implement.
impl crate::runtime::bindings::types::Host for HostState {}
