//! One wasmtime engine for all plugins: components, pooling allocator, epoch interruption.

use crate::capabilities::HostState;
use crate::config::Limits;
use crate::runtime::bindings::Plugin as PluginWorld;
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Building blocks of a component built by `wasm32-wasip2` Rust: a handful of core
/// instances (the program plus shims), one memory, a few tables.
const CORE_INSTANCES_PER_COMPONENT: u32 = 8;
const TABLES_PER_COMPONENT: u32 = 4;
/// Released instance slots reset together (see `engine`).
const DECOMMIT_BATCH: usize = 32;

pub fn engine(limits: &Limits) -> wasmtime::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    let n = limits.max_instances;
    pool.total_component_instances(n)
        .total_core_instances(n * CORE_INSTANCES_PER_COMPONENT)
        .total_memories(n)
        .total_tables(n * TABLES_PER_COMPONENT)
        .total_stacks(n)
        .max_memories_per_component(1)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memory_size(limits.memory)
        .table_elements(limits.table_elements)
        // Every event gets a fresh instance, so slots are released at the event rate.
        // Resetting them in batches makes one madvise (and one TLB shootdown across
        // cores) per batch instead of one per event.
        .decommit_batch_size(DECOMMIT_BATCH);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .parallel_compilation(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// Only the imports of the WIT world, plus WASI with nothing granted (see `HostState`).
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    PluginWorld::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)?;
    Ok(linker)
}

/// Advances the engine's epoch every `tick`; stops when the engine is gone.
pub fn start_epoch_ticker(engine: &Engine, tick: Duration) -> std::io::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("eventhost-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(tick);
            match weak.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => return,
            }
        })
        .map(drop)
}
