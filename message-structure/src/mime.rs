//! MIME tree construction over the raw bytes, with exact offsets.
//!
//! The splitter follows RFC 2046: a boundary delimiter line is
//! `--boundary` at the start of a line, optionally followed by `--` (close
//! delimiter, anything after it ignored) or by transport padding only. The
//! line ending preceding a delimiter line belongs to the delimiter, so a
//! part's body ends before it. Nesting is bounded by [`crate::MAX_DEPTH`].

use crate::address::parse_address_list;
use crate::header::{line_at, HeaderBlock};
use crate::params::{parse_content_type, parse_disposition};
use crate::{BodyPart, Disposition, Envelope, PartContent};

fn eq(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

pub(crate) fn count_lines(raw: &[u8], start: usize, end: usize) -> u64 {
    raw.get(start..end)
        .unwrap_or(&[])
        .iter()
        .filter(|&&b| b == b'\n')
        .count() as u64
}

/// Build the envelope from a message header block, filling Sender and
/// Reply-To from From when they are absent or empty (RFC 3501 7.4.2).
pub(crate) fn envelope_from(hb: &HeaderBlock<'_>) -> Envelope {
    let addrs = |name: &[u8]| {
        hb.value(name)
            .map(|v| parse_address_list(&v))
            .unwrap_or_default()
    };
    let from = addrs(b"from");
    let mut sender = addrs(b"sender");
    if sender.is_empty() {
        sender = from.clone();
    }
    let mut reply_to = addrs(b"reply-to");
    if reply_to.is_empty() {
        reply_to = from.clone();
    }
    Envelope {
        date: hb.value(b"date"),
        subject: hb.value(b"subject"),
        from,
        sender,
        reply_to,
        to: addrs(b"to"),
        cc: addrs(b"cc"),
        bcc: addrs(b"bcc"),
        in_reply_to: hb.value(b"in-reply-to"),
        message_id: hb.value(b"message-id"),
    }
}

/// Does the line `[p, content_end)` delimit a part for `boundary`?
/// Returns Some(is_close) when it does.
fn boundary_line(line: &[u8], boundary: &[u8]) -> Option<bool> {
    let rest = line.strip_prefix(b"--")?.strip_prefix(boundary)?;
    if rest.starts_with(b"--") {
        Some(true)
    } else if rest.iter().all(|&b| matches!(b, b' ' | b'\t' | b'\r')) {
        Some(false)
    } else {
        None
    }
}

/// Split a multipart body `[start, end)` into part ranges.
fn split_parts(raw: &[u8], start: usize, end: usize, boundary: &[u8]) -> Vec<(usize, usize)> {
    let mut parts = Vec::new();
    let mut current: Option<usize> = None;
    let mut p = start;
    while p < end {
        let (content_end, next) = line_at(raw, p, end);
        if let Some(is_close) = boundary_line(&raw[p..content_end], boundary) {
            if let Some(s) = current {
                // The line ending before the delimiter belongs to it.
                let mut part_end = p;
                if p > start && raw[p - 1] == b'\n' {
                    part_end -= 1;
                    if part_end > start && raw[part_end - 1] == b'\r' {
                        part_end -= 1;
                    }
                }
                parts.push((s, part_end.max(s)));
            }
            if is_close {
                return parts;
            }
            current = Some(next);
        }
        if next <= p {
            break;
        }
        p = next;
    }
    if let Some(s) = current {
        // Unterminated multipart: the last part runs to the end.
        parts.push((s.min(end), end));
    }
    parts
}

fn is_identity_encoding(enc: &[u8]) -> bool {
    eq(enc, "7bit") || eq(enc, "8bit") || eq(enc, "binary")
}

fn param<'a>(params: &'a [(Vec<u8>, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    params
        .iter()
        .find(|(n, _)| eq(n, name))
        .map(|(_, v)| v.as_slice())
}

/// Build the body part for the entity whose header starts at `start` and
/// whose body ends at `end`. `default_message` selects the multipart/digest
/// default type. Returns the part and its header block.
pub(crate) fn build_part<'a>(
    raw: &'a [u8],
    start: usize,
    end: usize,
    default_message: bool,
    depth: usize,
) -> (BodyPart, HeaderBlock<'a>) {
    let end = end.min(raw.len());
    let start = start.min(end);
    let hb = HeaderBlock::parse(raw, start, end);
    let body_start = hb.body_start;
    let body_end = end;

    let (mut media_type, mut media_subtype, mut params) = hb
        .value(b"content-type")
        .and_then(|v| parse_content_type(&v))
        .unwrap_or_else(|| {
            if default_message {
                (b"message".to_vec(), b"rfc822".to_vec(), Vec::new())
            } else {
                (b"text".to_vec(), b"plain".to_vec(), Vec::new())
            }
        });
    let encoding = hb
        .value(b"content-transfer-encoding")
        .map(|v| {
            v.split(|&b| matches!(b, b' ' | b'\t' | b'(' | b';'))
                .next()
                .unwrap_or(&[])
                .to_vec()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| b"7BIT".to_vec());
    let disposition = hb
        .value(b"content-disposition")
        .and_then(|v| parse_disposition(&v))
        .map(|(kind, params)| Disposition { kind, params });
    let language = hb
        .value(b"content-language")
        .map(|v| {
            v.split(|&b| b == b',')
                .map(crate::header::trim)
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec)
                .collect()
        })
        .unwrap_or_default();

    let is_multipart = eq(&media_type, "multipart");
    let is_message = eq(&media_type, "message")
        && (eq(&media_subtype, "rfc822") || eq(&media_subtype, "global"))
        && is_identity_encoding(&encoding);
    let is_text = eq(&media_type, "text");
    if is_text && param(&params, "charset").is_none() {
        params.push((b"charset".to_vec(), b"us-ascii".to_vec()));
    }

    let content = if (is_multipart || is_message) && depth >= crate::MAX_DEPTH {
        // Too deep: an opaque leaf that IMAP can describe as a basic part.
        media_type = b"application".to_vec();
        media_subtype = b"octet-stream".to_vec();
        PartContent::Basic
    } else if is_multipart {
        let default_child_message = eq(&media_subtype, "digest");
        let ranges = match param(&params, "boundary") {
            Some(b) if !b.is_empty() => split_parts(raw, body_start, body_end, b),
            _ => Vec::new(),
        };
        let mut children: Vec<BodyPart> = ranges
            .into_iter()
            .map(|(s, e)| build_part(raw, s, e, default_child_message, depth + 1).0)
            .collect();
        if children.is_empty() {
            // IMAP requires at least one child: expose the whole body as a
            // headerless text/plain part.
            children.push(BodyPart {
                header_start: body_start as u64,
                body_start: body_start as u64,
                body_end: body_end as u64,
                media_type: b"text".to_vec(),
                media_subtype: b"plain".to_vec(),
                params: vec![(b"charset".to_vec(), b"us-ascii".to_vec())],
                content_id: None,
                description: None,
                encoding: b"7BIT".to_vec(),
                size: (body_end - body_start) as u64,
                md5: None,
                disposition: None,
                language: Vec::new(),
                location: None,
                content: PartContent::Text {
                    lines: count_lines(raw, body_start, body_end),
                },
            });
        }
        PartContent::Multipart { children }
    } else if is_message {
        let (inner, inner_hb) = build_part(raw, body_start, body_end, false, depth + 1);
        PartContent::Message {
            envelope: Box::new(envelope_from(&inner_hb)),
            body: Box::new(inner),
            lines: count_lines(raw, body_start, body_end),
        }
    } else if is_text {
        PartContent::Text {
            lines: count_lines(raw, body_start, body_end),
        }
    } else {
        PartContent::Basic
    };

    let part = BodyPart {
        header_start: start as u64,
        body_start: body_start as u64,
        body_end: body_end as u64,
        media_type,
        media_subtype,
        params,
        content_id: hb.value(b"content-id"),
        description: hb.value(b"content-description"),
        encoding,
        size: (body_end - body_start) as u64,
        md5: hb.value(b"content-md5"),
        disposition,
        language,
        location: hb.value(b"content-location"),
        content,
    };
    (part, hb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_lines() {
        assert_eq!(boundary_line(b"--abc", b"abc"), Some(false));
        assert_eq!(boundary_line(b"--abc  ", b"abc"), Some(false));
        assert_eq!(boundary_line(b"--abc--", b"abc"), Some(true));
        assert_eq!(boundary_line(b"--abc-- junk", b"abc"), Some(true));
        assert_eq!(boundary_line(b"--abcdef", b"abc"), None);
        assert_eq!(boundary_line(b"x--abc", b"abc"), None);
    }

    #[test]
    fn split_simple() {
        let body = b"preamble\r\n--b\r\nA\r\n--b\r\n\r\nB\r\n--b--\r\nepilogue";
        let parts = split_parts(body, 0, body.len(), b"b");
        let got: Vec<&[u8]> = parts.iter().map(|&(s, e)| &body[s..e]).collect();
        assert_eq!(got, vec![&b"A"[..], &b"\r\nB"[..]]);
    }

    #[test]
    fn split_edge_cases() {
        // Delimiter at the very start, empty part, unterminated last part.
        let body = b"--b\n--b\nx\n";
        let parts = split_parts(body, 0, body.len(), b"b");
        let got: Vec<&[u8]> = parts.iter().map(|&(s, e)| &body[s..e]).collect();
        assert_eq!(got, vec![&b""[..], &b"x\n"[..]]);
        // Delimiter as last line without line ending.
        let body = b"--b\r\nx\r\n--b";
        let parts = split_parts(body, 0, body.len(), b"b");
        let got: Vec<&[u8]> = parts.iter().map(|&(s, e)| &body[s..e]).collect();
        assert_eq!(got, vec![&b"x"[..], &b""[..]]);
    }
}
