//! Response helpers and gzip: `Accept-Encoding` negotiation, the dynamic-compression
//! middleware (`local.service.http.gzip.dynamic`) and the gzip encoder the static assets share.

use std::io::Write;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::HttpContext;

/// Responses smaller than this are sent as they are: gzip would make them bigger.
const MIN_GZIP: usize = 256;
/// Generated responses larger than this (or of unknown size) are sent uncompressed.
const MAX_DYNAMIC_GZIP: usize = 64 * 1024 * 1024;

/// A text/plain response.
pub(crate) fn plain(status: StatusCode, text: &str) -> Response {
    let mut r = Response::new(Body::from(text.to_owned()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Whether the client accepts gzip (RFC 9110 12.5.3: `gzip` or `*` with a non-zero q;
/// an explicit `gzip;q=0` refuses it even when `*` is accepted).
pub(crate) fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip = None;
    let mut star = None;
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(s) = value.to_str() else { continue };
        for item in s.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let mut q = 1.0f32;
            for p in parts {
                let p = p.trim();
                if let Some(v) = p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")) {
                    q = v.trim().parse().unwrap_or(0.0);
                }
            }
            match coding.as_str() {
                "gzip" | "x-gzip" => gzip = Some(q > 0.0),
                "*" => star = Some(q > 0.0),
                _ => {}
            }
        }
    }
    gzip.or(star).unwrap_or(false)
}

/// gzip `data` at the default level.
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(
        Vec::with_capacity(data.len() / 3 + 64),
        Compression::default(),
    );
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

/// The ETag of the gzip variant: distinct from the identity one (RFC 9110 8.8.3).
pub(crate) fn gzip_etag(etag: &str) -> String {
    match etag.strip_suffix('"') {
        Some(open) => format!("{open}-gz\""),
        None => format!("{etag}-gz"),
    }
}

fn add_vary(headers: &mut HeaderMap) {
    let has = headers.get_all(header::VARY).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.to_ascii_lowercase().contains("accept-encoding"))
    });
    if !has {
        headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// Compresses generated responses when `local.service.http.gzip.dynamic` is 1 and the
/// client accepts gzip. Event streams are left alone (they must flush event by event).
pub(crate) async fn dynamic(
    State(ctx): State<Arc<HttpContext>>,
    req: Request,
    next: Next,
) -> Response {
    if !ctx.settings.gzip_dynamic {
        return next.run(req).await;
    }
    let wants = accepts_gzip(req.headers());
    let head_request = req.method() == axum::http::Method::HEAD;
    let mut resp = next.run(req).await;
    add_vary(resp.headers_mut());
    let streaming = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    if !wants
        || head_request
        || streaming
        || resp.headers().contains_key(header::CONTENT_ENCODING)
        || resp.status() == StatusCode::NOT_MODIFIED
        || resp.status() == StatusCode::NO_CONTENT
    {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    // Large bodies (a big download) go out as they are rather than be held twice.
    let size = axum::body::HttpBody::size_hint(&body);
    if size.upper().is_none_or(|u| u > MAX_DYNAMIC_GZIP as u64) {
        return Response::from_parts(parts, body);
    }
    let bytes = match axum::body::to_bytes(body, MAX_DYNAMIC_GZIP).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("response body could not be read for compression: {e}");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "response too large\n");
        }
    };
    if bytes.len() < MIN_GZIP {
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        return Response::from_parts(parts, Body::from(bytes));
    }
    let packed = gzip(&bytes);
    parts
        .headers
        .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(packed.len()));
    if let Some(etag) = parts
        .headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
    {
        if let Ok(v) = HeaderValue::from_str(&gzip_etag(etag)) {
            parts.headers.insert(header::ETAG, v);
        }
    }
    Response::from_parts(parts, Body::from(packed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        m
    }

    #[test]
    fn accept_encoding_rfc9110() {
        assert!(accepts_gzip(&h("gzip")));
        assert!(accepts_gzip(&h("deflate, gzip;q=0.5")));
        assert!(accepts_gzip(&h("*")));
        assert!(!accepts_gzip(&h("gzip;q=0")));
        assert!(!accepts_gzip(&h("*, gzip;q=0")));
        assert!(!accepts_gzip(&h("identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn gzip_etag_is_distinct() {
        assert_eq!(gzip_etag("\"abc\""), "\"abc-gz\"");
    }
}
