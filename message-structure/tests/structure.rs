//! Integration tests over RFC-style example messages.

use message_structure::{Address, BodyPart, MessageStructure, PartContent, StructureError};

/// Turn a test message written with `\n` into the CRLF form the store uses.
fn crlf(s: &str) -> Vec<u8> {
    s.replace('\n', "\r\n").into_bytes()
}

fn slice(raw: &[u8], r: std::ops::Range<u64>) -> &str {
    std::str::from_utf8(&raw[r.start as usize..r.end as usize]).unwrap()
}

fn b(s: &str) -> Option<Vec<u8>> {
    Some(s.as_bytes().to_vec())
}

fn addr(name: Option<&str>, mailbox: &str, host: &str) -> Address {
    Address {
        name: name.map(|n| n.as_bytes().to_vec()),
        adl: None,
        mailbox: b(mailbox),
        host: b(host),
    }
}

fn group_start(name: &str) -> Address {
    Address {
        name: None,
        adl: None,
        mailbox: b(name),
        host: None,
    }
}

/// Structural invariants that must hold for any input.
fn check_part(len: u64, p: &BodyPart, depth: usize) {
    assert!(depth < 200, "runaway depth");
    assert!(p.header_start <= p.body_start, "{p:?}");
    assert!(p.body_start <= p.body_end, "{p:?}");
    assert!(p.body_end <= len);
    assert_eq!(p.size, p.body_end - p.body_start);
    match &p.content {
        PartContent::Multipart { children } => {
            assert!(!children.is_empty());
            let mut prev_end = p.body_start;
            for c in children {
                assert!(c.header_start >= prev_end, "children overlap");
                assert!(c.body_end <= p.body_end);
                prev_end = c.body_end;
                check_part(len, c, depth + 1);
            }
        }
        PartContent::Message { body, .. } => {
            assert_eq!(body.header_start, p.body_start);
            assert_eq!(body.body_end, p.body_end);
            check_part(len, body, depth + 1);
        }
        _ => {}
    }
}

fn check(raw: &[u8]) -> MessageStructure {
    let ms = MessageStructure::parse(raw);
    assert_eq!(ms.size, raw.len() as u64);
    assert_eq!(ms.body.header_start, 0);
    assert_eq!(ms.body.body_start, ms.header_len);
    assert_eq!(ms.body.body_end, ms.size);
    check_part(ms.size, &ms.body, 0);
    assert!(ms.preview.chars().count() <= message_structure::PREVIEW_MAX_CHARS);
    let back = MessageStructure::from_bytes(&ms.to_bytes()).expect("round trip");
    assert_eq!(back, ms);
    ms
}

fn depth_of(p: &BodyPart) -> usize {
    match &p.content {
        PartContent::Multipart { children } => 1 + children.iter().map(depth_of).max().unwrap_or(0),
        PartContent::Message { body, .. } => 1 + depth_of(body),
        _ => 0,
    }
}

/// Leaf offsets in reading order, not descending into attached messages.
fn leaves(p: &BodyPart, out: &mut Vec<(u64, u64, u64)>) {
    match &p.content {
        PartContent::Multipart { children } => children.iter().for_each(|c| leaves(c, out)),
        _ => out.push((p.header_start, p.body_start, p.body_end)),
    }
}

/// Compare leaf offsets with mail-parser's for well-formed messages.
fn cross_check_mail_parser(raw: &[u8], ms: &MessageStructure) {
    use mail_parser::{MessageParser, PartType};
    let msg = MessageParser::default()
        .parse(raw)
        .expect("mail-parser parses");
    let theirs: Vec<(u64, u64, u64)> = msg
        .parts
        .iter()
        .filter(|p| !matches!(p.body, PartType::Multipart(_)))
        .map(|p| {
            (
                p.offset_header as u64,
                p.offset_body as u64,
                p.offset_end as u64,
            )
        })
        .collect();
    let mut ours = Vec::new();
    leaves(&ms.body, &mut ours);
    assert_eq!(ours, theirs);
}

const SIMPLE: &str = "Return-Path: <mooch@owatagu.siam.edu>
Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)
From: Fred Foobar <foobar@Blurdybloop.example>
Subject: afternoon meeting
 again
To: mooch@owatagu.siam.edu
Message-Id: <B27397-0100000@Blurdybloop.example>
References: <a@example.com> <b@example.com>
  <c@example.com>
MIME-Version: 1.0
Content-Type: TEXT/PLAIN; CHARSET=US-ASCII

Hello Joe, do you think we can meet at 3:30 tomorrow?
  See you.
";

#[test]
fn simple_text_message() {
    let raw = crlf(SIMPLE);
    let ms = check(&raw);
    let header_text = slice(&raw, ms.header_range());
    assert!(header_text.starts_with("Return-Path:"));
    assert!(header_text.ends_with("CHARSET=US-ASCII\r\n\r\n"));
    assert_eq!(
        slice(&raw, ms.text_range()),
        "Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n  See you.\r\n"
    );

    let env = &ms.envelope;
    assert_eq!(env.date, b("Mon, 7 Feb 1994 21:52:25 -0800 (PST)"));
    assert_eq!(env.subject, b("afternoon meeting again"));
    assert_eq!(
        env.from,
        vec![addr(Some("Fred Foobar"), "foobar", "Blurdybloop.example")]
    );
    assert_eq!(env.sender, env.from);
    assert_eq!(env.reply_to, env.from);
    assert_eq!(env.to, vec![addr(None, "mooch", "owatagu.siam.edu")]);
    assert!(env.cc.is_empty() && env.bcc.is_empty());
    assert_eq!(env.in_reply_to, None);
    assert_eq!(env.message_id, b("<B27397-0100000@Blurdybloop.example>"));

    let body = &ms.body;
    assert_eq!(body.media_type, b"TEXT");
    assert_eq!(body.media_subtype, b"PLAIN");
    assert_eq!(
        body.params,
        vec![(b"CHARSET".to_vec(), b"US-ASCII".to_vec())]
    );
    assert_eq!(body.encoding, b"7BIT");
    assert_eq!(body.size, 67);
    assert_eq!(body.lines(), Some(2));
    assert_eq!(ms.part(&[1]), Some(body));
    assert_eq!(ms.part(&[2]), None);
    assert_eq!(ms.part(&[]), None);
    assert_eq!(ms.part(&[0]), None);
    assert_eq!(ms.part(&[1, 1]), None);

    assert!(!ms.has_attachment);
    assert_eq!(
        ms.preview,
        "Hello Joe, do you think we can meet at 3:30 tomorrow? See you."
    );
    assert_eq!(
        ms.references,
        vec![
            b"<a@example.com>".to_vec(),
            b"<b@example.com>".to_vec(),
            b"<c@example.com>".to_vec()
        ]
    );
    assert_eq!(
        ms.subject_decoded.as_deref(),
        Some("afternoon meeting again")
    );
    assert_eq!(ms.date_parsed, Some(760_686_745));
    assert_eq!(ms.from_sort_key.as_deref(), Some("foobar"));
    assert_eq!(ms.to_sort_key.as_deref(), Some("mooch"));
    assert_eq!(ms.cc_sort_key, None);
    assert_eq!(ms.display_from.as_deref(), Some("Fred Foobar"));
    cross_check_mail_parser(&raw, &ms);
}

const MIXED: &str = "From: Nathaniel Borenstein <nsb@nsb.fv.com>
To: Ned Freed <ned@innosoft.com>
Date: Sun, 21 Mar 1993 23:56:48 -0800 (PST)
Subject: Sample message
MIME-Version: 1.0
Content-type: multipart/mixed; boundary=\"simple boundary\"

This is the preamble.  It is to be ignored.
--simple boundary

This is implicitly typed plain US-ASCII text.
It does NOT end with a linebreak.
--simple boundary
Content-Type: application/pdf; name=\"report.pdf\"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename=\"report.pdf\"
Content-ID: <part2@example.com>
Content-Description: The report

JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K
eJwr5HIK4TI2tTQ=
--simple boundary--

This is the epilogue.  It is also to be ignored.
";

#[test]
fn multipart_mixed_with_base64_attachment() {
    let raw = crlf(MIXED);
    let ms = check(&raw);
    let body = &ms.body;
    assert!(body.is_multipart());
    assert_eq!(body.media_type, b"multipart");
    assert_eq!(body.media_subtype, b"mixed");
    assert_eq!(body.param("boundary"), Some(&b"simple boundary"[..]));
    assert_eq!(body.children().len(), 2);

    let p1 = ms.part(&[1]).unwrap();
    // A headerless part: its MIME header is just the blank line.
    assert_eq!(slice(&raw, p1.header_range()), "\r\n");
    assert_eq!(
        slice(&raw, p1.body_range()),
        "This is implicitly typed plain US-ASCII text.\r\nIt does NOT end with a linebreak."
    );
    // Part offsets are exact: the MIME header follows the delimiter line.
    let delim = "--simple boundary\r\n";
    let p1_hdr = slice(&raw, p1.header_start - delim.len() as u64..p1.header_start);
    assert_eq!(p1_hdr, delim);
    assert_eq!(p1.media_type, b"text");
    assert_eq!(p1.params, vec![(b"charset".to_vec(), b"us-ascii".to_vec())]);
    assert_eq!(p1.lines(), Some(1));
    assert_eq!(p1.size, 80);

    let p2 = ms.part(&[2]).unwrap();
    assert_eq!(
        slice(&raw, p2.header_range()),
        "Content-Type: application/pdf; name=\"report.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"report.pdf\"\r\n\
         Content-ID: <part2@example.com>\r\n\
         Content-Description: The report\r\n\r\n"
    );
    assert_eq!(
        slice(&raw, p2.body_range()),
        "JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K\r\neJwr5HIK4TI2tTQ="
    );
    assert_eq!(p2.media_type, b"application");
    assert_eq!(p2.media_subtype, b"pdf");
    assert_eq!(p2.params, vec![(b"name".to_vec(), b"report.pdf".to_vec())]);
    assert_eq!(p2.encoding, b"base64");
    assert_eq!(p2.content_id, b("<part2@example.com>"));
    assert_eq!(p2.description, b("The report"));
    let d = p2.disposition.as_ref().unwrap();
    assert_eq!(d.kind, b"attachment");
    assert_eq!(
        d.params,
        vec![(b"filename".to_vec(), b"report.pdf".to_vec())]
    );
    assert_eq!(p2.content, PartContent::Basic);
    assert_eq!(p2.lines(), None);
    assert_eq!(ms.part(&[3]), None);
    assert_eq!(ms.part(&[2, 1]), None);

    assert!(ms.has_attachment);
    assert_eq!(
        ms.preview,
        "This is implicitly typed plain US-ASCII text. It does NOT end with a linebreak."
    );
    cross_check_mail_parser(&raw, &ms);
}

const ALTERNATIVE: &str = "From: a@example.com
To: b@example.com
Subject: alt
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=outer

--outer
Content-Type: multipart/alternative; boundary=\"inner\"

--inner
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Caf=C3=A9 au lait =
ce soir?
--inner
Content-Type: text/html; charset=utf-8

<html><body><p>Caf&eacute; au lait ce soir?</p></body></html>
--inner--

--outer
Content-Type: image/png
Content-Transfer-Encoding: base64
Content-Disposition: inline; filename=dot.png
Content-Language: en, fr
Content-Location: http://example.com/dot.png
Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==

iVBORw0KGgo=
--outer--
";

#[test]
fn alternative_nested_in_mixed() {
    let raw = crlf(ALTERNATIVE);
    let ms = check(&raw);
    let alt = ms.part(&[1]).unwrap();
    assert!(alt.is_type("multipart", "alternative"));
    assert_eq!(alt.children().len(), 2);
    assert_eq!(
        slice(&raw, alt.header_range()),
        "Content-Type: multipart/alternative; boundary=\"inner\"\r\n\r\n"
    );
    // The multipart's body runs to the CRLF before the outer delimiter.
    assert!(slice(&raw, alt.body_range()).starts_with("--inner\r\n"));
    assert!(slice(&raw, alt.body_range()).ends_with("--inner--\r\n"));

    let plain = ms.part(&[1, 1]).unwrap();
    assert!(plain.is_type("text", "plain"));
    assert_eq!(plain.encoding, b"quoted-printable");
    assert_eq!(
        slice(&raw, plain.body_range()),
        "Caf=C3=A9 au lait =\r\nce soir?"
    );
    assert_eq!(plain.lines(), Some(1));

    let html = ms.part(&[1, 2]).unwrap();
    assert!(html.is_type("text", "html"));
    assert_eq!(
        slice(&raw, html.body_range()),
        "<html><body><p>Caf&eacute; au lait ce soir?</p></body></html>"
    );
    // The CRLF before the delimiter belongs to the delimiter.
    assert_eq!(html.lines(), Some(0));

    let img = ms.part(&[2]).unwrap();
    assert!(img.is_type("image", "png"));
    assert_eq!(slice(&raw, img.body_range()), "iVBORw0KGgo=");
    assert_eq!(img.language, vec![b"en".to_vec(), b"fr".to_vec()]);
    assert_eq!(img.location, b("http://example.com/dot.png"));
    assert_eq!(img.md5, b("Q2hlY2sgSW50ZWdyaXR5IQ=="));
    assert_eq!(img.disposition.as_ref().unwrap().kind, b"inline");

    assert_eq!(ms.part(&[1, 3]), None);
    assert_eq!(ms.part(&[3]), None);
    assert_eq!(ms.part(&[1, 1, 1]), None);
    // A non-text leaf in mixed counts as an attachment even when inline.
    assert!(ms.has_attachment);
    assert_eq!(ms.preview, "Café au lait ce soir?");
    cross_check_mail_parser(&raw, &ms);
}

const RFC822: &str = "From: Outer Sender <outer@example.org>
To: someone@example.net
Subject: Fwd: inner
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=\"b1\"

--b1
Content-Type: text/plain

See the forwarded message.
--b1
Content-Type: message/rfc822
Content-Disposition: inline

From: \"Inner, Person\" <inner@example.com>
To: Group: x@example.com, y@example.com;
Cc: cc@example.com
Date: Tue, 1 Jan 2019 10:00:00 +0000
Subject: inner
Message-ID: <inner@example.com>
In-Reply-To: <parent@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=\"b2\"

--b2
Content-Type: text/plain; charset=us-ascii

inner text
--b2
Content-Type: application/octet-stream
Content-Transfer-Encoding: base64

AAECAw==
--b2--

--b1--
";

#[test]
fn message_rfc822_attachment() {
    let raw = crlf(RFC822);
    let ms = check(&raw);
    let p2 = ms.part(&[2]).unwrap();
    assert!(p2.is_type("message", "rfc822"));
    let (env, inner) = p2.encapsulated().unwrap();
    assert_eq!(env.subject, b("inner"));
    assert_eq!(
        env.from,
        vec![addr(Some("Inner, Person"), "inner", "example.com")]
    );
    assert_eq!(env.sender, env.from);
    assert_eq!(env.reply_to, env.from);
    assert_eq!(
        env.to,
        vec![
            group_start("Group"),
            addr(None, "x", "example.com"),
            addr(None, "y", "example.com"),
            Address::default(),
        ]
    );
    assert_eq!(env.cc, vec![addr(None, "cc", "example.com")]);
    assert_eq!(env.message_id, b("<inner@example.com>"));
    assert_eq!(env.in_reply_to, b("<parent@example.com>"));

    // BODY[2.HEADER] and BODY[2.TEXT] ranges.
    let hdr = slice(&raw, inner.header_range());
    assert!(hdr.starts_with("From: \"Inner, Person\""));
    assert!(hdr.ends_with("boundary=\"b2\"\r\n\r\n"));
    assert_eq!(inner.header_start, p2.body_start);
    assert!(slice(&raw, inner.body_range()).starts_with("--b2\r\n"));
    assert!(slice(&raw, inner.body_range()).ends_with("--b2--\r\n"));
    assert_eq!(
        p2.lines(),
        Some(slice(&raw, p2.body_range()).matches('\n').count() as u64)
    );

    let p21 = ms.part(&[2, 1]).unwrap();
    assert_eq!(slice(&raw, p21.body_range()), "inner text");
    let p22 = ms.part(&[2, 2]).unwrap();
    assert!(p22.is_type("application", "octet-stream"));
    assert_eq!(slice(&raw, p22.body_range()), "AAECAw==");
    assert_eq!(ms.part(&[2, 3]), None);
    assert_eq!(ms.part(&[2, 2, 1]), None);

    assert!(ms.has_attachment);
    assert_eq!(ms.preview, "See the forwarded message.");
    assert_eq!(ms.display_from.as_deref(), Some("Outer Sender"));
}

#[test]
fn message_rfc822_with_single_part_body() {
    let raw = crlf(
        "From: a@b.c
Content-Type: multipart/mixed; boundary=x

--x
Content-Type: message/rfc822

Subject: inner
From: d@e.f

just text
--x--
",
    );
    let ms = check(&raw);
    let p1 = ms.part(&[1]).unwrap();
    let (env, inner) = p1.encapsulated().unwrap();
    assert_eq!(env.subject, b("inner"));
    // Part 1.1 of a non-multipart encapsulated message is its body.
    assert_eq!(ms.part(&[1, 1]), Some(inner));
    assert_eq!(slice(&raw, inner.body_range()), "just text");
    assert_eq!(ms.part(&[1, 2]), None);
    assert_eq!(ms.part(&[1, 1, 1]), None);
}

#[test]
fn addresses_groups_quoted_names_comments() {
    let raw = crlf(
        "From: \"Joe Q. Public\" <john.q.public@example.com>
Sender: Michael Jones <mjones@machine.example> (the boss)
Reply-To: mary@x.test (Mary Smith)
To: Mary Smith <mary@x.test>, jdoe@example.org, Who? <one@y.test>
Cc: <boss@nil.test>, \"Giant; \\\"Big\\\" Box\" <sysservices@example.net>
Bcc: A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;,
 Undisclosed recipients:;
Subject: addresses

body
",
    );
    let ms = check(&raw);
    let env = &ms.envelope;
    assert_eq!(
        env.from,
        vec![addr(Some("Joe Q. Public"), "john.q.public", "example.com")]
    );
    assert_eq!(
        env.sender,
        vec![addr(Some("Michael Jones"), "mjones", "machine.example")]
    );
    assert_eq!(
        env.reply_to,
        vec![addr(Some("Mary Smith"), "mary", "x.test")]
    );
    assert_eq!(
        env.to,
        vec![
            addr(Some("Mary Smith"), "mary", "x.test"),
            addr(None, "jdoe", "example.org"),
            addr(Some("Who?"), "one", "y.test"),
        ]
    );
    assert_eq!(
        env.cc,
        vec![
            addr(None, "boss", "nil.test"),
            addr(Some("Giant; \"Big\" Box"), "sysservices", "example.net"),
        ]
    );
    assert_eq!(
        env.bcc,
        vec![
            group_start("A Group"),
            addr(Some("Ed Jones"), "c", "a.test"),
            addr(None, "joe", "where.test"),
            addr(Some("John"), "jdoe", "one.test"),
            Address::default(),
            group_start("Undisclosed recipients"),
            Address::default(),
        ]
    );
    assert!(env.bcc[0].is_group_start() && env.bcc[4].is_group_end());
    assert_eq!(ms.from_sort_key.as_deref(), Some("john.q.public"));
    assert_eq!(ms.cc_sort_key.as_deref(), Some("boss"));
    assert_eq!(ms.display_from.as_deref(), Some("Joe Q. Public"));
}

#[test]
fn obsolete_route_in_address() {
    let raw = crlf("To: Joe <@relay1.test,@relay2.test:joe@final.test>\n\nx\n");
    let ms = check(&raw);
    assert_eq!(
        ms.envelope.to,
        vec![Address {
            name: b("Joe"),
            adl: b("@relay1.test,@relay2.test"),
            mailbox: b("joe"),
            host: b("final.test"),
        }]
    );
}

#[test]
fn sender_and_reply_to_filled_from_from() {
    let raw = crlf("From: Alice <alice@example.com>\nSender:\nTo: bob@example.com\n\nhi\n");
    let ms = check(&raw);
    let from = vec![addr(Some("Alice"), "alice", "example.com")];
    assert_eq!(ms.envelope.from, from);
    assert_eq!(ms.envelope.sender, from, "empty Sender is filled");
    assert_eq!(ms.envelope.reply_to, from, "absent Reply-To is filled");

    // No From either: everything stays empty.
    let ms = check(&crlf("Subject: x\n\nhi\n"));
    assert!(ms.envelope.from.is_empty());
    assert!(ms.envelope.sender.is_empty());
    assert!(ms.envelope.reply_to.is_empty());
    assert_eq!(ms.display_from, None);
    assert_eq!(ms.from_sort_key, None);
}

#[test]
fn encoded_word_subject_raw_in_envelope() {
    let raw = crlf(
        "From: =?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?= <keld@dkuug.dk>
To: =?US-ASCII?Q?Keith_Moore?= <moore@cs.utk.edu>
Subject: =?ISO-8859-1?B?SWYgeW91IGNhbiByZWFkIHRoaXMgeW8=?=
 =?ISO-8859-2?B?dSB1bmRlcnN0YW5kIHRoZSBleGFtcGxlLg==?=
Date: garbage date

body
",
    );
    let ms = check(&raw);
    assert_eq!(
        ms.envelope.subject,
        b("=?ISO-8859-1?B?SWYgeW91IGNhbiByZWFkIHRoaXMgeW8=?= =?ISO-8859-2?B?dSB1bmRlcnN0YW5kIHRoZSBleGFtcGxlLg==?=")
    );
    assert_eq!(
        ms.subject_decoded.as_deref(),
        Some("If you can read this you understand the example.")
    );
    assert_eq!(
        ms.envelope.from[0].name,
        b("=?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?=")
    );
    assert_eq!(ms.display_from.as_deref(), Some("Keld Jørn Simonsen"));
    assert_eq!(ms.envelope.date, b("garbage date"));
    assert_eq!(ms.date_parsed, None);
}

#[test]
fn bare_lf_message() {
    let raw = MIXED.as_bytes().to_vec();
    assert!(!raw.contains(&b'\r'));
    let ms = check(&raw);
    assert_eq!(
        slice(&raw, ms.header_range()).lines().last(),
        Some(""),
        "header includes the blank line"
    );
    assert!(slice(&raw, ms.header_range()).ends_with("boundary=\"simple boundary\"\n\n"));
    let p1 = ms.part(&[1]).unwrap();
    assert_eq!(
        slice(&raw, p1.body_range()),
        "This is implicitly typed plain US-ASCII text.\nIt does NOT end with a linebreak."
    );
    let p2 = ms.part(&[2]).unwrap();
    assert!(slice(&raw, p2.header_range()).starts_with("Content-Type: application/pdf"));
    assert!(slice(&raw, p2.header_range()).ends_with("The report\n\n"));
    assert_eq!(
        slice(&raw, p2.body_range()),
        "JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K\neJwr5HIK4TI2tTQ="
    );
    assert_eq!(ms.envelope.subject, b("Sample message"));
    cross_check_mail_parser(&raw, &ms);

    let simple = check(SIMPLE.as_bytes());
    assert_eq!(simple.envelope.subject, b("afternoon meeting again"));
    assert_eq!(simple.body.lines(), Some(2));
}

#[test]
fn empty_input() {
    let ms = check(b"");
    assert_eq!(ms.header_len, 0);
    assert_eq!(ms.size, 0);
    assert!(ms.body.is_type("text", "plain"));
    assert_eq!(ms.body.size, 0);
    assert_eq!(ms.body.lines(), Some(0));
    assert_eq!(ms.envelope, Default::default());
    assert_eq!(ms.preview, "");
    assert!(!ms.has_attachment);
    assert_eq!(ms.part(&[1]), Some(&ms.body));
}

#[test]
fn header_only_and_body_only_messages() {
    let ms = check(b"Subject: no body");
    assert_eq!(ms.header_len, 16);
    assert_eq!(ms.envelope.subject, b("no body"));
    let ms = check(b"\r\njust a body\r\n");
    assert_eq!(ms.header_len, 2);
    assert_eq!(ms.preview, "just a body");
}

#[test]
fn deeply_nested_multipart_does_not_overflow() {
    let n = 1000;
    let mut raw = String::from("Subject: deep\r\n");
    for i in 0..n {
        raw.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
        ));
    }
    raw.push_str("Content-Type: text/plain\r\n\r\ninnermost\r\n");
    for i in (0..n).rev() {
        raw.push_str(&format!("--b{i}--\r\n"));
    }
    let raw = raw.into_bytes();
    // Run on a thread with a modest stack to prove recursion is bounded.
    let ms = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(move || {
            let ms = check(&raw);
            (ms, raw)
        })
        .unwrap()
        .join()
        .unwrap()
        .0;
    let depth = depth_of(&ms.body);
    assert!(depth <= message_structure::MAX_DEPTH + 1, "depth {depth}");
    // The deepest container became an opaque leaf.
    let mut p = &ms.body;
    while let PartContent::Multipart { children } = &p.content {
        p = &children[0];
    }
    assert!(p.is_type("application", "octet-stream"));
}

#[test]
fn deeply_nested_messages_do_not_overflow() {
    let mut raw = String::new();
    for _ in 0..1000 {
        raw.push_str("Content-Type: message/rfc822\r\n\r\n");
    }
    raw.push_str("Subject: innermost\r\n\r\nhello\r\n");
    let raw = raw.into_bytes();
    let ms = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(move || check(&raw))
        .unwrap()
        .join()
        .unwrap();
    assert!(depth_of(&ms.body) <= message_structure::MAX_DEPTH + 1);
    assert!(ms.has_attachment);
    // Numbering through encapsulated messages: 1.1.1... all resolve.
    assert!(ms.part(&[1; 10]).is_some());
}

#[test]
fn truncated_and_broken_multiparts() {
    // Unterminated: the last part runs to the end of the message.
    let raw = crlf("Content-Type: multipart/mixed; boundary=zz\n\n--zz\nContent-Type: text/plain\n\npart one\n--zz\n\npart two, truncated");
    let ms = check(&raw);
    assert_eq!(ms.body.children().len(), 2);
    assert_eq!(
        slice(&raw, ms.part(&[2]).unwrap().body_range()),
        "part two, truncated"
    );

    // No boundary parameter / no delimiter: one headerless text/plain child
    // spanning the body.
    for raw in [
        crlf("Content-Type: multipart/mixed\n\nsome text\n"),
        crlf("Content-Type: multipart/mixed; boundary=q\n\nno delimiters here\n"),
    ] {
        let ms = check(&raw);
        let c = ms.part(&[1]).unwrap();
        assert!(c.is_type("text", "plain"));
        assert_eq!(c.body_range(), ms.body.body_range());
    }

    // A line that merely starts with the boundary is not a delimiter.
    let raw = crlf("Content-Type: multipart/mixed; boundary=ab\n\n--ab\n\n--abc is text\n--ab--\n");
    let ms = check(&raw);
    assert_eq!(ms.body.children().len(), 1);
    assert_eq!(
        slice(&raw, ms.part(&[1]).unwrap().body_range()),
        "--abc is text"
    );

    // Outer delimiter terminates an unterminated inner multipart.
    let raw = crlf("Content-Type: multipart/mixed; boundary=o\n\n--o\nContent-Type: multipart/alternative; boundary=i\n\n--i\n\ninner\n--o\n\nsecond\n--o--\n");
    let ms = check(&raw);
    assert_eq!(slice(&raw, ms.part(&[1, 1]).unwrap().body_range()), "inner");
    assert_eq!(slice(&raw, ms.part(&[2]).unwrap().body_range()), "second");
}

#[test]
fn multipart_digest_defaults_to_message() {
    let raw = crlf("Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: one\n\nfirst\n--d\nContent-Type: text/plain\n\nnot a message\n--d--\n");
    let ms = check(&raw);
    let p1 = ms.part(&[1]).unwrap();
    assert!(p1.is_type("message", "rfc822"));
    assert_eq!(p1.encapsulated().unwrap().0.subject, b("one"));
    assert!(ms.part(&[2]).unwrap().is_type("text", "plain"));
}

#[test]
fn base64_message_rfc822_is_a_basic_leaf() {
    let raw = crlf(
        "Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\nU3ViamVjdDogeA0KDQp5\n",
    );
    let ms = check(&raw);
    assert_eq!(ms.body.content, PartContent::Basic);
    assert!(ms.body.is_type("message", "rfc822"));
}

#[test]
fn preview_decoding() {
    // base64 + ISO-8859-1 text/plain.
    let raw = crlf("Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: base64\n\nSuly9G1lIGEg6XTpIGzgLgo=\n");
    let ms = check(&raw);
    assert_eq!(ms.preview, "Jérôme a été là.");

    // HTML only: tags stripped, whitespace collapsed.
    let raw = crlf("Content-Type: text/html\n\n<html><head><style>p{}</style></head><body><p>Hello</p>\n\n<b>world</b></body></html>\n");
    let ms = check(&raw);
    assert_eq!(ms.preview, "Hello world");

    // Long text is cut to 200 characters.
    let long = "word ".repeat(100);
    let raw = crlf(&format!("Subject: long\n\n{long}\n"));
    let ms = check(&raw);
    assert_eq!(ms.preview.chars().count(), 199);
    assert!(ms.preview.starts_with("word word"));

    // Undeclared 8-bit UTF-8 text is shown as UTF-8.
    let raw = crlf("Subject: x\n\nGrüße aus Köln\n");
    assert_eq!(check(&raw).preview, "Grüße aus Köln");

    // Attachments are not previewed.
    let raw = crlf("Content-Type: text/plain\nContent-Disposition: attachment\n\nsecret\n");
    let ms = check(&raw);
    assert_eq!(ms.preview, "");
    assert!(ms.has_attachment);
}

#[test]
fn has_attachment_heuristics() {
    // Inline image in multipart/related is not an attachment.
    let raw = crlf("Content-Type: multipart/related; boundary=r\n\n--r\nContent-Type: text/html\n\n<img src=cid:x>\n--r\nContent-Type: image/png\nContent-ID: <x>\n\nAAAA\n--r--\n");
    assert!(!check(&raw).has_attachment);
    // Signature of multipart/signed is not an attachment.
    let raw = crlf("Content-Type: multipart/signed; boundary=s; protocol=\"application/pgp-signature\"\n\n--s\nContent-Type: text/plain\n\nsigned\n--s\nContent-Type: application/pgp-signature\n\nSIG\n--s--\n");
    assert!(!check(&raw).has_attachment);
    // A plain single-part PDF is.
    assert!(check(&crlf("Content-Type: application/pdf\n\n%PDF\n")).has_attachment);
}

#[test]
fn rfc2231_parameters_joined() {
    let raw = crlf("Content-Type: application/x-stuff;\n title*0*=us-ascii'en'This%20is%20even%20more%20;\n title*1*=%2A%2A%2Afun%2A%2A%2A%20;\n title*2=\"isn't it!\"\nContent-Disposition: attachment; filename*0=\"long \"; filename*1=\"name.txt\"\n\nx\n");
    let ms = check(&raw);
    assert_eq!(
        ms.body.params,
        vec![(
            b"title*".to_vec(),
            b"us-ascii'en'This%20is%20even%20more%20%2A%2A%2Afun%2A%2A%2A%20isn%27t%20it!".to_vec()
        )]
    );
    assert_eq!(
        ms.body.disposition.as_ref().unwrap().params,
        vec![(b"filename".to_vec(), b"long name.txt".to_vec())]
    );
}

#[test]
fn postcard_round_trip_and_errors() {
    for m in [SIMPLE, MIXED, ALTERNATIVE, RFC822] {
        let ms = MessageStructure::parse(&crlf(m));
        let bytes = ms.to_bytes();
        assert_eq!(bytes[0], message_structure::FORMAT_VERSION);
        assert_eq!(MessageStructure::from_bytes(&bytes).unwrap(), ms);
        // Truncations never panic and are errors.
        for cut in [1, bytes.len() / 2, bytes.len() - 1] {
            assert!(MessageStructure::from_bytes(&bytes[..cut]).is_err());
        }
    }
    assert!(matches!(
        MessageStructure::from_bytes(&[]),
        Err(StructureError::Empty)
    ));
    assert!(matches!(
        MessageStructure::from_bytes(&[99, 0, 0]),
        Err(StructureError::UnsupportedVersion(99))
    ));
    assert!(matches!(
        MessageStructure::from_bytes(&[message_structure::FORMAT_VERSION, 0xff, 0xff]),
        Err(StructureError::Decode(_))
    ));
}

/// Deterministic xorshift64* generator (no extra crates).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_inputs_never_panic() {
    const FRAGMENTS: &[&str] = &[
        "\r\n",
        "\n",
        "\r\n\r\n",
        "--b\r\n",
        "--b--\r\n",
        "--c\n",
        "Content-Type: multipart/mixed; boundary=b\r\n",
        "Content-Type: multipart/digest; boundary=c\n",
        "Content-Type: message/rfc822\r\n",
        "Content-Type: text/html; charset=utf-8\r\n",
        "Content-Transfer-Encoding: base64\r\n",
        "Content-Transfer-Encoding: quoted-printable\r\n",
        "Content-Disposition: attachment; filename*0*=x'y'%; filename*1=\"",
        "From: \"a\\\" (b <c@d>, g: ;",
        "To: <@a,@b:",
        "Subject: =?utf-8?B?=?=?q?\r\n",
        "Date: Mon, 31 Feb 99999 25:61:61 +9999\r\n",
        " folded\r\n",
        "=?",
        "=\r\n",
        "<html><",
        "(((",
        ":",
        ";",
        "\"",
        "\\",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..3000 {
        let mut input = Vec::new();
        let pieces = rng.below(40);
        for _ in 0..pieces {
            if rng.below(3) == 0 {
                for _ in 0..rng.below(20) {
                    input.push(rng.next() as u8);
                }
            } else {
                input.extend_from_slice(FRAGMENTS[rng.below(FRAGMENTS.len())].as_bytes());
            }
        }
        let ms = check(&input);
        // Every resolvable section stays within the message.
        for s in [&[1][..], &[1, 1], &[2], &[1, 2, 1], &[2, 1]] {
            if let Some(p) = ms.part(s) {
                assert!(p.body_end <= ms.size);
            }
        }
        // Garbage blobs are errors, not panics.
        let mut blob = ms.to_bytes();
        let idx = rng.below(blob.len());
        blob[idx] = rng.next() as u8;
        let _ = MessageStructure::from_bytes(&blob);
    }
    // Pure random bytes too.
    for len in 0..500 {
        let input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        check(&input);
    }
}
