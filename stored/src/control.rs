//! Starting and stopping the suite's processes, for `start-msg` and `stop-msg`: pid files in
//! `data/run/<service>.pid`, output in `data/run/<service>.out`, each service in its own
//! process group so that a Ctrl-C in the terminal that ran start-msg does not reach it.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The services in start order; stop-msg goes in reverse.
pub use crate::health::SERVICES;

/// The pid in a pid file.
pub fn read_pid(file: &Path) -> Option<i32> {
    std::fs::read_to_string(file)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 0)
}

/// The process exists and is not a zombie waiting for its parent.
pub fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    if r != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(s) => s
            .rsplit_once(')')
            .is_none_or(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// The live process a service's pid file names, if it is that service (a pid reused by
/// another program after a crash does not count).
pub fn running(pid_file: &Path, service: &str) -> Option<i32> {
    let pid = read_pid(pid_file)?;
    if !alive(pid) {
        return None;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) if comm.trim() != service => None,
        _ => Some(pid),
    }
}

/// Start `bin` with `args`, detached: stdin from /dev/null, stdout and stderr appended to
/// `out`, in its own process group.
pub fn spawn(bin: &Path, args: &[String], out: &Path) -> io::Result<Child> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)?;
    let f2 = f.try_clone()?;
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(f)
        .stderr(f2)
        .process_group(0)
        .spawn()
}

/// How a stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Exited after SIGTERM, in this time.
    Clean(Duration),
    /// Still running after the timeout: killed with SIGKILL.
    Killed,
}

/// SIGTERM, wait up to `timeout` for the process to exit, then SIGKILL.
pub fn terminate(pid: i32, timeout: Duration) -> Stopped {
    let t = Instant::now();
    // SAFETY: sending a signal to a pid we read from our own pid file.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    while t.elapsed() < timeout {
        if !alive(pid) {
            return Stopped::Clean(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let t2 = Instant::now();
    while alive(pid) && t2.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(25));
    }
    Stopped::Killed
}

/// The `listening on ...` lines a service printed to its output file since `from` bytes.
pub fn listening_lines(out: &Path, from: u64) -> Vec<String> {
    let Ok(b) = std::fs::read(out) else {
        return Vec::new();
    };
    let b = b.get(from as usize..).unwrap_or_default();
    String::from_utf8_lossy(b)
        .lines()
        .filter_map(|l| l.strip_prefix("listening on ").map(str::to_owned))
        .collect()
}

/// The last `n` lines of a file (for reporting why a service stopped).
pub fn tail(path: &Path, from: u64, n: usize) -> String {
    let Ok(b) = std::fs::read(path) else {
        return String::new();
    };
    let b = b.get(from as usize..).unwrap_or_default();
    let text = String::from_utf8_lossy(b);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `data/run/<service>.out`.
pub fn out_file(run: &Path, service: &str) -> PathBuf {
    run.join(format!("{service}.out"))
}
