use std::io;

/// Everything the store can refuse or fail at. Variants carry what an administrator or a
/// protocol front end needs to phrase a reply (`NO [NONEXISTENT]`, `452 4.2.2`, ...).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid mailbox name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid user id {0:?}")]
    InvalidUser(String),
    #[error("mailbox does not exist: {0}")]
    NoSuchMailbox(String),
    #[error("mailbox already exists: {0}")]
    MailboxExists(String),
    #[error("mailbox has children: {0}")]
    HasChildren(String),
    #[error("unknown/invalid partition: {0}")]
    NoSuchPartition(String),
    #[error("message is empty")]
    EmptyMessage,
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge { size: u64, limit: u64 },
    #[error("quota exceeded on {root}: {what}")]
    OverQuota { root: String, what: &'static str },
    #[error("mailbox {mailbox} is full: limit of {limit} messages")]
    FolderFull { mailbox: String, limit: u64 },
    #[error("too many keywords in mailbox {0} (limit 128)")]
    TooManyKeywords(String),
    #[error("invalid keyword {0:?}")]
    InvalidKeyword(String),
    #[error("no such message: uid {0}")]
    NoSuchMessage(u32),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Corrupt(String),
    #[error("mailbox database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("I/O error on {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Attach a short description of what was being done to an I/O error.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| StoreError::Io {
            context: context(),
            source,
        })
    }
}

impl StoreError {
    /// The same error for another caller (one combined write failing answers several).
    pub fn duplicate(&self) -> StoreError {
        use StoreError as E;
        match self {
            E::InvalidName { name, reason } => E::InvalidName {
                name: name.clone(),
                reason,
            },
            E::InvalidUser(s) => E::InvalidUser(s.clone()),
            E::NoSuchMailbox(s) => E::NoSuchMailbox(s.clone()),
            E::MailboxExists(s) => E::MailboxExists(s.clone()),
            E::HasChildren(s) => E::HasChildren(s.clone()),
            E::NoSuchPartition(s) => E::NoSuchPartition(s.clone()),
            E::EmptyMessage => E::EmptyMessage,
            E::MessageTooLarge { size, limit } => E::MessageTooLarge {
                size: *size,
                limit: *limit,
            },
            E::OverQuota { root, what } => E::OverQuota {
                root: root.clone(),
                what,
            },
            E::FolderFull { mailbox, limit } => E::FolderFull {
                mailbox: mailbox.clone(),
                limit: *limit,
            },
            E::TooManyKeywords(s) => E::TooManyKeywords(s.clone()),
            E::InvalidKeyword(s) => E::InvalidKeyword(s.clone()),
            E::NoSuchMessage(u) => E::NoSuchMessage(*u),
            E::PermissionDenied(s) => E::PermissionDenied(s.clone()),
            E::InvalidArgument(s) => E::InvalidArgument(s.clone()),
            E::Corrupt(s) => E::Corrupt(s.clone()),
            E::Database(e) => E::Corrupt(format!("mailbox database error: {e}")),
            E::Io { context, source } => E::Io {
                context: context.clone(),
                // The OS error code survives (a full disk stays a full disk).
                source: match source.raw_os_error() {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => io::Error::new(source.kind(), source.to_string()),
                },
            },
        }
    }

    /// True when the failure is the disk being full (ENOSPC/EDQUOT).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Io { source, .. }
            if matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)))
    }
}
