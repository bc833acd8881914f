//! stored restarted alone while the front ends run, as after a crash of stored or an
//! administrator's restart of it: the real popd and lmtpd keep serving a real POP3 client and
//! a real LMTP client (Python's poplib and smtplib) throughout, the new stored sees them,
//! leaves the database and its log alone, and takes over the periodic work; a database that
//! would need recovery is not touched under them.
//!
//! popd and lmtpd are run from the target directory stored is built into (`cargo test
//! --workspace` builds them).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::*;

fn sibling(name: &str) -> PathBuf {
    let p = Path::new(STORED).parent().unwrap().join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo test --workspace` (or `cargo build -p popd -p lmtpd`) first",
        p.display()
    );
    p
}

/// Start a front end as start-msg does: its pid file in data/run/.
fn front_end(inst: &Instance, name: &str) -> testkit::Spawned {
    let mut cmd = Command::new(sibling(name));
    cmd.arg("--root")
        .arg(inst.root())
        .args(["--listen", "127.0.0.1:0"]);
    let s = testkit::Spawned::start(cmd, 1);
    std::fs::write(
        inst.root().join(format!("data/run/{name}.pid")),
        format!("{}\n", s.pid()),
    )
    .unwrap();
    s
}

/// Deliver `n` messages over LMTP, then count joe's messages over POP3 and read each one;
/// returns the count.
fn deliver_and_count(lmtp: &testkit::Spawned, pop: &testkit::Spawned, tag: &str, n: usize) -> u64 {
    let script = r#"
import poplib, smtplib, sys
lhost, lport, phost, pport, tag, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
l = smtplib.LMTP(lhost, lport, timeout=30)
for i in range(n):
    msg = "From: a@example.com\r\nTo: joe@example.com\r\nSubject: %s %d\r\n\r\nbody %s %d\r\n" % (tag, i, tag, i)
    refused = l.sendmail("a@example.com", ["joe"], msg)
    assert not refused, refused
l.quit()
p = poplib.POP3(phost, pport, timeout=30)
p.user("joe")
p.pass_("pw")
count, _ = p.stat()
for i in range(1, count + 1):
    resp, lines, _ = p.retr(i)
    assert resp.startswith(b"+OK"), resp
    assert any(x.startswith(b"Subject: ") for x in lines), lines
p.quit()
print(count)
"#;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), script).unwrap();
    let (la, pa) = (lmtp.addr(0), pop.addr(0));
    let out = Command::new(testkit::python())
        .arg(file.path())
        .args([
            la.ip().to_string(),
            la.port().to_string(),
            pa.ip().to_string(),
            pa.port().to_string(),
            tag.to_owned(),
            n.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn stored_restarted_alone_beside_running_services_takes_over() {
    let inst = Instance::new("local.store.checkpointinterval = 1\n");
    testkit::add_users(inst.root(), &["joe"]);
    let first = inst.start(&[]);
    let lmtp = front_end(&inst, "lmtpd");
    let pop = front_end(&inst, "popd");
    assert_eq!(deliver_and_count(&lmtp, &pop, "before", 2), 2);

    // stored dies; the services serve on without it.
    first.kill9();
    assert_eq!(deliver_and_count(&lmtp, &pop, "without", 2), 4);

    // Started again alone (start-msg removes the old readiness file first, as here). popd's
    // pid file is gone, as under systemd, which writes none: stored finds it by the lock it
    // holds on the database.
    std::fs::remove_file(inst.ready()).unwrap();
    std::fs::remove_file(inst.root().join("data/run/popd.pid")).unwrap();
    let restarted = SystemTime::now();
    let second = inst.start(&["--snapshot-interval-secs", "1"]);
    let log = inst.wait_log("Startup analysis done", 10);
    let tail = &log[log.rfind("stored starting on").unwrap()..];
    assert!(
        tail.contains(&format!("Services running: lmtpd (pid {}), ", lmtp.pid()))
            && tail.contains(&format!("popd (pid {})", pop.pid())),
        "{tail}"
    );
    assert!(tail.contains("database clean"), "{tail}");
    for bad in [
        "Removing extra database logs",
        "failed its check",
        "disagree",
    ] {
        assert!(!tail.contains(bad), "{bad}: {tail}");
    }
    // Served all along, and the new stored does the periodic work.
    assert_eq!(deliver_and_count(&lmtp, &pop, "after", 2), 6);
    inst.wait_log("taken and verified", 20);
    let ckp = inst.dbdir().join("stored.ckp");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&ckp)
        .and_then(|m| m.modified())
        .map_or(true, |t| t < restarted)
    {
        assert!(std::time::Instant::now() < deadline, "no checkpoint");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(second.stop(), Some(0));
    assert_eq!(deliver_and_count(&lmtp, &pop, "stopped", 1), 7);

    // A database that needs recovery is not swapped under running services: stored says
    // what to do and does not start.
    let len = std::fs::metadata(inst.db()).unwrap().len();
    scramble(&inst.db(), 0, len as usize / 2, 17);
    let out = Command::new(STORED)
        .arg("--root")
        .arg(inst.root())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("still use it: stop them (stop-msg)"), "{err}");
    assert!(!inst.ready().exists());
    assert!(
        inst.db().exists(),
        "the database stays where the services use it"
    );
}
