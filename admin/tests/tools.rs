//! The administration commands run as an administrator runs them: real binaries, real files.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn cmd(bin: &str, root: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("run command")
}

fn cmd_stdin(bin: &str, root: &Path, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(bin)
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const MBOXUTIL: &str = env!("CARGO_BIN_EXE_mboxutil");
const HASHDIR: &str = env!("CARGO_BIN_EXE_hashdir");
const CONFIGUTIL: &str = env!("CARGO_BIN_EXE_configutil");
const MSUSER: &str = env!("CARGO_BIN_EXE_msuser");

#[test]
fn mboxutil_create_list_rename_delete_and_quota() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    for n in [
        "user/usr44/INBOX",
        "user/usr440/INBOX",
        "user/usr4/INBOX",
        "user/joe/Work/2026",
    ] {
        let o = cmd(MBOXUTIL, r, &["-c", n]);
        assert!(o.status.success(), "{n}: {}", err(&o));
    }
    // Parents are created too.
    let o = cmd(MBOXUTIL, r, &["-l", "-p", "user/joe/*"]);
    let listing = out(&o);
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(names, ["user/joe/Work", "user/joe/Work/2026"]);
    // The seed's example: exactly the matching folders.
    let o = cmd(MBOXUTIL, r, &["-l", "-p", "user/usr44*"]);
    let binding = out(&o);
    let names: Vec<&str> = binding
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(names, ["user/usr44/INBOX", "user/usr440/INBOX"]);
    let o = cmd(MBOXUTIL, r, &["-l", "-p", "user/%/INBOX", "-x"]);
    assert_eq!(out(&o).lines().count(), 3);
    assert!(out(&o).contains("/=usr4/=INBOX"));
    // No match: exit 1 with a message.
    let o = cmd(MBOXUTIL, r, &["-l", "-p", "user/nobody*"]);
    assert_eq!(o.status.code(), Some(1));

    let o = cmd(MBOXUTIL, r, &["-r", "user/joe/Work", "user/joe/Jobs"]);
    assert!(o.status.success(), "{}", err(&o));
    let o = cmd(MBOXUTIL, r, &["-l", "-p", "user/joe/*"]);
    assert!(out(&o).contains("user/joe/Jobs/2026"));
    let o = cmd(MBOXUTIL, r, &["-c", "user/joe/Jobs"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("already exists"));

    let o = cmd(MBOXUTIL, r, &["-q", "user/joe", "-s", "10M", "-m", "500"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("storage  0B used of 10.0M"), "{}", out(&o));
    assert!(out(&o).contains("messages 0 used of 500"));
    let o = cmd(MBOXUTIL, r, &["-q", "user/joe", "-s", "none"]);
    assert!(out(&o).contains("used of unlimited"));
    let o = cmd(MBOXUTIL, r, &["-q", "joe"]);
    assert_eq!(o.status.code(), Some(1));

    let o = cmd(MBOXUTIL, r, &["-d", "user/joe/Jobs"]);
    assert!(o.status.success());
    assert_eq!(
        out(&o),
        "deleted user/joe/Jobs/2026\ndeleted user/joe/Jobs\n"
    );
    let o = cmd(MBOXUTIL, r, &["-d", "user/usr4"]);
    assert_eq!(out(&o), "deleted user/usr4/INBOX\n");
    let o = cmd(MBOXUTIL, r, &["-d", "user/joe/Nope"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn mboxutil_bad_input() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    for (args, code) in [
        (vec![], 64),
        (vec!["-z"], 64),
        (vec!["-l", "-c", "user/a/b"], 64),
        (vec!["-c", "user/joe/../x"], 1),
        (vec!["-c", "/etc/passwd"], 1),
        (vec!["-c", "user/joe/a//b"], 1),
        (vec!["-c", "user/joe/x", "-P", "nosuch"], 1),
        (vec!["-q", "user/joe", "-s", "12Q"], 1),
    ] {
        let o = cmd(MBOXUTIL, r, &args);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", err(&o));
        assert!(!err(&o).is_empty(), "{args:?}: no message");
    }
    let o = cmd(MBOXUTIL, r, &["-c", "user/joe/x", "-P", "nosuch"]);
    assert!(err(&o).contains("nosuch"), "{}", err(&o));
    let o = Command::new(MBOXUTIL).arg("--help").output().unwrap();
    assert!(o.status.success());
    assert!(
        out(&o).contains("quote"),
        "help tells that shells need patterns quoted"
    );
}

#[test]
fn hashdir_prints_user_and_folder_directories() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    cmd(MBOXUTIL, r, &["-c", "user/joe/INBOX"]);
    let o = cmd(HASHDIR, r, &["joe"]);
    assert!(o.status.success());
    let user_dir = out(&o).trim().to_owned();
    assert!(user_dir.ends_with("/=joe"));
    assert!(Path::new(&user_dir).is_dir());
    let o = cmd(HASHDIR, r, &["user/joe/INBOX"]);
    let folder = out(&o).trim().to_owned();
    assert_eq!(folder, format!("{user_dir}/=INBOX"));
    assert!(Path::new(&folder).join("store.idx").exists());
    let o = cmd(HASHDIR, r, &["-r", "joe"]);
    assert_eq!(out(&o).trim().split('/').count(), 3);
    let o = cmd(HASHDIR, r, &["bad user"]);
    assert_eq!(o.status.code(), Some(1));
    let o = cmd(HASHDIR, r, &[]);
    assert_eq!(o.status.code(), Some(64));
}

#[test]
fn configutil_lists_gets_sets_and_validates() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    let o = cmd(CONFIGUTIL, r, &[]);
    assert!(o.status.success());
    assert!(out(&o).contains("local.store.snapshotinterval = 1440"));
    let o = cmd(CONFIGUTIL, r, &["-o", "local.store.snapshotinterval"]);
    assert_eq!(out(&o), "1440\n");
    let o = cmd(
        CONFIGUTIL,
        r,
        &["-o", "local.store.snapshotinterval", "-v", "720"],
    );
    assert!(o.status.success(), "{}", err(&o));
    let o = cmd(CONFIGUTIL, r, &["-o", "local.store.snapshotinterval"]);
    assert_eq!(out(&o), "720\n");
    for (name, value, expect) in [
        (
            "local.store.snapshotinterval",
            "0",
            "local.store.snapshotinterval: value 0 is out of range (1 to 46080)",
        ),
        (
            "local.store.snapshotinterval",
            "46081",
            "value 46081 is out of range (1 to 46080)",
        ),
        (
            "local.store.snapshotdirs",
            "1",
            "local.store.snapshotdirs: value 1 is out of range (2 to 367)",
        ),
        (
            "local.store.snapshotdirs",
            "368",
            "value 368 is out of range (2 to 367)",
        ),
        (
            "local.store.snapshotdirs",
            "three",
            "local.store.snapshotdirs",
        ),
    ] {
        let o = cmd(CONFIGUTIL, r, &["-o", name, "-v", value]);
        assert_eq!(o.status.code(), Some(1), "{name}={value}");
        assert!(err(&o).contains(expect), "{name}={value}: {}", err(&o));
    }
    for ok in ["1", "46080"] {
        assert!(cmd(
            CONFIGUTIL,
            r,
            &["-o", "local.store.snapshotinterval", "-v", ok]
        )
        .status
        .success());
    }
    for ok in ["2", "367"] {
        assert!(
            cmd(CONFIGUTIL, r, &["-o", "local.store.snapshotdirs", "-v", ok])
                .status
                .success()
        );
    }
    let o = cmd(CONFIGUTIL, r, &["-o", "no.such.parameter"]);
    assert_eq!(o.status.code(), Some(1));
    let o = cmd(
        CONFIGUTIL,
        r,
        &["-o", "local.store.snapshotinterval", "-v", ""],
    );
    assert!(o.status.success());
    assert_eq!(
        out(&cmd(CONFIGUTIL, r, &["-o", "local.store.snapshotinterval"])),
        "1440\n"
    );
    let o = cmd(CONFIGUTIL, r, &["-H", "-o", "local.store.snapshotdirs"]);
    assert!(out(&o).contains("367"), "{}", out(&o));
    let o = cmd(CONFIGUTIL, r, &["-v", "3"]);
    assert_eq!(o.status.code(), Some(64));
}

#[test]
fn msuser_manages_users() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    let o = cmd_stdin(MSUSER, r, &["add", "joe"], "s3cret\n");
    assert!(o.status.success(), "{}", err(&o));
    let o = cmd_stdin(MSUSER, r, &["add", "joe"], "again\n");
    assert_eq!(o.status.code(), Some(1));
    let o = cmd_stdin(MSUSER, r, &["add", "bad:name"], "x\n");
    assert_eq!(o.status.code(), Some(1));
    let o = cmd_stdin(MSUSER, r, &["add", "empty"], "\n");
    assert_eq!(o.status.code(), Some(1));
    cmd_stdin(MSUSER, r, &["add", "bob"], "pw\n");
    assert_eq!(out(&cmd(MSUSER, r, &["list"])), "joe\nbob\n");
    let passwd = std::fs::read_to_string(r.join("config/passwd")).unwrap();
    assert!(passwd.contains("joe:{ARGON2ID}$argon2id$"), "{passwd}");
    assert!(!passwd.contains("s3cret"));
    assert!(cmd_stdin(MSUSER, r, &["passwd", "joe"], "new\n")
        .status
        .success());
    assert!(cmd(MSUSER, r, &["delete", "bob"]).status.success());
    assert_eq!(out(&cmd(MSUSER, r, &["list"])), "joe\n");
    assert_eq!(cmd(MSUSER, r, &["delete", "bob"]).status.code(), Some(1));
    assert_eq!(cmd(MSUSER, r, &["frobnicate"]).status.code(), Some(64));
}

const TELEMETRY: &str = env!("CARGO_BIN_EXE_telemetry");

#[test]
fn telemetry_lists_and_shows_captures_with_absolute_times() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    let dir = r.join("data/telemetry/imap/redb");
    std::fs::create_dir_all(&dir).unwrap();
    // The seed's example capture.
    std::fs::write(
        dir.join("session-1"),
        "LOGIN redb 2003/11/26 13:03:21\n>0.017>1 OK User logged in\n2 OK Completed\n<0.046<3 select \"INBOX\"\n>0.236>* 1538 EXISTS\n3 OK [READ-WRITE] Completed\n",
    )
    .unwrap();
    let o = cmd(TELEMETRY, r, &["list"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("session-1"));
    assert!(out(&o).contains("LOGIN redb 2003/11/26 13:03:21"));
    assert_eq!(out(&cmd(TELEMETRY, r, &["list", "imap", "nobody"])), "");
    let o = cmd(TELEMETRY, r, &["show", "imap/redb/session-1"]);
    assert!(o.status.success(), "{}", err(&o));
    let text = out(&o);
    assert!(text.contains("2003/11/26 13:03:21.017"), "{text}");
    assert!(text.contains("2003/11/26 13:03:21.063"), "{text}");
    assert!(text.contains("select \"INBOX\""), "{text}");
    let o = cmd(TELEMETRY, r, &["list", "smtp"]);
    assert_eq!(o.status.code(), Some(1));
    std::fs::write(dir.join("junk"), "not a capture").unwrap();
    let o = cmd(TELEMETRY, r, &["show", "imap/redb/junk"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("not a telemetry capture"), "{}", err(&o));
}

/// `mboxutil -l | head`: a reader that goes away ends the listing quietly (killed by SIGPIPE,
/// as ls or cat are), never with a panic message.
#[test]
fn a_closed_pipe_ends_a_listing_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    assert!(cmd(MBOXUTIL, r, &["-c", "user/joe/INBOX"]).status.success());
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = Command::new(MBOXUTIL)
        .arg("--root")
        .arg(r)
        .arg("-l")
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!err(&o).contains("panicked"), "{}", err(&o));
    assert_eq!(o.status.signal(), Some(libc::SIGPIPE), "{:?}", o.status);
}
