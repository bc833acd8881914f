//! Startup analysis and recovery of the mailbox database (seed 20.14.2).
//!
//! Before the database is opened for service: check the write-ahead log's header, open the
//! database (SQLite replays its log), run `PRAGMA quick_check`, check the schema and read every
//! table, then compare it with the folders on disk (`reconstruct -m -n` through its library).
//! Repairs go in order of cost:
//! 1. SQLite's own log replay (nothing else to do);
//! 2. a damaged log is removed ("Removing extra database logs ...") and what it held is
//!    resynced from the folders;
//! 3. a damaged database is set aside in `mboxlist/removed/` (only when the copy there is
//!    more than a week old, so the original damage is not overwritten by later startups) and
//!    the newest snapshot that verifies is restored ("Recovering database from snapshot ...");
//!    a newer snapshot that does not verify is refused;
//! 4. with no usable snapshot, a new database is built from the folders before startup ends.
//!
//! The resync after 2 and 3 runs in the background once the other services may start, and
//! logs when it is done.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use msgstore::mboxdb::MailboxDb;
use tracing::{info, warn};

use crate::snapshot::{self, Snapshot};
use crate::wal::{self, WalState};
use crate::Paths;

/// The seed's line after a snapshot restore.
pub const MSG_FROM_SNAPSHOT: &str =
    "Recovering database from snapshot. Run reconstruct -m soon after startup to resync redundant data";
/// The seed's line after the database logs were removed.
pub const MSG_EXTRA_LOGS: &str =
    "Removing extra database logs. Run reconstruct -m soon after startup to resync redundant data";

/// Entries compared with their folders' store.meta at startup (all of them in a resync).
const STARTUP_SAMPLE: usize = 256;
/// Up to this many folders (the default of `stored --full-check-limit`), startup compares
/// every one with the database; beyond, a sample (every folder of `STARTUP_SAMPLE` users),
/// and the full comparison after readiness.
pub const FULL_CHECK_LIMIT: u64 = 20_000;

const WEEK: Duration = Duration::from_secs(7 * 86400);

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the mailbox database: {0}")]
    Open(msgstore::StoreError),
    #[error("the mailbox database needs recovery ({why}), but {services} still use it: stop them (stop-msg), then start again (start-msg)")]
    InUse { why: String, services: String },
}

/// A front end found running when stored starts (stored restarted alone).
#[derive(Clone, Debug)]
pub struct RunningService {
    pub name: &'static str,
    pub pid: i32,
    /// When it was started (its pid file's time).
    pub since: SystemTime,
}

/// The processes holding SQLite's shared-memory "DMS" lock on the database's `-shm` file:
/// every process with the database open in WAL mode holds a read lock on that byte for as long
/// as it is connected (SQLite's os_unix.c, `UNIX_SHM_DMS`, byte 128). This finds the front
/// ends (and admin commands) using the database however they were started (under systemd
/// there are no pid files). Read from /proc/locks, which lists every holder (F_GETLK names
/// only one); nothing is locked.
fn shm_lock_holders(shm: &Path) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    const UNIX_SHM_DMS: u64 = 128;
    let Ok(m) = std::fs::metadata(shm) else {
        return Vec::new();
    };
    let Ok(locks) = std::fs::read_to_string("/proc/locks") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for line in locks.lines() {
        // "1: POSIX  ADVISORY  READ 1234 fd:00:5678 128 128"; waiters have "->" and hold
        // nothing yet.
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 || f[1] == "->" || f[1] != "POSIX" {
            continue;
        }
        // MAJOR:MINOR:INODE, the device numbers in hex.
        let mut id = f[5].split(':');
        let (maj, min) = (
            id.next().and_then(|v| u32::from_str_radix(v, 16).ok()),
            id.next().and_then(|v| u32::from_str_radix(v, 16).ok()),
        );
        if (maj, min) != (Some(libc::major(m.dev())), Some(libc::minor(m.dev()))) {
            continue;
        }
        let ino = id.next().and_then(|i| i.parse::<u64>().ok());
        let (Ok(pid), Some(ino), Ok(start), Ok(end)) = (
            f[4].parse::<i32>(),
            ino,
            f[6].parse::<u64>(),
            f[7].parse::<u64>()
                .or_else(|_| if f[7] == "EOF" { Ok(u64::MAX) } else { Err(()) }),
        ) else {
            continue;
        };
        if ino == m.ino() && start <= UNIX_SHM_DMS && UNIX_SHM_DMS <= end && !pids.contains(&pid) {
            pids.push(pid);
        }
    }
    pids
}

/// The front ends (and any other process) using this instance's database when stored starts:
/// those named by live pid files in `data/run/`, and the holder of SQLite's connection lock
/// (found one at a time: F_GETLK names one holder).
pub fn running_services(paths: &Paths) -> Vec<RunningService> {
    let mut out: Vec<RunningService> = crate::health::SERVICES
        .iter()
        .filter(|s| **s != "stored")
        .filter_map(|s| {
            let file = paths.pid_file(s);
            let pid = crate::control::running(&file, s)?;
            let since = std::fs::metadata(&file)
                .and_then(|m| m.modified())
                .unwrap_or_else(|_| SystemTime::now());
            Some(RunningService {
                name: s,
                pid,
                since,
            })
        })
        .collect();
    for pid in shm_lock_holders(&paths.shm()) {
        if pid != std::process::id() as i32 && !out.iter().any(|r| r.pid == pid) {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim().to_owned())
                .unwrap_or_default();
            let name = crate::health::SERVICES
                .iter()
                .find(|s| **s == comm)
                .copied()
                .unwrap_or("a process");
            // The process's start: its /proc directory's time.
            let since = std::fs::metadata(format!("/proc/{pid}"))
                .and_then(|m| m.modified())
                .unwrap_or_else(|_| SystemTime::now());
            out.push(RunningService { name, pid, since });
        }
    }
    out
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RecoveryError {
    let path = path.to_path_buf();
    move |source| RecoveryError::Io { what, path, source }
}

/// Why the database must be brought up to date from the folders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resync {
    /// Restored from the snapshot taken at this time.
    FromSnapshot { taken: i64 },
    /// The database log was damaged and removed.
    LogRemoved,
    /// The database and the folders disagreed.
    Disagreement { differences: usize },
}

/// What startup found and did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The database as found: `None` when it checked clean.
    pub damage: Option<String>,
    /// The log as found.
    pub wal: Option<WalState>,
    /// The snapshot restored.
    pub restored: Option<String>,
    /// Snapshots refused, with why.
    pub refused: Vec<(String, String)>,
    /// Built anew from the folders (no usable snapshot).
    pub rebuilt: bool,
    /// Where the bad database went (None: deleted, or none).
    pub set_aside: Option<PathBuf>,
    /// What must still be resynced (in the background).
    pub resync: Option<Resync>,
    /// What was resynced during startup.
    pub resynced: Option<Resync>,
    /// Only a sample was compared with the folders: the full comparison is still to run.
    pub full_check_pending: bool,
    /// How long the analysis and recovery took.
    pub elapsed: Duration,
}

/// Check the database file, opened read-write so that SQLite replays its log first. A file
/// truncated to nothing opens as an empty database and fails on the missing tables.
fn check_live(path: &Path) -> Result<(), String> {
    let c = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| e.to_string())?;
    c.busy_timeout(Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    snapshot::check_connection(&c)
}

/// Any folder directory (or message data) exists on a partition.
fn spool_has_data(partitions: &BTreeMap<String, PathBuf>) -> bool {
    partitions.values().any(|p| {
        std::fs::read_dir(p)
            .map(|mut rd| rd.next().is_some())
            .unwrap_or(false)
    })
}

fn remove_if_exists(p: &Path) -> Result<(), RecoveryError> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", p)(e)),
    }
}

/// Move the bad database (and its log) into `removed/` when the copy there is more than a
/// week old or absent; otherwise delete it.
fn set_aside(paths: &Paths) -> Result<Option<PathBuf>, RecoveryError> {
    let target = paths.removed.join(crate::DB_FILE);
    let old_enough = match std::fs::metadata(&target).and_then(|m| m.modified()) {
        Ok(t) => SystemTime::now()
            .duration_since(t)
            .is_ok_and(|age| age > WEEK),
        Err(_) => true,
    };
    let files = [
        (paths.db.clone(), target.clone()),
        (
            paths.wal(),
            paths.removed.join(format!("{}-wal", crate::DB_FILE)),
        ),
    ];
    if old_enough {
        std::fs::create_dir_all(&paths.removed).map_err(io_err("create", &paths.removed))?;
        remove_if_exists(&files[1].1)?;
        for (from, to) in &files {
            match std::fs::rename(from, to) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("move", from)(e)),
            }
            // The copy's age is the time it was set aside, not its last write.
            let _ = crate::touch(to);
        }
        remove_if_exists(&paths.shm())?;
        Ok(Some(target))
    } else {
        for (from, _) in &files {
            remove_if_exists(from)?;
        }
        remove_if_exists(&paths.shm())?;
        Ok(None)
    }
}

/// Copy a snapshot's database into place (temp file, fsync, rename).
fn install_snapshot(s: &Snapshot, paths: &Paths) -> Result<(), RecoveryError> {
    let tmp = paths.dbdir.join(".mboxlist.db.restore");
    std::fs::copy(s.db(), &tmp).map_err(io_err("copy", &s.db()))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io_err("sync", &tmp))?;
    remove_if_exists(&paths.wal())?;
    remove_if_exists(&paths.shm())?;
    std::fs::rename(&tmp, &paths.db).map_err(io_err("rename", &tmp))?;
    msgstore::fsutil::sync_dir(&paths.dbdir).map_err(io_err("sync", &paths.dbdir))
}

/// Analyse and, if needed, recover the database; returns it open, with what was done.
/// Every finding goes to the log (facility Store) as it is made.
pub fn startup(
    paths: &Paths,
    partitions: &BTreeMap<String, PathBuf>,
    full_check_limit: u64,
    running: &[RunningService],
) -> Result<(MailboxDb, Outcome), RecoveryError> {
    // Restarted alone beside running services: the database and its log are in use, so
    // nothing is moved or removed, and folders they made since they started are theirs.
    let live = running.iter().map(|r| r.since).min();
    let in_use = running
        .iter()
        .map(|r| format!("{} (pid {})", r.name, r.pid))
        .collect::<Vec<_>>()
        .join(", ");
    let started = Instant::now();
    let mut out = Outcome::default();
    std::fs::create_dir_all(&paths.dbdir).map_err(io_err("create", &paths.dbdir))?;
    remove_if_exists(&paths.dbdir.join(".mboxlist.db.restore"))?;
    match snapshot::remove_incomplete(&paths.snapshots) {
        Ok(0) => {}
        Ok(n) => warn!(
            facility = "Store",
            "Removed {n} incomplete snapshot(s) left by an interrupted snapshot"
        ),
        Err(e) => warn!(
            facility = "Store",
            "Cannot clean the snapshot directory: {e}"
        ),
    }

    // 1. The log, before SQLite silently ignores a damaged one.
    let wal_state = if live.is_some() {
        info!(
            facility = "Store",
            "Services running: {in_use}; the database log is in use by them, so it is checked through SQLite only"
        );
        WalState::Absent
    } else {
        wal::analyse(&paths.wal()).map_err(io_err("read", &paths.wal()))?
    };
    match &wal_state {
        WalState::Damaged { bytes, reason } => {
            warn!(
                facility = "Store",
                "Database log {} is damaged ({reason}, {bytes} bytes): the transactions in it are lost",
                paths.wal().display()
            );
            warn!(facility = "Store", "{MSG_EXTRA_LOGS}");
            remove_if_exists(&paths.wal())?;
            remove_if_exists(&paths.shm())?;
            out.resync = Some(Resync::LogRemoved);
        }
        WalState::Valid {
            bytes,
            frames,
            commits,
        } if *frames > 0 => info!(
            facility = "Store",
            "Database log holds {commits} committed transaction(s) in {frames} frame(s), {bytes} bytes: replaying"
        ),
        _ => {}
    }
    out.wal = live.is_none().then_some(wal_state);

    // 2. The database itself.
    let exists = paths.db.exists();
    let damage = if exists {
        check_live(&paths.db).err()
    } else {
        None
    };
    let snapshots = snapshot::list(&paths.snapshots).map_err(io_err("read", &paths.snapshots))?;
    let must_recover = match &damage {
        Some(why) => {
            warn!(
                facility = "Store",
                "Mailbox database {} failed its check: {why}",
                paths.db.display()
            );
            true
        }
        None if !exists && (!snapshots.is_empty() || spool_has_data(partitions)) => {
            warn!(
                facility = "Store",
                "Mailbox database {} is missing",
                paths.db.display()
            );
            true
        }
        None => false,
    };
    out.damage = damage
        .clone()
        .or_else(|| must_recover.then(|| "missing".to_owned()));

    if must_recover && live.is_some() {
        let why = out.damage.clone().unwrap_or_default();
        tracing::error!(
            facility = "Store",
            "Mailbox database {} needs recovery ({why}), but {in_use} still use it: stop them (stop-msg), then start again (start-msg)",
            paths.db.display()
        );
        return Err(RecoveryError::InUse {
            why,
            services: in_use,
        });
    }
    if must_recover {
        if exists {
            out.set_aside = set_aside(paths)?;
            match &out.set_aside {
                Some(p) => warn!(
                    facility = "Store",
                    "Moved the damaged database to {} for analysis",
                    p.display()
                ),
                None => warn!(
                    facility = "Store",
                    "Removed the damaged database: {} holds a copy set aside less than a week ago, kept for analysis",
                    paths.removed.display()
                ),
            }
        } else {
            remove_if_exists(&paths.wal())?;
            remove_if_exists(&paths.shm())?;
        }
        for s in &snapshots {
            match snapshot::verify(s) {
                Ok(()) => {
                    install_snapshot(s, paths)?;
                    warn!(facility = "Store", "{MSG_FROM_SNAPSHOT}");
                    info!(
                        facility = "Store",
                        "Restored snapshot {} ({})",
                        s.name,
                        s.dir.display()
                    );
                    out.restored = Some(s.name.clone());
                    out.resync = Some(Resync::FromSnapshot { taken: s.taken });
                    break;
                }
                Err(why) => {
                    warn!(facility = "Store", "Refusing snapshot {}: {why}", s.name);
                    out.refused.push((s.name.clone(), why));
                }
            }
        }
        if out.restored.is_none() {
            warn!(
                facility = "Store",
                "No usable snapshot: building a new mailbox database from the folders"
            );
            out.rebuilt = true;
        }
    }

    let db = MailboxDb::open(&paths.dbdir).map_err(RecoveryError::Open)?;
    // Quota limits changed since the snapshot (or lost with the log, or with the database)
    // come back from the copies in the users' directories before any server enforces them.
    if must_recover || out.resync.is_some() {
        match crate::rebuild::restore_quota_limits(&paths.db, partitions) {
            Ok((n, problems)) => {
                for p in problems.iter().take(20) {
                    warn!(facility = "Store", "{p}");
                }
                info!(
                    facility = "Store",
                    "Restored the quota limits of {n} root(s) from the users' store.quota"
                );
            }
            Err(e) => warn!(
                facility = "Store",
                "Cannot restore quota limits from the users' store.quota: {e}; set them again with mboxutil -q"
            ),
        }
    }
    if out.rebuilt {
        let t = Instant::now();
        let scan = crate::rebuild::scan(partitions);
        let scanned = t.elapsed();
        let (added, roots, mut problems) = match crate::rebuild::write(&paths.db, scan) {
            Ok(r) => (r.folders, r.quota_roots, r.problems),
            Err(e) => (0, 0, vec![e]),
        };
        if let Err(e) = crate::periodic::restore_peruser(&db, partitions, None) {
            problems.push(format!("Cannot restore per-user data: {e}"));
        }
        info!(
            facility = "Store",
            "Rebuild: folders read in {} ms, database written in {} ms ({roots} quota root(s))",
            scanned.as_millis(),
            (t.elapsed() - scanned).as_millis()
        );
        for p in problems.iter().take(20) {
            warn!(facility = "Store", "rebuild: {p}");
        }
        info!(
            facility = "Store",
            "Rebuilt the mailbox database from the folders: {added} folder(s), {} problem(s)",
            problems.len()
        );
        out.resync = None;
    } else if out.resync.is_none() {
        // 3. Agreement with the redundant data in the folders: all of it on a store small
        // enough to compare in moments, else a sample now and the rest in the background.
        let entries = count_entries(&paths.db);
        let check = if entries <= full_check_limit {
            reconstruct::db::fix_mailboxes_settled(&db, partitions, None, None, true, live)
        } else {
            out.full_check_pending = true;
            let (differences, lines, folders, users) = sample_agreement(&db, partitions);
            info!(
                facility = "Store",
                "Compared a sample of {folders} folder(s) of {users} user(s) with the database ({entries} folders): {differences} difference(s); the full comparison runs in the background"
            );
            reconstruct::db::DbOutcome {
                lines,
                changes: differences,
                failures: 0,
            }
        };
        let stale = stale_entries(&db, partitions, Some(STARTUP_SAMPLE));
        if let Some(f) = stale.first() {
            warn!(
                facility = "Store",
                "Mailbox database entries disagree with their folders' store.meta ({} in a sample of {STARTUP_SAMPLE}), first: {} (UIDVALIDITY {})",
                stale.len(),
                f.name,
                f.uidvalidity
            );
        }
        if check.changes > 0 || !stale.is_empty() {
            warn!(
                facility = "Store",
                "Mailbox database and folders disagree: {} difference(s), first: {}",
                check.changes,
                check.lines.first().map_or("", String::as_str)
            );
            out.resync = Some(Resync::Disagreement {
                differences: check.changes + stale.len(),
            });
        }
    }
    // What the log lost is a few recent changes: made good now, before any other service
    // runs, so no server races the resync. (After a snapshot restore the resync can be long,
    // and runs in the background once the services are up.)
    if matches!(
        out.resync,
        Some(Resync::LogRemoved) | Some(Resync::Disagreement { .. })
    ) {
        let t = Instant::now();
        let r = resync(&db, partitions, None, live);
        log_resync_done(&r, t.elapsed());
        out.resynced = out.resync.take();
    }
    out.elapsed = started.elapsed();
    info!(
        facility = "Store",
        "Startup analysis done in {} ms: database {}{}",
        out.elapsed.as_millis(),
        match (&out.damage, &out.restored, out.rebuilt) {
            (None, _, _) => "clean".to_owned(),
            (Some(_), Some(s), _) => format!("restored from snapshot {s}"),
            (Some(_), None, true) => "rebuilt from the folders".to_owned(),
            (Some(d), None, false) => format!("damaged ({d})"),
        },
        match (&out.resync, &out.resynced) {
            (Some(_), _) => "; resync from the folders pending",
            (None, Some(_)) => "; resynced from the folders",
            (None, None) => "",
        }
    );
    Ok((db, out))
}

/// Database entries whose redundant copy in the folder (`store.meta`, index header) says
/// otherwise: UIDVALIDITY, ACL, special use or quota root. With `sample`, only that many
/// entries spread evenly over the database are compared (the startup check); else all.
/// Returns the folder's view of each entry that differs.
pub fn stale_entries(
    db: &MailboxDb,
    partitions: &BTreeMap<String, PathBuf>,
    sample: Option<usize>,
) -> Vec<msgstore::MailboxEntry> {
    let Ok(all) = db.list_all() else {
        return Vec::new();
    };
    let step = match sample {
        Some(n) if n > 0 && all.len() > n => all.len() / n,
        _ => 1,
    };
    let mut out = Vec::new();
    for e in all.iter().step_by(step) {
        let (Ok(name), Some(p)) = (
            msgstore::MailboxName::parse(&e.name),
            partitions.get(&e.partition),
        ) else {
            continue;
        };
        let dir = msgstore::layout::folder_dir(p, &name);
        if !dir.join(msgstore::folder::META).exists() {
            continue;
        }
        let f = reconstruct::db::entry_from_dir(&name, &e.partition, &dir);
        if f.uidvalidity != e.uidvalidity
            || f.acl != e.acl
            || f.special_use != e.special_use
            || f.quota_root != e.quota_root
        {
            out.push(f);
        }
    }
    out
}

/// The full comparison left for after readiness on a large store: every folder against the
/// database (names, then store.meta); any difference is resynced at once.
pub fn full_check(
    db: &MailboxDb,
    partitions: &BTreeMap<String, PathBuf>,
    servers_started: SystemTime,
) {
    let t = Instant::now();
    let check = reconstruct::db::fix_mailboxes_settled(
        db,
        partitions,
        None,
        None,
        true,
        Some(servers_started),
    );
    let stale = stale_entries(db, partitions, None);
    if check.changes == 0 && stale.is_empty() {
        info!(
            facility = "Store",
            "Full comparison of the mailbox database with the folders done in {} ms: in agreement",
            t.elapsed().as_millis()
        );
        return;
    }
    warn!(
        facility = "Store",
        "Mailbox database and folders disagree: {} difference(s), first: {}",
        check.changes + stale.len(),
        check
            .lines
            .first()
            .cloned()
            .or_else(|| stale.first().map(|f| f.name.clone()))
            .unwrap_or_default()
    );
    let t = Instant::now();
    let r = resync(db, partitions, Some(i64::MAX), Some(servers_started));
    log_resync_done(&r, t.elapsed());
}

/// Folders in the database (0 when it cannot be read: the full check then says why).
fn count_entries(db: &Path) -> u64 {
    crate::periodic::open(db)
        .and_then(|c| c.query_row("SELECT count(*) FROM mailbox", [], |r| r.get::<_, i64>(0)))
        .map_or(0, |n| n.max(0) as u64)
}

/// Compare a sample with the folders: every folder of the users owning `STARTUP_SAMPLE`
/// entries spread evenly over the database, both ways (entries without a directory,
/// directories without an entry). Returns (differences, lines, folders, users).
pub fn sample_agreement(
    db: &MailboxDb,
    partitions: &BTreeMap<String, PathBuf>,
) -> (usize, Vec<String>, usize, usize) {
    use msgstore::folder::{IDX, META};
    let Ok(all) = db.list_all() else {
        return (0, Vec::new(), 0, 0);
    };
    let step = (all.len() / STARTUP_SAMPLE).max(1);
    let mut users = std::collections::BTreeSet::new();
    for e in all.iter().step_by(step) {
        if let Ok(n) = msgstore::MailboxName::parse(&e.name) {
            users.insert((n.user().to_owned(), e.partition.clone()));
        }
    }
    let (mut differences, mut lines, mut folders) = (0, Vec::new(), 0);
    for (user, partition) in &users {
        let (Ok(u), Some(ppath)) = (msgstore::UserName::new(user), partitions.get(partition))
        else {
            continue;
        };
        // Entries of this user without a folder directory.
        if let Ok(entries) = db.list_prefix(&format!("user/{user}/")) {
            for e in entries {
                let Ok(n) = msgstore::MailboxName::parse(&e.name) else {
                    continue;
                };
                let Some(p) = partitions.get(&e.partition) else {
                    continue;
                };
                folders += 1;
                let dir = msgstore::layout::folder_dir(p, &n);
                if !dir.join(IDX).exists() && !dir.join(META).exists() {
                    differences += 1;
                    lines.push(format!("Folder directory missing for {}", e.name));
                }
            }
        }
        // Folder directories of this user without an entry.
        let udir = msgstore::layout::user_dir(ppath, &u);
        let mut walk = |d: &Path| {
            if !(d.join(IDX).exists() || d.join(META).exists()) {
                return;
            }
            if let Some(n) = msgstore::layout::name_from_dir(ppath, d) {
                if matches!(db.get(n.as_str()), Ok(None)) {
                    differences += 1;
                    lines.push(format!("Missing from the mailbox database: {n}"));
                }
            }
        };
        let _ = walk_user(&udir, &mut walk);
    }
    (differences, lines, folders, users.len())
}

/// The folder directories under one user's directory.
fn walk_user(dir: &Path, f: &mut dyn FnMut(&Path)) -> std::io::Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in rd {
        let e = e?;
        if e.file_type()?.is_dir() && e.file_name().to_string_lossy().starts_with('=') {
            f(&e.path());
            walk_user(&e.path(), f)?;
        }
    }
    Ok(())
}

/// What a resync did.
#[derive(Debug, Default)]
pub struct ResyncOutcome {
    pub changes: usize,
    pub failures: usize,
    pub lines: Vec<String>,
}

/// Log the end of a resync: Warning when it made everything good (so it sits next to the
/// seed's lines asking for `reconstruct -m`), Error when something is left.
pub fn log_resync_done(r: &ResyncOutcome, took: Duration) {
    for l in r.lines.iter().rev().take(20) {
        info!(facility = "Store", "resync: {l}");
    }
    let msg = format!(
        "Resync of the mailbox database from the folders done in {} ms: {} change(s), {} problem(s){}",
        took.as_millis(),
        r.changes,
        r.failures,
        if r.failures == 0 {
            "; reconstruct -m is not needed"
        } else {
            "; run reconstruct -m"
        }
    );
    if r.failures == 0 {
        warn!(facility = "Store", "{msg}");
    } else {
        tracing::error!(facility = "Store", "{msg}");
    }
}

/// Bring the database up to date from the folders (`reconstruct -m`, `-q`, `-l`) and the
/// per-user data written out after `since` (seconds since the epoch). With servers running
/// (started at `servers_started`), folders they created are theirs to enter.
pub fn resync(
    db: &MailboxDb,
    partitions: &BTreeMap<String, PathBuf>,
    since: Option<i64>,
    servers_started: Option<SystemTime>,
) -> ResyncOutcome {
    let mut out = ResyncOutcome::default();
    // Folder entries, each change checked again under its folder's lock (servers may be
    // renaming meanwhile).
    let m = crate::resync::sync_folders(db.path(), partitions, servers_started);
    out.changes += m.changes;
    out.failures += m.failures;
    out.lines.extend(m.lines);
    let q = crate::resync::sync_quotas(db.path(), partitions);
    out.changes += q.changes;
    out.failures += q.failures;
    out.lines.extend(q.lines);
    let l = reconstruct::db::fix_rights(db, false);
    out.changes += l.changes;
    out.failures += l.failures;
    out.lines.extend(l.lines);
    match crate::periodic::restore_peruser(db, partitions, since) {
        Ok(n) => out.changes += n,
        Err(e) => {
            out.failures += 1;
            out.lines.push(format!("Cannot restore per-user data: {e}"));
        }
    }
    out
}
