//! The flag journal, `store.jnl`: an append-only log beside store.idx of every flag, keyword
//! and expunge change with its modseq. It has two jobs:
//! - other sessions and processes tail it to learn what changed since they last looked,
//!   without rescanning the index;
//! - it is the redundant copy of read state: if store.idx is lost, `reconstruct` replays it and
//!   every message keeps its flags and keywords.
//!
//! Entry: `len u16 | kind u8 | payload[len] | crc32(kind, payload)`. The file is rewritten
//! (compacted) under a new generation when it grows much larger than the state it describes.

use crate::error::{Result, StoreError};

pub const MAGIC: [u8; 8] = *b"MSJNL\x00\x01\x00";
pub const HEADER_SIZE: usize = 32;

const KIND_FLAGS: u8 = 1;
const KIND_KEYWORD: u8 = 2;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// The state of message `uid` after a change (EXPUNGED bit included).
    Flags {
        uid: u32,
        flags: u32,
        modseq: u64,
        keywords: u128,
    },
    /// Keyword slot `slot` is named `name`.
    Keyword { slot: u8, name: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalHeader {
    pub uidvalidity: u32,
    pub generation: u64,
}

impl JournalHeader {
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.uidvalidity.to_le_bytes());
        b[16..24].copy_from_slice(&self.generation.to_le_bytes());
        let crc = crc32fast::hash(&b[..HEADER_SIZE - 4]);
        b[HEADER_SIZE - 4..].copy_from_slice(&crc.to_le_bytes());
        b
    }
    pub fn decode(b: &[u8]) -> Result<JournalHeader> {
        if b.len() < HEADER_SIZE || b[0..8] != MAGIC {
            return Err(StoreError::Corrupt("flag journal header missing".into()));
        }
        let crc = crc32fast::hash(&b[..HEADER_SIZE - 4]);
        let stored = u32::from_le_bytes([b[28], b[29], b[30], b[31]]);
        if crc != stored {
            return Err(StoreError::Corrupt("flag journal header damaged".into()));
        }
        Ok(JournalHeader {
            uidvalidity: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            generation: u64::from_le_bytes([
                b[16], b[17], b[18], b[19], b[20], b[21], b[22], b[23],
            ]),
        })
    }
}

impl Entry {
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        match self {
            Entry::Flags {
                uid,
                flags,
                modseq,
                keywords,
            } => {
                out.extend_from_slice(&32u16.to_le_bytes());
                out.push(KIND_FLAGS);
                out.extend_from_slice(&uid.to_le_bytes());
                out.extend_from_slice(&flags.to_le_bytes());
                out.extend_from_slice(&modseq.to_le_bytes());
                out.extend_from_slice(&keywords.to_le_bytes());
            }
            Entry::Keyword { slot, name } => {
                let n = name.len().min(255);
                out.extend_from_slice(&((n + 1) as u16).to_le_bytes());
                out.push(KIND_KEYWORD);
                out.push(*slot);
                out.extend_from_slice(&name.as_bytes()[..n]);
            }
        }
        let crc = crc32fast::hash(&out[start + 2..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }
}

/// A journal holding only the current state: one entry per keyword and per message with
/// flags (compaction and rebuilds).
pub fn snapshot(
    uidvalidity: u32,
    generation: u64,
    keywords: &[String],
    records: &[crate::index::Record],
) -> Vec<u8> {
    let mut buf = JournalHeader {
        uidvalidity,
        generation,
    }
    .encode()
    .to_vec();
    for (slot, k) in keywords.iter().enumerate() {
        if !k.is_empty() {
            Entry::Keyword {
                slot: slot as u8,
                name: k.clone(),
            }
            .encode_into(&mut buf);
        }
    }
    for r in records {
        if r.flags != 0 || r.keywords != 0 {
            Entry::Flags {
                uid: r.uid,
                flags: r.flags,
                modseq: r.modseq,
                keywords: r.keywords,
            }
            .encode_into(&mut buf);
        }
    }
    buf
}

/// Decode entries from `buf` (which starts at an entry boundary). Returns the entries and how
/// many bytes they took; decoding stops at the first incomplete or damaged entry.
pub fn decode_entries(buf: &[u8]) -> (Vec<Entry>, usize, bool) {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut damaged = false;
    while pos + 3 <= buf.len() {
        let len = u16::from_le_bytes([buf[pos], buf[pos + 1]]) as usize;
        let end = pos + 3 + len + 4;
        if end > buf.len() {
            break;
        }
        let body = &buf[pos + 2..pos + 3 + len];
        let crc = u32::from_le_bytes([buf[end - 4], buf[end - 3], buf[end - 2], buf[end - 1]]);
        if crc32fast::hash(body) != crc {
            damaged = true;
            break;
        }
        let payload = &body[1..];
        let entry = match body[0] {
            KIND_FLAGS if payload.len() == 32 => {
                let g4 = |i: usize| {
                    u32::from_le_bytes([payload[i], payload[i + 1], payload[i + 2], payload[i + 3]])
                };
                let mut m = [0u8; 8];
                m.copy_from_slice(&payload[8..16]);
                let mut k = [0u8; 16];
                k.copy_from_slice(&payload[16..32]);
                Entry::Flags {
                    uid: g4(0),
                    flags: g4(4),
                    modseq: u64::from_le_bytes(m),
                    keywords: u128::from_le_bytes(k),
                }
            }
            KIND_KEYWORD if !payload.is_empty() => Entry::Keyword {
                slot: payload[0],
                name: String::from_utf8_lossy(&payload[1..]).into_owned(),
            },
            _ => {
                damaged = true;
                break;
            }
        };
        out.push(entry);
        pos = end;
    }
    (out, pos, damaged)
}

/// The read state a journal describes: what `reconstruct` restores when store.idx is lost.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayedState {
    pub uidvalidity: u32,
    /// Keyword slot names.
    pub keywords: Vec<String>,
    /// Latest (flags, keywords bitmap, modseq) of every message the journal mentions;
    /// expunged messages carry the EXPUNGED bit.
    pub messages: std::collections::BTreeMap<u32, (u32, u128, u64)>,
    /// The journal ended in a damaged entry (what came before it is still used).
    pub damaged: bool,
}

/// Replay a whole journal file.
pub fn replay(file: &[u8]) -> Result<ReplayedState> {
    let header = JournalHeader::decode(file)?;
    let (entries, _, damaged) = decode_entries(&file[HEADER_SIZE.min(file.len())..]);
    let mut st = ReplayedState {
        uidvalidity: header.uidvalidity,
        damaged,
        ..Default::default()
    };
    for e in entries {
        match e {
            Entry::Flags {
                uid,
                flags,
                modseq,
                keywords,
            } => {
                let slot = st.messages.entry(uid).or_insert((flags, keywords, modseq));
                if modseq >= slot.2 {
                    *slot = (flags, keywords, modseq);
                }
            }
            Entry::Keyword { slot, name } => {
                let i = slot as usize;
                if st.keywords.len() <= i {
                    st.keywords.resize(i + 1, String::new());
                }
                st.keywords[i] = name;
            }
        }
    }
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_stop_at_damage() {
        let mut b = Vec::new();
        let a = Entry::Flags {
            uid: 3,
            flags: 1,
            modseq: 9,
            keywords: 5,
        };
        let k = Entry::Keyword {
            slot: 2,
            name: "$Forwarded".into(),
        };
        a.encode_into(&mut b);
        k.encode_into(&mut b);
        let full = b.len();
        let (e, used, damaged) = decode_entries(&b);
        assert_eq!(e, vec![a.clone(), k]);
        assert_eq!(used, full);
        assert!(!damaged);
        // A torn tail is ignored.
        let (e, used, _) = decode_entries(&b[..full - 3]);
        assert_eq!(e, vec![a]);
        assert!(used < full);
        // A flipped byte stops decoding.
        b[5] ^= 1;
        let (e, _, damaged) = decode_entries(&b);
        assert!(e.is_empty());
        assert!(damaged);
    }
}
