//! End-to-end tests: the real `lmtpd` binary on real sockets over a temporary instance,
//! driven by Python's smtplib.LMTP and by a small LMTP client written here; deliveries are
//! read back through store-client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use store_client::StoreClient;

const HOST: &str = "mx.test";

/// A temporary instance with users.
fn instance(users: &[&str]) -> tempfile::TempDir {
    testkit::instance(users)
}

/// The running binary; killed when dropped.
struct Server {
    proc: testkit::Spawned,
    addr: SocketAddr,
}

impl Server {
    fn start(root: &Path, extra: &[&str]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lmtpd"));
        cmd.arg("--root")
            .arg(root)
            .args(["--listen", "127.0.0.1:0", "--hostname", HOST])
            .args(extra)
            .env("RUST_LOG", "info");
        // One `listening on` line per listener.
        let lines = 1 + usize::from(extra.contains(&"--socket"));
        let proc = testkit::Spawned::start(cmd, lines);
        Server {
            addr: proc.addr(0),
            proc,
        }
    }

    fn pid(&self) -> u32 {
        self.proc.pid()
    }

    fn connect(&self) -> Client {
        let s = TcpStream::connect(self.addr).expect("connect");
        Client::new(s)
    }

    fn sigterm(&self) {
        self.proc.sigterm();
    }

    /// Wait for the process to exit; its exit status.
    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        self.proc.wait_exit(limit)
    }
}

/// A minimal LMTP client.
struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Client {
    fn new(s: TcpStream) -> Client {
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let w = s.try_clone().expect("clone");
        Client {
            r: BufReader::new(s),
            w,
        }
    }

    fn send(&mut self, text: &str) {
        self.w.write_all(text.as_bytes()).expect("write");
    }

    /// One (possibly multi-line) reply: its last line.
    fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            let n = self.r.read_line(&mut line).expect("read reply");
            assert!(n > 0, "connection closed while waiting for a reply");
            let line = line.trim_end().to_owned();
            assert!(line.len() >= 4, "short reply {line:?}");
            if line.as_bytes()[3] == b' ' {
                return line;
            }
        }
    }

    fn cmd(&mut self, text: &str) -> String {
        self.send(&format!("{text}\r\n"));
        self.reply()
    }

    fn expect(&mut self, text: &str, prefix: &str) {
        let r = self.cmd(text);
        assert!(
            r.starts_with(prefix),
            "{text}: expected {prefix}, got {r:?}"
        );
    }

    fn greet(&mut self) {
        let g = self.reply();
        assert!(g.starts_with("220 "), "greeting {g:?}");
        self.expect("LHLO client.test", "250 ");
    }

    /// True when the server closed the connection.
    fn closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(self.r.read(&mut buf), Ok(0) | Err(_))
    }
}

/// Every message of a user's folder, read back through store-client.
fn messages(root: &Path, user: &str, folder: &str) -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = StoreClient::open(root).await.expect("open store");
        let s = client.session_for(user).await.expect("session");
        let f = s.select(folder, true).await.expect("select");
        let mut out = Vec::new();
        for &uid in f.uids() {
            let m = f.read_message(uid).await.expect("read");
            out.push(String::from_utf8_lossy(&m).into_owned());
        }
        out
    })
}

fn create_folder(root: &Path, user: &str, folder: &str) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = StoreClient::open(root).await.expect("open store");
        let s = client.session_for(user).await.expect("session");
        s.create(folder, None).await.expect("create");
    })
}

/// Run smtplib.LMTP: one transaction; prints one line per reply (`code text`): LHLO,
/// MAIL, each RCPT, then each DATA reply (one per accepted recipient).
const PY: &str = r#"
import smtplib, sys
host, port, sender = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rcpts = sys.argv[4].split(",")
msg = sys.stdin.buffer.read()
s = smtplib.LMTP(host, port)
code, _ = s.ehlo("client.test")
print(code, "LHLO", "SIZE" if s.has_extn("size") else "nosize", "PIPELINING" if s.has_extn("pipelining") else "")
code, text = s.mail(sender)
print(code, text.decode())
ok = 0
for r in rcpts:
    code, text = s.rcpt(r)
    print(code, text.decode())
    if code == 250:
        ok += 1
if ok:
    code, text = s.data(msg)
    print(code, text.decode())
    for _ in range(ok - 1):
        code, text = s.getreply()
        print(code, text.decode())
s.quit()
"#;

fn python_lmtp(server: &Server, sender: &str, rcpts: &[&str], msg: &str) -> Vec<String> {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(PY)
        .arg(server.addr.ip().to_string())
        .arg(server.addr.port().to_string())
        .arg(sender)
        .arg(rcpts.join(","))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(msg.as_bytes())
        .expect("write message");
    let out = child.wait_with_output().expect("python");
    assert!(out.status.success(), "python failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

const MSG: &str =
    "From: sender@example.org\r\nSubject: hello\r\n\r\nHello there.\r\n.leading dot\r\n";

fn root_of(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().to_path_buf()
}

#[test]
fn python_two_recipients_two_replies_and_headers() {
    let dir = instance(&["joe", "ann"]);
    let root = root_of(&dir);
    let server = Server::start(&root, &[]);
    let out = python_lmtp(
        &server,
        "sender@example.org",
        &["joe@example.com", "ann@example.com"],
        MSG,
    );
    assert!(out[0].starts_with("250 LHLO SIZE PIPELINING"), "{out:?}");
    assert_eq!(out.len(), 6, "{out:?}");
    assert!(out[1].starts_with("250 2.1.0"), "{out:?}");
    assert!(out[2].starts_with("250 2.1.5") && out[3].starts_with("250 2.1.5"));
    assert!(out[4].starts_with("250 2.1.5") && out[5].starts_with("250 2.1.5"));
    for user in ["joe", "ann"] {
        let msgs = messages(&root, user, "INBOX");
        assert_eq!(msgs.len(), 1, "{user}: {msgs:?}");
        let m = &msgs[0];
        assert!(
            m.starts_with("Return-Path: <sender@example.org>\r\nReceived: from client.test (127.0.0.1) by mx.test (lmtpd) with LMTP id "),
            "{m}"
        );
        let received = m.lines().nth(1).unwrap_or_default();
        assert!(
            received.contains(&format!(" for <{user}@example.com>; ")),
            "{received}"
        );
        assert!(received.ends_with(" +0000"), "{received}");
        // smtplib dot-stuffs, lmtpd unstuffs.
        assert!(
            m.ends_with("Subject: hello\r\n\r\nHello there.\r\n.leading dot\r\n"),
            "{m}"
        );
    }
}

#[test]
fn python_unknown_user_refused_other_delivered() {
    let dir = instance(&["joe"]);
    let root = root_of(&dir);
    let server = Server::start(&root, &[]);
    let out = python_lmtp(
        &server,
        "sender@example.org",
        &["nobody@example.com", "joe@example.com"],
        MSG,
    );
    assert_eq!(out.len(), 5, "{out:?}");
    assert!(out[2].starts_with("550 5.1.1"), "{out:?}");
    assert!(out[3].starts_with("250 2.1.5"), "{out:?}");
    assert!(out[4].starts_with("250 2.1.5"), "{out:?}");
    assert_eq!(messages(&root, "joe", "INBOX").len(), 1);
}

#[test]
fn plus_detail_into_folder_or_inbox() {
    let dir = instance(&["joe"]);
    let root = root_of(&dir);
    create_folder(&root, "joe", "lists");
    let server = Server::start(&root, &[]);
    let out = python_lmtp(
        &server,
        "",
        &["joe+lists@example.com", "joe+nosuch@example.com"],
        MSG,
    );
    assert_eq!(out.len(), 6, "{out:?}");
    assert!(
        out[4].starts_with("250 ") && out[5].starts_with("250 "),
        "{out:?}"
    );
    let lists = messages(&root, "joe", "lists");
    assert_eq!(lists.len(), 1);
    assert!(lists[0].starts_with("Return-Path: <>\r\n"), "{}", lists[0]);
    assert!(lists[0].contains("for <joe+lists@example.com>"));
    let inbox = messages(&root, "joe", "INBOX");
    assert_eq!(inbox.len(), 1);
    assert!(inbox[0].contains("for <joe+nosuch@example.com>"));
}

#[test]
fn over_quota_gets_452_other_recipient_delivered() {
    let dir = instance(&["joe", "ann"]);
    let root = root_of(&dir);
    // Provision joe, then give him a one-byte quota.
    assert!(messages(&root, "joe", "INBOX").is_empty());
    msgstore::Store::open(&root)
        .expect("store")
        .set_quota("user/joe", Some(1), None)
        .expect("quota");
    let server = Server::start(&root, &[]);
    let out = python_lmtp(&server, "a@b.example", &["joe@x", "ann@x"], MSG);
    assert_eq!(out.len(), 6, "{out:?}");
    assert!(out[4].starts_with("452 4.2.2"), "{out:?}");
    assert!(out[5].starts_with("250 2.1.5"), "{out:?}");
    assert!(messages(&root, "joe", "INBOX").is_empty());
    assert_eq!(messages(&root, "ann", "INBOX").len(), 1);
}

#[test]
fn too_large_gets_552_per_recipient_and_session_continues() {
    let dir = instance(&["joe", "ann"]);
    let root = root_of(&dir);
    let server = Server::start(&root, &["--max-message-size", "1000"]);
    let mut c = server.connect();
    c.greet();
    c.expect("MAIL FROM:<a@b> SIZE=5000", "552 5.3.4");
    c.expect("MAIL FROM:<a@b>", "250 ");
    c.expect("RCPT TO:<joe@x>", "250 ");
    c.expect("RCPT TO:<ann@x>", "250 ");
    c.expect("DATA", "354 ");
    let line = "x".repeat(99);
    for _ in 0..50 {
        c.send(&format!("{line}\r\n"));
    }
    c.send(".\r\n");
    let r1 = c.reply();
    let r2 = c.reply();
    assert!(r1.starts_with("552 5.3.4"), "{r1}");
    assert!(r2.starts_with("552 5.3.4"), "{r2}");
    c.expect("NOOP", "250 ");
    // A message within the limit still goes through.
    c.expect("MAIL FROM:<a@b>", "250 ");
    c.expect("RCPT TO:<joe@x>", "250 ");
    c.expect("DATA", "354 ");
    c.send("Subject: small\r\n\r\nsmall\r\n.\r\n");
    let r = c.reply();
    assert!(r.starts_with("250 2.1.5"), "{r}");
    c.expect("QUIT", "221 ");
    assert!(messages(&root, "ann", "INBOX").is_empty());
    assert_eq!(messages(&root, "joe", "INBOX").len(), 1);
}

#[test]
fn pipelined_commands_get_all_replies_in_order() {
    let dir = instance(&["joe", "ann"]);
    let root = root_of(&dir);
    let server = Server::start(&root, &[]);
    let mut c = server.connect();
    assert!(c.reply().starts_with("220 "));
    c.send(
        "LHLO client.test\r\nMAIL FROM:<p@q>\r\nRCPT TO:<joe@x>\r\nRCPT TO:<nobody@x>\r\n\
         RCPT TO:<ann@x>\r\nDATA\r\nSubject: piped\r\n\r\nbody\r\n.\r\nNOOP\r\nRSET\r\nQUIT\r\n",
    );
    let want = [
        "250 ",
        "250 2.1.0",
        "250 2.1.5",
        "550 5.1.1",
        "250 2.1.5",
        "354 ",
        "250 2.1.5",
        "250 2.1.5",
        "250 2.0.0",
        "250 2.0.0",
        "221 ",
    ];
    for w in want {
        let r = c.reply();
        assert!(r.starts_with(w), "expected {w}, got {r:?}");
    }
    assert!(c.closed());
    assert_eq!(messages(&root, "joe", "INBOX").len(), 1);
    assert_eq!(messages(&root, "ann", "INBOX").len(), 1);
}

#[test]
fn data_cut_off_delivers_nothing() {
    let dir = instance(&["joe"]);
    let root = root_of(&dir);
    let server = Server::start(&root, &[]);
    let mut c = server.connect();
    c.greet();
    c.expect("MAIL FROM:<a@b>", "250 ");
    c.expect("RCPT TO:<joe@x>", "250 ");
    c.expect("DATA", "354 ");
    c.send("Subject: cut\r\n\r\nthis message never ends\r\n");
    c.w.shutdown(Shutdown::Write).expect("shutdown");
    assert!(c.closed());
    drop(c);
    // A later delivery on a new connection is the only message.
    let mut c = server.connect();
    c.greet();
    c.expect("MAIL FROM:<a@b>", "250 ");
    c.expect("RCPT TO:<joe@x>", "250 ");
    c.expect("DATA", "354 ");
    c.send("Subject: whole\r\n\r\ncomplete\r\n.\r\n");
    assert!(c.reply().starts_with("250 2.1.5"));
    c.expect("QUIT", "221 ");
    std::thread::sleep(Duration::from_millis(200));
    let msgs = messages(&root, "joe", "INBOX");
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(msgs[0].contains("Subject: whole"));
}

#[test]
fn wrong_order_and_garbage_refused_session_continues() {
    let dir = instance(&["joe"]);
    let root = root_of(&dir);
    let server = Server::start(&root, &[]);
    let mut c = server.connect();
    assert!(c.reply().starts_with("220 "));
    c.expect("MAIL FROM:<a@b>", "503 5.5.1");
    c.expect("HELO client.test", "500 ");
    c.expect("EHLO client.test", "500 ");
    c.expect("LHLO client.test", "250 ");
    c.expect("DATA", "503 5.5.1");
    c.expect("RCPT TO:<joe@x>", "503 5.5.1");
    c.expect("WIBBLE", "500 5.5.1");
    c.expect("\x01\x02garbage", "500 ");
    c.expect("MAIL FROM:<a@b", "501 ");
    c.expect("MAIL FROM:<a@b> FOO=BAR", "555 5.5.4");
    c.expect("MAIL FROM:<a@b>", "250 ");
    c.expect("MAIL FROM:<a@b>", "503 5.5.1");
    c.expect("RCPT TO:<nobody@x>", "550 5.1.1");
    c.expect("DATA", "503 5.5.1");
    c.expect("VRFY joe", "252 ");
    c.expect("RCPT TO:<joe@x>", "250 ");
    c.expect("DATA", "354 ");
    c.send("Subject: ok\r\n\r\nfine\r\n.\r\n");
    assert!(c.reply().starts_with("250 2.1.5"));
    c.expect("QUIT", "221 ");
    assert_eq!(messages(&root, "joe", "INBOX").len(), 1);
}

#[test]
fn too_many_errors_close_the_session() {
    let dir = instance(&[]);
    let server = Server::start(dir.path(), &[]);
    let mut c = server.connect();
    assert!(c.reply().starts_with("220 "));
    for _ in 0..19 {
        c.expect("BOGUS", "500 ");
    }
    c.send("BOGUS\r\n");
    let mut line = String::new();
    c.r.read_line(&mut line).expect("read");
    assert!(line.starts_with("500 "), "{line}");
    assert!(c.reply().starts_with("421 "));
    assert!(c.closed());
}

/// Peak resident memory of a process, in KiB.
fn vm_hwm(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[test]
fn overlong_line_refused_without_growing_memory() {
    let dir = instance(&["joe"]);
    let server = Server::start(dir.path(), &[]);
    let mut c = server.connect();
    c.greet();
    let before = vm_hwm(server.pid());
    let chunk = vec![b'A'; 1 << 20];
    for _ in 0..64 {
        c.w.write_all(&chunk).expect("write");
    }
    c.send("\r\n");
    let r = c.reply();
    assert!(r.starts_with("500 5.5.2"), "{r}");
    c.expect("NOOP", "250 ");
    // Also inside a transaction, and the transaction survives.
    c.expect("MAIL FROM:<a@b>", "250 ");
    c.send(&format!("RCPT TO:<{}>\r\n", "j".repeat(5000)));
    assert!(c.reply().starts_with("500 5.5.2"));
    c.expect("RCPT TO:<joe@x>", "250 ");
    let after = vm_hwm(server.pid());
    assert!(
        after < before + 16 * 1024,
        "peak memory grew from {before} kB to {after} kB"
    );
    c.expect("QUIT", "221 ");
}

#[test]
fn idle_client_is_disconnected() {
    let dir = instance(&[]);
    let server = Server::start(dir.path(), &["--idle-timeout", "1"]);
    let mut c = server.connect();
    c.greet();
    let start = Instant::now();
    let r = c.reply();
    assert!(r.starts_with("421 4.4.2"), "{r}");
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(c.closed());
}

#[test]
fn sigterm_finishes_delivery_then_exits() {
    let dir = instance(&["joe"]);
    let root = root_of(&dir);
    let mut server = Server::start(&root, &[]);
    let mut idle = server.connect();
    idle.greet();
    let mut busy = server.connect();
    busy.greet();
    busy.expect("MAIL FROM:<a@b>", "250 ");
    busy.expect("RCPT TO:<joe@x>", "250 ");
    busy.expect("DATA", "354 ");
    busy.send("Subject: during shutdown\r\n\r\nfirst half\r\n");
    server.sigterm();
    // The idle session is told to go away.
    let r = idle.reply();
    assert!(r.starts_with("421 4.3.2"), "{r}");
    // New connections are refused once the listener is closed.
    std::thread::sleep(Duration::from_millis(300));
    assert!(TcpStream::connect(server.addr).is_err());
    // The message under way is delivered.
    busy.send("second half\r\n.\r\n");
    let r = busy.reply();
    assert!(r.starts_with("250 2.1.5"), "{r}");
    let r = busy.reply();
    assert!(r.starts_with("421 4.3.2"), "{r}");
    let st = server.wait_exit(Duration::from_secs(10));
    assert!(st.success(), "{st:?}");
    let msgs = messages(&root, "joe", "INBOX");
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].contains("first half\r\nsecond half\r\n"));
}

#[test]
fn unix_socket() {
    use std::os::unix::net::UnixStream;
    let dir = instance(&["joe"]);
    let root = root_of(&dir);
    let sock = dir.path().join("lmtp.sock");
    let sock_arg = sock.to_string_lossy().into_owned();
    let mut server = Server::start(&root, &["--socket", &sock_arg]);
    let s = UnixStream::connect(&sock).expect("connect unix");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut w = s.try_clone().expect("clone");
    let mut r = BufReader::new(s);
    w.write_all(
        b"LHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<joe@x>\r\nDATA\r\nSubject: u\r\n\r\nvia unix\r\n.\r\nQUIT\r\n",
    )
    .expect("write");
    let mut all = String::new();
    r.read_to_string(&mut all).expect("read");
    assert!(all.contains("\r\n250 2.1.5 Delivered\r\n221 "), "{all}");
    let msgs = messages(&root, "joe", "INBOX");
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].contains("Received: from c (unix) by mx.test"));
    server.sigterm();
    assert!(server.wait_exit(Duration::from_secs(10)).success());
    assert!(!sock.exists());
}

#[test]
fn recipient_limit_gets_452() {
    let dir = instance(&["joe"]);
    let server = Server::start(dir.path(), &[]);
    let mut c = server.connect();
    c.greet();
    c.expect("MAIL FROM:<a@b>", "250 ");
    c.send(&"RCPT TO:<joe@x>\r\n".repeat(1001));
    for i in 0..1000 {
        let r = c.reply();
        assert!(r.starts_with("250 2.1.5"), "rcpt {i}: {r}");
    }
    let r = c.reply();
    assert!(r.starts_with("452 4.5.3"), "{r}");
    c.expect("RSET", "250 ");
    c.expect("QUIT", "221 ");
}

/// Through service-runtime: the seed-format log in data/log/lmtp, and the session cap
/// answered with the protocol's own "too busy" reply while the first session goes on.
#[test]
fn session_cap_gets_421_and_the_log_is_in_the_seed_format() {
    let dir = instance(&["joe"]);
    std::fs::write(
        dir.path().join("config/msg.conf"),
        "service.lmtp.sessionsperprocess = 1\n",
    )
    .expect("msg.conf");
    let server = Server::start(dir.path(), &[]);
    let mut first = server.connect();
    assert!(first.reply().starts_with("220"));
    let mut second = server.connect();
    let r = second.reply();
    assert!(r.starts_with("421 4.3.2"), "{r:?}");
    // The first session is untouched.
    first.expect("LHLO client", "250");
    first.expect("QUIT", "221");
    drop(second);
    // A place is free again.
    let mut third = server.connect();
    let mut greeting = String::new();
    for _ in 0..50 {
        greeting = third.reply();
        if greeting.starts_with("220") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        third = server.connect();
    }
    assert!(greeting.starts_with("220"), "{greeting:?}");
    drop(server);
    let log = std::fs::read_to_string(dir.path().join("data/log/lmtp")).expect("data/log/lmtp");
    let line = log
        .lines()
        .find(|l| l.contains("session limit reached"))
        .unwrap_or_else(|| panic!("no session-limit line in {log}"));
    // [29/Nov/2026:14:44:37 +0000] host lmtpd[1234]: General Warning: ...
    let re_ok = line.starts_with('[')
        && line[1..].split_once("] ").is_some_and(|(stamp, rest)| {
            stamp.len() == 26
                && stamp.ends_with(" +0000")
                && rest.contains(" lmtpd[")
                && rest.contains("]: General Warning: session limit reached")
        });
    assert!(re_ok, "{line}");
}

/// The descriptor check with the seed's formula: under a limit of 1024 descriptors, lmtpd
/// (3 per session, 851 reserved) logs the Critical line and serves the sessions it can.
#[test]
fn descriptor_check_under_prlimit_logs_the_critical_line() {
    let dir = instance(&["joe"]);
    std::fs::write(
        dir.path().join("config/msg.conf"),
        "service.lmtp.sessionsperprocess = 600\n",
    )
    .expect("msg.conf");
    let mut child = Command::new("prlimit")
        .args(["--nofile=1024:1024", "--"])
        .arg(env!("CARGO_BIN_EXE_lmtpd"))
        .arg("--root")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("prlimit (util-linux) runs lmtpd");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    assert!(line.starts_with("listening on "), "{line:?}");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let log = std::fs::read_to_string(dir.path().join("data/log/lmtp")).expect("log");
    assert!(
        log.lines().any(|l| l.contains("lmtpd[") && l.ends_with(
            "General Critical: Not enough file descriptors to support 600 sessions per process; Recommend ulimit -n 2651 or 58 sessions per process."
        )),
        "{log}"
    );
}
