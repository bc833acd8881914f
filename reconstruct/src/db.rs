//! The mailbox database against the spool: `-m` (folder entries), `-q` (quota usage) and
//! `-l` (the rights index).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use msgstore::folder::{peek_header, FolderFiles, IDX, META};
use msgstore::index::Header;
use msgstore::layout;
use msgstore::mboxdb::MailboxDb;
use msgstore::{MailboxEntry, MailboxName, UserName};

/// What a database pass did: lines for stdout, changes (or, with `-n`, changes needed) and
/// problems it could not fix.
#[derive(Debug, Default)]
pub struct DbOutcome {
    pub lines: Vec<String>,
    pub changes: usize,
    pub failures: usize,
}

impl DbOutcome {
    fn fail(&mut self, line: String) {
        self.lines.push(line);
        self.failures += 1;
    }
}

/// Folder directories below `dir` (a directory holding store.idx or store.meta is a folder).
fn walk_folders(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for ent in rd {
        let ent = ent?;
        if !ent.file_type()?.is_dir() {
            continue;
        }
        let p = ent.path();
        let name = ent.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('=') {
            if p.join(IDX).exists() || p.join(META).exists() {
                out.push(p.clone());
            }
            walk_folders(&p, out)?;
        }
    }
    Ok(())
}

fn meta_of(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read(dir.join(META))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// The database entry a folder directory stands for, from its store.meta and index header.
pub fn entry_from_dir(name: &MailboxName, partition: &str, dir: &Path) -> MailboxEntry {
    let meta = meta_of(dir);
    let header = peek_header(&FolderFiles::new(dir.to_path_buf()), name.as_str()).ok();
    entry_from_meta(name, partition, &meta, header.as_ref())
}

/// The database entry for a folder whose store.meta (`key=value` pairs) and index header
/// were already read: store.meta first, the header where it lacks a value, defaults last.
pub fn entry_from_meta(
    name: &MailboxName,
    partition: &str,
    meta: &BTreeMap<String, String>,
    header: Option<&Header>,
) -> MailboxEntry {
    let get = |k: &str| {
        meta.get(k)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let uidvalidity = get("uidvalidity")
        .and_then(|v| v.parse().ok())
        .or(header.map(|h| h.uidvalidity))
        .unwrap_or(1);
    let created = get("created")
        .and_then(|v| v.parse().ok())
        .or(header.map(|h| h.created))
        .unwrap_or(0);
    let owner = get("owner").unwrap_or_else(|| name.user().to_owned());
    let acl = match get("acl") {
        Some(a) => a
            .split(';')
            .filter_map(|p| p.split_once(' '))
            .map(|(i, r)| format!("{i}\t{r}"))
            .collect::<Vec<_>>()
            .join("\n"),
        None => format!("{owner}\t{}", msgstore::Rights::ALL),
    };
    MailboxEntry {
        name: name.to_string(),
        owner,
        partition: partition.to_owned(),
        uidvalidity,
        special_use: get("specialuse"),
        acl,
        quota_root: get("quotaroot").unwrap_or_else(|| format!("user/{}", name.user())),
        created,
    }
}

/// `-m`: add entries for folder directories the database lacks, remove entries whose
/// directory is gone, correct quota roots that disagree with the folder's `store.meta`, then
/// recompute the usage of the quota roots touched.
pub fn fix_mailboxes(
    db: &MailboxDb,
    partitions: &BTreeMap<String, PathBuf>,
    only_partition: Option<&str>,
    only_user: Option<&UserName>,
    check_only: bool,
) -> DbOutcome {
    fix_mailboxes_settled(db, partitions, only_partition, only_user, check_only, None)
}

/// `fix_mailboxes`, leaving alone folder directories whose `store.meta` was written at or
/// after `servers_started`: those were created by running servers, which add their own
/// database entries (a folder's files come before its entry, and adding the entry under its
/// creator would make the creation fail). For a resync while servers run (stored's, after a
/// snapshot restore).
pub fn fix_mailboxes_settled(
    db: &MailboxDb,
    partitions: &BTreeMap<String, PathBuf>,
    only_partition: Option<&str>,
    only_user: Option<&UserName>,
    check_only: bool,
    servers_started: Option<std::time::SystemTime>,
) -> DbOutcome {
    fix_mailboxes_counted(
        db,
        partitions,
        only_partition,
        only_user,
        check_only,
        servers_started,
        None,
    )
}

/// `fix_mailboxes_settled`, counting each folder directory visited in `progress` (against
/// the number of folders in the database, which it sets as the total).
pub fn fix_mailboxes_counted(
    db: &MailboxDb,
    partitions: &BTreeMap<String, PathBuf>,
    only_partition: Option<&str>,
    only_user: Option<&UserName>,
    check_only: bool,
    servers_started: Option<std::time::SystemTime>,
    progress: Option<&crate::progress::Progress>,
) -> DbOutcome {
    let mut out = DbOutcome::default();
    let mut touched_roots = BTreeSet::new();
    let entries = match db.list_all() {
        Ok(e) => e,
        Err(e) => {
            out.fail(format!("Could not read the mailbox database: {e}"));
            return out;
        }
    };
    let known: BTreeMap<&str, &MailboxEntry> =
        entries.iter().map(|e| (e.name.as_str(), e)).collect();
    if let Some(p) = progress {
        p.set_total(entries.len());
    }
    let verb = |done: &str, would: &str| {
        if check_only {
            would.to_owned()
        } else {
            done.to_owned()
        }
    };

    // Directories the database lacks.
    for (pname, ppath) in partitions {
        if only_partition.is_some_and(|p| p != pname) {
            continue;
        }
        let users = match only_user {
            Some(u) => vec![layout::user_dir(ppath, u)],
            None => match layout::user_dirs(ppath) {
                Ok(u) => u,
                Err(e) => {
                    out.fail(format!(
                        "Could not read partition {pname} ({}): {e}",
                        ppath.display()
                    ));
                    continue;
                }
            },
        };
        for udir in users {
            let mut dirs = Vec::new();
            if let Err(e) = walk_folders(&udir, &mut dirs) {
                out.fail(format!("Could not read {}: {e}", udir.display()));
                continue;
            }
            for dir in dirs {
                if let Some(p) = progress {
                    p.folders.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let Some(name) = layout::name_from_dir(ppath, &dir) else {
                    out.fail(format!(
                        "Folder directory {} does not name a valid mailbox; left alone",
                        dir.display()
                    ));
                    continue;
                };
                if layout::folder_dir(ppath, &name) != dir {
                    out.fail(format!(
                        "Folder directory {} is not where {name} belongs (wrong hash directory); left alone",
                        dir.display()
                    ));
                    continue;
                }
                match known.get(name.as_str()) {
                    Some(e) if e.partition == *pname => continue,
                    Some(e) => {
                        out.lines.push(format!(
                            "Folder directory of {name} also found on partition {pname} ({}); the database keeps partition {}",
                            dir.display(),
                            e.partition
                        ));
                        continue;
                    }
                    None => {}
                }
                if let Some(started) = servers_started {
                    let live = std::fs::metadata(dir.join(META))
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| t >= started);
                    if live {
                        continue;
                    }
                }
                let entry = entry_from_dir(&name, pname, &dir);
                out.changes += 1;
                touched_roots.insert(entry.quota_root.clone());
                if !check_only {
                    let r = db
                        .insert(&entry)
                        .and_then(|_| db.set_acl(&entry.name, &entry.owner, &entry.acl));
                    if let Err(e) = r {
                        out.fail(format!("Could not add {name} to the mailbox database: {e}"));
                        continue;
                    }
                }
                out.lines.push(format!(
                    "{} {name} (partition {pname}, UIDVALIDITY {})",
                    verb(
                        "Added to the mailbox database:",
                        "Missing from the mailbox database:"
                    ),
                    entry.uidvalidity
                ));
            }
        }
    }

    // Entries whose directory is gone, and quota roots that disagree with the directory's.
    for e in &entries {
        if only_partition.is_some_and(|p| p != e.partition) {
            continue;
        }
        let Ok(name) = MailboxName::parse(&e.name) else {
            out.fail(format!(
                "Invalid mailbox name in the database: {:?}",
                e.name
            ));
            continue;
        };
        if only_user.is_some_and(|u| u.as_str() != name.user()) {
            continue;
        }
        let Some(ppath) = partitions.get(&e.partition) else {
            out.fail(format!(
                "{} is on partition {}, which msg.conf does not define; left alone",
                e.name, e.partition
            ));
            continue;
        };
        let dir = layout::folder_dir(ppath, &name);
        if dir.join(IDX).exists() || dir.join(META).exists() {
            fix_quota_root(db, e, &dir, check_only, &mut out, &mut touched_roots);
            continue;
        }
        out.changes += 1;
        touched_roots.insert(e.quota_root.clone());
        if !check_only {
            if let Err(err) = db.delete(&e.name) {
                out.fail(format!(
                    "Could not remove {} from the mailbox database: {err}",
                    e.name
                ));
                continue;
            }
        }
        out.lines.push(format!(
            "{} {} (its directory {} is gone)",
            verb(
                "Removed from the mailbox database:",
                "Folder directory missing for"
            ),
            e.name,
            dir.display()
        ));
    }

    if !check_only && !touched_roots.is_empty() {
        let q = fix_quotas(db, partitions, Some(&touched_roots), false);
        out.lines.extend(q.lines);
        out.failures += q.failures;
    }
    out
}

/// A folder whose database entry names another quota root than its `store.meta`: the
/// directory's copy is what the store wrote last (a rename to another user rewrites it),
/// so the database follows it.
fn fix_quota_root(
    db: &MailboxDb,
    e: &MailboxEntry,
    dir: &Path,
    check_only: bool,
    out: &mut DbOutcome,
    touched_roots: &mut BTreeSet<String>,
) {
    let Some(meta_root) = meta_of(dir)
        .get("quotaroot")
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
    else {
        return;
    };
    if meta_root == e.quota_root {
        return;
    }
    if !check_only {
        // Read the entry again: a server may have changed it since the list was taken.
        let r = db.get(&e.name).and_then(|cur| match cur {
            Some(mut cur) if cur.quota_root == e.quota_root => {
                cur.quota_root = meta_root.clone();
                db.upsert(&cur).map(|_| true)
            }
            _ => Ok(false),
        });
        match r {
            Ok(true) => {}
            Ok(false) => return,
            Err(err) => {
                out.fail(format!(
                    "Could not correct the quota root of {} in the mailbox database: {err}",
                    e.name
                ));
                return;
            }
        }
    }
    out.changes += 1;
    touched_roots.insert(e.quota_root.clone());
    touched_roots.insert(meta_root.clone());
    out.lines.push(format!(
        "{} {}: {} in the database, {meta_root} in its store.meta",
        if check_only {
            "Wrong quota root for"
        } else {
            "Corrected the quota root of"
        },
        e.name,
        e.quota_root
    ));
}

/// `-q`: recompute each quota root's usage (messages and bytes) from its folders' index
/// headers and correct the database where it differs. `roots` limits the pass.
/// How long a quota difference must hold still before `-q` believes it, and how often it
/// looks before giving up on a root that keeps changing.
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_millis(100);
const SETTLE_TRIES: u32 = 20;

/// A folder's usage (bytes, messages) from its index header; None when it cannot be read.
fn folder_usage(partition: &Path, name: &MailboxName, label: &str) -> Option<(u64, u64)> {
    let files = FolderFiles::new(layout::folder_dir(partition, name));
    // A torn read (a writer mid-update) fails the CRC: read again.
    for _ in 0..20 {
        match peek_header(&files, label) {
            Ok(h) => return Some((h.total_size, h.exists)),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    }
    None
}

pub fn fix_quotas(
    db: &MailboxDb,
    partitions: &BTreeMap<String, PathBuf>,
    roots: Option<&BTreeSet<String>>,
    check_only: bool,
) -> DbOutcome {
    fix_quotas_counted(db, partitions, roots, check_only, None)
}

/// `fix_quotas`, counting each folder read (and its messages) in `progress`.
pub fn fix_quotas_counted(
    db: &MailboxDb,
    partitions: &BTreeMap<String, PathBuf>,
    roots: Option<&BTreeSet<String>>,
    check_only: bool,
    progress: Option<&crate::progress::Progress>,
) -> DbOutcome {
    let mut out = DbOutcome::default();
    let entries = match db.list_all() {
        Ok(e) => e,
        Err(e) => {
            out.fail(format!("Could not read the mailbox database: {e}"));
            return out;
        }
    };
    let mut usage: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    match db.quota_roots() {
        Ok(r) => {
            for root in r {
                usage.entry(root).or_default();
            }
        }
        Err(e) => {
            out.fail(format!("Could not read quota roots: {e}"));
            return out;
        }
    }
    let mut unreadable = BTreeSet::new();
    if let Some(p) = progress {
        p.set_total(entries.len());
    }
    for e in &entries {
        if let Some(p) = progress {
            p.folders.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let slot = usage.entry(e.quota_root.clone()).or_default();
        let Ok(name) = MailboxName::parse(&e.name) else {
            continue;
        };
        let Some(ppath) = partitions.get(&e.partition) else {
            out.fail(format!(
                "Quota root {}: {} is on unknown partition {}",
                e.quota_root, e.name, e.partition
            ));
            unreadable.insert(e.quota_root.clone());
            continue;
        };
        let header = folder_usage(ppath, &name, &e.name);
        match header {
            Some((bytes, messages)) => {
                slot.0 += bytes;
                slot.1 += messages;
                if let Some(p) = progress {
                    p.messages
                        .fetch_add(messages, std::sync::atomic::Ordering::Relaxed);
                }
            }
            None => {
                out.fail(format!(
                    "Quota root {}: cannot read the index of {} (run reconstruct -r {}); usage left alone",
                    e.quota_root, e.name, e.name
                ));
                unreadable.insert(e.quota_root.clone());
            }
        }
    }
    // What a root's folders hold now, read again while settling.
    let root_usage = |root: &str| -> Option<(u64, u64)> {
        let mut sum = (0, 0);
        for e in entries.iter().filter(|e| e.quota_root == root) {
            let name = MailboxName::parse(&e.name).ok()?;
            let (b, m) = folder_usage(partitions.get(&e.partition)?, &name, &e.name)?;
            sum.0 += b;
            sum.1 += m;
        }
        Some(sum)
    };
    let db_usage = |root: &str| -> Option<(u64, u64)> {
        db.quota(root)
            .ok()
            .map(|q| q.map_or((0, 0), |q| (q.storage_used, q.messages_used)))
    };
    for (root, files) in usage {
        if roots.is_some_and(|r| !r.contains(&root)) || unreadable.contains(&root) {
            continue;
        }
        let Some(recorded) = db_usage(&root) else {
            out.fail(format!("Could not read quota root {root}"));
            continue;
        };
        // Servers record a message's usage in the database just after its folder's header
        // counts it: a difference seen once may be a change in flight. Act only on one that
        // holds still across a pause, and write it only over the value it was computed
        // against.
        let mut seen = (files, recorded);
        let mut tries = 0;
        let settled = loop {
            if seen.0 == seen.1 {
                break None;
            }
            if tries == SETTLE_TRIES {
                out.fail(format!(
                    "Quota root {root}: usage kept changing while it was checked; run reconstruct -q again"
                ));
                break None;
            }
            tries += 1;
            std::thread::sleep(SETTLE_WAIT);
            let (Some(f), Some(d)) = (root_usage(&root), db_usage(&root)) else {
                out.fail(format!(
                    "Quota root {root}: cannot read it again; usage left alone"
                ));
                break None;
            };
            if (f, d) != seen {
                seen = (f, d);
                continue;
            }
            if check_only {
                break Some(seen);
            }
            match db.set_quota_usage_if(&root, d, f.0, f.1) {
                Ok(true) => break Some(seen),
                Ok(false) => continue,
                Err(e) => {
                    out.fail(format!("Could not correct quota root {root}: {e}"));
                    break None;
                }
            }
        };
        let Some(((bytes, msgs), cur)) = settled else {
            continue;
        };
        out.changes += 1;
        out.lines.push(format!(
            "Quota root {root}: usage {} {} bytes in {} messages, {} {bytes} bytes in {msgs} messages",
            if check_only { "recorded as" } else { "was" },
            cur.0,
            cur.1,
            if check_only { "actually" } else { "now" },
        ));
    }
    out
}

/// The rights index the ACLs call for: (identifier, mailbox) for every identifier other than
/// the owner holding the lookup right (what `MailboxDb::set_acl` maintains).
fn expected_rights(entries: &[MailboxEntry]) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for e in entries {
        for line in e.acl.lines() {
            if let Some((ident, rights)) = line.split_once('\t') {
                if ident != e.owner && rights.contains('l') {
                    out.insert((ident.to_owned(), e.name.clone()));
                }
            }
        }
    }
    out
}

/// `-l`: rebuild the rights index from the ACLs, reporting each row added or removed.
pub fn fix_rights(db: &MailboxDb, check_only: bool) -> DbOutcome {
    let mut out = DbOutcome::default();
    let (entries, rows) = match db.list_all().and_then(|e| Ok((e, db.rights_index_rows()?))) {
        Ok(v) => v,
        Err(e) => {
            out.fail(format!("Could not read the mailbox database: {e}"));
            return out;
        }
    };
    let want = expected_rights(&entries);
    let have: BTreeSet<(String, String)> = rows.into_iter().collect();
    for (i, m) in want.difference(&have) {
        out.lines.push(format!(
            "Rights index lacks {i} on {m}{}",
            if check_only { "" } else { ": added" }
        ));
    }
    for (i, m) in have.difference(&want) {
        out.lines.push(format!(
            "Rights index has {i} on {m}, which no ACL grants{}",
            if check_only { "" } else { ": removed" }
        ));
    }
    out.changes = want.symmetric_difference(&have).count();
    if !check_only && out.changes > 0 {
        if let Err(e) = db.rebuild_rights_index() {
            out.fail(format!("Could not rebuild the rights index: {e}"));
        }
    }
    out
}
