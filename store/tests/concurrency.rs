//! Several processes on one store: appends from two processes, a process killed mid-stream,
//! a full disk. The child processes are this test binary re-run with one ignored test selected.

mod common;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::name;
use msgstore::{AppendRequest, Store, StoreError};

fn child(test: &str, envs: &[(&str, String)]) -> Command {
    let exe = std::env::current_exe().expect("test binary");
    let mut c = Command::new(exe);
    c.args([
        "--exact",
        test,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (k, v) in envs {
        c.env(k, v);
    }
    c
}

fn body(tag: &str, n: usize) -> Vec<u8> {
    format!(
        "From: load@example.com\r\nSubject: {tag} {n}\r\n\r\n{}\r\n",
        "x".repeat(4000)
    )
    .into_bytes()
}

/// Child: append COUNT messages with THREADS threads, printing `ACK <uid> <tag> <n>` for each.
#[test]
#[ignore = "run by the concurrency tests as a child process"]
fn child_appender() {
    let Ok(root) = std::env::var("T_ROOT") else {
        return;
    };
    let tag = std::env::var("T_TAG").unwrap_or_default();
    let count: usize = std::env::var("T_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let threads: usize = std::env::var("T_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let store = std::sync::Arc::new(Store::open(Path::new(&root)).expect("open"));
    let inbox = name("user/joe/INBOX");
    let per = count.div_ceil(threads);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (store, inbox, tag) = (store.clone(), inbox.clone(), tag.clone());
            std::thread::spawn(move || {
                for i in 0..per {
                    let n = t * per + i;
                    if n >= count {
                        break;
                    }
                    let (_, uids) = store
                        .append(
                            &inbox,
                            vec![AppendRequest {
                                data: body(&tag, n),
                                ..Default::default()
                            }],
                        )
                        .expect("append");
                    println!("ACK {} {} {}", uids[0], tag, n);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
}

#[test]
fn two_processes_append_10000_each_to_one_folder() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let inbox = name("user/joe/INBOX");
    store.create_mailbox(&inbox, None, None).unwrap();
    let root = dir.path().display().to_string();
    let spawn = |tag: &str| {
        child(
            "child_appender",
            &[
                ("T_ROOT", root.clone()),
                ("T_TAG", tag.into()),
                ("T_COUNT", "10000".into()),
                ("T_THREADS", "8".into()),
            ],
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child")
    };
    let a = spawn("A");
    let b = spawn("B");
    let mut acked = std::collections::HashMap::new();
    for ch in [a, b] {
        let out = ch.wait_with_output().expect("child");
        assert!(out.status.success(), "child failed");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // libtest prints "test child_appender ... " without a newline before our output.
            let Some(at) = line.find("ACK ") else {
                continue;
            };
            let parts: Vec<&str> = line[at..].split(' ').collect();
            if parts.len() == 4 && parts[0] == "ACK" {
                let uid: u32 = parts[1].parse().unwrap();
                assert!(
                    acked
                        .insert(uid, (parts[2].to_owned(), parts[3].to_owned()))
                        .is_none(),
                    "UID {uid} given twice"
                );
            }
        }
    }
    assert_eq!(acked.len(), 20_000);
    let st = store.status(&inbox).unwrap();
    assert_eq!(st.messages, 20_000);
    let live: Vec<u32> = store
        .with_state(&inbox, |s| Ok(s.live().map(|m| m.uid).collect()))
        .unwrap();
    assert_eq!(live.len(), 20_000);
    // Spot-check contents: each UID holds the message its acknowledgement named.
    for uid in live.iter().step_by(997) {
        let (tag, n) = &acked[uid];
        let raw = store.read_message(&inbox, *uid).unwrap();
        assert!(
            raw.starts_with(format!("From: load@example.com\r\nSubject: {tag} {n}\r\n").as_bytes())
        );
    }
}

#[test]
fn sigkill_mid_stream_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let inbox = name("user/joe/INBOX");
    store.create_mailbox(&inbox, None, None).unwrap();
    drop(store);
    let root = dir.path().display().to_string();
    for round in 0..3 {
        let mut ch = child(
            "child_appender",
            &[
                ("T_ROOT", root.clone()),
                ("T_TAG", format!("R{round}")),
                ("T_COUNT", "1000000".into()),
                ("T_THREADS", "4".into()),
            ],
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
        let stdout = ch.stdout.take().unwrap();
        let mut acked = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let Some(at) = line.find("ACK ") else {
                continue;
            };
            let parts: Vec<&str> = line[at..].split(' ').collect();
            if parts.len() == 4 && parts[0] == "ACK" {
                acked.push((parts[1].parse::<u32>().unwrap(), parts[3].to_owned()));
                if acked.len() == 200 + round * 150 {
                    // SAFETY: plain kill(2) of our own child.
                    unsafe { libc::kill(ch.id() as i32, libc::SIGKILL) };
                    break;
                }
            }
        }
        let _ = ch.wait();
        // Reopen as a fresh process would: every acknowledged message is there and intact.
        let store = Store::open(dir.path()).unwrap();
        let st = store.status(&inbox).unwrap();
        assert!(st.messages as usize >= acked.len());
        for (uid, n) in &acked {
            let raw = store
                .read_message(&inbox, *uid)
                .unwrap_or_else(|e| panic!("acked uid {uid} lost: {e}"));
            assert!(raw.starts_with(
                format!("From: load@example.com\r\nSubject: R{round} {n}\r\n").as_bytes()
            ));
        }
        // The index is valid: every record loads and a new append works.
        let (_, uids) = store
            .append(
                &inbox,
                vec![AppendRequest {
                    data: body("after", round),
                    ..Default::default()
                }],
            )
            .unwrap();
        assert!(uids[0] > acked.iter().map(|a| a.0).max().unwrap());
    }
}

struct Tmpfs(std::path::PathBuf);
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_disk_fails_the_append_cleanly_and_keeps_the_folder_valid() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=300k", "tmpfs"])
        .arg(&small)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "this test mounts a small tmpfs to fill it: it needs root (CI runs as root)"
    );
    let _guard = Tmpfs(small.clone());
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/msg.conf"),
        format!("store.partition.small.path = {}\n", small.display()),
    )
    .unwrap();
    let store = Store::open(dir.path()).unwrap();
    let f = name("user/joe/Full");
    store.create_mailbox(&f, Some("small"), None).unwrap();
    let mut acked = Vec::new();
    let mut failure = None;
    for i in 0..1000 {
        match store.append(
            &f,
            vec![AppendRequest {
                data: body("full", i),
                ..Default::default()
            }],
        ) {
            Ok((_, uids)) => acked.push((uids[0], i)),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let e = failure.expect("the small disk filled up");
    assert!(e.is_disk_full(), "expected a disk-full error, got {e}");
    assert!(!acked.is_empty());
    // The folder still serves every acknowledged message, from this process and a new one.
    for s in [&store, &Store::open(dir.path()).unwrap()] {
        let st = s.status(&f).unwrap();
        assert_eq!(st.messages as usize, acked.len());
        for (uid, i) in &acked {
            assert_eq!(s.read_message(&f, *uid).unwrap(), body("full", *i));
        }
    }
    // Room again: appends work and UIDs keep increasing.
    store
        .store_flags(
            &f,
            &[acked[0].0],
            msgstore::FlagOp::Add,
            msgstore::flag::DELETED,
            &[],
            None,
        )
        .ok();
    let _ = store.expunge(&f, None);
    let dir_of = store.folder_dir(&f).unwrap();
    let _ = std::fs::remove_file(dir_of.join("0").join(format!("{}.msg", acked[0].0)));
    // No temporary file is left behind, in the folder or its message buckets.
    let mut dirs = vec![dir_of.clone()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            if entry.file_name().to_string_lossy().starts_with(".tmp") {
                panic!("temporary file left behind: {:?}", entry.path());
            }
            if entry.path().is_dir() {
                dirs.push(entry.path());
            }
        }
    }
    match store.append(
        &f,
        vec![AppendRequest {
            data: b"Subject: small\r\n\r\nx\r\n".to_vec(),
            ..Default::default()
        }],
    ) {
        Ok((_, uids)) => assert!(uids[0] > acked.last().unwrap().0),
        Err(e) => assert!(matches!(e, StoreError::Io { .. }), "{e}"),
    }
}
