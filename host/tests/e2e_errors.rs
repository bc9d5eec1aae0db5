//! One error shape on both listeners, route by route, framework rejections included:
//! `application/json` with `{"error": "<what went wrong>"}`.

mod common;

use common::serve::ServeWorld;
use reqwest::Method;

/// (listener, method, path, content type, body, expected status).
type Case<'a> = (&'a str, Method, &'a str, Option<&'a str>, Vec<u8>, u16);

async fn answer(
    world: &ServeWorld,
    base: &str,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, String, String) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}\n{}", world.log()));
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, kind, response.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_has_the_one_json_shape() {
    let world = ServeWorld::start(&["user_stats"]).await;
    let (api, auth) = (world.api.clone(), world.auth.clone());
    let big = vec![b'x'; 200_000];
    let cases: Vec<Case> = vec![
        (
            api.as_str(),
            Method::GET,
            "/no/such/route",
            None,
            vec![],
            404,
        ),
        (api.as_str(), Method::POST, "/healthz", None, vec![], 405),
        (api.as_str(), Method::DELETE, "/metrics", None, vec![], 405),
        (
            api.as_str(),
            Method::GET,
            "/plugins/nobody/x",
            None,
            vec![],
            404,
        ),
        (
            api.as_str(),
            Method::POST,
            "/admin/plugins/reload",
            None,
            vec![],
            401,
        ),
        (
            api.as_str(),
            Method::POST,
            "/admin/plugins/reload",
            None,
            big.clone(),
            413,
        ),
        (
            api.as_str(),
            Method::GET,
            "/plugins/user-stats/stats/not-a-uuid",
            None,
            vec![],
            400,
        ),
        (
            auth.as_str(),
            Method::GET,
            "/nothing/here",
            None,
            vec![],
            404,
        ),
        (
            auth.as_str(),
            Method::GET,
            "/auth/register",
            None,
            vec![],
            405,
        ),
        (
            auth.as_str(),
            Method::POST,
            "/auth/register",
            Some("text/plain"),
            b"{}".to_vec(),
            415,
        ),
        (
            auth.as_str(),
            Method::POST,
            "/auth/register",
            Some("application/json"),
            b"{".to_vec(),
            400,
        ),
        (
            auth.as_str(),
            Method::POST,
            "/auth/register",
            Some("application/json"),
            big,
            413,
        ),
        (
            auth.as_str(),
            Method::GET,
            "/auth/users/not-a-uuid",
            None,
            vec![],
            400,
        ),
    ];
    for (base, method, path, content_type, body, expected) in cases {
        let label = format!("{method} {path}");
        let (status, kind, text) = answer(&world, base, method, path, content_type, body).await;
        assert_eq!(status, expected, "{label}: {text}");
        assert!(
            kind.starts_with("application/json"),
            "{label}: content-type {kind:?}"
        );
        let parsed: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{label}: not JSON ({e}): {text:?}"));
        let message = parsed["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{label}: no error: {text}"));
        assert!(!message.is_empty(), "{label}");
    }
    let (status, _, text) = answer(&world, &api, Method::GET, "/nope", None, vec![]).await;
    assert_eq!(
        (status, text.contains("no route for GET /nope")),
        (404, true),
        "{text}"
    );
    world.finish().await;
}
