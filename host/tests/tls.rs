//! TLS against real endpoints the tests set up: certificates made here (a CA and a
//! server certificate for `localhost` / 127.0.0.1), a throwaway PostgreSQL cluster with
//! `ssl = on` that refuses plain connections, and a TLS listener in front of RabbitMQ
//! and in front of the reference auth service.

mod common;

use eventhost::capabilities::auth::AuthLookup;
use eventhost::config::{AuthBackend, BrokerConfig, Limits};
use eventhost::runtime::Runtime;
use eventhost::{broker, Event, Outcome};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use uuid::Uuid;

/// A CA and a server certificate it signed, as PEM files in a temporary directory.
struct Certs {
    dir: tempfile::TempDir,
    leaf: rustls::pki_types::CertificateDer<'static>,
    key: Vec<u8>,
}

impl Certs {
    fn make() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "eventhost test CA");
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca, ca_key);
        let mut leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("leaf params");
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf_cert = leaf
            .signed_by(&leaf_key, &issuer)
            .expect("leaf certificate");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).expect("ca.pem");
        std::fs::write(dir.path().join("server.crt"), leaf_cert.pem()).expect("server.crt");
        std::fs::write(dir.path().join("server.key"), leaf_key.serialize_pem()).expect("key");
        Self {
            dir,
            leaf: leaf_cert.der().clone(),
            key: leaf_key.serialize_der(),
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Terminates TLS on a new local port and forwards the bytes to `upstream`.
    async fn proxy(&self, upstream: SocketAddr) -> u16 {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(self.key.clone().into());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.leaf.clone()], key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut up) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                });
            }
        });
        port
    }
}

/// A PostgreSQL cluster of the test's own (the installed binaries, run as `postgres`),
/// accepting TLS connections only.
struct SslCluster {
    dir: tempfile::TempDir,
    port: u16,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn as_postgres(program: &str, args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--", &format!("{PG_BIN}/{program}")])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

impl SslCluster {
    fn start(certs: &Certs) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let chown = |path: &Path| {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(path)
                .status()
                .expect("chown");
            assert!(ok.success());
        };
        chown(dir.path());
        let data_s = data.to_str().expect("utf-8 path");
        let init = as_postgres("initdb", &["-D", data_s, "-A", "trust", "-U", "postgres"]);
        assert!(init.status.success(), "initdb: {init:?}");
        for (file, to) in [("server.crt", "server.crt"), ("server.key", "server.key")] {
            std::fs::copy(certs.dir.path().join(file), data.join(to)).expect("copy cert");
        }
        let port = common::serve::free_port();
        let conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nmax_connections = 40\nfsync = off\n",
            dir.path().display()
        );
        let mut postgresql = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .expect("postgresql.conf");
        std::io::Write::write_all(&mut postgresql, conf.as_bytes()).expect("write conf");
        std::fs::write(
            data.join("pg_hba.conf"),
            "hostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\nlocal all all trust\n",
        )
        .expect("pg_hba.conf");
        chown(dir.path());
        let key = data.join("server.key");
        let _ = Command::new("chmod").arg("600").arg(&key).status();
        let log = dir.path().join("pg.log");
        let started = as_postgres(
            "pg_ctl",
            &[
                "-D",
                data_s,
                "-l",
                log.to_str().expect("path"),
                "-w",
                "start",
            ],
        );
        assert!(
            started.status.success(),
            "pg_ctl start: {started:?}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Self { dir, port }
    }

    fn url(&self, query: &str) -> String {
        format!(
            "postgres://postgres@localhost:{}/postgres?{query}",
            self.port
        )
    }
}

impl Drop for SslCluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        as_postgres(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap_or_default(),
                "-m",
                "immediate",
                "stop",
            ],
        );
    }
}

/// The error of a connection to a server whose certificate's CA is not trusted.
fn assert_untrusted(error: &str) {
    assert!(
        error.contains("certificate") || error.contains("UnknownIssuer"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_verify_full_carries_the_host_and_every_plugin_session() {
    let certs = Certs::make();
    let cluster = SslCluster::start(&certs);
    let ca = certs.ca();
    let verified = cluster.url(&format!("sslmode=verify-full&sslrootcert={}", ca.display()));

    // The server refuses plain connections, and verify-full refuses a CA it was not given.
    let plain = eventhost::database::connect(&cluster.url("sslmode=disable"), 1).await;
    assert!(plain.is_err(), "a plain connection was accepted");
    let unknown = eventhost::database::connect(&cluster.url("sslmode=verify-full"), 1)
        .await
        .expect_err("an unknown CA is refused")
        .to_string();
    assert_untrusted(&unknown);

    // The host's pool, its migrations, and a plugin's own sessions all go over TLS.
    let (pool, runtime) = Runtime::open(&verified, Limits::default(), AuthBackend::Postgres)
        .await
        .expect("open over verify-full");
    let plugin = runtime
        .load_file(&common::plugin_path("probe"))
        .await
        .expect("probe loads over TLS");
    let id = Uuid::new_v4();
    let event = Event::from_json_bytes(
        serde_json::json!({
            "specversion": "1.0", "id": id.to_string(), "source": "tls-test",
            "type": "probe.insert", "subject": "tls", "aggregatetype": "probe",
            "time": "2026-12-02T12:00:00Z", "data": {},
        })
        .to_string()
        .as_bytes(),
    )
    .expect("event");
    assert_eq!(plugin.handle(&event).await.outcome, Outcome::Ok);
    let (plain, plugin_tls): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE NOT s.ssl), count(*) FILTER (WHERE s.ssl AND a.usename LIKE '%\\_\\_probe')
           FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
          WHERE a.backend_type = 'client backend'",
    )
    .fetch_one(&pool)
    .await
    .expect("pg_stat_ssl");
    assert_eq!(plain, 0, "a session without TLS");
    assert!(
        plugin_tls >= 1,
        "the plugin's session is not among the TLS ones"
    );
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_verifies_the_broker_with_the_ca_file_and_never_falls_back_to_plain() {
    let certs = Certs::make();
    let port = certs.proxy(SocketAddr::from(([127, 0, 0, 1], 5672))).await;
    let config = |url: String, ca_file: Option<PathBuf>| BrokerConfig {
        url,
        exchange: format!("eventhost.tls.{}", Uuid::new_v4().simple()),
        connect_timeout: Duration::from_secs(5),
        ca_file,
    };
    let tls_url = format!("amqps://guest:guest@localhost:{port}/%2f");
    let good = config(tls_url.clone(), Some(certs.ca()));
    let connection = broker::connect(&good, "tls test")
        .await
        .expect("amqps with the CA");
    let channel = broker::publisher_channel(&connection, &good.exchange)
        .await
        .expect("declare over TLS");
    let confirm = channel
        .basic_publish(
            good.exchange.as_str().into(),
            "tls.test".into(),
            lapin::options::BasicPublishOptions::default(),
            b"{}",
            lapin::BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("confirmed");
    assert!(confirm.is_ack());
    let _ = channel
        .exchange_delete(good.exchange.as_str().into(), Default::default())
        .await;
    let _ = connection.close(200, "done".into()).await;

    let unknown = broker::connect(&config(tls_url, None), "tls test")
        .await
        .expect_err("an unknown CA is refused")
        .to_string();
    assert_untrusted(&unknown);
    // amqps:// at a plain port fails: TLS is never silently skipped.
    let plain = config(
        "amqps://guest:guest@localhost:5672/%2f".into(),
        Some(certs.ca()),
    );
    assert!(broker::connect(&plain, "tls test").await.is_err());
    // Passwords stay out of the error.
    assert!(!unknown.contains("guest:guest"), "{unknown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_auth_lookups_trust_the_ca_file() {
    let host = common::TestHost::default().await;
    let app = eventhost::auth_service::router(host.pool.clone(), "tls-test".into());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let plain = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let certs = Certs::make();
    let port = certs.proxy(plain).await;
    let url = format!("https://localhost:{port}");

    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(certs.ca()).expect("ca")).expect("pem"),
        )
        .build()
        .expect("client");
    let registered: serde_json::Value = client
        .post(format!("{url}/auth/register"))
        .json(&serde_json::json!({ "email": "tls@example.com", "name": "TLS" }))
        .send()
        .await
        .expect("register over https")
        .json()
        .await
        .expect("json");
    let id = Uuid::parse_str(registered["id"].as_str().expect("id")).expect("uuid");

    let backend = |ca_file| AuthBackend::Http {
        url: url.clone(),
        timeout: Duration::from_secs(5),
        ca_file,
    };
    let trusted = AuthLookup::new(&backend(Some(certs.ca())), &host.pool).expect("lookup");
    let user = trusted
        .lookup(id)
        .await
        .expect("https lookup")
        .expect("found");
    assert_eq!(user.email, "tls@example.com");
    let untrusted = AuthLookup::new(&backend(None), &host.pool).expect("lookup");
    assert!(
        untrusted.lookup(id).await.is_err(),
        "an unknown CA was trusted"
    );
    host.stop().await;
}
