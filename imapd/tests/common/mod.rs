//! Shared by the end-to-end tests: a temporary instance, delivery through store-client, the
//! real `imapd` binary on an ephemeral port, and Python client scripts.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use store_client::StoreClient;

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A temporary instance with users (password "pw").
pub fn instance(users: &[&str]) -> tempfile::TempDir {
    testkit::instance(users)
}

pub fn msg(n: usize) -> Vec<u8> {
    format!(
        "From: Sender {n} <s{n}@example.com>\r\nTo: joe@example.com\r\nSubject: message {n}\r\nMessage-ID: <m{n}@example.com>\r\nDate: Mon, 2 Mar 2026 10:{:02}:00 +0000\r\n\r\nline one of {n}\r\nline two\r\n",
        n % 60
    )
    .into_bytes()
}

/// Deliver `count` generated messages to a folder in batches (one flush per batch), four
/// batches at a time so their flushes overlap.
pub fn deliver_many(root: &Path, user: &str, folder: &str, count: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = StoreClient::open(root).await.expect("store");
        let s = client.session_for(user).await.expect("session");
        let mut n = 0;
        while n < count {
            let mut round = Vec::new();
            for _ in 0..4 {
                if n >= count {
                    break;
                }
                let batch: Vec<_> = (n..(n + 500).min(count))
                    .map(|i| (msg(i + 1), Vec::new(), None))
                    .collect();
                n += batch.len();
                let (s, folder) = (s.clone(), folder.to_owned());
                round.push(tokio::spawn(async move {
                    s.append_many(&folder, batch).await.expect("append_many")
                }));
            }
            for t in round {
                t.await.expect("append task");
            }
        }
    })
}

/// Path of a workspace binary next to the running test executable.
pub fn binary(name: &str) -> PathBuf {
    testkit::binary(name)
}

/// A running binary; killed when dropped.
pub struct Server {
    pub proc: testkit::Spawned,
    pub addr: SocketAddr,
}

impl Server {
    pub fn start(root: &Path, extra: &[&str]) -> Server {
        Self::start_bin(env!("CARGO_BIN_EXE_imapd").as_ref(), root, extra)
    }

    /// Start a service binary that prints `listening on <addr>` first.
    pub fn start_bin(bin: &Path, root: &Path, extra: &[&str]) -> Server {
        let mut cmd = Command::new(bin);
        cmd.arg("--root")
            .arg(root)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra);
        let proc = testkit::Spawned::start(cmd, 1);
        Server {
            addr: proc.addr(0),
            proc,
        }
    }

    /// Resident memory of the server process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// Peak resident memory of the server process so far, in KiB.
    pub fn hwm_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.proc.pid()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

/// The Python with the PyPI client libraries (imapclient).
pub fn python() -> PathBuf {
    testkit::python()
}

const PRELUDE: &str = r#"
import imaplib, sys, ssl, base64, socket, os, time, zlib, re
host, port, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
extra = sys.argv[4:]
def check(cond, what):
    if not cond:
        raise AssertionError(what)
def login(user="joe", pw="pw"):
    m = imaplib.IMAP4(host, port, timeout=30)
    m.login(user, pw)
    return m
def untagged(m, name):
    return m.untagged_responses.pop(name, [])
class Raw:
    """A raw IMAP connection for what client libraries cannot say."""
    def __init__(self, greet=True):
        self.s = socket.create_connection((host, port), timeout=30)
        self.buf = b""
        self.z_in = None
        self.z_out = None
        if greet:
            self.greeting = self.line()
    def recv(self):
        d = self.s.recv(65536)
        if not d:
            raise EOFError("connection closed")
        if self.z_in is not None:
            d = self.z_in.decompress(d)
        self.buf += d
    def line(self):
        while b"\r\n" not in self.buf:
            self.recv()
        l, self.buf = self.buf.split(b"\r\n", 1)
        return l.decode("utf-8", "replace")
    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        if self.z_out is not None:
            data = self.z_out.compress(data) + self.z_out.flush(zlib.Z_SYNC_FLUSH)
        self.s.sendall(data)
    def cmd(self, tag, text):
        """Send a command; return (untagged lines, tagged line)."""
        self.send(tag + " " + text + "\r\n")
        return self.until(tag)
    def until(self, tag):
        lines = []
        while True:
            l = self.line()
            if l.startswith(tag + " "):
                return lines, l
            lines.append(l)
"#;

/// Run a Python script against the server: `host`, `port`, `root`, `extra`, `check`,
/// `login`, `untagged` and `Raw` are defined. Returns stdout.
pub fn run_python(addr: SocketAddr, root: &Path, script: &str, extra: &[&str]) -> String {
    let file = tempfile::NamedTempFile::new().expect("script file");
    std::fs::write(file.path(), format!("{PRELUDE}\n{script}\nprint('DONE')\n"))
        .expect("write script");
    let out = Command::new(python())
        .arg(file.path())
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg(root)
        .args(extra)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("DONE"),
        "python failed:\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}
