//! stored's periodic work (seed table 20-12 and 20-13) against the real binary: stamps,
//! log cleanup, erasing expunged messages after the grace period, snapshots on a full disk,
//! and the metrics endpoint answering scrapes and bad requests.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use msgstore::{flag, FlagOp, MailboxName, Store};

fn mtime(p: &Path) -> SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http(port: u16, request: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn stamps_log_cleanup_erasure_and_metrics() {
    let port = free_port();
    let inst = Instance::new(&format!(
        "local.store.checkpointinterval = 1\nlocal.store.logcleanupinterval = 1\n\
         local.store.peruserinterval = 1\nlocal.store.cleanupinterval = 1\n\
         local.store.expungegrace = 2\nlocal.store.metricsport = {port}\n"
    ));
    let delivered = deliver(inst.root(), "joe", &[], 4);
    let s = inst.start(&[]);
    let stamps: Vec<PathBuf> = ["stored.ckp", "stored.lcu", "stored.per"]
        .iter()
        .map(|n| inst.dbdir().join(n))
        .collect();
    wait_for("the first stamps", 10, || stamps.iter().all(|p| p.exists()));
    let first: Vec<SystemTime> = stamps.iter().map(|p| mtime(p)).collect();

    // Expunge two messages: their files stay for the grace period, then go.
    let inbox = MailboxName::parse("user/joe/INBOX").unwrap();
    let files: Vec<PathBuf> = {
        let store = Store::open(inst.root()).unwrap();
        let dir = store.folder_dir(&inbox).unwrap();
        let gone = [delivered[0].uid, delivered[1].uid];
        store
            .store_flags(&inbox, &gone, FlagOp::Add, flag::DELETED, &[], None)
            .unwrap();
        store.expunge(&inbox, Some(&gone)).unwrap();
        gone.iter()
            .map(|u| dir.join(format!("{:x}", u >> 12)).join(format!("{u}.msg")))
            .collect()
    };
    assert!(
        files.iter().all(|f| f.exists()),
        "erased before the grace period"
    );
    let exp = files[0]
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("store.exp");
    // Files first, then their entries leave store.exp.
    wait_for("the expunged files to be erased", 20, || {
        files.iter().all(|f| !f.exists()) && std::fs::read(&exp).is_ok_and(|b| b.is_empty())
    });
    assert_readable(inst.root(), &delivered[2..]);
    let log = inst.wait_log("Erased 2 expunged message file(s)", 10);
    assert!(
        log.contains("Store Notice: Erased 2 expunged message file(s)"),
        "{log}"
    );
    // The folders still check clean: an erased message is no damage.
    let lines = std::sync::Mutex::new(Vec::new());
    let sink = |l: &str| lines.lock().unwrap().push(l.to_owned());
    let opts = reconstruct::Options {
        root: inst.root().to_path_buf(),
        recursive: true,
        check_only: true,
        ..Default::default()
    };
    assert_eq!(
        reconstruct::run(&opts, &sink).unwrap(),
        0,
        "{:?}",
        lines.lock().unwrap()
    );

    // Each stamp moves on; log cleanup empties the database log.
    wait_for("every stamp to be touched again", 10, || {
        stamps.iter().zip(&first).all(|(p, t)| mtime(p) > *t)
    });
    let wal = inst.dbdir().join("mboxlist.db-wal");
    wait_for("log cleanup to empty the database log", 10, || {
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0)
    });

    // Metrics, and the responder's answers to what is not a scrape.
    let m = http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(m.starts_with("HTTP/1.1 200 OK\r\n"), "{m}");
    assert!(m.contains("Content-Type: text/plain; version=0.0.4"), "{m}");
    assert!(m.contains("\nmsg_stored_up 1\n"), "{m}");
    assert!(m.contains("\nmsg_stored_erased_messages_total 2\n"), "{m}");
    assert!(
        m.contains("msg_store_stamp_age_seconds{stamp=\"stored.ckp\"}"),
        "{m}"
    );
    assert!(
        m.contains("msg_service_running{service=\"stored\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("msg_store_fs_free_bytes{what=\"partition primary\""),
        "{m}"
    );
    assert!(http(port, b"GET /other HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
    let r = http(port, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(
        r.starts_with("HTTP/1.1 405 ") && r.contains("Allow: GET"),
        "{r}"
    );
    assert!(http(port, b"\x16\x03\x01 garbage\r\n\r\n").starts_with("HTTP/1.1 400 "));
    let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 20_000));
    assert!(http(port, &big).starts_with("HTTP/1.1 431 "));
    // A client that sends nothing is cut off, and the endpoint keeps serving.
    let idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert!(http(port, b"GET /metrics HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 200 "));
    drop(idle);
    assert_eq!(s.stop(), Some(0));
    assert!(!inst.ready().exists(), "the readiness file goes at exit");
}

struct Tmpfs(PathBuf);
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_disk_during_a_snapshot_keeps_the_earlier_ones() {
    let inst = Instance::new("");
    let small = inst.root().join("small");
    std::fs::create_dir_all(&small).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=400k", "tmpfs"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "this test mounts a small tmpfs to fill it: it needs root (CI runs as root)"
    );
    let _guard = Tmpfs(small.clone());
    inst.append_conf(&format!("local.store.snapshotpath = {}", small.display()));
    let delivered = deliver(inst.root(), "joe", &["Work"], 2);
    let s = inst.start(&["--snapshot-interval-secs", "1"]);
    inst.wait_log("taken and verified", 30);
    // Grow the database past what the small disk holds.
    {
        let store = Store::open(inst.root()).unwrap();
        store
            .db()
            .peruser_set("joe", "blob", Some(vec![0x5a; 600_000].as_slice()))
            .unwrap();
    }
    let log = inst.wait_log("Snapshot failed:", 30);
    assert!(log.contains("the earlier snapshots are kept"), "{log}");
    let snaps = stored::snapshot::list(&small).unwrap();
    assert!(!snaps.is_empty());
    for snap in &snaps {
        stored::snapshot::verify(snap).unwrap();
    }
    for e in std::fs::read_dir(&small).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!n.starts_with(".tmp-"), "a failed snapshot left {n}");
    }
    // The store serves on: stored is still up and every message reads.
    assert!(inst.ready().exists());
    assert_readable(inst.root(), &delivered);
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn aging_policies_expire_by_age_count_and_deleted_flag() {
    // Aging runs at the hour store.expirestart names: first another hour (nothing happens),
    // then the current one. Not across an hour's change.
    let now_tm = || {
        let now = stored::now_secs();
        (stored::aging::local_hour_and_day(now).0, now % 3600)
    };
    if now_tm().1 > 3600 - 20 {
        std::thread::sleep(Duration::from_secs(25));
    }
    let hour = now_tm().0;
    let conf = |h: u32| format!("local.store.cleanupinterval = 1\nstore.expirestart = {h}\n");
    let inst = Instance::new(&conf((hour + 12) % 24));
    let store = Store::open(inst.root()).unwrap();
    let joe = msgstore::UserName::new("joe").unwrap();
    store.provision_user(&joe).unwrap();
    let now = stored::now_secs();
    let put = |folder: &str, days_old: i64, flags: u32| -> u32 {
        let name = MailboxName::for_user(&joe, folder).unwrap();
        let (_, uids) = store
            .append(
                &name,
                vec![msgstore::AppendRequest {
                    data: format!("Subject: {days_old} days\r\n\r\nbody\r\n").into_bytes(),
                    flags,
                    internal_date: Some(now - days_old * 86_400),
                    ..Default::default()
                }],
            )
            .unwrap();
        uids[0]
    };
    let inbox: Vec<u32> = [(9, 0), (7, 0), (5, 0), (3, 0), (1, flag::DELETED)]
        .iter()
        .map(|(d, f)| put("INBOX", *d, *f))
        .collect();
    let trash: Vec<u32> = [40, 35, 2].iter().map(|d| put("Trash", *d, 0)).collect();
    let live = |folder: &str| -> Vec<u32> {
        let name = MailboxName::for_user(&joe, folder).unwrap();
        store
            .with_state(&name, |s| Ok(s.live().map(|m| m.uid).collect::<Vec<_>>()))
            .unwrap()
    };

    // Rules in place, but not at the configured hour: nothing is expunged.
    std::fs::write(
        inst.root().join("config/store.expirerule"),
        "Trash.folderpattern: user/*/Trash\nTrash.messagedays: 30\n",
    )
    .unwrap();
    let s = inst.start(&[]);
    inst.wait_log(
        &format!("run daily at {:02}:00 local time", (hour + 12) % 24),
        10,
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(live("Trash").len(), 3);
    assert!(!inst.log().contains("Aging policies expunged"));
    assert_eq!(s.stop(), Some(0));
    std::fs::write(
        inst.root().join("config/msg.conf"),
        format!(
            "local.serveruid = root\nlocal.servergid = root\n{}",
            conf(hour)
        ),
    )
    .unwrap();

    // A rule file that does not parse: nothing is expunged, and the log says where.
    std::fs::write(
        inst.root().join("config/store.expirerule"),
        "Trash.folderpattern: user/*/Trash\nTrash.messagedays: a month\n",
    )
    .unwrap();
    let s = inst.start(&[]);
    inst.wait_log("Aging policies not applied:", 10);
    assert!(inst
        .log()
        .contains("store.expirerule: line 2: Trash.messagedays"));
    assert_eq!(live("INBOX").len(), 5);

    std::fs::write(
        inst.root().join("config/store.expirerule"),
        "# seed 20.9: expire and purge\n\
         Trash.folderpattern: user/*/Trash\nTrash.messagedays: 30\n\
         Box.folderpattern: user/%/INBOX\nBox.messagecount: 3\nBox.deleted: on\n",
    )
    .unwrap();
    inst.wait_log("Aging policies expunged 4 message(s)", 10);
    // INBOX: the \Deleted one, then the oldest beyond three; Trash: older than 30 days.
    assert_eq!(live("INBOX"), inbox[1..4].to_vec());
    assert_eq!(live("Trash"), vec![trash[2]]);
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn systemd_hears_ready_once_the_database_is_checked_and_stopping_at_exit() {
    let inst = Instance::new("");
    let sock = inst.root().join("notify.sock");
    let rx = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let s = inst.start_env(&[], &[("NOTIFY_SOCKET", &sock)]);
    let mut buf = [0u8; 256];
    let n = rx.recv(&mut buf).unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.starts_with("READY=1\n"), "{msg}");
    inst.wait_log("Startup analysis done", 10);
    assert_eq!(s.stop(), Some(0));
    let n = rx.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
}

/// The summary of `reconstruct -r -n` on the metrics endpoint, computed on its own schedule:
/// clean first, then the damage a lost message file is, by kind, with the check's time.
#[test]
fn reconstruct_findings_are_exported_as_metrics() {
    let port = free_port();
    let inst = Instance::new(&format!(
        "local.store.reconstructcheckinterval = 1\nlocal.store.metricsport = {port}\n"
    ));
    let delivered = deliver(inst.root(), "joe", &["Work"], 2);
    let s = inst.start(&[]);
    let scrape = || http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let m = scrape();
    assert!(
        m.contains("\nmsg_reconstruct_check_time_seconds 0\n"),
        "{m}"
    );
    assert!(!m.contains("msg_reconstruct_findings"), "{m}");
    wait_for("a first folder check", 20, || {
        scrape().contains("\nmsg_reconstruct_check_status 0\n")
    });
    let m = scrape();
    // INBOX, the special-use folders and Work.
    let checked: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("msg_reconstruct_folders_checked "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(checked >= 2, "{m}");
    assert!(
        m.contains("msg_reconstruct_findings{kind=\"damaged\"} 0\n"),
        "{m}"
    );
    assert!(
        m.contains("msg_reconstruct_findings{kind=\"unrepairable\"} 0\n"),
        "{m}"
    );
    assert!(
        !m.contains("\nmsg_reconstruct_check_time_seconds 0\n"),
        "{m}"
    );

    // A message file lost: the next check finds one damaged folder.
    let work = MailboxName::parse("user/joe/Work").unwrap();
    let uid = delivered
        .iter()
        .find(|d| d.mailbox == work.as_str())
        .unwrap()
        .uid;
    let dir = Store::open(inst.root()).unwrap().folder_dir(&work).unwrap();
    std::fs::remove_file(
        dir.join(format!("{:x}", uid >> 12))
            .join(format!("{uid}.msg")),
    )
    .unwrap();
    wait_for("the damage in the metrics", 20, || {
        scrape().contains("msg_reconstruct_findings{kind=\"damaged\"} 1\n")
    });
    assert!(scrape().contains("\nmsg_reconstruct_check_status 1\n"));
    inst.wait_log("Periodic folder check:", 10);
    assert_eq!(s.stop(), Some(0));
}
