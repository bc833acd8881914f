//! Command parsing micro-benchmark: the same commands through imap-codec (the path
//! `parse::parse_command` takes for them) and through our own grammar.
//!
//! `cargo run --release -p imapd --example parse_bench [iterations]` (default 1,000,000).

use std::hint::black_box;
use std::time::Instant;

const COMMANDS: &[(&str, &[u8])] = &[
    ("UID FETCH 1:* (FLAGS)", b"a12 UID FETCH 1:* (FLAGS)\r\n"),
    (
        "UID FETCH BODY.PEEK[HEADER.FIELDS (...)]",
        b"a13 UID FETCH 1:500 (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Subject Date Message-ID Content-Type)])\r\n",
    ),
];

fn time(n: u32, f: impl Fn() -> bool) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        assert!(black_box(f()));
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    println!("{n} parses per figure, ns per parse");
    for (name, cmd) in COMMANDS {
        let via_codec = imapd::codec::decode(cmd);
        assert!(via_codec.is_some(), "{name} must go through imap-codec");
        assert_eq!(via_codec, imapd::parse::parse_own(cmd).ok());
        let codec = time(n, || imapd::parse::parse_command(black_box(cmd)).is_ok());
        let own = time(n, || imapd::parse::parse_own(black_box(cmd)).is_ok());
        // imap-codec's own decoding alone, without our conversion.
        let raw = time(n, || {
            use imap_codec::decode::Decoder;
            imap_codec::CommandCodec::default()
                .decode(black_box(cmd))
                .is_ok()
        });
        println!(
            "{name}: imap-codec path {codec:.0} ns (of which imap-codec's decode {raw:.0} ns), \
             own grammar {own:.0} ns, ratio {:.2}",
            codec / own
        );
    }
}
