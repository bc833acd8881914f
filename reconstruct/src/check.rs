//! One folder: the consistency check of its index against its message files, cache, journal
//! and expunge list, and the rebuild of its index, cache, journal and store.exp from the
//! message files (`reconstruct -r`).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use message_structure::MessageStructure;
use msgstore::folder::{self as sf, recount, CACHE, EXP, IDX, JNL, LCK, META};
use msgstore::fsutil::{self, FileLock};
use msgstore::index::{self, flag, Header, Record, RECORD_SIZE};
use msgstore::journal::{self, Entry, JournalHeader, ReplayedState};
use msgstore::{MailboxEntry, MailboxName};

/// A folder to check: its name, directory and database entry.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: MailboxName,
    pub dir: PathBuf,
    pub entry: MailboxEntry,
}

/// What `-r` does to each folder.
#[derive(Clone, Copy, Debug, Default)]
pub struct RepairOptions {
    /// `-n`: report only.
    pub check_only: bool,
    /// `-f`: rebuild even when the check finds nothing.
    pub force: bool,
    /// `-i`: set store.idx to zero length before rebuilding.
    pub zero_index: bool,
    /// `-e`: remove store.exp before rebuilding, so expunged messages come back.
    pub restore_expunged: bool,
}

/// The result for one folder: lines for stdout and what happened.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub lines: Vec<String>,
    pub damaged: bool,
    pub rebuilt: bool,
    pub failed: bool,
}

/// Everything read from a folder's directory (under its lock).
#[derive(Default)]
struct Scan {
    header: Option<Header>,
    keywords: Option<Vec<String>>,
    /// Valid records within the header's count.
    records: Vec<Record>,
    /// Every valid record found, tail included (for read state).
    all_records: BTreeMap<u32, Record>,
    /// Every record within the count decoded.
    records_complete: bool,
    journal: Option<ReplayedState>,
    journal_generation: u64,
    exp: BTreeMap<u32, i64>,
    /// uid -> (size, mtime)
    files: BTreeMap<u32, (u64, i64)>,
    meta: BTreeMap<String, String>,
    findings: Vec<String>,
}

/// Reads store.cache through a reused window: a large folder's cache read whole was a fresh
/// allocation of tens of megabytes, and zeroing its pages was most of the check's time.
struct CacheWindow {
    file: std::fs::File,
    size: u64,
    header: usize,
    buf: Vec<u8>,
    /// File offset of `buf[0]`, and how many bytes of `buf` are valid.
    start: u64,
    valid: usize,
}

const CACHE_WINDOW: usize = 1 << 20;

impl CacheWindow {
    fn new(file: std::fs::File) -> io::Result<CacheWindow> {
        Ok(CacheWindow {
            size: file.metadata()?.len(),
            file,
            header: sf::encode_cache_entry(0, &[]).len(),
            buf: Vec::new(),
            start: 0,
            valid: 0,
        })
    }

    /// Whether `r`'s cache entry is present and verifies (magic, UID, length, CRC32).
    fn entry_ok(&mut self, r: &Record) -> io::Result<bool> {
        let need = self.header + r.cache_len as usize;
        // Past the end (a record from a bigger cache): missing, and nothing to read.
        if r.cache_offset.saturating_add(need as u64) > self.size {
            return Ok(false);
        }
        let inside = r.cache_offset >= self.start
            && r.cache_offset - self.start + need as u64 <= self.valid as u64;
        if !inside {
            let len = need.max(CACHE_WINDOW);
            if self.buf.len() < len {
                self.buf.resize(len, 0);
            }
            self.start = r.cache_offset;
            self.valid = fsutil::read_at_most(&self.file, &mut self.buf[..len], r.cache_offset)?;
        }
        let mut rel = *r;
        rel.cache_offset = r.cache_offset.saturating_sub(self.start);
        Ok(sf::decode_cache_entry(&self.buf[..self.valid], &rel).is_some())
    }
}

fn read_opt(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn ctx(e: io::Error, what: &str, path: &Path) -> String {
    format!("{what} {}: {e}", path.display())
}

/// The message files of a folder: `<hex bucket>/<uid>.msg`, with size and mtime. Temporary
/// files of writers in progress (`.tmp.*`, `*.copy`) and subfolders (`=...`) are not messages.
pub fn scan_message_files(dir: &Path) -> io::Result<BTreeMap<u32, (u64, i64)>> {
    let mut buckets = Vec::new();
    for ent in std::fs::read_dir(dir)? {
        let ent = ent?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        let Ok(bucket) = u32::from_str_radix(name, 16) else {
            continue;
        };
        if !ent.file_type()?.is_dir() {
            continue;
        }
        buckets.push((bucket, ent.path()));
    }
    // One stat per message file is most of a large folder's check: spread the buckets
    // (4096 messages each) over a few threads (more than cores: they mostly wait in the
    // kernel, and a loaded machine shares its cores out per thread).
    let threads = PARSE_THREADS.min(buckets.len());
    if threads < 2 {
        let mut out = BTreeMap::new();
        for (bucket, path) in &buckets {
            scan_bucket(*bucket, path, &mut out)?;
        }
        return Ok(out);
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|sc| {
        let parts: Vec<_> = (0..threads)
            .map(|_| {
                sc.spawn(|| {
                    let mut out = BTreeMap::new();
                    while let Some((bucket, path)) =
                        buckets.get(next.fetch_add(1, Ordering::Relaxed))
                    {
                        scan_bucket(*bucket, path, &mut out)?;
                    }
                    Ok::<_, io::Error>(out)
                })
            })
            .collect();
        let mut out = BTreeMap::new();
        for p in parts {
            let part = p
                .join()
                .map_err(|_| io::Error::other("a scanning thread panicked"))??;
            out.extend(part);
        }
        Ok(out)
    })
}

/// The message files of one bucket directory into `out`.
fn scan_bucket(bucket: u32, dir: &Path, out: &mut BTreeMap<u32, (u64, i64)>) -> io::Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for f in rd {
        let f = f?;
        let fname = f.file_name();
        let Some(fname) = fname.to_str() else {
            continue;
        };
        let Some(stem) = fname.strip_suffix(".msg") else {
            continue;
        };
        let Ok(uid) = stem.parse::<u32>() else {
            continue;
        };
        if uid == 0 || uid >> 12 != bucket || stem != uid.to_string() {
            continue;
        }
        let md = match f.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if md.is_file() {
            out.insert(uid, (md.len(), md.mtime()));
        }
    }
    Ok(())
}

fn parse_exp(b: &[u8]) -> BTreeMap<u32, i64> {
    let mut out = BTreeMap::new();
    for line in String::from_utf8_lossy(b).lines() {
        let mut it = line.split_whitespace();
        if let Some(Ok(uid)) = it.next().map(str::parse::<u32>) {
            let t = it.next().and_then(|t| t.parse::<i64>().ok()).unwrap_or(0);
            out.insert(uid, t);
        }
    }
    out
}

fn parse_meta(b: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(b)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .collect()
}

fn message_path(dir: &Path, uid: u32) -> PathBuf {
    dir.join(format!("{:x}", uid >> 12))
        .join(format!("{uid}.msg"))
}

/// The finding for a message file whose bytes no longer match the checksum taken at delivery.
fn content_damaged(uid: u32, name: &str) -> String {
    format!(
        "Message file of msg {uid} in mailbox {name} is damaged: its content does not match the checksum taken at delivery. Needs reconstruct"
    )
}

/// `verify_content` (`-n -f`): also read every message file and compare its CRC32 with the
/// one its index record holds. `for_rebuild`: keep every record by UID (`all_records`), which
/// only a rebuild uses.
fn scan(dir: &Path, name: &str, verify_content: bool, for_rebuild: bool) -> Result<Scan, String> {
    let list = || scan_message_files(dir).map_err(|e| ctx(e, "reading message files in", dir));
    // A large folder: stat its message files while its index, journal and cache are read.
    let large = std::fs::metadata(dir.join(IDX))
        .is_ok_and(|m| m.len() > index::record_offset(PARALLEL_PARSE_MIN as u64));
    if !large {
        return scan_with(dir, name, verify_content, for_rebuild, list);
    }
    std::thread::scope(|sc| {
        let files = sc.spawn(list);
        scan_with(dir, name, verify_content, for_rebuild, || {
            files
                .join()
                .map_err(|_| "a scanning thread panicked".to_owned())?
        })
    })
}

fn scan_with(
    dir: &Path,
    name: &str,
    verify_content: bool,
    for_rebuild: bool,
    files: impl FnOnce() -> Result<BTreeMap<u32, (u64, i64)>, String>,
) -> Result<Scan, String> {
    let mut s = Scan::default();
    let idx_path = dir.join(IDX);
    let idx = read_opt(&idx_path).map_err(|e| ctx(e, "reading", &idx_path))?;
    match &idx {
        None => s
            .findings
            .push(format!("Mailbox corrupted, missing fixed headers: {name}")),
        Some(b) => match Header::decode(b, name) {
            Err(e) => s.findings.push(e.to_string()),
            Ok(h) => {
                s.header = Some(h);
                let kw_end = index::RECORDS_OFFSET as usize;
                match b.get(index::KEYWORDS_OFFSET as usize..kw_end) {
                    None => s.findings.push(format!(
                        "Mailbox corrupted, start_offset beyond EOF: {name}"
                    )),
                    Some(kb) => match index::decode_keywords(kb, name) {
                        Ok(k) => s.keywords = Some(k),
                        Err(_) => s
                            .findings
                            .push(format!("Mailbox corrupted, keyword table damaged: {name}")),
                    },
                }
                let len = b.len() as u64;
                // A header that decodes can still claim an absurd count: no overflow.
                let expected = h
                    .record_count
                    .checked_mul(RECORD_SIZE as u64)
                    .and_then(|n| n.checked_add(index::RECORDS_OFFSET))
                    .unwrap_or(u64::MAX);
                if len < expected {
                    s.findings.push(format!(
                        "Mailbox corrupted, start_offset beyond EOF: {name}"
                    ));
                } else if len > expected {
                    s.findings.push(format!(
                        "Mailbox corrupted, index holds {} bytes past its last record (interrupted write): {name}",
                        len - expected
                    ));
                }
                s.records_complete = len >= expected;
                let mut last_uid = 0u32;
                let mut n = 0u64;
                while let Some(chunk) = usize::try_from(index::record_offset(n))
                    .ok()
                    .and_then(|at| b.get(at..at + RECORD_SIZE))
                {
                    let within = n < h.record_count;
                    match Record::decode(chunk) {
                        Some(r) => {
                            if within {
                                if r.uid <= last_uid {
                                    s.findings.push(format!(
                                        "Mailbox corrupted, index record {} out of UID order: {name}",
                                        n + 1
                                    ));
                                    s.records_complete = false;
                                } else {
                                    last_uid = r.uid;
                                    s.records.push(r);
                                }
                            }
                            if for_rebuild {
                                s.all_records.entry(r.uid).or_insert(r);
                            }
                        }
                        None if within => {
                            s.findings.push(format!(
                                "Mailbox corrupted, index record {} damaged: {name}. Needs reconstruct",
                                n + 1
                            ));
                            s.records_complete = false;
                        }
                        None => {}
                    }
                    n += 1;
                }
                if s.records_complete {
                    let mut c = h;
                    recount(&mut c, &s.records);
                    if c.uidnext != h.uidnext {
                        s.findings.push(format!(
                            "Mailbox corrupted, UIDNEXT {} not above the highest UID {}: {name}",
                            h.uidnext,
                            c.uidnext - 1
                        ));
                    } else if (
                        c.exists,
                        c.unseen,
                        c.deleted,
                        c.total_size,
                        c.expunged_records,
                    ) != (
                        h.exists,
                        h.unseen,
                        h.deleted,
                        h.total_size,
                        h.expunged_records,
                    ) {
                        s.findings.push(format!(
                            "Mailbox corrupted, header counters disagree with the records: {name}"
                        ));
                    }
                }
            }
        },
    }

    let jnl_path = dir.join(JNL);
    match read_opt(&jnl_path).map_err(|e| ctx(e, "reading", &jnl_path))? {
        None => s
            .findings
            .push(format!("Flag journal missing in mailbox {name}")),
        Some(b) => {
            if let Ok(jh) = JournalHeader::decode(&b) {
                s.journal_generation = jh.generation;
            }
            match journal::replay(&b) {
                Err(_) => s
                    .findings
                    .push(format!("Flag journal header damaged in mailbox {name}")),
                Ok(st) => {
                    if st.damaged {
                        s.findings
                            .push(format!("Flag journal damaged in mailbox {name}"));
                    }
                    s.journal = Some(st);
                }
            }
        }
    }

    let exp_path = dir.join(EXP);
    if let Some(b) = read_opt(&exp_path).map_err(|e| ctx(e, "reading", &exp_path))? {
        s.exp = parse_exp(&b);
    }
    let meta_path = dir.join(META);
    if let Some(b) = read_opt(&meta_path).map_err(|e| ctx(e, "reading", &meta_path))? {
        s.meta = parse_meta(&b);
    }
    let cache_path = dir.join(CACHE);
    let mut cache = match std::fs::File::open(&cache_path) {
        Ok(f) => Some(CacheWindow::new(f).map_err(|e| ctx(e, "reading", &cache_path))?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(ctx(e, "opening", &cache_path)),
    };
    s.files = files()?;

    if s.header.is_some() {
        let mut to_verify = Vec::new();
        for r in &s.records {
            let file = s.files.get(&r.uid);
            if r.is_expunged() {
                if file.is_some() && !s.exp.contains_key(&r.uid) {
                    s.findings.push(format!(
                        "Expunged msg {} in mailbox {name} still has its file but is not listed in store.exp",
                        r.uid
                    ));
                }
                continue;
            }
            match file {
                None => s.findings.push(format!(
                    "Message file missing for msg {} in mailbox {name}",
                    r.uid
                )),
                Some((size, _)) if *size != r.size => s.findings.push(format!(
                    "Message file of msg {} in mailbox {name} has {size} bytes, the index says {}",
                    r.uid, r.size
                )),
                Some((size, _)) if verify_content && r.content_crc != 0 => {
                    to_verify.push((r.uid, *size, r.content_crc));
                }
                Some(_) => {}
            }
            // The entry's own CRC32 proves it is what the store wrote (decoding all of them
            // would be most of a large folder's check).
            let cache_ok = match cache.as_mut() {
                Some(c) => c.entry_ok(r).map_err(|e| ctx(e, "reading", &cache_path))?,
                None => false,
            };
            if !cache_ok {
                s.findings.push(format!(
                    "Invalid cache data for msg {} in mailbox {name}. Needs reconstruct",
                    r.uid
                ));
            }
            if let Some((_, _, jm)) = s.journal.as_ref().and_then(|j| j.messages.get(&r.uid)) {
                if *jm > r.modseq {
                    s.findings.push(format!(
                        "Flag journal has newer flags than the index for msg {} in mailbox {name}",
                        r.uid
                    ));
                }
            }
        }
        for uid in damaged_contents(dir, &to_verify)? {
            s.findings.push(content_damaged(uid, name));
        }
        if s.records_complete {
            for uid in s.files.keys() {
                // s.records is in UID order (out-of-order records make it incomplete).
                let recorded = s.records.binary_search_by_key(uid, |r| r.uid).is_ok();
                if !recorded && !s.exp.contains_key(uid) {
                    s.findings.push(format!(
                        "Stray message file for msg {uid} in mailbox {name} (no index record)"
                    ));
                }
            }
        }
    }
    Ok(s)
}

/// Check one folder and, unless `-n`, rebuild it when the check found a problem (or always
/// with `-f`). Holds the folder's lock throughout: shared to check, exclusive to repair.
pub fn process(t: &Target, o: &RepairOptions) -> Outcome {
    process_counted(t, o, &AtomicU64::new(0))
}

/// `process`, adding the messages checked or rebuilt to `messages` as it goes (progress).
pub fn process_counted(t: &Target, o: &RepairOptions, messages: &AtomicU64) -> Outcome {
    let name = t.name.as_str();
    let mut out = Outcome::default();
    if !t.dir.is_dir() {
        out.lines.push(format!(
            "Mailbox directory missing for {name} ({}): run reconstruct -m",
            t.dir.display()
        ));
        out.damaged = true;
        out.failed = true;
        return out;
    }
    let lck = t.dir.join(LCK);
    let lock = if o.check_only {
        FileLock::shared(&lck)
    } else {
        FileLock::exclusive(&lck)
    };
    let _lock = match lock {
        Ok(l) => l,
        Err(e) => {
            out.lines.push(format!(
                "Could not lock {name}: {}",
                ctx(e, "locking", &lck)
            ));
            out.failed = true;
            return out;
        }
    };
    if !o.check_only {
        // After a restart of the machine, what the message log holds goes back first: a
        // rebuild from the files alone would miss messages a power loss took from them.
        match sf::recover_after_restart(&sf::FolderFiles::new(t.dir.clone()), name) {
            Ok(true) => out.lines.push(format!(
                "Messages of {name} restored from the message log after a restart of the machine"
            )),
            Ok(false) => {}
            Err(e) => out
                .lines
                .push(format!("Could not replay the message log of {name}: {e}")),
        }
    }
    let mut s = match scan(&t.dir, name, o.check_only && o.force, !o.check_only) {
        Ok(s) => s,
        Err(e) => {
            out.lines.push(format!("Could not check {name}: {e}"));
            out.failed = true;
            return out;
        }
    };
    out.lines.append(&mut s.findings);
    out.damaged = !out.lines.is_empty();
    if o.check_only || (!out.damaged && !o.force) {
        messages.fetch_add(s.files.len() as u64, Ordering::Relaxed);
        return out;
    }
    match rebuild(t, s, o, &mut out.lines, messages) {
        Ok(damaged_files) => {
            out.rebuilt = true;
            out.damaged |= damaged_files > 0;
        }
        Err(e) => {
            out.lines.push(format!("Could not rebuild {name}: {e}"));
            out.failed = true;
        }
    }
    out
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The `store.meta` text for a database entry (the format `Store` writes).
pub fn meta_text(e: &MailboxEntry) -> String {
    format!(
        "uidvalidity={}\nowner={}\nspecialuse={}\nquotaroot={}\ncreated={}\nacl={}\n",
        e.uidvalidity,
        e.owner,
        e.special_use.as_deref().unwrap_or(""),
        e.quota_root,
        e.created,
        e.acl.replace('\n', ";").replace('\t', " ")
    )
}

/// Replace `files` in `dir` atomically and durably: each written to a temporary file and
/// flushed, all renamed into place, then one flush of the directory for all of them.
fn replace_files(dir: &Path, files: &[(&str, &[u8])]) -> Result<(), String> {
    use std::io::Write;
    let tmp = |file: &str| dir.join(format!(".{file}.tmp.{}", std::process::id()));
    for (file, data) in files {
        let p = tmp(file);
        std::fs::File::create(&p)
            .and_then(|mut f| {
                f.write_all(data)?;
                f.sync_all()
            })
            .map_err(|e| ctx(e, "writing", &p))?;
    }
    for (file, _) in files {
        let (from, to) = (tmp(file), dir.join(file));
        std::fs::rename(&from, &to).map_err(|e| ctx(e, "renaming", &from))?;
    }
    fsutil::sync_dir(dir).map_err(|e| ctx(e, "flushing", dir))
}

/// A message file as a rebuild needs it.
struct Parsed {
    size: u64,
    crc: u32,
    structure: Vec<u8>,
}

/// Below this many messages a folder is read on the calling thread (folders themselves are
/// already spread over threads). Small in unit tests, so that they cover the threaded path.
const PARALLEL_PARSE_MIN: usize = if cfg!(test) { 64 } else { 2048 };
/// Threads reading and parsing one large folder.
const PARSE_THREADS: usize = 4;

/// Read a file into `buf`, sized from `size_hint` (the scan's stat) rather than by asking the
/// filesystem again as `std::fs::read` does: one system call less per message.
fn read_into(path: &Path, size_hint: u64, buf: &mut Vec<u8>) -> io::Result<()> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    buf.clear();
    buf.resize(usize::try_from(size_hint).unwrap_or(0).saturating_add(1), 0);
    let mut n = 0;
    loop {
        if n == buf.len() {
            buf.resize(n * 2 + 4096, 0);
        }
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(n);
    Ok(())
}

/// `-n -f`: the UIDs among `items` (uid, size, CRC32 at delivery) whose file no longer has
/// that checksum, reading a large folder on a few threads.
fn damaged_contents(dir: &Path, items: &[(u32, u64, u32)]) -> Result<Vec<u32>, String> {
    let check = |part: &[(u32, u64, u32)]| -> Result<Vec<u32>, String> {
        let mut buf = Vec::new();
        let mut bad = Vec::new();
        for &(uid, size, crc) in part {
            let path = message_path(dir, uid);
            match read_into(&path, size, &mut buf) {
                Ok(()) if crc32fast::hash(&buf) != crc => bad.push(uid),
                Ok(()) => {}
                // Erased by stored meanwhile: not damage.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(ctx(e, "reading", &path)),
            }
        }
        Ok(bad)
    };
    if items.len() < PARALLEL_PARSE_MIN {
        return check(items);
    }
    std::thread::scope(|sc| {
        let parts: Vec<_> = items
            .chunks(items.len().div_ceil(PARSE_THREADS))
            .map(|part| sc.spawn(move || check(part)))
            .collect();
        let mut bad = Vec::new();
        for p in parts {
            bad.extend(
                p.join()
                    .map_err(|_| "a reader thread panicked".to_owned())??,
            );
        }
        Ok(bad)
    })
}

/// Read, checksum and parse the message files `uids`, in that order. A large folder is split
/// over a few threads: parsing is most of a rebuild's time, and one folder would otherwise
/// use one core.
fn read_and_parse(
    dir: &Path,
    uids: &[(u32, u64)],
    messages: &AtomicU64,
) -> Result<Vec<Parsed>, String> {
    let one = |&(uid, size): &(u32, u64), raw: &mut Vec<u8>| -> Result<Parsed, String> {
        let path = message_path(dir, uid);
        read_into(&path, size, raw).map_err(|e| ctx(e, "reading", &path))?;
        messages.fetch_add(1, Ordering::Relaxed);
        Ok(Parsed {
            size: raw.len() as u64,
            crc: crc32fast::hash(raw),
            structure: MessageStructure::parse(raw).to_bytes(),
        })
    };
    let threads = PARSE_THREADS;
    if uids.len() < PARALLEL_PARSE_MIN {
        let mut raw = Vec::new();
        return uids.iter().map(|u| one(u, &mut raw)).collect();
    }
    let chunk = uids.len().div_ceil(threads);
    std::thread::scope(|sc| {
        let parts: Vec<_> = uids
            .chunks(chunk)
            .map(|part| {
                sc.spawn(move || {
                    let mut raw = Vec::new();
                    part.iter()
                        .map(|u| one(u, &mut raw))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(uids.len());
        for p in parts {
            out.extend(
                p.join()
                    .map_err(|_| "a reader thread panicked".to_owned())??,
            );
        }
        Ok(out)
    })
}

fn rebuild(
    t: &Target,
    mut s: Scan,
    o: &RepairOptions,
    lines: &mut Vec<String>,
    messages: &AtomicU64,
) -> Result<usize, String> {
    let name = t.name.as_str();
    let dir = &t.dir;
    // No finding so far: a forced rebuild that comes out identical need not write anything.
    let healthy = lines.is_empty() && !o.zero_index && !o.restore_expunged;
    if o.restore_expunged {
        let p = dir.join(EXP);
        match std::fs::remove_file(&p) {
            Ok(()) => lines.push(format!("Removed store.exp of {name} (-e)")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ctx(e, "removing", &p)),
        }
        s.exp.clear();
    }
    if o.zero_index {
        let p = dir.join(IDX);
        match std::fs::OpenOptions::new().write(true).open(&p) {
            Ok(f) => {
                f.set_len(0).map_err(|e| ctx(e, "truncating", &p))?;
                lines.push(format!("Set store.idx of {name} to zero length (-i)"));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ctx(e, "opening", &p)),
        }
        s.header = None;
        s.keywords = None;
        s.records.clear();
        s.all_records.clear();
    }
    let journal = s.journal.take().unwrap_or_default();
    let meta_u32 = |k: &str| s.meta.get(k).and_then(|v| v.trim().parse::<u32>().ok());
    let uidvalidity = [
        s.header.map(|h| h.uidvalidity),
        meta_u32("uidvalidity"),
        Some(journal.uidvalidity),
        Some(t.entry.uidvalidity),
    ]
    .into_iter()
    .flatten()
    .find(|v| *v != 0)
    .unwrap_or(1);

    // Read state: the index record, or the journal where it is as new or newer.
    let mut state: BTreeMap<u32, (u32, u128, u64)> = s
        .all_records
        .values()
        .map(|r| (r.uid, (r.flags, r.keywords, r.modseq)))
        .collect();
    for (uid, st) in &journal.messages {
        match state.get(uid) {
            Some(cur) if cur.2 > st.2 => {}
            _ => {
                state.insert(*uid, *st);
            }
        }
    }
    let mut keywords = s.keywords.clone().unwrap_or_default();
    for (i, k) in journal.keywords.iter().enumerate() {
        if k.is_empty() {
            continue;
        }
        if keywords.len() <= i {
            keywords.resize(i + 1, String::new());
        }
        if keywords[i].is_empty() {
            keywords[i] = k.clone();
        }
    }
    keywords.truncate(index::KEYWORD_SLOTS);

    let expunged: BTreeSet<u32> = if o.restore_expunged {
        BTreeSet::new()
    } else {
        state
            .iter()
            .filter(|(_, st)| st.0 & flag::EXPUNGED != 0)
            .map(|(u, _)| *u)
            .chain(s.exp.keys().copied())
            .collect()
    };
    let base_modseq = state
        .values()
        .map(|st| st.2)
        .chain(s.header.map(|h| h.highest_modseq))
        .max()
        .unwrap_or(0);
    let new_modseq = base_modseq + 1;

    let mut records = Vec::with_capacity(s.files.len());
    let mut cache = Vec::new();
    let mut new_exp = Vec::new();
    let mut changed = Vec::new();
    let live: Vec<(u32, u64)> = s
        .files
        .iter()
        .filter(|(u, _)| !expunged.contains(u))
        .map(|(u, f)| (*u, f.0))
        .collect();
    let parsed = read_and_parse(dir, &live, messages)?;
    // Sized once: growing a large folder's cache by doubling copied it over and over.
    let entry_header = sf::encode_cache_entry(0, &[]).len();
    cache.reserve(
        parsed
            .iter()
            .map(|p| entry_header + p.structure.len())
            .sum(),
    );
    let mut parsed = parsed.into_iter();
    for (&uid, &(_, mtime)) in &s.files {
        let st = state.get(&uid).copied();
        if expunged.contains(&uid) {
            let (f, k, m) = st.unwrap_or((0, 0, new_modseq));
            new_exp.push((
                uid,
                s.exp.get(&uid).copied().unwrap_or_else(now_secs),
                f,
                k,
                m,
            ));
            continue;
        }
        let Some(p) = parsed.next() else {
            return Err(format!("message {uid} was not read"));
        };
        let old = s.all_records.get(&uid);
        if old.is_some_and(|r| r.content_crc != 0 && r.content_crc != p.crc) {
            // A message's content never changes under its UID (RFC 3501): the damaged file
            // gets a new UID below, so that clients fetch it again.
            changed.push((uid, p, st));
            continue;
        }
        let (flags, kw, modseq) = match st {
            Some((f, k, _)) if f & flag::EXPUNGED != 0 => (f & !flag::EXPUNGED, k, new_modseq),
            Some(v) => v,
            None => (0, 0, new_modseq),
        };
        let rec = Record {
            uid,
            flags: flags & flag::USER_MASK,
            // The record's date survives a file whose mtime was touched.
            internal_date: old.map_or(mtime, |r| r.internal_date),
            size: p.size,
            modseq,
            keywords: kw,
            cache_offset: cache.len() as u64,
            cache_len: p.structure.len() as u32,
            save_date: old.map_or(mtime, |r| r.save_date),
            content_crc: p.crc,
        };
        cache.extend_from_slice(&sf::encode_cache_entry(uid, &p.structure));
        records.push(rec);
    }

    let max_uid = s
        .files
        .keys()
        .chain(journal.messages.keys())
        .chain(s.exp.keys())
        .chain(s.all_records.keys())
        .copied()
        .max()
        .unwrap_or(0);
    let mut uidnext = s
        .header
        .map_or(1, |h| h.uidnext)
        .max(max_uid.saturating_add(1))
        .max(1);
    let damaged_files = changed.len();
    for (uid, p, st) in changed {
        let new_uid = uidnext;
        let from = message_path(dir, uid);
        let to = message_path(dir, new_uid);
        if let Some(bucket) = to.parent() {
            std::fs::create_dir_all(bucket).map_err(|e| ctx(e, "creating", bucket))?;
        }
        fsutil::rename_noreplace(&from, &to)
            .map_err(|e| ctx(e, "renaming", &from))
            .and_then(|placed| {
                placed
                    .then_some(())
                    .ok_or_else(|| format!("{} already exists", to.display()))
            })?;
        uidnext += 1;
        let old = s.all_records.get(&uid);
        let (flags, kw) = st.map_or((0, 0), |(f, k, _)| (f & !flag::EXPUNGED, k));
        let mtime = s.files.get(&uid).map_or(0, |f| f.1);
        records.push(Record {
            uid: new_uid,
            flags: flags & flag::USER_MASK,
            internal_date: old.map_or(mtime, |r| r.internal_date),
            size: p.size,
            modseq: new_modseq,
            keywords: kw,
            cache_offset: cache.len() as u64,
            cache_len: p.structure.len() as u32,
            save_date: old.map_or(mtime, |r| r.save_date),
            content_crc: p.crc,
        });
        cache.extend_from_slice(&sf::encode_cache_entry(new_uid, &p.structure));
        lines.push(format!(
            "Message file of msg {uid} in mailbox {name} changed after delivery: kept as msg {new_uid}, so that clients fetch it again"
        ));
    }
    let created = s
        .header
        .map(|h| h.created)
        .filter(|c| *c != 0)
        .or_else(|| s.meta.get("created").and_then(|v| v.trim().parse().ok()))
        .unwrap_or(t.entry.created);
    let mut h = Header {
        uidvalidity,
        uidnext,
        recent_uid: s
            .header
            .map_or(uidnext - 1, |h| h.recent_uid)
            .min(uidnext - 1),
        highest_modseq: new_modseq,
        generation: s
            .header
            .map_or(0, |h| h.generation)
            .max(s.journal_generation)
            + 1,
        created,
        ..Default::default()
    };
    recount(&mut h, &records);

    // A forced rebuild of a healthy folder that yields the same records, keywords, cache and
    // expunge list leaves the files alone: rewriting them would change nothing but the
    // generation (making every server reload the folder) and cost a flush per file.
    let unchanged = healthy
        && damaged_files == 0
        && !s.meta.is_empty()
        && s.header.is_some_and(|old| {
            (old.uidvalidity, old.uidnext, old.recent_uid, old.created)
                == (h.uidvalidity, h.uidnext, h.recent_uid, h.created)
                && old.record_count == h.record_count
        })
        && s.keywords.as_ref() == Some(&keywords)
        && s.records == records
        // Last: the only comparison that reads a file.
        && read_opt(&dir.join(CACHE)).ok().flatten().as_deref() == Some(&cache[..])
        && new_exp
            .iter()
            .map(|e| (e.0, e.1))
            .eq(s.exp.iter().map(|(u, t)| (*u, *t)));
    if unchanged {
        lines.push(format!(
            "Rebuilt {name}: {} messages, UIDVALIDITY {uidvalidity}, UIDNEXT {uidnext} (identical to the files on disk: left untouched)",
            records.len()
        ));
        return Ok(0);
    }

    let idx = index::encode_file(&h, &keywords, &records);
    let mut jnl = journal::snapshot(uidvalidity, h.generation, &keywords, &records);
    let mut exp_text = String::new();
    for (uid, time, f, k, m) in &new_exp {
        exp_text.push_str(&format!("{uid} {time}\n"));
        // Keep the expunge in the journal too: it survives a later loss of store.exp.
        Entry::Flags {
            uid: *uid,
            flags: f | flag::EXPUNGED,
            modseq: *m,
            keywords: *k,
        }
        .encode_into(&mut jnl);
    }

    let meta = s.meta.is_empty().then(|| meta_text(&t.entry));
    let mut first: Vec<(&str, &[u8])> = vec![(CACHE, &cache), (JNL, &jnl)];
    // An unchanged store.exp (most often empty) is not worth a flush.
    if read_opt(&dir.join(EXP)).ok().flatten().as_deref() != Some(exp_text.as_bytes()) {
        first.push((EXP, exp_text.as_bytes()));
    }
    if let Some(m) = &meta {
        first.push((META, m.as_bytes()));
        lines.push(format!("Rewrote store.meta of {name} from the database"));
    }
    replace_files(dir, &first)?;
    // store.idx last: the new generation is visible only once everything it refers to is.
    replace_files(dir, &[(IDX, &idx)])?;
    let mut summary = format!(
        "Rebuilt {name}: {} messages, UIDVALIDITY {uidvalidity}, UIDNEXT {uidnext}",
        records.len()
    );
    if !new_exp.is_empty() {
        summary.push_str(&format!(
            ", {} expunged messages left out (awaiting erasure)",
            new_exp.len()
        ));
    }
    lines.push(summary);
    Ok(damaged_files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_window_verifies_entries_in_any_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cache = Vec::new();
        let mut recs = Vec::new();
        for uid in 1..=3u32 {
            let payload = vec![uid as u8; 100 * uid as usize];
            recs.push(Record {
                uid,
                cache_offset: cache.len() as u64,
                cache_len: payload.len() as u32,
                ..Default::default()
            });
            cache.extend_from_slice(&sf::encode_cache_entry(uid, &payload));
        }
        let last = cache.len() - 1;
        cache[last] ^= 1;
        let p = dir.path().join(CACHE);
        std::fs::write(&p, &cache).expect("write");
        let mut w = CacheWindow::new(std::fs::File::open(&p).expect("open")).expect("window");
        let ok = |w: &mut CacheWindow, r: &Record| w.entry_ok(r).expect("read");
        assert!(ok(&mut w, &recs[1]));
        assert!(ok(&mut w, &recs[0]));
        assert!(!ok(&mut w, &recs[2]), "damaged payload");
        let beyond = Record {
            cache_offset: cache.len() as u64,
            ..recs[0]
        };
        assert!(!ok(&mut w, &beyond));
        let huge = Record {
            cache_len: u32::MAX,
            ..recs[0]
        };
        assert!(!ok(&mut w, &huge));
    }

    /// The threaded path returns every message, in UID order, as the single-threaded one.
    #[test]
    fn read_and_parse_keeps_order_on_threads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let uids: Vec<u32> = (1..=(PARALLEL_PARSE_MIN as u32 + 100)).collect();
        // Size hints: none (the buffer grows), and exact.
        let hinted: Vec<(u32, u64)> = uids.iter().map(|&u| (u, 0)).collect();
        for &u in &uids {
            let p = message_path(dir.path(), u);
            std::fs::create_dir_all(p.parent().expect("bucket")).expect("mkdir");
            std::fs::write(
                &p,
                format!("Subject: {u}\r\n\r\n{}\r\n", "x".repeat(u as usize % 7)),
            )
            .expect("write");
        }
        let n = AtomicU64::new(0);
        let all = read_and_parse(dir.path(), &hinted, &n).expect("parsed");
        assert_eq!(n.load(Ordering::Relaxed), uids.len() as u64);
        let exact: Vec<(u32, u64)> = all.iter().zip(&uids).map(|(p, &u)| (u, p.size)).collect();
        let few = read_and_parse(dir.path(), &exact[..50], &n).expect("parsed");
        for (i, (&u, p)) in uids.iter().zip(&all).enumerate() {
            let raw = std::fs::read(message_path(dir.path(), u)).expect("read");
            assert_eq!(
                (p.size, p.crc),
                (raw.len() as u64, crc32fast::hash(&raw)),
                "{u}"
            );
            let st = MessageStructure::from_bytes(&p.structure).expect("structure");
            assert_eq!(st.subject_decoded.as_deref(), Some(u.to_string().as_str()));
            if let Some(f) = few.get(i) {
                assert_eq!(f.structure, p.structure);
            }
        }
        assert!(read_and_parse(dir.path(), &[(999_999, 10)], &n).is_err());

        // -n -f on threads: the files whose bytes changed, nothing else.
        let mut items: Vec<(u32, u64, u32)> = exact
            .iter()
            .zip(&all)
            .map(|(e, p)| (e.0, e.1, p.crc))
            .collect();
        for u in [7u32, 150] {
            let p = message_path(dir.path(), u);
            let mut b = std::fs::read(&p).expect("read");
            b[0] ^= 0x20;
            std::fs::write(&p, b).expect("write");
        }
        assert_eq!(
            damaged_contents(dir.path(), &items).expect("checked"),
            vec![7, 150]
        );
        assert_eq!(
            damaged_contents(dir.path(), &items[..20]).expect("checked"),
            vec![7]
        );
        // A file erased meanwhile is not damage.
        std::fs::remove_file(message_path(dir.path(), 3)).expect("remove");
        items.truncate(10);
        assert_eq!(
            damaged_contents(dir.path(), &items).expect("checked"),
            vec![7]
        );
    }
}
