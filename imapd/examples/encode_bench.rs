//! Response encoding micro-benchmark: the responses the IMAP benchmark sends most, encoded
//! the old way (`format!` per line, as session.rs did before issue #4's change), by our
//! own allocation-free encoder (`respond::fetch_flags`, `encode::envelope`) and by
//! imap-codec (`respond::*`, `ResponseCodec`). Every figure appends to one reused buffer.
//!
//! `cargo run --release -p imapd --example encode_bench [iterations]` (default 1,000,000).

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Instant;

use imap_codec::encode::Encoder;
use imap_codec::imap_types::core::{Literal, NString, Vec1};
use imap_codec::imap_types::fetch::MessageDataItem;
use imap_codec::imap_types::response::{Data, Response};
use imapd::respond::{self, Reply};
use message_structure::{Address, Envelope};
use store_client::{Flag, Flags, Keyword};

fn time(n: u32, buf: &mut Vec<u8>, mut f: impl FnMut(&mut Vec<u8>)) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        buf.clear();
        f(buf);
        black_box(&buf);
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

/// The FETCH FLAGS line as session.rs wrote it before: a String per flag, per part, per line.
fn old_flags_line(out: &mut Vec<u8>, seq: u32, f: &Flags, uid: u32) {
    let v: Vec<String> = f.to_vec().iter().map(ToString::to_string).collect();
    let flags = format!("({})", v.join(" "));
    let mut l = format!("* {seq} FETCH (");
    let parts = [format!("FLAGS {flags}"), format!("UID {uid}")];
    l.push_str(&parts.join(" "));
    l.push(')');
    out.extend_from_slice(l.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn addr(name: &str, mailbox: &str, host: &str) -> Address {
    Address {
        name: Some(name.as_bytes().to_vec()),
        adl: None,
        mailbox: Some(mailbox.as_bytes().to_vec()),
        host: Some(host.as_bytes().to_vec()),
    }
}

fn report(name: &str, rows: &[(&str, f64)]) {
    let codec = rows
        .iter()
        .find(|r| r.0 == "imap-codec")
        .map(|r| r.1)
        .unwrap_or(f64::NAN);
    let mut line = format!("{name}:");
    for (label, ns) in rows {
        line.push_str(&format!(" {label} {ns:.0} ns,"));
    }
    let own = rows
        .iter()
        .find(|r| r.0 == "own")
        .map(|r| r.1)
        .unwrap_or(f64::NAN);
    line.push_str(&format!(" imap-codec/own {:.2}", codec / own));
    println!("{line}");
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    println!("{n} responses per figure, ns per response");
    let mut buf = Vec::with_capacity(64 * 1024);

    // FETCH (FLAGS) for every message of a folder, and STORE's FETCH FLAGS (with UID).
    let flags = Flags::from_list(&[
        Flag::Seen,
        Flag::Answered,
        Flag::Keyword(Keyword::new("$Forwarded").expect("keyword")),
    ]);
    let old = time(n, &mut buf, |o| old_flags_line(o, 137, &flags, 2137));
    let own = time(n, &mut buf, |o| {
        respond::fetch_flags(o, 137, Some((&flags, false)), Some(2137), None)
    });
    let codec = time(n, &mut buf, |o| {
        respond::fetch_flags_codec(o, 137, Some((&flags, false)), Some(2137), None)
    });
    report(
        "* 137 FETCH (FLAGS (\\Seen \\Answered $Forwarded) UID 2137)",
        &[("old", old), ("own", own), ("imap-codec", codec)],
    );

    // FETCH (UID ENVELOPE).
    let env = Envelope {
        date: Some(b"Wed, 17 Jul 2024 02:23:25 -0700".to_vec()),
        subject: Some(b"Re: the quarterly figures, as discussed on Monday".to_vec()),
        from: vec![addr("Terry Gray", "gray", "example.org")],
        sender: vec![addr("Terry Gray", "gray", "example.org")],
        reply_to: vec![addr("Terry Gray", "gray", "example.org")],
        to: vec![
            addr("IMAP list", "imap", "example.com"),
            addr("Jo Doe", "jo", "example.com"),
        ],
        cc: vec![],
        bcc: vec![],
        in_reply_to: Some(b"<B27397-0100000@example.org>".to_vec()),
        message_id: Some(b"<C18423-0100000@example.org>".to_vec()),
    };
    let own = time(n, &mut buf, |o| {
        o.extend_from_slice(b"* 137 FETCH (UID ");
        respond::push_u64(o, 2137);
        o.extend_from_slice(b" ENVELOPE ");
        imapd::encode::envelope(o, &env);
        o.extend_from_slice(b")\r\n");
    });
    let codec = time(n, &mut buf, |o| {
        respond::fetch_envelope_codec(o, 137, 2137, &env)
    });
    report(
        "* 137 FETCH (UID 2137 ENVELOPE (...))",
        &[("own", own), ("imap-codec", codec)],
    );

    // FETCH (BODYSTRUCTURE) of a multipart/alternative message with an attachment.
    let msg = b"From: a@example.com\r\nSubject: s\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\n\
Content-Type: multipart/alternative; boundary=i\r\n\r\n--i\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n--i\r\n\
Content-Type: text/html; charset=utf-8\r\n\r\n<p>hello</p>\r\n--i--\r\n--o\r\n\
Content-Type: application/pdf; name=a.pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--o--\r\n";
    let st = message_structure::MessageStructure::parse(msg);
    let own = time(n, &mut buf, |o| {
        o.extend_from_slice(b"* 137 FETCH (BODYSTRUCTURE ");
        imapd::encode::body_structure(o, &st.body, true);
        o.extend_from_slice(b")\r\n");
    });
    let codec = time(n, &mut buf, |o| {
        respond::fetch_body_structure_codec(o, 137, &st.body)
    });
    report(
        "* 137 FETCH (BODYSTRUCTURE (...)) (4 parts)",
        &[("own", own), ("imap-codec", codec)],
    );

    // FETCH BODY.PEEK[] of a 10 KB message held in memory (bigger ones are streamed from
    // the file, which imap-codec cannot do: it needs the whole literal).
    let body = vec![b'x'; 10 * 1024];
    let own = time(n / 10, &mut buf, |o| {
        o.extend_from_slice(b"* 1 FETCH (UID 2137 BODY[] ");
        imapd::encode::literal(o, &body);
        o.extend_from_slice(b")\r\n");
    });
    let codec = time(n / 10, &mut buf, |o| {
        let data = Literal::try_from(body.as_slice()).expect("literal");
        let items = vec![
            MessageDataItem::Uid(NonZeroU32::MIN.saturating_add(2136)),
            MessageDataItem::BodyExt {
                section: None,
                origin: None,
                data: NString::from(data),
            },
        ];
        let items = Vec1::try_from(items).expect("items");
        let r = Response::Data(Data::Fetch {
            seq: NonZeroU32::MIN,
            items,
        });
        for f in imap_codec::ResponseCodec::default().encode(&r) {
            match f {
                imap_codec::encode::Fragment::Line { data }
                | imap_codec::encode::Fragment::Literal { data, .. } => o.extend_from_slice(&data),
            }
        }
    });
    report(
        "* 1 FETCH (UID 2137 BODY[] {10240} ...)",
        &[("own", own), ("imap-codec", codec)],
    );

    // APPEND's tagged OK [APPENDUID].
    let old = time(n, &mut buf, |o| {
        // The old code: a `format!` for the status, another for the line (`tagged`).
        let status = format!(
            "OK [APPENDUID {} {}] APPEND completed",
            black_box(1_700_000_000u32),
            black_box(4242u32)
        );
        let s = format!("{} {status}", black_box("a17"));
        o.extend_from_slice(s.as_bytes());
        o.extend_from_slice(b"\r\n");
    });
    let codec = time(n, &mut buf, |o| {
        let code = respond::append_uid(black_box(1_700_000_000), black_box(4242));
        let code = code.expect("nonzero");
        let r = Reply::ok("APPEND completed").with(code);
        respond::status(o, Some(black_box("a17")), &r);
    });
    report(
        "a17 OK [APPENDUID 1700000000 4242] APPEND completed",
        &[("old", old), ("own", old), ("imap-codec", codec)],
    );

    // EXPUNGE.
    let old = time(n, &mut buf, |o| {
        let s = format!("* {} EXPUNGE", black_box(137u32));
        o.extend_from_slice(s.as_bytes());
        o.extend_from_slice(b"\r\n");
    });
    let codec = time(n, &mut buf, |o| respond::expunge(o, black_box(137)));
    report(
        "* 137 EXPUNGE",
        &[("old", old), ("own", old), ("imap-codec", codec)],
    );
}
