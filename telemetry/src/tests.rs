use super::*;
use std::cell::RefCell;
use std::rc::Rc;

const SEED: &str = "LOGIN redb 2003/11/26 13:03:21\n\
>0.017>1 OK User logged in\n\
2 OK Completed\n\
<0.046<3 select \"INBOX\"\n\
>0.236>* FLAGS (\\Answered ...)\n";

/// 2003/11/26 13:03:21 UTC.
fn seed_login() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_069_851_801)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn seed_example_parses() {
    let cap = parse_capture(SEED.as_bytes()).expect("seed parses");
    assert_eq!(cap.user, "redb");
    assert_eq!(cap.login, seed_login());
    assert_eq!(cap.records.len(), 3);
    assert_eq!(cap.records[0].direction, Direction::Server);
    assert_eq!(cap.records[0].delay, ms(17));
    assert_eq!(
        cap.records[0].data,
        b"1 OK User logged in\n2 OK Completed\n"
    );
    assert_eq!(cap.records[1].direction, Direction::Client);
    assert_eq!(cap.records[1].delay, ms(46));
    assert_eq!(cap.records[1].data, b"3 select \"INBOX\"\n");
    assert_eq!(cap.records[2].direction, Direction::Server);
    assert_eq!(cap.records[2].delay, ms(236));
    assert_eq!(cap.records[2].data, b"* FLAGS (\\Answered ...)\n");
    assert_eq!(cap.to_bytes(), SEED.as_bytes());
}

#[test]
fn writer_reproduces_seed_example() {
    let t0 = Instant::now();
    let mut w = CaptureWriter::new(Vec::new());
    w.login("redb", seed_login(), t0).unwrap();
    w.server_chunk(b"1 OK User logged in\n2 OK Completed\n", t0 + ms(17))
        .unwrap();
    w.client_chunk(b"3 select \"INBOX\"\n", t0 + ms(17 + 46))
        .unwrap();
    w.server_chunk(b"* FLAGS (\\Answered ...)\n", t0 + ms(17 + 46 + 236))
        .unwrap();
    let out = w.finish().unwrap().unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), SEED);
}

#[test]
fn writer_output_round_trips_through_parser() {
    let t0 = Instant::now();
    let mut w = CaptureWriter::new(Vec::new());
    w.login("joe@example.com", seed_login(), t0).unwrap();
    let chunks: Vec<(Direction, &[u8], u64)> = vec![
        (Direction::Server, b"* OK ready\r\n", 1),
        (Direction::Client, b"a1 CAPABILITY\r\n", 1200),
        (
            Direction::Server,
            b"* CAPABILITY IMAP4rev1\r\na1 OK done\r\n",
            1203,
        ),
        (Direction::Client, b"a2 APPEND INBOX {11}\r\n", 65_000),
        (Direction::Client, b"hello\r\nbye\r\n", 65_001),
    ];
    for (d, data, at) in &chunks {
        w.record(*d, data, t0 + ms(*at)).unwrap();
    }
    let out = w.finish().unwrap().unwrap();
    let cap = parse_capture(&out).unwrap();
    assert_eq!(cap.user, "joe@example.com");
    assert_eq!(cap.records.len(), chunks.len());
    let mut prev = 0;
    for (r, (d, data, at)) in cap.records.iter().zip(&chunks) {
        assert_eq!(r.direction, *d);
        assert_eq!(r.data, *data);
        assert_eq!(r.delay, ms(at - prev));
        prev = *at;
    }
    assert_eq!(cap.to_bytes(), out);
}

#[test]
fn delays_have_three_decimals() {
    let t0 = Instant::now();
    let mut w = CaptureWriter::new(Vec::new());
    w.login("u", seed_login(), t0).unwrap();
    w.client_chunk(b"a\n", t0).unwrap(); // 0.000
    w.client_chunk(b"b\n", t0 + ms(5)).unwrap(); // 0.005
    w.client_chunk(b"c\n", t0 + ms(65)).unwrap(); // 0.060
    w.client_chunk(b"d\n", t0 + ms(1065)).unwrap(); // 1.000
    w.client_chunk(b"e\n", t0 + ms(1065 + 123_456)).unwrap(); // 123.456
    let out = String::from_utf8(w.finish().unwrap().unwrap()).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "LOGIN u 2003/11/26 13:03:21",
            "<0.000<a",
            "<0.005<b",
            "<0.060<c",
            "<1.000<d",
            "<123.456<e"
        ]
    );
}

#[test]
fn rounding_does_not_drift() {
    // 1000 records 1.4 ms apart: each delay rounds to 1 or 2 ms, and the
    // total matches the real elapsed time (1400 ms).
    let t0 = Instant::now();
    let mut w = CaptureWriter::new(Vec::new());
    w.login("u", seed_login(), t0).unwrap();
    for i in 1..=1000u64 {
        w.server_chunk(b"x\n", t0 + Duration::from_micros(1400 * i))
            .unwrap();
    }
    let cap = parse_capture(&w.finish().unwrap().unwrap()).unwrap();
    let total: Duration = cap.records.iter().map(|r| r.delay).sum();
    assert_eq!(total, ms(1400));
}

#[test]
fn non_monotonic_instants_give_zero_delay() {
    let t0 = Instant::now();
    let mut w = CaptureWriter::new(Vec::new());
    w.login("u", seed_login(), t0 + ms(10)).unwrap();
    w.client_chunk(b"early\n", t0).unwrap();
    w.client_chunk(b"later\n", t0 + ms(20)).unwrap();
    let out = String::from_utf8(w.finish().unwrap().unwrap()).unwrap();
    assert!(out.contains("<0.000<early\n<0.010<later\n"), "{out}");
}

#[test]
fn data_with_newlines_and_marker_lookalikes_mid_line() {
    let t0 = Instant::now();
    let mut w = CaptureWriter::new(Vec::new());
    w.login("u", seed_login(), t0).unwrap();
    let body: &[u8] = b"line one\r\nline two has <1.000< inside\r\n\r\n>not a marker\r\n";
    w.server_chunk(body, t0 + ms(1)).unwrap();
    w.client_chunk(b"a OK\r\n", t0 + ms(2)).unwrap();
    let out = w.finish().unwrap().unwrap();
    let cap = parse_capture(&out).unwrap();
    assert_eq!(cap.records.len(), 2);
    assert_eq!(cap.records[0].data, body);
    assert_eq!(cap.records[1].data, b"a OK\r\n");
}

#[test]
fn chunk_without_newline_merges_with_next_record() {
    // A documented property of the format: the next marker is only
    // recognised at the start of a line.
    let t0 = Instant::now();
    let mut w = CaptureWriter::new(Vec::new());
    w.login("u", seed_login(), t0).unwrap();
    w.client_chunk(b"partial", t0).unwrap();
    w.client_chunk(b" rest\n", t0 + ms(3)).unwrap();
    let out = w.finish().unwrap().unwrap();
    assert_eq!(
        out,
        b"LOGIN u 2003/11/26 13:03:21\n<0.000<partial<0.003< rest\n"
    );
    let cap = parse_capture(&out).unwrap();
    assert_eq!(cap.records.len(), 1);
    assert_eq!(cap.records[0].data, b"partial<0.003< rest\n");
}

#[test]
fn last_record_without_newline_and_empty_records() {
    let input = b"LOGIN u 2003/11/26 13:03:21\n<0.001<\n>0.002>\n<0.003<tail";
    let cap = parse_capture(input).unwrap();
    assert_eq!(cap.records.len(), 3);
    assert_eq!(cap.records[0].data, b"\n");
    assert_eq!(cap.records[2].data, b"tail");
    assert_eq!(cap.to_bytes(), input);
}

#[test]
fn redact_writes_replacement_only() {
    let t0 = Instant::now();
    let mut w = CaptureWriter::new(Vec::new());
    w.login("joe", seed_login(), t0).unwrap();
    w.redact(b"a001 LOGIN joe ***\r\n", t0 + ms(1)).unwrap();
    let out = String::from_utf8(w.finish().unwrap().unwrap()).unwrap();
    assert!(out.ends_with("<0.001<a001 LOGIN joe ***\r\n"));
    assert!(!out.contains("secret"));
}

#[test]
fn login_sanitises_user_and_ignores_early_and_repeated_calls() {
    let t0 = Instant::now();
    let mut w = CaptureWriter::new(Vec::new());
    w.client_chunk(b"before login\n", t0).unwrap();
    w.login("bad user\nname", seed_login(), t0).unwrap();
    w.login("other", seed_login(), t0).unwrap();
    let out = String::from_utf8(w.finish().unwrap().unwrap()).unwrap();
    assert_eq!(out, "LOGIN bad_user_name 2003/11/26 13:03:21\n");
    let cap = parse_capture(out.as_bytes()).unwrap();
    assert_eq!(cap.user, "bad_user_name");
    assert!(cap.records.is_empty());
}

#[test]
fn buffer_is_written_only_when_over_limit() {
    let sink = Rc::new(RefCell::new(Vec::new()));
    struct Shared(Rc<RefCell<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let t0 = Instant::now();
    let mut w = CaptureWriter::with_buffer_limit(Shared(sink.clone()), 100);
    w.login("u", seed_login(), t0).unwrap();
    assert!(sink.borrow().is_empty());
    w.client_chunk(&[b'x'; 40], t0).unwrap();
    assert!(sink.borrow().is_empty(), "under the limit stays buffered");
    assert!(w.buffered() > 0);
    w.client_chunk(&[b'y'; 40], t0).unwrap();
    assert!(!sink.borrow().is_empty(), "over the limit is written");
    assert_eq!(w.buffered(), 0);
    w.client_chunk(b"z\n", t0).unwrap();
    let before = sink.borrow().len();
    drop(w);
    assert!(sink.borrow().len() > before, "drop flushes the rest");
}

struct Failing {
    writes: usize,
}

impl Write for Failing {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        self.writes += 1;
        Err(io::Error::other("disk full"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn failing_writer_disables_itself_and_reports_once() {
    let t0 = Instant::now();
    let mut w = CaptureWriter::with_buffer_limit(Failing { writes: 0 }, 0);
    let err = w.login("u", seed_login(), t0).unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
    assert!(w.is_disabled());
    for i in 0..100 {
        w.client_chunk(&[b'x'; 1000], t0 + ms(i)).unwrap();
        w.server_chunk(b"y\n", t0 + ms(i)).unwrap();
    }
    assert_eq!(w.buffered(), 0, "a disabled writer keeps nothing");
    w.flush().unwrap();
    assert_eq!(w.inner.as_ref().unwrap().writes, 1, "no retries");
    assert!(w.finish().unwrap().is_none());
}

#[test]
fn failure_on_explicit_flush_is_reported() {
    let t0 = Instant::now();
    let mut w = CaptureWriter::new(Failing { writes: 0 });
    w.login("u", seed_login(), t0).unwrap();
    w.client_chunk(b"a\n", t0).unwrap();
    assert!(w.flush().is_err());
    assert!(w.flush().is_ok());
    assert!(w.is_disabled());
}

#[test]
fn parse_rejects_bad_headers_and_bodies() {
    for bad in [
        &b""[..],
        b"LOGON u 2003/11/26 13:03:21\n",
        b"LOGIN 2003/11/26 13:03:21\n",
        b"LOGIN u 2003/13/26 13:03:21\n",
        b"LOGIN u 2003/11/26 25:03:21\n",
        b"LOGIN u 2003-11-26 13:03:21\n",
        b"LOGIN u 2003/11/26 13:03\n",
        b"LOGIN u \xff 13:03:21\n",
    ] {
        assert!(
            matches!(parse_capture(bad), Err(ParseError::BadLoginLine { .. })),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    for bad in [
        &b"LOGIN u 2003/11/26 13:03:21\ngarbage\n"[..],
        b"LOGIN u 2003/11/26 13:03:21\n<0.01<x\n",
        b"LOGIN u 2003/11/26 13:03:21\n<0.001>x\n",
        b"LOGIN u 2003/11/26 13:03:21\n<.001<x\n",
        b"LOGIN u 2003/11/26 13:03:21\n<99999999999999999999999.001<x\n",
    ] {
        assert_eq!(
            parse_capture(bad),
            Err(ParseError::ExpectedRecord { offset: 28 }),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    // A header alone, with or without newline or with CRLF, is a capture
    // with no records.
    for ok in [
        &b"LOGIN u 2003/11/26 13:03:21"[..],
        b"LOGIN u 2003/11/26 13:03:21\n",
        b"LOGIN u 2003/11/26 13:03:21\r\n",
    ] {
        let cap = parse_capture(ok).unwrap();
        assert!(cap.records.is_empty());
    }
}

#[test]
fn timestamps() {
    assert_eq!(format_timestamp(UNIX_EPOCH, false), "1970/01/01 00:00:00");
    assert_eq!(format_timestamp(seed_login(), false), "2003/11/26 13:03:21");
    assert_eq!(
        format_timestamp(seed_login() + ms(7), true),
        "2003/11/26 13:03:21.007"
    );
    // Leap day and end of year.
    let leap = parse_timestamp("2024/02/29", "23:59:59").unwrap();
    assert_eq!(format_timestamp(leap, false), "2024/02/29 23:59:59");
    assert_eq!(
        format_timestamp(leap + Duration::from_secs(1), false),
        "2024/03/01 00:00:00"
    );
    let nye = parse_timestamp("1999/12/31", "23:59:59").unwrap();
    assert_eq!(
        format_timestamp(nye + Duration::from_secs(1), false),
        "2000/01/01 00:00:00"
    );
    assert_eq!(
        format_timestamp(UNIX_EPOCH - ms(1), true),
        "1969/12/31 23:59:59.999"
    );
}

#[test]
fn absolute_listing() {
    let cap = parse_capture(SEED.as_bytes()).unwrap();
    let text = format_absolute(&cap);
    assert_eq!(
        text,
        "LOGIN redb 2003/11/26 13:03:21\n\
2003/11/26 13:03:21.017 S: 1 OK User logged in\n\
2003/11/26 13:03:21.017 S: 2 OK Completed\n\
2003/11/26 13:03:21.063 C: 3 select \"INBOX\"\n\
2003/11/26 13:03:21.299 S: * FLAGS (\\Answered ...)\n"
    );
}

#[test]
fn absolute_listing_escapes_and_marks_partial_lines() {
    let input = b"LOGIN u 2003/11/26 13:03:21\n<1.000<a\x07b\xff\r\n>0.000>\n<0.500<no newline";
    let cap = parse_capture(input).unwrap();
    let text = format_absolute(&cap);
    assert_eq!(
        text,
        "LOGIN u 2003/11/26 13:03:21\n\
2003/11/26 13:03:22.000 C: a\\x07b\\xff\n\
2003/11/26 13:03:22.000 S: \n\
2003/11/26 13:03:22.500 C: no newline [no newline]\n"
    );
}
