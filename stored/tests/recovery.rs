//! Fault injection against the real `stored` (seed 20.14.2): each damage to the mailbox
//! database, its log or its snapshots ends with a store that serves, the seed's log lines, and
//! every message acknowledged before the fault readable after it.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const SEED_SNAPSHOT: &str =
    "Recovering database from snapshot. Run reconstruct -m soon after startup to resync redundant data";
const SEED_LOGS: &str =
    "Removing extra database logs. Run reconstruct -m soon after startup to resync redundant data";
const RESYNC_DONE: &str = "Resync of the mailbox database from the folders done";

/// Deliver to joe, take a snapshot, deliver to ann (folders the snapshot does not know),
/// subscribe ann, wait for the per-user write-out, stop stored cleanly.
fn store_with_snapshot(inst: &Instance) -> Vec<Delivered> {
    let mut all = deliver(inst.root(), "joe", &["Work", "Work/2026"], 3);
    let s = inst.start(&["--snapshot-interval-secs", "3600"]);
    inst.wait_log("taken and verified", 30);
    all.extend(deliver(inst.root(), "ann", &["Projects"], 3));
    // A folder deleted and made again after the snapshot: a new UIDVALIDITY the snapshot's
    // entry does not have.
    {
        let store = msgstore::Store::open(inst.root()).unwrap();
        let n = msgstore::MailboxName::parse("user/joe/Work/2026").unwrap();
        store.delete_mailbox(&n, false).unwrap();
        all.retain(|d| d.mailbox != "user/joe/Work/2026");
    }
    std::thread::sleep(Duration::from_millis(1100));
    all.extend(deliver(inst.root(), "joe", &["Work/2026"], 2));
    {
        let store = msgstore::Store::open(inst.root()).unwrap();
        let ann = msgstore::UserName::new("ann").unwrap();
        let p = msgstore::MailboxName::for_user(&ann, "Projects").unwrap();
        store.subscribe(&ann, &p).unwrap();
    }
    // The per-user write-out runs every second here.
    let file = ann_dir(inst.root()).join("store.peruser");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let hex: String = "user/ann/Projects"
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    while !std::fs::read_to_string(&file).is_ok_and(|t| t.contains(&format!("s\t{hex}\n"))) {
        assert!(
            std::time::Instant::now() < deadline,
            "no per-user write-out"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(s.stop(), Some(0));
    all
}

fn ann_dir(root: &Path) -> std::path::PathBuf {
    let store = msgstore::Store::open(root).unwrap();
    store
        .user_dir(&msgstore::UserName::new("ann").unwrap(), None)
        .unwrap()
}

fn ann_subscribed(root: &Path) -> Vec<String> {
    let store = msgstore::Store::open(root).unwrap();
    store
        .subscriptions(&msgstore::UserName::new("ann").unwrap())
        .unwrap()
}

const FAST: &str = "local.store.peruserinterval = 1\nlocal.store.cleanupinterval = 3600\n";

/// Damage the database with `damage`, restart, and check the snapshot restore and resync.
fn recovers_from_snapshot(damage: impl FnOnce(&Path)) -> Instance {
    let inst = Instance::new(FAST);
    let delivered = store_with_snapshot(&inst);
    damage(&inst.db());
    let s = inst.start(&["--snapshot-interval-secs", "3600"]);
    let log = inst.wait_log(RESYNC_DONE, 30);
    assert!(log.contains("failed its check"), "{log}");
    assert!(
        log.contains(&format!("Store Warning: {SEED_SNAPSHOT}")),
        "{log}"
    );
    assert!(log.contains("Moved the damaged database to"), "{log}");
    assert!(inst.dbdir().join("removed/mboxlist.db").exists());
    assert_readable(inst.root(), &delivered);
    assert!(ann_subscribed(inst.root()).contains(&"user/ann/Projects".to_owned()));
    {
        let store = msgstore::Store::open(inst.root()).unwrap();
        let n = msgstore::MailboxName::parse("user/joe/Work/2026").unwrap();
        assert_eq!(
            store.entry(&n).unwrap().uidvalidity,
            store.status(&n).unwrap().uidvalidity,
            "the restored entry takes the folder's UIDVALIDITY"
        );
    }
    assert_eq!(s.stop(), Some(0));
    inst
}

#[test]
fn truncated_database_is_restored_from_the_snapshot_and_resynced() {
    let inst = recovers_from_snapshot(|db| {
        let len = std::fs::metadata(db).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(db)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
    });
    // A second damage within the week: the copy in removed/ is kept for analysis.
    std::fs::write(inst.db(), b"").unwrap();
    let s = inst.start(&[]);
    let log = inst.wait_log("holds a copy set aside less than a week ago", 30);
    assert_eq!(log.matches(SEED_SNAPSHOT).count(), 2, "{log}");
    drop(s);
}

#[test]
fn zeroed_database_is_restored_and_an_old_removed_copy_replaced() {
    let inst = recovers_from_snapshot(|db| {
        let len = std::fs::metadata(db).unwrap().len() as usize;
        std::fs::write(db, vec![0u8; len]).unwrap();
    });
    // The copy in removed/ is more than a week old: the new damage replaces it.
    let removed = inst.dbdir().join("removed/mboxlist.db");
    let old = std::time::SystemTime::now() - Duration::from_secs(8 * 86400);
    std::fs::File::options()
        .write(true)
        .open(&removed)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let len = std::fs::metadata(inst.db()).unwrap().len() as usize;
    std::fs::write(inst.db(), vec![0u8; len]).unwrap();
    let s = inst.start(&[]);
    let log = inst.wait_log(RESYNC_DONE, 30);
    assert_eq!(
        log.matches("Moved the damaged database to").count(),
        2,
        "{log}"
    );
    let age = std::fs::metadata(&removed).unwrap().modified().unwrap();
    assert!(age > old + Duration::from_secs(86400));
    drop(s);
}

#[test]
fn randomly_damaged_database_is_restored_from_the_snapshot() {
    recovers_from_snapshot(|db| {
        // Every page but the first (the schema) overwritten with noise.
        let len = std::fs::metadata(db).unwrap().len();
        scramble(db, 4096, (len - 4096) as usize, 0x5eed);
    });
}

#[test]
fn snapshots_that_do_not_verify_are_refused() {
    let inst = Instance::new(FAST);
    let mut delivered = deliver(inst.root(), "joe", &["Work"], 2);
    let s = inst.start(&["--snapshot-interval-secs", "1"]);
    // Wait for at least two snapshots, then deliver more.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while inst.log_count("taken and verified") < 2 {
        assert!(std::time::Instant::now() < deadline, "{}", inst.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(s.stop(), Some(0));
    let snaps = stored::snapshot::list(&inst.snapshots()).unwrap();
    assert!(snaps.len() >= 2);
    assert!(snaps.len() <= 3, "local.store.snapshotdirs defaults to 3");
    delivered.extend(deliver(inst.root(), "ann", &["Later"], 2));

    // The newest snapshot is damaged: refused, the one before it restored.
    scramble(&snaps[0].db(), 4096, 512, 7);
    std::fs::write(
        inst.db(),
        b"not a database at all, not even close to one........",
    )
    .unwrap();
    let s = inst.start(&[]);
    let log = inst.wait_log(RESYNC_DONE, 30);
    assert!(
        log.contains(&format!("Refusing snapshot {}", snaps[0].name)),
        "{log}"
    );
    assert!(
        log.contains(&format!("Restored snapshot {}", snaps[1].name)),
        "{log}"
    );
    assert!(log.contains(SEED_SNAPSHOT));
    assert_readable(inst.root(), &delivered);
    assert_eq!(s.stop(), Some(0));

    // Every snapshot damaged: the database is rebuilt from the folders before startup ends.
    for s in stored::snapshot::list(&inst.snapshots()).unwrap() {
        scramble(&s.db(), 100, 64, 11);
    }
    let len = std::fs::metadata(inst.db()).unwrap().len();
    scramble(&inst.db(), 0, len as usize, 3);
    let s = inst.start(&[]);
    let log = inst.wait_log("Rebuilt the mailbox database from the folders", 5);
    assert!(
        log.contains("No usable snapshot: building a new mailbox database from the folders"),
        "{log}"
    );
    assert_readable(inst.root(), &delivered);
    assert_eq!(s.stop(), Some(0));
}

/// Start stored, deliver (the new folders live only in the database log), SIGKILL stored so
/// the log stays, then apply `damage` to the log.
fn log_fault(damage: impl FnOnce(&Path)) -> (Instance, Vec<Delivered>) {
    let inst = Instance::new(
        "local.store.checkpointinterval = 3600\nlocal.store.logcleanupinterval = 3600\n",
    );
    let mut delivered = deliver(inst.root(), "joe", &[], 2);
    let s = inst.start(&["--snapshot-interval-secs", "3600"]);
    inst.wait_log("taken and verified", 30);
    delivered.extend(deliver(inst.root(), "ann", &["A", "B", "C"], 2));
    s.kill9();
    let wal = inst.dbdir().join("mboxlist.db-wal");
    assert!(
        std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0),
        "the log should hold the new folders"
    );
    damage(&wal);
    (inst, delivered)
}

#[test]
fn damaged_database_log_is_removed_and_its_folders_resynced() {
    let (inst, delivered) = log_fault(|wal| scramble(wal, 0, 32, 99));
    let s = inst.start(&[]);
    let log = inst.wait_log(RESYNC_DONE, 30);
    assert!(log.contains("is damaged (bad magic number"), "{log}");
    assert!(
        log.contains(&format!("Store Warning: {SEED_LOGS}")),
        "{log}"
    );
    assert!(
        !log.contains(SEED_SNAPSHOT),
        "the database itself was fine: {log}"
    );
    assert_readable(inst.root(), &delivered);
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn missing_database_log_is_noticed_by_the_folder_check_and_resynced() {
    let (inst, delivered) = log_fault(|wal| std::fs::remove_file(wal).unwrap());
    let s = inst.start(&[]);
    let log = inst.wait_log(RESYNC_DONE, 30);
    assert!(
        log.contains("Mailbox database and folders disagree"),
        "{log}"
    );
    assert_readable(inst.root(), &delivered);
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn sigkill_during_checkpoints_and_snapshots_loses_nothing() {
    let inst = Instance::new(
        "local.store.checkpointinterval = 1\nlocal.store.logcleanupinterval = 1\nlocal.store.peruserinterval = 1\n",
    );
    let mut delivered = Vec::new();
    for round in 0..3 {
        let s = inst.start(&["--snapshot-interval-secs", "1"]);
        // Deliver while stored checkpoints and snapshots every second, then kill it mid-way.
        let root = inst.root().to_path_buf();
        let h = std::thread::spawn(move || {
            let mut v = Vec::new();
            for i in 0..6 {
                v.extend(deliver(&root, &format!("u{round}x{i}"), &["F"], 3));
            }
            v
        });
        std::thread::sleep(Duration::from_millis(900 + 300 * round as u64));
        s.kill9();
        delivered.extend(h.join().unwrap());
    }
    let s = inst.start(&["--snapshot-interval-secs", "3600"]);
    // Either clean or resynced; nothing acknowledged is lost either way.
    std::thread::sleep(Duration::from_millis(300));
    let log = inst.log();
    if log.contains("resync from the folders pending") {
        inst.wait_log(RESYNC_DONE, 30);
    }
    assert_readable(inst.root(), &delivered);
    // No half-made snapshot survives, and every snapshot left verifies.
    for e in std::fs::read_dir(inst.snapshots()).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!n.starts_with(".tmp-"), "{n}");
    }
    for snap in stored::snapshot::list(&inst.snapshots()).unwrap() {
        stored::snapshot::verify(&snap).unwrap();
    }
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn out_of_range_snapshot_parameters_stop_startup_until_fixed() {
    for (line, expect) in [
        (
            "local.store.snapshotinterval = 0",
            "local.store.snapshotinterval: value 0 is out of range (1 to 46080",
        ),
        (
            "local.store.snapshotdirs = 368",
            "local.store.snapshotdirs: value 368 is out of range (2 to 367",
        ),
    ] {
        let inst = Instance::new("");
        let delivered = deliver(inst.root(), "joe", &[], 2);
        inst.append_conf(line);
        let o = std::process::Command::new(STORED)
            .arg("--root")
            .arg(inst.root())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(expect), "{err}");
        assert!(!inst.ready().exists());
        // Fixed: stored starts and the store serves.
        let conf = std::fs::read_to_string(inst.root().join("config/msg.conf")).unwrap();
        std::fs::write(inst.root().join("config/msg.conf"), conf.replace(line, "")).unwrap();
        let s = inst.start(&[]);
        assert_readable(inst.root(), &delivered);
        assert_eq!(s.stop(), Some(0));
    }
}

#[test]
fn missing_server_group_is_fatal_with_the_seed_message() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: privileges are only dropped when started as root");
        return;
    }
    let inst = Instance::new("");
    let conf = std::fs::read_to_string(inst.root().join("config/msg.conf")).unwrap();
    std::fs::write(
        inst.root().join("config/msg.conf"),
        conf.replace(
            "local.servergid = root",
            "local.servergid = nosuchgroup4711",
        ),
    )
    .unwrap();
    let o = std::process::Command::new(STORED)
        .arg("--root")
        .arg(inst.root())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("Fatal error: Cannot find group in name service (local.servergid = \"nosuchgroup4711\")"),
        "{err}"
    );
    assert!(!inst.ready().exists());
    assert!(inst
        .log()
        .contains("General Critical: Fatal error: Cannot find group in name service"));
}

#[test]
fn entries_that_disagree_with_store_meta_are_corrected_at_startup() {
    let inst = Instance::new("");
    let delivered = deliver(inst.root(), "joe", &["Work"], 2);
    let (uidvalidity, acl) = {
        let store = msgstore::Store::open(inst.root()).unwrap();
        let e = store
            .entry(&msgstore::MailboxName::parse("user/joe/Work").unwrap())
            .unwrap();
        (e.uidvalidity, e.acl)
    };
    {
        let c = rusqlite::Connection::open(inst.db()).unwrap();
        c.execute(
            "UPDATE mailbox SET uidvalidity = 7, acl = 'joe\tlr' WHERE name = 'user/joe/Work'",
            [],
        )
        .unwrap();
    }
    let s = inst.start(&[]);
    let log = inst.wait_log(RESYNC_DONE, 30);
    assert!(
        log.contains(
            "disagree with their folders' store.meta (1 in a sample of 256), first: user/joe/Work"
        ),
        "{log}"
    );
    let store = msgstore::Store::open(inst.root()).unwrap();
    let e = store
        .entry(&msgstore::MailboxName::parse("user/joe/Work").unwrap())
        .unwrap();
    assert_eq!((e.uidvalidity, e.acl), (uidvalidity, acl));
    assert_readable(inst.root(), &delivered);
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn a_large_store_is_compared_on_a_sample_before_readiness_and_in_full_after() {
    let inst = Instance::new("");
    let mut delivered = Vec::new();
    for u in 0..4 {
        delivered.extend(deliver(inst.root(), &format!("s{u}"), &["A"], 1));
    }
    // Clean: a sample at startup, then the full comparison in the background.
    let s = inst.start(&["--full-check-limit", "5"]);
    inst.wait_log(
        "Full comparison of the mailbox database with the folders done",
        30,
    );
    assert!(
        inst.log().contains("Compared a sample of "),
        "{}",
        inst.log()
    );
    assert_eq!(s.stop(), Some(0));
    // An entry lost from the database: the sample (which covers every user of so small a
    // store) finds it and the folders put it back before readiness.
    rusqlite::Connection::open(inst.db())
        .unwrap()
        .execute("DELETE FROM mailbox WHERE name = 'user/s2/A'", [])
        .unwrap();
    let s = inst.start(&["--full-check-limit", "5"]);
    let log = inst.wait_log(RESYNC_DONE, 30);
    assert!(
        log.contains("1 difference(s); the full comparison"),
        "{log}"
    );
    assert!(
        log.contains("Missing from the mailbox database: user/s2/A"),
        "{log}"
    );
    assert_readable(inst.root(), &delivered);
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn started_as_root_stored_runs_as_the_server_user() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let inst = Instance::new("");
    let conf = std::fs::read_to_string(inst.root().join("config/msg.conf")).unwrap();
    std::fs::write(
        inst.root().join("config/msg.conf"),
        conf.replace("local.serveruid = root", "local.serveruid = nobody")
            .replace("local.servergid = root", "local.servergid = nogroup"),
    )
    .unwrap();
    // A store owned by someone else: refused, with the command that fixes it.
    std::fs::create_dir_all(inst.root().join("data/store")).unwrap();
    let o = std::process::Command::new(STORED)
        .arg("--root")
        .arg(inst.root())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("is owned by uid 0, not by nobody: run chown -R nobody:nogroup"),
        "{err}"
    );
    std::process::Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(inst.root().join("data"))
        .status()
        .unwrap();
    std::fs::set_permissions(
        inst.root(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let s = inst.start(&[]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.pid())).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid.split_whitespace().skip(1).all(|u| u == "65534"),
        "{uid}"
    );
    inst.wait_log("running as user nobody", 10);
    assert_eq!(s.stop(), Some(0));
}

/// With no snapshot at all, the database built from the folders before readiness carries
/// each quota root's usage, the rights index and a UIDVALIDITY counter past every folder's,
/// written in one pass (no settling pause per root: nothing else runs before readiness).
#[test]
fn rebuild_without_snapshot_restores_usage_rights_and_uidvalidity() {
    let inst = Instance::new(FAST);
    let mut delivered = Vec::new();
    for u in ["joe", "ann", "bob", "eve"] {
        delivered.extend(deliver(inst.root(), u, &["Work", "Work/2026"], 2));
    }
    let (usage, max_uv) = {
        let store = msgstore::Store::open(inst.root()).unwrap();
        let n = msgstore::MailboxName::parse("user/joe/Work").unwrap();
        store.set_acl(&n, "ann", "lr").unwrap();
        let usage: Vec<(u64, u64)> = ["joe", "ann", "bob", "eve"]
            .iter()
            .map(|u| {
                let q = store.quota(&format!("user/{u}")).unwrap();
                (q.storage_used, q.messages_used)
            })
            .collect();
        let max_uv = store
            .db()
            .list_all()
            .unwrap()
            .iter()
            .map(|e| e.uidvalidity)
            .max();
        (usage, max_uv.unwrap())
    };
    assert_eq!(usage[0].1, 6);
    let len = std::fs::metadata(inst.db()).unwrap().len();
    scramble(&inst.db(), 0, len as usize, 5);
    let s = inst.start(&[]);
    let log = inst.wait_log("Rebuilt the mailbox database from the folders", 10);
    assert!(log.contains("No usable snapshot"), "{log}");
    let store = msgstore::Store::open(inst.root()).unwrap();
    for (u, want) in ["joe", "ann", "bob", "eve"].iter().zip(&usage) {
        let q = store.quota(&format!("user/{u}")).unwrap();
        assert_eq!((q.storage_used, q.messages_used), *want, "{u}");
    }
    assert_eq!(
        store.db().rights_index("ann").unwrap(),
        vec!["user/joe/Work".to_owned()]
    );
    let ann = msgstore::UserName::new("ann").unwrap();
    let fresh = msgstore::MailboxName::for_user(&ann, "Fresh").unwrap();
    store.create_mailbox(&fresh, None, None).unwrap();
    let uv = store.db().get(fresh.as_str()).unwrap().unwrap().uidvalidity;
    assert!(uv > max_uv, "new UIDVALIDITY {uv} not past {max_uv}");
    assert_readable(inst.root(), &delivered);
    drop(store);
    assert_eq!(s.stop(), Some(0));
}

/// Renames made by a server while the background resync after a snapshot restore runs over
/// many folders (entries to update from store.meta, folders to enter): the resync never brings
/// back a name renamed away, never drops the new one, and leaves the database in agreement
/// with the folders.
#[test]
fn renames_during_the_background_resync_leave_no_ghost() {
    const BEFORE: usize = 240;
    const AFTER: usize = 80;
    let inst = Instance::new(FAST);
    let store = msgstore::Store::open(inst.root()).unwrap();
    let zed = msgstore::UserName::new("zed").unwrap();
    store.provision_user(&zed).unwrap();
    let folder = |i: usize| msgstore::MailboxName::for_user(&zed, &format!("F{i:04}")).unwrap();
    // On 4 threads, as several sessions would: each creation is made durable on its own.
    let on_threads = |range: std::ops::Range<usize>, f: &(dyn Fn(usize) + Sync)| {
        std::thread::scope(|s| {
            for t in 0..4 {
                let r = range.clone();
                s.spawn(move || r.filter(|i| i % 4 == t).for_each(f));
            }
        })
    };
    on_threads(0..BEFORE, &|i| {
        store.create_mailbox(&folder(i), None, None).unwrap();
    });
    drop(store);
    let s = inst.start(&["--snapshot-interval-secs", "3600"]);
    inst.wait_log("taken and verified", 30);
    assert_eq!(s.stop(), Some(0));
    // After the snapshot: every folder's ACL changes (the restored entries then disagree with
    // store.meta), and more folders are made (absent from the restored database).
    let store = msgstore::Store::open(inst.root()).unwrap();
    on_threads(0..BEFORE, &|i| {
        store.set_acl(&folder(i), "ann", "lr").unwrap()
    });
    on_threads(BEFORE..BEFORE + AFTER, &|i| {
        store.create_mailbox(&folder(i), None, None).unwrap();
    });
    // And one rename the restored database does not know of.
    let moved = msgstore::MailboxName::for_user(&zed, "Moved").unwrap();
    store.rename_mailbox(&folder(0), &moved, None).unwrap();
    drop(store);
    let len = std::fs::metadata(inst.db()).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(inst.db())
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    let s = inst.start(&[]);
    // As a server would: rename one folder again and again while the resync runs. The last
    // folder of the pre-snapshot ones sorts last, so the resync reaches it late.
    let store = msgstore::Store::open(inst.root()).unwrap();
    let mut names = vec![folder(BEFORE - 1)];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while inst.log_count(RESYNC_DONE) == 0 {
        assert!(std::time::Instant::now() < deadline, "{}", inst.log());
        let next = msgstore::MailboxName::for_user(&zed, &format!("R{:04}", names.len())).unwrap();
        store
            .rename_mailbox(names.last().unwrap(), &next, None)
            .unwrap();
        names.push(next);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(names.len() > 2, "the resync ended before any rename");
    // Let a last settling rename check run out, then look.
    std::thread::sleep(Duration::from_millis(700));
    let entries: Vec<String> = store
        .db()
        .list_prefix("user/zed/")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    let last = names.pop().unwrap();
    assert_eq!(
        entries.iter().filter(|n| **n == last.as_str()).count(),
        1,
        "renamed folder {last} missing"
    );
    names.push(folder(0));
    assert_eq!(
        entries.iter().filter(|n| **n == moved.as_str()).count(),
        1,
        "{}",
        inst.log()
    );
    for ghost in &names {
        assert!(
            !entries.iter().any(|n| n == ghost.as_str()),
            "ghost {ghost} after {} renames:\n{}",
            names.len(),
            inst.log()
        );
    }
    let log = inst.log();
    assert!(
        log.contains("0 problem(s); reconstruct -m is not needed"),
        "{log}"
    );
    assert!(
        log.contains("Renamed in the mailbox database: user/zed/F0000 to user/zed/Moved"),
        "{log}"
    );
    let partitions = msgstore::StoreConfig::load(&msgstore::layout::Layout::new(inst.root()))
        .unwrap()
        .partitions;
    let check = reconstruct::db::fix_mailboxes(store.db(), &partitions, None, None, true);
    assert_eq!(check.changes, 0, "{:?}", check.lines);
    let stale = stored::recovery::stale_entries(store.db(), &partitions, None);
    assert!(stale.is_empty(), "{stale:?}");
    drop(store);
    assert_eq!(s.stop(), Some(0));
}

/// Quota limits set after the last snapshot survive a restore from it, and a rebuild with no
/// snapshot: the store keeps a copy in each user's directory.
#[test]
fn quota_limits_set_after_the_snapshot_survive_restore_and_rebuild() {
    let inst = Instance::new(FAST);
    let mut delivered = deliver(inst.root(), "joe", &["Work"], 2);
    delivered.extend(deliver(inst.root(), "ann", &[], 2));
    let store = msgstore::Store::open(inst.root()).unwrap();
    store.set_quota("user/ann", Some(1000), Some(10)).unwrap();
    drop(store);
    let s = inst.start(&["--snapshot-interval-secs", "3600"]);
    inst.wait_log("taken and verified", 30);
    assert_eq!(s.stop(), Some(0));
    // After the snapshot: joe gets limits, ann loses hers.
    let store = msgstore::Store::open(inst.root()).unwrap();
    store
        .set_quota("user/joe", Some(2_000_000), Some(500))
        .unwrap();
    store.set_quota("user/ann", None, None).unwrap();
    drop(store);
    let limits = |root: &Path| {
        let store = msgstore::Store::open(root).unwrap();
        ["user/joe", "user/ann"].map(|r| {
            let q = store.quota(r).unwrap();
            (q.storage_limit, q.message_limit, q.messages_used)
        })
    };
    let want = [(Some(2_000_000), Some(500), 4), (None, None, 2)];
    assert_eq!(limits(inst.root()), want);

    // Restored from the snapshot (which has ann's old limits and none for joe).
    let len = std::fs::metadata(inst.db()).unwrap().len();
    scramble(&inst.db(), 0, len as usize, 9);
    let s = inst.start(&[]);
    let log = inst.wait_log(RESYNC_DONE, 30);
    assert!(log.contains(SEED_SNAPSHOT), "{log}");
    assert!(
        log.contains("Restored the quota limits of 2 root(s)"),
        "{log}"
    );
    assert_eq!(limits(inst.root()), want);
    assert_eq!(s.stop(), Some(0));

    // No usable snapshot: rebuilt from the folders, limits included.
    for s in stored::snapshot::list(&inst.snapshots()).unwrap() {
        scramble(&s.db(), 100, 64, 11);
    }
    let len = std::fs::metadata(inst.db()).unwrap().len();
    scramble(&inst.db(), 0, len as usize, 13);
    let s = inst.start(&[]);
    inst.wait_log("Rebuilt the mailbox database from the folders", 10);
    assert_eq!(limits(inst.root()), want);
    assert_readable(inst.root(), &delivered);
    assert_eq!(s.stop(), Some(0));
}
