//! The commands: each a thin door onto the library, in its own file.

mod args;
mod backfill;
mod dlq;
mod migrate;
mod new;
mod outbox;
mod plugin;
mod relay;
mod serve;

use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum Command {
    /// Apply the host's database migrations.
    Migrate(args::DbArgs),
    /// Run plugins locally against a real PostgreSQL, without a broker.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Run the host: migrations, the plugins and their consumers, the outbox relay, the
    /// HTTP API and the reference auth service. SIGINT/SIGTERM stop it gracefully.
    Serve(args::ConfigArgs),
    /// Run only the outbox relay (several may run at once against one database).
    Relay(args::ConfigArgs),
    /// Inspect the outbox and replay dead events.
    #[command(subcommand)]
    Outbox(outbox::OutboxCommand),
    /// Inspect and replay a plugin's dead letters (events it failed to handle).
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Migrate(db) => migrate::run(&db).await,
        Command::Plugin(command) => plugin::run(command).await,
        Command::Serve(args) => serve::run(&args).await,
        Command::Relay(args) => relay::run(&args).await,
        Command::Outbox(command) => outbox::run(command).await,
        Command::Dlq(command) => dlq::run(command).await,
    }
}

/// Text from outside (a guest's output, a publisher's event id, a plugin's reason) as it
/// may be printed to a terminal: control characters escaped, so none is an escape sequence.
pub fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| match c.is_control() && c != '\t' {
            true => c.escape_unicode().collect::<Vec<_>>(),
            false => vec![c],
        })
        .collect()
}
