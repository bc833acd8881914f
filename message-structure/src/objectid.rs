//! Object ids (RFC 8474 EMAILID and THREADID, JMAP Email and Thread ids), derived from the
//! message itself so that every process, every folder and every copy agrees on them without
//! a shared table.
//!
//! - [`EmailId`]: the first 96 bits of the SHA-256 of the raw (CRLF-normalised) message, as
//!   Cyrus does with its message GUID: a COPY or MOVE keeps it, and identical content in two
//!   folders is one Email.
//! - [`ThreadId`]: the first 96 bits of the SHA-256 of the thread root's Message-ID: the
//!   first References id, else the first In-Reply-To id, else the message's own Message-ID,
//!   else (no ids at all) its EmailId. A reply whose References lost the root starts a new
//!   thread; that is the price of having no thread table.

use std::fmt;

use sha2::{Digest, Sha256};

/// Bytes kept of each SHA-256 digest (96 bits, as Cyrus's `M` + 24 hex digits).
pub const OBJECT_ID_LEN: usize = 12;

fn digest(parts: &[&[u8]]) -> [u8; OBJECT_ID_LEN] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    let full = h.finalize();
    let mut out = [0u8; OBJECT_ID_LEN];
    out.copy_from_slice(&full[..OBJECT_ID_LEN]);
    out
}

fn write_hex(f: &mut fmt::Formatter<'_>, prefix: char, b: &[u8]) -> fmt::Result {
    write!(f, "{prefix}")?;
    for x in b {
        write!(f, "{x:02x}")?;
    }
    Ok(())
}

fn parse_hex(s: &str, prefix: char) -> Option<[u8; OBJECT_ID_LEN]> {
    let hex = s.strip_prefix(prefix)?.as_bytes();
    if hex.len() != OBJECT_ID_LEN * 2 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; OBJECT_ID_LEN];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// A message's content id: `M` and 24 lower-case hex digits (RFC 8474 `objectid` syntax).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailId(pub [u8; OBJECT_ID_LEN]);

impl EmailId {
    /// The id of a raw message (the bytes as stored: CRLF line endings).
    pub fn of_message(raw: &[u8]) -> EmailId {
        EmailId(digest(&[raw]))
    }

    /// Parse the string form; None for anything that is not exactly one.
    pub fn parse(s: &str) -> Option<EmailId> {
        parse_hex(s, 'M').map(EmailId)
    }
}

impl fmt::Display for EmailId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, 'M', &self.0)
    }
}

impl fmt::Debug for EmailId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Computes an [`EmailId`] from a message read in pieces (large messages are never held
/// whole in memory).
#[derive(Clone, Default)]
pub struct EmailIdHasher(Sha256);

impl EmailIdHasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finish(self) -> EmailId {
        let full = self.0.finalize();
        let mut out = [0u8; OBJECT_ID_LEN];
        out.copy_from_slice(&full[..OBJECT_ID_LEN]);
        EmailId(out)
    }
}

/// A conversation's id: `T` and 24 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ThreadId(pub [u8; OBJECT_ID_LEN]);

impl ThreadId {
    /// The thread of a message whose root Message-ID is `root` (as written, brackets
    /// optional).
    pub fn of_root(root: &[u8]) -> ThreadId {
        ThreadId(digest(&[b"msgid\0", &normalize_msgid(root)]))
    }

    /// The thread of a message that names no Message-ID at all: its own.
    pub fn of_email(email: EmailId) -> ThreadId {
        ThreadId(digest(&[b"email\0", &email.0]))
    }

    pub fn parse(s: &str) -> Option<ThreadId> {
        parse_hex(s, 'T').map(ThreadId)
    }
}

impl fmt::Display for ThreadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, 'T', &self.0)
    }
}

impl fmt::Debug for ThreadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The comparable form of a Message-ID: without angle brackets and whitespace (folding
/// inside `<...>` happens), so `<a@b>`, `< a@b >` and `a@b` name one message.
fn normalize_msgid(id: &[u8]) -> Vec<u8> {
    id.iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'<' && *b != b'>')
        .collect()
}

/// The first `<...>` id of a header value, else the whole value when it holds no brackets
/// but is one non-empty token (mailers that forget the brackets).
pub(crate) fn first_msgid(v: &[u8]) -> Option<Vec<u8>> {
    if let Some(open) = v.iter().position(|&b| b == b'<') {
        let rest = &v[open + 1..];
        let close = rest.iter().position(|&b| b == b'>')?;
        let id = normalize_msgid(&rest[..close]);
        return (!id.is_empty()).then_some(id);
    }
    let id = normalize_msgid(v);
    (!id.is_empty() && !v.trim_ascii().iter().any(u8::is_ascii_whitespace)).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_and_parse() {
        let e = EmailId::of_message(b"Subject: x\r\n\r\nbody\r\n");
        let s = e.to_string();
        assert_eq!(s.len(), 25);
        assert!(s.starts_with('M'));
        assert_eq!(EmailId::parse(&s), Some(e));
        let mut h = EmailIdHasher::new();
        h.update(b"Subject: x\r\n");
        h.update(b"\r\nbody\r\n");
        assert_eq!(h.finish(), e);
        let t = ThreadId::of_root(b"<a@b>");
        assert_eq!(ThreadId::parse(&t.to_string()), Some(t));
        for bad in [
            "",
            "M",
            "M00",
            &s.to_uppercase(),
            &format!("{s}0"),
            "T",
            "Mzz",
        ] {
            assert_eq!(EmailId::parse(bad), None, "{bad}");
        }
        assert_eq!(ThreadId::parse(&s), None);
        assert_eq!(EmailId::parse("Mé12345678901234567890123"), None);
    }

    #[test]
    fn msgids_compare_without_brackets_and_folding() {
        assert_eq!(ThreadId::of_root(b"<a@b>"), ThreadId::of_root(b"a@b"));
        assert_eq!(
            ThreadId::of_root(b"<a@b>"),
            ThreadId::of_root(b"< a@\r\n b>")
        );
        assert_ne!(ThreadId::of_root(b"<a@b>"), ThreadId::of_root(b"<a@c>"));
        assert_eq!(first_msgid(b" <x@y> <z@w>"), Some(b"x@y".to_vec()));
        assert_eq!(first_msgid(b"x@y"), Some(b"x@y".to_vec()));
        assert_eq!(first_msgid(b"some text"), None);
        assert_eq!(first_msgid(b"<>"), None);
        assert_eq!(first_msgid(b"<unclosed"), None);
        assert_eq!(first_msgid(b""), None);
    }
}
