//! The `eventhost` command: parses arguments and calls the library.

mod dlq_cmd;
mod outbox_cmd;
mod plugin_cmd;
mod serve_cmd;

use clap::{Args, Parser, Subcommand};
use eventhost::config::{AuthBackend, Limits};
use std::path::PathBuf;
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
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the host's database migrations.
    Migrate(DbArgs),
    /// Run plugins locally against a real PostgreSQL, without a broker.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Run the host: migrations, the plugins and their consumers, the outbox relay, the
    /// HTTP API and the reference auth service. SIGINT/SIGTERM stop it gracefully.
    Serve(serve_cmd::ConfigArgs),
    /// Run only the outbox relay (several may run at once against one database).
    Relay(serve_cmd::ConfigArgs),
    /// Inspect the outbox and replay dead events.
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// Inspect and replay a plugin's dead letters (events it failed to handle).
    #[command(subcommand)]
    Dlq(DlqCommand),
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Event id, type, attempts and last error of each dead letter (they stay queued).
    List {
        plugin: String,
        #[command(flatten)]
        config: serve_cmd::ConfigArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back through the plugin's queue, attempts reset.
    Replay {
        plugin: String,
        #[command(flatten)]
        config: serve_cmd::ConfigArgs,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
        /// Dead letters with these event ids.
        #[arg(long = "id", value_name = "EVENT_ID")]
        ids: Vec<String>,
    },
}

#[derive(Subcommand)]
enum OutboxCommand {
    /// Counts of pending, published and dead events and the oldest pending age.
    /// Exits 0 when healthy, 1 when there are dead events or (with --max-pending-age)
    /// the backlog is older than allowed, 2 on error.
    Status {
        #[command(flatten)]
        db: DbArgs,
        /// Exit 1 when the oldest pending event is older than this (e.g. 30s).
        #[arg(long, value_parser = humantime::parse_duration)]
        max_pending_age: Option<Duration>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Put dead events back to pending (attempts reset) for the relay to publish.
    Replay {
        #[command(flatten)]
        db: DbArgs,
        /// Every dead event.
        #[arg(long)]
        all: bool,
        /// Dead events with these ids.
        #[arg(long = "id", value_name = "EVENT_ID")]
        ids: Vec<String>,
        /// Dead events of this type (e.g. user.created).
        #[arg(long = "type", value_name = "EVENT_TYPE")]
        event_type: Option<String>,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
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
}

#[derive(Args)]
struct DbArgs {
    /// PostgreSQL URL of the host's database (created if missing).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/eventhost"
    )]
    database_url: String,
}

#[derive(Args)]
struct SandboxArgs {
    /// Base URL of an external auth service for the `auth` import; default: the `users` table.
    #[arg(long, env = "EVENTHOST_AUTH_URL")]
    auth_url: Option<String>,
    /// CPU time per invocation (e.g. 500ms).
    #[arg(long, value_parser = humantime::parse_duration)]
    cpu_time: Option<Duration>,
    /// Wall-clock deadline per invocation, host calls included (e.g. 10s).
    #[arg(long, value_parser = humantime::parse_duration)]
    wall_time: Option<Duration>,
    /// Linear memory limit per plugin instance, in MiB.
    #[arg(long)]
    memory_mib: Option<usize>,
    /// PostgreSQL statement_timeout for plugin sessions (e.g. 5s).
    #[arg(long, value_parser = humantime::parse_duration)]
    statement_timeout: Option<Duration>,
}

impl SandboxArgs {
    fn limits(&self) -> Limits {
        let mut limits = Limits::default();
        if let Some(v) = self.cpu_time {
            limits.cpu_time = v;
        }
        if let Some(v) = self.wall_time {
            limits.wall_time = v;
        }
        if let Some(v) = self.memory_mib {
            limits.memory = v << 20;
        }
        if let Some(v) = self.statement_timeout {
            limits.statement_timeout = v;
        }
        limits
    }

    fn auth(&self) -> AuthBackend {
        match &self.auth_url {
            Some(url) => AuthBackend::Http {
                url: url.clone(),
                timeout: Duration::from_secs(2),
            },
            None => AuthBackend::Postgres,
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                "warn,eventhost=info,plugin=info,sqlx::postgres::notice=off".into()
            }),
        )
        .with_writer(std::io::stderr)
        .init();
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
    let result = runtime.block_on(async {
        match cli.command {
            Command::Migrate(db) => plugin_cmd::migrate(&db.database_url).await,
            Command::Serve(args) => serve_cmd::serve(&args).await,
            Command::Relay(args) => serve_cmd::relay(&args).await,
            Command::Outbox(OutboxCommand::Status {
                db,
                max_pending_age,
                json,
            }) => outbox_cmd::status(&db.database_url, max_pending_age, json).await,
            Command::Outbox(OutboxCommand::Replay {
                db,
                all,
                ids,
                event_type,
            }) => outbox_cmd::replay(&db.database_url, all, &ids, event_type.as_deref()).await,
            Command::Dlq(DlqCommand::List {
                plugin,
                config,
                json,
            }) => dlq_cmd::list(&config, &plugin, json).await,
            Command::Dlq(DlqCommand::Replay {
                plugin,
                config,
                all,
                ids,
            }) => dlq_cmd::replay(&config, &plugin, all, &ids).await,
            Command::Plugin(PluginCommand::Invoke {
                plugin,
                events,
                db,
                sandbox,
            }) => {
                plugin_cmd::invoke(
                    &db.database_url,
                    sandbox.limits(),
                    sandbox.auth(),
                    &plugin,
                    &events,
                )
                .await
            }
            Command::Plugin(PluginCommand::Test {
                plugin,
                fixtures,
                db,
                sandbox,
                keep_database,
            }) => {
                let (limits, auth) = (sandbox.limits(), sandbox.auth());
                plugin_cmd::test(
                    &db.database_url,
                    limits,
                    auth,
                    &plugin,
                    &fixtures,
                    keep_database,
                )
                .await
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
