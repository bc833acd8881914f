//! mshttpd: the HTTP front end of the message store: the webmail page (static assets embedded
//! in the binary) and JMAP (RFC 8620 core, RFC 8621 mail and submission) over `store-client`.
//!
//! [`router`] builds the whole HTTP application; [`serve_connection`] runs one HTTP/1.1
//! connection (one "session" for the descriptor check and the session cap) on it, with the
//! peer address and the connection's telemetry capture attached to every request.
//!
//! Compression follows the two seed switches independently: `local.service.http.gzip.static`
//! serves assets from gzip copies made once, `local.service.http.gzip.dynamic` compresses
//! JMAP and other generated responses on the fly; both honour `Accept-Encoding` and send
//! `Vary: Accept-Encoding`, a distinct ETag for the gzip variant and the right Content-Length.

mod accounts;
mod assets;
mod auth;
mod capture;
mod compress;
pub mod jmap;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use store_client::StoreClient;
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;
use tracing::{debug, info};

pub use accounts::{reap_deleted_users, remove_user_files, watch_deleted_users};
pub use auth::{CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE};

/// What the server is told by msg.conf and its command line.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `local.service.http.gzip.static`.
    pub gzip_static: bool,
    /// `local.service.http.gzip.dynamic`.
    pub gzip_dynamic: bool,
    /// `local.service.http.smtprelay`: host:port EmailSubmission hands mail to; None = no
    /// relay, submissions are refused with `forbidden`.
    pub smtp_relay: Option<String>,
    /// Delay before answering a failed login.
    pub auth_fail_delay: Duration,
    /// Failed logins from one address within [`auth::FAILURE_WINDOW`] before it is refused.
    pub max_auth_failures: usize,
    /// A web session ends after this long unused.
    pub session_idle: Duration,
    /// JMAP `maxSizeRequest`.
    pub max_size_request: usize,
    /// JMAP `maxSizeUpload`.
    pub max_size_upload: usize,
    /// JMAP `maxConcurrentRequests` (per account).
    pub max_concurrent_requests: usize,
    /// JMAP `maxConcurrentUpload` (per account).
    pub max_concurrent_upload: usize,
    /// Seconds an idle keep-alive connection is kept.
    pub idle_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            gzip_static: true,
            gzip_dynamic: true,
            smtp_relay: None,
            auth_fail_delay: Duration::from_millis(1000),
            max_auth_failures: 10,
            session_idle: Duration::from_secs(2 * 3600),
            max_size_request: 10 * 1024 * 1024,
            max_size_upload: 20 * 1024 * 1024,
            max_concurrent_requests: 8,
            max_concurrent_upload: 4,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// Everything the handlers share: the store, settings, web sessions, uploads.
pub struct HttpContext {
    pub(crate) root: PathBuf,
    pub(crate) client: StoreClient,
    pub(crate) settings: Settings,
    pub(crate) auth: auth::Auth,
    pub(crate) blobs: Arc<jmap::blob::BlobStore>,
    pub(crate) assets: assets::Assets,
    /// `maxConcurrentRequests`, per account.
    pub(crate) requests: jmap::limits::Slots,
    /// `maxConcurrentUpload`, per account.
    pub(crate) uploads: jmap::limits::Slots,
    /// EmailSubmission records kept per user.
    pub(crate) submissions: jmap::submission::Journal,
    /// What folders held at the states handed out (Email/changes across deletions and
    /// compactions).
    pub(crate) ledger: jmap::Ledger,
}

impl HttpContext {
    /// Opens the store of the instance at `root`.
    pub async fn open(
        root: &Path,
        settings: Settings,
    ) -> Result<HttpContext, store_client::ClientError> {
        let client = StoreClient::open(root).await?;
        Ok(HttpContext {
            root: root.to_path_buf(),
            client,
            auth: auth::Auth::new(&settings),
            blobs: Arc::new(jmap::blob::BlobStore::open(root, settings.max_size_upload)),
            assets: assets::Assets::new(),
            requests: jmap::limits::Slots::new(settings.max_concurrent_requests),
            uploads: jmap::limits::Slots::new(settings.max_concurrent_upload),
            submissions: jmap::submission::Journal::new(root),
            ledger: jmap::Ledger::default(),
            settings,
        })
    }
}

/// Per-connection facts every request carries (request extension).
#[derive(Clone)]
pub(crate) struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    pub capture: capture::ConnCapture,
}

/// The HTTP application: assets, login, JMAP.
pub fn router(ctx: Arc<HttpContext>) -> Router {
    let dynamic = Router::new()
        .route("/login", post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/.well-known/jmap", get(jmap::well_known))
        .route("/jmap/session", get(jmap::session_resource))
        .route("/jmap/api", post(jmap::api))
        .route("/jmap/api/", post(jmap::api))
        .route("/jmap/upload/{account}", post(jmap::blob::upload))
        .route("/jmap/upload/{account}/", post(jmap::blob::upload))
        .route(
            "/jmap/download/{account}/{blob}/{name}",
            get(jmap::blob::download),
        )
        .route("/jmap/eventsource", get(jmap::push::eventsource))
        .layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            compress::dynamic,
        ));
    let statics = Router::new()
        .route("/", get(assets::index))
        .route("/assets/{*path}", get(assets::asset));
    Router::new()
        .merge(dynamic)
        .merge(statics)
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            capture::record,
        ))
        .with_state(ctx)
}

async fn not_found() -> axum::response::Response {
    compress::plain(axum::http::StatusCode::NOT_FOUND, "not found\n")
}

/// Serves one HTTP/1.1 connection (keep-alive, pipelining) until the client closes it, it
/// stays idle past the idle timeout, or it breaks.
pub async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    tls: bool,
    app: Router,
    ctx: Arc<HttpContext>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let info = ConnInfo {
        peer,
        tls,
        capture: capture::ConnCapture::default(),
    };
    let conn_capture = info.capture.clone();
    // hyper times out only the headers: a body that stops arriving fails its request after
    // the same idle time, which frees the connection and the account's request or upload slot.
    let body_idle = ctx.settings.idle_timeout;
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(info.clone());
            let app = app.clone();
            let req = req.map(|b| axum::body::Body::new(TimeoutBody::new(body_idle, b)));
            async move { app.oneshot(req).await }
        });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.settings.idle_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = conn.await {
        debug!("connection from {peer}: {e}");
    }
    conn_capture.finish();
}

/// The answer at the session cap: 503 and close.
pub async fn busy<S: tokio::io::AsyncWrite + Unpin>(stream: &mut S) {
    use tokio::io::AsyncWriteExt;
    info!("session limit reached: connection refused");
    let body = "too many sessions, try again later\n";
    let msg = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nRetry-After: 5\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(msg.as_bytes()).await;
    let _ = stream.shutdown().await;
}
