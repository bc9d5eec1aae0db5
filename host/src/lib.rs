//! eventhost: a transactional-outbox relay and RabbitMQ consumer that hands every event
//! to sandboxed WebAssembly component plugins.
//!
//! The modules follow the data: an [`event::Event`] arrives, [`runtime`] runs the
//! plugin's component on it with the [`capabilities`] it imports (`db`, `auth`, `log`),
//! and [`fixtures`] drives the same path from JSON files for plugin authors' tests.

pub mod app;
pub mod auth_service;
pub mod broker;
pub mod capabilities;
pub mod config;
pub mod consumer;
pub mod database;
pub mod event;
pub mod fixtures;
pub mod http;
pub mod metrics;
pub mod outbox;
pub mod runtime;
pub mod supervisor;
pub mod telemetry;

pub use event::{Event, EventId};
pub use runtime::{Outcome, PluginName, Runtime};
