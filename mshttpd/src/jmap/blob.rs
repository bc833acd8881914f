//! Blob upload and download (RFC 8620 6). Uploads are held in memory for an hour, bounded
//! in total; stored messages and their parts are blobs by id without being copied.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::{email, Req};
use crate::auth::{authenticate, CaptureUser};
use crate::compress::json as json_response;
use crate::{ConnInfo, HttpContext};

/// Uploads expire after this long (RFC 8620 6.1: at least an hour).
const UPLOAD_TTL: Duration = Duration::from_secs(3600);

struct Blob {
    user: String,
    data: Bytes,
    created: Instant,
}

/// Uploaded blobs by token.
pub(crate) struct BlobStore {
    blobs: Mutex<HashMap<String, Blob>>,
    /// Bytes held at most: the oldest uploads are dropped first past it.
    budget: usize,
}

impl BlobStore {
    pub(crate) fn new(max_upload: usize) -> BlobStore {
        BlobStore {
            blobs: Mutex::new(HashMap::new()),
            budget: max_upload.saturating_mul(8).max(64 * 1024 * 1024),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Blob>> {
        self.blobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn put(&self, user: &str, data: Bytes) -> Option<String> {
        let mut r = [0u8; 16];
        getrandom::getrandom(&mut r).ok()?;
        let token: String = r.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, b| now.duration_since(b.created) < UPLOAD_TTL);
        let mut total: usize = map.values().map(|b| b.data.len()).sum();
        while total + data.len() > self.budget {
            let Some(oldest) = map
                .iter()
                .min_by_key(|(_, b)| b.created)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(b) = map.remove(&oldest) {
                total -= b.data.len();
            }
        }
        map.insert(
            token.clone(),
            Blob {
                user: user.to_owned(),
                data,
                created: now,
            },
        );
        Some(token)
    }

    /// An upload of `user`'s.
    pub(crate) fn get(&self, user: &str, token: &str) -> Option<Vec<u8>> {
        let map = self.lock();
        let b = map.get(token)?;
        (b.user == user && b.created.elapsed() < UPLOAD_TTL).then(|| b.data.to_vec())
    }
}

fn problem(status: StatusCode, detail: &str) -> Response {
    json_response(
        status,
        &json!({"type": "about:blank", "status": status.as_u16(), "detail": detail}),
    )
}

/// `POST /jmap/upload/{accountId}/`.
pub(crate) async fn upload(
    State(ctx): State<Arc<HttpContext>>,
    Extension(conn): Extension<ConnInfo>,
    Path(account): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authed = match authenticate(&ctx, &method, &headers, conn.peer.ip()).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let mut r = if account != authed.user {
        problem(StatusCode::NOT_FOUND, "no such account")
    } else if body.len() > ctx.settings.max_size_upload {
        json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &json!({"type": "urn:ietf:params:jmap:error:limit", "limit": "maxSizeUpload",
                    "status": 413, "detail": "the upload is larger than maxSizeUpload"}),
        )
    } else {
        let ty = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        let size = body.len();
        match ctx.blobs.put(&authed.user, body) {
            Some(token) => json_response(
                StatusCode::CREATED,
                &json!({"accountId": account, "blobId": format!("U{token}"), "type": ty, "size": size}),
            ),
            None => problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "no randomness for a blob id",
            ),
        }
    };
    r.extensions_mut().insert(CaptureUser(authed.user));
    r
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
        let mut req = Req::new(&ctx, &authed);
        match email::blob_bytes(&mut req, &blob_id).await {
            Ok(Some(data)) => {
                let ty = query
                    .ty
                    .filter(|t| !t.is_empty())
                    .unwrap_or_else(|| "application/octet-stream".into());
                let mut r = Response::new(Body::from(data));
                let h = r.headers_mut();
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
