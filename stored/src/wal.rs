//! The database's write-ahead log (`mboxlist.db-wal`), read without SQLite.
//!
//! SQLite silently treats a log whose header fails its checksum as empty, losing every
//! transaction in it; stored checks the header first so that such a loss is reported (in the
//! seed's words) and made good from the folders instead of passing unnoticed. Frames are
//! walked too, to say how many committed transactions the log holds.

use std::io::{self, Read};
use std::path::Path;

const HEADER: usize = 32;
const FRAME_HEADER: usize = 24;

/// What the log file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalState {
    /// No log file, or an empty one.
    Absent,
    /// A valid header; `frames` valid frames, `commits` of them ending a transaction.
    Valid {
        bytes: u64,
        frames: u64,
        commits: u64,
    },
    /// The header is damaged: SQLite would ignore the whole log.
    Damaged { bytes: u64, reason: String },
}

fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// SQLite's WAL checksum (walChecksumBytes): two running sums over 32-bit words.
fn checksum(data: &[u8], big_endian: bool, mut s: (u32, u32)) -> (u32, u32) {
    for w in data.chunks_exact(8) {
        let (x0, x1) = if big_endian {
            (be32(w, 0), be32(w, 4))
        } else {
            (
                u32::from_le_bytes([w[0], w[1], w[2], w[3]]),
                u32::from_le_bytes([w[4], w[5], w[6], w[7]]),
            )
        };
        s.0 = s.0.wrapping_add(x0).wrapping_add(s.1);
        s.1 = s.1.wrapping_add(x1).wrapping_add(s.0);
    }
    s
}

/// Analyse the log at `path`.
pub fn analyse(path: &Path) -> io::Result<WalState> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(WalState::Absent),
        Err(e) => return Err(e),
    };
    let bytes = f.metadata()?.len();
    if bytes == 0 {
        return Ok(WalState::Absent);
    }
    let damaged = |reason: &str| {
        Ok(WalState::Damaged {
            bytes,
            reason: reason.to_owned(),
        })
    };
    if bytes < HEADER as u64 {
        return damaged("shorter than its header");
    }
    let mut h = [0u8; HEADER];
    f.read_exact(&mut h)?;
    let magic = be32(&h, 0);
    if magic & !1 != 0x377f_0682 {
        return damaged("bad magic number");
    }
    let big_endian = magic & 1 == 1;
    if be32(&h, 4) != 3_007_000 {
        return damaged("unknown format version");
    }
    let page_size = match be32(&h, 8) {
        1 => 65536,
        n if (512..=32768).contains(&n) && n.is_power_of_two() => n as usize,
        _ => return damaged("invalid page size"),
    };
    let sum = checksum(&h[..24], big_endian, (0, 0));
    if sum != (be32(&h, 24), be32(&h, 28)) {
        return damaged("header checksum mismatch");
    }
    let (salt1, salt2) = (be32(&h, 16), be32(&h, 20));
    let mut running = sum;
    let mut frames = 0;
    let mut commits = 0;
    let mut frame = vec![0u8; FRAME_HEADER + page_size];
    // Valid frames form a prefix; what follows (a torn write, frames of an earlier cycle)
    // SQLite ignores, and so do we.
    while f.read_exact(&mut frame).is_ok() {
        if be32(&frame, 8) != salt1 || be32(&frame, 12) != salt2 {
            break;
        }
        let s = checksum(&frame[..8], big_endian, running);
        let s = checksum(&frame[FRAME_HEADER..], big_endian, s);
        if s != (be32(&frame, 16), be32(&frame, 20)) {
            break;
        }
        running = s;
        frames += 1;
        if be32(&frame, 4) != 0 {
            commits += 1;
        }
    }
    Ok(WalState::Valid {
        bytes,
        frames,
        commits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_log_is_valid_and_a_damaged_header_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let c = rusqlite::Connection::open(&db).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1); INSERT INTO t VALUES (2);")
            .unwrap();
        let wal = dir.path().join("t.db-wal");
        match analyse(&wal).unwrap() {
            WalState::Valid {
                frames, commits, ..
            } => {
                assert!(frames >= 3, "{frames}");
                assert_eq!(commits, 3);
            }
            other => panic!("{other:?}"),
        }
        let mut b = std::fs::read(&wal).unwrap();
        b[25] ^= 0xff;
        std::fs::write(&wal, &b).unwrap();
        assert!(matches!(analyse(&wal).unwrap(), WalState::Damaged { .. }));
        std::mem::forget(c); // closing would checkpoint and delete the log under test
        assert_eq!(analyse(&dir.path().join("none")).unwrap(), WalState::Absent);
    }
}
