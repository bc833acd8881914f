//! Test support shared by the end-to-end tests of the service binaries (popd, lmtpd, ...):
//! they run the real binary over real sockets, and each needs the same three things: a
//! temporary instance with users, the binary started and asked where it listens, and the
//! Python that has the PyPI client libraries. Only test code depends on this crate.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A temporary instance whose `config/passwd` holds `users`, each with the password `pw`.
/// The password hash is made cheap on purpose: tests log in thousands of times.
pub fn instance(users: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("config")).expect("config dir");
    add_users(dir.path(), users);
    dir
}

/// Adds `users` (password `pw`) to the instance at `root`.
pub fn add_users(root: &Path, users: &[&str]) {
    let params = userdb::HashParams {
        m_cost: 64,
        t_cost: 1,
        p_cost: 1,
    };
    let db = userdb::UserDb::open_with(root.join("config/passwd"), params).expect("userdb");
    for u in users {
        db.add(u, &userdb::Secret::new("pw".to_string()))
            .expect("add user");
    }
}

/// A server binary started with its stdout piped; killed (and reaped) when dropped.
pub struct Spawned {
    child: Child,
    /// Every address from the `listening on <addr>[ (TLS)]` lines read at start, in order.
    listening: Vec<String>,
    /// Kept open: a server may write more lines, and a closed pipe is not what it expects.
    _stdout: BufReader<ChildStdout>,
}

impl Spawned {
    /// Starts `cmd` and reads `lines` lines of `listening on ...` from its stdout (each
    /// service prints one per listener once its ports are bound).
    pub fn start(mut cmd: Command, lines: usize) -> Spawned {
        let what = format!("{:?}", cmd.get_program());
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut listening = Vec::new();
        for _ in 0..lines {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("read listening line");
            let addr = line
                .trim()
                .strip_prefix("listening on ")
                .unwrap_or_else(|| panic!("{what}: unexpected line {line:?}"));
            listening.push(addr.trim_end_matches(" (TLS)").to_owned());
        }
        Spawned {
            child,
            listening,
            _stdout: stdout,
        }
    }

    /// The `n`th TCP address announced.
    pub fn addr(&self, n: usize) -> SocketAddr {
        self.listening[n]
            .parse()
            .unwrap_or_else(|_| panic!("not a TCP address: {}", self.listening[n]))
    }

    /// Every announced address as written (`unix:/path` for a Unix socket).
    pub fn listening(&self) -> &[String] {
        &self.listening
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM, as an administrator's `kill` or systemd would.
    pub fn sigterm(&self) {
        let st = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -TERM {} failed", self.pid());
    }

    /// Waits, at most `limit`, for the process to exit; its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st;
            }
            assert!(
                start.elapsed() < limit,
                "pid {} did not exit within {limit:?}",
                self.pid()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A binary of another workspace package (lmtpd beside mshttpd's tests, say), built next to
/// the running test by `cargo test --workspace`.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory")
        .join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo test --workspace` or `cargo build -p {name}` first",
        path.display()
    );
    path
}

/// The Python with the PyPI client libraries: `$MSG_TEST_PYTHON` (set by scripts/test.sh),
/// else the workspace's `target/pyenv`, else `python3`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("MSG_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pyenv/bin/python3");
    if ws.exists() {
        return ws;
    }
    PathBuf::from("python3")
}
