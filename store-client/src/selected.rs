//! A selected folder: one session's numbered view of a folder (IMAP sequence numbers), kept
//! in step with the shared state by `poll`, which tells the session what to announce.

use std::collections::{HashMap, HashSet};

use msgstore::{flag, FlagOp, FolderState, MailboxName, Msg, Store};

use crate::notify::{Token, Watcher};
use crate::search::{self, SearchKey};
use crate::types::{Flag, Flags};
use crate::{blocking, ClientError, MessageStructure, Result, Session};

/// What a FETCH of metadata returns for one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageMeta {
    pub uid: u32,
    pub flags: Flags,
    pub modseq: u64,
    /// Unix seconds.
    pub internal_date: i64,
    pub size: u64,
    /// When it was saved into this folder (SAVEDATE), Unix seconds.
    pub save_date: i64,
}

/// What changed since the last poll, in the order a session announces it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Update {
    /// Sequence numbers to announce as EXPUNGE, each valid after the ones before it.
    pub expunged: Vec<u32>,
    /// The same messages by UID (QRESYNC VANISHED).
    pub vanished: Vec<u32>,
    /// New message count, when messages arrived.
    pub exists: Option<u32>,
    /// How many messages are \Recent for this session, when that changed.
    pub recent: Option<u32>,
    /// Flag changes by others: (sequence number, uid, flags, modseq).
    pub flags: Vec<(u32, u32, Flags, u64)>,
    /// The folder's keywords, when new ones were defined (the FLAGS response).
    pub keywords: Option<Vec<String>>,
}

impl Update {
    pub fn is_empty(&self) -> bool {
        *self == Update::default()
    }
}

/// The result of a flag store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreResult {
    /// (uid, new flags, new modseq) of every message changed.
    pub changed: Vec<(u32, Flags, u64)>,
    /// UIDs left alone because they changed after UNCHANGEDSINCE (RFC 7162 MODIFIED).
    pub modified: Vec<u32>,
}

/// Folders up to this many messages keep a copy of every message's metadata in the session
/// (about 64 bytes a message), so that FETCH of flags, dates and sizes is answered without a
/// trip to the blocking pool while nothing changed; larger folders read the store each time.
const META_CACHE_MAX: u64 = 4096;

/// One message's metadata as of the cache's token.
#[derive(Clone, Copy)]
struct CachedMeta {
    msg: Msg,
    internal_date: i64,
    size: u64,
    save_date: i64,
}

/// The folder's live messages as of `token`, brought up to date by `poll`. Valid while the
/// notifier's token for the folder is still `token`: writes by this process change it before
/// they are acknowledged, other processes' within the notifier's poll interval (the same
/// bound within which sessions learn of them at all).
struct MetaCache {
    token: Token,
    /// The keyword table, empty slots included, as the bitmaps index it.
    table: Vec<String>,
    /// Live messages in UID order.
    msgs: Vec<CachedMeta>,
}

fn token_of(s: &FolderState) -> Token {
    (
        s.header.generation,
        s.header.highest_modseq,
        s.header.record_count,
    )
}

impl MetaCache {
    fn cached(m: &Msg, r: &msgstore::index::Record) -> CachedMeta {
        CachedMeta {
            msg: *m,
            internal_date: r.internal_date,
            size: r.size,
            save_date: r.save_date,
        }
    }

    fn build(s: &FolderState, name: &str) -> msgstore::Result<MetaCache> {
        let records = s.records(0, s.msgs.len(), name)?;
        let msgs = s
            .msgs
            .iter()
            .zip(&records)
            .filter(|(m, _)| !m.is_expunged())
            .map(|(m, r)| Self::cached(m, r))
            .collect();
        Ok(MetaCache {
            token: token_of(s),
            table: s.keywords.clone(),
            msgs,
        })
    }

    /// Apply every change with a modseq above `since` (the cache's own highest modseq).
    fn update(&mut self, s: &FolderState, since: u64, name: &str) -> msgstore::Result<()> {
        for m in s.msgs.iter().filter(|m| m.modseq > since) {
            match self.msgs.binary_search_by_key(&m.uid, |c| c.msg.uid) {
                Ok(i) if m.is_expunged() => {
                    self.msgs.remove(i);
                }
                Ok(i) => self.msgs[i].msg = *m,
                Err(_) if m.is_expunged() => {}
                Err(i) => {
                    let r = s.record(m.uid, name)?;
                    self.msgs.insert(i, Self::cached(m, &r));
                }
            }
        }
        if self.table != s.keywords {
            self.table = s.keywords.clone();
        }
        self.token = token_of(s);
        Ok(())
    }

    /// Bring the cache (if any) up to date with `s`, or drop it when the folder is too large.
    fn refresh(
        cache: Option<MetaCache>,
        s: &FolderState,
        name: &str,
    ) -> msgstore::Result<Option<MetaCache>> {
        if s.header.exists > META_CACHE_MAX {
            return Ok(None);
        }
        match cache {
            Some(mut c) if c.token.0 == s.header.generation => {
                let since = c.token.1;
                c.update(s, since, name)?;
                Ok(Some(c))
            }
            _ => MetaCache::build(s, name).map(Some),
        }
    }

    fn meta(&self, uids: &[u32]) -> Vec<MessageMeta> {
        uids.iter()
            .filter_map(|&u| {
                let i = self.msgs.binary_search_by_key(&u, |c| c.msg.uid).ok()?;
                let c = &self.msgs[i];
                Some(MessageMeta {
                    uid: u,
                    flags: flags_of(&c.msg, &self.table),
                    modseq: c.msg.modseq,
                    internal_date: c.internal_date,
                    size: c.size,
                    save_date: c.save_date,
                })
            })
            .collect()
    }
}

pub struct SelectedFolder {
    session: Session,
    name: MailboxName,
    visible: String,
    read_only: bool,
    uidvalidity: u32,
    uidnext: u32,
    generation: u64,
    modseq: u64,
    uids: Vec<u32>,
    recent: HashSet<u32>,
    pending_expunge: HashSet<u32>,
    own: HashMap<u32, u64>,
    keywords: Vec<String>,
    first_unseen: Option<u32>,
    /// Metadata of small folders, answered from memory while `watch` shows no change.
    cache: Option<MetaCache>,
    watch: Option<Watcher>,
    /// What the next `poll` would read, read by this session's last write.
    stash: Option<Stashed>,
}

fn flags_of(m: &Msg, keywords: &[String]) -> Flags {
    let mut names = Vec::new();
    let mut b = m.keywords;
    while b != 0 {
        let i = b.trailing_zeros() as usize;
        if let Some(k) = keywords.get(i).filter(|k| !k.is_empty()) {
            names.push(k.clone());
        }
        b &= b - 1;
    }
    Flags {
        bits: m.flags & flag::USER_MASK,
        keywords: names,
    }
}

impl SelectedFolder {
    pub(crate) fn open(
        session: Session,
        name: MailboxName,
        visible: String,
        read_only: bool,
        store: &Store,
    ) -> Result<SelectedFolder> {
        let recent_mark = if read_only {
            store.status(&name)?.recent_uid
        } else {
            store.claim_recent(&name)?
        };
        let mut sel = store.with_state(&name, |s| {
            let uids: Vec<u32> = s.live().map(|m| m.uid).collect();
            let first_unseen = s
                .live()
                .position(|m| m.flags & flag::SEEN == 0)
                .map(|p| p as u32 + 1);
            Ok(SelectedFolder {
                session: session.clone(),
                name: name.clone(),
                visible: visible.clone(),
                read_only,
                uidvalidity: s.header.uidvalidity,
                uidnext: s.header.uidnext,
                generation: s.header.generation,
                modseq: s.header.highest_modseq,
                uids,
                recent: HashSet::new(),
                pending_expunge: HashSet::new(),
                own: HashMap::new(),
                keywords: s
                    .keywords
                    .iter()
                    .filter(|k| !k.is_empty())
                    .cloned()
                    .collect(),
                first_unseen,
                cache: MetaCache::refresh(None, s, name.as_str())?,
                watch: None,
                stash: None,
            })
        })?;
        if !read_only {
            sel.recent = sel
                .uids
                .iter()
                .copied()
                .filter(|&u| u > recent_mark)
                .collect();
        }
        Ok(sel)
    }

    pub fn name(&self) -> &str {
        &self.visible
    }
    pub fn read_only(&self) -> bool {
        self.read_only
    }
    pub fn uidvalidity(&self) -> u32 {
        self.uidvalidity
    }
    pub fn uidnext(&self) -> u32 {
        self.uidnext
    }
    pub fn highest_modseq(&self) -> u64 {
        self.modseq
    }
    pub fn exists(&self) -> u32 {
        self.uids.len() as u32
    }
    pub fn recent_count(&self) -> u32 {
        self.recent.len() as u32
    }
    pub fn is_recent(&self, uid: u32) -> bool {
        self.recent.contains(&uid)
    }
    /// Sequence number of the first unseen message at select time.
    pub fn first_unseen(&self) -> Option<u32> {
        self.first_unseen
    }
    /// Keywords defined in the folder (for the FLAGS and PERMANENTFLAGS responses).
    pub fn keywords(&self) -> &[String] {
        &self.keywords
    }
    /// UIDs in sequence-number order.
    pub fn uids(&self) -> &[u32] {
        &self.uids
    }
    pub fn uid_of(&self, seq: u32) -> Option<u32> {
        self.uids.get((seq as usize).checked_sub(1)?).copied()
    }
    pub fn seq_of(&self, uid: u32) -> Option<u32> {
        self.uids.binary_search(&uid).ok().map(|i| i as u32 + 1)
    }

    /// Subscribe to the folder's changes, from the token read when it was opened (called
    /// on the async side: the notifier's poller is a task).
    pub(crate) fn attach_watch(&mut self) {
        if let Some(c) = &self.cache {
            let w = self
                .session
                .client
                .notifier()
                .watch_from(&self.name, c.token);
            self.watch = Some(w);
        }
    }

    fn store(&self) -> std::sync::Arc<Store> {
        self.session.client.store().clone()
    }

    /// The store and folder behind this view, for sibling modules (object ids).
    pub(crate) fn backing(&self) -> (std::sync::Arc<Store>, MailboxName) {
        (self.store(), self.name.clone())
    }

    /// Flags, modseq, dates and sizes of messages, in the order asked. Messages expunged
    /// meanwhile are left out.
    pub async fn fetch_meta(&self, uids: &[u32]) -> Result<Vec<MessageMeta>> {
        if let (Some(c), Some(w)) = (&self.cache, &self.watch) {
            if w.token() == c.token && self.session.client.notifier().poller_fresh() {
                return Ok(c.meta(uids));
            }
        }
        let store = self.store();
        let name = self.name.clone();
        let uids = uids.to_vec();
        blocking(move || {
            store
                .with_state(&name, |s| {
                    let positions: Vec<Option<usize>> = uids
                        .iter()
                        .map(|&u| s.position(u).filter(|&p| !s.msgs[p].is_expunged()))
                        .collect();
                    let (lo, hi) = positions
                        .iter()
                        .flatten()
                        .fold((usize::MAX, 0), |(lo, hi), &p| (lo.min(p), hi.max(p + 1)));
                    if lo >= hi {
                        return Ok(Vec::new());
                    }
                    // One read covering the span beats one read per message for ranges like 1:*.
                    let span = hi - lo;
                    let count = positions.iter().flatten().count();
                    let records = if span <= count.saturating_mul(4) {
                        Some(s.records(lo, hi, name.as_str())?)
                    } else {
                        None
                    };
                    let mut out = Vec::with_capacity(count);
                    for p in positions.into_iter().flatten() {
                        let m = &s.msgs[p];
                        let rec = match &records {
                            Some(r) => r[p - lo],
                            None => s.record(m.uid, name.as_str())?,
                        };
                        out.push(MessageMeta {
                            uid: m.uid,
                            flags: flags_of(m, &s.keywords),
                            modseq: m.modseq,
                            internal_date: rec.internal_date,
                            size: rec.size,
                            save_date: rec.save_date,
                        });
                    }
                    Ok(out)
                })
                .map_err(ClientError::from)
        })
        .await
    }

    /// The parsed structure (envelope, body structure, part offsets) of a message.
    pub async fn structure(&self, uid: u32) -> Result<MessageStructure> {
        let (store, name) = (self.store(), self.name.clone());
        blocking(move || {
            structures_of(&store, &name, &[uid])?
                .pop()
                .map(|(_, s)| s)
                .ok_or_else(|| msgstore::StoreError::NoSuchMessage(uid).into())
        })
        .await
    }

    /// The structures of several messages in one trip to the blocking pool (FETCH ENVELOPE
    /// or BODYSTRUCTURE of a range); messages expunged meanwhile are left out.
    pub async fn structures(&self, uids: &[u32]) -> Result<Vec<(u32, MessageStructure)>> {
        let (store, name) = (self.store(), self.name.clone());
        let uids = uids.to_vec();
        blocking(move || structures_of(&store, &name, &uids)).await
    }

    /// The whole message, as stored (CRLF line endings).
    pub async fn read_message(&self, uid: u32) -> Result<Vec<u8>> {
        let (store, name) = (self.store(), self.name.clone());
        blocking(move || Ok(store.read_message(&name, uid)?)).await
    }

    /// `len` bytes from `offset` of a message (partial FETCH, BODY[1] as a byte range).
    pub async fn read_range(&self, uid: u32, offset: u64, len: u64) -> Result<Vec<u8>> {
        let (store, name) = (self.store(), self.name.clone());
        blocking(move || Ok(store.read_message_range(&name, uid, offset, len)?)).await
    }

    /// The message as a file to stream from, with its size: large messages are never held
    /// in memory.
    pub async fn open_message(&self, uid: u32) -> Result<(tokio::fs::File, u64)> {
        let (store, name) = (self.store(), self.name.clone());
        let (f, size) = blocking(move || Ok(store.open_message(&name, uid)?)).await?;
        Ok((tokio::fs::File::from_std(f), size))
    }

    /// Change flags (STORE / UID STORE). Needs `s` for \Seen, `t` for \Deleted, `w` for the rest.
    pub async fn store_flags(
        &mut self,
        uids: &[u32],
        op: FlagOp,
        flags: &[Flag],
        unchanged_since: Option<u64>,
    ) -> Result<StoreResult> {
        if self.read_only {
            return Err(ClientError::PermissionDenied("mailbox is read-only".into()));
        }
        let f = Flags::from_list(flags);
        let session = self.session.clone();
        let name = self.name.clone();
        let uids = uids.to_vec();
        let (args, cache) = (self.poll_args(), self.take_cache_for_stash());
        let outcome = blocking(move || {
            if name.user() != session.user() {
                let r = session.client.store().rights(&name, session.user())?;
                let need_seen = f.bits & flag::SEEN != 0;
                let need_del = f.bits & flag::DELETED != 0;
                let need_w = f.bits & !(flag::SEEN | flag::DELETED) != 0 || !f.keywords.is_empty();
                if (need_seen && !r.has('s'))
                    || (need_del && !r.has('t'))
                    || (need_w && !r.has('w'))
                {
                    return Err(ClientError::PermissionDenied(format!(
                        "insufficient rights on {name}"
                    )));
                }
            }
            let store = session.client.store();
            let out = store.store_flags(&name, &uids, op, f.bits, &f.keywords, unchanged_since)?;
            // The keyword names are needed only to report messages that carry keywords.
            let kws = if out.changed.iter().any(|m| m.keywords != 0) {
                store.with_state(&name, |s| Ok(s.keywords.clone()))?
            } else {
                Vec::new()
            };
            let stashed = cache.and_then(|c| Self::stash_poll(store, &name, &args, c));
            Ok((out, kws, stashed))
        })
        .await?;
        let (out, kws, stashed) = outcome;
        self.keep_stash(stashed);
        self.session.client.notifier().poke(&self.name);
        let mut result = StoreResult {
            modified: out.modified,
            ..Default::default()
        };
        for m in out.changed {
            self.own.insert(m.uid, m.modseq);
            result.changed.push((m.uid, flags_of(&m, &kws), m.modseq));
        }
        Ok(result)
    }

    /// [`Session::append_many`] from a session with this folder selected: when the messages
    /// go to this folder, the same trip to the blocking pool also reads what the next `poll`
    /// will announce (their EXISTS).
    pub async fn append_many(
        &mut self,
        folder: &str,
        msgs: Vec<(Vec<u8>, Vec<Flag>, Option<i64>)>,
    ) -> Result<(u32, Vec<u32>)> {
        let session = self.session.clone();
        let folder = folder.to_owned();
        let here = self.name.clone();
        let (args, cache) = (self.poll_args(), self.take_cache_for_stash());
        let (name, out, stashed, unused) = blocking(move || {
            let store = session.client.store();
            let (name, out) = session.append_in(store, &folder, msgs)?;
            if name == here {
                let stashed = cache.and_then(|c| Self::stash_poll(store, &name, &args, c));
                Ok((name, out, stashed, None))
            } else {
                Ok((name, out, None, cache))
            }
        })
        .await?;
        if unused.is_some() {
            self.cache = unused;
        }
        self.keep_stash(stashed);
        self.session.client.notifier().poke(&name);
        Ok(out)
    }

    /// Expunge \Deleted messages (within `uids` for UID EXPUNGE). Returns the UIDs expunged;
    /// `poll(true)` then gives their sequence numbers to announce.
    pub async fn expunge(&mut self, uids: Option<&[u32]>) -> Result<Vec<u32>> {
        if self.read_only {
            return Err(ClientError::PermissionDenied("mailbox is read-only".into()));
        }
        let session = self.session.clone();
        let name = self.name.clone();
        let uids = uids.map(<[u32]>::to_vec);
        let (args, cache) = (self.poll_args(), self.take_cache_for_stash());
        let (gone, stashed) = blocking(move || {
            session.require(&name, 'e')?;
            let store = session.client.store();
            let gone = store.expunge(&name, uids.as_deref())?;
            let stashed = cache.and_then(|c| Self::stash_poll(store, &name, &args, c));
            Ok((gone, stashed))
        })
        .await?;
        self.keep_stash(stashed);
        self.session.client.notifier().poke(&self.name);
        Ok(gone.into_iter().map(|g| g.uid).collect())
    }

    /// What a poll needs from this view, taken before a trip to the blocking pool.
    fn poll_args(&self) -> PollArgs {
        PollArgs {
            since: self.modseq,
            generation: self.generation,
            last_known: self.uids.last().copied().unwrap_or(0),
            claim: !self.read_only,
        }
    }

    /// A write made by this session, still on the blocking pool, also reads what the next
    /// `poll` would (one trip instead of two): kept with the folder's token as read then,
    /// and used only if the notifier still shows that token when the poll comes, that is,
    /// if nothing changed since (another process's change not yet seen by the notifier is
    /// announced when it is, as for any session).
    fn stash_poll(
        store: &Store,
        name: &MailboxName,
        args: &PollArgs,
        cache: MetaCache,
    ) -> Option<Stashed> {
        poll_raw(store, name, args, Some(cache)).ok()
    }

    /// The metadata cache, handed to a write that will read the next poll (see
    /// [`Self::stash_poll`]); none when this view could not use that reading.
    fn take_cache_for_stash(&mut self) -> Option<MetaCache> {
        self.stash = None;
        if self.watch.is_some() {
            self.cache.take()
        } else {
            None
        }
    }

    /// Keep a poll read by a write, if this view can tell later whether it is still current.
    fn keep_stash(&mut self, stashed: Option<Stashed>) {
        self.stash = stashed.filter(|_| self.watch.is_some());
    }

    /// Catch up with changes made by anyone. Expunges are applied to the numbering only when
    /// `allow_expunge` (IMAP forbids renumbering during FETCH, STORE and SEARCH); until then
    /// they are kept pending.
    pub async fn poll(&mut self, allow_expunge: bool) -> Result<Update> {
        let raw = match self.stash.take() {
            Some((token, raw)) if self.watch.as_ref().is_some_and(|w| w.token() == token) => raw,
            stale => {
                if let Some((_, raw)) = stale {
                    // Newer than what this view has: the cache starts from there.
                    self.cache = raw.cache;
                }
                let (store, name) = (self.store(), self.name.clone());
                let args = self.poll_args();
                let cache = self.cache.take();
                blocking(move || poll_raw(&store, &name, &args, cache).map(|(_, raw)| raw)).await?
            }
        };
        self.apply_poll(raw, allow_expunge)
    }

    fn apply_poll(&mut self, raw: PollRaw, allow_expunge: bool) -> Result<Update> {
        let PollRaw {
            seen,
            highest,
            uidnext,
            gen,
            keywords,
            cache,
            mark,
        } = raw;
        let since = self.modseq;
        self.cache = cache;
        let mut up = Update::default();
        let mut last_uid = self.uids.last().copied().unwrap_or(0);
        let mut arrived = Vec::new();
        let mut changed = Vec::new();
        match seen {
            Seen::Changed(msgs) => {
                for m in msgs {
                    if m.is_expunged() {
                        if self.seq_of(m.uid).is_some() {
                            self.pending_expunge.insert(m.uid);
                        }
                    } else if m.uid > last_uid {
                        arrived.push(m);
                    } else if self.seq_of(m.uid).is_some() {
                        changed.push(m);
                    }
                }
            }
            Seen::Full(live) => {
                let live_set: HashSet<u32> = live.iter().map(|m| m.uid).collect();
                for &u in &self.uids {
                    if !live_set.contains(&u) {
                        self.pending_expunge.insert(u);
                    }
                }
                for m in live {
                    if m.uid > last_uid {
                        arrived.push(m);
                    } else if m.modseq > since && self.seq_of(m.uid).is_some() {
                        changed.push(m);
                    }
                }
            }
        }
        if allow_expunge && !self.pending_expunge.is_empty() {
            let mut i = 0;
            while i < self.uids.len() {
                let u = self.uids[i];
                if self.pending_expunge.remove(&u) {
                    self.uids.remove(i);
                    self.recent.remove(&u);
                    self.own.remove(&u);
                    up.expunged.push(i as u32 + 1);
                    up.vanished.push(u);
                } else {
                    i += 1;
                }
            }
            self.pending_expunge.clear();
        }
        if !arrived.is_empty() {
            arrived.sort_by_key(|m| m.uid);
            let new_uids: Vec<u32> = arrived.iter().map(|m| m.uid).collect();
            self.uids.extend(&new_uids);
            last_uid = *new_uids.last().unwrap_or(&last_uid);
            if let Some(mark) = mark {
                for u in new_uids {
                    if u > mark {
                        self.recent.insert(u);
                    }
                }
            }
            up.exists = Some(self.uids.len() as u32);
            up.recent = Some(self.recent.len() as u32);
        } else if !up.expunged.is_empty() {
            up.recent = Some(self.recent.len() as u32);
        }
        let _ = last_uid;
        for m in changed {
            if self.own.get(&m.uid) == Some(&m.modseq) {
                continue;
            }
            if let Some(seq) = self.seq_of(m.uid) {
                up.flags
                    .push((seq, m.uid, flags_of(&m, &keywords), m.modseq));
            }
        }
        if keywords != self.keywords {
            self.keywords = keywords.clone();
            up.keywords = Some(keywords);
        }
        self.modseq = highest;
        self.uidnext = uidnext;
        self.generation = gen;
        self.own.retain(|_, ms| *ms > highest);
        Ok(up)
    }

    /// UIDs expunged from this folder with a modseq above `modseq` that the index still
    /// records (QRESYNC `VANISHED (EARLIER)`, RFC 7162 3.2.5.1). Records of expunged messages
    /// are kept until a compaction; the UIDs it dropped are not reported.
    pub async fn vanished_since(&self, modseq: u64) -> Result<Vec<u32>> {
        let (store, name) = (self.store(), self.name.clone());
        blocking(move || {
            Ok(store.with_state(&name, |s| {
                Ok(s.msgs
                    .iter()
                    .filter(|m| m.is_expunged() && m.modseq > modseq)
                    .map(|m| m.uid)
                    .collect())
            })?)
        })
        .await
    }

    /// UIDs of the messages matching `key`, in UID order.
    pub async fn search(&self, key: &SearchKey) -> Result<Vec<u32>> {
        let (store, name) = (self.store(), self.name.clone());
        let key = key.clone();
        let seqs = self.uids.clone();
        let recent = self.recent.clone();
        blocking(move || search::run(&store, &name, &key, &seqs, &recent)).await
    }
}

/// What [`SelectedFolder::poll`] reads on the blocking pool.
struct PollArgs {
    since: u64,
    generation: u64,
    last_known: u32,
    claim: bool,
}

enum Seen {
    Changed(Vec<Msg>),
    Full(Vec<Msg>),
}

/// A poll's reading of the folder, not yet applied to the view.
struct PollRaw {
    seen: Seen,
    highest: u64,
    uidnext: u32,
    gen: u64,
    keywords: Vec<String>,
    cache: Option<MetaCache>,
    mark: Option<u32>,
}

/// A poll read by a write, with the folder's token at that moment.
type Stashed = (Token, PollRaw);

/// The changes, the metadata cache brought up to date with them, and the \Recent claim
/// when messages arrived; with the token of the state they were read from.
fn poll_raw(
    store: &Store,
    name: &MailboxName,
    args: &PollArgs,
    cache: Option<MetaCache>,
) -> Result<Stashed> {
    let (since, generation) = (args.since, args.generation);
    let (seen, highest, uidnext, gen, keywords, cache, token) = store.with_state(name, |s| {
        let seen = if s.header.generation != generation {
            Seen::Full(s.live().copied().collect())
        } else {
            Seen::Changed(
                s.msgs
                    .iter()
                    .filter(|m| m.modseq > since)
                    .copied()
                    .collect(),
            )
        };
        let kws: Vec<String> = s
            .keywords
            .iter()
            .filter(|k| !k.is_empty())
            .cloned()
            .collect();
        let cache = MetaCache::refresh(cache, s, name.as_str())?;
        Ok((
            seen,
            s.header.highest_modseq,
            s.header.uidnext,
            s.header.generation,
            kws,
            cache,
            token_of(s),
        ))
    })?;
    let arrived = match &seen {
        Seen::Changed(v) | Seen::Full(v) => v
            .iter()
            .any(|m| m.uid > args.last_known && !m.is_expunged()),
    };
    let mark = if args.claim && arrived {
        Some(store.claim_recent(name)?)
    } else {
        None
    };
    Ok((
        token,
        PollRaw {
            seen,
            highest,
            uidnext,
            gen,
            keywords,
            cache,
            mark,
        },
    ))
}

/// The structures of `uids` from the folder's structure cache, all read under one look at the
/// folder (one lock, one freshness check) rather than one per message; a message whose cache
/// entry is damaged is parsed afresh by [`Store::structure`], which logs it for reconstruct.
/// Messages no longer in the folder are left out.
fn structures_of(
    store: &Store,
    name: &MailboxName,
    uids: &[u32],
) -> Result<Vec<(u32, MessageStructure)>> {
    let cached: Vec<(u32, Option<MessageStructure>)> = store.with_state(name, |s| {
        let mut out = Vec::with_capacity(uids.len());
        for &u in uids {
            let rec = match s.record(u, name.as_str()) {
                Ok(r) => r,
                Err(msgstore::StoreError::NoSuchMessage(_)) => continue,
                Err(e) => return Err(e),
            };
            let st = s
                .cached_structure(&rec)
                .and_then(|b| MessageStructure::from_bytes(&b).ok());
            out.push((u, st));
        }
        Ok(out)
    })?;
    let mut out = Vec::with_capacity(cached.len());
    for (u, st) in cached {
        match st {
            Some(st) => out.push((u, st)),
            None => match store.structure(name, u) {
                Ok(st) => out.push((u, st)),
                Err(msgstore::StoreError::NoSuchMessage(_)) => {}
                Err(e) => return Err(e.into()),
            },
        }
    }
    Ok(out)
}
