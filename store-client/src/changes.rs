//! Whole-folder snapshots for stateless front ends (JMAP): every message's UID, modseq,
//! flags, dates and size in one read, expunged messages included while the index still
//! holds them, so a client's "what changed since modseq N" is answered from the snapshot.

use msgstore::{flag, Msg};

use crate::types::Flags;
use crate::{ClientError, MessageStructure, Result, Session};

/// One message as a snapshot sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageState {
    pub uid: u32,
    pub modseq: u64,
    /// Expunged, but still recorded in the index (until compaction).
    pub expunged: bool,
    pub flags: Flags,
    /// Unix seconds.
    pub internal_date: i64,
    pub size: u64,
}

/// A folder's header counters and every message it records, in UID order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderSnapshot {
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub highest_modseq: u64,
    /// Changes when the index is rewritten (compaction, repair): expunged records before
    /// it are gone, so changes across a generation cannot be listed.
    pub generation: u64,
    pub messages: Vec<MessageState>,
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

impl Session {
    /// Everything about a folder's messages, read at once without selecting it.
    pub async fn folder_snapshot(&self, folder: &str) -> Result<FolderSnapshot> {
        let folder = folder.to_owned();
        self.run(move |s, store| {
            let name = s.resolve(&folder)?;
            s.require(&name, 'r')?;
            Ok(store.with_state(&name, |st| {
                let records = st.records(0, st.msgs.len(), name.as_str())?;
                let messages = st
                    .msgs
                    .iter()
                    .zip(records.iter())
                    .map(|(m, r)| MessageState {
                        uid: m.uid,
                        modseq: m.modseq,
                        expunged: m.is_expunged(),
                        flags: flags_of(m, &st.keywords),
                        internal_date: r.internal_date,
                        size: r.size,
                    })
                    .collect();
                Ok(FolderSnapshot {
                    uidvalidity: st.header.uidvalidity,
                    uidnext: st.header.uidnext,
                    highest_modseq: st.header.highest_modseq,
                    generation: st.header.generation,
                    messages,
                })
            })?)
        })
        .await
    }

    /// A message's parsed structure without selecting its folder.
    pub async fn message_structure(&self, folder: &str, uid: u32) -> Result<MessageStructure> {
        let folder = folder.to_owned();
        self.run(move |s, store| {
            let name = s.resolve(&folder)?;
            s.require(&name, 'r')?;
            Ok(store.structure(&name, uid)?)
        })
        .await
    }

    /// The parsed structures of several messages in one blocking call (sorting, threading);
    /// messages that are gone are left out.
    pub async fn message_structures(
        &self,
        folder: &str,
        uids: Vec<u32>,
    ) -> Result<Vec<(u32, MessageStructure)>> {
        let folder = folder.to_owned();
        self.run(move |s, store| {
            let name = s.resolve(&folder)?;
            s.require(&name, 'r')?;
            let mut out = Vec::with_capacity(uids.len());
            for uid in uids {
                match store.structure(&name, uid) {
                    Ok(st) => out.push((uid, st)),
                    Err(msgstore::StoreError::NoSuchMessage(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(out)
        })
        .await
    }

    /// A whole message (CRLF line endings) without selecting its folder.
    pub async fn message_bytes(&self, folder: &str, uid: u32) -> Result<Vec<u8>> {
        let folder = folder.to_owned();
        self.run(move |s, store| {
            let name = s.resolve(&folder)?;
            s.require(&name, 'r')?;
            let live = store.with_state(&name, |st| {
                Ok(st.get(uid).map(|m| !m.is_expunged()).unwrap_or(false))
            })?;
            if !live {
                return Err(ClientError::NoSuchMessage(uid));
            }
            Ok(store.read_message(&name, uid)?)
        })
        .await
    }
}
