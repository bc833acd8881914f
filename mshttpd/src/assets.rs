//! The webmail page's static files, embedded in the binary from `mshttpd/assets/` at build
//! time. With `local.service.http.gzip.static` = 1 each file's gzip copy is made once, at
//! first use, and served to clients that accept gzip.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use include_dir::{include_dir, Dir};

use crate::compress::{accepts_gzip, gzip, gzip_etag, plain};
use crate::HttpContext;

static ASSETS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/assets");

struct Asset {
    data: &'static [u8],
    etag: String,
    gz: OnceLock<Vec<u8>>,
}

/// The embedded files by path, with their ETags and lazily made gzip copies.
pub(crate) struct Assets {
    files: HashMap<String, Asset>,
}

fn collect(dir: &'static Dir<'static>, out: &mut HashMap<String, Asset>) {
    for f in dir.files() {
        let path = f.path().to_string_lossy().replace('\\', "/");
        let data = f.contents();
        let etag = format!("\"{:08x}-{:x}\"", crc32fast::hash(data), data.len());
        out.insert(
            path,
            Asset {
                data,
                etag,
                gz: OnceLock::new(),
            },
        );
    }
    for d in dir.dirs() {
        collect(d, out);
    }
}

impl Assets {
    pub(crate) fn new() -> Assets {
        let mut files = HashMap::new();
        collect(&ASSETS, &mut files);
        Assets { files }
    }
}

/// Content type by extension.
fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Whether a requested asset path could escape the assets directory or name a hidden file.
fn is_unsafe(path: &str) -> bool {
    path.is_empty()
        || path.contains('\\')
        || path.contains('\0')
        || path.starts_with('/')
        || path
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == ".." || seg.starts_with('.'))
}

fn serve(ctx: &HttpContext, path: &str, headers: &HeaderMap) -> Response {
    if is_unsafe(path) {
        return plain(StatusCode::BAD_REQUEST, "bad asset path\n");
    }
    let Some(asset) = ctx.assets.files.get(path) else {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    };
    let use_gzip = ctx.settings.gzip_static && accepts_gzip(headers);
    let (etag, body): (String, &[u8]) = if use_gzip {
        let gz = asset.gz.get_or_init(|| gzip(asset.data));
        (gzip_etag(&asset.etag), gz.as_slice())
    } else {
        (asset.etag.clone(), asset.data)
    };
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if not_modified {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(Body::from(body.to_vec()));
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        r
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    if ctx.settings.gzip_static {
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    if use_gzip && !not_modified {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    resp
}

/// `GET /`: the webmail page.
pub(crate) async fn index(State(ctx): State<Arc<HttpContext>>, headers: HeaderMap) -> Response {
    let mut r = serve(&ctx, "index.html", &headers);
    // The page must never be framed by another site (clickjacking).
    r.headers_mut()
        .insert("x-frame-options", HeaderValue::from_static("DENY"));
    r
}

/// `GET /assets/<file>`.
pub(crate) async fn asset(
    State(ctx): State<Arc<HttpContext>>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    serve(&ctx, &path, &headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_is_refused() {
        for p in [
            "../Cargo.toml",
            "a/../../x",
            "..",
            ".keep",
            "a//b",
            "/etc/passwd",
            "a\\..\\b",
        ] {
            assert!(is_unsafe(p), "{p}");
        }
        assert!(!is_unsafe("app.js"));
        assert!(!is_unsafe("icons/mail.svg"));
    }
}
