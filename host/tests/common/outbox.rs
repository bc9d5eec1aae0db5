//! Outbox test world: a scratch database with the host migrated, an exchange of the
//! test's own on the real RabbitMQ, an observer queue bound to it, and relays to run.

use eventhost::config::{BrokerConfig, RelayConfig};
use eventhost::fixtures::ScratchDatabase;
use eventhost::outbox::{self, NewEvent, Relay};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, Consumer};
use sqlx::PgPool;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A `user` event whose payload carries a counter `n`, to check order by.
pub fn user_event(user: &str, event_type: &str, n: u64) -> NewEvent {
    NewEvent::new(
        "tests",
        "user",
        user,
        event_type,
        serde_json::json!({ "userId": user, "n": n }),
    )
}

pub fn amqp_url() -> String {
    std::env::var("EVENTHOST_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub struct OutboxWorld {
    pub pool: PgPool,
    pub broker: BrokerConfig,
    scratch: ScratchDatabase,
}

/// A relay running in the background until `stop`.
pub struct RunningRelay {
    pub relay: Relay,
    token: CancellationToken,
    task: JoinHandle<()>,
}

impl RunningRelay {
    pub async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("relay stops within 30s")
            .expect("relay task");
    }
}

/// Relay settings for tests: quick polls and retries, no purge during the test.
pub fn fast_relay() -> RelayConfig {
    RelayConfig {
        poll_interval: Duration::from_millis(200),
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        confirm_timeout: Duration::from_secs(10),
        purge_interval: Duration::from_secs(3600),
        ..RelayConfig::default()
    }
}

impl OutboxWorld {
    pub async fn start() -> Self {
        let scratch = ScratchDatabase::create(&super::server_url(), "eventhost_outbox")
            .await
            .expect("create a scratch database (scripts/services.sh starts PostgreSQL)");
        let pool = eventhost::database::connect(&scratch.url, 8)
            .await
            .expect("connect");
        eventhost::database::migrate(&pool).await.expect("migrate");
        let broker = BrokerConfig {
            url: amqp_url(),
            exchange: format!("eventhost.test.{}", &scratch.name[17..]),
            connect_timeout: Duration::from_secs(2),
            ..BrokerConfig::default()
        };
        Self {
            pool,
            broker,
            scratch,
        }
    }

    pub fn database_url(&self) -> &str {
        &self.scratch.url
    }

    pub fn relay(&self, config: RelayConfig) -> RunningRelay {
        self.relay_via(self.broker.clone(), config)
    }

    /// A relay with its own broker settings (e.g. through a proxy).
    pub fn relay_via(&self, broker: BrokerConfig, config: RelayConfig) -> RunningRelay {
        let relay = Relay::new(self.pool.clone(), broker, config);
        let token = CancellationToken::new();
        let task = {
            let (relay, token) = (relay.clone(), token.clone());
            tokio::spawn(async move { relay.run(token).await })
        };
        RunningRelay { relay, token, task }
    }

    /// A queue of the test's own bound to every routing key on the exchange (declared
    /// here too, so nothing published before the relay's first declare is lost).
    pub async fn observe(&self) -> Observer {
        let connection = Connection::connect(&self.broker.url, ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ (scripts/services.sh starts it)");
        let channel = connection.create_channel().await.expect("channel");
        eventhost::broker::declare_exchange(&channel, &self.broker.exchange)
            .await
            .expect("declare exchange");
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare observer queue");
        channel
            .queue_bind(
                queue.name().as_str().into(),
                self.broker.exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind observer queue");
        let consumer = channel
            .basic_consume(
                queue.name().as_str().into(),
                "observer".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        Observer {
            connection,
            consumer,
        }
    }

    /// Writes `events` in one committed transaction through the producer API.
    pub async fn enqueue(&self, events: &[NewEvent]) {
        let mut tx = self.pool.begin().await.expect("begin");
        outbox::enqueue(&mut tx, events).await.expect("enqueue");
        tx.commit().await.expect("commit");
    }

    pub async fn count(&self, status: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM outbox_events WHERE status = $1")
            .bind(status)
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }

    /// Polls until `count(status) >= n`; panics with the counts after `timeout`.
    pub async fn wait_for(&self, status: &str, n: i64, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let count = self.count(status).await;
            if count >= n {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "waited {timeout:?} for {n} {status} rows, have {count}; status: {:?}",
                    outbox::status(&self.pool).await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(self) {
        // Best effort, and bounded: a busy broker must not hang a test that has passed.
        let cleanup = async {
            let connection =
                Connection::connect(&self.broker.url, ConnectionProperties::default()).await?;
            if let Ok(channel) = connection.create_channel().await {
                let _ = channel
                    .exchange_delete(
                        self.broker.exchange.as_str().into(),
                        ExchangeDeleteOptions::default(),
                    )
                    .await;
            }
            connection.close(200, "test done".into()).await
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), cleanup).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.pool.close()).await;
        self.scratch
            .drop_now()
            .await
            .expect("drop scratch database");
    }
}

pub struct Observer {
    connection: Connection,
    consumer: Consumer,
}

impl Observer {
    /// The next message, acked, or `None` after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Delivery> {
        use futures_lite::StreamExt;
        let delivery = tokio::time::timeout(timeout, self.consumer.next())
            .await
            .ok()??
            .expect("delivery");
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
        Some(delivery)
    }

    /// Exactly `n` messages (panics if fewer arrive within `timeout`).
    pub async fn take(&mut self, n: usize, timeout: Duration) -> Vec<Delivery> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(d) => out.push(d),
                None => panic!("received {} of {n} messages within {timeout:?}", out.len()),
            }
        }
        out
    }

    pub async fn close(self) {
        let _ = self.connection.close(200, "observer done".into()).await;
    }
}

/// A TCP proxy in front of the real broker that the test can cut and restore, to play a
/// broker outage without disturbing other tests sharing the server.
pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let upstream = upstream.to_string();
        let accept = {
            let (up, links) = (up.clone(), links.clone());
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let upstream = upstream.clone();
                    let link = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    links.lock().unwrap().push(link);
                }
            })
        };
        Self {
            port,
            up,
            links,
            accept,
        }
    }

    /// The broker "goes down": open connections are cut and new ones refused.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
