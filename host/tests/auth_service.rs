//! The reference auth service over real HTTP and PostgreSQL: answers, and the user row
//! and its event written together (or neither).

mod common;

use common::outbox::OutboxWorld;
use reqwest::StatusCode;
use serde_json::{json, Value};

struct Service {
    base: String,
    client: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Service {
    async fn start(world: &OutboxWorld) -> Self {
        let app = eventhost::auth_service::router(world.pool.clone(), "auth-service".into());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            base,
            client: reqwest::Client::new(),
            server,
        }
    }

    async fn post(&self, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.client.post(format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        (
            response.status(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (
            response.status(),
            response.json().await.unwrap_or(Value::Null),
        )
    }
}

/// (event_type, payload, traceparent) of every outbox row, in order.
async fn events(world: &OutboxWorld) -> Vec<(String, Value, String)> {
    sqlx::query_as::<_, (String, Value, Value)>(
        "SELECT event_type, payload, headers FROM outbox_events ORDER BY seq",
    )
    .fetch_all(&world.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(t, p, h)| (t, p, h["traceparent"].as_str().unwrap_or("").to_string()))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_validates_and_writes_the_user_with_its_event() {
    let world = OutboxWorld::start().await;
    let service = Service::start(&world).await;

    let (status, body) = service
        .post(
            "/auth/register",
            Some(json!({ "email": "Ann@Example.com", "name": "Ann Lee" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap().to_string();

    let events = events(&world).await;
    assert_eq!(events.len(), 1);
    let (event_type, payload, traceparent) = &events[0];
    assert_eq!(event_type, "user.created");
    assert_eq!(payload["userId"], json!(id));
    assert_eq!(payload["email"], json!("ann@example.com"));
    assert_eq!(payload["name"], json!("Ann Lee"));
    assert_eq!(payload["role"], json!("user"));
    assert_eq!(payload["isActive"], json!(true));
    assert!(payload["createdAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(traceparent.len(), 55, "a generated traceparent");

    let (status, user) = service.get(&format!("/auth/users/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(user["email"], json!("ann@example.com"));
    assert_eq!(user["active"], json!(true));
    assert_eq!(user["createdAt"], payload["createdAt"]);

    for (body, expected) in [
        (json!({ "email": "not-an-email", "name": "X" }), "email"),
        (json!({ "email": "x@example.com" }), "name"),
        (json!({ "name": "X" }), "email"),
        (json!({ "email": "x@example.com", "name": "  " }), "name"),
        (
            json!({ "email": "x@example.com", "name": "X", "role": "Admin!" }),
            "role",
        ),
    ] {
        let (status, answer) = service.post("/auth/register", Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            answer["error"].as_str().unwrap().contains(expected),
            "{answer}"
        );
    }
    let (status, answer) = service
        .post(
            "/auth/register",
            Some(json!({ "email": "ann@example.com", "name": "Other" })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(
        self::events(&world).await.len(),
        1,
        "refused registrations write no event"
    );
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&world.pool)
        .await
        .unwrap();
    assert_eq!(users, 1);

    let (status, _) = service
        .get(&format!("/auth/users/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = service.get("/auth/users/nope").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    service.server.abort();
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_changes_write_one_event_each_and_only_when_something_changed() {
    let world = OutboxWorld::start().await;
    let service = Service::start(&world).await;
    let (_, body) = service
        .post(
            "/auth/register",
            Some(json!({ "email": "bo@example.com", "name": "Bo", "role": "doctor" })),
        )
        .await;
    let id = body["id"].as_str().unwrap().to_string();

    let (status, user) = service
        .post(&format!("/auth/users/{id}/deactivate"), None)
        .await;
    assert_eq!((status, &user["active"]), (StatusCode::OK, &json!(false)));
    let (status, _) = service
        .post(&format!("/auth/users/{id}/deactivate"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "deactivating twice is fine");
    let (status, user) = service
        .post(&format!("/auth/users/{id}/activate"), None)
        .await;
    assert_eq!((status, &user["active"]), (StatusCode::OK, &json!(true)));
    let (status, user) = service
        .post(
            &format!("/auth/users/{id}/role"),
            Some(json!({ "role": "admin" })),
        )
        .await;
    assert_eq!((status, &user["role"]), (StatusCode::OK, &json!("admin")));
    let (status, _) = service
        .post(
            &format!("/auth/users/{id}/role"),
            Some(json!({ "role": "admin" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = service
        .post(
            &format!("/auth/users/{id}/role"),
            Some(json!({ "rank": "admin" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let missing = uuid::Uuid::new_v4();
    for path in ["deactivate", "activate"] {
        let (status, _) = service
            .post(&format!("/auth/users/{missing}/{path}"), None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let (status, _) = service
        .post(
            &format!("/auth/users/{missing}/role"),
            Some(json!({ "role": "x" })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let events = events(&world).await;
    let types: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        types,
        [
            "user.created",
            "user.deactivated",
            "user.activated",
            "user.role.changed"
        ]
    );
    assert_eq!(events[1].1["isActive"], json!(false));
    assert_eq!(events[2].1["isActive"], json!(true));
    assert_eq!(events[3].1["role"], json!("admin"));
    assert_eq!(events[3].1["previousRole"], json!("doctor"));
    assert!(events.iter().all(|e| e.1["userId"] == json!(id)));
    service.server.abort();
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_trace_is_continued_into_the_event() {
    let world = OutboxWorld::start().await;
    let service = Service::start(&world).await;
    let response = service
        .client
        .post(format!("{}/auth/register", service.base))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .json(&json!({ "email": "cy@example.com", "name": "Cy" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let events = events(&world).await;
    assert!(events[0]
        .2
        .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    service.server.abort();
    world.stop().await;
}

/// What an HTML form on another site could send is refused with 415, and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_json_bodies_are_accepted_and_names_count_characters() {
    let world = OutboxWorld::start().await;
    let service = Service::start(&world).await;
    let raw = |path: &str, content_type: &str, body: &str| {
        let request = service
            .client
            .post(format!("{}{path}", service.base))
            .header("content-type", content_type)
            .body(body.to_string());
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let json_text = r#"{"email":"form@example.com","name":"Form"}"#;
    for (content_type, body) in [
        (
            "application/x-www-form-urlencoded",
            "email=form%40example.com&name=Form",
        ),
        ("multipart/form-data; boundary=x", "--x--"),
        ("text/plain", json_text),
    ] {
        let (status, answer) = raw("/auth/register", content_type, body).await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type}: {answer}"
        );
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains("application/json"),
            "{answer}"
        );
    }
    assert!(events(&world).await.is_empty(), "nothing was written");

    let (status, answer) = raw(
        "/auth/register",
        "application/json; charset=utf-8",
        json_text,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let id = answer["id"].as_str().unwrap().to_string();
    // A bodyless form post cannot change a user either; a bodyless plain POST can.
    let deactivate = format!("/auth/users/{id}/deactivate");
    let (status, _) = raw(&deactivate, "application/x-www-form-urlencoded", "").await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        events(&world).await.len(),
        1,
        "only the registration's event"
    );
    let (status, _) = service.post(&deactivate, None).await;
    assert_eq!(status, StatusCode::OK);

    // 200 characters of two bytes each are a valid name; 201 are not.
    let name = "é".repeat(200);
    let (status, answer) = service
        .post(
            "/auth/register",
            Some(json!({ "email": "zoe@example.com", "name": name })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let (status, _) = service
        .post(
            "/auth/register",
            Some(json!({ "email": "zoe2@example.com", "name": "é".repeat(201) })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    service.server.abort();
    world.stop().await;
}
