//! Response encoding through imap-codec (issue #4): the session builds imap-types values and
//! imap-codec's `ResponseCodec` (or `GreetingCodec`) writes their bytes into the session's
//! output buffer. Our own encoder (`encode.rs`, `ext/`) stays only where imap-codec does not
//! cover the response, or covers it but costs clearly more on the hot path.
//!
//! Where each response goes:
//! - imap-codec: the greeting; tagged and untagged OK/NO/BAD and BYE with their codes
//!   (imap-types' own variants for ALERT, CAPABILITY, PERMANENTFLAGS, READ-ONLY, READ-WRITE,
//!   TRYCREATE, UIDNEXT, UIDVALIDITY, UNSEEN, APPENDUID, COPYUID, HIGHESTMODSEQ, NOMODSEQ,
//!   MODIFIED, CLOSED, OVERQUOTA, TOOBIG, UNKNOWN-CTE, COMPRESSIONACTIVE, PARSE, BADCHARSET;
//!   `Code::Other` for the RFC 5530 codes imap-types has no variant for: NONEXISTENT,
//!   ALREADYEXISTS, AUTHENTICATIONFAILED, AUTHORIZATIONFAILED, UNAVAILABLE, CANNOT,
//!   SERVERBUG, LIMIT, NOPERM, INUSE, EXPUNGEISSUED, CORRUPTION, PRIVACYREQUIRED, and
//!   MAILBOXID, RFC 8474); continuation requests; CAPABILITY, ENABLED, FLAGS, EXISTS, RECENT,
//!   EXPUNGE, VANISHED, SEARCH, SORT, plain LIST and LSUB, STATUS (when no item is MAILBOXID
//!   or APPENDLIMIT), NAMESPACE, ID, QUOTA (with at least one resource), QUOTAROOT, THREAD.
//! - our own, not covered by imap-codec: ESEARCH/ESORT (`ext/esearch.rs`), LIST with
//!   CHILDINFO (LIST-EXTENDED) and STATUS with MAILBOXID or APPENDLIMIT (LIST-STATUS uses
//!   the same STATUS lines), QUOTA of a root without limits (`()`, which RFC 2087 allowed and
//!   imap-types cannot hold), APPENDUID with MULTIAPPEND's UID set, HIGHESTMODSEQ 0 of a
//!   folder that never changed (as `Code::Other`), ACL responses (`ext/acl.rs`), FETCH
//!   PREVIEW, EMAILID, THREADID, SAVEDATE, BINARY and BINARY.SIZE, and literals streamed
//!   from the message file (imap-codec needs the whole literal in memory).
//! - covers, but too slow for the hot path (`examples/encode_bench.rs`, figures in
//!   docs/BENCHMARKS.md "Response encoding"): FETCH response lines. `* n FETCH (FLAGS (...)
//!   UID u)`, sent for every message of FETCH 1:* (FLAGS) and by every STORE, costs
//!   0.8-1.0 us through imap-codec against 0.06-0.09 us by `fetch_flags` below (11-15x;
//!   200 lines add about 0.15 ms to a command, a quarter of the 0.59 ms of CPU an average
//!   operation takes); FETCH (UID ENVELOPE) 2.8-3.4 us against 0.75-1.1 us (3-4x, +2 us per
//!   line); BODY[] of a 10 KB message 6-11 us against 0.1-0.35 us (the literal is copied
//!   twice, and big ones must stream from the file, which imap-codec cannot). So FLAGS,
//!   UID, MODSEQ, RFC822.SIZE, INTERNALDATE, ENVELOPE and BODY[section] stay ours; the tests
//!   below prove the FLAGS and ENVELOPE bytes equal imap-codec's. BODYSTRUCTURE of a
//!   4-part message: 4.3-4.9 us through imap-codec against 1.2-1.5 us (3.3-3.6x), so BODY
//!   and BODYSTRUCTURE stay ours as well (`body_structure` below converts, for the test
//!   that proves the bytes equal but for the case of media types).
//!   APPEND's tagged OK [APPENDUID] (0.4-0.6 us against 0.2-0.3 us) and EXPUNGE (0.14-0.3
//!   us against 0.04-0.1 us) cost more through imap-codec too, but under a microsecond,
//!   once per command or per expunged message: they go through imap-codec.
//!
//! Text that cannot be imap-types `text` (empty, CR/LF from an error message, non-ASCII) is
//! sanitised, never sent raw: a response line can never be split by what it quotes.
//!
//! Where imap-codec's bytes differ from what our encoder wrote, they are still valid: it
//! writes IMAP4rev1 as `IMAP4REV1` (atoms are case-insensitive, RFC 9051 section 4) and a
//! quota root such as `user/joe` as an atom rather than a quoted string (both astring).

use std::borrow::Cow;
use std::num::{NonZeroU32, NonZeroU64};

use imap_codec::encode::{Encoded, Encoder, Fragment};
use imap_codec::imap_types::body::BodyStructure;
use imap_codec::imap_types::core::{
    AString, Atom, IString, NString, QuotedChar, Tag, Text, Vec1, Vec2,
};
use imap_codec::imap_types::envelope::{Address as ImapAddress, Envelope as ImapEnvelope};
use imap_codec::imap_types::extensions::enable::CapabilityEnable;
use imap_codec::imap_types::extensions::namespace::Namespace;
use imap_codec::imap_types::extensions::quota::{QuotaGet, Resource};
use imap_codec::imap_types::extensions::thread::Thread;
use imap_codec::imap_types::extensions::uidplus::{UidElement, UidSet};
use imap_codec::imap_types::flag::{Flag as ImapFlag, FlagFetch, FlagNameAttribute, FlagPerm};
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::{
    Bye, Capability, Code, CodeOther, CommandContinuationRequest, Data, Greeting, GreetingKind,
    Response, Status, StatusBody, StatusKind, Tagged,
};
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use imap_codec::imap_types::status::StatusDataItem;
use imap_codec::{GreetingCodec, ResponseCodec};

/// The status of a tagged or untagged status response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ok,
    No,
    Bad,
}

/// A status response's kind, optional code and text, built by the session and encoded by
/// imap-codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply<'a> {
    pub kind: Kind,
    pub code: Option<Code<'a>>,
    pub text: Cow<'a, str>,
}

impl<'a> Reply<'a> {
    pub fn new(kind: Kind, text: impl Into<Cow<'a, str>>) -> Self {
        Reply {
            kind,
            code: None,
            text: text.into(),
        }
    }
    pub fn ok(text: impl Into<Cow<'a, str>>) -> Self {
        Self::new(Kind::Ok, text)
    }
    pub fn no(text: impl Into<Cow<'a, str>>) -> Self {
        Self::new(Kind::No, text)
    }
    pub fn bad(text: impl Into<Cow<'a, str>>) -> Self {
        Self::new(Kind::Bad, text)
    }
    /// With a response code.
    pub fn with(mut self, code: Code<'a>) -> Self {
        self.code = Some(code);
        self
    }
    /// With a code that has no arguments, by name (see [`named`]).
    pub fn code(self, name: &'static str) -> Self {
        self.with(named(name))
    }

    /// A reply from text that may start with a bracketed code (`[BADCHARSET (UTF-8)] ...`),
    /// as our grammar's errors carry it.
    pub fn from_text(kind: Kind, s: &'a str) -> Self {
        if let Some(rest) = s.strip_prefix('[') {
            if let Some((code, text)) = rest.split_once(']') {
                if let Some(c) = code_text(code) {
                    return Reply::new(kind, text.trim_start()).with(c);
                }
            }
        }
        Reply::new(kind, s)
    }
}

/// A response code without arguments by its name: imap-types' variant where it has one, else
/// `Code::Other` (our names are constants, valid atoms).
pub fn named(name: &'static str) -> Code<'static> {
    match name {
        "ALERT" => Code::Alert,
        "PARSE" => Code::Parse,
        "READ-ONLY" => Code::ReadOnly,
        "READ-WRITE" => Code::ReadWrite,
        "TRYCREATE" => Code::TryCreate,
        "OVERQUOTA" => Code::OverQuota,
        "TOOBIG" => Code::TooBig,
        "UNKNOWN-CTE" => Code::UnknownCte,
        "COMPRESSIONACTIVE" => Code::CompressionActive,
        "CLOSED" => Code::Closed,
        "NOMODSEQ" => Code::NoModSeq,
        "UIDNOTSTICKY" => Code::UidNotSticky,
        "BADCHARSET" => Code::BadCharset {
            allowed: Vec::new(),
        },
        other => Code::Other(CodeOther::unvalidated(other.as_bytes())),
    }
}

/// A code with its arguments from text (`BADCHARSET (UTF-8)`, `BADURL imap://...`): a known
/// name without arguments maps to its variant; anything else must be a valid
/// `atom [SP 1*<TEXT-CHAR except "]">]` to become `Code::Other`.
fn code_text(s: &str) -> Option<Code<'_>> {
    let (name, args) = match s.split_once(' ') {
        Some((n, a)) => (n, Some(a)),
        None => (s, None),
    };
    if name.is_empty() || Atom::try_from(name).is_err() {
        return None;
    }
    if let Some(a) = args {
        if a.is_empty() || !a.bytes().all(|b| is_text_char(b) && b != b']') {
            return None;
        }
    } else {
        if let Some(k) = KNOWN.iter().find(|k| k.eq_ignore_ascii_case(name)) {
            return Some(named(k));
        }
    }
    Some(Code::Other(CodeOther::unvalidated(s.as_bytes())))
}

/// The codes without arguments imap-types has a variant for.
const KNOWN: [&str; 13] = [
    "ALERT",
    "PARSE",
    "READ-ONLY",
    "READ-WRITE",
    "TRYCREATE",
    "OVERQUOTA",
    "TOOBIG",
    "UNKNOWN-CTE",
    "COMPRESSIONACTIVE",
    "CLOSED",
    "NOMODSEQ",
    "UIDNOTSTICKY",
    "BADCHARSET",
];

/// RFC 9051 TEXT-CHAR as imap-types takes it: 7-bit, no NUL, CR or LF.
fn is_text_char(b: u8) -> bool {
    matches!(b, 0x01..=0x09 | 0x0b..=0x0c | 0x0e..=0x7f)
}

/// `text` as imap-types allows it: CR, LF and NUL become spaces, other characters outside
/// 7-bit `?` (RFC 9051 allows UTF-8 text only after ENABLE IMAP4rev2; imap-types never),
/// empty becomes a word.
fn text(s: &str) -> Text<'_> {
    if !s.is_empty() && s.bytes().all(is_text_char) {
        if let Ok(t) = Text::try_from(s) {
            return t;
        }
    }
    let clean: String = s
        .chars()
        .map(|c| match c {
            '\r' | '\n' | '\0' => ' ',
            c if !c.is_ascii() => '?',
            c => c,
        })
        .collect();
    let clean = if clean.trim().is_empty() {
        "completed".to_owned()
    } else {
        clean
    };
    Text::try_from(clean).unwrap_or_else(|_| Text::unvalidated("completed"))
}

/// Append imap-codec's fragments (lines and literals alike) to `out`.
fn put(out: &mut Vec<u8>, enc: Encoded) {
    for f in enc {
        match f {
            Fragment::Line { data } | Fragment::Literal { data, .. } => {
                out.extend_from_slice(&data)
            }
        }
    }
}

fn respond(out: &mut Vec<u8>, r: &Response<'_>) {
    put(out, ResponseCodec::default().encode(r));
}

fn status_kind(k: Kind) -> StatusKind {
    match k {
        Kind::Ok => StatusKind::Ok,
        Kind::No => StatusKind::No,
        Kind::Bad => StatusKind::Bad,
    }
}

/// A tagged status response (untagged when `tag` is `None`).
pub fn status(out: &mut Vec<u8>, tag: Option<&str>, r: &Reply<'_>) {
    let body = StatusBody {
        kind: status_kind(r.kind),
        code: r.code.clone(),
        text: text(&r.text),
    };
    let status = match tag.map(Tag::try_from) {
        Some(Ok(tag)) => Status::Tagged(Tagged { tag, body }),
        // Our reader only returns valid tags; should one not be, the status goes untagged
        // rather than out as bytes no client could parse.
        _ => Status::Untagged(body),
    };
    respond(out, &Response::Status(status));
}

/// An untagged status response: `* OK [code] text`.
pub fn untagged(out: &mut Vec<u8>, r: &Reply<'_>) {
    status(out, None, r);
}

/// `* BYE [code] text`.
pub fn bye(out: &mut Vec<u8>, code: Option<&'static str>, t: &str) {
    let bye = Bye {
        code: code.map(named),
        text: text(t),
    };
    respond(out, &Response::Status(Status::Bye(bye)));
}

/// The greeting: `* OK [CAPABILITY ...] text`.
pub fn greeting(out: &mut Vec<u8>, caps: &str, t: &str) {
    let g = Greeting {
        kind: GreetingKind::Ok,
        code: capability_code(caps),
        text: text(t),
    };
    put(out, GreetingCodec::default().encode(&g));
}

/// A continuation request: `+ text`.
pub fn continuation(out: &mut Vec<u8>, t: &str) {
    match CommandContinuationRequest::basic(None, text(t)) {
        Ok(c) => respond(out, &Response::CommandContinuationRequest(c)),
        Err(_) => out.extend_from_slice(b"+ \r\n"),
    }
}

fn capabilities(caps: &str) -> Option<Vec1<Capability<'_>>> {
    let v: Vec<Capability<'_>> = caps
        .split(' ')
        .filter_map(|c| Capability::try_from(c).ok())
        .collect();
    Vec1::try_from(v).ok()
}

/// The `CAPABILITY` response code for a space-separated capability list.
pub fn capability_code(caps: &str) -> Option<Code<'_>> {
    capabilities(caps).map(Code::Capability)
}

/// `* CAPABILITY ...`.
pub fn capability(out: &mut Vec<u8>, caps: &str) {
    if let Some(c) = capabilities(caps) {
        respond(out, &Response::Data(Data::Capability(c)));
    }
}

/// `* ENABLED ...` (possibly with none).
pub fn enabled(out: &mut Vec<u8>, caps: &[String]) {
    let capabilities = caps
        .iter()
        .filter_map(|c| CapabilityEnable::try_from(c.as_str()).ok())
        .collect();
    respond(out, &Response::Data(Data::Enabled { capabilities }));
}

/// The system flags, then the keywords (valid atoms: the store checks them).
fn flag_list(keywords: &[String]) -> Vec<ImapFlag<'_>> {
    let mut v = vec![
        ImapFlag::Answered,
        ImapFlag::Flagged,
        ImapFlag::Deleted,
        ImapFlag::Seen,
        ImapFlag::Draft,
    ];
    v.extend(
        keywords
            .iter()
            .filter_map(|k| ImapFlag::try_from(k.as_str()).ok()),
    );
    v
}

/// `* FLAGS (...)`: the system flags and the folder's keywords.
pub fn flags(out: &mut Vec<u8>, keywords: &[String]) {
    respond(out, &Response::Data(Data::Flags(flag_list(keywords))));
}

/// The `PERMANENTFLAGS` code: nothing (read-only) or every flag plus `\*`.
pub fn permanent_flags(keywords: &[String], read_only: bool) -> Code<'_> {
    if read_only {
        return Code::PermanentFlags(Vec::new());
    }
    let mut v: Vec<FlagPerm<'_>> = flag_list(keywords)
        .into_iter()
        .map(FlagPerm::Flag)
        .collect();
    v.push(FlagPerm::Asterisk);
    Code::PermanentFlags(v)
}

pub fn exists(out: &mut Vec<u8>, n: u32) {
    respond(out, &Response::Data(Data::Exists(n)));
}

pub fn recent(out: &mut Vec<u8>, n: u32) {
    respond(out, &Response::Data(Data::Recent(n)));
}

pub fn expunge(out: &mut Vec<u8>, seq: u32) {
    if let Some(seq) = NonZeroU32::new(seq) {
        respond(out, &Response::Data(Data::Expunge(seq)));
    }
}

/// A sequence set from ascending (lo, hi) ranges; `None` when empty (or only zeros).
pub fn sequence_set(ranges: &[(u32, u32)]) -> Option<SequenceSet> {
    let v: Vec<Sequence> = ranges
        .iter()
        .filter_map(|&(a, b)| {
            let a = SeqOrUid::Value(NonZeroU32::new(a)?);
            let b = SeqOrUid::Value(NonZeroU32::new(b)?);
            Some(if a == b {
                Sequence::Single(a)
            } else {
                Sequence::Range(a, b)
            })
        })
        .collect();
    Vec1::try_from(v).ok().map(SequenceSet)
}

/// Ascending numbers as ranges.
pub fn ranges(nums: &[u32]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &n in nums {
        match out.last_mut() {
            Some((_, hi)) if hi.checked_add(1) == Some(n) => *hi = n,
            _ => out.push((n, n)),
        }
    }
    out
}

/// `* VANISHED [(EARLIER)] set`; nothing when the set is empty.
pub fn vanished(out: &mut Vec<u8>, earlier: bool, uids: &[(u32, u32)]) {
    if let Some(known_uids) = sequence_set(uids) {
        respond(
            out,
            &Response::Data(Data::Vanished {
                earlier,
                known_uids,
            }),
        );
    }
}

fn nonzero(nums: &[u32]) -> Vec<NonZeroU32> {
    nums.iter().filter_map(|&n| NonZeroU32::new(n)).collect()
}

/// `* SEARCH n... [(MODSEQ m)]`.
pub fn search(out: &mut Vec<u8>, nums: &[u32], modseq: Option<u64>) {
    let modseq = modseq.and_then(NonZeroU64::new);
    respond(out, &Response::Data(Data::Search(nonzero(nums), modseq)));
}

/// `* SORT n...`.
pub fn sort(out: &mut Vec<u8>, nums: &[u32]) {
    respond(out, &Response::Data(Data::Sort(nonzero(nums), None)));
}

/// A mailbox name (already in the wire encoding) as imap-types' `Mailbox`; UTF-8 names
/// (UTF8=ACCEPT, RFC 6855) as quoted UTF-8 strings.
fn mailbox(name: &str) -> Option<Mailbox<'_>> {
    if !name.is_ascii() && name.len() < 1024 && !name.contains(['\r', '\n', '\0']) {
        use imap_codec::imap_types::extensions::utf8::QuotedUtf8;
        QuotedUtf8::validate(name).ok()?;
        let q = QuotedUtf8::unvalidated(name);
        return Some(Mailbox::from(AString::String(IString::QuotedUtf8(q))));
    }
    Mailbox::try_from(name).ok()
}

/// `* LIST (attrs) "/" name` or `* LSUB ...`, without extended data. Attributes are
/// `\Name` (`\` and an atom).
pub fn list(out: &mut Vec<u8>, attrs: &[String], name: &str, lsub: bool) {
    let Some(mailbox) = mailbox(name) else {
        return;
    };
    let items: Vec<FlagNameAttribute<'_>> = attrs
        .iter()
        .filter_map(|a| Atom::try_from(a.strip_prefix('\\').unwrap_or(a)).ok())
        .map(FlagNameAttribute::from)
        .collect();
    let delimiter = QuotedChar::try_from('/').ok();
    let data = if lsub {
        Data::Lsub {
            items,
            delimiter,
            mailbox,
        }
    } else {
        Data::List {
            items,
            delimiter,
            mailbox,
        }
    };
    respond(out, &Response::Data(data));
}

/// One STATUS item's value, as far as imap-types knows them.
#[derive(Debug, Clone, Copy)]
pub enum StatusValue {
    Messages(u32),
    Recent(u32),
    UidNext(u32),
    UidValidity(u32),
    Unseen(u32),
    Deleted(u32),
    Size(u64),
    HighestModSeq(u64),
}

/// `* STATUS name (items)`; `false` (and nothing written) when imap-types cannot carry a
/// value (a zero UIDNEXT or UIDVALIDITY) or the name.
pub fn status_data(out: &mut Vec<u8>, name: &str, values: &[StatusValue]) -> bool {
    let Some(mailbox) = mailbox(name) else {
        return false;
    };
    let mut items = Vec::with_capacity(values.len());
    for v in values {
        items.push(match *v {
            StatusValue::Messages(n) => StatusDataItem::Messages(n),
            StatusValue::Recent(n) => StatusDataItem::Recent(n),
            StatusValue::UidNext(n) => match NonZeroU32::new(n) {
                Some(n) => StatusDataItem::UidNext(n),
                None => return false,
            },
            StatusValue::UidValidity(n) => match NonZeroU32::new(n) {
                Some(n) => StatusDataItem::UidValidity(n),
                None => return false,
            },
            StatusValue::Unseen(n) => StatusDataItem::Unseen(n),
            StatusValue::Deleted(n) => StatusDataItem::Deleted(n),
            StatusValue::Size(n) => StatusDataItem::Size(n),
            StatusValue::HighestModSeq(n) => StatusDataItem::HighestModSeq(n),
        });
    }
    respond(
        out,
        &Response::Data(Data::Status {
            mailbox,
            items: items.into(),
        }),
    );
    true
}

/// `* NAMESPACE (("" "/")) ((other "/")) NIL`.
pub fn namespace(out: &mut Vec<u8>, other_prefix: &str) {
    let delim = QuotedChar::try_from('/').ok();
    let personal = IString::try_from("").map(|p| vec![Namespace::new(p, delim)]);
    let other = IString::try_from(other_prefix).map(|p| vec![Namespace::new(p, delim)]);
    if let (Ok(personal), Ok(other)) = (personal, other) {
        let data = Data::Namespace {
            personal,
            other,
            shared: Vec::new(),
        };
        respond(out, &Response::Data(data));
    }
}

/// `* ID ("name" "..." ...)`.
pub fn id(out: &mut Vec<u8>, params: &[(&str, &str)]) {
    let parameters = params
        .iter()
        .filter_map(|(k, v)| Some((IString::try_from(*k).ok()?, NString::try_from(*v).ok()?)))
        .collect();
    respond(
        out,
        &Response::Data(Data::Id {
            parameters: Some(parameters),
        }),
    );
}

/// `* QUOTA root (STORAGE used limit MESSAGE used limit)`: storage in KiB, RFC 9208.
pub fn quota(
    out: &mut Vec<u8>,
    root: &str,
    storage: Option<(u64, u64)>,
    messages: Option<(u64, u64)>,
) {
    let mut quotas = Vec::new();
    if let Some((used, limit)) = storage {
        quotas.push(QuotaGet::new(Resource::Storage, used, limit));
    }
    if let Some((used, limit)) = messages {
        quotas.push(QuotaGet::new(Resource::Message, used, limit));
    }
    let (Ok(aroot), Ok(quotas)) = (AString::try_from(root), Vec1::try_from(quotas)) else {
        // A root without limits: RFC 9208's quota-list needs a resource and imap-types
        // agrees, but RFC 2087 allowed `()` and clients expect a QUOTA line per root: ours.
        out.extend_from_slice(b"* QUOTA ");
        crate::encode::string(out, root.as_bytes());
        out.extend_from_slice(b" ()\r\n");
        return;
    };
    let root = aroot;
    respond(out, &Response::Data(Data::Quota { root, quotas }));
}

/// `* QUOTAROOT mailbox root...`.
pub fn quota_root(out: &mut Vec<u8>, name: &str, roots: &[&str]) {
    let Some(mailbox) = mailbox(name) else {
        return;
    };
    let roots = roots
        .iter()
        .filter_map(|r| AString::try_from(*r).ok())
        .collect();
    respond(out, &Response::Data(Data::QuotaRoot { mailbox, roots }));
}

/// The `APPENDUID` code; `None` for a zero (impossible) UIDVALIDITY or UID.
pub fn append_uid(uidvalidity: u32, uid: u32) -> Option<Code<'static>> {
    Some(Code::AppendUid {
        uid_validity: NonZeroU32::new(uidvalidity)?,
        uid: NonZeroU32::new(uid)?,
    })
}

/// The `COPYUID` code for a non-empty UID map.
pub fn copy_uid(uidvalidity: u32, src: &[u32], dst: &[u32]) -> Option<Code<'static>> {
    let source = uid_set(&ranges_any(src))?;
    let destination = uid_set(&ranges_any(dst))?;
    Some(Code::CopyUid {
        uid_validity: NonZeroU32::new(uidvalidity)?,
        source,
        destination,
    })
}

fn uid_set(ranges: &[(u32, u32)]) -> Option<UidSet> {
    let v: Vec<UidElement> = ranges
        .iter()
        .filter_map(|&(a, b)| {
            let (a, b) = (NonZeroU32::new(a)?, NonZeroU32::new(b)?);
            Some(if a == b {
                UidElement::Single(a)
            } else {
                UidElement::Range(a, b)
            })
        })
        .collect();
    Vec1::try_from(v).ok().map(UidSet)
}

/// Ranges of numbers in the given order (COPYUID pairs source and destination by position,
/// so the order must be kept).
fn ranges_any(nums: &[u32]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &n in nums {
        match out.last_mut() {
            Some((lo, hi)) if *lo <= *hi && hi.checked_add(1) == Some(n) => *hi = n,
            _ => out.push((n, n)),
        }
    }
    out
}

/// The `MODIFIED` code for a non-empty set.
pub fn modified(nums: &[u32]) -> Option<Code<'static>> {
    sequence_set(&ranges(nums)).map(Code::Modified)
}

pub fn uid_next(n: u32) -> Option<Code<'static>> {
    NonZeroU32::new(n).map(Code::UidNext)
}

pub fn uid_validity(n: u32) -> Option<Code<'static>> {
    NonZeroU32::new(n).map(Code::UidValidity)
}

pub fn unseen(n: u32) -> Option<Code<'static>> {
    NonZeroU32::new(n).map(Code::Unseen)
}

pub fn highest_modseq(n: u64) -> Option<Code<'static>> {
    NonZeroU64::new(n).map(Code::HighestModSeq)
}

// ------------------------------------------------------------------ FETCH (own, hot path)

/// `* seq FETCH (FLAGS (...) [UID u] [MODSEQ (m)])` written straight into `out`: the line
/// every STORE and every flag change announces, and the bulk of FETCH 1:* (FLAGS). imap-codec
/// encodes the same bytes (see `fetch_flags_codec` and the tests) at several times the
/// cost; see the module header.
pub fn fetch_flags(
    out: &mut Vec<u8>,
    seq: u32,
    flags: Option<(&store_client::Flags, bool)>,
    uid: Option<u32>,
    modseq: Option<u64>,
) {
    out.extend_from_slice(b"* ");
    push_u64(out, seq.into());
    out.extend_from_slice(b" FETCH (");
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b' ');
        }
    };
    if let Some((f, recent)) = flags {
        sep(out);
        out.extend_from_slice(b"FLAGS ");
        flag_fetch_list(out, f, recent);
    }
    if let Some(u) = uid {
        sep(out);
        out.extend_from_slice(b"UID ");
        push_u64(out, u.into());
    }
    if let Some(m) = modseq {
        sep(out);
        out.extend_from_slice(b"MODSEQ (");
        push_u64(out, m);
        out.push(b')');
    }
    out.extend_from_slice(b")\r\n");
}

/// `(\Seen \Answered ... keyword... [\Recent])` without allocating.
pub fn flag_fetch_list(out: &mut Vec<u8>, f: &store_client::Flags, recent: bool) {
    use store_client::Flag;
    out.push(b'(');
    let mut first = true;
    for (flag, name) in [
        (Flag::Seen, &b"\\Seen"[..]),
        (Flag::Answered, b"\\Answered"),
        (Flag::Flagged, b"\\Flagged"),
        (Flag::Deleted, b"\\Deleted"),
        (Flag::Draft, b"\\Draft"),
    ] {
        if f.contains(&flag) {
            if !std::mem::take(&mut first) {
                out.push(b' ');
            }
            out.extend_from_slice(name);
        }
    }
    for k in f.keywords() {
        if !std::mem::take(&mut first) {
            out.push(b' ');
        }
        out.extend_from_slice(k.as_bytes());
    }
    if recent {
        if !first {
            out.push(b' ');
        }
        out.extend_from_slice(b"\\Recent");
    }
    out.push(b')');
}

/// A decimal number without going through `fmt`.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// The same FETCH line through imap-codec: for the benchmark and the equivalence tests.
pub fn fetch_flags_codec(
    out: &mut Vec<u8>,
    seq: u32,
    flags: Option<(&store_client::Flags, bool)>,
    uid: Option<u32>,
    modseq: Option<u64>,
) {
    let Some(seq) = NonZeroU32::new(seq) else {
        return;
    };
    let mut items = Vec::with_capacity(3);
    if let Some((f, recent)) = flags {
        let mut v: Vec<FlagFetch<'_>> = Vec::new();
        for fl in f.to_vec() {
            let x = match fl {
                store_client::Flag::Keyword(k) => Atom::try_from(k.as_str().to_owned())
                    .ok()
                    .map(ImapFlag::keyword),
                sys => match sys {
                    store_client::Flag::Seen => Some(ImapFlag::Seen),
                    store_client::Flag::Answered => Some(ImapFlag::Answered),
                    store_client::Flag::Flagged => Some(ImapFlag::Flagged),
                    store_client::Flag::Deleted => Some(ImapFlag::Deleted),
                    _ => Some(ImapFlag::Draft),
                },
            };
            if let Some(x) = x {
                v.push(FlagFetch::Flag(x));
            }
        }
        if recent {
            v.push(FlagFetch::Recent);
        }
        items.push(imap_codec::imap_types::fetch::MessageDataItem::Flags(v));
    }
    if let Some(u) = uid.and_then(NonZeroU32::new) {
        items.push(imap_codec::imap_types::fetch::MessageDataItem::Uid(u));
    }
    if let Some(m) = modseq.and_then(NonZeroU64::new) {
        items.push(imap_codec::imap_types::fetch::MessageDataItem::ModSeq(m));
    }
    if let Ok(items) = Vec1::try_from(items) {
        respond(out, &Response::Data(Data::Fetch { seq, items }));
    }
}

/// Our cached ENVELOPE as imap-types' `Envelope` (borrowing its strings).
pub fn envelope(e: &message_structure::Envelope) -> ImapEnvelope<'_> {
    fn ns(s: Option<&[u8]>) -> NString<'_> {
        s.and_then(|s| NString::try_from(s).ok())
            .unwrap_or(NString(None))
    }
    fn addrs(list: &[message_structure::Address]) -> Vec<ImapAddress<'_>> {
        list.iter()
            .map(|a| ImapAddress {
                name: ns(a.name.as_deref()),
                adl: ns(a.adl.as_deref()),
                mailbox: ns(a.mailbox.as_deref()),
                host: ns(a.host.as_deref()),
            })
            .collect()
    }
    ImapEnvelope {
        date: ns(e.date.as_deref()),
        subject: ns(e.subject.as_deref()),
        from: addrs(&e.from),
        sender: addrs(&e.sender),
        reply_to: addrs(&e.reply_to),
        to: addrs(&e.to),
        cc: addrs(&e.cc),
        bcc: addrs(&e.bcc),
        in_reply_to: ns(e.in_reply_to.as_deref()),
        message_id: ns(e.message_id.as_deref()),
    }
}

/// `* seq FETCH (UID u ENVELOPE (...))` through imap-codec: for the benchmark and tests.
pub fn fetch_envelope_codec(
    out: &mut Vec<u8>,
    seq: u32,
    uid: u32,
    e: &message_structure::Envelope,
) {
    use imap_codec::imap_types::fetch::MessageDataItem;
    let (Some(seq), Some(uid)) = (NonZeroU32::new(seq), NonZeroU32::new(uid)) else {
        return;
    };
    let items = vec![
        MessageDataItem::Uid(uid),
        MessageDataItem::Envelope(envelope(e)),
    ];
    if let Ok(items) = Vec1::try_from(items) {
        respond(out, &Response::Data(Data::Fetch { seq, items }));
    }
}

/// A code imap-types has no variant for, built from our own text (numbers and constant
/// names, always a valid `atom [SP text]`).
pub fn other_code(s: String) -> Code<'static> {
    Code::Other(CodeOther::unvalidated(s.into_bytes()))
}

/// The empty continuation AUTHENTICATE sends for its response: `+ ` (RFC 9051 6.2.2).
pub fn continuation_base64(out: &mut Vec<u8>) {
    let c = CommandContinuationRequest::base64(&b""[..]);
    respond(out, &Response::CommandContinuationRequest(c));
}

/// `* seq FETCH (UID u FLAGS (...) MODSEQ (m))`, the QRESYNC SELECT's changed messages.
pub fn fetch_uid_flags_modseq(
    out: &mut Vec<u8>,
    seq: u32,
    uid: u32,
    flags: (&store_client::Flags, bool),
    modseq: u64,
) {
    out.extend_from_slice(b"* ");
    push_u64(out, seq.into());
    out.extend_from_slice(b" FETCH (UID ");
    push_u64(out, uid.into());
    out.extend_from_slice(b" FLAGS ");
    flag_fetch_list(out, flags.0, flags.1);
    out.extend_from_slice(b" MODSEQ (");
    push_u64(out, modseq);
    out.extend_from_slice(b"))\r\n");
}

/// A code with arguments from our own text when it is a valid `atom [SP text]` (a BADURL
/// with the client's URL in it may not be).
pub fn code_from_text(s: &str) -> Option<Code<'static>> {
    match code_text(s)? {
        Code::Other(_) => Some(other_code(s.to_owned())),
        // A known name without arguments: look it up again for the 'static variant.
        _ => KNOWN
            .iter()
            .find(|k| k.eq_ignore_ascii_case(s))
            .map(|k| named(k)),
    }
}

/// `* THREAD (...)...` (RFC 5256) from our thread trees; `map` turns a UID into the number
/// the client asked for (a message expunged meanwhile maps to 0 and is left out, its
/// place kept by its children).
pub fn thread(out: &mut Vec<u8>, threads: &[crate::order::Node], map: &dyn Fn(u32) -> u32) {
    let v: Vec<Thread> = threads.iter().filter_map(|t| thread_of(t, map)).collect();
    respond(out, &Response::Data(Data::Thread(v)));
}

fn thread_of(n: &crate::order::Node, map: &dyn Fn(u32) -> u32) -> Option<Thread> {
    // A chain of single children is the thread's prefix; the node where it branches
    // gives the answers.
    let mut prefix = Vec::new();
    let mut cur = n;
    loop {
        if let Some(u) = cur.uid.and_then(|u| NonZeroU32::new(map(u))) {
            prefix.push(u);
        }
        match cur.children.as_slice() {
            [only] => cur = only,
            _ => break,
        }
    }
    let mut answers: Vec<Thread> = cur
        .children
        .iter()
        .filter_map(|c| thread_of(c, map))
        .collect();
    let answers = if answers.len() == 1 {
        // Left with one branch (the others were expunged): it continues the chain.
        match answers.pop() {
            Some(Thread::Members {
                prefix: more,
                answers,
            }) => {
                prefix.extend(more);
                answers
            }
            Some(Thread::Nested { answers }) => Some(answers),
            None => None,
        }
    } else {
        Vec2::try_from(answers).ok()
    };
    match Vec1::try_from(prefix) {
        Ok(prefix) => Some(Thread::Members { prefix, answers }),
        Err(_) => answers.map(|answers| Thread::Nested { answers }),
    }
}

/// Our cached MIME tree as imap-types' `BodyStructure` (BODYSTRUCTURE with `extended`,
/// else BODY); `None` when a value does not fit it (a size over 4 GB).
pub fn body_structure(
    p: &message_structure::BodyPart,
    extended: bool,
) -> Option<BodyStructure<'_>> {
    use imap_codec::imap_types::body::{
        BasicFields, Body, Disposition, Language, Location, MultiPartExtensionData,
        SinglePartExtensionData, SpecificFields,
    };
    fn is(s: &[u8]) -> Option<IString<'_>> {
        IString::try_from(s).ok()
    }
    fn ns(s: Option<&[u8]>) -> Option<NString<'_>> {
        match s {
            Some(s) => NString::try_from(s).ok(),
            None => Some(NString(None)),
        }
    }
    fn params(p: &[(Vec<u8>, Vec<u8>)]) -> Option<Vec<(IString<'_>, IString<'_>)>> {
        p.iter().map(|(k, v)| Some((is(k)?, is(v)?))).collect()
    }
    fn tail(p: &message_structure::BodyPart) -> Option<Disposition<'_>> {
        let disposition = match &p.disposition {
            Some(d) => Some((is(&d.kind)?, params(&d.params)?)),
            None => None,
        };
        let language = p
            .language
            .iter()
            .map(|l| is(l))
            .collect::<Option<Vec<_>>>()?;
        Some(Disposition {
            disposition,
            tail: Some(Language {
                language,
                tail: Some(Location {
                    location: ns(p.location.as_deref())?,
                    extensions: Vec::new(),
                }),
            }),
        })
    }
    use message_structure::PartContent;
    if let PartContent::Multipart { children } = &p.content {
        let bodies = children
            .iter()
            .map(|c| body_structure(c, extended))
            .collect::<Option<Vec<_>>>()?;
        let extension_data = if extended {
            Some(MultiPartExtensionData {
                parameter_list: params(&p.params)?,
                tail: Some(tail(p)?),
            })
        } else {
            None
        };
        return Some(BodyStructure::Multi {
            bodies: Vec1::try_from(bodies).ok()?,
            subtype: is(&p.media_subtype)?,
            extension_data,
        });
    }
    let basic = BasicFields {
        parameter_list: params(&p.params)?,
        id: ns(p.content_id.as_deref())?,
        description: ns(p.description.as_deref())?,
        content_transfer_encoding: is(&p.encoding)?,
        size: u32::try_from(p.size).ok()?,
    };
    let specific = match &p.content {
        PartContent::Text { lines } => SpecificFields::Text {
            subtype: is(&p.media_subtype)?,
            number_of_lines: u32::try_from(*lines).ok()?,
        },
        PartContent::Message {
            envelope: env,
            body,
            lines,
        } => SpecificFields::Message {
            envelope: Box::new(envelope(env)),
            body_structure: Box::new(body_structure(body, extended)?),
            number_of_lines: u32::try_from(*lines).ok()?,
        },
        _ => SpecificFields::Basic {
            r#type: is(&p.media_type)?,
            subtype: is(&p.media_subtype)?,
        },
    };
    let extension_data = if extended {
        Some(SinglePartExtensionData {
            md5: ns(p.md5.as_deref())?,
            tail: Some(tail(p)?),
        })
    } else {
        None
    };
    Some(BodyStructure::Single {
        body: Body { basic, specific },
        extension_data,
    })
}

/// `* seq FETCH (BODYSTRUCTURE (...))` through imap-codec: for the benchmark and tests.
pub fn fetch_body_structure_codec(out: &mut Vec<u8>, seq: u32, p: &message_structure::BodyPart) {
    use imap_codec::imap_types::fetch::MessageDataItem;
    let (Some(seq), Some(bs)) = (NonZeroU32::new(seq), body_structure(p, true)) else {
        return;
    };
    let items = Vec1::from(MessageDataItem::BodyStructure(bs));
    respond(out, &Response::Data(Data::Fetch { seq, items }));
}

#[cfg(test)]
mod tests {
    //! Equivalence: for every kind of response the bytes imap-codec writes are what RFC 9051
    //! (and the extension RFCs) require, and where our own encoder wrote them before, the
    //! same bytes, except where noted (capability atoms in upper case, astrings as atoms):
    //! still valid, since IMAP atoms are case-insensitive (RFC 9051 section 4) and an astring
    //! may be an atom.
    use super::*;
    use message_structure::{Address, Envelope};
    use store_client::{Flag, Flags, Keyword};

    fn with(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut v = Vec::new();
        f(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn status_responses_with_codes() {
        let junk = ["$Junk".to_string()];
        let cases: Vec<(Option<&str>, Reply<'_>, &str)> = vec![
            (Some("a1"), Reply::ok("NOOP completed"), "a1 OK NOOP completed\r\n"),
            (Some("a2"), Reply::bad("no mailbox selected"), "a2 BAD no mailbox selected\r\n"),
            (None, Reply::ok("alert!").code("ALERT"), "* OK [ALERT] alert!\r\n"),
            (Some("t"), Reply::no("x").code("TRYCREATE"), "t NO [TRYCREATE] x\r\n"),
            (Some("t"), Reply::ok("x").code("READ-ONLY"), "t OK [READ-ONLY] x\r\n"),
            (Some("t"), Reply::ok("x").code("READ-WRITE"), "t OK [READ-WRITE] x\r\n"),
            (Some("t"), Reply::no("x").code("OVERQUOTA"), "t NO [OVERQUOTA] x\r\n"),
            (Some("t"), Reply::no("x").code("TOOBIG"), "t NO [TOOBIG] x\r\n"),
            (Some("t"), Reply::no("x").code("LIMIT"), "t NO [LIMIT] x\r\n"),
            (Some("t"), Reply::no("x").code("NONEXISTENT"), "t NO [NONEXISTENT] x\r\n"),
            (Some("t"), Reply::no("x").code("ALREADYEXISTS"), "t NO [ALREADYEXISTS] x\r\n"),
            (
                Some("t"),
                Reply::no("x").code("AUTHENTICATIONFAILED"),
                "t NO [AUTHENTICATIONFAILED] x\r\n",
            ),
            (Some("t"), Reply::no("x").code("UNAVAILABLE"), "t NO [UNAVAILABLE] x\r\n"),
            (Some("t"), Reply::no("x").code("CANNOT"), "t NO [CANNOT] x\r\n"),
            (Some("t"), Reply::no("x").code("SERVERBUG"), "t NO [SERVERBUG] x\r\n"),
            (Some("t"), Reply::no("x").code("UNKNOWN-CTE"), "t NO [UNKNOWN-CTE] x\r\n"),
            (None, Reply::ok("x").code("CLOSED"), "* OK [CLOSED] x\r\n"),
            (None, Reply::ok("x").code("NOMODSEQ"), "* OK [NOMODSEQ] x\r\n"),
            (
                Some("t"),
                Reply::ok("APPEND completed").with(append_uid(38505, 3955).unwrap()),
                "t OK [APPENDUID 38505 3955] APPEND completed\r\n",
            ),
            (
                Some("t"),
                Reply::ok("COPY completed").with(copy_uid(38505, &[304, 319, 320], &[3956, 3957, 3958]).unwrap()),
                "t OK [COPYUID 38505 304,319:320 3956:3958] COPY completed\r\n",
            ),
            (
                None,
                Reply::ok("x").with(uid_next(4392).unwrap()),
                "* OK [UIDNEXT 4392] x\r\n",
            ),
            (
                None,
                Reply::ok("x").with(uid_validity(3857529045).unwrap()),
                "* OK [UIDVALIDITY 3857529045] x\r\n",
            ),
            (
                None,
                Reply::ok("x").with(highest_modseq(715194045007).unwrap()),
                "* OK [HIGHESTMODSEQ 715194045007] x\r\n",
            ),
            (
                Some("t"),
                Reply::ok("x").with(modified(&[7, 9, 10, 11]).unwrap()),
                "t OK [MODIFIED 7,9:11] x\r\n",
            ),
            (
                None,
                Reply::ok("flags permitted").with(permanent_flags(&junk, false)),
                "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Junk \\*)] flags permitted\r\n",
            ),
            (
                None,
                Reply::ok("read-only mailbox").with(permanent_flags(&[], true)),
                "* OK [PERMANENTFLAGS ()] read-only mailbox\r\n",
            ),
            (
                None,
                Reply::ok("mailbox id").with(other_code("MAILBOXID (F0000002a)".into())),
                "* OK [MAILBOXID (F0000002a)] mailbox id\r\n",
            ),
        ];
        for (tag, r, want) in cases {
            assert_eq!(with(|o| status(o, tag, &r)), want);
        }
    }

    #[test]
    fn text_is_never_split_and_codes_from_text() {
        // An error message with CR/LF (a client-supplied name in it) stays on one line.
        let r = Reply::no("no such mailbox: a\r\n* BYE injected");
        assert_eq!(
            with(|o| status(o, Some("t"), &r)),
            "t NO no such mailbox: a  * BYE injected\r\n"
        );
        assert_eq!(
            with(|o| status(o, Some("t"), &Reply::ok(""))),
            "t OK completed\r\n"
        );
        // Our grammar's errors carry their code in brackets.
        let r = Reply::from_text(Kind::No, "[BADCHARSET (UTF-8)] unsupported charset X");
        assert_eq!(
            with(|o| status(o, Some("s"), &r)),
            "s NO [BADCHARSET (UTF-8)] unsupported charset X\r\n"
        );
        let r = Reply::from_text(Kind::Bad, "[bad] code");
        assert_eq!(with(|o| status(o, Some("s"), &r)), "s BAD [bad] code\r\n");
        // A bracket that is no valid code stays text.
        let r = Reply::from_text(Kind::Bad, "[] empty");
        assert_eq!(with(|o| status(o, Some("s"), &r)), "s BAD [] empty\r\n");
        assert!(code_from_text("BADURL imap://x/INBOX;UID=1").is_some());
        assert!(code_from_text("BADURL a]b").is_none());
        // Non-ASCII text: imap-types' text is 7-bit.
        let r = Reply::no("Ordner „Entwürfe“ fehlt");
        assert_eq!(
            with(|o| status(o, Some("t"), &r)),
            "t NO Ordner ?Entw?rfe? fehlt\r\n"
        );
    }

    #[test]
    fn greeting_bye_continuation_capability() {
        let caps = "IMAP4rev1 IMAP4rev2 LITERAL- SASL-IR ID ENABLE IDLE STARTTLS LOGINDISABLED";
        assert_eq!(
            with(|o| greeting(o, caps, "ready")),
            "* OK [CAPABILITY IMAP4REV1 IMAP4rev2 LITERAL- SASL-IR ID ENABLE IDLE STARTTLS LOGINDISABLED] ready\r\n"
        );
        assert_eq!(
            with(|o| capability(o, "IMAP4rev1 AUTH=PLAIN APPENDLIMIT=52428800 QUOTA=RES-STORAGE RIGHTS=texk COMPRESS=DEFLATE UTF8=ACCEPT")),
            "* CAPABILITY IMAP4REV1 AUTH=PLAIN APPENDLIMIT=52428800 QUOTA=RES-STORAGE RIGHTS=texk COMPRESS=DEFLATE UTF8=ACCEPT\r\n"
        );
        assert_eq!(
            with(|o| bye(o, None, "logging out")),
            "* BYE logging out\r\n"
        );
        assert_eq!(
            with(|o| bye(o, Some("NONEXISTENT"), "gone")),
            "* BYE [NONEXISTENT] gone\r\n"
        );
        assert_eq!(with(|o| continuation(o, "idling")), "+ idling\r\n");
        assert_eq!(with(continuation_base64), "+ \r\n");
        assert_eq!(
            with(|o| enabled(o, &["CONDSTORE".into(), "UTF8=ACCEPT".into()])),
            "* ENABLED CONDSTORE UTF8=ACCEPT\r\n"
        );
        assert_eq!(with(|o| enabled(o, &[])), "* ENABLED\r\n");
    }

    #[test]
    fn mailbox_data() {
        assert_eq!(
            with(|o| flags(o, &["$Forwarded".into()])),
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded)\r\n"
        );
        assert_eq!(with(|o| exists(o, 0)), "* 0 EXISTS\r\n");
        assert_eq!(with(|o| recent(o, 3)), "* 3 RECENT\r\n");
        assert_eq!(with(|o| expunge(o, 7)), "* 7 EXPUNGE\r\n");
        assert_eq!(with(|o| expunge(o, 0)), "");
        assert_eq!(
            with(|o| vanished(o, true, &[(1, 3), (7, 7)])),
            "* VANISHED (EARLIER) 1:3,7\r\n"
        );
        assert_eq!(with(|o| vanished(o, false, &[(9, 9)])), "* VANISHED 9\r\n");
        assert_eq!(with(|o| vanished(o, false, &[])), "");
        assert_eq!(with(|o| search(o, &[2, 5], None)), "* SEARCH 2 5\r\n");
        assert_eq!(with(|o| search(o, &[], None)), "* SEARCH\r\n");
        assert_eq!(
            with(|o| search(o, &[2], Some(917162500))),
            "* SEARCH 2 (MODSEQ 917162500)\r\n"
        );
        assert_eq!(with(|o| sort(o, &[5, 2, 9])), "* SORT 5 2 9\r\n");
        assert_eq!(with(|o| sort(o, &[])), "* SORT\r\n");
        assert_eq!(ranges(&[1, 2, 3, 5, 7, 8]), vec![(1, 3), (5, 5), (7, 8)]);
    }

    #[test]
    fn list_status_namespace_id_quota() {
        let attrs = ["\\HasNoChildren".to_string(), "\\Sent".to_string()];
        assert_eq!(
            with(|o| list(o, &attrs, "Sent", false)),
            "* LIST (\\HasNoChildren \\Sent) \"/\" Sent\r\n"
        );
        // Names that are no atom: quoted, with escapes.
        assert_eq!(
            with(|o| list(o, &[], "Sent Items", true)),
            "* LSUB () \"/\" \"Sent Items\"\r\n"
        );
        assert_eq!(
            with(|o| list(o, &[], "a\"b\\c", false)),
            "* LIST () \"/\" \"a\\\"b\\\\c\"\r\n"
        );
        assert_eq!(
            with(|o| list(o, &["\\Noselect".into()], "", false)),
            "* LIST (\\Noselect) \"/\" \"\"\r\n"
        );
        assert_eq!(
            with(|o| list(o, &[], "inbox", false)),
            "* LIST () \"/\" INBOX\r\n"
        );
        // UTF8=ACCEPT (RFC 6855): UTF-8 names as quoted strings, as ours wrote them.
        assert_eq!(
            with(|o| list(o, &[], "Entwürfe/Größe", false)),
            "* LIST () \"/\" \"Entwürfe/Größe\"\r\n"
        );
        // A name no quoted string can carry becomes a literal.
        assert_eq!(
            with(|o| list(o, &[], "a\r\nb", false)),
            "* LIST () \"/\" {4}\r\na\r\nb\r\n"
        );
        let v = [
            StatusValue::Messages(231),
            StatusValue::Recent(0),
            StatusValue::UidNext(44292),
            StatusValue::UidValidity(1),
            StatusValue::Unseen(3),
            StatusValue::Deleted(1),
            StatusValue::Size(1024),
            StatusValue::HighestModSeq(77),
        ];
        let mut o = Vec::new();
        assert!(status_data(&mut o, "blurdybloop", &v));
        assert_eq!(
            String::from_utf8(o).unwrap(),
            "* STATUS blurdybloop (MESSAGES 231 RECENT 0 UIDNEXT 44292 UIDVALIDITY 1 UNSEEN 3 DELETED 1 SIZE 1024 HIGHESTMODSEQ 77)\r\n"
        );
        let mut o = Vec::new();
        assert!(!status_data(&mut o, "x", &[StatusValue::UidNext(0)]));
        assert!(o.is_empty());
        assert_eq!(
            with(|o| namespace(o, "Other Users")),
            "* NAMESPACE ((\"\" \"/\")) ((\"Other Users\" \"/\")) NIL\r\n"
        );
        assert_eq!(
            with(|o| id(o, &[("name", "msgsuite-imapd"), ("version", "0.1.0")])),
            "* ID (\"name\" \"msgsuite-imapd\" \"version\" \"0.1.0\")\r\n"
        );
        assert_eq!(
            with(|o| quota(o, "user/joe", Some((10, 10240)), Some((7, 1000)))),
            "* QUOTA user/joe (STORAGE 10 10240 MESSAGE 7 1000)\r\n"
        );
        assert_eq!(with(|o| quota(o, "r", None, None)), "* QUOTA \"r\" ()\r\n");
        assert_eq!(
            with(|o| quota_root(o, "INBOX", &["user/joe"])),
            "* QUOTAROOT INBOX user/joe\r\n"
        );
        assert_eq!(
            with(|o| quota_root(o, "INBOX", &[])),
            "* QUOTAROOT INBOX\r\n"
        );
    }

    type FetchCase<'a> = (u32, Option<(&'a Flags, bool)>, Option<u32>, Option<u64>);

    fn sample_flags() -> Flags {
        Flags::from_list(&[
            Flag::Seen,
            Flag::Deleted,
            Flag::Keyword(Keyword::new("$Forwarded").unwrap()),
        ])
    }

    #[test]
    fn fetch_flags_same_bytes_as_imap_codec() {
        let f = sample_flags();
        let empty = Flags::new();
        let cases: Vec<FetchCase<'_>> = vec![
            (1, Some((&f, false)), None, None),
            (12, Some((&f, true)), Some(4827313), Some(12121231000)),
            (3, Some((&empty, false)), Some(9), None),
            (4, Some((&empty, true)), None, Some(5)),
            (5, None, Some(17), Some(3)),
        ];
        for (seq, flags, uid, modseq) in cases {
            let ours = with(|o| fetch_flags(o, seq, flags, uid, modseq));
            let codec = with(|o| fetch_flags_codec(o, seq, flags, uid, modseq));
            assert_eq!(ours, codec);
        }
        assert_eq!(
            with(|o| fetch_flags(o, 12, Some((&f, true)), Some(48), Some(3))),
            "* 12 FETCH (FLAGS (\\Seen \\Deleted $Forwarded \\Recent) UID 48 MODSEQ (3))\r\n"
        );
        assert_eq!(
            with(|o| fetch_uid_flags_modseq(o, 2, 8, (&f, false), 9)),
            "* 2 FETCH (UID 8 FLAGS (\\Seen \\Deleted $Forwarded) MODSEQ (9))\r\n"
        );
    }

    fn addr(name: Option<&str>, mailbox: Option<&str>, host: Option<&str>) -> Address {
        Address {
            name: name.map(|s| s.as_bytes().to_vec()),
            adl: None,
            mailbox: mailbox.map(|s| s.as_bytes().to_vec()),
            host: host.map(|s| s.as_bytes().to_vec()),
        }
    }

    #[test]
    fn envelope_same_bytes_as_ours() {
        // Groups (RFC 9051 7.5.2: a NIL host starts a group, a NIL mailbox ends it), NIL
        // fields, empty lists, quoted strings with escapes, and 8-bit text as a literal.
        let e = Envelope {
            date: Some(b"Wed, 17 Jul 1996 02:23:25 -0700 (PDT)".to_vec()),
            subject: Some("Grüße \"quoted\" \\ back".as_bytes().to_vec()),
            from: vec![addr(
                Some("Terry \"T\" Gray"),
                Some("gray"),
                Some("cac.washington.edu"),
            )],
            sender: vec![],
            reply_to: vec![addr(None, Some("gray"), Some("cac.washington.edu"))],
            to: vec![
                addr(None, Some("undisclosed-recipients"), None),
                addr(None, None, None),
                addr(None, Some("imap"), Some("cac.washington.edu")),
            ],
            cc: vec![],
            bcc: vec![],
            in_reply_to: None,
            message_id: Some(b"<B27397-0100000@cac.washington.edu>".to_vec()),
        };
        let mut ours = b"* 3 FETCH (UID 9 ENVELOPE ".to_vec();
        crate::encode::envelope(&mut ours, &e);
        ours.extend_from_slice(b")\r\n");
        let codec = with(|o| fetch_envelope_codec(o, 3, 9, &e));
        assert_eq!(String::from_utf8(ours).unwrap(), codec);
        assert!(codec.contains(")(NIL NIL NIL NIL)(NIL"), "{codec}");
        assert!(codec.contains("{23}\r\nGrüße"), "{codec}");
    }

    fn node(uid: Option<u32>, children: Vec<crate::order::Node>) -> crate::order::Node {
        crate::order::Node { uid, children }
    }

    #[test]
    fn thread_same_bytes_as_ours() {
        let leaf = |u| node(Some(u), vec![]);
        let forests = vec![
            // RFC 5256's example: (3 6 (4 23)(44 7 96)).
            vec![node(
                Some(3),
                vec![node(
                    Some(6),
                    vec![
                        node(Some(4), vec![leaf(23)]),
                        node(Some(44), vec![node(Some(7), vec![leaf(96)])]),
                    ],
                )],
            )],
            vec![
                node(Some(1), vec![node(Some(2), vec![leaf(3), leaf(4)])]),
                leaf(5),
            ],
            // Dummy parents: at the top, and in the middle of a chain.
            vec![node(None, vec![node(Some(3), vec![leaf(6)]), leaf(5)])],
            vec![node(Some(1), vec![node(None, vec![leaf(8), leaf(9)])])],
            vec![node(
                None,
                vec![node(None, vec![leaf(1), leaf(2)]), leaf(3)],
            )],
            vec![],
        ];
        let id = |u: u32| u;
        for f in &forests {
            let ours = format!("* THREAD {}", crate::order::format_threads(f, &id));
            let ours = format!("{}\r\n", ours.trim_end());
            assert_eq!(with(|o| thread(o, f, &id)), ours);
        }
        // A message expunged meanwhile (number 0) is left out; its children keep its place.
        let gone = |u: u32| if u == 6 { 0 } else { u };
        assert_eq!(
            with(|o| thread(o, &forests[0], &gone)),
            "* THREAD (3 (4 23)(44 7 96))\r\n"
        );
        let gone = |u: u32| if u == 4 || u == 23 { 0 } else { u };
        assert_eq!(
            with(|o| thread(o, &forests[0], &gone)),
            "* THREAD (3 6 44 7 96)\r\n"
        );
    }

    /// A nested multipart with extension data (disposition with parameters, language,
    /// location, MD5), an attached message, 8-bit parameter values and NIL fields.
    pub(crate) const NESTED: &[u8] = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: nested\r\n\
Message-ID: <n1@example.com>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"outer\"\r\nContent-Language: en, de\r\n\r\n\
--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n\
--inner\r\nContent-Type: text/plain; charset=utf-8; format=flowed\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\r\nhello =C3=A9\r\nsecond line\r\n\
--inner\r\nContent-Type: text/html; charset=\"us-ascii\"\r\nContent-ID: <h1@x>\r\n\
Content-Description: the \\\"html\\\" part\r\nContent-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\n\
Content-Location: http://example.com/a.html\r\n\r\n<p>hi</p>\r\n--inner--\r\n\
--outer\r\nContent-Type: application/pdf; name=\"r\xc3\xa9sum\xc3\xa9.pdf\"\r\n\
Content-Disposition: attachment; filename=\"cv.pdf\"; size=10\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n\
--outer\r\nContent-Type: message/rfc822\r\n\r\nFrom: c@example.com\r\nSubject: inner\r\n\r\nbody\r\n\
--outer--\r\n";

    #[test]
    fn body_structure_same_bytes_as_ours() {
        let st = message_structure::MessageStructure::parse(NESTED);
        for extended in [true, false] {
            let mut ours = b"* 1 FETCH (".to_vec();
            ours.extend_from_slice(if extended {
                b"BODYSTRUCTURE "
            } else {
                b"BODY "
            });
            crate::encode::body_structure(&mut ours, &st.body, extended);
            ours.extend_from_slice(b")\r\n");
            let bs = body_structure(&st.body, extended).unwrap();
            let item = if extended {
                imap_codec::imap_types::fetch::MessageDataItem::BodyStructure(bs)
            } else {
                imap_codec::imap_types::fetch::MessageDataItem::Body(bs)
            };
            let codec = with(|o| {
                respond(
                    o,
                    &Response::Data(Data::Fetch {
                        seq: NonZeroU32::MIN,
                        items: Vec1::from(item),
                    }),
                )
            });
            // imap-codec writes the media types it knows in upper case ("TEXT",
            // "MESSAGE" "RFC822"); MIME types are case-insensitive (RFC 2045 5.1), so both
            // are right: everything else is byte for byte the same.
            let ours = String::from_utf8_lossy(&ours)
                .replace("(\"text\" ", "(\"TEXT\" ")
                .replace("(\"message\" \"rfc822\" ", "(\"MESSAGE\" \"RFC822\" ");
            assert_eq!(ours, codec);
        }
    }
}
