//! Push over EventSource (RFC 8620 7.3): a `state` event with a StateChange object whenever
//! any of the user's folders changes (store-client's Watcher, which sees other processes'
//! writes within a second), and `ping` events every `ping` seconds.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;

use super::Req;
use crate::auth::{authenticate, Authed, CaptureUser};
use crate::compress::json as json_response;
use crate::{ConnInfo, HttpContext};

/// Folders are listed again this often, so new folders are watched too.
const RESCAN: Duration = Duration::from_secs(5);
/// Changes closer together than this are reported once.
const DEBOUNCE: Duration = Duration::from_millis(100);

#[derive(serde::Deserialize, Default)]
pub(crate) struct PushQuery {
    types: Option<String>,
    closeafter: Option<String>,
    ping: Option<String>,
}

const TYPES: &[&str] = &["Mailbox", "Email", "Thread", "EmailDelivery"];

/// `GET /jmap/eventsource?types=*&closeafter=no&ping=30`.
pub(crate) async fn eventsource(
    State(ctx): State<Arc<HttpContext>>,
    Extension(conn): Extension<ConnInfo>,
    Query(q): Query<PushQuery>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let authed = match authenticate(&ctx, &method, &headers, conn.peer.ip()).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let bad = |d: &str| {
        json_response(
            StatusCode::BAD_REQUEST,
            &json!({"type": "about:blank", "status": 400, "detail": d}),
        )
    };
    let ping = match q.ping.as_deref().unwrap_or("0").parse::<u64>() {
        // A floor keeps a client from making the server busy with pings.
        Ok(0) => None,
        Ok(p) => Some(Duration::from_secs(p.clamp(5, 3600))),
        Err(_) => return bad("ping must be a number of seconds"),
    };
    let close_after_state = match q.closeafter.as_deref().unwrap_or("no") {
        "state" => true,
        "no" => false,
        _ => return bad("closeafter must be state or no"),
    };
    let types: Vec<String> = match q.types.as_deref().unwrap_or("*") {
        "*" => TYPES.iter().map(|s| s.to_string()).collect(),
        list => list
            .split(',')
            .map(str::trim)
            .filter(|t| TYPES.contains(t))
            .map(str::to_owned)
            .collect(),
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(16);
    let user = authed.user.clone();
    tokio::spawn(run(ctx.clone(), authed, tx, types, ping, close_after_state));
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r.extensions_mut().insert(CaptureUser(user));
    r
}

async fn current_state(ctx: &HttpContext, authed: &Authed) -> Option<String> {
    let mut req = Req::new(ctx, authed);
    req.state().await.ok()
}

fn state_event(user: &str, types: &[String], state: &str) -> Bytes {
    let mut changed = serde_json::Map::new();
    for t in types {
        changed.insert(t.clone(), Value::String(state.to_owned()));
    }
    let v = json!({"@type": "StateChange", "changed": { user: changed }});
    Bytes::from(format!("event: state\ndata: {v}\n\n"))
}

async fn run(
    ctx: Arc<HttpContext>,
    authed: Authed,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    types: Vec<String>,
    ping: Option<Duration>,
    close_after_state: bool,
) {
    let notify = Arc::new(Notify::new());
    let mut watchers: HashMap<String, ()> = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut last = current_state(&ctx, &authed).await.unwrap_or_default();
    // Tell the client where it stands at once (RFC 8620 7.3: the first event may be sent
    // immediately), so it needs no separate request to catch up.
    if !close_after_state
        && tx
            .send(Ok(state_event(&authed.user, &types, &last)))
            .await
            .is_err()
    {
        return;
    }
    let mut ping_timer = tokio::time::interval(ping.unwrap_or(Duration::from_secs(3600)));
    ping_timer.reset();
    let mut rescan = tokio::time::interval(RESCAN);
    loop {
        if tx.is_closed() {
            break;
        }
        tokio::select! {
            _ = rescan.tick() => {
                if let Ok(list) = authed.session.list("*").await {
                    for info in list.into_iter().filter(|i| !i.shared) {
                        if watchers.contains_key(&info.name) {
                            continue;
                        }
                        if let Ok(mut w) = authed.session.watch(&info.name).await {
                            let n = notify.clone();
                            tasks.spawn(async move {
                                while w.changed().await.is_ok() {
                                    n.notify_one();
                                }
                            });
                            watchers.insert(info.name, ());
                        }
                    }
                }
                // A new or deleted folder changes the state without a watcher firing.
                notify.notify_one();
            }
            _ = notify.notified() => {
                tokio::time::sleep(DEBOUNCE).await;
                let Some(now) = current_state(&ctx, &authed).await else { continue };
                if now != last {
                    last = now;
                    if tx.send(Ok(state_event(&authed.user, &types, &last))).await.is_err() {
                        break;
                    }
                    if close_after_state {
                        break;
                    }
                }
            }
            _ = ping_timer.tick(), if ping.is_some() => {
                let secs = ping.map_or(0, |p| p.as_secs());
                let ev = format!("event: ping\ndata: {{\"interval\":{secs}}}\n\n");
                if tx.send(Ok(Bytes::from(ev))).await.is_err() {
                    break;
                }
            }
            _ = tx.closed() => break,
        }
    }
    tasks.abort_all();
}
