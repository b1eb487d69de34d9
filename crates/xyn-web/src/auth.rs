//! Authentication and authorisation.
//!
//! Open by default (a local node: every caller is the local operator). When tokens are
//! configured (`XYN_API_TOKEN`, `XYN_OWNER_TOKEN`, a tokens file), every `/api` and `/ui`
//! route needs `Authorization: Bearer <token>` or the session cookie the login page sets.
//! Three roles: **owner** (day-to-day: events, runs, drafts, artifacts, gate decisions),
//! **operator** (also `/api/internal/*` and the operator view) and **viewer** (reads
//! everything an owner reads, changes nothing: every write is a 403). The actor recorded on events is the token's
//! principal, never what a client claims.
//!
//! CSRF: every UI form post (and every API write authenticated by the session cookie rather
//! than a bearer token) must carry the `xyn_csrf` cookie's value in a `csrf` form field or an
//! `X-CSRF-Token` header (double-submit), and a cross-site `Origin` is refused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};
use xyn_core::{ErrorKind, XynError, codes};

use crate::AppState;
use crate::error::ApiError;

pub const SESSION_COOKIE: &str = "xyn_session";
pub const CSRF_COOKIE: &str = "xyn_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// A coarse role: a token carries one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Operator,
    /// Read-only: sees every page and reads the API, changes nothing (no decisions, retries,
    /// runs or events).
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "owner" => Some(Role::Owner),
            "operator" => Some(Role::Operator),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Recorded as the actor of what this principal does (`operator`, `owner:alice`).
    pub name: String,
    pub role: Role,
    /// True on an open node (no tokens configured): the caller is the local operator.
    pub open: bool,
}

impl Principal {
    pub fn local() -> Self {
        Principal {
            name: "local".into(),
            role: Role::Operator,
            open: true,
        }
    }
    pub fn is_operator(&self) -> bool {
        self.role == Role::Operator
    }
}

/// How the request was authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    Open,
    Bearer,
    Session,
}

/// The CSRF token of this browser (the `xyn_csrf` cookie), for forms.
#[derive(Clone, Debug)]
pub struct CsrfToken(pub String);

/// Configured tokens. Only their SHA-256 digests are kept.
#[derive(Clone, Debug, Default)]
pub struct AuthConfig {
    tokens: Vec<([u8; 32], Principal)>,
}

impl AuthConfig {
    /// Adds a token for a principal.
    pub fn add(&mut self, token: &str, name: &str, role: Role) -> Result<(), String> {
        let token = token.trim();
        if token.len() < 16 {
            return Err(format!(
                "the token of {name:?} is too short (at least 16 characters)"
            ));
        }
        self.tokens.push((
            digest(token),
            Principal {
                name: name.into(),
                role,
                open: false,
            },
        ));
        Ok(())
    }

    /// Parses a tokens file: one `ROLE NAME TOKEN` per line (`#` comments, blank lines).
    pub fn add_file(&mut self, text: &str) -> Result<(), String> {
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [role, name, token] = parts[..] else {
                return Err(format!(
                    "line {}: expected `ROLE NAME TOKEN` (ROLE is operator, owner or viewer)",
                    n + 1
                ));
            };
            let role = Role::parse(role).ok_or_else(|| {
                format!(
                    "line {}: role must be operator, owner or viewer, not {role:?}",
                    n + 1
                )
            })?;
            self.add(token, name, role)
                .map_err(|e| format!("line {}: {e}", n + 1))?;
        }
        Ok(())
    }

    /// Auth is on when at least one token is configured.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    pub fn lookup(&self, token: &str) -> Option<Principal> {
        let d = digest(token.trim());
        // Digests are compared, so the comparison leaks nothing about the token itself.
        self.tokens
            .iter()
            .find(|(t, _)| *t == d)
            .map(|(_, p)| p.clone())
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// A fresh random token (two v4 UUIDs: 244 random bits).
pub fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

struct Session {
    principal: Principal,
    expires: Instant,
}

/// Login sessions, in memory (a restart logs everyone out).
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    pub fn create(&self, principal: Principal) -> String {
        let id = random_token();
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        m.retain(|_, s| s.expires > now);
        m.insert(
            id.clone(),
            Session {
                principal,
                expires: now + SESSION_TTL,
            },
        );
        id
    }
    pub fn get(&self, id: &str) -> Option<Principal> {
        let m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.get(id)
            .filter(|s| s.expires > Instant::now())
            .map(|s| s.principal.clone())
    }
    pub fn remove(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

/// The value of a cookie.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

fn is_ui(path: &str) -> bool {
    path == "/" || path == "/ui" || path.starts_with("/ui/")
}

/// Whether a health probe may be answered without the full check: an open node, or a valid
/// bearer token and no cookies (cookies mean a browser, whose session and CSRF handling the
/// full check does). Any role may read health.
pub fn allows_probe(s: &AppState, headers: &HeaderMap) -> bool {
    if !s.config.auth.enabled() {
        return true;
    }
    !headers.contains_key(header::COOKIE)
        && bearer(headers).is_some_and(|t| s.config.auth.lookup(t).is_some())
}

fn is_public(path: &str) -> bool {
    path == "/ui/login" || path.starts_with("/ui/static/") || path.starts_with("/hooks/")
}

fn operator_only(path: &str) -> bool {
    path == "/metrics"
        || path.starts_with("/api/internal/")
        || path == "/ui/operator"
        || path.starts_with("/ui/operator/")
}

fn unsafe_method(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn deny(kind: ErrorKind, code: &'static str, msg: &str) -> Response {
    ApiError::from(XynError::new(kind, code, msg)).into_response()
}

/// A `Set-Cookie` value for a cookie the browser keeps for the session.
pub fn set_cookie(name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
    let age = max_age
        .map(|a| format!("; Max-Age={a}"))
        .unwrap_or_default();
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict{age}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Authenticates, authorises and checks CSRF; puts the [`Principal`] (and for the UI the
/// [`CsrfToken`]) into the request's extensions. Returns the request to go on with and a new
/// CSRF token to set as a cookie, or the refusal.
pub async fn check(s: &AppState, req: Request) -> Result<(Request, Option<String>), Box<Response>> {
    decide(s, req).await.map_err(Box::new)
}

// Refusals are rare: the boxing happens once, in `check`.
#[allow(clippy::result_large_err)]
async fn decide(s: &AppState, mut req: Request) -> Result<(Request, Option<String>), Response> {
    // Webhooks authenticate by their source's own scheme (in the handler), never by API
    // tokens or sessions.
    if req.uri().path().starts_with("/hooks/") {
        req.extensions_mut().insert(Principal {
            name: "anonymous".into(),
            role: Role::Owner,
            open: false,
        });
        req.extensions_mut().insert(AuthMethod::Open);
        return Ok((req, None));
    }
    // The common case, cheaply: an open node, an API request.
    let ui = is_ui(req.uri().path());
    if !ui && !s.config.auth.enabled() {
        req.extensions_mut().insert(Principal::local());
        req.extensions_mut().insert(AuthMethod::Open);
        return Ok((req, None));
    }
    let path = req.uri().path().to_string();
    let method = req.method().clone();

    // The browser's CSRF token: kept from its cookie, or made now and set on the response.
    let existing_csrf = cookie(req.headers(), CSRF_COOKIE).map(str::to_string);
    let new_csrf = (ui && existing_csrf.is_none()).then(random_token);
    let csrf = existing_csrf.clone().or_else(|| new_csrf.clone());
    if let Some(c) = &csrf {
        req.extensions_mut().insert(CsrfToken(c.clone()));
    }

    let (principal, method_used) = if !s.config.auth.enabled() {
        (Some(Principal::local()), AuthMethod::Open)
    } else if let Some(t) = bearer(req.headers()) {
        let client = req
            .extensions()
            .get::<crate::ratelimit::ClientAddr>()
            .map(|c| c.0);
        // Over the limit, no token is even looked at (a right guess would not help).
        if let Err(wait) = s.limiter.check(client) {
            return Err(rate_limited(wait));
        }
        match s.config.auth.lookup(t) {
            Some(p) => (Some(p), AuthMethod::Bearer),
            None => {
                crate::ratelimit::note_failure(s, client, "bearer").await;
                return Err(with_www_authenticate(deny(
                    ErrorKind::Unauthorized,
                    codes::AUTH_INVALID_TOKEN,
                    "the bearer token is not valid on this node",
                )));
            }
        }
    } else if let Some(p) = cookie(req.headers(), SESSION_COOKIE).and_then(|id| s.sessions.get(id))
    {
        (Some(p), AuthMethod::Session)
    } else {
        (None, AuthMethod::Open)
    };

    let principal = match principal {
        Some(p) => p,
        None if is_public(&path) => Principal {
            name: "anonymous".into(),
            role: Role::Owner,
            open: false,
        },
        None if ui && !unsafe_method(&method) => {
            let next_path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/ui/events".into());
            let to = format!("/ui/login?next={}", urlencode(&next_path));
            return Err(Redirect::to(&to).into_response());
        }
        None => {
            return Err(with_www_authenticate(deny(
                ErrorKind::Unauthorized,
                codes::AUTH_REQUIRED,
                "authentication required: send `Authorization: Bearer <token>` or log in at /ui/login",
            )));
        }
    };

    if operator_only(&path) && !principal.is_operator() {
        let message = format!(
            "{} needs the operator role; {} is {}",
            path,
            principal.name,
            principal.role.as_str()
        );
        // A person in the browser gets a page (with the navigation they may use), not JSON.
        if ui {
            return Err(crate::ui::UiError::refused(
                StatusCode::FORBIDDEN,
                codes::AUTH_FORBIDDEN,
                &format!(
                    "This page is for operators; you are signed in as {} ({}).",
                    principal.name,
                    principal.role.as_str()
                ),
            )
            .page(Some(&principal)));
        }
        return Err(deny(ErrorKind::Forbidden, codes::AUTH_FORBIDDEN, &message));
    }

    // A viewer reads; logging in and out is all it may post.
    if principal.role == Role::Viewer
        && unsafe_method(&method)
        && !is_public(&path)
        && path != "/ui/logout"
    {
        return Err(deny(
            ErrorKind::Forbidden,
            codes::AUTH_FORBIDDEN,
            &format!(
                "{} {} changes the node; {} is a viewer (read-only)",
                method, path, principal.name
            ),
        ));
    }

    let needs_csrf =
        unsafe_method(&method) && (ui || (method_used == AuthMethod::Session && !is_public(&path)));
    if needs_csrf {
        if let Some(origin) = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            && origin != "null"
        {
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
            if origin_host != host {
                return Err(deny(
                    ErrorKind::Forbidden,
                    codes::AUTH_CSRF,
                    "cross-site request refused (Origin does not match Host)",
                ));
            }
        }
        let expected = existing_csrf.unwrap_or_default();
        let (parts, body) = req.into_parts();
        let given_header = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let (given, body) = match given_header {
            Some(g) => (Some(g), body),
            None => {
                let is_form = parts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
                if is_form {
                    match axum::body::to_bytes(body, s.config.max_body_bytes).await {
                        Ok(bytes) => {
                            let field =
                                serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
                                    .ok()
                                    .and_then(|v| {
                                        v.into_iter().find(|(k, _)| k == "csrf").map(|(_, v)| v)
                                    });
                            (field, Body::from(bytes))
                        }
                        Err(_) => {
                            return Err(deny(
                                ErrorKind::TooLarge,
                                codes::REQUEST_TOO_LARGE,
                                "the request body is larger than the limit",
                            ));
                        }
                    }
                } else {
                    (None, body)
                }
            }
        };
        if expected.is_empty() || given.as_deref() != Some(expected.as_str()) {
            return Err(deny(
                ErrorKind::Forbidden,
                codes::AUTH_CSRF,
                "missing or wrong CSRF token: reload the page and try again",
            ));
        }
        req = Request::from_parts(parts, body);
    }

    req.extensions_mut().insert(principal);
    req.extensions_mut().insert(method_used);
    Ok((req, new_csrf))
}

/// 429 `auth.rate_limited` with `Retry-After`.
pub fn rate_limited(wait: Duration) -> Response {
    let mut r = crate::error::status_error(
        StatusCode::TOO_MANY_REQUESTS,
        codes::AUTH_RATE_LIMITED,
        format!(
            "too many failed logins or tokens; retry in {} s",
            wait.as_secs()
        ),
    );
    if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

fn with_www_authenticate(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"xyn\""),
    );
    debug_assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    r
}

/// Percent-encodes a query value.
pub fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("v", s)])
        .map(|x| x.trim_start_matches("v=").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_file_lines_roles_and_errors() {
        let mut a = AuthConfig::default();
        assert!(!a.enabled());
        a.add_file(
            "# comment\n\noperator alice 0123456789abcdef0\nowner bob   fedcba98765432100\n",
        )
        .unwrap();
        assert!(a.enabled());
        let p = a.lookup("0123456789abcdef0").unwrap();
        assert_eq!(
            (p.name.as_str(), p.role, p.open),
            ("alice", Role::Operator, false)
        );
        assert_eq!(a.lookup(" fedcba98765432100 ").unwrap().role, Role::Owner);
        assert!(a.lookup("0123456789abcdef").is_none());
        let e = AuthConfig::default()
            .add_file("admin x 0123456789abcdef0")
            .unwrap_err();
        assert!(
            e.contains("line 1") && e.contains("operator, owner or viewer"),
            "{e}"
        );
        let e = AuthConfig::default().add_file("owner x short").unwrap_err();
        assert!(e.contains("too short"), "{e}");
        let e = AuthConfig::default().add_file("owner x").unwrap_err();
        assert!(e.contains("ROLE NAME TOKEN"), "{e}");
    }

    #[test]
    fn cookies_are_found_among_several_headers() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; xyn_csrf=tok"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("xyn_session=s1"));
        assert_eq!(cookie(&h, CSRF_COOKIE), Some("tok"));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("s1"));
        assert_eq!(cookie(&h, "missing"), None);
    }

    #[test]
    fn sessions_expire_on_removal_and_are_random() {
        let s = Sessions::default();
        let id = s.create(Principal::local());
        assert_eq!(id.len(), 64);
        assert_ne!(id, s.create(Principal::local()));
        assert!(s.get(&id).is_some());
        s.remove(&id);
        assert!(s.get(&id).is_none());
    }

    #[test]
    fn route_classes() {
        assert!(operator_only("/api/internal/stats"));
        assert!(operator_only("/ui/operator/audit"));
        assert!(operator_only("/metrics"));
        assert!(!operator_only("/api/v1/events"));
        assert!(is_public("/hooks/x") && is_public("/ui/login") && is_public("/ui/static/app.css"));
        assert!(!is_public("/ui/events"));
        assert_eq!(
            urlencode("/ui/runs?status=failed"),
            "%2Fui%2Fruns%3Fstatus%3Dfailed"
        );
    }
}
