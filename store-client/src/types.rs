//! Validated types at the edge of the store: flags, keywords, UID sets.

use std::fmt;

use crate::ClientError;

/// A message flag: one of the five system flags, or a keyword.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Flag {
    Seen,
    Answered,
    Flagged,
    Deleted,
    Draft,
    Keyword(Keyword),
}

impl Flag {
    /// Parse a flag as IMAP writes it (`\Seen`, `$Forwarded`); system flags case-insensitively.
    pub fn parse(s: &str) -> Result<Flag, ClientError> {
        if let Some(sys) = s.strip_prefix('\\') {
            return match sys.to_ascii_lowercase().as_str() {
                "seen" => Ok(Flag::Seen),
                "answered" => Ok(Flag::Answered),
                "flagged" => Ok(Flag::Flagged),
                "deleted" => Ok(Flag::Deleted),
                "draft" => Ok(Flag::Draft),
                _ => Err(ClientError::InvalidArgument(format!(
                    "unknown system flag {s}"
                ))),
            };
        }
        Ok(Flag::Keyword(Keyword::new(s)?))
    }

    fn bit(&self) -> u32 {
        use msgstore::flag::*;
        match self {
            Flag::Seen => SEEN,
            Flag::Answered => ANSWERED,
            Flag::Flagged => FLAGGED,
            Flag::Deleted => DELETED,
            Flag::Draft => DRAFT,
            Flag::Keyword(_) => 0,
        }
    }
}

impl fmt::Display for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Flag::Seen => f.write_str("\\Seen"),
            Flag::Answered => f.write_str("\\Answered"),
            Flag::Flagged => f.write_str("\\Flagged"),
            Flag::Deleted => f.write_str("\\Deleted"),
            Flag::Draft => f.write_str("\\Draft"),
            Flag::Keyword(k) => f.write_str(k.as_str()),
        }
    }
}

/// A keyword: an IMAP atom without `\`, at most 59 bytes (the store's keyword slot).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Keyword(String);

impl Keyword {
    pub fn new(s: &str) -> Result<Keyword, ClientError> {
        let ok = !s.is_empty()
            && s.len() <= msgstore::index::MAX_KEYWORD_LEN
            && s.bytes().all(|b| {
                b.is_ascii_graphic()
                    && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
            });
        if ok {
            Ok(Keyword(s.to_owned()))
        } else {
            Err(ClientError::InvalidArgument(format!(
                "invalid keyword {s:?}"
            )))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A set of flags as the store keeps them: system flag bits plus keyword names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    pub(crate) bits: u32,
    pub(crate) keywords: Vec<String>,
}

impl Flags {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn from_list(flags: &[Flag]) -> Self {
        let mut f = Flags::default();
        for fl in flags {
            f.insert(fl.clone());
        }
        f
    }
    pub fn insert(&mut self, flag: Flag) {
        match flag {
            Flag::Keyword(k) => {
                if !self
                    .keywords
                    .iter()
                    .any(|x| x.eq_ignore_ascii_case(k.as_str()))
                {
                    self.keywords.push(k.0)
                }
            }
            other => self.bits |= other.bit(),
        }
    }
    pub fn contains(&self, flag: &Flag) -> bool {
        match flag {
            Flag::Keyword(k) => self
                .keywords
                .iter()
                .any(|x| x.eq_ignore_ascii_case(k.as_str())),
            other => self.bits & other.bit() != 0,
        }
    }
    pub fn is_seen(&self) -> bool {
        self.bits & msgstore::flag::SEEN != 0
    }
    pub fn is_deleted(&self) -> bool {
        self.bits & msgstore::flag::DELETED != 0
    }
    /// All flags, system flags first, in a stable order.
    pub fn to_vec(&self) -> Vec<Flag> {
        let mut v = Vec::new();
        for (bit, f) in [
            (msgstore::flag::SEEN, Flag::Seen),
            (msgstore::flag::ANSWERED, Flag::Answered),
            (msgstore::flag::FLAGGED, Flag::Flagged),
            (msgstore::flag::DELETED, Flag::Deleted),
            (msgstore::flag::DRAFT, Flag::Draft),
        ] {
            if self.bits & bit != 0 {
                v.push(f);
            }
        }
        for k in &self.keywords {
            v.push(Flag::Keyword(Keyword(k.clone())));
        }
        v
    }
    pub fn keywords(&self) -> impl Iterator<Item = &str> {
        self.keywords.iter().map(String::as_str)
    }
}

/// A set of UIDs or sequence numbers as ranges (`1:5,7,9:*` once `*` is resolved).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NumberSet {
    ranges: Vec<(u32, u32)>,
}

impl NumberSet {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn all() -> Self {
        NumberSet {
            ranges: vec![(1, u32::MAX)],
        }
    }
    pub fn single(n: u32) -> Self {
        NumberSet {
            ranges: vec![(n, n)],
        }
    }
    pub fn range(a: u32, b: u32) -> Self {
        NumberSet {
            ranges: vec![(a.min(b), a.max(b))],
        }
    }
    pub fn push(&mut self, a: u32, b: u32) {
        self.ranges.push((a.min(b), a.max(b)));
    }
    pub fn contains(&self, n: u32) -> bool {
        self.ranges.iter().any(|&(a, b)| a <= n && n <= b)
    }
    pub fn ranges(&self) -> &[(u32, u32)] {
        &self.ranges
    }
    /// Parse the IMAP sequence-set syntax, with `*` standing for `star`.
    pub fn parse(s: &str, star: u32) -> Result<Self, ClientError> {
        let bad = || ClientError::InvalidArgument(format!("invalid set {s:?}"));
        let num = |t: &str| -> Result<u32, ClientError> {
            if t == "*" {
                return Ok(star);
            }
            match t.parse::<u32>() {
                Ok(0) | Err(_) => Err(bad()),
                Ok(n) => Ok(n),
            }
        };
        let mut set = NumberSet::new();
        for part in s.split(',') {
            match part.split_once(':') {
                Some((a, b)) => set.push(num(a)?, num(b)?),
                None => {
                    let n = num(part)?;
                    set.push(n, n)
                }
            }
        }
        Ok(set)
    }
}

impl fmt::Display for NumberSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (a, b)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if a == b {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}:{b}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_print() {
        assert_eq!(Flag::parse("\\SEEN").unwrap(), Flag::Seen);
        assert_eq!(Flag::parse("$Forwarded").unwrap().to_string(), "$Forwarded");
        assert!(Flag::parse("\\Recent2").is_err());
        assert!(Flag::parse("bad(kw").is_err());
        assert!(Flag::parse(&"k".repeat(60)).is_err());
        let f = Flags::from_list(&[Flag::Deleted, Flag::parse("Junk").unwrap(), Flag::Seen]);
        assert_eq!(
            f.to_vec()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["\\Seen", "\\Deleted", "Junk"]
        );
    }

    #[test]
    fn sets_parse() {
        let s = NumberSet::parse("1:3,7,9:*", 12).unwrap();
        assert!(s.contains(2) && s.contains(7) && s.contains(12) && !s.contains(8));
        assert!(NumberSet::parse("0", 5).is_err());
        assert!(NumberSet::parse("1:x", 5).is_err());
        assert_eq!(NumberSet::parse("5:2", 9).unwrap().to_string(), "2:5");
    }
}
