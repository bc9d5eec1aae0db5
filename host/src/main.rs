//! The `eventhost` command: parses arguments and hands them to a command in `cmd/`.

mod cmd;

use clap::Parser;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "eventhost",
    version,
    about = "Transactional outbox relay and event consumer with WebAssembly plugins"
)]
struct Cli {
    #[command(subcommand)]
    command: cmd::Command,
}

fn main() -> ExitCode {
    // Logs to stderr; traces over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set. Dropped
    // last, so the final spans are flushed.
    let _telemetry = eventhost::telemetry::init();
    // Fault injection for the tests (`FAILPOINTS=...`), only in builds with the
    // `failpoints` feature: elsewhere the variable is not even read.
    #[cfg(feature = "failpoints")]
    let _faults = fail::FailScenario::setup();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(cmd::run(cli.command));
    // Work still running (a plugin compiling on a blocking thread) does not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(_telemetry);
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
