//! Shared harness of stored's tests: an instance in a temporary directory, the real `stored`
//! binary started and stopped, deliveries through the store's API and the check that every
//! delivered message reads back byte for byte.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use msgstore::{AppendRequest, MailboxName, Store, UserName};

pub const STORED: &str = env!("CARGO_BIN_EXE_stored");
pub const MSGCHECK: &str = env!("CARGO_BIN_EXE_msgcheck");

pub struct Instance {
    pub dir: tempfile::TempDir,
}

impl Instance {
    /// A new instance whose msg.conf holds `conf` (plus the user and group to run as, root
    /// here when the tests run as root, which CI does).
    pub fn new(conf: &str) -> Instance {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        std::fs::write(
            dir.path().join("config/msg.conf"),
            format!("local.serveruid = root\nlocal.servergid = root\n{conf}"),
        )
        .unwrap();
        Instance { dir }
    }
    pub fn root(&self) -> &Path {
        self.dir.path()
    }
    pub fn dbdir(&self) -> PathBuf {
        self.root().join("data/store/mboxlist")
    }
    pub fn db(&self) -> PathBuf {
        self.dbdir().join("mboxlist.db")
    }
    pub fn snapshots(&self) -> PathBuf {
        self.root().join("data/store/dbdata/snapshots")
    }
    pub fn ready(&self) -> PathBuf {
        self.root().join("data/run/stored.ready")
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root().join("data/log/default")).unwrap_or_default()
    }
    pub fn append_conf(&self, line: &str) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.root().join("config/msg.conf"))
            .unwrap();
        writeln!(f, "{line}").unwrap();
    }

    /// Start stored and wait for its readiness file.
    pub fn start(&self, args: &[&str]) -> Stored {
        self.start_env(args, &[])
    }

    /// `start` with environment variables set for stored.
    pub fn start_env(&self, args: &[&str], env: &[(&str, &Path)]) -> Stored {
        let child = Command::new(STORED)
            .arg("--root")
            .arg(self.root())
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut s = Stored { child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.ready().exists() {
            if let Some(st) = s.child.as_mut().unwrap().try_wait().unwrap() {
                let mut e = String::new();
                use std::io::Read;
                let _ = s
                    .child
                    .as_mut()
                    .unwrap()
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut e);
                panic!(
                    "stored exited with {st} before ready: {e}\nlog:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "stored not ready in 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    /// Wait until the log contains `text` (it is written by a background thread).
    pub fn wait_log(&self, text: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let l = self.log();
            if l.contains(text) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "log lacks {text:?} after {secs} s:\n{l}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Count of `text` in the log.
    pub fn log_count(&self, text: &str) -> usize {
        self.log().matches(text).count()
    }
}

pub struct Stored {
    pub child: Option<Child>,
}

impl Stored {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }
    /// SIGTERM and wait; returns the exit code.
    pub fn stop(mut self) -> Option<i32> {
        let mut c = self.child.take().unwrap();
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        c.wait().unwrap().code()
    }
    /// SIGKILL: no cleanup of any kind.
    pub fn kill9(mut self) {
        let mut c = self.child.take().unwrap();
        unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
        let _ = c.wait();
    }
}

impl Drop for Stored {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A message delivered and acknowledged.
#[derive(Clone, Debug)]
pub struct Delivered {
    pub mailbox: String,
    pub uid: u32,
    pub data: Vec<u8>,
}

pub fn message(user: &str, folder: &str, i: usize) -> Vec<u8> {
    format!(
        "From: sender@example.com\r\nTo: {user}@example.com\r\nSubject: {folder} {i}\r\nMessage-ID: <{user}.{i}.{}@test>\r\n\r\nBody {i} of {folder} for {user}.\r\n",
        folder.replace('/', ".")
    )
    .into_bytes()
}

/// Create `user` (INBOX and the standard folders) and `folders`, then append `n` messages to
/// INBOX and to each folder. Only acknowledged appends are returned.
pub fn deliver(root: &Path, user: &str, folders: &[&str], n: usize) -> Vec<Delivered> {
    let store = Store::open(root).unwrap();
    let u = UserName::new(user).unwrap();
    store.provision_user(&u).unwrap();
    let mut out = Vec::new();
    let mut all = vec!["INBOX"];
    all.extend_from_slice(folders);
    for f in all {
        let name = MailboxName::for_user(&u, f).unwrap();
        if store.db().get(name.as_str()).unwrap().is_none() {
            store.create_mailbox(&name, None, None).unwrap();
        }
        for i in 0..n {
            let data = message(user, f, i);
            let (_, uids) = store
                .append(
                    &name,
                    vec![AppendRequest {
                        data: data.clone(),
                        ..Default::default()
                    }],
                )
                .unwrap();
            out.push(Delivered {
                mailbox: name.to_string(),
                uid: uids[0],
                data,
            });
        }
    }
    out
}

/// Every delivered message reads back, through the mailbox database, byte for byte.
pub fn assert_readable(root: &Path, delivered: &[Delivered]) {
    let store = Store::open(root).unwrap();
    for d in delivered {
        let name = MailboxName::parse(&d.mailbox).unwrap();
        let got = store
            .read_message(&name, d.uid)
            .unwrap_or_else(|e| panic!("{} uid {}: {e}", d.mailbox, d.uid));
        // The store normalises line endings to CRLF, which these messages already use.
        assert_eq!(got, d.data, "{} uid {}", d.mailbox, d.uid);
    }
}

/// Overwrite `len` bytes of `path` at `offset` with pseudo-random bytes (fixed seed).
pub fn scramble(path: &Path, offset: u64, len: usize, seed: u64) {
    use std::os::unix::fs::FileExt;
    let mut x = seed | 1;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&bytes, offset).unwrap();
    f.sync_all().unwrap();
}
