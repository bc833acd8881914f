//! reconstruct: the message store's repair tool (Messaging Server 6.3's `reconstruct`).
//!
//! `-r` checks each folder's index against its message files, cache, flag journal and
//! expunge list, and rebuilds the index, cache and journal from the message files where the
//! check finds a problem (or always with `-f`), keeping UIDs, UIDVALIDITY and read state.
//! `-m` brings the mailbox database in line with the folder directories in the spool, `-q`
//! recomputes quota usage from the folder headers and `-l` rebuilds the rights index.
//! Folders are locked while they are checked and rebuilt, so servers may keep running.

pub mod check;
pub mod db;
pub mod progress;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use msgstore::layout::{self, Layout};
use msgstore::mboxdb::MailboxDb;
use msgstore::{MailboxName, StoreConfig, UserName};

pub use check::{Outcome, RepairOptions, Target};
pub use progress::ProgressMode;

/// Nothing wrong.
pub const EXIT_CLEAN: i32 = 0;
/// Damage found (and, without `-n`, repaired).
pub const EXIT_DAMAGE: i32 = 1;
/// Something could not be checked or repaired.
pub const EXIT_FAILED: i32 = 2;
/// Usage error (sysexits EX_USAGE): nothing was changed.
pub const EXIT_USAGE: i32 = 64;

/// Folders checked at once, per core: a folder's repair mostly waits for its flushes, and
/// flushes from several threads share the filesystem's journal commits.
const THREADS_PER_CORE: usize = 4;
const MAX_THREADS: usize = 16;

/// The command line, parsed.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub root: PathBuf,
    /// `-r`
    pub recursive: bool,
    /// `-n`
    pub check_only: bool,
    /// `-f`
    pub force: bool,
    /// `-i`
    pub zero_index: bool,
    /// `-e`
    pub restore_expunged: bool,
    /// `-p`
    pub partition: Option<String>,
    /// `-u`
    pub user: Option<String>,
    /// `-m`
    pub mailbox_db: bool,
    /// `-q`
    pub quota: bool,
    /// `-l`
    pub rights: bool,
    pub mailboxes: Vec<String>,
    /// Progress of `-r`, `-m` and `-q` on stderr (off unless the caller asks).
    pub progress: ProgressMode,
}

/// Why reconstruct stopped before doing anything, and the exit status that goes with it.
#[derive(Debug)]
pub enum Fatal {
    /// Exit 64.
    Usage(String),
    /// Exit 2.
    Failed(String),
}

impl Fatal {
    pub fn code(&self) -> i32 {
        match self {
            Fatal::Usage(_) => EXIT_USAGE,
            Fatal::Failed(_) => EXIT_FAILED,
        }
    }
    pub fn message(&self) -> &str {
        match self {
            Fatal::Usage(m) | Fatal::Failed(m) => m,
        }
    }
}

fn usage<T>(m: impl Into<String>) -> Result<T, Fatal> {
    Err(Fatal::Usage(m.into()))
}

impl Options {
    fn repair_mode(&self) -> bool {
        self.recursive || !self.mailboxes.is_empty()
    }

    /// Reject contradictory or incomplete option sets before anything is opened.
    pub fn validate(&self) -> Result<(), Fatal> {
        let repair = self.repair_mode();
        let db_modes = self.mailbox_db || self.quota || self.rights;
        if repair && db_modes {
            return usage(
                "-r and mailbox names cannot be combined with -m, -q or -l: run them separately",
            );
        }
        if !repair && !db_modes {
            if self.check_only {
                return usage("-n needs a mailbox name or -r (for example: reconstruct -n -r)");
            }
            return usage("nothing to do: give -r, a mailbox name, -m, -q or -l");
        }
        if self.check_only && (self.zero_index || self.restore_expunged) {
            return usage(
                "-n only checks; -i and -e rebuild folders and cannot be combined with it",
            );
        }
        if !repair && (self.force || self.zero_index || self.restore_expunged) {
            return usage("-f, -i and -e apply to folder repair (-r or mailbox names)");
        }
        if self.user.is_some() && self.partition.is_none() {
            return usage("-u must be used with -p (reconstruct -p PARTITION -u USER -m)");
        }
        if self.user.is_some() && !self.mailbox_db {
            return usage("-u applies to -m only");
        }
        if self.partition.is_some() && !repair && !self.mailbox_db {
            return usage(
                "-p applies to -r, mailbox names and -m (-q and -l cover every partition)",
            );
        }
        for m in &self.mailboxes {
            if m.starts_with('/') || m.starts_with("./") || m.starts_with("../") || m == "." {
                return usage(format!(
                    "{m:?} looks like a path: name mailboxes as user/<userid>/<folder> (or user/<userid>)"
                ));
            }
        }
        Ok(())
    }
}

/// Where the output lines go (stdout in the binary).
pub type Sink<'a> = &'a (dyn Fn(&str) + Sync);

/// Run reconstruct; returns the exit status. Findings and changes go to `out`, one a line.
pub fn run(opts: &Options, out: Sink<'_>) -> Result<i32, Fatal> {
    opts.validate()?;
    let layout = Layout::new(&opts.root);
    let config = StoreConfig::load(&layout)
        .map_err(|e| Fatal::Failed(format!("cannot read the configuration: {e}")))?;
    if let Some(p) = &opts.partition {
        if !config.partitions.contains_key(p) {
            return usage(format!(
                "unknown partition {p:?} (give a partition name from msg.conf, not a path)"
            ));
        }
    }
    let user = match &opts.user {
        Some(u) => Some(UserName::new(u).map_err(|_| {
            Fatal::Usage(format!(
                "invalid user id {u:?} (give a user id, not a path)"
            ))
        })?),
        None => None,
    };
    let dbdir = layout.mboxlist_dir();
    if !dbdir.join("mboxlist.db").exists() {
        return Err(Fatal::Failed(format!(
            "no mailbox database in {} (wrong --root?)",
            dbdir.display()
        )));
    }
    let db = MailboxDb::open(&dbdir)
        .map_err(|e| Fatal::Failed(format!("cannot open the mailbox database: {e}")))?;

    if opts.repair_mode() {
        let targets = resolve_targets(opts, &db, &config.partitions)?;
        return Ok(repair(opts, targets, out));
    }
    let mut changes = 0;
    let mut failures = 0;
    let mut report = |o: db::DbOutcome, what: &str| {
        for l in &o.lines {
            out(l);
        }
        changes += o.changes;
        failures += o.failures;
        out(&format!(
            "reconstruct {what}: {} {}, {} problem(s) left",
            o.changes,
            if opts.check_only {
                "change(s) needed"
            } else {
                "change(s) made"
            },
            o.failures
        ));
    };
    if opts.mailbox_db {
        let o = with_progress(opts.progress, |p| {
            db::fix_mailboxes_counted(
                &db,
                &config.partitions,
                opts.partition.as_deref(),
                user.as_ref(),
                opts.check_only,
                None,
                Some(p),
            )
        });
        report(o, "-m");
    }
    if opts.quota {
        let o = with_progress(opts.progress, |p| {
            db::fix_quotas_counted(&db, &config.partitions, None, opts.check_only, Some(p))
        });
        report(o, "-q");
    }
    if opts.rights {
        report(db::fix_rights(&db, opts.check_only), "-l");
    }
    Ok(if failures > 0 {
        EXIT_FAILED
    } else if changes > 0 {
        EXIT_DAMAGE
    } else {
        EXIT_CLEAN
    })
}

/// The folders `-r` / mailbox names stand for, all resolved before anything is touched.
fn resolve_targets(
    opts: &Options,
    db: &MailboxDb,
    partitions: &BTreeMap<String, PathBuf>,
) -> Result<Vec<Result<Target, String>>, Fatal> {
    let dberr =
        |e: msgstore::StoreError| Fatal::Failed(format!("cannot read the mailbox database: {e}"));
    let mut entries = BTreeMap::new();
    if opts.mailboxes.is_empty() {
        for e in db.list_all().map_err(dberr)? {
            entries.insert(e.name.clone(), e);
        }
    }
    for arg in &opts.mailboxes {
        let trimmed = arg.trim_end_matches('/');
        let user_only = trimmed
            .strip_prefix("user/")
            .filter(|rest| !rest.is_empty() && !rest.contains('/'));
        if let Some(u) = user_only {
            let u = UserName::new(u)
                .map_err(|_| Fatal::Usage(format!("invalid user id in {arg:?}")))?;
            let found = db.list_prefix(&format!("user/{u}/")).map_err(dberr)?;
            if found.is_empty() {
                return usage(format!(
                    "unknown user {arg:?}: no mailboxes in the database"
                ));
            }
            for e in found {
                entries.insert(e.name.clone(), e);
            }
            continue;
        }
        let name = MailboxName::parse(trimmed)
            .map_err(|e| Fatal::Usage(format!("invalid mailbox name {arg:?}: {e}")))?;
        let Some(e) = db.get(name.as_str()).map_err(dberr)? else {
            return usage(format!(
                "unknown mailbox {name}: not in the mailbox database (reconstruct -m adds folders found on disk)"
            ));
        };
        entries.insert(e.name.clone(), e);
        if opts.recursive {
            for e in db.list_prefix(&format!("{name}/")).map_err(dberr)? {
                entries.insert(e.name.clone(), e);
            }
        }
    }
    Ok(entries
        .into_values()
        .filter(|e| opts.partition.as_ref().is_none_or(|p| *p == e.partition))
        .map(|e| {
            let name = MailboxName::parse(&e.name).map_err(|err| {
                format!("Invalid mailbox name in the database {:?}: {err}", e.name)
            })?;
            let Some(p) = partitions.get(&e.partition) else {
                return Err(format!(
                    "Mailbox {name} is on partition {}, which msg.conf does not define",
                    e.partition
                ));
            };
            Ok(Target {
                dir: layout::folder_dir(p, &name),
                name,
                entry: e,
            })
        })
        .collect())
}

/// Runs `work` with progress drawn on stderr beside it (the database passes, `-m` and `-q`,
/// print their findings after they finish, so nothing has to share the line with the bar).
fn with_progress<T: Send>(
    mode: ProgressMode,
    work: impl FnOnce(&progress::Progress) -> T + Send,
) -> T {
    let progress = progress::Progress::new(mode, 0);
    std::thread::scope(|sc| {
        let drawer = sc.spawn(|| progress.run());
        let result = work(&progress);
        progress.finish();
        let _ = drawer.join();
        result
    })
}

/// Check (and repair) the folders on a few threads; print each folder's lines as it is done.
fn repair(opts: &Options, targets: Vec<Result<Target, String>>, out: Sink<'_>) -> i32 {
    let ro = RepairOptions {
        check_only: opts.check_only,
        force: opts.force,
        zero_index: opts.zero_index,
        restore_expunged: opts.restore_expunged,
    };
    let next = AtomicUsize::new(0);
    let totals = Mutex::new((0usize, 0usize, 0usize, 0usize)); // checked, damaged, rebuilt, failed
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .saturating_mul(THREADS_PER_CORE)
        .clamp(1, MAX_THREADS)
        .min(targets.len().max(1));
    let progress = progress::Progress::new(opts.progress, targets.len());
    std::thread::scope(|sc| {
        let drawer = sc.spawn(|| progress.run());
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                sc.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(t) = targets.get(i) else { break };
                    let o = match t {
                        Ok(t) => check::process_counted(t, &ro, &progress.messages),
                        Err(msg) => Outcome {
                            lines: vec![msg.clone()],
                            damaged: true,
                            failed: true,
                            ..Default::default()
                        },
                    };
                    let mut tot = totals.lock().unwrap_or_else(|p| p.into_inner());
                    if !o.lines.is_empty() {
                        progress.around_output(|| {
                            for l in &o.lines {
                                out(l);
                            }
                        });
                    }
                    progress.folders.fetch_add(1, Ordering::Relaxed);
                    tot.0 += 1;
                    tot.1 += o.damaged as usize;
                    tot.2 += o.rebuilt as usize;
                    tot.3 += o.failed as usize;
                })
            })
            .collect();
        for w in workers {
            let _ = w.join();
        }
        progress.finish();
        let _ = drawer.join();
    });
    let (checked, damaged, rebuilt, failed) =
        totals.into_inner().unwrap_or_else(|p| p.into_inner());
    if rebuilt == 0 && (opts.zero_index || opts.restore_expunged) {
        out("reconstruct: -i and -e act only on folders that are rebuilt, and none was: add -f to force the rebuild");
    }
    out(&format!(
        "reconstruct: {checked} folder(s) checked, {damaged} damaged, {rebuilt} rebuilt, {failed} could not be repaired{}",
        if opts.check_only { " (-n: nothing changed)" } else { "" }
    ));
    if failed > 0 {
        EXIT_FAILED
    } else if damaged > 0 {
        EXIT_DAMAGE
    } else {
        EXIT_CLEAN
    }
}
