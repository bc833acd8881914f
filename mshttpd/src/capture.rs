//! Telemetry capture of HTTP sessions (one TCP connection = one session), in the seed's
//! format, for users with a `data/telemetry/http/<userid>/` directory: each request and
//! response as the client and server sent them, with credentials (Authorization, Cookie,
//! Set-Cookie, the login form's password) replaced by `***`. Bodies are recorded up to
//! [`BODY_LIMIT`] bytes; event streams by their head only.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use tracing::warn;

use crate::auth::CaptureUser;
use crate::compress::json;
use crate::{ConnInfo, HttpContext};

/// Bytes of a body recorded, at most.
const BODY_LIMIT: usize = 64 * 1024;
/// Capture buffer: small, so a capture never holds much of a session in memory.
const CAPTURE_BUFFER: usize = 16 * 1024;

struct Capture {
    writer: telemetry::CaptureWriter<std::fs::File>,
    path: PathBuf,
    user: String,
}

/// The capture of one connection, once a user with a telemetry directory logged in.
#[derive(Clone, Default)]
pub(crate) struct ConnCapture(Arc<Mutex<Option<Capture>>>);

impl ConnCapture {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Capture>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn active(&self) -> bool {
        self.lock().is_some()
    }

    /// Writes out what is buffered (the connection ended).
    pub(crate) fn finish(&self) {
        if let Some(mut c) = self.lock().take() {
            if let Err(e) = c.writer.flush() {
                warn!("telemetry capture {}: {e}", c.path.display());
            }
        }
    }

    fn start(&self, root: &std::path::Path, user: &str) {
        let mut guard = self.lock();
        if guard.as_ref().is_some_and(|c| c.user == user) {
            return;
        }
        let dir = root.join("data").join("telemetry").join("http").join(user);
        if !dir.is_dir() {
            return;
        }
        let now = SystemTime::now();
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("{secs}-{}-{seq}", std::process::id()));
        let file = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) => {
                warn!("telemetry capture {}: cannot create: {e}", path.display());
                return;
            }
        };
        let mut writer = telemetry::CaptureWriter::with_buffer_limit(file, CAPTURE_BUFFER);
        if let Err(e) = writer.login(user, now, Instant::now()) {
            warn!("telemetry capture {}: {e}", path.display());
            return;
        }
        if let Some(mut old) = guard.take() {
            let _ = old.writer.flush();
        }
        *guard = Some(Capture {
            writer,
            path,
            user: user.to_owned(),
        });
    }

    fn write(&self, dir: telemetry::Direction, data: &[u8]) {
        let mut guard = self.lock();
        let Some(c) = guard.as_mut() else { return };
        if let Err(e) = c.writer.record(dir, data, Instant::now()) {
            warn!("telemetry capture {}: {e}", c.path.display());
            *guard = None;
        }
    }
}

fn redacted_headers(out: &mut Vec<u8>, headers: &HeaderMap) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        if name == header::AUTHORIZATION
            || name == header::COOKIE
            || name == header::SET_COOKIE
            || name.as_str() == crate::auth::CSRF_HEADER
        {
            out.extend_from_slice(b"***");
        } else {
            out.extend_from_slice(value.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The login form with its password replaced.
fn redact_login(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, pair) in body.split(|&b| b == b'&').enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        if pair.starts_with(b"password=") {
            out.extend_from_slice(b"password=***");
        } else {
            out.extend_from_slice(pair);
        }
    }
    out
}

fn too_large(path: &str) -> Response {
    let limit = if path.starts_with("/jmap/upload") {
        "maxSizeUpload"
    } else {
        "maxSizeRequest"
    };
    json(
        StatusCode::PAYLOAD_TOO_LARGE,
        &serde_json::json!({
            "type": "urn:ietf:params:jmap:error:limit",
            "limit": limit,
            "status": 413,
            "detail": "the request body is larger than the server accepts",
        }),
    )
}

/// What a body carried: its first [`BODY_LIMIT`] bytes and its length.
#[derive(Default)]
struct Seen {
    head: Vec<u8>,
    total: usize,
}

impl Seen {
    fn push(&mut self, chunk: &[u8]) {
        let room = BODY_LIMIT.saturating_sub(self.head.len());
        self.head.extend_from_slice(&chunk[..chunk.len().min(room)]);
        self.total += chunk.len();
    }

    fn record(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.head);
        if self.total > self.head.len() {
            out.extend_from_slice(
                format!(
                    "\r\n[{} more bytes not recorded]\r\n",
                    self.total - self.head.len()
                )
                .as_bytes(),
            );
        }
    }
}

type Shared = Arc<Mutex<Seen>>;

fn seen(s: &Shared) -> std::sync::MutexGuard<'_, Seen> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// `body` as it streams, its first bytes noted in `into`: a request or response is never
/// held whole for the capture's sake.
fn tee(body: Body, into: Shared) -> Body {
    use futures_util::StreamExt;
    Body::from_stream(body.into_data_stream().map(move |chunk| {
        if let Ok(c) = &chunk {
            seen(&into).push(c);
        }
        chunk
    }))
}

/// Writes a response's record once its body has been sent (or dropped).
struct ResponseRecord {
    capture: ConnCapture,
    head: Vec<u8>,
    body: Shared,
}

impl Drop for ResponseRecord {
    fn drop(&mut self) {
        let mut out = std::mem::take(&mut self.head);
        seen(&self.body).record(&mut out);
        self.capture.write(telemetry::Direction::Server, &out);
    }
}

/// Runs the request with its body streamed through (the login form, small and in need of
/// redaction, is read first), and records both sides when the connection's user is
/// captured.
pub(crate) async fn record(
    State(ctx): State<Arc<HttpContext>>,
    req: Request,
    next: Next,
) -> Response {
    let conn = req.extensions().get::<ConnInfo>().cloned();
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let mut head = format!(
        "{} {} {:?}\r\n",
        parts.method,
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/"),
        parts.version
    )
    .into_bytes();
    redacted_headers(&mut head, &parts.headers);
    let request_body: Shared = Arc::default();
    let body = if path == "/login" {
        let body = match axum::body::to_bytes(body, ctx.settings.max_size_request).await {
            Ok(b) => b,
            Err(_) => return too_large(&path),
        };
        seen(&request_body).push(&redact_login(&body));
        Body::from(body)
    } else {
        tee(body, request_body.clone())
    };
    let resp = next.run(Request::from_parts(parts, body)).await;
    let Some(conn) = conn else { return resp };
    if let Some(CaptureUser(user)) = resp.extensions().get::<CaptureUser>() {
        conn.capture.start(&ctx.root, user);
    }
    if !conn.capture.active() {
        return resp;
    }
    // The handler has finished with the request body: what it read is what was recorded.
    seen(&request_body).record(&mut head);
    conn.capture.write(telemetry::Direction::Client, &head);
    let (parts, body) = resp.into_parts();
    let mut out = format!("HTTP/1.1 {}\r\n", parts.status).into_bytes();
    redacted_headers(&mut out, &parts.headers);
    let streaming = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    if streaming {
        conn.capture.write(telemetry::Direction::Server, &out);
        return Response::from_parts(parts, body);
    }
    let (mut parts, body) = (parts, body);
    // A streamed body has no length of its own: keep the one the response had (a 304 or
    // 204 carries none).
    let bodiless = matches!(
        parts.status,
        StatusCode::NOT_MODIFIED | StatusCode::NO_CONTENT
    );
    if let Some(len) = axum::body::HttpBody::size_hint(&body)
        .exact()
        .filter(|_| !bodiless)
    {
        parts
            .headers
            .entry(header::CONTENT_LENGTH)
            .or_insert(axum::http::HeaderValue::from(len));
    }
    let shared: Shared = Arc::default();
    let record = ResponseRecord {
        capture: conn.capture.clone(),
        head: out,
        body: shared.clone(),
    };
    use futures_util::StreamExt;
    let stream = body.into_data_stream().map(move |chunk| {
        // Owned by the stream: dropped, and so written, when the body is done.
        let _record = &record;
        if let Ok(c) = &chunk {
            seen(&shared).push(c);
        }
        chunk
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_password_is_redacted() {
        assert_eq!(
            redact_login(b"username=joe&password=s3cret&x=1"),
            b"username=joe&password=***&x=1".to_vec()
        );
    }
}
