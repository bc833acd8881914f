//! stored's periodic work (seed table 20-12), each job touching its stamp file in `mboxlist/`
//! when it runs, so monitoring can see stored is alive:
//! - checkpoint (`stored.ckp`, about every minute): `PRAGMA wal_checkpoint(PASSIVE)`, copying
//!   the log into the database without making anyone wait;
//! - log cleanup (`stored.lcu`, about every five minutes): `wal_checkpoint(TRUNCATE)`, which
//!   empties the log once every reader has moved past it;
//! - per-user data write-out (`stored.per`, hourly): each user's subscriptions and per-user
//!   rows copied to `store.peruser` in the user's directory, the redundant copy a database
//!   restored from an older snapshot is brought up to date from.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use msgstore::layout;
use msgstore::mboxdb::MailboxDb;
use msgstore::UserName;
use rusqlite::Connection;

use crate::PERUSER_FILE;

/// Counters the metrics endpoint exports.
#[derive(Debug, Default)]
pub struct Stats {
    pub checkpoints: AtomicU64,
    pub checkpoint_failures: AtomicU64,
    pub log_cleanups: AtomicU64,
    pub peruser_writeouts: AtomicU64,
    pub erased_messages: AtomicU64,
    pub erased_bytes: AtomicU64,
    pub snapshots: AtomicU64,
    pub snapshot_failures: AtomicU64,
    pub last_snapshot: AtomicI64,
    /// 1 while a resync from the folders is pending or running.
    pub resync_pending: AtomicU64,
    pub started: AtomicI64,
    pub startup_millis: AtomicU64,
    pub recoveries: AtomicU64,
    /// The last periodic `reconstruct -r -n` (None before the first).
    pub folder_check: std::sync::Mutex<Option<FolderCheckStat>>,
}

/// The last periodic `reconstruct -r -n`, for the metrics.
#[derive(Clone, Debug)]
pub struct FolderCheckStat {
    /// When it ended (seconds since the epoch).
    pub at: i64,
    pub millis: u64,
    /// None: it could not run.
    pub result: Option<crate::health::FolderCheck>,
}

/// Open stored's own connection to the live database.
pub fn open(db: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open(db)?;
    c.busy_timeout(Duration::from_secs(5))?;
    Ok(c)
}

/// `(busy, log frames, checkpointed frames)` of a checkpoint in `mode`.
pub fn checkpoint(c: &Connection, mode: &str) -> rusqlite::Result<(i64, i64, i64)> {
    c.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The directory of `user`'s INBOX, where their per-user file lives.
fn user_dir(c: &Connection, user: &str, partitions: &BTreeMap<String, PathBuf>) -> Option<PathBuf> {
    let partition: String = c
        .query_row(
            "SELECT partition FROM mailbox WHERE name = ?1",
            [format!("user/{user}/INBOX")],
            |r| r.get(0),
        )
        .ok()?;
    let u = UserName::new(user).ok()?;
    Some(layout::user_dir(partitions.get(&partition)?, &u))
}

/// Write each user's subscriptions and per-user rows to `store.peruser` in their directory
/// (only when they changed). Returns the number of files written.
pub fn write_peruser(
    c: &Connection,
    partitions: &BTreeMap<String, PathBuf>,
) -> Result<usize, String> {
    let mut data: BTreeMap<String, String> = BTreeMap::new();
    {
        let mut st = c
            .prepare("SELECT userid, name FROM subscription ORDER BY userid, name")
            .map_err(|e| e.to_string())?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| e.to_string())?;
        for row in rows {
            let (u, n) = row.map_err(|e| e.to_string())?;
            let _ = writeln!(data.entry(u).or_default(), "s\t{}", hex(n.as_bytes()));
        }
        let mut st = c
            .prepare("SELECT userid, key, value FROM peruser ORDER BY userid, key")
            .map_err(|e| e.to_string())?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<Vec<u8>>>(2)?,
                ))
            })
            .map_err(|e| e.to_string())?;
        for row in rows {
            let (u, k, v) = row.map_err(|e| e.to_string())?;
            let _ = writeln!(
                data.entry(u).or_default(),
                "p\t{}\t{}",
                hex(k.as_bytes()),
                v.map_or_else(|| "-".to_owned(), |v| hex(&v))
            );
        }
    }
    let mut written = 0;
    for (user, body) in data {
        let Some(dir) = user_dir(c, &user, partitions) else {
            continue;
        };
        let path = dir.join(PERUSER_FILE);
        let text = format!("# per-user data of {user}, written by stored\n{body}");
        if std::fs::read(&path).is_ok_and(|old| old == text.as_bytes()) {
            continue;
        }
        if !dir.exists() {
            continue;
        }
        msgstore::fsutil::write_atomic(&path, text.as_bytes())
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        written += 1;
    }
    Ok(written)
}

/// Replace each user's subscriptions and per-user rows with their `store.peruser` file when
/// that file was written after `since` (always when `since` is None). Returns the number of
/// users restored.
pub fn restore_peruser(
    db: &MailboxDb,
    partitions: &BTreeMap<String, PathBuf>,
    since: Option<i64>,
) -> Result<usize, String> {
    let mut c = open(db.path()).map_err(|e| e.to_string())?;
    let inboxes = db.list_all().map_err(|e| e.to_string())?;
    let mut restored = 0;
    // One transaction for every user: one commit, not one per user.
    let tx = c.transaction().map_err(|e| e.to_string())?;
    for e in inboxes {
        let Some(user) = e
            .name
            .strip_prefix("user/")
            .and_then(|r| r.strip_suffix("/INBOX"))
            .filter(|u| !u.contains('/'))
        else {
            continue;
        };
        let (Ok(u), Some(p)) = (UserName::new(user), partitions.get(&e.partition)) else {
            continue;
        };
        let path = layout::user_dir(p, &u).join(PERUSER_FILE);
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        if since.is_some_and(|s| mtime < s) {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
        tx.execute("DELETE FROM subscription WHERE userid = ?1", [user])
            .map_err(|e| e.to_string())?;
        tx.execute("DELETE FROM peruser WHERE userid = ?1", [user])
            .map_err(|e| e.to_string())?;
        for line in text.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            match f.as_slice() {
                ["s", name] => {
                    if let Some(n) = unhex(name).and_then(|b| String::from_utf8(b).ok()) {
                        tx.execute(
                            "INSERT OR IGNORE INTO subscription (userid, name) VALUES (?1, ?2)",
                            [user, n.as_str()],
                        )
                        .map_err(|e| e.to_string())?;
                    }
                }
                ["p", key, value] => {
                    let Some(k) = unhex(key).and_then(|b| String::from_utf8(b).ok()) else {
                        continue;
                    };
                    let v = if *value == "-" { None } else { unhex(value) };
                    tx.execute(
                        "INSERT OR REPLACE INTO peruser (userid, key, value) VALUES (?1, ?2, ?3)",
                        rusqlite::params![user, k, v],
                    )
                    .map_err(|e| e.to_string())?;
                }
                _ => {}
            }
        }
        restored += 1;
    }
    tx.commit().map_err(|e| e.to_string())?;
    Ok(restored)
}

/// Seconds since the epoch of the modification time of `path`, if it exists.
pub fn mtime_secs(path: &Path) -> Option<i64> {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
}

/// Bump a counter.
pub fn inc(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}
