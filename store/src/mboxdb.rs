//! The mailbox database (`mboxlist/mboxlist.db`): folders, quota roots and usage, the rights
//! index (lright), subscriptions and per-user data, in SQLite with a write-ahead log.
//!
//! Every process opens it; SQLite's own locking serialises writers across processes. Commits
//! use `synchronous=NORMAL`: the database stays consistent after a crash, and what the last
//! instants lost is rebuilt from the redundant copies in the folder directories
//! (`reconstruct -m`, `reconstruct -q`).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{IoContext, Result, StoreError};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS mailbox (
    name        TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    partition   TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    specialuse  TEXT,
    acl         TEXT NOT NULL DEFAULT '',
    quotaroot   TEXT NOT NULL,
    created     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS mailbox_owner ON mailbox(owner);
CREATE TABLE IF NOT EXISTS quota (
    root          TEXT PRIMARY KEY,
    storage_limit INTEGER,
    message_limit INTEGER,
    storage_used  INTEGER NOT NULL DEFAULT 0,
    messages_used INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS lright (
    identifier TEXT NOT NULL,
    mailbox    TEXT NOT NULL,
    PRIMARY KEY (identifier, mailbox)
);
CREATE TABLE IF NOT EXISTS subscription (
    userid TEXT NOT NULL,
    name   TEXT NOT NULL,
    PRIMARY KEY (userid, name)
);
CREATE TABLE IF NOT EXISTS peruser (
    userid TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  BLOB,
    PRIMARY KEY (userid, key)
);
CREATE TABLE IF NOT EXISTS counter (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

/// One folder's entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailboxEntry {
    pub name: String,
    pub owner: String,
    pub partition: String,
    pub uidvalidity: u32,
    pub special_use: Option<String>,
    /// `identifier<TAB>rights` pairs separated by newlines.
    pub acl: String,
    pub quota_root: String,
    pub created: i64,
}

/// A quota root's limits (None = unlimited) and usage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuotaEntry {
    pub root: String,
    pub storage_limit: Option<u64>,
    pub message_limit: Option<u64>,
    pub storage_used: u64,
    pub messages_used: u64,
}

pub struct MailboxDb {
    path: PathBuf,
    conn: Mutex<Connection>,
}

/// A `mailbox` row selected as [`ENTRY_COLS`], for code that reads the table on a
/// connection of its own (stored's resync inside its transactions).
pub fn row_to_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<MailboxEntry> {
    Ok(MailboxEntry {
        name: r.get(0)?,
        owner: r.get(1)?,
        partition: r.get(2)?,
        uidvalidity: r.get::<_, i64>(3)? as u32,
        special_use: r.get(4)?,
        acl: r.get(5)?,
        quota_root: r.get(6)?,
        created: r.get(7)?,
    })
}

/// The `mailbox` columns [`row_to_entry`] reads, in its order.
pub const ENTRY_COLS: &str =
    "name, owner, partition, uidvalidity, specialuse, acl, quotaroot, created";

impl MailboxDb {
    /// Open (creating if needed) the database in `dir`.
    pub fn open(dir: &Path) -> Result<MailboxDb> {
        std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        let path = dir.join("mboxlist.db");
        let conn = Connection::open(&path)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(MailboxDb {
            path,
            conn: Mutex::new(conn),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        Ok(f(&mut conn)?)
    }

    pub fn get(&self, name: &str) -> Result<Option<MailboxEntry>> {
        self.with(|c| {
            c.prepare_cached(&format!("SELECT {ENTRY_COLS} FROM mailbox WHERE name = ?1"))?
                .query_row([name], row_to_entry)
                .optional()
        })
    }

    /// All entries whose name starts with `prefix`, in name order.
    pub fn list_prefix(&self, prefix: &str) -> Result<Vec<MailboxEntry>> {
        // Range scan on the primary key: prefix <= name < prefix + U+10FFFF.
        let upper = format!("{prefix}\u{10FFFF}");
        self.with(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {ENTRY_COLS} FROM mailbox WHERE name >= ?1 AND name < ?2 ORDER BY name"
            ))?;
            let rows = st.query_map([prefix, upper.as_str()], row_to_entry)?;
            rows.collect()
        })
    }

    pub fn list_all(&self) -> Result<Vec<MailboxEntry>> {
        self.list_prefix("")
    }

    /// Insert a new entry; false when the name is taken.
    pub fn insert(&self, e: &MailboxEntry) -> Result<bool> {
        self.with(|c| {
            let n = c.execute(
                "INSERT OR IGNORE INTO mailbox (name, owner, partition, uidvalidity, specialuse, acl, quotaroot, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![e.name, e.owner, e.partition, e.uidvalidity as i64, e.special_use, e.acl, e.quota_root, e.created],
            )?;
            Ok(n == 1)
        })
    }

    /// Insert or replace (used by reconstruct-style resync).
    pub fn upsert(&self, e: &MailboxEntry) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO mailbox (name, owner, partition, uidvalidity, specialuse, acl, quotaroot, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![e.name, e.owner, e.partition, e.uidvalidity as i64, e.special_use, e.acl, e.quota_root, e.created],
            )?;
            Ok(())
        })
    }

    pub fn delete(&self, name: &str) -> Result<bool> {
        self.with(|c| {
            let tx = c.transaction()?;
            let n = tx.execute("DELETE FROM mailbox WHERE name = ?1", [name])?;
            tx.execute("DELETE FROM lright WHERE mailbox = ?1", [name])?;
            tx.commit()?;
            Ok(n == 1)
        })
    }

    /// Rename every entry in `pairs` (old, new) in one transaction, with their rights index
    /// rows and subscriptions.
    pub fn rename_all(
        &self,
        pairs: &[(String, String)],
        new_partition: Option<&str>,
    ) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            for (old, new) in pairs {
                tx.execute("UPDATE mailbox SET name = ?2 WHERE name = ?1", [old, new])?;
                if let Some(p) = new_partition {
                    tx.execute(
                        "UPDATE mailbox SET partition = ?2 WHERE name = ?1",
                        [new, p],
                    )?;
                }
                tx.execute(
                    "UPDATE lright SET mailbox = ?2 WHERE mailbox = ?1",
                    [old, new],
                )?;
                tx.execute(
                    "UPDATE OR IGNORE subscription SET name = ?2 WHERE name = ?1",
                    [old, new],
                )?;
            }
            tx.commit()
        })
    }

    pub fn set_partition(&self, name: &str, partition: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE mailbox SET partition = ?2 WHERE name = ?1",
                [name, partition],
            )?;
            Ok(())
        })
    }

    pub fn set_special_use(&self, name: &str, special_use: Option<&str>) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE mailbox SET specialuse = ?2 WHERE name = ?1",
                params![name, special_use],
            )?;
            Ok(())
        })
    }

    /// Replace a folder's ACL and its rights-index rows.
    pub fn set_acl(&self, name: &str, owner: &str, acl: &str) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute("UPDATE mailbox SET acl = ?2 WHERE name = ?1", [name, acl])?;
            tx.execute("DELETE FROM lright WHERE mailbox = ?1", [name])?;
            for line in acl.lines() {
                if let Some((ident, rights)) = line.split_once('\t') {
                    if ident != owner && rights.contains('l') {
                        tx.execute(
                            "INSERT OR IGNORE INTO lright (identifier, mailbox) VALUES (?1, ?2)",
                            [ident, name],
                        )?;
                    }
                }
            }
            tx.commit()
        })
    }

    /// Mailboxes on which `identifier` (or `anyone`) has the lookup right.
    pub fn rights_index(&self, identifier: &str) -> Result<Vec<String>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT DISTINCT mailbox FROM lright WHERE identifier = ?1 OR identifier = 'anyone' ORDER BY mailbox",
            )?;
            let rows = st.query_map([identifier], |r| r.get(0))?;
            rows.collect()
        })
    }

    /// Every (identifier, mailbox) row of the rights index, in order (for `reconstruct -l`).
    pub fn rights_index_rows(&self) -> Result<Vec<(String, String)>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT identifier, mailbox FROM lright ORDER BY identifier, mailbox",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    /// Rebuild the whole rights index from the ACLs (`reconstruct -l`).
    pub fn rebuild_rights_index(&self) -> Result<usize> {
        let all = self.list_all()?;
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM lright", [])?;
            let mut n = 0;
            for e in &all {
                for line in e.acl.lines() {
                    if let Some((ident, rights)) = line.split_once('\t') {
                        if ident != e.owner && rights.contains('l') {
                            n += tx.execute(
                                "INSERT OR IGNORE INTO lright (identifier, mailbox) VALUES (?1, ?2)",
                                [ident, e.name.as_str()],
                            )?;
                        }
                    }
                }
            }
            tx.commit()?;
            Ok(n)
        })
    }

    pub fn quota(&self, root: &str) -> Result<Option<QuotaEntry>> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT root, storage_limit, message_limit, storage_used, messages_used FROM quota WHERE root = ?1",
            )?
            .query_row([root], |r| {
                Ok(QuotaEntry {
                    root: r.get(0)?,
                    storage_limit: r.get::<_, Option<i64>>(1)?.map(|v| v as u64),
                    message_limit: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
                    storage_used: r.get::<_, i64>(3)?.max(0) as u64,
                    messages_used: r.get::<_, i64>(4)?.max(0) as u64,
                })
            })
            .optional()
        })
    }

    pub fn quota_roots(&self) -> Result<Vec<String>> {
        self.with(|c| {
            let mut st = c.prepare_cached("SELECT root FROM quota ORDER BY root")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect()
        })
    }

    /// Set limits (None = unlimited), creating the root if needed.
    pub fn set_quota_limits(
        &self,
        root: &str,
        storage: Option<u64>,
        messages: Option<u64>,
    ) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO quota (root, storage_limit, message_limit) VALUES (?1, ?2, ?3)
                 ON CONFLICT(root) DO UPDATE SET storage_limit = excluded.storage_limit, message_limit = excluded.message_limit",
                params![root, storage.map(|v| v as i64), messages.map(|v| v as i64)],
            )?;
            Ok(())
        })
    }

    /// Add to (or, negative, take from) a root's usage.
    pub fn add_quota_usage(&self, root: &str, bytes: i64, messages: i64) -> Result<()> {
        if bytes == 0 && messages == 0 {
            return Ok(());
        }
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO quota (root, storage_used, messages_used) VALUES (?1, MAX(?2, 0), MAX(?3, 0))
                 ON CONFLICT(root) DO UPDATE SET storage_used = MAX(storage_used + ?2, 0), messages_used = MAX(messages_used + ?3, 0)",
            )?
            .execute(params![root, bytes, messages])?;
            Ok(())
        })
    }

    /// Apply several roots' usage deltas in one transaction.
    pub fn add_quota_usage_batch(&self, deltas: &[(String, i64, i64)]) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO quota (root, storage_used, messages_used) VALUES (?1, MAX(?2, 0), MAX(?3, 0))
                     ON CONFLICT(root) DO UPDATE SET storage_used = MAX(storage_used + ?2, 0), messages_used = MAX(messages_used + ?3, 0)",
                )?;
                for (root, bytes, messages) in deltas {
                    if *bytes != 0 || *messages != 0 {
                        st.execute(params![root, bytes, messages])?;
                    }
                }
            }
            tx.commit()
        })
    }

    /// Overwrite a root's usage (quota repair).
    pub fn set_quota_usage(&self, root: &str, bytes: u64, messages: u64) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO quota (root, storage_used, messages_used) VALUES (?1, ?2, ?3)
                 ON CONFLICT(root) DO UPDATE SET storage_used = ?2, messages_used = ?3",
                params![root, bytes as i64, messages as i64],
            )?;
            Ok(())
        })
    }

    /// Sets a quota root's usage only if it still reads `expected` (an absent row reads
    /// (0, 0)), so a repair computed from the folders cannot overwrite a change a server
    /// wrote meanwhile. True when it was set.
    pub fn set_quota_usage_if(
        &self,
        root: &str,
        expected: (u64, u64),
        bytes: u64,
        messages: u64,
    ) -> Result<bool> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let current: Option<(i64, i64)> = tx
                .query_row(
                    "SELECT storage_used, messages_used FROM quota WHERE root = ?1",
                    [root],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let current = current.map_or((0, 0), |(b, m)| (b.max(0) as u64, m.max(0) as u64));
            if current != expected {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO quota (root, storage_used, messages_used) VALUES (?1, ?2, ?3)
                 ON CONFLICT(root) DO UPDATE SET storage_used = ?2, messages_used = ?3",
                params![root, bytes as i64, messages as i64],
            )?;
            tx.commit()?;
            Ok(true)
        })
    }

    pub fn subscribe(&self, user: &str, name: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO subscription (userid, name) VALUES (?1, ?2)",
                [user, name],
            )?;
            Ok(())
        })
    }

    pub fn unsubscribe(&self, user: &str, name: &str) -> Result<bool> {
        self.with(|c| {
            Ok(c.execute(
                "DELETE FROM subscription WHERE userid = ?1 AND name = ?2",
                [user, name],
            )? == 1)
        })
    }

    pub fn subscriptions(&self, user: &str) -> Result<Vec<String>> {
        self.with(|c| {
            let mut st =
                c.prepare_cached("SELECT name FROM subscription WHERE userid = ?1 ORDER BY name")?;
            let rows = st.query_map([user], |r| r.get(0))?;
            rows.collect()
        })
    }

    pub fn peruser_get(&self, user: &str, key: &str) -> Result<Option<Vec<u8>>> {
        self.with(|c| {
            c.prepare_cached("SELECT value FROM peruser WHERE userid = ?1 AND key = ?2")?
                .query_row([user, key], |r| r.get(0))
                .optional()
        })
    }

    pub fn peruser_set(&self, user: &str, key: &str, value: Option<&[u8]>) -> Result<()> {
        self.with(|c| {
            match value {
                Some(v) => c.execute(
                    "INSERT OR REPLACE INTO peruser (userid, key, value) VALUES (?1, ?2, ?3)",
                    params![user, key, v],
                )?,
                None => c.execute(
                    "DELETE FROM peruser WHERE userid = ?1 AND key = ?2",
                    [user, key],
                )?,
            };
            Ok(())
        })
    }

    /// A UIDVALIDITY never handed out before, even for a name deleted and created again within
    /// the same second.
    pub fn next_uidvalidity(&self, now: i64) -> Result<u32> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let last: Option<i64> = tx
                .query_row(
                    "SELECT value FROM counter WHERE name = 'uidvalidity'",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            let mut v = now.clamp(1, u32::MAX as i64);
            if let Some(l) = last {
                if v <= l {
                    v = l + 1;
                }
            }
            if v > u32::MAX as i64 {
                v = 1;
            }
            tx.execute(
                "INSERT OR REPLACE INTO counter (name, value) VALUES ('uidvalidity', ?1)",
                [v],
            )?;
            tx.commit()?;
            Ok(v as u32)
        })
    }

    /// `PRAGMA quick_check`: Ok(()) or the first problem found.
    pub fn quick_check(&self) -> Result<()> {
        let res: String = self.with(|c| c.query_row("PRAGMA quick_check", [], |r| r.get(0)))?;
        if res == "ok" {
            Ok(())
        } else {
            Err(StoreError::Corrupt(format!("mailbox database: {res}")))
        }
    }
}
