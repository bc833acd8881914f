//! The store's health, as the seed's standard monitoring procedures (20.14.1) check it: free
//! space on the partitions and the log, database and snapshot directories; the age of each
//! stamp file stored touches; the number and size of the database log files; the services
//! running (pid files in `data/run/`); core files; a summary of `reconstruct -r -n`.
//! `msgcheck` prints the findings; stored's metrics endpoint exports the same figures.

use std::path::{Path, PathBuf};

use msgconf::Config;

use crate::{Intervals, Paths, STAMP_CHECKPOINT, STAMP_LOG_CLEANUP, STAMP_PERUSER};

/// A finding's weight; the exit status of `msgcheck` is the worst one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok = 0,
    Warning = 1,
    Critical = 2,
}

impl Level {
    pub fn word(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Critical => "CRITICAL",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub check: &'static str,
    pub text: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.level.word(), self.check, self.text)
    }
}

/// Free-space thresholds in percent of the filesystem.
#[derive(Clone, Copy, Debug)]
pub struct Thresholds {
    pub warn_free_pct: f64,
    pub crit_free_pct: f64,
    /// Database log size above which log cleanup is evidently not happening.
    pub warn_log_bytes: u64,
    pub crit_log_bytes: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            warn_free_pct: 10.0,
            crit_free_pct: 5.0,
            warn_log_bytes: 64 << 20,
            crit_log_bytes: 512 << 20,
        }
    }
}

/// Free space of the filesystem holding a directory.
#[derive(Clone, Debug)]
pub struct Space {
    pub what: String,
    pub path: PathBuf,
    pub free_bytes: u64,
    pub total_bytes: u64,
    pub free_inodes: u64,
    pub total_inodes: u64,
}

impl Space {
    pub fn free_pct(&self) -> f64 {
        if self.total_bytes == 0 {
            100.0
        } else {
            self.free_bytes as f64 * 100.0 / self.total_bytes as f64
        }
    }
    pub fn inode_pct(&self) -> f64 {
        if self.total_inodes == 0 {
            100.0
        } else {
            self.free_inodes as f64 * 100.0 / self.total_inodes as f64
        }
    }
}

/// statvfs(3) of `path` (or its nearest existing parent).
pub fn space(what: &str, path: &Path) -> std::io::Result<Space> {
    use std::os::unix::ffi::OsStrExt;
    let mut p = path;
    while !p.exists() {
        p = p.parent().unwrap_or(Path::new("/"));
    }
    let c = std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs fills the struct we own; the path is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let frs = st.f_frsize as u64;
    Ok(Space {
        what: what.to_owned(),
        path: path.to_path_buf(),
        free_bytes: st.f_bavail as u64 * frs,
        total_bytes: st.f_blocks as u64 * frs,
        free_inodes: st.f_favail as u64,
        total_inodes: st.f_files as u64,
    })
}

/// The directories whose free space matters.
pub fn watched_dirs(paths: &Paths, config: &Config, root: &Path) -> Vec<(String, PathBuf)> {
    let mut v = Vec::new();
    if let Ok(sc) = msgstore::StoreConfig::load(&paths.layout) {
        for (name, p) in sc.partitions {
            v.push((format!("partition {name}"), p));
        }
    }
    let logdir = config.get_path(
        &msgconf::names::logfile("default", "logdir"),
        root.join("data"),
    );
    v.push(("log directory".to_owned(), logdir));
    v.push(("database directory".to_owned(), paths.dbdir.clone()));
    v.push(("snapshot directory".to_owned(), paths.snapshots.clone()));
    v
}

/// Age in seconds of a stamp file (None: missing).
pub fn age_secs(path: &Path) -> Option<i64> {
    crate::periodic::mtime_secs(path).map(|t| (crate::now_secs() - t).max(0))
}

/// Database log files in `mboxlist/` (the write-ahead log and any rollback journal) with
/// their sizes.
pub fn db_logs(paths: &Paths) -> Vec<(String, u64)> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&paths.dbdir) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.ends_with("-wal") || n.ends_with("-journal") {
                v.push((n, e.metadata().map_or(0, |m| m.len())));
            }
        }
    }
    v.sort();
    v
}

/// The process in a pid file, if it is alive.
pub fn pid_alive(pid_file: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if pid <= 0 {
        return None;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    (r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)).then_some(pid)
}

/// The services start-msg knows, in start order.
pub const SERVICES: &[&str] = &["stored", "imapd", "popd", "mshttpd", "lmtpd"];

/// Core files in the instance root, its data directory and the run directory.
pub fn core_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in [root.to_path_buf(), root.join("data"), root.join("data/run")] {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                let is_core = n == "core"
                    || n.strip_prefix("core.")
                        .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()));
                if is_core && e.file_type().is_ok_and(|t| t.is_file()) {
                    out.push(e.path());
                }
            }
        }
    }
    out
}

fn gib(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}

/// Every check but reconstruct's.
pub fn check(root: &Path, config: &Config, t: &Thresholds) -> Vec<Finding> {
    let paths = Paths::new(root, config);
    let iv = Intervals::from_config(config);
    let mut out = Vec::new();
    let mut push = |level, check, text: String| out.push(Finding { level, check, text });

    for (what, dir) in watched_dirs(&paths, config, root) {
        match space(&what, &dir) {
            Ok(s) => {
                let pct = s.free_pct().min(s.inode_pct());
                let level = if pct < t.crit_free_pct {
                    Level::Critical
                } else if pct < t.warn_free_pct {
                    Level::Warning
                } else {
                    Level::Ok
                };
                push(
                    level,
                    "disk",
                    format!(
                        "{what} {}: {:.1}% free ({} of {}), {:.1}% of inodes free",
                        dir.display(),
                        s.free_pct(),
                        gib(s.free_bytes),
                        gib(s.total_bytes),
                        s.inode_pct()
                    ),
                );
            }
            Err(e) => push(
                Level::Critical,
                "disk",
                format!("{what} {}: cannot read free space: {e}", dir.display()),
            ),
        }
    }

    let stored_pid = pid_alive(&paths.pid_file("stored"));
    for (stamp, every, what) in [
        (STAMP_CHECKPOINT, iv.checkpoint, "checkpoint"),
        (STAMP_LOG_CLEANUP, iv.log_cleanup, "log cleanup"),
        (STAMP_PERUSER, iv.peruser, "per-user write-out"),
    ] {
        let p = paths.stamp(stamp);
        let every = every.as_secs() as i64;
        match age_secs(&p) {
            None => push(
                if stored_pid.is_some() {
                    Level::Warning
                } else {
                    Level::Critical
                },
                "stamp",
                format!(
                    "{} is missing: stored has not done a {what} yet",
                    p.display()
                ),
            ),
            Some(age) => {
                let level = if age > 10 * every + 60 {
                    Level::Critical
                } else if age > 3 * every + 30 {
                    Level::Warning
                } else {
                    Level::Ok
                };
                push(
                    level,
                    "stamp",
                    format!("{stamp} touched {age} s ago ({what} expected every {every} s)"),
                );
            }
        }
    }

    let logs = db_logs(&paths);
    let total: u64 = logs.iter().map(|(_, n)| n).sum();
    let level = if total > t.crit_log_bytes {
        Level::Critical
    } else if total > t.warn_log_bytes || logs.len() > 3 {
        Level::Warning
    } else {
        Level::Ok
    };
    push(
        level,
        "dblog",
        format!(
            "{} database log file(s), {total} bytes in {}{}",
            logs.len(),
            paths.dbdir.display(),
            if level == Level::Ok {
                ""
            } else {
                ": checkpoints or log cleanup are not keeping up"
            }
        ),
    );

    match crate::snapshot::list(&paths.snapshots) {
        Ok(s) => {
            let newest = s.iter().map(|s| s.taken).max().unwrap_or(0);
            let every = iv.snapshot.as_secs() as i64;
            let age = crate::now_secs() - newest;
            let level = if s.is_empty() || age > 2 * every + 3600 {
                Level::Warning
            } else {
                Level::Ok
            };
            push(
                level,
                "snapshot",
                if s.is_empty() {
                    format!("no database snapshot in {}", paths.snapshots.display())
                } else {
                    format!(
                        "{} snapshot(s), newest {} s old (every {} s)",
                        s.len(),
                        age,
                        every
                    )
                },
            );
        }
        Err(e) => push(
            Level::Warning,
            "snapshot",
            format!("cannot read {}: {e}", paths.snapshots.display()),
        ),
    }

    for svc in SERVICES {
        let pf = paths.pid_file(svc);
        match (pf.exists(), pid_alive(&pf)) {
            (_, Some(pid)) => push(Level::Ok, "service", format!("{svc} running (pid {pid})")),
            (true, None) => push(
                Level::Critical,
                "service",
                format!("{svc} is not running (stale pid file {})", pf.display()),
            ),
            (false, None) if *svc == "stored" => push(
                Level::Critical,
                "service",
                "stored is not running: no other service should be".to_owned(),
            ),
            (false, None) => {}
        }
    }

    let cores = core_files(root);
    if cores.is_empty() {
        push(Level::Ok, "core", "no core files".to_owned());
    }
    for c in cores {
        push(
            Level::Warning,
            "core",
            format!(
                "core file {}: a process terminated unexpectedly",
                c.display()
            ),
        );
    }
    out
}

/// What one `reconstruct -r -n` found.
#[derive(Clone, Debug, Default)]
pub struct FolderCheck {
    /// reconstruct's exit status (0 clean, 1 damage found, 2 failed).
    pub code: i32,
    pub checked: u64,
    pub damaged: u64,
    /// Folders that could not be checked or repaired.
    pub unrepairable: u64,
    pub summary: String,
    pub first: Option<String>,
}

/// The counts in reconstruct's summary line ("reconstruct: N folder(s) checked, D damaged,
/// R rebuilt, F could not be repaired").
fn summary_counts(summary: &str) -> (u64, u64, u64) {
    let num = |key: &str| -> u64 {
        summary
            .split(',')
            .find(|part| part.contains(key))
            .and_then(|part| part.split_whitespace().find_map(|w| w.parse::<u64>().ok()))
            .unwrap_or(0)
    };
    (num("checked"), num("damaged"), num("could not be repaired"))
}

/// `reconstruct -r -n` through its library. Err: it could not run at all.
pub fn run_folder_check(root: &Path) -> Result<FolderCheck, String> {
    let opts = reconstruct::Options {
        root: root.to_path_buf(),
        recursive: true,
        check_only: true,
        ..Default::default()
    };
    let lines = std::sync::Mutex::new(Vec::<String>::new());
    let sink = |l: &str| {
        lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(l.to_owned())
    };
    let r = reconstruct::run(&opts, &sink);
    let lines = lines.into_inner().unwrap_or_else(|p| p.into_inner());
    let code = r.map_err(|e| e.message().to_owned())?;
    let summary = lines.last().cloned().unwrap_or_default();
    let (checked, damaged, unrepairable) = summary_counts(&summary);
    Ok(FolderCheck {
        code,
        checked,
        damaged,
        unrepairable,
        first: (lines.len() > 1).then(|| lines[0].clone()),
        summary,
    })
}

/// `reconstruct -r -n` through its library: one finding with its summary.
pub fn check_folders(root: &Path) -> Finding {
    match run_folder_check(root) {
        Ok(c) if c.code == 0 => Finding {
            level: Level::Ok,
            check: "reconstruct",
            text: c.summary,
        },
        Ok(c) => Finding {
            level: if c.code == reconstruct::EXIT_DAMAGE {
                Level::Warning
            } else {
                Level::Critical
            },
            check: "reconstruct",
            text: format!(
                "{}; first: {}; run reconstruct -r",
                c.summary,
                c.first.as_deref().unwrap_or("")
            ),
        },
        Err(e) => Finding {
            level: Level::Critical,
            check: "reconstruct",
            text: format!("reconstruct -r -n could not run: {e}"),
        },
    }
}

#[cfg(test)]
mod folder_check_tests {
    #[test]
    fn summary_line_counts() {
        assert_eq!(
            super::summary_counts("reconstruct: 120 folder(s) checked, 3 damaged, 0 rebuilt, 1 could not be repaired (-n: nothing changed)"),
            (120, 3, 1)
        );
        assert_eq!(super::summary_counts(""), (0, 0, 0));
    }
}
