//! msgcheck, the health check, against a real instance: one line per finding, exit 0 when
//! all is well, 1 on a warning (a core file, a damaged folder), 2 when stored is down.

mod common;

use std::process::Command;

use common::*;

fn msgcheck(inst: &Instance, args: &[&str]) -> (Option<i32>, String) {
    let o = Command::new(MSGCHECK)
        .arg("--root")
        .arg(inst.root())
        // Free space is the machine's, not the test's: thresholds at zero.
        .args(["--warn-free", "0", "--crit-free", "0"])
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
    )
}

#[test]
fn msgcheck_reports_each_finding_with_monitoring_exit_codes() {
    let inst = Instance::new("");
    let delivered = deliver(inst.root(), "joe", &["Work"], 2);
    let s = inst.start(&["--snapshot-interval-secs", "3600"]);
    inst.wait_log("taken and verified", 30);

    let (code, out) = msgcheck(&inst, &[]);
    assert_eq!(code, Some(0), "{out}");
    for want in [
        "OK disk: partition primary ",
        "OK disk: database directory ",
        "OK disk: log directory ",
        "OK stamp: stored.ckp touched ",
        "OK stamp: stored.lcu touched ",
        "OK stamp: stored.per touched ",
        "OK dblog: ",
        "OK snapshot: 1 snapshot(s)",
        &format!("OK service: stored running (pid {})", s.pid()),
        "OK core: no core files",
        "OK reconstruct: reconstruct: ",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(out.lines().all(|l| l.starts_with("OK ")), "{out}");

    // A core file and a damaged folder are warnings.
    std::fs::write(inst.root().join("core.4242"), b"\x7fELF").unwrap();
    let store = msgstore::Store::open(inst.root()).unwrap();
    let work = msgstore::MailboxName::parse("user/joe/Work").unwrap();
    let d = delivered
        .iter()
        .find(|d| d.mailbox == "user/joe/Work")
        .unwrap();
    let dir = store.folder_dir(&work).unwrap();
    drop(store);
    std::fs::remove_file(
        dir.join(format!("{:x}", d.uid >> 12))
            .join(format!("{}.msg", d.uid)),
    )
    .unwrap();
    let (code, out) = msgcheck(&inst, &["--quiet"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("WARNING core: core file "), "{out}");
    assert!(
        out.contains("core.4242: a process terminated unexpectedly"),
        "{out}"
    );
    assert!(
        out.contains("WARNING reconstruct: reconstruct: 2 folder(s) checked")
            || out.contains("WARNING reconstruct: reconstruct: "),
        "{out}"
    );
    assert!(out.contains("Message file missing"), "{out}");
    assert!(!out.contains("OK "), "--quiet prints only problems: {out}");

    // stored down: critical.
    assert_eq!(s.stop(), Some(0));
    std::fs::remove_file(inst.root().join("core.4242")).unwrap();
    let (code, out) = msgcheck(&inst, &["--no-folders"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("CRITICAL service: stored is not running"),
        "{out}"
    );
    assert!(!out.contains("reconstruct"), "{out}");

    // Usage errors.
    let (code, _) = msgcheck(&inst, &["--bogus"]);
    assert_eq!(code, Some(64));
    let o = Command::new(MSGCHECK)
        .args(["--warn-free", "5", "--crit-free", "10"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64));
}
