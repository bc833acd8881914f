//! Every store operation against a real on-disk store in a temporary directory.

mod common;
use common::{msg, name, store};
use msgstore::{flag, AppendRequest, FlagOp, MailboxName, Pattern, StoreError, UserName};

#[test]
fn create_list_rename_delete_with_children() {
    let (_d, s) = store();
    for n in [
        "user/joe/INBOX",
        "user/joe/Work",
        "user/joe/Work/2026",
        "user/joe/Work/2025",
        "user/usr44/INBOX",
        "user/usr440/INBOX",
        "user/usr4/INBOX",
    ] {
        s.create_mailbox(&name(n), None, None).unwrap();
    }
    assert!(matches!(
        s.create_mailbox(&name("user/joe/Work"), None, None),
        Err(StoreError::MailboxExists(_))
    ));
    let listed: Vec<String> = s
        .list(&Pattern::new("user/usr44*"))
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(listed, ["user/usr44/INBOX", "user/usr440/INBOX"]);
    let listed: Vec<String> = s
        .list(&Pattern::new("user/joe/%"))
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(listed, ["user/joe/INBOX", "user/joe/Work"]);

    // A message in a child survives the parent's rename.
    let (_, uids) = s
        .append(&name("user/joe/Work/2026"), vec![msg("a")])
        .unwrap();
    s.rename_mailbox(&name("user/joe/Work"), &name("user/joe/Projects"), None)
        .unwrap();
    let listed: Vec<String> = s
        .list(&Pattern::new("user/joe/*"))
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(
        listed,
        [
            "user/joe/INBOX",
            "user/joe/Projects",
            "user/joe/Projects/2025",
            "user/joe/Projects/2026"
        ]
    );
    let body = s
        .read_message(&name("user/joe/Projects/2026"), uids[0])
        .unwrap();
    assert!(body.starts_with(b"From: Joe"));
    assert!(matches!(
        s.status(&name("user/joe/Work/2026")),
        Err(StoreError::NoSuchMailbox(_))
    ));

    // Deleting the parent keeps the children (IMAP DELETE).
    s.delete_mailbox(&name("user/joe/Projects"), false).unwrap();
    assert!(s.db().get("user/joe/Projects").unwrap().is_none());
    assert_eq!(
        s.status(&name("user/joe/Projects/2026")).unwrap().messages,
        1
    );
    // Recursive delete takes everything.
    s.delete_mailbox(&name("user/joe/Projects/2026"), true)
        .unwrap();
    assert!(matches!(
        s.delete_mailbox(&name("user/joe/Nope"), false),
        Err(StoreError::NoSuchMailbox(_))
    ));
}

#[test]
fn rename_inbox_moves_messages_and_keeps_inbox() {
    let (_d, s) = store();
    let inbox = name("user/joe/INBOX");
    s.create_mailbox(&inbox, None, None).unwrap();
    s.append(&inbox, vec![msg("1"), msg("2")]).unwrap();
    s.rename_mailbox(&inbox, &name("user/joe/Old"), None)
        .unwrap();
    assert_eq!(s.status(&inbox).unwrap().messages, 0);
    assert_eq!(s.status(&name("user/joe/Old")).unwrap().messages, 2);
}

#[test]
fn append_read_status_and_structure() {
    let (_d, s) = store();
    let inbox = name("user/joe/INBOX");
    let e = s.create_mailbox(&inbox, None, None).unwrap();
    let (v, uids) = s
        .append(
            &inbox,
            vec![
                AppendRequest {
                    data: b"Subject: bare\nFrom: a@b.c\n\nline one\nline two\n".to_vec(),
                    flags: flag::SEEN,
                    keywords: vec!["$Forwarded".into()],
                    internal_date: Some(760_000_000),
                },
                msg("second"),
            ],
        )
        .unwrap();
    assert_eq!(v, e.uidvalidity);
    assert_eq!(uids, [1, 2]);
    // Bare LF normalised to CRLF, size is the stored size.
    let raw = s.read_message(&inbox, 1).unwrap();
    assert_eq!(
        raw,
        b"Subject: bare\r\nFrom: a@b.c\r\n\r\nline one\r\nline two\r\n"
    );
    assert_eq!(s.read_message_range(&inbox, 1, 9, 4).unwrap(), b"bare");
    let st = s.status(&inbox).unwrap();
    assert_eq!(
        (st.messages, st.uidnext, st.unseen, st.size),
        (
            2,
            3,
            1,
            raw.len() as u64 + s.read_message(&inbox, 2).unwrap().len() as u64
        )
    );
    let recs = s.with_state(&inbox, |st| st.records(0, 2, "x")).unwrap();
    assert_eq!(recs[0].internal_date, 760_000_000);
    let m = s.with_state(&inbox, |st| Ok(*st.get(1).unwrap())).unwrap();
    assert_eq!(m.flags, flag::SEEN);
    assert_eq!(
        s.with_state(&inbox, |st| Ok(st
            .keyword_names(m.keywords)
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()))
            .unwrap(),
        ["$Forwarded"]
    );
    // Structure was computed at delivery and comes from the cache.
    let structure = s.structure(&inbox, 2).unwrap();
    assert_eq!(structure.envelope.subject.as_deref(), Some(&b"second"[..]));

    assert!(matches!(
        s.append(&inbox, vec![AppendRequest::default()]),
        Err(StoreError::EmptyMessage)
    ));
    assert!(matches!(
        s.append(&name("user/joe/Nope"), vec![msg("x")]),
        Err(StoreError::NoSuchMailbox(_))
    ));
}

#[test]
fn message_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/msg.conf"),
        "local.store.maxmessagesize = 1000\nlocal.store.maxfoldermessages = 3\n",
    )
    .unwrap();
    let s = msgstore::Store::open(dir.path()).unwrap();
    let inbox = name("user/joe/INBOX");
    s.create_mailbox(&inbox, None, None).unwrap();
    let big = AppendRequest {
        data: vec![b'x'; 1001],
        ..Default::default()
    };
    assert!(matches!(
        s.append(&inbox, vec![big]),
        Err(StoreError::MessageTooLarge {
            size: 1001,
            limit: 1000
        })
    ));
    s.append(&inbox, vec![msg("1"), msg("2"), msg("3")])
        .unwrap();
    assert!(matches!(
        s.append(&inbox, vec![msg("4")]),
        Err(StoreError::FolderFull { limit: 3, .. })
    ));
    assert_eq!(s.status(&inbox).unwrap().messages, 3);
}

#[test]
fn flags_keywords_modseq_and_unchangedsince() {
    let (_d, s) = store();
    let inbox = name("user/joe/INBOX");
    s.create_mailbox(&inbox, None, None).unwrap();
    s.append(&inbox, vec![msg("1"), msg("2"), msg("3")])
        .unwrap();
    let m0 = s.status(&inbox).unwrap().highest_modseq;
    let out = s
        .store_flags(
            &inbox,
            &[1, 2],
            FlagOp::Add,
            flag::SEEN | flag::FLAGGED,
            &["Junk".into()],
            None,
        )
        .unwrap();
    assert_eq!(out.changed.len(), 2);
    assert!(out.modseq > m0);
    assert_eq!(s.status(&inbox).unwrap().highest_modseq, out.modseq);
    assert_eq!(s.status(&inbox).unwrap().unseen, 1);
    // UNCHANGEDSINCE older than message 1's modseq: refused for 1, applied for 3.
    let out2 = s
        .store_flags(&inbox, &[1, 3], FlagOp::Add, flag::DELETED, &[], Some(m0))
        .unwrap();
    assert_eq!(out2.modified, [1]);
    assert_eq!(out2.changed.iter().map(|m| m.uid).collect::<Vec<_>>(), [3]);
    // Remove and replace.
    s.store_flags(
        &inbox,
        &[1],
        FlagOp::Remove,
        flag::FLAGGED,
        &["junk".into()],
        None,
    )
    .unwrap();
    let m1 = s.with_state(&inbox, |st| Ok(*st.get(1).unwrap())).unwrap();
    assert_eq!((m1.flags, m1.keywords), (flag::SEEN, 0));
    s.store_flags(&inbox, &[2], FlagOp::Replace, flag::DRAFT, &[], None)
        .unwrap();
    let m2 = s.with_state(&inbox, |st| Ok(*st.get(2).unwrap())).unwrap();
    assert_eq!((m2.flags, m2.keywords), (flag::DRAFT, 0));
    // A no-op store changes nothing and costs no modseq.
    let before = s.status(&inbox).unwrap().highest_modseq;
    let out3 = s
        .store_flags(&inbox, &[2], FlagOp::Add, flag::DRAFT, &[], None)
        .unwrap();
    assert!(out3.changed.is_empty());
    assert_eq!(s.status(&inbox).unwrap().highest_modseq, before);
    // Keywords: 128 per folder, then a clear error.
    let many: Vec<String> = (0..127).map(|i| format!("k{i}")).collect();
    s.store_flags(&inbox, &[3], FlagOp::Add, 0, &many, None)
        .unwrap();
    assert!(matches!(
        s.store_flags(&inbox, &[3], FlagOp::Add, 0, &["one-too-many".into()], None),
        Err(StoreError::TooManyKeywords(_))
    ));
}

#[test]
fn expunge_records_store_exp_and_compaction_keeps_state() {
    let (_d, s) = store();
    let inbox = name("user/joe/INBOX");
    s.create_mailbox(&inbox, None, None).unwrap();
    let reqs: Vec<_> = (0..10).map(|i| msg(&i.to_string())).collect();
    s.append(&inbox, reqs).unwrap();
    s.store_flags(&inbox, &[2, 4, 6], FlagOp::Add, flag::DELETED, &[], None)
        .unwrap();
    s.store_flags(
        &inbox,
        &[7],
        FlagOp::Add,
        flag::SEEN,
        &["$Label1".into()],
        None,
    )
    .unwrap();
    // UID EXPUNGE 1:4 takes only 2 and 4.
    let gone = s.expunge(&inbox, Some(&[1, 2, 3, 4])).unwrap();
    assert_eq!(gone.iter().map(|g| g.uid).collect::<Vec<_>>(), [2, 4]);
    let gone = s.expunge(&inbox, None).unwrap();
    assert_eq!(gone.iter().map(|g| g.uid).collect::<Vec<_>>(), [6]);
    let dir = s.folder_dir(&inbox).unwrap();
    let exp = std::fs::read_to_string(dir.join("store.exp")).unwrap();
    let exp_uids: Vec<&str> = exp.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(exp_uids, ["2", "4", "6"]);
    assert_eq!(s.status(&inbox).unwrap().messages, 7);
    let v = s.status(&inbox).unwrap().uidvalidity;
    s.compact(&inbox).unwrap();
    let st = s.status(&inbox).unwrap();
    assert_eq!((st.messages, st.uidnext, st.uidvalidity), (7, 11, v));
    let m7 = s.with_state(&inbox, |st| Ok(*st.get(7).unwrap())).unwrap();
    assert_eq!(m7.flags, flag::SEEN);
    assert_eq!(s.read_message(&inbox, 8).unwrap(), msg("7").data);
    // Quota usage follows.
    let q = s.quota("user/joe").unwrap();
    assert_eq!(q.messages_used, 7);
}

#[test]
fn copy_and_move_map_uids_and_keep_flags() {
    let (_d, s) = store();
    let (inbox, arch) = (name("user/joe/INBOX"), name("user/joe/Archive"));
    s.create_mailbox(&inbox, None, None).unwrap();
    let av = s
        .create_mailbox(&arch, None, Some("\\Archive"))
        .unwrap()
        .uidvalidity;
    s.append(&inbox, vec![msg("1"), msg("2"), msg("3")])
        .unwrap();
    s.store_flags(
        &inbox,
        &[2],
        FlagOp::Add,
        flag::FLAGGED,
        &["$Work".into()],
        None,
    )
    .unwrap();
    let (v, map) = s.copy_messages(&inbox, &[2, 3, 99], &arch).unwrap();
    assert_eq!(v, av);
    assert_eq!(map, [(2, 1), (3, 2)]);
    let m = s.with_state(&arch, |st| Ok(*st.get(1).unwrap())).unwrap();
    assert_eq!(m.flags, flag::FLAGGED);
    assert_eq!(
        s.with_state(&arch, |st| Ok(st.keyword_names(m.keywords).len()))
            .unwrap(),
        1
    );
    let moved = s.move_messages(&inbox, &[1], &arch).unwrap();
    assert_eq!(moved.map, [(1, 3)]);
    assert_eq!(moved.expunged.len(), 1);
    assert_eq!(s.status(&inbox).unwrap().messages, 2);
    assert_eq!(s.read_message(&arch, 3).unwrap(), msg("1").data);
    assert_eq!(s.quota("user/joe").unwrap().messages_used, 5);
}

#[test]
fn quota_limits_are_enforced() {
    let (_d, s) = store();
    let inbox = name("user/joe/INBOX");
    s.create_mailbox(&inbox, None, None).unwrap();
    s.set_quota("user/joe", Some(500), Some(2)).unwrap();
    s.append(&inbox, vec![msg("1")]).unwrap();
    assert!(matches!(
        s.append(
            &inbox,
            vec![AppendRequest {
                data: vec![b'x'; 400],
                ..Default::default()
            }]
        ),
        Err(StoreError::OverQuota {
            what: "storage",
            ..
        })
    ));
    s.append(&inbox, vec![msg("2")]).unwrap();
    assert!(matches!(
        s.append(&inbox, vec![msg("3")]),
        Err(StoreError::OverQuota {
            what: "messages",
            ..
        })
    ));
    let q = s.quota("user/joe").unwrap();
    assert_eq!(
        (q.storage_limit, q.message_limit, q.messages_used),
        (Some(500), Some(2), 2)
    );
}

#[test]
fn subscriptions_acl_and_rights_index() {
    let (_d, s) = store();
    let work = name("user/joe/Work");
    s.create_mailbox(&work, None, None).unwrap();
    let joe = UserName::new("joe").unwrap();
    s.subscribe(&joe, &work).unwrap();
    s.subscribe(&joe, &work).unwrap();
    assert_eq!(s.subscriptions(&joe).unwrap(), ["user/joe/Work"]);
    assert!(s.unsubscribe(&joe, &work).unwrap());
    assert!(s.subscriptions(&joe).unwrap().is_empty());

    assert_eq!(s.rights(&work, "joe").unwrap().as_str(), "lrswipkxtea");
    assert_eq!(s.rights(&work, "bob").unwrap().as_str(), "");
    s.set_acl(&work, "bob", "lrs").unwrap();
    s.set_acl(&work, "anyone", "l").unwrap();
    assert_eq!(s.rights(&work, "bob").unwrap().as_str(), "lrs");
    assert_eq!(s.rights(&work, "eve").unwrap().as_str(), "l");
    assert_eq!(s.shared_with("bob").unwrap(), ["user/joe/Work"]);
    // Obsolete rights expand (RFC 4314 2.1.1); bad letters are refused.
    s.set_acl(&work, "bob", "lrd").unwrap();
    assert_eq!(s.rights(&work, "bob").unwrap().as_str(), "lrxte");
    assert!(s.set_acl(&work, "bob", "lrZ").is_err());
    s.set_acl(&work, "bob", "").unwrap();
    s.set_acl(&work, "anyone", "").unwrap();
    assert!(s.shared_with("bob").unwrap().is_empty());
    // Redundant copy in the folder directory.
    let meta = std::fs::read_to_string(s.folder_dir(&work).unwrap().join("store.meta")).unwrap();
    assert!(meta.contains("uidvalidity="));
    // Rebuilding the rights index from the ACLs.
    s.set_acl(&work, "carol", "lr").unwrap();
    s.db().rebuild_rights_index().unwrap();
    assert_eq!(s.shared_with("carol").unwrap(), ["user/joe/Work"]);
}

#[test]
fn uidvalidity_differs_when_a_name_is_reused() {
    let (_d, s) = store();
    let n = name("user/joe/Tmp");
    let a = s.create_mailbox(&n, None, None).unwrap().uidvalidity;
    s.delete_mailbox(&n, false).unwrap();
    let b = s.create_mailbox(&n, None, None).unwrap().uidvalidity;
    assert_ne!(a, b);
}

#[test]
fn provisioning_creates_inbox_and_special_use_folders() {
    let (_d, s) = store();
    let made = s.provision_user(&UserName::new("joe").unwrap()).unwrap();
    assert_eq!(made.len(), 6);
    assert!(s
        .provision_user(&UserName::new("joe").unwrap())
        .unwrap()
        .is_empty());
    let e = s.db().get("user/joe/Sent").unwrap().unwrap();
    assert_eq!(e.special_use.as_deref(), Some("\\Sent"));
}

/// A client's first login opens several connections at once, each provisioning the user:
/// every one succeeds, each folder is made once, and its files agree with its entry.
#[test]
fn concurrent_first_provisioning_makes_each_folder_once() {
    for round in 0..5 {
        let (_d, s) = store();
        let user = UserName::new(&format!("u{round}")).unwrap();
        let made: Vec<usize> = std::thread::scope(|sc| {
            let workers: Vec<_> = (0..8)
                .map(|_| sc.spawn(|| s.provision_user(&user).expect("provision").len()))
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        assert_eq!(made.iter().sum::<usize>(), 6, "{made:?}");
        for folder in ["INBOX", "Drafts", "Sent", "Trash", "Junk", "Archive"] {
            let n = name(&format!("user/{user}/{folder}"));
            let entry = s.entry(&n).unwrap();
            assert_eq!(s.status(&n).unwrap().uidvalidity, entry.uidvalidity, "{n}");
        }
    }
}

#[test]
fn bad_names_are_refused_and_nothing_escapes_the_data_dir() {
    for bad in [
        "user/joe/../../etc",
        "user/joe/a//b",
        "user/joe/\u{1}x",
        "../x",
        "user/joe/.",
        "user/jo e/INBOX",
    ] {
        assert!(MailboxName::parse(bad).is_err(), "{bad:?}");
    }
    assert!(UserName::new("../joe").is_err());
    assert!(UserName::new("").is_err());
}

#[test]
fn damaged_cache_is_reported_and_served_from_the_message() {
    let (_d, s) = store();
    let inbox = name("user/joe/INBOX");
    s.create_mailbox(&inbox, None, None).unwrap();
    s.append(&inbox, vec![msg("cached")]).unwrap();
    let cache = s.folder_dir(&inbox).unwrap().join("store.cache");
    let mut bytes = std::fs::read(&cache).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff;
    std::fs::write(&cache, bytes).unwrap();
    let st = s.structure(&inbox, 1).unwrap();
    assert_eq!(st.envelope.subject.as_deref(), Some(&b"cached"[..]));
}

#[test]
fn torn_index_tail_is_repaired_on_next_write() {
    let (_d, s) = store();
    let inbox = name("user/joe/INBOX");
    s.create_mailbox(&inbox, None, None).unwrap();
    s.append(&inbox, vec![msg("1"), msg("2")]).unwrap();
    let idx = s.folder_dir(&inbox).unwrap().join("store.idx");
    // A crash mid-record: 30 stray bytes after the last record.
    let mut f = std::fs::OpenOptions::new().append(true).open(&idx).unwrap();
    std::io::Write::write_all(&mut f, &[0xAB; 30]).unwrap();
    drop(f);
    let (_, uids) = s.append(&inbox, vec![msg("3")]).unwrap();
    assert_eq!(uids, [3]);
    let st = s.status(&inbox).unwrap();
    assert_eq!(st.messages, 3);
    assert_eq!(s.read_message(&inbox, 3).unwrap(), msg("3").data);
}

#[test]
fn damaged_header_is_reported_with_the_seed_words() {
    let (_d, s) = store();
    let inbox = name("user/joe/INBOX");
    s.create_mailbox(&inbox, None, None).unwrap();
    let idx = s.folder_dir(&inbox).unwrap().join("store.idx");
    let mut b = std::fs::read(&idx).unwrap();
    b[0] = b'X';
    std::fs::write(&idx, b).unwrap();
    let e = s.status(&inbox).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Mailbox corrupted, missing fixed headers: user/joe/INBOX"
    );
}

#[test]
fn partition_added_to_msg_conf_is_usable_without_restart() {
    let (d, s) = store();
    let extra = d.path().join("disk2");
    assert!(matches!(
        s.partition_path("second"),
        Err(StoreError::NoSuchPartition(_))
    ));
    std::fs::create_dir_all(d.path().join("config")).unwrap();
    std::fs::write(
        d.path().join("config/msg.conf"),
        format!("store.partition.second.path = {}\n", extra.display()),
    )
    .unwrap();
    let e = s
        .create_mailbox(&name("user/joe/Big"), Some("second"), None)
        .unwrap();
    assert_eq!(e.partition, "second");
    assert!(s
        .folder_dir(&name("user/joe/Big"))
        .unwrap()
        .starts_with(&extra));
    // Moving a folder to another partition keeps its messages.
    s.append(&name("user/joe/Big"), vec![msg("x")]).unwrap();
    s.rename_mailbox(
        &name("user/joe/Big"),
        &name("user/joe/Big"),
        Some("primary"),
    )
    .unwrap();
    assert_eq!(
        s.db().get("user/joe/Big").unwrap().unwrap().partition,
        "primary"
    );
    assert_eq!(
        s.read_message(&name("user/joe/Big"), 1).unwrap(),
        msg("x").data
    );
}

/// The flag journal alone describes every message's read state: what makes a lost store.idx
/// recoverable without losing flags (Cyrus loses them).
#[test]
fn flag_journal_replays_to_the_index_state_even_after_compaction() {
    let (_d, s) = store();
    let inbox = name("user/joe/INBOX");
    s.create_mailbox(&inbox, None, None).unwrap();
    let reqs: Vec<_> = (0..20).map(|i| msg(&i.to_string())).collect();
    s.append(&inbox, reqs).unwrap();
    s.append(
        &inbox,
        vec![AppendRequest {
            flags: flag::SEEN | flag::DRAFT,
            keywords: vec!["$MDNSent".into()],
            ..msg("flagged")
        }],
    )
    .unwrap();
    s.store_flags(
        &inbox,
        &[1, 2, 3],
        FlagOp::Add,
        flag::SEEN,
        &["$Label1".into()],
        None,
    )
    .unwrap();
    s.store_flags(&inbox, &[2], FlagOp::Replace, flag::ANSWERED, &[], None)
        .unwrap();
    s.store_flags(&inbox, &[4, 5], FlagOp::Add, flag::DELETED, &[], None)
        .unwrap();
    s.expunge(&inbox, None).unwrap();
    let dir = s.folder_dir(&inbox).unwrap();
    let check = |s: &msgstore::Store| {
        let replayed =
            msgstore::journal::replay(&std::fs::read(dir.join("store.jnl")).unwrap()).unwrap();
        let st = s.status(&inbox).unwrap();
        assert_eq!(replayed.uidvalidity, st.uidvalidity);
        let live = s
            .with_state(&inbox, |st| Ok(st.live().copied().collect::<Vec<_>>()))
            .unwrap();
        let names = s.with_state(&inbox, |st| Ok(st.keywords.clone())).unwrap();
        for m in &live {
            let (flags, kw) = replayed
                .messages
                .get(&m.uid)
                .map(|r| (r.0, r.1))
                .unwrap_or((0, 0));
            assert_eq!(flags, m.flags, "uid {}", m.uid);
            let want: Vec<&str> = (0..128)
                .filter(|i| m.keywords & (1u128 << i) != 0)
                .map(|i| names[i].as_str())
                .collect();
            let got: Vec<&str> = (0..128)
                .filter(|i| kw & (1u128 << i) != 0)
                .map(|i| replayed.keywords[i].as_str())
                .collect();
            assert_eq!(got, want, "uid {}", m.uid);
        }
        for uid in [4, 5] {
            assert!(replayed
                .messages
                .get(&uid)
                .is_none_or(|r| r.0 & flag::EXPUNGED != 0));
        }
    };
    check(&s);
    s.compact(&inbox).unwrap();
    check(&s);
}

/// What a power loss can leave behind now that a message's data is flushed in the same
/// group-commit round as its index record: records of unacknowledged appends on disk without
/// their data (a lost directory entry, an unflushed file) or without the record the header
/// counts. After a restart (the header names another boot), those records are checked
/// against their files' content CRC and dropped; acknowledged messages and the index stay.
#[test]
fn records_whose_data_a_power_loss_took_are_dropped_after_a_restart() {
    use msgstore::index::{self, Header};
    use std::os::unix::fs::FileExt;
    let (d, s) = store();
    let inbox = name("user/pl/INBOX");
    s.create_mailbox(&inbox, None, None).unwrap();
    let subjects: Vec<String> = (1..=9).map(|i| format!("m{i}")).collect();
    for subject in &subjects {
        s.append(&inbox, vec![msg(subject)]).unwrap();
    }
    let dir = s.folder_dir(&inbox).unwrap();
    // No message log left (its checkpoint flushed the files): what follows is what a power
    // loss can do to appends whose log entries were not written either.
    msgstore::wal::checkpoint_now();
    assert!(msgstore::wal::segments_in(&dir).unwrap().is_empty());
    drop(s);
    let file = |uid: u32| dir.join(format!("{:x}/{uid}.msg", uid >> 12));
    let idx_path = dir.join("store.idx");
    let idx = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&idx_path)
        .unwrap();
    let mut hb = [0u8; index::HEADER_SIZE];
    idx.read_exact_at(&mut hb, 0).unwrap();
    let mut h = Header::decode(&hb, "x").unwrap();
    assert_eq!((h.record_count, h.uidnext), (9, 10));
    assert_ne!(h.boot_id, [0u8; 16], "writers record their boot");
    // Messages 1-5 were acknowledged: the durable mark covers them. Of 6-9, in flight:
    // 6 lost its directory entry, 7 its data, 8 survived whole, 9 lost its index record.
    h.durable_uid = 6;
    h.boot_id = [0x5a; 16];
    idx.write_all_at(&h.encode(), 0).unwrap();
    idx.set_len(index::record_offset(8)).unwrap();
    std::fs::remove_file(file(6)).unwrap();
    std::fs::File::create(file(7)).unwrap();
    drop(idx);

    let s = msgstore::Store::open(d.path()).unwrap();
    // The first look is a read: it takes the exclusive lock for the check.
    let st = s.status(&inbox).unwrap();
    assert_eq!(st.messages, 6);
    assert_eq!(st.uidnext, 10, "UIDs of dropped records are never reused");
    let uids: Vec<u32> = s
        .with_state(&inbox, |st| Ok(st.live().map(|m| m.uid).collect()))
        .unwrap();
    assert_eq!(uids, [1, 2, 3, 4, 5, 8]);
    for &uid in &uids {
        let body = s.read_message(&inbox, uid).unwrap();
        let want = format!("Subject: m{uid}\r\n");
        assert!(
            body.windows(want.len()).any(|w| w == want.as_bytes()),
            "uid {uid}"
        );
    }
    assert!(
        !file(7).exists(),
        "the empty file of a dropped record is removed"
    );
    let (_, new) = s.append(&inbox, vec![msg("after")]).unwrap();
    assert_eq!(new, [10]);
    drop(s);
    let hb = std::fs::read(&idx_path).unwrap();
    let h = Header::decode(&hb[..index::HEADER_SIZE], "x").unwrap();
    assert_ne!(h.boot_id, [0x5a; 16], "checked once, then this boot's");
    assert_eq!(h.record_count, 7);
    assert_eq!(h.exists, 7);
    assert!(h.durable_uid >= 10);
    // A header of this boot is trusted as it is: nothing is read back.
    let s = msgstore::Store::open(d.path()).unwrap();
    assert_eq!(s.status(&inbox).unwrap().messages, 7);
}

/// Appends whose messages went to the message log flush neither their files nor the index:
/// the log holds both. What a power loss may then leave (an index header from before them,
/// records zeroed or torn in the middle, message files missing or cut short) is repaired
/// from the log at the first look after the restart: every acknowledged message is back with
/// its flags, and UIDs that appends in flight may have shown are never handed out again.
#[test]
fn acknowledged_appends_come_back_from_the_message_log_after_a_power_loss() {
    use msgstore::index::{self, Header};
    use std::os::unix::fs::FileExt;
    let (d, s) = store();
    let inbox = name("user/wal/INBOX");
    s.create_mailbox(&inbox, None, None).unwrap();
    let dir = s.folder_dir(&inbox).unwrap();
    let idx_path = dir.join("store.idx");
    // No checkpoint (another test's, or the timer's) may flush anything while the picture
    // of the disk is taken: it would make the simulated loss below impossible.
    let hold = msgstore::wal::hold_checkpoints();
    let append = |i: u32| {
        let mut m = msg(&format!("m{i}"));
        if i.is_multiple_of(3) {
            m.flags = flag::SEEN | flag::FLAGGED;
        }
        s.append(&inbox, vec![m]).unwrap().1[0]
    };
    for i in 1..=5 {
        assert_eq!(append(i), i);
    }
    // The index as the last flush left it.
    let flushed = std::fs::read(&idx_path).unwrap();
    for i in 6..=20 {
        assert_eq!(append(i), i);
    }
    // The disk as a power loss right now could leave it: the log segments (flushed by each
    // append's round) survive; a checkpoint of this process may not take them away meanwhile.
    let segments: Vec<(std::path::PathBuf, Vec<u8>)> = msgstore::wal::segments_in(&dir)
        .unwrap()
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    assert!(!segments.is_empty(), "the appends went through the log");
    let now = std::fs::read(&idx_path).unwrap();
    let file = |uid: u32| dir.join(format!("{:x}/{uid}.msg", uid >> 12));
    let files: Vec<Vec<u8>> = (1..=20).map(|u| std::fs::read(file(u)).unwrap()).collect();
    drop(hold);
    drop(s);
    // The picture goes back on the disk below, whatever the dropped store's checkpoint did.
    for (u, b) in (1..=20).zip(&files) {
        std::fs::write(file(u), b).unwrap();
    }
    // Header of the last flush (5 records, another boot); records 6 and 7 made it, 8-20 are
    // zeros (their pages never reached the disk), and the file is as long as it got.
    let mut h = Header::decode(&flushed[..index::HEADER_SIZE], "x").unwrap();
    assert_eq!(h.record_count, 5);
    h.boot_id = [0x5a; 16];
    let mut lost = now.clone();
    lost[..index::HEADER_SIZE].copy_from_slice(&h.encode());
    let from = index::record_offset(7) as usize;
    lost[from..].iter_mut().for_each(|b| *b = 0);
    std::fs::write(&idx_path, &lost).unwrap();
    std::fs::remove_file(file(10)).unwrap();
    std::fs::remove_file(file(19)).unwrap();
    let cut = std::fs::OpenOptions::new()
        .write(true)
        .open(file(12))
        .unwrap();
    cut.set_len(10).unwrap();
    drop(cut);
    for (p, b) in &segments {
        std::fs::write(p, b).unwrap();
    }

    let s = msgstore::Store::open(d.path()).unwrap();
    let st = s.status(&inbox).unwrap();
    assert_eq!(st.messages, 20);
    assert!(st.uidnext > 20 + 1000, "uidnext {}", st.uidnext);
    let state: Vec<(u32, u32)> = s
        .with_state(&inbox, |st| {
            Ok(st.live().map(|m| (m.uid, m.flags)).collect())
        })
        .unwrap();
    for (i, (uid, flags)) in state.iter().enumerate() {
        assert_eq!(*uid, i as u32 + 1);
        let want = if uid.is_multiple_of(3) {
            flag::SEEN | flag::FLAGGED
        } else {
            0
        };
        assert_eq!(flags & (flag::SEEN | flag::FLAGGED), want, "uid {uid}");
        let body = s.read_message(&inbox, *uid).unwrap();
        assert_eq!(body, msg(&format!("m{uid}")).data, "uid {uid}");
    }
    assert!(
        msgstore::wal::segments_in(&dir).unwrap().is_empty(),
        "segments are removed once replayed"
    );
    let (_, new) = s.append(&inbox, vec![msg("after")]).unwrap();
    assert!(new[0] > 1020);
    drop(s);
    // Replayed once: the next start trusts the header it wrote.
    let s = msgstore::Store::open(d.path()).unwrap();
    assert_eq!(s.status(&inbox).unwrap().messages, 21);
    let idx = std::fs::OpenOptions::new()
        .read(true)
        .open(&idx_path)
        .unwrap();
    let mut hb = [0u8; index::HEADER_SIZE];
    idx.read_exact_at(&mut hb, 0).unwrap();
    assert_ne!(Header::decode(&hb, "x").unwrap().boot_id, [0x5a; 16]);
}

/// The checkpoint flushes the filesystem once and removes the sealed segments, and with them
/// segments nobody holds any more (their process died).
#[test]
fn a_checkpoint_removes_the_message_log_and_orphaned_segments() {
    let (_d, s) = store();
    let inbox = name("user/ckpt/INBOX");
    s.create_mailbox(&inbox, None, None).unwrap();
    let dir = s.folder_dir(&inbox).unwrap();
    let orphan = dir.join(format!("{}4000000000.0", msgstore::wal::PREFIX));
    std::fs::write(&orphan, b"MSWAL\x00\x01\x00").unwrap();
    for i in 0..3 {
        s.append(&inbox, vec![msg(&format!("c{i}"))]).unwrap();
    }
    msgstore::wal::checkpoint_now();
    assert_eq!(
        msgstore::wal::segments_in(&dir).unwrap(),
        Vec::<std::path::PathBuf>::new()
    );
    for uid in 1..=3 {
        assert_eq!(
            s.read_message(&inbox, uid).unwrap(),
            msg(&format!("c{}", uid - 1)).data
        );
    }
    // Appending again starts a new segment (no other test's checkpoint meanwhile).
    let _hold = msgstore::wal::hold_checkpoints();
    s.append(&inbox, vec![msg("c3")]).unwrap();
    assert_eq!(msgstore::wal::segments_in(&dir).unwrap().len(), 1);
}

/// Concurrent appends are combined into one write: one of them failing (the folder is full)
/// answers that caller alone, and the others are appended.
#[test]
fn combined_appends_fail_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/msg.conf"),
        "local.store.maxfoldermessages = 50\n",
    )
    .unwrap();
    let s = msgstore::Store::open(dir.path()).unwrap();
    let inbox = name("user/comb/INBOX");
    s.create_mailbox(&inbox, None, None).unwrap();
    let results: Vec<Result<u32, String>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..16)
            .map(|t| {
                let (s, inbox) = (&s, &inbox);
                sc.spawn(move || {
                    (0..5)
                        .map(|i| match s.append(inbox, vec![msg(&format!("t{t}i{i}"))]) {
                            Ok((_, uids)) => Ok(uids[0]),
                            Err(StoreError::FolderFull { limit: 50, .. }) => Err("full".into()),
                            Err(e) => Err(e.to_string()),
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut ok: Vec<u32> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    ok.sort();
    assert_eq!(ok, (1..=50).collect::<Vec<u32>>());
    assert!(results
        .iter()
        .all(|r| r.as_ref().is_ok() || r.as_ref().err().map(String::as_str) == Some("full")));
    assert_eq!(s.status(&inbox).unwrap().messages, 50);
}

/// Writers flush their own message files outside the group-commit round: once they are all
/// answered, the durable mark must have caught up with every one of them (a mark left
/// behind would make the first start after a reboot re-check messages for nothing).
#[test]
fn durable_mark_covers_every_acknowledged_append_of_concurrent_writers() {
    use msgstore::index::{self, Header};
    let (_d, s) = store();
    let inbox = name("user/gc/INBOX");
    s.create_mailbox(&inbox, None, None).unwrap();
    std::thread::scope(|sc| {
        for t in 0..8 {
            let (s, inbox) = (&s, &inbox);
            sc.spawn(move || {
                for i in 0..40 {
                    s.append(inbox, vec![msg(&format!("t{t} m{i}"))]).unwrap();
                }
            });
        }
    });
    // The mark reaches the header with the next write.
    let (_, last) = s.append(&inbox, vec![msg("last")]).unwrap();
    assert_eq!(last, [321]);
    let idx = s.folder_dir(&inbox).unwrap().join("store.idx");
    let hb = std::fs::read(idx).unwrap();
    let h = Header::decode(&hb[..index::HEADER_SIZE], "x").unwrap();
    assert_eq!(h.exists, 321);
    assert!(h.durable_uid >= 321, "durable mark {}", h.durable_uid);
}

/// A folder this process has open is found again without the mailbox database, and still
/// follows what another process does to it: deleted, recreated under the same name,
/// renamed away.
#[test]
fn an_open_folder_follows_deletion_recreation_and_rename_by_another_process() {
    let (d, s) = store();
    let other = msgstore::Store::open(d.path()).unwrap();
    let inbox = name("user/fc/INBOX");
    s.create_mailbox(&inbox, None, None).unwrap();
    s.append(&inbox, vec![msg("one")]).unwrap();
    let first = s.status(&inbox).unwrap();
    assert_eq!(first.messages, 1);

    other.delete_mailbox(&inbox, false).unwrap();
    assert!(matches!(
        s.status(&inbox),
        Err(StoreError::NoSuchMailbox(_))
    ));

    other.create_mailbox(&inbox, None, None).unwrap();
    let second = s.status(&inbox).unwrap();
    assert_eq!(second.messages, 0);
    assert_ne!(second.uidvalidity, first.uidvalidity);
    let (uidvalidity, _) = s.append(&inbox, vec![msg("two")]).unwrap();
    assert_eq!(uidvalidity, second.uidvalidity);

    let moved = name("user/fc/Moved");
    other.rename_mailbox(&inbox, &moved, None).unwrap();
    // Renaming INBOX leaves an empty INBOX behind (RFC 3501 6.3.5).
    assert_eq!(s.status(&inbox).unwrap().messages, 0);
    assert_eq!(s.status(&moved).unwrap().messages, 1);
    let work = name("user/fc/Work");
    s.create_mailbox(&work, None, None).unwrap();
    s.status(&work).unwrap();
    other
        .rename_mailbox(&work, &name("user/fc/Play"), None)
        .unwrap();
    assert!(matches!(s.status(&work), Err(StoreError::NoSuchMailbox(_))));
}

/// Usage from concurrent appends is deferred to the last append in flight: once they are
/// all answered, another process reads the whole of it from the database. A limit set by
/// another process applies to the very next append of a folder open here.
#[test]
fn usage_of_concurrent_appends_reaches_the_database_and_limits_set_elsewhere_apply() {
    let (d, s) = store();
    let other = msgstore::Store::open(d.path()).unwrap();
    let inbox = name("user/qc/INBOX");
    s.create_mailbox(&inbox, None, None).unwrap();
    s.append(&inbox, vec![msg("first")]).unwrap();
    std::thread::scope(|sc| {
        for t in 0..8 {
            let (s, inbox) = (&s, &inbox);
            sc.spawn(move || {
                for i in 0..20 {
                    s.append(inbox, vec![msg(&format!("t{t}m{i}"))]).unwrap();
                }
            });
        }
    });
    let status = s.status(&inbox).unwrap();
    assert_eq!(status.messages, 161);
    let q = other.quota("user/qc").unwrap();
    assert_eq!((q.messages_used, q.storage_used), (161, status.size));

    other.set_quota("user/qc", None, Some(161)).unwrap();
    assert!(matches!(
        s.append(&inbox, vec![msg("over")]),
        Err(StoreError::OverQuota {
            what: "messages",
            ..
        })
    ));
    // The failed append left nothing pending or counted.
    assert_eq!(other.quota("user/qc").unwrap().messages_used, 161);
}

/// `local.store.fsync`: by default (optimized) a flag change and an expunge are answered
/// before their commit round and flushed by the next one (an append's); with `always`
/// every write waits for its round. Appends wait in both.
#[test]
fn fsync_optimized_defers_flag_and_expunge_flushes_to_the_next_round() {
    for always in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        if always {
            std::fs::create_dir_all(dir.path().join("config")).expect("mkdir");
            std::fs::write(
                dir.path().join("config/msg.conf"),
                "local.store.fsync = always\n",
            )
            .expect("write msg.conf");
        }
        let s = msgstore::Store::open(dir.path()).expect("open store");
        let inbox = name("user/joe/INBOX");
        s.create_mailbox(&inbox, None, None).unwrap();
        let (_, uids) = s.append(&inbox, vec![msg("a"), msg("b")]).unwrap();
        assert_eq!(
            s.unflushed_writes(&inbox).unwrap(),
            0,
            "appends are durable"
        );
        s.store_flags(&inbox, &uids[..1], FlagOp::Add, flag::DELETED, &[], None)
            .unwrap();
        s.expunge(&inbox, None).unwrap();
        let deferred = s.unflushed_writes(&inbox).unwrap();
        assert_eq!(deferred, if always { 0 } else { 2 }, "always = {always}");
        // Whatever is deferred is seen at once, by this store and by another one.
        let other = msgstore::Store::open(dir.path()).expect("second store");
        assert_eq!(other.status(&inbox).unwrap().messages, 1);
        s.append(&inbox, vec![msg("c")]).unwrap();
        assert_eq!(
            s.unflushed_writes(&inbox).unwrap(),
            0,
            "the append's round took them"
        );
    }
}
