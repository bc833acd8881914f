//! Preparing a message for the store: line endings normalised to CRLF, the structure parsed
//! once, the bytes written to a temporary file before the folder lock is taken. A message of
//! up to `wal::MAX_MESSAGE` keeps its bytes for the folder's message log (the commit round
//! flushes the log, a checkpoint the file); a larger one has its writeback started and is
//! flushed later by its writer, by descriptor, while the round flushes its directory entry
//! and index record.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use message_structure::MessageStructure;

use crate::error::{IoContext, Result, StoreError};

/// Convert bare LF (and a lone trailing CR) to CRLF. Returns the input unchanged (borrowed)
/// when it already uses CRLF throughout.
pub fn normalize_crlf(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    // Blocks of 32 bytes without CR or LF (most of a message) are passed over whole: the
    // test has no early exit, so the compiler checks a block at once.
    const BLOCK: usize = 32;
    let bare = |i: usize| match raw[i] {
        b'\n' => i == 0 || raw[i - 1] != b'\r',
        b'\r' => raw.get(i + 1) != Some(&b'\n'),
        _ => false,
    };
    let mut needs = false;
    let mut at = 0;
    while at < raw.len() && !needs {
        let end = (at + BLOCK).min(raw.len());
        let block = &raw[at..end];
        let quiet = <&[u8; BLOCK]>::try_from(block).is_ok_and(|b| {
            b.iter()
                .fold(0u8, |a, &c| a | (c == b'\r') as u8 | (c == b'\n') as u8)
                == 0
        });
        if !quiet {
            needs = (at..end).any(bare);
        }
        at = end;
    }
    if !needs {
        return std::borrow::Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32 + 2);
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        match b {
            b'\r' if raw.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
                continue;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            _ => out.push(b),
        }
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

/// A message written to a temporary file in its destination folder, with its parsed
/// structure serialised, waiting to be given a UID.
pub struct PreparedMessage {
    pub(crate) tmp: PathBuf,
    pub(crate) size: u64,
    pub(crate) internal_date: i64,
    pub(crate) flags: u32,
    pub(crate) keywords: Vec<String>,
    pub(crate) structure: Vec<u8>,
    /// CRC32 of the file's bytes (kept in the index record).
    pub(crate) content_crc: u32,
    /// Already on stable storage (a bulk import's syncfs): the commit round need not flush it.
    pub(crate) data_durable: bool,
    /// The file as written, kept open so that the commit round flushes it by descriptor.
    pub(crate) file: Option<Arc<File>>,
    /// The bytes, for the folder's message log (`wal`): the file is then not flushed itself.
    pub(crate) log_data: Option<Vec<u8>>,
    committed: bool,
}

impl Drop for PreparedMessage {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl PreparedMessage {
    pub(crate) fn mark_committed(&mut self) {
        self.committed = true;
    }
    pub(crate) fn mark_data_durable(&mut self) {
        self.data_durable = true;
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// This process's id, asked of the kernel once (glibc no longer caches it). A temporary
/// name is created with O_EXCL, so even a forked child reusing it could only fail, never
/// overwrite.
fn process_id() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// How a prepared message's data reaches stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Its file is flushed by its writer (writeback starts at once).
    OwnFlush,
    /// Its bytes go into the folder's message log, flushed by the commit round.
    Log,
    /// The caller flushes the whole filesystem once (bulk import).
    Bulk,
}

/// Validate, normalise, parse and write `raw` into a temporary file in `dir`.
pub(crate) fn prepare(
    dir: &Path,
    raw: &[u8],
    internal_date: Option<i64>,
    flags: u32,
    keywords: Vec<String>,
    max_size: u64,
    durability: Durability,
) -> Result<PreparedMessage> {
    if raw.is_empty() {
        return Err(StoreError::EmptyMessage);
    }
    if raw.len() as u64 > max_size {
        return Err(StoreError::MessageTooLarge {
            size: raw.len() as u64,
            limit: max_size,
        });
    }
    let data = normalize_crlf(raw);
    if data.len() as u64 > max_size {
        return Err(StoreError::MessageTooLarge {
            size: data.len() as u64,
            limit: max_size,
        });
    }
    // Line endings made CRLF can push a message past what the log takes.
    let durability = match durability {
        Durability::Log if data.len() as u64 > crate::wal::MAX_MESSAGE => Durability::OwnFlush,
        d => d,
    };
    let structure = MessageStructure::parse(&data).to_bytes();
    let internal_date = internal_date.unwrap_or_else(now_secs);
    let tmp = dir.join(format!(
        ".tmp.{}.{}",
        process_id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut prepared = PreparedMessage {
        tmp,
        size: data.len() as u64,
        internal_date,
        flags,
        keywords,
        structure,
        content_crc: crc32fast::hash(&data),
        data_durable: false,
        file: None,
        log_data: None,
        committed: false,
    };
    let write = || -> std::io::Result<File> {
        let create = || {
            File::options()
                .write(true)
                .create_new(true)
                .open(&prepared.tmp)
        };
        let mut f = match create() {
            // The bucket was known to exist but is gone (the folder was deleted and created
            // again): make it again, its name durable as `Folder::staging_dir` does.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match std::fs::create_dir(dir) {
                    Ok(()) => crate::fsutil::sync_dir(dir.parent().unwrap_or(dir))?,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
                create()?
            }
            r => r?,
        };
        f.write_all(&data)?;
        // The internal date is kept as the file's mtime: a rebuilt index recovers it from there.
        let mtime = if internal_date >= 0 {
            UNIX_EPOCH + Duration::from_secs(internal_date as u64)
        } else {
            UNIX_EPOCH
        };
        f.set_modified(mtime)?;
        if durability == Durability::OwnFlush {
            crate::fsutil::start_writeback(&f);
        }
        Ok(f)
    };
    let f = write().ctx(|| format!("writing message into {}", dir.display()))?;
    match durability {
        Durability::OwnFlush => prepared.file = Some(Arc::new(f)),
        Durability::Log => prepared.log_data = Some(data.into_owned()),
        // Flushed by one syncfs: holding thousands open would only spend descriptors.
        Durability::Bulk => {}
    }
    prepared.committed = false;
    Ok(prepared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_normalisation() {
        assert_eq!(&*normalize_crlf(b"a\r\nb\r\n"), b"a\r\nb\r\n");
        assert_eq!(&*normalize_crlf(b"a\nb\n"), b"a\r\nb\r\n");
        assert_eq!(&*normalize_crlf(b"a\r\nb\nc"), b"a\r\nb\r\nc");
        assert_eq!(&*normalize_crlf(b"a\rb"), b"a\r\nb");
        assert_eq!(&*normalize_crlf(b"\nab\r"), b"\r\nab\r\n");
        assert_eq!(&*normalize_crlf(b"\r\n\r\r\n"), b"\r\n\r\n\r\n");
        // Every string of up to 7 bytes over {x, CR, LF}: borrowed exactly when the naive
        // per-byte rule finds nothing to change.
        for len in 0..=7u32 {
            for code in 0..3usize.pow(len) {
                let raw: Vec<u8> = (0..len)
                    .map(|i| [b'x', b'\r', b'\n'][code / 3usize.pow(i) % 3])
                    .collect();
                let clean = raw.iter().enumerate().all(|(i, &b)| match b {
                    b'\n' => i > 0 && raw[i - 1] == b'\r',
                    b'\r' => raw.get(i + 1) == Some(&b'\n'),
                    _ => true,
                });
                let out = normalize_crlf(&raw);
                assert_eq!(
                    matches!(out, std::borrow::Cow::Borrowed(_)),
                    clean,
                    "{raw:?}"
                );
                assert!(!out.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
            }
        }
        assert!(matches!(
            normalize_crlf(b"x\r\n"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
