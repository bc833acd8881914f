//! The LMTP command parser and the DATA decoder: pure, bounded, no I/O.

/// One parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Lhlo(String),
    /// HELO or EHLO: an LMTP server must refuse them (RFC 2033 4.1).
    Helo,
    Mail {
        from: String,
        size: Option<u64>,
        body: Body,
    },
    Rcpt {
        to: String,
    },
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
}

/// The BODY parameter of MAIL FROM (RFC 6152).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Body {
    #[default]
    SevenBit,
    EightBitMime,
}

/// Why a command line was refused, each with its reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// 500 5.5.1
    #[error("unrecognized command")]
    Unknown,
    /// 501 5.5.4 (bad arguments) / 501 5.1.7 / 501 5.1.3 (bad address)
    #[error("syntax error: {0}")]
    Syntax(&'static str),
    /// 555 5.5.4
    #[error("unsupported parameter: {0}")]
    Parameter(String),
}

impl ParseError {
    /// The full reply line (without CRLF).
    pub fn reply(&self) -> String {
        match self {
            ParseError::Unknown => "500 5.5.1 Command unrecognized".to_owned(),
            ParseError::Syntax(what) => format!("501 5.5.4 Syntax error: {what}"),
            ParseError::Parameter(p) => {
                format!("555 5.5.4 Unsupported parameter {}", printable(p, 64))
            }
        }
    }
}

/// Shorten and strip control characters, for echoing client input in replies and logs.
pub fn printable(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect::<String>()
}

/// Parse one command line (CRLF or LF already removed).
pub fn parse_command(line: &[u8]) -> Result<Command, ParseError> {
    let line = std::str::from_utf8(line).map_err(|_| ParseError::Syntax("not UTF-8"))?;
    let line = line.trim_end_matches(['\r', '\n']);
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], line[i + 1..].trim()),
        None => (line, ""),
    };
    let verb = verb.to_ascii_uppercase();
    let no_args = |c: Command| {
        if rest.is_empty() {
            Ok(c)
        } else {
            Err(ParseError::Syntax("no arguments allowed"))
        }
    };
    match verb.as_str() {
        "LHLO" => {
            if rest.is_empty() || rest.contains(char::is_whitespace) {
                return Err(ParseError::Syntax("LHLO needs one host name"));
            }
            if rest.chars().any(|c| c.is_control()) || rest.len() > 255 {
                return Err(ParseError::Syntax("invalid host name"));
            }
            Ok(Command::Lhlo(rest.to_owned()))
        }
        "HELO" | "EHLO" => Ok(Command::Helo),
        "MAIL" => {
            let args =
                strip_keyword(rest, "FROM:").ok_or(ParseError::Syntax("MAIL FROM:<address>"))?;
            let (from, params) = parse_path(args)?;
            let mut size = None;
            let mut body = Body::default();
            for (k, v) in params {
                match (k.to_ascii_uppercase().as_str(), v) {
                    ("SIZE", Some(v)) => {
                        size = Some(
                            v.parse::<u64>()
                                .map_err(|_| ParseError::Syntax("SIZE needs a number"))?,
                        )
                    }
                    ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => {
                        body = Body::EightBitMime
                    }
                    ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => body = Body::SevenBit,
                    _ => return Err(ParseError::Parameter(k.to_owned())),
                }
            }
            Ok(Command::Mail { from, size, body })
        }
        "RCPT" => {
            let args = strip_keyword(rest, "TO:").ok_or(ParseError::Syntax("RCPT TO:<address>"))?;
            let (to, params) = parse_path(args)?;
            if let Some((k, _)) = params.first() {
                return Err(ParseError::Parameter((*k).to_owned()));
            }
            if to.is_empty() {
                return Err(ParseError::Syntax("empty recipient"));
            }
            Ok(Command::Rcpt { to })
        }
        "DATA" => no_args(Command::Data),
        "RSET" => no_args(Command::Rset),
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_args(Command::Quit),
        "VRFY" => {
            if rest.is_empty() {
                Err(ParseError::Syntax("VRFY needs an argument"))
            } else {
                Ok(Command::Vrfy)
            }
        }
        "HELP" => Ok(Command::Help),
        _ => Err(ParseError::Unknown),
    }
}

/// `FROM:` / `TO:` case-insensitively, allowing a space after the colon.
fn strip_keyword<'a>(s: &'a str, kw: &str) -> Option<&'a str> {
    let head = s.get(..kw.len())?;
    if head.eq_ignore_ascii_case(kw) {
        Some(s[kw.len()..].trim_start())
    } else {
        None
    }
}

type Params<'a> = Vec<(&'a str, Option<&'a str>)>;

/// A path (`<addr>`, `<>`, or a bare address) and its `KEY[=VALUE]` parameters.
pub fn parse_path(s: &str) -> Result<(String, Params<'_>), ParseError> {
    let (addr, rest) = if let Some(inner) = s.strip_prefix('<') {
        let end = inner
            .find('>')
            .ok_or(ParseError::Syntax("missing '>' after address"))?;
        (&inner[..end], &inner[end + 1..])
    } else {
        match s.find(' ') {
            Some(i) => (&s[..i], &s[i..]),
            None => (s, ""),
        }
    };
    if !rest.is_empty() && !rest.starts_with(' ') {
        return Err(ParseError::Syntax("text after address"));
    }
    // A source route (`@a,@b:user@c`) is accepted and ignored (RFC 5321 4.1.2).
    let addr = match addr.strip_prefix('@') {
        Some(r) => match r.find(':') {
            Some(i) => &r[i + 1..],
            None => return Err(ParseError::Syntax("invalid source route")),
        },
        None => addr,
    };
    if addr.len() > 512 {
        return Err(ParseError::Syntax("address too long"));
    }
    if addr
        .chars()
        .any(|c| c.is_control() || c == '<' || c == '>' || c == ' ')
    {
        return Err(ParseError::Syntax("invalid character in address"));
    }
    let mut params = Vec::new();
    for p in rest.split(' ').filter(|p| !p.is_empty()) {
        if p.chars().any(|c| c.is_control()) {
            return Err(ParseError::Syntax("invalid parameter"));
        }
        match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => params.push((k, Some(v))),
            Some(_) => return Err(ParseError::Syntax("invalid parameter")),
            None => params.push((p, None)),
        }
    }
    Ok((addr.to_owned(), params))
}

/// A recipient address split into the user, the `+detail` (if any) and the domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    pub user: String,
    pub detail: Option<String>,
    pub domain: Option<String>,
}

/// `joe+lists@example.com` -> user `joe`, detail `lists`, domain `example.com`.
/// A quoted local part (`"joe"@example.com`) is unquoted.
pub fn parse_recipient(addr: &str) -> Option<Recipient> {
    let (local, domain) = match addr.rfind('@') {
        Some(i) => (&addr[..i], Some(addr[i + 1..].to_owned())),
        None => (addr, None),
    };
    let local = match local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) {
        Some(q) => {
            let mut out = String::with_capacity(q.len());
            let mut chars = q.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    out.push(chars.next()?);
                } else {
                    out.push(c);
                }
            }
            out
        }
        None => local.to_owned(),
    };
    let (user, detail) = match local.split_once('+') {
        Some((u, d)) => (u.to_owned(), (!d.is_empty()).then(|| d.to_owned())),
        None => (local, None),
    };
    if user.is_empty() {
        return None;
    }
    Some(Recipient {
        user,
        detail,
        domain,
    })
}

/// Where the DATA decoder is within the current line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DotState {
    /// At the start of a line.
    LineStart,
    /// A line started with '.'.
    Dot,
    /// A line started with ".\r".
    DotCr,
    /// Anywhere else in a line.
    Mid,
}

/// Decodes the DATA stream: removes dot-stuffing, finds the final `.` line, and keeps at
/// most `limit` bytes of message (the rest is counted and discarded).
#[derive(Debug)]
pub struct DataDecoder {
    state: DotState,
    out: Vec<u8>,
    limit: usize,
    total: u64,
}

impl DataDecoder {
    pub fn new(limit: usize) -> DataDecoder {
        DataDecoder {
            state: DotState::LineStart,
            out: Vec::new(),
            limit,
            total: 0,
        }
    }

    fn emit(&mut self, b: u8) {
        self.total += 1;
        if self.out.len() < self.limit {
            self.out.push(b);
        }
    }

    /// Feed received bytes. Returns `Some(n)` when the final `.` line ended at `chunk[n-1]`
    /// (bytes from `n` on belong to the next command), `None` when more data is needed.
    pub fn feed(&mut self, chunk: &[u8]) -> Option<usize> {
        for (i, &b) in chunk.iter().enumerate() {
            self.state = match (self.state, b) {
                (DotState::LineStart, b'.') => DotState::Dot,
                (DotState::Dot, b'\r') => DotState::DotCr,
                (DotState::Dot | DotState::DotCr, b'\n') => return Some(i + 1),
                (DotState::DotCr, _) => {
                    // ".\r" followed by something else: the leading dot goes, the rest stays.
                    self.emit(b'\r');
                    self.emit(b);
                    if b == b'\n' {
                        DotState::LineStart
                    } else {
                        DotState::Mid
                    }
                }
                (_, b'\n') => {
                    self.emit(b);
                    DotState::LineStart
                }
                (_, b) => {
                    // LineStart, Mid, or Dot (a stuffed dot: the first dot is removed).
                    self.emit(b);
                    DotState::Mid
                }
            };
        }
        None
    }

    /// The message was longer than the limit.
    pub fn overflowed(&self) -> bool {
        self.total > self.limit as u64
    }

    /// Bytes of message seen (after unstuffing), kept or not.
    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn into_message(self) -> Vec<u8> {
        self.out
    }
}

/// An RFC 5322 date-time in UTC for a Unix time (`Sat, 29 Nov 2025 14:40:00 +0000`).
pub fn rfc5322_date(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // 1970-01-01 was a Thursday.
    let weekday = (days + 4).rem_euclid(7);
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[weekday as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8]) -> (Option<usize>, Vec<u8>) {
        let mut d = DataDecoder::new(1 << 20);
        let r = d.feed(input);
        (r, d.into_message())
    }

    #[test]
    fn dot_unstuffing() {
        let (end, msg) = decode(b"Subject: x\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n");
        assert_eq!(msg, b"Subject: x\r\n\r\n.leading dot\r\n");
        assert_eq!(end, Some(b"Subject: x\r\n\r\n..leading dot\r\n.\r\n".len()));
        // A dot not at the start of a line stays; "..." loses one dot.
        let (_, msg) = decode(b"a.b\r\n...\r\n.x\r\n.\r\n");
        assert_eq!(msg, b"a.b\r\n..\r\nx\r\n");
        // Bare LF line endings are tolerated (the store normalises).
        let (end, msg) = decode(b"a\n..b\n.\n");
        assert_eq!(msg, b"a\n.b\n");
        assert_eq!(end, Some(8));
        // Empty message.
        assert_eq!(decode(b".\r\n"), (Some(3), Vec::new()));
        // ".\r" followed by something else is data.
        let (_, msg) = decode(b".\rx\r\n.\r\n");
        assert_eq!(msg, b"\rx\r\n");
    }

    #[test]
    fn terminator_split_across_chunks() {
        let input = b"line one\r\n..two\r\n.\r\n";
        for split in 0..input.len() {
            let mut d = DataDecoder::new(1000);
            let a = d.feed(&input[..split]);
            let end = match a {
                Some(n) => Some(n),
                None => d.feed(&input[split..]).map(|n| n + split),
            };
            assert_eq!(end, Some(input.len()), "split at {split}");
            assert_eq!(d.into_message(), b"line one\r\n.two\r\n");
        }
    }

    #[test]
    fn data_limit_discards_but_finds_end() {
        let mut d = DataDecoder::new(4);
        assert_eq!(d.feed(b"0123456789\r\n"), None);
        assert_eq!(d.feed(b".\r\n"), Some(3));
        assert!(d.overflowed());
        assert_eq!(d.total(), 12);
        assert_eq!(d.into_message(), b"0123");
        let mut d = DataDecoder::new(12);
        d.feed(b"0123456789\r\n.\r\n");
        assert!(!d.overflowed());
    }

    #[test]
    fn addresses_with_and_without_brackets() {
        assert_eq!(
            parse_command(b"MAIL FROM:<joe@example.com>"),
            Ok(Command::Mail {
                from: "joe@example.com".into(),
                size: None,
                body: Body::SevenBit
            })
        );
        assert_eq!(
            parse_command(b"mail from: joe@example.com"),
            Ok(Command::Mail {
                from: "joe@example.com".into(),
                size: None,
                body: Body::SevenBit
            })
        );
        assert_eq!(
            parse_command(b"MAIL FROM:<>"),
            Ok(Command::Mail {
                from: String::new(),
                size: None,
                body: Body::SevenBit
            })
        );
        assert_eq!(
            parse_command(b"RCPT TO:<@relay.example:bob@example.com>"),
            Ok(Command::Rcpt {
                to: "bob@example.com".into()
            })
        );
        assert_eq!(
            parse_command(b"rcpt to:bob"),
            Ok(Command::Rcpt { to: "bob".into() })
        );
        assert!(matches!(
            parse_command(b"RCPT TO:<bob@example.com"),
            Err(ParseError::Syntax(_))
        ));
        assert!(matches!(
            parse_command(b"RCPT TO:<>"),
            Err(ParseError::Syntax(_))
        ));
        assert!(matches!(
            parse_command(b"RCPT TO:<a\x01b>"),
            Err(ParseError::Syntax(_))
        ));
        assert!(matches!(
            parse_command(b"RCPT TO:<a@b>junk"),
            Err(ParseError::Syntax(_))
        ));
        assert!(matches!(parse_command(b"RCPT"), Err(ParseError::Syntax(_))));
    }

    #[test]
    fn parameters() {
        assert_eq!(
            parse_command(b"MAIL FROM:<a@b> SIZE=1234 BODY=8BITMIME"),
            Ok(Command::Mail {
                from: "a@b".into(),
                size: Some(1234),
                body: Body::EightBitMime
            })
        );
        assert_eq!(
            parse_command(b"MAIL FROM:<a@b> body=7bit"),
            Ok(Command::Mail {
                from: "a@b".into(),
                size: None,
                body: Body::SevenBit
            })
        );
        assert!(matches!(
            parse_command(b"MAIL FROM:<a@b> SIZE=lots"),
            Err(ParseError::Syntax(_))
        ));
        assert_eq!(
            parse_command(b"MAIL FROM:<a@b> SMTPUTF8"),
            Err(ParseError::Parameter("SMTPUTF8".into()))
        );
        assert_eq!(
            parse_command(b"RCPT TO:<a@b> NOTIFY=NEVER"),
            Err(ParseError::Parameter("NOTIFY".into()))
        );
    }

    #[test]
    fn commands() {
        assert_eq!(
            parse_command(b"lhlo client.example\r\n"),
            Ok(Command::Lhlo("client.example".into()))
        );
        assert!(parse_command(b"LHLO").is_err());
        assert_eq!(parse_command(b"EHLO x"), Ok(Command::Helo));
        assert_eq!(parse_command(b"data"), Ok(Command::Data));
        assert!(parse_command(b"DATA now").is_err());
        assert_eq!(parse_command(b"NOOP whatever"), Ok(Command::Noop));
        assert_eq!(parse_command(b"VRFY joe"), Ok(Command::Vrfy));
        assert_eq!(parse_command(b"QUIT"), Ok(Command::Quit));
        assert_eq!(parse_command(b"RSET"), Ok(Command::Rset));
        assert_eq!(parse_command(b"FOO"), Err(ParseError::Unknown));
        assert_eq!(parse_command(b""), Err(ParseError::Unknown));
        assert!(parse_command(b"\xff\xfe").is_err());
    }

    #[test]
    fn recipients() {
        assert_eq!(
            parse_recipient("joe+lists@example.com"),
            Some(Recipient {
                user: "joe".into(),
                detail: Some("lists".into()),
                domain: Some("example.com".into())
            })
        );
        assert_eq!(
            parse_recipient("Joe"),
            Some(Recipient {
                user: "Joe".into(),
                detail: None,
                domain: None
            })
        );
        assert_eq!(
            parse_recipient("\"j\\\"o\"@x").map(|r| r.user),
            Some("j\"o".into())
        );
        assert_eq!(parse_recipient("joe+@x").and_then(|r| r.detail), None);
        assert_eq!(parse_recipient("@x"), None);
        assert_eq!(parse_recipient("+d@x"), None);
    }

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_764_427_200),
            "Sat, 29 Nov 2025 14:40:00 +0000"
        );
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }
}
