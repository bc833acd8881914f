//! LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819) and SPECIAL-USE selection (RFC 6154):
//! `LIST (selection) reference (patterns) RETURN (options)`.

use crate::parse::{err, status_items_pub, PResult, Parser, StatusItem};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListCommand {
    pub reference: Vec<u8>,
    pub patterns: Vec<Vec<u8>>,
    pub select_subscribed: bool,
    pub select_special_use: bool,
    pub recursive_match: bool,
    pub return_subscribed: bool,
    pub return_children: bool,
    pub return_special_use: bool,
    pub return_status: Option<Vec<StatusItem>>,
}

/// Everything after `LIST`.
pub fn parse(p: &mut Parser) -> PResult<ListCommand> {
    let mut c = ListCommand::default();
    p.sp()?;
    if p.peek() == Some(b'(') {
        p.list(|p| {
            let w = p.atom()?.to_ascii_uppercase();
            match w.as_str() {
                "SUBSCRIBED" => c.select_subscribed = true,
                "REMOTE" => {}
                "RECURSIVEMATCH" => c.recursive_match = true,
                "SPECIAL-USE" => c.select_special_use = true,
                _ => return err(format!("unknown LIST selection option {w}")),
            }
            Ok(())
        })?;
        if c.recursive_match && !(c.select_subscribed || c.select_special_use) {
            return err("RECURSIVEMATCH needs another selection option");
        }
        p.sp()?;
    }
    c.reference = p.astring().or_else(|_| p.list_mailbox())?;
    p.sp()?;
    if p.peek() == Some(b'(') {
        c.patterns = p.list(|p| p.list_mailbox())?;
    } else {
        c.patterns = vec![p.list_mailbox()?];
    }
    if p.eat(b' ') {
        if !p.keyword("RETURN") {
            return err("expected RETURN");
        }
        p.sp()?;
        p.list(|p| {
            let w = p.atom()?.to_ascii_uppercase();
            match w.as_str() {
                "SUBSCRIBED" => c.return_subscribed = true,
                "CHILDREN" => c.return_children = true,
                "SPECIAL-USE" => c.return_special_use = true,
                "STATUS" => {
                    p.sp()?;
                    c.return_status = Some(status_items_pub(p)?);
                }
                _ => return err(format!("unknown LIST return option {w}")),
            }
            Ok(())
        })?;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_extended() {
        let mut p = Parser::new(b" \"\" *");
        let c = parse(&mut p).unwrap();
        assert_eq!(c.patterns, vec![b"*".to_vec()]);
        let mut p = Parser::new(
            b" (SUBSCRIBED RECURSIVEMATCH) \"\" (INBOX* %) RETURN (CHILDREN STATUS (MESSAGES UNSEEN))",
        );
        let c = parse(&mut p).unwrap();
        assert!(c.select_subscribed && c.recursive_match && c.return_children);
        assert_eq!(c.patterns.len(), 2);
        assert_eq!(
            c.return_status,
            Some(vec![StatusItem::Messages, StatusItem::Unseen])
        );
        let mut p = Parser::new(b" (RECURSIVEMATCH) \"\" *");
        assert!(parse(&mut p).is_err());
    }
}
