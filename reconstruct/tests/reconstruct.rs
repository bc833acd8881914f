//! The real `reconstruct` binary against real stores, one test per kind of damage: `-n`
//! reports it (exit 1), the repair fixes it, a second `-n` is clean (exit 0), and every
//! message is still there with the same UID, UIDVALIDITY, flags and keywords.

use std::path::{Path, PathBuf};
use std::process::Command;

use msgstore::{flag, AppendRequest, FlagOp, MailboxName, Store};

const BIN: &str = env!("CARGO_BIN_EXE_reconstruct");

fn name(s: &str) -> MailboxName {
    MailboxName::parse(s).expect("valid name")
}

fn msg(subject: &str, flags: u32, keywords: &[&str]) -> AppendRequest {
    AppendRequest {
        data: format!(
            "From: Joe <joe@example.com>\r\nTo: bob@example.com\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.com>\r\n\r\nBody of {subject}\r\n"
        )
        .into_bytes(),
        flags,
        keywords: keywords.iter().map(|k| k.to_string()).collect(),
        internal_date: Some(1_700_000_000 + subject.len() as i64),
    }
}

/// A store with user/joe/INBOX (4 messages, flags and keywords) and user/joe/Work.
fn setup() -> (tempfile::TempDir, MailboxName) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let inbox = name("user/joe/INBOX");
    store.create_mailbox(&inbox, None, None).expect("create");
    store
        .create_mailbox(&name("user/joe/Work"), None, None)
        .expect("create");
    store
        .append(
            &inbox,
            vec![
                msg("one", flag::SEEN, &["$Forwarded"]),
                msg("two", 0, &[]),
                msg("three", flag::FLAGGED, &["Work", "$Label1"]),
                msg("four", 0, &[]),
            ],
        )
        .expect("append");
    store
        .store_flags(
            &inbox,
            &[2],
            FlagOp::Add,
            flag::ANSWERED,
            &["$Junk".into()],
            None,
        )
        .expect("flags");
    store
        .store_flags(
            &inbox,
            &[1],
            FlagOp::Remove,
            0,
            &["$Forwarded".into()],
            None,
        )
        .expect("flags");
    store
        .store_flags(&inbox, &[1, 4], FlagOp::Add, flag::SEEN, &[], None)
        .expect("flags");
    store
        .append(&name("user/joe/Work"), vec![msg("w", 0, &["Todo"])])
        .expect("append");
    (dir, inbox)
}

type View = (u32, u32, Vec<(u32, u32, Vec<String>, Vec<u8>)>);

/// What a client sees: UIDVALIDITY, UIDNEXT, and each message's UID, flags, keywords, bytes.
fn view(root: &Path, n: &MailboxName) -> View {
    let store = Store::open(root).expect("open");
    let st = store.status(n).expect("status");
    let msgs = store
        .with_state(n, |s| {
            Ok(s.live()
                .map(|m| {
                    let mut k: Vec<String> = s
                        .keyword_names(m.keywords)
                        .into_iter()
                        .map(String::from)
                        .collect();
                    k.sort();
                    (m.uid, m.flags, k)
                })
                .collect::<Vec<_>>())
        })
        .expect("state");
    let msgs = msgs
        .into_iter()
        .map(|(u, f, k)| {
            let body = store.read_message(n, u).expect("readable");
            store.structure(n, u).expect("structure");
            (u, f, k, body)
        })
        .collect();
    (st.uidvalidity, st.uidnext, msgs)
}

fn run(root: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("run reconstruct");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn folder_dir(root: &Path, n: &MailboxName) -> PathBuf {
    Store::open(root).expect("open").folder_dir(n).expect("dir")
}

/// -n finds the damage (exit 1, `expect` in the report), the repair fixes it (exit 1), a second
/// -n is clean.
fn damage_and_repair(root: &Path, expect: &str, repair: &[&str]) -> String {
    let (code, out, err) = run(root, &["-n", "-r"]);
    assert_eq!(code, 1, "check should find damage: {out}{err}");
    assert!(out.contains(expect), "expected {expect:?} in {out}");
    let (code, out, err) = run(root, repair);
    assert_eq!(code, 1, "repair: {out}{err}");
    assert!(out.contains("Rebuilt user/joe/INBOX"), "{out}");
    let (code, out2, err) = run(root, &["-n", "-r"]);
    assert_eq!(code, 0, "clean after repair: {out2}{err}");
    assert!(out2.contains("0 damaged"), "{out2}");
    out
}

#[test]
fn clean_store_checks_clean() {
    let (dir, inbox) = setup();
    let before = view(dir.path(), &inbox);
    let (code, out, _) = run(dir.path(), &["-n", "-r"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 folder(s) checked, 0 damaged"), "{out}");
    // -r without damage rebuilds nothing; -f rebuilds and changes nothing clients see.
    let (code, out, _) = run(dir.path(), &["-r"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 rebuilt"), "{out}");
    let idx = folder_dir(dir.path(), &inbox).join("store.idx");
    let idx_before = std::fs::read(&idx).unwrap();
    let (code, out, _) = run(dir.path(), &["-f", "-r", "user/joe"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 rebuilt"), "{out}");
    // Every message was read again and came out as indexed: nothing rewritten.
    assert_eq!(out.matches("left untouched").count(), 2, "{out}");
    assert_eq!(std::fs::read(&idx).unwrap(), idx_before);
    let after = view(dir.path(), &inbox);
    assert_eq!(before.0, after.0);
    assert_eq!(before.2, after.2);
    // -i/-e with nothing rebuilt: say so.
    let (code, out, _) = run(dir.path(), &["-e", "-r"]);
    assert_eq!(code, 0);
    assert!(out.contains("add -f"), "{out}");
}

#[test]
fn truncated_index() {
    let (dir, inbox) = setup();
    let before = view(dir.path(), &inbox);
    let idx = folder_dir(dir.path(), &inbox).join("store.idx");
    let len = std::fs::metadata(&idx).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&idx)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    damage_and_repair(
        dir.path(),
        "Mailbox corrupted, start_offset beyond EOF: user/joe/INBOX",
        &["-r"],
    );
    assert_eq!(view(dir.path(), &inbox), before);
}

#[test]
fn zeroed_index() {
    let (dir, inbox) = setup();
    let before = view(dir.path(), &inbox);
    let idx = folder_dir(dir.path(), &inbox).join("store.idx");
    let len = std::fs::metadata(&idx).unwrap().len() as usize;
    std::fs::write(&idx, vec![0u8; len]).unwrap();
    damage_and_repair(
        dir.path(),
        "Mailbox corrupted, missing fixed headers: user/joe/INBOX",
        &["-r", "user/joe/INBOX"],
    );
    assert_eq!(view(dir.path(), &inbox), before);
}

#[test]
fn flipped_byte_in_a_record() {
    let (dir, inbox) = setup();
    let before = view(dir.path(), &inbox);
    let idx = folder_dir(dir.path(), &inbox).join("store.idx");
    let mut b = std::fs::read(&idx).unwrap();
    let at = msgstore::index::record_offset(1) as usize + 9;
    b[at] ^= 0x10;
    std::fs::write(&idx, b).unwrap();
    damage_and_repair(
        dir.path(),
        "index record 2 damaged: user/joe/INBOX",
        &["-r"],
    );
    assert_eq!(view(dir.path(), &inbox), before);
}

#[test]
fn deleted_index_gives_back_the_clients_view() {
    let (dir, inbox) = setup();
    let before = view(dir.path(), &inbox);
    let idx = folder_dir(dir.path(), &inbox).join("store.idx");
    std::fs::remove_file(&idx).unwrap();
    let out = damage_and_repair(
        dir.path(),
        "Mailbox corrupted, missing fixed headers: user/joe/INBOX",
        &["-i", "-f", "-r"],
    );
    assert!(out.contains("2 rebuilt"), "{out}");
    let after = view(dir.path(), &inbox);
    assert_eq!(after, before, "UIDs, UIDVALIDITY, UIDNEXT, flags, keywords");
}

#[test]
fn damaged_cache() {
    let (dir, inbox) = setup();
    let before = view(dir.path(), &inbox);
    let cache = folder_dir(dir.path(), &inbox).join("store.cache");
    let mut b = std::fs::read(&cache).unwrap();
    let n = b.len();
    b[n - 3] ^= 0xff;
    std::fs::write(&cache, b).unwrap();
    damage_and_repair(
        dir.path(),
        "Invalid cache data for msg 4 in mailbox user/joe/INBOX. Needs reconstruct",
        &["-r"],
    );
    assert_eq!(view(dir.path(), &inbox), before);
}

#[test]
fn missing_message_file() {
    let (dir, inbox) = setup();
    let mut before = view(dir.path(), &inbox);
    let d = folder_dir(dir.path(), &inbox);
    std::fs::remove_file(d.join("0").join("3.msg")).unwrap();
    damage_and_repair(
        dir.path(),
        "Message file missing for msg 3 in mailbox user/joe/INBOX",
        &["-r"],
    );
    before.2.retain(|m| m.0 != 3);
    assert_eq!(view(dir.path(), &inbox), before);
}

#[test]
fn stray_message_file() {
    let (dir, inbox) = setup();
    let before = view(dir.path(), &inbox);
    let d = folder_dir(dir.path(), &inbox);
    std::fs::write(
        d.join("0").join("9.msg"),
        b"Subject: stray\r\n\r\nfound on disk\r\n",
    )
    .unwrap();
    damage_and_repair(
        dir.path(),
        "Stray message file for msg 9 in mailbox user/joe/INBOX",
        &["-r"],
    );
    let after = view(dir.path(), &inbox);
    assert_eq!(after.0, before.0);
    assert_eq!(after.1, 10);
    assert_eq!(&after.2[..4], &before.2[..]);
    assert_eq!(after.2[4].0, 9);
    assert_eq!(after.2[4].3, b"Subject: stray\r\n\r\nfound on disk\r\n");
}

#[test]
fn removed_store_exp_and_restoring_expunged() {
    let (dir, inbox) = setup();
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .store_flags(&inbox, &[2], FlagOp::Add, flag::DELETED, &[], None)
            .unwrap();
        store.expunge(&inbox, None).unwrap();
    }
    let before = view(dir.path(), &inbox);
    assert!(before.2.iter().all(|m| m.0 != 2));
    let d = folder_dir(dir.path(), &inbox);
    std::fs::remove_file(d.join("store.exp")).unwrap();
    damage_and_repair(
        dir.path(),
        "Expunged msg 2 in mailbox user/joe/INBOX still has its file but is not listed in store.exp",
        &["-r"],
    );
    assert_eq!(view(dir.path(), &inbox), before);
    // A forced rebuild without -e keeps it expunged; with -e it comes back.
    let (code, out, _) = run(dir.path(), &["-f", "-r", "user/joe/INBOX"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(view(dir.path(), &inbox).2, before.2);
    let (code, out, _) = run(dir.path(), &["-e", "-f", "-r", "user/joe/INBOX"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Removed store.exp"), "{out}");
    let after = view(dir.path(), &inbox);
    let back = after.2.iter().find(|m| m.0 == 2).expect("message 2 back");
    assert_eq!(back.1, flag::ANSWERED | flag::DELETED);
    assert_eq!(back.2, vec!["$Junk".to_string()]);
    assert_eq!(after.2.len(), 4);
    assert_eq!(run(dir.path(), &["-n", "-r"]).0, 0);
}

#[test]
fn mailbox_database_against_the_spool() {
    let (dir, _) = setup();
    let store = Store::open(dir.path()).unwrap();
    let work = name("user/joe/Work");
    let gone = name("user/joe/Gone");
    store.create_mailbox(&gone, None, None).unwrap();
    let work_entry = store.entry(&work).unwrap();
    let gone_dir = store.folder_dir(&gone).unwrap();
    std::fs::remove_dir_all(&gone_dir).unwrap();
    // The directory of Work stays, its database entry goes.
    store.db().delete(work.as_str()).unwrap();
    drop(store);

    let (code, out, err) = run(dir.path(), &["-n", "-m"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("Missing from the mailbox database: user/joe/Work"),
        "{out}"
    );
    assert!(
        out.contains("Folder directory missing for user/joe/Gone"),
        "{out}"
    );
    let (code, out, err) = run(dir.path(), &["-m"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("Added to the mailbox database: user/joe/Work"),
        "{out}"
    );
    assert!(
        out.contains("Removed from the mailbox database: user/joe/Gone"),
        "{out}"
    );
    let (code, out, _) = run(dir.path(), &["-n", "-m"]);
    assert_eq!(code, 0, "{out}");

    let store = Store::open(dir.path()).unwrap();
    assert!(store.db().get(gone.as_str()).unwrap().is_none());
    assert_eq!(store.entry(&work).unwrap(), work_entry);
    assert!(store.read_message(&work, 1).unwrap().len() > 10);
    // -u needs -p; with it, the scope is one user.
    assert_eq!(run(dir.path(), &["-u", "joe", "-m"]).0, 64);
    assert_eq!(run(dir.path(), &["-p", "primary", "-u", "joe", "-m"]).0, 0);
}

#[test]
fn wrong_quota_usage() {
    let (dir, _) = setup();
    let store = Store::open(dir.path()).unwrap();
    let right = store.quota("user/joe").unwrap();
    assert_eq!(right.messages_used, 5);
    store.db().set_quota_usage("user/joe", 1, 999).unwrap();
    drop(store);
    let (code, out, _) = run(dir.path(), &["-n", "-q"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("Quota root user/joe"), "{out}");
    let (code, out, _) = run(dir.path(), &["-q"]);
    assert_eq!(code, 1, "{out}");
    let (code, out, _) = run(dir.path(), &["-n", "-q"]);
    assert_eq!(code, 0, "{out}");
    let q = Store::open(dir.path()).unwrap().quota("user/joe").unwrap();
    assert_eq!((q.storage_used, q.messages_used), (right.storage_used, 5));
}

#[test]
fn damaged_rights_index() {
    let (dir, _) = setup();
    let store = Store::open(dir.path()).unwrap();
    let work = name("user/joe/Work");
    store.set_acl(&work, "bob", "lr").unwrap();
    assert_eq!(store.shared_with("bob").unwrap(), vec!["user/joe/Work"]);
    // Damage: the ACL stays, bob's rights-index row goes.
    let acl = store.entry(&work).unwrap().acl;
    store.db().set_acl(work.as_str(), "bob", &acl).unwrap();
    assert!(store.shared_with("bob").unwrap().is_empty());
    drop(store);
    let (code, out, _) = run(dir.path(), &["-n", "-l"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("Rights index lacks bob on user/joe/Work"),
        "{out}"
    );
    assert_eq!(run(dir.path(), &["-l"]).0, 1);
    assert_eq!(run(dir.path(), &["-n", "-l"]).0, 0);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.shared_with("bob").unwrap(), vec!["user/joe/Work"]);
}

#[test]
fn usage_errors_change_nothing() {
    let (dir, inbox) = setup();
    let idx = folder_dir(dir.path(), &inbox).join("store.idx");
    std::fs::write(&idx, b"junk").unwrap();
    for args in [
        &["-n"][..],
        &[][..],
        &["-n", "-i", "-r"][..],
        &["-n", "-e", "-r"][..],
        &["-r", "-m"][..],
        &["-u", "joe", "-m"][..],
        &["-p", "nosuch", "-r"][..],
        &["-r", "user/nobody/INBOX"][..],
        &["-r", "user/nobody"][..],
        &["-r", "/tmp/x/store.idx"][..],
        &["-r", "INBOX"][..],
        &["-x"][..],
    ] {
        let (code, out, err) = run(dir.path(), args);
        assert!(code >= 64, "{args:?}: {code} {out}{err}");
        assert!(!err.is_empty(), "{args:?}: message on stderr");
    }
    assert_eq!(std::fs::read(&idx).unwrap(), b"junk");
}

#[test]
fn repair_while_another_thread_appends_and_reads() {
    let (dir, inbox) = setup();
    let store = Store::open(dir.path()).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let appended = std::thread::scope(|sc| {
        let writer = sc.spawn(|| {
            let mut uids = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || i < 20 {
                let (_, u) = store
                    .append(&inbox, vec![msg(&format!("live{i}"), flag::SEEN, &[])])
                    .expect("append during reconstruct");
                uids.extend(u);
                for &u in uids.iter().rev().take(3) {
                    store
                        .read_message(&inbox, u)
                        .expect("read during reconstruct");
                }
                store.status(&inbox).expect("status");
                i += 1;
            }
            uids
        });
        for _ in 0..3 {
            let (code, out, err) = run(dir.path(), &["-f", "-r"]);
            assert_eq!(code, 0, "{out}{err}");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().expect("writer")
    });
    let v = view(dir.path(), &inbox);
    for u in &appended {
        let m = v.2.iter().find(|m| m.0 == *u).expect("no lost message");
        assert_eq!(m.1, flag::SEEN);
    }
    assert_eq!(v.2.len(), 4 + appended.len());
    assert_eq!(run(dir.path(), &["-n", "-r"]).0, 0);
}

/// The same with the real imapd and an IMAP client (Python's imaplib): APPEND, then SELECT
/// and UID FETCH of what was appended, while `reconstruct -f -r` runs three times. Nothing
/// the client was told is lost, and the store checks clean after.
#[test]
fn repair_while_an_imap_client_appends_and_reads() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    let (dir, inbox) = setup();
    let bin_dir = Path::new(BIN).parent().expect("target dir").to_path_buf();
    for tool in ["imapd", "msuser"] {
        assert!(
            bin_dir.join(tool).exists(),
            "{tool} is not built: run cargo test --workspace"
        );
    }
    let mut msuser = Command::new(bin_dir.join("msuser"))
        .arg("--root")
        .arg(dir.path())
        .args(["add", "joe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("msuser");
    msuser
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"pw\n")
        .expect("password");
    assert!(msuser.wait().expect("msuser").success());
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut imapd = Kill(
        Command::new(bin_dir.join("imapd"))
            .arg("--root")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("imapd"),
    );
    let mut line = String::new();
    BufReader::new(imapd.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("imapd said {line:?}"))
        .to_owned();
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let stop = dir.path().join("stop-client");
    let script = r#"
import imaplib, os, re, sys
host, port, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = imaplib.IMAP4(host, port)
c.login("joe", "pw")
uids, i = [], 0
while not os.path.exists(stop) or i < 20:
    body = ("From: a@example.org\r\nSubject: imap-live%d\r\n\r\nbody %d\r\n" % (i, i)).encode()
    typ, data = c.append("INBOX", "(\\Seen)", None, body)
    assert typ == "OK", (typ, data)
    uid = int(re.search(rb"APPENDUID \d+ (\d+)", data[0]).group(1))
    uids.append(uid)
    typ, _ = c.select("INBOX")
    assert typ == "OK"
    typ, data = c.uid("FETCH", str(uid), "(BODY.PEEK[])")
    assert typ == "OK" and data[0] is not None, (uid, data)
    assert b"Subject: imap-live%d" % i in data[0][1], data
    c.noop()
    i += 1
c.logout()
print(" ".join(map(str, uids)))
"#;
    let client = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(host)
        .arg(port)
        .arg(&stop)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    for _ in 0..3 {
        let (code, out, err) = run(dir.path(), &["-f", "-r"]);
        assert_eq!(code, 0, "{out}{err}");
    }
    std::fs::write(&stop, b"").expect("stop file");
    let out = client.wait_with_output().expect("client");
    assert!(
        out.status.success(),
        "IMAP client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let appended: Vec<u32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|u| u.parse().expect("uid"))
        .collect();
    assert!(appended.len() >= 20, "{appended:?}");
    drop(imapd);
    let v = view(dir.path(), &inbox);
    for u in &appended {
        let m = v.2.iter().find(|m| m.0 == *u).expect("no lost message");
        assert_eq!(m.1, flag::SEEN);
    }
    assert_eq!(v.2.len(), 4 + appended.len());
    assert_eq!(run(dir.path(), &["-n", "-r"]).0, 0);
}

/// `-q` is safe while servers run: corrections made while a writer appends (each append
/// counted in the folder header first, in the database just after) never count a message
/// twice, and once the writer stops the usage is exact.
#[test]
fn quota_repair_beside_a_live_writer_counts_each_message_once() {
    let (dir, inbox) = setup();
    let store = Store::open(dir.path()).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|sc| {
        let writer = sc.spawn(|| {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || i < 50 {
                store
                    .append(&inbox, vec![msg(&format!("q{i}"), 0, &[])])
                    .expect("append during -q");
                i += 1;
            }
        });
        for _ in 0..5 {
            let (code, out, err) = run(dir.path(), &["-q"]);
            assert!(code <= 1, "{out}{err}");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().expect("writer");
    });
    let (code, out, err) = run(dir.path(), &["-n", "-q"]);
    assert_eq!(code, 0, "usage drifted: {out}{err}");
}

#[test]
fn progress_lines_on_stderr_when_not_a_terminal() {
    let (dir, _) = setup();
    {
        let store = Store::open(dir.path()).unwrap();
        for i in 0..40 {
            let n = name(&format!("user/joe/F{i}"));
            store.create_mailbox(&n, None, None).unwrap();
            let msgs = (0..50).map(|j| msg(&format!("m{i}x{j}"), 0, &[])).collect();
            store.append_bulk(&n, msgs).unwrap();
        }
    }
    // A forced rebuild of 42 folders (2,000 messages read, each folder written and flushed)
    // outlasts a 10 ms interval, even with nothing left dirty in the page cache.
    let (code, out, err) = run(dir.path(), &["--progress", "0.01", "-f", "-r"]);
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(!lines.is_empty(), "progress lines expected on stderr");
    for l in &lines {
        let rest = l
            .strip_prefix("reconstruct: ")
            .and_then(|r| r.strip_suffix(" s"))
            .unwrap_or_else(|| panic!("not a progress line: {l:?}"));
        let parts: Vec<&str> = rest.split(", ").collect();
        assert_eq!(parts.len(), 3, "{l:?}");
        assert!(parts[0].ends_with("/42 folders"), "{l:?}");
        assert!(parts[1].ends_with(" messages"), "{l:?}");
    }
    // stdout keeps findings and the summary only.
    assert!(!out.contains(" folders, "), "{out}");
    assert!(out.contains("42 folder(s) checked"), "{out}");
    // --progress 0: nothing on stderr; a bad value is a usage error.
    let (code, _, err) = run(dir.path(), &["--progress", "0", "-n", "-r"]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(run(dir.path(), &["--progress", "soon", "-n", "-r"]).0, 64);
}

#[test]
fn wrong_quota_root_in_the_database() {
    let (dir, _) = setup();
    let work = name("user/joe/Work");
    let store = Store::open(dir.path()).unwrap();
    let right = store.quota("user/joe").unwrap();
    let mut e = store.entry(&work).unwrap();
    e.quota_root = "user/bob".into();
    store.db().upsert(&e).unwrap();
    drop(store);

    let (code, out, err) = run(dir.path(), &["-n", "-m"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(
            "Wrong quota root for user/joe/Work: user/bob in the database, user/joe in its store.meta"
        ),
        "{out}"
    );
    let (code, out, err) = run(dir.path(), &["-m"]);
    assert_eq!(code, 1, "{out}{err}");
    let changed: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("Corrected the quota root"))
        .collect();
    assert_eq!(
        changed,
        ["Corrected the quota root of user/joe/Work: user/bob in the database, user/joe in its store.meta"]
    );
    let (code, out, _) = run(dir.path(), &["-n", "-m"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(run(dir.path(), &["-n", "-q"]).0, 0);

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.entry(&work).unwrap().quota_root, "user/joe");
    let q = store.quota("user/joe").unwrap();
    assert_eq!(
        (q.storage_used, q.messages_used),
        (right.storage_used, right.messages_used)
    );
}

#[test]
fn damaged_message_content() {
    let (dir, inbox) = setup();
    let before = view(dir.path(), &inbox);
    let f = folder_dir(dir.path(), &inbox).join("0").join("2.msg");
    let mut b = std::fs::read(&f).unwrap();
    let n = b.len();
    b[n - 4] ^= 0x01;
    std::fs::write(&f, &b).unwrap();
    // Same size: the quick check (stat) cannot see it; -n -f reads the files.
    assert_eq!(run(dir.path(), &["-n", "-r"]).0, 0);
    let (code, out, err) = run(dir.path(), &["-n", "-f", "-r"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("Message file of msg 2 in mailbox user/joe/INBOX is damaged: its content does not match the checksum taken at delivery. Needs reconstruct"),
        "{out}"
    );
    // The repair cannot restore the bytes; it gives them a new UID so that clients fetch them
    // again, with the message's flags and keywords.
    let (code, out, err) = run(dir.path(), &["-f", "-r"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(
            "Message file of msg 2 in mailbox user/joe/INBOX changed after delivery: kept as msg 5"
        ),
        "{out}"
    );
    let (code, out, err) = run(dir.path(), &["-n", "-f", "-r"]);
    assert_eq!(code, 0, "{out}{err}");
    let after = view(dir.path(), &inbox);
    assert_eq!(after.0, before.0, "UIDVALIDITY kept");
    assert_eq!(after.1, 6);
    let old2 = before.2.iter().find(|m| m.0 == 2).unwrap();
    let new5 = after.2.iter().find(|m| m.0 == 5).expect("msg 5");
    assert_eq!((new5.1, &new5.2, &new5.3), (old2.1, &old2.2, &b));
    assert!(after.2.iter().all(|m| m.0 != 2));
    assert_eq!(after.2.len(), before.2.len());
}

/// `-m` and `-q` count their progress too: every folder of the database, and for `-q` every
/// message, so a long database pass shows the same progress line as `-r`.
#[test]
fn database_passes_count_their_progress() {
    use msgstore::layout::Layout;
    use msgstore::mboxdb::MailboxDb;
    use reconstruct::progress::Progress;
    use reconstruct::ProgressMode;
    let (dir, _) = setup();
    {
        let store = Store::open(dir.path()).unwrap();
        for i in 0..5 {
            let n = name(&format!("user/ann/P{i}"));
            store.create_mailbox(&n, None, None).unwrap();
            let msgs = (0..3).map(|j| msg(&format!("p{i}x{j}"), 0, &[])).collect();
            store.append_bulk(&n, msgs).unwrap();
        }
    }
    let layout = Layout::new(dir.path());
    let config = msgstore::StoreConfig::load(&layout).unwrap();
    let db = MailboxDb::open(&layout.mboxlist_dir()).unwrap();
    // INBOX (5 messages) and Work from setup, and the five folders of 3 here.
    let folders = db.list_all().unwrap().len();
    assert_eq!(folders, 7);

    let p = Progress::new(ProgressMode::Off, 0);
    let o = reconstruct::db::fix_mailboxes_counted(
        &db,
        &config.partitions,
        None,
        None,
        true,
        None,
        Some(&p),
    );
    assert_eq!(o.changes, 0, "{:?}", o.lines);
    assert_eq!(
        p.line().split(", ").next(),
        Some(format!("reconstruct: {folders}/{folders} folders").as_str())
    );

    let p = Progress::new(ProgressMode::Off, 0);
    let o = reconstruct::db::fix_quotas_counted(&db, &config.partitions, None, true, Some(&p));
    assert_eq!(o.changes, 0, "{:?}", o.lines);
    let line = p.line();
    assert!(
        line.starts_with(&format!(
            "reconstruct: {folders}/{folders} folders, 20 messages"
        )),
        "{line}"
    );
}

/// After a power loss, message files the appends made durable only through the message log
/// are missing: reconstruct puts them back from the log before it looks at the folder, as the
/// folder's own first load would have done.
#[test]
fn messages_a_power_loss_took_come_back_from_the_message_log() {
    use msgstore::index::{self, Header};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let inbox = name("user/pl/INBOX");
    store.create_mailbox(&inbox, None, None).expect("create");
    // No checkpoint (another test's) until the log segments are copied: see msgstore's test
    // acknowledged_appends_come_back_from_the_message_log_after_a_power_loss.
    let hold = msgstore::wal::hold_checkpoints();
    for s in ["one", "two", "three", "four"] {
        store.append(&inbox, vec![msg(s, 0, &[])]).expect("append");
    }
    let fdir = folder_dir(dir.path(), &inbox);
    // What survives the power loss: the log segments (flushed before each answer).
    let segments: Vec<(PathBuf, Vec<u8>)> = msgstore::wal::segments_in(&fdir)
        .unwrap()
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    assert!(!segments.is_empty());
    drop(hold);
    drop(store);
    for uid in [2, 3] {
        std::fs::remove_file(fdir.join(format!("0/{uid}.msg"))).unwrap();
    }
    let idx = fdir.join("store.idx");
    let mut b = std::fs::read(&idx).unwrap();
    let mut h = Header::decode(&b[..index::HEADER_SIZE], "x").unwrap();
    h.boot_id = [0x5a; 16];
    b[..index::HEADER_SIZE].copy_from_slice(&h.encode());
    std::fs::write(&idx, &b).unwrap();
    for (p, b) in &segments {
        std::fs::write(p, b).unwrap();
    }
    let (code, out, err) = run(dir.path(), &["-r", "user/pl"]);
    assert!(out.contains("restored from the message log"), "{out}{err}");
    assert!(code == 0 || code == 1, "{out}{err}");
    assert!(msgstore::wal::segments_in(&fdir).unwrap().is_empty());
    let store = Store::open(dir.path()).expect("open");
    assert_eq!(store.status(&inbox).unwrap().messages, 4);
    for (uid, s) in [(1, "one"), (2, "two"), (3, "three"), (4, "four")] {
        assert_eq!(
            store.read_message(&inbox, uid).unwrap(),
            msg(s, 0, &[]).data
        );
    }
    let (code, out, _) = run(dir.path(), &["-n", "-r", "user/pl"]);
    assert_eq!(code, 0, "{out}");
}
