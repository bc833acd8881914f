//! imap-codec as the command parser wherever it covers the grammar (issue #4).
//!
//! [`parse`] gets the exact bytes the session driver collected for one command (its lines,
//! every literal's bytes in place after `{n}` / `{n+}` / `~{n}`). It first asks imap-codec's
//! `CommandCodec`; when that decodes the whole input and every part of the result converts
//! into our [`Command`] without losing anything we act on, that is the answer. Otherwise our
//! own grammar (`parse::parse_own` with `ext/`) reads the command, so the choice depends
//! only on the bytes and is the same every time.
//!
//! Which parser reads what:
//! - imap-codec: CAPABILITY, NOOP, LOGOUT, STARTTLS, LOGIN, AUTHENTICATE (with SASL-IR), ENABLE,
//!   ID, NAMESPACE, SELECT/EXAMINE (with CONDSTORE and QRESYNC parameters), CREATE without
//!   USE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST with one reference and one pattern
//!   and no options, LSUB, STATUS (incl. SIZE and HIGHESTMODSEQ), APPEND of one message
//!   (literal or literal8), CHECK, CLOSE, UNSELECT, EXPUNGE, UID EXPUNGE, [UID] SEARCH
//!   (RFC 3501 keys and MODSEQ), [UID] FETCH (RFC 3501 items, BINARY, MODSEQ, CHANGEDSINCE,
//!   VANISHED), [UID] STORE (with UNCHANGEDSINCE), [UID] COPY/MOVE, IDLE, COMPRESS,
//!   GETQUOTA, GETQUOTAROOT, SETQUOTA, [UID] SORT and [UID] THREAD without RETURN.
//! - our grammar, because imap-codec rejects them: SEARCH/SORT RETURN (ESEARCH), `$`
//!   (SEARCHRES), search keys YOUNGER/OLDER, SAVEDBEFORE/ON/SINCE, SAVEDATESUPPORTED,
//!   EMAILID, THREADID, LARGER/SMALLER above 2^32-1, search nesting deeper than imap-codec's
//!   9; LIST-EXTENDED and LIST-STATUS, CREATE (USE ...), the ACL commands, MULTIAPPEND,
//!   CATENATE, FETCH PREVIEW/EMAILID/THREADID/SAVEDATE, CHANGEDSINCE 0, literals holding
//!   NUL, unquoted 8-bit mailbox names (UTF8=ACCEPT), MAILBOXID/APPENDLIMIT in STATUS.
//! - our grammar, because converting would change the meaning: a SEARCH/SORT/THREAD charset
//!   other than UTF-8 or US-ASCII (ours answers BADCHARSET), VANISHED without UID and
//!   CHANGEDSINCE, a tag imap-codec allows but ours does not (`]`), header names or
//!   sections deeper than [`MAX_DEPTH`], anything else our grammar rejects (its error wins).
//! - every command either rejects gets our tagged BAD, worded by our grammar.
//!
//! The conversion canonicalises what the session treats case-insensitively anyway: system
//! flags (`\seen` becomes `\Seen`) and a mailbox named `inbox` in any case (`INBOX`).

use crate::ext::{list_extended::ListCommand, multiappend};
use crate::parse::{
    self, BodyKind, Command, FetchAtt, PResult, QresyncParams, Search, Section, SectionText,
    SeqNum, SeqSet, SortKey, StatusItem, StoreOp, ThreadAlgorithm, MAX_DEPTH,
};
use base64::Engine;
use imap_codec::decode::Decoder;
use imap_codec::imap_types::{
    command::{CommandBody, FetchModifier, SelectParameter, StoreModifier},
    core::{AString, Charset},
    datetime::NaiveDate,
    extensions::{
        binary::LiteralOrLiteral8, sort::SortKey as CSortKey, thread::ThreadingAlgorithm,
    },
    fetch::{Macro, MacroOrMessageDataItemNames, MessageDataItemName, Part, Section as CSection},
    flag::{Flag, StoreResponse, StoreType},
    mailbox::{ListMailbox, Mailbox},
    search::SearchKey,
    sequence::{SeqOrUid, Sequence, SequenceSet},
    status::StatusDataItemName,
};
use imap_codec::CommandCodec;

/// Parse one command: imap-codec where it covers it, our grammar otherwise.
pub fn parse(buf: &[u8]) -> PResult<(String, Command)> {
    match decode(buf) {
        Some(c) => Ok(c),
        None => parse::parse_own(buf),
    }
}

/// The command as imap-codec reads it, or `None` when it is our grammar's to read.
pub fn decode(buf: &[u8]) -> Option<(String, Command)> {
    let (rest, cmd) = CommandCodec::default().decode(buf).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let tag = parse::tag_of(buf)?;
    if tag != cmd.tag.as_ref() {
        return None;
    }
    Some((tag, convert(cmd.body)?))
}

fn bytes(a: &AString) -> Vec<u8> {
    a.as_ref().to_vec()
}

fn lossy(a: &AString) -> String {
    String::from_utf8_lossy(a.as_ref()).into_owned()
}

fn mailbox(m: &Mailbox) -> Vec<u8> {
    match m {
        Mailbox::Inbox => b"INBOX".to_vec(),
        Mailbox::Other(o) => o.as_ref().to_vec(),
    }
}

fn list_mailbox(m: &ListMailbox) -> Vec<u8> {
    match m {
        ListMailbox::Token(t) => t.as_ref().to_vec(),
        ListMailbox::String(s) => s.as_ref().to_vec(),
    }
}

fn flags(f: &[Flag]) -> Vec<String> {
    f.iter().map(|f| f.to_string()).collect()
}

fn seq_set(s: &SequenceSet) -> SeqSet {
    let n = |x: &SeqOrUid| match x {
        SeqOrUid::Value(v) => SeqNum::Num(v.get()),
        SeqOrUid::Asterisk => SeqNum::Star,
    };
    SeqSet::Ranges(
        s.0.as_ref()
            .iter()
            .map(|q| match q {
                Sequence::Single(a) => (n(a), n(a)),
                Sequence::Range(a, b) => (n(a), n(b)),
            })
            .collect(),
    )
}

/// Our grammar accepts only these charsets; anything else it answers with BADCHARSET.
fn charset_ok(c: &Charset) -> bool {
    let c: &str = c.as_ref();
    c.eq_ignore_ascii_case("UTF-8") || c.eq_ignore_ascii_case("US-ASCII")
}

fn days(d: &NaiveDate) -> Option<i64> {
    use chrono::Datelike;
    let d: &chrono::NaiveDate = d.as_ref();
    // Our grammar takes years 1..=9999 only.
    if !(1..=9999).contains(&d.year()) {
        return None;
    }
    Some(parse::days_from_civil(d.year() as i64, d.month(), d.day()))
}

fn program(keys: &[SearchKey]) -> Option<Search> {
    let mut v = keys
        .iter()
        .map(|k| search_key(k, 0))
        .collect::<Option<Vec<_>>>()?;
    Some(if v.len() == 1 {
        v.remove(0)
    } else {
        Search::And(v)
    })
}

fn search_key(k: &SearchKey, depth: usize) -> Option<Search> {
    let flag = |f: &str, on: bool| Some(Search::Flag(f.to_owned(), on));
    let hdr = |f: &str, v: &AString| Some(Search::Header(f.to_owned(), lossy(v)));
    match k {
        SearchKey::And(v) => {
            if depth + 1 > MAX_DEPTH {
                return None;
            }
            let v = v
                .as_ref()
                .iter()
                .map(|k| search_key(k, depth + 1))
                .collect::<Option<Vec<_>>>()?;
            Some(Search::And(v))
        }
        SearchKey::SequenceSet(s) => Some(Search::Seq(seq_set(s))),
        SearchKey::Uid(s) => Some(Search::Uid(seq_set(s))),
        SearchKey::All => Some(Search::All),
        SearchKey::Answered => flag("\\Answered", true),
        SearchKey::Deleted => flag("\\Deleted", true),
        SearchKey::Draft => flag("\\Draft", true),
        SearchKey::Flagged => flag("\\Flagged", true),
        SearchKey::Seen => flag("\\Seen", true),
        SearchKey::Unanswered => flag("\\Answered", false),
        SearchKey::Undeleted => flag("\\Deleted", false),
        SearchKey::Undraft => flag("\\Draft", false),
        SearchKey::Unflagged => flag("\\Flagged", false),
        SearchKey::Unseen => flag("\\Seen", false),
        SearchKey::Keyword(a) => Some(Search::Flag(a.as_ref().to_owned(), true)),
        SearchKey::Unkeyword(a) => Some(Search::Flag(a.as_ref().to_owned(), false)),
        SearchKey::Recent => Some(Search::Recent),
        SearchKey::New => Some(Search::New),
        SearchKey::Old => Some(Search::Old),
        SearchKey::Before(d) => Some(Search::Before(days(d)?)),
        SearchKey::On(d) => Some(Search::On(days(d)?)),
        SearchKey::Since(d) => Some(Search::Since(days(d)?)),
        SearchKey::SentBefore(d) => Some(Search::SentBefore(days(d)?)),
        SearchKey::SentOn(d) => Some(Search::SentOn(days(d)?)),
        SearchKey::SentSince(d) => Some(Search::SentSince(days(d)?)),
        SearchKey::Larger(n) => Some(Search::Larger(u64::from(*n))),
        SearchKey::Smaller(n) => Some(Search::Smaller(u64::from(*n))),
        SearchKey::From(v) => hdr("From", v),
        SearchKey::To(v) => hdr("To", v),
        SearchKey::Cc(v) => hdr("Cc", v),
        SearchKey::Bcc(v) => hdr("Bcc", v),
        SearchKey::Subject(v) => hdr("Subject", v),
        SearchKey::Header(f, v) => Some(Search::Header(lossy(f), lossy(v))),
        SearchKey::Body(v) => Some(Search::Body(lossy(v))),
        SearchKey::Text(v) => Some(Search::Text(lossy(v))),
        SearchKey::Not(k) => Some(Search::Not(Box::new(search_key(k, depth)?))),
        SearchKey::Or(a, b) => Some(Search::Or(
            Box::new(search_key(a, depth)?),
            Box::new(search_key(b, depth)?),
        )),
        SearchKey::ModSequence { modseq, .. } => Some(Search::ModSeq(*modseq)),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

fn part(p: &Part) -> Option<Vec<u32>> {
    let v: Vec<u32> = p.0.as_ref().iter().map(|n| n.get()).collect();
    (v.len() <= MAX_DEPTH).then_some(v)
}

fn opt_part(p: &Option<Part>) -> Option<Vec<u32>> {
    match p {
        Some(p) => part(p),
        None => Some(Vec::new()),
    }
}

fn fields(f: &[AString]) -> Option<Vec<String>> {
    f.iter()
        .map(|a| String::from_utf8(a.as_ref().to_vec()).ok())
        .collect()
}

fn section(s: &Option<CSection>) -> Option<Section> {
    let Some(s) = s else {
        return Some(Section::default());
    };
    let (part, text) = match s {
        CSection::Part(p) => (part(p)?, None),
        CSection::Header(p) => (opt_part(p)?, Some(SectionText::Header)),
        CSection::HeaderFields(p, f) => (
            opt_part(p)?,
            Some(SectionText::HeaderFields(fields(f.as_ref())?)),
        ),
        CSection::HeaderFieldsNot(p, f) => (
            opt_part(p)?,
            Some(SectionText::HeaderFieldsNot(fields(f.as_ref())?)),
        ),
        CSection::Text(p) => (opt_part(p)?, Some(SectionText::Text)),
        CSection::Mime(p) => (part(p)?, Some(SectionText::Mime)),
    };
    Some(Section { part, text })
}

fn binary_section(s: &[std::num::NonZeroU32]) -> Option<Section> {
    (s.len() <= MAX_DEPTH).then(|| Section {
        part: s.iter().map(|n| n.get()).collect(),
        text: None,
    })
}

fn fetch_att(a: &MessageDataItemName) -> Option<FetchAtt> {
    let partial = |p: &Option<(u32, std::num::NonZeroU32)>| p.map(|(o, n)| (o, n.get()));
    Some(match a {
        MessageDataItemName::Body => FetchAtt::Body,
        MessageDataItemName::BodyExt {
            section: s,
            partial: p,
            peek,
        } => FetchAtt::Section {
            kind: BodyKind::Body,
            peek: *peek,
            section: section(s)?,
            partial: partial(p),
        },
        MessageDataItemName::BodyStructure => FetchAtt::BodyStructure,
        MessageDataItemName::Envelope => FetchAtt::Envelope,
        MessageDataItemName::Flags => FetchAtt::Flags,
        MessageDataItemName::InternalDate => FetchAtt::InternalDate,
        MessageDataItemName::Rfc822 => FetchAtt::Rfc822,
        MessageDataItemName::Rfc822Header => FetchAtt::Rfc822Header,
        MessageDataItemName::Rfc822Size => FetchAtt::Size,
        MessageDataItemName::Rfc822Text => FetchAtt::Rfc822Text,
        MessageDataItemName::Uid => FetchAtt::Uid,
        MessageDataItemName::Binary {
            section: s,
            partial: p,
            peek,
        } => FetchAtt::Section {
            kind: BodyKind::Binary,
            peek: *peek,
            section: binary_section(s)?,
            partial: partial(p),
        },
        MessageDataItemName::BinarySize { section: s } => FetchAtt::Section {
            kind: BodyKind::BinarySize,
            peek: true,
            section: binary_section(s)?,
            partial: None,
        },
        MessageDataItemName::ModSeq => FetchAtt::ModSeq,
        #[allow(unreachable_patterns)]
        _ => return None,
    })
}

fn status_item(i: &StatusDataItemName) -> Option<StatusItem> {
    Some(match i {
        StatusDataItemName::Messages => StatusItem::Messages,
        StatusDataItemName::Recent => StatusItem::Recent,
        StatusDataItemName::UidNext => StatusItem::UidNext,
        StatusDataItemName::UidValidity => StatusItem::UidValidity,
        StatusDataItemName::Unseen => StatusItem::Unseen,
        StatusDataItemName::Deleted => StatusItem::Deleted,
        StatusDataItemName::Size => StatusItem::Size,
        StatusDataItemName::HighestModSeq => StatusItem::HighestModSeq,
        // DELETED-STORAGE (RFC 9208) is not served; our grammar refuses it.
        _ => return None,
    })
}

fn select(m: &Mailbox, params: &[SelectParameter], read_only: bool) -> Option<Command> {
    let (mut condstore, mut qresync) = (false, None);
    for p in params {
        match p {
            SelectParameter::CondStore => condstore = true,
            SelectParameter::QResync {
                uid_validity,
                mod_sequence_value,
                known_uids,
                ..
            } => {
                qresync = Some(QresyncParams {
                    uidvalidity: uid_validity.get(),
                    modseq: mod_sequence_value.get(),
                    known_uids: known_uids.as_ref().map(seq_set),
                })
            }
        }
    }
    Some(Command::Select {
        mailbox: mailbox(m),
        read_only,
        condstore,
        qresync,
    })
}

fn convert(body: CommandBody) -> Option<Command> {
    Some(match body {
        CommandBody::Capability => Command::Capability,
        CommandBody::Noop => Command::Noop,
        CommandBody::Logout => Command::Logout,
        CommandBody::StartTLS => Command::StartTls,
        CommandBody::Authenticate {
            mechanism,
            initial_response,
        } => Command::Authenticate {
            mechanism: mechanism.to_string().to_ascii_uppercase(),
            // Our session decodes the base64 itself; `=` is the empty response (RFC 4959).
            initial: initial_response.map(|r| {
                let r = r.declassify();
                if r.is_empty() {
                    "=".to_owned()
                } else {
                    base64::engine::general_purpose::STANDARD.encode(r)
                }
            }),
        },
        CommandBody::Login { username, password } => {
            Command::Login(bytes(&username), bytes(password.declassify()))
        }
        CommandBody::Select {
            mailbox: m,
            parameters,
        } => select(&m, &parameters, false)?,
        CommandBody::Examine {
            mailbox: m,
            parameters,
        } => select(&m, &parameters, true)?,
        CommandBody::Unselect => Command::Unselect,
        CommandBody::Create { mailbox: m } => Command::Create {
            mailbox: mailbox(&m),
            special_use: None,
        },
        CommandBody::Delete { mailbox: m } => Command::Delete(mailbox(&m)),
        CommandBody::Rename { from, to } => Command::Rename(mailbox(&from), mailbox(&to)),
        CommandBody::Subscribe { mailbox: m } => Command::Subscribe(mailbox(&m)),
        CommandBody::Unsubscribe { mailbox: m } => Command::Unsubscribe(mailbox(&m)),
        CommandBody::List {
            reference,
            mailbox_wildcard,
        } => Command::List(ListCommand {
            reference: mailbox(&reference),
            patterns: vec![list_mailbox(&mailbox_wildcard)],
            ..ListCommand::default()
        }),
        CommandBody::Lsub {
            reference,
            mailbox_wildcard,
        } => Command::Lsub(mailbox(&reference), list_mailbox(&mailbox_wildcard)),
        CommandBody::Status {
            mailbox: m,
            item_names,
        } => Command::Status(
            mailbox(&m),
            item_names
                .iter()
                .map(status_item)
                .collect::<Option<Vec<_>>>()?,
        ),
        CommandBody::Append {
            mailbox: m,
            flags: f,
            date,
            message,
        } => {
            let data = match message {
                LiteralOrLiteral8::Literal(l) => l.as_ref().to_vec(),
                LiteralOrLiteral8::Literal8(l) => l.data.into_owned(),
            };
            Command::Append(
                mailbox(&m),
                vec![multiappend::AppendMessage {
                    flags: flags(&f),
                    date: date.map(|d| d.as_ref().timestamp()),
                    data: multiappend::AppendData::Literal(data),
                }],
            )
        }
        CommandBody::Check => Command::Check,
        CommandBody::Close => Command::Close,
        CommandBody::Expunge => Command::Expunge,
        CommandBody::ExpungeUid { sequence_set } => Command::UidExpunge(seq_set(&sequence_set)),
        CommandBody::Search {
            charset,
            criteria,
            uid,
        } => {
            if charset.as_ref().is_some_and(|c| !charset_ok(c)) {
                return None;
            }
            Command::Search {
                uid,
                ret: None,
                key: program(criteria.as_ref())?,
            }
        }
        CommandBody::Sort {
            sort_criteria,
            charset,
            search_criteria,
            uid,
        } => {
            if !charset_ok(&charset) {
                return None;
            }
            let criteria = sort_criteria
                .as_ref()
                .iter()
                .map(|c| {
                    let k = match c.key {
                        CSortKey::Arrival => SortKey::Arrival,
                        CSortKey::Cc => SortKey::Cc,
                        CSortKey::Date => SortKey::Date,
                        CSortKey::From => SortKey::From,
                        CSortKey::Size => SortKey::Size,
                        CSortKey::Subject => SortKey::Subject,
                        CSortKey::To => SortKey::To,
                        CSortKey::DisplayFrom => SortKey::DisplayFrom,
                        CSortKey::DisplayTo => SortKey::DisplayTo,
                    };
                    (c.reverse, k)
                })
                .collect();
            Command::Sort {
                uid,
                ret: None,
                criteria,
                key: program(search_criteria.as_ref())?,
            }
        }
        CommandBody::Thread {
            algorithm,
            charset,
            search_criteria,
            uid,
        } => {
            if !charset_ok(&charset) {
                return None;
            }
            let algorithm = match algorithm {
                ThreadingAlgorithm::OrderedSubject => ThreadAlgorithm::OrderedSubject,
                ThreadingAlgorithm::References => ThreadAlgorithm::References,
                ThreadingAlgorithm::Other(_) => return None,
            };
            Command::Thread {
                uid,
                algorithm,
                key: program(search_criteria.as_ref())?,
            }
        }
        CommandBody::Fetch {
            sequence_set,
            macro_or_item_names,
            uid,
            modifiers,
        } => {
            let atts = match macro_or_item_names {
                MacroOrMessageDataItemNames::Macro(m) => {
                    let mut v = vec![FetchAtt::Flags, FetchAtt::InternalDate, FetchAtt::Size];
                    match m {
                        Macro::Fast => {}
                        Macro::All => v.push(FetchAtt::Envelope),
                        Macro::Full => v.extend([FetchAtt::Envelope, FetchAtt::Body]),
                        _ => return None,
                    }
                    v
                }
                MacroOrMessageDataItemNames::MessageDataItemNames(items) => {
                    items.iter().map(fetch_att).collect::<Option<Vec<_>>>()?
                }
            };
            let (mut changed_since, mut vanished) = (None, false);
            for m in &modifiers {
                match m {
                    FetchModifier::ChangedSince(n) => changed_since = Some(n.get()),
                    FetchModifier::Vanished => vanished = true,
                }
            }
            // Our grammar refuses this combination (RFC 7162 3.2.6).
            if vanished && (!uid || changed_since.is_none()) {
                return None;
            }
            Command::Fetch {
                uid,
                set: seq_set(&sequence_set),
                atts,
                changed_since,
                vanished,
            }
        }
        CommandBody::Store {
            sequence_set,
            kind,
            response,
            flags: f,
            uid,
            modifiers,
        } => Command::Store {
            uid,
            set: seq_set(&sequence_set),
            op: match kind {
                StoreType::Add => StoreOp::Add,
                StoreType::Remove => StoreOp::Remove,
                StoreType::Replace => StoreOp::Replace,
            },
            silent: matches!(response, StoreResponse::Silent),
            flags: flags(&f),
            unchanged_since: modifiers.iter().fold(None, |_, m| match m {
                StoreModifier::UnchangedSince(n) => Some(*n),
            }),
        },
        CommandBody::Copy {
            sequence_set,
            mailbox: m,
            uid,
        } => Command::Copy {
            uid,
            set: seq_set(&sequence_set),
            mailbox: mailbox(&m),
        },
        CommandBody::Move {
            sequence_set,
            mailbox: m,
            uid,
        } => Command::Move {
            uid,
            set: seq_set(&sequence_set),
            mailbox: mailbox(&m),
        },
        CommandBody::Idle => Command::Idle,
        CommandBody::Enable { capabilities } => Command::Enable(
            capabilities
                .as_ref()
                .iter()
                .map(|c| c.to_string().to_ascii_uppercase())
                .collect(),
        ),
        CommandBody::Compress { algorithm } => {
            Command::Compress(algorithm.to_string().to_ascii_uppercase())
        }
        CommandBody::GetQuota { root } => Command::GetQuota(bytes(&root)),
        CommandBody::GetQuotaRoot { mailbox: m } => Command::GetQuotaRoot(mailbox(&m)),
        CommandBody::SetQuota { root, .. } => Command::SetQuota(bytes(&root)),
        CommandBody::Id { .. } => Command::Id,
        CommandBody::Namespace => Command::Namespace,
        #[allow(unreachable_patterns)]
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Commands imap-codec reads: it must give exactly what our grammar gives.
    const CODEC: &[&str] = &[
        "a CAPABILITY\r\n",
        "a1 noop\r\n",
        "z LOGOUT\r\n",
        "a STARTTLS\r\n",
        "a LOGIN joe secret\r\n",
        "a LOGIN \"joe\" \"p\\\"a\\\\ss\"\r\n",
        "a LOGIN {3}\r\njoe {6}\r\nsecret\r\n",
        "a LOGIN {3+}\r\njoe {2+}\r\npw\r\n",
        "a AUTHENTICATE PLAIN\r\n",
        "a AUTHENTICATE PLAIN AGpvZQBzZWNyZXQ=\r\n",
        "a AUTHENTICATE PLAIN =\r\n",
        "a authenticate login\r\n",
        "a ENABLE CONDSTORE\r\n",
        "a ENABLE UTF8=ACCEPT QRESYNC\r\n",
        "a ID NIL\r\n",
        "a ID (\"name\" \"mutt\" \"version\" NIL)\r\n",
        "a NAMESPACE\r\n",
        "a SELECT INBOX\r\n",
        "a SELECT \"Sent Items\" (CONDSTORE)\r\n",
        "a EXAMINE Archive\r\n",
        "a SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))\r\n",
        "a SELECT INBOX (QRESYNC (67890007 90060115194045000 1:29997 (5000,7500,9000 15000,22500,27000)))\r\n",
        "a SELECT \"Entw\u{fc}rfe\"\r\n",
        "a SELECT &AMQ-rger\r\n",
        "a CREATE Projects/2024\r\n",
        "a DELETE \"old stuff\"\r\n",
        "a RENAME a b\r\n",
        "a SUBSCRIBE {4+}\r\nnews\r\n",
        "a UNSUBSCRIBE news\r\n",
        "a LIST \"\" *\r\n",
        "a LIST \"\" %\r\n",
        "a LIST Archive/ \"2024/%\"\r\n",
        "a LSUB \"\" *\r\n",
        "a STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN RECENT)\r\n",
        "a STATUS Sent (DELETED SIZE HIGHESTMODSEQ)\r\n",
        "a APPEND Drafts {5}\r\nhello\r\n",
        "a APPEND Drafts (\\Seen \\Draft $Forwarded) {5+}\r\nhello\r\n",
        "a APPEND Drafts (\\Seen) \"14-Jul-2020 02:44:25 -0700\" {5}\r\nhello\r\n",
        "a APPEND Drafts \" 4-Jan-2021 10:00:00 +0100\" ~{3}\r\na\x00b\r\n",
        "a CHECK\r\n",
        "a CLOSE\r\n",
        "a UNSELECT\r\n",
        "a EXPUNGE\r\n",
        "a UID EXPUNGE 3:5,9\r\n",
        "a SEARCH ALL\r\n",
        "a UID SEARCH UNSEEN\r\n",
        "a SEARCH CHARSET UTF-8 OR FROM joe NOT SEEN SINCE 1-Feb-2020 UID 1:5,*\r\n",
        "a SEARCH (OR (FLAGGED ANSWERED) (DELETED DRAFT)) NOT (UNDELETED UNDRAFT)\r\n",
        "a SEARCH BEFORE 31-Dec-1999 ON 1-Jan-2000 SENTBEFORE 2-Mar-2001 SENTON 3-Apr-2002 SENTSINCE 4-May-2003\r\n",
        "a SEARCH HEADER X-Mailer \"Apple Mail\" BODY {5}\r\nhello TEXT \"a \\\"b\\\"\"\r\n",
        "a SEARCH TO bob CC carol BCC dave SUBJECT \"re: lunch\" KEYWORD $Junk UNKEYWORD $NotJunk\r\n",
        "a SEARCH LARGER 1000 SMALLER 99999 NEW OLD RECENT UNFLAGGED UNANSWERED\r\n",
        "a SEARCH 1:*,7 MODSEQ 620162338\r\n",
        "a SEARCH CHARSET US-ASCII ((((SEEN))))\r\n",
        "a SEARCH CHARSET UTF-8 SUBJECT \"caf\u{e9}\" TEXT {5+}\r\ncaf\u{e9}\r\n",
        "a FETCH 1 FLAGS\r\n",
        "a FETCH 1:* (FLAGS)\r\n",
        "a UID FETCH 1:* (FLAGS)\r\n",
        "a FETCH 2,4:7,* ALL\r\n",
        "a FETCH 1 FAST\r\n",
        "a FETCH 1 FULL\r\n",
        "a UID FETCH 1:* (UID RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE BODY)\r\n",
        "a FETCH 1 (RFC822 RFC822.HEADER RFC822.TEXT)\r\n",
        "a UID FETCH 10 (BODY.PEEK[HEADER.FIELDS (From To Subject Date Message-ID)])\r\n",
        "a FETCH 1 (BODY[] BODY[TEXT]<0.2048> BODY.PEEK[1.2.MIME] BODY[2.HEADER] BODY[1.3])\r\n",
        "a FETCH 1 BODY.PEEK[HEADER.FIELDS.NOT (Received)]<10.20>\r\n",
        "a FETCH 1 (BINARY[1] BINARY.PEEK[1.2]<0.100> BINARY.SIZE[1] BINARY[])\r\n",
        "a UID FETCH 1:* (FLAGS MODSEQ) (CHANGEDSINCE 12345)\r\n",
        "a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345 VANISHED)\r\n",
        "a STORE 1:3 +FLAGS (\\Deleted)\r\n",
        "a STORE 1 +FLAGS.SILENT (\\Seen $Label1)\r\n",
        "a UID STORE 5 -FLAGS \\Flagged\r\n",
        "a STORE 2 FLAGS ()\r\n",
        "a UID STORE 5 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Answered)\r\n",
        "a COPY 1:2 Trash\r\n",
        "a UID COPY 4,6 \"Sent Items\"\r\n",
        "a MOVE 3 Junk\r\n",
        "a UID MOVE 1:* Archive\r\n",
        "a IDLE\r\n",
        "a COMPRESS DEFLATE\r\n",
        "a GETQUOTA \"\"\r\n",
        "a GETQUOTAROOT INBOX\r\n",
        "a SETQUOTA \"\" (STORAGE 512)\r\n",
        "a SORT (REVERSE DATE SUBJECT) UTF-8 ALL\r\n",
        "a UID SORT (ARRIVAL DISPLAYFROM) US-ASCII SINCE 1-Feb-1994\r\n",
        "a THREAD REFERENCES UTF-8 ALL\r\n",
        "a UID THREAD ORDEREDSUBJECT UTF-8 UNSEEN\r\n",
        "a NOOP\n",
    ];

    /// Commands our grammar reads (imap-codec rejects them, or converting would lose
    /// something), each still accepted.
    const OWN: &[&str] = &[
        "a SEARCH RETURN (MIN MAX COUNT) UNSEEN\r\n",
        "a SEARCH RETURN (SAVE) FLAGGED\r\n",
        "a FETCH $ (FLAGS)\r\n",
        "a UID SEARCH YOUNGER 3600\r\n",
        "a SEARCH SAVEDBEFORE 1-Jan-2020\r\n",
        "a SEARCH EMAILID M6d99ac3275bb4e\r\n",
        "a LIST (SUBSCRIBED) \"\" *\r\n",
        "a LIST \"\" * RETURN (STATUS (MESSAGES UNSEEN))\r\n",
        "a LIST \"\" (INBOX Sent)\r\n",
        "a CREATE Spam (USE (\\Junk))\r\n",
        "a GETACL INBOX\r\n",
        "a SETACL INBOX bob lrs\r\n",
        "a MYRIGHTS INBOX\r\n",
        "a APPEND Drafts {1}\r\na {1}\r\nb\r\n",
        "a APPEND Drafts CATENATE (TEXT {1}\r\na)\r\n",
        "a FETCH 1 (PREVIEW EMAILID THREADID SAVEDATE)\r\n",
        "a STATUS INBOX (APPENDLIMIT MAILBOXID)\r\n",
        "a SORT RETURN (COUNT) (DATE) UTF-8 ALL\r\n",
        "a SELECT Entw\u{fc}rfe\r\n",
        "a SEARCH CHARSET ISO-8859-1 ALL\r\n",
    ];

    fn own(s: &str) -> (String, Command) {
        parse::parse_own(s.as_bytes()).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn codec_and_our_grammar_agree() {
        for s in CODEC {
            let c = decode(s.as_bytes()).unwrap_or_else(|| panic!("not via imap-codec: {s:?}"));
            assert_eq!(c, own(s), "{s:?}");
            assert_eq!(parse(s.as_bytes()), Ok(c));
        }
        assert!(CODEC.len() >= 60);
    }

    #[test]
    fn extension_forms_go_to_our_grammar() {
        for s in OWN {
            assert_eq!(decode(s.as_bytes()), None, "{s:?}");
            let r = parse(s.as_bytes());
            assert_eq!(r, parse::parse_own(s.as_bytes()), "{s:?}");
            // The charset one is refused with BADCHARSET, by our grammar.
            if !s.contains("ISO-8859-1") {
                assert!(r.is_ok(), "{s:?}: {r:?}");
            }
        }
    }

    #[test]
    fn both_reject_gets_our_error() {
        for s in [
            "a FOO\r\n",
            "a LOGIN joe\r\n",
            "a NOOP extra\r\n",
            "a FETCH 0 FLAGS\r\n",
            "a FETCH 1 (BINARY[HEADER])\r\n",
            "a FETCH 1 BODY[]<0.0>\r\n",
            "a FETCH 1 (FLAGS) (VANISHED)\r\n",
            "a SEARCH SINCE 32-Jan-2020\r\n",
            "a SELECT\r\n",
            "a] NOOP\r\n",
        ] {
            let r = parse(s.as_bytes());
            assert!(r.is_err(), "{s:?}: {r:?}");
            assert_eq!(r, parse::parse_own(s.as_bytes()), "{s:?}");
        }
        let deep = format!("a SEARCH {}ALL{}\r\n", "(".repeat(100), ")".repeat(100));
        assert!(parse(deep.as_bytes()).is_err());
        // Deeper than imap-codec's limit but within ours: our grammar reads it.
        let mid = format!("a SEARCH {}ALL{}\r\n", "(".repeat(20), ")".repeat(20));
        assert_eq!(decode(mid.as_bytes()), None);
        assert!(parse(mid.as_bytes()).is_ok());
    }

    /// Every prefix of every command (a literal cut short, a missing CRLF) is refused or
    /// read by our grammar, never a panic inside imap-codec.
    #[test]
    fn truncated_commands_never_panic() {
        for s in CODEC.iter().chain(OWN) {
            for end in 0..s.len() {
                let b = &s.as_bytes()[..end];
                let _ = parse(b);
            }
        }
        assert_eq!(decode(b"a LOGIN joe {3}\r\n"), None);
        assert!(parse(b"a LOGIN joe {3}\r\n").is_err());
        assert!(parse(b"").is_err());
    }

    #[test]
    fn canonicalised_where_the_session_ignores_case() {
        let (_, c) = decode(b"a STORE 1 +FLAGS (\\seen \\DELETED $Fwd)\r\n").expect("store");
        match c {
            Command::Store { flags, .. } => assert_eq!(flags, ["\\Seen", "\\Deleted", "$Fwd"]),
            c => panic!("{c:?}"),
        }
        let (_, c) = decode(b"a select inbox\r\n").expect("select");
        assert!(matches!(c, Command::Select { mailbox, .. } if mailbox == b"INBOX"));
        // The tag is kept exactly.
        let (t, _) = decode(b"A0001.x NOOP\r\n").expect("noop");
        assert_eq!(t, "A0001.x");
    }
}
