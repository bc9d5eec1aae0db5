//! `eventhost plugin invoke` and `eventhost plugin test`: a plugin run locally against a
//! real PostgreSQL, without a broker, printed for humans.

use anyhow::Context;
use eventhost::config::{AuthBackend, Limits};
use eventhost::fixtures::{self, ScratchDatabase};
use eventhost::runtime::Runtime;
use eventhost::{Event, Outcome};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::args::{DbArgs, SandboxArgs};

#[derive(clap::Subcommand)]
pub enum PluginCommand {
    /// Make a new plugin, in Rust, Python or JavaScript, that builds and whose fixtures
    /// pass as it is; its README.md has the build, test and ship commands.
    New {
        /// The plugin's name: lowercase letters, digits and `-`.
        name: String,
        #[arg(long, value_enum)]
        lang: super::new::Lang,
        /// Where to make it (default: ./NAME); must not exist or be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The eventhost-plugin kit for Rust plugins (default: the kit/ of the checkout
        /// this binary was built from).
        #[arg(long)]
        kit: Option<PathBuf>,
    },
    /// Run a plugin's handler on event files (structured CloudEvents JSON) and print each
    /// outcome. Exits 0 when every event was handled ok, 1 otherwise.
    Invoke {
        /// The plugin component (`.wasm`).
        plugin: PathBuf,
        /// One or more event files.
        #[arg(required = true)]
        events: Vec<PathBuf>,
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// Run a directory of fixtures (event or read + expected outcome + SQL checks) in a
    /// throwaway database. Exits 0 when all pass, 1 on any failure.
    Test {
        plugin: PathBuf,
        fixtures: PathBuf,
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        sandbox: SandboxArgs,
        /// Keep the throwaway database afterwards, to inspect it.
        #[arg(long)]
        keep_database: bool,
    },
    /// Feed a plugin the events it missed: published outbox events it subscribes to
    /// (kept for relay.retention) go to its queue; its inbox drops what it already had.
    Backfill {
        plugin: String,
        #[command(flatten)]
        config: super::args::ConfigArgs,
        /// Events published at or after this time (RFC 3339, e.g. 2026-12-01T00:00:00Z).
        #[arg(long)]
        since: Option<String>,
        /// Every published event still kept.
        #[arg(long)]
        all: bool,
    },
}

pub async fn run(command: PluginCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::New {
            name,
            lang,
            dir,
            kit,
        } => super::new::run(&name, lang, dir, kit).map(|()| ExitCode::SUCCESS),
        PluginCommand::Invoke {
            plugin,
            events,
            db,
            sandbox,
        } => {
            let (limits, auth) = sandbox.sandbox()?;
            invoke(&db.database_url, limits, auth, &plugin, &events).await
        }
        PluginCommand::Test {
            plugin,
            fixtures,
            db,
            sandbox,
            keep_database,
        } => {
            let (limits, auth) = sandbox.sandbox()?;
            test(
                &db.database_url,
                limits,
                auth,
                &plugin,
                &fixtures,
                keep_database,
            )
            .await
        }
        PluginCommand::Backfill {
            plugin,
            config,
            since,
            all,
        } => super::backfill::run(&config, &plugin, since.as_deref(), all).await,
    }
}

async fn invoke(
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
        let output = &invocation.output;
        for (stream, text) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
            for line in text.iter().flat_map(|t| t.lines()) {
                println!("    [{stream}] {}", super::printable(line));
            }
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn test(
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
        println!(
            "kept database {} ({})",
            scratch.name,
            eventhost::config::redact::url(&scratch.url)
        );
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
