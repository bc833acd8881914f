//! One folder on disk: its index, flag journal, structure cache, expunge list and message
//! files, the locks around them, and the in-memory copy of its index that every session of
//! this process shares.
//!
//! Locking: the in-process state mutex is always taken before the cross-process flock on
//! `store.lck` (shared for reading, exclusive for writing), so the two can never deadlock.
//! Writers release both before waiting for their group commit.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use message_structure::MessageStructure;

use crate::error::{IoContext, Result, StoreError};
use crate::fsutil::{self, FileLock, FlushTarget};
use crate::index::{self, flag, Header, Record, RECORD_SIZE};
use crate::journal::{self, Entry, JournalHeader};
use crate::message::{now_secs, PreparedMessage};
use crate::wal::{self, FolderLog};

pub const IDX: &str = "store.idx";
pub const JNL: &str = "store.jnl";
pub const CACHE: &str = "store.cache";
pub const EXP: &str = "store.exp";
pub const LCK: &str = "store.lck";
pub const META: &str = "store.meta";

const CACHE_MAGIC: u32 = 0xCAC4_E001;
const CACHE_ENTRY_HEADER: usize = 16;

/// Where a folder's files are. Never leaves the engine.
#[derive(Clone, Debug)]
pub struct FolderFiles {
    pub dir: PathBuf,
}

impl FolderFiles {
    pub fn new(dir: PathBuf) -> Self {
        FolderFiles { dir }
    }
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
    /// Message files sit in buckets of 4096 UIDs so that no directory grows without bound.
    pub fn bucket(&self, uid: u32) -> PathBuf {
        self.dir.join(format!("{:x}", uid >> 12))
    }
    pub fn message(&self, uid: u32) -> PathBuf {
        self.bucket(uid).join(format!("{uid}.msg"))
    }
}

/// What every session needs to know about one message, kept in memory for the whole folder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Msg {
    pub uid: u32,
    pub flags: u32,
    pub modseq: u64,
    pub keywords: u128,
}

impl Msg {
    pub fn is_expunged(&self) -> bool {
        self.flags & flag::EXPUNGED != 0
    }
}

impl From<&Record> for Msg {
    fn from(r: &Record) -> Msg {
        Msg {
            uid: r.uid,
            flags: r.flags,
            modseq: r.modseq,
            keywords: r.keywords,
        }
    }
}

/// The in-memory mirror of store.idx (expunged records included, so that position i is
/// record i on disk).
pub struct FolderState {
    pub header: Header,
    pub keywords: Vec<String>,
    pub msgs: Vec<Msg>,
    /// Shared with group-commit rounds, which flush it by descriptor.
    idx: Arc<File>,
    idx_ino: u64,
    jnl: File,
    jnl_ino: u64,
    jnl_offset: u64,
    cache: File,
}

impl FolderState {
    /// Bytes of memory this folder's in-memory index holds.
    pub fn memory_bytes(&self) -> usize {
        self.msgs.capacity() * std::mem::size_of::<Msg>()
            + self
                .keywords
                .iter()
                .map(|k| k.capacity() + 24)
                .sum::<usize>()
            + std::mem::size_of::<Self>()
    }

    /// Position of `uid` among the records.
    pub fn position(&self, uid: u32) -> Option<usize> {
        self.msgs.binary_search_by_key(&uid, |m| m.uid).ok()
    }
    pub fn get(&self, uid: u32) -> Option<&Msg> {
        self.position(uid)
            .map(|i| &self.msgs[i])
            .filter(|m| !m.is_expunged())
    }
    /// Live messages in UID order.
    pub fn live(&self) -> impl Iterator<Item = &Msg> + '_ {
        self.msgs.iter().filter(|m| !m.is_expunged())
    }
    /// The full on-disk record of message `uid`.
    pub fn record(&self, uid: u32, name: &str) -> Result<Record> {
        let pos = self.position(uid).ok_or(StoreError::NoSuchMessage(uid))?;
        self.record_at(pos, name)
    }
    fn record_at(&self, pos: usize, name: &str) -> Result<Record> {
        let mut b = [0u8; RECORD_SIZE];
        let n = fsutil::read_at_most(&self.idx, &mut b, index::record_offset(pos as u64))
            .ctx(|| format!("reading index of {name}"))?;
        if n < RECORD_SIZE {
            return Err(StoreError::Corrupt(format!(
                "Mailbox corrupted, start_offset beyond EOF: {name}"
            )));
        }
        Record::decode(&b).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "Mailbox corrupted, index record {} damaged: {name}. Needs reconstruct",
                pos + 1
            ))
        })
    }
    /// Read records [from, to) from disk in one go.
    pub fn records(&self, from: usize, to: usize, name: &str) -> Result<Vec<Record>> {
        read_records(&self.idx, from as u64, to as u64, name)
    }
    /// Keyword names of a bitmap.
    pub fn keyword_names(&self, bits: u128) -> Vec<&str> {
        let mut out = Vec::new();
        let mut b = bits;
        while b != 0 {
            let i = b.trailing_zeros() as usize;
            if let Some(k) = self.keywords.get(i) {
                if !k.is_empty() {
                    out.push(k.as_str());
                }
            }
            b &= b - 1;
        }
        out
    }
    /// The bitmap of already-defined keywords among `names` (unknown names are ignored).
    pub fn keyword_bits(&self, names: &[String]) -> u128 {
        let mut bits = 0u128;
        for n in names {
            if let Some(i) = self.keywords.iter().position(|k| k.eq_ignore_ascii_case(n)) {
                bits |= 1 << i;
            }
        }
        bits
    }
    /// The structure cache entry of message `uid`, verified.
    pub fn cached_structure(&self, rec: &Record) -> Option<Vec<u8>> {
        if rec.cache_len == 0 {
            return None;
        }
        let mut b = vec![0u8; CACHE_ENTRY_HEADER + rec.cache_len as usize];
        let n = fsutil::read_at_most(&self.cache, &mut b, rec.cache_offset).ok()?;
        if n < b.len() {
            return None;
        }
        let g4 = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        if g4(0) != CACHE_MAGIC || g4(4) != rec.uid || g4(8) != rec.cache_len {
            return None;
        }
        let payload = &b[CACHE_ENTRY_HEADER..];
        if crc32fast::hash(payload) != g4(12) {
            return None;
        }
        Some(payload.to_vec())
    }
}

fn read_records(idx: &File, from: u64, to: u64, name: &str) -> Result<Vec<Record>> {
    let mut out = Vec::with_capacity((to - from) as usize);
    for_each_record(idx, from, to, name, |r| out.push(r))?;
    Ok(out)
}

/// Decode and verify records [from, to), reading 16,384 at a time.
fn for_each_record(
    idx: &File,
    from: u64,
    to: u64,
    name: &str,
    mut f: impl FnMut(Record),
) -> Result<()> {
    const CHUNK: u64 = 16384;
    let mut buf = vec![0u8; (CHUNK.min(to.saturating_sub(from)) as usize) * RECORD_SIZE];
    let mut pos = from;
    while pos < to {
        let n = (to - pos).min(CHUNK);
        let want = n as usize * RECORD_SIZE;
        let got = fsutil::read_at_most(idx, &mut buf[..want], index::record_offset(pos))
            .ctx(|| format!("reading index of {name}"))?;
        if got < want {
            return Err(StoreError::Corrupt(format!(
                "Mailbox corrupted, start_offset beyond EOF: {name}"
            )));
        }
        for (i, chunk) in buf[..want].chunks_exact(RECORD_SIZE).enumerate() {
            f(Record::decode(chunk).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "Mailbox corrupted, index record {} damaged: {name}. Needs reconstruct",
                    pos + i as u64 + 1
                ))
            })?);
        }
        pos += n;
    }
    Ok(())
}

/// The records before the first damaged one (or one whose UID does not ascend), at most
/// `count`: what survived of an index after a power loss.
fn read_valid_prefix(idx: &File, count: u64, name: &str) -> Result<Vec<Msg>> {
    const CHUNK: u64 = 16384;
    let mut out: Vec<Msg> = Vec::with_capacity(count as usize);
    let mut buf = vec![0u8; (CHUNK.min(count) as usize) * RECORD_SIZE];
    let mut pos = 0;
    while pos < count {
        let n = (count - pos).min(CHUNK);
        let want = n as usize * RECORD_SIZE;
        let got = fsutil::read_at_most(idx, &mut buf[..want], index::record_offset(pos))
            .ctx(|| format!("reading index of {name}"))?;
        for chunk in buf[..got].chunks_exact(RECORD_SIZE) {
            match Record::decode(chunk) {
                Some(r) if out.last().is_none_or(|m| m.uid < r.uid) => out.push(Msg::from(&r)),
                _ => return Ok(out),
            }
        }
        if got < want {
            break;
        }
        pos += n;
    }
    Ok(out)
}

/// Load the in-memory part of `count` records without keeping the records themselves.
fn read_msgs(idx: &File, count: u64, name: &str) -> Result<Vec<Msg>> {
    let mut out = Vec::with_capacity(count as usize);
    for_each_record(idx, 0, count, name, |r| out.push(Msg::from(&r)))?;
    Ok(out)
}

/// Group commit: writers that finished their index updates wait here for one round of
/// flushes that covers them all: the directories that gained names, the index and (when
/// written) the flag journal, plus message files recorded by other processes since the last
/// round. A writer flushes its own message files itself, by descriptor, on its own thread
/// and at the same time as the round (as each writer of the disk's own create-fsync-rename
/// loop does): no hand-off to another thread, and many flushes in flight at once.
///
/// A message's data can thus reach the disk after its index record. The index header's
/// `durable_uid` bounds the records for which that is possible (it stays below any file
/// still being flushed), and after the machine restarts those are checked against their
/// files (`Folder::verify_after_restart`): nothing acknowledged depends on that check, since
/// a writer is answered only when its own flush and a round covering it are both complete.
#[derive(Default)]
struct GroupCommit {
    m: Mutex<GcInner>,
    /// Wakes a round's leader waiting for the writers queued behind the folder lock.
    lead_cv: Condvar,
}

/// Rounds under way at once at most: a new round's flushes join the device's queue while
/// the current one is written.
const MAX_ROUNDS: usize = 2;

#[derive(Default)]
struct GcInner {
    /// Sequence number of the last write noted.
    written: u64,
    /// Every write up to this one is on stable storage.
    synced: u64,
    /// The last write a round already started covers.
    started: u64,
    /// What the next round flushes.
    files: Vec<FlushTarget>,
    dirs: HashSet<PathBuf>,
    journal: bool,
    /// Message-log segments written since the last round.
    logs: Vec<Arc<File>>,
    /// UIDNEXT at the last note: once the next round is done, every message below it is durable.
    uid_target: u32,
    /// Rounds under way (`None`) or finished ahead of an earlier one (`Some((write, uid))`),
    /// by number: `synced` and `durable_uid` only move over a finished prefix.
    rounds: BTreeMap<u64, Option<(u64, u32)>>,
    next_round: u64,
    /// Bumped when a round fails: rounds started before no longer count.
    epoch: u64,
    /// The UIDVALIDITY the two UID marks below belong to.
    uidvalidity: u32,
    /// Every message below this UID is on stable storage (data and directory entry).
    durable_uid: u32,
    /// Every message below this UID is durable or in some round's list of files.
    requested_uid: u32,
    /// The index as the last write left it, flushed by descriptor in the next round...
    index: Option<Arc<File>>,
    /// ... if a write since the last round needs it (see `Note::index_needed`).
    index_needed: bool,
    /// Writers that entered `Folder::write`, and those of them past their note (or done
    /// without writing): the difference are writers queued on, or holding, the folder lock.
    entered: u64,
    left: u64,
    /// A leader is gathering the queued writers into its round: others wait for it.
    forming: bool,
    /// The `left` count the gathering leader waits for.
    gather_until: u64,
    /// Writers asleep in `wait`: (write, epoch, thread). Each is woken only when it can go on
    /// (its write is durable, its epoch failed, or it may start a round), not on every
    /// change: a condition variable would wake all of them after every round.
    sleepers: Vec<(u64, u64, std::thread::Thread)>,
    /// Messages whose writers are flushing their files themselves (outside any round): the
    /// durable mark stays below the first of them.
    unflushed: BTreeSet<u32>,
    /// Every message below this UID has its directory entry and record on stable storage
    /// (finished rounds); with no file flush outstanding below it, it is durable.
    covered_uid: u32,
}

impl GcInner {
    /// Wake the sleepers that can go on: every one with `all`; else those whose write is
    /// on stable storage or whose epoch failed, and the first one no round covers yet if
    /// a round may start now.
    fn wake(&mut self, all: bool) {
        let (synced, started, epoch) = (self.synced, self.started, self.epoch);
        let mut may_start = !self.forming && self.rounds.len() < MAX_ROUNDS;
        self.sleepers.retain(|(seq, e, t)| {
            let go = all
                || *e != epoch
                || *seq <= synced
                || (may_start && *seq > started && std::mem::replace(&mut may_start, false));
            if go {
                t.unpark();
            }
            !go
        });
    }

    fn raise_durable_mark(&mut self) {
        let below = self.unflushed.first().copied().unwrap_or(u32::MAX);
        self.durable_uid = self.durable_uid.max(self.covered_uid.min(below));
    }
}

/// A writer inside `Folder::write` until its note is taken (or it wrote nothing).
struct Entered<'a>(&'a GroupCommit);

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        let mut g = self.0.inner();
        g.left += 1;
        if g.forming && g.left >= g.gather_until {
            self.0.lead_cv.notify_one();
        }
    }
}

/// What a write under the folder lock leaves for its group-commit round.
struct Note {
    files: Vec<FlushTarget>,
    /// Messages of this write whose files the writer flushes itself.
    own: Vec<u32>,
    index: Arc<File>,
    dirs: Vec<PathBuf>,
    journal: bool,
    /// The message-log segment this write added to.
    log: Option<Arc<File>>,
    /// The index needs a flush (anything but appends whose records went to the log).
    index_needed: bool,
    uidnext: u32,
}

impl GroupCommit {
    fn inner(&self) -> MutexGuard<'_, GcInner> {
        self.m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Under the folder lock, before a write: the header's durable mark is raised to what this
    /// process knows, and the UID from which recorded messages still need a flush is returned.
    fn begin(&self, h: &mut Header) -> u32 {
        let mut g = self.inner();
        if g.uidvalidity != h.uidvalidity {
            // Recreated under the same name: UIDs start again.
            g.uidvalidity = h.uidvalidity;
            g.durable_uid = 0;
            g.requested_uid = 0;
            g.covered_uid = 0;
        }
        if h.boot_id == [0u8; 16] {
            // Written by a version that flushed every message before recording it (or
            // rebuilt by reconstruct from the files): all of it is durable.
            h.durable_uid = h.uidnext;
        }
        h.durable_uid = h.durable_uid.max(g.durable_uid).min(h.uidnext);
        h.boot_id = fsutil::boot_id().unwrap_or([0xff; 16]);
        h.durable_uid.max(g.requested_uid)
    }

    /// Before taking the folder lock: count this writer as queued.
    fn enter(&self) -> Entered<'_> {
        self.inner().entered += 1;
        Entered(self)
    }

    /// Under the folder lock, after a write: queue its flushes; returns (sequence, epoch).
    fn note(&self, n: Note) -> (u64, u64) {
        let mut g = self.inner();
        g.written += 1;
        for f in &n.files {
            if let FlushTarget::Path(p) = f {
                if let Some(d) = p.parent() {
                    g.dirs.insert(d.to_path_buf());
                }
            }
        }
        g.files.extend(n.files);
        g.unflushed.extend(n.own);
        g.index = Some(n.index);
        g.index_needed |= n.index_needed;
        g.dirs.extend(n.dirs);
        g.journal |= n.journal;
        if let Some(l) = n.log {
            if !g.logs.iter().any(|o| Arc::ptr_eq(o, &l)) {
                g.logs.push(l);
            }
        }
        g.uid_target = g.uid_target.max(n.uidnext);
        g.requested_uid = g.requested_uid.max(n.uidnext);
        (g.written, g.epoch)
    }

    /// Outside the folder lock, after a note: the writer flushes the files it still has open
    /// itself, on its own thread (as a writer of the disk's own loop does), while a round
    /// flushes the directory and the index. A failure is a failed round: nothing above the
    /// durable mark counts any more.
    fn flush_own(&self, files: &[(u32, Arc<File>)]) -> io::Result<()> {
        let r = match files {
            [] => Ok(()),
            [(_, f)] => f.sync_data(),
            many => {
                let pending: Vec<_> = many
                    .iter()
                    .map(|(_, f)| fsutil::flush_in_background(FlushTarget::Open(f.clone())))
                    .collect();
                // Wait for every one, even after a failure: none may still be running after.
                let mut result = Ok(());
                for rx in pending {
                    let r = rx
                        .recv()
                        .unwrap_or_else(|_| Err(io::Error::other("flusher thread gone")));
                    result = result.and(r);
                }
                result
            }
        };
        let mut g = self.inner();
        for (uid, _) in files {
            g.unflushed.remove(uid);
        }
        if r.is_ok() {
            g.raise_durable_mark();
        } else {
            g.epoch += 1;
            g.rounds.clear();
            g.started = g.synced;
            g.requested_uid = g.durable_uid;
            g.covered_uid = g.durable_uid;
            g.journal = true;
            g.index_needed = true;
            g.wake(true);
        }
        r
    }

    /// Wait until write `seq` is on stable storage. A writer not covered by a round already
    /// started starts one (up to `MAX_ROUNDS` at once: a new round's flushes join the
    /// filesystem's next journal commit while the current one is written).
    ///
    /// Before it takes its batch, a round's leader waits (briefly) for the writers queued
    /// behind the folder lock at that moment: each holds the lock for a fraction of a flush,
    /// and taking them into this round instead of the next halves the flushes they cost.
    fn wait(&self, seq: u64, epoch: u64, files: &FolderFiles) -> io::Result<()> {
        const GATHER_AT_MOST: Duration = Duration::from_millis(1);
        let mut g = self.inner();
        loop {
            if g.synced >= seq {
                return Ok(());
            }
            if g.epoch != epoch {
                return Err(io::Error::other("an earlier flush of this folder failed"));
            }
            if g.started >= seq || g.forming || g.rounds.len() >= MAX_ROUNDS {
                let me = std::thread::current();
                let id = me.id();
                g.sleepers.push((seq, epoch, me));
                drop(g);
                // A wake given before this point is kept by the thread: park returns at once.
                std::thread::park();
                g = self.inner();
                // Still listed after a spurious return: nobody has woken it yet.
                g.sleepers.retain(|(_, _, t)| t.id() != id);
                continue;
            }
            if g.left < g.entered {
                let queued_until = g.entered;
                let deadline = Instant::now() + GATHER_AT_MOST;
                g.forming = true;
                g.gather_until = queued_until;
                while g.left < queued_until && g.epoch == epoch {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    g = self
                        .lead_cv
                        .wait_timeout(g, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                g.forming = false;
                if g.synced >= seq || g.epoch != epoch || g.started >= seq {
                    // No round of this writer's: one that noted meanwhile may start its own.
                    g.wake(false);
                    continue;
                }
            }
            let id = g.next_round;
            g.next_round += 1;
            let target = (g.written, g.uid_target);
            g.started = g.written;
            let mut msgs = std::mem::take(&mut g.files);
            msgs.extend(g.logs.drain(..).map(FlushTarget::Open));
            let dirs: Vec<PathBuf> = g.dirs.drain().collect();
            let journal = std::mem::take(&mut g.journal);
            let index = if std::mem::take(&mut g.index_needed) {
                IndexFlush::Flush(g.index.take())
            } else {
                IndexFlush::Skip
            };
            let round_epoch = g.epoch;
            g.rounds.insert(id, None);
            drop(g);
            let r = flush_all(files, msgs, &dirs, journal, index);
            g = self.inner();
            if g.epoch == round_epoch {
                match r {
                    Ok(()) => {
                        g.rounds.insert(id, Some(target));
                        while let Some(e) = g.rounds.first_entry() {
                            let Some((w, u)) = *e.get() else { break };
                            e.remove();
                            g.synced = g.synced.max(w);
                            g.covered_uid = g.covered_uid.max(u);
                            g.raise_durable_mark();
                        }
                    }
                    Err(e) => {
                        // Nothing not yet durable counts any more: every waiter of this epoch
                        // gets the error, and the next write's round flushes again every
                        // message above the durable mark.
                        g.epoch += 1;
                        g.rounds.clear();
                        g.started = g.synced;
                        g.requested_uid = g.durable_uid;
                        g.covered_uid = g.durable_uid;
                        g.dirs.extend(dirs);
                        g.journal = true;
                        g.index_needed = true;
                        g.index_needed = true;
                        g.wake(true);
                        return Err(e);
                    }
                }
            }
            g.wake(false);
        }
    }
}

/// One flush round: the message files, the directories that gained names, the index and
/// (when written) the journal, all in flight at once on the flusher threads.
/// Whether a round flushes the index: by descriptor if it has one, else by path.
enum IndexFlush {
    Skip,
    Flush(Option<Arc<File>>),
}

fn flush_all(
    files: &FolderFiles,
    mut targets: Vec<FlushTarget>,
    dirs: &[PathBuf],
    journal: bool,
    index: IndexFlush,
) -> io::Result<()> {
    targets.extend(dirs.iter().cloned().map(FlushTarget::Dir));
    if journal {
        targets.push(FlushTarget::Path(files.path(JNL)));
    }
    // The index on this thread while the flusher threads do the rest, all in flight at once.
    let mut pending_here = match index {
        IndexFlush::Skip => targets.pop(),
        IndexFlush::Flush(_) => None,
    };
    let pending: Vec<_> = targets
        .into_iter()
        .map(|t| {
            let vanished_ok = matches!(t, FlushTarget::Path(_));
            (fsutil::flush_in_background(t), vanished_ok)
        })
        .collect();
    let mut result = match index {
        // Nothing of its own: one of the others, here instead of on a flusher thread.
        IndexFlush::Skip => match pending_here.take() {
            Some(t) => t.flush_here(),
            None => Ok(()),
        },
        IndexFlush::Flush(Some(f)) => f.sync_data(),
        IndexFlush::Flush(None) => File::open(files.path(IDX)).and_then(|f| f.sync_data()),
    };
    let mut check = |r: io::Result<()>, vanished_ok: bool| match r {
        Ok(()) => {}
        // A message file expunged and cleaned up meanwhile needs no flush.
        Err(e) if vanished_ok && e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => result = Err(e),
    };
    for (rx, vanished_ok) in pending {
        check(
            rx.recv()
                .unwrap_or_else(|_| Err(io::Error::other("flusher thread gone"))),
            vanished_ok,
        );
    }
    result
}

/// What a write left to wait for after its locks were released.
struct PendingCommit {
    /// (sequence, epoch) of its note, if it must be waited for.
    seq: Option<(u64, u64)>,
    /// Files the writer flushes itself.
    own: Vec<(u32, Arc<File>)>,
}

/// What an append answers: (UIDVALIDITY, UIDs).
type AppendOutcome = Result<(u32, Vec<u32>)>;

/// One caller's append waiting in a folder's queue (see `Folder::append_with_validity`).
struct AppendSlot {
    request: Mutex<Option<(Vec<PreparedMessage>, u64)>>,
    outcome: Mutex<Option<AppendOutcome>>,
    /// Set when this caller is to combine the next batch.
    lead: AtomicBool,
    thread: std::thread::Thread,
}

impl AppendSlot {
    fn take_request(&self) -> Option<(Vec<PreparedMessage>, u64)> {
        self.request
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
    fn take_outcome(&self) -> Option<AppendOutcome> {
        self.outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
    fn answer(&self, r: AppendOutcome) {
        *self.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
        self.thread.unpark();
    }
}

/// Appends waiting for the folder lock. One caller at a time (the combiner) takes every
/// waiting append into a single write under the lock, and answers them all after its commit
/// round: the others sleep once, instead of once for the lock and once more for the round,
/// and the lock, the index header and the log are written once per batch.
#[derive(Default)]
struct AppendQueue {
    m: Mutex<QueueInner>,
}

#[derive(Default)]
struct QueueInner {
    waiting: VecDeque<Arc<AppendSlot>>,
    /// A combiner is working (or has been handed the next batch).
    combining: bool,
}

/// Appends one combined write takes at most (a bound on how long it holds the lock).
const COMBINE_AT_MOST: usize = 64;

impl AppendQueue {
    fn inner(&self) -> MutexGuard<'_, QueueInner> {
        self.m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue `slot`; true if the caller is to combine (nobody else is).
    fn join(&self, slot: &Arc<AppendSlot>) -> bool {
        let mut q = self.inner();
        q.waiting.push_back(slot.clone());
        !std::mem::replace(&mut q.combining, true)
    }

    fn take(&self) -> Vec<Arc<AppendSlot>> {
        let mut q = self.inner();
        let n = q.waiting.len().min(COMBINE_AT_MOST);
        q.waiting.drain(..n).collect()
    }

    /// After a combiner's write: `retry` go back to the head of the queue, and the first
    /// waiting caller (if any) is handed the next batch.
    fn release(&self, retry: &[Arc<AppendSlot>]) {
        let mut q = self.inner();
        for r in retry.iter().rev() {
            q.waiting.push_front(r.clone());
        }
        match q.waiting.front() {
            Some(next) => {
                next.lead.store(true, Ordering::Release);
                next.thread.unpark();
            }
            None => q.combining = false,
        }
    }
}

/// UIDs skipped after a power loss that left message-log segments behind (an upper bound
/// on appends in flight at once to one folder).
const UID_GAP_AFTER_LOSS: u32 = 1024;

/// A folder of this process: its files, and the shared in-memory state.
pub struct Folder {
    pub name: String,
    pub files: FolderFiles,
    state: Mutex<Option<FolderState>>,
    commit: GroupCommit,
    /// The bucket `staging_dir` last found or made (its number + 1; 0: none), so that
    /// appends do not look it up each time (`message::prepare` remakes one that vanished).
    staged_bucket: AtomicU32,
    /// UIDNEXT as this process's last write left it (0: none yet), for `staging_dir`, which
    /// would otherwise wait for the state lock behind the writers.
    uidnext_hint: AtomicU32,
    /// Whether a write that adds no message (flags, expunge, \Recent claim) also waits for
    /// its commit round (`local.store.fsync = always`). Otherwise it is acknowledged once
    /// written, and made durable by the folder's next round or the kernel's writeback.
    sync_every_write: bool,
    /// This process's message log for the folder (see `wal`).
    log: Arc<FolderLog>,
    appends: AppendQueue,
}

/// What one flag-store operation changed.
#[derive(Debug, Default)]
pub struct StoreOutcome {
    /// Messages whose flags changed: (uid, new flags, new keywords).
    pub changed: Vec<Msg>,
    /// UIDs not changed because their modseq was above UNCHANGEDSINCE.
    pub modified: Vec<u32>,
    pub modseq: u64,
}

/// How a flag store applies its flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagOp {
    Add,
    Remove,
    Replace,
}

/// An expunged message, for quota accounting and notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expunged {
    pub uid: u32,
    pub size: u64,
    pub modseq: u64,
}

fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

fn ino(path: &Path) -> io::Result<u64> {
    std::fs::metadata(path).map(|m| m.ino())
}

impl Folder {
    pub fn new(name: String, files: FolderFiles) -> Folder {
        Folder {
            name,
            log: FolderLog::new(files.dir.clone()),
            appends: AppendQueue::default(),
            files,
            state: Mutex::new(None),
            commit: GroupCommit::default(),
            staged_bucket: AtomicU32::new(0),
            uidnext_hint: AtomicU32::new(0),
            sync_every_write: true,
        }
    }

    /// Writes made through this process whose commit round has not finished yet: a flag
    /// change or expunge acknowledged under `local.store.fsync = optimized` counts until
    /// the next round (the next append's, at the latest) has flushed it.
    pub fn unflushed_writes(&self) -> u64 {
        let g = self.commit.inner();
        g.written.saturating_sub(g.synced)
    }

    /// Whether writes that add no message wait for their flush (see `sync_every_write`;
    /// a folder opened directly, by a repair tool, always does).
    pub fn syncing_every_write(mut self, on: bool) -> Folder {
        self.sync_every_write = on;
        self
    }

    /// Create the folder's files (the directory may exist already, holding subfolders).
    pub fn create_files(files: &FolderFiles, uidvalidity: u32, meta: &str) -> Result<()> {
        let dir = &files.dir;
        std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        let header = Header {
            uidvalidity,
            uidnext: 1,
            created: now_secs(),
            ..Default::default()
        };
        let mut idx = header.encode().to_vec();
        idx.resize(index::RECORDS_OFFSET as usize, 0);
        for slot in 0..index::KEYWORD_SLOTS {
            let at = index::KEYWORDS_OFFSET as usize + slot * index::KEYWORD_SLOT_SIZE;
            idx[at..at + index::KEYWORD_SLOT_SIZE].copy_from_slice(&index::encode_keyword(""));
        }
        let jh = JournalHeader {
            uidvalidity,
            generation: 1,
        };
        let io = || -> io::Result<()> {
            fsutil::write_atomic(&files.path(META), meta.as_bytes())?;
            fsutil::write_atomic(&files.path(JNL), &jh.encode())?;
            File::create(files.path(CACHE))?;
            File::create(files.path(EXP))?;
            // store.idx last: its presence means the folder is complete.
            fsutil::write_atomic(&files.path(IDX), &idx)?;
            Ok(())
        };
        io().ctx(|| format!("creating folder files in {}", dir.display()))
    }

    fn lock_state(&self) -> MutexGuard<'_, Option<FolderState>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` on the folder's current state (under the shared lock).
    pub fn read<T>(&self, f: impl FnOnce(&FolderState) -> Result<T>) -> Result<T> {
        let mut guard = self.lock_state();
        if guard.is_none()
            && peek_header(&self.files, &self.name).is_ok_and(|h| needs_restart_check(&h))
        {
            // First look since the machine restarted: the check may drop records.
            let _lock = FileLock::exclusive(&self.files.path(LCK))
                .ctx(|| format!("locking {}", self.name))?;
            let state = self.refresh(&mut guard, true)?;
            return f(state);
        }
        let _lock =
            FileLock::shared(&self.files.path(LCK)).ctx(|| format!("locking {}", self.name))?;
        let state = self.refresh(&mut guard, false)?;
        f(state)
    }

    /// Run `f` with the exclusive lock; wait for the group commit if `f` wrote anything.
    fn write<T>(&self, f: impl FnOnce(&mut Writer<'_>) -> Result<T>) -> Result<T> {
        let (out, commit) = self.write_locked(f)?;
        self.finish_write(commit)?;
        Ok(out)
    }

    /// Wait until what a write noted is on stable storage (if it must be waited for).
    fn finish_write(&self, commit: PendingCommit) -> Result<()> {
        if let Some((seq, epoch)) = commit.seq {
            self.commit
                .flush_own(&commit.own)
                .ctx(|| format!("flushing messages of {}", self.name))?;
            self.commit
                .wait(seq, epoch, &self.files)
                .ctx(|| format!("flushing {}", self.name))?;
        }
        Ok(())
    }

    /// The part of `write` under the locks: run `f`, write its message-log entries, note
    /// what the commit round must flush.
    fn write_locked<T>(
        &self,
        f: impl FnOnce(&mut Writer<'_>) -> Result<T>,
    ) -> Result<(T, PendingCommit)> {
        let mut own = Vec::new();
        let (out, seq) = {
            let _entered = self.commit.enter();
            let mut guard = self.lock_state();
            let _lock = FileLock::exclusive(&self.files.path(LCK))
                .ctx(|| format!("locking {}", self.name))?;
            let state = self.refresh(&mut guard, true)?;
            let flush_from = self.commit.begin(&mut state.header);
            let uidnext_before = state.header.uidnext;
            let generation_before = state.header.generation;
            let mut w = Writer {
                state,
                files: &self.files,
                name: &self.name,
                dirs: Vec::new(),
                wrote: false,
                journaled: false,
                data_durable: false,
                opened: Vec::new(),
                log: &self.log,
                logged: Vec::new(),
                log_buf: Vec::new(),
                log_file: None,
                reload_after: false,
                logged_append: false,
                unlogged: false,
            };
            let records_before = w.state.msgs.len();
            let header_before = w.state.header;
            let out = match f(&mut w).and_then(|o| match w.write_log() {
                Ok(()) => Ok(o),
                Err(e) => {
                    // Not answered, so not kept: the records and files of this write go.
                    w.roll_back(records_before, header_before);
                    Err(e)
                }
            }) {
                Ok(o) => o,
                Err(e) => {
                    // Whatever was half-written, the disk is the truth: reload next time.
                    let wrote = w.wrote;
                    *guard = None;
                    if wrote {
                        tracing::warn!(mailbox = %self.name, "write failed part-way: {e}");
                    }
                    return Err(e);
                }
            };
            self.uidnext_hint
                .store(w.state.header.uidnext, Ordering::Relaxed);
            // New messages, or a rewritten index (compaction): always durable before the
            // answer. Other writes wait only if configured to.
            let must_wait = self.sync_every_write
                || w.state.header.uidnext != uidnext_before
                || w.state.header.generation != generation_before
                || !w.opened.is_empty();
            let seq = if w.wrote {
                // Every recorded message no round has taken yet: this write's, and any other
                // process appended since (flushed here too, so the durable mark this process
                // writes later is true of them as well).
                let s = &*w.state;
                let first = s.msgs.partition_point(|m| m.uid < flush_from);
                let files = s.msgs[first..]
                    .iter()
                    // A bulk import's own messages were flushed by its syncfs.
                    .filter(|m| {
                        let flushed = w.data_durable && m.uid >= uidnext_before;
                        !m.is_expunged() && !flushed
                    })
                    // This write's own files, still open, are flushed by the writer itself.
                    .filter(|m| w.opened.binary_search_by_key(&m.uid, |(u, _)| *u).is_err())
                    // Its logged messages are durable with the log.
                    .filter(|m| w.logged.binary_search(&m.uid).is_err())
                    .map(|m| FlushTarget::Path(self.files.message(m.uid)))
                    .collect();
                own = std::mem::take(&mut w.opened);
                Some(self.commit.note(Note {
                    files,
                    own: own.iter().map(|(u, _)| *u).collect(),
                    index: s.idx.clone(),
                    dirs: std::mem::take(&mut w.dirs),
                    journal: w.journaled && w.unlogged,
                    index_needed: w.unlogged,
                    log: w.log_file.take(),
                    uidnext: s.header.uidnext,
                }))
            } else {
                None
            };
            if w.reload_after {
                // Part of a combined append failed part-way: the disk is the truth.
                *guard = None;
            }
            // Not waited for: noted all the same, so that the next round flushes it.
            (out, seq.filter(|_| must_wait))
        };
        Ok((out, PendingCommit { seq, own }))
    }

    /// Bring the in-memory state up to date with the disk. With `repair` (exclusive lock held),
    /// a torn tail left by a crash is cut off or adopted.
    fn refresh<'a>(
        &self,
        guard: &'a mut MutexGuard<'_, Option<FolderState>>,
        repair: bool,
    ) -> Result<&'a mut FolderState> {
        let idx_path = self.files.path(IDX);
        let jnl_path = self.files.path(JNL);
        let cur_idx_ino = match ino(&idx_path) {
            Ok(i) => i,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::Corrupt(format!(
                    "Mailbox corrupted, missing fixed headers: {}",
                    self.name
                )))
            }
            Err(e) => return Err(e).ctx(|| format!("reading {}", idx_path.display())),
        };
        let cur_jnl_ino = ino(&jnl_path).unwrap_or(0);
        let reload = match guard.as_ref() {
            None => true,
            Some(s) => s.idx_ino != cur_idx_ino || s.jnl_ino != cur_jnl_ino,
        };
        if !reload {
            let s = guard.as_mut().expect("checked above");
            let mut hb = [0u8; index::HEADER_SIZE];
            fsutil::read_at_most(&s.idx, &mut hb, 0).ctx(|| format!("reading {}", self.name))?;
            let h = Header::decode(&hb, &self.name)?;
            if h.generation == s.header.generation && h.record_count >= s.msgs.len() as u64 {
                self.catch_up(s, h, repair)?;
                return Ok(guard.as_mut().expect("state present"));
            }
        }
        **guard = Some(self.load(repair)?);
        Ok(guard.as_mut().expect("state just loaded"))
    }

    /// Apply records appended and journal entries written since we last looked.
    fn catch_up(&self, s: &mut FolderState, h: Header, repair: bool) -> Result<()> {
        let known = s.msgs.len() as u64;
        if h.record_count > known {
            for r in read_records(&s.idx, known, h.record_count, &self.name)? {
                s.msgs.push(Msg::from(&r));
            }
        }
        let jlen = s
            .jnl
            .metadata()
            .ctx(|| format!("reading journal of {}", self.name))?
            .len();
        if jlen > s.jnl_offset {
            let mut buf = vec![0u8; (jlen - s.jnl_offset) as usize];
            let n = fsutil::read_at_most(&s.jnl, &mut buf, s.jnl_offset)
                .ctx(|| format!("reading journal of {}", self.name))?;
            let (entries, used, damaged) = journal::decode_entries(&buf[..n]);
            let mut reload_keywords = false;
            for e in entries {
                match e {
                    Entry::Flags {
                        uid,
                        flags,
                        modseq,
                        keywords,
                    } => {
                        if let Some(p) = s.position(uid) {
                            let m = &mut s.msgs[p];
                            if modseq >= m.modseq {
                                m.flags = flags;
                                m.modseq = modseq;
                                m.keywords = keywords;
                            }
                        }
                    }
                    Entry::Keyword { .. } => reload_keywords = true,
                }
            }
            s.jnl_offset += used as u64;
            // Bytes left over are a torn or damaged tail from a crash (no writer is active
            // while we hold the lock): the index records are the truth.
            if used < n && repair {
                s.jnl
                    .set_len(s.jnl_offset)
                    .ctx(|| format!("repairing journal of {}", self.name))?;
            }
            if damaged {
                tracing::warn!(mailbox = %self.name, "flag journal damaged after offset {}; reloading index", s.jnl_offset);
                *s = self.load(repair)?;
                return Ok(());
            }
            if reload_keywords {
                s.keywords = read_keywords(&s.idx, &self.name)?;
            }
        }
        s.header = h;
        if repair {
            self.repair_tail(s)?;
        }
        Ok(())
    }

    /// Load everything from disk.
    fn load(&self, repair: bool) -> Result<FolderState> {
        let idx_path = self.files.path(IDX);
        let idx = open_rw(&idx_path).ctx(|| format!("opening index of {}", self.name))?;
        let idx_ino = idx.metadata().ctx(|| format!("stat {}", self.name))?.ino();
        let mut hb = [0u8; index::HEADER_SIZE];
        let n = fsutil::read_at_most(&idx, &mut hb, 0).ctx(|| format!("reading {}", self.name))?;
        if n < index::HEADER_SIZE {
            return Err(StoreError::Corrupt(format!(
                "Mailbox corrupted, missing fixed headers: {}",
                self.name
            )));
        }
        let header = Header::decode(&hb, &self.name)?;
        let keywords = read_keywords(&idx, &self.name)?;
        let jnl_path = self.files.path(JNL);
        let jnl = match open_rw(&jnl_path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound && repair => {
                // The journal is redundant: recreate it empty.
                let jh = JournalHeader {
                    uidvalidity: header.uidvalidity,
                    generation: 1,
                };
                fsutil::write_atomic(&jnl_path, &jh.encode())
                    .ctx(|| format!("recreating journal of {}", self.name))?;
                open_rw(&jnl_path).ctx(|| format!("opening journal of {}", self.name))?
            }
            Err(e) => return Err(e).ctx(|| format!("opening journal of {}", self.name)),
        };
        let jnl_ino = jnl.metadata().ctx(|| format!("stat {}", self.name))?.ino();
        let jnl_offset = jnl.metadata().ctx(|| format!("stat {}", self.name))?.len();
        let cache = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.files.path(CACHE))
            .ctx(|| format!("opening cache of {}", self.name))?;
        let restarted = repair && needs_restart_check(&header);
        let mut count = header.record_count;
        if restarted {
            // A power loss may have kept the header but not the last records it counts: those
            // were never acknowledged (their round had not finished).
            let len = idx.metadata().ctx(|| format!("stat {}", self.name))?.len();
            count = count.min(len.saturating_sub(index::RECORDS_OFFSET) / RECORD_SIZE as u64);
        }
        let msgs = if restarted {
            // Index pages written after the last flush may be lost in any order: keep the
            // valid prefix (what follows, if acknowledged, comes back from the message log).
            read_valid_prefix(&idx, count, &self.name)?
        } else {
            read_msgs(&idx, count, &self.name)?
        };
        if restarted {
            count = msgs.len() as u64;
        }
        let mut s = FolderState {
            header,
            keywords,
            msgs,
            idx: Arc::new(idx),
            idx_ino,
            jnl,
            jnl_ino,
            jnl_offset,
            cache,
        };
        if restarted && count < s.header.record_count {
            tracing::warn!(mailbox = %self.name, lost = s.header.record_count - count, "index records lost in a restart of the machine dropped (the acknowledged ones come back from the message log)");
            s.header.record_count = count;
            let all = read_records(&s.idx, 0, count, &self.name)?;
            recount(&mut s.header, &all);
            s.idx
                .set_len(index::record_offset(count))
                .ctx(|| format!("repairing index of {}", self.name))?;
        }
        if repair {
            self.repair_tail(&mut s)?;
        }
        if restarted {
            self.restore_from_log(&mut s)?;
            self.verify_after_restart(&mut s)?;
        }
        Ok(s)
    }

    /// After the machine restarted, the records the last writers did not yet know durable
    /// (UID at or above the header's `durable_uid`) are checked against their message files.
    /// A record whose file is missing, of another size or another content (CRC32) was never
    /// acknowledged: its group-commit round, which flushes the data with the record, had not
    /// finished. It is dropped, and its file with it; UIDNEXT stays, so no UID is reused.
    fn verify_after_restart(&self, s: &mut FolderState) -> Result<()> {
        let first = s.msgs.partition_point(|m| m.uid < s.header.durable_uid);
        let recs = read_records(&s.idx, first as u64, s.msgs.len() as u64, &self.name)?;
        let mut keep = Vec::with_capacity(recs.len());
        let mut dropped = Vec::new();
        for r in recs {
            if r.is_expunged() || self.file_matches(&r)? {
                keep.push(r);
            } else {
                dropped.push(r);
            }
        }
        if !dropped.is_empty() {
            let mut buf = Vec::with_capacity(keep.len() * RECORD_SIZE);
            for r in &keep {
                buf.extend_from_slice(&r.encode());
            }
            let io = || -> io::Result<()> {
                s.idx
                    .write_all_at(&buf, index::record_offset(first as u64))?;
                s.idx
                    .set_len(index::record_offset((first + keep.len()) as u64))?;
                for r in &dropped {
                    match std::fs::remove_file(self.files.message(r.uid)) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                        _ => {}
                    }
                }
                for d in dropped
                    .iter()
                    .map(|r| self.files.bucket(r.uid))
                    .collect::<HashSet<_>>()
                {
                    fsutil::sync_dir(&d)?;
                }
                Ok(())
            };
            io().ctx(|| format!("repairing index of {}", self.name))?;
            s.msgs.truncate(first);
            s.msgs.extend(keep.iter().map(Msg::from));
            let all = read_records(&s.idx, 0, s.msgs.len() as u64, &self.name)?;
            recount(&mut s.header, &all);
            let uids: Vec<u32> = dropped.iter().map(|r| r.uid).collect();
            tracing::warn!(mailbox = %self.name, ?uids, "messages whose data did not survive a restart of the machine were never acknowledged; their index records are dropped");
        }
        s.header.durable_uid = s.header.uidnext;
        s.header.boot_id = fsutil::boot_id().unwrap_or([0xff; 16]);
        s.idx
            .write_all_at(&s.header.encode(), 0)
            .and_then(|()| s.idx.sync_data())
            .ctx(|| format!("repairing index of {}", self.name))?;
        Ok(())
    }

    /// After the machine restarted: what a power loss took before a checkpoint flushed it
    /// comes back from the message log (see `wal`). Records the index lost (the index is not
    /// flushed for appends whose records went to the log) are added again, and messages whose
    /// files are missing or damaged get their bytes back; then the segments go.
    fn restore_from_log(&self, s: &mut FolderState) -> Result<()> {
        let ctx = || format!("restoring messages of {} from its log", self.name);
        let segments = wal::segments_in(&self.files.dir).ctx(ctx)?;
        if segments.is_empty() {
            return Ok(());
        }
        let mut entries = Vec::new();
        for (i, path) in segments.iter().enumerate() {
            for m in wal::scan_segment(path).ctx(ctx)? {
                if m.uidvalidity == s.header.uidvalidity {
                    entries.push((m.record.uid, i, m));
                }
            }
        }
        entries.sort_by_key(|(uid, _, _)| *uid);
        entries.dedup_by_key(|(uid, _, _)| *uid);
        let mut last = s.msgs.last().map_or(0, |m| m.uid);
        let (mut added, mut restored) = (Vec::new(), Vec::new());
        for (uid, seg, m) in entries {
            let path = &segments[seg];
            if uid > last {
                // Its record was lost: the log's copy goes back at the end of the index.
                let data = wal::read_data(path, &m).ctx(ctx)?;
                if !self.file_matches(&m.record)? {
                    self.put_restored(&m.record, &data).ctx(ctx)?;
                }
                let pos = s.msgs.len() as u64;
                s.idx
                    .write_all_at(&m.record.encode(), index::record_offset(pos))
                    .ctx(ctx)?;
                s.msgs.push(Msg::from(&m.record));
                last = uid;
                added.push(uid);
                continue;
            }
            let Some(live) = s.get(uid).filter(|x| !x.is_expunged()) else {
                continue;
            };
            let r = s.record(live.uid, &self.name)?;
            let same = r.size == m.len as u64 && (r.content_crc == 0 || r.content_crc == m.crc);
            if same && !self.file_matches(&r)? {
                let data = wal::read_data(path, &m).ctx(ctx)?;
                self.put_restored(&r, &data).ctx(ctx)?;
                restored.push(uid);
            }
        }
        // Appends in flight at the power loss may have shown their UIDs to other sessions
        // and left no entry: UIDs from here on are never handed out again.
        let next = s.header.uidnext.max(last.saturating_add(1));
        s.header.uidnext = next.saturating_add(UID_GAP_AFTER_LOSS).min(u32::MAX - 1);
        if !added.is_empty() {
            let all = read_records(&s.idx, 0, s.msgs.len() as u64, &self.name)?;
            recount(&mut s.header, &all);
        }
        s.idx.write_all_at(&s.header.encode(), 0).ctx(ctx)?;
        if !added.is_empty() {
            tracing::warn!(mailbox = %self.name, uids = ?added, "index records lost in a restart of the machine restored from the message log");
        }
        s.idx.sync_data().ctx(ctx)?;
        if !restored.is_empty() {
            tracing::warn!(mailbox = %self.name, uids = ?restored, "message files lost in a restart of the machine restored from the message log");
        }
        wal::remove_segments(&segments).ctx(ctx)
    }

    /// Write a message file back from the log, durably (file, then its directory entry).
    fn put_restored(&self, r: &Record, data: &[u8]) -> io::Result<()> {
        wal::write_back(
            &self.files.dir,
            &self.files.message(r.uid),
            data,
            r.internal_date,
        )
    }

    /// The message file of `r` is there with the size and content it was recorded with. An
    /// error other than its absence is reported, not taken for a mismatch.
    fn file_matches(&self, r: &Record) -> Result<bool> {
        let path = self.files.message(r.uid);
        match std::fs::read(&path) {
            Ok(data) => Ok(data.len() as u64 == r.size
                && (r.content_crc == 0 || crc32fast::hash(&data) == r.content_crc)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).ctx(|| format!("reading {}", path.display())),
        }
    }

    /// After a crash between writing records and writing the header, the file holds more
    /// records than the header counts: adopt the complete, valid ones, cut off the rest.
    fn repair_tail(&self, s: &mut FolderState) -> Result<()> {
        let len = s
            .idx
            .metadata()
            .ctx(|| format!("stat {}", self.name))?
            .len();
        let expected = index::record_offset(s.header.record_count);
        if len == expected {
            return Ok(());
        }
        if len < expected {
            return Err(StoreError::Corrupt(format!(
                "Mailbox corrupted, start_offset beyond EOF: {}",
                self.name
            )));
        }
        let extra = (len - expected) / RECORD_SIZE as u64;
        let mut adopted = 0u64;
        for i in 0..extra {
            let mut b = [0u8; RECORD_SIZE];
            let pos = s.header.record_count + i;
            fsutil::read_at_most(&s.idx, &mut b, index::record_offset(pos))
                .ctx(|| format!("reading {}", self.name))?;
            match Record::decode(&b) {
                Some(r)
                    if s.msgs.last().is_none_or(|m| m.uid < r.uid)
                        && self.files.message(r.uid).exists() =>
                {
                    s.msgs.push(Msg::from(&r));
                    adopted += 1;
                }
                _ => break,
            }
        }
        let keep = index::record_offset(s.header.record_count + adopted);
        s.idx
            .set_len(keep)
            .ctx(|| format!("repairing index of {}", self.name))?;
        if adopted > 0 {
            let all = read_records(&s.idx, 0, s.msgs.len() as u64, &self.name)?;
            recount(&mut s.header, &all);
        }
        s.header.record_count = s.msgs.len() as u64;
        s.idx
            .write_all_at(&s.header.encode(), 0)
            .ctx(|| format!("repairing index of {}", self.name))?;
        s.idx
            .sync_data()
            .ctx(|| format!("repairing index of {}", self.name))?;
        tracing::warn!(mailbox = %self.name, adopted, "index tail repaired after an interrupted write");
        Ok(())
    }

    /// The bucket directory the next message will most likely go to (created if missing), so
    /// that a message's temporary file can be written there and renamed within one directory:
    /// a rename across directories takes the filesystem-wide rename lock.
    pub fn staging_dir(&self) -> Result<PathBuf> {
        // A hint only: a message staged in another bucket is renamed across directories.
        let uidnext = match self.uidnext_hint.load(Ordering::Relaxed) {
            0 => peek_header(&self.files, &self.name)?.uidnext,
            n => n,
        };
        let bucket = self.files.bucket(uidnext);
        let number = (uidnext >> 12) + 1;
        if self.staged_bucket.load(Ordering::Relaxed) == number {
            return Ok(bucket);
        }
        if !bucket.exists() {
            match std::fs::create_dir(&bucket) {
                Ok(()) => fsutil::sync_dir(&self.files.dir)
                    .ctx(|| format!("flushing {}", self.files.dir.display()))?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).ctx(|| format!("creating {}", bucket.display())),
            }
        }
        self.staged_bucket.store(number, Ordering::Relaxed);
        Ok(bucket)
    }

    /// Append prepared messages; returns their UIDs once they are on stable storage.
    pub fn append(&self, mut msgs: Vec<PreparedMessage>, max_messages: u64) -> Result<Vec<u32>> {
        self.write(|w| w.append(&mut msgs, max_messages))
    }

    /// `append`, with the folder's UIDVALIDITY as the write saw it. Concurrent appends of
    /// this process are combined into one write (see `AppendQueue`).
    pub fn append_with_validity(
        &self,
        mut msgs: Vec<PreparedMessage>,
        max_messages: u64,
    ) -> Result<(u32, Vec<u32>)> {
        if msgs.iter().any(|m| m.data_durable) {
            // A bulk import (already flushed) on its own: its write skips the file flushes.
            return self.write(|w| {
                let uids = w.append(&mut msgs, max_messages)?;
                Ok((w.state.header.uidvalidity, uids))
            });
        }
        let me = Arc::new(AppendSlot {
            request: Mutex::new(Some((msgs, max_messages))),
            outcome: Mutex::new(None),
            lead: AtomicBool::new(false),
            thread: std::thread::current(),
        });
        let mut lead = self.appends.join(&me);
        loop {
            if lead {
                self.combine();
            }
            if let Some(r) = me.take_outcome() {
                return r;
            }
            lead = me.lead.swap(false, Ordering::AcqRel);
            if !lead {
                // Woken by an answer or by the lead; a wake given before is kept.
                std::thread::park();
            }
        }
    }

    /// Take the waiting appends into one write, hand the queue to the next combiner, wait for
    /// the commit round, answer every caller taken.
    fn combine(&self) {
        let batch = self.appends.take();
        let mut outcomes: Vec<Option<AppendOutcome>> = batch.iter().map(|_| None).collect();
        let mut retry: &[Arc<AppendSlot>] = &[];
        let written = self.write_locked(|w| {
            for (i, slot) in batch.iter().enumerate() {
                let Some((mut msgs, max)) = slot.take_request() else {
                    continue;
                };
                match w.append(&mut msgs, max) {
                    Ok(uids) => outcomes[i] = Some(Ok((w.state.header.uidvalidity, uids))),
                    Err(e) => {
                        let wrote_nothing = matches!(e, StoreError::FolderFull { .. });
                        outcomes[i] = Some(Err(e));
                        if !wrote_nothing {
                            // The rest go again in a write of their own, from a reloaded state.
                            w.reload_after = true;
                            retry = &batch[i + 1..];
                            break;
                        }
                    }
                }
            }
            Ok(())
        });
        self.appends.release(retry);
        let done = batch.len() - retry.len();
        let failed = match written {
            Ok(((), commit)) => self.finish_write(commit).err(),
            Err(e) => Some(e),
        };
        for (slot, outcome) in batch[..done].iter().zip(outcomes) {
            let r = match (&failed, outcome) {
                (_, Some(Err(e))) => Err(e),
                (None, Some(Ok(v))) => Ok(v),
                (Some(e), _) => Err(e.duplicate()),
                (None, None) => Err(StoreError::Corrupt(format!(
                    "append to {} lost its request",
                    self.name
                ))),
            };
            slot.answer(r);
        }
    }

    /// Append records for message files already linked in place (copy/move). `src` gives,
    /// for each message, a function that places the file at a given UID path.
    pub fn append_linked(&self, items: Vec<LinkedMessage>, max_messages: u64) -> Result<Vec<u32>> {
        self.write(|w| w.append_linked(items, max_messages))
    }

    pub fn store_flags(
        &self,
        uids: &[u32],
        op: FlagOp,
        flags: u32,
        keywords: &[String],
        unchanged_since: Option<u64>,
    ) -> Result<StoreOutcome> {
        self.write(|w| w.store_flags(uids, op, flags, keywords, unchanged_since))
    }

    /// Expunge messages flagged \Deleted (restricted to `uids` when given), or with
    /// `force`, exactly `uids` whatever their flags (MOVE).
    pub fn expunge(&self, uids: Option<&[u32]>, force: bool) -> Result<Vec<Expunged>> {
        self.write(|w| w.expunge(uids, force))
    }

    /// Claim every message above the recent mark as \Recent for the caller; returns the old mark.
    pub fn claim_recent(&self) -> Result<u32> {
        self.write(|w| {
            let old = w.state.header.recent_uid;
            let top = w.state.header.uidnext.saturating_sub(1);
            if top > old {
                w.state.header.recent_uid = top;
                w.write_header()?;
            }
            Ok(old)
        })
    }

    /// The parsed structure of `uid`: from the cache, or (cache damaged) parsed afresh from the
    /// message file, with the seed's log line so the administrator knows to reconstruct.
    pub fn structure(&self, uid: u32) -> Result<MessageStructure> {
        let rec = self.read(|s| s.record(uid, &self.name))?;
        let cached = self.read(|s| Ok(s.cached_structure(&rec)))?;
        if let Some(bytes) = cached {
            if let Ok(st) = MessageStructure::from_bytes(&bytes) {
                return Ok(st);
            }
        }
        tracing::error!(
            "Invalid cache data for msg {} in mailbox {}. Needs reconstruct",
            uid,
            self.name
        );
        let raw = std::fs::read(self.files.message(uid))
            .ctx(|| format!("reading message {uid} of {}", self.name))?;
        Ok(MessageStructure::parse(&raw))
    }

    /// Rewrite store.idx without expunged records (new generation), and the journal as a
    /// snapshot of current flags. Runs under the exclusive lock.
    pub fn compact(&self) -> Result<()> {
        self.write(|w| w.compact())
    }
}

/// A message file already in the store (another folder's), to be linked into this folder.
pub struct LinkedMessage {
    pub source: PathBuf,
    pub size: u64,
    /// The source record's `content_crc` (the file is the same).
    pub content_crc: u32,
    pub internal_date: i64,
    pub flags: u32,
    pub keywords: Vec<String>,
    pub structure: Vec<u8>,
}

fn read_keywords(idx: &File, name: &str) -> Result<Vec<String>> {
    let mut kb = vec![0u8; index::KEYWORD_SLOTS * index::KEYWORD_SLOT_SIZE];
    fsutil::read_at_most(idx, &mut kb, index::KEYWORDS_OFFSET)
        .ctx(|| format!("reading keywords of {name}"))?;
    index::decode_keywords(&kb, name)
}

/// Recompute the header's counters from the records.
pub fn recount(h: &mut Header, records: &[Record]) {
    h.exists = 0;
    h.unseen = 0;
    h.deleted = 0;
    h.total_size = 0;
    h.expunged_records = 0;
    h.record_count = records.len() as u64;
    for r in records {
        if r.is_expunged() {
            h.expunged_records += 1;
            continue;
        }
        h.exists += 1;
        h.total_size += r.size;
        if r.flags & flag::SEEN == 0 {
            h.unseen += 1;
        }
        if r.flags & flag::DELETED != 0 {
            h.deleted += 1;
        }
        h.highest_modseq = h.highest_modseq.max(r.modseq);
        if r.uid >= h.uidnext {
            h.uidnext = r.uid + 1;
        }
    }
}

/// What one appended message needs recorded.
struct NewMessage<'a> {
    /// Its bytes go to the message log (its directory entry needs no flush).
    logged: bool,
    size: u64,
    content_crc: u32,
    internal_date: i64,
    flags: u32,
    keywords: &'a [String],
    structure: &'a [u8],
}

/// Messages appended by one operation: they share a modseq.
struct Batch {
    modseq: u64,
    now: i64,
    uids: Vec<u32>,
    entries: Vec<Entry>,
}

impl Batch {
    fn new(modseq: u64) -> Self {
        Batch {
            modseq,
            now: now_secs(),
            uids: Vec::new(),
            entries: Vec::new(),
        }
    }
}

/// Mutations under the exclusive lock.
struct Writer<'a> {
    state: &'a mut FolderState,
    files: &'a FolderFiles,
    name: &'a str,
    dirs: Vec<PathBuf>,
    wrote: bool,
    journaled: bool,
    /// The messages this write appended are already on stable storage (bulk import).
    data_durable: bool,
    /// Files this write placed that are still open, by UID (ascending).
    opened: Vec<(u32, Arc<File>)>,
    log: &'a Arc<FolderLog>,
    /// Messages this write put in the message log, by UID (ascending).
    logged: Vec<u32>,
    /// Their entries, written to the log at the end of the write (after their files were
    /// placed: a checkpoint that seals the segment then flushes them too).
    log_buf: Vec<u8>,
    /// The log segment they went to.
    log_file: Option<Arc<File>>,
    /// Drop the in-memory state after this write (part of it failed).
    reload_after: bool,
    /// The append being finished logged all its messages (their records with them).
    logged_append: bool,
    /// This write changed the index or journal in a way the message log does not carry: the
    /// round must flush them.
    unlogged: bool,
}

impl Writer<'_> {
    fn write_header(&mut self) -> Result<()> {
        self.state
            .idx
            .write_all_at(&self.state.header.encode(), 0)
            .ctx(|| format!("writing index header of {}", self.name))?;
        self.wrote = true;
        self.unlogged |= !self.logged_append;
        Ok(())
    }

    fn journal(&mut self, entries: &[Entry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(entries.len() * 40);
        for e in entries {
            e.encode_into(&mut buf);
        }
        self.state
            .jnl
            .write_all_at(&buf, self.state.jnl_offset)
            .ctx(|| format!("writing flag journal of {}", self.name))?;
        self.state.jnl_offset += buf.len() as u64;
        self.wrote = true;
        self.journaled = true;
        self.unlogged |= !self.logged_append;
        Ok(())
    }

    /// Slots for `names`, defining new keywords as needed.
    fn keyword_bits(&mut self, names: &[String]) -> Result<u128> {
        let mut bits = 0u128;
        let mut defined = Vec::new();
        for n in names {
            if n.is_empty() || n.len() > index::MAX_KEYWORD_LEN {
                return Err(StoreError::InvalidKeyword(n.clone()));
            }
            let slot = match self
                .state
                .keywords
                .iter()
                .position(|k| k.eq_ignore_ascii_case(n))
            {
                Some(i) => i,
                None => {
                    let i = match self.state.keywords.iter().position(|k| k.is_empty()) {
                        Some(i) => i,
                        None if self.state.keywords.len() < index::KEYWORD_SLOTS => {
                            self.state.keywords.push(String::new());
                            self.state.keywords.len() - 1
                        }
                        None => return Err(StoreError::TooManyKeywords(self.name.to_owned())),
                    };
                    self.state.keywords[i] = n.clone();
                    let at = index::KEYWORDS_OFFSET + (i * index::KEYWORD_SLOT_SIZE) as u64;
                    self.state
                        .idx
                        .write_all_at(&index::encode_keyword(n), at)
                        .ctx(|| format!("writing keywords of {}", self.name))?;
                    defined.push(Entry::Keyword {
                        slot: i as u8,
                        name: n.clone(),
                    });
                    i
                }
            };
            bits |= 1 << slot;
        }
        if !defined.is_empty() {
            // A new keyword slot lives only in the index: flush it.
            self.unlogged = true;
        }
        self.journal(&defined)?;
        Ok(bits)
    }

    fn check_room(&self, adding: usize, max_messages: u64) -> Result<()> {
        if max_messages > 0 && self.state.header.exists + adding as u64 > max_messages {
            return Err(StoreError::FolderFull {
                mailbox: self.name.to_owned(),
                limit: max_messages,
            });
        }
        if self.state.header.uidnext as u64 + adding as u64 >= u32::MAX as u64 {
            return Err(StoreError::FolderFull {
                mailbox: self.name.to_owned(),
                limit: u32::MAX as u64 - 1,
            });
        }
        Ok(())
    }

    /// Give `place` successive UIDs until it succeeds (a stray file left by a crash at a UID is
    /// skipped, never overwritten).
    fn place(&mut self, mut place: impl FnMut(&Path) -> io::Result<bool>) -> Result<u32> {
        for _ in 0..1000 {
            let uid = self.state.header.uidnext;
            let bucket = self.files.bucket(uid);
            let target = self.files.message(uid);
            // The bucket is nearly always there (made when the message was staged): it is
            // looked for only when placing fails.
            let placed = match place(&target) {
                Err(e) if e.kind() == io::ErrorKind::NotFound && !bucket.exists() => {
                    std::fs::create_dir_all(&bucket)
                        .ctx(|| format!("creating {}", bucket.display()))?;
                    self.dirs.push(self.files.dir.clone());
                    place(&target)
                }
                r => r,
            }
            .ctx(|| format!("placing message {uid} in {}", self.name))?;
            self.state.header.uidnext = uid + 1;
            if placed {
                return Ok(uid);
            }
            tracing::warn!(mailbox = %self.name, uid, "stray message file at new UID left in place for reconstruct; UID skipped");
        }
        Err(StoreError::Corrupt(format!(
            "Mailbox corrupted, stray message files at UIDNEXT: {}. Needs reconstruct",
            self.name
        )))
    }

    fn add_record(&mut self, mut rec: Record, structure: &[u8]) -> Result<Record> {
        // Cache entry first (not flushed: it is rebuilt from the file if ever damaged).
        let cache_end = self
            .state
            .cache
            .metadata()
            .ctx(|| format!("stat cache of {}", self.name))?
            .len();
        let entry = encode_cache_entry(rec.uid, structure);
        self.state
            .cache
            .write_all_at(&entry, cache_end)
            .ctx(|| format!("writing cache of {}", self.name))?;
        rec.cache_offset = cache_end;
        rec.cache_len = structure.len() as u32;
        let pos = self.state.msgs.len() as u64;
        self.state
            .idx
            .write_all_at(&rec.encode(), index::record_offset(pos))
            .ctx(|| format!("writing index of {}", self.name))?;
        let h = &mut self.state.header;
        h.record_count = pos + 1;
        h.exists += 1;
        h.total_size += rec.size;
        if rec.flags & flag::SEEN == 0 {
            h.unseen += 1;
        }
        if rec.flags & flag::DELETED != 0 {
            h.deleted += 1;
        }
        self.state.msgs.push(Msg::from(&rec));
        self.wrote = true;
        Ok(rec)
    }

    fn append(&mut self, msgs: &mut [PreparedMessage], max_messages: u64) -> Result<Vec<u32>> {
        self.check_room(msgs.len(), max_messages)?;
        self.data_durable = msgs.iter().all(|m| m.data_durable);
        let mut batch = Batch::new(self.state.header.highest_modseq + 1);
        let logged_before = self.logged.len();
        for m in msgs.iter_mut() {
            let tmp = m.tmp.clone();
            let rec = self.add_message(
                &mut batch,
                |target| fsutil::rename_noreplace(&tmp, target),
                NewMessage {
                    logged: m.log_data.is_some(),
                    size: m.size,
                    content_crc: m.content_crc,
                    internal_date: m.internal_date,
                    flags: m.flags,
                    keywords: &m.keywords,
                    structure: &m.structure,
                },
            )?;
            m.mark_committed();
            let uid = rec.uid;
            if let Some(f) = &m.file {
                self.opened.push((uid, f.clone()));
            }
            if let Some(data) = m.log_data.take() {
                let uidvalidity = self.state.header.uidvalidity;
                wal::encode_entry(&mut self.log_buf, uidvalidity, &rec.encode(), &data);
                self.logged.push(uid);
            }
            batch.uids.push(uid);
        }
        // The log entries carry the records too: if every message went there (and no keyword
        // was defined), the index needs no flush of its own for this append.
        self.logged_append = self.logged.len() - logged_before == msgs.len();
        let r = self.finish_batch(batch);
        self.logged_append = false;
        r
    }

    /// Undo the messages this write added (its log entries could not be written), keeping
    /// UIDNEXT where it got to: a UID another session may have seen is not handed out again.
    /// Best effort: what it cannot undo, the next load finds as an unflushed tail.
    fn roll_back(&mut self, records_before: usize, header_before: Header) {
        let added: Vec<u32> = self.state.msgs[records_before..]
            .iter()
            .map(|m| m.uid)
            .collect();
        let mut h = header_before;
        h.uidnext = self.state.header.uidnext;
        let _ = self
            .state
            .idx
            .set_len(index::record_offset(records_before as u64));
        let _ = self.state.idx.write_all_at(&h.encode(), 0);
        for uid in added {
            let _ = std::fs::remove_file(self.files.message(uid));
        }
        self.state.msgs.truncate(records_before);
        self.state.header = h;
    }

    /// Write the entries this write logged, in one go.
    fn write_log(&mut self) -> Result<()> {
        if self.log_buf.is_empty() {
            return Ok(());
        }
        let logged = self
            .log
            .write(
                &self.log_buf,
                self.state.header.uidvalidity,
                self.state.idx_ino,
            )
            .ctx(|| format!("writing message log of {}", self.name))?;
        if logged.created {
            self.dirs.push(self.files.dir.clone());
        }
        self.log_file = Some(logged.file);
        self.log_buf.clear();
        Ok(())
    }

    fn append_linked(&mut self, items: Vec<LinkedMessage>, max_messages: u64) -> Result<Vec<u32>> {
        self.check_room(items.len(), max_messages)?;
        let mut batch = Batch::new(self.state.header.highest_modseq + 1);
        for it in &items {
            let src = &it.source;
            let uid = self
                .add_message(
                    &mut batch,
                    |target| match std::fs::hard_link(src, target) {
                        Ok(()) => Ok(true),
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                        // Another filesystem (another partition): copy, flush, then place.
                        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                            let tmp = target.with_extension("copy");
                            std::fs::copy(src, &tmp)?;
                            File::open(&tmp)?.sync_data()?;
                            fsutil::rename_noreplace(&tmp, target)
                        }
                        Err(e) => Err(e),
                    },
                    NewMessage {
                        logged: false,
                        size: it.size,
                        content_crc: it.content_crc,
                        internal_date: it.internal_date,
                        flags: it.flags,
                        keywords: &it.keywords,
                        structure: &it.structure,
                    },
                )?
                .uid;
            batch.uids.push(uid);
        }
        self.finish_batch(batch)
    }

    /// Place one message file with `place`, then record it. A file placed but not recorded
    /// (an I/O error) is taken back out: it was never acknowledged.
    fn add_message(
        &mut self,
        batch: &mut Batch,
        place: impl FnMut(&Path) -> io::Result<bool>,
        m: NewMessage<'_>,
    ) -> Result<Record> {
        let kw = self.keyword_bits(m.keywords)?;
        let uid = self.place(place)?;
        if !m.logged {
            // Its name must reach the disk with the round; a logged message's file is
            // restored from the log if the name is lost.
            self.dirs.push(self.files.bucket(uid));
        }
        let rec = Record {
            uid,
            flags: m.flags & flag::USER_MASK,
            internal_date: m.internal_date,
            size: m.size,
            modseq: batch.modseq,
            keywords: kw,
            save_date: batch.now,
            content_crc: m.content_crc,
            ..Default::default()
        };
        if rec.flags != 0 || kw != 0 {
            batch.entries.push(Entry::Flags {
                uid,
                flags: rec.flags,
                modseq: batch.modseq,
                keywords: kw,
            });
        }
        self.add_record(rec, m.structure).inspect_err(|_| {
            let _ = std::fs::remove_file(self.files.message(uid));
        })
    }

    fn finish_batch(&mut self, batch: Batch) -> Result<Vec<u32>> {
        self.state.header.highest_modseq = batch.modseq;
        self.journal(&batch.entries)?;
        self.write_header()?;
        Ok(batch.uids)
    }

    fn store_flags(
        &mut self,
        uids: &[u32],
        op: FlagOp,
        flags: u32,
        keywords: &[String],
        unchanged_since: Option<u64>,
    ) -> Result<StoreOutcome> {
        let flags = flags & flag::USER_MASK;
        let kw = match op {
            // Removing a keyword that was never defined changes nothing: do not define it.
            FlagOp::Remove => self.state.keyword_bits(keywords),
            _ => self.keyword_bits(keywords)?,
        };
        let modseq = self.state.header.highest_modseq + 1;
        let mut out = StoreOutcome {
            modseq,
            ..Default::default()
        };
        let mut entries = Vec::new();
        for &uid in uids {
            let Some(pos) = self.state.position(uid) else {
                continue;
            };
            let m = self.state.msgs[pos];
            if m.is_expunged() {
                continue;
            }
            if let Some(limit) = unchanged_since {
                if m.modseq > limit {
                    out.modified.push(uid);
                    continue;
                }
            }
            let (nf, nk) = match op {
                FlagOp::Add => (m.flags | flags, m.keywords | kw),
                FlagOp::Remove => (m.flags & !flags, m.keywords & !kw),
                FlagOp::Replace => ((m.flags & !flag::USER_MASK) | flags, kw),
            };
            if nf == m.flags && nk == m.keywords {
                // RFC 7162 3.2: a no-op store with UNCHANGEDSINCE still reports success.
                continue;
            }
            let mut rec = self.state.record_at(pos, self.name)?;
            rec.flags = nf;
            rec.keywords = nk;
            rec.modseq = modseq;
            self.state
                .idx
                .write_all_at(&rec.encode(), index::record_offset(pos as u64))
                .ctx(|| format!("writing index of {}", self.name))?;
            let h = &mut self.state.header;
            if m.flags & flag::SEEN == 0 && nf & flag::SEEN != 0 {
                h.unseen = h.unseen.saturating_sub(1);
            } else if m.flags & flag::SEEN != 0 && nf & flag::SEEN == 0 {
                h.unseen += 1;
            }
            if m.flags & flag::DELETED == 0 && nf & flag::DELETED != 0 {
                h.deleted += 1;
            } else if m.flags & flag::DELETED != 0 && nf & flag::DELETED == 0 {
                h.deleted = h.deleted.saturating_sub(1);
            }
            let nm = Msg {
                uid,
                flags: nf,
                modseq,
                keywords: nk,
            };
            self.state.msgs[pos] = nm;
            entries.push(Entry::Flags {
                uid,
                flags: nf,
                modseq,
                keywords: nk,
            });
            out.changed.push(nm);
        }
        if !out.changed.is_empty() {
            self.state.header.highest_modseq = modseq;
            self.journal(&entries)?;
            self.write_header()?;
        }
        Ok(out)
    }

    fn expunge(&mut self, uids: Option<&[u32]>, force: bool) -> Result<Vec<Expunged>> {
        let wanted: Option<HashSet<u32>> = uids.map(|u| u.iter().copied().collect());
        let modseq = self.state.header.highest_modseq + 1;
        let now = now_secs();
        let mut gone = Vec::new();
        let mut entries = Vec::new();
        let mut exp_lines = String::new();
        for pos in 0..self.state.msgs.len() {
            let m = self.state.msgs[pos];
            if m.is_expunged() {
                continue;
            }
            let selected = wanted.as_ref().is_none_or(|w| w.contains(&m.uid));
            let deleted = m.flags & flag::DELETED != 0;
            if !selected || !(deleted || force) {
                continue;
            }
            let mut rec = self.state.record_at(pos, self.name)?;
            rec.flags |= flag::EXPUNGED;
            rec.modseq = modseq;
            self.state
                .idx
                .write_all_at(&rec.encode(), index::record_offset(pos as u64))
                .ctx(|| format!("writing index of {}", self.name))?;
            let h = &mut self.state.header;
            h.exists = h.exists.saturating_sub(1);
            h.total_size = h.total_size.saturating_sub(rec.size);
            h.expunged_records += 1;
            if m.flags & flag::SEEN == 0 {
                h.unseen = h.unseen.saturating_sub(1);
            }
            if deleted {
                h.deleted = h.deleted.saturating_sub(1);
            }
            self.state.msgs[pos].flags = rec.flags;
            self.state.msgs[pos].modseq = modseq;
            entries.push(Entry::Flags {
                uid: m.uid,
                flags: rec.flags,
                modseq,
                keywords: m.keywords,
            });
            exp_lines.push_str(&format!("{} {}\n", m.uid, now));
            gone.push(Expunged {
                uid: m.uid,
                size: rec.size,
                modseq,
            });
        }
        if gone.is_empty() {
            return Ok(gone);
        }
        self.state.header.highest_modseq = modseq;
        // store.exp: the files stored may erase once the grace period has passed.
        let mut exp = OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.files.path(EXP))
            .ctx(|| format!("opening store.exp of {}", self.name))?;
        exp.write_all(exp_lines.as_bytes())
            .ctx(|| format!("writing store.exp of {}", self.name))?;
        self.journal(&entries)?;
        self.write_header()?;
        let h = &self.state.header;
        if h.expunged_records > 4096 && h.expunged_records * 2 > h.record_count {
            self.compact()?;
        }
        Ok(gone)
    }

    fn compact(&mut self) -> Result<()> {
        let all = self.state.records(0, self.state.msgs.len(), self.name)?;
        let live: Vec<Record> = all.into_iter().filter(|r| !r.is_expunged()).collect();
        let mut h = self.state.header;
        h.generation += 1;
        recount(&mut h, &live);
        let buf = index::encode_file(&h, &self.state.keywords, &live);
        let jbuf = journal::snapshot(h.uidvalidity, h.generation, &self.state.keywords, &live);
        fsutil::write_atomic(&self.files.path(JNL), &jbuf)
            .ctx(|| format!("compacting journal of {}", self.name))?;
        fsutil::write_atomic(&self.files.path(IDX), &buf)
            .ctx(|| format!("compacting index of {}", self.name))?;
        let idx = open_rw(&self.files.path(IDX)).ctx(|| format!("reopening {}", self.name))?;
        let jnl = open_rw(&self.files.path(JNL)).ctx(|| format!("reopening {}", self.name))?;
        self.state.idx_ino = idx.metadata().ctx(|| format!("stat {}", self.name))?.ino();
        self.state.jnl_ino = jnl.metadata().ctx(|| format!("stat {}", self.name))?.ino();
        self.state.jnl_offset = jbuf.len() as u64;
        self.state.idx = Arc::new(idx);
        self.state.jnl = jnl;
        self.state.header = h;
        self.state.msgs = live.iter().map(Msg::from).collect();
        self.wrote = true;
        Ok(())
    }
}

/// One `store.cache` entry as the store writes it: magic, UID, length, CRC32, then the
/// serialised structure. For repair tools that rebuild the cache.
pub fn encode_cache_entry(uid: u32, structure: &[u8]) -> Vec<u8> {
    let mut entry = Vec::with_capacity(CACHE_ENTRY_HEADER + structure.len());
    entry.extend_from_slice(&CACHE_MAGIC.to_le_bytes());
    entry.extend_from_slice(&uid.to_le_bytes());
    entry.extend_from_slice(&(structure.len() as u32).to_le_bytes());
    entry.extend_from_slice(&crc32fast::hash(structure).to_le_bytes());
    entry.extend_from_slice(structure);
    entry
}

/// The verified payload of `rec`'s entry in a whole `store.cache` read into memory, or `None`
/// when the entry is missing or damaged (the check `FolderState::cached_structure` makes).
pub fn decode_cache_entry<'a>(cache: &'a [u8], rec: &Record) -> Option<&'a [u8]> {
    if rec.cache_len == 0 {
        return None;
    }
    let start = usize::try_from(rec.cache_offset).ok()?;
    let end = start
        .checked_add(CACHE_ENTRY_HEADER)?
        .checked_add(rec.cache_len as usize)?;
    let b = cache.get(start..end)?;
    let g4 = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    if g4(0) != CACHE_MAGIC || g4(4) != rec.uid || g4(8) != rec.cache_len {
        return None;
    }
    let payload = &b[CACHE_ENTRY_HEADER..];
    (crc32fast::hash(payload) == g4(12)).then_some(payload)
}

/// The index was last written in another boot of the machine (a power loss may have come
/// between): records from its `durable_uid` on are to be checked against their files.
fn needs_restart_check(h: &Header) -> bool {
    h.boot_id != [0u8; 16] && Some(h.boot_id) != fsutil::boot_id()
}

/// For repair tools holding the folder's exclusive lock, before they look at the files: if
/// the machine restarted since the folder was last written, what a power loss took comes back
/// from the message log (see `wal`), as a folder's first load would do; if the index cannot
/// be read at all, every logged message file is written back. True if anything was done.
pub fn recover_after_restart(files: &FolderFiles, name: &str) -> Result<bool> {
    match peek_header(files, name) {
        Ok(h) if needs_restart_check(&h) => {
            Folder::new(name.to_owned(), files.clone()).load(true)?;
            Ok(true)
        }
        Ok(_) => Ok(false),
        Err(_) => {
            let restored = wal::salvage(&files.dir, |uid| files.message(uid))
                .ctx(|| format!("restoring messages of {name} from its log"))?;
            Ok(!restored.is_empty())
        }
    }
}

/// Read a folder's header straight from store.idx, without locks or loading the index: what a
/// watcher polls. A torn read (a writer mid-update) is reported as an error; poll again.
pub fn peek_header(files: &FolderFiles, name: &str) -> Result<Header> {
    let f = File::open(files.path(IDX)).ctx(|| format!("opening index of {name}"))?;
    let mut hb = [0u8; index::HEADER_SIZE];
    fsutil::read_at_most(&f, &mut hb, 0).ctx(|| format!("reading index of {name}"))?;
    Header::decode(&hb, name)
}
