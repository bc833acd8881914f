//! Validated names: mailbox (folder) names as administrators and tools write them
//! (`user/joe/INBOX`, `user/joe/Work/2026`) and the IMAP LIST patterns that match them.

use std::fmt;

use crate::error::{Result, StoreError};

/// The hierarchy separator, everywhere in the store.
pub const SEPARATOR: char = '/';
/// Longest folder name component, in bytes (a file name is 255 at most on Linux).
pub const MAX_COMPONENT: usize = 200;
/// Longest full mailbox name, in bytes.
pub const MAX_NAME: usize = 1000;
/// Deepest folder hierarchy below a user.
pub const MAX_DEPTH: usize = 64;

/// A user id: what a user logs in as and the second component of their folders' names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserName(String);

impl UserName {
    pub fn new(s: &str) -> Result<Self> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && !s.starts_with('.')
            && !s.starts_with('-')
            && s.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'+' | b'-')
            });
        if ok {
            Ok(UserName(s.to_owned()))
        } else {
            Err(StoreError::InvalidUser(s.to_owned()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A full mailbox name, `user/<userid>/<folder>[/<sub>...]`, validated at construction so the
/// rest of the store never sees a name that could escape the data directory.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailboxName {
    full: String,
    user_end: usize,
}

impl MailboxName {
    /// Parse a full name. `INBOX` as the first folder component is recognised in any case and
    /// stored as `INBOX`.
    pub fn parse(name: &str) -> Result<Self> {
        let bad = |reason| StoreError::InvalidName {
            name: name.chars().take(120).collect(),
            reason,
        };
        if name.len() > MAX_NAME {
            return Err(bad("name too long"));
        }
        let rest = name
            .strip_prefix("user/")
            .ok_or_else(|| bad("must start with user/<userid>/"))?;
        let (user, folder) = rest
            .split_once(SEPARATOR)
            .ok_or_else(|| bad("no folder after the user id"))?;
        let user = UserName::new(user).map_err(|_| bad("invalid user id"))?;
        Self::for_user(&user, folder).map_err(|e| match e {
            StoreError::InvalidName { reason, .. } => bad(reason),
            other => other,
        })
    }

    /// Parse a full name given as bytes (as read from the wire): invalid UTF-8 is refused.
    pub fn parse_bytes(name: &[u8]) -> Result<Self> {
        let s = std::str::from_utf8(name).map_err(|_| StoreError::InvalidName {
            name: String::from_utf8_lossy(&name[..name.len().min(120)]).into_owned(),
            reason: "invalid UTF-8",
        })?;
        Self::parse(s)
    }

    /// The mailbox `folder` (a path relative to the user, such as `INBOX` or `Work/2026`) of `user`.
    pub fn for_user(user: &UserName, folder: &str) -> Result<Self> {
        let bad = |reason| StoreError::InvalidName {
            name: folder.chars().take(120).collect(),
            reason,
        };
        validate_folder_path(folder).map_err(bad)?;
        let mut full = String::with_capacity(6 + user.as_str().len() + folder.len());
        full.push_str("user/");
        full.push_str(user.as_str());
        let user_end = full.len();
        full.push(SEPARATOR);
        let (first, tail) = match folder.split_once(SEPARATOR) {
            Some((f, t)) => (f, Some(t)),
            None => (folder, None),
        };
        if first.eq_ignore_ascii_case("INBOX") {
            full.push_str("INBOX");
        } else {
            full.push_str(first);
        }
        if let Some(t) = tail {
            full.push(SEPARATOR);
            full.push_str(t);
        }
        if full.len() > MAX_NAME {
            return Err(bad("name too long"));
        }
        Ok(MailboxName { full, user_end })
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }
    /// The owner's user id.
    pub fn user(&self) -> &str {
        &self.full[5..self.user_end]
    }
    pub fn user_name(&self) -> UserName {
        UserName(self.user().to_owned())
    }
    /// The folder path below the user (`INBOX`, `Work/2026`).
    pub fn folder(&self) -> &str {
        &self.full[self.user_end + 1..]
    }
    /// The folder path components below the user.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.folder().split(SEPARATOR)
    }
    pub fn is_inbox(&self) -> bool {
        self.folder() == "INBOX"
    }
    /// The parent mailbox, if this is not a top-level folder.
    pub fn parent(&self) -> Option<MailboxName> {
        let folder = self.folder();
        let (parent, _) = folder.rsplit_once(SEPARATOR)?;
        Some(MailboxName {
            full: format!("{}/{}", &self.full[..self.user_end], parent),
            user_end: self.user_end,
        })
    }
    /// True when `other` is strictly below this mailbox.
    pub fn is_ancestor_of(&self, other: &MailboxName) -> bool {
        other.full.len() > self.full.len()
            && other.full.starts_with(&self.full)
            && other.full.as_bytes()[self.full.len()] == b'/'
    }
    /// This name with the prefix `from` replaced by `to` (for renaming a subtree).
    pub fn rebase(&self, from: &MailboxName, to: &MailboxName) -> Result<MailboxName> {
        if self == from {
            return Ok(to.clone());
        }
        let tail = self
            .full
            .strip_prefix(from.as_str())
            .ok_or_else(|| StoreError::InvalidArgument(format!("{self} is not below {from}")))?;
        MailboxName::parse(&format!("{}{}", to.as_str(), tail))
    }
}

impl fmt::Display for MailboxName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

fn validate_folder_path(folder: &str) -> std::result::Result<(), &'static str> {
    if folder.is_empty() {
        return Err("empty folder name");
    }
    if folder.starts_with(SEPARATOR) || folder.ends_with(SEPARATOR) {
        return Err("leading or trailing separator");
    }
    let mut depth = 0;
    for comp in folder.split(SEPARATOR) {
        depth += 1;
        if depth > MAX_DEPTH {
            return Err("hierarchy too deep");
        }
        if comp.is_empty() {
            return Err("empty component (separator run)");
        }
        if comp == "." || comp == ".." {
            return Err("'.' and '..' are not folder names");
        }
        if comp.len() > MAX_COMPONENT {
            return Err("component too long");
        }
        if comp.chars().any(|c| c.is_control()) {
            return Err("control character");
        }
        if comp.contains(['*', '%']) {
            return Err("wildcard character");
        }
    }
    Ok(())
}

/// An IMAP LIST pattern (RFC 3501 6.3.8): `*` matches any run of characters, `%` any run that
/// does not contain the separator. Matching is case-sensitive except for a leading `INBOX`.
#[derive(Clone, Debug)]
pub struct Pattern {
    pattern: Vec<u8>,
}

impl Pattern {
    pub fn new(pattern: &str) -> Self {
        Pattern {
            pattern: pattern.as_bytes().to_vec(),
        }
    }

    /// Does `name` match? `name` and the pattern are compared as bytes.
    pub fn matches(&self, name: &str) -> bool {
        glob(&self.pattern, name.as_bytes())
    }

    /// The literal prefix before the first wildcard: names that cannot start with it never match.
    pub fn literal_prefix(&self) -> &str {
        let end = self
            .pattern
            .iter()
            .position(|&b| b == b'*' || b == b'%')
            .unwrap_or(self.pattern.len());
        std::str::from_utf8(&self.pattern[..end]).unwrap_or("")
    }
}

/// Matches by dynamic programming over the name: O(pattern x name), no backtracking blow-up.
fn glob(p: &[u8], s: &[u8]) -> bool {
    glob_dp(p, s)
}

fn glob_dp(p: &[u8], s: &[u8]) -> bool {
    // dp[j] = pattern[..i] matches s[..j]
    let mut dp = vec![false; s.len() + 1];
    dp[0] = true;
    for &pc in p {
        let mut next = vec![false; s.len() + 1];
        match pc {
            b'*' => {
                let mut any = false;
                for j in 0..=s.len() {
                    any |= dp[j];
                    next[j] = any;
                }
            }
            b'%' => {
                let mut any = false;
                for j in 0..=s.len() {
                    if j > 0 && s[j - 1] == b'/' {
                        any = false;
                    }
                    any |= dp[j];
                    next[j] = any;
                }
            }
            c => {
                for j in 1..=s.len() {
                    next[j] = dp[j - 1] && s[j - 1] == c;
                }
            }
        }
        dp = next;
    }
    dp[s.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises_inbox() {
        let n = MailboxName::parse("user/joe/inbox").unwrap();
        assert_eq!(n.as_str(), "user/joe/INBOX");
        assert_eq!(n.user(), "joe");
        assert_eq!(n.folder(), "INBOX");
        let n = MailboxName::parse("user/joe/Work/2026").unwrap();
        assert_eq!(n.parent().unwrap().as_str(), "user/joe/Work");
        assert!(MailboxName::parse("user/joe/Work")
            .unwrap()
            .is_ancestor_of(&n));
        assert!(!MailboxName::parse("user/joe/Wor")
            .unwrap()
            .is_ancestor_of(&n));
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "user/joe/..",
            "user/joe/a/../b",
            "user/joe/a//b",
            "user/joe/",
            "user/joe",
            "user/../x",
            "user/joe/a\0b",
            "user/joe/a\nb",
            "user/joe/.",
            "/etc/passwd",
            "user/joe/a*",
            "user/.joe/x",
        ] {
            assert!(MailboxName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(MailboxName::parse_bytes(b"user/joe/\xff\xfe").is_err());
        assert!(MailboxName::parse_bytes("user/joe/Entwürfe".as_bytes()).is_ok());
        let long = format!("user/joe/{}", "a".repeat(201));
        assert!(MailboxName::parse(&long).is_err());
        let deep = format!("user/joe/{}", vec!["a"; 65].join("/"));
        assert!(MailboxName::parse(&deep).is_err());
    }

    #[test]
    fn patterns_follow_imap_list() {
        let p = Pattern::new("user/usr44*");
        assert!(p.matches("user/usr44/INBOX"));
        assert!(p.matches("user/usr440/INBOX"));
        assert!(!p.matches("user/usr4/INBOX"));
        let p = Pattern::new("user/joe/%");
        assert!(p.matches("user/joe/INBOX"));
        assert!(!p.matches("user/joe/Work/2026"));
        let p = Pattern::new("user/%/INBOX");
        assert!(p.matches("user/joe/INBOX"));
        assert!(!p.matches("user/joe/x/INBOX"));
        let p = Pattern::new("*/2026");
        assert!(p.matches("user/joe/Work/2026"));
        let p = Pattern::new("user/joe/%/%");
        assert!(p.matches("user/joe/Work/2026"));
        assert!(!p.matches("user/joe/Work"));
        assert!(Pattern::new("*").matches(""));
        assert!(Pattern::new("%a*b%").matches("xa/yb"));
        assert!(!Pattern::new("%a%b%").matches("xa/yb"));
    }
}
