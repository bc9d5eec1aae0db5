//! `eventhost migrate`: the host's own migrations, and nothing else.

use super::args::DbArgs;
use anyhow::Context;
use eventhost::{database, fixtures};
use std::process::ExitCode;

pub async fn run(db: &DbArgs) -> anyhow::Result<ExitCode> {
    let url = &db.database_url;

    fixtures::ensure_database(url)
        .await
        .context("creating the database")?;
    let pool = database::connect(url, 2).await?;
    database::migrate(&pool).await?;
    println!("migrations applied");
    Ok(ExitCode::SUCCESS)
}
