//! The store-client API as a front end uses it, against a real store in a temporary directory.

use std::time::Duration;

use store_client::{ClientError, Flag, NumberSet, SearchKey, Secret, StoreClient};

async fn setup() -> (tempfile::TempDir, StoreClient) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    let users = userdb::UserDb::open(dir.path().join("config/passwd")).unwrap();
    users
        .add("joe", &Secret::new("joe-secret".to_string()))
        .unwrap();
    users
        .add("bob", &Secret::new("bob-secret".to_string()))
        .unwrap();
    let client = StoreClient::open(dir.path()).await.unwrap();
    (dir, client)
}

fn mail(subject: &str, body: &str) -> Vec<u8> {
    format!("From: Joe Bloggs <joe@example.com>\r\nTo: bob@example.com\r\nSubject: {subject}\r\nDate: Tue, 3 Mar 2026 10:00:00 +0000\r\n\r\n{body}\r\n").into_bytes()
}

/// Append messages "m1".."mN" with `body` to INBOX, internal dates one second apart.
async fn append_numbered(s: &store_client::Session, n: i64, body: &str) {
    for i in 1..=n {
        s.append(
            "INBOX",
            mail(&format!("m{i}"), body),
            &[],
            Some(1_700_000_000 + i),
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn authenticate_provisions_and_refuses_bad_passwords() {
    let (_d, c) = setup().await;
    assert!(matches!(
        c.authenticate("joe", &Secret::new("wrong".into())).await,
        Err(ClientError::AuthenticationFailed)
    ));
    assert!(matches!(
        c.authenticate("nobody", &Secret::new("x".into())).await,
        Err(ClientError::AuthenticationFailed)
    ));
    let s = c
        .authenticate("joe", &Secret::new("joe-secret".into()))
        .await
        .unwrap();
    let names: Vec<String> = s
        .list("*")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(
        names,
        ["INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash"]
    );
    let sent = s.list("Sent").await.unwrap();
    assert_eq!(sent[0].special_use.as_deref(), Some("\\Sent"));
    assert!(sent[0].subscribed);
    assert!(matches!(
        c.session_for("ghost").await,
        Err(ClientError::NoSuchMailbox(_))
    ));
}

#[tokio::test]
async fn folders_create_rename_delete_list_patterns() {
    let (_d, c) = setup().await;
    let s = c.session_for("joe").await.unwrap();
    s.create("Work/2026/Q1", None).await.unwrap();
    assert!(matches!(
        s.create("Work", None).await,
        Err(ClientError::MailboxExists(_))
    ));
    let top: Vec<_> = s.list("%").await.unwrap();
    let work = top.iter().find(|m| m.name == "Work").unwrap();
    assert!(work.has_children);
    let names: Vec<String> = s
        .list("Work/*")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["Work/2026", "Work/2026/Q1"]);
    assert_eq!(s.list("inbox").await.unwrap()[0].name, "INBOX");
    s.rename("Work", "Jobs").await.unwrap();
    assert!(s.status("Jobs/2026/Q1").await.is_ok());
    assert!(matches!(
        s.delete("INBOX").await,
        Err(ClientError::PermissionDenied(_))
    ));
    s.delete("Jobs/2026/Q1").await.unwrap();
    assert!(matches!(
        s.status("Jobs/2026/Q1").await,
        Err(ClientError::NoSuchMailbox(_))
    ));
    for bad in ["a//b", "../x", "a/\u{7}", ""] {
        assert!(
            matches!(
                s.create(bad, None).await,
                Err(ClientError::InvalidArgument(_))
            ),
            "{bad:?}"
        );
    }
    s.subscribe("Jobs").await.unwrap();
    assert!(s
        .subscriptions()
        .await
        .unwrap()
        .contains(&"Jobs".to_string()));
    s.unsubscribe("Jobs").await.unwrap();
    assert!(!s
        .subscriptions()
        .await
        .unwrap()
        .contains(&"Jobs".to_string()));
}

#[tokio::test]
async fn select_fetch_store_expunge_and_updates_between_sessions() {
    let (_d, c) = setup().await;
    let s = c.session_for("joe").await.unwrap();
    append_numbered(&s, 5, "hello").await;
    let mut a = s.select("INBOX", false).await.unwrap();
    let mut b = s.select("INBOX", false).await.unwrap();
    assert_eq!(a.exists(), 5);
    assert_eq!(a.recent_count(), 5);
    assert_eq!(
        b.recent_count(),
        0,
        "\\Recent goes to the first session only"
    );
    assert_eq!(a.first_unseen(), Some(1));

    let metas = a.fetch_meta(&[1, 3, 99]).await.unwrap();
    assert_eq!(metas.iter().map(|m| m.uid).collect::<Vec<_>>(), [1, 3]);
    assert_eq!(metas[1].internal_date, 1_700_000_003);

    let r = a
        .store_flags(
            &[2, 3],
            msgstore_flagop_add(),
            &[Flag::Seen, Flag::parse("$Work").unwrap()],
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.changed.len(), 2);
    // The other session hears of it; the first one does not repeat its own change.
    let up = b.poll(true).await.unwrap();
    assert_eq!(up.flags.iter().map(|f| f.0).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(up.keywords.as_deref(), Some(&["$Work".to_string()][..]));
    let up = a.poll(true).await.unwrap();
    assert!(up.flags.is_empty());

    a.store_flags(&[1, 4], msgstore_flagop_add(), &[Flag::Deleted], None)
        .await
        .unwrap();
    let gone = a.expunge(None).await.unwrap();
    assert_eq!(gone, [1, 4]);
    let up = a.poll(true).await.unwrap();
    assert_eq!(up.expunged, [1, 3], "seq 1, then old seq 4 which is now 3");
    // b may not renumber during FETCH/STORE/SEARCH: deferred, then applied.
    let up = b.poll(false).await.unwrap();
    assert!(up.expunged.is_empty());
    assert_eq!(b.exists(), 5);
    let up = b.poll(true).await.unwrap();
    assert_eq!(up.vanished, [1, 4]);
    assert_eq!(b.exists(), 3);

    s.append("INBOX", mail("new", "fresh"), &[], None)
        .await
        .unwrap();
    let up = b.poll(true).await.unwrap();
    assert_eq!(up.exists, Some(4));
    assert_eq!(b.uid_of(4), Some(6));
    assert_eq!(b.seq_of(6), Some(4));

    let raw = b.read_message(6).await.unwrap();
    assert!(raw.ends_with(b"fresh\r\n"));
    let st = b.structure(6).await.unwrap();
    assert_eq!(st.envelope.subject.as_deref(), Some(&b"new"[..]));

    // CONDSTORE: UNCHANGEDSINCE below the current modseq is refused for that message.
    let m = b.fetch_meta(&[2]).await.unwrap()[0].modseq;
    let r = b
        .store_flags(&[2], msgstore_flagop_add(), &[Flag::Flagged], Some(m - 1))
        .await
        .unwrap();
    assert_eq!(r.modified, [2]);

    let ro = s.select("INBOX", true).await.unwrap();
    let mut ro = ro;
    assert!(matches!(
        ro.store_flags(&[2], msgstore_flagop_add(), &[Flag::Seen], None)
            .await,
        Err(ClientError::PermissionDenied(_))
    ));
}

/// A write through a selected folder also reads what its next poll announces; a change by
/// another session in between makes that reading stale, and the poll must still report it.
#[tokio::test]
async fn poll_after_own_write_still_reports_what_others_did_in_between() {
    let (_d, c) = setup().await;
    let s = c.session_for("joe").await.unwrap();
    append_numbered(&s, 4, "hello").await;
    let mut a = s.select("INBOX", false).await.unwrap();
    let mut b = s.select("INBOX", false).await.unwrap();

    // Nothing in between: a's own change is not echoed back to it.
    a.store_flags(&[1], msgstore_flagop_add(), &[Flag::Flagged], None)
        .await
        .unwrap();
    assert!(a.poll(true).await.unwrap().flags.is_empty());
    b.poll(true).await.unwrap();

    // b changes message 2 between a's write and a's poll.
    a.store_flags(&[1], msgstore_flagop_add(), &[Flag::Seen], None)
        .await
        .unwrap();
    b.store_flags(&[2], msgstore_flagop_add(), &[Flag::Answered], None)
        .await
        .unwrap();
    let up = a.poll(true).await.unwrap();
    assert_eq!(up.flags.iter().map(|f| f.1).collect::<Vec<_>>(), [2]);

    // An append to the selected folder through it: its EXISTS; and with another session's
    // append and expunge in between, those too.
    let (_, uids) = a
        .append_many("INBOX", vec![(mail("mine", "x"), vec![], None)])
        .await
        .unwrap();
    assert_eq!(uids, [5]);
    let up = a.poll(true).await.unwrap();
    assert_eq!((up.exists, a.uid_of(5)), (Some(5), Some(5)));
    b.poll(true).await.unwrap();
    a.store_flags(&[5], msgstore_flagop_add(), &[Flag::Deleted], None)
        .await
        .unwrap();
    a.expunge(Some(&[5])).await.unwrap();
    b.append_many("INBOX", vec![(mail("theirs", "y"), vec![], None)])
        .await
        .unwrap();
    let up = a.poll(true).await.unwrap();
    assert_eq!(up.vanished, [5]);
    assert_eq!(a.uids(), [1, 2, 3, 4, 6]);
    // To another folder: nothing to announce here, and the view's cache still serves.
    s.create("Other", None).await.unwrap();
    a.append_many("Other", vec![(mail("elsewhere", "z"), vec![], None)])
        .await
        .unwrap();
    let up = a.poll(true).await.unwrap();
    assert!(up.exists.is_none() && up.flags.is_empty());
    assert_eq!(a.fetch_meta(&[6]).await.unwrap().len(), 1);
}

fn msgstore_flagop_add() -> store_client::FlagOp {
    store_client::FlagOp::Add
}

#[tokio::test]
async fn search_primitives() {
    let (_d, c) = setup().await;
    let s = c.session_for("joe").await.unwrap();
    s.append(
        "INBOX",
        mail("Quarterly report", "numbers attached"),
        &[Flag::Seen],
        Some(86_400 * 20_000),
    )
    .await
    .unwrap();
    s.append("INBOX", b"From: =?UTF-8?Q?J=C3=B6rg?= <jorg@example.com>\r\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\nSGFsbG8gV2VsdCwgc2Now7ZuZXIgVGFn\r\n".to_vec(), &[], Some(86_400 * 20_010)).await.unwrap();
    s.append(
        "INBOX",
        mail("big", &"y".repeat(5000)),
        &[Flag::Flagged],
        None,
    )
    .await
    .unwrap();
    let sel = s.select("INBOX", false).await.unwrap();
    let q = |k: SearchKey| {
        let sel = &sel;
        async move { sel.search(&k).await.unwrap() }
    };
    assert_eq!(q(SearchKey::All).await, [1, 2, 3]);
    assert_eq!(q(SearchKey::Flag(Flag::Seen)).await, [1]);
    assert_eq!(q(SearchKey::NotFlag(Flag::Seen)).await, [2, 3]);
    assert_eq!(
        q(SearchKey::Header("subject".into(), "REPORT".into())).await,
        [1]
    );
    assert_eq!(
        q(SearchKey::Header("Subject".into(), "grüße".into())).await,
        [2],
        "RFC 2047 decoded"
    );
    assert_eq!(
        q(SearchKey::Header("From".into(), "jörg".into())).await,
        [2]
    );
    assert_eq!(
        q(SearchKey::Body("schöner".into())).await,
        [2],
        "base64 body decoded"
    );
    assert_eq!(q(SearchKey::Text("numbers".into())).await, [1]);
    assert_eq!(q(SearchKey::Larger(4000)).await, [3]);
    assert_eq!(q(SearchKey::Before(20_005)).await, [1]);
    assert_eq!(q(SearchKey::On(20_010)).await, [2]);
    assert_eq!(
        q(SearchKey::SentOn(20_515)).await,
        [1, 3],
        "Date: 3 Mar 2026"
    );
    assert_eq!(
        q(SearchKey::Or(
            Box::new(SearchKey::Flag(Flag::Flagged)),
            Box::new(SearchKey::Uid(NumberSet::single(1)))
        ))
        .await,
        [1, 3]
    );
    assert_eq!(
        q(SearchKey::Not(Box::new(SearchKey::Seq(NumberSet::range(
            1, 2
        )))))
        .await,
        [3]
    );
    assert_eq!(
        q(SearchKey::And(vec![SearchKey::Recent, SearchKey::New])).await,
        [2, 3]
    );
}

#[tokio::test]
async fn copy_move_quota_and_shared_folders_with_acl() {
    let (_d, c) = setup().await;
    let joe = c.session_for("joe").await.unwrap();
    let bob = c.session_for("bob").await.unwrap();
    joe.create("Team", None).await.unwrap();
    let a = joe
        .append("INBOX", mail("one", "1"), &[Flag::Seen], None)
        .await
        .unwrap();
    let cp = joe.copy("INBOX", &[a.uid], "Team").await.unwrap();
    assert_eq!(cp.map, [(a.uid, 1)]);
    let mv = joe
        .move_messages("INBOX", &[a.uid], "Archive")
        .await
        .unwrap();
    assert_eq!(mv.map.len(), 1);
    assert_eq!(joe.status("INBOX").await.unwrap().messages, 0);
    let q = &joe.quota_roots("INBOX").await.unwrap()[0];
    assert_eq!((q.root.as_str(), q.messages_used), ("user/joe", 2));

    // Not shared yet: bob cannot see it.
    assert!(matches!(
        bob.status("Other Users/joe/Team").await,
        Err(ClientError::NoSuchMailbox(_))
    ));
    assert!(matches!(
        bob.set_acl("Other Users/joe/Team", "bob", "lrswi").await,
        Err(ClientError::NoSuchMailbox(_))
    ));
    joe.set_acl("Team", "bob", "lr").await.unwrap();
    let listed: Vec<String> = bob
        .list("*")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert!(
        listed.contains(&"Other Users/joe/Team".to_string()),
        "{listed:?}"
    );
    assert_eq!(bob.my_rights("Other Users/joe/Team").await.unwrap(), "lr");
    let mut sel = bob.select("Other Users/joe/Team", false).await.unwrap();
    assert!(sel.read_only(), "no s/w rights: read-only");
    assert!(matches!(
        sel.store_flags(&[1], store_client::FlagOp::Add, &[Flag::Flagged], None)
            .await,
        Err(ClientError::PermissionDenied(_))
    ));
    assert!(matches!(
        bob.append("Other Users/joe/Team", mail("x", "y"), &[], None)
            .await,
        Err(ClientError::PermissionDenied(_))
    ));
    assert!(matches!(
        bob.acl("Other Users/joe/Team").await,
        Err(ClientError::PermissionDenied(_))
    ));
    joe.set_acl("Team", "bob", "lrswi").await.unwrap();
    bob.append("Other Users/joe/Team", mail("from bob", "hi"), &[], None)
        .await
        .unwrap();
    assert_eq!(
        joe.acl("Team").await.unwrap(),
        [
            ("joe".to_string(), "lrswipkxtea".to_string()),
            ("bob".to_string(), "lrswi".to_string())
        ]
    );
}

#[tokio::test]
async fn watcher_hears_changes_from_this_process() {
    let (_d, c) = setup().await;
    let s = c.session_for("joe").await.unwrap();
    let mut w = s.watch("INBOX").await.unwrap();
    s.append("INBOX", mail("ping", "x"), &[], None)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(1), w.changed())
        .await
        .expect("notified within a second")
        .unwrap();
}

/// Child process: append one message through its own StoreClient.
#[test]
#[ignore = "run by watcher_hears_changes_from_another_process as a child process"]
fn child_deliver() {
    let Ok(root) = std::env::var("T_ROOT") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = StoreClient::open(&root).await.unwrap();
        let s = c.session_for("joe").await.unwrap();
        s.append("INBOX", mail("from another process", "x"), &[], None)
            .await
            .unwrap();
    });
    println!("DELIVERED");
}

#[tokio::test]
async fn watcher_hears_changes_from_another_process_within_a_second() {
    let (d, c) = setup().await;
    let s = c.session_for("joe").await.unwrap();
    let mut sel = s.select("INBOX", false).await.unwrap();
    let mut w = s.watch("INBOX").await.unwrap();
    let out = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_deliver", "--ignored", "--nocapture"])
        .env("T_ROOT", d.path())
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("DELIVERED"));
    tokio::time::timeout(Duration::from_secs(1), w.changed())
        .await
        .expect("notified within a second")
        .unwrap();
    let up = sel.poll(true).await.unwrap();
    assert_eq!(up.exists, Some(1));
}

/// Child process: set \Flagged on UID `T_UID` of joe's INBOX through its own StoreClient.
#[test]
#[ignore = "run by fetch_meta_from_memory_follows_every_change as a child process"]
fn child_flag() {
    let Ok(root) = std::env::var("T_ROOT") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = StoreClient::open(&root).await.unwrap();
        let s = c.session_for("joe").await.unwrap();
        let uid: u32 = std::env::var("T_UID").unwrap().parse().unwrap();
        let mut sel = s.select("INBOX", false).await.unwrap();
        sel.store_flags(&[uid], msgstore_flagop_add(), &[Flag::Flagged], None)
            .await
            .unwrap();
    });
    println!("FLAGGED");
}

/// A small folder's metadata is answered from the session's memory between changes; every
/// change must still show: this process's at once, another process's within a second.
#[tokio::test]
async fn fetch_meta_from_memory_follows_every_change() {
    let (d, c) = setup().await;
    let s = c.session_for("joe").await.unwrap();
    append_numbered(&s, 3, "x").await;
    let mut a = s.select("INBOX", false).await.unwrap();
    let mut b = s.select("INBOX", false).await.unwrap();
    let metas = a.fetch_meta(&[1, 2, 3]).await.unwrap();
    assert_eq!(metas.len(), 3);
    assert!(metas.iter().all(|m| !m.flags.is_seen()));
    assert_eq!(metas[2].internal_date, 1_700_000_003);

    // Another session of this process, no poll in between: seen by the next fetch.
    b.store_flags(
        &[2],
        msgstore_flagop_add(),
        &[Flag::Seen, Flag::parse("$Later").unwrap()],
        None,
    )
    .await
    .unwrap();
    let m = &a.fetch_meta(&[2]).await.unwrap()[0];
    assert!(m.flags.is_seen());
    assert_eq!(m.flags.keywords().collect::<Vec<_>>(), ["$Later"]);
    // After a poll (the cache brought up to date), the same answer, twice.
    a.poll(true).await.unwrap();
    for _ in 0..2 {
        let m = &a.fetch_meta(&[2]).await.unwrap()[0];
        assert!(m.flags.is_seen());
        assert_eq!(m.flags.keywords().collect::<Vec<_>>(), ["$Later"]);
    }

    // Arrivals and expunges through the cache's incremental update.
    let new = s
        .append(
            "INBOX",
            mail("m4", "x"),
            &[Flag::Draft],
            Some(1_700_000_004),
        )
        .await
        .unwrap()
        .uid;
    b.store_flags(&[1], msgstore_flagop_add(), &[Flag::Deleted], None)
        .await
        .unwrap();
    b.expunge(None).await.unwrap();
    let up = a.poll(true).await.unwrap();
    assert_eq!(up.vanished, [1]);
    assert_eq!(up.exists, Some(3));
    assert_eq!(
        a.recent_count(),
        3,
        "\\Recent claimed for the arrival in the same poll"
    );
    let metas = a.fetch_meta(&[1, 2, 3, new]).await.unwrap();
    assert_eq!(metas.iter().map(|m| m.uid).collect::<Vec<_>>(), [2, 3, new]);
    assert_eq!(metas[2].internal_date, 1_700_000_004);
    assert!(metas[2].size > 0);
    let fresh = s.select("INBOX", true).await.unwrap();
    assert_eq!(fresh.fetch_meta(&[2, 3, new]).await.unwrap(), metas);

    // Another process: seen within a second, without a poll.
    let m = &a.fetch_meta(&[3]).await.unwrap()[0];
    assert!(!m.flags.contains(&Flag::Flagged));
    let out = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_flag", "--ignored", "--nocapture"])
        .env("T_ROOT", d.path())
        .env("T_UID", "3")
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("FLAGGED"));
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        let m = &a.fetch_meta(&[3]).await.unwrap()[0];
        if m.flags.contains(&Flag::Flagged) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "another process's flag change not seen within a second"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
