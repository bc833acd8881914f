//! store-client: the one door to the message store.
//!
//! Every front end (imapd, popd, mshttpd, lmtpd) reads and writes mail through this crate's
//! async API and nothing else. It authenticates users, names folders the way a user sees them
//! (`INBOX`, `Work/2026`, and folders shared by others under `Other Users/<owner>/...`), and
//! never exposes where or how anything is stored: the embedded on-disk backend (`msgstore`)
//! sits behind it, and a second backend can later sit behind the same API.
//!
//! Blocking disk work runs on tokio's blocking pool, so a slow disk never stalls the sessions
//! sharing a runtime thread.
//!
//! ```no_run
//! # async fn demo() -> Result<(), store_client::ClientError> {
//! use store_client::{Flag, Secret, StoreClient};
//! let client = StoreClient::open("/srv/msg").await?;
//! let session = client.authenticate("joe", &Secret::new("secret".to_string())).await?;
//! let uid = session.append("INBOX", b"Subject: hi\r\n\r\nHello\r\n".to_vec(), &[Flag::Seen], None).await?;
//! let mut inbox = session.select("INBOX", false).await?;
//! let metas = inbox.fetch_meta(&[uid.uid]).await?;
//! assert!(metas[0].flags.is_seen());
//! # Ok(()) }
//! ```

mod changes;
mod notify;
mod objectid;
mod search;
mod selected;
mod types;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use msgstore::{MailboxName, Pattern, Store, StoreError, UserName};

pub use changes::{FolderSnapshot, MessageState};
pub use message_structure::MessageStructure;
pub use msgstore::FlagOp;
pub use msgstore::{FolderStatus, Quota};
pub use notify::Watcher;
pub use objectid::{EmailId, EmailIndex, MessageCopy, ObjectIds, ThreadId};
pub use search::SearchKey;
pub use selected::StoreResult;
pub use selected::{MessageMeta, SelectedFolder, Update};
pub use types::{Flag, Flags, Keyword, NumberSet};
pub use userdb::Secret;

/// Where folders shared by other users appear in a user's view (RFC 2342 "other users").
pub const SHARED_PREFIX: &str = "Other Users/";

/// Why a store operation failed, in terms a protocol can answer with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("authentication failed")]
    AuthenticationFailed,
    #[error("no such mailbox: {0}")]
    NoSuchMailbox(String),
    #[error("mailbox already exists: {0}")]
    MailboxExists(String),
    #[error("mailbox has inferior hierarchical names: {0}")]
    HasChildren(String),
    #[error("no such message: uid {0}")]
    NoSuchMessage(u32),
    #[error("over quota: {0}")]
    OverQuota(String),
    #[error("message too large: {size} bytes, limit {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error("mailbox full: {0}")]
    MailboxFull(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("disk full")]
    DiskFull,
    #[error("mailbox needs repair: {0}")]
    Corrupt(String),
    #[error("server error: {0}")]
    Internal(String),
}

impl From<StoreError> for ClientError {
    fn from(e: StoreError) -> Self {
        if e.is_disk_full() {
            return ClientError::DiskFull;
        }
        match e {
            StoreError::NoSuchMailbox(n) => ClientError::NoSuchMailbox(n),
            StoreError::MailboxExists(n) => ClientError::MailboxExists(n),
            StoreError::HasChildren(n) => ClientError::HasChildren(n),
            StoreError::NoSuchMessage(u) => ClientError::NoSuchMessage(u),
            StoreError::OverQuota { root, what } => {
                ClientError::OverQuota(format!("{root} ({what})"))
            }
            StoreError::MessageTooLarge { size, limit } => ClientError::TooLarge { size, limit },
            StoreError::FolderFull { mailbox, limit } => {
                ClientError::MailboxFull(format!("{mailbox} holds its limit of {limit} messages"))
            }
            StoreError::EmptyMessage => ClientError::InvalidArgument("message is empty".into()),
            e @ (StoreError::InvalidName { .. }
            | StoreError::InvalidUser(_)
            | StoreError::TooManyKeywords(_)
            | StoreError::InvalidKeyword(_)
            | StoreError::InvalidArgument(_)
            | StoreError::NoSuchPartition(_)) => ClientError::InvalidArgument(e.to_string()),
            StoreError::PermissionDenied(m) => ClientError::PermissionDenied(m),
            StoreError::Corrupt(m) => {
                tracing::error!("{m}");
                ClientError::Corrupt(m)
            }
            other => {
                tracing::error!("{other}");
                ClientError::Internal(other.to_string())
            }
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Run blocking store work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ClientError::Internal(format!("store task failed: {e}")))?
}

struct Inner {
    store: Arc<Store>,
    users: userdb::UserDb,
    notifier: notify::Notifier,
    /// Users whose INBOX and special-use folders this process has made sure of.
    provisioned: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// A handle on the store, shared by every session of a process (cheap to clone).
#[derive(Clone)]
pub struct StoreClient {
    inner: Arc<Inner>,
}

impl StoreClient {
    /// Open the store of the instance rooted at `root` (its `config/` and `data/`).
    pub async fn open(root: impl AsRef<Path>) -> Result<StoreClient> {
        let root: PathBuf = root.as_ref().to_owned();
        let (store, users) = blocking(move || {
            let store = Store::open(&root)?;
            let users = userdb::UserDb::open(store.layout().passwd_file())
                .map_err(|e| ClientError::Internal(format!("user database: {e}")))?;
            Ok((store, users))
        })
        .await?;
        let store = Arc::new(store);
        let notifier = notify::Notifier::new(store.clone());
        Ok(StoreClient {
            inner: Arc::new(Inner {
                store,
                users,
                notifier,
                provisioned: Default::default(),
            }),
        })
    }

    /// Check a password; on success the user's INBOX and special-use folders exist.
    pub async fn authenticate(&self, user: &str, password: &Secret<String>) -> Result<Session> {
        let this = self.clone();
        let user = user.to_owned();
        let password = password.clone();
        blocking(move || {
            let ok = this
                .inner
                .users
                .verify(&user, &password)
                .map_err(|e| ClientError::Internal(format!("user database: {e}")))?;
            match ok {
                Some(id) => {
                    let name = UserName::new(id.as_str())?;
                    this.provision(&name)?;
                    Ok(Session {
                        client: this.clone(),
                        user: name,
                    })
                }
                None => Err(ClientError::AuthenticationFailed),
            }
        })
        .await
    }

    /// A session for a user the caller has already authenticated or trusts (LMTP delivery,
    /// administration). Fails for users not in the user database.
    pub async fn session_for(&self, user: &str) -> Result<Session> {
        let this = self.clone();
        let user = user.to_owned();
        blocking(move || {
            let exists = this
                .inner
                .users
                .exists(&user)
                .map_err(|e| ClientError::Internal(format!("user database: {e}")))?;
            if !exists {
                return Err(ClientError::NoSuchMailbox(format!("user {user}")));
            }
            let name = UserName::new(&user)?;
            this.provision(&name)?;
            Ok(Session {
                client: this.clone(),
                user: name,
            })
        })
        .await
    }

    /// Create the user's INBOX and special-use folders once per process (not on every
    /// delivery: LMTP opens a session per recipient).
    fn provision(&self, user: &UserName) -> Result<()> {
        let seen = |add: bool| {
            let mut set = self
                .inner
                .provisioned
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if add {
                set.insert(user.as_str().to_owned())
            } else {
                set.contains(user.as_str())
            }
        };
        if !seen(false) {
            self.inner.store.provision_user(user)?;
            seen(true);
        }
        Ok(())
    }

    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }
    pub(crate) fn notifier(&self) -> &notify::Notifier {
        &self.inner.notifier
    }
}

/// A folder as LIST shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailboxInfo {
    /// The name as the user sees it.
    pub name: String,
    /// RFC 6154 attribute (`\Sent`, ...), if any.
    pub special_use: Option<String>,
    pub has_children: bool,
    pub subscribed: bool,
    /// Owned by another user.
    pub shared: bool,
}

/// Result of an append: what UIDPLUS reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendUid {
    pub uidvalidity: u32,
    pub uid: u32,
}

/// What a COPY or MOVE did (UIDPLUS COPYUID).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyUids {
    pub uidvalidity: u32,
    /// (source UID, destination UID)
    pub map: Vec<(u32, u32)>,
}

/// One user's view of the store.
#[derive(Clone)]
pub struct Session {
    client: StoreClient,
    user: UserName,
}

impl Session {
    pub fn user(&self) -> &str {
        self.user.as_str()
    }

    /// Map a user-visible name to the store's name.
    pub(crate) fn resolve(&self, visible: &str) -> Result<MailboxName> {
        if let Some(rest) = visible.strip_prefix(SHARED_PREFIX) {
            return Ok(MailboxName::parse(&format!("user/{rest}"))?);
        }
        Ok(MailboxName::for_user(&self.user, visible)?)
    }

    fn visible(&self, name: &str) -> String {
        let own = format!("user/{}/", self.user);
        match name.strip_prefix(&own) {
            Some(rest) => rest.to_owned(),
            None => format!(
                "{SHARED_PREFIX}{}",
                name.strip_prefix("user/").unwrap_or(name)
            ),
        }
    }

    /// Fail unless the user holds `right` on `name` (owners hold every right).
    pub(crate) fn require(&self, name: &MailboxName, right: char) -> Result<()> {
        if name.user() == self.user.as_str() {
            return Ok(());
        }
        let r = self.client.store().rights(name, self.user.as_str())?;
        if r.has(right) {
            Ok(())
        } else if r.has('l') {
            Err(ClientError::PermissionDenied(format!(
                "no '{right}' right on {name}"
            )))
        } else {
            // Without lookup rights the folder does not exist for this user.
            Err(ClientError::NoSuchMailbox(self.visible(name.as_str())))
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Session, &Store) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let this = self.clone();
        blocking(move || f(&this, this.client.store())).await
    }

    /// Folders matching an IMAP LIST pattern (`*`, `%`) over user-visible names.
    pub async fn list(&self, pattern: &str) -> Result<Vec<MailboxInfo>> {
        let pattern = pattern.to_owned();
        self.run(move |s, store| {
            let pat = Pattern::new(&pattern);
            let inbox_pat = Pattern::new(&pattern_inbox_ci(&pattern));
            let subs: std::collections::HashSet<String> =
                store.subscriptions(&s.user)?.into_iter().collect();
            let mut names: Vec<(msgstore::MailboxEntry, bool)> = store
                .db()
                .list_prefix(&format!("user/{}/", s.user))?
                .into_iter()
                .map(|e| (e, false))
                .collect();
            for shared in store.shared_with(s.user.as_str())? {
                if let Some(e) = store.db().get(&shared)? {
                    if e.owner != s.user.as_str() {
                        names.push((e, true));
                    }
                }
            }
            let all: Vec<String> = names.iter().map(|(e, _)| s.visible(&e.name)).collect();
            let mut out = Vec::new();
            for ((e, shared), visible) in names.iter().zip(&all) {
                let matched = pat.matches(visible)
                    || (visible.starts_with("INBOX") && inbox_pat.matches(visible));
                if !matched {
                    continue;
                }
                let prefix = format!("{visible}/");
                out.push(MailboxInfo {
                    name: visible.clone(),
                    special_use: e.special_use.clone(),
                    has_children: all.iter().any(|n| n.starts_with(&prefix)),
                    subscribed: subs.contains(&e.name),
                    shared: *shared,
                });
            }
            out.sort_by(|a, b| (a.name != "INBOX", &a.name).cmp(&(b.name != "INBOX", &b.name)));
            Ok(out)
        })
        .await
    }

    /// Create a folder, and any missing parents (RFC 3501 6.3.3).
    pub async fn create(&self, folder: &str, special_use: Option<&str>) -> Result<()> {
        let folder = folder.trim_end_matches('/').to_owned();
        let special_use = special_use.map(str::to_owned);
        self.run(move |s, store| {
            let name = s.resolve(&folder)?;
            if name.user() != s.user.as_str() {
                let parent = name
                    .parent()
                    .ok_or_else(|| ClientError::PermissionDenied("cannot create here".into()))?;
                s.require(&parent, 'k')?;
            }
            store.create_parents(&name, None)?;
            store.create_mailbox(&name, None, special_use.as_deref())?;
            Ok(())
        })
        .await
    }

    /// Delete a folder (not INBOX). Its subfolders remain.
    pub async fn delete(&self, folder: &str) -> Result<()> {
        let folder = folder.to_owned();
        let r = self
            .run(move |s, store| {
                let name = s.resolve(&folder)?;
                if name.is_inbox() && name.user() == s.user.as_str() {
                    return Err(ClientError::PermissionDenied(
                        "INBOX cannot be deleted".into(),
                    ));
                }
                s.require(&name, 'x')?;
                store.delete_mailbox(&name, false)?;
                Ok(name)
            })
            .await?;
        self.client.notifier().poke(&r);
        Ok(())
    }

    /// Rename a folder with its subfolders (INBOX: its messages move, INBOX stays).
    pub async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (from, to) = (from.to_owned(), to.trim_end_matches('/').to_owned());
        self.run(move |s, store| {
            let a = s.resolve(&from)?;
            let b = s.resolve(&to)?;
            s.require(&a, 'x')?;
            if b.user() != s.user.as_str() {
                return Err(ClientError::PermissionDenied(
                    "cannot rename into another user's folders".into(),
                ));
            }
            if !a.is_ancestor_of(&b) {
                store.create_parents(&b, None)?;
            }
            store.rename_mailbox(&a, &b, None)?;
            Ok(())
        })
        .await
    }

    pub async fn subscribe(&self, folder: &str) -> Result<()> {
        let folder = folder.to_owned();
        self.run(move |s, store| {
            let n = s.resolve(&folder)?;
            Ok(store.subscribe(&s.user, &n)?)
        })
        .await
    }

    pub async fn unsubscribe(&self, folder: &str) -> Result<()> {
        let folder = folder.to_owned();
        self.run(move |s, store| {
            let n = s.resolve(&folder)?;
            store.unsubscribe(&s.user, &n)?;
            Ok(())
        })
        .await
    }

    /// Subscribed folders (user-visible names), existing or not.
    pub async fn subscriptions(&self) -> Result<Vec<String>> {
        self.run(move |s, store| {
            Ok(store
                .subscriptions(&s.user)?
                .into_iter()
                .map(|n| s.visible(&n))
                .collect())
        })
        .await
    }

    /// STATUS: counters without selecting.
    pub async fn status(&self, folder: &str) -> Result<FolderStatus> {
        let folder = folder.to_owned();
        self.run(move |s, store| {
            let n = s.resolve(&folder)?;
            s.require(&n, 'r')?;
            Ok(store.status(&n)?)
        })
        .await
    }

    /// Append one message.
    pub async fn append(
        &self,
        folder: &str,
        data: Vec<u8>,
        flags: &[Flag],
        internal_date: Option<i64>,
    ) -> Result<AppendUid> {
        let r = self
            .append_many(folder, vec![(data, flags.to_vec(), internal_date)])
            .await?;
        Ok(AppendUid {
            uidvalidity: r.0,
            uid: r.1.first().copied().unwrap_or(0),
        })
    }

    /// Append several messages atomically (MULTIAPPEND): all or none.
    pub async fn append_many(
        &self,
        folder: &str,
        msgs: Vec<(Vec<u8>, Vec<Flag>, Option<i64>)>,
    ) -> Result<(u32, Vec<u32>)> {
        let folder = folder.to_owned();
        let (name, out) = self
            .run(move |s, store| s.append_in(store, &folder, msgs))
            .await?;
        self.client.notifier().poke(&name);
        Ok(out)
    }

    /// The body of [`Session::append_many`], on the blocking pool: the folder appended to,
    /// its UIDVALIDITY and the new UIDs.
    pub(crate) fn append_in(
        &self,
        store: &Store,
        folder: &str,
        msgs: Vec<(Vec<u8>, Vec<Flag>, Option<i64>)>,
    ) -> Result<(MailboxName, (u32, Vec<u32>))> {
        let name = self.resolve(folder)?;
        self.require(&name, 'i')?;
        let reqs = msgs
            .into_iter()
            .map(|(data, flags, date)| {
                let f = Flags::from_list(&flags);
                msgstore::AppendRequest {
                    data,
                    flags: f.bits,
                    keywords: f.keywords,
                    internal_date: date,
                }
            })
            .collect();
        let out = store.append(&name, reqs)?;
        Ok((name, out))
    }

    /// Copy messages by UID into another folder.
    pub async fn copy(&self, from: &str, uids: &[u32], to: &str) -> Result<CopyUids> {
        self.copy_or_move(from, uids, to, false).await
    }

    /// Move messages by UID (RFC 6851).
    pub async fn move_messages(&self, from: &str, uids: &[u32], to: &str) -> Result<CopyUids> {
        self.copy_or_move(from, uids, to, true).await
    }

    async fn copy_or_move(&self, from: &str, uids: &[u32], to: &str, mv: bool) -> Result<CopyUids> {
        let (from, to, uids) = (from.to_owned(), to.to_owned(), uids.to_vec());
        let (a, b, out) = self
            .run(move |s, store| {
                let a = s.resolve(&from)?;
                let b = s.resolve(&to)?;
                s.require(&a, 'r')?;
                s.require(&b, 'i')?;
                if mv {
                    s.require(&a, 'e')?;
                    let moved = store.move_messages(&a, &uids, &b)?;
                    Ok((
                        a,
                        b,
                        CopyUids {
                            uidvalidity: moved.uidvalidity,
                            map: moved.map,
                        },
                    ))
                } else {
                    let (v, map) = store.copy_messages(&a, &uids, &b)?;
                    Ok((
                        a,
                        b,
                        CopyUids {
                            uidvalidity: v,
                            map,
                        },
                    ))
                }
            })
            .await?;
        self.client.notifier().poke(&b);
        if mv {
            self.client.notifier().poke(&a);
        }
        Ok(out)
    }

    /// Open a folder. Read-write unless `read_only` (EXAMINE) or the user lacks the rights.
    pub async fn select(&self, folder: &str, read_only: bool) -> Result<SelectedFolder> {
        let folder = folder.to_owned();
        let this = self.clone();
        self.run(move |s, store| {
            let name = s.resolve(&folder)?;
            s.require(&name, 'r')?;
            let writable = !read_only
                && (name.user() == s.user.as_str()
                    || store.rights(&name, s.user.as_str())?.has('s'));
            SelectedFolder::open(this, name, folder, !writable, store)
        })
        .await
        .map(|mut sel| {
            sel.attach_watch();
            sel
        })
    }

    /// Quota roots of a folder with their limits and usage (RFC 9208 GETQUOTAROOT).
    pub async fn quota_roots(&self, folder: &str) -> Result<Vec<Quota>> {
        let folder = folder.to_owned();
        self.run(move |s, store| {
            let n = s.resolve(&folder)?;
            let e = store.entry(&n)?;
            Ok(vec![store.quota(&e.quota_root)?])
        })
        .await
    }

    /// A quota root's limits and usage (own roots only).
    pub async fn quota(&self, root: &str) -> Result<Quota> {
        let root = root.to_owned();
        self.run(move |s, store| {
            if root != format!("user/{}", s.user) {
                return Err(ClientError::NoSuchMailbox(format!("quota root {root}")));
            }
            Ok(store.quota(&root)?)
        })
        .await
    }

    /// Set or remove (empty rights) an identifier's rights: needs the `a` right.
    pub async fn set_acl(&self, folder: &str, identifier: &str, rights: &str) -> Result<()> {
        let (folder, identifier, rights) =
            (folder.to_owned(), identifier.to_owned(), rights.to_owned());
        self.run(move |s, store| {
            let n = s.resolve(&folder)?;
            s.require(&n, 'a')?;
            if identifier == n.user() {
                return Err(ClientError::InvalidArgument(
                    "the owner's rights cannot be changed".into(),
                ));
            }
            Ok(store.set_acl(&n, &identifier, &rights)?)
        })
        .await
    }

    /// The folder's ACL as (identifier, rights) pairs: needs the `a` right.
    pub async fn acl(&self, folder: &str) -> Result<Vec<(String, String)>> {
        let folder = folder.to_owned();
        self.run(move |s, store| {
            let n = s.resolve(&folder)?;
            s.require(&n, 'a')?;
            Ok(store.acl(&n)?)
        })
        .await
    }

    /// The user's own rights on a folder (MYRIGHTS).
    pub async fn my_rights(&self, folder: &str) -> Result<String> {
        let folder = folder.to_owned();
        self.run(move |s, store| {
            let n = s.resolve(&folder)?;
            let r = store.rights(&n, s.user.as_str())?;
            if !r.has('l') && !r.has('r') {
                return Err(ClientError::NoSuchMailbox(folder.clone()));
            }
            Ok(r.as_str().to_owned())
        })
        .await
    }

    /// Be told when a folder changes, whichever process changed it (within a second).
    pub async fn watch(&self, folder: &str) -> Result<Watcher> {
        let folder = folder.to_owned();
        let name = self
            .run(move |s, _| {
                let n = s.resolve(&folder)?;
                s.require(&n, 'r')?;
                Ok(n)
            })
            .await?;
        self.client.notifier().watch(name).await
    }
}

/// `INBOX` matches case-insensitively: accept `inbox*` patterns for it.
fn pattern_inbox_ci(pattern: &str) -> String {
    if pattern.len() >= 5 && pattern[..5].eq_ignore_ascii_case("INBOX") {
        format!("INBOX{}", &pattern[5..])
    } else {
        pattern.to_owned()
    }
}
