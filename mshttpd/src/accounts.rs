//! Files mshttpd keeps per user outside the message store (uploads under
//! `data/http/uploads/<user>/`, the EmailSubmission journal `data/http/submissions/<user>.jsonl`)
//! go when the user does: `msuser delete` only edits `config/passwd`, so the server removes
//! the files of accounts that are no longer there, at start and whenever the file changes
//! (checked every `--account-check-secs`). Otherwise an account created again under the same
//! name would find the old account's uploads and submissions.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

use crate::jmap::blob::user_dir_name;

const JOURNAL: &str = ".jsonl";
const JOURNAL_TMP: &str = ".jsonl.tmp";

fn uploads_dir(root: &Path) -> PathBuf {
    root.join("data").join("http").join("uploads")
}

fn submissions_dir(root: &Path) -> PathBuf {
    root.join("data").join("http").join("submissions")
}

fn passwd(root: &Path) -> PathBuf {
    root.join("config").join("passwd")
}

fn remove_if_there(path: &Path, dir: bool) -> io::Result<bool> {
    let r = if dir {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes everything mshttpd keeps for `user` outside the store (a no-op when there is
/// nothing). For tools that delete users and want the files gone at once.
pub fn remove_user_files(root: &Path, user: &str) -> io::Result<()> {
    let name = user_dir_name(user);
    remove_if_there(&uploads_dir(root).join(&name), true)?;
    let subs = submissions_dir(root);
    remove_if_there(&subs.join(format!("{name}{JOURNAL}")), false)?;
    remove_if_there(&subs.join(format!("{name}{JOURNAL_TMP}")), false)?;
    Ok(())
}

/// The user directory name an entry of the uploads or submissions directory belongs to.
fn owner(entry: &str, journal: bool) -> Option<&str> {
    if journal {
        entry
            .strip_suffix(JOURNAL_TMP)
            .or_else(|| entry.strip_suffix(JOURNAL))
    } else {
        Some(entry)
    }
}

/// Removes the per-user files of every account no longer in `config/passwd`; returns how
/// many files or directories went. Without a readable user file nothing is removed (a
/// missing file must not read as "every user was deleted").
pub fn reap_deleted_users(root: &Path) -> io::Result<usize> {
    let path = passwd(root);
    if !path.is_file() {
        return Ok(0);
    }
    let db = userdb::UserDb::open(&path).map_err(io::Error::other)?;
    let live: HashSet<String> = db
        .list()
        .map_err(io::Error::other)?
        .iter()
        .map(|u| user_dir_name(u.as_str()))
        .collect();
    let mut removed = 0;
    for (dir, journal) in [(uploads_dir(root), false), (submissions_dir(root), true)] {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(owner) = owner(&name, journal) else {
                continue;
            };
            if live.contains(owner) {
                continue;
            }
            // Asked again just before removing: a user added since the list was read keeps
            // what it has made meanwhile.
            if db
                .list()
                .map_err(io::Error::other)?
                .iter()
                .any(|u| user_dir_name(u.as_str()) == owner)
            {
                continue;
            }
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if remove_if_there(&e.path(), is_dir)? {
                tracing::info!("removed {} of a deleted account", e.path().display());
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// What identifies a version of the user file: reaping is needed only when it changes.
pub(crate) fn passwd_stamp(root: &Path) -> Option<(std::time::SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(passwd(root)).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// Reaps at start and then whenever the user file changes, checking every `every`.
pub async fn watch_deleted_users(root: PathBuf, every: std::time::Duration) {
    let mut last = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let stamp = passwd_stamp(&root);
        if stamp.is_none() || stamp == last {
            continue;
        }
        let r = root.clone();
        match tokio::task::spawn_blocking(move || reap_deleted_users(&r)).await {
            Ok(Ok(_)) => last = stamp,
            Ok(Err(e)) => tracing::warn!("files of deleted accounts: {e}"),
            Err(e) => tracing::warn!("files of deleted accounts: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_names_map_to_their_owner() {
        assert_eq!(owner("joe.jsonl", true), Some("joe"));
        assert_eq!(owner("joe.jsonl.tmp", true), Some("joe"));
        assert_eq!(owner("notes.txt", true), None);
        assert_eq!(owner("joe", false), Some("joe"));
    }

    #[test]
    fn files_of_users_not_in_passwd_go_and_others_stay() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("config")).unwrap();
        // Without a user file nothing is taken for deleted.
        std::fs::create_dir_all(uploads_dir(root).join("joe")).unwrap();
        assert_eq!(reap_deleted_users(root).unwrap(), 0);
        let db = userdb::UserDb::open_with(
            passwd(root),
            userdb::HashParams {
                m_cost: 64,
                t_cost: 1,
                p_cost: 1,
            },
        )
        .unwrap();
        db.add("joe", &userdb::Secret::new("pw".into())).unwrap();
        db.add("bob", &userdb::Secret::new("pw".into())).unwrap();
        for u in ["joe", "bob"] {
            std::fs::create_dir_all(uploads_dir(root).join(u)).unwrap();
            std::fs::write(uploads_dir(root).join(u).join("t"), "x").unwrap();
        }
        std::fs::create_dir_all(submissions_dir(root)).unwrap();
        for f in ["joe.jsonl", "bob.jsonl", "bob.jsonl.tmp"] {
            std::fs::write(submissions_dir(root).join(f), "{}\n").unwrap();
        }
        assert_eq!(reap_deleted_users(root).unwrap(), 0);
        db.delete("bob").unwrap();
        assert_eq!(reap_deleted_users(root).unwrap(), 3);
        assert!(uploads_dir(root).join("joe/t").exists());
        assert!(submissions_dir(root).join("joe.jsonl").exists());
        assert!(!uploads_dir(root).join("bob").exists());
        assert!(!submissions_dir(root).join("bob.jsonl").exists());
        assert!(!submissions_dir(root).join("bob.jsonl.tmp").exists());
        remove_user_files(root, "joe").unwrap();
        assert!(!uploads_dir(root).join("joe").exists());
        assert!(!submissions_dir(root).join("joe.jsonl").exists());
        remove_user_files(root, "nobody").unwrap();
    }
}
