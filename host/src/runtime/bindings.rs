//! Host-side bindings generated from `wit/`. Imports are async so `db` and `auth` can
//! await I/O; exports are called with `*_async` so epoch ticks can yield.

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../wit",
    imports: { default: async },
    exports: { default: async },
});

pub use eventhost::plugin::{auth, db, log, types};
pub use exports::eventhost::plugin::{handler, migrations, reader};

/// The WIT package version this host implements. Components built against another
/// version are refused at load with a message that names both.
pub const WIT_PACKAGE: &str = "eventhost:plugin";
pub const WIT_VERSION: &str = "0.1.0";
