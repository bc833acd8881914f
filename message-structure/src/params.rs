//! Content-Type / Content-Disposition value parsing with raw parameter
//! values (quoted strings unquoted, nothing else decoded) and RFC 2231
//! continuation joining.

use crate::Params;

fn is_token_byte(b: u8) -> bool {
    b > 0x20
        && b != 0x7f
        && !matches!(
            b,
            b'(' | b')'
                | b'<'
                | b'>'
                | b'@'
                | b','
                | b';'
                | b':'
                | b'\\'
                | b'"'
                | b'/'
                | b'['
                | b']'
                | b'?'
                | b'='
        )
}

struct Cursor<'a> {
    v: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.v.get(self.i).copied()
    }

    /// Skip whitespace and (nested) comments.
    fn skip_cfws(&mut self) {
        while let Some(b) = self.peek() {
            match b {
                b' ' | b'\t' | b'\r' | b'\n' => self.i += 1,
                b'(' => {
                    let mut depth = 0usize;
                    while let Some(c) = self.peek() {
                        self.i += 1;
                        match c {
                            b'\\' => self.i += 1,
                            b'(' => depth += 1,
                            b')' => {
                                depth = depth.saturating_sub(1);
                                if depth == 0 {
                                    break;
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => break,
            }
        }
        self.i = self.i.min(self.v.len());
    }

    fn token(&mut self) -> &[u8] {
        let start = self.i;
        while self.peek().is_some_and(is_token_byte) {
            self.i += 1;
        }
        &self.v[start..self.i]
    }

    fn quoted(&mut self) -> Vec<u8> {
        // Assumes the opening quote is at `i`.
        self.i += 1;
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    if let Some(c) = self.peek() {
                        out.push(c);
                        self.i += 1;
                    }
                }
                b'\r' | b'\n' => {}
                _ => out.push(b),
            }
        }
        out
    }

    /// Skip to just past the next ';' (or to the end).
    fn skip_past_semicolon(&mut self) {
        while let Some(b) = self.peek() {
            self.i += 1;
            if b == b';' {
                break;
            }
            if b == b'"' {
                self.i -= 1;
                self.quoted();
            }
        }
    }
}

/// Parse `;`-separated parameters starting at the cursor.
fn parse_params(c: &mut Cursor<'_>) -> Params {
    let mut raw: Params = Vec::new();
    loop {
        c.skip_cfws();
        match c.peek() {
            None => break,
            Some(b';') => {
                c.i += 1;
                continue;
            }
            _ => {}
        }
        let name = c.token().to_vec();
        c.skip_cfws();
        if name.is_empty() || c.peek() != Some(b'=') {
            c.skip_past_semicolon();
            continue;
        }
        c.i += 1;
        c.skip_cfws();
        let value = if c.peek() == Some(b'"') {
            let v = c.quoted();
            c.skip_cfws();
            if c.peek().is_some_and(|b| b != b';') {
                c.skip_past_semicolon();
            }
            v
        } else {
            // Lenient: an unquoted value runs to the next ';' or comment (so
            // that `name=my file.pdf` survives), trailing whitespace trimmed.
            let start = c.i;
            while c.peek().is_some_and(|b| b != b';' && b != b'(') {
                c.i += 1;
            }
            let v = crate::header::trim(&c.v[start..c.i]).to_vec();
            c.skip_past_semicolon();
            v
        };
        raw.push((name, value));
    }
    join_rfc2231(raw)
}

/// Parse a Content-Type value into (type, subtype, params). Returns None when
/// the type/subtype is syntactically unusable.
pub(crate) fn parse_content_type(v: &[u8]) -> Option<(Vec<u8>, Vec<u8>, Params)> {
    let mut c = Cursor { v, i: 0 };
    c.skip_cfws();
    let ty = c.token().to_vec();
    c.skip_cfws();
    if ty.is_empty() || c.peek() != Some(b'/') {
        return None;
    }
    c.i += 1;
    c.skip_cfws();
    let sub = c.token().to_vec();
    if sub.is_empty() {
        return None;
    }
    let params = parse_params(&mut c);
    Some((ty, sub, params))
}

/// Parse a Content-Disposition value into (type, params).
pub(crate) fn parse_disposition(v: &[u8]) -> Option<(Vec<u8>, Params)> {
    let mut c = Cursor { v, i: 0 };
    c.skip_cfws();
    let ty = c.token().to_vec();
    if ty.is_empty() {
        return None;
    }
    let params = parse_params(&mut c);
    Some((ty, params))
}

fn is_attr_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b)
}

/// Join RFC 2231 continuations (`name*0`, `name*1*`, ...) into one
/// parameter at the position of the first segment. If any segment is
/// extended (`*N*`) the result is named `name*` and keeps the
/// `charset'language'percent-encoded` form (plain segments are
/// percent-encoded so the joined value stays decodable); otherwise the
/// result is a plain `name`. Single `name*` parameters are left alone.
fn join_rfc2231(raw: Params) -> Params {
    // (segment number, extended) for continuation parameters.
    fn segment(name: &[u8]) -> Option<(usize, u32, bool)> {
        let star = name.iter().position(|&b| b == b'*')?;
        let rest = &name[star + 1..];
        let (digits, ext) = match rest.last() {
            Some(b'*') => (&rest[..rest.len() - 1], true),
            _ => (rest, false),
        };
        if digits.is_empty() || digits.len() > 4 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = digits
            .iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
        Some((star, n, ext))
    }
    if !raw.iter().any(|(n, _)| segment(n).is_some()) {
        return raw;
    }
    let mut out: Params = Vec::with_capacity(raw.len());
    let mut done = vec![false; raw.len()];
    for i in 0..raw.len() {
        if done[i] {
            continue;
        }
        let Some((star, _, _)) = segment(&raw[i].0) else {
            out.push(raw[i].clone());
            continue;
        };
        let base = &raw[i].0[..star];
        // Gather all segments of this base name.
        let mut segs: Vec<(u32, bool, &[u8])> = Vec::new();
        for j in i..raw.len() {
            if done[j] {
                continue;
            }
            if let Some((s, n, ext)) = segment(&raw[j].0) {
                if raw[j].0[..s].eq_ignore_ascii_case(base) {
                    done[j] = true;
                    if !segs.iter().any(|(m, _, _)| *m == n) {
                        segs.push((n, ext, &raw[j].1));
                    }
                }
            }
        }
        segs.sort_by_key(|(n, _, _)| *n);
        let extended = segs.iter().any(|(_, e, _)| *e);
        let mut value = Vec::new();
        for (k, (_, ext, v)) in segs.iter().enumerate() {
            if extended && !*ext && k > 0 {
                for &b in v.iter() {
                    if is_attr_char(b) {
                        value.push(b);
                    } else {
                        value.extend_from_slice(format!("%{b:02X}").as_bytes());
                    }
                }
            } else if extended && !*ext && k == 0 {
                // First segment not extended: no charset/language prefix.
                value.extend_from_slice(b"''");
                for &b in v.iter() {
                    if is_attr_char(b) {
                        value.push(b);
                    } else {
                        value.extend_from_slice(format!("%{b:02X}").as_bytes());
                    }
                }
            } else {
                value.extend_from_slice(v);
            }
        }
        let mut name = base.to_vec();
        if extended {
            name.push(b'*');
        }
        out.push((name, value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: &str, v: &str) -> (Vec<u8>, Vec<u8>) {
        (n.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    #[test]
    fn content_type_basic() {
        let (t, s, params) =
            parse_content_type(b"Text/PLAIN; charset=\"ISO-8859-1\" ; format=flowed (c)").unwrap();
        assert_eq!(t, b"Text");
        assert_eq!(s, b"PLAIN");
        assert_eq!(
            params,
            vec![p("charset", "ISO-8859-1"), p("format", "flowed")]
        );
        assert!(parse_content_type(b"text").is_none());
        assert!(parse_content_type(b"").is_none());
        assert!(parse_content_type(b"/plain").is_none());
    }

    #[test]
    fn lenient_values() {
        let (_, _, params) =
            parse_content_type(b"application/pdf; name=my file.pdf; x; =y; q=\"a\\\"b\"").unwrap();
        assert_eq!(params, vec![p("name", "my file.pdf"), p("q", "a\"b")]);
    }

    #[test]
    fn rfc2231_joining() {
        let (_, _, params) = parse_content_type(
            b"message/external-body; access-type=URL; URL*0=\"ftp://\"; URL*1=\"cs.utk.edu/pub\"",
        )
        .unwrap();
        assert_eq!(
            params,
            vec![p("access-type", "URL"), p("URL", "ftp://cs.utk.edu/pub")]
        );
        let (_, params) = parse_disposition(
            b"attachment; filename*0*=us-ascii'en'This%20is%20even%20more%20; filename*1*=%2A%2A%2Afun%2A%2A%2A%20; filename*2=\"isn't it!\"",
        )
        .unwrap();
        assert_eq!(
            params,
            vec![p(
                "filename*",
                "us-ascii'en'This%20is%20even%20more%20%2A%2A%2Afun%2A%2A%2A%20isn%27t%20it!"
            )]
        );
        let (_, params) = parse_disposition(b"inline; filename*=utf-8''a%20b").unwrap();
        assert_eq!(params, vec![p("filename*", "utf-8''a%20b")]);
    }
}
