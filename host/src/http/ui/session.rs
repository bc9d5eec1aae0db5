//! Who is looking at the dashboard. A browser cannot send the admin bearer token on a
//! page load, so signing in with it opens a session: an `HttpOnly`, `SameSite=Strict`
//! cookie naming a random session id, and a per-session CSRF token every form carries.
//! Sessions live in this process's memory; a restart signs everyone out.

use crate::config::{Secret, UiAccess};
use axum::http::{header, HeaderMap};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const COOKIE: &str = "eventhost_ui";
/// How long a session lasts from sign-in.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the oldest is dropped beyond it (sign-ins cannot fill memory).
const MAX_SESSIONS: usize = 256;

/// What a request may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Signed in (cookie) or the bearer token: every page and action. `csrf` is the
    /// token forms must carry (`None` for bearer requests, which no browser sends on
    /// its own, so they need none).
    Admin { csrf: Option<String> },
    /// `ui = "open-read"` and not signed in: read-only pages.
    Reader,
    /// Nothing: sign in first.
    None,
}

impl Access {
    pub fn is_admin(&self) -> bool {
        matches!(self, Access::Admin { .. })
    }
    pub fn can_read(&self) -> bool {
        !matches!(self, Access::None)
    }
    pub fn csrf(&self) -> &str {
        match self {
            Access::Admin { csrf: Some(csrf) } => csrf,
            _ => "",
        }
    }
}

struct Session {
    csrf: String,
    expires: Instant,
    /// What the last action did, shown once on the next page (kept here rather than in
    /// the address, so a link cannot put words on the operator's page).
    notice: Option<String>,
}

pub struct Sessions {
    token: Option<Secret>,
    mode: UiAccess,
    open: Mutex<HashMap<String, Session>>,
    /// When recent sign-ins failed: guessing the token is slowed for everyone.
    failures: Mutex<std::collections::VecDeque<Instant>>,
}

/// Failed sign-ins allowed per [`FAILURE_WINDOW`] in this process; past them, sign-ins
/// are refused until the window moves on.
const MAX_FAILURES: usize = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Why a sign-in did not open a session.
#[derive(Debug, PartialEq, Eq)]
pub enum SignInRefused {
    WrongToken,
    TooManyFailures,
}

/// 256 random bits as hex.
fn random_token() -> String {
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(a.as_bytes());
    hasher.update(b.as_bytes());
    hex::encode(hasher.finalize())
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

impl Sessions {
    pub fn new(token: Option<Secret>, mode: UiAccess) -> Self {
        Self {
            token,
            mode,
            open: Mutex::default(),
            failures: Mutex::default(),
        }
    }

    pub fn mode(&self) -> UiAccess {
        self.mode
    }

    /// Whether signing in is possible at all (an admin token is configured).
    pub fn can_sign_in(&self) -> bool {
        self.token.is_some()
    }

    /// What the request's cookie or bearer token allows.
    pub fn access(&self, headers: &HeaderMap) -> Access {
        if let Some(token) = &self.token {
            if super::super::admin::bearer_matches(token, headers) {
                return Access::Admin { csrf: None };
            }
        }
        if let Some(id) = cookie_value(headers, COOKIE) {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            open.retain(|_, s| s.expires > now);
            if let Some(session) = open.get(id) {
                return Access::Admin {
                    csrf: Some(session.csrf.clone()),
                };
            }
        }
        match self.mode {
            UiAccess::OpenRead => Access::Reader,
            _ => Access::None,
        }
    }

    /// A new session when `given` is the admin token: its id, for the cookie.
    pub fn sign_in(&self, given: &str) -> Result<String, SignInRefused> {
        let token = self.token.as_ref().ok_or(SignInRefused::WrongToken)?;
        {
            let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            while failures
                .front()
                .is_some_and(|at| now.duration_since(*at) > FAILURE_WINDOW)
            {
                failures.pop_front();
            }
            if failures.len() >= MAX_FAILURES {
                return Err(SignInRefused::TooManyFailures);
            }
            if !super::super::admin::same(given.as_bytes(), token.expose().as_bytes()) {
                failures.push_back(now);
                return Err(SignInRefused::WrongToken);
            }
        }
        let id = random_token();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= MAX_SESSIONS {
            if let Some(oldest) = open
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            {
                open.remove(&oldest);
            }
        }
        open.insert(
            id.clone(),
            Session {
                csrf: random_token(),
                expires: Instant::now() + LIFETIME,
                notice: None,
            },
        );
        Ok(id)
    }

    /// Keeps `text` for the session's next page.
    pub fn set_notice(&self, headers: &HeaderMap, text: &str) {
        self.with_session(headers, |s| s.notice = Some(text.to_string()));
    }

    /// The notice left by the last action, once.
    pub fn take_notice(&self, headers: &HeaderMap) -> Option<String> {
        self.with_session(headers, |s| s.notice.take()).flatten()
    }

    fn with_session<T>(&self, headers: &HeaderMap, f: impl FnOnce(&mut Session) -> T) -> Option<T> {
        let id = cookie_value(headers, COOKIE)?;
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get_mut(id).map(f)
    }

    pub fn sign_out(&self, headers: &HeaderMap) {
        if let Some(id) = cookie_value(headers, COOKIE) {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            open.remove(id);
        }
    }
}

/// Whether a form's CSRF field matches the session's (bearer requests need none).
pub fn csrf_ok(access: &Access, given: Option<&str>) -> bool {
    match access {
        Access::Admin { csrf: None } => true,
        Access::Admin {
            csrf: Some(expected),
        } => given
            .is_some_and(|given| super::super::admin::same(given.as_bytes(), expected.as_bytes())),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            format!("other=1; {COOKIE}={value}").parse().unwrap(),
        );
        headers
    }

    #[test]
    fn only_the_admin_token_opens_a_session_and_forms_need_its_csrf_token() {
        let sessions = Sessions::new(
            Some(Secret::new("dashboard-token-123".into())),
            UiAccess::Token,
        );
        assert_eq!(sessions.access(&HeaderMap::new()), Access::None);
        assert_eq!(
            sessions.sign_in("dashboard-token-12"),
            Err(SignInRefused::WrongToken)
        );
        let id = sessions.sign_in("dashboard-token-123").unwrap();
        let access = sessions.access(&with_cookie(&id));
        sessions.set_notice(&with_cookie(&id), "done");
        assert_eq!(
            sessions.take_notice(&with_cookie(&id)).as_deref(),
            Some("done")
        );
        assert_eq!(sessions.take_notice(&with_cookie(&id)), None, "shown once");
        assert!(access.is_admin());
        assert!(csrf_ok(&access, Some(access.csrf())));
        assert!(!csrf_ok(&access, Some("forged")));
        assert!(!csrf_ok(&access, None));
        assert_eq!(sessions.access(&with_cookie("guessed")), Access::None);
        sessions.sign_out(&with_cookie(&id));
        assert_eq!(sessions.access(&with_cookie(&id)), Access::None);
    }

    #[test]
    fn open_read_lets_anyone_read_but_not_act() {
        let sessions = Sessions::new(None, UiAccess::OpenRead);
        let access = sessions.access(&HeaderMap::new());
        assert_eq!(access, Access::Reader);
        assert!(access.can_read() && !access.is_admin());
        assert!(!csrf_ok(&access, Some("")));
        assert!(sessions.sign_in("anything").is_err());
    }

    #[test]
    fn guessing_the_token_is_cut_off_after_a_few_failures() {
        let sessions = Sessions::new(
            Some(Secret::new("dashboard-token-123".into())),
            UiAccess::Token,
        );
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                sessions.sign_in("guess-guess-guess"),
                Err(SignInRefused::WrongToken)
            );
        }
        assert_eq!(
            sessions.sign_in("dashboard-token-123"),
            Err(SignInRefused::TooManyFailures),
            "even the right token waits for the window"
        );
    }
}
