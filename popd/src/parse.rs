//! The POP3 command grammar (RFC 1939, 2449, 2595, 5034): I/O-free and bounded.

/// Longest command line accepted, CRLF included (RFC 2449 section 4).
pub const MAX_LINE: usize = 255;

/// One parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    User(String),
    /// The rest of the line: a password may contain spaces.
    Pass(String),
    Stat,
    List(Option<u32>),
    Retr(u32),
    Dele(u32),
    Noop,
    Rset,
    Quit,
    Top(u32, u32),
    Uidl(Option<u32>),
    Capa,
    /// `AUTH` alone (`None`) lists mechanisms.
    Auth {
        mechanism: Option<String>,
        initial: Option<String>,
    },
    Stls,
    Apop,
}

/// Why a line is not a command; the text goes after `-ERR `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty command")]
    Empty,
    #[error("unknown command")]
    Unknown,
    #[error("{0}")]
    BadArguments(&'static str),
    #[error("invalid message number")]
    BadNumber,
}

impl Command {
    /// True for commands whose arguments carry credentials (recorded redacted).
    pub fn is_secret(line: &[u8]) -> bool {
        let word: Vec<u8> = line
            .iter()
            .take_while(|b| !b.is_ascii_whitespace())
            .map(u8::to_ascii_uppercase)
            .collect();
        word == b"PASS" || word == b"AUTH" || word == b"APOP"
    }
}

/// A message number: decimal digits, 1 or more, fitting in u32.
fn number(s: &str) -> Result<u32, ParseError> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::BadNumber);
    }
    match s.parse::<u32>() {
        Ok(0) | Err(_) => Err(ParseError::BadNumber),
        Ok(n) => Ok(n),
    }
}

/// A count (TOP's line count): digits, 0 allowed.
fn count(s: &str) -> Result<u32, ParseError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::BadArguments("invalid line count"));
    }
    // A huge count means "the whole body".
    Ok(s.parse::<u32>().unwrap_or(u32::MAX))
}

/// Parse one line (with or without its CRLF).
pub fn parse_command(line: &[u8]) -> Result<Command, ParseError> {
    let line = strip_eol(line);
    let text = std::str::from_utf8(line).map_err(|_| ParseError::Unknown)?;
    let (word, rest) = match text.find(' ') {
        Some(i) => (&text[..i], &text[i + 1..]),
        None => (text, ""),
    };
    if word.is_empty() {
        return Err(ParseError::Empty);
    }
    let args: Vec<&str> = rest.split(' ').filter(|a| !a.is_empty()).collect();
    let upper = word.to_ascii_uppercase();
    let none = |c: Command| {
        if args.is_empty() {
            Ok(c)
        } else {
            Err(ParseError::BadArguments("no arguments allowed"))
        }
    };
    let optional_number = |args: &[&str]| -> Result<Option<u32>, ParseError> {
        match args {
            [] => Ok(None),
            [n] => number(n).map(Some),
            _ => Err(ParseError::BadArguments("too many arguments")),
        }
    };
    let one_number = |args: &[&str]| -> Result<u32, ParseError> {
        match args {
            [n] => number(n),
            [] => Err(ParseError::BadArguments("message number required")),
            _ => Err(ParseError::BadArguments("too many arguments")),
        }
    };
    match upper.as_str() {
        "USER" => match args.as_slice() {
            [name] => Ok(Command::User((*name).to_owned())),
            [] => Err(ParseError::BadArguments("user name required")),
            _ => Err(ParseError::BadArguments("too many arguments")),
        },
        "PASS" => {
            if rest.is_empty() {
                Err(ParseError::BadArguments("password required"))
            } else {
                Ok(Command::Pass(rest.to_owned()))
            }
        }
        "STAT" => none(Command::Stat),
        "LIST" => optional_number(&args).map(Command::List),
        "RETR" => one_number(&args).map(Command::Retr),
        "DELE" => one_number(&args).map(Command::Dele),
        "NOOP" => none(Command::Noop),
        "RSET" => none(Command::Rset),
        "QUIT" => none(Command::Quit),
        "TOP" => match args.as_slice() {
            [n, m] => Ok(Command::Top(number(n)?, count(m)?)),
            _ => Err(ParseError::BadArguments(
                "TOP needs a message number and a line count",
            )),
        },
        "UIDL" => optional_number(&args).map(Command::Uidl),
        "CAPA" => none(Command::Capa),
        "STLS" => none(Command::Stls),
        "APOP" => Ok(Command::Apop),
        "AUTH" => match args.as_slice() {
            [] => Ok(Command::Auth {
                mechanism: None,
                initial: None,
            }),
            [m] => Ok(Command::Auth {
                mechanism: Some(m.to_ascii_uppercase()),
                initial: None,
            }),
            [m, i] => Ok(Command::Auth {
                mechanism: Some(m.to_ascii_uppercase()),
                initial: Some((*i).to_owned()),
            }),
            _ => Err(ParseError::BadArguments("too many arguments")),
        },
        _ => Err(ParseError::Unknown),
    }
}

/// The line without its trailing CRLF (or bare LF).
pub fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Decode standard base64 (RFC 4648, padding optional). `None` if malformed.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let s = s.trim_end_matches('=').as_bytes();
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for &c in chunk {
            acc = (acc << 6) | val(c)?;
        }
        match chunk.len() {
            4 => out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]),
            3 => {
                acc <<= 6;
                out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8]);
            }
            2 => {
                acc <<= 12;
                out.push((acc >> 16) as u8);
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(parse_command(b"stat\r\n"), Ok(Command::Stat));
        assert_eq!(parse_command(b"LIST\r\n"), Ok(Command::List(None)));
        assert_eq!(parse_command(b"LIST 3\r\n"), Ok(Command::List(Some(3))));
        assert_eq!(parse_command(b"LIST 0\r\n"), Err(ParseError::BadNumber));
        assert_eq!(parse_command(b"LIST x\r\n"), Err(ParseError::BadNumber));
        assert_eq!(
            parse_command(b"LIST 99999999999\r\n"),
            Err(ParseError::BadNumber)
        );
        assert_eq!(parse_command(b"TOP 1 0\r\n"), Ok(Command::Top(1, 0)));
        assert!(parse_command(b"TOP 1\r\n").is_err());
        assert_eq!(
            parse_command(b"PASS a b c\r\n"),
            Ok(Command::Pass("a b c".into()))
        );
        assert_eq!(
            parse_command(b"AUTH plain dGVzdA==\r\n"),
            Ok(Command::Auth {
                mechanism: Some("PLAIN".into()),
                initial: Some("dGVzdA==".into())
            })
        );
        assert_eq!(parse_command(b"XYZZY\r\n"), Err(ParseError::Unknown));
        assert_eq!(parse_command(b"\r\n"), Err(ParseError::Empty));
        assert_eq!(parse_command(b"\xff\r\n"), Err(ParseError::Unknown));
        assert!(parse_command(b"NOOP 1\r\n").is_err());
        assert!(Command::is_secret(b"pass x"));
        assert!(!Command::is_secret(b"USER x"));
    }

    #[test]
    fn base64() {
        assert_eq!(
            base64_decode("AGpvZQBwdw==").as_deref(),
            Some(&b"\0joe\0pw"[..])
        );
        assert_eq!(base64_decode("dGVzdA").as_deref(), Some(&b"test"[..]));
        assert_eq!(base64_decode("").as_deref(), Some(&b""[..]));
        assert!(base64_decode("a").is_none());
        assert!(base64_decode("a$==").is_none());
    }
}
