//! Search primitives (IMAP SEARCH keys, JMAP filters): flags and sizes from the index, dates
//! from the index and the structure cache, header and body text from the message itself, each
//! read only when a key needs it.

use std::collections::HashSet;

use msgstore::{flag, MailboxName, Msg, Store};

use crate::types::{Flag, NumberSet};
use crate::{ClientError, MessageStructure, Result};

/// One search key. Dates are days since 1970-01-01 (IMAP compares dates without time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SearchKey {
    All,
    /// Sequence numbers of the session's view.
    Seq(NumberSet),
    Uid(NumberSet),
    Flag(Flag),
    NotFlag(Flag),
    Recent,
    New,
    Old,
    Before(i64),
    On(i64),
    Since(i64),
    SentBefore(i64),
    SentOn(i64),
    SentSince(i64),
    SaveDateBefore(i64),
    SaveDateOn(i64),
    SaveDateSince(i64),
    /// Internal date at most this many seconds ago (RFC 5032 YOUNGER).
    Younger(i64),
    Older(i64),
    Larger(u64),
    Smaller(u64),
    /// A header field containing a string (empty string: the field exists).
    Header(String, String),
    Body(String),
    Text(String),
    ModSeq(u64),
    Not(Box<SearchKey>),
    Or(Box<SearchKey>, Box<SearchKey>),
    And(Vec<SearchKey>),
}

impl SearchKey {
    fn needs_record(&self) -> bool {
        use SearchKey::*;
        match self {
            Before(_) | On(_) | Since(_) | Larger(_) | Smaller(_) | SaveDateBefore(_)
            | SaveDateOn(_) | SaveDateSince(_) | Younger(_) | Older(_) => true,
            Not(k) => k.needs_record(),
            Or(a, b) => a.needs_record() || b.needs_record(),
            And(v) => v.iter().any(SearchKey::needs_record),
            _ => false,
        }
    }
}

fn day(ts: i64) -> i64 {
    ts.div_euclid(86_400)
}

fn lower(s: &str) -> String {
    s.to_lowercase()
}

/// Per-message lazily loaded data.
struct Ctx<'a> {
    store: &'a Store,
    name: &'a MailboxName,
    msg: Msg,
    seq: u32,
    record: Option<msgstore::index::Record>,
    structure: Option<MessageStructure>,
    raw: Option<Vec<u8>>,
    now: i64,
    keywords: &'a [String],
    recent: &'a HashSet<u32>,
}

impl Ctx<'_> {
    fn structure(&mut self) -> Result<&MessageStructure> {
        if self.structure.is_none() {
            self.structure = Some(self.store.structure(self.name, self.msg.uid)?);
        }
        Ok(self.structure.as_ref().expect("just set"))
    }
    fn raw(&mut self) -> Result<&[u8]> {
        if self.raw.is_none() {
            self.raw = Some(self.store.read_message(self.name, self.msg.uid)?);
        }
        Ok(self.raw.as_deref().unwrap_or(&[]))
    }
    fn has_flag(&self, f: &Flag) -> bool {
        use msgstore::flag::*;
        let bit = match f {
            Flag::Seen => SEEN,
            Flag::Answered => ANSWERED,
            Flag::Flagged => FLAGGED,
            Flag::Deleted => DELETED,
            Flag::Draft => DRAFT,
            Flag::Keyword(k) => {
                return self
                    .keywords
                    .iter()
                    .position(|n| n.eq_ignore_ascii_case(k.as_str()))
                    .is_some_and(|i| self.msg.keywords & (1u128 << i) != 0)
            }
        };
        self.msg.flags & bit != 0
    }

    fn eval(&mut self, key: &SearchKey) -> Result<bool> {
        use SearchKey::*;
        let rec = self.record;
        Ok(match key {
            All => true,
            Seq(set) => set.contains(self.seq),
            Uid(set) => set.contains(self.msg.uid),
            Flag(f) => self.has_flag(f),
            NotFlag(f) => !self.has_flag(f),
            Recent => self.recent.contains(&self.msg.uid),
            New => self.recent.contains(&self.msg.uid) && self.msg.flags & flag::SEEN == 0,
            Old => !self.recent.contains(&self.msg.uid),
            Before(d) => rec.is_some_and(|x| day(x.internal_date) < *d),
            On(d) => rec.is_some_and(|x| day(x.internal_date) == *d),
            Since(d) => rec.is_some_and(|x| day(x.internal_date) >= *d),
            SaveDateBefore(d) => rec.is_some_and(|x| day(x.save_date) < *d),
            SaveDateOn(d) => rec.is_some_and(|x| day(x.save_date) == *d),
            SaveDateSince(d) => rec.is_some_and(|x| day(x.save_date) >= *d),
            Younger(s) => rec.is_some_and(|x| self.now - x.internal_date <= *s),
            Older(s) => rec.is_some_and(|x| self.now - x.internal_date > *s),
            Larger(n) => rec.is_some_and(|x| x.size > *n),
            Smaller(n) => rec.is_some_and(|x| x.size < *n),
            SentBefore(d) | SentOn(d) | SentSince(d) => {
                let sent = self.structure()?.date_parsed.map(day);
                match (key, sent) {
                    (_, None) => false,
                    (SentBefore(_), Some(s)) => s < *d,
                    (SentOn(_), Some(s)) => s == *d,
                    (_, Some(s)) => s >= *d,
                }
            }
            Header(field, value) => {
                let raw = self.raw()?;
                header_contains(raw, field, value)
            }
            Body(text) => {
                let raw = self.raw()?;
                body_contains(raw, text)
            }
            Text(text) => {
                let raw = self.raw()?;
                let hl = header_len(raw);
                contains_ci(&String::from_utf8_lossy(&raw[..hl]), text) || body_contains(raw, text)
            }
            ModSeq(m) => self.msg.modseq >= *m,
            Not(k) => !self.eval(k)?,
            Or(a, b) => self.eval(a)? || self.eval(b)?,
            And(v) => {
                for k in v {
                    if !self.eval(k)? {
                        return Ok(false);
                    }
                }
                true
            }
        })
    }
}

fn contains_ci(hay: &str, needle: &str) -> bool {
    needle.is_empty() || lower(hay).contains(&lower(needle))
}

fn header_len(raw: &[u8]) -> usize {
    raw.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|p| p + 2))
        .unwrap_or(raw.len())
}

/// RFC 3501 HEADER: a field named `field` whose value (raw or RFC 2047 decoded) contains `value`.
fn header_contains(raw: &[u8], field: &str, value: &str) -> bool {
    let Some(msg) = mail_parser::MessageParser::default().parse_headers(raw) else {
        return false;
    };
    for h in msg.headers() {
        if !h.name().eq_ignore_ascii_case(field) {
            continue;
        }
        if value.is_empty() {
            return true;
        }
        let rawv = String::from_utf8_lossy(
            &raw[h.offset_start() as usize..h.offset_end().min(raw.len() as u32) as usize],
        );
        if contains_ci(&rawv.replace("\r\n", ""), value) {
            return true;
        }
        let decoded = match h.value() {
            mail_parser::HeaderValue::Text(t) => t.to_string(),
            mail_parser::HeaderValue::TextList(l) => l.join(" "),
            mail_parser::HeaderValue::Address(a) => a
                .iter()
                .map(|x| {
                    format!(
                        "{} <{}>",
                        x.name().unwrap_or_default(),
                        x.address().unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
            _ => String::new(),
        };
        if contains_ci(&decoded, value) {
            return true;
        }
    }
    false
}

/// BODY: the decoded text of the message's text parts, or its raw body.
fn body_contains(raw: &[u8], text: &str) -> bool {
    if let Some(msg) = mail_parser::MessageParser::default().parse(raw) {
        for i in 0..msg.text_body.len() {
            if let Some(t) = msg.body_text(i) {
                if contains_ci(&t, text) {
                    return true;
                }
            }
        }
        for i in 0..msg.html_body.len() {
            if let Some(t) = msg.body_html(i) {
                if contains_ci(&t, text) {
                    return true;
                }
            }
        }
    }
    let hl = header_len(raw);
    contains_ci(&String::from_utf8_lossy(&raw[hl..]), text)
}

pub(crate) fn run(
    store: &Store,
    name: &MailboxName,
    key: &SearchKey,
    seqs: &[u32],
    recent: &HashSet<u32>,
) -> Result<Vec<u32>> {
    let (msgs, keywords) = store
        .with_state(name, |s| {
            Ok((s.live().copied().collect::<Vec<Msg>>(), s.keywords.clone()))
        })
        .map_err(ClientError::from)?;
    let records = if key.needs_record() && !msgs.is_empty() {
        // One read of every record, mapped by UID.
        let all = store.with_state(name, |s| s.records(0, s.msgs.len(), name.as_str()))?;
        Some(
            all.into_iter()
                .filter(|r| !r.is_expunged())
                .map(|r| (r.uid, r))
                .collect::<std::collections::HashMap<_, _>>(),
        )
    } else {
        None
    };
    let now = msgstore::message::now_secs();
    let mut out = Vec::new();
    for m in msgs {
        // Sequence numbers are the session's: messages it does not know yet do not match.
        let Ok(pos) = seqs.binary_search(&m.uid) else {
            continue;
        };
        let mut ctx = Ctx {
            store,
            name,
            msg: m,
            seq: pos as u32 + 1,
            record: records.as_ref().and_then(|r| r.get(&m.uid).copied()),
            structure: None,
            raw: None,
            now,
            keywords: &keywords,
            recent,
        };
        match ctx.eval(key) {
            Ok(true) => out.push(m.uid),
            Ok(false) => {}
            Err(ClientError::NoSuchMessage(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}
