//! Secrets out of anything printed: the password in a URL's user info, and the values of
//! query parameters that carry credentials.

/// Query parameters whose values are secrets.
const SECRET_PARAMS: [&str; 6] = [
    "password",
    "passwd",
    "sslpassword",
    "token",
    "secret",
    "api_key",
];

/// The URL without its password (`user:***@host`) and with secret query values masked.
pub fn url(url: &str) -> String {
    text(url)
}

/// Every URL inside `text` redacted as by [`url`] (error messages, config excerpts).
pub fn text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| c.is_whitespace() || "\"'<>`".contains(c))
            .unwrap_or(after.len());
        out.push_str(&one(&after[..end]));
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// One URL after its `scheme://`.
fn one(url: &str) -> String {
    let authority_end = url.find(['/', '?', '#']).unwrap_or(url.len());
    let (authority, tail) = url.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{user}:***@{host}")
        }
        _ => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let masked: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _))
                        if SECRET_PARAMS.contains(&key.to_ascii_lowercase().as_str()) =>
                    {
                        format!("{key}=***")
                    }
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", masked.join("&"))
        }
        None => tail.to_string(),
    };
    authority + &tail
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_and_secret_parameters_are_masked() {
        assert_eq!(
            super::url("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(super::url("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672");
        assert_eq!(
            super::url("postgres://db/x?sslmode=require&password=hunter2"),
            "postgres://db/x?sslmode=require&password=***"
        );
        assert_eq!(
            super::url("https://auth/?Token=abc"),
            "https://auth/?Token=***"
        );
        assert_eq!(
            super::text("line 1: database_url = \"postgres://u:pw@h/d\" oops"),
            "line 1: database_url = \"postgres://u:***@h/d\" oops"
        );
    }
}
