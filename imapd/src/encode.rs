//! Response encoding: strings, ENVELOPE, BODY/BODYSTRUCTURE (RFC 3501 7.4.2), and the
//! transfer decoding BINARY needs (RFC 3516).

use message_structure::{Address, BodyPart, Envelope, PartContent};

/// A string as a quoted string when it can be one, else as a literal.
pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    let quotable = s.len() < 1024 && s.iter().all(|b| (0x20..0x7f).contains(b));
    if quotable {
        out.push(b'"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        literal(out, s);
    }
}

pub fn literal(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
    out.extend_from_slice(s);
}

pub fn nstring(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// A mailbox name (already in the wire encoding): an atom-safe name as it is, else quoted.
pub fn mailbox(out: &mut Vec<u8>, name: &str) {
    let atom = !name.is_empty()
        && name
            .bytes()
            .all(|b| (0x21..0x7f).contains(&b) && !b"(){%*\"\\]".contains(&b));
    if atom {
        out.extend_from_slice(name.as_bytes());
    } else if name.len() < 1024 && name.bytes().all(|b| b >= 0x20 && b != 0x7f) {
        // UTF-8 names (UTF8=ACCEPT, RFC 6855) may be quoted strings.
        out.push(b'"');
        for b in name.bytes() {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        string(out, name.as_bytes());
    }
}

fn addresses(out: &mut Vec<u8>, list: &[Address]) {
    if list.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for a in list {
        out.push(b'(');
        nstring(out, a.name.as_deref());
        out.push(b' ');
        nstring(out, a.adl.as_deref());
        out.push(b' ');
        nstring(out, a.mailbox.as_deref());
        out.push(b' ');
        nstring(out, a.host.as_deref());
        out.push(b')');
    }
    out.push(b')');
}

pub fn envelope(out: &mut Vec<u8>, e: &Envelope) {
    out.push(b'(');
    nstring(out, e.date.as_deref());
    out.push(b' ');
    nstring(out, e.subject.as_deref());
    for list in [&e.from, &e.sender, &e.reply_to, &e.to, &e.cc, &e.bcc] {
        out.push(b' ');
        addresses(out, list);
    }
    out.push(b' ');
    nstring(out, e.in_reply_to.as_deref());
    out.push(b' ');
    nstring(out, e.message_id.as_deref());
    out.push(b')');
}

fn params(out: &mut Vec<u8>, params: &[(Vec<u8>, Vec<u8>)]) {
    if params.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        string(out, k);
        out.push(b' ');
        string(out, v);
    }
    out.push(b')');
}

fn extension(out: &mut Vec<u8>, p: &BodyPart) {
    out.push(b' ');
    match &p.disposition {
        Some(d) => {
            out.push(b'(');
            string(out, &d.kind);
            out.push(b' ');
            params(out, &d.params);
            out.push(b')');
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    match p.language.len() {
        0 => out.extend_from_slice(b"NIL"),
        _ => {
            out.push(b'(');
            for (i, l) in p.language.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                string(out, l);
            }
            out.push(b')');
        }
    }
    out.push(b' ');
    nstring(out, p.location.as_deref());
}

/// BODYSTRUCTURE (`extended`) or BODY.
pub fn body_structure(out: &mut Vec<u8>, p: &BodyPart, extended: bool) {
    out.push(b'(');
    match &p.content {
        PartContent::Multipart { children } => {
            for c in children {
                body_structure(out, c, extended);
            }
            out.push(b' ');
            string(out, &p.media_subtype);
            if extended {
                out.push(b' ');
                params(out, &p.params);
                extension(out, p);
            }
        }
        _ => {
            string(out, &p.media_type);
            out.push(b' ');
            string(out, &p.media_subtype);
            out.push(b' ');
            params(out, &p.params);
            out.push(b' ');
            nstring(out, p.content_id.as_deref());
            out.push(b' ');
            nstring(out, p.description.as_deref());
            out.push(b' ');
            string(out, &p.encoding);
            out.extend_from_slice(format!(" {}", p.size).as_bytes());
            match &p.content {
                PartContent::Text { lines } => {
                    out.extend_from_slice(format!(" {lines}").as_bytes())
                }
                PartContent::Message {
                    envelope: env,
                    body,
                    lines,
                } => {
                    out.push(b' ');
                    envelope(out, env);
                    out.push(b' ');
                    body_structure(out, body, extended);
                    out.extend_from_slice(format!(" {lines}").as_bytes());
                }
                _ => {}
            }
            if extended {
                out.push(b' ');
                nstring(out, p.md5.as_deref());
                extension(out, p);
            }
        }
    }
    out.push(b')');
}

/// Undo a part's Content-Transfer-Encoding; `None` for an encoding we do not know.
pub fn decode_transfer(encoding: &[u8], body: &[u8]) -> Option<Vec<u8>> {
    let enc = String::from_utf8_lossy(encoding).to_ascii_lowercase();
    match enc.trim() {
        "7bit" | "8bit" | "binary" | "" => Some(body.to_vec()),
        "base64" => {
            use base64::Engine;
            let clean: Vec<u8> = body
                .iter()
                .copied()
                .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/'))
                .collect();
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(&clean)
                .ok()
                .or_else(|| {
                    // A truncated final quantum: decode what is whole.
                    let whole = clean.len() / 4 * 4;
                    base64::engine::general_purpose::STANDARD_NO_PAD
                        .decode(&clean[..whole])
                        .ok()
                })
        }
        "quoted-printable" => Some(decode_qp(body)),
        _ => None,
    }
}

fn decode_qp(body: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if b == b'=' {
            match (body.get(i + 1), body.get(i + 2)) {
                (Some(b'\r'), Some(b'\n')) => i += 3,
                (Some(b'\n'), _) => i += 2,
                (Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                    out.push(hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0));
                    i += 3;
                }
                _ => {
                    out.push(b);
                    i += 1;
                }
            }
        } else {
            out.push(b);
            i += 1;
        }
    }
    out
}

/// The lines of a header block whose field name is (or, with `not`, is not) in `fields`,
/// followed by the blank line.
pub fn header_fields(header: &[u8], fields: &[String], not: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut keep = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if !matches!(line.first(), Some(b' ') | Some(b'\t')) {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            let name = String::from_utf8_lossy(name);
            let listed = fields.iter().any(|f| f.eq_ignore_ascii_case(name.trim()));
            keep = listed != not;
        }
        if keep {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// INTERNALDATE as `"dd-Mon-yyyy hh:mm:ss +0000"`.
pub fn internal_date(ts: i64) -> String {
    const M: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = ts.div_euclid(86_400);
    let secs = ts.rem_euclid(86_400);
    // Civil from days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "\"{:02}-{}-{:04} {:02}:{:02}:{:02} +0000\"",
        d,
        M[(m - 1) as usize],
        y,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings() {
        let mut v = Vec::new();
        string(&mut v, b"a \"b\"");
        assert_eq!(v, b"\"a \\\"b\\\"\"");
        let mut v = Vec::new();
        string(&mut v, b"x\r\ny");
        assert_eq!(v, b"{4}\r\nx\r\ny");
        let mut v = Vec::new();
        mailbox(&mut v, "Sent Items");
        assert_eq!(v, b"\"Sent Items\"");
    }

    #[test]
    fn dates_and_decoding() {
        assert_eq!(internal_date(0), "\"01-Jan-1970 00:00:00 +0000\"");
        assert_eq!(
            internal_date(1_700_000_000),
            "\"14-Nov-2023 22:13:20 +0000\""
        );
        assert_eq!(
            decode_transfer(b"base64", b"aGVs\r\nbG8=\r\n").unwrap(),
            b"hello"
        );
        assert_eq!(
            decode_transfer(b"Quoted-Printable", b"a=3Db=\r\nc").unwrap(),
            b"a=bc"
        );
        assert_eq!(decode_transfer(b"x-uuencode", b"x"), None);
    }

    #[test]
    fn fields() {
        let h = b"From: a\r\nSubject: s\r\n  more\r\nTo: b\r\n\r\n";
        assert_eq!(
            header_fields(h, &["subject".into()], false),
            b"Subject: s\r\n  more\r\n\r\n"
        );
        assert_eq!(
            header_fields(h, &["subject".into()], true),
            b"From: a\r\nTo: b\r\n\r\n"
        );
    }
}
