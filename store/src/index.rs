//! The folder index, `store.idx`: a fixed header, a keyword table, then one fixed-size,
//! checksummed record per message in UID order. All offsets are 64-bit: a folder of ten
//! million messages is an 800 MB index and nothing more.
//!
//! ```text
//! 0      header (256 bytes, CRC32 in its last 4 bytes)
//! 256    keyword table: 128 slots x 64 bytes (length, name, CRC32)
//! 8448   records: 80 bytes each (see `Record`)
//! ```
//! Records are updated in place (flags, modseq) and marked EXPUNGED rather than removed;
//! compaction rewrites the file under a new generation number.

use crate::error::{Result, StoreError};

pub const MAGIC: [u8; 8] = *b"MSIDX\x00\x01\x00";
pub const VERSION: u32 = 1;
pub const HEADER_SIZE: usize = 256;
pub const KEYWORD_SLOTS: usize = 128;
pub const KEYWORD_SLOT_SIZE: usize = 64;
pub const MAX_KEYWORD_LEN: usize = KEYWORD_SLOT_SIZE - 5;
pub const KEYWORDS_OFFSET: u64 = HEADER_SIZE as u64;
pub const RECORDS_OFFSET: u64 = (HEADER_SIZE + KEYWORD_SLOTS * KEYWORD_SLOT_SIZE) as u64;
pub const RECORD_SIZE: usize = 80;

/// System flags as bits of `Record::flags`.
pub mod flag {
    pub const SEEN: u32 = 1;
    pub const ANSWERED: u32 = 1 << 1;
    pub const FLAGGED: u32 = 1 << 2;
    pub const DELETED: u32 = 1 << 3;
    pub const DRAFT: u32 = 1 << 4;
    /// Every bit a client may set.
    pub const USER_MASK: u32 = SEEN | ANSWERED | FLAGGED | DELETED | DRAFT;
    /// The record is expunged; its file waits for stored's cleanup (see store.exp).
    pub const EXPUNGED: u32 = 1 << 31;
}

/// The folder header: counters kept up to date by every writer under the folder lock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub uidvalidity: u32,
    pub uidnext: u32,
    /// Highest UID any session has been told about as \Recent.
    pub recent_uid: u32,
    pub highest_modseq: u64,
    /// Records in the file, expunged ones included.
    pub record_count: u64,
    /// Live (not expunged) messages.
    pub exists: u64,
    pub unseen: u64,
    pub deleted: u64,
    /// Bytes of live messages.
    pub total_size: u64,
    /// Bumped whenever the file is rewritten; readers then reload from scratch.
    pub generation: u64,
    pub created: i64,
    /// Expunged records not yet compacted away.
    pub expunged_records: u64,
    /// Every message with a UID below this has its data and directory entry on stable
    /// storage. Records at or above it may have reached the disk before their message's data
    /// (the group commit flushes both in one round), so after a power loss they are checked
    /// against their files' content CRC. 0 in indexes written before this existed.
    pub durable_uid: u32,
    /// The boot (see `fsutil::boot_id`) of the last writer; all zero in indexes written before
    /// this existed, whose appends flushed each message before recording it. A different boot
    /// means the machine restarted since, and records from `durable_uid` on are checked.
    pub boot_id: [u8; 16],
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}
fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}
fn get_u128(b: &[u8], at: usize) -> u128 {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    u128::from_le_bytes(a)
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
        b[16..20].copy_from_slice(&(RECORD_SIZE as u32).to_le_bytes());
        b[20..24].copy_from_slice(&self.uidvalidity.to_le_bytes());
        b[24..28].copy_from_slice(&self.uidnext.to_le_bytes());
        b[28..32].copy_from_slice(&self.recent_uid.to_le_bytes());
        b[32..40].copy_from_slice(&self.highest_modseq.to_le_bytes());
        b[40..48].copy_from_slice(&self.record_count.to_le_bytes());
        b[48..56].copy_from_slice(&self.exists.to_le_bytes());
        b[56..64].copy_from_slice(&self.unseen.to_le_bytes());
        b[64..72].copy_from_slice(&self.deleted.to_le_bytes());
        b[72..80].copy_from_slice(&self.total_size.to_le_bytes());
        b[80..88].copy_from_slice(&self.generation.to_le_bytes());
        b[88..96].copy_from_slice(&self.created.to_le_bytes());
        b[96..104].copy_from_slice(&self.expunged_records.to_le_bytes());
        b[104..108].copy_from_slice(&self.durable_uid.to_le_bytes());
        b[108..124].copy_from_slice(&self.boot_id);
        let crc = crc32fast::hash(&b[..HEADER_SIZE - 4]);
        b[HEADER_SIZE - 4..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decode and verify; `name` is only for the error message.
    pub fn decode(b: &[u8], name: &str) -> Result<Header> {
        if b.len() < HEADER_SIZE || b[0..8] != MAGIC {
            return Err(StoreError::Corrupt(format!(
                "Mailbox corrupted, missing fixed headers: {name}"
            )));
        }
        let crc = crc32fast::hash(&b[..HEADER_SIZE - 4]);
        if crc != get_u32(b, HEADER_SIZE - 4)
            || get_u32(b, 8) != VERSION
            || get_u32(b, 16) as usize != RECORD_SIZE
        {
            return Err(StoreError::Corrupt(format!(
                "Mailbox corrupted, missing fixed headers: {name}"
            )));
        }
        Ok(Header {
            uidvalidity: get_u32(b, 20),
            uidnext: get_u32(b, 24),
            recent_uid: get_u32(b, 28),
            highest_modseq: get_u64(b, 32),
            record_count: get_u64(b, 40),
            exists: get_u64(b, 48),
            unseen: get_u64(b, 56),
            deleted: get_u64(b, 64),
            total_size: get_u64(b, 72),
            generation: get_u64(b, 80),
            created: get_i64(b, 88),
            expunged_records: get_u64(b, 96),
            durable_uid: get_u32(b, 104),
            boot_id: {
                let mut id = [0u8; 16];
                id.copy_from_slice(&b[108..124]);
                id
            },
        })
    }
}

fn get_i64(b: &[u8], at: usize) -> i64 {
    get_u64(b, at) as i64
}

/// One message's entry in store.idx.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub uid: u32,
    pub flags: u32,
    /// IMAP internal date, Unix seconds.
    pub internal_date: i64,
    /// RFC 822 size in bytes (the stored, CRLF-normalised file).
    pub size: u64,
    pub modseq: u64,
    /// Bit i set = keyword slot i.
    pub keywords: u128,
    /// Where the parsed structure lives in store.cache.
    pub cache_offset: u64,
    pub cache_len: u32,
    /// When the message was saved into this folder (RFC 8514 SAVEDATE), Unix seconds.
    pub save_date: i64,
    /// CRC32 of the message file as delivered, for `reconstruct`'s content check. 0: not
    /// recorded (records written before it existed, in bytes 60..64 that were zero).
    pub content_crc: u32,
}

impl Record {
    pub fn is_expunged(&self) -> bool {
        self.flags & flag::EXPUNGED != 0
    }

    pub fn encode(&self) -> [u8; RECORD_SIZE] {
        let mut b = [0u8; RECORD_SIZE];
        b[0..4].copy_from_slice(&self.uid.to_le_bytes());
        b[4..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..16].copy_from_slice(&self.internal_date.to_le_bytes());
        b[16..24].copy_from_slice(&self.size.to_le_bytes());
        b[24..32].copy_from_slice(&self.modseq.to_le_bytes());
        b[32..48].copy_from_slice(&self.keywords.to_le_bytes());
        b[48..56].copy_from_slice(&self.cache_offset.to_le_bytes());
        b[56..60].copy_from_slice(&self.cache_len.to_le_bytes());
        b[60..64].copy_from_slice(&self.content_crc.to_le_bytes());
        b[64..72].copy_from_slice(&self.save_date.to_le_bytes());
        let crc = crc32fast::hash(&b[..RECORD_SIZE - 4]);
        b[RECORD_SIZE - 4..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decode and verify the checksum. `None` means the record is damaged.
    pub fn decode(b: &[u8]) -> Option<Record> {
        if b.len() < RECORD_SIZE {
            return None;
        }
        let crc = crc32fast::hash(&b[..RECORD_SIZE - 4]);
        if crc != get_u32(b, RECORD_SIZE - 4) {
            return None;
        }
        let r = Record {
            uid: get_u32(b, 0),
            flags: get_u32(b, 4),
            internal_date: get_i64(b, 8),
            size: get_u64(b, 16),
            modseq: get_u64(b, 24),
            keywords: get_u128(b, 32),
            cache_offset: get_u64(b, 48),
            cache_len: get_u32(b, 56),
            save_date: get_i64(b, 64),
            content_crc: get_u32(b, 60),
        };
        if r.uid == 0 {
            return None;
        }
        Some(r)
    }
}

/// Byte offset of record number `n` in store.idx.
pub fn record_offset(n: u64) -> u64 {
    RECORDS_OFFSET + n * RECORD_SIZE as u64
}

/// Encode one keyword slot (empty name = free slot).
pub fn encode_keyword(name: &str) -> [u8; KEYWORD_SLOT_SIZE] {
    let mut b = [0u8; KEYWORD_SLOT_SIZE];
    let bytes = name.as_bytes();
    let n = bytes.len().min(MAX_KEYWORD_LEN);
    b[0] = n as u8;
    b[1..1 + n].copy_from_slice(&bytes[..n]);
    let crc = crc32fast::hash(&b[..KEYWORD_SLOT_SIZE - 4]);
    b[KEYWORD_SLOT_SIZE - 4..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Decode the whole keyword table. A damaged slot is an error: names are what flags mean.
pub fn decode_keywords(b: &[u8], name: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for slot in b.chunks_exact(KEYWORD_SLOT_SIZE).take(KEYWORD_SLOTS) {
        let crc = crc32fast::hash(&slot[..KEYWORD_SLOT_SIZE - 4]);
        if crc != get_u32(slot, KEYWORD_SLOT_SIZE - 4) {
            if slot.iter().all(|&x| x == 0) {
                out.push(String::new());
                continue;
            }
            return Err(StoreError::Corrupt(format!(
                "Mailbox corrupted, missing fixed headers: {name}"
            )));
        }
        let n = (slot[0] as usize).min(MAX_KEYWORD_LEN);
        out.push(String::from_utf8_lossy(&slot[1..1 + n]).into_owned());
    }
    // Trailing free slots are not interesting.
    while out.last().is_some_and(|s| s.is_empty()) {
        out.pop();
    }
    Ok(out)
}

/// A whole store.idx image: header, keyword table, records (compaction and rebuilds).
pub fn encode_file(header: &Header, keywords: &[String], records: &[Record]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(record_offset(records.len() as u64) as usize);
    buf.extend_from_slice(&header.encode());
    for k in 0..KEYWORD_SLOTS {
        buf.extend_from_slice(&encode_keyword(
            keywords.get(k).map(String::as_str).unwrap_or(""),
        ));
    }
    for r in records {
        buf.extend_from_slice(&r.encode());
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_detects_damage() {
        let h = Header {
            uidvalidity: 7,
            uidnext: 42,
            highest_modseq: 99,
            record_count: 41,
            exists: 40,
            durable_uid: 17,
            boot_id: [9; 16],
            ..Default::default()
        };
        let mut b = h.encode();
        assert_eq!(Header::decode(&b, "x").unwrap(), h);
        b[30] ^= 1;
        assert!(Header::decode(&b, "x").is_err());
    }

    #[test]
    fn record_round_trips_and_detects_damage() {
        let r = Record {
            uid: 5,
            flags: flag::SEEN,
            size: 1234,
            keywords: 1 << 100,
            content_crc: 0xdead_beef,
            ..Default::default()
        };
        let mut b = r.encode();
        assert_eq!(Record::decode(&b), Some(r));
        b[17] ^= 0x40;
        assert_eq!(Record::decode(&b), None);
        assert_eq!(Record::decode(&[0u8; RECORD_SIZE]), None);
    }
}
