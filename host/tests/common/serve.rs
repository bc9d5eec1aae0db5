//! End-to-end world: the real `eventhost serve` binary as a child process, against a scratch
//! database, an exchange and queue prefix of the test's own on the real RabbitMQ, and a
//! plugin directory holding copies of the built components.

use super::outbox::amqp_url;
use super::{plugin_path, server_url};
use eventhost::broker::topology::PluginQueues;
use eventhost::config::consumer::MAX_PARTITIONS;
use eventhost::fixtures::ScratchDatabase;
use lapin::{Connection, ConnectionProperties};
use serde_json::Value;
use sqlx::PgPool;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

pub struct ServeWorld {
    pub pool: PgPool,
    pub exchange: String,
    pub prefix: String,
    pub api: String,
    pub auth: String,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    plugins: Vec<String>,
    scratch: Option<ScratchDatabase>,
    child: Option<Child>,
    http: reqwest::Client,
    /// Extra environment of the host process (`FAILPOINTS`, say).
    pub env: Vec<(String, String)>,
    /// A peer's: the plugin directory of the world it joined.
    shared_plugins: Option<PathBuf>,
}

/// Settings a test adds to the generated config, each a TOML fragment for its section.
#[derive(Default)]
pub struct Extra<'a> {
    pub consumer: &'a str,
    pub http: &'a str,
    /// Extra lines of `[relay]` and `[auth_service]`.
    pub relay: &'a str,
    pub auth_service: &'a str,
    pub env: &'a [(&'a str, &'a str)],
    /// Files in the plugin directory, as (file stem of a built plugin, file stem there).
    pub renamed: &'a [(&'a str, &'a str)],
    /// Start without waiting for `/readyz`.
    pub unready: bool,
}

/// A port free now, for a host to listen on. Chosen below the kernel's range of
/// ephemeral ports: a port from `bind(:0)` comes from that range, and while the host
/// starts (or restarts) any outgoing connection of a test running beside it could be
/// given the same port ("Address already in use"). Random within the range below, so
/// parallel tests rarely try the same one, and checked by binding it.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let low = 10_000u32;
    if ephemeral_start > low + 1000 {
        let span = ephemeral_start - low;
        let seed = RandomState::new().hash_one(std::process::id());
        for step in 0..span as u64 {
            let port = (low as u64 + (seed.wrapping_add(step) % span as u64)) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// A structured CloudEvent body.
pub fn cloud_event(id: Uuid, event_type: &str, subject: &str, data: Value) -> Vec<u8> {
    serde_json::json!({
        "specversion": "1.0", "id": id.to_string(), "source": "e2e-test", "type": event_type,
        "time": "2026-11-23T12:00:00Z", "subject": subject, "aggregatetype": "user",
        "datacontenttype": "application/json", "data": data,
    })
    .to_string()
    .into_bytes()
}

/// The admin token every e2e host runs with.
pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789";

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_eventhost")
}

impl ServeWorld {
    /// Starts `eventhost serve` with these plugins (file stems: `user_stats`, `audit_log`,
    /// `probe`) and waits until it is ready.
    pub async fn start(plugins: &[&str]) -> Self {
        Self::start_with(plugins, Extra::default()).await
    }

    /// [`ServeWorld::start`] with extra settings.
    pub async fn start_with(plugins: &[&str], extra: Extra<'_>) -> Self {
        let scratch = ScratchDatabase::create(&server_url(), "eventhost_e2e")
            .await
            .expect("create a scratch database (is PostgreSQL running?)");
        let pool = eventhost::database::connect(&scratch.url, 8)
            .await
            .expect("connect to the scratch database");
        let tag = Uuid::new_v4().simple().to_string()[..10].to_string();
        let dir = tempfile::tempdir().expect("temp dir");
        let plugin_dir = dir.path().join("plugins");
        std::fs::create_dir(&plugin_dir).expect("plugin dir");
        for stem in plugins {
            std::fs::copy(plugin_path(stem), plugin_dir.join(format!("{stem}.wasm")))
                .expect("copy plugin");
        }
        for (built, there) in extra.renamed {
            std::fs::copy(plugin_path(built), plugin_dir.join(format!("{there}.wasm")))
                .expect("copy plugin");
        }
        let (api_port, auth_port) = (free_port(), free_port());
        let config = dir.path().join("eventhost.toml");
        let toml = format!(
            r#"database_url = "{db}"
[broker]
url = "{amqp}"
exchange = "eventhost.e2e.{tag}"
[relay]
poll_interval = "200ms"
backoff_base = "100ms"
backoff_max = "1s"
{relay_extra}
[consumer]
plugin_dir = "{plugins}"
queue_prefix = "e2e.{tag}"
reload_interval = "200ms"
{attempts}
{delays}
{consumer_extra}
[http]
listen = "127.0.0.1:{api_port}"
{http_extra}
[auth_service]
listen = "127.0.0.1:{auth_port}"
{auth_extra}
"#,
            db = scratch.url,
            amqp = amqp_url(),
            plugins = plugin_dir.display(),
            consumer_extra = extra.consumer,
            // A test's own values replace these.
            attempts = if extra.consumer.contains("max_attempts") {
                ""
            } else {
                "max_attempts = 3"
            },
            delays = if extra.consumer.contains("retry_delays") {
                ""
            } else {
                r#"retry_delays = ["200ms", "400ms"]"#
            },
            http_extra = extra.http,
            relay_extra = extra.relay,
            auth_extra = extra.auth_service,
        );
        std::fs::write(&config, toml).expect("write config");
        let mut world = Self {
            pool,
            exchange: format!("eventhost.e2e.{tag}"),
            prefix: format!("e2e.{tag}"),
            api: format!("http://127.0.0.1:{api_port}"),
            auth: format!("http://127.0.0.1:{auth_port}"),
            dir,
            config,
            plugins: plugins.iter().map(|p| p.replace('_', "-")).collect(),
            scratch: Some(scratch),
            shared_plugins: None,
            child: None,
            http: reqwest::Client::new(),
            env: extra
                .env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        if extra.unready {
            world.launch();
        } else {
            world.spawn().await;
        }
        world
    }

    /// Another host on this world's database, broker names and plugin directory, with
    /// its own HTTP ports, config file and log; not started yet. The world keeps owning
    /// what they share: a peer's `finish` only stops it.
    pub fn peer(&self) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (api_port, auth_port) = (free_port(), free_port());
        let port = |url: &str| url.rsplit(':').next().unwrap_or_default().to_string();
        let text = std::fs::read_to_string(&self.config).expect("read config");
        let text = text
            .replace(
                &format!("127.0.0.1:{}", port(&self.api)),
                &format!("127.0.0.1:{api_port}"),
            )
            .replace(
                &format!("127.0.0.1:{}", port(&self.auth)),
                &format!("127.0.0.1:{auth_port}"),
            );
        let config = dir.path().join("eventhost.toml");
        std::fs::write(&config, text).expect("write config");
        Self {
            pool: self.pool.clone(),
            exchange: self.exchange.clone(),
            prefix: self.prefix.clone(),
            api: format!("http://127.0.0.1:{api_port}"),
            auth: format!("http://127.0.0.1:{auth_port}"),
            shared_plugins: Some(self.plugin_dir()),
            dir,
            config,
            plugins: Vec::new(),
            scratch: None,
            child: None,
            http: self.http.clone(),
            env: self.env.clone(),
        }
    }

    /// Drops a built plugin (file stem) into the running host's plugin directory; its
    /// queues are removed with the world's.
    pub fn add_plugin(&mut self, stem: &str) {
        std::fs::copy(
            plugin_path(stem),
            self.plugin_dir().join(format!("{stem}.wasm")),
        )
        .expect("copy plugin");
        self.plugins.push(stem.replace('_', "-"));
    }

    pub fn plugin_dir(&self) -> PathBuf {
        match &self.shared_plugins {
            Some(dir) => dir.clone(),
            None => self.dir.path().join("plugins"),
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("serve.log")
    }

    /// The host's log so far, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the host process and waits for `/readyz`.
    pub async fn spawn(&mut self) {
        self.launch();
        self.wait_ready().await;
    }

    /// Starts the host process.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "host already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let child = Command::new(binary())
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "warn,eventhost=info")
            .env("EVENTHOST_ADMIN_TOKEN", ADMIN_TOKEN)
            .env_remove("DATABASE_URL")
            .env_remove("AMQP_URL")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start eventhost serve");
        self.child = Some(child);
    }

    /// The host's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits for the host process to exit by itself.
    pub async fn exited(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            let child = self.child.as_mut().expect("host running");
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "host still running after {limit:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the HTTP API answers at all (`/healthz`).
    pub async fn wait_listening(&self) {
        let url = format!("{}/healthz", self.api);
        let start = Instant::now();
        while !matches!(self.http.get(&url).send().await, Ok(r) if r.status() == 200) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "not listening:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for `/readyz` to answer 200.
    pub async fn wait_ready(&mut self) {
        let url = format!("{}/readyz", self.api);
        let start = Instant::now();
        loop {
            if matches!(self.http.get(&url).send().await, Ok(r) if r.status() == 200) {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("eventhost serve exited with {status}:\n{}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "eventhost serve not ready after 60s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then the exit status (the host should exit 0 after draining).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("host running");
        let pid = child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        wait_with_limit(&mut child, Duration::from_secs(60))
    }

    /// `kill -9`: no draining, no acks, no goodbyes.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("host running");
        child.kill().expect("SIGKILL");
        let _ = child.wait();
    }

    pub async fn register(&self, email: &str) -> Result<Uuid, String> {
        let response = self
            .http
            .post(format!("{}/auth/register", self.auth))
            .json(&serde_json::json!({ "email": email, "name": "E2E" }))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status() != 201 {
            return Err(format!("status {}", response.status()));
        }
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        body["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| format!("no id in {body}"))
    }

    /// GET on the host's API: status and body as JSON (`Null` when not JSON).
    /// Publishes a persistent message to the world's exchange and waits for the confirm.
    pub async fn publish(&self, routing_key: &str, body: &[u8], message_id: Option<&str>) {
        let mut properties = lapin::BasicProperties::default().with_delivery_mode(2);
        if let Some(id) = message_id {
            properties = properties.with_message_id(id.into());
        }
        self.publish_with(routing_key, body, properties).await;
    }

    /// Publishes `body` with `properties` as they are, as any AMQP client could.
    pub async fn publish_with(
        &self,
        routing_key: &str,
        body: &[u8],
        properties: lapin::BasicProperties,
    ) {
        use lapin::options::BasicPublishOptions;
        let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .expect("connect");
        let channel = conn.create_channel().await.expect("channel");
        channel
            .basic_publish(
                self.exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .expect("publish")
            .await
            .expect("published");
        conn.close(200, "done".into()).await.expect("close");
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.api))
            .send()
            .await
            .expect("GET");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// One section of the dashboard (`/ui/part/<section>`), as the admin sees it.
    pub async fn ui_part(&self, section: &str) -> String {
        self.http
            .get(format!("{}/ui/part/{section}", self.api))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("GET a dashboard section")
            .text()
            .await
            .expect("the section's HTML")
    }

    pub async fn metric(&self, name: &str, plugin: &str) -> f64 {
        let (_, body) = self.get("/metrics").await;
        let text = body.as_str().unwrap_or_default().to_string();
        let prefix = format!("{name}{{plugin=\"{plugin}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits until `sql` (a count) returns `expected`.
    pub async fn wait_count(&self, sql: &str, expected: i64, limit: Duration) {
        let start = Instant::now();
        loop {
            let now = self.count(sql).await;
            if now == expected {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "after {limit:?}: {sql} = {now}, expected {expected}\nhost log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `sql` (a count) reaches `at_least`.
    pub async fn wait_count_at_least(&self, sql: &str, at_least: i64, limit: Duration) {
        let start = Instant::now();
        while self.count(sql).await < at_least {
            assert!(
                start.elapsed() < limit,
                "after {limit:?}: {sql} < {at_least}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `/readyz`'s `check` is `expected`; returns the last answer.
    pub async fn wait_readiness(&self, check: &str, expected: bool, limit: Duration) -> Value {
        let start = Instant::now();
        loop {
            let (_, ready) = self.get("/readyz").await;
            if ready["checks"][check] == expected {
                return ready;
            }
            assert!(
                start.elapsed() < limit,
                "after {limit:?}: /readyz = {ready}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the plugin's metric reaches `at_least`.
    pub async fn wait_metric(&self, name: &str, plugin: &str, at_least: f64, limit: Duration) {
        let start = Instant::now();
        loop {
            let now = self.metric(name, plugin).await;
            if now >= at_least {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "after {limit:?}: {name}{{plugin={plugin}}} = {now}, expected >= {at_least}\nhost log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Runs `eventhost <args> --config <this world's config>`; (exit code, stdout).
    pub fn cli(&self, args: &[&str]) -> (i32, String) {
        let output = Command::new(binary())
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env_remove("DATABASE_URL")
            .env_remove("AMQP_URL")
            .output()
            .expect("run eventhost");
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !stderr.trim().is_empty() {
            eprintln!("eventhost {args:?} stderr: {stderr}");
        }
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    }

    /// Stops the host (if running) and removes the database, queues and exchange.
    pub async fn finish(mut self) {
        if self.child.is_some() {
            self.terminate();
        }
        if self.scratch.is_none() {
            return; // a peer: the world it joined cleans up
        }
        if let Ok(conn) = Connection::connect(&amqp_url(), ConnectionProperties::default()).await {
            if let Ok(channel) = conn.create_channel().await {
                let delays = [Duration::from_millis(200), Duration::from_millis(400)];
                let queues: Vec<PluginQueues> = self
                    .plugins
                    .iter()
                    // Every partition a test may have configured.
                    .map(|plugin| PluginQueues::new(&self.prefix, plugin, MAX_PARTITIONS, &delays))
                    .collect();
                let queues: Vec<&PluginQueues> = queues.iter().collect();
                super::delete_topology(&channel, &self.exchange, &queues).await;
            }
            let _ = conn.close(200, "done".into()).await;
        }
        self.pool.close().await;
        if let Some(scratch) = self.scratch.take() {
            let _ = scratch.drop_now().await;
        }
    }
}

impl Drop for ServeWorld {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_with_limit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("eventhost did not exit within {limit:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Registers `n` users (`<label>-<i>@example.com`) through the auth service at `auth`,
/// `concurrency` at a time, retrying through host outages; an email already taken counts
/// as registered (the earlier attempt committed before the answer was lost).
pub async fn register_many(
    auth: String,
    label: &'static str,
    n: usize,
    concurrency: usize,
) -> usize {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (auth, next) = (auth.clone(), next.clone());
        workers.spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client");
            let mut done = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return done;
                }
                let body = serde_json::json!({ "email": format!("{label}-{i}@example.com"), "name": "Load" });
                let started = Instant::now();
                loop {
                    let sent = http.post(format!("{auth}/auth/register")).json(&body).send().await;
                    match sent.map(|r| r.status().as_u16()) {
                        Ok(201) | Ok(409) => break,
                        _ => {
                            assert!(started.elapsed() < Duration::from_secs(120), "registration {i} kept failing");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                done += 1;
            }
        });
    }
    workers.join_all().await.into_iter().sum()
}

impl ServeWorld {
    /// Every registered user has exactly one stats row made by the event path and exactly
    /// one audit entry of its `user.created`; waits up to `limit` for the backlog to drain.
    pub async fn assert_every_user_handled_once(&self, expected_users: i64, limit: Duration) {
        assert_eq!(
            self.count("SELECT count(*) FROM users").await,
            expected_users
        );
        let stats = "SELECT count(*) FROM users u JOIN plugin_user_stats.user_stats s ON s.user_id = u.id AND s.created_via = 'event'";
        self.wait_count(stats, expected_users, limit).await;
        let audit = "SELECT count(*) FROM users u JOIN plugin_audit_log.audit_events a \
                     ON a.aggregate_id = u.id::text AND a.event_type = 'user.created'";
        self.wait_count(audit, expected_users, limit).await;
        // Nothing twice, and nothing else: one user.created per user.
        let twice = "SELECT count(*) FROM (SELECT aggregate_id FROM plugin_audit_log.audit_events \
                     WHERE event_type = 'user.created' GROUP BY 1 HAVING count(*) > 1) t";
        assert_eq!(self.count(twice).await, 0);
        let all_audit = "SELECT count(*) FROM plugin_audit_log.audit_events";
        assert_eq!(self.count(all_audit).await, expected_users);
        assert_eq!(
            self.count("SELECT count(*) FROM plugin_user_stats.user_stats")
                .await,
            expected_users
        );
    }
}

/// A plugin's row (`<tr data-plugin="...">` to its `</tr>`) in a dashboard section.
pub fn plugin_row(page: &str, plugin: &str) -> Option<String> {
    let row = &page[page.find(&format!(r#"data-plugin="{plugin}""#))?..];
    Some(row[..row.find("</tr>")?].to_string())
}
