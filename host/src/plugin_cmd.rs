//! `eventhost migrate` and `eventhost plugin ...`: thin wrappers that print for humans.

use anyhow::Context;
use eventhost::config::{AuthBackend, Limits};
use eventhost::database;
use eventhost::fixtures::{self, ScratchDatabase};
use eventhost::runtime::Runtime;
use eventhost::{Event, Outcome};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub async fn migrate(url: &str) -> anyhow::Result<ExitCode> {
    fixtures::ensure_database(url)
        .await
        .context("creating the database")?;
    let pool = database::connect(url, 2).await?;
    database::migrate(&pool).await?;
    println!("migrations applied");
    Ok(ExitCode::SUCCESS)
}

pub async fn invoke(
    url: &str,
    limits: Limits,
    auth: AuthBackend,
    plugin: &Path,
    events: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    fixtures::ensure_database(url)
        .await
        .context("creating the database")?;
    let (_pool, runtime) = Runtime::open(url, limits, auth).await?;
    let plugin = runtime
        .load_file(plugin)
        .await
        .with_context(|| format!("loading {}", plugin.display()))?;
    let mut all_ok = true;
    for path in events {
        let bytes = tokio::fs::read(path)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        let event = match Event::from_json_bytes(&bytes) {
            Ok(event) => event,
            Err(e) => {
                println!("{}: not an event: {e}", path.display());
                all_ok = false;
                continue;
            }
        };
        let invocation = plugin.handle(&event).await;
        all_ok &= invocation.outcome == Outcome::Ok;
        println!(
            "{}: {} {} -> {} ({:.1} ms)",
            path.display(),
            event.event_type,
            event.id,
            invocation.outcome,
            invocation.elapsed.as_secs_f64() * 1e3
        );
        for (level, message) in &invocation.logs {
            println!("    [{level:?}] {message}");
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub async fn test(
    url: &str,
    limits: Limits,
    auth: AuthBackend,
    plugin: &Path,
    dir: &Path,
    keep: bool,
) -> anyhow::Result<ExitCode> {
    let scratch = ScratchDatabase::create(url, "eventhost_fixtures")
        .await
        .context("creating a scratch database")?;
    let result = run_fixtures(&scratch, limits, auth, plugin, dir).await;
    if keep {
        println!("kept database {} ({})", scratch.name, scratch.url);
    } else if let Err(e) = scratch.drop_now().await {
        eprintln!("warning: could not drop the scratch database: {e}");
    }
    result
}

async fn run_fixtures(
    scratch: &ScratchDatabase,
    limits: Limits,
    auth: AuthBackend,
    plugin: &Path,
    dir: &Path,
) -> anyhow::Result<ExitCode> {
    let (pool, runtime) = Runtime::open(&scratch.url, limits, auth).await?;
    let plugin = runtime
        .load_file(plugin)
        .await
        .with_context(|| format!("loading {}", plugin.display()))?;
    let reports = fixtures::run_dir(&plugin, &pool, dir).await?;
    let failed = reports.iter().filter(|r| !r.passed()).count();
    for report in &reports {
        let mark = if report.passed() { "ok  " } else { "FAIL" };
        let what = if report.description.is_empty() {
            String::new()
        } else {
            format!(" - {}", report.description)
        };
        println!(
            "{mark} {}{what} [{}] ({:.1} ms)",
            report.file,
            report.observed,
            report.elapsed.as_secs_f64() * 1e3
        );
        for failure in &report.failures {
            println!("     {failure}");
        }
    }
    println!(
        "{} fixtures, {} passed, {failed} failed ({})",
        reports.len(),
        reports.len() - failed,
        plugin.name()
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
