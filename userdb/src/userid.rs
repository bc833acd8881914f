//! Validated user names.

use std::fmt;
use std::str::FromStr;

/// Longest user name, in characters (all ASCII, so also bytes).
pub const MAX_USERID_LEN: usize = 64;

/// A valid user name: 1 to 64 characters of `A-Z a-z 0-9 . _ @ + -`, not
/// starting with `.` or `-`. Compared case-sensitively, as Dovecot does.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(String);

/// Why a string is not a valid [`UserId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid user name {name:?}: {reason}")]
pub struct InvalidUserId {
    /// The rejected name (shown escaped, so control characters are visible).
    pub name: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl UserId {
    /// Checks `name` and wraps it.
    pub fn new(name: &str) -> Result<UserId, InvalidUserId> {
        let bad = |reason| InvalidUserId {
            name: name.chars().take(100).collect(),
            reason,
        };
        if name.is_empty() {
            return Err(bad("it is empty"));
        }
        if name.len() > MAX_USERID_LEN {
            return Err(bad("it is longer than 64 characters"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'+' | b'-'))
        {
            return Err(bad(
                "only letters, digits and the characters . _ @ + - are allowed",
            ));
        }
        if name.starts_with('.') || name.starts_with('-') {
            return Err(bad("it must not start with '.' or '-'"));
        }
        Ok(UserId(name.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for UserId {
    type Error = InvalidUserId;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        UserId::new(s)
    }
}

impl TryFrom<String> for UserId {
    type Error = InvalidUserId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        UserId::new(&s)
    }
}

impl FromStr for UserId {
    type Err = InvalidUserId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UserId::new(s)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for UserId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for UserId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for UserId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}
