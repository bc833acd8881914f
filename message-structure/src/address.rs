//! A small, forgiving RFC 5322 address-list parser working on raw header
//! bytes and producing IMAP ENVELOPE address structures.
//!
//! Names keep their raw form: quoted-string content is unquoted and
//! unescaped, but RFC 2047 encoded-words are left untouched (IMAP clients
//! decode them). Comments are dropped, except that when an address has no
//! display name the last comment is used as its name (`user@host (Name)`).
//! A missing local part or domain is given as an empty string, never NIL,
//! because a NIL host means "group marker" in IMAP.

use crate::Address;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// Run of atom text, dots included.
    Atom(Vec<u8>),
    /// Quoted-string content, unescaped.
    Quoted(Vec<u8>),
    /// Comment content (without the outer parentheses).
    Comment(Vec<u8>),
    /// Domain literal including the brackets.
    Literal(Vec<u8>),
    /// One of `< > , : ; @`.
    Special(u8),
}

fn is_atom_byte(b: u8) -> bool {
    !matches!(
        b,
        b' ' | b'\t'
            | b'\r'
            | b'\n'
            | b'('
            | b')'
            | b'<'
            | b'>'
            | b'['
            | b']'
            | b':'
            | b';'
            | b'@'
            | b','
            | b'"'
            | b'\\'
    ) && b >= 0x20
        && b != 0x7f
}

fn tokenize(v: &[u8]) -> Vec<Tok> {
    let mut toks = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let b = v[i];
        match b {
            b'"' => {
                let mut s = Vec::new();
                i += 1;
                while i < v.len() {
                    match v[i] {
                        b'\\' if i + 1 < v.len() => {
                            s.push(v[i + 1]);
                            i += 2;
                        }
                        b'"' => {
                            i += 1;
                            break;
                        }
                        b'\r' | b'\n' => i += 1,
                        c => {
                            s.push(c);
                            i += 1;
                        }
                    }
                }
                toks.push(Tok::Quoted(s));
            }
            b'(' => {
                let mut depth = 1usize;
                let mut s = Vec::new();
                i += 1;
                while i < v.len() {
                    match v[i] {
                        b'\\' if i + 1 < v.len() => {
                            s.push(v[i + 1]);
                            i += 2;
                            continue;
                        }
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    s.push(v[i]);
                    i += 1;
                }
                toks.push(Tok::Comment(s));
            }
            b'[' => {
                let start = i;
                i += 1;
                while i < v.len() && v[i] != b']' {
                    i += 1;
                }
                i = (i + 1).min(v.len());
                toks.push(Tok::Literal(v[start..i].to_vec()));
            }
            b'<' | b'>' | b',' | b':' | b';' | b'@' => {
                toks.push(Tok::Special(b));
                i += 1;
            }
            b'\\' => {
                // Stray quoted-pair outside quotes: keep the escaped byte.
                let mut s = Vec::new();
                if let Some(&c) = v.get(i + 1) {
                    s.push(c);
                }
                i += 2;
                while i < v.len() && is_atom_byte(v[i]) {
                    s.push(v[i]);
                    i += 1;
                }
                toks.push(Tok::Atom(s));
            }
            _ if is_atom_byte(b) => {
                let start = i;
                while i < v.len() && is_atom_byte(v[i]) {
                    i += 1;
                }
                toks.push(Tok::Atom(v[start..i].to_vec()));
            }
            // Whitespace, control bytes, stray ')' or ']'.
            _ => i += 1,
        }
    }
    toks
}

fn join_words(words: &[&[u8]], sep: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, w) in words.iter().enumerate() {
        if n > 0 {
            out.extend_from_slice(sep);
        }
        out.extend_from_slice(w);
    }
    out
}

fn last_comment(comments: &[Vec<u8>]) -> Option<Vec<u8>> {
    comments.iter().rev().find(|c| !c.is_empty()).cloned()
}

struct Parser {
    toks: Vec<Tok>,
    i: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i)
    }

    fn special(&self) -> Option<u8> {
        match self.peek() {
            Some(Tok::Special(c)) => Some(*c),
            _ => None,
        }
    }

    /// Collect words (atoms, quoted strings, literals) and comments until a
    /// special token or the end.
    fn words(&mut self, comments: &mut Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        let mut words = Vec::new();
        while let Some(t) = self.peek() {
            match t {
                Tok::Atom(w) | Tok::Quoted(w) | Tok::Literal(w) => words.push(w.clone()),
                Tok::Comment(c) => comments.push(c.clone()),
                Tok::Special(_) => break,
            }
            self.i += 1;
        }
        words
    }

    /// Domain after '@': concatenation of atoms/literals up to a delimiter.
    fn domain(&mut self, comments: &mut Vec<Vec<u8>>) -> Vec<u8> {
        let words = self.words(comments);
        let refs: Vec<&[u8]> = words.iter().map(|w| w.as_slice()).collect();
        join_words(&refs, b"")
    }

    /// Parse the inside of `<...>` (the '<' has been consumed).
    fn angle_addr(&mut self, name: Option<Vec<u8>>, comments: &mut Vec<Vec<u8>>) -> Address {
        let mut adl = None;
        // Obsolete route: "@a,@b:".
        if self.special() == Some(b'@') {
            let mut route = Vec::new();
            let save = self.i;
            let mut ok = false;
            while let Some(t) = self.peek() {
                match t {
                    Tok::Special(b':') => {
                        self.i += 1;
                        ok = true;
                        break;
                    }
                    Tok::Special(b'>') | Tok::Special(b';') => break,
                    Tok::Special(c) => route.push(*c),
                    Tok::Atom(w) | Tok::Literal(w) | Tok::Quoted(w) => route.extend_from_slice(w),
                    Tok::Comment(_) => {}
                }
                self.i += 1;
            }
            if ok {
                adl = Some(route);
            } else {
                // Not a route after all ("<@host>"): reparse as addr-spec.
                self.i = save;
            }
        }
        let local_words = self.words(comments);
        let refs: Vec<&[u8]> = local_words.iter().map(|w| w.as_slice()).collect();
        let mailbox = join_words(&refs, b"");
        let mut host = Vec::new();
        if self.special() == Some(b'@') {
            self.i += 1;
            host = self.domain(comments);
            // Tolerate a second '@' ("a@b@c"): fold it into the host.
            while self.special() == Some(b'@') {
                self.i += 1;
                host.push(b'@');
                host.extend(self.domain(comments));
            }
        }
        if self.special() == Some(b'>') {
            self.i += 1;
        }
        Address {
            name,
            adl,
            mailbox: Some(mailbox),
            host: Some(host),
        }
    }

    /// Skip everything up to the next ',' or ';' (or the end).
    fn skip_to_delimiter(&mut self) {
        while let Some(t) = self.peek() {
            if matches!(t, Tok::Special(b',') | Tok::Special(b';')) {
                break;
            }
            self.i += 1;
        }
    }

    fn mailbox_list(&mut self, out: &mut Vec<Address>) {
        let mut in_group = false;
        loop {
            match self.special() {
                Some(b',') => {
                    self.i += 1;
                    continue;
                }
                Some(b';') => {
                    self.i += 1;
                    if in_group {
                        out.push(Address::default());
                        in_group = false;
                    }
                    continue;
                }
                Some(b'>') => {
                    self.i += 1;
                    continue;
                }
                _ => {}
            }
            if self.peek().is_none() {
                break;
            }
            let mut comments = Vec::new();
            let words = self.words(&mut comments);
            let refs: Vec<&[u8]> = words.iter().map(|w| w.as_slice()).collect();
            let phrase = join_words(&refs, b" ");
            match self.special() {
                Some(b':') => {
                    self.i += 1;
                    if !in_group {
                        in_group = true;
                        out.push(Address {
                            name: None,
                            adl: None,
                            mailbox: Some(phrase),
                            host: None,
                        });
                    }
                    // A ':' inside a group is junk: drop the words.
                }
                Some(b'<') => {
                    self.i += 1;
                    let name = if words.is_empty() { None } else { Some(phrase) };
                    let mut inner_comments = Vec::new();
                    let mut addr = self.angle_addr(name, &mut inner_comments);
                    let mut trailing = Vec::new();
                    // Trailing comments after '>' may supply a name.
                    while let Some(Tok::Comment(c)) = self.peek() {
                        trailing.push(c.clone());
                        self.i += 1;
                    }
                    if addr.name.is_none() {
                        comments.extend(trailing);
                        addr.name = last_comment(&comments);
                    }
                    out.push(addr);
                    self.skip_to_delimiter();
                }
                Some(b'@') => {
                    self.i += 1;
                    let mailbox = join_words(&refs, b"");
                    let mut host = self.domain(&mut comments);
                    while self.special() == Some(b'@') {
                        self.i += 1;
                        host.push(b'@');
                        host.extend(self.domain(&mut comments));
                    }
                    out.push(Address {
                        name: last_comment(&comments),
                        adl: None,
                        mailbox: Some(mailbox),
                        host: Some(host),
                    });
                    // Anything else before the delimiter (e.g. "a@b <c@d>")
                    // is parsed as a further address.
                }
                _ => {
                    // Bare word(s) without '@': a mailbox with no domain.
                    if !words.is_empty() {
                        out.push(Address {
                            name: last_comment(&comments),
                            adl: None,
                            mailbox: Some(phrase),
                            host: Some(Vec::new()),
                        });
                    }
                }
            }
        }
        if in_group {
            out.push(Address::default());
        }
    }
}

/// Parse an address-list header value (already unfolded) into IMAP address
/// structures, with groups as start/end markers.
pub(crate) fn parse_address_list(value: &[u8]) -> Vec<Address> {
    let mut p = Parser {
        toks: tokenize(value),
        i: 0,
    };
    let mut out = Vec::new();
    p.mailbox_list(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(name: Option<&str>, mailbox: &str, host: &str) -> Address {
        Address {
            name: name.map(|n| n.as_bytes().to_vec()),
            adl: None,
            mailbox: Some(mailbox.as_bytes().to_vec()),
            host: Some(host.as_bytes().to_vec()),
        }
    }

    #[test]
    fn simple_forms() {
        assert_eq!(
            parse_address_list(b"john@example.com"),
            vec![a(None, "john", "example.com")]
        );
        assert_eq!(
            parse_address_list(b"John Doe <john@example.com>, <x@y>"),
            vec![
                a(Some("John Doe"), "john", "example.com"),
                a(None, "x", "y")
            ]
        );
    }

    #[test]
    fn quoted_names_and_comments() {
        assert_eq!(
            parse_address_list(br#""Doe, John \"JD\"" <jd@example.com>"#),
            vec![a(Some(r#"Doe, John "JD""#), "jd", "example.com")]
        );
        assert_eq!(
            parse_address_list(b"jd@example.com (John Doe)"),
            vec![a(Some("John Doe"), "jd", "example.com")]
        );
        assert_eq!(
            parse_address_list(b"Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>"),
            vec![a(Some("Pete"), "pete", "silly.test")]
        );
        assert_eq!(
            parse_address_list(b"=?utf-8?q?J=C3=B6rg?= <j@x.de>"),
            vec![a(Some("=?utf-8?q?J=C3=B6rg?="), "j", "x.de")]
        );
        assert_eq!(
            parse_address_list(br#""john doe"@example.com"#),
            vec![a(None, "john doe", "example.com")]
        );
    }

    #[test]
    fn groups() {
        let got = parse_address_list(
            b"A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;, Undisclosed recipients:;",
        );
        let start = |n: &str| Address {
            name: None,
            adl: None,
            mailbox: Some(n.as_bytes().to_vec()),
            host: None,
        };
        assert_eq!(
            got,
            vec![
                start("A Group"),
                a(Some("Ed Jones"), "c", "a.test"),
                a(None, "joe", "where.test"),
                a(Some("John"), "jdoe", "one.test"),
                Address::default(),
                start("Undisclosed recipients"),
                Address::default(),
            ]
        );
        // Unterminated group is closed.
        assert_eq!(
            parse_address_list(b"g: a@b"),
            vec![start("g"), a(None, "a", "b"), Address::default()]
        );
    }

    #[test]
    fn routes_and_missing_parts() {
        let got = parse_address_list(b"Joe <@r1.test,@r2.test:joe@x.test>");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].adl.as_deref(), Some(&b"@r1.test,@r2.test"[..]));
        assert_eq!(got[0].mailbox.as_deref(), Some(&b"joe"[..]));
        assert_eq!(got[0].host.as_deref(), Some(&b"x.test"[..]));

        assert_eq!(
            parse_address_list(b"undisclosed-recipients"),
            vec![a(None, "undisclosed-recipients", "")]
        );
        assert_eq!(
            parse_address_list(b"Joe <joe"),
            vec![a(Some("Joe"), "joe", "")]
        );
        assert_eq!(parse_address_list(b""), vec![]);
        assert_eq!(parse_address_list(b" , ; > ) ]"), vec![]);
        assert_eq!(
            parse_address_list(b"a@[127.0.0.1]"),
            vec![a(None, "a", "[127.0.0.1]")]
        );
    }
}
