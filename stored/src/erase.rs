//! Erasing the files of expunged messages once the grace period has passed.
//!
//! An expunge marks the index record and appends `<uid> <time>` to the folder's `store.exp`;
//! the message file stays so that sessions which have not yet seen the expunge can still read
//! it. This pass removes the files whose entry is older than `local.store.expungegrace` and
//! drops those entries from `store.exp`, under the folder's exclusive lock (the lock every
//! writer, expunges included, takes).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use msgstore::folder::{FolderFiles, EXP, IDX, JNL, LCK};
use msgstore::fsutil::{self, FileLock};
use msgstore::layout::{subdirs, user_dirs};

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EraseOutcome {
    pub folders: usize,
    pub erased: usize,
    pub bytes: u64,
    pub pending: usize,
}

/// Every folder directory under a partition (`<h1>/<h2>/=<user>/=<folder>...`), calling `f`.
pub fn each_folder(partition: &Path, f: &mut dyn FnMut(&Path)) -> io::Result<()> {
    fn walk(d: &Path, f: &mut dyn FnMut(&Path)) -> io::Result<()> {
        for sub in subdirs(d)? {
            if sub
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('='))
            {
                f(&sub);
                walk(&sub, f)?;
            }
        }
        Ok(())
    }
    for user in user_dirs(partition)? {
        walk(&user, f)?;
    }
    Ok(())
}

/// Erase what is due in one folder directory.
pub fn erase_folder(dir: &Path, grace_secs: i64, now: i64) -> io::Result<EraseOutcome> {
    let mut out = EraseOutcome::default();
    let exp = dir.join(EXP);
    match std::fs::metadata(&exp) {
        Ok(m) if m.len() > 0 => {}
        _ => return Ok(out),
    }
    let _lock = FileLock::exclusive(&dir.join(LCK))?;
    let text = std::fs::read(&exp)?;
    let files = FolderFiles::new(dir.to_path_buf());
    let mut keep = String::new();
    let mut due = Vec::new();
    for line in String::from_utf8_lossy(&text).lines() {
        let mut it = line.split_whitespace();
        let uid: Option<u32> = it.next().and_then(|v| v.parse().ok());
        let at: Option<i64> = it.next().and_then(|v| v.parse().ok());
        let (Some(uid), Some(at)) = (uid, at) else {
            // Not ours to judge: keep a line we cannot read for reconstruct to report.
            keep.push_str(line);
            keep.push('\n');
            continue;
        };
        if at.saturating_add(grace_secs) > now {
            keep.push_str(line);
            keep.push('\n');
            out.pending += 1;
            continue;
        }
        due.push(uid);
    }
    if !due.is_empty() {
        // With `local.store.fsync = optimized` an expunge is acknowledged before its index
        // update is flushed: flush it before the files go, so that a crash can never leave
        // a live record without its file.
        for f in [IDX, JNL] {
            match std::fs::File::open(dir.join(f)) {
                Ok(file) => file.sync_data()?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    for uid in due {
        let path = files.message(uid);
        match std::fs::metadata(&path) {
            Ok(m) => {
                std::fs::remove_file(&path)?;
                out.bytes += m.len();
                out.erased += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if keep.len() != text.len() {
        fsutil::write_atomic(&exp, keep.as_bytes())?;
    }
    out.folders = 1;
    Ok(out)
}

/// One pass over every partition.
pub fn erase_all(
    partitions: &BTreeMap<String, PathBuf>,
    grace_secs: i64,
) -> (EraseOutcome, Vec<String>) {
    let now = crate::now_secs();
    let mut total = EraseOutcome::default();
    let mut errors = Vec::new();
    for (name, p) in partitions {
        let r = each_folder(p, &mut |dir| match erase_folder(dir, grace_secs, now) {
            Ok(o) => {
                total.folders += o.folders;
                total.erased += o.erased;
                total.bytes += o.bytes;
                total.pending += o.pending;
            }
            Err(e) => errors.push(format!("{}: {e}", dir.display())),
        });
        if let Err(e) = r {
            errors.push(format!("partition {name} ({}): {e}", p.display()));
        }
    }
    (total, errors)
}
