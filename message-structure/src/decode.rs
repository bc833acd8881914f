//! The parts that need real decoding (RFC 2047, transfer encodings,
//! charsets, dates, HTML stripping) are delegated to mail-parser. Each call
//! is wrapped in `catch_unwind` as a second line of defence, so a bug in a
//! decoder can only lose a derived field, never abort delivery.

use mail_parser::decoders::base64::base64_decode;
use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::decoders::html::html_to_text;
use mail_parser::decoders::quoted_printable::quoted_printable_decode;
use mail_parser::parsers::MessageStream;
use mail_parser::{DateTime, HeaderValue};

use crate::{BodyPart, PartContent};

/// Maximum number of characters in a preview.
pub const PREVIEW_MAX_CHARS: usize = 200;
/// How much of a text part's encoded body is decoded for the preview.
const PREVIEW_TEXT_INPUT: usize = 16 * 1024;
/// HTML carries markup, so look at more of it.
const PREVIEW_HTML_INPUT: usize = 128 * 1024;

fn guard<T>(f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok()
}

/// Decode RFC 2047 encoded-words in an unstructured (unfolded) value.
pub(crate) fn decode_rfc2047(raw: &[u8]) -> String {
    let mut buf = Vec::with_capacity(raw.len() + 1);
    buf.extend(raw.iter().map(|&b| if b == b'\n' { b' ' } else { b }));
    buf.push(b'\n');
    guard(|| match MessageStream::new(&buf).parse_unstructured() {
        HeaderValue::Text(t) => t.into_owned(),
        _ => String::new(),
    })
    .unwrap_or_else(|| String::from_utf8_lossy(raw).into_owned())
}

/// Parse an RFC 5322 date into unix seconds.
pub(crate) fn parse_date(raw: &[u8]) -> Option<i64> {
    let s = String::from_utf8_lossy(raw);
    guard(|| {
        DateTime::parse_rfc822(&s)
            .filter(DateTime::is_valid)
            .map(|d| d.to_timestamp())
    })
    .flatten()
}

/// Keep only bytes that can appear in base64, for a second decoding attempt.
fn base64_filter(b: &[u8]) -> Vec<u8> {
    b.iter()
        .copied()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='))
        .collect()
}

/// Decode a part body (transfer encoding, then charset) to text.
pub(crate) fn decode_text(part: &BodyPart, body: &[u8]) -> String {
    let enc = &part.encoding;
    let decoded: Vec<u8> = if enc.eq_ignore_ascii_case(b"base64") {
        guard(|| base64_decode(body).or_else(|| base64_decode(&base64_filter(body))))
            .flatten()
            .unwrap_or_default()
    } else if enc.eq_ignore_ascii_case(b"quoted-printable") {
        guard(|| {
            quoted_printable_decode(body).unwrap_or_else(|| {
                let (end, bytes) = MessageStream::new(body).decode_quoted_printable_mime(b"");
                if end == usize::MAX {
                    body.to_vec()
                } else {
                    bytes.into_owned()
                }
            })
        })
        .unwrap_or_else(|| body.to_vec())
    } else {
        body.to_vec()
    };
    let charset = part
        .params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(b"charset"))
        .map(|(_, v)| crate::header::trim(v));
    // Undeclared 8-bit text labelled (or defaulted to) US-ASCII is nearly
    // always UTF-8 in practice; UTF-8 is a superset of ASCII anyway.
    let ascii_label = charset.is_none_or(|c| {
        c.eq_ignore_ascii_case(b"us-ascii")
            || c.eq_ignore_ascii_case(b"ascii")
            || c.eq_ignore_ascii_case(b"utf-8")
            || c.eq_ignore_ascii_case(b"utf8")
    });
    if ascii_label {
        if let Ok(s) = std::str::from_utf8(&decoded) {
            return s.to_string();
        }
    }
    let via_charset = charset
        .filter(|c| !c.is_empty())
        .and_then(|c| guard(|| charset_decoder(c).map(|f| f(&decoded))).flatten());
    via_charset.unwrap_or_else(|| String::from_utf8_lossy(&decoded).into_owned())
}

/// First part of the given text subtype in reading order, not descending
/// into attached messages and skipping attachments.
fn find_text<'a>(part: &'a BodyPart, subtype: &str) -> Option<&'a BodyPart> {
    if part.is_attachment_disposition() {
        return None;
    }
    match &part.content {
        PartContent::Multipart { children } => children.iter().find_map(|c| find_text(c, subtype)),
        PartContent::Text { .. } if part.media_subtype.eq_ignore_ascii_case(subtype.as_bytes()) => {
            Some(part)
        }
        _ => None,
    }
}

/// Cut `body` to at most `limit` bytes, preferably at a line end.
fn cut(body: &[u8], limit: usize) -> &[u8] {
    if body.len() <= limit {
        return body;
    }
    let head = &body[..limit];
    match head.iter().rposition(|&b| b == b'\n') {
        Some(i) if i > 0 => &head[..=i],
        _ => head,
    }
}

/// Collapse whitespace, drop control characters and keep the first
/// [`PREVIEW_MAX_CHARS`] characters.
pub(crate) fn collapse(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut count = 0;
    let mut pending_space = false;
    for ch in text.chars() {
        if ch.is_whitespace() {
            pending_space = count > 0;
            continue;
        }
        if ch.is_control() || ch == '\u{feff}' {
            continue;
        }
        if pending_space {
            if count + 1 >= max {
                break;
            }
            out.push(' ');
            count += 1;
            pending_space = false;
        }
        if count >= max {
            break;
        }
        out.push(ch);
        count += 1;
    }
    out
}

/// Compute the preview text for a message.
pub(crate) fn preview(raw: &[u8], root: &BodyPart) -> String {
    let (part, html) = match find_text(root, "plain") {
        Some(p) => (p, false),
        None => match find_text(root, "html") {
            Some(p) => (p, true),
            None => return String::new(),
        },
    };
    let body = raw
        .get(part.body_start as usize..part.body_end as usize)
        .unwrap_or(&[]);
    let body = cut(
        body,
        if html {
            PREVIEW_HTML_INPUT
        } else {
            PREVIEW_TEXT_INPUT
        },
    );
    let text = decode_text(part, body);
    let text = if html {
        guard(|| html_to_text(&text)).unwrap_or_default()
    } else {
        text
    };
    collapse(&text, PREVIEW_MAX_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2047() {
        assert_eq!(
            decode_rfc2047(b"=?ISO-8859-1?Q?Andr=E9?= Pirard"),
            "André Pirard"
        );
        assert_eq!(decode_rfc2047(b"plain  text"), "plain  text");
        assert_eq!(decode_rfc2047(b""), "");
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date(b"Thu, 1 Jan 1970 00:00:00 +0000"), Some(0));
        assert_eq!(
            parse_date(b"Mon, 7 Feb 1994 21:52:25 -0800 (PST)"),
            Some(760_686_745)
        );
        assert_eq!(parse_date(b"not a date"), None);
        assert_eq!(parse_date(b""), None);
    }

    #[test]
    fn collapse_ws() {
        assert_eq!(collapse("  a \r\n\t b  ", 200), "a b");
        assert_eq!(collapse("abcdef", 3), "abc");
        assert_eq!(collapse("ab cd", 3), "ab");
        assert_eq!(collapse("", 3), "");
    }
}
