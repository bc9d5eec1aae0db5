//! peer-relay: a peer outbox relay, PostgreSQL -> RabbitMQ, on ruststream-sqlx's inbox. The
//! outbox table is a task queue in the row lock form: a claim takes a batch of rows with
//! `FOR UPDATE SKIP LOCKED` in a transaction held while the handler publishes them, and each
//! acknowledged row is deleted in that transaction (no processed mark).
//!
//! ```text
//! peer-relay --database-url URL --amqp-url URL --exchange NAME --table NAME \
//!            --batch 1000 --workers 4 --expect N [--setup-only]
//! ```

use std::error::Error;
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use clap::Parser;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{types::ShortString, BasicProperties, Channel, ConnectionProperties};
use ruststream::runtime::SoloCarried;
use ruststream_sqlx::dialect::{self, ClaimShape, Column, Dialect, Opening, RowLock};
use ruststream_sqlx::dialect::{Statement, StatementError, TableName, TableSpec};
use ruststream_sqlx::prelude::*;
use ruststream_sqlx::{InboxSpec, InboxTable};
use sqlx::{postgres::PgPoolOptions, AssertSqlSafe, Connection as _, PgConnection};

const DDL: &str = "CREATE TABLE IF NOT EXISTS {table} (
    id          BIGSERIAL PRIMARY KEY,
    routing_key TEXT  NOT NULL,
    message_id  TEXT  NOT NULL,
    payload     BYTEA NOT NULL  -- the exact message body
)";
const AFTER_HELP: &str = "The table, created when missing ({table} = --table, quoted):";
const CONTENT_TYPE: &str = "application/cloudevents+json";
// ruststream-sqlx takes a table's name as a `const`; `Renamed` swaps in the one of `--table`.
const SPEC_TABLE: &str = "peer_relay_outbox";

/// One outbox row. The table names no payload column (row mode), so the handler gets the whole
/// row: routing key and message id beside the body.
#[derive(Clone, sqlx::FromRow)]
struct Event {
    id: i64,
    routing_key: String,
    message_id: String,
    payload: Vec<u8>,
}

impl InboxTable for Event {
    type Id = i64;
    // No lease, no advisory lock: the row lock form. No processed_at: an ack deletes the row.
    type Table = InboxSpec;
    const TABLE: InboxSpec = InboxSpec::new(SPEC_TABLE, Column::new("id").generated()).data(&[
        Column::new("routing_key"),
        Column::new("message_id"),
        Column::new("payload"),
    ]);

    fn id(&self) -> &i64 {
        &self.id
    }
}

impl Input for Event {
    type Axis = SoloCarried<Self>;
}

/// The built-in Postgres dialect with `SPEC_TABLE` swapped for the runtime table: every
/// statement the inbox runs comes from its dialect, built once when the subscription starts.
#[derive(Debug)]
struct Renamed {
    from: String,
    to: String,
}

trait Rename {
    fn rename(self, by: &Renamed) -> Self;
}
impl Rename for Statement {
    fn rename(self, by: &Renamed) -> Self {
        Statement::new(self.sql().replace(&by.from, &by.to), self.params().to_vec())
    }
}
impl<T: Rename> Rename for Option<T> {
    fn rename(self, by: &Renamed) -> Self {
        self.map(|s| s.rename(by))
    }
}
impl<T: Rename> Rename for Vec<T> {
    fn rename(self, by: &Renamed) -> Self {
        self.into_iter().map(|s| s.rename(by)).collect()
    }
}

macro_rules! renamed {
    ($($f:ident($($a:ident: $t:ty),*) -> $r:ty;)*) => {$(
        fn $f(&self, $($a: $t),*) -> Result<$r, StatementError> {
            dialect::Postgres.$f($($a),*).map(|s| s.rename(self))
        }
    )*};
}

impl Dialect for Renamed {
    fn name(&self) -> &'static str {
        dialect::Postgres.name()
    }
    fn quote_into(&self, ident: &str, out: &mut String) {
        dialect::Postgres.quote_into(ident, out);
    }
    fn placeholder_into(&self, index: NonZeroUsize, out: &mut String) {
        dialect::Postgres.placeholder_into(index, out);
    }
    fn begin(&self, opening: Opening) -> Result<Option<&'static str>, StatementError> {
        dialect::Postgres.begin(opening)
    }
    renamed! {
        fetch(spec: &TableSpec<'_>) -> Statement;
        ack(spec: &TableSpec<'_>) -> Statement;
        retry(spec: &TableSpec<'_>) -> Option<Statement>;
        retry_after(spec: &TableSpec<'_>) -> Statement;
        discard(spec: &TableSpec<'_>) -> Statement;
        dead_letter_group(spec: &TableSpec<'_>) -> Statement;
        dead_letter_table(spec: &TableSpec<'_>, target: TableName<'_>) -> Vec<Statement>;
        insert(spec: &TableSpec<'_>) -> Statement;
        fifo_guard(spec: &TableSpec<'_>) -> Option<Statement>;
        count_claimable(spec: &TableSpec<'_>) -> Option<Statement>;
    }
}

impl RowLock for Renamed {
    renamed! { lock_claim(spec: &TableSpec<'_>, shape: ClaimShape) -> Statement; }
}

fn quoted(ident: &str) -> String {
    let mut out = String::new();
    dialect::Postgres.quote_into(ident, &mut out);
    out
}

/// What every batch shares: the AMQP connection, the idle confirm channels and the tallies.
struct Relay {
    amqp: lapin::Connection,
    exchange: ShortString,
    // A batch takes a channel and gives it back: one channel per batch in work.
    idle: Mutex<Vec<Channel>>,
    acked: AtomicU64,
    failed: OnceLock<String>,
}

async fn confirm_channel(amqp: &lapin::Connection) -> lapin::Result<Channel> {
    let channel = amqp.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

impl Relay {
    /// Sends every row without waiting, then awaits all confirms: true when all are acks.
    async fn publish(&self, channel: &Channel, rows: &[Event]) -> lapin::Result<bool> {
        let mut confirms = Vec::with_capacity(rows.len());
        for row in rows {
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type(CONTENT_TYPE.into())
                .with_message_id(row.message_id.as_str().into());
            let options = BasicPublishOptions::default();
            let (exchange, key) = (self.exchange.clone(), row.routing_key.as_str().into());
            confirms.push(
                channel
                    .basic_publish(exchange, key, options, &row.payload, properties)
                    .await?,
            );
        }
        let mut all_acked = true;
        for confirm in confirms {
            all_acked &= confirm.await?.is_ack();
        }
        Ok(all_acked)
    }

    async fn relay(&self, rows: &[Event]) -> lapin::Result<bool> {
        let idle = self.idle.lock().expect("idle channels").pop();
        let channel = match idle {
            Some(channel) => channel,
            None => confirm_channel(&self.amqp).await?,
        };
        // A failed channel is dropped; one that saw a nack is still good.
        let acked = self.publish(&channel, rows).await?;
        self.idle.lock().expect("idle channels").push(channel);
        Ok(acked)
    }
}

struct Handler(Arc<Relay>);

impl Handle<[Event]> for Handler {
    async fn handle(
        &self,
        rows: &[Event],
        _: &(),
        _: &mut Context<'_>,
    ) -> Result<(), Vec<HandlerOutcome>> {
        match self.0.relay(rows).await {
            Ok(true) => {
                self.0.acked.fetch_add(rows.len() as u64, Ordering::Relaxed);
                return Ok(());
            }
            Ok(false) => {} // A nack: the rollback returns the rows at once.
            // A lost channel or connection ends a benchmark run: `run` stops on it.
            Err(error) => drop(self.0.failed.set(format!("publishing failed: {error}"))),
        }
        Err(rows.iter().map(|_| HandlerOutcome::retry()).collect())
    }
}

/// A peer outbox relay, PostgreSQL -> RabbitMQ, on ruststream-sqlx's inbox: each claimed batch
/// is published with confirms, and its rows are deleted once every confirm is an ack.
#[derive(Parser)]
#[command(name = "peer-relay", after_help = format!("{AFTER_HELP}\n{DDL}"))]
struct Args {
    #[arg(long)]
    database_url: String,
    #[arg(long, required_unless_present = "setup_only")]
    amqp_url: Option<String>,
    /// Exchange to publish to, declared by the caller.
    #[arg(long, required_unless_present = "setup_only")]
    exchange: Option<String>,
    /// Outbox table, created when missing.
    #[arg(long)]
    table: String,
    /// Rows per claim.
    #[arg(long, default_value = "1000")]
    batch: NonZeroUsize,
    /// Claims in work at once, each holding a connection and a confirm channel.
    #[arg(long, default_value = "4")]
    workers: NonZeroUsize,
    /// Stop once this many rows are settled and print the rate.
    #[arg(long, required_unless_present = "setup_only")]
    expect: Option<u64>,
    /// Only create the table.
    #[arg(long)]
    setup_only: bool,
    /// Tests only: declare EXCHANGE (topic, auto-deleted with its last binding) and this durable
    /// queue, bound with `#`.
    #[arg(long, hide = true)]
    declare: Option<String>,
}

async fn run(args: Args) -> Result<(), Box<dyn Error + Send + Sync>> {
    let table = quoted(&args.table);
    let mut db = PgConnection::connect(&args.database_url).await?;
    let ddl = DDL.replace("{table}", &table);
    sqlx::raw_sql(AssertSqlSafe(ddl)).execute(&mut db).await?;
    let (Some(amqp_url), Some(exchange), Some(expect)) =
        (args.amqp_url, args.exchange, args.expect)
    else {
        return Ok(()); // --setup-only
    };
    let count_sql = format!("SELECT count(*) FROM {table}");
    let count = || sqlx::query_scalar::<_, i64>(AssertSqlSafe(count_sql.clone()));
    let before = count().fetch_one(&mut db).await? as u64;
    if before < expect {
        return Err(format!(
            "{} holds {before} rows, fewer than --expect {expect}",
            args.table
        )
        .into());
    }

    let amqp = lapin::Connection::connect(&amqp_url, ConnectionProperties::default()).await?;
    if let Some(queue) = &args.declare {
        declare(&amqp, &exchange, queue).await?;
    }
    // Each worker holds a connection for its claim's transaction; the inbox wants one more.
    let connections = args.workers.get() as u32 + 1;
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .min_connections(connections)
        .connect(&args.database_url)
        .await?;
    // One confirm channel per worker, opened before the clock starts.
    let mut idle = Vec::new();
    for _ in 0..args.workers.get() {
        idle.push(confirm_channel(&amqp).await?);
    }
    let relay = Arc::new(Relay {
        amqp,
        exchange: exchange.into(),
        idle: Mutex::new(idle),
        acked: AtomicU64::new(0),
        failed: OnceLock::new(),
    });
    let dialect = Renamed {
        from: quoted(SPEC_TABLE),
        to: table,
    };
    let broker = SqlxBroker::with_dialect(pool, dialect);
    let handler = Handler(Arc::clone(&relay));
    let (batch, workers) = (args.batch, args.workers);
    let app = RustStream::new(AppInfo::new("peer-relay", "0.1.0")).with_broker(broker, move |b| {
        // After a claim that came back short (the table drained) the next waits this long.
        let queue = InboxQueue::<Event>::new("outbox").poll_interval(Duration::from_millis(20));
        let relay = subscriber("outbox", handler).map_source(move |_| queue);
        b.include(relay.batch(batch).workers(workers).build());
    });

    let started = Instant::now();
    let running = app.start().await?;
    // The handler's tally costs nothing to read; `count(*)` then waits for the last commits.
    loop {
        if let Some(error) = relay.failed.get() {
            let _ = running.shutdown().await;
            return Err(error.clone().into());
        }
        if relay.acked.load(Ordering::Relaxed) >= expect {
            let left = count().fetch_one(&mut db).await? as u64;
            if before - left >= expect {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    running.shutdown().await?;
    let rate = expect as f64 / elapsed;
    println!("peer-relay: {expect} rows in {elapsed:.3} s, {rate:.0} events/s");
    Ok(())
}

async fn declare(amqp: &lapin::Connection, exchange: &str, queue: &str) -> lapin::Result<()> {
    use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
    let (channel, none) = (
        amqp.create_channel().await?,
        lapin::types::FieldTable::default,
    );
    let (topic, bind) = (lapin::ExchangeKind::Topic, QueueBindOptions::default());
    let scratch = ExchangeDeclareOptions {
        durable: true,
        auto_delete: true,
        ..Default::default()
    };
    channel
        .exchange_declare(exchange.into(), topic, scratch, none())
        .await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel.queue_declare(queue.into(), durable, none()).await?;
    channel
        .queue_bind(queue.into(), exchange.into(), "#".into(), bind, none())
        .await?;
    channel.close(200, "declared".into()).await
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("peer-relay: {error}");
            ExitCode::FAILURE
        }
    }
}
