//! The redundant copy of a user's quota limits: `store.quota` in the user's directory,
//! written by `Store::set_quota` after the database, so that a database restored from an
//! older snapshot (or rebuilt from the folders) gets the limits back (stored reads it during
//! recovery). The database is never the only copy of anything.

use std::io;
use std::path::Path;

/// The file's name in a user's directory.
pub const QUOTA_FILE: &str = "store.quota";

/// Limits as the file holds them: None is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub storage: Option<u64>,
    pub messages: Option<u64>,
}

fn value(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// Write the limits of quota root `root` into `user_dir` (atomically, durably).
pub fn write(user_dir: &Path, root: &str, limits: Limits) -> io::Result<()> {
    let text = format!(
        "# quota limits of {root}, kept by the store for recovery\nroot={root}\nstorage={}\nmessages={}\n",
        value(limits.storage),
        value(limits.messages)
    );
    crate::fsutil::write_atomic(&user_dir.join(QUOTA_FILE), text.as_bytes())
}

/// Read the file: the root and its limits; None when absent or not in this form (a damaged
/// file sets nothing rather than a wrong limit).
pub fn read(user_dir: &Path) -> io::Result<Option<(String, Limits)>> {
    let text = match std::fs::read_to_string(user_dir.join(QUOTA_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => return Ok(None),
        Err(e) => return Err(e),
    };
    let (mut root, mut storage, mut messages) = (None, None, None);
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let parse = |v: &str| -> Option<Option<u64>> {
            match v.trim() {
                "-" => Some(None),
                n => n.parse().ok().map(Some),
            }
        };
        match k.trim() {
            "root" if !v.trim().is_empty() => root = Some(v.trim().to_owned()),
            "storage" => storage = parse(v),
            "messages" => messages = parse(v),
            _ => {}
        }
    }
    Ok(match (root, storage, messages) {
        (Some(root), Some(storage), Some(messages)) => Some((root, Limits { storage, messages })),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_round_trip_and_damage_reads_as_nothing() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read(d.path()).unwrap(), None);
        let l = Limits {
            storage: Some(500),
            messages: None,
        };
        write(d.path(), "user/joe", l).unwrap();
        assert_eq!(read(d.path()).unwrap(), Some(("user/joe".to_owned(), l)));
        std::fs::write(
            d.path().join(QUOTA_FILE),
            "root=user/joe\nstorage=5x\nmessages=-\n",
        )
        .unwrap();
        assert_eq!(read(d.path()).unwrap(), None);
        std::fs::write(d.path().join(QUOTA_FILE), [0xff, 0xfe, 0x00]).unwrap();
        assert_eq!(read(d.path()).unwrap(), None);
    }
}
