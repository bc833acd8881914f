//! JMAP Email and Thread ids are the store's object ids (RFC 8474 EMAILID/THREADID): the
//! real `mshttpd` binary on an ephemeral port, driven with raw JMAP over curl, while this
//! process changes the same store through store-client as another process (imapd, lmtpd)
//! would. An Email keeps its id across Email/set moves and a MOVE made elsewhere, a copy is
//! one Email in two mailboxes, a reply chain is one Thread.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use store_client::{EmailId, Flag, StoreClient, ThreadId};

const USING: &[&str] = &["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"];

const ROOT: &str = "From: Alice <alice@example.com>\r\nTo: joe@example.com\r\n\
Subject: Lunch\r\nMessage-ID: <root@example.com>\r\n\r\nShall we have lunch?\r\n";
const REPLY: &str = "From: Joe <joe@example.com>\r\nTo: alice@example.com\r\n\
Subject: Re: Lunch\r\nMessage-ID: <r1@example.com>\r\nIn-Reply-To: <root@example.com>\r\n\
References: <root@example.com>\r\n\r\nYes, at noon.\r\n";
const REPLY2: &str = "From: Alice <alice@example.com>\r\nTo: joe@example.com\r\n\
Subject: Re: Re: Lunch\r\nMessage-ID: <r2@example.com>\r\nIn-Reply-To: <r1@example.com>\r\n\
References: <root@example.com> <r1@example.com>\r\n\r\nSee you.\r\n";
const OTHER: &str = "From: Bob <bob@example.com>\r\nTo: joe@example.com\r\n\
Subject: Lunch menu\r\nMessage-ID: <menu@example.com>\r\n\r\nSoup.\r\n";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

struct Server {
    _proc: testkit::Spawned,
    addr: SocketAddr,
}

impl Server {
    fn start(root: &Path) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mshttpd"));
        cmd.arg("--root")
            .arg(root)
            .args(["--listen", "127.0.0.1:0"]);
        let proc = testkit::Spawned::start(cmd, 1);
        Server {
            addr: proc.addr(0),
            _proc: proc,
        }
    }

    /// One JMAP request as joe; the method responses.
    fn api(&self, calls: Value) -> Vec<Value> {
        let body = json!({"using": USING, "methodCalls": calls}).to_string();
        let out = Command::new("curl")
            .args(["-s", "--max-time", "30", "-u", "joe:pw", "-H"])
            .arg("Content-Type: application/json")
            .arg("--data-binary")
            .arg(&body)
            .arg(format!("http://{}/jmap/api", self.addr))
            .output()
            .expect("run curl (Debian package curl)");
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
        v["methodResponses"]
            .as_array()
            .unwrap_or_else(|| panic!("no methodResponses: {v}"))
            .clone()
    }

    /// One method call; its arguments, after checking it did not fail.
    fn call(&self, name: &str, args: Value) -> Value {
        let mut a = args;
        a["accountId"] = json!("joe");
        let r = self.api(json!([[name, a, "0"]]));
        assert_eq!(r[0][0], name, "{name} failed: {}", r[0]);
        r[0][1].clone()
    }

    fn error(&self, name: &str, args: Value) -> String {
        let r = self.api(json!([[name, args, "0"]]));
        assert_eq!(r[0][0], "error", "{name} should fail: {}", r[0]);
        r[0][1]["type"].as_str().unwrap_or_default().to_owned()
    }

    fn get(&self, id: &str) -> Value {
        let g = self.call(
            "Email/get",
            json!({"ids": [id], "properties": ["mailboxIds", "keywords", "threadId", "subject"]}),
        );
        assert_eq!(g["notFound"], json!([]), "{g}");
        g["list"][0].clone()
    }
}

fn mailbox_ids(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> = v["mailboxIds"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    ids.sort();
    ids
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// UIDs of a folder's live messages, as another process sees them.
fn uids(store: &StoreClient, folder: &str) -> Vec<u32> {
    rt().block_on(async {
        let s = store.session_for("joe").await.expect("session");
        let snap = s.folder_snapshot(folder).await.expect("snapshot");
        snap.messages
            .iter()
            .filter(|m| !m.expunged)
            .map(|m| m.uid)
            .collect()
    })
}

#[test]
fn email_and_thread_ids_are_content_and_conversation_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir_all(root.join("config")).expect("config");
    testkit::add_users(root, &["joe"]);
    let store = rt().block_on(StoreClient::open(root)).expect("store");
    rt().block_on(async {
        let s = store.session_for("joe").await.expect("session");
        for (i, m) in [ROOT, REPLY, REPLY2, OTHER].iter().enumerate() {
            let date = 1_790_000_000 + 3600 * i as i64;
            s.append("INBOX", m.as_bytes().to_vec(), &[], Some(date))
                .await
                .expect("append");
        }
    });
    let server = Server::start(root);

    let boxes = server.call("Mailbox/get", json!({"properties": ["name"]}));
    let mbox: HashMap<String, String> = boxes["list"]
        .as_array()
        .expect("mailboxes")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or_default().to_owned(),
                m["id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let (inbox, archive, trash) = (&mbox["INBOX"], &mbox["Archive"], &mbox["Trash"]);

    // The Email id is the content digest: what any process computes from the bytes.
    let id = |m: &str| EmailId::of_message(m.as_bytes()).to_string();
    let (root_id, reply_id, reply2_id, other_id) = (id(ROOT), id(REPLY), id(REPLY2), id(OTHER));
    let q = server.call("Email/query", json!({}));
    let q0 = q["queryState"].clone();
    assert_eq!(
        sorted(strings(&q["ids"])),
        sorted(vec![
            root_id.clone(),
            reply_id.clone(),
            reply2_id.clone(),
            other_id.clone()
        ])
    );
    for i in strings(&q["ids"]) {
        assert!(
            i.len() == 25 && i.starts_with('M'),
            "RFC 8474 objectid: {i}"
        );
    }

    // A reply chain is one Thread, named by its root's Message-ID, its Emails by date.
    let chain = ThreadId::of_root(b"<root@example.com>").to_string();
    for i in [&root_id, &reply_id, &reply2_id] {
        assert_eq!(server.get(i)["threadId"], json!(chain));
    }
    let other_thread = server.get(&other_id)["threadId"].clone();
    assert_ne!(
        other_thread,
        json!(chain),
        "same subject, other conversation"
    );
    let t = server.call(
        "Thread/get",
        json!({"ids": [chain, "T000000000000000000000000", "x"]}),
    );
    assert_eq!(
        t["list"][0]["emailIds"],
        json!([root_id, reply_id, reply2_id])
    );
    assert_eq!(t["notFound"], json!(["T000000000000000000000000", "x"]));
    let collapsed = server.call("Email/query", json!({"collapseThreads": true}));
    assert_eq!(strings(&collapsed["ids"]).len(), 2, "{collapsed}");

    let blob_of = |id: &str| {
        server.call("Email/get", json!({"ids": [id], "properties": ["blobId"]}))["list"][0]
            ["blobId"]
            .as_str()
            .expect("blobId")
            .to_owned()
    };
    let root_blob = blob_of(&root_id);

    // Moved by Email/set: the same id, now in Archive; /changes says updated.
    let s0 = server.call("Email/get", json!({"ids": []}))["state"].clone();
    let set = server.call(
        "Email/set",
        json!({"update": {root_id.clone(): {"mailboxIds": {archive.clone(): true}}}}),
    );
    assert!(set["updated"].get(&root_id).is_some(), "{set}");
    assert_eq!(mailbox_ids(&server.get(&root_id)), vec![archive.clone()]);
    let ch = server.call("Email/changes", json!({"sinceState": s0}));
    assert_eq!(strings(&ch["updated"]), vec![root_id.clone()], "{ch}");
    assert_eq!(ch["created"], json!([]));
    assert_eq!(ch["destroyed"], json!([]));

    // Moved by another process (an IMAP MOVE through store-client): still the same id.
    let s1 = ch["newState"].clone();
    let archived = uids(&store, "Archive");
    assert_eq!(archived.len(), 1);
    rt().block_on(async {
        let s = store.session_for("joe").await.expect("session");
        s.move_messages("Archive", &archived, "Trash")
            .await
            .expect("move")
    });
    assert_eq!(mailbox_ids(&server.get(&root_id)), vec![trash.clone()]);
    let ch = server.call("Email/changes", json!({"sinceState": s1}));
    assert_eq!(strings(&ch["updated"]), vec![root_id.clone()], "{ch}");
    // The blobId is immutable too (RFC 8621 4.1.1), and still downloads the message.
    assert_eq!(blob_of(&root_id), root_blob);
    let out = Command::new("curl")
        .args(["-s", "--max-time", "30", "-u", "joe:pw"])
        .arg(format!(
            "http://{}/jmap/download/joe/{root_blob}/m.eml",
            server.addr
        ))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), ROOT);
    let tc = server.call("Thread/changes", json!({"sinceState": s1}));
    assert_eq!(strings(&tc["updated"]), vec![chain.clone()], "{tc}");

    // A copy: one Email, two mailboxes; keywords apply to every copy; a query lists it once.
    let s2 = ch["newState"].clone();
    let set = server.call(
        "Email/set",
        json!({"update": {root_id.clone(): {format!("mailboxIds/{inbox}"): true, "keywords/$flagged": true}}}),
    );
    assert!(set["updated"].get(&root_id).is_some(), "{set}");
    let e = server.get(&root_id);
    assert_eq!(mailbox_ids(&e), sorted(vec![inbox.clone(), trash.clone()]));
    assert_eq!(e["keywords"], json!({"$flagged": true}));
    rt().block_on(async {
        let s = store.session_for("joe").await.expect("session");
        for f in ["INBOX", "Trash"] {
            let snap = s.folder_snapshot(f).await.expect("snapshot");
            let ids = s
                .object_ids(f, snap.messages.iter().map(|m| m.uid).collect(), false)
                .await
                .expect("ids");
            let copy = ids
                .iter()
                .find(|(_, i)| i.email.to_string() == root_id)
                .unwrap_or_else(|| panic!("no copy in {f}"));
            let m = snap.messages.iter().find(|m| m.uid == copy.0).expect("msg");
            assert!(m.flags.contains(&Flag::Flagged), "{f} copy flagged");
        }
    });
    let all = server.call("Email/query", json!({"calculateTotal": true}));
    assert_eq!(all["total"], json!(4), "{all}");
    let in_inbox = server.call("Email/query", json!({"filter": {"inMailbox": inbox}}));
    assert_eq!(
        strings(&in_inbox["ids"])
            .iter()
            .filter(|i| **i == root_id)
            .count(),
        1
    );
    let ch = server.call("Email/changes", json!({"sinceState": s2}));
    assert_eq!(strings(&ch["updated"]), vec![root_id.clone()], "{ch}");
    // Out of one mailbox again: the other copy stays.
    server.call(
        "Email/set",
        json!({"update": {root_id.clone(): {format!("mailboxIds/{trash}"): null}}}),
    );
    assert_eq!(mailbox_ids(&server.get(&root_id)), vec![inbox.clone()]);
    assert_eq!(uids(&store, "Trash"), Vec::<u32>::new());

    // Created in two mailboxes at once; the create answers the content id.
    let c = server.call(
        "Email/set",
        json!({"create": {"n": {"mailboxIds": {inbox.clone(): true, archive.clone(): true},
            "subject": "Notes", "messageId": ["notes@example.com"],
            "bodyValues": {"1": {"value": "hello"}}, "textBody": [{"partId": "1"}]}}}),
    );
    let new_id = c["created"]["n"]["id"]
        .as_str()
        .expect("created")
        .to_owned();
    assert_eq!(
        c["created"]["n"]["threadId"],
        json!(ThreadId::of_root(b"notes@example.com").to_string())
    );
    assert_eq!(
        mailbox_ids(&server.get(&new_id)),
        sorted(vec![inbox.clone(), archive.clone()])
    );

    // Destroyed: every copy goes, /changes says destroyed, its thread is destroyed too.
    let s3 = server.call("Email/get", json!({"ids": []}))["state"].clone();
    let d = server.call(
        "Email/set",
        json!({"destroy": [new_id.clone(), other_id.clone()]}),
    );
    assert_eq!(
        sorted(strings(&d["destroyed"])),
        sorted(vec![new_id.clone(), other_id.clone()])
    );
    assert_eq!(uids(&store, "Archive"), Vec::<u32>::new());
    let ch = server.call("Email/changes", json!({"sinceState": s3}));
    assert_eq!(
        sorted(strings(&ch["destroyed"])),
        sorted(vec![new_id.clone(), other_id.clone()]),
        "{ch}"
    );
    let tc = server.call("Thread/changes", json!({"sinceState": s3}));
    assert!(strings(&tc["destroyed"]).contains(&other_thread.as_str().unwrap_or("").to_owned()));

    // Search snippets by the new ids.
    let sn = server.call(
        "SearchSnippet/get",
        json!({"emailIds": [reply_id.clone(), "Mnope"], "filter": {"text": "noon"}}),
    );
    assert_eq!(sn["list"][0]["emailId"], json!(reply_id));
    assert!(sn["list"][0]["preview"]
        .as_str()
        .is_some_and(|p| p.contains("<mark>noon</mark>")));
    assert_eq!(sn["notFound"], json!(["Mnope"]));

    // More changes since the first query than maxChanges allows: RFC 8620 5.6's error.
    let qc = server.call("Email/queryChanges", json!({"sinceQueryState": q0.clone()}));
    let changed = qc["removed"].as_array().map_or(0, Vec::len);
    assert!(changed >= 2, "{qc}");
    assert_eq!(
        server.error(
            "Email/queryChanges",
            json!({"accountId": "joe", "sinceQueryState": q0, "maxChanges": 1})
        ),
        "tooManyChanges"
    );

    // A mailbox that never held a message comes and goes: Email/changes still answers.
    let s4 = server.call("Email/get", json!({"ids": []}))["state"].clone();
    let m = server.call("Mailbox/set", json!({"create": {"e": {"name": "Empty"}}}));
    let empty = m["created"]["e"]["id"]
        .as_str()
        .expect("mailbox")
        .to_owned();
    let s5 = server.call("Email/get", json!({"ids": []}))["state"].clone();
    server.call("Mailbox/set", json!({"destroy": [empty]}));
    for s in [s4, s5] {
        let ch = server.call("Email/changes", json!({"sinceState": s}));
        assert_eq!(
            (&ch["created"], &ch["updated"], &ch["destroyed"]),
            (&json!([]), &json!([]), &json!([])),
            "{ch}"
        );
    }
    // One that held messages: its Emails that live on elsewhere are updated.
    let s6 = server.call("Email/get", json!({"ids": []}))["state"].clone();
    let m = server.call("Mailbox/set", json!({"create": {"f": {"name": "Full"}}}));
    let full = m["created"]["f"]["id"]
        .as_str()
        .expect("mailbox")
        .to_owned();
    server.call(
        "Email/set",
        json!({"update": {reply_id.clone(): {format!("mailboxIds/{full}"): true}}}),
    );
    let s7 = server.call("Email/get", json!({"ids": []}))["state"].clone();
    let ch = server.call("Email/changes", json!({"sinceState": s6}));
    assert_eq!(strings(&ch["updated"]), vec![reply_id.clone()], "{ch}");
    server.call(
        "Mailbox/set",
        json!({"destroy": [full], "onDestroyRemoveEmails": true}),
    );
    let ch = server.call("Email/changes", json!({"sinceState": s7}));
    assert_eq!(
        (strings(&ch["updated"]), strings(&ch["destroyed"])),
        (vec![reply_id.clone()], vec![]),
        "{ch}"
    );
    assert_eq!(mailbox_ids(&server.get(&reply_id)), vec![inbox.clone()]);

    // Unknown and malformed ids are notFound, never an error.
    let zero = format!("M{}", "0".repeat(24));
    let g = server.call(
        "Email/get",
        json!({"ids": [zero.clone(), "E1_2", "", "../x", "M".repeat(300)], "properties": ["subject"]}),
    );
    assert_eq!(g["list"], json!([]));
    assert_eq!(strings(&g["notFound"]).len(), 5);
    let s = server.call(
        "Email/set",
        json!({"update": {zero.clone(): {"keywords/$seen": true}}, "destroy": ["bad"]}),
    );
    assert_eq!(s["notUpdated"][&zero]["type"], "notFound");
    assert_eq!(s["notDestroyed"]["bad"]["type"], "notFound");
    let s = server.call(
        "Email/set",
        json!({"update": {root_id.clone(): {"mailboxIds": {}}}}),
    );
    assert_eq!(s["notUpdated"][&root_id]["type"], "invalidProperties");

    // Email/copy within one account is invalidArguments (RFC 8620 5.4), another account
    // fromAccountNotFound.
    assert_eq!(
        server.error(
            "Email/copy",
            json!({"accountId": "joe", "fromAccountId": "joe", "create": {}})
        ),
        "invalidArguments"
    );
    assert_eq!(
        server.error(
            "Email/copy",
            json!({"accountId": "joe", "fromAccountId": "ann", "create": {}})
        ),
        "fromAccountNotFound"
    );
}

/// Email/changes across the two events after which the store no longer records what was
/// expunged: a folder deleted by another process (its Emails destroyed, or updated when a
/// copy lives on elsewhere) and a compaction of the folder's index. Both are answered from
/// what the server noted at the states it handed out; a state from before a restart (the
/// notes are in memory) is cannotCalculateChanges for a folder gone meanwhile.
#[test]
fn email_changes_across_folder_deletion_and_compaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir_all(root.join("config")).expect("config");
    testkit::add_users(root, &["joe"]);
    let store = rt().block_on(StoreClient::open(root)).expect("store");
    let session = rt().block_on(store.session_for("joe")).expect("session");
    rt().block_on(async {
        session.create("Box", None).await.expect("create");
        for m in [ROOT, REPLY, REPLY2, OTHER] {
            session
                .append("Box", m.as_bytes().to_vec(), &[], None)
                .await
                .expect("append");
        }
        // REPLY is also in the INBOX: deleting Box leaves that Email alive.
        session
            .append("INBOX", REPLY.as_bytes().to_vec(), &[], None)
            .await
            .expect("append");
    });
    let id = |m: &str| EmailId::of_message(m.as_bytes()).to_string();
    let mut server = Server::start(root);
    let state = |server: &Server| server.call("Email/get", json!({"ids": []}))["state"].clone();

    // Compaction: ROOT expunged, then the index rewritten without its record.
    let s0 = state(&server);
    rt().block_on(async {
        let mut f = session.select("Box", false).await.expect("select");
        let uid = f.uids()[0];
        f.store_flags(&[uid], store_client::FlagOp::Add, &[Flag::Deleted], None)
            .await
            .expect("flag");
        f.expunge(Some(&[uid])).await.expect("expunge");
    });
    let s1 = state(&server);
    let msgstore = msgstore::Store::open(root).expect("msgstore");
    let boxname = msgstore::MailboxName::parse("user/joe/Box").expect("name");
    msgstore.compact(&boxname).expect("compact");
    for s in [&s0, &s1] {
        let ch = server.call("Email/changes", json!({"sinceState": s}));
        let want = if *s == s0 { vec![id(ROOT)] } else { vec![] };
        assert_eq!(strings(&ch["destroyed"]), want, "{ch}");
        assert_eq!(
            (&ch["created"], &ch["updated"]),
            (&json!([]), &json!([])),
            "{ch}"
        );
    }
    assert_ne!(state(&server), s1, "the compaction is seen");

    // Deletion by another process: OTHER and REPLY2 destroyed, REPLY updated.
    let s2 = state(&server);
    rt().block_on(session.delete("Box")).expect("delete");
    for s in [&s0, &s2] {
        let ch = server.call("Email/changes", json!({"sinceState": s}));
        let mut gone = vec![id(OTHER), id(REPLY2)];
        if *s == s0 {
            gone.push(id(ROOT));
        }
        assert_eq!(sorted(strings(&ch["destroyed"])), sorted(gone), "{ch}");
        assert_eq!(strings(&ch["updated"]), vec![id(REPLY)], "{ch}");
        assert_eq!(ch["created"], json!([]), "{ch}");
        let next = server.call("Email/changes", json!({"sinceState": ch["newState"]}));
        assert_eq!(
            (&next["created"], &next["updated"], &next["destroyed"]),
            (&json!([]), &json!([]), &json!([])),
            "{next}"
        );
    }

    // The notes live in memory: after a restart the store alone cannot tell.
    drop(server);
    server = Server::start(root);
    assert_eq!(
        server.error(
            "Email/changes",
            json!({"accountId": "joe", "sinceState": s2})
        ),
        "cannotCalculateChanges"
    );
}
