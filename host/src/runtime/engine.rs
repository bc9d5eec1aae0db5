//! One wasmtime engine for all plugins: components, pooling allocator, epoch interruption.

use crate::capabilities::HostState;
use crate::config::Limits;
use crate::runtime::bindings::Plugin as PluginWorld;
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Released instance slots reset together (see `engine`).
const DECOMMIT_BATCH: usize = 32;

/// Bytes of each linear memory and table kept resident in a released slot: a Rust
/// plugin's whole memory (about 1.1 MiB), the start of a Python or JavaScript one's.
const KEEP_RESIDENT: usize = 2 << 20;

pub fn engine(limits: &Limits) -> wasmtime::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    let n = limits.max_instances;
    // What one component may be made of; a Rust component has a handful of core
    // instances, a Python or JavaScript one a dozen or more (see `Limits`). The products
    // are bounded by `Limits::validate`.
    pool.total_component_instances(n)
        .total_core_instances(n * limits.component_core_instances)
        .total_memories(n * limits.component_memories)
        .total_tables(n * limits.component_tables)
        .total_stacks(n)
        .max_memories_per_component(limits.component_memories)
        .max_tables_per_component(limits.component_tables)
        // A core module of the component may hold them all (multi-memory, several tables).
        .max_memories_per_module(limits.component_memories)
        .max_tables_per_module(limits.component_tables)
        .max_core_instances_per_component(limits.component_core_instances)
        .max_memory_size(limits.memory)
        .table_elements(limits.table_elements)
        // Every event gets a fresh instance, so slots are released at the event rate.
        // Resetting them in batches makes one madvise (and one TLB shootdown across
        // cores) per batch instead of one per event.
        .decommit_batch_size(DECOMMIT_BATCH)
        // A released slot keeps its pages: the pages the last instance wrote are found
        // with the kernel's PAGEMAP_SCAN (Linux 6.7+; elsewhere the whole kept size is
        // cleared) and reset from the module's image or to zero, instead of being handed
        // back to the kernel and faulted in again by the next event's instance.
        .pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .parallel_compilation(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// Only the imports of the WIT world, plus WASI (with `wasi:http`) granting nothing (see
/// `capabilities::wasi`).
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
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
