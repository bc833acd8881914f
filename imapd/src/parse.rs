//! The IMAP command grammar (RFC 3501 / RFC 9051 section 9), I/O-free.
//!
//! The session driver hands over one complete command: its lines with every literal's bytes
//! in place after the `{n}` marker, exactly as they came off the wire. [`parse_command`]
//! turns that into a [`Command`]; the extensions' own grammar lives in `crate::ext`.
//!
//! imap-codec reads every command it covers (`crate::codec`, which lists them); this grammar
//! reads the rest: the extension forms imap-codec 2.0.0-alpha.10 does not know (ESEARCH and
//! SEARCH RETURN, SEARCHRES `$`, LIST-EXTENDED and LIST-STATUS, CREATE USE, ACL, MULTIAPPEND,
//! CATENATE, PREVIEW, OBJECTID, SAVEDATE, WITHIN) and whatever imap-codec rejects, so that a
//! command both reject gets this grammar's BAD as before.

use crate::ext;

/// Deepest parenthesis nesting accepted (search programs, fetch lists).
pub const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

pub type PResult<T> = Result<T, ParseError>;

pub fn err<T>(msg: impl Into<String>) -> PResult<T> {
    Err(ParseError(msg.into()))
}

/// A cursor over one command.
pub struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
    depth: usize,
}

fn is_atom_char(b: u8) -> bool {
    b > 0x20 && b < 0x7f && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
}

impl<'a> Parser<'a> {
    pub fn new(buf: &'a [u8]) -> Parser<'a> {
        Parser {
            buf,
            pos: 0,
            depth: 0,
        }
    }

    pub fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub fn expect(&mut self, b: u8) -> PResult<()> {
        if self.eat(b) {
            Ok(())
        } else {
            err(format!("expected '{}'", b as char))
        }
    }

    pub fn sp(&mut self) -> PResult<()> {
        self.expect(b' ')
    }

    /// At the end of the command (CRLF or a bare LF, or nothing).
    pub fn at_end(&self) -> bool {
        matches!(self.rest(), b"" | b"\r\n" | b"\n")
    }

    pub fn end(&self) -> PResult<()> {
        if self.at_end() {
            Ok(())
        } else {
            err("unexpected characters at the end of the command")
        }
    }

    /// Enter a parenthesised list (bounded nesting).
    pub fn open(&mut self) -> PResult<()> {
        self.expect(b'(')?;
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err("too deeply nested");
        }
        Ok(())
    }

    pub fn close(&mut self) -> PResult<()> {
        self.expect(b')')?;
        self.depth = self.depth.saturating_sub(1);
        Ok(())
    }

    /// Characters while `f` holds.
    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        &self.buf[start..self.pos]
    }

    pub fn atom(&mut self) -> PResult<String> {
        let a = self.take_while(is_atom_char);
        if a.is_empty() {
            return err("expected an atom");
        }
        Ok(String::from_utf8_lossy(a).into_owned())
    }

    /// An atom that may contain `]` (flags like `\Seen`, sequence sets).
    pub fn word(&mut self) -> PResult<String> {
        let a = self.take_while(|b| is_atom_char(b) || matches!(b, b'\\' | b'*' | b'%' | b']'));
        if a.is_empty() {
            return err("expected an argument");
        }
        Ok(String::from_utf8_lossy(a).into_owned())
    }

    pub fn keyword(&mut self, kw: &str) -> bool {
        let n = kw.len();
        if self.rest().len() >= n && self.rest()[..n].eq_ignore_ascii_case(kw.as_bytes()) {
            let next = self.rest().get(n).copied();
            if next.is_none_or(|b| !is_atom_char(b) || kw.ends_with('[')) {
                self.pos += n;
                return true;
            }
        }
        false
    }

    pub fn number(&mut self) -> PResult<u32> {
        let d = self.take_while(|b| b.is_ascii_digit());
        std::str::from_utf8(d)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ParseError("expected a number".into()))
    }

    pub fn number64(&mut self) -> PResult<u64> {
        let d = self.take_while(|b| b.is_ascii_digit());
        std::str::from_utf8(d)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ParseError("expected a number".into()))
    }

    /// A quoted string or a literal, as bytes.
    pub fn string(&mut self) -> PResult<Vec<u8>> {
        match self.peek() {
            Some(b'"') => {
                self.pos += 1;
                let mut out = Vec::new();
                loop {
                    match self.peek() {
                        None | Some(b'\r') | Some(b'\n') => return err("unterminated string"),
                        Some(b'"') => {
                            self.pos += 1;
                            return Ok(out);
                        }
                        Some(b'\\') => {
                            self.pos += 1;
                            match self.peek() {
                                Some(c @ (b'"' | b'\\')) => {
                                    out.push(c);
                                    self.pos += 1;
                                }
                                _ => return err("invalid escape in quoted string"),
                            }
                        }
                        Some(c) => {
                            out.push(c);
                            self.pos += 1;
                        }
                    }
                }
            }
            Some(b'{') | Some(b'~') => self.literal(),
            _ => err("expected a string"),
        }
    }

    /// `{n}`, `{n+}` or `~{n}` then CRLF then n bytes (the driver put them there).
    pub fn literal(&mut self) -> PResult<Vec<u8>> {
        self.eat(b'~');
        self.expect(b'{')?;
        let n = self.number64()? as usize;
        self.eat(b'+');
        self.expect(b'}')?;
        self.eat(b'\r');
        self.expect(b'\n')?;
        if self.rest().len() < n {
            return err("literal shorter than announced");
        }
        let v = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(v)
    }

    pub fn astring(&mut self) -> PResult<Vec<u8>> {
        match self.peek() {
            Some(b'"') | Some(b'{') | Some(b'~') => self.string(),
            _ => {
                let a = self.take_while(|b| is_atom_char(b) || b == b']' || b >= 0x80);
                if a.is_empty() {
                    return err("expected a string or atom");
                }
                Ok(a.to_vec())
            }
        }
    }

    pub fn astring_utf8(&mut self) -> PResult<String> {
        String::from_utf8(self.astring()?).map_err(|_| ParseError("invalid UTF-8".into()))
    }

    pub fn nstring(&mut self) -> PResult<Option<Vec<u8>>> {
        if self.keyword("NIL") {
            return Ok(None);
        }
        self.string().map(Some)
    }

    /// A list-mailbox (LIST patterns: atoms may hold `%` and `*`).
    pub fn list_mailbox(&mut self) -> PResult<Vec<u8>> {
        match self.peek() {
            Some(b'"') | Some(b'{') => self.string(),
            _ => {
                let a = self.take_while(|b| {
                    is_atom_char(b) || matches!(b, b'%' | b'*' | b']') || b >= 0x80
                });
                if a.is_empty() {
                    return err("expected a mailbox pattern");
                }
                Ok(a.to_vec())
            }
        }
    }

    /// A parenthesised, space-separated list of items.
    pub fn list<T>(&mut self, mut item: impl FnMut(&mut Self) -> PResult<T>) -> PResult<Vec<T>> {
        self.open()?;
        let mut out = Vec::new();
        if self.peek() == Some(b')') {
            self.close()?;
            return Ok(out);
        }
        loop {
            out.push(item(self)?);
            if self.eat(b' ') {
                continue;
            }
            self.close()?;
            return Ok(out);
        }
    }

    pub fn sequence_set(&mut self) -> PResult<SeqSet> {
        if self.eat(b'$') {
            return Ok(SeqSet::Saved);
        }
        let s = self.take_while(|b| b.is_ascii_digit() || matches!(b, b':' | b',' | b'*'));
        let s = std::str::from_utf8(s).unwrap_or("");
        if s.is_empty() {
            return err("expected a sequence set");
        }
        let num = |t: &str| -> PResult<SeqNum> {
            if t == "*" {
                return Ok(SeqNum::Star);
            }
            match t.parse::<u32>() {
                Ok(n) if n > 0 => Ok(SeqNum::Num(n)),
                _ => err(format!("invalid sequence set {s}")),
            }
        };
        let mut ranges = Vec::new();
        for part in s.split(',') {
            match part.split_once(':') {
                Some((a, b)) => ranges.push((num(a)?, num(b)?)),
                None => {
                    let n = num(part)?;
                    ranges.push((n, n));
                }
            }
        }
        Ok(SeqSet::Ranges(ranges))
    }
}

/// A message number in a set: a number or `*` (the largest in use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqNum {
    Num(u32),
    Star,
}

/// A sequence set as written, or `$` (SEARCHRES, RFC 5182).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeqSet {
    Ranges(Vec<(SeqNum, SeqNum)>),
    Saved,
}

impl SeqSet {
    /// The ranges with `*` as `star`, each low..=high.
    pub fn resolve(&self, star: u32) -> Vec<(u32, u32)> {
        match self {
            SeqSet::Saved => Vec::new(),
            SeqSet::Ranges(r) => r
                .iter()
                .map(|&(a, b)| {
                    let v = |n: SeqNum| match n {
                        SeqNum::Num(n) => n,
                        SeqNum::Star => star,
                    };
                    let (a, b) = (v(a), v(b));
                    (a.min(b), a.max(b))
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    Add,
    Remove,
    Replace,
}

/// A FETCH body section (`BODY[1.2.HEADER.FIELDS (From)]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    pub part: Vec<u32>,
    pub text: Option<SectionText>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionText {
    Header,
    HeaderFields(Vec<String>),
    HeaderFieldsNot(Vec<String>),
    Text,
    Mime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Body,
    Binary,
    BinarySize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchAtt {
    Flags,
    Uid,
    InternalDate,
    Size,
    Envelope,
    BodyStructure,
    /// `BODY` without a section: the non-extensible body structure.
    Body,
    Section {
        kind: BodyKind,
        peek: bool,
        section: Section,
        partial: Option<(u32, u32)>,
    },
    Rfc822,
    Rfc822Header,
    Rfc822Text,
    ModSeq,
    SaveDate,
    EmailId,
    ThreadId,
    Preview,
}

/// Search keys as written; sets are resolved against the selected folder later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Search {
    All,
    Seq(SeqSet),
    Uid(SeqSet),
    Flag(String, bool),
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
    SaveDateSupported,
    Younger(i64),
    Older(i64),
    Larger(u64),
    Smaller(u64),
    Header(String, String),
    Body(String),
    Text(String),
    ModSeq(u64),
    EmailId(String),
    ThreadId(String),
    Not(Box<Search>),
    Or(Box<Search>, Box<Search>),
    And(Vec<Search>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QresyncParams {
    pub uidvalidity: u32,
    pub modseq: u64,
    pub known_uids: Option<SeqSet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusItem {
    Messages,
    Recent,
    UidNext,
    UidValidity,
    Unseen,
    Deleted,
    Size,
    HighestModSeq,
    AppendLimit,
    MailboxId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Capability,
    Noop,
    Logout,
    StartTls,
    Login(Vec<u8>, Vec<u8>),
    Authenticate {
        mechanism: String,
        initial: Option<String>,
    },
    Enable(Vec<String>),
    Id,
    Namespace,
    Select {
        mailbox: Vec<u8>,
        read_only: bool,
        condstore: bool,
        qresync: Option<QresyncParams>,
    },
    Create {
        mailbox: Vec<u8>,
        special_use: Option<String>,
    },
    Delete(Vec<u8>),
    Rename(Vec<u8>, Vec<u8>),
    Subscribe(Vec<u8>),
    Unsubscribe(Vec<u8>),
    List(ext::list_extended::ListCommand),
    Lsub(Vec<u8>, Vec<u8>),
    Status(Vec<u8>, Vec<StatusItem>),
    Append(Vec<u8>, Vec<ext::multiappend::AppendMessage>),
    Check,
    Close,
    Unselect,
    Expunge,
    UidExpunge(SeqSet),
    Search {
        uid: bool,
        ret: Option<ext::esearch::ReturnOptions>,
        key: Search,
    },
    Fetch {
        uid: bool,
        set: SeqSet,
        atts: Vec<FetchAtt>,
        changed_since: Option<u64>,
        vanished: bool,
    },
    Store {
        uid: bool,
        set: SeqSet,
        op: StoreOp,
        silent: bool,
        flags: Vec<String>,
        unchanged_since: Option<u64>,
    },
    Copy {
        uid: bool,
        set: SeqSet,
        mailbox: Vec<u8>,
    },
    Move {
        uid: bool,
        set: SeqSet,
        mailbox: Vec<u8>,
    },
    Idle,
    Compress(String),
    GetQuota(Vec<u8>),
    GetQuotaRoot(Vec<u8>),
    SetQuota(Vec<u8>),
    Acl(ext::acl::AclCommand),
    Sort {
        uid: bool,
        ret: Option<ext::esearch::ReturnOptions>,
        criteria: Vec<(bool, SortKey)>,
        key: Search,
    },
    Thread {
        uid: bool,
        algorithm: ThreadAlgorithm,
        key: Search,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Arrival,
    Cc,
    Date,
    From,
    Size,
    Subject,
    To,
    DisplayFrom,
    DisplayTo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadAlgorithm {
    OrderedSubject,
    References,
}

/// The tag of a command line, if one can be read.
pub fn tag_of(line: &[u8]) -> Option<String> {
    let end = line
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n')?;
    let tag = &line[..end];
    (!tag.is_empty() && tag.iter().all(|&b| is_atom_char(b) && b != b'+'))
        .then(|| String::from_utf8_lossy(tag).into_owned())
}

/// The command name (upper case, `UID ` prefix kept) of a command line, for limits chosen
/// before the literals are read.
pub fn command_name(line: &[u8]) -> String {
    let mut words = line
        .split(|&b| b == b' ' || b == b'\r' || b == b'\n')
        .filter(|w| !w.is_empty());
    let _tag = words.next();
    let mut name = String::from_utf8_lossy(words.next().unwrap_or_default()).to_ascii_uppercase();
    if name == "UID" {
        name.push(' ');
        name.push_str(
            &String::from_utf8_lossy(words.next().unwrap_or_default()).to_ascii_uppercase(),
        );
    }
    name
}

/// The literal announced at the end of a line: (length, synchronising).
pub fn literal_marker(line: &[u8]) -> Option<(u64, bool)> {
    let l = line.strip_suffix(b"\n")?;
    let l = l.strip_suffix(b"\r").unwrap_or(l);
    let l = l.strip_suffix(b"}")?;
    let (l, sync) = match l.strip_suffix(b"+") {
        Some(x) => (x, false),
        None => (l, true),
    };
    let open = l.iter().rposition(|&b| b == b'{')?;
    let digits = &l[open + 1..];
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((n, sync))
}

/// Parse one command (tag already validated by the caller): imap-codec where it covers the
/// command, our grammar otherwise (`crate::codec` says which goes where).
pub fn parse_command(buf: &[u8]) -> PResult<(String, Command)> {
    crate::codec::parse(buf)
}

/// Our own grammar for one command: the extension layer, and the fallback for everything
/// imap-codec does not read (see `crate::codec`).
pub fn parse_own(buf: &[u8]) -> PResult<(String, Command)> {
    let mut p = Parser::new(buf);
    let tag = tag_of(buf).ok_or_else(|| ParseError("missing tag".into()))?;
    p.pos = tag.len();
    p.sp()?;
    let name = p.atom()?.to_ascii_uppercase();
    let cmd = match name.as_str() {
        "UID" => {
            p.sp()?;
            let sub = p.atom()?.to_ascii_uppercase();
            match sub.as_str() {
                "FETCH" => fetch(&mut p, true)?,
                "STORE" => store(&mut p, true)?,
                "COPY" | "MOVE" => copy(&mut p, true, sub == "MOVE")?,
                "SEARCH" => search_cmd(&mut p, true)?,
                "SORT" => sort(&mut p, true)?,
                "THREAD" => thread(&mut p, true)?,
                "EXPUNGE" => {
                    p.sp()?;
                    Command::UidExpunge(p.sequence_set()?)
                }
                _ => return err(format!("unknown command UID {sub}")),
            }
        }
        "CAPABILITY" => Command::Capability,
        "NOOP" => Command::Noop,
        "LOGOUT" => Command::Logout,
        "STARTTLS" => Command::StartTls,
        "LOGIN" => {
            p.sp()?;
            let u = p.astring()?;
            p.sp()?;
            let pw = p.astring()?;
            Command::Login(u, pw)
        }
        "AUTHENTICATE" => {
            p.sp()?;
            let mechanism = p.atom()?.to_ascii_uppercase();
            let initial = if p.eat(b' ') {
                let r =
                    p.take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
                if r.is_empty() {
                    return err("invalid initial response");
                }
                Some(String::from_utf8_lossy(r).into_owned())
            } else {
                None
            };
            Command::Authenticate { mechanism, initial }
        }
        "ENABLE" => {
            let mut caps = Vec::new();
            while p.eat(b' ') {
                caps.push(p.atom()?.to_ascii_uppercase());
            }
            if caps.is_empty() {
                return err("ENABLE needs capabilities");
            }
            Command::Enable(caps)
        }
        "ID" => {
            p.sp()?;
            if !p.keyword("NIL") {
                p.list(|p| p.nstring())?;
            }
            Command::Id
        }
        "NAMESPACE" => Command::Namespace,
        "SELECT" | "EXAMINE" => {
            p.sp()?;
            let mailbox = p.astring()?;
            let (mut condstore, mut qresync) = (false, None);
            if p.eat(b' ') {
                p.list(|p| {
                    let w = p.atom()?.to_ascii_uppercase();
                    match w.as_str() {
                        "CONDSTORE" => condstore = true,
                        "QRESYNC" => {
                            p.sp()?;
                            p.open()?;
                            let uidvalidity = p.number()?;
                            p.sp()?;
                            let modseq = p.number64()?;
                            let mut known_uids = None;
                            if p.eat(b' ') {
                                if p.peek() == Some(b'(') {
                                    // seq-match-data: ignored, the known UIDs suffice.
                                    p.open()?;
                                    p.sequence_set()?;
                                    p.sp()?;
                                    p.sequence_set()?;
                                    p.close()?;
                                } else {
                                    known_uids = Some(p.sequence_set()?);
                                    if p.eat(b' ') {
                                        p.open()?;
                                        p.sequence_set()?;
                                        p.sp()?;
                                        p.sequence_set()?;
                                        p.close()?;
                                    }
                                }
                            }
                            p.close()?;
                            qresync = Some(QresyncParams {
                                uidvalidity,
                                modseq,
                                known_uids,
                            });
                        }
                        _ => return err(format!("unknown SELECT parameter {w}")),
                    }
                    Ok(())
                })?;
            }
            Command::Select {
                mailbox,
                read_only: name == "EXAMINE",
                condstore,
                qresync,
            }
        }
        "CREATE" => {
            p.sp()?;
            let mailbox = p.astring()?;
            let special_use = if p.eat(b' ') {
                ext::create_use::parse(&mut p)?
            } else {
                None
            };
            Command::Create {
                mailbox,
                special_use,
            }
        }
        "DELETE" => {
            p.sp()?;
            Command::Delete(p.astring()?)
        }
        "RENAME" => {
            p.sp()?;
            let a = p.astring()?;
            p.sp()?;
            Command::Rename(a, p.astring()?)
        }
        "SUBSCRIBE" => {
            p.sp()?;
            Command::Subscribe(p.astring()?)
        }
        "UNSUBSCRIBE" => {
            p.sp()?;
            Command::Unsubscribe(p.astring()?)
        }
        "LIST" => Command::List(ext::list_extended::parse(&mut p)?),
        "LSUB" => {
            p.sp()?;
            let r = p.astring()?;
            p.sp()?;
            Command::Lsub(r, p.list_mailbox()?)
        }
        "STATUS" => {
            p.sp()?;
            let m = p.astring()?;
            p.sp()?;
            Command::Status(m, status_items(&mut p)?)
        }
        "APPEND" => {
            let (m, msgs) = ext::multiappend::parse(&mut p)?;
            Command::Append(m, msgs)
        }
        "CHECK" => Command::Check,
        "CLOSE" => Command::Close,
        "UNSELECT" => Command::Unselect,
        "EXPUNGE" => Command::Expunge,
        "SEARCH" => search_cmd(&mut p, false)?,
        "FETCH" => fetch(&mut p, false)?,
        "STORE" => store(&mut p, false)?,
        "COPY" | "MOVE" => copy(&mut p, false, name == "MOVE")?,
        "IDLE" => Command::Idle,
        "COMPRESS" => {
            p.sp()?;
            Command::Compress(p.atom()?.to_ascii_uppercase())
        }
        "GETQUOTA" => {
            p.sp()?;
            Command::GetQuota(p.astring()?)
        }
        "GETQUOTAROOT" => {
            p.sp()?;
            Command::GetQuotaRoot(p.astring()?)
        }
        "SETQUOTA" => {
            p.sp()?;
            let root = p.astring()?;
            p.sp()?;
            p.list(|p| {
                p.atom()?;
                p.sp()?;
                p.number64()
            })?;
            Command::SetQuota(root)
        }
        "SETACL" | "DELETEACL" | "GETACL" | "LISTRIGHTS" | "MYRIGHTS" => {
            Command::Acl(ext::acl::parse(&name, &mut p)?)
        }
        "SORT" => sort(&mut p, false)?,
        "THREAD" => thread(&mut p, false)?,
        _ => return err(format!("unknown command {name}")),
    };
    p.end()?;
    Ok((tag, cmd))
}

fn status_items(p: &mut Parser) -> PResult<Vec<StatusItem>> {
    p.list(|p| {
        let w = p.atom()?.to_ascii_uppercase();
        Ok(match w.as_str() {
            "MESSAGES" => StatusItem::Messages,
            "RECENT" => StatusItem::Recent,
            "UIDNEXT" => StatusItem::UidNext,
            "UIDVALIDITY" => StatusItem::UidValidity,
            "UNSEEN" => StatusItem::Unseen,
            "DELETED" => StatusItem::Deleted,
            "SIZE" => StatusItem::Size,
            "HIGHESTMODSEQ" => StatusItem::HighestModSeq,
            "APPENDLIMIT" => StatusItem::AppendLimit,
            "MAILBOXID" => StatusItem::MailboxId,
            _ => return err(format!("unknown STATUS item {w}")),
        })
    })
}

pub(crate) fn status_items_pub(p: &mut Parser) -> PResult<Vec<StatusItem>> {
    status_items(p)
}

fn copy(p: &mut Parser, uid: bool, mv: bool) -> PResult<Command> {
    p.sp()?;
    let set = p.sequence_set()?;
    p.sp()?;
    let mailbox = p.astring()?;
    Ok(if mv {
        Command::Move { uid, set, mailbox }
    } else {
        Command::Copy { uid, set, mailbox }
    })
}

fn store(p: &mut Parser, uid: bool) -> PResult<Command> {
    p.sp()?;
    let set = p.sequence_set()?;
    p.sp()?;
    let mut unchanged_since = None;
    if p.peek() == Some(b'(') {
        p.list(|p| {
            let w = p.atom()?.to_ascii_uppercase();
            if w != "UNCHANGEDSINCE" {
                return err(format!("unknown STORE modifier {w}"));
            }
            p.sp()?;
            unchanged_since = Some(p.number64()?);
            Ok(())
        })?;
        p.sp()?;
    }
    let item = p.word()?.to_ascii_uppercase();
    let (op, rest) = match item.as_bytes().first() {
        Some(b'+') => (StoreOp::Add, &item[1..]),
        Some(b'-') => (StoreOp::Remove, &item[1..]),
        _ => (StoreOp::Replace, &item[..]),
    };
    let silent = match rest {
        "FLAGS" => false,
        "FLAGS.SILENT" => true,
        _ => return err(format!("unknown STORE item {item}")),
    };
    p.sp()?;
    let flags = if p.peek() == Some(b'(') {
        p.list(|p| p.word())?
    } else {
        let mut v = vec![p.word()?];
        while p.eat(b' ') {
            v.push(p.word()?);
        }
        v
    };
    Ok(Command::Store {
        uid,
        set,
        op,
        silent,
        flags,
        unchanged_since,
    })
}

fn fetch(p: &mut Parser, uid: bool) -> PResult<Command> {
    p.sp()?;
    let set = p.sequence_set()?;
    p.sp()?;
    let atts = if p.peek() == Some(b'(') {
        p.list(fetch_att)?
    } else {
        let save = p.pos;
        let w = p.atom().unwrap_or_default().to_ascii_uppercase();
        match w.as_str() {
            "ALL" => vec![
                FetchAtt::Flags,
                FetchAtt::InternalDate,
                FetchAtt::Size,
                FetchAtt::Envelope,
            ],
            "FAST" => vec![FetchAtt::Flags, FetchAtt::InternalDate, FetchAtt::Size],
            "FULL" => vec![
                FetchAtt::Flags,
                FetchAtt::InternalDate,
                FetchAtt::Size,
                FetchAtt::Envelope,
                FetchAtt::Body,
            ],
            _ => {
                p.pos = save;
                vec![fetch_att(p)?]
            }
        }
    };
    let (mut changed_since, mut vanished) = (None, false);
    if p.eat(b' ') {
        p.list(|p| {
            let w = p.atom()?.to_ascii_uppercase();
            match w.as_str() {
                "CHANGEDSINCE" => {
                    p.sp()?;
                    changed_since = Some(p.number64()?);
                }
                "VANISHED" => vanished = true,
                _ => return err(format!("unknown FETCH modifier {w}")),
            }
            Ok(())
        })?;
    }
    if vanished && (!uid || changed_since.is_none()) {
        return err("VANISHED needs UID FETCH with CHANGEDSINCE");
    }
    Ok(Command::Fetch {
        uid,
        set,
        atts,
        changed_since,
        vanished,
    })
}

fn fetch_att(p: &mut Parser) -> PResult<FetchAtt> {
    let name = {
        let a = p.take_while(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_');
        String::from_utf8_lossy(a).to_ascii_uppercase()
    };
    let att = match name.as_str() {
        "FLAGS" => FetchAtt::Flags,
        "UID" => FetchAtt::Uid,
        "INTERNALDATE" => FetchAtt::InternalDate,
        "RFC822.SIZE" => FetchAtt::Size,
        "ENVELOPE" => FetchAtt::Envelope,
        "BODYSTRUCTURE" => FetchAtt::BodyStructure,
        "RFC822" => FetchAtt::Rfc822,
        "RFC822.HEADER" => FetchAtt::Rfc822Header,
        "RFC822.TEXT" => FetchAtt::Rfc822Text,
        "MODSEQ" => FetchAtt::ModSeq,
        "SAVEDATE" => FetchAtt::SaveDate,
        "EMAILID" => FetchAtt::EmailId,
        "THREADID" => FetchAtt::ThreadId,
        "PREVIEW" => {
            ext::preview::parse_modifiers(p)?;
            FetchAtt::Preview
        }
        "BODY" | "BODY.PEEK" | "BINARY" | "BINARY.PEEK" | "BINARY.SIZE" => {
            if p.peek() != Some(b'[') {
                if name == "BODY" {
                    return Ok(FetchAtt::Body);
                }
                return err(format!("{name} needs a section"));
            }
            let kind = match name.as_str() {
                "BODY" | "BODY.PEEK" => BodyKind::Body,
                "BINARY.SIZE" => BodyKind::BinarySize,
                _ => BodyKind::Binary,
            };
            let section = section(p, kind != BodyKind::Body)?;
            let partial = if kind != BodyKind::BinarySize && p.eat(b'<') {
                let o = p.number()?;
                p.expect(b'.')?;
                let n = p.number()?;
                if n == 0 {
                    return err("partial length must be positive");
                }
                p.expect(b'>')?;
                Some((o, n))
            } else {
                None
            };
            FetchAtt::Section {
                kind,
                peek: name.ends_with(".PEEK") || kind == BodyKind::BinarySize,
                section,
                partial,
            }
        }
        "" => return err("expected a fetch attribute"),
        _ => return err(format!("unknown fetch attribute {name}")),
    };
    Ok(att)
}

pub fn section(p: &mut Parser, binary: bool) -> PResult<Section> {
    p.expect(b'[')?;
    let mut s = Section::default();
    loop {
        if p.peek().is_some_and(|b| b.is_ascii_digit()) {
            let n = p.number()?;
            if n == 0 {
                return err("section numbers start at 1");
            }
            s.part.push(n);
            if s.part.len() > MAX_DEPTH {
                return err("section too deep");
            }
            if p.eat(b'.') {
                continue;
            }
        }
        break;
    }
    if p.peek() != Some(b']') {
        if binary {
            return err("BINARY takes part numbers only");
        }
        let w = {
            let a = p.take_while(|b| b.is_ascii_alphabetic() || b == b'.');
            String::from_utf8_lossy(a).to_ascii_uppercase()
        };
        s.text = Some(match w.as_str() {
            "HEADER" => SectionText::Header,
            "TEXT" => SectionText::Text,
            "MIME" if !s.part.is_empty() => SectionText::Mime,
            "HEADER.FIELDS" | "HEADER.FIELDS.NOT" => {
                p.sp()?;
                let fields = p.list(|p| {
                    String::from_utf8(p.astring()?)
                        .map_err(|_| ParseError("bad header name".into()))
                })?;
                if w == "HEADER.FIELDS" {
                    SectionText::HeaderFields(fields)
                } else {
                    SectionText::HeaderFieldsNot(fields)
                }
            }
            _ => return err(format!("unknown section {w}")),
        });
    }
    p.expect(b']')?;
    Ok(s)
}

fn search_cmd(p: &mut Parser, uid: bool) -> PResult<Command> {
    p.sp()?;
    let ret = ext::esearch::parse_return(p)?;
    let key = search_program(p)?;
    Ok(Command::Search { uid, ret, key })
}

/// `[CHARSET x SP] search-key *(SP search-key)`.
pub fn search_program(p: &mut Parser) -> PResult<Search> {
    if p.keyword("CHARSET") {
        p.sp()?;
        let cs = String::from_utf8_lossy(&p.astring()?).to_ascii_uppercase();
        if !matches!(cs.as_str(), "UTF-8" | "US-ASCII") {
            return err(format!(
                "[BADCHARSET (UTF-8 US-ASCII)] unsupported charset {cs}"
            ));
        }
        p.sp()?;
    }
    let mut keys = vec![search_key(p)?];
    while p.eat(b' ') {
        keys.push(search_key(p)?);
    }
    Ok(if keys.len() == 1 {
        keys.remove(0)
    } else {
        Search::And(keys)
    })
}

fn text(p: &mut Parser) -> PResult<String> {
    p.sp()?;
    Ok(String::from_utf8_lossy(&p.astring()?).into_owned())
}

fn date(p: &mut Parser) -> PResult<i64> {
    p.sp()?;
    let s = String::from_utf8_lossy(&p.astring()?).into_owned();
    parse_date(&s).ok_or_else(|| ParseError(format!("invalid date {s}")))
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `d-Mon-yyyy` to days since the epoch.
pub fn parse_date(s: &str) -> Option<i64> {
    let mut it = s.split('-');
    let d: u32 = it.next()?.trim().parse().ok()?;
    let mon = it.next()?.to_ascii_lowercase();
    let y: i64 = it.next()?.parse().ok()?;
    if it.next().is_some() || !(1..=31).contains(&d) || !(1..=9999).contains(&y) {
        return None;
    }
    let m = MONTHS.iter().position(|x| *x == mon)? as u32 + 1;
    Some(days_from_civil(y, m, d))
}

/// APPEND's date-time `"dd-Mon-yyyy hh:mm:ss +zzzz"` to Unix seconds.
pub fn parse_date_time(s: &str) -> Option<i64> {
    let s = s.trim_start();
    let (date, rest) = s.split_once(' ')?;
    let days = parse_date(date)?;
    let (time, zone) = rest.split_once(' ')?;
    let t: Vec<i64> = time
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [h, mi, se] = t[..] else { return None };
    if !(0..24).contains(&h) || !(0..60).contains(&mi) || !(0..61).contains(&se) {
        return None;
    }
    if zone.len() != 5 || !zone.is_ascii() || !zone[1..].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let sign = match &zone[..1] {
        "+" => 1,
        "-" => -1,
        _ => return None,
    };
    let zh: i64 = zone[1..3].parse().ok()?;
    let zm: i64 = zone[3..5].parse().ok()?;
    if zh > 23 || zm > 59 {
        return None;
    }
    Some(days * 86_400 + h * 3600 + mi * 60 + se - sign * (zh * 3600 + zm * 60))
}

fn search_key(p: &mut Parser) -> PResult<Search> {
    if p.peek() == Some(b'(') {
        let keys = p.list(search_key)?;
        return Ok(Search::And(keys));
    }
    if p.peek()
        .is_some_and(|b| b.is_ascii_digit() || b == b'*' || b == b'$')
    {
        return Ok(Search::Seq(p.sequence_set()?));
    }
    let w = p.atom()?.to_ascii_uppercase();
    let flag = |f: &str, on: bool| Ok(Search::Flag(f.to_owned(), on));
    match w.as_str() {
        "ALL" => Ok(Search::All),
        "ANSWERED" => flag("\\Answered", true),
        "DELETED" => flag("\\Deleted", true),
        "DRAFT" => flag("\\Draft", true),
        "FLAGGED" => flag("\\Flagged", true),
        "SEEN" => flag("\\Seen", true),
        "UNANSWERED" => flag("\\Answered", false),
        "UNDELETED" => flag("\\Deleted", false),
        "UNDRAFT" => flag("\\Draft", false),
        "UNFLAGGED" => flag("\\Flagged", false),
        "UNSEEN" => flag("\\Seen", false),
        "KEYWORD" | "UNKEYWORD" => {
            p.sp()?;
            let k = p.word()?;
            Ok(Search::Flag(k, w == "KEYWORD"))
        }
        "RECENT" => Ok(Search::Recent),
        "NEW" => Ok(Search::New),
        "OLD" => Ok(Search::Old),
        "BEFORE" => Ok(Search::Before(date(p)?)),
        "ON" => Ok(Search::On(date(p)?)),
        "SINCE" => Ok(Search::Since(date(p)?)),
        "SENTBEFORE" => Ok(Search::SentBefore(date(p)?)),
        "SENTON" => Ok(Search::SentOn(date(p)?)),
        "SENTSINCE" => Ok(Search::SentSince(date(p)?)),
        "SAVEDBEFORE" => Ok(Search::SaveDateBefore(date(p)?)),
        "SAVEDON" => Ok(Search::SaveDateOn(date(p)?)),
        "SAVEDSINCE" => Ok(Search::SaveDateSince(date(p)?)),
        "SAVEDATESUPPORTED" => Ok(Search::SaveDateSupported),
        "YOUNGER" => {
            p.sp()?;
            Ok(Search::Younger(p.number64()? as i64))
        }
        "OLDER" => {
            p.sp()?;
            Ok(Search::Older(p.number64()? as i64))
        }
        "LARGER" => {
            p.sp()?;
            Ok(Search::Larger(p.number64()?))
        }
        "SMALLER" => {
            p.sp()?;
            Ok(Search::Smaller(p.number64()?))
        }
        "FROM" | "TO" | "CC" | "BCC" | "SUBJECT" => {
            let field = w[..1].to_owned() + &w[1..].to_ascii_lowercase();
            Ok(Search::Header(field, text(p)?))
        }
        "HEADER" => {
            let f = text(p)?;
            Ok(Search::Header(f, text(p)?))
        }
        "BODY" => Ok(Search::Body(text(p)?)),
        "TEXT" => Ok(Search::Text(text(p)?)),
        "UID" => {
            p.sp()?;
            Ok(Search::Uid(p.sequence_set()?))
        }
        "NOT" => {
            p.sp()?;
            Ok(Search::Not(Box::new(search_key(p)?)))
        }
        "OR" => {
            p.sp()?;
            let a = search_key(p)?;
            p.sp()?;
            let b = search_key(p)?;
            Ok(Search::Or(Box::new(a), Box::new(b)))
        }
        "MODSEQ" => {
            p.sp()?;
            // Optional entry name and type (RFC 7162 3.1.5): accepted, not distinguished.
            if p.peek() == Some(b'"') {
                p.string()?;
                p.sp()?;
                p.atom()?;
                p.sp()?;
            }
            Ok(Search::ModSeq(p.number64()?))
        }
        "EMAILID" => Ok(Search::EmailId(text(p)?)),
        "THREADID" => Ok(Search::ThreadId(text(p)?)),
        _ => err(format!("unknown search key {w}")),
    }
}

fn sort(p: &mut Parser, uid: bool) -> PResult<Command> {
    p.sp()?;
    let ret = ext::esearch::parse_return(p)?;
    let mut reverse = false;
    let mut criteria = Vec::new();
    p.open()?;
    loop {
        let w = p.atom()?.to_ascii_uppercase();
        let k = match w.as_str() {
            "REVERSE" => {
                reverse = true;
                p.sp()?;
                continue;
            }
            "ARRIVAL" => SortKey::Arrival,
            "CC" => SortKey::Cc,
            "DATE" => SortKey::Date,
            "FROM" => SortKey::From,
            "SIZE" => SortKey::Size,
            "SUBJECT" => SortKey::Subject,
            "TO" => SortKey::To,
            "DISPLAYFROM" => SortKey::DisplayFrom,
            "DISPLAYTO" => SortKey::DisplayTo,
            _ => return err(format!("unknown sort key {w}")),
        };
        criteria.push((reverse, k));
        reverse = false;
        if !p.eat(b' ') {
            break;
        }
    }
    p.close()?;
    p.sp()?;
    let cs = String::from_utf8_lossy(&p.astring()?).to_ascii_uppercase();
    if !matches!(cs.as_str(), "UTF-8" | "US-ASCII") {
        return err(format!(
            "[BADCHARSET (UTF-8 US-ASCII)] unsupported charset {cs}"
        ));
    }
    p.sp()?;
    let key = search_program(p)?;
    Ok(Command::Sort {
        uid,
        ret,
        criteria,
        key,
    })
}

fn thread(p: &mut Parser, uid: bool) -> PResult<Command> {
    p.sp()?;
    let a = p.atom()?.to_ascii_uppercase();
    let algorithm = match a.as_str() {
        "ORDEREDSUBJECT" => ThreadAlgorithm::OrderedSubject,
        "REFERENCES" => ThreadAlgorithm::References,
        _ => return err(format!("unknown thread algorithm {a}")),
    };
    p.sp()?;
    let cs = String::from_utf8_lossy(&p.astring()?).to_ascii_uppercase();
    if !matches!(cs.as_str(), "UTF-8" | "US-ASCII") {
        return err(format!(
            "[BADCHARSET (UTF-8 US-ASCII)] unsupported charset {cs}"
        ));
    }
    p.sp()?;
    let key = search_program(p)?;
    Ok(Command::Thread {
        uid,
        algorithm,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(s: &str) -> Command {
        parse_command(s.as_bytes()).expect(s).1
    }

    #[test]
    fn basic_commands() {
        assert_eq!(cmd("a CAPABILITY\r\n"), Command::Capability);
        assert_eq!(
            cmd("a login joe \"p\\\"w\"\r\n"),
            Command::Login(b"joe".to_vec(), b"p\"w".to_vec())
        );
        assert_eq!(
            cmd("a LOGIN {3}\r\njoe {2+}\r\npw\r\n"),
            Command::Login(b"joe".to_vec(), b"pw".to_vec())
        );
        assert!(parse_command(b"a FOO\r\n").is_err());
        assert!(parse_command(b"a LOGIN joe\r\n").is_err());
        assert!(parse_command(b"a NOOP extra\r\n").is_err());
    }

    #[test]
    fn fetch_items() {
        match cmd("a UID FETCH 1:* (FLAGS BODY.PEEK[1.2.HEADER.FIELDS (From To)]<0.100> BINARY.SIZE[1]) (CHANGEDSINCE 5 VANISHED)\r\n") {
            Command::Fetch { uid, atts, changed_since, vanished, .. } => {
                assert!(uid && vanished);
                assert_eq!(changed_since, Some(5));
                assert_eq!(atts.len(), 3);
                assert_eq!(
                    atts[1],
                    FetchAtt::Section {
                        kind: BodyKind::Body,
                        peek: true,
                        section: Section {
                            part: vec![1, 2],
                            text: Some(SectionText::HeaderFields(vec!["From".into(), "To".into()]))
                        },
                        partial: Some((0, 100))
                    }
                );
            }
            c => panic!("{c:?}"),
        }
        assert!(parse_command(b"a FETCH 1 (BINARY[HEADER])\r\n").is_err());
        assert!(parse_command(b"a FETCH 0 FLAGS\r\n").is_err());
    }

    #[test]
    fn search_nesting_is_bounded() {
        let deep = format!("a SEARCH {}ALL{}\r\n", "(".repeat(100), ")".repeat(100));
        assert!(parse_command(deep.as_bytes()).is_err());
        let ok = format!("a SEARCH {}ALL{}\r\n", "(".repeat(5), ")".repeat(5));
        assert!(parse_command(ok.as_bytes()).is_ok());
    }

    #[test]
    fn search_keys() {
        match cmd("a SEARCH CHARSET UTF-8 OR FROM joe NOT SEEN SINCE 1-Feb-2020 UID 1:5,*\r\n") {
            Command::Search {
                key: Search::And(k),
                ..
            } => assert_eq!(k.len(), 3),
            c => panic!("{c:?}"),
        }
        assert_eq!(parse_date("1-Jan-1970"), Some(0));
        assert_eq!(parse_date("2-jan-1970"), Some(1));
        assert_eq!(parse_date_time("01-Jan-1970 01:00:00 +0100"), Some(0));
        // Out-of-range values are refused, never overflow.
        assert_eq!(parse_date("1-Jan-9223372036854775807"), None);
        assert_eq!(
            parse_date_time("01-Jan-1970 99999999999999:00:00 +0000"),
            None
        );
        assert_eq!(parse_date_time("01-Jan-1970 00:00:00 +9999"), None);
        assert_eq!(parse_date_time("01-Jan-1970 00:00:00 +-100"), None);
        assert_eq!(parse_date_time("01-Jan-1970 00:00:00 é123"), None);
    }

    #[test]
    fn markers() {
        assert_eq!(literal_marker(b"a APPEND x {10}\r\n"), Some((10, true)));
        assert_eq!(literal_marker(b"a APPEND x {10+}\r\n"), Some((10, false)));
        assert_eq!(literal_marker(b"a APPEND x ~{10}\r\n"), Some((10, true)));
        assert_eq!(literal_marker(b"a NOOP\r\n"), None);
        assert_eq!(command_name(b"a uid fetch 1 x\r\n"), "UID FETCH");
        assert_eq!(tag_of(b"a1 NOOP\r\n").as_deref(), Some("a1"));
        assert_eq!(tag_of(b"* NOOP\r\n"), None);
    }
}
