//! ACL (RFC 4314): SETACL, DELETEACL, GETACL, LISTRIGHTS, MYRIGHTS.

use crate::parse::{err, PResult, Parser};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AclCommand {
    /// Rights with an optional leading `+` or `-` (add or remove).
    SetAcl(Vec<u8>, String, String),
    DeleteAcl(Vec<u8>, String),
    GetAcl(Vec<u8>),
    ListRights(Vec<u8>, String),
    MyRights(Vec<u8>),
}

/// The rights RFC 4314 defines, in its order.
pub const ALL_RIGHTS: &str = "lrswipkxtea";

pub fn parse(name: &str, p: &mut Parser) -> PResult<AclCommand> {
    p.sp()?;
    let mailbox = p.astring()?;
    let mut id = || -> PResult<String> {
        p.sp()?;
        String::from_utf8(p.astring()?)
            .map_err(|_| crate::parse::ParseError("bad identifier".into()))
    };
    Ok(match name {
        "SETACL" => {
            let who = id()?;
            let rights = id()?;
            let body = rights.trim_start_matches(['+', '-']);
            if let Some(bad) = body.chars().find(|c| !"lrswipkxteacd".contains(*c)) {
                return err(format!("[INVALID] unknown right {bad}"));
            }
            AclCommand::SetAcl(mailbox, who, rights)
        }
        "DELETEACL" => AclCommand::DeleteAcl(mailbox, id()?),
        "GETACL" => AclCommand::GetAcl(mailbox),
        "LISTRIGHTS" => AclCommand::ListRights(mailbox, id()?),
        _ => AclCommand::MyRights(mailbox),
    })
}

/// Apply `+x`/`-x`/`x` to current rights. `c` and `d` (RFC 2086) map to `k`/`x` and `t`/`e`.
pub fn apply(current: &str, change: &str) -> String {
    let expand = |s: &str| -> String {
        let mut out = String::new();
        for c in s.chars() {
            let add: &str = match c {
                'c' => "k",
                'd' => "te",
                _ => "",
            };
            if add.is_empty() {
                out.push(c);
            } else {
                out.push_str(add);
            }
        }
        out
    };
    let (mode, body) = match change.chars().next() {
        Some('+') => ('+', &change[1..]),
        Some('-') => ('-', &change[1..]),
        _ => ('=', change),
    };
    let body = expand(body);
    ALL_RIGHTS
        .chars()
        .filter(|c| match mode {
            '+' => current.contains(*c) || body.contains(*c),
            '-' => current.contains(*c) && !body.contains(*c),
            _ => body.contains(*c),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        let mut p = Parser::new(b" Shared bob +lr");
        assert_eq!(
            parse("SETACL", &mut p).unwrap(),
            AclCommand::SetAcl(b"Shared".to_vec(), "bob".into(), "+lr".into())
        );
        let mut p = Parser::new(b" Shared bob lz");
        assert!(parse("SETACL", &mut p).is_err());
        let mut p = Parser::new(b" INBOX");
        assert_eq!(
            parse("MYRIGHTS", &mut p).unwrap(),
            AclCommand::MyRights(b"INBOX".to_vec())
        );
    }

    #[test]
    fn rights_arithmetic() {
        assert_eq!(apply("lr", "+sw"), "lrsw");
        assert_eq!(apply("lrsw", "-w"), "lrs");
        assert_eq!(apply("lrsw", "li"), "li");
        assert_eq!(apply("", "lrd"), "lrte");
    }
}
