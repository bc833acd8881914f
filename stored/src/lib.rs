//! stored: the message store daemon (seed 20.14.1 and 20.14.2).
//!
//! stored starts before every other service. It analyses the mailbox database before opening
//! it (`recovery`): SQLite's own integrity check, the write-ahead log's header, and agreement
//! with the folders on disk. It repairs in order of cost: SQLite's log replay; else the newest
//! snapshot that verifies (setting the bad database aside in `mboxlist/removed/`); then it
//! brings the database up to date from the folders with `reconstruct`'s library, in the
//! background. Then it signals readiness (`ready`) and runs the periodic work (`periodic`):
//! checkpoints, log cleanup, per-user data write-out, erasing expunged messages (`erase`) and
//! snapshots (`snapshot`), aging policies (`aging`), touching the stamp files of table 20-12. `health` gathers the
//! figures `msgcheck` reports and the metrics endpoint (`metrics`) exports.

pub mod aging;
pub mod control;
pub mod erase;
pub mod health;
pub mod metrics;
pub mod periodic;
pub mod ready;
pub mod rebuild;
pub mod recovery;
pub mod resync;
pub mod snapshot;
pub mod wal;

use std::path::{Path, PathBuf};
use std::time::Duration;

use msgconf::registry::names;
use msgconf::Config;
use msgstore::layout::Layout;

/// The database file's name in `mboxlist/`.
pub const DB_FILE: &str = "mboxlist.db";
/// Touched at every checkpoint (table 20-12).
pub const STAMP_CHECKPOINT: &str = "stored.ckp";
/// Touched at every database log cleanup (table 20-12).
pub const STAMP_LOG_CLEANUP: &str = "stored.lcu";
/// Touched at every per-user data write-out (table 20-12).
pub const STAMP_PERUSER: &str = "stored.per";
/// The per-user data written out into each user's directory, for recovery.
pub const PERUSER_FILE: &str = "store.peruser";

/// The tables a mailbox database must hold (msgstore's schema).
pub const TABLES: &[&str] = &[
    "mailbox",
    "quota",
    "lright",
    "subscription",
    "peruser",
    "counter",
];

/// Where stored's files are under an instance root.
#[derive(Clone, Debug)]
pub struct Paths {
    pub layout: Layout,
    /// `data/store/mboxlist`
    pub dbdir: PathBuf,
    /// `data/store/mboxlist/mboxlist.db`
    pub db: PathBuf,
    /// `data/store/mboxlist/removed`
    pub removed: PathBuf,
    /// The snapshot directory (`local.store.snapshotpath`, relative to `data/store`).
    pub snapshots: PathBuf,
    /// `data/run`: pid files, the readiness file.
    pub run: PathBuf,
}

impl Paths {
    pub fn new(root: &Path, config: &Config) -> Paths {
        let layout = Layout::new(root);
        let dbdir = layout.mboxlist_dir();
        let snapshots = config.get_path(names::SNAPSHOT_PATH, layout.store_dir());
        Paths {
            db: dbdir.join(DB_FILE),
            removed: dbdir.join("removed"),
            run: layout.data_dir().join("run"),
            snapshots,
            dbdir,
            layout,
        }
    }
    pub fn wal(&self) -> PathBuf {
        self.dbdir.join(format!("{DB_FILE}-wal"))
    }
    pub fn shm(&self) -> PathBuf {
        self.dbdir.join(format!("{DB_FILE}-shm"))
    }
    pub fn stamp(&self, name: &str) -> PathBuf {
        self.dbdir.join(name)
    }
    pub fn ready_file(&self) -> PathBuf {
        self.run.join("stored.ready")
    }
    pub fn pid_file(&self, service: &str) -> PathBuf {
        self.run.join(format!("{service}.pid"))
    }
}

/// How often stored does each piece of periodic work.
#[derive(Clone, Debug)]
pub struct Intervals {
    pub checkpoint: Duration,
    pub log_cleanup: Duration,
    pub peruser: Duration,
    pub erase: Duration,
    pub snapshot: Duration,
    /// Snapshots kept (`local.store.snapshotdirs`).
    pub snapshots_kept: usize,
    /// How long expunged messages keep their files (`local.store.expungegrace`).
    pub expunge_grace: Duration,
    /// The hour of the day (local time) aging policies run (`store.expirestart`).
    pub expire_start: u32,
    /// Between the reconstruct -r -n checks for the metrics; None = off
    /// (`local.store.reconstructcheckinterval`).
    pub reconstruct_check: Option<Duration>,
}

impl Intervals {
    pub fn from_config(c: &Config) -> Intervals {
        let secs = |n: &str| Duration::from_secs(u64::try_from(c.get_int(n)).unwrap_or(1).max(1));
        Intervals {
            checkpoint: secs(names::CHECKPOINT_INTERVAL),
            log_cleanup: secs(names::LOG_CLEANUP_INTERVAL),
            peruser: secs(names::PERUSER_INTERVAL),
            erase: secs(names::CLEANUP_INTERVAL),
            snapshot: secs(names::SNAPSHOT_INTERVAL) * 60,
            snapshots_kept: usize::try_from(c.get_int(names::SNAPSHOT_DIRS))
                .unwrap_or(3)
                .max(2),
            expunge_grace: Duration::from_secs(
                u64::try_from(c.get_int(names::EXPUNGE_GRACE)).unwrap_or(0),
            ),
            expire_start: u32::try_from(c.get_int(names::EXPIRE_START))
                .unwrap_or(23)
                .min(23),
            reconstruct_check: u64::try_from(c.get_int(names::RECONSTRUCT_CHECK_INTERVAL))
                .ok()
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
        }
    }
}

/// Touch a stamp file (create it, set its modification time to now).
pub fn touch(path: &Path) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    f.set_modified(std::time::SystemTime::now())
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
