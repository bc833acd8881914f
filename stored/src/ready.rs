//! Telling whoever started stored that the other services may start: a readiness file
//! (`data/run/stored.ready`, holding the pid, removed at exit) for `start-msg`, and
//! `READY=1` on `$NOTIFY_SOCKET` for systemd (`Type=notify`). Also the lock that keeps a
//! second stored from running on the same store.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// An exclusive lock on `data/run/stored.lock`, held for the life of the process.
pub struct InstanceLock {
    _file: File,
}

impl InstanceLock {
    /// Take the lock, or say which process holds it.
    pub fn acquire(run: &Path) -> Result<InstanceLock, String> {
        std::fs::create_dir_all(run)
            .map_err(|e| format!("cannot create {}: {e}", run.display()))?;
        let path = run.join("stored.lock");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        // SAFETY: flock on a valid, owned descriptor.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            let holder = std::fs::read_to_string(run.join("stored.pid")).unwrap_or_default();
            return Err(format!(
                "stored is already running on this store (pid {})",
                holder.trim()
            ));
        }
        Ok(InstanceLock { _file: file })
    }
}

/// The readiness file; removed when dropped.
pub struct Ready {
    path: PathBuf,
}

impl Ready {
    /// Write the readiness file and notify systemd.
    pub fn signal(path: &Path) -> io::Result<Ready> {
        msgstore::fsutil::write_atomic(path, format!("{}\n", std::process::id()).as_bytes())?;
        if let Err(e) = sd_notify("READY=1\nSTATUS=Mailbox database open") {
            tracing::warn!("cannot notify systemd: {e}");
        }
        Ok(Ready {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Ready {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Send `state` to `$NOTIFY_SOCKET` when it is set (a path, or `@name` in the abstract
/// namespace). Not set: nothing to do.
pub fn sd_notify(state: &str) -> io::Result<()> {
    let Some(sock) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let sock = sock.to_string_lossy().into_owned();
    let s = std::os::unix::net::UnixDatagram::unbound()?;
    if let Some(name) = sock.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        s.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        s.send_to(state.as_bytes(), &sock)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_reaches_the_socket_and_the_file_goes_at_drop() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("notify");
        let rx = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &sock);
        let file = dir.path().join("stored.ready");
        let r = Ready::signal(&file).unwrap();
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 128];
        let n = rx.recv(&mut buf).unwrap();
        assert!(std::str::from_utf8(&buf[..n])
            .unwrap()
            .starts_with("READY=1"));
        assert!(file.exists());
        drop(r);
        assert!(!file.exists());
    }
}
