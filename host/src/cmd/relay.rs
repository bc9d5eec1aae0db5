//! `eventhost relay`: `serve` with only the outbox relay on (several may run at once
//! against one database).

use super::args::ConfigArgs;
use anyhow::Result;
use std::process::ExitCode;

pub async fn run(args: &ConfigArgs) -> Result<ExitCode> {
    let mut config = args.load()?;
    config.relay.enabled = true;
    config.auth_service.enabled = false;
    config.consumer.enabled = false;
    config.http.enabled = false;
    super::serve::until_signalled(config).await
}
