//! Database snapshots (seed table 20-13): hot copies of the mailbox database taken with
//! SQLite's online backup API in one read transaction (so writers never wait, WAL mode), each
//! verified after it is taken and again before it is restored.
//!
//! Layout: `<snapshotpath>/<YYYYmmddHHMMSS>/mboxlist.db` plus `VERIFIED` (`size crc32 time`),
//! written last. A copy is made in `.tmp-<name>` and renamed into place only once verified,
//! so a crash or a full disk during a snapshot leaves no snapshot that looks complete.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::{DB_FILE, TABLES};

const MARKER: &str = "VERIFIED";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Db(#[from] rusqlite::Error),
    #[error("the copy does not verify: {0}")]
    Verify(String),
}

/// One snapshot directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub name: String,
    pub dir: PathBuf,
    /// When it was taken (seconds since the epoch), from its marker; 0 when unmarked.
    pub taken: i64,
}

impl Snapshot {
    pub fn db(&self) -> PathBuf {
        self.dir.join(DB_FILE)
    }
}

/// The database at `path` opened read-only passes `PRAGMA quick_check` and has every table.
pub fn check_database(path: &Path) -> Result<(), String> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| e.to_string())?;
    check_connection(&c)
}

/// `PRAGMA quick_check` and the schema, on an open connection.
pub fn check_connection(c: &Connection) -> Result<(), String> {
    let mut st = c.prepare("PRAGMA quick_check").map_err(|e| e.to_string())?;
    let rows: Vec<String> = st
        .query_map([], |r| r.get(0))
        .and_then(|r| r.collect())
        .map_err(|e| e.to_string())?;
    if rows.first().map(String::as_str) != Some("ok") {
        return Err(rows.into_iter().take(3).collect::<Vec<_>>().join("; "));
    }
    for t in TABLES {
        let n: i64 = c
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [t],
                |r| r.get(0),
            )
            .map_err(|e| e.to_string())?;
        if n != 1 {
            return Err(format!("table {t} is missing"));
        }
        // Read every row of each table: quick_check does not look inside all records.
        c.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(|e| format!("table {t}: {e}"))?;
    }
    Ok(())
}

fn file_crc(path: &Path) -> io::Result<(u64, u32)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        n += k as u64;
        h.update(&buf[..k]);
    }
    Ok((n, h.finalize()))
}

/// Verify a snapshot: its marker matches the file (size and CRC32) and the file passes the
/// database check.
pub fn verify(s: &Snapshot) -> Result<(), String> {
    let marker = std::fs::read_to_string(s.dir.join(MARKER))
        .map_err(|e| format!("no verification marker ({e}): the snapshot is incomplete"))?;
    let mut it = marker.split_whitespace();
    let size: Option<u64> = it.next().and_then(|v| v.parse().ok());
    let crc: Option<u32> = it.next().and_then(|v| u32::from_str_radix(v, 16).ok());
    let (Some(size), Some(crc)) = (size, crc) else {
        return Err("verification marker damaged".into());
    };
    let (n, c) = file_crc(&s.db()).map_err(|e| format!("cannot read {}: {e}", DB_FILE))?;
    if n != size || c != crc {
        return Err(format!(
            "contents changed since it was taken ({n} bytes, CRC {c:08x}; taken as {size} bytes, CRC {crc:08x})"
        ));
    }
    check_database(&s.db())
}

/// Every snapshot directory under `dir`, newest first (temporary directories excluded).
pub fn list(dir: &Path) -> io::Result<Vec<Snapshot>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.len() != 14 || !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let taken = std::fs::read_to_string(e.path().join(MARKER))
            .ok()
            .and_then(|m| m.split_whitespace().nth(2).and_then(|t| t.parse().ok()))
            .unwrap_or(0);
        out.push(Snapshot {
            name,
            dir: e.path(),
            taken,
        });
    }
    out.sort_by(|a, b| b.name.cmp(&a.name));
    Ok(out)
}

/// Remove leftovers of snapshots that never completed (`.tmp-*`).
pub fn remove_incomplete(dir: &Path) -> io::Result<usize> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut n = 0;
    for e in rd.flatten() {
        if e.file_name().to_string_lossy().starts_with(".tmp-") {
            std::fs::remove_dir_all(e.path())?;
            n += 1;
        }
    }
    Ok(n)
}

fn utc_name(secs: i64) -> String {
    // Civil date from days since the epoch (Howard Hinnant's algorithm), to avoid a date crate
    // for one directory name.
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Take a snapshot of the live database `db` into `dir`, verify it, and keep `keep` snapshots.
/// Returns the new snapshot.
pub fn take(db: &Path, dir: &Path, keep: usize) -> Result<Snapshot, SnapshotError> {
    std::fs::create_dir_all(dir)?;
    let now = crate::now_secs();
    let mut name = utc_name(now);
    // Two snapshots within one second: the newer one waits for the next name.
    while dir.join(&name).exists() {
        std::thread::sleep(Duration::from_millis(200));
        name = utc_name(crate::now_secs());
    }
    let tmp = dir.join(format!(".tmp-{name}"));
    let result = take_into(db, &tmp, now);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let fin = dir.join(&name);
    std::fs::rename(&tmp, &fin)?;
    msgstore::fsutil::sync_dir(dir)?;
    rotate(dir, keep)?;
    Ok(Snapshot {
        name,
        dir: fin,
        taken: now,
    })
}

fn take_into(db: &Path, tmp: &Path, now: i64) -> Result<(), SnapshotError> {
    std::fs::create_dir_all(tmp)?;
    let target = tmp.join(DB_FILE);
    {
        let src = Connection::open_with_flags(
            db,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        src.busy_timeout(Duration::from_secs(10))?;
        let mut dst = Connection::open(&target)?;
        {
            let b = rusqlite::backup::Backup::new(&src, &mut dst)?;
            // All pages in one step: one read transaction, so concurrent writers neither wait
            // nor restart the copy.
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                match b.step(-1)? {
                    rusqlite::backup::StepResult::Done => break,
                    // Busy or locked: a writer holds the lock for an instant; try again.
                    _ if std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        return Err(SnapshotError::Verify(
                            "the database stayed busy for 60 seconds".into(),
                        ))
                    }
                }
            }
        }
        // A self-contained file: no log beside it.
        dst.pragma_update(None, "journal_mode", "DELETE")?;
    }
    std::fs::File::open(&target)?.sync_all()?;
    check_database(&target).map_err(SnapshotError::Verify)?;
    let (n, crc) = file_crc(&target)?;
    let marker = tmp.join(crate::snapshot::MARKER);
    msgstore::fsutil::write_atomic(&marker, format!("{n} {crc:08x} {now}\n").as_bytes())?;
    Ok(())
}

/// Keep the newest `keep` snapshots, removing older ones and any that never verified.
pub fn rotate(dir: &Path, keep: usize) -> io::Result<Vec<String>> {
    let mut removed = Vec::new();
    let mut kept = 0;
    for s in list(dir)? {
        let complete = s.dir.join(MARKER).exists();
        if complete && kept < keep {
            kept += 1;
            continue;
        }
        std::fs::remove_dir_all(&s.dir)?;
        removed.push(s.name);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_utc_timestamps() {
        assert_eq!(utc_name(0), "19700101000000");
        assert_eq!(utc_name(1_700_000_000), "20231114221320");
    }
}
