//! The mail users and their passwords, in `config/passwd`.
//!
//! The IMAP, POP and HTTP servers authenticate users against one file in
//! Dovecot's passwd-file format, so an administrator can read and edit it
//! with ordinary tools and bring users over from Dovecot unchanged:
//!
//! ```text
//! user:{SCHEME}hash:uid:gid:gecos:home:shell:extra_fields
//! ```
//!
//! Everything after the password is optional and is kept as it is when the
//! file is rewritten. New passwords are hashed with Argon2id
//! (`{ARGON2ID}$argon2id$...`); existing ARGON2ID, ARGON2I, SHA512-CRYPT,
//! SHA256-CRYPT, BLF-CRYPT and PLAIN/CLEARTEXT passwords verify exactly as
//! `doveadm pw` writes them. [`UserDb`] changes the file atomically under
//! an exclusive lock, so two admin commands at once do not lose an update,
//! and re-reads it when it changes on disk, so running servers see a new
//! user without a restart. Passwords travel in [`Secret`], which never
//! prints its contents.

mod hash;
mod secret;
mod userid;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

pub use hash::{
    constant_time_eq, hash_password, parse_stored, verify_password, HashError, HashParams, Scheme,
    MAX_PASSWORD_LEN,
};
pub use secret::Secret;
pub use userid::{InvalidUserId, UserId, MAX_USERID_LEN};

/// Why a user database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum UserDbError {
    /// The user name is not valid.
    #[error(transparent)]
    InvalidUserId(#[from] InvalidUserId),
    /// The new password is not acceptable.
    #[error("invalid password: {0}")]
    InvalidPassword(&'static str),
    /// `add` of a user who already exists.
    #[error("user {0} already exists")]
    UserExists(UserId),
    /// `delete` or `set_password` of a user who does not exist.
    #[error("no such user: {0}")]
    UnknownUser(UserId),
    /// A user's stored password cannot be checked (unsupported scheme or
    /// malformed hash), so the login fails.
    #[error("user {user}: {source}")]
    StoredPassword {
        /// The user.
        user: UserId,
        /// What is wrong with the stored password.
        source: HashError,
    },
    /// Hashing a new password failed.
    #[error(transparent)]
    Hash(HashError),
    /// Reading, writing or locking the file failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The system error.
        source: io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> UserDbError {
    let path = path.to_path_buf();
    move |source| UserDbError::Io {
        action,
        path,
        source,
    }
}

/// Checks a new password: 1 to [`MAX_PASSWORD_LEN`] bytes, with no colon,
/// line break or NUL (which the passwd-file format, or the protocols that
/// carry passwords, cannot hold).
pub fn check_new_password(password: &str) -> Result<(), UserDbError> {
    if password.is_empty() {
        return Err(UserDbError::InvalidPassword("it is empty"));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(UserDbError::InvalidPassword("it is longer than 1024 bytes"));
    }
    if password.contains([':', '\n', '\r', '\0']) {
        return Err(UserDbError::InvalidPassword(
            "it must not contain ':', a line break or a NUL character",
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    user: UserId,
    /// The password field (`{SCHEME}hash`).
    password: String,
    /// Everything after the password field's colon, if there was one.
    rest: Option<String>,
    /// The original line, written back unless the entry changes.
    raw: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    Entry(Entry),
    /// Comment, blank or malformed line, kept verbatim.
    Other(String),
}

/// Identity of the file's contents on disk: a rewrite (new inode) or an
/// in-place edit (size, modification or change time) changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

#[derive(Debug, Default)]
struct Snapshot {
    /// `None` when the file does not exist.
    stamp: Option<Stamp>,
    lines: Vec<Line>,
    warnings: Vec<String>,
}

impl Snapshot {
    fn find(&self, user: &str) -> Option<&Entry> {
        self.lines.iter().find_map(|l| match l {
            Line::Entry(e) if e.user.as_str() == user => Some(e),
            _ => None,
        })
    }

    fn users(&self) -> Vec<UserId> {
        let mut out: Vec<UserId> = Vec::new();
        for l in &self.lines {
            if let Line::Entry(e) = l {
                if !out.contains(&e.user) {
                    out.push(e.user.clone());
                }
            }
        }
        out
    }
}

fn parse(text: &str) -> (Vec<Line>, Vec<String>) {
    let mut lines = Vec::new();
    let mut warnings = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        let lineno = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            lines.push(Line::Other(raw.to_string()));
            continue;
        }
        // Messages name the line, never its content: it may hold a
        // plaintext password.
        let mut skip = |why: &str| {
            warnings.push(format!("line {lineno}: {why}; line ignored"));
            lines.push(Line::Other(raw.to_string()));
        };
        let body = raw.strip_suffix('\r').unwrap_or(raw);
        let Some((user, after)) = body.split_once(':') else {
            skip("expected user:password[:uid:gid:gecos:home:shell:extra_fields]");
            continue;
        };
        let user = match UserId::new(user) {
            Ok(u) => u,
            Err(e) => {
                skip(e.reason);
                continue;
            }
        };
        if !seen.insert(user.clone()) {
            // Kept as an entry so that deleting the user removes it too.
            warnings.push(format!(
                "line {lineno}: user {user} is listed again; the first entry counts"
            ));
        }
        let (password, rest) = match after.split_once(':') {
            Some((p, r)) => (p.to_string(), Some(r.to_string())),
            None => (after.to_string(), None),
        };
        lines.push(Line::Entry(Entry {
            user,
            password,
            rest,
            raw: Some(raw.to_string()),
        }));
    }
    (lines, warnings)
}

fn render(lines: &[Line]) -> String {
    let mut out = String::new();
    for line in lines {
        match line {
            Line::Other(raw) | Line::Entry(Entry { raw: Some(raw), .. }) => out.push_str(raw),
            Line::Entry(Entry {
                user,
                password,
                rest,
                raw: None,
            }) => {
                out.push_str(user.as_str());
                out.push(':');
                out.push_str(password);
                if let Some(rest) = rest {
                    out.push(':');
                    out.push_str(rest);
                }
            }
        }
        out.push('\n');
    }
    out
}

/// Reads the file, or an empty snapshot if it does not exist. The stamp
/// comes from the opened file, so it always matches the contents read.
fn load(path: &Path) -> Result<Snapshot, UserDbError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Snapshot::default()),
        Err(e) => return Err(io_err("open", path)(e)),
    };
    let meta = file.metadata().map_err(io_err("stat", path))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io_err("read", path))?;
    let (lines, mut warnings) = match String::from_utf8(bytes) {
        Ok(text) => parse(&text),
        Err(e) => {
            let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
            let (lines, mut w) = parse(&text);
            w.insert(
                0,
                "the file is not valid UTF-8; invalid bytes were replaced".into(),
            );
            (lines, w)
        }
    };
    for w in &mut warnings {
        *w = format!("{}: {w}", path.display());
        tracing::warn!("{w}");
    }
    Ok(Snapshot {
        stamp: Some(Stamp::of(&meta)),
        lines,
        warnings,
    })
}

/// Writes `contents` to `path` atomically (temporary file, fsync, rename,
/// directory fsync), keeping an existing file's mode and owner.
fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), UserDbError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "passwd".into());
    let existing = fs::metadata(path).ok();
    let mode = existing
        .as_ref()
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o600);
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp.{}.{n}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err("set permissions on", &tmp))?;
        if let Some(m) = &existing {
            if let Err(e) = std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid())) {
                tracing::warn!(
                    "{}: cannot keep the owner {}:{} on rewrite: {e}",
                    path.display(),
                    m.uid(),
                    m.gid()
                );
            }
        }
        f.write_all(contents).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("sync", &tmp))?;
        drop(f);
        fs::rename(&tmp, path).map_err(io_err("replace", path))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync directory", &dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The user database in a passwd-file.
///
/// Cheap to share between threads (`Arc<UserDb>`); every method takes
/// `&self`. Readers check the file's identity (one `stat`) on each call and
/// re-read it when it changed. Writers take an exclusive `flock` on a
/// `<file>.lock` beside the file, re-read the file under the lock, apply
/// their change and replace the file atomically.
#[derive(Debug)]
pub struct UserDb {
    path: PathBuf,
    lock_path: PathBuf,
    params: HashParams,
    state: RwLock<Arc<Snapshot>>,
    dummy: OnceLock<Result<String, HashError>>,
}

impl UserDb {
    /// Opens the database at `path` (typically `config/passwd`). A missing
    /// file is an empty database; it is created by the first
    /// [`add`](Self::add). New passwords use the default Argon2id cost.
    pub fn open(path: impl AsRef<Path>) -> Result<UserDb, UserDbError> {
        UserDb::open_with(path, HashParams::default())
    }

    /// Like [`open`](Self::open), hashing new passwords with `params`.
    pub fn open_with(path: impl AsRef<Path>, params: HashParams) -> Result<UserDb, UserDbError> {
        let path = path.as_ref().to_path_buf();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "passwd".into());
        let lock_path = path.with_file_name(format!("{name}.lock"));
        let snapshot = load(&path)?;
        Ok(UserDb {
            path,
            lock_path,
            params,
            state: RwLock::new(Arc::new(snapshot)),
            dummy: OnceLock::new(),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current contents, re-read if the file changed on disk.
    fn current(&self) -> Result<Arc<Snapshot>, UserDbError> {
        let stamp = match fs::metadata(&self.path) {
            Ok(m) => Some(Stamp::of(&m)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("stat", &self.path)(e)),
        };
        {
            let cur = self.state.read().unwrap_or_else(PoisonError::into_inner);
            if cur.stamp == stamp {
                return Ok(Arc::clone(&cur));
            }
        }
        let fresh = Arc::new(load(&self.path)?);
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&fresh);
        Ok(fresh)
    }

    /// Problems found in the file when it was last read (malformed lines,
    /// which are ignored but kept). Messages name lines, never content.
    pub fn warnings(&self) -> Result<Vec<String>, UserDbError> {
        Ok(self.current()?.warnings.clone())
    }

    /// A hash to verify against when there is no real one, so that an
    /// unknown user costs as much time as a known one.
    fn dummy_hash(&self) -> Option<&str> {
        self.dummy
            .get_or_init(|| hash_password(&Secret::new("dummy password".to_string()), &self.params))
            .as_deref()
            .ok()
    }

    fn burn_dummy(&self, password: &[u8]) {
        if let Some(d) = self.dummy_hash() {
            let _ = verify_password(d, password);
        }
    }

    /// Checks a login. `Ok(Some(user))` when `user` exists and `password`
    /// is right; `Ok(None)` for an unknown user, an invalid user name or a
    /// wrong password (an Argon2id hash is computed for unknown users too,
    /// so response time does not tell which). An error means the file
    /// cannot be read or the user's stored password cannot be checked
    /// (unsupported scheme, malformed hash); the login must fail then too.
    pub fn verify(
        &self,
        user: &str,
        password: &Secret<String>,
    ) -> Result<Option<UserId>, UserDbError> {
        let pw = password.expose().as_bytes();
        // Make sure the dummy hash exists before the first lookup, so the
        // one-time cost of creating it does not single out unknown users.
        let _ = self.dummy_hash();
        let snapshot = self.current()?;
        let entry = match snapshot.find(user) {
            Some(e) if pw.len() <= MAX_PASSWORD_LEN => e,
            Some(_) => return Ok(None),
            None => {
                if pw.len() <= MAX_PASSWORD_LEN {
                    self.burn_dummy(pw);
                }
                return Ok(None);
            }
        };
        if entry.password.is_empty() {
            // No password set: the account cannot log in with one.
            self.burn_dummy(pw);
            return Ok(None);
        }
        match verify_password(&entry.password, pw) {
            Ok(true) => Ok(Some(entry.user.clone())),
            Ok(false) => Ok(None),
            Err(source) => Err(UserDbError::StoredPassword {
                user: entry.user.clone(),
                source,
            }),
        }
    }

    /// Whether `user` exists (an invalid name does not).
    pub fn exists(&self, user: &str) -> Result<bool, UserDbError> {
        Ok(self.current()?.find(user).is_some())
    }

    /// Every user, in file order.
    pub fn list(&self) -> Result<Vec<UserId>, UserDbError> {
        Ok(self.current()?.users())
    }

    /// Adds a user with a new Argon2id password. Fails if the user exists.
    pub fn add(&self, user: &str, password: &Secret<String>) -> Result<UserId, UserDbError> {
        let user = UserId::new(user)?;
        check_new_password(password.expose())?;
        // Hash before taking the lock: it is the slow part.
        let hash = hash_password(password, &self.params).map_err(UserDbError::Hash)?;
        self.mutate(|lines| {
            if lines
                .iter()
                .any(|l| matches!(l, Line::Entry(e) if e.user == user))
            {
                return Err(UserDbError::UserExists(user.clone()));
            }
            lines.push(Line::Entry(Entry {
                user: user.clone(),
                password: hash,
                rest: None,
                raw: None,
            }));
            Ok(user.clone())
        })
    }

    /// Replaces a user's password (with Argon2id), keeping the other
    /// fields of the line. Fails if the user does not exist.
    pub fn set_password(&self, user: &str, password: &Secret<String>) -> Result<(), UserDbError> {
        let user = UserId::new(user)?;
        check_new_password(password.expose())?;
        let hash = hash_password(password, &self.params).map_err(UserDbError::Hash)?;
        self.mutate(|lines| {
            let entry = lines.iter_mut().find_map(|l| match l {
                Line::Entry(e) if e.user == user => Some(e),
                _ => None,
            });
            let Some(entry) = entry else {
                return Err(UserDbError::UnknownUser(user.clone()));
            };
            entry.password = hash;
            entry.raw = None;
            Ok(())
        })
    }

    /// Removes a user. Fails if the user does not exist.
    pub fn delete(&self, user: &str) -> Result<(), UserDbError> {
        let user = UserId::new(user)?;
        self.mutate(|lines| {
            let before = lines.len();
            lines.retain(|l| !matches!(l, Line::Entry(e) if e.user == user));
            if lines.len() == before {
                return Err(UserDbError::UnknownUser(user.clone()));
            }
            Ok(())
        })
    }

    /// Runs `change` on the file's current lines under the exclusive lock
    /// and writes the result back atomically.
    fn mutate<R>(
        &self,
        change: impl FnOnce(&mut Vec<Line>) -> Result<R, UserDbError>,
    ) -> Result<R, UserDbError> {
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&self.lock_path)
            .map_err(io_err("open lock file", &self.lock_path))?;
        lock.lock().map_err(io_err("lock", &self.lock_path))?;
        // Re-read under the lock: another process may have changed the file
        // since this one last looked.
        let mut snapshot = load(&self.path)?;
        let result = change(&mut snapshot.lines)?;
        write_atomic(&self.path, render(&snapshot.lines).as_bytes())?;
        let fresh = Arc::new(load(&self.path)?);
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        drop(lock);
        Ok(result)
    }
}

#[cfg(test)]
mod tests;
