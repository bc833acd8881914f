//! Where things live under the instance root. Only the engine and the repair tools use this;
//! `store-client` never hands a path to a front end.
//!
//! ```text
//! <root>/config/msg.conf, passwd
//! <root>/data/store/mboxlist/            mailbox database (+ removed/)
//! <root>/data/store/dbdata/snapshots/    database snapshots
//! <root>/data/store/partition/primary/   spool: <h1>/<h2>/=<user>/=<folder>/=<sub>/...
//! <root>/data/telemetry/, <root>/data/log/
//! ```

use std::path::{Path, PathBuf};

use crate::names::{MailboxName, UserName};

#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }
    pub fn config_dir(&self) -> PathBuf {
        self.root.join("config")
    }
    pub fn config_file(&self) -> PathBuf {
        self.config_dir().join("msg.conf")
    }
    pub fn passwd_file(&self) -> PathBuf {
        self.config_dir().join("passwd")
    }
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }
    pub fn store_dir(&self) -> PathBuf {
        self.data_dir().join("store")
    }
    pub fn mboxlist_dir(&self) -> PathBuf {
        self.store_dir().join("mboxlist")
    }
    pub fn default_partition_dir(&self, name: &str) -> PathBuf {
        self.store_dir().join("partition").join(name)
    }
    pub fn log_dir(&self) -> PathBuf {
        self.data_dir().join("log")
    }
    pub fn telemetry_dir(&self) -> PathBuf {
        self.data_dir().join("telemetry")
    }
}

/// The two hash levels of a user's directory: spreads users over 65,536 directories.
pub fn user_hash(user: &str) -> (u8, u8) {
    let h = crc32fast::hash(user.as_bytes());
    ((h >> 8) as u8, h as u8)
}

/// `<partition>/<h1>/<h2>/=<user>`
pub fn user_dir(partition: &Path, user: &UserName) -> PathBuf {
    let (a, b) = user_hash(user.as_str());
    partition
        .join(format!("{a:02x}"))
        .join(format!("{b:02x}"))
        .join(format!("={}", user.as_str()))
}

/// `<user dir>/=<comp>/=<comp>...`: the `=` keeps folder directories apart from the
/// message buckets (hex names) and the store.* files inside a folder's directory.
pub fn folder_dir(partition: &Path, name: &MailboxName) -> PathBuf {
    let mut p = user_dir(partition, &name.user_name());
    for c in name.components() {
        p.push(format!("={c}"));
    }
    p
}

/// The mailbox name a folder directory stands for, from its path below the partition
/// (the inverse of `folder_dir`), for rebuilding the database from the spool.
pub fn name_from_dir(partition: &Path, dir: &Path) -> Option<MailboxName> {
    let rel = dir.strip_prefix(partition).ok()?;
    let mut comps = rel.components().map(|c| c.as_os_str().to_str());
    let _h1 = comps.next()??;
    let _h2 = comps.next()??;
    let user = comps.next()??.strip_prefix('=')?;
    let mut folder = Vec::new();
    for c in comps {
        folder.push(c?.strip_prefix('=')?);
    }
    if folder.is_empty() {
        return None;
    }
    let user = UserName::new(user).ok()?;
    MailboxName::for_user(&user, &folder.join("/")).ok()
}

/// The subdirectories of `d` (none when `d` does not exist).
pub fn subdirs(d: &Path) -> std::io::Result<Vec<PathBuf>> {
    let rd = match std::fs::read_dir(d) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut v = Vec::new();
    for e in rd {
        let e = e?;
        if e.file_type()?.is_dir() {
            v.push(e.path());
        }
    }
    Ok(v)
}

/// The user directories of a partition (`<h1>/<h2>/=<user>`), for the tools that walk it.
pub fn user_dirs(partition: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for h1 in subdirs(partition)? {
        for h2 in subdirs(&h1)? {
            for u in subdirs(&h2)? {
                if u.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('='))
                {
                    out.push(u);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_dirs_round_trip() {
        let part = Path::new("/x/partition/primary");
        let n = MailboxName::parse("user/joe/Work/2026").unwrap();
        let d = folder_dir(part, &n);
        assert!(d.ends_with("=joe/=Work/=2026"));
        assert_eq!(name_from_dir(part, &d).unwrap(), n);
    }
}
