//! The author kit for eventhost plugins in Rust.
//!
//! It holds the bindings of the `eventhost:plugin` contract (world `plugin`), so a plugin
//! crate needs no `wit/` of its own, and the helpers every plugin would otherwise write:
//!
//! * [`EventExt`]: the event's payload as your own `serde` type, or as a JSON object;
//! * [`Value`] from Rust values (`"text".into()`, `Value::uuid(id)`, `None::<i32>.into()`),
//!   and cells and [`Rows`] back to JSON;
//! * `?` on a [`DbError`] inside a handler: data, constraint, syntax and limit errors
//!   (SQLSTATE classes 22, 23, 42, 54) become [`HandlerError::Permanent`], everything else
//!   [`HandlerError::Retryable`];
//! * [`Response::json`] for read hooks.
//!
//! ```ignore
//! use eventhost_plugin::{export_plugin, Event, EventExt, Handler, HandlerError};
//! struct MyPlugin;
//! impl Handler for MyPlugin {
//!     fn subscriptions() -> Vec<String> { vec!["user.created".into()] }
//!     fn handle(event: Event) -> Result<(), HandlerError> {
//!         let user: NewUser = event.payload()?;
//!         eventhost_plugin::db::execute("INSERT INTO seen (id) VALUES ($1) ON CONFLICT DO NOTHING",
//!             &[eventhost_plugin::Value::uuid(&user.user_id)])?;
//!         Ok(())
//!     }
//! }
//! // ... impl Migrations and Reader ...
//! export_plugin!(MyPlugin);
//! ```

mod errors;
mod event;
mod reply;
mod values;

wit_bindgen::generate!({
    world: "plugin",
    path: "../wit",
    pub_export_macro: true,
    export_macro_name: "export_plugin",
    default_bindings_module: "eventhost_plugin",
});

pub use event::EventExt;
pub use eventhost::plugin::db::{DbError, Rows, Value};
pub use eventhost::plugin::{auth, db, log};
pub use exports::eventhost::plugin::handler::{Event, Guest as Handler, HandlerError};
pub use exports::eventhost::plugin::migrations::{Guest as Migrations, Migration};
pub use exports::eventhost::plugin::reader::{Guest as Reader, Request, Response};
