//! CREATE with a special-use attribute (RFC 6154 section 3): `CREATE name (USE (\Sent))`.

use crate::parse::{err, PResult, Parser};

/// The attributes RFC 6154 defines; others are refused with `[USEATTR]`.
pub const SPECIAL_USE: [&str; 7] = [
    "\\All",
    "\\Archive",
    "\\Drafts",
    "\\Flagged",
    "\\Junk",
    "\\Sent",
    "\\Trash",
];

/// Parse `(USE (attr))` after the mailbox name; the one attribute, normalised.
pub fn parse(p: &mut Parser) -> PResult<Option<String>> {
    let mut found = None;
    p.list(|p| {
        let w = p.atom()?.to_ascii_uppercase();
        if w != "USE" {
            return err(format!("unknown CREATE parameter {w}"));
        }
        p.sp()?;
        let attrs = p.list(|p| p.word())?;
        if attrs.len() > 1 {
            return err("[USEATTR] only one special-use attribute per folder");
        }
        for a in attrs {
            match SPECIAL_USE.iter().find(|s| s.eq_ignore_ascii_case(&a)) {
                Some(s) => found = Some((*s).to_owned()),
                None => return err(format!("[USEATTR] unknown special-use attribute {a}")),
            }
        }
        Ok(())
    })?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_attribute() {
        let mut p = Parser::new(b"(USE (\\sent))");
        assert_eq!(parse(&mut p).unwrap().as_deref(), Some("\\Sent"));
        let mut p = Parser::new(b"(USE (\\Bogus))");
        assert!(parse(&mut p).unwrap_err().0.contains("USEATTR"));
        let mut p = Parser::new(b"(USE ())");
        assert_eq!(parse(&mut p).unwrap(), None);
    }
}
