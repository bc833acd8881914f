//! Blob upload and download (RFC 8620 6). An upload is streamed to a file under
//! `data/http/uploads/<user>/` as it arrives, with maxSizeUpload enforced while it streams
//! (a partial file is removed), and is kept for an hour (across restarts too: expiry goes
//! by the file's age); downloads stream from the file. Stored messages and their parts are
//! blobs by id without being copied.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::ids::{parse_blob_id, BlobRef};
use super::{email, request_error, Req};
use crate::auth::{authenticate, CaptureUser};
use crate::compress::json as json_response;
use crate::{ConnInfo, HttpContext};

/// Uploads expire after this long (RFC 8620 6.1: at least an hour).
const UPLOAD_TTL: Duration = Duration::from_secs(3600);
/// Suffix of an upload still being received.
const PARTIAL: &str = ".part";

/// Why an upload was not kept.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadError {
    #[error("the upload is larger than maxSizeUpload")]
    TooLarge,
    #[error("the upload was not received whole: {0}")]
    Body(String),
    #[error("the upload cannot be stored: {0}")]
    Io(#[from] std::io::Error),
}

/// Uploaded blobs: one file per upload, one directory per user.
pub(crate) struct BlobStore {
    dir: PathBuf,
    max_upload: usize,
    /// Bytes of live uploads one user may hold on disk: the oldest go first past it.
    budget: u64,
}

/// A directory name for a user id: the id itself when it is plainly safe as one, else hex.
pub(crate) fn user_dir_name(user: &str) -> String {
    let plain = !user.is_empty()
        && user.len() <= 200
        && !user.starts_with('.')
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b));
    if plain {
        user.to_owned()
    } else {
        let hex: String = user.bytes().map(|b| format!("{b:02x}")).collect();
        format!("~{hex}")
    }
}

/// Upload tokens are 32 lower-case hex digits: nothing else ever becomes a path.
fn valid_token(token: &str) -> bool {
    token.len() == 32
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn age(meta: &std::fs::Metadata) -> Duration {
    meta.modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or_default()
}

impl BlobStore {
    /// The uploads of the instance at `root`; expired and partial uploads left by an earlier
    /// run are removed.
    pub(crate) fn open(root: &FsPath, max_upload: usize) -> BlobStore {
        let store = BlobStore {
            dir: root.join("data").join("http").join("uploads"),
            max_upload,
            budget: (max_upload as u64).saturating_mul(8).max(64 * 1024 * 1024),
        };
        if let Ok(users) = std::fs::read_dir(&store.dir) {
            for u in users.flatten() {
                store.sweep(&u.path(), true);
            }
        }
        store
    }

    fn user_dir(&self, user: &str) -> PathBuf {
        self.dir.join(user_dir_name(user))
    }

    fn path(&self, user: &str, token: &str) -> Option<PathBuf> {
        valid_token(token).then(|| self.user_dir(user).join(token))
    }

    /// Removes a user's expired uploads (and partial ones when `partials`, i.e. at start),
    /// then the oldest while the rest exceed the budget.
    fn sweep(&self, dir: &FsPath, partials: bool) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut live = Vec::new();
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            let name = e.file_name();
            let partial = name.to_string_lossy().ends_with(PARTIAL);
            let expired = age(&meta) >= UPLOAD_TTL;
            if expired || (partial && partials) {
                if let Err(err) = std::fs::remove_file(e.path()) {
                    tracing::warn!("upload {}: cannot remove: {err}", e.path().display());
                }
            } else if !partial {
                live.push((meta.modified().ok(), meta.len(), e.path()));
            }
        }
        let mut total: u64 = live.iter().map(|(_, len, _)| len).sum();
        live.sort();
        for (_, len, path) in live {
            if total <= self.budget {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }

    /// Streams `body` into a new upload of `user`'s; returns its token and size.
    pub(crate) async fn receive(
        self: &Arc<Self>,
        user: &str,
        body: Body,
    ) -> Result<(String, u64), UploadError> {
        let mut r = [0u8; 16];
        getrandom::getrandom(&mut r).map_err(|e| std::io::Error::other(e.to_string()))?;
        let token: String = r.iter().map(|b| format!("{b:02x}")).collect();
        let dir = self.user_dir(user);
        tokio::fs::create_dir_all(&dir).await?;
        let partial = dir.join(format!("{token}{PARTIAL}"));
        let result = self.write_body(&partial, body).await;
        let size = match result {
            Ok(size) => size,
            Err(e) => {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(e);
            }
        };
        if let Err(e) = tokio::fs::rename(&partial, dir.join(&token)).await {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e.into());
        }
        let this = self.clone();
        // Expiry and the per-user budget are kept on every upload, off the async threads.
        let _ = tokio::task::spawn_blocking(move || this.sweep(&dir, false)).await;
        Ok((token, size))
    }

    async fn write_body(&self, path: &FsPath, body: Body) -> Result<u64, UploadError> {
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .await?;
        let mut stream = body.into_data_stream();
        let mut size: u64 = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| UploadError::Body(e.to_string()))?;
            size += chunk.len() as u64;
            if size > self.max_upload as u64 {
                return Err(UploadError::TooLarge);
            }
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        Ok(size)
    }

    /// An upload of `user`'s that has not expired, opened, with its size.
    pub(crate) async fn open_upload(
        &self,
        user: &str,
        token: &str,
    ) -> Option<(tokio::fs::File, u64)> {
        let path = self.path(user, token)?;
        let file = tokio::fs::File::open(&path).await.ok()?;
        let meta = file.metadata().await.ok()?;
        (meta.is_file() && age(&meta) < UPLOAD_TTL).then_some((file, meta.len()))
    }

    /// An upload of `user`'s, read whole (for Email/import, Email/set and Email/parse, which
    /// need the bytes anyway; an upload is at most maxSizeUpload).
    pub(crate) fn get(&self, user: &str, token: &str) -> Option<Vec<u8>> {
        let path = self.path(user, token)?;
        let read = || {
            let meta = std::fs::metadata(&path).ok()?;
            if !meta.is_file() || age(&meta) >= UPLOAD_TTL {
                return None;
            }
            std::fs::read(&path).ok()
        };
        // On the server's multi-threaded runtime the read moves this worker's other tasks
        // elsewhere instead of stalling them; anywhere else it simply reads.
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(read),
            _ => read(),
        }
    }
}

fn problem(status: StatusCode, detail: &str) -> Response {
    json_response(
        status,
        &json!({"type": "about:blank", "status": status.as_u16(), "detail": detail}),
    )
}

fn upload_too_large() -> Response {
    request_error(
        "limit",
        StatusCode::PAYLOAD_TOO_LARGE,
        "the upload is larger than maxSizeUpload",
        Some("maxSizeUpload"),
    )
}

/// `POST /jmap/upload/{accountId}/`.
pub(crate) async fn upload(
    State(ctx): State<Arc<HttpContext>>,
    Extension(conn): Extension<ConnInfo>,
    Path(account): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let authed = match authenticate(&ctx, &method, &headers, conn.peer.ip()).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let mut r = upload_as(&ctx, &authed.user, &account, &headers, body).await;
    r.extensions_mut().insert(CaptureUser(authed.user));
    r
}

async fn upload_as(
    ctx: &HttpContext,
    user: &str,
    account: &str,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    if account != user {
        return problem(StatusCode::NOT_FOUND, "no such account");
    }
    let Some(_slot) = ctx.uploads.try_acquire(user) else {
        return request_error(
            "limit",
            StatusCode::TOO_MANY_REQUESTS,
            "too many uploads in progress for this account",
            Some("maxConcurrentUpload"),
        );
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > ctx.settings.max_size_upload as u64) {
        return upload_too_large();
    }
    let ty = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    match ctx.blobs.receive(user, body).await {
        Ok((token, size)) => json_response(
            StatusCode::CREATED,
            &json!({"accountId": account, "blobId": format!("U{token}"), "type": ty, "size": size}),
        ),
        Err(UploadError::TooLarge) => upload_too_large(),
        Err(e @ UploadError::Body(_)) => problem(StatusCode::BAD_REQUEST, &e.to_string()),
        Err(e @ UploadError::Io(_)) => {
            tracing::error!("upload for {user}: {e}");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "the upload cannot be stored now",
            )
        }
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct DownloadQuery {
    #[serde(rename = "type")]
    ty: Option<String>,
}

/// `GET /jmap/download/{accountId}/{blobId}/{name}?type=...`.
pub(crate) async fn download(
    State(ctx): State<Arc<HttpContext>>,
    Extension(conn): Extension<ConnInfo>,
    Path((account, blob_id, name)): Path<(String, String, String)>,
    Query(query): Query<DownloadQuery>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let authed = match authenticate(&ctx, &method, &headers, conn.peer.ip()).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let user = authed.user.clone();
    let mut r = if account != authed.user {
        problem(StatusCode::NOT_FOUND, "no such account")
    } else {
        let found = match parse_blob_id(&blob_id) {
            // An upload streams from its file.
            Some(BlobRef::Upload(token)) => Ok(ctx
                .blobs
                .open_upload(&authed.user, &token)
                .await
                .map(|(file, len)| {
                    let stream = tokio_util::io::ReaderStream::new(file);
                    (Body::from_stream(stream), len)
                })),
            _ => {
                let mut req = Req::new(&ctx, &authed);
                email::blob_bytes(&mut req, &blob_id).await.map(|d| {
                    d.map(|data| {
                        let len = data.len() as u64;
                        (Body::from(data), len)
                    })
                })
            }
        };
        match found {
            Ok(Some((body, len))) => {
                let ty = query
                    .ty
                    .filter(|t| !t.is_empty())
                    .unwrap_or_else(|| "application/octet-stream".into());
                let mut r = Response::new(body);
                let h = r.headers_mut();
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_str(&ty)
                        .unwrap_or(HeaderValue::from_static("application/octet-stream")),
                );
                let encoded: String = name
                    .bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                            (b as char).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect();
                if let Ok(v) =
                    HeaderValue::from_str(&format!("attachment; filename*=UTF-8''{encoded}"))
                {
                    h.insert(header::CONTENT_DISPOSITION, v);
                }
                // Blobs never change: a blob id names fixed bytes.
                h.insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("private, immutable, max-age=31536000"),
                );
                h.insert(
                    "x-content-type-options",
                    HeaderValue::from_static("nosniff"),
                );
                h.insert(
                    "content-security-policy",
                    HeaderValue::from_static("sandbox; default-src 'none'"),
                );
                if let Ok(v) = HeaderValue::from_str(&format!("\"{blob_id}\"")) {
                    h.insert(header::ETAG, v);
                }
                r
            }
            Ok(None) => problem(StatusCode::NOT_FOUND, "no such blob"),
            Err(e) => {
                tracing::error!("download {blob_id}: {e:?}");
                problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the blob cannot be read now",
                )
            }
        }
    };
    r.extensions_mut().insert(CaptureUser(user));
    r
}
