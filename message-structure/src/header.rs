//! Header block scanning: locating header fields and the end of a header
//! inside an arbitrary byte range of the raw message, without copying.

/// One header field: byte ranges of its name and of its raw value (the value
/// starts just after the colon and runs to the end of its last folded line,
/// excluding the final line ending).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    name: (usize, usize),
    value: (usize, usize),
}

/// The fields of a header block plus the offset at which the body starts.
#[derive(Debug)]
pub(crate) struct HeaderBlock<'a> {
    raw: &'a [u8],
    fields: Vec<Field>,
    /// Offset just after the blank line ending the header (or the end of the
    /// range when no blank line was found).
    pub(crate) body_start: usize,
}

/// For the line starting at `pos` (bounded by `end`), return the end of its
/// content (excluding CR LF / LF) and the start of the next line. A last line
/// without a line ending has content up to `end` and next line `end`.
pub(crate) fn line_at(raw: &[u8], pos: usize, end: usize) -> (usize, usize) {
    let slice = raw.get(pos..end).unwrap_or(&[]);
    match slice.iter().position(|&b| b == b'\n') {
        Some(i) => {
            let lf = pos + i;
            let content_end = if lf > pos && raw[lf - 1] == b'\r' {
                lf - 1
            } else {
                lf
            };
            (content_end, lf + 1)
        }
        None => (end.max(pos), end.max(pos)),
    }
}

fn is_field_name(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b) && b != b':')
}

impl<'a> HeaderBlock<'a> {
    /// Scan the header that starts at `start`, looking no further than `end`.
    pub(crate) fn parse(raw: &'a [u8], start: usize, end: usize) -> Self {
        let end = end.min(raw.len());
        let mut fields: Vec<Field> = Vec::new();
        let mut current: Option<usize> = None;
        let mut p = start.min(end);
        let body_start = loop {
            if p >= end {
                break end;
            }
            let (content_end, next) = line_at(raw, p, end);
            if content_end == p && next > p {
                // Blank line: end of header.
                break next;
            }
            let first = raw[p];
            if first == b' ' || first == b'\t' {
                if let Some(f) = current.and_then(|i| fields.get_mut(i)) {
                    f.value.1 = content_end;
                }
            } else {
                let line = &raw[p..content_end];
                current = None;
                if let Some(colon) = line.iter().position(|&b| b == b':') {
                    let mut name_end = p + colon;
                    while name_end > p && matches!(raw[name_end - 1], b' ' | b'\t') {
                        name_end -= 1;
                    }
                    if is_field_name(&raw[p..name_end]) {
                        fields.push(Field {
                            name: (p, name_end),
                            value: (p + colon + 1, content_end),
                        });
                        current = Some(fields.len() - 1);
                    }
                }
            }
            p = next;
        };
        HeaderBlock {
            raw,
            fields,
            body_start,
        }
    }

    /// Raw (still folded) value of the first field called `name`
    /// (case-insensitive).
    pub(crate) fn raw_value(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.fields.iter().find_map(|f| {
            let n = self.raw.get(f.name.0..f.name.1)?;
            if n.eq_ignore_ascii_case(name) {
                self.raw.get(f.value.0..f.value.1)
            } else {
                None
            }
        })
    }

    /// Unfolded, whitespace-trimmed value of the first field called `name`.
    pub(crate) fn value(&self, name: &[u8]) -> Option<Vec<u8>> {
        self.raw_value(name).map(unfold)
    }
}

/// Remove folding line endings (CRLF or bare LF; the following whitespace is
/// kept) and trim leading/trailing whitespace.
pub(crate) fn unfold(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        let b = value[i];
        if b == b'\n' || (b == b'\r' && value.get(i + 1) == Some(&b'\n')) {
            i += 1;
            continue;
        }
        out.push(b);
        i += 1;
    }
    trim(&out).to_vec()
}

pub(crate) fn trim(v: &[u8]) -> &[u8] {
    let is_ws = |b: &u8| matches!(*b, b' ' | b'\t' | b'\r' | b'\n');
    let start = v.iter().position(|b| !is_ws(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !is_ws(b)).map_or(start, |e| e + 1);
    &v[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_block_crlf_and_folding() {
        let raw = b"Subject: hello\r\n  world\r\nX-A:b\r\n\r\nbody";
        let hb = HeaderBlock::parse(raw, 0, raw.len());
        assert_eq!(hb.body_start, raw.len() - 4);
        assert_eq!(hb.value(b"subject").as_deref(), Some(&b"hello  world"[..]));
        assert_eq!(hb.value(b"x-a").as_deref(), Some(&b"b"[..]));
        assert_eq!(hb.raw_value(b"SUBJECT"), Some(&b" hello\r\n  world"[..]));
    }

    #[test]
    fn header_block_lf_no_body() {
        let raw = b"A: 1\nB: 2";
        let hb = HeaderBlock::parse(raw, 0, raw.len());
        assert_eq!(hb.body_start, raw.len());
        assert_eq!(hb.value(b"b").as_deref(), Some(&b"2"[..]));
    }

    #[test]
    fn header_block_ignores_junk_lines() {
        let raw = b"From foo Mon Jan 1 00:00:00 2001\nbad line\n cont\nA: 1\n\nx";
        let hb = HeaderBlock::parse(raw, 0, raw.len());
        assert_eq!(hb.value(b"a").as_deref(), Some(&b"1"[..]));
        assert_eq!(hb.raw_value(b"from foo mon jan 1 00"), None);
        assert_eq!(&raw[hb.body_start..], b"x");
    }

    #[test]
    fn trim_works() {
        assert_eq!(trim(b"  a b \t"), b"a b");
        assert_eq!(trim(b"   "), b"");
        assert_eq!(trim(b""), b"");
    }
}
