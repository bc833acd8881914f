//! Email, Thread and SearchSnippet methods (RFC 8621 3-5).
//!
//! Cheap properties (subject, dates, ids, preview, hasAttachment) come from the store's
//! structure cache; addresses, headers and bodies from the message parsed with mail-parser,
//! which also makes textBody, htmlBody and attachments by RFC 8621's own algorithm.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use mail_parser::{HeaderValue, MessageParser, MimeHeaders, PartType};
use serde_json::{json, Map, Value};
use store_client::{
    EmailId, EmailIndex, Flag, FlagOp, Flags, Keyword, MessageState, MessageStructure, SearchKey,
    ThreadId,
};

use super::ids::{self, parse_state, BlobRef, FolderState};
use super::{
    arg_bool, arg_ids, arg_int, arg_props, arg_str, arg_uint, set_error, store_set_error, Folder,
    MResult, MethodError, Req,
};

pub(crate) const SORT_OPTIONS: &[&str] = &[
    "receivedAt",
    "sentAt",
    "size",
    "from",
    "to",
    "subject",
    "hasKeyword",
];

const DEFAULT_PROPERTIES: &[&str] = &[
    "id",
    "blobId",
    "threadId",
    "mailboxIds",
    "keywords",
    "size",
    "receivedAt",
    "messageId",
    "inReplyTo",
    "references",
    "sender",
    "from",
    "to",
    "cc",
    "bcc",
    "replyTo",
    "subject",
    "sentAt",
    "hasAttachment",
    "preview",
    "bodyValues",
    "textBody",
    "htmlBody",
    "attachments",
];

const OTHER_PROPERTIES: &[&str] = &["bodyStructure", "headers"];

const DEFAULT_BODY_PROPERTIES: &[&str] = &[
    "partId",
    "blobId",
    "size",
    "name",
    "type",
    "charset",
    "disposition",
    "cid",
    "language",
    "location",
];

/// Query results are capped at this many ids (the response then says `limit`).
const MAX_QUERY_RESULTS: usize = 10_000;

/// An Email located in the user's folders: every live copy, and the one whose bytes and
/// date stand for it (the oldest copy, so the choice holds still while copies come and go).
#[derive(Clone)]
pub(crate) struct Loc {
    pub folder: Folder,
    pub msg: MessageState,
    pub email: EmailId,
    pub thread: ThreadId,
    /// Every live copy (the primary one included), in folder order.
    pub copies: Vec<(Folder, MessageState)>,
}

impl Loc {
    pub fn id(&self) -> String {
        self.email.to_string()
    }

    /// Keywords of the Email: those of any copy (a keyword change applies to every copy,
    /// so they differ only after IMAP changed one copy alone).
    fn flags(&self) -> Flags {
        let mut f = Flags::new();
        for (_, m) in &self.copies {
            for x in m.flags.to_vec() {
                f.insert(x);
            }
        }
        f
    }

    fn mailbox_ids(&self) -> Value {
        let mut o = Map::new();
        for (f, _) in &self.copies {
            o.insert(f.id(), Value::Bool(true));
        }
        Value::Object(o)
    }
}

/// The live copy of a message in a folder of this request, if it is still there.
async fn live_copy(
    req: &mut Req<'_>,
    uidvalidity: u32,
    uid: u32,
) -> MResult<Option<(Folder, MessageState)>> {
    let Some(folder) = req.folder_by_uv(uidvalidity).await? else {
        return Ok(None);
    };
    let snap = req.snapshot(&folder).await?;
    let msg = snap
        .messages
        .binary_search_by_key(&uid, |m| m.uid)
        .ok()
        .map(|i| snap.messages[i].clone())
        .filter(|m| !m.expunged);
    Ok(msg.map(|m| (folder, m)))
}

/// Finds an Email through an index already brought up to date.
pub(crate) async fn locate_in(
    req: &mut Req<'_>,
    index: &EmailIndex,
    id: &str,
) -> MResult<Option<Loc>> {
    let id = req.resolve_id(id);
    let Some(email) = ids::parse_email_id(&id) else {
        return Ok(None);
    };
    let Some(thread) = index.thread_of(&email) else {
        return Ok(None);
    };
    let mut copies = Vec::new();
    for c in index.copies(&email) {
        if let Some(x) = live_copy(req, c.uidvalidity, c.uid).await? {
            copies.push(x);
        }
    }
    copies.sort_by_key(|(f, m)| (f.uidvalidity, m.uid));
    let Some((folder, msg)) = copies
        .iter()
        .min_by_key(|(f, m)| (m.internal_date, f.uidvalidity, m.uid))
        .cloned()
    else {
        return Ok(None);
    };
    Ok(Some(Loc {
        folder,
        msg,
        email,
        thread,
        copies,
    }))
}

/// Finds a live Email by id (or `#creationId`).
pub(crate) async fn locate(req: &mut Req<'_>, id: &str) -> MResult<Option<Loc>> {
    let index = req.session.email_index().await?;
    locate_in(req, &index, id).await
}

/// JMAP keywords of a message (lower case, as RFC 8621 recommends; \Deleted is IMAP's and
/// not shown).
pub(crate) fn keywords_json(flags: &Flags) -> Value {
    let mut o = Map::new();
    for f in flags.to_vec() {
        let k = match f {
            Flag::Seen => "$seen".to_owned(),
            Flag::Answered => "$answered".to_owned(),
            Flag::Flagged => "$flagged".to_owned(),
            Flag::Draft => "$draft".to_owned(),
            Flag::Deleted => continue,
            Flag::Keyword(k) => k.as_str().to_lowercase(),
        };
        o.insert(k, Value::Bool(true));
    }
    Value::Object(o)
}

/// The store flag for a JMAP keyword.
pub(crate) fn flag_of_keyword(k: &str) -> Result<Flag, String> {
    match k.to_ascii_lowercase().as_str() {
        "$seen" => Ok(Flag::Seen),
        "$answered" => Ok(Flag::Answered),
        "$flagged" => Ok(Flag::Flagged),
        "$draft" => Ok(Flag::Draft),
        _ => Keyword::new(k)
            .map(Flag::Keyword)
            .map_err(|e| e.to_string()),
    }
}

fn strip_angle(s: &str) -> String {
    s.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned()
}

fn msg_ids(raw: Option<&[u8]>) -> Value {
    let Some(raw) = raw else { return Value::Null };
    let s = String::from_utf8_lossy(raw);
    let ids: Vec<String> = s
        .split('<')
        .skip(1)
        .filter_map(|p| p.split_once('>').map(|(id, _)| id.trim().to_owned()))
        .filter(|id| !id.is_empty())
        .collect();
    if ids.is_empty() {
        let t = strip_angle(&s);
        if t.is_empty() {
            Value::Null
        } else {
            json!([t])
        }
    } else {
        json!(ids)
    }
}

fn addresses(a: Option<&mail_parser::Address<'_>>) -> Value {
    let Some(a) = a else { return Value::Null };
    let list: Vec<Value> = a
        .iter()
        .map(|x| json!({"name": x.name(), "email": x.address().unwrap_or("")}))
        .collect();
    json!(list)
}

/// Options of Email/get for body values.
#[derive(Clone, Default)]
pub(crate) struct BodyOpts {
    pub body_props: Vec<String>,
    pub fetch_text: bool,
    pub fetch_html: bool,
    pub fetch_all: bool,
    pub max_bytes: usize,
}

fn content_type_of(p: &mail_parser::MessagePart<'_>) -> String {
    match p.content_type() {
        Some(ct) => match ct.subtype() {
            Some(st) => format!("{}/{}", ct.ctype(), st).to_ascii_lowercase(),
            None => ct.ctype().to_ascii_lowercase(),
        },
        None => match &p.body {
            PartType::Message(_) => "message/rfc822".into(),
            PartType::Multipart(_) => "multipart/mixed".into(),
            _ => "text/plain".into(),
        },
    }
}

fn raw_headers(raw: &[u8], headers: &[mail_parser::Header<'_>]) -> Value {
    let list: Vec<Value> = headers
        .iter()
        .map(|h| {
            let start = (h.offset_start as usize).min(raw.len());
            let end = (h.offset_end as usize).clamp(start, raw.len());
            let v = String::from_utf8_lossy(&raw[start..end]);
            json!({"name": h.name.as_str(), "value": v.trim_end_matches(['\r', '\n'])})
        })
        .collect();
    json!(list)
}

fn part_json(
    msg: &mail_parser::Message<'_>,
    idx: u32,
    props: &[String],
    blob: &dyn Fn(u32) -> String,
    recurse: bool,
    depth: usize,
) -> Value {
    let Some(p) = msg.part(idx) else {
        return Value::Null;
    };
    let raw = msg.raw_message();
    let mut o = Map::new();
    let is_multi = matches!(p.body, PartType::Multipart(_));
    for prop in props {
        let v = match prop.as_str() {
            "partId" => {
                if is_multi {
                    Value::Null
                } else {
                    json!(idx.to_string())
                }
            }
            "blobId" => {
                if is_multi {
                    Value::Null
                } else {
                    json!(blob(idx))
                }
            }
            "size" => json!(match &p.body {
                PartType::Multipart(_) => 0,
                PartType::Message(_) => (p.offset_end.saturating_sub(p.offset_body)) as usize,
                _ => p.contents().len(),
            }),
            "name" => json!(p.attachment_name()),
            "type" => json!(content_type_of(p)),
            "charset" => {
                let ct = content_type_of(p);
                match p.content_type().and_then(|c| c.attribute("charset")) {
                    Some(c) => json!(c),
                    None if ct.starts_with("text/") => json!("us-ascii"),
                    None => Value::Null,
                }
            }
            "disposition" => json!(p
                .content_disposition()
                .map(|d| d.ctype().to_ascii_lowercase())),
            "cid" => json!(p.content_id().map(strip_angle)),
            "language" => match p.content_language() {
                HeaderValue::Text(t) => json!([t]),
                HeaderValue::TextList(l) => json!(l),
                _ => Value::Null,
            },
            "location" => json!(p.content_location()),
            "headers" => raw_headers(raw, &p.headers),
            _ => continue,
        };
        o.insert(prop.clone(), v);
    }
    if recurse && is_multi && depth < message_structure::MAX_DEPTH {
        if let PartType::Multipart(children) = &p.body {
            let subs: Vec<Value> = children
                .iter()
                .map(|c| part_json(msg, *c, props, blob, true, depth + 1))
                .collect();
            o.insert("subParts".into(), json!(subs));
        }
    }
    Value::Object(o)
}

fn truncate_utf8(s: &str, max: usize) -> (&str, bool) {
    if max == 0 || s.len() <= max {
        return (s, false);
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    (&s[..end], true)
}

fn part_text<'m>(p: &'m mail_parser::MessagePart<'_>) -> Option<&'m str> {
    match &p.body {
        PartType::Text(t) | PartType::Html(t) => Some(t.as_ref()),
        _ => None,
    }
}

/// Properties that need the parsed message.
fn parsed_props(
    o: &mut Map<String, Value>,
    msg: &mail_parser::Message<'_>,
    props: &[String],
    opts: &BodyOpts,
    blob: &dyn Fn(u32) -> String,
) -> MResult<()> {
    let raw = msg.raw_message();
    for prop in props {
        let v = match prop.as_str() {
            "from" => addresses(msg.from()),
            "to" => addresses(msg.to()),
            "cc" => addresses(msg.cc()),
            "bcc" => addresses(msg.bcc()),
            "replyTo" => addresses(msg.reply_to()),
            "sender" => addresses(msg.sender()),
            "headers" => raw_headers(raw, msg.headers()),
            "bodyStructure" => part_json(msg, 0, &opts.body_props, blob, true, 0),
            "textBody" | "htmlBody" | "attachments" => {
                let list = match prop.as_str() {
                    "textBody" => &msg.text_body,
                    "htmlBody" => &msg.html_body,
                    _ => &msg.attachments,
                };
                json!(list
                    .iter()
                    .map(|i| part_json(msg, *i, &opts.body_props, blob, false, 0))
                    .collect::<Vec<_>>())
            }
            "bodyValues" => {
                let mut wanted: Vec<u32> = Vec::new();
                if opts.fetch_text || opts.fetch_all {
                    wanted.extend(&msg.text_body);
                }
                if opts.fetch_html || opts.fetch_all {
                    wanted.extend(&msg.html_body);
                }
                if opts.fetch_all {
                    for (i, p) in msg.parts.iter().enumerate() {
                        if part_text(p).is_some() {
                            wanted.push(i as u32);
                        }
                    }
                }
                let mut values = Map::new();
                for i in wanted {
                    let Some(p) = msg.part(i) else { continue };
                    let Some(text) = part_text(p) else { continue };
                    let (t, truncated) = truncate_utf8(text, opts.max_bytes);
                    values.insert(
                        i.to_string(),
                        json!({"value": t, "isEncodingProblem": p.is_encoding_problem, "isTruncated": truncated}),
                    );
                }
                Value::Object(values)
            }
            p if p.starts_with("header:") => header_prop(msg, raw, p)?,
            _ => continue,
        };
        o.insert(prop.clone(), v);
    }
    Ok(())
}

/// `header:Name[:asForm][:all]` (RFC 8621 4.1.3).
fn header_prop(msg: &mail_parser::Message<'_>, raw: &[u8], prop: &str) -> MResult {
    let mut parts: Vec<&str> = prop.split(':').skip(1).collect();
    let all = parts.last() == Some(&"all");
    if all {
        parts.pop();
    }
    let (name, form) = match parts.as_slice() {
        [n] => (*n, "asRaw"),
        [n, f] => (*n, *f),
        _ => {
            return Err(MethodError::InvalidArguments(format!(
                "bad property {prop}"
            )))
        }
    };
    if name.is_empty() {
        return Err(MethodError::InvalidArguments(format!(
            "bad property {prop}"
        )));
    }
    let found: Vec<&mail_parser::Header<'_>> = msg
        .headers()
        .iter()
        .filter(|h| h.name.as_str().eq_ignore_ascii_case(name))
        .collect();
    let one = |h: &mail_parser::Header<'_>| -> MResult {
        let start = (h.offset_start as usize).min(raw.len());
        let end = (h.offset_end as usize).clamp(start, raw.len());
        let rawv = String::from_utf8_lossy(&raw[start..end]).into_owned();
        Ok(match form {
            "asRaw" => json!(rawv),
            "asText" => match &h.value {
                HeaderValue::Text(t) => json!(t.trim()),
                HeaderValue::TextList(l) => json!(l.join(", ")),
                _ => json!(rawv.split_whitespace().collect::<Vec<_>>().join(" ")),
            },
            "asAddresses" => match &h.value {
                HeaderValue::Address(a) => addresses(Some(a)),
                _ => Value::Null,
            },
            "asMessageIds" => msg_ids(Some(rawv.as_bytes())),
            "asDate" => match &h.value {
                HeaderValue::DateTime(d) => json!(ids::utc_date(d.to_timestamp())),
                _ => Value::Null,
            },
            "asURLs" => {
                let urls: Vec<String> = rawv
                    .split('<')
                    .skip(1)
                    .filter_map(|p| p.split_once('>').map(|(u, _)| u.trim().to_owned()))
                    .collect();
                json!(urls)
            }
            other => {
                return Err(MethodError::InvalidArguments(format!(
                    "unknown header form {other}"
                )))
            }
        })
    };
    if all {
        Ok(Value::Array(
            found.iter().map(|h| one(h)).collect::<MResult<Vec<_>>>()?,
        ))
    } else {
        match found.last() {
            Some(h) => one(h),
            None => Ok(Value::Null),
        }
    }
}

/// Addresses from the cached envelope, unless a display name is RFC 2047 encoded (then the
/// message is parsed, which decodes it).
fn envelope_addresses(list: &[message_structure::Address]) -> Option<Value> {
    if list.is_empty() {
        return Some(Value::Null);
    }
    let mut out = Vec::new();
    for a in list.iter().filter(|a| a.is_mailbox()) {
        let name = match &a.name {
            Some(n) if n.windows(2).any(|w| w == b"=?") || std::str::from_utf8(n).is_err() => {
                return None
            }
            Some(n) => Some(String::from_utf8_lossy(n).into_owned()),
            None => None,
        };
        let email = format!(
            "{}@{}",
            String::from_utf8_lossy(a.mailbox.as_deref().unwrap_or_default()),
            String::from_utf8_lossy(a.host.as_deref().unwrap_or_default())
        );
        out.push(json!({"name": name, "email": email}));
    }
    Some(json!(out))
}

const ADDRESS_PROPS: &[&str] = &["from", "to", "cc", "bcc", "replyTo", "sender"];

fn needs_parse(props: &[String]) -> bool {
    props.iter().any(|p| {
        matches!(
            p.as_str(),
            "headers" | "bodyStructure" | "textBody" | "htmlBody" | "attachments" | "bodyValues"
        ) || p.starts_with("header:")
    })
}

fn structure_props(o: &mut Map<String, Value>, st: &MessageStructure, props: &[String]) {
    for prop in props {
        let v = match prop.as_str() {
            "threadId" => match ids::thread_of(st) {
                Some(t) => json!(t),
                None => continue,
            },
            "subject" => json!(st.subject_decoded),
            "sentAt" => json!(st.date_parsed.map(ids::utc_date)),
            "messageId" => msg_ids(st.envelope.message_id.as_deref()),
            "inReplyTo" => msg_ids(st.envelope.in_reply_to.as_deref()),
            "references" => {
                if st.references.is_empty() {
                    Value::Null
                } else {
                    let joined: Vec<u8> = st.references.join(&b' ');
                    msg_ids(Some(&joined))
                }
            }
            "preview" => json!(st.preview),
            "hasAttachment" => json!(st.has_attachment),
            _ => continue,
        };
        o.insert(prop.clone(), v);
    }
}

async fn email_json(
    req: &mut Req<'_>,
    loc: &Loc,
    props: &[String],
    opts: &BodyOpts,
    cached: Option<MessageStructure>,
) -> MResult {
    let mut o = Map::new();
    let uid = loc.msg.uid;
    for prop in props {
        let v = match prop.as_str() {
            "id" => json!(loc.id()),
            "blobId" => json!(ids::email_blob_id(&loc.email)),
            "mailboxIds" => loc.mailbox_ids(),
            "keywords" => keywords_json(&loc.flags()),
            "size" => json!(loc.msg.size),
            "receivedAt" => json!(ids::utc_date(loc.msg.internal_date)),
            _ => continue,
        };
        o.insert(prop.clone(), v);
    }
    let st = match cached {
        Some(st) => st,
        None => req.session.message_structure(&loc.folder.name, uid).await?,
    };
    structure_props(&mut o, &st, props);
    if props.iter().any(|p| p == "threadId") {
        // The index's thread id: also known for messages cached before ids existed.
        o.insert("threadId".into(), json!(loc.thread.to_string()));
    }
    let mut parse = needs_parse(props);
    for p in props.iter().filter(|p| ADDRESS_PROPS.contains(&p.as_str())) {
        let env = &st.envelope;
        let list = match p.as_str() {
            "from" => &env.from,
            "to" => &env.to,
            "cc" => &env.cc,
            "bcc" => &env.bcc,
            "replyTo" => &env.reply_to,
            _ => &env.sender,
        };
        match envelope_addresses(list) {
            Some(v) => {
                o.insert(p.clone(), v);
            }
            None => parse = true,
        }
    }
    if parse {
        let raw = req.session.message_bytes(&loc.folder.name, uid).await?;
        let msg = MessageParser::default()
            .parse(&raw)
            .ok_or_else(|| MethodError::ServerFail("message cannot be parsed".into()))?;
        let email = loc.email;
        let blob = move |part: u32| ids::email_part_blob_id(&email, part);
        parsed_props(&mut o, &msg, props, opts, &blob)?;
    }
    Ok(Value::Object(o))
}

fn body_opts(args: &Map<String, Value>) -> MResult<BodyOpts> {
    let body_props = arg_props(args, "bodyProperties")?.unwrap_or_else(|| {
        DEFAULT_BODY_PROPERTIES
            .iter()
            .map(|s| s.to_string())
            .collect()
    });
    for p in &body_props {
        if !DEFAULT_BODY_PROPERTIES.contains(&p.as_str()) && p != "headers" && p != "subParts" {
            return Err(MethodError::InvalidArguments(format!(
                "unknown body property {p}"
            )));
        }
    }
    Ok(BodyOpts {
        body_props,
        fetch_text: arg_bool(args, "fetchTextBodyValues")?,
        fetch_html: arg_bool(args, "fetchHTMLBodyValues")?,
        fetch_all: arg_bool(args, "fetchAllBodyValues")?,
        max_bytes: arg_uint(args, "maxBodyValueBytes")?.unwrap_or(0) as usize,
    })
}

fn email_props(args: &Map<String, Value>) -> MResult<Vec<String>> {
    let mut props = arg_props(args, "properties")?
        .unwrap_or_else(|| DEFAULT_PROPERTIES.iter().map(|s| s.to_string()).collect());
    for p in &props {
        if !DEFAULT_PROPERTIES.contains(&p.as_str())
            && !OTHER_PROPERTIES.contains(&p.as_str())
            && !p.starts_with("header:")
        {
            return Err(MethodError::InvalidArguments(format!(
                "unknown property {p}"
            )));
        }
    }
    if !props.iter().any(|p| p == "id") {
        props.insert(0, "id".into());
    }
    Ok(props)
}

/// Email/get.
pub(crate) async fn get(req: &mut Req<'_>, args: Map<String, Value>) -> MResult {
    req.account(&args)?;
    let props = email_props(&args)?;
    let opts = body_opts(&args)?;
    let state = req.state().await?;
    let index = req.session.email_index().await?;
    let ids = match arg_ids(&args, "ids")? {
        Some(ids) => super::unique_ids(ids),
        None => {
            if index.len() > super::MAX_OBJECTS_IN_GET {
                return Err(MethodError::RequestTooLarge);
            }
            let mut all: Vec<String> = index.emails().map(|(e, _)| e.to_string()).collect();
            all.sort();
            all
        }
    };
    if ids.len() > super::MAX_OBJECTS_IN_GET {
        return Err(MethodError::RequestTooLarge);
    }
    let mut located = Vec::with_capacity(ids.len());
    let mut by_folder: HashMap<String, Vec<u32>> = HashMap::new();
    for id in ids {
        let loc = locate_in(req, &index, &id).await?;
        if let Some(l) = &loc {
            by_folder
                .entry(l.folder.name.clone())
                .or_default()
                .push(l.msg.uid);
        }
        located.push((id, loc));
    }
    // One blocking read per folder for the structures, not one per message.
    let mut structures: HashMap<(String, u32), MessageStructure> = HashMap::new();
    for (folder, uids) in by_folder {
        for (uid, st) in req.session.message_structures(&folder, uids).await? {
            structures.insert((folder.clone(), uid), st);
        }
    }
    let mut list = Vec::new();
    let mut not_found = Vec::new();
    for (id, loc) in located {
        let cached = loc
            .as_ref()
            .and_then(|l| structures.remove(&(l.folder.name.clone(), l.msg.uid)));
        match loc {
            Some(loc) => match email_json(req, &loc, &props, &opts, cached).await {
                Ok(v) => list.push(v),
                Err(MethodError::ServerFail(_)) if !still_there(req, &loc).await => {
                    not_found.push(id)
                }
                Err(e) => return Err(e),
            },
            None => not_found.push(id),
        }
    }
    Ok(json!({"accountId": req.user, "state": state, "list": list, "notFound": not_found}))
}

/// Whether a message still exists (it may be expunged between snapshot and read).
async fn still_there(req: &mut Req<'_>, loc: &Loc) -> bool {
    match req.session.folder_snapshot(&loc.folder.name).await {
        Ok(s) => s
            .messages
            .iter()
            .any(|m| m.uid == loc.msg.uid && !m.expunged),
        Err(_) => false,
    }
}

/// Changes since a state: (created, updated, destroyed, new state, more), and the thread of
/// every Email named.
struct Changes {
    created: Vec<String>,
    updated: Vec<String>,
    destroyed: Vec<String>,
    new_state: String,
    more: bool,
    threads: HashMap<EmailId, ThreadId>,
    index: EmailIndex,
}

/// A message record that changed since the old state.
struct Touched {
    uidvalidity: u32,
    uid: u32,
    expunged: bool,
    /// Recorded in the folder at the old state (UID below its old UIDNEXT).
    existed: bool,
    /// Its ids when the ledger gave them (a record the store no longer holds).
    ids: Option<store_client::ObjectIds>,
}

/// Emails changed since `since`. Messages are walked per folder as the state string keeps
/// them (UIDVALIDITY, generation, HIGHESTMODSEQ, UIDNEXT); each changed message is then
/// named by its Email id, and the Email is created, updated or destroyed depending on
/// whether any copy existed at the old state and any exists now (a move is an update).
async fn email_changes(req: &mut Req<'_>, since: &str, max: Option<usize>) -> MResult<Changes> {
    let old = parse_state(since).ok_or(MethodError::CannotCalculateChanges)?;
    let mut folders = req.folders().await?;
    // Pages of changes walk the folders in UIDVALIDITY order, the order of the state string.
    folders.sort_by_key(|f| f.uidvalidity);
    let now = ids::state_map(&folders);
    let mut count = 0usize;
    let mut touched: Vec<(Folder, Vec<Touched>)> = Vec::new();
    // Deleted folders: what they held at the old state is in the ledger when this process
    // handed that state out; every such message is gone from there. They are always taken
    // whole (the next state no longer names them). One that never held a message changed
    // no Email (what it got after the old state and lost with it, the client never saw).
    for (uv, st) in old.iter().filter(|(uv, _)| !now.contains_key(uv)) {
        if st.uidnext <= 1 {
            continue;
        }
        let note = req
            .ctx
            .ledger
            .note_for(&req.user, *uv, st)
            .ok_or(MethodError::CannotCalculateChanges)?;
        let here: Vec<Touched> = note
            .live_at(st)
            .map(|(uid, n)| Touched {
                uidvalidity: *uv,
                uid,
                expunged: true,
                existed: true,
                ids: Some(n.ids),
            })
            .collect();
        count += here.len();
        let gone = Folder {
            name: String::new(),
            uidvalidity: *uv,
            status: Default::default(),
            special_use: None,
            subscribed: false,
        };
        touched.push((gone, here));
    }
    let index = req.session.email_index().await?;
    let max = max.unwrap_or(usize::MAX).max(1);
    let mut more = false;
    let mut reached = old.clone();
    for f in &folders {
        let cur = now[&f.uidvalidity];
        let prev = old.get(&f.uidvalidity).copied();
        let mut compacted = None;
        if let Some(p) = prev {
            let unchanged = p.modseq == cur.modseq && p.uidnext == cur.uidnext;
            if p.generation != cur.generation && !unchanged {
                // Compacted since: the store dropped the records of what was expunged
                // before; the ledger's note of the old generation still has them.
                compacted = Some(
                    req.ctx
                        .ledger
                        .note_for(&req.user, f.uidvalidity, &p)
                        .ok_or(MethodError::CannotCalculateChanges)?,
                );
            }
            if unchanged {
                reached.insert(f.uidvalidity, cur);
                continue;
            }
        }
        if more {
            continue;
        }
        let snap = req.snapshot(f).await?;
        let since_modseq = prev.map_or(0, |p| p.modseq);
        let old_uidnext = prev.map_or(0, |p| p.uidnext);
        let mut changed: Vec<&MessageState> = snap
            .messages
            .iter()
            .filter(|m| m.modseq > since_modseq || (prev.is_none() && !m.expunged))
            .collect();
        changed.sort_by_key(|m| (m.modseq, m.uid));
        let mut here = Vec::new();
        if let (Some(note), Some(p)) = (&compacted, prev) {
            // Messages there at the old state that the rewritten index no longer records:
            // expunged since, their records dropped by the compaction.
            let recorded: HashSet<u32> = snap.messages.iter().map(|m| m.uid).collect();
            here.extend(
                note.live_at(&p)
                    .filter(|(uid, _)| !recorded.contains(uid))
                    .map(|(uid, n)| Touched {
                        uidvalidity: f.uidvalidity,
                        uid,
                        expunged: true,
                        existed: true,
                        ids: Some(n.ids),
                    }),
            );
            // Across a compaction the folder is taken whole or not at all: a page cut
            // inside it would have to name a state of the old generation.
            if count > 0 && count + here.len() + changed.len() > max {
                more = true;
                break;
            }
            count += here.len();
        }
        let mut cut: Option<u64> = None;
        let mut i = 0;
        while i < changed.len() {
            let group = changed[i].modseq;
            let n = changed[i..]
                .iter()
                .take_while(|m| m.modseq == group)
                .count();
            if count > 0 && count + n > max && prev.is_some() && compacted.is_none() {
                cut = Some(changed[i - 1].modseq.max(since_modseq));
                break;
            }
            for m in &changed[i..i + n] {
                here.push(Touched {
                    uidvalidity: f.uidvalidity,
                    uid: m.uid,
                    expunged: m.expunged,
                    existed: m.uid < old_uidnext,
                    ids: None,
                });
            }
            count += n;
            i += n;
        }
        touched.push((f.clone(), here));
        match cut {
            Some(c) => {
                let p = prev.unwrap_or(cur);
                reached.insert(f.uidvalidity, FolderState { modseq: c, ..p });
                more = true;
            }
            None => {
                reached.insert(f.uidvalidity, cur);
                if count >= max {
                    more = folders.iter().any(|g| {
                        g.uidvalidity > f.uidvalidity
                            && old.get(&g.uidvalidity) != now.get(&g.uidvalidity)
                    });
                    if more {
                        // Keep the later folders at their old state for the next call.
                        for g in folders.iter().filter(|g| g.uidvalidity > f.uidvalidity) {
                            match old.get(&g.uidvalidity) {
                                Some(o) => reached.insert(g.uidvalidity, *o),
                                None => reached.remove(&g.uidvalidity),
                            };
                        }
                    }
                }
            }
        }
        if more {
            break;
        }
    }
    if !more {
        reached = now.clone();
    }
    reached.retain(|uv, _| now.contains_key(uv));
    // Name every touched message; an Email existed at the old state when one of its
    // copies did: a touched one recorded then, or a live one below its folder's old UIDNEXT.
    let mut threads: HashMap<EmailId, ThreadId> = HashMap::new();
    let mut existed: HashSet<EmailId> = HashSet::new();
    let mut order: Vec<EmailId> = Vec::new();
    for (f, list) in &touched {
        let uids: Vec<u32> = list
            .iter()
            .filter(|t| t.ids.is_none())
            .map(|t| t.uid)
            .collect();
        let named: HashMap<u32, store_client::ObjectIds> = if uids.is_empty() {
            HashMap::new()
        } else {
            req.session
                .object_ids(&f.name, uids, true)
                .await?
                .into_iter()
                .collect()
        };
        for t in list {
            let found = t
                .ids
                .or_else(|| named.get(&t.uid).copied())
                .or_else(|| req.ctx.ledger.ids_of(&req.user, t.uidvalidity, t.uid));
            let Some(ids) = found.as_ref() else {
                if t.expunged && t.existed {
                    // Expunged before any process learnt its id (a message cached before
                    // ids existed, never noted here): what it destroyed cannot be told.
                    return Err(MethodError::CannotCalculateChanges);
                }
                continue;
            };
            if threads.insert(ids.email, ids.thread).is_none() {
                order.push(ids.email);
            }
            if t.existed {
                existed.insert(ids.email);
            }
            debug_assert_eq!(t.uidvalidity, f.uidvalidity);
        }
    }
    // The new state is handed out: what the folders hold at it is noted.
    req.note(&folders).await;
    let mut out = Changes {
        created: vec![],
        updated: vec![],
        destroyed: vec![],
        new_state: ids::encode_state(&reached),
        more,
        threads,
        index: index.clone(),
    };
    for email in order {
        let copies = index.copies(&email);
        let before = existed.contains(&email)
            || copies
                .iter()
                .any(|c| old.get(&c.uidvalidity).is_some_and(|o| c.uid < o.uidnext));
        let id = email.to_string();
        match (before, !copies.is_empty()) {
            (true, true) => out.updated.push(id),
            (false, true) => out.created.push(id),
            (true, false) => out.destroyed.push(id),
            (false, false) => {}
        }
    }
    Ok(out)
}

/// Email/changes.
pub(crate) async fn changes(req: &mut Req<'_>, args: Map<String, Value>) -> MResult {
    req.account(&args)?;
    let since = arg_str(&args, "sinceState")?
        .ok_or_else(|| MethodError::InvalidArguments("sinceState is required".into()))?
        .to_owned();
    let max = arg_uint(&args, "maxChanges")?.map(|m| m as usize);
    if max == Some(0) {
        return Err(MethodError::InvalidArguments(
            "maxChanges must be positive".into(),
        ));
    }
    let c = email_changes(req, &since, max).await?;
    Ok(json!({
        "accountId": req.user, "oldState": since, "newState": c.new_state,
        "hasMoreChanges": c.more, "created": c.created, "updated": c.updated,
        "destroyed": c.destroyed,
    }))
}

/// Thread/changes: the threads of the Emails changed. A thread none of whose Emails
/// existed before is created, one left without Emails destroyed, any other updated.
pub(crate) async fn thread_changes(req: &mut Req<'_>, args: Map<String, Value>) -> MResult {
    req.account(&args)?;
    let since = arg_str(&args, "sinceState")?
        .ok_or_else(|| MethodError::InvalidArguments("sinceState is required".into()))?
        .to_owned();
    let max = arg_uint(&args, "maxChanges")?.map(|m| m as usize);
    if max == Some(0) {
        return Err(MethodError::InvalidArguments(
            "maxChanges must be positive".into(),
        ));
    }
    let c = email_changes(req, &since, max).await?;
    let created: HashSet<&String> = c.created.iter().collect();
    let mut order: Vec<ThreadId> = Vec::new();
    // Per thread: did any of its changed Emails exist before?
    let mut had_before: HashMap<ThreadId, bool> = HashMap::new();
    for id in c.created.iter().chain(&c.updated).chain(&c.destroyed) {
        let Some(email) = EmailId::parse(id) else {
            continue;
        };
        let Some(t) = c.threads.get(&email).copied() else {
            continue;
        };
        let before = !created.contains(id);
        match had_before.get_mut(&t) {
            Some(b) => *b |= before,
            None => {
                had_before.insert(t, before);
                order.push(t);
            }
        }
    }
    let (mut t_created, mut t_updated, mut t_destroyed) = (vec![], vec![], vec![]);
    for t in order {
        let members = c.index.thread_emails(&t);
        let changed_only = members.iter().all(|e| created.contains(&e.to_string()));
        let id = t.to_string();
        if members.is_empty() {
            t_destroyed.push(id);
        } else if !had_before[&t] && changed_only {
            t_created.push(id);
        } else {
            t_updated.push(id);
        }
    }
    Ok(json!({
        "accountId": req.user, "oldState": since, "newState": c.new_state,
        "hasMoreChanges": c.more, "created": t_created, "updated": t_updated,
        "destroyed": t_destroyed,
    }))
}

// ---- Query ----

#[derive(Debug, Clone)]
enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Vec<Filter>),
    InMailbox(Option<u32>),
    NotInMailboxes(Vec<u32>),
    Before(i64),
    After(i64),
    MinSize(u64),
    MaxSize(u64),
    Keyword(Flag, bool),
    HasAttachment(bool),
    /// Index into the text searches.
    Text(usize),
}

fn parse_filter(v: &Value, texts: &mut Vec<SearchKey>, req: &Req<'_>) -> MResult<Filter> {
    let o = v
        .as_object()
        .ok_or_else(|| MethodError::InvalidArguments("a filter must be an object".into()))?;
    if let Some(op) = o.get("operator") {
        let conds = o
            .get("conditions")
            .and_then(Value::as_array)
            .ok_or_else(|| MethodError::InvalidArguments("conditions must be a list".into()))?;
        let parsed = conds
            .iter()
            .map(|c| parse_filter(c, texts, req))
            .collect::<MResult<Vec<_>>>()?;
        return match op.as_str() {
            Some("AND") => Ok(Filter::And(parsed)),
            Some("OR") => Ok(Filter::Or(parsed)),
            Some("NOT") => Ok(Filter::Not(parsed)),
            _ => Err(MethodError::UnsupportedFilter(format!("operator {op}"))),
        };
    }
    let mut all = Vec::new();
    for (k, v) in o {
        let s = || {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| MethodError::InvalidArguments(format!("{k} must be a string")))
        };
        let mut text = |key: SearchKey| {
            texts.push(key);
            Filter::Text(texts.len() - 1)
        };
        let f = match k.as_str() {
            "inMailbox" => Filter::InMailbox(ids::parse_mailbox_id(&req.resolve_id(&s()?))),
            "inMailboxOtherThan" => {
                let list = v
                    .as_array()
                    .ok_or_else(|| MethodError::InvalidArguments("inMailboxOtherThan".into()))?;
                Filter::NotInMailboxes(
                    list.iter()
                        .filter_map(Value::as_str)
                        .filter_map(|i| ids::parse_mailbox_id(&req.resolve_id(i)))
                        .collect(),
                )
            }
            "before" | "after" => {
                let t = ids::parse_date(&s()?).ok_or_else(|| {
                    MethodError::InvalidArguments(format!("{k} must be a UTCDate"))
                })?;
                if k == "before" {
                    Filter::Before(t)
                } else {
                    Filter::After(t)
                }
            }
            "minSize" | "maxSize" => {
                let n = v.as_u64().ok_or_else(|| {
                    MethodError::InvalidArguments(format!("{k} must be a number"))
                })?;
                if k == "minSize" {
                    Filter::MinSize(n)
                } else {
                    Filter::MaxSize(n)
                }
            }
            "hasKeyword" | "notKeyword" => {
                let flag = flag_of_keyword(&s()?).map_err(MethodError::InvalidArguments)?;
                Filter::Keyword(flag, k == "hasKeyword")
            }
            "hasAttachment" => Filter::HasAttachment(
                v.as_bool()
                    .ok_or_else(|| MethodError::InvalidArguments("hasAttachment".into()))?,
            ),
            "text" => text(SearchKey::Text(s()?)),
            "body" => text(SearchKey::Body(s()?)),
            "subject" => text(SearchKey::Header("Subject".into(), s()?)),
            "from" => text(SearchKey::Header("From".into(), s()?)),
            "to" => text(SearchKey::Header("To".into(), s()?)),
            "cc" => text(SearchKey::Header("Cc".into(), s()?)),
            "bcc" => text(SearchKey::Header("Bcc".into(), s()?)),
            "header" => {
                let a = v
                    .as_array()
                    .filter(|a| !a.is_empty() && a.len() <= 2)
                    .ok_or_else(|| {
                        MethodError::InvalidArguments("header is [name, value?]".into())
                    })?;
                let name = a[0].as_str().unwrap_or("").to_owned();
                let value = a.get(1).and_then(Value::as_str).unwrap_or("").to_owned();
                if name.is_empty() || name.contains(':') || name.chars().any(char::is_whitespace) {
                    return Err(MethodError::InvalidArguments("bad header name".into()));
                }
                text(SearchKey::Header(name, value))
            }
            other => {
                return Err(MethodError::UnsupportedFilter(format!(
                    "Email filter {other}"
                )))
            }
        };
        all.push(f);
    }
    Ok(Filter::And(all))
}

/// Three-valued evaluation over the folder alone: Some(false) = no message here matches.
fn folder_possible(f: &Filter, uv: u32) -> Option<bool> {
    match f {
        Filter::InMailbox(m) => Some(*m == Some(uv)),
        Filter::NotInMailboxes(l) => Some(!l.contains(&uv)),
        Filter::And(v) => {
            let r: Vec<_> = v.iter().map(|x| folder_possible(x, uv)).collect();
            if r.contains(&Some(false)) {
                Some(false)
            } else if r.iter().all(|x| *x == Some(true)) {
                Some(true)
            } else {
                None
            }
        }
        Filter::Or(v) => {
            let r: Vec<_> = v.iter().map(|x| folder_possible(x, uv)).collect();
            if r.contains(&Some(true)) {
                Some(true)
            } else if r.iter().all(|x| *x == Some(false)) {
                Some(false)
            } else {
                None
            }
        }
        Filter::Not(v) => {
            let r: Vec<_> = v.iter().map(|x| folder_possible(x, uv)).collect();
            if r.contains(&Some(true)) {
                Some(false)
            } else if r.iter().all(|x| *x == Some(false)) {
                Some(true)
            } else {
                None
            }
        }
        _ => None,
    }
}

fn uses(f: &Filter, pred: &dyn Fn(&Filter) -> bool) -> bool {
    match f {
        Filter::And(v) | Filter::Or(v) | Filter::Not(v) => v.iter().any(|x| uses(x, pred)),
        other => pred(other),
    }
}

struct Eval<'a> {
    uv: u32,
    texts: &'a [HashSet<u32>],
    structures: &'a HashMap<u32, Arc<MessageStructure>>,
}

fn matches(f: &Filter, m: &MessageState, e: &Eval<'_>) -> bool {
    match f {
        Filter::And(v) => v.iter().all(|x| matches(x, m, e)),
        Filter::Or(v) => v.iter().any(|x| matches(x, m, e)),
        Filter::Not(v) => !v.iter().any(|x| matches(x, m, e)),
        Filter::InMailbox(id) => *id == Some(e.uv),
        Filter::NotInMailboxes(l) => !l.contains(&e.uv),
        Filter::Before(t) => m.internal_date < *t,
        Filter::After(t) => m.internal_date >= *t,
        Filter::MinSize(n) => m.size >= *n,
        Filter::MaxSize(n) => m.size < *n,
        Filter::Keyword(flag, has) => m.flags.contains(flag) == *has,
        Filter::HasAttachment(want) => {
            e.structures.get(&m.uid).map(|s| s.has_attachment) == Some(*want)
        }
        Filter::Text(i) => e.texts.get(*i).is_some_and(|s| s.contains(&m.uid)),
    }
}

/// One query result (a copy of an Email) with what sorting may need.
struct Item {
    uv: u32,
    msg: MessageState,
    st: Option<Arc<MessageStructure>>,
    email: EmailId,
    thread: ThreadId,
}

impl Item {
    fn id(&self) -> String {
        self.email.to_string()
    }
}

#[derive(Clone)]
struct SortKey {
    prop: String,
    asc: bool,
    keyword: Option<Flag>,
}

fn parse_sort(args: &Map<String, Value>) -> MResult<Vec<SortKey>> {
    let Some(v) = args.get("sort").filter(|v| !v.is_null()) else {
        return Ok(vec![SortKey {
            prop: "receivedAt".into(),
            asc: false,
            keyword: None,
        }]);
    };
    let list = v
        .as_array()
        .ok_or_else(|| MethodError::InvalidArguments("sort must be a list".into()))?;
    let mut out = Vec::new();
    for c in list {
        let prop = c
            .get("property")
            .and_then(Value::as_str)
            .ok_or_else(|| MethodError::InvalidArguments("a comparator needs property".into()))?;
        if !SORT_OPTIONS.contains(&prop) {
            return Err(MethodError::UnsupportedSort(prop.to_owned()));
        }
        let keyword = if prop == "hasKeyword" {
            let k = c
                .get("keyword")
                .and_then(Value::as_str)
                .ok_or_else(|| MethodError::InvalidArguments("hasKeyword needs keyword".into()))?;
            Some(flag_of_keyword(k).map_err(MethodError::InvalidArguments)?)
        } else {
            None
        };
        if let Some(col) = c.get("collation").and_then(Value::as_str) {
            if col != "i;ascii-casemap" && col != "i;unicode-casemap" {
                return Err(MethodError::UnsupportedSort(format!("collation {col}")));
            }
        }
        out.push(SortKey {
            prop: prop.to_owned(),
            asc: c
                .get("isAscending")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            keyword,
        });
    }
    Ok(out)
}

fn compare(a: &Item, b: &Item, keys: &[SortKey]) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    for k in keys {
        let o = match k.prop.as_str() {
            "receivedAt" => a.msg.internal_date.cmp(&b.msg.internal_date),
            "size" => a.msg.size.cmp(&b.msg.size),
            "sentAt" => {
                let d = |i: &Item| i.st.as_ref().and_then(|s| s.date_parsed).unwrap_or(0);
                d(a).cmp(&d(b))
            }
            "subject" => {
                let s = |i: &Item| {
                    ids::base_subject(
                        i.st.as_ref()
                            .and_then(|s| s.subject_decoded.as_deref())
                            .unwrap_or(""),
                    )
                };
                s(a).cmp(&s(b))
            }
            "from" | "to" => {
                let s = |i: &Item| {
                    i.st.as_ref()
                        .and_then(|s| {
                            if k.prop == "from" {
                                s.from_sort_key.clone()
                            } else {
                                s.to_sort_key.clone()
                            }
                        })
                        .unwrap_or_default()
                        .to_lowercase()
                };
                s(a).cmp(&s(b))
            }
            "hasKeyword" => {
                let has = |i: &Item| k.keyword.as_ref().is_some_and(|f| i.msg.flags.contains(f));
                has(a).cmp(&has(b))
            }
            _ => Ordering::Equal,
        };
        let o = if k.asc { o } else { o.reverse() };
        if o != Ordering::Equal {
            return o;
        }
    }
    // Newest first, then by id, so the order is total and stable.
    b.msg
        .internal_date
        .cmp(&a.msg.internal_date)
        .then_with(|| (b.uv, b.msg.uid).cmp(&(a.uv, a.msg.uid)))
}

/// Runs a query: the full sorted (and collapsed) result.
async fn run_query(req: &mut Req<'_>, args: &Map<String, Value>) -> MResult<Vec<Item>> {
    let mut texts = Vec::new();
    let filter = match args.get("filter") {
        None | Some(Value::Null) => Filter::And(vec![]),
        Some(v) => parse_filter(v, &mut texts, req)?,
    };
    let sort = parse_sort(args)?;
    let collapse = arg_bool(args, "collapseThreads")?;
    let needs_structure = collapse
        || sort
            .iter()
            .any(|k| matches!(k.prop.as_str(), "sentAt" | "subject" | "from" | "to"))
        || uses(&filter, &|f| matches!(f, Filter::HasAttachment(_)));
    let index = req.session.email_index().await?;
    let mut items = Vec::new();
    for folder in req.folders().await? {
        if folder_possible(&filter, folder.uidvalidity) == Some(false) {
            continue;
        }
        let snap = req.snapshot(&folder).await?;
        let live: Vec<&MessageState> = snap.messages.iter().filter(|m| !m.expunged).collect();
        if live.is_empty() {
            continue;
        }
        // Ids from the index; messages that arrived since it was brought up to date are
        // named directly.
        let mut named: HashMap<u32, store_client::ObjectIds> = HashMap::new();
        let mut unknown = Vec::new();
        for m in &live {
            match index.ids_of(&folder.name, m.uid) {
                Some(i) => {
                    named.insert(m.uid, i);
                }
                None => unknown.push(m.uid),
            }
        }
        if !unknown.is_empty() {
            named.extend(req.session.object_ids(&folder.name, unknown, false).await?);
        }
        let mut text_sets = Vec::with_capacity(texts.len());
        if !texts.is_empty() {
            let sel = req.session.select(&folder.name, true).await?;
            for key in &texts {
                text_sets.push(sel.search(key).await?.into_iter().collect::<HashSet<u32>>());
            }
        }
        let mut structures = HashMap::new();
        if needs_structure {
            let uids = live.iter().map(|m| m.uid).collect();
            for (uid, st) in req.session.message_structures(&folder.name, uids).await? {
                structures.insert(uid, Arc::new(st));
            }
        }
        let e = Eval {
            uv: folder.uidvalidity,
            texts: &text_sets,
            structures: &structures,
        };
        for m in live {
            let Some(ids) = named.get(&m.uid) else {
                // Expunged meanwhile.
                continue;
            };
            if matches(&filter, m, &e) {
                items.push(Item {
                    uv: folder.uidvalidity,
                    st: structures.get(&m.uid).cloned(),
                    msg: m.clone(),
                    email: ids.email,
                    thread: ids.thread,
                });
            }
        }
    }
    items.sort_by(|a, b| compare(a, b, &sort));
    // An Email in several mailboxes matches once, where its first matching copy sorts.
    let mut seen = HashSet::new();
    items.retain(|i| seen.insert(i.email));
    if collapse {
        let mut seen = HashSet::new();
        items.retain(|i| seen.insert(i.thread));
    }
    Ok(items)
}

/// Email/query.
pub(crate) async fn query(req: &mut Req<'_>, args: Map<String, Value>) -> MResult {
    req.account(&args)?;
    let state = req.state().await?;
    let items = run_query(req, &args).await?;
    let total = items.len();
    let mut position = arg_int(&args, "position")?.unwrap_or(0);
    if let Some(anchor) = arg_str(&args, "anchor")? {
        let anchor =
            ids::parse_email_id(&req.resolve_id(anchor)).ok_or(MethodError::AnchorNotFound)?;
        let at = items
            .iter()
            .position(|i| i.email == anchor)
            .ok_or(MethodError::AnchorNotFound)? as i64;
        position = (at + arg_int(&args, "anchorOffset")?.unwrap_or(0)).max(0);
    } else if position < 0 {
        position = (total as i64 + position).max(0);
    }
    let position = (position as usize).min(total);
    let requested = arg_uint(&args, "limit")?.map(|l| l as usize);
    let limit = requested
        .unwrap_or(MAX_QUERY_RESULTS)
        .min(MAX_QUERY_RESULTS);
    // Ids are made for the page only: a large folder's query formats no more than it sends.
    let page: Vec<String> = items
        .iter()
        .skip(position)
        .take(limit)
        .map(Item::id)
        .collect();
    let mut out = json!({
        "accountId": req.user,
        "queryState": state,
        "canCalculateChanges": !arg_bool(&args, "collapseThreads")?,
        "position": position,
        "ids": page,
    });
    if arg_bool(&args, "calculateTotal")? {
        out["total"] = json!(total);
    }
    if requested.is_some_and(|r| r > limit) {
        out["limit"] = json!(limit);
    }
    Ok(out)
}

/// Email/queryChanges: every message changed since the state is removed and, where it
/// matches now, added back at its current index (RFC 8620 5.6 allows removing ids the
/// client did not have).
pub(crate) async fn query_changes(req: &mut Req<'_>, args: Map<String, Value>) -> MResult {
    req.account(&args)?;
    if arg_bool(&args, "collapseThreads")? {
        return Err(MethodError::CannotCalculateChanges);
    }
    let since = arg_str(&args, "sinceQueryState")?
        .ok_or_else(|| MethodError::InvalidArguments("sinceQueryState is required".into()))?
        .to_owned();
    let c = email_changes(req, &since, None).await?;
    if let Some(max) = arg_uint(&args, "maxChanges")? {
        if c.created.len() + c.updated.len() + c.destroyed.len() > max as usize {
            return Err(MethodError::TooManyChanges);
        }
    }
    let items = run_query(req, &args).await?;
    let changed: HashSet<&String> = c.created.iter().chain(&c.updated).collect();
    let mut added = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let id = it.id();
        if changed.contains(&id) {
            added.push(json!({"id": id, "index": i}));
        }
    }
    let removed: Vec<&String> = c.destroyed.iter().chain(&c.updated).collect();
    let mut out = json!({
        "accountId": req.user,
        "oldQueryState": since,
        "newQueryState": req.state().await?,
        "removed": removed,
        "added": added,
    });
    if arg_bool(&args, "calculateTotal")? {
        out["total"] = json!(items.len());
    }
    Ok(out)
}

/// Thread/get: the Emails of a thread (RFC 8474 THREADID), oldest first by receivedAt.
pub(crate) async fn thread_get(req: &mut Req<'_>, args: Map<String, Value>) -> MResult {
    req.account(&args)?;
    let state = req.state().await?;
    let wanted = super::unique_ids(
        arg_ids(&args, "ids")?
            .ok_or_else(|| MethodError::InvalidArguments("ids is required".into()))?,
    );
    if wanted.len() > super::MAX_OBJECTS_IN_GET {
        return Err(MethodError::RequestTooLarge);
    }
    let index = req.session.email_index().await?;
    let mut list = Vec::new();
    let mut not_found = Vec::new();
    for id in wanted {
        let members = ThreadId::parse(&id)
            .map(|t| index.thread_emails(&t))
            .unwrap_or_default();
        let mut dated = Vec::with_capacity(members.len());
        for email in members {
            let mut received: Option<i64> = None;
            for c in index.copies(&email) {
                if let Some((_, m)) = live_copy(req, c.uidvalidity, c.uid).await? {
                    received = Some(received.map_or(m.internal_date, |r| r.min(m.internal_date)));
                }
            }
            if let Some(r) = received {
                dated.push((r, email.to_string()));
            }
        }
        if dated.is_empty() {
            not_found.push(id);
            continue;
        }
        dated.sort();
        list.push(
            json!({"id": id, "emailIds": dated.into_iter().map(|(_, e)| e).collect::<Vec<_>>()}),
        );
    }
    Ok(json!({"accountId": req.user, "state": state, "list": list, "notFound": not_found}))
}

// ---- Set ----

/// Applies a keywords patch or replacement to a message's flags.
fn patched_flags(current: &Flags, patch: &Map<String, Value>) -> Result<Option<Vec<Flag>>, Value> {
    let mut flags: Vec<Flag> = current.to_vec();
    let mut touched = false;
    if let Some(kw) = patch.get("keywords") {
        let kw = kw
            .as_object()
            .ok_or_else(|| set_error("invalidProperties", "keywords must be an object"))?;
        // \Deleted is not a JMAP keyword: keep it across a replacement.
        flags.retain(|f| *f == Flag::Deleted);
        for (k, v) in kw {
            if v != &Value::Bool(true) {
                return Err(set_error(
                    "invalidProperties",
                    "keyword values must be true",
                ));
            }
            flags.push(flag_of_keyword(k).map_err(|e| set_error("invalidProperties", e))?);
        }
        touched = true;
    }
    for (k, v) in patch {
        if let Some(name) = k.strip_prefix("keywords/") {
            let f = flag_of_keyword(name).map_err(|e| set_error("invalidPatch", e))?;
            flags.retain(|x| *x != f);
            match v {
                Value::Bool(true) => flags.push(f),
                Value::Null => {}
                _ => return Err(set_error("invalidPatch", "a keyword patch is true or null")),
            }
            touched = true;
        }
    }
    Ok(touched.then_some(flags))
}

/// The mailboxes a patch leaves the Email in, if it touches mailboxIds.
async fn patched_mailboxes(
    req: &mut Req<'_>,
    loc: &Loc,
    patch: &Map<String, Value>,
) -> Result<Option<Vec<Folder>>, Value> {
    let mut set: Vec<String> = loc.copies.iter().map(|(f, _)| f.id()).collect();
    let mut touched = false;
    if let Some(m) = patch.get("mailboxIds") {
        let m = m
            .as_object()
            .ok_or_else(|| set_error("invalidProperties", "mailboxIds must be an object"))?;
        set = Vec::new();
        for (k, v) in m {
            if *v != Value::Bool(true) {
                return Err(set_error(
                    "invalidProperties",
                    "mailboxIds values must be true",
                ));
            }
            set.push(req.resolve_id(k));
        }
        touched = true;
    }
    for (k, v) in patch {
        if let Some(id) = k.strip_prefix("mailboxIds/") {
            let id = req.resolve_id(id);
            set.retain(|x| *x != id);
            match v {
                Value::Bool(true) => set.push(id),
                Value::Null => {}
                _ => {
                    return Err(set_error(
                        "invalidPatch",
                        "a mailboxIds patch is true or null",
                    ))
                }
            }
            touched = true;
        }
    }
    if !touched {
        return Ok(None);
    }
    resolve_mailboxes(req, set).await.map(Some)
}

/// Folders for mailbox ids (deduplicated): at least one, all existing.
async fn resolve_mailboxes(req: &mut Req<'_>, ids: Vec<String>) -> Result<Vec<Folder>, Value> {
    let mut out: Vec<Folder> = Vec::new();
    for id in ids {
        let f = req
            .folder_by_id(&id)
            .await
            .map_err(|e| set_error("serverFail", format!("{e:?}")))?
            .ok_or_else(|| set_error("invalidProperties", format!("no mailbox {id}")))?;
        if !out.iter().any(|o| o.uidvalidity == f.uidvalidity) {
            out.push(f);
        }
    }
    if out.is_empty() {
        return Err(set_error(
            "invalidProperties",
            "an email must be in at least one mailbox",
        ));
    }
    Ok(out)
}

/// Expunges one copy.
async fn remove_copy(req: &mut Req<'_>, folder: &Folder, uid: u32) -> Result<(), Value> {
    let mut sel = req
        .session
        .select(&folder.name, false)
        .await
        .map_err(|e| store_set_error(&e))?;
    sel.store_flags(&[uid], FlagOp::Add, &[Flag::Deleted], None)
        .await
        .map_err(|e| store_set_error(&e))?;
    sel.expunge(Some(&[uid]))
        .await
        .map_err(|e| store_set_error(&e))?;
    Ok(())
}

/// Puts an Email in exactly `target`: copies leave by MOVE where one can (so a plain move
/// is one store operation and the content is never absent), are added by COPY, and are
/// expunged from the rest.
async fn set_mailboxes(req: &mut Req<'_>, loc: &Loc, target: &[Folder]) -> Result<(), Value> {
    let has = |f: &Folder| {
        loc.copies
            .iter()
            .any(|(g, _)| g.uidvalidity == f.uidvalidity)
    };
    let adds: Vec<&Folder> = target.iter().filter(|f| !has(f)).collect();
    let mut leaving: Vec<(Folder, u32)> = loc
        .copies
        .iter()
        .filter(|(g, _)| !target.iter().any(|f| f.uidvalidity == g.uidvalidity))
        .map(|(g, m)| (g.clone(), m.uid))
        .collect();
    for to in adds {
        let r = match leaving.pop() {
            Some((from, uid)) => {
                req.session
                    .move_messages(&from.name, &[uid], &to.name)
                    .await
            }
            None => {
                req.session
                    .copy(&loc.folder.name, &[loc.msg.uid], &to.name)
                    .await
            }
        };
        r.map_err(|e| store_set_error(&e))?;
    }
    for (from, uid) in leaving {
        remove_copy(req, &from, uid).await?;
    }
    Ok(())
}

async fn update_one(
    req: &mut Req<'_>,
    index: &EmailIndex,
    id: &str,
    patch: &Value,
) -> Result<(), Value> {
    let p = patch
        .as_object()
        .ok_or_else(|| set_error("invalidPatch", "a patch is an object"))?;
    for k in p.keys() {
        if k != "keywords"
            && k != "mailboxIds"
            && !k.starts_with("keywords/")
            && !k.starts_with("mailboxIds/")
        {
            return Err(set_error(
                "invalidProperties",
                format!("{k} cannot be changed"),
            ));
        }
    }
    let loc = locate_in(req, index, id)
        .await
        .map_err(|e| set_error("serverFail", format!("{e:?}")))?
        .ok_or_else(|| set_error("notFound", "no such email"))?;
    let flags = patched_flags(&loc.flags(), p)?;
    let target = patched_mailboxes(req, &loc, p).await?;
    if let Some(flags) = &flags {
        // Keywords belong to the Email: every copy gets them.
        for (folder, msg) in &loc.copies {
            let mut sel = req
                .session
                .select(&folder.name, false)
                .await
                .map_err(|e| store_set_error(&e))?;
            let mut mine = flags.clone();
            // \Deleted is per copy (IMAP's), never a JMAP keyword.
            mine.retain(|f| *f != Flag::Deleted);
            if msg.flags.contains(&Flag::Deleted) {
                mine.push(Flag::Deleted);
            }
            sel.store_flags(&[msg.uid], FlagOp::Replace, &mine, None)
                .await
                .map_err(|e| store_set_error(&e))?;
        }
        req.invalidate();
    }
    if let Some(t) = target {
        let loc = if flags.is_some() {
            // Flags changed the snapshots: look again so moves carry the new flags.
            let fresh = req
                .session
                .email_index()
                .await
                .map_err(|e| set_error("serverFail", e.to_string()))?;
            locate_in(req, &fresh, id)
                .await
                .map_err(|e| set_error("serverFail", format!("{e:?}")))?
                .ok_or_else(|| set_error("notFound", "no such email"))?
        } else {
            loc
        };
        set_mailboxes(req, &loc, &t).await?;
    }
    Ok(())
}

async fn destroy_one(req: &mut Req<'_>, index: &EmailIndex, id: &str) -> Result<(), Value> {
    let loc = locate_in(req, index, id)
        .await
        .map_err(|e| set_error("serverFail", format!("{e:?}")))?
        .ok_or_else(|| set_error("notFound", "no such email"))?;
    for (folder, msg) in &loc.copies {
        remove_copy(req, folder, msg.uid).await?;
    }
    Ok(())
}

fn builder_addresses(
    v: &Value,
) -> Result<Option<mail_builder::headers::address::Address<'static>>, Value> {
    use mail_builder::headers::address::Address;
    match v {
        Value::Null => Ok(None),
        Value::Array(list) => {
            let mut out = Vec::new();
            for a in list {
                let email = a
                    .get("email")
                    .and_then(Value::as_str)
                    .filter(|e| !e.chars().any(|c| c.is_control() || c == '<' || c == '>'))
                    .ok_or_else(|| set_error("invalidProperties", "an EmailAddress needs email"))?;
                let name = a.get("name").and_then(Value::as_str).map(str::to_owned);
                out.push(Address::new_address(name, email.to_owned()));
            }
            Ok(Some(Address::new_list(out)))
        }
        _ => Err(set_error("invalidProperties", "addresses must be a list")),
    }
}

/// Bytes of a blob the user may read: an upload or a stored message or part.
pub(crate) async fn blob_bytes(req: &mut Req<'_>, blob_id: &str) -> MResult<Option<Vec<u8>>> {
    match ids::parse_blob_id(blob_id) {
        Some(BlobRef::Upload(tok)) => Ok(req.ctx.blobs.get(&req.user, &tok)),
        Some(BlobRef::Email { email, part }) => {
            let Some(loc) = locate(req, &email.to_string()).await? else {
                return Ok(None);
            };
            let raw = match req
                .session
                .message_bytes(&loc.folder.name, loc.msg.uid)
                .await
            {
                Ok(b) => b,
                Err(store_client::ClientError::NoSuchMessage(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            Ok(match part {
                None => Some(raw),
                Some(p) => part_bytes(&raw, p),
            })
        }
        Some(BlobRef::Message { uidvalidity, uid }) => {
            let Some(f) = req.folder_by_uv(uidvalidity).await? else {
                return Ok(None);
            };
            match req.session.message_bytes(&f.name, uid).await {
                Ok(b) => Ok(Some(b)),
                Err(store_client::ClientError::NoSuchMessage(_)) => Ok(None),
                Err(e) => Err(e.into()),
            }
        }
        Some(BlobRef::Part {
            uidvalidity,
            uid,
            part,
        }) => {
            let Some(f) = req.folder_by_uv(uidvalidity).await? else {
                return Ok(None);
            };
            let raw = match req.session.message_bytes(&f.name, uid).await {
                Ok(b) => b,
                Err(store_client::ClientError::NoSuchMessage(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            Ok(part_bytes(&raw, part))
        }
        None => Ok(None),
    }
}

/// A part's decoded content (a nested message: its raw bytes).
pub(crate) fn part_bytes(raw: &[u8], part: u32) -> Option<Vec<u8>> {
    let msg = MessageParser::default().parse(raw)?;
    let p = msg.part(part)?;
    match &p.body {
        PartType::Multipart(_) => None,
        PartType::Message(_) => {
            let (s, e) = (p.offset_body as usize, p.offset_end as usize);
            raw.get(s..e).map(<[u8]>::to_vec)
        }
        _ => Some(p.contents().to_vec()),
    }
}

/// Builds a message from an Email/set create object.
async fn build_message(req: &mut Req<'_>, o: &Map<String, Value>) -> Result<Vec<u8>, Value> {
    use mail_builder::headers::message_id::MessageId;
    use mail_builder::MessageBuilder;
    let mut b = MessageBuilder::new();
    for (prop, _) in o {
        if ![
            "mailboxIds",
            "keywords",
            "receivedAt",
            "from",
            "to",
            "cc",
            "bcc",
            "replyTo",
            "sender",
            "subject",
            "sentAt",
            "messageId",
            "inReplyTo",
            "references",
            "textBody",
            "htmlBody",
            "attachments",
            "bodyValues",
            "bodyStructure",
        ]
        .contains(&prop.as_str())
            && !prop.starts_with("header:")
        {
            return Err(set_error(
                "invalidProperties",
                format!("{prop} cannot be set"),
            ));
        }
    }
    if let Some(a) = o.get("from").map(builder_addresses).transpose()?.flatten() {
        b = b.from(a);
    }
    if let Some(a) = o.get("to").map(builder_addresses).transpose()?.flatten() {
        b = b.to(a);
    }
    if let Some(a) = o.get("cc").map(builder_addresses).transpose()?.flatten() {
        b = b.cc(a);
    }
    if let Some(a) = o.get("bcc").map(builder_addresses).transpose()?.flatten() {
        b = b.bcc(a);
    }
    if let Some(a) = o
        .get("replyTo")
        .map(builder_addresses)
        .transpose()?
        .flatten()
    {
        b = b.reply_to(a);
    }
    if let Some(a) = o
        .get("sender")
        .map(builder_addresses)
        .transpose()?
        .flatten()
    {
        b = b.sender(a);
    }
    if let Some(s) = o.get("subject").and_then(Value::as_str) {
        b = b.subject(s.to_owned());
    }
    let date = match o.get("sentAt").and_then(Value::as_str) {
        Some(d) => ids::parse_date(d).ok_or_else(|| set_error("invalidProperties", "sentAt"))?,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    };
    b = b.date(date);
    let id_list = |v: Option<&Value>| -> Option<Vec<String>> {
        v.and_then(Value::as_array).map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter(|s| !s.chars().any(|c| c.is_whitespace() || c == '<' || c == '>'))
                .map(str::to_owned)
                .collect()
        })
    };
    if let Some(ids) = id_list(o.get("messageId")).and_then(|v| v.into_iter().next()) {
        b = b.message_id(ids);
    } else {
        let mut r = [0u8; 12];
        let _ = getrandom::getrandom(&mut r);
        let host = super::submission::local_domain(&req.user);
        b = b.message_id(format!(
            "{}@{host}",
            r.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ));
    }
    if let Some(ids) = id_list(o.get("inReplyTo")).filter(|v| !v.is_empty()) {
        b = b.in_reply_to(MessageId::new_list(ids.into_iter()));
    }
    if let Some(ids) = id_list(o.get("references")).filter(|v| !v.is_empty()) {
        b = b.references(MessageId::new_list(ids.into_iter()));
    }
    let values = o.get("bodyValues").and_then(Value::as_object);
    let value_of = |part: &Value| -> Result<String, Value> {
        let pid = part
            .get("partId")
            .and_then(Value::as_str)
            .ok_or_else(|| set_error("invalidProperties", "a body part needs partId"))?;
        values
            .and_then(|v| v.get(pid))
            .and_then(|v| v.get("value"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| set_error("invalidProperties", format!("no bodyValues for part {pid}")))
    };
    let mut text_parts: Vec<Value> = o
        .get("textBody")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut html_parts: Vec<Value> = o
        .get("htmlBody")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut attachments: Vec<Value> = o
        .get("attachments")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(bs) = o.get("bodyStructure") {
        // Flatten: text leaves with partId are bodies, leaves with blobId attachments.
        fn walk(
            v: &Value,
            t: &mut Vec<Value>,
            h: &mut Vec<Value>,
            a: &mut Vec<Value>,
            depth: usize,
        ) {
            if depth > 16 {
                return;
            }
            if let Some(subs) = v.get("subParts").and_then(Value::as_array) {
                for s in subs {
                    walk(s, t, h, a, depth + 1);
                }
                return;
            }
            let ty = v
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("text/plain");
            if v.get("partId").is_some() {
                if ty.eq_ignore_ascii_case("text/html") {
                    h.push(v.clone());
                } else {
                    t.push(v.clone());
                }
            } else if v.get("blobId").is_some() {
                a.push(v.clone());
            }
        }
        walk(bs, &mut text_parts, &mut html_parts, &mut attachments, 0);
    }
    for p in &text_parts {
        let ty = p
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("text/plain");
        if ty.eq_ignore_ascii_case("text/html") {
            b = b.html_body(value_of(p)?);
        } else {
            b = b.text_body(value_of(p)?);
        }
    }
    for p in &html_parts {
        b = b.html_body(value_of(p)?);
    }
    if text_parts.is_empty() && html_parts.is_empty() {
        b = b.text_body(String::new());
    }
    for a in &attachments {
        let blob_id = a
            .get("blobId")
            .and_then(Value::as_str)
            .ok_or_else(|| set_error("invalidProperties", "an attachment needs blobId"))?;
        let blob_id = req.resolve_id(blob_id);
        let data = blob_bytes(req, &blob_id)
            .await
            .map_err(|e| set_error("serverFail", format!("{e:?}")))?
            .ok_or_else(|| set_error("blobNotFound", format!("no blob {blob_id}")))?;
        let ty = a
            .get("type")
            .and_then(Value::as_str)
            .filter(|t| t.contains('/') && !t.chars().any(|c| c.is_control() || c.is_whitespace()))
            .unwrap_or("application/octet-stream")
            .to_owned();
        let name = a
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("attachment")
            .replace(['\r', '\n', '"'], "_");
        let inline = a.get("disposition").and_then(Value::as_str) == Some("inline");
        match (inline, a.get("cid").and_then(Value::as_str)) {
            (true, Some(cid)) => b = b.inline(ty, cid.replace(['\r', '\n', '<', '>'], ""), data),
            _ => b = b.attachment(ty, name, data),
        }
    }
    b.write_to_vec()
        .map_err(|e| set_error("serverFail", format!("cannot build the message: {e}")))
}

fn flags_from_keywords(o: &Map<String, Value>) -> Result<Vec<Flag>, Value> {
    let mut flags = Vec::new();
    if let Some(kw) = o.get("keywords") {
        let kw = kw
            .as_object()
            .ok_or_else(|| set_error("invalidProperties", "keywords must be an object"))?;
        for (k, v) in kw {
            if v != &Value::Bool(true) {
                return Err(set_error(
                    "invalidProperties",
                    "keyword values must be true",
                ));
            }
            flags.push(flag_of_keyword(k).map_err(|e| set_error("invalidProperties", e))?);
        }
    }
    Ok(flags)
}

async fn target_mailboxes(req: &mut Req<'_>, o: &Map<String, Value>) -> Result<Vec<Folder>, Value> {
    let m = o
        .get("mailboxIds")
        .and_then(Value::as_object)
        .ok_or_else(|| set_error("invalidProperties", "mailboxIds is required"))?;
    let mut ids = Vec::new();
    for (k, v) in m {
        if *v != Value::Bool(true) {
            return Err(set_error(
                "invalidProperties",
                "mailboxIds values must be true",
            ));
        }
        ids.push(req.resolve_id(k));
    }
    resolve_mailboxes(req, ids).await
}

/// Appends a message to the first mailbox and copies it to the others; answers what a
/// create returns.
async fn append(
    req: &mut Req<'_>,
    folders: &[Folder],
    data: Vec<u8>,
    flags: &[Flag],
    date: Option<i64>,
) -> Result<Value, Value> {
    let size = data.len();
    let st = MessageStructure::parse(&data);
    let (email, thread) = st
        .object_ids()
        .ok_or_else(|| set_error("serverFail", "no id for a parsed message"))?;
    let (first, rest) = folders
        .split_first()
        .ok_or_else(|| set_error("invalidProperties", "mailboxIds is empty"))?;
    let r = req
        .session
        .append(&first.name, data, flags, date)
        .await
        .map_err(|e| store_set_error(&e))?;
    for f in rest {
        req.session
            .copy(&first.name, &[r.uid], &f.name)
            .await
            .map_err(|e| store_set_error(&e))?;
    }
    Ok(json!({
        "id": email.to_string(),
        "blobId": ids::email_blob_id(&email),
        "threadId": thread.to_string(),
        "size": size,
    }))
}

/// Email/set.
pub(crate) async fn set(req: &mut Req<'_>, args: Map<String, Value>) -> MResult {
    req.account(&args)?;
    let old_state = req.state().await?;
    if let Some(s) = arg_str(&args, "ifInState")? {
        if s != old_state {
            return Err(MethodError::StateMismatch);
        }
    }
    let n = args
        .get("create")
        .and_then(Value::as_object)
        .map_or(0, Map::len)
        + args
            .get("update")
            .and_then(Value::as_object)
            .map_or(0, Map::len)
        + args
            .get("destroy")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
    if n > super::MAX_OBJECTS_IN_SET {
        return Err(MethodError::RequestTooLarge);
    }
    let (mut created, mut not_created) = (Map::new(), Map::new());
    let (mut updated, mut not_updated) = (Map::new(), Map::new());
    let (mut destroyed, mut not_destroyed) = (Vec::new(), Map::new());
    if let Some(create) = args.get("create") {
        let create = create
            .as_object()
            .ok_or_else(|| MethodError::InvalidArguments("create must be an object".into()))?;
        for (cid, obj) in create {
            let r = async {
                let o = obj
                    .as_object()
                    .ok_or_else(|| set_error("invalidProperties", "not an object"))?;
                let folders = target_mailboxes(req, o).await?;
                let flags = flags_from_keywords(o)?;
                let data = build_message(req, o).await?;
                let date = match o.get("receivedAt").and_then(Value::as_str) {
                    Some(d) => Some(
                        ids::parse_date(d)
                            .ok_or_else(|| set_error("invalidProperties", "receivedAt"))?,
                    ),
                    None => None,
                };
                append(req, &folders, data, &flags, date).await
            }
            .await;
            req.invalidate();
            match r {
                Ok(v) => {
                    if let Some(id) = v.get("id").and_then(Value::as_str) {
                        req.created_ids.insert(cid.clone(), id.to_owned());
                    }
                    created.insert(cid.clone(), v);
                }
                Err(e) => {
                    not_created.insert(cid.clone(), e);
                }
            }
        }
    }
    if let Some(update) = args.get("update") {
        let update = update
            .as_object()
            .ok_or_else(|| MethodError::InvalidArguments("update must be an object".into()))?;
        for (id, patch) in update {
            let index = req.session.email_index().await?;
            let r = update_one(req, &index, id, patch).await;
            req.invalidate();
            match r {
                Ok(()) => {
                    updated.insert(req.resolve_id(id), Value::Null);
                }
                Err(e) => {
                    not_updated.insert(id.clone(), e);
                }
            }
        }
    }
    if let Some(destroy) = arg_ids(&args, "destroy")? {
        for id in destroy {
            let index = req.session.email_index().await?;
            let r = destroy_one(req, &index, &id).await;
            req.invalidate();
            match r {
                Ok(()) => destroyed.push(req.resolve_id(&id)),
                Err(e) => {
                    not_destroyed.insert(id, e);
                }
            }
        }
    }
    Ok(json!({
        "accountId": req.user, "oldState": old_state, "newState": req.state().await?,
        "created": created, "notCreated": not_created,
        "updated": updated, "notUpdated": not_updated,
        "destroyed": destroyed, "notDestroyed": not_destroyed,
    }))
}

/// Email/import: messages from blobs (uploads, or stored messages).
pub(crate) async fn import(req: &mut Req<'_>, args: Map<String, Value>) -> MResult {
    req.account(&args)?;
    let old_state = req.state().await?;
    if let Some(s) = arg_str(&args, "ifInState")? {
        if s != old_state {
            return Err(MethodError::StateMismatch);
        }
    }
    let emails = args
        .get("emails")
        .and_then(Value::as_object)
        .ok_or_else(|| MethodError::InvalidArguments("emails must be an object".into()))?;
    if emails.len() > super::MAX_OBJECTS_IN_SET {
        return Err(MethodError::RequestTooLarge);
    }
    let (mut created, mut not_created) = (Map::new(), Map::new());
    for (cid, obj) in emails {
        let r = async {
            let o = obj
                .as_object()
                .ok_or_else(|| set_error("invalidProperties", "not an object"))?;
            let blob_id = o
                .get("blobId")
                .and_then(Value::as_str)
                .ok_or_else(|| set_error("invalidProperties", "blobId is required"))?;
            let blob_id = req.resolve_id(blob_id);
            let data = blob_bytes(req, &blob_id)
                .await
                .map_err(|e| set_error("serverFail", format!("{e:?}")))?
                .ok_or_else(|| set_error("blobNotFound", format!("no blob {blob_id}")))?;
            if MessageParser::default().parse_headers(&data).is_none() || data.is_empty() {
                return Err(set_error("invalidEmail", "the blob is not a message"));
            }
            let folders = target_mailboxes(req, o).await?;
            let flags = flags_from_keywords(o)?;
            let date = match o.get("receivedAt").and_then(Value::as_str) {
                Some(d) => Some(
                    ids::parse_date(d)
                        .ok_or_else(|| set_error("invalidProperties", "receivedAt"))?,
                ),
                None => None,
            };
            append(req, &folders, data, &flags, date).await
        }
        .await;
        req.invalidate();
        match r {
            Ok(v) => {
                if let Some(id) = v.get("id").and_then(Value::as_str) {
                    req.created_ids.insert(cid.clone(), id.to_owned());
                }
                created.insert(cid.clone(), v);
            }
            Err(e) => {
                not_created.insert(cid.clone(), e);
            }
        }
    }
    Ok(json!({
        "accountId": req.user, "oldState": old_state, "newState": req.state().await?,
        "created": created, "notCreated": not_created,
    }))
}

/// Email/copy (RFC 8621 4.7): between accounts only, and this server has one per user.
pub(crate) async fn copy(req: &mut Req<'_>, args: Map<String, Value>) -> MResult {
    req.account(&args)?;
    match arg_str(&args, "fromAccountId")? {
        Some(a) if a == req.user => Err(MethodError::InvalidArguments(
            "fromAccountId must differ from accountId; use Email/set to move within an account"
                .into(),
        )),
        Some(_) => Err(MethodError::FromAccountNotFound),
        None => Err(MethodError::InvalidArguments(
            "fromAccountId is required".into(),
        )),
    }
}

/// Email/parse: Email objects for message blobs (no id, mailboxIds, keywords, receivedAt).
pub(crate) async fn parse(req: &mut Req<'_>, args: Map<String, Value>) -> MResult {
    req.account(&args)?;
    let blob_ids = arg_ids(&args, "blobIds")?
        .ok_or_else(|| MethodError::InvalidArguments("blobIds is required".into()))?;
    if blob_ids.len() > super::MAX_OBJECTS_IN_GET {
        return Err(MethodError::RequestTooLarge);
    }
    let mut props = arg_props(&args, "properties")?.unwrap_or_else(|| {
        DEFAULT_PROPERTIES
            .iter()
            .filter(|p| !matches!(**p, "id" | "mailboxIds" | "keywords" | "receivedAt"))
            .map(|s| s.to_string())
            .collect()
    });
    props.retain(|p| !matches!(p.as_str(), "id" | "mailboxIds" | "keywords" | "receivedAt"));
    for p in &props {
        if !DEFAULT_PROPERTIES.contains(&p.as_str())
            && !OTHER_PROPERTIES.contains(&p.as_str())
            && !p.starts_with("header:")
        {
            return Err(MethodError::InvalidArguments(format!(
                "unknown property {p}"
            )));
        }
    }
    let opts = body_opts(&args)?;
    let (mut parsed, mut not_parsable, mut not_found) = (Map::new(), Vec::new(), Vec::new());
    for blob_id in blob_ids {
        let Some(data) = blob_bytes(req, &blob_id).await? else {
            not_found.push(blob_id);
            continue;
        };
        let Some(msg) = MessageParser::default().parse(&data) else {
            not_parsable.push(blob_id);
            continue;
        };
        let st = MessageStructure::parse(&data);
        let mut o = Map::new();
        for p in &props {
            match p.as_str() {
                "blobId" => {
                    o.insert(p.clone(), json!(blob_id));
                }
                "size" => {
                    o.insert(p.clone(), json!(data.len()));
                }
                _ => {}
            }
        }
        structure_props(&mut o, &st, &props);
        let base = blob_id.clone();
        let blob = move |part: u32| format!("{base}_{part:x}");
        parsed_props(&mut o, &msg, &props, &opts, &blob)?;
        parsed.insert(blob_id, Value::Object(o));
    }
    Ok(json!({
        "accountId": req.user, "parsed": parsed, "notParsable": not_parsable, "notFound": not_found,
    }))
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Marks every case-insensitive occurrence of the terms with `<mark>` (HTML-escaped).
fn highlight(text: &str, terms: &[String]) -> Option<String> {
    let lower = text.to_lowercase();
    if lower.len() != text.len() {
        // Lower-casing changed byte lengths: match on the text as it is.
        let hit = terms.iter().any(|t| text.contains(t.as_str()));
        return hit.then(|| escape_html(text));
    }
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for t in terms {
        let t = t.to_lowercase();
        if t.is_empty() {
            continue;
        }
        let mut from = 0;
        while let Some(i) = lower[from..].find(&t) {
            spans.push((from + i, from + i + t.len()));
            from += i + t.len();
        }
    }
    if spans.is_empty() {
        return None;
    }
    spans.sort();
    let mut out = String::new();
    let mut at = 0;
    for (s, e) in spans {
        if s < at || !text.is_char_boundary(s) || !text.is_char_boundary(e) {
            continue;
        }
        out.push_str(&escape_html(&text[at..s]));
        out.push_str("<mark>");
        out.push_str(&escape_html(&text[s..e]));
        out.push_str("</mark>");
        at = e;
    }
    out.push_str(&escape_html(&text[at..]));
    Some(out)
}

fn filter_terms(v: &Value, out: &mut Vec<String>) {
    if let Some(conds) = v.get("conditions").and_then(Value::as_array) {
        if v.get("operator").and_then(Value::as_str) != Some("NOT") {
            for c in conds {
                filter_terms(c, out);
            }
        }
        return;
    }
    for k in ["text", "subject", "body"] {
        if let Some(s) = v.get(k).and_then(Value::as_str) {
            out.extend(s.split_whitespace().map(str::to_owned));
        }
    }
}

/// SearchSnippet/get: subject and a body excerpt with the search terms marked.
pub(crate) async fn snippets(req: &mut Req<'_>, args: Map<String, Value>) -> MResult {
    req.account(&args)?;
    let ids = arg_ids(&args, "emailIds")?
        .ok_or_else(|| MethodError::InvalidArguments("emailIds is required".into()))?;
    if ids.len() > super::MAX_OBJECTS_IN_GET {
        return Err(MethodError::RequestTooLarge);
    }
    let mut terms = Vec::new();
    if let Some(f) = args.get("filter") {
        filter_terms(f, &mut terms);
    }
    let mut list = Vec::new();
    let mut not_found = Vec::new();
    for id in ids {
        let Some(loc) = locate(req, &id).await? else {
            not_found.push(id);
            continue;
        };
        let st = req
            .session
            .message_structure(&loc.folder.name, loc.msg.uid)
            .await?;
        let subject = st
            .subject_decoded
            .as_deref()
            .and_then(|s| highlight(s, &terms));
        let mut preview = None;
        if !terms.is_empty() {
            let raw = req
                .session
                .message_bytes(&loc.folder.name, loc.msg.uid)
                .await?;
            if let Some(msg) = MessageParser::default().parse(&raw) {
                let body: String = msg
                    .text_body
                    .iter()
                    .filter_map(|i| msg.body_text(*i as usize))
                    .collect::<Vec<_>>()
                    .join(" ");
                let body = body.split_whitespace().collect::<Vec<_>>().join(" ");
                let lower = body.to_lowercase();
                let first = terms
                    .iter()
                    .filter_map(|t| lower.find(&t.to_lowercase()))
                    .min();
                if let Some(at) = first.filter(|_| lower.len() == body.len()) {
                    let mut start = at.saturating_sub(60);
                    while !body.is_char_boundary(start) {
                        start -= 1;
                    }
                    let mut end = (at + 200).min(body.len());
                    while !body.is_char_boundary(end) {
                        end -= 1;
                    }
                    preview = highlight(&body[start..end], &terms);
                }
            }
        }
        list.push(json!({"emailId": id, "subject": subject, "preview": preview}));
    }
    Ok(json!({"accountId": req.user, "list": list, "notFound": not_found}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highlight_marks_and_escapes() {
        assert_eq!(
            highlight("Lunch <today>", &["lunch".into()]).as_deref(),
            Some("<mark>Lunch</mark> &lt;today&gt;")
        );
        assert_eq!(highlight("nothing", &["x".into()]), None);
    }

    #[test]
    fn message_ids_without_brackets() {
        assert_eq!(msg_ids(Some(b"<a@b> <c@d>")), json!(["a@b", "c@d"]));
        assert_eq!(msg_ids(None), Value::Null);
    }

    #[test]
    fn keyword_mapping() {
        assert_eq!(flag_of_keyword("$Seen"), Ok(Flag::Seen));
        assert!(flag_of_keyword("bad keyword").is_err());
    }
}
