//! Answers of a read hook.

use crate::Response;
use serde_json::{json, Value as Json};

impl Response {
    /// `body` as `application/json` with `status`.
    pub fn json(status: u16, body: &Json) -> Self {
        Response {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    /// 404 with `{"error": "no route for GET <path>"}`.
    pub fn no_route(method: &str, path: &str) -> Self {
        Self::json(
            404,
            &json!({ "error": format!("no route for {method} {path}") }),
        )
    }
}
