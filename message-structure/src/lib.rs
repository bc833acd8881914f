//! Pre-computed IMAP structure of a stored message.
//!
//! At delivery time the store calls [`MessageStructure::parse`] once on the
//! raw (CRLF-normalised) message and keeps the [`MessageStructure::to_bytes`]
//! blob next to it. The IMAP server then answers FETCH ENVELOPE,
//! BODYSTRUCTURE, `BODY[section]`, BINARY, PREVIEW and the SORT/THREAD keys from
//! this blob plus byte ranges of the stored file, without ever re-parsing the
//! message: every part records exact offsets into the raw bytes, and the
//! envelope keeps the raw (unfolded, not RFC 2047-decoded) header strings
//! that IMAP requires.
//!
//! Parsing never panics and never fails: any byte string yields a structure
//! (possibly a single text/plain part). MIME nesting (multipart and
//! message/rfc822 levels together) is capped at [`MAX_DEPTH`]; deeper
//! containers become opaque `application/octet-stream` leaves.
//!
//! Offsets: for every [`BodyPart`], `header_start..body_start` is its MIME
//! header (including the blank line) and `body_start..body_end` its body. The
//! top-level part spans the whole message (`header_start == 0`,
//! `body_start == header_len`, `body_end == size`). For a message/rfc822
//! part, the encapsulated [`BodyPart`] starts at the outer part's
//! `body_start`, so `BODY[n.HEADER]` is `inner.header_start..inner.body_start`
//! and `BODY[n.TEXT]` is `inner.body_start..inner.body_end`.

use serde::{Deserialize, Serialize};

mod address;
mod decode;
mod header;
mod mime;
mod objectid;
mod params;

pub use decode::PREVIEW_MAX_CHARS;
pub use objectid::{EmailId, EmailIdHasher, ThreadId, OBJECT_ID_LEN};

/// Maximum MIME nesting depth (multipart and message/rfc822 levels counted
/// together). Containers deeper than this are treated as opaque leaves.
pub const MAX_DEPTH: usize = 64;

/// Version byte prepended to the serialised form by
/// [`MessageStructure::to_bytes`]. Version 2 adds a trailer after the postcard body: the
/// [`EmailId`] and [`ThreadId`] (12 bytes each), so a reader wanting only the ids takes the
/// last 24 bytes without decoding the rest. Version 1 blobs (no ids) still decode.
pub const FORMAT_VERSION: u8 = 2;

/// The version before object ids; still read.
const FORMAT_VERSION_1: u8 = 1;

/// Length of the version 2 trailer.
const TRAILER_LEN: usize = 2 * OBJECT_ID_LEN;

/// Parameter list: `(attribute, value)` pairs in header order, raw bytes.
pub type Params = Vec<(Vec<u8>, Vec<u8>)>;

/// Errors from [`MessageStructure::from_bytes`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StructureError {
    /// The blob is empty.
    #[error("empty message structure blob")]
    Empty,
    /// The blob was written by an incompatible version of this crate.
    #[error("unsupported message structure format version {0}")]
    UnsupportedVersion(u8),
    /// The blob could not be decoded.
    #[error("corrupt message structure: {0}")]
    Decode(#[from] postcard::Error),
}

/// One IMAP ENVELOPE address.
///
/// Groups follow RFC 3501: a start-of-group entry has `host == None` and the
/// group name in `mailbox`; the end-of-group entry has both `mailbox` and
/// `host` `None` (that is, `Address::default()`). Ordinary addresses always
/// have `mailbox` and `host` set (an empty string when missing in the
/// header).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Address {
    /// Display name, raw: quoted-string content unquoted and unescaped,
    /// RFC 2047 encoded-words left as they are.
    pub name: Option<Vec<u8>>,
    /// Obsolete source route (`@a,@b`), if any.
    pub adl: Option<Vec<u8>>,
    /// Local part (or group name for a start-of-group marker).
    pub mailbox: Option<Vec<u8>>,
    /// Domain.
    pub host: Option<Vec<u8>>,
}

impl Address {
    /// Is this a start-of-group marker?
    pub fn is_group_start(&self) -> bool {
        self.host.is_none() && self.mailbox.is_some()
    }

    /// Is this an end-of-group marker?
    pub fn is_group_end(&self) -> bool {
        self.host.is_none() && self.mailbox.is_none()
    }

    /// Is this a real mailbox (not a group marker)?
    pub fn is_mailbox(&self) -> bool {
        self.host.is_some()
    }
}

/// IMAP ENVELOPE (RFC 3501 7.4.2 / RFC 9051 7.5.2) with raw header values.
///
/// String fields are the unfolded header values (CRLF before whitespace
/// removed, leading/trailing whitespace trimmed), not RFC 2047-decoded;
/// `None` when the header is absent. The first occurrence of each header is
/// used. As RFC 3501 requires, `sender` and `reply_to` are filled from
/// `from` when their header is absent or yields no address.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Envelope {
    pub date: Option<Vec<u8>>,
    pub subject: Option<Vec<u8>>,
    pub from: Vec<Address>,
    pub sender: Vec<Address>,
    pub reply_to: Vec<Address>,
    pub to: Vec<Address>,
    pub cc: Vec<Address>,
    pub bcc: Vec<Address>,
    pub in_reply_to: Option<Vec<u8>>,
    pub message_id: Option<Vec<u8>>,
}

/// Content-Disposition: type and parameters, raw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disposition {
    /// Disposition type as sent (`inline`, `attachment`, ...).
    pub kind: Vec<u8>,
    pub params: Params,
}

/// What kind of BODYSTRUCTURE entry a part is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartContent {
    /// A non-text leaf (body-type-basic). Also used for message/rfc822
    /// parts with a non-identity transfer encoding and for containers
    /// beyond [`MAX_DEPTH`].
    Basic,
    /// A text/* leaf (body-type-text).
    Text {
        /// Number of line endings (LF) in the body.
        lines: u64,
    },
    /// message/rfc822 or message/global (body-type-msg).
    Message {
        /// Envelope of the encapsulated message.
        envelope: Box<Envelope>,
        /// Body of the encapsulated message; its `header_start` equals the
        /// outer part's `body_start`.
        body: Box<BodyPart>,
        /// Number of line endings (LF) in the outer part's body.
        lines: u64,
    },
    /// A multipart (body-type-mpart). Never empty: a multipart without any
    /// delimited part gets one headerless text/plain child spanning its
    /// whole body.
    Multipart { children: Vec<BodyPart> },
}

/// One MIME entity with exact byte offsets into the raw message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BodyPart {
    /// Offset of the first byte of this part's MIME header.
    pub header_start: u64,
    /// Offset of the first body byte (just after the blank line ending the
    /// header; equals `body_end` when there is no blank line).
    pub body_start: u64,
    /// Offset just past the body (the line ending before a boundary
    /// delimiter is not part of the body).
    pub body_end: u64,
    /// Media type as sent (default `text`, or `message` in multipart/digest).
    pub media_type: Vec<u8>,
    /// Media subtype as sent (default `plain`, or `rfc822`).
    pub media_subtype: Vec<u8>,
    /// Content-Type parameters in order; raw values with quotes removed and
    /// RFC 2231 continuations joined. For text parts without a charset,
    /// `("charset", "us-ascii")` is appended. For multiparts, these are the
    /// multipart's parameters (boundary included).
    pub params: Params,
    pub content_id: Option<Vec<u8>>,
    pub description: Option<Vec<u8>>,
    /// Content-Transfer-Encoding token as sent, `7BIT` when absent.
    pub encoding: Vec<u8>,
    /// Body size in octets (`body_end - body_start`).
    pub size: u64,
    pub md5: Option<Vec<u8>>,
    pub disposition: Option<Disposition>,
    /// Content-Language tags in order.
    pub language: Vec<Vec<u8>>,
    pub location: Option<Vec<u8>>,
    pub content: PartContent,
}

impl BodyPart {
    /// Byte range of the MIME header (`BODY[n.MIME]`), blank line included.
    pub fn header_range(&self) -> std::ops::Range<u64> {
        self.header_start..self.body_start
    }

    /// Byte range of the body (`BODY[n]`, `BINARY[n]` before decoding).
    pub fn body_range(&self) -> std::ops::Range<u64> {
        self.body_start..self.body_end
    }

    /// Children of a multipart (empty slice for other parts).
    pub fn children(&self) -> &[BodyPart] {
        match &self.content {
            PartContent::Multipart { children } => children,
            _ => &[],
        }
    }

    pub fn is_multipart(&self) -> bool {
        matches!(self.content, PartContent::Multipart { .. })
    }

    /// Envelope and body of an encapsulated message/rfc822 part.
    pub fn encapsulated(&self) -> Option<(&Envelope, &BodyPart)> {
        match &self.content {
            PartContent::Message { envelope, body, .. } => Some((envelope, body)),
            _ => None,
        }
    }

    /// Line count for text and message parts.
    pub fn lines(&self) -> Option<u64> {
        match &self.content {
            PartContent::Text { lines } | PartContent::Message { lines, .. } => Some(*lines),
            _ => None,
        }
    }

    /// Content-Type parameter value by case-insensitive name.
    pub fn param(&self, name: &str) -> Option<&[u8]> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.as_slice())
    }

    /// Does the part carry `Content-Disposition: attachment`?
    pub fn is_attachment_disposition(&self) -> bool {
        self.disposition
            .as_ref()
            .is_some_and(|d| d.kind.eq_ignore_ascii_case(b"attachment"))
    }

    /// Is this part of the given media type/subtype (case-insensitive)?
    pub fn is_type(&self, media_type: &str, media_subtype: &str) -> bool {
        self.media_type.eq_ignore_ascii_case(media_type.as_bytes())
            && self
                .media_subtype
                .eq_ignore_ascii_case(media_subtype.as_bytes())
    }
}

/// Everything the IMAP/JMAP front ends need about one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageStructure {
    /// Total size of the raw message in octets (RFC822.SIZE).
    pub size: u64,
    /// Length of the top-level header including the separating blank line;
    /// the body (`BODY[TEXT]`) starts at this offset. Equals `size` when the
    /// message has no blank line.
    pub header_len: u64,
    pub envelope: Envelope,
    /// The MIME tree; for a non-multipart message this is the single body.
    pub body: BodyPart,
    /// True when some part is a `Content-Disposition: attachment`, an
    /// attached message, or a non-text leaf that is not an inline part of
    /// multipart/related (embedded images) or the signature of
    /// multipart/signed.
    pub has_attachment: bool,
    /// Up to [`PREVIEW_MAX_CHARS`] characters of the first text/plain part
    /// (else the first text/html part, tags stripped), decoded, whitespace
    /// collapsed (RFC 8970 PREVIEW, JMAP `preview`). Empty when none.
    pub preview: String,
    /// Message ids from the References header, in order, each with its
    /// angle brackets as in the raw header.
    pub references: Vec<Vec<u8>>,
    /// RFC 2047-decoded Subject.
    pub subject_decoded: Option<String>,
    /// Date header as unix seconds; None when absent or unparseable.
    pub date_parsed: Option<i64>,
    /// RFC 5256 sort keys: lowercased local part of the first (non-group)
    /// address of From / To / Cc.
    pub from_sort_key: Option<String>,
    pub to_sort_key: Option<String>,
    pub cc_sort_key: Option<String>,
    /// Decoded display name of the first From address, else `mailbox@host`.
    pub display_from: Option<String>,
    /// Content id (EMAILID, JMAP Email id), computed by [`MessageStructure::parse`]; None
    /// for a structure read from a version 1 blob (made before ids existed): the caller
    /// then computes it from the message with [`EmailId::of_message`]. Carried in the
    /// blob's trailer, not in the postcard body.
    #[serde(skip)]
    pub email_id: Option<EmailId>,
}

fn first_mailbox(list: &[Address]) -> Option<&Address> {
    list.iter().find(|a| a.is_mailbox())
}

fn sort_key(list: &[Address]) -> Option<String> {
    first_mailbox(list)
        .and_then(|a| a.mailbox.as_ref())
        .map(|m| String::from_utf8_lossy(m).to_lowercase())
}

fn display_name(list: &[Address]) -> Option<String> {
    let a = first_mailbox(list)?;
    if let Some(name) = &a.name {
        let decoded = decode::decode_rfc2047(name);
        let decoded = decoded.trim();
        if !decoded.is_empty() {
            return Some(decoded.to_string());
        }
    }
    let mailbox = String::from_utf8_lossy(a.mailbox.as_deref().unwrap_or_default());
    let host = String::from_utf8_lossy(a.host.as_deref().unwrap_or_default());
    match (mailbox.is_empty(), host.is_empty()) {
        (true, true) => None,
        (_, true) => Some(mailbox.into_owned()),
        _ => Some(format!("{mailbox}@{host}")),
    }
}

fn message_ids(v: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(open) = v[i..].iter().position(|&b| b == b'<') {
        let start = i + open;
        match v[start..].iter().position(|&b| b == b'>') {
            Some(close) => {
                let id = &v[start..=start + close];
                if id.len() > 2 {
                    out.push(id.to_vec());
                }
                i = start + close + 1;
            }
            None => break,
        }
    }
    out
}

fn has_attachment(part: &BodyPart, parent: Option<&BodyPart>, index: usize) -> bool {
    if part.is_attachment_disposition() {
        return true;
    }
    match &part.content {
        PartContent::Multipart { children } => children
            .iter()
            .enumerate()
            .any(|(i, c)| has_attachment(c, Some(part), i)),
        PartContent::Message { .. } => true,
        PartContent::Text { .. } => false,
        PartContent::Basic => match parent {
            Some(p) if p.is_type("multipart", "related") => false,
            Some(p) if p.is_type("multipart", "signed") && index == 1 => false,
            _ => true,
        },
    }
}

impl MessageStructure {
    /// Compute the structure of a raw message. Never panics; works on CRLF
    /// and bare-LF messages, truncated MIME and arbitrary bytes.
    pub fn parse(raw: &[u8]) -> MessageStructure {
        let (body, hb) = mime::build_part(raw, 0, raw.len(), false, 0);
        let envelope = mime::envelope_from(&hb);
        let references = hb
            .value(b"references")
            .map(|v| message_ids(&v))
            .unwrap_or_default();
        let subject_decoded = envelope.subject.as_deref().map(decode::decode_rfc2047);
        let date_parsed = envelope.date.as_deref().and_then(decode::parse_date);
        let preview = decode::preview(raw, &body);
        MessageStructure {
            size: raw.len() as u64,
            header_len: body.body_start,
            has_attachment: has_attachment(&body, None, 0),
            preview,
            references,
            subject_decoded,
            date_parsed,
            from_sort_key: sort_key(&envelope.from),
            to_sort_key: sort_key(&envelope.to),
            cc_sort_key: sort_key(&envelope.cc),
            display_from: display_name(&envelope.from),
            envelope,
            body,
            email_id: Some(EmailId::of_message(raw)),
        }
    }

    /// The Message-ID naming this message's thread: the first References id, else the
    /// first In-Reply-To id, else its own Message-ID (without brackets). None when the
    /// message names no id at all.
    pub fn thread_root(&self) -> Option<Vec<u8>> {
        self.references
            .iter()
            .find_map(|r| objectid::first_msgid(r))
            .or_else(|| {
                self.envelope
                    .in_reply_to
                    .as_deref()
                    .and_then(objectid::first_msgid)
            })
            .or_else(|| {
                self.envelope
                    .message_id
                    .as_deref()
                    .and_then(objectid::first_msgid)
            })
    }

    /// The thread id, given the message's email id (needed only when it names no
    /// Message-ID; see [`MessageStructure::email_id`] for structures without one).
    pub fn thread_id_with(&self, email: EmailId) -> ThreadId {
        match self.thread_root() {
            Some(root) => ThreadId::of_root(&root),
            None => ThreadId::of_email(email),
        }
    }

    /// Email and thread ids, when the structure carries its email id.
    pub fn object_ids(&self) -> Option<(EmailId, ThreadId)> {
        let e = self.email_id?;
        Some((e, self.thread_id_with(e)))
    }

    /// Email and thread ids from a blob's trailer, without decoding the structure. None for
    /// a version 1 blob or one too short to hold them.
    pub fn object_ids_from_bytes(bytes: &[u8]) -> Option<(EmailId, ThreadId)> {
        if bytes.first() != Some(&FORMAT_VERSION) || bytes.len() < 1 + TRAILER_LEN {
            return None;
        }
        let t = &bytes[bytes.len() - TRAILER_LEN..];
        let mut e = [0u8; OBJECT_ID_LEN];
        let mut th = [0u8; OBJECT_ID_LEN];
        e.copy_from_slice(&t[..OBJECT_ID_LEN]);
        th.copy_from_slice(&t[OBJECT_ID_LEN..]);
        Some((EmailId(e), ThreadId(th)))
    }

    /// Serialise with postcard, prefixed by [`FORMAT_VERSION`] and followed by the object
    /// ids. A structure without an email id (read from a version 1 blob) is written in
    /// version 1 form rather than with made-up ids.
    pub fn to_bytes(&self) -> Vec<u8> {
        let ids = self.object_ids();
        let mut out = vec![if ids.is_some() {
            FORMAT_VERSION
        } else {
            FORMAT_VERSION_1
        }];
        // Serialising these plain data types into a Vec cannot fail.
        postcard::to_io(self, &mut out).expect("postcard serialisation into a Vec");
        if let Some((e, t)) = ids {
            out.extend_from_slice(&e.0);
            out.extend_from_slice(&t.0);
        }
        out
    }

    /// Deserialise a blob written by [`MessageStructure::to_bytes`] (either version).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StructureError> {
        let (&version, rest) = bytes.split_first().ok_or(StructureError::Empty)?;
        match version {
            FORMAT_VERSION_1 => Ok(postcard::from_bytes(rest)?),
            FORMAT_VERSION => {
                let (mut st, trailer): (MessageStructure, &[u8]) = postcard::take_from_bytes(rest)?;
                if trailer.len() != TRAILER_LEN {
                    return Err(StructureError::Decode(
                        postcard::Error::DeserializeUnexpectedEnd,
                    ));
                }
                let mut e = [0u8; OBJECT_ID_LEN];
                e.copy_from_slice(&trailer[..OBJECT_ID_LEN]);
                st.email_id = Some(EmailId(e));
                Ok(st)
            }
            other => Err(StructureError::UnsupportedVersion(other)),
        }
    }

    /// Look up a part by IMAP section number (`[1]`, `[1, 2]`, `[2, 1, 3]`).
    ///
    /// IMAP semantics: for a non-multipart message, part 1 is the body
    /// itself; the children of a multipart are numbered from 1; the parts
    /// of a message/rfc822 part are numbered within the encapsulated message
    /// (so `[2, 1]` is the first part of the message attached as part 2, or
    /// its whole body if that message is not multipart). Returns None for
    /// an empty section, a 0 component or a number out of range.
    pub fn part(&self, section: &[u32]) -> Option<&BodyPart> {
        /// Pick number `n` within `ctx`, the body of a message or a
        /// multipart: a multipart's n-th child, or for a non-multipart
        /// message body, the body itself as part 1.
        fn select(ctx: &BodyPart, n: u32) -> Option<&BodyPart> {
            let idx = (n as usize).checked_sub(1)?;
            match &ctx.content {
                PartContent::Multipart { children } => children.get(idx),
                _ if idx == 0 => Some(ctx),
                _ => None,
            }
        }
        let (&last, init) = section.split_last()?;
        let mut ctx = &self.body;
        for &n in init {
            let selected = select(ctx, n)?;
            ctx = match &selected.content {
                PartContent::Message { body, .. } => body,
                PartContent::Multipart { .. } => selected,
                // Leaves have no subparts.
                _ => return None,
            };
        }
        select(ctx, last)
    }

    /// Byte range of the top-level header (`BODY[HEADER]`).
    pub fn header_range(&self) -> std::ops::Range<u64> {
        0..self.header_len
    }

    /// Byte range of the top-level body (`BODY[TEXT]`).
    pub fn text_range(&self) -> std::ops::Range<u64> {
        self.header_len..self.size
    }
}
