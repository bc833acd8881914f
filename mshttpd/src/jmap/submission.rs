//! Identity and EmailSubmission (RFC 8621 6, 7): one identity per user; a submission hands
//! the stored message to the SMTP relay named by `local.service.http.smtprelay`, with the
//! Bcc header removed, and answers only after the relay accepted it. Submissions are kept in
//! a per-user journal ([`Journal`]): final (`undoStatus` "final") from the moment the relay
//! took them, with the relay's reply as each recipient's `deliveryStatus`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::address::Envelope;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use mail_parser::MessageParser;
use serde_json::{json, Map, Value};

use super::email::{self, locate};
use super::{arg_ids, arg_str, set_error, MResult, MethodError, Req};

const IDENTITY_ID: &str = "I1";
/// The identity never changes: a constant state.
const IDENTITY_STATE: &str = "i1";
/// Recipients per submission, at most.
const MAX_RECIPIENTS: usize = 1000;

/// The mail domain for a user id without one: the host name.
pub(crate) fn local_domain(user: &str) -> String {
    if let Some((_, d)) = user.rsplit_once('@') {
        return d.to_owned();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        })
        .unwrap_or_else(|| "localhost".into())
}

fn identity_email(user: &str) -> String {
    if user.contains('@') {
        user.to_owned()
    } else {
        format!("{user}@{}", local_domain(user))
    }
}

/// Identity/get.
pub(crate) async fn identity_get(req: &mut Req<'_>, args: Map<String, Value>) -> MResult {
    req.account(&args)?;
    let identity = json!({
        "id": IDENTITY_ID, "name": req.user, "email": identity_email(&req.user),
        "replyTo": null, "bcc": null, "textSignature": "", "htmlSignature": "",
        "mayDelete": false,
    });
    let (list, not_found) = match arg_ids(&args, "ids")? {
        None => (vec![identity], vec![]),
        Some(ids) => {
            let (found, missing): (Vec<String>, Vec<String>) =
                ids.into_iter().partition(|i| i == IDENTITY_ID);
            (
                if found.is_empty() {
                    vec![]
                } else {
                    vec![identity]
                },
                missing,
            )
        }
    };
    Ok(json!({"accountId": req.user, "state": IDENTITY_STATE, "list": list, "notFound": not_found}))
}

/// Identity/changes: identities never change here.
pub(crate) async fn identity_changes(req: &mut Req<'_>, args: Map<String, Value>) -> MResult {
    req.account(&args)?;
    let since = arg_str(&args, "sinceState")?.unwrap_or("");
    if since != IDENTITY_STATE {
        return Err(MethodError::CannotCalculateChanges);
    }
    Ok(json!({
        "accountId": req.user, "oldState": since, "newState": IDENTITY_STATE,
        "hasMoreChanges": false, "created": [], "updated": [], "destroyed": [],
    }))
}

/// The message without its Bcc header field(s) (RFC 5322 3.6.3: Bcc recipients are not
/// disclosed to the others).
fn strip_bcc(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut in_bcc = false;
    let mut in_header = true;
    for line in raw.split_inclusive(|&b| b == b'\n') {
        if in_header {
            if line == b"\r\n" || line == b"\n" {
                in_header = false;
                out.extend_from_slice(line);
                continue;
            }
            let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
            if !continuation {
                in_bcc = line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"bcc:");
            }
            if in_bcc {
                continue;
            }
        }
        out.extend_from_slice(line);
    }
    out
}

fn parse_relay(relay: &str) -> Option<(String, u16)> {
    let (host, port) = relay.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_owned(), port.parse().ok()?))
}

async fn submit_one(req: &mut Req<'_>, o: &Map<String, Value>) -> Result<(Value, String), Value> {
    for k in o.keys() {
        if !matches!(k.as_str(), "identityId" | "emailId" | "envelope") {
            return Err(set_error(
                "invalidProperties",
                format!("{k} cannot be set on create"),
            ));
        }
    }
    let identity = o
        .get("identityId")
        .and_then(Value::as_str)
        .ok_or_else(|| set_error("invalidProperties", "identityId is required"))?;
    if identity != IDENTITY_ID {
        return Err(set_error("invalidProperties", "no such identity"));
    }
    let email_id = o
        .get("emailId")
        .and_then(Value::as_str)
        .ok_or_else(|| set_error("invalidProperties", "emailId is required"))?;
    let loc = locate(req, email_id)
        .await
        .map_err(|e| set_error("serverFail", format!("{e:?}")))?
        .ok_or_else(|| set_error("invalidProperties", "no such email"))?;
    let email_id = loc.id();
    let thread_id = thread_of(req, &email_id).await;
    let Some(relay) = req.ctx.settings.smtp_relay.clone() else {
        return Err(set_error(
            "forbiddenToSend",
            "no SMTP relay is configured (local.service.http.smtprelay)",
        ));
    };
    let (host, port) = parse_relay(&relay).ok_or_else(|| {
        set_error(
            "forbiddenToSend",
            "local.service.http.smtprelay is not host:port",
        )
    })?;
    let raw = req
        .session
        .message_bytes(&loc.folder.name, loc.msg.uid)
        .await
        .map_err(|e| set_error("serverFail", e.to_string()))?;
    let msg = MessageParser::default()
        .parse(&raw)
        .ok_or_else(|| set_error("invalidEmail", "the email cannot be parsed"))?;
    let envelope = o.get("envelope").filter(|v| !v.is_null());
    let mail_from = envelope
        .and_then(|e| e.get("mailFrom"))
        .and_then(|m| m.get("email"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| {
            msg.from()
                .and_then(|a| a.first())
                .and_then(|a| a.address())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| identity_email(&req.user));
    let mut rcpts: Vec<String> = match envelope
        .and_then(|e| e.get("rcptTo"))
        .and_then(Value::as_array)
    {
        Some(list) => list
            .iter()
            .filter_map(|r| r.get("email").and_then(Value::as_str).map(str::to_owned))
            .collect(),
        None => [msg.to(), msg.cc(), msg.bcc()]
            .into_iter()
            .flatten()
            .flat_map(|a| a.iter().filter_map(|x| x.address().map(str::to_owned)))
            .collect(),
    };
    rcpts.dedup();
    if rcpts.is_empty() {
        return Err(set_error("noRecipients", "the email has no recipients"));
    }
    if rcpts.len() > MAX_RECIPIENTS {
        return Err(set_error("tooManyRecipients", "too many recipients"));
    }
    let from = mail_from
        .parse()
        .map_err(|_| set_error("forbiddenMailFrom", format!("invalid sender {mail_from}")))?;
    let mut to = Vec::new();
    let mut invalid = Vec::new();
    for r in &rcpts {
        match r.parse() {
            Ok(a) => to.push(a),
            Err(_) => invalid.push(r.clone()),
        }
    }
    if !invalid.is_empty() {
        let mut e = set_error("invalidRecipients", "invalid recipient addresses");
        e["invalidRecipients"] = json!(invalid);
        return Err(e);
    }
    let env = Envelope::new(Some(from), to)
        .map_err(|e| set_error("invalidProperties", format!("envelope: {e}")))?;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .timeout(Some(Duration::from_secs(30)))
        .build();
    let data = strip_bcc(&raw);
    let reply = transport.send_raw(&env, &data).await.map_err(|e| {
        tracing::warn!("submission for {} through {relay}: {e}", req.user);
        set_error(
            "forbiddenToSend",
            format!("the relay did not accept the message: {e}"),
        )
    })?;
    tracing::info!(
        "submission for {}: {} recipients through {relay}",
        req.user,
        rcpts.len()
    );
    let mut r = [0u8; 8];
    let _ = getrandom::getrandom(&mut r);
    let id = format!(
        "S{}",
        r.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    // The relay's reply to the message data covers every recipient it accepted; what
    // happens past the relay is not reported back, so delivery is "unknown" (RFC 8621 7).
    let smtp_reply = std::iter::once(reply.code().to_string())
        .chain(reply.message().map(str::to_owned))
        .collect::<Vec<_>>()
        .join(" ");
    let mut delivery = Map::new();
    for r in &rcpts {
        delivery.insert(
            r.clone(),
            json!({"smtpReply": smtp_reply, "delivered": "unknown", "displayed": "unknown"}),
        );
    }
    let sub = json!({
        "id": id,
        "identityId": identity,
        "emailId": email_id,
        "threadId": thread_id,
        "envelope": {
            "mailFrom": {"email": mail_from, "parameters": null},
            "rcptTo": rcpts.iter().map(|r| json!({"email": r, "parameters": null})).collect::<Vec<_>>(),
        },
        "sendAt": super::ids::utc_date(now),
        "undoStatus": "final",
        "deliveryStatus": delivery,
        "dsnBlobIds": [],
        "mdnBlobIds": [],
    });
    Ok((sub, email_id))
}

/// The thread of an email, as Email/get tells it.
async fn thread_of(req: &mut Req<'_>, email_id: &str) -> Value {
    let mut a = Map::new();
    a.insert("accountId".into(), Value::String(req.user.clone()));
    a.insert("ids".into(), json!([email_id]));
    a.insert("properties".into(), json!(["threadId"]));
    match email::get(req, a).await {
        Ok(v) => v["list"][0]["threadId"].clone(),
        Err(_) => Value::Null,
    }
}

/// EmailSubmission/set: create (send), update (only to what it already is: a sent
/// submission cannot be unsent), destroy (forget the record); onSuccessUpdateEmail and
/// onSuccessDestroyEmail run as an implicit Email/set.
pub(crate) async fn set(
    req: &mut Req<'_>,
    args: Map<String, Value>,
    extra: &mut Vec<(String, Value)>,
) -> MResult {
    req.account(&args)?;
    let before = req.ctx.submissions.load(&req.user).await?;
    let old_state = before.state();
    if let Some(s) = arg_str(&args, "ifInState")? {
        if s != old_state {
            return Err(MethodError::StateMismatch);
        }
    }
    let live = before.live();
    let email_of = |id: &str| -> Option<String> {
        live.iter()
            .find(|s| s["id"] == id)
            .and_then(|s| s["emailId"].as_str())
            .map(str::to_owned)
    };
    let (mut created, mut not_created) = (Map::new(), Map::new());
    // Submission (creation) id -> the email it sent, for onSuccess*.
    let mut done: Map<String, Value> = Map::new();
    let mut records = Vec::new();
    if let Some(create) = args.get("create") {
        let create = create
            .as_object()
            .ok_or_else(|| MethodError::InvalidArguments("create must be an object".into()))?;
        for (cid, obj) in create {
            let r = match obj.as_object() {
                Some(o) => submit_one(req, o).await,
                None => Err(set_error("invalidProperties", "not an object")),
            };
            match r {
                Ok((sub, email_id)) => {
                    if let Some(id) = sub.get("id").and_then(Value::as_str) {
                        req.created_ids.insert(cid.clone(), id.to_owned());
                    }
                    done.insert(format!("#{cid}"), Value::String(email_id));
                    let mut shown = sub.clone();
                    if let Some(o) = shown.as_object_mut() {
                        // The client's own values are not echoed back (RFC 8620 5.3).
                        o.remove("identityId");
                        o.remove("emailId");
                        if obj.get("envelope").is_some_and(|e| !e.is_null()) {
                            o.remove("envelope");
                        }
                    }
                    created.insert(cid.clone(), shown);
                    records.push(Record::Create { seq: 0, sub });
                }
                Err(e) => {
                    not_created.insert(cid.clone(), e);
                }
            }
        }
    }
    let (mut updated, mut not_updated) = (Map::new(), Map::new());
    if let Some(update) = args.get("update") {
        let update = update
            .as_object()
            .ok_or_else(|| MethodError::InvalidArguments("update must be an object".into()))?;
        for (id, patch) in update {
            let id = req.resolve_id(id);
            let Some(email_id) = email_of(&id) else {
                not_updated.insert(id, set_error("notFound", "no such submission"));
                continue;
            };
            let patch = patch.as_object().cloned().unwrap_or_default();
            let err = patch
                .iter()
                .find_map(|(k, v)| match (k.as_str(), v.as_str()) {
                    ("undoStatus", Some("final")) => None,
                    ("undoStatus", Some("canceled")) => Some(set_error(
                        "cannotUnsend",
                        "the relay has already taken the message",
                    )),
                    _ => Some(set_error(
                        "invalidProperties",
                        format!("{k} cannot be changed"),
                    )),
                });
            match err {
                Some(e) => {
                    not_updated.insert(id, e);
                }
                None => {
                    done.insert(id.clone(), Value::String(email_id));
                    updated.insert(id, Value::Null);
                }
            }
        }
    }
    let (mut destroyed, mut not_destroyed) = (Vec::new(), Map::new());
    for id in arg_ids(&args, "destroy")?.unwrap_or_default() {
        let id = req.resolve_id(&id);
        match email_of(&id) {
            Some(email_id) if !destroyed.contains(&id) => {
                done.insert(id.clone(), Value::String(email_id));
                records.push(Record::Destroy {
                    seq: 0,
                    id: id.clone(),
                });
                destroyed.push(id);
            }
            _ => {
                not_destroyed.insert(id, set_error("notFound", "no such submission"));
            }
        }
    }
    let new_state = match req.ctx.submissions.append(&req.user, records).await {
        Ok(log) => log.state(),
        // The mail has gone: say so, and that it was not recorded.
        Err(e) => {
            tracing::error!("submissions of {} not recorded: {e:?}", req.user);
            old_state.clone()
        }
    };
    let out = json!({
        "accountId": req.user, "oldState": old_state, "newState": new_state,
        "created": created, "notCreated": not_created,
        "updated": updated, "notUpdated": not_updated,
        "destroyed": destroyed, "notDestroyed": not_destroyed,
    });
    let email_for =
        |k: &str| -> Option<String> { done.get(k).and_then(Value::as_str).map(str::to_owned) };
    let mut update = Map::new();
    if let Some(u) = args.get("onSuccessUpdateEmail").and_then(Value::as_object) {
        for (k, patch) in u {
            if let Some(e) = email_for(k) {
                update.insert(e, patch.clone());
            }
        }
    }
    let mut destroy = Vec::new();
    if let Some(d) = args.get("onSuccessDestroyEmail").and_then(Value::as_array) {
        for k in d.iter().filter_map(Value::as_str) {
            if let Some(e) = email_for(k) {
                destroy.push(Value::String(e));
            }
        }
    }
    if !update.is_empty() || !destroy.is_empty() {
        let mut a = Map::new();
        a.insert("accountId".into(), Value::String(req.user.clone()));
        a.insert("update".into(), Value::Object(update));
        a.insert("destroy".into(), Value::Array(destroy));
        match email::set(req, a).await {
            Ok(v) => extra.push(("Email/set".into(), v)),
            Err(e) => extra.push(("error".into(), e.to_json())),
        }
    }
    Ok(out)
}

/// Lines a journal may reach before it is rewritten with only the newest submissions.
const JOURNAL_MAX_LINES: usize = 1000;
/// Bytes a journal may reach before the same.
const JOURNAL_MAX_BYTES: u64 = 8 * 1024 * 1024;
/// Submissions kept when a journal is rewritten (newest first, within half the bytes).
const JOURNAL_KEEP: usize = 500;

/// One journal line.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Record {
    /// A submission made (the EmailSubmission object as it stays).
    Create { seq: u64, sub: Value },
    /// A submission destroyed.
    Destroy { seq: u64, id: String },
    /// Changes before this sequence number are no longer known (the journal was rewritten).
    Base { seq: u64 },
}

impl Record {
    fn seq(&self) -> u64 {
        match self {
            Record::Create { seq, .. } | Record::Destroy { seq, .. } | Record::Base { seq } => *seq,
        }
    }
}

/// A user's journal as read.
#[derive(Default)]
struct Log {
    base: u64,
    last: u64,
    records: Vec<Record>,
    bytes: u64,
    /// The file does not end with a newline (a write was cut short).
    torn: bool,
}

impl Log {
    fn state(&self) -> String {
        format!("j{:x}", self.last)
    }

    /// Live submissions, oldest first.
    fn live(&self) -> Vec<Value> {
        let destroyed: std::collections::HashSet<&str> = self
            .records
            .iter()
            .filter_map(|r| match r {
                Record::Destroy { id, .. } => Some(id.as_str()),
                _ => None,
            })
            .collect();
        self.records
            .iter()
            .filter_map(|r| match r {
                Record::Create { sub, .. } => Some(sub),
                _ => None,
            })
            .filter(|s| !destroyed.contains(s["id"].as_str().unwrap_or("")))
            .cloned()
            .collect()
    }

    /// The sequence number a state string names, if changes since it can be told.
    fn since(&self, state: &str) -> MResult<u64> {
        let n = state
            .strip_prefix('j')
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .ok_or(MethodError::CannotCalculateChanges)?;
        if n < self.base || n > self.last {
            return Err(MethodError::CannotCalculateChanges);
        }
        Ok(n)
    }
}

/// EmailSubmission records, one journal file per user under `data/http/submissions/`:
/// appended (and synced) as submissions are made and destroyed, so `/get`, `/changes`,
/// `/query` and `/queryChanges` answer for submissions made before a restart too.
pub(crate) struct Journal {
    dir: PathBuf,
    /// One writer at a time, so sequence numbers stay in order.
    write: tokio::sync::Mutex<()>,
}

impl Journal {
    pub(crate) fn new(root: &Path) -> Journal {
        Journal {
            dir: root.join("data").join("http").join("submissions"),
            write: tokio::sync::Mutex::new(()),
        }
    }

    fn path(&self, user: &str) -> PathBuf {
        self.dir
            .join(format!("{}.jsonl", super::blob::user_dir_name(user)))
    }

    async fn load(&self, user: &str) -> MResult<Log> {
        let path = self.path(user);
        let data = match tokio::fs::read(&path).await {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Log::default()),
            Err(e) => {
                return Err(MethodError::ServerFail(format!(
                    "submission journal {}: {e}",
                    path.display()
                )))
            }
        };
        let mut log = Log {
            bytes: data.len() as u64,
            torn: data.last().is_some_and(|b| *b != b'\n'),
            ..Log::default()
        };
        for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            // A torn last line (a crash mid-write) is skipped: it was never acknowledged.
            let Ok(rec) = serde_json::from_slice::<Record>(line) else {
                tracing::warn!("submission journal {}: unreadable line", path.display());
                continue;
            };
            log.last = log.last.max(rec.seq());
            if let Record::Base { seq } = rec {
                log.base = log.base.max(seq);
            } else {
                log.records.push(rec);
            }
        }
        Ok(log)
    }

    /// Appends records (their sequence numbers assigned here); returns the log after.
    async fn append(&self, user: &str, ops: Vec<Record>) -> MResult<Log> {
        let _guard = self.write.lock().await;
        let mut log = self.load(user).await?;
        if ops.is_empty() {
            return Ok(log);
        }
        // After a torn line the next record starts on a line of its own.
        let mut lines = if log.torn { vec![b'\n'] } else { Vec::new() };
        for mut rec in ops {
            log.last += 1;
            match &mut rec {
                Record::Create { seq, .. } | Record::Destroy { seq, .. } | Record::Base { seq } => {
                    *seq = log.last
                }
            }
            let mut line = serde_json::to_vec(&rec)
                .map_err(|e| MethodError::ServerFail(format!("journal record: {e}")))?;
            line.push(b'\n');
            lines.extend_from_slice(&line);
            log.records.push(rec);
        }
        log.bytes += lines.len() as u64;
        let compact = log.records.len() > JOURNAL_MAX_LINES || log.bytes > JOURNAL_MAX_BYTES;
        let (dir, path) = (self.dir.clone(), self.path(user));
        let rewrite = compact.then(|| {
            let mut keep = Vec::new();
            let mut bytes = 0u64;
            for sub in log.live().into_iter().rev().take(JOURNAL_KEEP) {
                bytes += sub.to_string().len() as u64;
                if bytes > JOURNAL_MAX_BYTES / 2 {
                    break;
                }
                keep.push(sub);
            }
            keep.reverse();
            let mut out = format!("{}\n", json!({"op": "base", "seq": log.last})).into_bytes();
            for sub in &keep {
                // Kept submissions count as made at the new base: older states are gone.
                out.extend_from_slice(
                    format!("{}\n", json!({"op": "create", "seq": log.last, "sub": sub}))
                        .as_bytes(),
                );
            }
            out
        });
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            std::fs::create_dir_all(&dir)?;
            match rewrite {
                Some(all) => {
                    let tmp = path.with_extension("jsonl.tmp");
                    let mut f = std::fs::File::create(&tmp)?;
                    f.write_all(&all)?;
                    f.sync_all()?;
                    std::fs::rename(&tmp, &path)
                }
                None => {
                    let mut f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)?;
                    f.write_all(&lines)?;
                    f.sync_data()
                }
            }
        })
        .await
        .map_err(|e| MethodError::ServerFail(format!("journal writer: {e}")))?;
        written.map_err(|e| MethodError::ServerFail(format!("submission journal: {e}")))?;
        if compact {
            return self.load(user).await;
        }
        Ok(log)
    }
}

const SUBMISSION_PROPERTIES: &[&str] = &[
    "id",
    "identityId",
    "emailId",
    "threadId",
    "envelope",
    "sendAt",
    "undoStatus",
    "deliveryStatus",
    "dsnBlobIds",
    "mdnBlobIds",
];

/// EmailSubmission/get.
pub(crate) async fn get(req: &mut Req<'_>, args: Map<String, Value>) -> MResult {
    req.account(&args)?;
    let props = arg_ids(&args, "properties")?;
    if let Some(bad) = props
        .iter()
        .flatten()
        .find(|p| !SUBMISSION_PROPERTIES.contains(&p.as_str()))
    {
        return Err(MethodError::InvalidArguments(format!(
            "unknown property {bad}"
        )));
    }
    let log = req.ctx.submissions.load(&req.user).await?;
    let live = log.live();
    let pick = |s: &Value| -> Value {
        match &props {
            None => s.clone(),
            Some(p) => {
                let mut o = Map::new();
                o.insert("id".into(), s["id"].clone());
                for k in p {
                    o.insert(k.clone(), s.get(k).cloned().unwrap_or(Value::Null));
                }
                Value::Object(o)
            }
        }
    };
    let (mut list, mut not_found) = (Vec::new(), Vec::new());
    match arg_ids(&args, "ids")? {
        None => list = live.iter().map(pick).collect(),
        Some(ids) => {
            for id in super::unique_ids(ids) {
                let id = req.resolve_id(&id);
                match live.iter().find(|s| s["id"] == id.as_str()) {
                    Some(s) => list.push(pick(s)),
                    None => not_found.push(id),
                }
            }
        }
    }
    Ok(json!({"accountId": req.user, "state": log.state(), "list": list, "notFound": not_found}))
}

/// EmailSubmission/changes: submissions made and destroyed since a state (they are never
/// updated: every one is final when made).
pub(crate) async fn changes(req: &mut Req<'_>, args: Map<String, Value>) -> MResult {
    req.account(&args)?;
    let since = arg_str(&args, "sinceState")?
        .ok_or_else(|| MethodError::InvalidArguments("sinceState is required".into()))?
        .to_owned();
    let max = super::arg_uint(&args, "maxChanges")?.map(|m| m as usize);
    if max == Some(0) {
        return Err(MethodError::InvalidArguments(
            "maxChanges must be positive".into(),
        ));
    }
    let log = req.ctx.submissions.load(&req.user).await?;
    let from = log.since(&since)?;
    let mut created: Vec<String> = Vec::new();
    let mut destroyed: Vec<String> = Vec::new();
    let mut new_state = log.last;
    let mut more = false;
    for rec in log.records.iter().filter(|r| r.seq() > from) {
        if max.is_some_and(|m| created.len() + destroyed.len() >= m) {
            more = true;
            break;
        }
        match rec {
            Record::Create { sub, .. } => {
                created.push(sub["id"].as_str().unwrap_or("").to_owned());
            }
            Record::Destroy { id, .. } => {
                // Made and destroyed within the window: neither is worth telling.
                match created.iter().position(|c| c == id) {
                    Some(i) => {
                        created.remove(i);
                    }
                    None => destroyed.push(id.clone()),
                }
            }
            Record::Base { .. } => {}
        }
        new_state = rec.seq();
    }
    Ok(json!({
        "accountId": req.user, "oldState": since, "newState": format!("j{new_state:x}"),
        "hasMoreChanges": more, "created": created, "updated": [], "destroyed": destroyed,
    }))
}

fn submission_matches(s: &Value, filter: &Map<String, Value>) -> MResult<bool> {
    if let Some(op) = filter.get("operator").and_then(Value::as_str) {
        let conds = filter
            .get("conditions")
            .and_then(Value::as_array)
            .ok_or_else(|| MethodError::InvalidArguments("conditions must be a list".into()))?;
        let mut results = Vec::new();
        for c in conds {
            let c = c.as_object().ok_or_else(|| {
                MethodError::InvalidArguments("a condition must be an object".into())
            })?;
            results.push(submission_matches(s, c)?);
        }
        return match op {
            "AND" => Ok(results.iter().all(|b| *b)),
            "OR" => Ok(results.iter().any(|b| *b)),
            "NOT" => Ok(!results.iter().any(|b| *b)),
            _ => Err(MethodError::UnsupportedFilter(format!("operator {op}"))),
        };
    }
    for (k, v) in filter {
        let in_list = |prop: &str| -> MResult<bool> {
            let list = v.as_array().ok_or_else(|| {
                MethodError::InvalidArguments(format!("{k} must be a list of ids"))
            })?;
            Ok(list.iter().any(|x| *x == s[prop]))
        };
        let date = || -> MResult<i64> {
            v.as_str()
                .and_then(super::ids::parse_date)
                .ok_or_else(|| MethodError::InvalidArguments(format!("{k} must be a UTCDate")))
        };
        let sent = s["sendAt"]
            .as_str()
            .and_then(super::ids::parse_date)
            .unwrap_or(0);
        let ok = match k.as_str() {
            "identityIds" => in_list("identityId")?,
            "emailIds" => in_list("emailId")?,
            "threadIds" => in_list("threadId")?,
            "undoStatus" => *v == s["undoStatus"],
            "before" => sent < date()?,
            "after" => sent >= date()?,
            other => {
                return Err(MethodError::UnsupportedFilter(format!(
                    "EmailSubmission filter {other}"
                )))
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The live submissions a query selects, in its order (oldest first unless sorted).
fn query_list(live: Vec<Value>, args: &Map<String, Value>) -> MResult<Vec<Value>> {
    let filter = match args.get("filter") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => {
            return Err(MethodError::InvalidArguments(
                "filter must be an object".into(),
            ))
        }
    };
    let mut out = Vec::new();
    for s in live {
        if submission_matches(&s, &filter)? {
            out.push(s);
        }
    }
    if let Some(sorts) = args.get("sort").filter(|v| !v.is_null()) {
        let sorts = sorts
            .as_array()
            .ok_or_else(|| MethodError::InvalidArguments("sort must be a list".into()))?;
        for c in sorts.iter().rev() {
            let prop = c.get("property").and_then(Value::as_str).unwrap_or("");
            let asc = c
                .get("isAscending")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            let key = match prop {
                "emailId" => "emailId",
                "threadId" => "threadId",
                // RFC 8621 7.3 sorts by "sentAt", the time in sendAt.
                "sentAt" | "sendAt" => "sendAt",
                other => return Err(MethodError::UnsupportedSort(other.to_owned())),
            };
            out.sort_by(|a, b| {
                let o = a[key].as_str().cmp(&b[key].as_str());
                if asc {
                    o
                } else {
                    o.reverse()
                }
            });
        }
    }
    Ok(out)
}

/// EmailSubmission/query.
pub(crate) async fn query(req: &mut Req<'_>, args: Map<String, Value>) -> MResult {
    req.account(&args)?;
    let log = req.ctx.submissions.load(&req.user).await?;
    let matched = query_list(log.live(), &args)?;
    let total = matched.len();
    let mut position = super::arg_int(&args, "position")?.unwrap_or(0);
    if let Some(anchor) = arg_str(&args, "anchor")? {
        let at = matched
            .iter()
            .position(|s| s["id"] == anchor)
            .ok_or(MethodError::AnchorNotFound)?;
        let offset = super::arg_int(&args, "anchorOffset")?.unwrap_or(0);
        position = (at as i64 + offset).max(0);
    } else if position < 0 {
        position = (total as i64 + position).max(0);
    }
    let position = (position as usize).min(total);
    let limit = super::arg_uint(&args, "limit")?.map_or(usize::MAX, |l| l as usize);
    let ids: Vec<&Value> = matched
        .iter()
        .skip(position)
        .take(limit)
        .map(|s| &s["id"])
        .collect();
    let mut out = json!({
        "accountId": req.user, "queryState": log.state(), "canCalculateChanges": true,
        "position": position, "ids": ids,
    });
    if super::arg_bool(&args, "calculateTotal")? {
        out["total"] = json!(total);
    }
    Ok(out)
}

/// EmailSubmission/queryChanges: submissions never change, so a query's results change
/// only by those made (added where they sort) and destroyed since the state.
pub(crate) async fn query_changes(req: &mut Req<'_>, args: Map<String, Value>) -> MResult {
    req.account(&args)?;
    let since = arg_str(&args, "sinceQueryState")?
        .ok_or_else(|| MethodError::InvalidArguments("sinceQueryState is required".into()))?
        .to_owned();
    let log = req.ctx.submissions.load(&req.user).await?;
    let from = log.since(&since)?;
    let mut made = std::collections::HashSet::new();
    let mut removed = Vec::new();
    for rec in log.records.iter().filter(|r| r.seq() > from) {
        match rec {
            Record::Create { sub, .. } => {
                made.insert(sub["id"].as_str().unwrap_or("").to_owned());
            }
            Record::Destroy { id, .. } => {
                if !made.remove(id) {
                    removed.push(id.clone());
                }
            }
            Record::Base { .. } => {}
        }
    }
    let matched = query_list(log.live(), &args)?;
    let added: Vec<Value> = matched
        .iter()
        .enumerate()
        .filter(|(_, s)| made.contains(s["id"].as_str().unwrap_or("")))
        .map(|(i, s)| json!({"id": s["id"], "index": i}))
        .collect();
    if let Some(max) = super::arg_uint(&args, "maxChanges")? {
        if removed.len() + added.len() > max as usize {
            return Err(MethodError::TooManyChanges);
        }
    }
    let mut out = json!({
        "accountId": req.user, "oldQueryState": since, "newQueryState": log.state(),
        "removed": removed, "added": added,
    });
    if super::arg_bool(&args, "calculateTotal")? {
        out["total"] = json!(matched.len());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcc_is_removed_with_continuations() {
        let m = b"From: a@b\r\nBcc: x@y,\r\n z@w\r\nTo: c@d\r\n\r\nBcc: body stays\r\n";
        assert_eq!(
            strip_bcc(m),
            b"From: a@b\r\nTo: c@d\r\n\r\nBcc: body stays\r\n".to_vec()
        );
    }

    #[test]
    fn relay_address() {
        assert_eq!(
            parse_relay("127.0.0.1:2525"),
            Some(("127.0.0.1".into(), 2525))
        );
        assert_eq!(parse_relay("nope"), None);
    }

    fn create(n: usize) -> Record {
        Record::Create {
            seq: 0,
            sub: json!({"id": format!("S{n}"), "emailId": format!("M{n}"), "undoStatus": "final"}),
        }
    }

    /// The journal: sequence numbers, destroys, a torn last line skipped, and the rewrite
    /// past its size that keeps the newest submissions and forgets older states.
    #[test]
    fn journal_appends_skips_torn_lines_and_compacts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let j = Journal::new(dir.path());
            let log = j
                .append("joe", vec![create(1), create(2)])
                .await
                .expect("append");
            assert_eq!((log.base, log.last, log.state()), (0, 2, "j2".to_string()));
            let log = j
                .append(
                    "joe",
                    vec![Record::Destroy {
                        seq: 0,
                        id: "S1".into(),
                    }],
                )
                .await
                .expect("destroy");
            assert_eq!(log.live().len(), 1);
            assert!(log.since("j1").is_ok() && log.since("j4").is_err());
            // A crash mid-write leaves a torn line: it is skipped, the rest still reads.
            let path = j.path("joe");
            let mut data = std::fs::read(&path).expect("journal");
            data.extend_from_slice(b"{\"op\":\"create\",\"seq\":4,\"sub\":{\"id\"");
            std::fs::write(&path, &data).expect("write");
            let log = j.load("joe").await.expect("load");
            assert_eq!((log.last, log.live().len()), (3, 1));
            let log = j.append("joe", vec![create(3)]).await.expect("append");
            assert_eq!(log.last, 4);
            let log = j.load("joe").await.expect("load");
            assert_eq!((log.last, log.live().len()), (4, 2));
            // Past JOURNAL_MAX_LINES the journal is rewritten with the newest submissions.
            let many: Vec<Record> = (10..10 + JOURNAL_MAX_LINES).map(create).collect();
            let log = j.append("joe", many).await.expect("append many");
            let live = log.live();
            assert_eq!(live.len(), JOURNAL_KEEP);
            assert_eq!(
                live.last().map(|s| s["id"].clone()),
                Some(json!(format!("S{}", 9 + JOURNAL_MAX_LINES)))
            );
            assert_eq!(log.base, log.last);
            assert!(matches!(
                log.since("j3"),
                Err(MethodError::CannotCalculateChanges)
            ));
            assert!(log.since(&log.state()).is_ok());
            let lines = std::fs::read_to_string(&path)
                .expect("journal")
                .lines()
                .count();
            assert_eq!(lines, JOURNAL_KEEP + 1);
            // Another user's journal is a file of its own.
            let other = j.load("bob").await.expect("load bob");
            assert_eq!((other.last, other.live().len()), (0, 0));
        });
    }
}
