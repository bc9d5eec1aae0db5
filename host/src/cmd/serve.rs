//! `eventhost serve`: everything this host runs (see [`eventhost::app::App`]), until
//! SIGINT or SIGTERM.

use super::args::ConfigArgs;
use anyhow::Result;
use eventhost::app::App;
use eventhost::config::Config;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

pub async fn run(args: &ConfigArgs) -> Result<ExitCode> {
    until_signalled(args.load()?).await
}

/// Starts the application and runs it until a signal, then stops it within its shutdown
/// timeouts.
pub async fn until_signalled(config: Config) -> Result<ExitCode> {
    let shutdown = shutdown_signal();
    let app = App::start(config, shutdown).await?;
    app.stopped().await?;
    Ok(ExitCode::SUCCESS)
}

/// Cancelled on Ctrl-C or SIGTERM.
fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! { _ = ctrl_c => {}, _ = term => {} }
        tracing::info!("shutting down: finishing in-flight work");
        trigger.cancel();
    });
    token
}
