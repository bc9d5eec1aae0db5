//! What a plugin can reach: exactly its imports. Each capability is one module that owns
//! its binding implementation and its per-invocation state; [`HostState`] composes them
//! into the data of one wasmtime store.

pub mod auth;
pub mod db;
pub mod log;
pub mod output;
pub mod wasi;

use crate::runtime::bindings::log::Level;
use crate::runtime::limits::{CpuClock, InvocationLimiter};
use crate::runtime::PluginName;

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
    /// WASI with nothing granted, and the guest's captured stdout and stderr.
    pub wasi: wasi::Wasi,
}

impl HostState {
    pub fn new(
        plugin: PluginName,
        event_id: Option<String>,
        db: db::DbSession,
        auth: auth::AuthLookup,
        limiter: InvocationLimiter,
        log: log::LogBudget,
        wasi: wasi::Wasi,
    ) -> Self {
        Self {
            event_id,
            db,
            auth,
            limiter,
            cpu: CpuClock::default(),
            log,
            logs: Vec::new(),
            wasi,
            plugin,
        }
    }
}

/// `types` declares records only; the generated trait has nothing to implement.
impl crate::runtime::bindings::types::Host for HostState {}
