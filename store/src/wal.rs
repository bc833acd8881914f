//! The message write-ahead log: `store.wal.<process>.<n>` files beside a folder's index.
//!
//! A durable append used to cost one flush of its own message file, and a flush is what the
//! disk (and the kernel's path to it) is slowest at. Now a small message's bytes are also
//! written, under the folder lock and after its file was put in place, into the writing
//! process's log segment for that folder, and the group-commit round flushes that segment
//! with the index: concurrent appends share one flush of their data, as they already shared
//! one of their index records. The message file itself is written without a flush.
//!
//! The log is only needed until the message files reach the disk on their own. A process-wide
//! checkpointer seals each segment about a second after its first entry (sooner when many
//! bytes are waiting), flushes the whole filesystem once (`syncfs`: every file written before
//! the seal, and their directory entries, reach the disk together), then deletes the sealed
//! segments. After a restart of the machine, a folder's first load replays whatever segments
//! are left (`restore`): a recorded message whose file is missing or damaged gets its bytes
//! back from the log.
//!
//! Each process writes its own segments and holds an flock on each while it writes it. A
//! segment nobody holds is an orphan (its process died): the next checkpoint of that folder
//! removes it after its own syncfs, which covers whatever that process wrote.
//!
//! An entry carries the message's index record as well, so that an append whose messages all
//! went to the log needs no flush of the index in its round: after a power loss, records the
//! index lost are added back from the log (`Folder::restore_from_log`).
//!
//! Entry: `tag u32 | uidvalidity u32 | len u32 | crc32(data) u32 | record[80] |
//! crc32(previous 96 bytes) u32 | data[len]`, little-endian.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::index::{Record, RECORD_SIZE};

/// Segment file names start with this.
pub const PREFIX: &str = "store.wal.";
const MAGIC: [u8; 8] = *b"MSWAL\x00\x01\x00";
const TAG: u32 = 0x4c41_5745;
pub const ENTRY_HEADER: usize = 16 + RECORD_SIZE + 4;
/// Messages up to this size go through the log; larger ones are flushed in their own files
/// (their data would cost more to write twice than their flush).
pub const MAX_MESSAGE: u64 = 256 * 1024;
/// A checkpoint comes this long after a segment's first entry...
const CHECKPOINT_AFTER: Duration = Duration::from_millis(1000);
/// ... or as soon as this many bytes wait in unsealed segments, or this many folders have
/// one (each holds a descriptor: a delivery to thousands of mailboxes must not use them up).
const CHECKPOINT_BYTES: u64 = 64 << 20;
const CHECKPOINT_FOLDERS: usize = 64;

/// Encode one entry onto `out`: the message's index record (encoded) and its bytes.
pub fn encode_entry(out: &mut Vec<u8>, uidvalidity: u32, record: &[u8; RECORD_SIZE], data: &[u8]) {
    let mut h = [0u8; ENTRY_HEADER];
    h[0..4].copy_from_slice(&TAG.to_le_bytes());
    h[4..8].copy_from_slice(&uidvalidity.to_le_bytes());
    h[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
    h[12..16].copy_from_slice(&crc32fast::hash(data).to_le_bytes());
    h[16..16 + RECORD_SIZE].copy_from_slice(record);
    let crc = crc32fast::hash(&h[..ENTRY_HEADER - 4]);
    h[ENTRY_HEADER - 4..].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
}

/// One entry found in a segment: its record, and where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedMessage {
    pub uidvalidity: u32,
    /// The index record as the append wrote it.
    pub record: Record,
    pub crc: u32,
    pub offset: u64,
    pub len: u32,
}

/// Every complete, intact entry of a segment (its bytes are read back by `read_data`), in
/// order; reading stops at the first torn or damaged one (the tail a crash cut off was never
/// acknowledged).
pub fn scan_segment(path: &Path) -> io::Result<Vec<LoggedMessage>> {
    let f = File::open(path)?;
    let size = f.metadata()?.len();
    let mut r = io::BufReader::new(f);
    let mut magic = [0u8; 8];
    if r.read_exact(&mut magic).is_err() || magic != MAGIC {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut at = MAGIC.len() as u64;
    let mut data = Vec::new();
    loop {
        let mut h = [0u8; ENTRY_HEADER];
        if r.read_exact(&mut h).is_err() {
            break;
        }
        let g = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let len = g(8);
        if g(0) != TAG
            || g(ENTRY_HEADER - 4) != crc32fast::hash(&h[..ENTRY_HEADER - 4])
            || len as u64 > MAX_MESSAGE
            || at + (ENTRY_HEADER as u64) + len as u64 > size
        {
            break;
        }
        let Some(record) = Record::decode(&h[16..16 + RECORD_SIZE]) else {
            break;
        };
        data.resize(len as usize, 0);
        if r.read_exact(&mut data).is_err() || crc32fast::hash(&data) != g(12) {
            break;
        }
        out.push(LoggedMessage {
            uidvalidity: g(4),
            record,
            crc: g(12),
            offset: at + ENTRY_HEADER as u64,
            len,
        });
        at += ENTRY_HEADER as u64 + len as u64;
    }
    Ok(out)
}

/// The bytes of an entry `scan_segment` found, checked again.
pub fn read_data(path: &Path, m: &LoggedMessage) -> io::Result<Vec<u8>> {
    let f = File::open(path)?;
    let mut data = vec![0u8; m.len as usize];
    f.read_exact_at(&mut data, m.offset)?;
    if crc32fast::hash(&data) != m.crc {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message log entry changed under us: {}", path.display()),
        ));
    }
    Ok(data)
}

/// The segment files present in a folder directory.
pub fn segments_in(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with(PREFIX) {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// flock without waiting; `Ok(false)` when another holds it.
fn try_lock(f: &File) -> io::Result<bool> {
    loop {
        // SAFETY: flock on a valid, owned descriptor.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// The segment a process is writing for one folder.
struct Segment {
    file: Arc<File>,
    path: PathBuf,
    len: u64,
    /// The folder instance it belongs to: a folder deleted and made again under the same name
    /// (another UIDVALIDITY, another index file) starts a new segment.
    uidvalidity: u32,
    idx_ino: u64,
    dev: u64,
}

/// This process's log for one folder.
pub struct FolderLog {
    dir: PathBuf,
    current: Mutex<Option<Segment>>,
}

/// What a write into the log leaves for the commit round.
pub struct Logged {
    /// The segment, to flush by descriptor.
    pub file: Arc<File>,
    /// The segment was created by this write: its directory entry needs a flush as well.
    pub created: bool,
}

static SEGMENT_COUNTER: AtomicU64 = AtomicU64::new(0);

impl FolderLog {
    pub fn new(dir: PathBuf) -> Arc<FolderLog> {
        Arc::new(FolderLog {
            dir,
            current: Mutex::new(None),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Option<Segment>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Append encoded entries (under the folder lock, after their files were placed).
    pub fn write(
        self: &Arc<Self>,
        entries: &[u8],
        uidvalidity: u32,
        idx_ino: u64,
    ) -> io::Result<Logged> {
        let mut cur = self.lock();
        let usable = cur
            .as_ref()
            .is_some_and(|s| s.uidvalidity == uidvalidity && s.idx_ino == idx_ino);
        let mut created = false;
        if !usable {
            // A segment of an earlier instance of the folder is left to the checkpointer.
            *cur = Some(self.create(uidvalidity, idx_ino)?);
            created = true;
        }
        let seg = cur.as_mut().expect("made above");
        if let Err(e) = seg.file.write_all_at(entries, seg.len) {
            // Start the next write in a new segment; this one's tail may be torn.
            *cur = None;
            return Err(e);
        }
        seg.len += entries.len() as u64;
        let file = seg.file.clone();
        drop(cur);
        checkpointer().note(self, entries.len() as u64);
        Ok(Logged { file, created })
    }

    fn create(&self, uidvalidity: u32, idx_ino: u64) -> io::Result<Segment> {
        loop {
            let path = self.dir.join(format!(
                "{PREFIX}{}.{}",
                std::process::id(),
                SEGMENT_COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let file = match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
            {
                Ok(f) => f,
                // Left by an earlier process with this id: take the next number.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            };
            // Another process's checkpoint may have taken it for an orphan between the create
            // and this lock (it then holds the lock until it removed the file): start again.
            if !try_lock(&file)? {
                continue;
            }
            file.write_all_at(&MAGIC, 0)?;
            let dev = file.metadata()?.dev();
            return Ok(Segment {
                file: Arc::new(file),
                path,
                len: MAGIC.len() as u64,
                uidvalidity,
                idx_ino,
                dev,
            });
        }
    }

    /// Take the current segment out: the next write starts a new one.
    fn seal(&self) -> Option<Segment> {
        self.lock().take()
    }
}

/// The process-wide checkpointer: folders with unsealed entries, and a thread that seals,
/// flushes and deletes their segments.
struct Checkpointer {
    m: Mutex<Pending>,
    cv: Condvar,
    /// Signalled when a checkpoint finishes.
    done: Condvar,
}

#[derive(Default)]
struct Pending {
    folders: HashMap<usize, Arc<FolderLog>>,
    since: Option<Instant>,
    bytes: u64,
    /// A checkpoint is under way (another waits for it to finish).
    running: bool,
    /// Checkpoints are held off (`hold_checkpoints`).
    held: usize,
}

impl Pending {
    /// Too much waits to wait for the timer.
    fn due_now(&self) -> bool {
        self.bytes >= CHECKPOINT_BYTES || self.folders.len() >= CHECKPOINT_FOLDERS
    }
}

static CP: OnceLock<Checkpointer> = OnceLock::new();

fn checkpointer() -> &'static Checkpointer {
    static THREAD: OnceLock<()> = OnceLock::new();
    let cp = CP.get_or_init(|| Checkpointer {
        m: Mutex::new(Pending::default()),
        cv: Condvar::new(),
        done: Condvar::new(),
    });
    THREAD.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("wal-checkpoint".into())
            .spawn(|| checkpointer().run());
        if let Err(e) = spawned {
            tracing::warn!("no log checkpoint thread ({e}): segments wait for checkpoint_now");
        }
    });
    cp
}

impl Checkpointer {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.m.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn note(&self, log: &Arc<FolderLog>, bytes: u64) {
        let mut p = self.pending();
        p.folders
            .entry(Arc::as_ptr(log) as usize)
            .or_insert_with(|| log.clone());
        if p.since.is_none() {
            p.since = Some(Instant::now());
            self.cv.notify_one();
        }
        p.bytes += bytes;
        if p.due_now() {
            self.cv.notify_one();
        }
    }

    fn run(&self) {
        let mut p = self.pending();
        loop {
            match p.since {
                None => {
                    p = self.cv.wait(p).unwrap_or_else(|e| e.into_inner());
                    continue;
                }
                Some(since) if !p.due_now() => {
                    let due = since + CHECKPOINT_AFTER;
                    let now = Instant::now();
                    if now < due {
                        p = self
                            .cv
                            .wait_timeout(p, due - now)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                        continue;
                    }
                }
                Some(_) => {}
            }
            p = self.checkpoint(p);
        }
    }

    /// One checkpoint of every folder pending; the guard is released meanwhile.
    fn checkpoint<'a>(&'a self, mut p: MutexGuard<'a, Pending>) -> MutexGuard<'a, Pending> {
        while p.running || p.held > 0 {
            p = self.done.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        let folders: Vec<Arc<FolderLog>> = p.folders.drain().map(|(_, f)| f).collect();
        p.since = None;
        p.bytes = 0;
        p.running = true;
        drop(p);
        if let Err(e) = checkpoint_folders(&folders) {
            tracing::warn!("message log checkpoint failed (its segments stay for recovery): {e}");
        }
        let mut p = self.pending();
        p.running = false;
        self.done.notify_all();
        p
    }
}

/// Seal the folders' segments, flush each filesystem once, delete the sealed segments and
/// the orphans found beside them.
fn checkpoint_folders(folders: &[Arc<FolderLog>]) -> io::Result<()> {
    let mut sealed: Vec<Segment> = folders.iter().filter_map(|f| f.seal()).collect();
    if sealed.is_empty() {
        return Ok(());
    }
    // Orphans first (before the flush, which must cover what their writers wrote); each is
    // kept locked until removed, so that its name cannot be handed out again meanwhile.
    let mut orphans: Vec<(PathBuf, File)> = Vec::new();
    let mut dirs: Vec<&Path> = folders.iter().map(|f| f.dir.as_path()).collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        for path in segments_in(dir).unwrap_or_default() {
            if sealed.iter().any(|s| s.path == path) || is_ours(&path) {
                continue;
            }
            if let Ok(f) = File::open(&path) {
                if try_lock(&f).unwrap_or(false) {
                    orphans.push((path, f));
                }
            }
        }
    }
    let mut by_dev: BTreeMap<u64, Arc<File>> = BTreeMap::new();
    for s in &sealed {
        by_dev.entry(s.dev).or_insert_with(|| s.file.clone());
    }
    for f in by_dev.values() {
        // SAFETY: syncfs on a valid, owned descriptor.
        if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    for s in sealed.drain(..) {
        remove(&s.path)?;
    }
    for (path, _lock) in orphans {
        remove(&path)?;
    }
    Ok(())
}

fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A segment name this process hands out (it may be writing it right now).
fn is_ours(path: &Path) -> bool {
    let own = format!("{PREFIX}{}.", std::process::id());
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(&own))
}

/// Checkpoints wait while this is held: what a test needs to take a picture of the disk as a
/// power loss would leave it (segments, index and files all from before any checkpoint).
#[doc(hidden)]
pub fn hold_checkpoints() -> CheckpointHold {
    checkpointer().pending().held += 1;
    CheckpointHold(())
}

#[doc(hidden)]
pub struct CheckpointHold(());

impl Drop for CheckpointHold {
    fn drop(&mut self) {
        let cp = checkpointer();
        cp.pending().held -= 1;
        cp.done.notify_all();
    }
}

/// `checkpoint_now` if this process ever wrote to a message log (a store being closed: its
/// segments would otherwise wait for another process to write to their folders, or for a
/// restart).
pub fn checkpoint_if_written() {
    if let Some(cp) = CP.get() {
        let p = cp.pending();
        // Held (by a test taking its picture of the disk, perhaps on this very thread):
        // the segments wait for the next checkpoint instead.
        if (!p.folders.is_empty() || p.running) && p.held == 0 {
            drop(cp.checkpoint(p));
        }
    }
}

/// Checkpoint every folder with log entries now and wait for it: afterwards every message
/// this process appended is in its own file on stable storage and no segment of it is left.
/// For benchmarks (which must count the deferred flush) and tests.
pub fn checkpoint_now() {
    let cp = checkpointer();
    let p = cp.pending();
    drop(cp.checkpoint(p));
}

/// Remove segments (after what they held was made durable elsewhere).
pub fn remove_segments(paths: &[PathBuf]) -> io::Result<()> {
    paths.iter().try_for_each(|p| remove(p))
}

/// Write a message file back from the log, durably: the file, then its directory entry (and
/// the folder's, if the bucket had to be made). Its mtime is the internal date, as for every
/// message file (reconstruct reads it back from there).
pub(crate) fn write_back(
    folder_dir: &Path,
    target: &Path,
    data: &[u8],
    internal_date: i64,
) -> io::Result<()> {
    let bucket = target.parent().unwrap_or(folder_dir);
    if !bucket.exists() {
        std::fs::create_dir_all(bucket)?;
        crate::fsutil::sync_dir(folder_dir)?;
    }
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let tmp = bucket.join(format!(".tmp.restore.{name}"));
    let f = File::create(&tmp)?;
    f.write_all_at(data, 0)?;
    let secs = internal_date.max(0) as u64;
    f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(secs))?;
    f.sync_data()?;
    std::fs::rename(&tmp, target)?;
    crate::fsutil::sync_dir(bucket)
}

/// For repair when the index cannot be read: every logged message whose file is missing or
/// differs from its logged bytes is written back (durably), whatever its UIDVALIDITY; then,
/// after one flush of the filesystem, the segments no live process holds are removed.
/// Returns the UIDs written back.
pub fn salvage(dir: &Path, message_path: impl Fn(u32) -> PathBuf) -> io::Result<Vec<u32>> {
    let segments = segments_in(dir)?;
    let mut restored = Vec::new();
    for path in &segments {
        for m in scan_segment(path)? {
            let target = message_path(m.record.uid);
            let intact = std::fs::read(&target)
                .is_ok_and(|d| d.len() == m.len as usize && crc32fast::hash(&d) == m.crc);
            if intact {
                continue;
            }
            let data = read_data(path, &m)?;
            write_back(dir, &target, &data, m.record.internal_date)?;
            restored.push(m.record.uid);
        }
    }
    let mut orphans = Vec::new();
    for path in segments {
        let f = File::open(&path)?;
        if try_lock(&f)? {
            orphans.push((path, f));
        }
    }
    if let Some((_, f)) = orphans.first() {
        // SAFETY: syncfs on a valid, owned descriptor.
        if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    for (path, _lock) in orphans {
        remove(&path)?;
    }
    Ok(restored)
}
