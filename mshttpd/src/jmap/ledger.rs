//! What each folder held at the states this process handed out, so Email/changes can
//! answer across the two events after which the store itself no longer knows: a deleted
//! folder (its records are gone with it) and a compaction (the records of expunged
//! messages are dropped when the index is rewritten).
//!
//! Whenever a state string is made ([`Req::state`](super::Req::state) and Email/changes),
//! every folder whose (generation, HIGHESTMODSEQ, UIDNEXT) moved since it was last noted
//! is noted again: each record it holds (UID, modseq, expunged or not) with its Email and
//! Thread id. The note of a generation is taken at or after any state of that generation
//! a client was given, and it keeps expunged records with their modseq, so the folder's
//! contents at any such state can be told from it. Two generations are kept per folder,
//! and the notes of deleted folders stay, for the [`USERS`] most recently active users,
//! while the process runs: after a restart (or for a user pushed out) a state from before
//! a deletion or a compaction gets cannotCalculateChanges again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use store_client::ObjectIds;

use super::ids::FolderState;
use super::{Folder, MResult, Req};

/// Users whose notes are kept (least recently used dropped first).
const USERS: usize = 64;
/// Generations noted per folder.
const GENERATIONS: usize = 2;
/// A folder of more records is not noted: noting costs a snapshot of the whole folder each
/// time it moves, and memory for each record (about 80 bytes). Across a deletion or
/// compaction of such a folder, Email/changes answers cannotCalculateChanges.
const MAX_FOLDER_RECORDS: usize = 20_000;
/// Records noted across all users (about 80 MB): least recently used users go first.
const MAX_RECORDS: usize = 1_000_000;

/// One record of a folder as noted.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Noted {
    pub modseq: u64,
    pub expunged: bool,
    pub ids: ObjectIds,
}

/// A folder at one generation, as last noted.
#[derive(Clone, Debug, Default)]
pub(crate) struct Note {
    pub modseq: u64,
    pub uidnext: u32,
    pub msgs: BTreeMap<u32, Noted>,
}

impl Note {
    /// The records live at `old` (a state of this note's generation, not later than it):
    /// below its UIDNEXT, and not expunged by then.
    pub fn live_at(&self, old: &FolderState) -> impl Iterator<Item = (u32, &Noted)> + '_ {
        let (modseq, uidnext) = (old.modseq, old.uidnext);
        self.msgs
            .iter()
            .filter(move |(uid, n)| **uid < uidnext && (!n.expunged || n.modseq > modseq))
            .map(|(u, n)| (*u, n))
    }

    /// Whether this note can tell the folder's contents at `old`.
    pub fn covers(&self, old: &FolderState) -> bool {
        self.modseq >= old.modseq && self.uidnext >= old.uidnext
    }
}

#[derive(Default)]
struct UserNotes {
    /// UIDVALIDITY -> generation -> note.
    folders: HashMap<u32, BTreeMap<u64, Note>>,
    used: u64,
}

#[derive(Default)]
pub(crate) struct Ledger {
    users: Mutex<(HashMap<String, UserNotes>, u64)>,
}

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<String, UserNotes>, u64)> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The note of a folder at `old`'s generation, if it can tell the contents at `old`.
    pub fn note_for(&self, user: &str, uidvalidity: u32, old: &FolderState) -> Option<Note> {
        let g = self.lock();
        let n =
            g.0.get(user)?
                .folders
                .get(&uidvalidity)?
                .get(&old.generation)?;
        n.covers(old).then(|| n.clone())
    }

    /// The ids of a message as any note of its folder has them.
    pub fn ids_of(&self, user: &str, uidvalidity: u32, uid: u32) -> Option<ObjectIds> {
        let g = self.lock();
        let gens = g.0.get(user)?.folders.get(&uidvalidity)?;
        gens.values()
            .rev()
            .find_map(|n| n.msgs.get(&uid).map(|m| m.ids))
    }

    /// Which folders moved since they were last noted (with what is known of them).
    fn stale(&self, user: &str, folders: &[Folder]) -> Vec<(Folder, Option<Note>)> {
        let mut g = self.lock();
        g.1 += 1;
        let tick = g.1;
        let mine = g.0.entry(user.to_owned()).or_default();
        mine.used = tick;
        let mut out = Vec::new();
        for f in folders {
            let st = super::ids::folder_state(f);
            let gens = mine.folders.get(&f.uidvalidity);
            match gens.and_then(|g| g.get(&st.generation)) {
                Some(n) if n.modseq == st.modseq && n.uidnext == st.uidnext => {}
                // A UID names the same message in every generation: the ids known from
                // the latest note are good for the next.
                _ => out.push((
                    f.clone(),
                    gens.and_then(|g| g.last_key_value())
                        .map(|(_, n)| n.clone()),
                )),
            }
        }
        out
    }

    /// A folder too large to note: what was noted of it goes.
    fn forget(&self, user: &str, uidvalidity: u32) {
        if let Some(mine) = self.lock().0.get_mut(user) {
            mine.folders.remove(&uidvalidity);
        }
    }

    fn store(&self, user: &str, uidvalidity: u32, generation: u64, note: Note) {
        let mut g = self.lock();
        let mine = g.0.entry(user.to_owned()).or_default();
        let gens = mine.folders.entry(uidvalidity).or_default();
        gens.insert(generation, note);
        while gens.len() > GENERATIONS {
            gens.pop_first();
        }
        let records = |g: &HashMap<String, UserNotes>| -> usize {
            g.values()
                .flat_map(|u| u.folders.values())
                .flat_map(|gens| gens.values())
                .map(|n| n.msgs.len())
                .sum()
        };
        while g.0.len() > USERS || (g.0.len() > 1 && records(&g.0) > MAX_RECORDS) {
            let Some(oldest) =
                g.0.iter()
                    .filter(|(k, _)| k.as_str() != user)
                    .min_by_key(|(_, u)| u.used)
                    .map(|(k, _)| k.clone())
            else {
                break;
            };
            g.0.remove(&oldest);
        }
    }
}

/// Notes every folder of `folders` that moved since it was last noted.
pub(crate) async fn note(req: &mut Req<'_>, folders: &[Folder]) -> MResult<()> {
    let ledger = &req.ctx.ledger;
    let user = req.user.clone();
    for (f, before) in ledger.stale(&user, folders) {
        if f.status.messages as usize > MAX_FOLDER_RECORDS {
            ledger.forget(&user, f.uidvalidity);
            continue;
        }
        let snap = req.snapshot(&f).await?;
        if snap.messages.len() > MAX_FOLDER_RECORDS {
            ledger.forget(&user, f.uidvalidity);
            continue;
        }
        // A folder whose generation moved under the snapshot is noted next time.
        if snap.uidvalidity != f.uidvalidity {
            continue;
        }
        let mut known = before.map(|n| n.msgs).unwrap_or_default();
        let new: Vec<u32> = snap
            .messages
            .iter()
            .filter(|m| !known.contains_key(&m.uid))
            .map(|m| m.uid)
            .collect();
        let named: HashMap<u32, ObjectIds> = if new.is_empty() {
            HashMap::new()
        } else {
            req.session
                .object_ids(&f.name, new, true)
                .await?
                .into_iter()
                .collect()
        };
        let mut msgs = BTreeMap::new();
        for m in &snap.messages {
            let ids = match known
                .remove(&m.uid)
                .map(|n| n.ids)
                .or(named.get(&m.uid).copied())
            {
                Some(ids) => ids,
                // Expunged before its id was known: this note cannot name it either.
                None => continue,
            };
            msgs.insert(
                m.uid,
                Noted {
                    modseq: m.modseq,
                    expunged: m.expunged,
                    ids,
                },
            );
        }
        let note = Note {
            modseq: snap.highest_modseq,
            uidnext: snap.uidnext,
            msgs,
        };
        ledger.store(&user, f.uidvalidity, snap.generation, note);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use store_client::{EmailId, ThreadId};

    fn noted(modseq: u64, expunged: bool, n: u8) -> Noted {
        Noted {
            modseq,
            expunged,
            ids: ObjectIds {
                email: EmailId::of_message(&[n]),
                thread: ThreadId::of_root(&[n]),
            },
        }
    }

    fn state(modseq: u64, uidnext: u32) -> FolderState {
        FolderState {
            generation: 1,
            modseq,
            uidnext,
            name_sum: 0,
        }
    }

    #[test]
    fn a_note_tells_what_was_live_at_an_earlier_state() {
        // Noted at modseq 20: UID 1 expunged at 5, UID 2 expunged at 15, UID 3 live,
        // UID 4 appended at 12.
        let note = Note {
            modseq: 20,
            uidnext: 5,
            msgs: [
                (1, noted(5, true, 1)),
                (2, noted(15, true, 2)),
                (3, noted(3, false, 3)),
                (4, noted(12, false, 4)),
            ]
            .into_iter()
            .collect(),
        };
        // At modseq 10 (UIDNEXT 4): 2 and 3 were there; 1 was gone, 4 not yet.
        let old = state(10, 4);
        assert!(note.covers(&old));
        let live: Vec<u32> = note.live_at(&old).map(|(u, _)| u).collect();
        assert_eq!(live, vec![2, 3]);
        // A state later than the note cannot be told from it.
        assert!(!note.covers(&state(21, 5)));
        assert!(!note.covers(&state(20, 6)));
    }

    #[test]
    fn notes_keep_two_generations_and_forget_idle_users() {
        let l = Ledger::default();
        for g in 1..=3 {
            l.store("joe", 7, g, Note::default());
        }
        let old = FolderState {
            generation: 1,
            ..state(0, 0)
        };
        assert!(
            l.note_for("joe", 7, &old).is_none(),
            "oldest generation dropped"
        );
        for g in 2..=3 {
            let st = FolderState {
                generation: g,
                ..old
            };
            assert!(l.note_for("joe", 7, &st).is_some());
        }
        for i in 0..=USERS {
            let user = format!("u{i}");
            l.stale(&user, &[]);
            l.store(&user, 1, 1, Note::default());
        }
        assert!(l.lock().0.len() <= USERS);
        assert!(
            !l.lock().0.contains_key("joe"),
            "the least recently used went first"
        );
    }
}

#[cfg(test)]
mod bounds {
    use super::*;
    use store_client::{EmailId, ThreadId};

    fn big_note(records: u32) -> Note {
        let ids = ObjectIds {
            email: EmailId::of_message(b"x"),
            thread: ThreadId::of_root(b"x"),
        };
        Note {
            modseq: 1,
            uidnext: records + 1,
            msgs: (1..=records)
                .map(|uid| {
                    let n = Noted {
                        modseq: 1,
                        expunged: false,
                        ids,
                    };
                    (uid, n)
                })
                .collect(),
        }
    }

    #[test]
    fn total_records_stay_under_the_cap_by_dropping_idle_users() {
        let l = Ledger::default();
        let per_user = (MAX_RECORDS / 4) as u32;
        let st = FolderState {
            generation: 1,
            modseq: 1,
            uidnext: per_user + 1,
            name_sum: 0,
        };
        for u in 0..6 {
            // Using a user makes it the most recent.
            l.stale(&format!("u{u}"), &[]);
            l.store(&format!("u{u}"), 1, 1, big_note(per_user));
        }
        let g = l.lock();
        let total: usize =
            g.0.values()
                .flat_map(|u| u.folders.values())
                .flat_map(|gens| gens.values())
                .map(|n| n.msgs.len())
                .sum();
        assert!(total <= MAX_RECORDS, "{total} records kept");
        drop(g);
        assert!(l.note_for("u5", 1, &st).is_some(), "the latest user kept");
        assert!(
            l.note_for("u0", 1, &st).is_none(),
            "the idlest user dropped"
        );
    }
}
