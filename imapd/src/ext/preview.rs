//! PREVIEW (RFC 8970): the fetch attribute and its `(LAZY)` modifier.

use crate::parse::{err, PResult, Parser};

/// Modifiers after `PREVIEW`: only `LAZY` exists, and as our previews are computed at
/// delivery it changes nothing.
pub fn parse_modifiers(p: &mut Parser) -> PResult<()> {
    if p.peek() != Some(b' ') || p.rest().get(1) != Some(&b'(') {
        return Ok(());
    }
    p.sp()?;
    p.list(|p| {
        let w = p.atom()?.to_ascii_uppercase();
        if w == "LAZY" {
            Ok(())
        } else {
            err(format!("unknown PREVIEW modifier {w}"))
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lazy() {
        let mut p = Parser::new(b" (LAZY)");
        parse_modifiers(&mut p).unwrap();
        assert!(p.at_end());
        let mut p = Parser::new(b" (EAGER)");
        assert!(parse_modifiers(&mut p).is_err());
        let mut p = Parser::new(b" FLAGS");
        parse_modifiers(&mut p).unwrap();
        assert_eq!(p.rest(), b" FLAGS");
    }
}
