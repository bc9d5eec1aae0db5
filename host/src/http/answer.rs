//! A read hook's answer, made into an HTTP response. The plugin's values are checked one by
//! one: its status must be a final HTTP status, and framing and hop-by-hop headers are the
//! host's alone (a plugin that set `content-length` or `transfer-encoding` could otherwise
//! split the connection's stream and have one request answered twice). Nothing here can
//! panic, whatever the plugin returned; the caps on sizes are applied before, in the
//! runtime, where a refused answer also rolls back the read's transaction.

use super::error;
use crate::runtime::ReadResponse;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;

/// Headers only the host may set: framing, what RFC 9110 calls connection-specific, and
/// what would let a plugin's answer act in the browser of someone on the same origin as
/// the dashboard (cookies, its own security policy).
const HOST_ONLY: &[&str] = &[
    "connection",
    "content-length",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "set-cookie",
    "content-security-policy",
    "content-security-policy-report-only",
    "x-content-type-options",
];

/// Every plugin answer is inert in a browser: it shares the dashboard's origin, so
/// whatever it holds (HTML included) must not run script, fetch or submit forms there.
const PLUGIN_ANSWER_POLICY: &str = "sandbox; default-src 'none'; frame-ancestors 'none'";

/// Whether a plugin may set the header `name`.
pub fn plugin_may_set(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !HOST_ONLY.contains(&lower.as_str()) && !lower.starts_with("proxy-")
}

/// A final status (200 to 599) the plugin may answer with; else `None`. 1xx statuses are
/// interim (101 would switch protocols) and anything outside 100..=599 is not HTTP.
pub fn final_status(status: u16) -> Option<StatusCode> {
    (200..=599)
        .contains(&status)
        .then(|| StatusCode::from_u16(status).ok())
        .flatten()
}

pub fn to_response(plugin: &str, answer: ReadResponse) -> Response {
    let Some(status) = final_status(answer.status) else {
        return error(
            StatusCode::BAD_GATEWAY,
            format!(
                "plugin {plugin} answered with status {}, which is not a final HTTP status",
                answer.status
            ),
        );
    };
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = status;
    response
        .extensions_mut()
        .insert(super::errors::PluginAnswer);
    let mut dropped = Vec::new();
    for (name, value) in answer.headers {
        if !plugin_may_set(&name) {
            dropped.push(name);
            continue;
        }
        match (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            (Ok(name), Ok(value)) => {
                response.headers_mut().append(name, value);
            }
            _ => dropped.push(name),
        }
    }
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PLUGIN_ANSWER_POLICY),
    );
    headers.insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !dropped.is_empty() {
        let shown: Vec<String> = dropped
            .iter()
            .take(5)
            .map(|n| n.chars().take(64).collect())
            .collect();
        tracing::warn!(plugin, dropped = dropped.len(), headers = ?shown,
            "the plugin's answer set headers that are the host's or invalid; dropped");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn answer(status: u16, headers: Vec<(String, String)>, body: Vec<u8>) -> ReadResponse {
        ReadResponse {
            status,
            headers,
            body,
            rows_written: 0,
        }
    }

    #[test]
    fn framing_and_hop_by_hop_headers_are_the_hosts() {
        let headers = [
            "Content-Length",
            "transfer-encoding",
            "Connection",
            "keep-alive",
            "upgrade",
            "TE",
            "trailer",
            "proxy-authenticate",
            "Proxy-Connection",
        ]
        .iter()
        .map(|n| (n.to_string(), "1".to_string()))
        .chain([("content-type".to_string(), "text/plain".to_string())])
        .collect();
        let response = to_response("p", answer(200, headers, b"hi".to_vec()));
        let names: Vec<&str> = response.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "content-type",
                "content-security-policy",
                "x-content-type-options"
            ]
        );
    }

    #[test]
    fn a_plugin_answer_cannot_set_cookies_or_run_script_beside_the_dashboard() {
        let headers = [
            ("Set-Cookie", "eventhost_ui=stolen; Path=/ui"),
            ("content-security-policy", "script-src *"),
            ("X-Content-Type-Options", "none"),
            ("content-type", "text/html"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        let body = b"<script>fetch('/ui/part/plugins')</script>".to_vec();
        let response = to_response("p", answer(200, headers, body));
        let h = response.headers();
        assert!(h.get("set-cookie").is_none());
        assert_eq!(h["content-security-policy"], PLUGIN_ANSWER_POLICY);
        assert!(PLUGIN_ANSWER_POLICY.starts_with("sandbox"));
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["content-type"], "text/html");
    }

    #[test]
    fn only_final_statuses_pass() {
        for (status, expect) in [
            (0, 502),
            (99, 502),
            (100, 502),
            (101, 502),
            (199, 502),
            (200, 200),
            (404, 404),
            (599, 599),
            (600, 502),
            (999, 502),
            (u16::MAX, 502),
        ] {
            assert_eq!(
                to_response("p", answer(status, vec![], vec![]))
                    .status()
                    .as_u16(),
                expect,
                "{status}"
            );
        }
    }

    proptest! {
        /// Whatever the plugin returns, the conversion neither panics nor lets a host-only
        /// header (but the host's own sandboxing ones, with the host's values) or an
        /// invalid status through.
        #[test]
        fn any_answer_becomes_a_well_formed_response(
            status in any::<u16>(),
            headers in proptest::collection::vec((".{0,40}", ".{0,80}"), 0..20),
            framing in proptest::collection::vec(
                (prop::sample::select(vec!["content-length", "Transfer-Encoding", "connection", "upgrade", "proxy-x"]), "[ -~\r\n]{0,20}"),
                0..4,
            ),
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let mut all = headers;
            all.extend(framing.into_iter().map(|(n, v)| (n.to_string(), v)));
            let response = to_response("p", answer(status, all, body));
            let code = response.status().as_u16();
            prop_assert!(code == status || code == 502);
            prop_assert!((200..=599).contains(&code));
            for (name, value) in response.headers() {
                let hosts_own = match name.as_str() {
                    "content-security-policy" => value == PLUGIN_ANSWER_POLICY,
                    "x-content-type-options" => value == "nosniff",
                    _ => false,
                };
                prop_assert!(hosts_own || plugin_may_set(name.as_str()), "{name} got through");
                prop_assert!(!value.as_bytes().iter().any(|b| *b == b'\r' || *b == b'\n'));
            }
        }
    }
}
