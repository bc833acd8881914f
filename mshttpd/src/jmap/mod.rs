//! JMAP core (RFC 8620): the session resource, API requests with method batching, result
//! references and creation ids, the standard request- and method-level errors, and the
//! dispatch to the mail (RFC 8621) and submission methods.
//!
//! One account per user, its id the user id. Ids are derived from the store, never stored:
//! a Mailbox id from the folder's UIDVALIDITY, Email and Thread ids the store's RFC 8474
//! EMAILID (content digest: kept across moves, one Email for identical copies) and THREADID
//! (digest of the conversation's root Message-ID). The state string lists,
//! per folder, UIDVALIDITY, index generation, HIGHESTMODSEQ, UIDNEXT and a name checksum,
//! which is what `/changes` computes differences from.

pub mod blob;
mod email;
mod ids;
mod ledger;
pub(crate) mod limits;
pub(crate) use ledger::Ledger;
mod mailbox;
pub mod push;
pub(crate) mod submission;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Map, Value};
use store_client::{ClientError, FolderSnapshot, FolderStatus, Session};

use crate::auth::{authenticate, Authed, CaptureUser};
use crate::compress::json as json_response;
use crate::{ConnInfo, HttpContext};

pub const CORE: &str = "urn:ietf:params:jmap:core";
pub const MAIL: &str = "urn:ietf:params:jmap:mail";
pub const SUBMISSION: &str = "urn:ietf:params:jmap:submission";

pub(crate) const MAX_CALLS_IN_REQUEST: usize = 64;
pub(crate) const MAX_OBJECTS_IN_GET: usize = 1000;
pub(crate) const MAX_OBJECTS_IN_SET: usize = 1000;

/// A method-level error (RFC 8620 3.6.2, RFC 8621).
#[derive(Debug)]
pub(crate) enum MethodError {
    UnknownMethod(String),
    InvalidArguments(String),
    InvalidResultReference(String),
    AccountNotFound,
    FromAccountNotFound,
    StateMismatch,
    CannotCalculateChanges,
    UnsupportedFilter(String),
    UnsupportedSort(String),
    AnchorNotFound,
    RequestTooLarge,
    TooManyChanges,
    Forbidden(String),
    ServerFail(String),
}

impl MethodError {
    fn to_json(&self) -> Value {
        let (t, d) = match self {
            MethodError::UnknownMethod(m) => ("unknownMethod", format!("unknown method {m}")),
            MethodError::InvalidArguments(d) => ("invalidArguments", d.clone()),
            MethodError::InvalidResultReference(d) => ("invalidResultReference", d.clone()),
            MethodError::AccountNotFound => ("accountNotFound", "no such account".into()),
            MethodError::FromAccountNotFound => {
                ("fromAccountNotFound", "no such account to copy from".into())
            }
            MethodError::StateMismatch => ("stateMismatch", "ifInState does not match".into()),
            MethodError::CannotCalculateChanges => (
                "cannotCalculateChanges",
                "changes since that state are no longer known".into(),
            ),
            MethodError::UnsupportedFilter(d) => ("unsupportedFilter", d.clone()),
            MethodError::UnsupportedSort(d) => ("unsupportedSort", d.clone()),
            MethodError::AnchorNotFound => {
                ("anchorNotFound", "anchor is not in the results".into())
            }
            MethodError::RequestTooLarge => {
                ("requestTooLarge", "too many objects in one call".into())
            }
            MethodError::TooManyChanges => (
                "tooManyChanges",
                "more changes than maxChanges allows".into(),
            ),
            MethodError::Forbidden(d) => ("forbidden", d.clone()),
            MethodError::ServerFail(d) => ("serverFail", d.clone()),
        };
        json!({"type": t, "description": d})
    }
}

impl From<ClientError> for MethodError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::PermissionDenied(m) => MethodError::Forbidden(m),
            ClientError::InvalidArgument(m) => MethodError::InvalidArguments(m),
            other => MethodError::ServerFail(other.to_string()),
        }
    }
}

pub(crate) type MResult<T = Value> = Result<T, MethodError>;

/// A SetError (RFC 8620 5.3).
pub(crate) fn set_error(kind: &str, description: impl Into<String>) -> Value {
    json!({"type": kind, "description": description.into()})
}

/// The SetError a store failure calls for.
pub(crate) fn store_set_error(e: &ClientError) -> Value {
    match e {
        ClientError::OverQuota(_) | ClientError::MailboxFull(_) => {
            set_error("overQuota", e.to_string())
        }
        ClientError::TooLarge { .. } => set_error("tooLarge", e.to_string()),
        ClientError::PermissionDenied(_) => set_error("forbidden", e.to_string()),
        ClientError::NoSuchMailbox(_) | ClientError::NoSuchMessage(_) => {
            set_error("notFound", e.to_string())
        }
        ClientError::MailboxExists(_) => set_error("invalidProperties", e.to_string()),
        ClientError::InvalidArgument(_) => set_error("invalidProperties", e.to_string()),
        _ => set_error("serverFail", e.to_string()),
    }
}

/// One of the user's folders as JMAP sees it.
#[derive(Clone, Debug)]
pub(crate) struct Folder {
    pub name: String,
    pub uidvalidity: u32,
    pub status: FolderStatus,
    pub special_use: Option<String>,
    pub subscribed: bool,
}

impl Folder {
    pub fn id(&self) -> String {
        ids::mailbox_id(self.uidvalidity)
    }
}

/// One API request's view: the user's store session, folders and snapshots read once.
pub(crate) struct Req<'a> {
    pub ctx: &'a HttpContext,
    pub session: Session,
    pub user: String,
    pub created_ids: HashMap<String, String>,
    folders: Option<Vec<Folder>>,
    snapshots: HashMap<u32, Arc<FolderSnapshot>>,
}

impl<'a> Req<'a> {
    pub(crate) fn new(ctx: &'a HttpContext, authed: &Authed) -> Req<'a> {
        Req {
            ctx,
            session: authed.session.clone(),
            user: authed.user.clone(),
            created_ids: HashMap::new(),
            folders: None,
            snapshots: HashMap::new(),
        }
    }

    /// The user's own folders (INBOX first).
    pub async fn folders(&mut self) -> MResult<Vec<Folder>> {
        if let Some(f) = &self.folders {
            return Ok(f.clone());
        }
        let list = self.session.list("*").await?;
        let mut out = Vec::with_capacity(list.len());
        for info in list.into_iter().filter(|i| !i.shared) {
            let status = match self.session.status(&info.name).await {
                Ok(s) => s,
                // Deleted between the listing and now.
                Err(ClientError::NoSuchMailbox(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            out.push(Folder {
                uidvalidity: status.uidvalidity,
                status,
                special_use: info.special_use,
                subscribed: info.subscribed,
                name: info.name,
            });
        }
        self.folders = Some(out.clone());
        Ok(out)
    }

    /// Forget cached folders and snapshots after a write.
    pub fn invalidate(&mut self) {
        self.folders = None;
        self.snapshots.clear();
    }

    pub async fn folder_by_uv(&mut self, uv: u32) -> MResult<Option<Folder>> {
        if self.folders.is_none() {
            self.folders().await?;
        }
        Ok(self
            .folders
            .as_ref()
            .and_then(|all| all.iter().find(|f| f.uidvalidity == uv).cloned()))
    }

    pub async fn folder_by_id(&mut self, id: &str) -> MResult<Option<Folder>> {
        let id = self.resolve_id(id);
        match ids::parse_mailbox_id(&id) {
            Some(uv) => self.folder_by_uv(uv).await,
            None => Ok(None),
        }
    }

    pub async fn snapshot(&mut self, folder: &Folder) -> MResult<Arc<FolderSnapshot>> {
        if let Some(s) = self.snapshots.get(&folder.uidvalidity) {
            return Ok(s.clone());
        }
        let s = Arc::new(self.session.folder_snapshot(&folder.name).await?);
        self.snapshots.insert(folder.uidvalidity, s.clone());
        Ok(s)
    }

    /// An id, or the id a `#creationId` reference stands for.
    pub fn resolve_id(&self, id: &str) -> String {
        match id.strip_prefix('#') {
            Some(c) => self
                .created_ids
                .get(c)
                .cloned()
                .unwrap_or_else(|| id.to_owned()),
            None => id.to_owned(),
        }
    }

    /// The account's state string; what the folders hold at it is noted for Email/changes.
    pub async fn state(&mut self) -> MResult<String> {
        let folders = self.folders().await?;
        self.note(&folders).await;
        Ok(ids::state_of(&folders))
    }

    /// Notes the folders in the ledger. Best effort: a note missing only means a later
    /// cannotCalculateChanges, never a wrong answer.
    pub async fn note(&mut self, folders: &[Folder]) {
        if let Err(e) = ledger::note(self, folders).await {
            tracing::debug!("ledger of {}: {e:?}", self.user);
        }
    }

    /// Checks `accountId`.
    pub fn account(&self, args: &Map<String, Value>) -> MResult<()> {
        match args.get("accountId") {
            Some(Value::String(a)) if *a == self.user => Ok(()),
            Some(Value::String(_)) => Err(MethodError::AccountNotFound),
            _ => Err(MethodError::InvalidArguments(
                "accountId is required".into(),
            )),
        }
    }
}

/// Argument helpers.
pub(crate) fn arg_ids(args: &Map<String, Value>, key: &str) -> MResult<Option<Vec<String>>> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    MethodError::InvalidArguments(format!("{key} must be a list of ids"))
                })
            })
            .collect::<MResult<Vec<_>>>()
            .map(Some),
        Some(_) => Err(MethodError::InvalidArguments(format!(
            "{key} must be a list of ids"
        ))),
    }
}

pub(crate) fn arg_str<'v>(args: &'v Map<String, Value>, key: &str) -> MResult<Option<&'v str>> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(MethodError::InvalidArguments(format!(
            "{key} must be a string"
        ))),
    }
}

pub(crate) fn arg_bool(args: &Map<String, Value>, key: &str) -> MResult<bool> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(MethodError::InvalidArguments(format!(
            "{key} must be a boolean"
        ))),
    }
}

pub(crate) fn arg_uint(args: &Map<String, Value>, key: &str) -> MResult<Option<u64>> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            MethodError::InvalidArguments(format!("{key} must be an unsigned integer"))
        }),
    }
}

pub(crate) fn arg_int(args: &Map<String, Value>, key: &str) -> MResult<Option<i64>> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| MethodError::InvalidArguments(format!("{key} must be an integer"))),
    }
}

/// The `ids` of a /get, each once (RFC 8620 5.1), in the order given.
pub(crate) fn unique_ids(ids: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    ids.into_iter().filter(|i| seen.insert(i.clone())).collect()
}

/// `properties`: None = the type's defaults.
pub(crate) fn arg_props(args: &Map<String, Value>, key: &str) -> MResult<Option<Vec<String>>> {
    arg_ids(args, key)
}

/// A request-level error (RFC 8620 3.6.1), as an RFC 7807 problem.
pub(crate) fn request_error(
    kind: &str,
    status: StatusCode,
    detail: &str,
    limit: Option<&str>,
) -> Response {
    let mut v = json!({
        "type": format!("urn:ietf:params:jmap:error:{kind}"),
        "status": status.as_u16(),
        "detail": detail,
    });
    if let (Some(l), Some(o)) = (limit, v.as_object_mut()) {
        o.insert("limit".into(), Value::String(l.into()));
    }
    let mut r = json_response(status, &v);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    r
}

/// Evaluates a JSON pointer with JMAP's `*` extension (RFC 8620 3.7).
pub(crate) fn pointer(v: &Value, path: &str) -> Option<Value> {
    if path.is_empty() {
        return Some(v.clone());
    }
    let rest = path.strip_prefix('/')?;
    let tokens: Vec<String> = rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    eval_pointer(v, &tokens)
}

fn eval_pointer(v: &Value, tokens: &[String]) -> Option<Value> {
    let Some((t, rest)) = tokens.split_first() else {
        return Some(v.clone());
    };
    match v {
        Value::Array(items) => {
            if t == "*" {
                let mut out = Vec::new();
                for item in items {
                    match eval_pointer(item, rest)? {
                        Value::Array(inner) => out.extend(inner),
                        other => out.push(other),
                    }
                }
                Some(Value::Array(out))
            } else {
                let i: usize = t.parse().ok()?;
                eval_pointer(items.get(i)?, rest)
            }
        }
        Value::Object(o) => eval_pointer(o.get(t.as_str())?, rest),
        _ => None,
    }
}

/// Replaces `#name` result references in `args` (RFC 8620 3.7).
fn resolve_references(
    args: Map<String, Value>,
    responses: &[(String, Value, String)],
) -> MResult<Map<String, Value>> {
    if !args.keys().any(|k| k.starts_with('#')) {
        return Ok(args);
    }
    let mut out = Map::new();
    for (k, v) in &args {
        let Some(plain) = k.strip_prefix('#') else {
            continue;
        };
        if args.contains_key(plain) {
            return Err(MethodError::InvalidArguments(format!(
                "both {plain} and #{plain} given"
            )));
        }
        let r = v.as_object().ok_or_else(|| {
            MethodError::InvalidResultReference(format!("#{plain} is not a ResultReference"))
        })?;
        let (Some(of), Some(name), Some(path)) = (
            r.get("resultOf").and_then(Value::as_str),
            r.get("name").and_then(Value::as_str),
            r.get("path").and_then(Value::as_str),
        ) else {
            return Err(MethodError::InvalidResultReference(format!(
                "#{plain} needs resultOf, name and path"
            )));
        };
        let found = responses
            .iter()
            .find(|(n, _, id)| id == of && n == name)
            .ok_or_else(|| {
                MethodError::InvalidResultReference(format!("no {name} response for call {of}"))
            })?;
        let value = pointer(&found.1, path).ok_or_else(|| {
            MethodError::InvalidResultReference(format!("path {path} does not resolve"))
        })?;
        out.insert(plain.to_owned(), value);
    }
    for (k, v) in args {
        if !k.starts_with('#') {
            out.insert(k, v);
        }
    }
    Ok(out)
}

/// Base URL of this server as the client reached it.
fn base_url(headers: &HeaderMap, tls: bool) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        })
        .unwrap_or("localhost");
    format!("{}://{host}", if tls { "https" } else { "http" })
}

/// `GET /.well-known/jmap` (RFC 8620 2.2).
pub(crate) async fn well_known() -> Response {
    let mut r = Response::new(axum::body::Body::empty());
    *r.status_mut() = StatusCode::TEMPORARY_REDIRECT;
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/jmap/session"));
    r
}

pub(crate) fn session_state(user: &str) -> String {
    format!("{:08x}", crc32fast::hash(user.as_bytes()))
}

/// `GET /jmap/session`: the session resource (RFC 8620 2).
pub(crate) async fn session_resource(
    State(ctx): State<Arc<HttpContext>>,
    Extension(conn): Extension<ConnInfo>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let authed = match authenticate(&ctx, &method, &headers, conn.peer.ip()).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let base = base_url(&headers, conn.tls);
    let user = authed.user.clone();
    let body = json!({
        "capabilities": {
            CORE: {
                "maxSizeUpload": ctx.settings.max_size_upload,
                "maxConcurrentUpload": ctx.settings.max_concurrent_upload,
                "maxSizeRequest": ctx.settings.max_size_request,
                "maxConcurrentRequests": ctx.settings.max_concurrent_requests,
                "maxCallsInRequest": MAX_CALLS_IN_REQUEST,
                "maxObjectsInGet": MAX_OBJECTS_IN_GET,
                "maxObjectsInSet": MAX_OBJECTS_IN_SET,
                "collationAlgorithms": ["i;ascii-casemap", "i;unicode-casemap"],
            },
            MAIL: {},
            SUBMISSION: {},
        },
        "accounts": {
            user.clone(): {
                "name": user,
                "isPersonal": true,
                "isReadOnly": false,
                "accountCapabilities": {
                    MAIL: {
                        "maxMailboxesPerEmail": null,
                        "maxMailboxDepth": null,
                        "maxSizeMailboxName": 255,
                        "maxSizeAttachmentsPerEmail": ctx.settings.max_size_upload,
                        "emailQuerySortOptions": email::SORT_OPTIONS,
                        "mayCreateTopLevelMailbox": true,
                    },
                    SUBMISSION: {
                        "maxDelayedSend": 0,
                        "submissionExtensions": {},
                    },
                },
            },
        },
        "primaryAccounts": { MAIL: user, SUBMISSION: user, CORE: user },
        "username": user,
        "apiUrl": format!("{base}/jmap/api"),
        "downloadUrl": format!("{base}/jmap/download/{{accountId}}/{{blobId}}/{{name}}?type={{type}}"),
        "uploadUrl": format!("{base}/jmap/upload/{{accountId}}/"),
        "eventSourceUrl": format!("{base}/jmap/eventsource?types={{types}}&closeafter={{closeafter}}&ping={{ping}}"),
        "state": session_state(&user),
    });
    let mut r = json_response(StatusCode::OK, &body);
    r.extensions_mut().insert(CaptureUser(authed.user));
    r
}

/// A parsed API request.
struct ApiRequest {
    using: Vec<String>,
    calls: Vec<(String, Map<String, Value>, String)>,
    created_ids: Option<Map<String, Value>>,
}

fn parse_request(body: &[u8]) -> Result<ApiRequest, Box<Response>> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        Box::new(request_error(
            "notJSON",
            StatusCode::BAD_REQUEST,
            &format!("not JSON: {e}"),
            None,
        ))
    })?;
    let not_request = |d: &str| {
        Box::new(request_error(
            "notRequest",
            StatusCode::BAD_REQUEST,
            d,
            None,
        ))
    };
    let obj = v
        .as_object()
        .ok_or_else(|| not_request("the request is not an object"))?;
    let using = obj
        .get("using")
        .and_then(Value::as_array)
        .ok_or_else(|| not_request("using must be a list of capabilities"))?
        .iter()
        .map(|c| c.as_str().map(str::to_owned))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| not_request("using must be a list of strings"))?;
    let raw_calls = obj
        .get("methodCalls")
        .and_then(Value::as_array)
        .ok_or_else(|| not_request("methodCalls must be a list"))?;
    let mut calls = Vec::with_capacity(raw_calls.len());
    for c in raw_calls {
        let parts = c
            .as_array()
            .filter(|a| a.len() == 3)
            .ok_or_else(|| not_request("each method call is [name, arguments, callId]"))?;
        let (Some(name), Some(args), Some(id)) =
            (parts[0].as_str(), parts[1].as_object(), parts[2].as_str())
        else {
            return Err(not_request("each method call is [name, arguments, callId]"));
        };
        calls.push((name.to_owned(), args.clone(), id.to_owned()));
    }
    let created_ids = match obj.get("createdIds") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m.clone()),
        Some(_) => return Err(not_request("createdIds must be an object")),
    };
    Ok(ApiRequest {
        using,
        calls,
        created_ids,
    })
}

/// `POST /jmap/api`.
pub(crate) async fn api(
    State(ctx): State<Arc<HttpContext>>,
    Extension(conn): Extension<ConnInfo>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let authed = match authenticate(&ctx, &method, &headers, conn.peer.ip()).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let mut r = match ctx.requests.try_acquire(&authed.user) {
        // The slot is held while the body arrives too, so slow senders count.
        Some(_slot) => match read_request(&ctx, &headers, body).await {
            Ok(body) => run_api(&ctx, &authed, &body).await,
            Err(r) => r,
        },
        None => request_error(
            "limit",
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests in progress for this account",
            Some("maxConcurrentRequests"),
        ),
    };
    r.extensions_mut().insert(CaptureUser(authed.user));
    r
}

/// The request body, refused as soon as it is known to exceed maxSizeRequest (by its
/// Content-Length, or while it streams) so an oversized request is never held whole.
async fn read_request(
    ctx: &HttpContext,
    headers: &HeaderMap,
    body: Body,
) -> Result<axum::body::Bytes, Response> {
    let max = ctx.settings.max_size_request;
    let too_large = || {
        request_error(
            "limit",
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request is larger than maxSizeRequest",
            Some("maxSizeRequest"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(request_error(
            "notRequest",
            StatusCode::BAD_REQUEST,
            &format!("the request was not received whole: {e}"),
            None,
        )),
    }
}

/// maxObjectsInGet and maxObjectsInSet (RFC 8620 5.1, 5.3), checked for every method
/// before it runs, so no type can forget them.
fn check_object_limits(name: &str, args: &Map<String, Value>) -> MResult<()> {
    let len = |k: &str| match args.get(k) {
        Some(Value::Array(a)) => a.len(),
        Some(Value::Object(o)) => o.len(),
        _ => 0,
    };
    let get = name.ends_with("/get") || name == "Email/parse";
    if get && len("ids").max(len("blobIds")).max(len("emailIds")) > MAX_OBJECTS_IN_GET {
        return Err(MethodError::RequestTooLarge);
    }
    let set = name.ends_with("/set") || name.ends_with("/copy") || name == "Email/import";
    let n = len("create") + len("update") + len("destroy") + len("emails");
    if set && n > MAX_OBJECTS_IN_SET {
        return Err(MethodError::RequestTooLarge);
    }
    Ok(())
}

async fn run_api(ctx: &HttpContext, authed: &Authed, body: &[u8]) -> Response {
    let request = match parse_request(body) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    for cap in &request.using {
        if ![CORE, MAIL, SUBMISSION].contains(&cap.as_str()) {
            return request_error(
                "unknownCapability",
                StatusCode::BAD_REQUEST,
                &format!("unknown capability {cap}"),
                None,
            );
        }
    }
    if request.calls.len() > MAX_CALLS_IN_REQUEST {
        return request_error(
            "limit",
            StatusCode::BAD_REQUEST,
            "too many method calls",
            Some("maxCallsInRequest"),
        );
    }
    let mut req = Req::new(ctx, authed);
    if let Some(ids) = &request.created_ids {
        for (k, v) in ids {
            if let Some(s) = v.as_str() {
                req.created_ids.insert(k.clone(), s.to_owned());
            }
        }
    }
    let using: Vec<&str> = request.using.iter().map(String::as_str).collect();
    let mut responses: Vec<(String, Value, String)> = Vec::new();
    for (name, args, call_id) in request.calls {
        let args = match resolve_references(args, &responses) {
            Ok(a) => a,
            Err(e) => {
                responses.push(("error".into(), e.to_json(), call_id));
                continue;
            }
        };
        let mut extra = Vec::new();
        match dispatch(&mut req, &using, &name, args, &mut extra).await {
            Ok(v) => responses.push((name.clone(), v, call_id.clone())),
            Err(e) => {
                if let MethodError::ServerFail(d) = &e {
                    tracing::error!("{name} for {}: {d}", req.user);
                }
                responses.push(("error".into(), e.to_json(), call_id.clone()));
            }
        }
        for (n, v) in extra {
            responses.push((n, v, call_id.clone()));
        }
    }
    let mut out = json!({
        "methodResponses": responses
            .into_iter()
            .map(|(n, v, id)| json!([n, v, id]))
            .collect::<Vec<_>>(),
        "sessionState": session_state(&req.user),
    });
    if request.created_ids.is_some() {
        if let Some(o) = out.as_object_mut() {
            o.insert("createdIds".into(), json!(req.created_ids));
        }
    }
    json_response(StatusCode::OK, &out)
}

/// The methods of `urn:ietf:params:jmap:mail`, as [`dispatch`] serves them.
const MAIL_METHODS: &[&str] = &[
    "Mailbox/get",
    "Mailbox/changes",
    "Mailbox/query",
    "Mailbox/queryChanges",
    "Mailbox/set",
    "Thread/get",
    "Thread/changes",
    "Email/get",
    "Email/changes",
    "Email/query",
    "Email/queryChanges",
    "Email/set",
    "Email/copy",
    "Email/import",
    "Email/parse",
    "SearchSnippet/get",
];

/// The methods of `urn:ietf:params:jmap:submission`, as [`dispatch`] serves them.
const SUBMISSION_METHODS: &[&str] = &[
    "Identity/get",
    "Identity/changes",
    "EmailSubmission/set",
    "EmailSubmission/get",
    "EmailSubmission/changes",
    "EmailSubmission/query",
    "EmailSubmission/queryChanges",
];

async fn dispatch(
    req: &mut Req<'_>,
    using: &[&str],
    name: &str,
    args: Map<String, Value>,
    extra: &mut Vec<(String, Value)>,
) -> MResult {
    let mail = using.contains(&MAIL);
    let submission = using.contains(&SUBMISSION);
    // A method the server does not know (or whose capability is not in `using`) is
    // unknownMethod whatever its arguments: its limits are not known either.
    let known = match name {
        "Core/echo" => true,
        _ if MAIL_METHODS.contains(&name) => mail,
        _ if SUBMISSION_METHODS.contains(&name) => submission,
        _ => false,
    };
    if !known {
        return Err(MethodError::UnknownMethod(name.to_owned()));
    }
    check_object_limits(name, &args)?;
    match name {
        "Core/echo" => Ok(Value::Object(args)),
        "Mailbox/get" if mail => mailbox::get(req, args).await,
        "Mailbox/changes" if mail => mailbox::changes(req, args).await,
        "Mailbox/query" if mail => mailbox::query(req, args).await,
        "Mailbox/queryChanges" if mail => mailbox::query_changes(req, args).await,
        "Mailbox/set" if mail => mailbox::set(req, args).await,
        "Thread/get" if mail => email::thread_get(req, args).await,
        "Thread/changes" if mail => email::thread_changes(req, args).await,
        "Email/get" if mail => email::get(req, args).await,
        "Email/changes" if mail => email::changes(req, args).await,
        "Email/query" if mail => email::query(req, args).await,
        "Email/queryChanges" if mail => email::query_changes(req, args).await,
        "Email/set" if mail => email::set(req, args).await,
        "Email/copy" if mail => email::copy(req, args).await,
        "Email/import" if mail => email::import(req, args).await,
        "Email/parse" if mail => email::parse(req, args).await,
        "SearchSnippet/get" if mail => email::snippets(req, args).await,
        "Identity/get" if submission => submission::identity_get(req, args).await,
        "Identity/changes" if submission => submission::identity_changes(req, args).await,
        "EmailSubmission/set" if submission => submission::set(req, args, extra).await,
        "EmailSubmission/get" if submission => submission::get(req, args).await,
        "EmailSubmission/changes" if submission => submission::changes(req, args).await,
        "EmailSubmission/query" if submission => submission::query(req, args).await,
        "EmailSubmission/queryChanges" if submission => submission::query_changes(req, args).await,
        _ => Err(MethodError::UnknownMethod(name.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_with_star_flattens() {
        let v = json!({"list": [{"threadId": "a", "ids": ["1", "2"]}, {"threadId": "b", "ids": ["3"]}]});
        assert_eq!(pointer(&v, "/list/*/threadId"), Some(json!(["a", "b"])));
        assert_eq!(pointer(&v, "/list/*/ids"), Some(json!(["1", "2", "3"])));
        assert_eq!(pointer(&v, "/list/1/threadId"), Some(json!("b")));
        assert_eq!(pointer(&v, "/nope"), None);
    }

    #[test]
    fn result_reference_must_match_name() {
        let responses = vec![(
            "Email/query".to_string(),
            json!({"ids": ["x"]}),
            "c0".to_string(),
        )];
        let mut args = Map::new();
        args.insert(
            "#ids".into(),
            json!({"resultOf": "c0", "name": "Email/query", "path": "/ids"}),
        );
        let out = resolve_references(args.clone(), &responses).unwrap();
        assert_eq!(out["ids"], json!(["x"]));
        args.insert(
            "#ids".into(),
            json!({"resultOf": "c0", "name": "Email/get", "path": "/ids"}),
        );
        assert!(matches!(
            resolve_references(args, &responses),
            Err(MethodError::InvalidResultReference(_))
        ));
    }
}
