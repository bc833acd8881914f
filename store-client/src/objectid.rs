//! Object ids (RFC 8474 EMAILID/THREADID, JMAP Email and Thread ids) for the front ends.
//!
//! Both ids come from the message itself (see `message_structure::EmailId`): the store's
//! structure cache carries them in each entry's trailer, so reading them costs one small
//! read per message and no decoding. Entries written before ids existed get them computed
//! from the message file once per process and remembered.
//!
//! JMAP needs the reverse too (which folders hold this Email?): [`Session::email_index`]
//! gives a per-user [`EmailIndex`] over the user's own folders, kept in memory per process
//! and brought up to date incrementally: a folder whose UIDVALIDITY, index generation,
//! HIGHESTMODSEQ and UIDNEXT have not moved is not read again, and a folder that has is
//! diffed by its live UIDs.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use msgstore::{MailboxName, Store, StoreError};

pub use message_structure::{EmailId, ThreadId};

use crate::{ClientError, MessageStructure, Result, SelectedFolder, Session};

/// A message's EMAILID and THREADID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ObjectIds {
    pub email: EmailId,
    pub thread: ThreadId,
}

/// One copy of an Email: a message in one of the user's folders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageCopy {
    /// The folder's name as the user sees it.
    pub folder: Arc<str>,
    pub uidvalidity: u32,
    pub uid: u32,
}

/// Ids of messages whose cache entry predates ids, computed from their files: bounded, and
/// cleared whole when full (recomputing is correct, only slower).
const MEMO_LIMIT: usize = 262_144;

/// Per-user indexes kept per process; the least recently used go first.
const INDEX_LIMIT: usize = 64;

type MemoKey = (usize, u32, u32);

fn memo() -> &'static Mutex<HashMap<MemoKey, ObjectIds>> {
    static MEMO: OnceLock<Mutex<HashMap<MemoKey, ObjectIds>>> = OnceLock::new();
    MEMO.get_or_init(Default::default)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn store_key(store: &Arc<Store>) -> usize {
    Arc::as_ptr(store) as usize
}

/// The SHA-256 based id of a message file, read in 64 KB steps (never whole in memory).
fn email_id_of_file(store: &Store, name: &MailboxName, uid: u32) -> Result<EmailId> {
    let (mut f, _) = store.open_message(name, uid)?;
    let mut h = message_structure::EmailIdHasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| ClientError::Internal(format!("reading message {uid} of {name}: {e}")))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finish())
}

/// Ids of `uids` in one folder, in UID order; UIDs the folder does not record are left out,
/// and so are expunged ones unless `expunged` (they stay recorded until compaction, and
/// `/changes` needs to know what was destroyed). An expunged message whose entry predates
/// ids and which this process never saw cannot be named: it is left out too.
pub(crate) fn ids_in_folder(
    store: &Arc<Store>,
    name: &MailboxName,
    uids: &[u32],
    expunged: bool,
) -> Result<Vec<(u32, ObjectIds)>> {
    let key = store_key(store);
    let mut wanted: Vec<u32> = uids.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    let (mut found, missing) = store.with_state(name, |st| {
        let mut found = Vec::with_capacity(wanted.len());
        let mut missing = Vec::new();
        let positions: Vec<(u32, usize)> = wanted
            .iter()
            .filter_map(|&u| st.position(u).map(|p| (u, p)))
            .filter(|&(_, p)| expunged || !st.msgs[p].is_expunged())
            .collect();
        // Many messages: read the index records in one pass rather than one read each.
        let all = if positions.len() > 64 {
            Some(st.records(0, st.msgs.len(), name.as_str())?)
        } else {
            None
        };
        for (uid, pos) in positions {
            let rec = match &all {
                Some(r) => match r.get(pos) {
                    Some(r) => *r,
                    None => continue,
                },
                None => st.record(uid, name.as_str())?,
            };
            let ids = st
                .cached_structure(&rec)
                .and_then(|b| MessageStructure::object_ids_from_bytes(&b));
            match ids {
                Some((email, thread)) => found.push((uid, ObjectIds { email, thread })),
                None => missing.push((uid, st.msgs[pos].is_expunged())),
            }
        }
        Ok((found, missing))
    })?;
    if missing.is_empty() {
        return Ok(found);
    }
    let uidvalidity = store.with_state(name, |st| Ok(st.header.uidvalidity))?;
    for (uid, gone) in missing {
        if let Some(ids) = lock(memo()).get(&(key, uidvalidity, uid)).copied() {
            found.push((uid, ids));
            continue;
        }
        if gone {
            continue;
        }
        let st = match store.structure(name, uid) {
            Ok(st) => st,
            Err(StoreError::NoSuchMessage(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        let email = match st.email_id {
            Some(e) => e,
            None => match email_id_of_file(store, name, uid) {
                Ok(e) => e,
                // Expunged meanwhile.
                Err(ClientError::NoSuchMessage(_)) => continue,
                Err(e) => return Err(e),
            },
        };
        let ids = ObjectIds {
            email,
            thread: st.thread_id_with(email),
        };
        let mut m = lock(memo());
        if m.len() >= MEMO_LIMIT {
            m.clear();
        }
        m.insert((key, uidvalidity, uid), ids);
        drop(m);
        found.push((uid, ids));
    }
    found.sort_unstable_by_key(|(u, _)| *u);
    Ok(found)
}

impl SelectedFolder {
    /// EMAILID and THREADID (RFC 8474) of messages by UID, in UID order; UIDs the folder
    /// no longer holds are left out.
    pub async fn object_ids(&self, uids: &[u32]) -> Result<Vec<(u32, ObjectIds)>> {
        let (store, name) = self.backing();
        let uids = uids.to_vec();
        crate::blocking(move || ids_in_folder(&store, &name, &uids, false)).await
    }
}

/// What the index knows of one folder.
#[derive(Clone, Debug)]
struct FolderIds {
    name: Arc<str>,
    uidvalidity: u32,
    generation: u64,
    modseq: u64,
    uidnext: u32,
    msgs: HashMap<u32, ObjectIds>,
}

#[derive(Clone, Debug)]
struct EmailEntry {
    thread: ThreadId,
    copies: Vec<MessageCopy>,
}

#[derive(Clone, Debug, Default)]
struct IndexData {
    folders: HashMap<String, FolderIds>,
    emails: HashMap<EmailId, EmailEntry>,
    threads: HashMap<ThreadId, HashSet<EmailId>>,
}

impl IndexData {
    fn add(&mut self, folder: &FolderIds, uid: u32, ids: ObjectIds) {
        let e = self.emails.entry(ids.email).or_insert_with(|| EmailEntry {
            thread: ids.thread,
            copies: Vec::new(),
        });
        e.copies.push(MessageCopy {
            folder: folder.name.clone(),
            uidvalidity: folder.uidvalidity,
            uid,
        });
        self.threads
            .entry(ids.thread)
            .or_default()
            .insert(ids.email);
    }

    fn remove(&mut self, folder: &str, uidvalidity: u32, uid: u32, ids: ObjectIds) {
        let Some(e) = self.emails.get_mut(&ids.email) else {
            return;
        };
        e.copies
            .retain(|c| !(c.uid == uid && c.uidvalidity == uidvalidity && &*c.folder == folder));
        if e.copies.is_empty() {
            self.emails.remove(&ids.email);
            if let Some(t) = self.threads.get_mut(&ids.thread) {
                t.remove(&ids.email);
                if t.is_empty() {
                    self.threads.remove(&ids.thread);
                }
            }
        }
    }

    fn drop_folder(&mut self, name: &str) {
        if let Some(f) = self.folders.remove(name) {
            for (uid, ids) in f.msgs {
                self.remove(name, f.uidvalidity, uid, ids);
            }
        }
    }
}

/// Which folders of the user hold which Email, and which Emails make each thread: a
/// consistent snapshot, cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct EmailIndex(Arc<IndexData>);

impl EmailIndex {
    /// The live copies of an Email (empty when it is not in any of the user's folders).
    pub fn copies(&self, email: &EmailId) -> &[MessageCopy] {
        self.0
            .emails
            .get(email)
            .map_or(&[][..], |e| e.copies.as_slice())
    }

    pub fn thread_of(&self, email: &EmailId) -> Option<ThreadId> {
        self.0.emails.get(email).map(|e| e.thread)
    }

    /// The Emails of a thread, in id order (empty for an unknown thread).
    pub fn thread_emails(&self, thread: &ThreadId) -> Vec<EmailId> {
        let mut v: Vec<EmailId> = self
            .0
            .threads
            .get(thread)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        v.sort_unstable();
        v
    }

    /// The ids of one message, if the index has seen it live.
    pub fn ids_of(&self, folder: &str, uid: u32) -> Option<ObjectIds> {
        self.0.folders.get(folder)?.msgs.get(&uid).copied()
    }

    /// Every Email of the user, in no particular order.
    pub fn emails(&self) -> impl Iterator<Item = (&EmailId, &[MessageCopy])> + '_ {
        self.0.emails.iter().map(|(e, x)| (e, x.copies.as_slice()))
    }

    /// Number of distinct Emails.
    pub fn len(&self) -> usize {
        self.0.emails.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.emails.is_empty()
    }
}

struct Cached {
    store: Weak<Store>,
    index: Arc<Mutex<EmailIndex>>,
    used: Instant,
}

fn registry() -> &'static Mutex<HashMap<(usize, String), Cached>> {
    static REG: OnceLock<Mutex<HashMap<(usize, String), Cached>>> = OnceLock::new();
    REG.get_or_init(Default::default)
}

/// The user's index slot for this store (made empty the first time).
fn slot(store: &Arc<Store>, user: &str) -> Arc<Mutex<EmailIndex>> {
    let key = (store_key(store), user.to_owned());
    let mut reg = lock(registry());
    let live = reg
        .get(&key)
        .is_some_and(|c| c.store.upgrade().is_some_and(|s| Arc::ptr_eq(&s, store)));
    if !live {
        if reg.len() >= INDEX_LIMIT {
            // Dropped stores first, then the least recently used.
            reg.retain(|_, c| c.store.strong_count() > 0);
            if reg.len() >= INDEX_LIMIT {
                if let Some(old) = reg
                    .iter()
                    .min_by_key(|(_, c)| c.used)
                    .map(|(k, _)| k.clone())
                {
                    reg.remove(&old);
                }
            }
        }
        reg.insert(
            key.clone(),
            Cached {
                store: Arc::downgrade(store),
                index: Default::default(),
                used: Instant::now(),
            },
        );
    }
    let c = reg.get_mut(&key).expect("inserted above");
    c.used = Instant::now();
    c.index.clone()
}

/// A folder whose counters moved since the index last looked: its name, its counters now
/// (UIDVALIDITY, generation, HIGHESTMODSEQ, UIDNEXT) and its live UIDs.
type Moved = (String, MailboxName, (u32, u64, u64, u32), Vec<u32>);

/// Bring `index` up to date with the user's own folders. When nothing moved, the snapshot
/// is left as it is (not copied, even while callers hold it).
fn refresh(s: &Session, store: &Arc<Store>, index: &mut EmailIndex) -> Result<()> {
    let entries = store.db().list_prefix(&format!("user/{}/", s.user))?;
    let mut seen = HashSet::with_capacity(entries.len());
    let mut moved: Vec<Moved> = Vec::new();
    for e in entries {
        let name = MailboxName::parse(&e.name)?;
        let visible = s.visible(&e.name);
        let known = index
            .0
            .folders
            .get(&visible)
            .map(|f| (f.uidvalidity, f.generation, f.modseq, f.uidnext));
        // Counters and live UIDs in one look at the folder.
        let looked = store.with_state(&name, |st| {
            let h = &st.header;
            let now = (h.uidvalidity, h.generation, h.highest_modseq, h.uidnext);
            if known == Some(now) {
                return Ok(None);
            }
            let live: Vec<u32> = st.live().map(|m| m.uid).collect();
            Ok(Some((now, live)))
        });
        match looked {
            Ok(x) => {
                seen.insert(visible.clone());
                if let Some((now, live)) = x {
                    moved.push((visible, name, now, live));
                }
            }
            // Deleted since the listing.
            Err(StoreError::NoSuchMailbox(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let stale: Vec<String> = index
        .0
        .folders
        .keys()
        .filter(|k| !seen.contains(*k))
        .cloned()
        .collect();
    if moved.is_empty() && stale.is_empty() {
        return Ok(());
    }
    // Copy-on-write: a caller still holding the previous snapshot keeps it intact.
    let data = Arc::make_mut(&mut index.0);
    for k in stale {
        data.drop_folder(&k);
    }
    for (visible, name, now, live) in moved {
        if data
            .folders
            .get(&visible)
            .is_some_and(|f| f.uidvalidity != now.0)
        {
            // Another folder under the same name: nothing carries over.
            data.drop_folder(&visible);
        }
        let mut folder = data.folders.remove(&visible).unwrap_or_else(|| FolderIds {
            name: Arc::from(visible.as_str()),
            uidvalidity: now.0,
            generation: now.1,
            modseq: now.2,
            uidnext: now.3,
            msgs: HashMap::new(),
        });
        let live_set: HashSet<u32> = live.iter().copied().collect();
        let gone: Vec<(u32, ObjectIds)> = folder
            .msgs
            .iter()
            .filter(|(u, _)| !live_set.contains(u))
            .map(|(u, i)| (*u, *i))
            .collect();
        for (uid, ids) in gone {
            folder.msgs.remove(&uid);
            data.remove(&visible, folder.uidvalidity, uid, ids);
        }
        let new: Vec<u32> = live
            .into_iter()
            .filter(|u| !folder.msgs.contains_key(u))
            .collect();
        let added = match ids_in_folder(store, &name, &new, false) {
            Ok(a) => a,
            Err(ClientError::NoSuchMailbox(_)) => {
                // Deleted meanwhile: its copies go with it.
                for (uid, ids) in std::mem::take(&mut folder.msgs) {
                    data.remove(&visible, folder.uidvalidity, uid, ids);
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        for (uid, ids) in added {
            folder.msgs.insert(uid, ids);
            data.add(&folder, uid, ids);
        }
        (
            folder.uidvalidity,
            folder.generation,
            folder.modseq,
            folder.uidnext,
        ) = now;
        data.folders.insert(visible, folder);
    }
    Ok(())
}

impl Session {
    /// EMAILID and THREADID of messages of a folder by UID, in UID order, without selecting
    /// it. With `expunged`, messages expunged but still recorded (until compaction) are
    /// named too, when their ids are known.
    pub async fn object_ids(
        &self,
        folder: &str,
        uids: Vec<u32>,
        expunged: bool,
    ) -> Result<Vec<(u32, ObjectIds)>> {
        let folder = folder.to_owned();
        self.run(move |s, _| {
            let name = s.resolve(&folder)?;
            s.require(&name, 'r')?;
            ids_in_folder(s.client.store(), &name, &uids, expunged)
        })
        .await
    }

    /// The user's [`EmailIndex`] over their own folders, brought up to date now: every
    /// change made before this call, by any process, is in it.
    pub async fn email_index(&self) -> Result<EmailIndex> {
        self.run(move |s, _| {
            let store = s.client.store();
            let slot = slot(store, s.user.as_str());
            let mut guard = lock(&slot);
            if let Err(e) = refresh(s, store, &mut guard) {
                // Half-applied: start again next time rather than serve a wrong index.
                *guard = EmailIndex::default();
                return Err(e);
            }
            Ok(guard.clone())
        })
        .await
    }
}
