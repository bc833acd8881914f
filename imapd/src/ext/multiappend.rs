//! APPEND with MULTIAPPEND (RFC 3502): one or more `[flags] [date-time] literal` after the
//! mailbox name; literal8 (`~{n}`, RFC 3516 BINARY) is accepted, and so is
//! `CATENATE (...)` (RFC 4469) in place of the literal.

use crate::ext::catenate::{self, CatPart};
use crate::parse::{err, parse_date_time, PResult, Parser};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendData {
    Literal(Vec<u8>),
    Catenate(Vec<CatPart>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendMessage {
    pub flags: Vec<String>,
    pub date: Option<i64>,
    pub data: AppendData,
}

/// Everything after `APPEND`: the mailbox and the messages.
pub fn parse(p: &mut Parser) -> PResult<(Vec<u8>, Vec<AppendMessage>)> {
    p.sp()?;
    let mailbox = p.astring()?;
    let mut msgs = Vec::new();
    while p.eat(b' ') {
        let mut flags = Vec::new();
        if p.peek() == Some(b'(') {
            flags = p.list(|p| p.word())?;
            p.sp()?;
        }
        let mut date = None;
        if p.peek() == Some(b'"') {
            let s = String::from_utf8_lossy(&p.string()?).into_owned();
            date = Some(
                parse_date_time(&s)
                    .ok_or_else(|| crate::parse::ParseError(format!("invalid date-time {s:?}")))?,
            );
            p.sp()?;
        }
        let data = if p.keyword("CATENATE") {
            AppendData::Catenate(catenate::parse_parts(p)?)
        } else if matches!(p.peek(), Some(b'{') | Some(b'~')) {
            AppendData::Literal(p.literal()?)
        } else {
            return err("APPEND needs a literal message or CATENATE");
        };
        msgs.push(AppendMessage { flags, date, data });
    }
    if msgs.is_empty() {
        return err("APPEND needs a message");
    }
    Ok((mailbox, msgs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_and_many() {
        let mut p = Parser::new(b" INBOX (\\Seen) \"01-Jan-1970 00:00:10 +0000\" {2}\r\nhi");
        let (m, v) = parse(&mut p).unwrap();
        assert_eq!(m, b"INBOX");
        assert_eq!(
            v,
            vec![AppendMessage {
                flags: vec!["\\Seen".into()],
                date: Some(10),
                data: AppendData::Literal(b"hi".to_vec())
            }]
        );
        let mut p = Parser::new(b" Sent {1+}\r\na ~{1}\r\nb (\\Draft) {1}\r\nc");
        let (_, v) = parse(&mut p).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[2].flags, vec!["\\Draft".to_string()]);
        let mut p = Parser::new(b" INBOX");
        assert!(parse(&mut p).is_err());
        let mut p = Parser::new(b" Drafts (\\Draft) CATENATE (TEXT {1}\r\nx) {1}\r\ny");
        let (_, v) = parse(&mut p).unwrap();
        assert_eq!(
            v[0].data,
            AppendData::Catenate(vec![CatPart::Text(b"x".to_vec())])
        );
        assert_eq!(v[1].data, AppendData::Literal(b"y".to_vec()));
    }
}
