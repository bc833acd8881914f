//! `Store`: the operations every front end and tool performs, over the three layers.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{IoContext, Result, StoreError};
use crate::folder::{
    Expunged, FlagOp, Folder, FolderFiles, FolderState, LinkedMessage, StoreOutcome,
};
use crate::index::{flag, Header};
use crate::layout::{self, Layout};
use crate::mboxdb::{MailboxDb, MailboxEntry, QuotaEntry};
use crate::message::{self, now_secs, Durability, PreparedMessage};
use crate::names::{MailboxName, Pattern, UserName};
use crate::MessageStructure;

pub const DEFAULT_PARTITION: &str = "primary";

/// The folders every user gets at first login, with their RFC 6154 attributes.
pub const SPECIAL_USE_FOLDERS: &[(&str, &str)] = &[
    ("Drafts", "\\Drafts"),
    ("Sent", "\\Sent"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
];

/// The most messages of one append whose files stay open until their commit round.
const KEEP_OPEN_MAX: usize = 16;

/// The store's settings, from `config/msg.conf`.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub partitions: BTreeMap<String, PathBuf>,
    pub default_partition: String,
    pub max_message_size: u64,
    /// 0 = unlimited.
    pub max_folder_messages: u64,
    pub default_storage_quota: Option<u64>,
    pub default_message_quota: Option<u64>,
    /// `local.store.fsync = always`: every change is flushed before it is acknowledged,
    /// not only new messages.
    pub sync_every_write: bool,
}

impl StoreConfig {
    /// Read the configuration under `layout` (defaults when there is no msg.conf).
    pub fn load(layout: &Layout) -> Result<StoreConfig> {
        let conf = msgconf::Config::load(layout.config_file())
            .map_err(|e| StoreError::InvalidArgument(e.to_string()))?;
        let mut partitions = BTreeMap::new();
        for (name, path) in conf.partitions() {
            let p = match path {
                Some(p) if p.is_absolute() => p,
                Some(p) => layout.store_dir().join(p),
                None => layout.default_partition_dir(&name),
            };
            partitions.insert(name, p);
        }
        partitions
            .entry(DEFAULT_PARTITION.to_owned())
            .or_insert_with(|| layout.default_partition_dir(DEFAULT_PARTITION));
        let limit = |v: i64| if v < 0 { None } else { Some(v as u64) };
        Ok(StoreConfig {
            partitions,
            default_partition: conf.get_str("store.defaultpartition"),
            max_message_size: conf.get_int("local.store.maxmessagesize").max(1) as u64,
            max_folder_messages: conf.get_int("local.store.maxfoldermessages").max(0) as u64,
            default_storage_quota: limit(conf.get_int("store.defaultmailboxquota")),
            default_message_quota: limit(conf.get_int("store.defaultmessagequota")),
            sync_every_write: conf.get_str("local.store.fsync") == "always",
        })
    }
}

/// A folder's counters (IMAP SELECT/STATUS, JMAP Mailbox).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FolderStatus {
    pub messages: u64,
    pub uidnext: u32,
    pub uidvalidity: u32,
    pub unseen: u64,
    pub deleted: u64,
    pub highest_modseq: u64,
    pub size: u64,
    pub recent_uid: u32,
    /// Changes whenever anything in the folder changes: what watchers compare.
    pub change_token: (u64, u64, u64),
}

impl FolderStatus {
    fn from_header(h: &Header) -> Self {
        FolderStatus {
            messages: h.exists,
            uidnext: h.uidnext,
            uidvalidity: h.uidvalidity,
            unseen: h.unseen,
            deleted: h.deleted,
            highest_modseq: h.highest_modseq,
            size: h.total_size,
            recent_uid: h.recent_uid,
            change_token: (h.generation, h.highest_modseq, h.record_count),
        }
    }
}

/// A quota root's limits and usage, with the configured defaults applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Quota {
    pub root: String,
    pub storage_limit: Option<u64>,
    pub message_limit: Option<u64>,
    pub storage_used: u64,
    pub messages_used: u64,
}

/// What a move did: the destination's UIDVALIDITY, (source UID, new UID) pairs, and the
/// source messages expunged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoveOutcome {
    pub uidvalidity: u32,
    pub map: Vec<(u32, u32)>,
    pub expunged: Vec<Expunged>,
}

/// One message to append.
#[derive(Clone, Debug, Default)]
pub struct AppendRequest {
    pub data: Vec<u8>,
    pub flags: u32,
    pub keywords: Vec<String>,
    pub internal_date: Option<i64>,
}

/// RFC 4314 rights, as the letters `lrswipkxtea`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Rights(String);

impl Rights {
    pub const ALL: &'static str = "lrswipkxtea";
    pub fn all() -> Self {
        Rights(Self::ALL.to_owned())
    }
    /// Parse a rights string; obsolete `c` and `d` expand as RFC 4314 section 2.1.1 says.
    pub fn parse(s: &str) -> Result<Self> {
        let mut out = String::new();
        for c in s.chars() {
            let add: &str = match c {
                'c' => "k",
                'd' => "xte",
                'l' => "l",
                'r' => "r",
                's' => "s",
                'w' => "w",
                'i' => "i",
                'p' => "p",
                'k' => "k",
                'x' => "x",
                't' => "t",
                'e' => "e",
                'a' => "a",
                other => {
                    return Err(StoreError::InvalidArgument(format!(
                        "invalid right {other:?} (valid: {} and c, d)",
                        Self::ALL
                    )))
                }
            };
            for a in add.chars() {
                if !out.contains(a) {
                    out.push(a);
                }
            }
        }
        let mut sorted: Vec<char> = out.chars().collect();
        sorted.sort_by_key(|c| Self::ALL.find(*c));
        Ok(Rights(sorted.into_iter().collect()))
    }
    pub fn has(&self, right: char) -> bool {
        self.0.contains(right)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The message store: one per process, shared by all its sessions.
pub struct Store {
    layout: Layout,
    config: Mutex<StoreConfig>,
    db: MailboxDb,
    folders: Mutex<FolderCache>,
    usage: Mutex<UsageQueue>,
}

/// Quota usage changes waiting to be written to the database. Concurrent appends hand their
/// deltas to whichever of them is writing already, or (while the last write is recent) to
/// the appends still in flight: the last of those to finish writes what is pending. So the
/// database sees one transaction per batch instead of one per message, other processes see a
/// change at most `USAGE_LAG` late while appends keep coming and at once when they stop, and
/// quota checks here add what is pending.
#[derive(Default)]
struct UsageQueue {
    pending: HashMap<String, (i64, i64)>,
    flushing: bool,
    /// Appends between their quota check and their usage change.
    appending: u64,
    last_write: Option<Instant>,
}

/// How long usage written by this process may lag behind while appends keep coming.
const USAGE_LAG: Duration = Duration::from_millis(10);

/// An append in flight for the usage queue; one that fails before its usage change still
/// writes what the others left pending if it is the last.
struct Appending<'a> {
    store: &'a Store,
    done: bool,
}

impl Drop for Store {
    fn drop(&mut self) {
        // Segments left behind would wait for the next write to their folder (or a restart).
        crate::wal::checkpoint_if_written();
    }
}

impl Drop for Appending<'_> {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = self.store.leave_usage(None) {
                tracing::warn!("writing quota usage: {e}");
            }
        }
    }
}

impl Store {
    /// Open the store under instance root `root`, creating the data directories if needed.
    pub fn open(root: &Path) -> Result<Store> {
        let layout = Layout::new(root);
        let config = StoreConfig::load(&layout)?;
        Self::open_with(layout, config)
    }

    pub fn open_with(layout: Layout, config: StoreConfig) -> Result<Store> {
        for p in config.partitions.values() {
            std::fs::create_dir_all(p).ctx(|| format!("creating partition {}", p.display()))?;
        }
        let db = MailboxDb::open(&layout.mboxlist_dir())?;
        let sync_every_write = config.sync_every_write;
        Ok(Store {
            layout,
            config: Mutex::new(config),
            db,
            folders: Mutex::new(FolderCache {
                sync_every_write,
                ..FolderCache::default()
            }),
            usage: Mutex::new(UsageQueue::default()),
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    pub fn db(&self) -> &MailboxDb {
        &self.db
    }
    pub fn config(&self) -> StoreConfig {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The path of a partition. A partition added to msg.conf since startup is found by
    /// re-reading the configuration: no restart is needed.
    pub fn partition_path(&self, partition: &str) -> Result<PathBuf> {
        if let Some(p) = self.config().partitions.get(partition) {
            return Ok(p.clone());
        }
        let fresh = StoreConfig::load(&self.layout)?;
        let found = fresh.partitions.get(partition).cloned();
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
        match found {
            Some(p) => {
                std::fs::create_dir_all(&p)
                    .ctx(|| format!("creating partition {}", p.display()))?;
                Ok(p)
            }
            None => Err(StoreError::NoSuchPartition(partition.to_owned())),
        }
    }

    pub fn entry(&self, name: &MailboxName) -> Result<MailboxEntry> {
        self.db
            .get(name.as_str())?
            .ok_or_else(|| StoreError::NoSuchMailbox(name.to_string()))
    }

    /// The directory of a folder (for `hashdir` and repair tools).
    pub fn folder_dir(&self, name: &MailboxName) -> Result<PathBuf> {
        let e = self.entry(name)?;
        Ok(layout::folder_dir(
            &self.partition_path(&e.partition)?,
            name,
        ))
    }

    /// The directory of a user's folders on a partition.
    pub fn user_dir(&self, user: &UserName, partition: Option<&str>) -> Result<PathBuf> {
        let part = match partition {
            Some(p) => p.to_owned(),
            None => {
                // The partition of the user's INBOX if any, else the default.
                let inbox = MailboxName::for_user(user, "INBOX")?;
                match self.db.get(inbox.as_str())? {
                    Some(e) => e.partition,
                    None => self.config().default_partition,
                }
            }
        };
        Ok(layout::user_dir(&self.partition_path(&part)?, user))
    }

    fn folder(&self, name: &MailboxName) -> Result<Arc<Folder>> {
        // A folder open here recently whose index is still in place is still that mailbox:
        // a mailbox deleted, renamed or moved to another partition (by any process) takes
        // its files with it, and one recreated under the same name is reloaded by the
        // folder's own refresh (the index changed). So the database, a query on a shared
        // connection, need not be asked on every command.
        let cached = self
            .folders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .peek(name.as_str());
        if let Some(f) = cached {
            if std::fs::symlink_metadata(f.files.path(crate::folder::IDX)).is_ok() {
                return Ok(f);
            }
        }
        let entry = self.entry(name)?;
        self.folder_of(name, &entry)
    }

    /// The folder to append to and its quota root. Like `folder`, a folder open here whose
    /// index is in place is that mailbox; its quota root (which only a repair changes in
    /// the database: a rename takes the files along) is asked again once a second.
    fn folder_and_root(&self, name: &MailboxName) -> Result<(Arc<Folder>, String)> {
        const ROOT_FRESH: Duration = Duration::from_secs(1);
        let cached = self
            .folders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .peek_with_root(name.as_str());
        if let Some((f, Some((root, at)))) = cached {
            if at.elapsed() < ROOT_FRESH
                && std::fs::symlink_metadata(f.files.path(crate::folder::IDX)).is_ok()
            {
                return Ok((f, root));
            }
        }
        let entry = self.entry(name)?;
        let dir = layout::folder_dir(&self.partition_path(&entry.partition)?, name);
        let mut cache = self.folders.lock().unwrap_or_else(|p| p.into_inner());
        let f = cache.get(name.as_str(), dir);
        cache.roots.insert(
            name.as_str().to_owned(),
            (entry.quota_root.clone(), Instant::now()),
        );
        Ok((f, entry.quota_root))
    }

    /// The folder of an entry already read (one database lookup fewer).
    fn folder_of(&self, name: &MailboxName, entry: &MailboxEntry) -> Result<Arc<Folder>> {
        let dir = layout::folder_dir(&self.partition_path(&entry.partition)?, name);
        let mut cache = self.folders.lock().unwrap_or_else(|p| p.into_inner());
        Ok(cache.get(name.as_str(), dir))
    }

    fn forget_folder(&self, name: &str) {
        let mut cache = self.folders.lock().unwrap_or_else(|p| p.into_inner());
        cache.map.remove(name);
        cache.roots.remove(name);
    }

    fn meta_text(e: &MailboxEntry) -> String {
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

    fn write_meta(&self, name: &MailboxName) -> Result<()> {
        let e = self.entry(name)?;
        let dir = self.folder_dir(name)?;
        crate::fsutil::write_atomic(
            &dir.join(crate::folder::META),
            Self::meta_text(&e).as_bytes(),
        )
        .ctx(|| format!("writing store.meta of {name}"))
    }

    /// Create one folder (its parent need not exist). `partition` defaults to the partition of
    /// the user's INBOX, else the configured default.
    pub fn create_mailbox(
        &self,
        name: &MailboxName,
        partition: Option<&str>,
        special_use: Option<&str>,
    ) -> Result<MailboxEntry> {
        if self.db.get(name.as_str())?.is_some() {
            return Err(StoreError::MailboxExists(name.to_string()));
        }
        let partition = match partition {
            Some(p) => p.to_owned(),
            None => {
                let inbox = MailboxName::for_user(&name.user_name(), "INBOX")?;
                match self.db.get(inbox.as_str())? {
                    Some(e) => e.partition,
                    None => self.config().default_partition,
                }
            }
        };
        let part_path = self.partition_path(&partition)?;
        let files = FolderFiles::new(layout::folder_dir(&part_path, name));
        std::fs::create_dir_all(&files.dir).ctx(|| format!("creating {}", files.dir.display()))?;
        // Two sessions can create the same folder at once (a client's first login opens
        // several connections, each provisioning INBOX and the special-use folders): the
        // folder's lock makes one of them create it and the other find it made.
        let _creating = crate::fsutil::FileLock::exclusive(&files.path(crate::folder::LCK))
            .ctx(|| format!("locking {}", files.dir.display()))?;
        if self.db.get(name.as_str())?.is_some() {
            return Err(StoreError::MailboxExists(name.to_string()));
        }
        let entry = MailboxEntry {
            name: name.to_string(),
            owner: name.user().to_owned(),
            partition,
            uidvalidity: self.db.next_uidvalidity(now_secs())?,
            special_use: special_use.map(str::to_owned),
            acl: format!("{}\t{}", name.user(), Rights::ALL),
            quota_root: format!("user/{}", name.user()),
            created: now_secs(),
        };
        Folder::create_files(&files, entry.uidvalidity, &Self::meta_text(&entry))?;
        if !self.db.insert(&entry)? {
            return Err(StoreError::MailboxExists(name.to_string()));
        }
        Ok(entry)
    }

    /// Create the missing parents of `name` (RFC 3501 6.3.3: a server creates the superior
    /// hierarchical names). Returns the ones it created, outermost first.
    pub fn create_parents(
        &self,
        name: &MailboxName,
        partition: Option<&str>,
    ) -> Result<Vec<MailboxName>> {
        let mut chain = Vec::new();
        let mut p = name.parent();
        while let Some(n) = p {
            p = n.parent();
            chain.push(n);
        }
        let mut made = Vec::new();
        for parent in chain.into_iter().rev() {
            if self.db.get(parent.as_str())?.is_none() {
                match self.create_mailbox(&parent, partition, None) {
                    Ok(_) => made.push(parent),
                    Err(StoreError::MailboxExists(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(made)
    }

    /// Create a user's INBOX and special-use folders if they are missing. Returns what it created.
    pub fn provision_user(&self, user: &UserName) -> Result<Vec<MailboxName>> {
        let mut made = Vec::new();
        let inbox = MailboxName::for_user(user, "INBOX")?;
        if self.db.get(inbox.as_str())?.is_none() {
            match self.create_mailbox(&inbox, None, None) {
                Ok(_) => made.push(inbox.clone()),
                Err(StoreError::MailboxExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        for (folder, attr) in SPECIAL_USE_FOLDERS {
            let n = MailboxName::for_user(user, folder)?;
            if self.db.get(n.as_str())?.is_none() {
                match self.create_mailbox(&n, None, Some(attr)) {
                    Ok(_) => {
                        self.db.subscribe(user.as_str(), n.as_str())?;
                        made.push(n)
                    }
                    Err(StoreError::MailboxExists(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if !made.is_empty() {
            self.db.subscribe(user.as_str(), inbox.as_str())?;
        }
        Ok(made)
    }

    /// Folders matching an IMAP LIST pattern over full names, in name order.
    pub fn list(&self, pattern: &Pattern) -> Result<Vec<MailboxEntry>> {
        let prefix = pattern.literal_prefix();
        Ok(self
            .db
            .list_prefix(prefix)?
            .into_iter()
            .filter(|e| pattern.matches(&e.name))
            .collect())
    }

    /// A folder and everything below it, in name order.
    pub fn subtree(&self, name: &MailboxName) -> Result<Vec<MailboxEntry>> {
        let mut out = Vec::new();
        if let Some(e) = self.db.get(name.as_str())? {
            out.push(e);
        }
        out.extend(self.db.list_prefix(&format!("{name}/"))?);
        Ok(out)
    }

    /// Delete one folder. Its subfolders stay (as IMAP DELETE requires) unless `recursive`.
    pub fn delete_mailbox(&self, name: &MailboxName, recursive: bool) -> Result<()> {
        let targets = if recursive {
            let mut t = self.subtree(name)?;
            t.reverse();
            t
        } else {
            vec![self.entry(name)?]
        };
        if targets.is_empty() {
            return Err(StoreError::NoSuchMailbox(name.to_string()));
        }
        for e in targets {
            let n = MailboxName::parse(&e.name)?;
            let dir = self.folder_dir(&n)?;
            let status = self.status(&n).ok();
            self.db.delete(&e.name)?;
            if let Some(s) = status {
                self.db
                    .add_quota_usage(&e.quota_root, -(s.size as i64), -(s.messages as i64))?;
            }
            self.forget_folder(&e.name);
            remove_folder_files(&dir)?;
        }
        Ok(())
    }

    /// Rename a folder and its subfolders, optionally onto another partition. Renaming INBOX
    /// moves its messages into the new folder and leaves INBOX empty (RFC 3501 6.3.5).
    pub fn rename_mailbox(
        &self,
        from: &MailboxName,
        to: &MailboxName,
        partition: Option<&str>,
    ) -> Result<()> {
        let src = self.entry(from)?;
        if from == to && partition.is_none_or(|p| p == src.partition) {
            return Err(StoreError::MailboxExists(to.to_string()));
        }
        if from != to && self.db.get(to.as_str())?.is_some() {
            return Err(StoreError::MailboxExists(to.to_string()));
        }
        if from.is_ancestor_of(to) {
            return Err(StoreError::InvalidArgument(format!(
                "cannot rename {from} into its own subfolder {to}"
            )));
        }
        if from.is_inbox() && from != to {
            self.create_mailbox(to, partition, None)?;
            let uids: Vec<u32> = self
                .folder(from)?
                .read(|s| Ok(s.live().map(|m| m.uid).collect()))?;
            self.move_messages(from, &uids, to)?;
            return Ok(());
        }
        let new_part = partition.unwrap_or(&src.partition).to_owned();
        let new_part_path = self.partition_path(&new_part)?;
        let subtree = self.subtree(from)?;
        let mut pairs = Vec::new();
        for e in &subtree {
            let old = MailboxName::parse(&e.name)?;
            let new = old.rebase(from, to)?;
            if old != new && self.db.get(new.as_str())?.is_some() {
                return Err(StoreError::MailboxExists(new.to_string()));
            }
            pairs.push((old, new, e.partition.clone()));
        }
        // Move the directories. Folders on the source's partition move with the top directory
        // (one rename); folders elsewhere are moved one by one.
        for (old, new, part) in &pairs {
            let part_path = self.partition_path(part)?;
            let old_dir = layout::folder_dir(&part_path, old);
            let target_part = if partition.is_some() {
                &new_part_path
            } else {
                &part_path
            };
            let new_dir = layout::folder_dir(target_part, new);
            if !old_dir.exists() {
                continue; // moved along with its parent already
            }
            if let Some(parent) = new_dir.parent() {
                std::fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
            }
            // Take the folder's exclusive lock so no writer is mid-operation while it moves.
            let _lock = crate::fsutil::FileLock::exclusive(&old_dir.join(crate::folder::LCK))
                .ctx(|| format!("locking {old}"))?;
            match std::fs::rename(&old_dir, &new_dir) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                    copy_folder_tree(&old_dir, &new_dir)?;
                    remove_folder_files(&old_dir)?;
                }
                Err(e) => return Err(e).ctx(|| format!("renaming {old} to {new}")),
            }
        }
        let names: Vec<(String, String)> = pairs
            .iter()
            .map(|(o, n, _)| (o.to_string(), n.to_string()))
            .collect();
        self.db.rename_all(&names, partition)?;
        for (o, _, _) in &pairs {
            self.forget_folder(o.as_str());
        }
        // Renamed to another user: the quota root follows the new owner.
        for (o, n, _) in &pairs {
            if o.user() != n.user() {
                let mut e = self.entry(n)?;
                let s = self.status(n)?;
                self.db
                    .add_quota_usage(&e.quota_root, -(s.size as i64), -(s.messages as i64))?;
                e.owner = n.user().to_owned();
                e.quota_root = format!("user/{}", n.user());
                e.acl = format!("{}\t{}", n.user(), Rights::ALL);
                self.db.upsert(&e)?;
                self.db
                    .add_quota_usage(&e.quota_root, s.size as i64, s.messages as i64)?;
            }
            self.write_meta(n)?;
        }
        Ok(())
    }

    /// Counters of a folder, without loading its whole index when it is not open here.
    pub fn status(&self, name: &MailboxName) -> Result<FolderStatus> {
        let f = self.folder(name)?;
        f.read(|s| Ok(FolderStatus::from_header(&s.header)))
    }

    /// Run `f` on the folder's in-memory state, brought up to date first.
    pub fn with_state<T>(
        &self,
        name: &MailboxName,
        f: impl FnOnce(&FolderState) -> Result<T>,
    ) -> Result<T> {
        self.folder(name)?.read(f)
    }

    /// The effective quota of a root (usage includes changes not yet in the database).
    pub fn quota(&self, root: &str) -> Result<Quota> {
        let row = self.db.quota(root)?;
        let limits_set = row
            .as_ref()
            .is_some_and(|q| q.storage_limit.is_some() || q.message_limit.is_some());
        let q = row.unwrap_or(QuotaEntry {
            root: root.to_owned(),
            ..Default::default()
        });
        let (pb, pm) = self
            .usage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pending
            .get(root)
            .copied()
            .unwrap_or((0, 0));
        let (storage_limit, message_limit) = if limits_set {
            (q.storage_limit, q.message_limit)
        } else {
            let cfg = self.config();
            (cfg.default_storage_quota, cfg.default_message_quota)
        };
        Ok(Quota {
            root: root.to_owned(),
            storage_limit,
            message_limit,
            storage_used: (q.storage_used as i64 + pb).max(0) as u64,
            messages_used: (q.messages_used as i64 + pm).max(0) as u64,
        })
    }

    /// Record a usage change; written to the database with whatever else is pending.
    fn add_usage(&self, root: &str, bytes: i64, messages: i64) -> Result<()> {
        {
            let mut q = self.usage.lock().unwrap_or_else(|p| p.into_inner());
            Self::queue_usage(&mut q, root, bytes, messages);
            if q.flushing {
                return Ok(()); // the thread writing now picks it up
            }
            q.flushing = true;
        }
        self.write_usage()
    }

    fn queue_usage(q: &mut UsageQueue, root: &str, bytes: i64, messages: i64) {
        if bytes == 0 && messages == 0 {
            return;
        }
        match q.pending.get_mut(root) {
            Some(e) => {
                e.0 += bytes;
                e.1 += messages;
            }
            None => {
                q.pending.insert(root.to_owned(), (bytes, messages));
            }
        }
    }

    /// Count an append in flight (see `UsageQueue`).
    fn enter_usage(&self) -> Appending<'_> {
        self.usage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .appending += 1;
        Appending {
            store: self,
            done: false,
        }
    }

    /// An append in flight leaves, with its usage change if it has one: written now unless
    /// another append in flight will write it soon enough.
    fn leave_usage(&self, change: Option<(&str, i64, i64)>) -> Result<()> {
        {
            let mut q = self.usage.lock().unwrap_or_else(|p| p.into_inner());
            q.appending = q.appending.saturating_sub(1);
            if let Some((root, bytes, messages)) = change {
                Self::queue_usage(&mut q, root, bytes, messages);
            }
            let recent = q.last_write.is_some_and(|t| t.elapsed() < USAGE_LAG);
            if q.flushing || q.pending.is_empty() || (q.appending > 0 && recent) {
                return Ok(());
            }
            q.flushing = true;
        }
        self.write_usage()
    }

    /// Write what is pending until nothing is (the caller set `flushing`).
    fn write_usage(&self) -> Result<()> {
        loop {
            let batch: Vec<(String, i64, i64)> = {
                let mut q = self.usage.lock().unwrap_or_else(|p| p.into_inner());
                if q.pending.is_empty() {
                    q.flushing = false;
                    return Ok(());
                }
                q.last_write = Some(Instant::now());
                q.pending.drain().map(|(r, (b, m))| (r, b, m)).collect()
            };
            if let Err(e) = self.db.add_quota_usage_batch(&batch) {
                let mut q = self.usage.lock().unwrap_or_else(|p| p.into_inner());
                for (r, b, m) in batch {
                    Self::queue_usage(&mut q, &r, b, m);
                }
                q.flushing = false;
                return Err(e);
            }
        }
    }

    pub fn set_quota(&self, root: &str, storage: Option<u64>, messages: Option<u64>) -> Result<()> {
        self.db.set_quota_limits(root, storage, messages)?;
        // The redundant copy a restored database gets the limits back from (stored reads it):
        // a user's root is kept in the user's directory.
        if let Some(user) = root
            .strip_prefix("user/")
            .and_then(|u| UserName::new(u).ok())
        {
            let dir = self.user_dir(&user, None)?;
            std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
            crate::quotafile::write(&dir, root, crate::quotafile::Limits { storage, messages })
                .ctx(|| format!("writing the quota limits of {root}"))?;
        }
        Ok(())
    }

    fn check_quota(&self, root: &str, bytes: u64, messages: u64) -> Result<()> {
        let q = self.quota(root)?;
        if let Some(l) = q.storage_limit {
            if q.storage_used + bytes > l {
                return Err(StoreError::OverQuota {
                    root: root.to_owned(),
                    what: "storage",
                });
            }
        }
        if let Some(l) = q.message_limit {
            if q.messages_used + messages > l {
                return Err(StoreError::OverQuota {
                    root: root.to_owned(),
                    what: "messages",
                });
            }
        }
        Ok(())
    }

    /// Append messages to a folder; returns (UIDVALIDITY, UIDs) once all are on stable storage.
    pub fn append(&self, name: &MailboxName, msgs: Vec<AppendRequest>) -> Result<(u32, Vec<u32>)> {
        self.append_inner(name, msgs, false)
    }

    /// Append many messages at once (migration, bulk import): the files are written without a
    /// flush each and made durable by one `syncfs` of the partition before they get UIDs, so
    /// the guarantee is the same as `append`'s at a fraction of the cost.
    pub fn append_bulk(
        &self,
        name: &MailboxName,
        msgs: Vec<AppendRequest>,
    ) -> Result<(u32, Vec<u32>)> {
        self.append_inner(name, msgs, true)
    }

    fn append_inner(
        &self,
        name: &MailboxName,
        msgs: Vec<AppendRequest>,
        bulk: bool,
    ) -> Result<(u32, Vec<u32>)> {
        let (folder, root) = self.folder_and_root(name)?;
        let cfg = self.config();
        let total: u64 = msgs.iter().map(|m| m.data.len() as u64).sum();
        let mut appending = self.enter_usage();
        self.check_quota(&root, total, msgs.len() as u64)?;
        let staging = folder.staging_dir()?;
        let mut prepared = Vec::with_capacity(msgs.len());
        // Each file stays open until its commit round flushes it, unless the batch is large
        // (a MULTIAPPEND of thousands): then descriptors would run out first.
        let keep_open = msgs.len() <= KEEP_OPEN_MAX;
        for m in msgs {
            let durability = if bulk {
                Durability::Bulk
            } else if keep_open && m.data.len() as u64 <= crate::wal::MAX_MESSAGE {
                Durability::Log
            } else {
                Durability::OwnFlush
            };
            let mut p = message::prepare(
                &staging,
                &m.data,
                m.internal_date,
                m.flags,
                m.keywords,
                cfg.max_message_size,
                durability,
            )?;
            if !keep_open {
                p.file = None;
            }
            prepared.push(p);
        }
        if bulk {
            crate::fsutil::sync_filesystem(&folder.files.dir)
                .ctx(|| format!("flushing messages for {name}"))?;
            prepared
                .iter_mut()
                .for_each(PreparedMessage::mark_data_durable);
        }
        let size: u64 = prepared.iter().map(|p| p.size).sum();
        let n = prepared.len() as i64;
        let (uidvalidity, uids) = folder.append_with_validity(prepared, cfg.max_folder_messages)?;
        appending.done = true;
        self.leave_usage(Some((&root, size as i64, n)))?;
        Ok((uidvalidity, uids))
    }

    pub fn store_flags(
        &self,
        name: &MailboxName,
        uids: &[u32],
        op: FlagOp,
        flags: u32,
        keywords: &[String],
        unchanged_since: Option<u64>,
    ) -> Result<StoreOutcome> {
        self.folder(name)?
            .store_flags(uids, op, flags, keywords, unchanged_since)
    }

    /// Expunge \Deleted messages (within `uids` if given).
    pub fn expunge(&self, name: &MailboxName, uids: Option<&[u32]>) -> Result<Vec<Expunged>> {
        self.expunge_inner(name, uids, false)
    }

    fn expunge_inner(
        &self,
        name: &MailboxName,
        uids: Option<&[u32]>,
        force: bool,
    ) -> Result<Vec<Expunged>> {
        let entry = self.entry(name)?;
        let gone = self.folder_of(name, &entry)?.expunge(uids, force)?;
        let bytes: u64 = gone.iter().map(|g| g.size).sum();
        self.add_usage(&entry.quota_root, -(bytes as i64), -(gone.len() as i64))?;
        Ok(gone)
    }

    /// Copy messages; returns (destination UIDVALIDITY, [(source uid, new uid)]).
    pub fn copy_messages(
        &self,
        from: &MailboxName,
        uids: &[u32],
        to: &MailboxName,
    ) -> Result<(u32, Vec<(u32, u32)>)> {
        let src = self.folder(from)?;
        let dst_entry = self.entry(to)?;
        let dst = self.folder(to)?;
        let cfg = self.config();
        let mut items = Vec::new();
        let mut src_uids = Vec::new();
        src.read(|s| {
            for &uid in uids {
                let Some(m) = s.get(uid) else { continue };
                let rec = s.record(uid, &src.name)?;
                let structure = match s.cached_structure(&rec) {
                    Some(b) => b,
                    None => {
                        let raw = std::fs::read(src.files.message(uid))
                            .ctx(|| format!("reading message {uid} of {from}"))?;
                        MessageStructure::parse(&raw).to_bytes()
                    }
                };
                items.push(LinkedMessage {
                    source: src.files.message(uid),
                    size: rec.size,
                    content_crc: rec.content_crc,
                    internal_date: rec.internal_date,
                    flags: m.flags & flag::USER_MASK,
                    keywords: s
                        .keyword_names(m.keywords)
                        .into_iter()
                        .map(str::to_owned)
                        .collect(),
                    structure,
                });
                src_uids.push(uid);
            }
            Ok(())
        })?;
        if items.is_empty() {
            return Ok((dst_entry.uidvalidity, Vec::new()));
        }
        let bytes: u64 = items.iter().map(|i| i.size).sum();
        self.check_quota(&dst_entry.quota_root, bytes, items.len() as u64)?;
        let n = items.len() as i64;
        let new = dst.append_linked(items, cfg.max_folder_messages)?;
        self.add_usage(&dst_entry.quota_root, bytes as i64, n)?;
        Ok((
            dst_entry.uidvalidity,
            src_uids.into_iter().zip(new).collect(),
        ))
    }

    /// Move messages: copy, then expunge the originals whatever their flags (RFC 6851).
    pub fn move_messages(
        &self,
        from: &MailboxName,
        uids: &[u32],
        to: &MailboxName,
    ) -> Result<MoveOutcome> {
        let (v, map) = self.copy_messages(from, uids, to)?;
        let moved: Vec<u32> = map.iter().map(|(s, _)| *s).collect();
        let expunged = self.expunge_inner(from, Some(&moved), true)?;
        Ok(MoveOutcome {
            uidvalidity: v,
            map,
            expunged,
        })
    }

    /// Open a message's file for reading (bytes exactly as stored, CRLF).
    pub fn open_message(&self, name: &MailboxName, uid: u32) -> Result<(File, u64)> {
        let f = self.folder(name)?;
        let size = f.read(|s| {
            s.get(uid).ok_or(StoreError::NoSuchMessage(uid))?;
            Ok(s.record(uid, &f.name)?.size)
        })?;
        match File::open(f.files.message(uid)) {
            Ok(file) => Ok((file, size)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::error!(
                    "Mailbox corrupted, message file {uid} missing: {name}. Needs reconstruct"
                );
                Err(StoreError::NoSuchMessage(uid))
            }
            Err(e) => Err(e).ctx(|| format!("opening message {uid} of {name}")),
        }
    }

    /// Read a whole message.
    pub fn read_message(&self, name: &MailboxName, uid: u32) -> Result<Vec<u8>> {
        use std::io::Read;
        let (mut f, size) = self.open_message(name, uid)?;
        let mut v = Vec::with_capacity(size as usize);
        f.read_to_end(&mut v)
            .ctx(|| format!("reading message {uid} of {name}"))?;
        Ok(v)
    }

    /// Read `len` bytes at `offset` of a message (fewer at its end).
    pub fn read_message_range(
        &self,
        name: &MailboxName,
        uid: u32,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        let (f, size) = self.open_message(name, uid)?;
        let start = offset.min(size);
        let n = len.min(size - start) as usize;
        let mut v = vec![0u8; n];
        let got = crate::fsutil::read_at_most(&f, &mut v, start)
            .ctx(|| format!("reading message {uid} of {name}"))?;
        v.truncate(got);
        Ok(v)
    }

    pub fn structure(&self, name: &MailboxName, uid: u32) -> Result<MessageStructure> {
        self.folder(name)?.structure(uid)
    }

    /// Writes to a folder made through this store and not yet flushed (see
    /// [`Folder::unflushed_writes`]).
    pub fn unflushed_writes(&self, name: &MailboxName) -> Result<u64> {
        Ok(self.folder(name)?.unflushed_writes())
    }

    /// Claim messages above the recent mark (the first session to see them reports \Recent).
    pub fn claim_recent(&self, name: &MailboxName) -> Result<u32> {
        self.folder(name)?.claim_recent()
    }

    pub fn compact(&self, name: &MailboxName) -> Result<()> {
        self.folder(name)?.compact()
    }

    // ---- ACL (RFC 4314) ----

    /// Set (or with empty rights, remove) `identifier`'s rights on a folder.
    pub fn set_acl(&self, name: &MailboxName, identifier: &str, rights: &str) -> Result<()> {
        if identifier.is_empty() || identifier.contains(['\t', '\n']) {
            return Err(StoreError::InvalidArgument(format!(
                "invalid identifier {identifier:?}"
            )));
        }
        let e = self.entry(name)?;
        let rights = Rights::parse(rights)?;
        let mut acl: Vec<(String, String)> = parse_acl(&e.acl)
            .into_iter()
            .filter(|(i, _)| i != identifier)
            .collect();
        if !rights.as_str().is_empty() {
            acl.push((identifier.to_owned(), rights.as_str().to_owned()));
        }
        let text: Vec<String> = acl.iter().map(|(i, r)| format!("{i}\t{r}")).collect();
        self.db.set_acl(name.as_str(), &e.owner, &text.join("\n"))?;
        self.write_meta(name)
    }

    pub fn acl(&self, name: &MailboxName) -> Result<Vec<(String, String)>> {
        Ok(parse_acl(&self.entry(name)?.acl))
    }

    /// `user`'s rights on a folder: the owner has all; others what the ACL gives them or
    /// `anyone`.
    pub fn rights(&self, name: &MailboxName, user: &str) -> Result<Rights> {
        let e = self.entry(name)?;
        if e.owner == user {
            return Ok(Rights::all());
        }
        let mut r = String::new();
        for (i, rights) in parse_acl(&e.acl) {
            if i == user || i == "anyone" {
                r.push_str(&rights);
            }
        }
        Rights::parse(&r)
    }

    /// Folders of other users that `user` may see (from the rights index).
    pub fn shared_with(&self, user: &str) -> Result<Vec<String>> {
        self.db.rights_index(user)
    }

    // ---- subscriptions ----

    pub fn subscribe(&self, user: &UserName, name: &MailboxName) -> Result<()> {
        self.db.subscribe(user.as_str(), name.as_str())
    }
    pub fn unsubscribe(&self, user: &UserName, name: &MailboxName) -> Result<bool> {
        self.db.unsubscribe(user.as_str(), name.as_str())
    }
    pub fn subscriptions(&self, user: &UserName) -> Result<Vec<String>> {
        self.db.subscriptions(user.as_str())
    }
}

/// Folders open in this process, with their in-memory index. Folders in use stay; the least
/// recently used idle ones are closed when there are more than `CAPACITY` (each holds three
/// descriptors and its index in memory).
#[derive(Default)]
struct FolderCache {
    map: HashMap<String, (Arc<Folder>, u64)>,
    /// Quota roots of cached folders, and when each was read from the database.
    roots: HashMap<String, (String, Instant)>,
    clock: u64,
    /// Given to each folder opened (`local.store.fsync`; read when the store opens).
    sync_every_write: bool,
}

impl FolderCache {
    const CAPACITY: usize = 128;

    /// The folder cached under `name`, if any.
    fn peek(&mut self, name: &str) -> Option<Arc<Folder>> {
        self.clock += 1;
        let now = self.clock;
        self.map.get_mut(name).map(|(f, used)| {
            *used = now;
            f.clone()
        })
    }

    /// The folder cached under `name` with its quota root, if any.
    #[allow(clippy::type_complexity)]
    fn peek_with_root(&mut self, name: &str) -> Option<(Arc<Folder>, Option<(String, Instant)>)> {
        let f = self.peek(name)?;
        Some((f, self.roots.get(name).cloned()))
    }

    fn get(&mut self, name: &str, dir: PathBuf) -> Arc<Folder> {
        self.clock += 1;
        let now = self.clock;
        if let Some((f, used)) = self.map.get_mut(name) {
            if f.files.dir == dir {
                *used = now;
                return f.clone();
            }
        }
        let f = Arc::new(
            Folder::new(name.to_owned(), FolderFiles::new(dir))
                .syncing_every_write(self.sync_every_write),
        );
        self.map.insert(name.to_owned(), (f.clone(), now));
        if self.map.len() > Self::CAPACITY {
            let mut idle: Vec<(u64, String)> = self
                .map
                .iter()
                .filter(|(_, (f, _))| Arc::strong_count(f) == 1)
                .map(|(k, (_, used))| (*used, k.clone()))
                .collect();
            idle.sort();
            let excess = self.map.len() - Self::CAPACITY * 3 / 4;
            for (_, k) in idle.into_iter().take(excess) {
                self.map.remove(&k);
                self.roots.remove(&k);
            }
        }
        f
    }
}

pub(crate) fn parse_acl(acl: &str) -> Vec<(String, String)> {
    acl.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(i, r)| (i.to_owned(), r.to_owned()))
        .collect()
}

/// Remove a folder's own files (message buckets and store.* files); its directory goes too
/// unless subfolders live inside it.
fn remove_folder_files(dir: &Path) -> Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).ctx(|| format!("reading {}", dir.display())),
    };
    let mut has_children = false;
    for ent in rd {
        let ent = ent.ctx(|| format!("reading {}", dir.display()))?;
        let name = ent.file_name();
        let name = name.to_string_lossy();
        let path = ent.path();
        if name.starts_with('=') {
            has_children = true;
        } else if path.is_dir() {
            std::fs::remove_dir_all(&path).ctx(|| format!("removing {}", path.display()))?;
        } else {
            std::fs::remove_file(&path).ctx(|| format!("removing {}", path.display()))?;
        }
    }
    if !has_children {
        std::fs::remove_dir(dir).ctx(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}

/// Copy a folder directory tree to another filesystem (a partition move), flushing each file.
fn copy_folder_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).ctx(|| format!("creating {}", to.display()))?;
    for ent in std::fs::read_dir(from).ctx(|| format!("reading {}", from.display()))? {
        let ent = ent.ctx(|| format!("reading {}", from.display()))?;
        let src = ent.path();
        let dst = to.join(ent.file_name());
        if src.is_dir() {
            copy_folder_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).ctx(|| format!("copying {}", src.display()))?;
            if let Ok(m) = std::fs::metadata(&src).and_then(|m| m.modified()) {
                let _ = File::options()
                    .write(true)
                    .open(&dst)
                    .and_then(|f| f.set_modified(m));
            }
            File::open(&dst)
                .and_then(|f| f.sync_all())
                .ctx(|| format!("flushing {}", dst.display()))?;
        }
    }
    crate::fsutil::sync_dir(to).ctx(|| format!("flushing {}", to.display()))
}

impl Store {
    /// A folder's change token read without locking: cheap enough to poll many folders often.
    pub fn peek_change_token(&self, name: &MailboxName) -> Result<(u64, u64, u64)> {
        // Through the folder cache: watchers poll this four times a second per folder, and
        // every write in this process asks it once.
        let f = self.folder(name)?;
        let h = crate::folder::peek_header(&f.files, name.as_str())?;
        Ok((h.generation, h.highest_modseq, h.record_count))
    }
}
