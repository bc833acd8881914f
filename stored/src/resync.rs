//! Bringing the folder entries of the mailbox database up to date from the folders while
//! servers may be running (stored's background resync after a snapshot restore, and the full
//! comparison after readiness): `reconstruct -m` and the store.meta comparison, made safe
//! against a concurrent rename.
//!
//! A rename moves the folder's directory under the folder's lock, then renames its entry in
//! the database. A resync that read the spool and the database before the rename and wrote
//! after it would bring back the old name (a ghost entry) or drop the new one. So every
//! change is decided again at the moment it is written: under the folder's lock (a folder
//! renamed away is no longer where it was read, and its lock file cannot be opened), with the
//! folder's files read again, inside one IMMEDIATE transaction that re-reads the entry (so no
//! other writer commits between the check and the write). A folder directory without an entry
//! next to an entry without a directory, both of the same UIDVALIDITY, is a rename: in flight
//! (the server is about to rename the entry, so it is left to it) or lost with the database
//! (renamed here, once it has held still across a pause).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use msgstore::folder::{IDX, LCK, META};
use msgstore::fsutil::FileLock;
use msgstore::layout;
use msgstore::mboxdb;
use msgstore::{MailboxEntry, MailboxName};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

/// How long a difference seen beside running servers must hold still before the resync acts
/// on it (a rename, an ACL change or a deletion made by a server takes moments).
const SETTLE: Duration = Duration::from_millis(500);

/// What a pass did.
#[derive(Debug, Default)]
pub struct FolderSync {
    pub changes: usize,
    pub failures: usize,
    pub lines: Vec<String>,
    /// Quota roots whose folders were added, removed or moved.
    pub touched_roots: BTreeSet<String>,
}

fn same_fields(a: &MailboxEntry, b: &MailboxEntry) -> bool {
    a.uidvalidity == b.uidvalidity
        && a.acl == b.acl
        && a.special_use == b.special_use
        && a.quota_root == b.quota_root
        && a.owner == b.owner
}

fn read_entry(c: &Connection, name: &str) -> rusqlite::Result<Option<MailboxEntry>> {
    c.query_row(
        &format!("SELECT {} FROM mailbox WHERE name = ?1", mboxdb::ENTRY_COLS),
        [name],
        mboxdb::row_to_entry,
    )
    .optional()
}

/// Write `e` (insert or replace) with its rights-index rows, as `MailboxDb::set_acl` keeps
/// them.
fn write_entry(c: &Connection, e: &MailboxEntry) -> rusqlite::Result<()> {
    c.execute(
        "INSERT OR REPLACE INTO mailbox (name, owner, partition, uidvalidity, specialuse, acl, quotaroot, created)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        rusqlite::params![
            e.name,
            e.owner,
            e.partition,
            e.uidvalidity as i64,
            e.special_use,
            e.acl,
            e.quota_root,
            e.created
        ],
    )?;
    c.execute("DELETE FROM lright WHERE mailbox = ?1", [&e.name])?;
    for line in e.acl.lines() {
        if let Some((ident, rights)) = line.split_once('\t') {
            if ident != e.owner && rights.contains('l') {
                c.execute(
                    "INSERT OR IGNORE INTO lright (identifier, mailbox) VALUES (?1, ?2)",
                    [ident, e.name.as_str()],
                )?;
            }
        }
    }
    Ok(())
}

fn remove_entry(c: &Connection, name: &str) -> rusqlite::Result<()> {
    c.execute("DELETE FROM mailbox WHERE name = ?1", [name])?;
    c.execute("DELETE FROM lright WHERE mailbox = ?1", [name])?;
    Ok(())
}

fn is_folder(dir: &Path) -> bool {
    dir.join(IDX).exists() || dir.join(META).exists()
}

/// Made by a running server (its store.meta written since they started): the server enters
/// it itself, and entering it here could make its creation fail.
fn live(dir: &Path, servers_started: Option<SystemTime>) -> bool {
    servers_started.is_some_and(|started| {
        std::fs::metadata(dir.join(META))
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= started)
    })
}

/// The folder at `dir` as it is now, under its lock; None when it is gone (renamed or
/// deleted since it was read).
fn locked_folder(
    name: &MailboxName,
    partition: &str,
    dir: &Path,
) -> Option<(FileLock, MailboxEntry)> {
    let lock = FileLock::exclusive(&dir.join(LCK)).ok()?;
    if !is_folder(dir) {
        return None;
    }
    Some((lock, reconstruct::db::entry_from_dir(name, partition, dir)))
}

/// One pass over every folder and entry; see the module's header. `servers_started`: the
/// time the other services were allowed to start (None before readiness).
pub fn sync_folders(
    db: &Path,
    partitions: &BTreeMap<String, PathBuf>,
    servers_started: Option<SystemTime>,
) -> FolderSync {
    let mut out = FolderSync::default();
    // synchronous=NORMAL: a commit is not flushed on its own (one fsync per change made a
    // large resync slow); a crash loses at most the last few, which the folders still hold
    // and the next startup's check finds again.
    let c = match crate::periodic::open(db)
        .and_then(|c| c.pragma_update(None, "synchronous", "NORMAL").map(|()| c))
    {
        Ok(c) => c,
        Err(e) => {
            out.failures += 1;
            out.lines
                .push(format!("Could not open the mailbox database: {e}"));
            return out;
        }
    };
    let scan = crate::rebuild::scan(partitions);
    for p in scan.problems {
        out.failures += 1;
        out.lines.push(p);
    }
    let entries: BTreeMap<String, MailboxEntry> = {
        let all = (|| {
            let mut st = c.prepare(
                "SELECT name, owner, partition, uidvalidity, specialuse, acl, quotaroot, created FROM mailbox",
            )?;
            let rows = st.query_map([], |r| {
                Ok(MailboxEntry {
                    name: r.get(0)?,
                    owner: r.get(1)?,
                    partition: r.get(2)?,
                    uidvalidity: r.get::<_, i64>(3)? as u32,
                    special_use: r.get(4)?,
                    acl: r.get(5)?,
                    quota_root: r.get(6)?,
                    created: r.get(7)?,
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })();
        match all {
            Ok(v) => v.into_iter().map(|e| (e.name.clone(), e)).collect(),
            Err(e) => {
                out.failures += 1;
                out.lines
                    .push(format!("Could not read the mailbox database: {e}"));
                return out;
            }
        }
    };
    let on_disk: BTreeMap<&str, &MailboxEntry> = scan
        .folders
        .iter()
        .map(|f| (f.entry.name.as_str(), &f.entry))
        .collect();

    // Entries whose folder is gone, by UIDVALIDITY: the source of a rename if a folder
    // without an entry carries the same one.
    let mut orphans: BTreeMap<u32, Vec<&MailboxEntry>> = BTreeMap::new();
    for e in entries.values() {
        if on_disk.contains_key(e.name.as_str()) {
            continue;
        }
        let (Ok(name), Some(ppath)) = (MailboxName::parse(&e.name), partitions.get(&e.partition))
        else {
            continue;
        };
        if !is_folder(&layout::folder_dir(ppath, &name)) {
            orphans.entry(e.uidvalidity).or_default().push(e);
        }
    }
    let mut renames = Vec::new();
    let mut renamed_from = BTreeSet::new();
    let mut updates = Vec::new();

    for f in &scan.folders {
        let found = &f.entry;
        let (Ok(name), Some(ppath)) = (
            MailboxName::parse(&found.name),
            partitions.get(&found.partition),
        ) else {
            continue;
        };
        let dir = layout::folder_dir(ppath, &name);
        match entries.get(&found.name) {
            Some(e) if e.partition != found.partition => {
                out.lines.push(format!(
                    "Folder directory of {} also found on partition {} ({}); the database keeps partition {}",
                    found.name,
                    found.partition,
                    dir.display(),
                    e.partition
                ));
            }
            Some(e) if same_fields(e, found) => {}
            Some(e) => updates.push((name.clone(), dir.clone(), e)),
            None if live(&dir, servers_started) => {}
            None => {
                if let Some(src) = orphans
                    .get(&found.uidvalidity)
                    .and_then(|v| v.iter().find(|o| !renamed_from.contains(&o.name)))
                {
                    renamed_from.insert(src.name.clone());
                    renames.push(((*src).clone(), name.clone(), dir.clone()));
                    continue;
                }
                insert(&c, &name, &found.partition, &dir, &mut out);
            }
        }
    }

    // Beside running servers, a difference may be a change in flight: a server writes an
    // entry, then its folder's store.meta (an ACL), or moves a folder, then renames its
    // entry. One pause for all of them, then each is decided again as it is written; what
    // still differs was lost with the database.
    let removals: Vec<&MailboxEntry> = orphans
        .values()
        .flatten()
        .filter(|e| !renamed_from.contains(&e.name))
        .copied()
        .collect();
    if servers_started.is_some()
        && !(updates.is_empty() && renames.is_empty() && removals.is_empty())
    {
        std::thread::sleep(SETTLE);
    }
    for (name, dir, seen) in updates {
        update(&c, &name, &dir, seen, &mut out);
    }
    for e in removals {
        remove(&c, e, partitions, &mut out);
    }
    for (src, name, dir) in renames {
        complete_rename(&c, &src, &name, &dir, &mut out);
    }
    out
}

/// An entry that disagrees with its folder's store.meta: the folder's copy wins, unless the
/// entry changed since it was read (a server wrote it: newer than anything here).
fn update(
    c: &Connection,
    name: &MailboxName,
    dir: &Path,
    seen: &MailboxEntry,
    out: &mut FolderSync,
) {
    let Some((_lock, now)) = locked_folder(name, &seen.partition, dir) else {
        return;
    };
    let r = (|| -> rusqlite::Result<bool> {
        let tx = rusqlite::Transaction::new_unchecked(c, TransactionBehavior::Immediate)?;
        let cur = read_entry(&tx, name.as_str())?;
        if cur.as_ref() != Some(seen) || same_fields(seen, &now) {
            return Ok(false);
        }
        write_entry(&tx, &now)?;
        tx.commit()?;
        Ok(true)
    })();
    match r {
        Ok(true) => {
            out.changes += 1;
            out.touched_roots.insert(seen.quota_root.clone());
            out.touched_roots.insert(now.quota_root.clone());
            out.lines.push(format!(
                "Updated {} from its folder (UIDVALIDITY {}, ACL, special use, quota root)",
                now.name, now.uidvalidity
            ));
        }
        Ok(false) => {}
        Err(e) => {
            out.failures += 1;
            out.lines.push(format!("Could not update {name}: {e}"));
        }
    }
}

/// A folder the database lacks: entered if, under its lock, it is still there and still
/// lacks an entry.
fn insert(c: &Connection, name: &MailboxName, partition: &str, dir: &Path, out: &mut FolderSync) {
    let Some((_lock, now)) = locked_folder(name, partition, dir) else {
        return;
    };
    let r = (|| -> rusqlite::Result<bool> {
        let tx = rusqlite::Transaction::new_unchecked(c, TransactionBehavior::Immediate)?;
        if read_entry(&tx, name.as_str())?.is_some() {
            return Ok(false);
        }
        write_entry(&tx, &now)?;
        tx.commit()?;
        Ok(true)
    })();
    match r {
        Ok(true) => {
            out.changes += 1;
            out.touched_roots.insert(now.quota_root.clone());
            out.lines.push(format!(
                "Added to the mailbox database: {name} (partition {partition}, UIDVALIDITY {})",
                now.uidvalidity
            ));
        }
        Ok(false) => {}
        Err(e) => {
            out.failures += 1;
            out.lines
                .push(format!("Could not add {name} to the mailbox database: {e}"));
        }
    }
}

/// An entry whose folder is gone: removed if, inside the transaction, it is still the same
/// entry and its folder is still gone.
fn remove(
    c: &Connection,
    seen: &MailboxEntry,
    partitions: &BTreeMap<String, PathBuf>,
    out: &mut FolderSync,
) {
    let (Ok(name), Some(ppath)) = (
        MailboxName::parse(&seen.name),
        partitions.get(&seen.partition),
    ) else {
        return;
    };
    let dir = layout::folder_dir(ppath, &name);
    let r = (|| -> rusqlite::Result<bool> {
        let tx = rusqlite::Transaction::new_unchecked(c, TransactionBehavior::Immediate)?;
        if read_entry(&tx, &seen.name)?.as_ref() != Some(seen) || is_folder(&dir) {
            return Ok(false);
        }
        remove_entry(&tx, &seen.name)?;
        tx.commit()?;
        Ok(true)
    })();
    match r {
        Ok(true) => {
            out.changes += 1;
            out.touched_roots.insert(seen.quota_root.clone());
            out.lines.push(format!(
                "Removed from the mailbox database: {} (its directory {} is gone)",
                seen.name,
                dir.display()
            ));
        }
        Ok(false) => {}
        Err(e) => {
            out.failures += 1;
            out.lines.push(format!(
                "Could not remove {} from the mailbox database: {e}",
                seen.name
            ));
        }
    }
}

/// The entry `src` whose folder now lives at `dir` as `name`: renamed in the database if
/// nobody did it meanwhile (the source entry unchanged, the target absent, the folder there
/// with the same UIDVALIDITY).
fn complete_rename(
    c: &Connection,
    src: &MailboxEntry,
    name: &MailboxName,
    dir: &Path,
    out: &mut FolderSync,
) {
    let Some((_lock, now)) = locked_folder(name, &src.partition, dir) else {
        return;
    };
    if now.uidvalidity != src.uidvalidity {
        return;
    }
    let r = (|| -> rusqlite::Result<bool> {
        let tx = rusqlite::Transaction::new_unchecked(c, TransactionBehavior::Immediate)?;
        if read_entry(&tx, &src.name)?.as_ref() != Some(src)
            || read_entry(&tx, name.as_str())?.is_some()
        {
            return Ok(false);
        }
        remove_entry(&tx, &src.name)?;
        write_entry(&tx, &now)?;
        tx.execute(
            "UPDATE OR IGNORE subscription SET name = ?2 WHERE name = ?1",
            [src.name.as_str(), name.as_str()],
        )?;
        tx.commit()?;
        Ok(true)
    })();
    match r {
        Ok(true) => {
            out.changes += 1;
            out.touched_roots.insert(src.quota_root.clone());
            out.touched_roots.insert(now.quota_root.clone());
            out.lines.push(format!(
                "Renamed in the mailbox database: {} to {name}, as its folder was (UIDVALIDITY {})",
                src.name, now.uidvalidity
            ));
        }
        Ok(false) => {}
        Err(e) => {
            out.failures += 1;
            out.lines.push(format!(
                "Could not rename {} to {name} in the mailbox database: {e}",
                src.name
            ));
        }
    }
}

/// How long a quota difference must hold still before it is believed (a server records a
/// message's usage just after its folder's header counts it), and how often to look again.
const QUOTA_SETTLE: Duration = Duration::from_millis(100);
const QUOTA_TRIES: u32 = 20;

/// (bytes, messages).
type Usage = (u64, u64);

/// Each quota root's usage from its folders' index headers, read from the entries as they
/// are now; roots with a folder that cannot be read are left out (and named).
fn usage_by_root(
    c: &Connection,
    partitions: &BTreeMap<String, PathBuf>,
    only: Option<&BTreeSet<String>>,
) -> rusqlite::Result<(BTreeMap<String, Usage>, BTreeMap<String, String>)> {
    let mut st = c.prepare("SELECT name, partition, quotaroot FROM mailbox")?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut usage: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut unreadable = BTreeMap::new();
    for row in rows {
        let (name, partition, root) = row?;
        if only.is_some_and(|o| !o.contains(&root)) {
            continue;
        }
        let slot = usage.entry(root.clone()).or_default();
        let (Ok(n), Some(p)) = (MailboxName::parse(&name), partitions.get(&partition)) else {
            unreadable.insert(root, format!("{name} is on unknown partition {partition}"));
            continue;
        };
        let dir = layout::folder_dir(p, &n);
        if !dir.join(IDX).exists() {
            // Never written (no messages), or renamed or deleted since the list was read:
            // looked at again while settling.
            if dir.join(META).exists() {
                continue;
            }
            unreadable.insert(root, format!("the folder of {name} is gone"));
            continue;
        }
        match crate::rebuild::read_header(&dir.join(IDX), &name) {
            Some(h) => {
                slot.0 += h.total_size;
                slot.1 += h.exists;
            }
            None => {
                unreadable.insert(root, format!("cannot read the index of {name}"));
            }
        }
    }
    for r in unreadable.keys() {
        usage.remove(r);
    }
    // Roots with limits but no folder left hold nothing.
    let mut st = c.prepare("SELECT root FROM quota")?;
    for r in st.query_map([], |r| r.get::<_, String>(0))? {
        let r = r?;
        if only.is_none_or(|o| o.contains(&r)) && !unreadable.contains_key(&r) {
            usage.entry(r).or_default();
        }
    }
    Ok((usage, unreadable))
}

fn recorded_usage(c: &Connection, root: &str) -> rusqlite::Result<(u64, u64)> {
    Ok(c.query_row(
        "SELECT storage_used, messages_used FROM quota WHERE root = ?1",
        [root],
        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
    )
    .optional()?
    .map_or((0, 0), |(b, m)| (b.max(0) as u64, m.max(0) as u64)))
}

/// `reconstruct -q` for a resync beside running servers: each root whose recorded usage
/// differs from its folders' is looked at again after a pause (one pause for all of them),
/// and corrected only when the difference held still, and only over the value it was
/// computed against. A folder renamed or deleted meanwhile makes its root be read again.
pub fn sync_quotas(db: &Path, partitions: &BTreeMap<String, PathBuf>) -> FolderSync {
    let mut out = FolderSync::default();
    let r = (|| -> rusqlite::Result<()> {
        let c = crate::periodic::open(db)?;
        let (usage, _) = usage_by_root(&c, partitions, None)?;
        // Per root: (the folders' usage, the recorded usage) when last looked at.
        let mut seen: BTreeMap<String, (Usage, Usage)> = BTreeMap::new();
        for (root, files) in usage {
            let rec = recorded_usage(&c, &root)?;
            if rec != files {
                seen.insert(root, (files, rec));
            }
        }
        let mut tries = 0;
        let mut why: BTreeMap<String, String> = BTreeMap::new();
        while !seen.is_empty() && tries < QUOTA_TRIES {
            tries += 1;
            std::thread::sleep(QUOTA_SETTLE);
            let roots: BTreeSet<String> = seen.keys().cloned().collect();
            let (now, unreadable) = usage_by_root(&c, partitions, Some(&roots))?;
            why = unreadable;
            let mut next = BTreeMap::new();
            for root in roots {
                let before = seen[&root];
                let Some(files) = now.get(&root).copied() else {
                    next.insert(root, before);
                    continue;
                };
                let rec = recorded_usage(&c, &root)?;
                if files == rec {
                    continue;
                }
                if (files, rec) != before {
                    next.insert(root, (files, rec));
                    continue;
                }
                let tx = rusqlite::Transaction::new_unchecked(&c, TransactionBehavior::Immediate)?;
                if recorded_usage(&tx, &root)? != rec {
                    drop(tx);
                    let rec = recorded_usage(&c, &root)?;
                    next.insert(root, (files, rec));
                    continue;
                }
                tx.execute(
                    "INSERT INTO quota (root, storage_used, messages_used) VALUES (?1, ?2, ?3)
                     ON CONFLICT(root) DO UPDATE SET storage_used = ?2, messages_used = ?3",
                    rusqlite::params![root, files.0 as i64, files.1 as i64],
                )?;
                tx.commit()?;
                out.changes += 1;
                out.lines.push(format!(
                    "Quota root {root}: usage was {} bytes in {} messages, now {} bytes in {} messages",
                    rec.0, rec.1, files.0, files.1
                ));
            }
            seen = next;
        }
        for root in seen.keys() {
            out.failures += 1;
            out.lines.push(match why.get(root) {
                Some(w) => format!("Quota root {root}: {w}; usage left alone (run reconstruct -q)"),
                None => format!(
                    "Quota root {root}: usage kept changing while it was checked; run reconstruct -q"
                ),
            });
        }
        Ok(())
    })();
    if let Err(e) = r {
        out.failures += 1;
        out.lines.push(format!("Could not resync quota usage: {e}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (
        tempfile::TempDir,
        msgstore::Store,
        BTreeMap<String, PathBuf>,
    ) {
        let t = tempfile::tempdir().expect("tempdir");
        let store = msgstore::Store::open(t.path()).expect("store");
        let joe = msgstore::UserName::new("joe").expect("user");
        store.provision_user(&joe).expect("provision");
        let old = MailboxName::for_user(&joe, "Old").expect("name");
        store.create_mailbox(&old, None, None).expect("create");
        let partitions = msgstore::StoreConfig::load(&layout::Layout::new(t.path()))
            .expect("config")
            .partitions;
        (t, store, partitions)
    }

    /// A rename half done by a server (its directory moved, its entry not yet renamed): the
    /// resync neither enters the new name (which would make the server's rename of the entry
    /// fail) nor drops the old one; the server finishes, and the database is right.
    #[test]
    fn a_rename_in_flight_is_left_to_its_server() {
        let (_t, store, partitions) = setup();
        let ppath = partitions.values().next().expect("partition");
        let (old, new) = ("user/joe/Old", "user/joe/New");
        let dir = |n: &str| layout::folder_dir(ppath, &MailboxName::parse(n).expect("name"));
        std::thread::sleep(Duration::from_millis(20));
        let started = SystemTime::now();
        std::fs::rename(dir(old), dir(new)).expect("move the directory");
        let db = store.db().path().to_path_buf();
        let parts = partitions.clone();
        let resync = std::thread::spawn(move || sync_folders(&db, &parts, Some(started)));
        std::thread::sleep(Duration::from_millis(150));
        store
            .db()
            .rename_all(&[(old.to_owned(), new.to_owned())], None)
            .expect("the server's rename of the entry");
        let out = resync.join().expect("resync");
        assert_eq!(out.failures, 0, "{:?}", out.lines);
        assert!(store.db().get(old).expect("get").is_none());
        assert!(store.db().get(new).expect("get").is_some());
    }

    /// The same half-done rename with no server to finish it (lost with the database): the
    /// resync completes it, subscriptions included.
    #[test]
    fn a_rename_lost_with_the_database_is_completed() {
        let (_t, store, partitions) = setup();
        let ppath = partitions.values().next().expect("partition");
        let (old, new) = ("user/joe/Old", "user/joe/New");
        let joe = msgstore::UserName::new("joe").expect("user");
        store
            .subscribe(&joe, &MailboxName::parse(old).expect("name"))
            .expect("subscribe");
        let dir = |n: &str| layout::folder_dir(ppath, &MailboxName::parse(n).expect("name"));
        std::fs::rename(dir(old), dir(new)).expect("move the directory");
        let out = sync_folders(store.db().path(), &partitions, None);
        assert_eq!(out.failures, 0, "{:?}", out.lines);
        assert!(
            out.lines
                .iter()
                .any(|l| l.starts_with("Renamed in the mailbox database")),
            "{:?}",
            out.lines
        );
        assert!(store.db().get(old).expect("get").is_none());
        assert!(store.db().get(new).expect("get").is_some());
        let subs = store.subscriptions(&joe).expect("subs");
        assert!(
            subs.iter().any(|s| s == new) && !subs.iter().any(|s| s == old),
            "{subs:?}"
        );
    }
}
