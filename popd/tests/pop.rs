//! End-to-end tests: the real `popd` binary on an ephemeral port over a temporary instance,
//! driven by Python's poplib (and a raw socket where poplib cannot go); messages are
//! delivered and checked through store-client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use store_client::StoreClient;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A temporary instance with users (password "pw").
fn instance(users: &[&str]) -> tempfile::TempDir {
    testkit::instance(users)
}

/// Deliver messages to a user's INBOX; their (uidvalidity, uid)s.
fn deliver(root: &Path, user: &str, msgs: &[Vec<u8>]) -> Vec<(u32, u32)> {
    rt().block_on(async {
        let client = StoreClient::open(root).await.expect("store");
        let s = client.session_for(user).await.expect("session");
        let mut out = Vec::new();
        for m in msgs {
            let a = s
                .append("INBOX", m.clone(), &[], None)
                .await
                .expect("append");
            out.push((a.uidvalidity, a.uid));
        }
        out
    })
}

/// Deliver many messages in batches (one flush per batch).
fn deliver_many(root: &Path, user: &str, count: usize) {
    rt().block_on(async {
        let client = StoreClient::open(root).await.expect("store");
        let s = client.session_for(user).await.expect("session");
        let mut n = 0;
        while n < count {
            let batch: Vec<_> = (n..(n + 500).min(count))
                .map(|i| (msg(i), Vec::new(), None))
                .collect();
            n += batch.len();
            s.append_many("INBOX", batch).await.expect("append_many");
        }
    })
}

fn inbox_count(root: &Path, user: &str) -> u64 {
    rt().block_on(async {
        let client = StoreClient::open(root).await.expect("store");
        let s = client.session_for(user).await.expect("session");
        s.status("INBOX").await.expect("status").messages
    })
}

fn msg(n: usize) -> Vec<u8> {
    format!(
        "From: a@example.com\r\nTo: joe@example.com\r\nSubject: message {n}\r\n\r\nline one of {n}\r\n.starts with a dot\r\nline three\r\n"
    )
    .into_bytes()
}

/// The running binary; killed when dropped.
struct Server {
    proc: testkit::Spawned,
    addr: SocketAddr,
}

impl Server {
    fn start(root: &Path, extra: &[&str]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_popd"));
        cmd.arg("--root")
            .arg(root)
            .args(["--listen", "127.0.0.1:0"])
            .args(if extra.contains(&"--auth-fail-delay-ms") {
                &[][..]
            } else {
                &["--auth-fail-delay-ms", "50"][..]
            })
            .args(extra);
        // One `listening on` line per listener.
        let lines = 1 + usize::from(extra.contains(&"--listen-tls"));
        let proc = testkit::Spawned::start(cmd, lines);
        Server {
            addr: proc.addr(0),
            proc,
        }
    }

    /// Run a poplib script: `host`, `port`, `root` and `check(cond, what)` are defined.
    fn python(&self, root: &Path, script: &str) -> String {
        let prelude = r#"
import poplib, sys, ssl, base64, socket, os, hashlib, time
host, port, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def check(cond, what):
    if not cond:
        raise AssertionError(what)
def err(f, *a):
    try:
        r = f(*a)
    except poplib.error_proto as e:
        return e.args[0].decode()
    raise AssertionError("expected -ERR, got %r" % (r,))
def login(user="joe", pw="pw"):
    p = poplib.POP3(host, port, timeout=30)
    p.user(user)
    p.pass_(pw)
    return p
"#;
        let file = tempfile::NamedTempFile::new().expect("script file");
        std::fs::write(file.path(), format!("{prelude}\n{script}\nprint('DONE')\n"))
            .expect("write script");
        let out = Command::new("python3")
            .arg(file.path())
            .arg(self.addr.ip().to_string())
            .arg(self.addr.port().to_string())
            .arg(root)
            .output()
            .expect("run python3");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains("DONE"),
            "python failed:\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        stdout
    }

    fn raw(&self) -> Raw {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let w = s.try_clone().expect("clone");
        let mut r = Raw {
            r: BufReader::new(s),
            w,
        };
        let g = r.line();
        assert!(g.starts_with("+OK"), "{g:?}");
        r
    }
}

/// A raw POP3 connection.
struct Raw {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Raw {
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).expect("read");
        l
    }
    fn cmd(&mut self, c: &[u8]) -> String {
        self.w.write_all(c).expect("write");
        self.line()
    }
}

#[test]
fn commands_and_errors() {
    let dir = instance(&["joe"]);
    let ids = deliver(dir.path(), "joe", &[msg(1), msg(2), msg(3)]);
    let server = Server::start(dir.path(), &[]);
    let sizes: Vec<usize> = (1..=3).map(|n| msg(n).len()).collect();
    let total: usize = sizes.iter().sum();
    let script = format!(
        r#"
p = poplib.POP3(host, port, timeout=30)
check(p.getwelcome().startswith(b"+OK"), "greeting")
caps = p.capa()
for c in ["TOP", "USER", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "SASL", "STLS", "EXPIRE", "LOGIN-DELAY", "IMPLEMENTATION"]:
    check(c in caps, "CAPA lacks " + c)
check(caps["SASL"] == ["PLAIN"], caps)
check(caps["IMPLEMENTATION"] == ["msgsuite-popd"], caps)
check(caps["EXPIRE"] == ["NEVER"] and caps["LOGIN-DELAY"] == ["0"], caps)
check(err(p.stat).startswith("-ERR"), "STAT before login")
check(err(p.pass_, "pw").startswith("-ERR"), "PASS before USER")
check(err(p._shortcmd, "XYZZY").startswith("-ERR"), "unknown command")
check(err(p._shortcmd, "APOP joe 0123").startswith("-ERR"), "APOP")
p.user("joe")
r = err(p.pass_, "wrong")
check(r.startswith("-ERR [AUTH]"), r)
check(p.noop().startswith(b"+OK"), "NOOP")
p.user("joe")
check(p.pass_("pw").startswith(b"+OK"), "login")
check(p.stat() == (3, {total}), p.stat())
resp, listing, _ = p.list()
check(listing == [b"1 {s1}", b"2 {s2}", b"3 {s3}"], listing)
check(p.list(2) == b"+OK 2 {s2}", p.list(2))
resp, uidls, _ = p.uidl()
check(uidls == [b"1 {v}.{u1}", b"2 {v}.{u2}", b"3 {v}.{u3}"], uidls)
check(p.uidl(3) == b"+OK 3 {v}.{u3}", p.uidl(3))
resp, lines, octets = p.retr(1)
check(b"\r\n".join(lines) + b"\r\n" == {m1:?}.encode(), lines)
resp, lines, _ = p.top(2, 0)
check(lines == [b"From: a@example.com", b"To: joe@example.com", b"Subject: message 2", b""], lines)
resp, lines, _ = p.top(2, 2)
check(lines[-2:] == [b"line one of 2", b".starts with a dot"], lines)
for bad in ["0", "4", "x", "99999999999"]:
    check(err(p.retr, bad).startswith("-ERR"), "RETR " + bad)
check(err(p._shortcmd, "LIST 9").startswith("-ERR"), "LIST 9")
check(err(p._shortcmd, "UIDL 9").startswith("-ERR"), "UIDL 9")
check(err(p._shortcmd, "TOP 1").startswith("-ERR"), "TOP without count")
check(err(p._shortcmd, "DELE").startswith("-ERR"), "DELE without number")
check(err(p._shortcmd, "USER joe").startswith("-ERR"), "USER after login")
check(err(p._shortcmd, "STLS").startswith("-ERR"), "STLS after login")
check(err(p._shortcmd, "FOO").startswith("-ERR"), "unknown after login")
check(p.dele(2).startswith(b"+OK"), "DELE")
check(err(p.dele, 2).startswith("-ERR"), "DELE twice")
check(err(p.retr, 2).startswith("-ERR"), "RETR deleted")
check(err(p.top, 2, 1).startswith("-ERR"), "TOP deleted")
check(p.stat() == (2, {total} - {s2}), p.stat())
resp, listing, _ = p.list()
check(listing == [b"1 {s1}", b"3 {s3}"], listing)
check(p.rset().startswith(b"+OK"), "RSET")
check(p.stat() == (3, {total}), "after RSET")
check(p.quit().startswith(b"+OK"), "QUIT")
"#,
        s1 = sizes[0],
        s2 = sizes[1],
        s3 = sizes[2],
        v = ids[0].0,
        u1 = ids[0].1,
        u2 = ids[1].1,
        u3 = ids[2].1,
        // poplib un-stuffs RETR lines itself, so the expected text is the original.
        m1 = String::from_utf8_lossy(&msg(1)),
    );
    server.python(dir.path(), &script);
    assert_eq!(inbox_count(dir.path(), "joe"), 3, "RSET kept everything");
}

#[test]
fn uidl_is_stable_and_dele_applies_only_at_quit() {
    let dir = instance(&["joe"]);
    let ids = deliver(dir.path(), "joe", &[msg(1), msg(2), msg(3)]);
    let server = Server::start(dir.path(), &[]);
    let expect: Vec<String> = ids.iter().map(|(v, u)| format!("{v}.{u}")).collect();
    let script = format!(
        r#"
first = login().uidl()[1]
p = login()
second = p.uidl()[1]
check(first == second, (first, second))
check([l.split()[1].decode() for l in first] == {expect:?}, first)
p.quit()
# DELE then a dropped connection: nothing removed
p = login()
p.dele(1)
p.sock.close()
time.sleep(0.5)
p = login()
check(p.stat()[0] == 3, "dropped connection removed messages")
p.dele(1)
p.dele(3)
r = p.quit()
check(r.startswith(b"+OK"), r)
p = login()
resp, uidls, _ = p.uidl()
check(uidls == [b"1 {second_uidl}"], uidls)
p.quit()
"#,
        expect = expect,
        second_uidl = expect[1],
    );
    server.python(dir.path(), &script);
    assert_eq!(inbox_count(dir.path(), "joe"), 1);
}

#[test]
fn large_message_is_streamed_byte_exact_and_dot_stuffed() {
    let dir = instance(&["joe"]);
    let mut big = b"From: a@example.com\r\nSubject: big\r\n\r\n".to_vec();
    let mut i = 0usize;
    while big.len() < 5 * 1024 * 1024 {
        if i.is_multiple_of(97) {
            big.extend_from_slice(b".leading dot line\r\n");
        } else if i.is_multiple_of(101) {
            big.extend_from_slice(b".\r\n");
        } else {
            big.extend_from_slice(
                format!("{i:08} The quick brown fox jumps over the lazy dog 0123456789\r\n")
                    .as_bytes(),
            );
        }
        i += 1;
    }
    deliver(dir.path(), "joe", std::slice::from_ref(&big));
    let expected = dir.path().join("expected.eml");
    std::fs::write(&expected, &big).expect("write expected");
    let server = Server::start(dir.path(), &[]);
    let script = format!(
        r#"
want = open({path:?}, "rb").read()
p = login()
check(p.list(1) == b"+OK 1 %d" % len(want), p.list(1))
resp, lines, octets = p.retr(1)
got = b"\r\n".join(lines) + b"\r\n"
check(len(got) == len(want), (len(got), len(want)))
check(got == want, "content differs")
# the wire form: raw socket, a stuffed line and the terminator
s = socket.create_connection((host, port))
f = s.makefile("rb")
f.readline()
s.sendall(b"USER joe\r\nPASS pw\r\nRETR 1\r\n")
f.readline(); f.readline()
check(f.readline().startswith(b"+OK"), "RETR")
body = b""
while True:
    l = f.readline()
    if l == b".\r\n":
        break
    body += l
check(b"\r\n..leading dot line\r\n" in body, "dot-stuffing")
check(b"\r\n..\r\n" in body, "lone dot stuffed")
check(body.replace(b"\r\n..", b"\r\n.") == want, "wire body")
s.sendall(b"QUIT\r\n")
p.quit()
"#,
        path = expected.display().to_string()
    );
    server.python(dir.path(), &script);
}

#[test]
fn auth_plain_and_stls() {
    let dir = instance(&["joe"]);
    deliver(dir.path(), "joe", &[msg(1)]);
    let server = Server::start(dir.path(), &[]);
    let script = r#"
def b64(s):
    return base64.b64encode(s).decode()
p = poplib.POP3(host, port, timeout=30)
r = p._shortcmd("AUTH PLAIN " + b64(b"\0joe\0pw"))
check(r.startswith(b"+OK"), r)
check(p.stat()[0] == 1, "stat after AUTH")
p.quit()
# continuation
p = poplib.POP3(host, port, timeout=30)
p._putcmd("AUTH PLAIN")
check(p._getline()[0].startswith(b"+"), "continuation")
check(p._shortcmd(b64(b"joe\0joe\0pw")).startswith(b"+OK"), "continuation login")
p.quit()
p = poplib.POP3(host, port, timeout=30)
r = err(p._shortcmd, "AUTH PLAIN " + b64(b"\0joe\0bad"))
check(r.startswith("-ERR [AUTH]"), r)
check(err(p._shortcmd, "AUTH CRAM-MD5").startswith("-ERR"), "other mechanism")
p._putcmd("AUTH PLAIN")
p._getline()
check(err(p._shortcmd, "*").startswith("-ERR"), "cancel")
check(err(p._shortcmd, "AUTH PLAIN !!!!").startswith("-ERR"), "bad base64")
r = err(p._shortcmd, "AUTH PLAIN " + b64(b"other\0joe\0pw"))
check(r.startswith("-ERR [AUTH]"), r)
p.quit()
# STLS
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
p = poplib.POP3(host, port, timeout=30)
check("STLS" in p.capa(), "STLS advertised")
p.stls(ctx)
check("STLS" not in p.capa(), "STLS advertised under TLS")
check(err(p._shortcmd, "STLS").startswith("-ERR"), "second STLS")
p.user("joe")
p.pass_("pw")
resp, lines, _ = p.retr(1)
check(lines[2] == b"Subject: message 1", lines)
p.quit()
"#;
    server.python(dir.path(), script);
}

/// RFC 8314: POP3 over implicit TLS on its own port (995 by default), next to the plain port.
#[test]
fn implicit_tls_port_rfc8314() {
    let dir = instance(&["joe"]);
    deliver(dir.path(), "joe", &[msg(1)]);
    let server = Server::start(dir.path(), &["--listen-tls", "127.0.0.1:0"]);
    let tls_addr = server.proc.addr(1);
    let script = format!(
        r#"
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
p = poplib.POP3_SSL(host, {tls_port}, context=ctx, timeout=30)
check(p.getwelcome().startswith(b"+OK"), p.getwelcome())
check("STLS" not in p.capa(), "STLS offered on the implicit-TLS port")
p.user("joe")
p.pass_("pw")
resp, lines, _ = p.retr(1)
check(lines[2] == b"Subject: message 1", lines)
p.quit()
# A client that speaks plaintext to the TLS port gets no POP3 greeting and is closed.
s = socket.create_connection((host, {tls_port}), timeout=30)
s.sendall(b"USER joe\r\n")
data = s.recv(100)
check(not data.startswith(b"+OK"), data)
s.close()
"#,
        tls_port = tls_addr.port()
    );
    server.python(dir.path(), &script);
}

#[test]
fn telemetry_capture_redacts_and_stops_when_removed() {
    let dir = instance(&["joe"]);
    deliver(dir.path(), "joe", &[msg(1)]);
    let tdir = dir.path().join("data/telemetry/pop/joe");
    std::fs::create_dir_all(&tdir).expect("telemetry dir");
    let server = Server::start(dir.path(), &[]);
    // A wrong password makes no capture; the two logins make one each.
    server.python(
        dir.path(),
        r#"
p = poplib.POP3(host, port, timeout=30)
p.user("joe")
err(p.pass_, "wrongpw")
p.quit()
p = login()
p.stat()
p.retr(1)
p._shortcmd("NOOP")
err(p._shortcmd, "PASS pw")
p.quit()
p = poplib.POP3(host, port, timeout=30)
p._shortcmd("AUTH PLAIN " + base64.b64encode(b"\0joe\0pw").decode())
p.quit()
"#,
    );
    let files: Vec<_> = std::fs::read_dir(&tdir)
        .expect("read telemetry dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    let mut saw_pass = false;
    for f in &files {
        let bytes = std::fs::read(f).expect("capture");
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("LOGIN joe "), "{text}");
        let cap = telemetry::parse_capture(&bytes).expect("parse capture");
        assert_eq!(cap.user, "joe");
        assert!(text.contains("<0."), "{text}");
        assert!(text.contains(">0."), "{text}");
        assert!(!text.contains("wrongpw"), "{text}");
        assert!(!text.contains(" pw\r\n"), "password in capture: {text}");
        assert!(
            !text.contains("AGpvZQBwdw"),
            "AUTH response in capture: {text}"
        );
        if text.contains("PASS ***") {
            saw_pass = true;
            assert!(text.contains("RETR 1\r\n"), "{text}");
            assert!(text.contains("Subject: message 1"), "{text}");
            assert!(text.contains("QUIT\r\n"), "{text}");
        } else {
            assert!(text.contains("AUTH PLAIN ***"), "{text}");
        }
    }
    assert!(saw_pass);
    // Removing the directory stops capture; sessions go on.
    std::fs::remove_dir_all(&tdir).expect("remove");
    server.python(
        dir.path(),
        r#"
p = login()
check(p.stat()[0] == 1, "stat")
p.quit()
"#,
    );
    assert!(!tdir.exists());
}

#[test]
fn overlong_line_and_pipelining() {
    let dir = instance(&["joe"]);
    deliver(dir.path(), "joe", &[msg(1), msg(2)]);
    let server = Server::start(dir.path(), &[]);
    let mut c = server.raw();
    let mut long = vec![b'N'; 100_000];
    long.extend_from_slice(b"\r\n");
    assert_eq!(c.cmd(&long), "-ERR line too long\r\n");
    let mut just = b"NOOP ".to_vec();
    just.resize(254, b'x');
    just.extend_from_slice(b"\r\n");
    assert_eq!(c.cmd(&just), "-ERR line too long\r\n");
    assert!(c.cmd(b"NOOP\r\n").starts_with("+OK"));
    // Pipelined: every answer in order.
    c.w.write_all(b"USER joe\r\nPASS pw\r\nSTAT\r\nLIST 2\r\nQUIT\r\n")
        .expect("write");
    let l: Vec<String> = (0..5).map(|_| c.line()).collect();
    assert!(l[0].starts_with("+OK") && l[1].starts_with("+OK"), "{l:?}");
    assert!(l[2].starts_with("+OK 2 "), "{l:?}");
    assert_eq!(l[3], format!("+OK 2 {}\r\n", msg(2).len()));
    assert!(l[4].starts_with("+OK"), "{l:?}");
    let mut rest = Vec::new();
    c.r.read_to_end(&mut rest).expect("eof after QUIT");
    assert!(rest.is_empty());
}

/// The other direction: a POP session's deletions reach a session that has the folder
/// selected (as IMAP does) as expunges after QUIT, and not before.
#[test]
fn pop_deletions_reach_a_selected_folder_after_quit() {
    let dir = instance(&["joe"]);
    let ids = deliver(dir.path(), "joe", &[msg(1), msg(2), msg(3)]);
    let server = Server::start(dir.path(), &[]);
    let rt = rt();
    let client = rt.block_on(StoreClient::open(dir.path())).expect("store");
    let session = rt.block_on(client.session_for("joe")).expect("session");
    let mut inbox = rt.block_on(session.select("INBOX", false)).expect("select");
    let mut c = server.raw();
    assert!(c.cmd(b"USER joe\r\n").starts_with("+OK"));
    assert!(c.cmd(b"PASS pw\r\n").starts_with("+OK"));
    assert!(c.cmd(b"DELE 1\r\n").starts_with("+OK"));
    assert!(c.cmd(b"DELE 3\r\n").starts_with("+OK"));
    let before = rt.block_on(inbox.poll(true)).expect("poll");
    assert!(
        before.expunged.is_empty(),
        "expunged before QUIT: {before:?}"
    );
    assert!(c.cmd(b"QUIT\r\n").starts_with("+OK"));
    drop(c);
    let after = rt.block_on(inbox.poll(true)).expect("poll");
    let mut vanished = after.vanished.clone();
    vanished.sort_unstable();
    assert_eq!(vanished, vec![ids[0].1, ids[2].1], "{after:?}");
    assert_eq!(after.expunged.len(), 2);
    assert_eq!(inbox.uids(), &[ids[1].1]);
}

#[test]
fn imap_side_expunge_during_a_session() {
    let dir = instance(&["joe"]);
    let ids = deliver(dir.path(), "joe", &[msg(1), msg(2), msg(3)]);
    let server = Server::start(dir.path(), &[]);
    let mut c = server.raw();
    assert!(c.cmd(b"USER joe\r\n").starts_with("+OK"));
    assert!(c.cmd(b"PASS pw\r\n").starts_with("+OK"));
    // Expunge message 2 through store-client (as IMAP would).
    rt().block_on(async {
        let client = StoreClient::open(dir.path()).await.expect("store");
        let s = client.session_for("joe").await.expect("session");
        let mut inbox = s.select("INBOX", false).await.expect("select");
        inbox
            .store_flags(
                &[ids[1].1],
                store_client::FlagOp::Add,
                &[store_client::Flag::Deleted],
                None,
            )
            .await
            .expect("flag");
        inbox.expunge(None).await.expect("expunge");
    });
    assert_eq!(c.cmd(b"RETR 2\r\n"), "-ERR no such message\r\n");
    assert!(c.cmd(b"TOP 2 0\r\n").starts_with("-ERR"));
    assert!(c.cmd(b"RETR 3\r\n").starts_with("+OK"));
    loop {
        if c.line() == ".\r\n" {
            break;
        }
    }
    assert!(c.cmd(b"DELE 2\r\n").starts_with("+OK"));
    assert!(c.cmd(b"DELE 1\r\n").starts_with("+OK"));
    assert!(c.cmd(b"QUIT\r\n").starts_with("+OK"));
    drop(c);
    assert_eq!(inbox_count(dir.path(), "joe"), 1);
}

#[test]
fn exclusive_maildrop_and_failed_login_limit() {
    let dir = instance(&["joe", "ann"]);
    // The configutil parameter (the --exclusive flag does the same).
    std::fs::write(
        dir.path().join("config/msg.conf"),
        "local.service.pop.exclusive = 1\n",
    )
    .expect("msg.conf");
    let server = Server::start(dir.path(), &[]);
    server.python(
        dir.path(),
        r#"
a = login()
b = poplib.POP3(host, port, timeout=30)
b.user("joe")
r = err(b.pass_, "pw")
check(r.startswith("-ERR [IN-USE]"), r)
c = login("ann")
a.quit()
b.user("joe")
check(b.pass_("pw").startswith(b"+OK"), "after the first quit")
b.quit()
c.quit()
# failures: the 11th attempt is refused at once, even with the right password
p = poplib.POP3(host, port, timeout=30)
for i in range(10):
    p.user("joe")
    r = err(p.pass_, "bad%d" % i)
    check(r.startswith("-ERR [AUTH]"), r)
p.user("joe")
t = time.time()
r = err(p.pass_, "pw")
check(r == "-ERR [AUTH] too many failures", r)
p.quit()
"#,
    );
    // Without the parameter a second session is allowed.
    std::fs::write(
        dir.path().join("config/msg.conf"),
        "local.service.pop.exclusive = 0\n",
    )
    .expect("msg.conf");
    let server = Server::start(dir.path(), &[]);
    server.python(
        dir.path(),
        r#"
a = login()
b = login()
a.quit(); b.quit()
"#,
    );
}

#[test]
fn failed_login_is_delayed() {
    let dir = instance(&["joe"]);
    let server = Server::start(dir.path(), &["--auth-fail-delay-ms", "700"]);
    server.python(
        dir.path(),
        r#"
p = poplib.POP3(host, port, timeout=30)
p.user("joe")
t = time.time()
err(p.pass_, "bad")
check(time.time() - t >= 0.6, "no delay")
p.user("joe")
t = time.time()
p.pass_("pw")
check(time.time() - t < 0.6, "delayed success")
p.quit()
"#,
    );
}

#[test]
fn session_cap_login_timeout_and_sigterm() {
    let dir = instance(&["joe"]);
    std::fs::write(
        dir.path().join("config/msg.conf"),
        "service.pop.sessionsperprocess = 1\n",
    )
    .expect("msg.conf");
    let mut server = Server::start(dir.path(), &["--login-timeout", "1"]);
    let mut first = server.raw();
    let mut second = TcpStream::connect(server.addr).expect("connect");
    let mut busy = String::new();
    second.read_to_string(&mut busy).expect("read busy");
    assert_eq!(
        busy,
        "-ERR [SYS/TEMP] too many sessions, try again later\r\n"
    );
    // The first session times out before login.
    let start = Instant::now();
    let l = first.line();
    assert!(l.starts_with("-ERR"), "{l:?}");
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(first.line(), "");
    let log = std::fs::read_to_string(dir.path().join("data/log/pop")).unwrap_or_default();
    assert!(log.contains("popd"), "log: {log}");
    server.proc.sigterm();
    let st = server.proc.wait_exit(Duration::from_secs(20));
    assert!(st.success(), "{st:?}");
}

/// The two 10,000-message client tests run one after the other: together they would starve
/// each other (and getmail's own timing, below) on a two-core machine.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Debian's fetchmail (scripts/test.sh installs it): 10,000 messages in keep mode, then in
/// delete mode.
#[test]
fn fetchmail_keep_then_delete() {
    let _one_at_a_time = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let installed = Command::new("fetchmail").arg("--version").output().is_ok();
    assert!(
        installed,
        "fetchmail is not installed: run ./scripts/test.sh, which installs the test packages"
    );
    let dir = instance(&["joe"]);
    deliver_many(dir.path(), "joe", 10_000);
    let server = Server::start(dir.path(), &[]);
    let outfile = dir.path().join("fetched.mbox");
    let run = |keep: bool| {
        let rc = dir.path().join("fetchmailrc");
        std::fs::write(
            &rc,
            format!(
                "poll 127.0.0.1 service {port} protocol pop3 auth password:\n  user \"joe\" there with password \"pw\" is \"joe\" here {mode} sslproto '' mda \"cat >> {out}\"\n",
                port = server.addr.port(),
                mode = if keep { "keep" } else { "nokeep" },
                out = outfile.display()
            ),
        )
        .expect("rc");
        let mut perms = std::fs::metadata(&rc).expect("meta").permissions();
        use std::os::unix::fs::PermissionsExt;
        perms.set_mode(0o600);
        std::fs::set_permissions(&rc, perms).expect("chmod");
        let out = Command::new("fetchmail")
            .args(["-f"])
            .arg(&rc)
            .args(["--nosslcertck", "--all", "--nodetach", "--silent"])
            .env("HOME", dir.path())
            .env("FETCHMAILHOME", dir.path())
            .output()
            .expect("run fetchmail");
        assert!(
            out.status.success(),
            "fetchmail: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(true);
    assert_eq!(inbox_count(dir.path(), "joe"), 10_000);
    let fetched = std::fs::read_to_string(&outfile).expect("fetched");
    assert_eq!(fetched.matches("Subject: message ").count(), 10_000);
    run(false);
    assert_eq!(inbox_count(dir.path(), "joe"), 0);
    let fetched = std::fs::read_to_string(&outfile).expect("fetched");
    assert_eq!(fetched.matches("Subject: message ").count(), 20_000);
}

/// Debian's getmail6: 10,000 messages kept and handed over LMTP to our lmtpd (a second run
/// finds nothing new: UIDLs are stable), then all downloaded again and deleted.
#[test]
fn getmail_keep_then_delete() {
    use std::os::unix::fs::PermissionsExt;
    let _one_at_a_time = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let dir = instance(&["joe", "archive"]);
    deliver_many(dir.path(), "joe", 10_000);
    let server = Server::start(dir.path(), &[]);
    // getmail hands each message to our lmtpd, for user "archive". Its LMTP destination is
    // the one that does not fork a child per message (its forking destinations lose a child's
    // exit notification now and then in getmail 6.18, then stall for a minute).
    let lmtpd = Path::new(env!("CARGO_BIN_EXE_popd")).with_file_name("lmtpd");
    assert!(
        lmtpd.exists(),
        "{} is not built: run cargo test --workspace",
        lmtpd.display()
    );
    let mut lmtp = Command::new(&lmtpd)
        .arg("--root")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start lmtpd");
    let mut line = String::new();
    BufReader::new(lmtp.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("lmtpd listening line");
    let lmtp_addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("lmtpd said {line:?}"))
        .parse()
        .expect("lmtpd address");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _lmtp = Kill(lmtp);

    let gm = tempfile::tempdir().expect("getmail dir");
    std::fs::set_permissions(gm.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let gmdir = gm.path().to_path_buf();
    let run = |delete: bool, read_all: bool| -> String {
        let rc = gmdir.join("getmailrc");
        std::fs::write(
            &rc,
            format!(
                "[retriever]\ntype = SimplePOP3Retriever\nserver = 127.0.0.1\nport = {port}\nusername = joe\npassword = pw\n\n[destination]\ntype = MDA_lmtp\nhost = 127.0.0.1\nport = {lport}\noverride = archive@localhost\n\n[options]\ndelete = {delete}\nread_all = {read_all}\nverbose = 1\n",
                port = server.addr.port(),
                lport = lmtp_addr.port(),
            ),
        )
        .expect("rc");
        std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        // getmail will not run as root; nobody can reach both loopback ports.
        let out = Command::new("runuser")
            .args(["-u", "nobody", "--", "getmail"])
            .arg(format!("--rcfile={}", rc.display()))
            .arg(format!("--getmaildir={}", gmdir.display()))
            .output()
            .expect("getmail6 is installed (scripts/test.sh installs it)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let tail: String = text
            .lines()
            .filter(|l| !l.ends_with(") delivered"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(out.status.success(), "getmail failed: {tail}");
        text
    };
    let first = run(false, false);
    assert!(first.contains("10000 messages ("), "{first}");
    assert_eq!(inbox_count(dir.path(), "archive"), 10_000);
    assert_eq!(inbox_count(dir.path(), "joe"), 10_000);
    let second = run(false, false);
    assert!(
        second.contains("0 messages"),
        "nothing new the second time: {second}"
    );
    assert_eq!(inbox_count(dir.path(), "archive"), 10_000);
    let third = run(true, true);
    assert!(third.contains("10000 messages ("), "{third}");
    assert_eq!(inbox_count(dir.path(), "joe"), 0);
    assert_eq!(inbox_count(dir.path(), "archive"), 20_000);
    // Every message arrived whole: the archive holds each subject exactly twice.
    let subjects = rt().block_on(async {
        let client = StoreClient::open(dir.path()).await.expect("store");
        let s = client.session_for("archive").await.expect("session");
        let inbox = s.select("INBOX", true).await.expect("select");
        let mut counts = std::collections::HashMap::<String, usize>::new();
        for uid in inbox.uids().to_vec() {
            let m = inbox.read_message(uid).await.expect("read");
            let text = String::from_utf8_lossy(&m).into_owned();
            let subject = text
                .lines()
                .find(|l| l.starts_with("Subject: message "))
                .unwrap_or_else(|| panic!("no subject in {text}"))
                .to_owned();
            *counts.entry(subject).or_default() += 1;
        }
        counts
    });
    assert_eq!(subjects.len(), 10_000);
    assert!(subjects.values().all(|&n| n == 2), "each message twice");
}

/// RETR marks a message \Seen at a clean QUIT, so an IMAP client shows it read; TOP does not,
/// and a dropped connection changes nothing.
#[test]
fn retr_marks_seen_at_quit_only() {
    let dir = instance(&["joe"]);
    deliver(dir.path(), "joe", &[msg(1), msg(2), msg(3)]);
    let server = Server::start(dir.path(), &[]);
    server.python(
        dir.path(),
        r#"
p = login()
p.retr(1)
p.sock.close()
time.sleep(0.3)
p = login()
p.retr(2)
p.top(3, 0)
p.quit()
"#,
    );
    let seen = rt().block_on(async {
        let c = store_client::StoreClient::open(dir.path())
            .await
            .expect("open");
        let s = c.session_for("joe").await.expect("session");
        let f = s.select("INBOX", true).await.expect("select");
        let uids = f.uids().to_vec();
        f.fetch_meta(&uids)
            .await
            .expect("fetch")
            .into_iter()
            .map(|m| m.flags.is_seen())
            .collect::<Vec<_>>()
    });
    assert_eq!(seen, [false, true, false]);
}
