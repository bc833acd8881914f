//! CATENATE (RFC 4469): `APPEND mailbox [flags] [date] CATENATE (TEXT literal / URL url ...)`
//! and the IMAP URLs (RFC 5092) a part may name: absolute (`imap://user@host/...`),
//! path-absolute (`/INBOX;UIDVALIDITY=5/;UID=20/;SECTION=1.MIME`) or relative to the
//! selected folder (`;UID=20/;SECTION=TEXT`), with an optional `;PARTIAL=offset.length`.

use message_structure::MessageStructure;

use crate::encode;
use crate::parse::{self, err, PResult, Parser, Section, SectionText};

/// Deepest list of parts accepted in one CATENATE (each part is a literal or a URL).
pub const MAX_PARTS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatPart {
    Text(Vec<u8>),
    Url(String),
}

/// `CATENATE (cat-part *(SP cat-part))`, the keyword already read.
pub fn parse_parts(p: &mut Parser) -> PResult<Vec<CatPart>> {
    p.sp()?;
    let parts = p.list(|p| {
        if p.keyword("TEXT") {
            p.sp()?;
            if !matches!(p.peek(), Some(b'{') | Some(b'~')) {
                return err("CATENATE TEXT needs a literal");
            }
            Ok(CatPart::Text(p.literal()?))
        } else if p.keyword("URL") {
            p.sp()?;
            let u = p.astring()?;
            String::from_utf8(u)
                .map(CatPart::Url)
                .map_err(|_| parse::ParseError("URL is not UTF-8".into()))
        } else {
            err("expected TEXT or URL in CATENATE")
        }
    })?;
    if parts.is_empty() {
        return err("CATENATE needs at least one part");
    }
    if parts.len() > MAX_PARTS {
        return err(format!("CATENATE takes at most {MAX_PARTS} parts"));
    }
    Ok(parts)
}

/// What a URL names: a message (or part of one) in a folder of the session's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapUrl {
    /// The mailbox as named in the URL (percent-decoded); `None` = the selected folder.
    pub mailbox: Option<Vec<u8>>,
    /// The user named in an absolute URL, if any.
    pub user: Option<String>,
    pub uidvalidity: Option<u32>,
    pub uid: u32,
    pub section: Option<Section>,
    /// `;PARTIAL=offset[.length]`.
    pub partial: Option<(u64, Option<u64>)>,
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// `%XX` escapes decoded.
pub fn percent_decode(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) else {
                return Err("invalid %-escape".into());
            };
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn nz_number(v: &str, what: &str) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("invalid {what} {v:?}")),
    }
}

/// Parse an IMAP URL naming one message or part (RFC 5092 `imessagepart`).
pub fn parse_url(url: &str) -> Result<ImapUrl, String> {
    let mut user = None;
    let rest: &str = if let Some(r) = url
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case("imap://"))
        .map(|_| &url[7..])
    {
        // iserver: [iuserinfo "@"] host [":" port], then the absolute path.
        let (server, path) = match r.find('/') {
            Some(i) => (&r[..i], &r[i..]),
            None => return Err("the URL names no message".into()),
        };
        if let Some((ui, _host)) = server.rsplit_once('@') {
            let u = ui.split(';').next().unwrap_or_default();
            let u = String::from_utf8(percent_decode(u)?).map_err(|_| "user is not UTF-8")?;
            if !u.is_empty() {
                user = Some(u);
            }
        }
        path
    } else {
        url
    };
    let (mailbox_part, segs): (Option<&str>, Vec<&str>) = match rest.strip_prefix('/') {
        Some(path) => {
            // enc-mailbox [";UIDVALIDITY=n"] "/" ";UID=n" ...
            let mut it = path.split('/');
            let first = it.next().unwrap_or_default();
            (Some(first), it.collect())
        }
        None => (None, rest.split('/').collect()),
    };
    let mut mailbox = None;
    let mut uidvalidity = None;
    if let Some(m) = mailbox_part {
        let (name, params) = match m.find(';') {
            Some(i) => (&m[..i], &m[i..]),
            None => (m, ""),
        };
        if name.is_empty() {
            return Err("the URL names no mailbox".into());
        }
        mailbox = Some(percent_decode(name)?);
        for p in params.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = p.split_once('=').ok_or("invalid mailbox parameter")?;
            if k.eq_ignore_ascii_case("UIDVALIDITY") {
                uidvalidity = Some(nz_number(v, "UIDVALIDITY")?);
            } else {
                return Err(format!("unsupported mailbox parameter {k}"));
            }
        }
    }
    let (mut uid, mut section, mut partial) = (None, None, None);
    for seg in segs {
        if seg.is_empty() {
            continue;
        }
        let s = seg
            .strip_prefix(';')
            .ok_or_else(|| format!("unexpected {seg:?}"))?;
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| format!("invalid parameter {s:?}"))?;
        match k.to_ascii_uppercase().as_str() {
            "UIDVALIDITY" if uid.is_none() && mailbox.is_none() && uidvalidity.is_none() => {
                uidvalidity = Some(nz_number(v, "UIDVALIDITY")?)
            }
            "UID" if uid.is_none() => uid = Some(nz_number(v, "UID")?),
            "SECTION" if uid.is_some() && section.is_none() => {
                let text = String::from_utf8(percent_decode(v)?)
                    .map_err(|_| "section is not UTF-8".to_string())?;
                let spec = format!("[{text}]");
                let mut p = Parser::new(spec.as_bytes());
                let sec = parse::section(&mut p, false).map_err(|e| e.0)?;
                if !p.at_end() {
                    return Err(format!("invalid section {text:?}"));
                }
                section = Some(sec);
            }
            "PARTIAL" if uid.is_some() && partial.is_none() => {
                let (o, l) = match v.split_once('.') {
                    Some((o, l)) => (o, Some(l)),
                    None => (v, None),
                };
                let o: u64 = o.parse().map_err(|_| format!("invalid PARTIAL {v:?}"))?;
                let l = match l {
                    Some(l) => match l.parse::<u64>() {
                        Ok(n) if n > 0 => Some(n),
                        _ => return Err(format!("invalid PARTIAL {v:?}")),
                    },
                    None => None,
                };
                partial = Some((o, l));
            }
            // URLAUTH, EXPIRE and the rest name what CATENATE cannot take.
            other => return Err(format!("unsupported URL parameter {other}")),
        }
    }
    let uid = uid.ok_or("the URL names no message (;UID=)")?;
    Ok(ImapUrl {
        mailbox,
        user,
        uidvalidity,
        uid,
        section,
        partial,
    })
}

/// The bytes `section` names in the whole message `data` (as FETCH BODY[section] gives them).
pub fn section_bytes(data: &[u8], st: &MessageStructure, section: &Section) -> Vec<u8> {
    let get = |r: std::ops::Range<u64>| -> Vec<u8> {
        let len = data.len() as u64;
        let (s, e) = (r.start.min(len) as usize, r.end.min(len) as usize);
        data[s..e.max(s)].to_vec()
    };
    if section.part.is_empty() {
        return match &section.text {
            None => data.to_vec(),
            Some(SectionText::Header) => get(st.header_range()),
            Some(SectionText::Text) => get(st.text_range()),
            Some(SectionText::HeaderFields(f)) => {
                encode::header_fields(&get(st.header_range()), f, false)
            }
            Some(SectionText::HeaderFieldsNot(f)) => {
                encode::header_fields(&get(st.header_range()), f, true)
            }
            Some(SectionText::Mime) => Vec::new(),
        };
    }
    let Some(part) = st.part(&section.part) else {
        return Vec::new();
    };
    match &section.text {
        None => get(part.body_range()),
        Some(SectionText::Mime) => get(part.header_range()),
        Some(t) => {
            let Some((_, body)) = part.encapsulated() else {
                return Vec::new();
            };
            let header = body.header_start..body.body_start;
            match t {
                SectionText::Header => get(header),
                SectionText::Text => get(body.body_range()),
                SectionText::HeaderFields(f) => encode::header_fields(&get(header), f, false),
                SectionText::HeaderFieldsNot(f) => encode::header_fields(&get(header), f, true),
                SectionText::Mime => Vec::new(),
            }
        }
    }
}

/// `;PARTIAL=` applied to `data`.
pub fn apply_partial(data: Vec<u8>, partial: Option<(u64, Option<u64>)>) -> Vec<u8> {
    match partial {
        None => data,
        Some((o, l)) => {
            let s = (o.min(data.len() as u64)) as usize;
            let e = match l {
                Some(l) => o.saturating_add(l).min(data.len() as u64) as usize,
                None => data.len(),
            };
            data[s..e.max(s)].to_vec()
        }
    }
}

/// A URL as it may appear in `[BADURL ...]` (no `]`, no line ends).
pub fn resp_url(url: &str) -> String {
    url.chars()
        .filter(|c| !matches!(c, ']' | '\r' | '\n' | '\0'))
        .take(1000)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("/Drafts;UIDVALIDITY=385759045/;UID=20/;section=1.MIME").unwrap();
        assert_eq!(u.mailbox.as_deref(), Some(&b"Drafts"[..]));
        assert_eq!(u.uidvalidity, Some(385759045));
        assert_eq!(u.uid, 20);
        assert_eq!(
            u.section,
            Some(Section {
                part: vec![1],
                text: Some(SectionText::Mime)
            })
        );
        let u =
            parse_url("imap://joe;AUTH=*@mail.example/Sent%20Items/;UID=3/;PARTIAL=10.5").unwrap();
        assert_eq!(u.user.as_deref(), Some("joe"));
        assert_eq!(u.mailbox.as_deref(), Some(&b"Sent Items"[..]));
        assert_eq!(u.partial, Some((10, Some(5))));
        let u = parse_url(";UID=7/;SECTION=HEADER.FIELDS%20(From%20To)").unwrap();
        assert_eq!(u.mailbox, None);
        assert_eq!(
            u.section.unwrap().text,
            Some(SectionText::HeaderFields(vec!["From".into(), "To".into()]))
        );
        for bad in [
            "",
            "/INBOX",
            "/INBOX/;UID=0",
            "/INBOX/;UID=x",
            "/INBOX/;UID=1/;SECTION=BOGUS",
            "/INBOX/;UID=1/;URLAUTH=anonymous:internal:abc",
            "/INBOX;UIDVALIDITY=1/;UID=1/;PARTIAL=1.0",
            "/%zz/;UID=1",
            "imap://host",
            ";SECTION=1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parts() {
        let mut p = Parser::new(b" (URL \"/INBOX/;UID=1\" TEXT {2}\r\nhi URL ;UID=2)");
        let v = parse_parts(&mut p).unwrap();
        assert_eq!(
            v,
            vec![
                CatPart::Url("/INBOX/;UID=1".into()),
                CatPart::Text(b"hi".to_vec()),
                CatPart::Url(";UID=2".into())
            ]
        );
        assert!(parse_parts(&mut Parser::new(b" ()")).is_err());
        assert!(parse_parts(&mut Parser::new(b" (TEXT \"x\")")).is_err());
        assert_eq!(
            apply_partial(b"abcdef".to_vec(), Some((2, Some(3)))),
            b"cde"
        );
        assert_eq!(apply_partial(b"abc".to_vec(), Some((9, None))), b"");
        assert_eq!(resp_url("/a]b\r\n"), "/ab");
    }
}
