//! Small filesystem helpers: advisory locks, positioned I/O, durable renames.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// An flock held on its own open file description: released when dropped. Each lock opens the
/// lock file anew, so two threads of one process exclude each other exactly as two processes do.
pub struct FileLock {
    _file: File,
}

impl FileLock {
    pub fn exclusive(path: &Path) -> io::Result<FileLock> {
        Self::acquire(path, libc::LOCK_EX)
    }
    pub fn shared(path: &Path) -> io::Result<FileLock> {
        Self::acquire(path, libc::LOCK_SH)
    }
    fn acquire(path: &Path, op: libc::c_int) -> io::Result<FileLock> {
        // Open without O_CREAT first: O_CREAT takes the directory's lock exclusively, which
        // writers creating message files in the same directory would then wait for.
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC)
                .open(path)?,
            Err(e) => return Err(e),
        };
        flock(&file, op)?;
        Ok(FileLock { _file: file })
    }
}

fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock on a valid, owned descriptor.
        let r = unsafe { libc::flock(file.as_raw_fd(), op) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Rename `from` to `to` only if `to` does not exist (renameat2 RENAME_NOREPLACE), falling back to
/// link + unlink where the filesystem lacks it. Returns Ok(false) when `to` exists.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<bool> {
    let f = CString::new(from.as_os_str().as_bytes())?;
    let t = CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: valid NUL-terminated paths; AT_FDCWD.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EEXIST) => Ok(false),
        Some(libc::EINVAL) | Some(libc::ENOSYS) => match std::fs::hard_link(from, to) {
            Ok(()) => {
                std::fs::remove_file(from)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        },
        _ => Err(e),
    }
}

/// fsync a directory so that renames and creations inside it are durable.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Read exactly `buf.len()` bytes at `offset`, or fewer at end of file; returns the count.
pub fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Write a small file atomically: temp file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    // Unique per process and per call: two threads writing the same file must not share a
    // temporary name (one would rename the other's away).
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.tmp.{}.{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Flush every dirty page of the filesystem holding `path` (syncfs(2)).
pub fn sync_filesystem(path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = File::open(path)?;
    // SAFETY: syncfs on a valid, owned descriptor.
    if unsafe { libc::syncfs(f.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What a group-commit round flushes: a file it still has open (no path lookup, no open and
/// close per flush), a file by path (written by another process, or placed by a link), or a
/// directory whose entries changed.
pub enum FlushTarget {
    Open(std::sync::Arc<File>),
    Path(PathBuf),
    Dir(PathBuf),
}

impl FlushTarget {
    /// Flush on the calling thread.
    pub fn flush_here(&self) -> io::Result<()> {
        match self {
            FlushTarget::Open(f) => f.sync_data(),
            FlushTarget::Path(p) => File::open(p).and_then(|f| f.sync_data()),
            FlushTarget::Dir(p) => sync_dir(p),
        }
    }
}

type FlushJob = (FlushTarget, std::sync::mpsc::Sender<io::Result<()>>);

const FLUSHERS: usize = 16;

/// Flush `target` on one of a few long-lived flusher threads; the result arrives on the
/// returned channel. Spawning a thread per flush would cost more than a fast flush itself.
pub fn flush_in_background(target: FlushTarget) -> std::sync::mpsc::Receiver<io::Result<()>> {
    use std::sync::{mpsc, Mutex, OnceLock};
    static QUEUE: OnceLock<Mutex<mpsc::Sender<FlushJob>>> = OnceLock::new();
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<FlushJob>();
        let rx = std::sync::Arc::new(Mutex::new(rx));
        // Enough threads that one group-commit round's flushes are all in flight at once.
        for i in 0..FLUSHERS {
            let rx = rx.clone();
            let _ = std::thread::Builder::new()
                .name(format!("flusher-{i}"))
                .spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok((target, reply)) = job else { return };
                    let _ = reply.send(target.flush_here());
                });
        }
        Mutex::new(tx)
    });
    let (reply, rx) = mpsc::channel();
    let sent = queue
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((target, reply));
    if let Err(mpsc::SendError((target, reply))) = sent {
        // No flusher thread could be started: flush here.
        let _ = reply.send(target.flush_here());
    }
    rx
}

/// Start writing `file`'s dirty pages to the disk without waiting (Linux: sync_file_range
/// with SYNC_FILE_RANGE_WRITE). Not a durability guarantee: it only gets the data moving, so
/// that the fdatasync of the group-commit round later finds it written and its blocks
/// allocated in an earlier journal transaction.
pub fn start_writeback(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: sync_file_range on a valid, owned descriptor; the result is advisory.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// This boot of the machine (Linux: /proc/sys/kernel/random/boot_id), or `None` where it is
/// not known. A folder header records the boot its last writer ran in: an index written in
/// an earlier boot may hold records whose message data a power loss took away.
pub fn boot_id() -> Option<[u8; 16]> {
    use std::sync::OnceLock;
    static BOOT: OnceLock<Option<[u8; 16]>> = OnceLock::new();
    *BOOT.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let hex: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        if hex.len() != 32 {
            return None;
        }
        let mut id = [0u8; 16];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            let s = std::str::from_utf8(pair).ok()?;
            id[i] = u8::from_str_radix(s, 16).ok()?;
        }
        // All-zero means "written before boot ids were recorded" in a header.
        (id != [0u8; 16]).then_some(id)
    })
}
