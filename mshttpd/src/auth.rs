//! Who is asking: the login form and its session cookies, HTTP Basic and Bearer
//! authentication for JMAP clients, the CSRF check for cookie-authenticated writes, and the
//! per-address limit on failed logins.
//!
//! A web session is a random 256-bit token (the `msg_session` cookie, HttpOnly, or the
//! Bearer token) mapped in memory to the user's store session; a second random value,
//! `msg_csrf`, readable by the page's script, must come back in `X-CSRF-Token` on every
//! cookie-authenticated request that is not a GET, so another site cannot make the browser
//! act for the user (SameSite=Strict is the first line, the token the second).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use base64::Engine;
use store_client::{ClientError, Secret};

use crate::compress::json;
use crate::{ConnInfo, HttpContext, Settings};

/// The session cookie (HttpOnly).
pub const SESSION_COOKIE: &str = "msg_session";
/// The CSRF cookie (readable by the page's script).
pub const CSRF_COOKIE: &str = "msg_csrf";
/// The header a cookie-authenticated write must carry, equal to the CSRF cookie.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Failed logins are counted over this window.
pub(crate) const FAILURE_WINDOW: Duration = Duration::from_secs(600);
/// Web sessions held at once, at most (least recently used dropped first).
const MAX_SESSIONS: usize = 100_000;

struct WebSession {
    user: String,
    csrf: String,
    session: store_client::Session,
    last: Instant,
}

/// Web sessions and failed-login counts.
pub(crate) struct Auth {
    sessions: Mutex<HashMap<String, WebSession>>,
    failures: service_runtime::AuthFailures,
    idle: Duration,
    delay: Duration,
}

/// An authenticated request.
#[derive(Clone)]
pub(crate) struct Authed {
    pub user: String,
    pub session: store_client::Session,
}

/// The user a response was made for: the telemetry capture looks for it.
#[derive(Clone)]
pub(crate) struct CaptureUser(pub String);

fn random_token() -> String {
    let mut b = [0u8; 32];
    if getrandom::getrandom(&mut b).is_err() {
        // No system randomness: refuse to mint a guessable token.
        return String::new();
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Constant-time comparison, so a token cannot be guessed byte by byte from timings.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A cookie's value from the request's Cookie headers.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    for v in headers.get_all(header::COOKIE) {
        let Ok(s) = v.to_str() else { continue };
        for pair in s.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=') {
                if k.trim() == name {
                    return Some(v.trim().trim_matches('"').to_owned());
                }
            }
        }
    }
    None
}

impl Auth {
    pub(crate) fn new(s: &Settings) -> Auth {
        Auth {
            sessions: Mutex::new(HashMap::new()),
            failures: service_runtime::AuthFailures::new(s.max_auth_failures, FAILURE_WINDOW),
            idle: s.session_idle,
            delay: s.auth_fail_delay,
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, WebSession>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Too many recent failures from this address: refuse without checking.
    fn blocked(&self, ip: IpAddr) -> bool {
        self.failures.locked_out(ip)
    }

    async fn failed(&self, ip: IpAddr) {
        self.failures.record(ip);
        tokio::time::sleep(self.delay).await;
    }

    /// Checks a password (login form, Basic), counting failures per address.
    pub(crate) async fn check_password(
        &self,
        ctx: &HttpContext,
        ip: IpAddr,
        user: &str,
        password: &str,
    ) -> Result<store_client::Session, StatusCode> {
        if self.blocked(ip) {
            tracing::warn!("login refused for {ip}: too many failed attempts");
            tokio::time::sleep(self.delay).await;
            return Err(StatusCode::TOO_MANY_REQUESTS);
        }
        match ctx
            .client
            .authenticate(user, &Secret::new(password.to_owned()))
            .await
        {
            Ok(s) => {
                tracing::info!("login: {} from {ip}", s.user());
                Ok(s)
            }
            Err(ClientError::AuthenticationFailed) | Err(ClientError::InvalidArgument(_)) => {
                tracing::info!("failed login for {user:?} from {ip}");
                self.failed(ip).await;
                Err(StatusCode::UNAUTHORIZED)
            }
            Err(e) => {
                tracing::error!("login for {user:?}: {e}");
                Err(StatusCode::SERVICE_UNAVAILABLE)
            }
        }
    }

    fn create(&self, session: store_client::Session) -> Option<(String, String)> {
        let token = random_token();
        let csrf = random_token();
        if token.is_empty() || csrf.is_empty() {
            return None;
        }
        let now = Instant::now();
        let mut map = self.sessions();
        let idle = self.idle;
        map.retain(|_, w| now.duration_since(w.last) <= idle);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, w)| w.last)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            token.clone(),
            WebSession {
                user: session.user().to_owned(),
                csrf: csrf.clone(),
                session,
                last: now,
            },
        );
        Some((token, csrf))
    }

    fn lookup(&self, token: &str) -> Option<(Authed, String)> {
        let now = Instant::now();
        let mut map = self.sessions();
        let w = map.get_mut(token)?;
        if now.duration_since(w.last) > self.idle {
            map.remove(token);
            return None;
        }
        w.last = now;
        Some((
            Authed {
                user: w.user.clone(),
                session: w.session.clone(),
            },
            w.csrf.clone(),
        ))
    }

    fn remove(&self, token: &str) {
        self.sessions().remove(token);
    }
}

/// 401 with a JSON problem body and the Basic challenge.
pub(crate) fn unauthorized(detail: &str) -> Response {
    let mut r = json(
        StatusCode::UNAUTHORIZED,
        &serde_json::json!({"type": "about:blank", "status": 401, "detail": detail}),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"mshttpd\", charset=\"UTF-8\""),
    );
    r
}

fn problem(status: StatusCode, detail: &str) -> Response {
    json(
        status,
        &serde_json::json!({"type": "about:blank", "status": status.as_u16(), "detail": detail}),
    )
}

/// Authenticates a request by Basic, Bearer or the session cookie; cookie-authenticated
/// requests other than GET and HEAD must carry the CSRF token.
pub(crate) async fn authenticate(
    ctx: &HttpContext,
    method: &Method,
    headers: &HeaderMap,
    ip: IpAddr,
) -> Result<Authed, Response> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v
            .to_str()
            .map_err(|_| unauthorized("malformed Authorization header"))?;
        let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| unauthorized("malformed Basic credentials"))?;
            let (user, pass) = decoded
                .split_once(':')
                .ok_or_else(|| unauthorized("malformed Basic credentials"))?;
            return match ctx.auth.check_password(ctx, ip, user, pass).await {
                Ok(session) => Ok(Authed {
                    user: session.user().to_owned(),
                    session,
                }),
                Err(StatusCode::UNAUTHORIZED) => Err(unauthorized("invalid credentials")),
                Err(StatusCode::TOO_MANY_REQUESTS) => Err(problem(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many failed logins, try again later",
                )),
                Err(s) => Err(problem(s, "authentication unavailable")),
            };
        }
        if scheme.eq_ignore_ascii_case("bearer") {
            return match ctx.auth.lookup(rest.trim()) {
                Some((a, _)) => Ok(a),
                None => Err(unauthorized("invalid or expired token")),
            };
        }
        return Err(unauthorized("unsupported authentication scheme"));
    }
    let Some(token) = cookie(headers, SESSION_COOKIE) else {
        return Err(unauthorized("authentication required"));
    };
    let Some((a, csrf)) = ctx.auth.lookup(&token) else {
        // A browser whose session cookie outlived its session: no Basic challenge, or the
        // browser would put up its own password prompt over the page's sign-in form.
        let mut r = unauthorized("session expired");
        r.headers_mut().remove(header::WWW_AUTHENTICATE);
        return Err(r);
    };
    if method != Method::GET && method != Method::HEAD {
        let sent = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !same(sent, &csrf) {
            return Err(problem(
                StatusCode::FORBIDDEN,
                "missing or wrong X-CSRF-Token",
            ));
        }
    }
    Ok(a)
}

#[derive(serde::Deserialize)]
pub(crate) struct LoginForm {
    username: String,
    password: String,
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

fn redirect(to: &'static str) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SEE_OTHER;
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn set_cookie(r: &mut Response, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// `POST /login` (urlencoded `username`, `password`).
pub(crate) async fn login(
    State(ctx): State<Arc<HttpContext>>,
    Extension(conn): Extension<ConnInfo>,
    headers: HeaderMap,
    form: Result<axum::Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(axum::Form(form)) = form else {
        return problem(
            StatusCode::BAD_REQUEST,
            "expected a form with username and password",
        );
    };
    let ip = conn.peer.ip();
    let outcome = ctx
        .auth
        .check_password(&ctx, ip, &form.username, &form.password)
        .await;
    let session = match outcome {
        Ok(s) => s,
        Err(status) => {
            if wants_json(&headers) {
                let detail = match status {
                    StatusCode::TOO_MANY_REQUESTS => "too many failed logins, try again later",
                    StatusCode::UNAUTHORIZED => "invalid username or password",
                    _ => "authentication unavailable",
                };
                return problem(status, detail);
            }
            return redirect("/?error=login");
        }
    };
    let user = session.user().to_owned();
    let Some((token, csrf)) = ctx.auth.create(session) else {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "no randomness for a session",
        );
    };
    let secure = if conn.tls { "; Secure" } else { "" };
    let mut r = redirect("/");
    set_cookie(
        &mut r,
        format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}"),
    );
    set_cookie(
        &mut r,
        format!("{CSRF_COOKIE}={csrf}; Path=/; SameSite=Strict{secure}"),
    );
    r.extensions_mut().insert(CaptureUser(user));
    r
}

/// `POST /logout` (cookie and X-CSRF-Token).
pub(crate) async fn logout(
    State(ctx): State<Arc<HttpContext>>,
    Extension(conn): Extension<ConnInfo>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let authed = match authenticate(&ctx, &method, &headers, conn.peer.ip()).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        ctx.auth.remove(&token);
    }
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(t) = v.strip_prefix("Bearer ") {
            ctx.auth.remove(t.trim());
        }
    }
    let secure = if conn.tls { "; Secure" } else { "" };
    let mut r = redirect("/");
    set_cookie(
        &mut r,
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    );
    set_cookie(
        &mut r,
        format!("{CSRF_COOKIE}=; Path=/; SameSite=Strict; Max-Age=0{secure}"),
    );
    r.extensions_mut().insert(CaptureUser(authed.user));
    r
}
