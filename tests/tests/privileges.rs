//! Services (lmtpd, popd, imapd, mshttpd) started as root bind their ports, then run as `local.serveruid` and
//! `local.servergid` before they open the store or read a client byte, so everything they
//! create belongs to the server user; a name the system does not know stops startup with the
//! seed's message. These tests need root, as CI runs them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use e2e_tests::binary;

const NOBODY: u32 = 65534;

fn assert_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests switch users and must run as root (CI does)"
    );
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An instance with user joe, run as `user`:`group`, and owned by `owner` (a chown spec).
fn instance(user: &str, group: &str, owner: Option<&str>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    run(Command::new("chmod").arg("755").arg(dir.path()));
    let root = dir.path().join("msg");
    let mut child = Command::new(binary("msuser"))
        .arg("--root")
        .arg(&root)
        .args(["add", "joe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("msuser");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"pw\n")
        .expect("password");
    assert!(child.wait().expect("msuser").success());
    for (name, value) in [("local.serveruid", user), ("local.servergid", group)] {
        run(Command::new(binary("configutil"))
            .arg("--root")
            .arg(&root)
            .args(["-o", name, "-v", value]));
    }
    if let Some(owner) = owner {
        run(Command::new("chown").arg("-R").arg(owner).arg(&root));
    }
    (dir, root)
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(name: &str, root: &Path) -> Server {
    let mut child = Command::new(binary(name))
        .arg("--root")
        .arg(root)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start service");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{name}: unexpected first line {line:?}"))
        .parse()
        .expect("address");
    Server { child, addr }
}

/// The real user and group ids of a running process.
fn ids(pid: u32) -> (u32, u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |key: &str| -> u32 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {status}"))
    };
    (field("Uid:"), field("Gid:"))
}

/// One request/response exchange on a line protocol: send `lines`, read until `until`.
fn converse(stream: &mut TcpStream, send: &str, until: &str) -> String {
    stream.write_all(send.as_bytes()).expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(until) {
        let n = stream.read(&mut buf).expect("read");
        assert!(n > 0, "closed; got {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s
}

fn files_not_owned_by(dir: &Path, uid: u32, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).expect("metadata");
        if meta.uid() != uid {
            out.push(path.clone());
        }
        if meta.is_dir() {
            files_not_owned_by(&path, uid, out);
        }
    }
}

#[test]
fn services_run_as_the_server_user_and_create_files_it_owns() {
    assert_root();
    let (_dir, root) = instance("nobody", "nogroup", Some("nobody:nogroup"));
    let lmtp = start("lmtpd", &root);
    let pop = start("popd", &root);
    let imap = start("imapd", &root);
    let http = start("mshttpd", &root);
    for (name, server) in [
        ("lmtpd", &lmtp),
        ("popd", &pop),
        ("imapd", &imap),
        ("mshttpd", &http),
    ] {
        assert_eq!(ids(server.child.id()), (NOBODY, NOBODY), "{name} ids");
    }

    let mut s = connect(lmtp.addr);
    converse(&mut s, "", "\r\n");
    converse(&mut s, "LHLO test\r\n", "250 ");
    converse(&mut s, "MAIL FROM:<a@example.org>\r\n", "\r\n");
    converse(&mut s, "RCPT TO:<joe@example.org>\r\n", "\r\n");
    converse(&mut s, "DATA\r\n", "354");
    let reply = converse(
        &mut s,
        "Subject: delivered as nobody\r\n\r\nhello\r\n.\r\n",
        "\r\n",
    );
    assert!(reply.starts_with("250"), "{reply}");

    let mut p = connect(pop.addr);
    converse(&mut p, "", "\r\n");
    converse(&mut p, "USER joe\r\n", "\r\n");
    let reply = converse(&mut p, "PASS pw\r\n", "\r\n");
    assert!(reply.starts_with("+OK"), "{reply}");
    let msg = converse(&mut p, "RETR 1\r\n", "\r\n.\r\n");
    assert!(msg.contains("Subject: delivered as nobody"), "{msg}");
    converse(&mut p, "QUIT\r\n", "\r\n");

    let mut i = connect(imap.addr);
    converse(&mut i, "", "\r\n");
    let reply = converse(&mut i, "a LOGIN joe pw\r\n", "a ");
    assert!(reply.contains("a OK"), "{reply}");
    converse(&mut i, "b CREATE Made-by-imapd\r\n", "b OK");
    let fetched = converse(&mut i, "c SELECT INBOX\r\nd FETCH 1 (FLAGS)\r\n", "d OK");
    assert!(fetched.contains("* 1 FETCH (FLAGS (\\Seen))"), "{fetched}");
    converse(&mut i, "e LOGOUT\r\n", "e OK");

    let mut foreign = Vec::new();
    files_not_owned_by(&root.join("data"), NOBODY, &mut foreign);
    assert!(foreign.is_empty(), "files not owned by nobody: {foreign:?}");
}

#[test]
fn unknown_group_stops_startup_with_the_seed_message() {
    assert_root();
    let (_dir, root) = instance("nobody", "no-such-group-here", Some("nobody:nogroup"));
    for service in ["popd", "lmtpd", "imapd", "mshttpd"] {
        let out = Command::new(binary(service))
            .arg("--root")
            .arg(&root)
            .args(["--listen", "127.0.0.1:0"])
            .output()
            .expect("run service");
        assert!(!out.status.success(), "{service} started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("Fatal error: Cannot find group in name service"),
            "{service}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{service} announced a port");
    }
}

#[test]
fn a_store_the_server_user_cannot_write_stops_startup() {
    assert_root();
    // A store made by root: running as nobody would fail on the first write, so say it now.
    let (_dir, root) = instance("nobody", "nogroup", None);
    let out = Command::new(binary("mboxutil"))
        .arg("--root")
        .arg(&root)
        .args(["-c", "user/joe/Work"])
        .output()
        .expect("mboxutil");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(binary("popd"))
        .arg("--root")
        .arg(&root)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .expect("run popd");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is owned by uid 0, not by nobody: run chown -R nobody:nogroup"),
        "{stderr}"
    );
}
