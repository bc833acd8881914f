//! msgstore: the embedded on-disk message store.
//!
//! Three layers, each able to rebuild another (which is what makes `reconstruct` possible):
//! 1. message files, written once (temp file, rename) and never modified; a small message's
//!    bytes also go, with its index record, into the folder's write-ahead log (`wal`), which
//!    the append's commit round flushes, until a checkpoint has flushed the files themselves;
//! 2. per-folder index files: `store.idx` (header and checksummed records), `store.jnl` (the
//!    flag journal: flags survive the loss of store.idx), `store.cache` (each message's parsed
//!    structure), `store.exp` (expunged messages awaiting erasure), `store.meta` (a redundant
//!    copy of the folder's database entry);
//! 3. the mailbox database (`mboxlist/`, SQLite in WAL mode).
//!
//! This crate is synchronous and knows paths. Protocol front ends never use it directly: they
//! go through `store-client`. Repair tools (`reconstruct`, `hashdir`, `stored`) use it because
//! their job is the disk itself.

pub mod error;
pub mod folder;
pub mod fsutil;
pub mod index;
pub mod journal;
pub mod layout;
pub mod mboxdb;
pub mod message;
pub mod names;
pub mod quotafile;
mod store;
pub mod wal;

pub use error::{Result, StoreError};
pub use folder::{Expunged, FlagOp, FolderState, Msg, StoreOutcome};
pub use index::flag;
pub use mboxdb::{MailboxEntry, QuotaEntry};
pub use message_structure::MessageStructure;
pub use names::{MailboxName, Pattern, UserName};
pub use store::{
    AppendRequest, FolderStatus, MoveOutcome, Quota, Rights, Store, StoreConfig, DEFAULT_PARTITION,
    SPECIAL_USE_FOLDERS,
};
