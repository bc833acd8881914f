//! Bad input and limits against the real binary: garbage floods, a megabyte command line,
//! literals over the limit or never ending, deep nesting and a client that never reads leave
//! the server's memory bounded and other sessions unaffected; failed logins are delayed and
//! counted per address; the session cap answers BYE; sessions are captured (telemetry).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{deliver_many, instance, run_python, Server};

struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let w = s.try_clone().expect("clone");
        let mut c = Conn {
            r: BufReader::new(s),
            w,
        };
        let g = c.line();
        assert!(g.starts_with("* OK"), "{g:?}");
        c
    }
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).expect("read");
        l
    }
    fn send(&mut self, b: &[u8]) {
        self.w.write_all(b).expect("write");
    }
    /// Send a command, return its tagged line (untagged lines skipped).
    fn cmd(&mut self, tag: &str, text: &str) -> String {
        self.send(format!("{tag} {text}\r\n").as_bytes());
        self.until(tag)
    }
    fn until(&mut self, tag: &str) -> String {
        loop {
            let l = self.line();
            assert!(!l.is_empty(), "connection closed waiting for {tag}");
            if l.starts_with(&format!("{tag} ")) {
                return l;
            }
        }
    }
}

/// The tests that load the server (and measure it) run one at a time.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A first login provisions the user's folders (durable creates): done before measuring.
fn warm_up(addr: SocketAddr) {
    let mut c = Conn::open(addr);
    assert!(c.cmd("w1", "LOGIN joe pw").starts_with("w1 OK"));
    assert!(c.cmd("w2", "SELECT INBOX").starts_with("w2 OK"));
}

/// Another session still gets quick answers.
fn responsive(addr: SocketAddr) {
    let t = Instant::now();
    let mut c = Conn::open(addr);
    assert!(c.cmd("p1", "LOGIN joe pw").starts_with("p1 OK"));
    assert!(c.cmd("p2", "SELECT INBOX").starts_with("p2 OK"));
    assert!(c.cmd("p3", "FETCH 1 (FLAGS)").starts_with("p3 OK"));
    eprintln!("another session: login, select, fetch in {:?}", t.elapsed());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "other session slow: {:?}",
        t.elapsed()
    );
}

#[test]
fn bad_input_leaves_memory_bounded_and_others_unaffected() {
    let dir = instance(&["joe"]);
    deliver_many(dir.path(), "joe", "INBOX", 200);
    let server = Server::start(dir.path(), &[]);
    let addr = server.addr;
    let _heavy = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    warm_up(addr);
    responsive(addr);
    let base = server.rss_kib();

    // A garbage flood: 16 MB of lines and of line-less bytes, answered by BAD lines that a
    // reader thread drains.
    let mut c = Conn::open(addr);
    let mut reader = c.r.get_ref().try_clone().expect("clone");
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        let mut bads = 0usize;
        let mut tail = Vec::new();
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            tail.extend_from_slice(&buf[..n]);
            bads += tail.windows(5).filter(|w| w == b"* BAD").count();
            let keep = tail.len().saturating_sub(4);
            tail.drain(..keep);
            if bads > 0 && tail.ends_with(b"OK\r\n") {
                break;
            }
        }
        bads
    });
    let mut junk = Vec::with_capacity(1 << 20);
    let mut x: u32 = 12345;
    for _ in 0..(1 << 20) {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let b = (x >> 16) as u8;
        junk.push(if b == b'\n' || b == b'{' { b'x' } else { b });
    }
    for i in 0..8 {
        c.send(&junk);
        if i % 2 == 0 {
            c.send(b"\r\n");
        }
        // Lines of garbage with a newline every 100 bytes.
        let lines: Vec<u8> = junk[..(1 << 20)]
            .chunks(100)
            .flat_map(|ch| ch.iter().copied().chain(*b"\r\n"))
            .collect();
        c.send(&lines);
    }
    c.send(b"\r\nz1 NOOP\r\n");
    let bads = drain.join().expect("drain");
    assert!(bads > 1000, "garbage answered with {bads} BAD lines");
    drop(c);
    responsive(addr);

    let mut c = Conn::open(addr);
    // A megabyte command line: BAD, the session goes on.
    let mut big = b"a1 NOOP ".to_vec();
    big.extend(std::iter::repeat_n(b'x', 1 << 20));
    big.extend_from_slice(b"\r\n");
    c.send(&big);
    let l = c.until("a1");
    assert!(l.contains("BAD [TOOBIG]"), "{l}");
    // Before login, literals are small: a big one is refused before it is read.
    let l = c.cmd("a2", "LOGIN {1000000}");
    assert!(l.starts_with("a2 BAD [TOOBIG]"), "{l}");
    assert!(c.cmd("a3", "LOGIN joe pw").starts_with("a3 OK"));
    // APPEND over the message size limit: NO [TOOBIG] before the literal is read.
    let l = c.cmd("a4", "APPEND INBOX {999999999999}");
    assert!(l.starts_with("a4 NO [TOOBIG]"), "{l}");
    // A non-synchronising literal over the limit is read and thrown away (never stored).
    let n = 60 * 1024 * 1024;
    c.send(format!("a5 APPEND INBOX {{{n}+}}\r\n").as_bytes());
    let chunk = vec![b'y'; 1 << 20];
    for _ in 0..60 {
        c.send(&chunk);
    }
    c.send(b"\r\n");
    let l = c.until("a5");
    assert!(l.starts_with("a5 NO [TOOBIG]"), "{l}");
    // Deep parentheses: BAD.
    let deep = format!("a6 SEARCH {}ALL{}", "(".repeat(5000), ")".repeat(5000));
    let l = c.cmd("a6", &deep[3..]);
    assert!(l.starts_with("a6 BAD"), "{l}");
    assert!(c.cmd("a7", "NOOP").starts_with("a7 OK"));

    // A literal that never ends: the session waits within its bounds; others go on.
    let mut never = Conn::open(addr);
    assert!(never.cmd("n1", "LOGIN joe pw").starts_with("n1 OK"));
    never.send(b"n2 APPEND INBOX {40000000+}\r\n");
    for _ in 0..30 {
        never.send(&chunk);
    }

    // A client that never reads: pipelined FETCHes of every message, nothing read back.
    let mut deaf = Conn::open(addr);
    assert!(deaf.cmd("d1", "LOGIN joe pw").starts_with("d1 OK"));
    assert!(deaf.cmd("d2", "SELECT INBOX").starts_with("d2 OK"));
    deaf.w
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("write timeout");
    let fetch = b"d3 FETCH 1:* (BODY.PEEK[] ENVELOPE BODYSTRUCTURE)\r\n".repeat(200);
    let _ = deaf.w.write_all(&fetch);
    std::thread::sleep(Duration::from_millis(500));

    responsive(addr);
    let after = server.rss_kib();
    eprintln!("server RSS: {base} KiB at start, {after} KiB after the abuse");
    assert!(
        after < base + 96 * 1024,
        "memory grew from {base} to {after} KiB"
    );
    drop(never);
    drop(deaf);
    drop(c);
    responsive(addr);
}

#[test]
fn failed_logins_are_delayed_and_counted_per_address() {
    let dir = instance(&["joe"]);
    let server = Server::start(
        dir.path(),
        &["--auth-fail-delay-ms", "400", "--max-auth-failures", "3"],
    );
    run_python(
        server.addr,
        dir.path(),
        r#"
m = imaplib.IMAP4(host, port, timeout=30)
for i in range(3):
    t = time.time()
    try:
        m.login("joe", "bad%d" % i)
        check(False, "accepted")
    except imaplib.IMAP4.error as e:
        check("AUTHENTICATIONFAILED" in str(e), e)
    check(time.time() - t >= 0.35, "no delay")
# The fourth attempt from this address is refused at once, even with the right password.
t = time.time()
try:
    m.login("joe", "pw")
    check(False, "accepted while locked out")
except imaplib.IMAP4.error as e:
    check("too many failed logins" in str(e), e)
check(time.time() - t < 0.35, "lockout answered at once")
"#,
        &[],
    );
}

#[test]
fn session_cap_telemetry_and_log() {
    let dir = instance(&["joe"]);
    std::fs::write(
        dir.path().join("config/msg.conf"),
        "service.imap.sessionsperprocess = 2\n",
    )
    .expect("msg.conf");
    let tdir = dir.path().join("data/telemetry/imap/joe");
    std::fs::create_dir_all(&tdir).expect("telemetry dir");
    let server = Server::start(dir.path(), &[]);
    run_python(
        server.addr,
        dir.path(),
        r#"
a = login()
b = imaplib.IMAP4(host, port, timeout=30)
s = socket.create_connection((host, port), timeout=30)
l = s.makefile("rb").readline()
check(l == b"* BYE [UNAVAILABLE] too many sessions, try again later\r\n", l)
a.select("INBOX")
a.logout()
b.logout()
time.sleep(0.2)
c = login()
c.logout()
"#,
        &[],
    );
    let files: Vec<_> = std::fs::read_dir(&tdir)
        .expect("telemetry dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    for f in files {
        let bytes = std::fs::read(&f).expect("capture");
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("LOGIN joe "), "{text}");
        assert!(text.contains("LOGIN joe ***"), "{text}");
        assert!(
            !text.contains("\"pw\"") && !text.contains(" pw\r\n"),
            "{text}"
        );
        telemetry::parse_capture(&bytes).expect("parse capture");
    }
    let log = std::fs::read_to_string(dir.path().join("data/log/imap")).expect("log");
    assert!(log.contains("imapd["), "{log}");
    assert!(log.contains("Login user=joe"), "{log}");
    assert!(log.contains("session limit reached"), "{log}");
}

#[test]
fn idle_sessions_stay_small() {
    let dir = instance(&["joe"]);
    deliver_many(dir.path(), "joe", "INBOX", 20);
    let server = Server::start(dir.path(), &[]);
    let _heavy = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let open = |n: usize| -> Vec<Conn> {
        (0..n)
            .map(|_| {
                let mut c = Conn::open(server.addr);
                assert!(c.cmd("a", "LOGIN joe pw").starts_with("a OK"));
                assert!(c.cmd("b", "SELECT INBOX").starts_with("b OK"));
                c
            })
            .collect()
    };
    let _warm = open(20);
    std::thread::sleep(Duration::from_millis(300));
    let before = server.rss_kib();
    let n = 500;
    let conns = open(n);
    std::thread::sleep(Duration::from_millis(300));
    let after = server.rss_kib();
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    eprintln!("{n} idle authenticated sessions with INBOX selected: {per:.1} KiB each");
    assert!(per < 32.0, "{per:.1} KiB per idle session (the goal is 32)");
    drop(conns);
}

#[test]
fn login_timeout_and_implicit_tls_port() {
    let dir = instance(&["joe"]);
    // Two free ports for the configured listeners (no --listen: msg.conf decides).
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port()
    };
    let (plain, tls) = (free(), free());
    std::fs::write(
        dir.path().join("config/msg.conf"),
        format!(
            "service.listenaddr = 127.0.0.1\nservice.imap.port = {plain}\nservice.imap.enablesslport = 1\nservice.imap.sslport = {tls}\n"
        ),
    )
    .expect("msg.conf");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_imapd"))
        .arg("--root")
        .arg(dir.path())
        .args(["--login-timeout", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start imapd");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let (mut l1, mut l2) = (String::new(), String::new());
    out.read_line(&mut l1).expect("line");
    out.read_line(&mut l2).expect("line");
    assert_eq!(l1.trim(), format!("listening on 127.0.0.1:{plain}"));
    assert_eq!(l2.trim(), format!("listening on 127.0.0.1:{tls} (tls)"));
    let addr: SocketAddr = format!("127.0.0.1:{plain}").parse().expect("addr");
    // Before login the timeout is short: BYE, then the connection closes.
    let mut c = Conn::open(addr);
    let t = Instant::now();
    let l = c.line();
    assert!(l.starts_with("* BYE"), "{l}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(c.line(), "", "closed after BYE");
    // imaps: TLS from the first byte.
    let tls_addr: SocketAddr = format!("127.0.0.1:{tls}").parse().expect("addr");
    run_python(
        tls_addr,
        dir.path(),
        r#"
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4_SSL(host, port, ssl_context=ctx, timeout=30)
check("STARTTLS" not in m.capabilities, m.capabilities)
m.login("joe", "pw")
check(m.select("INBOX")[0] == "OK", "select over imaps")
m.logout()
"#,
        &[],
    );
    let _ = child.kill();
    let _ = child.wait();
}
