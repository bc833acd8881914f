//! Object ids through store-client: EMAILID/THREADID of a selected folder's messages, and
//! the per-user index from Email id to folders, kept up to date across copies, moves,
//! expunges, folder deletion and changes made by another store handle (another process).

use store_client::{EmailId, Flag, MessageStructure, Secret, StoreClient, ThreadId};

async fn setup() -> (tempfile::TempDir, StoreClient) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    let users = userdb::UserDb::open(dir.path().join("config/passwd")).unwrap();
    users
        .add("joe", &Secret::new("pw-joe".to_string()))
        .unwrap();
    let client = StoreClient::open(dir.path()).await.unwrap();
    (dir, client)
}

const ROOT: &[u8] = b"Message-ID: <root@example.org>\r\nSubject: Lunch\r\n\r\nShall we?\r\n";
const REPLY: &[u8] = b"Message-ID: <r1@example.net>\r\nReferences: <root@example.org>\r\n\
Subject: Re: Lunch\r\n\r\nYes\r\n";
const OTHER: &[u8] = b"Message-ID: <x@example.org>\r\nSubject: Other\r\n\r\nhi\r\n";

#[tokio::test]
async fn selected_folder_names_its_messages() {
    let (_d, c) = setup().await;
    let joe = c.session_for("joe").await.unwrap();
    let a = joe.append("INBOX", ROOT.to_vec(), &[], None).await.unwrap();
    let b = joe
        .append("INBOX", REPLY.to_vec(), &[], None)
        .await
        .unwrap();
    let sel = joe.select("INBOX", true).await.unwrap();
    let ids = sel.object_ids(&[b.uid, a.uid, 999]).await.unwrap();
    assert_eq!(ids.len(), 2, "unknown UIDs are left out");
    assert_eq!(ids[0].0, a.uid);
    assert_eq!(ids[0].1.email, EmailId::of_message(ROOT));
    assert_eq!(ids[1].1.email, EmailId::of_message(REPLY));
    let thread = ThreadId::of_root(b"root@example.org");
    assert!(ids.iter().all(|(_, i)| i.thread == thread));
    // The same through a session, and the structure agrees.
    let st: MessageStructure = sel.structure(a.uid).await.unwrap();
    assert_eq!(st.object_ids(), Some((ids[0].1.email, thread)));
    let by_session = joe.object_ids("INBOX", vec![a.uid], false).await.unwrap();
    assert_eq!(by_session, ids[..1]);
}

#[tokio::test]
async fn index_follows_copies_moves_and_expunges() {
    let (dir, c) = setup().await;
    let joe = c.session_for("joe").await.unwrap();
    joe.create("Team", None).await.unwrap();
    let a = joe.append("INBOX", ROOT.to_vec(), &[], None).await.unwrap();
    joe.append("INBOX", REPLY.to_vec(), &[], None)
        .await
        .unwrap();
    let ea = EmailId::of_message(ROOT);
    let idx = joe.email_index().await.unwrap();
    assert_eq!(idx.len(), 2);
    let copies = idx.copies(&ea);
    assert_eq!(copies.len(), 1);
    assert_eq!((&*copies[0].folder, copies[0].uid), ("INBOX", a.uid));
    let thread = idx.thread_of(&ea).unwrap();
    assert_eq!(idx.thread_emails(&thread).len(), 2);

    // A copy is the same Email in two folders.
    let cp = joe.copy("INBOX", &[a.uid], "Team").await.unwrap();
    let idx2 = joe.email_index().await.unwrap();
    let mut folders: Vec<&str> = idx2.copies(&ea).iter().map(|c| &*c.folder).collect();
    folders.sort();
    assert_eq!(folders, ["INBOX", "Team"]);
    assert_eq!(idx2.len(), 2);
    // The earlier snapshot is unchanged (copy on write).
    assert_eq!(idx.copies(&ea).len(), 1);

    // Identical content appended again is still that Email.
    joe.append("Archive", ROOT.to_vec(), &[], None)
        .await
        .unwrap();
    assert_eq!(joe.email_index().await.unwrap().copies(&ea).len(), 3);

    // A move by another store handle (another process) keeps the id.
    let other = StoreClient::open(dir.path()).await.unwrap();
    let joe2 = other.session_for("joe").await.unwrap();
    joe2.move_messages("Team", &[cp.map[0].1], "Junk")
        .await
        .unwrap();
    let idx3 = joe.email_index().await.unwrap();
    let mut folders: Vec<&str> = idx3.copies(&ea).iter().map(|c| &*c.folder).collect();
    folders.sort();
    assert_eq!(folders, ["Archive", "INBOX", "Junk"]);

    // Expunged and deleted copies go; the Email goes with its last copy.
    let mut inbox = joe.select("INBOX", false).await.unwrap();
    inbox
        .store_flags(&[a.uid], store_client::FlagOp::Add, &[Flag::Deleted], None)
        .await
        .unwrap();
    inbox.expunge(Some(&[a.uid])).await.unwrap();
    joe.create("Gone", None).await.unwrap();
    joe.append("Gone", OTHER.to_vec(), &[], None).await.unwrap();
    let eo = EmailId::of_message(OTHER);
    assert_eq!(joe.email_index().await.unwrap().copies(&eo).len(), 1);
    joe2.delete("Gone").await.unwrap();
    let idx4 = joe.email_index().await.unwrap();
    assert!(idx4.copies(&eo).is_empty());
    assert_eq!(idx4.thread_of(&eo), None);
    let mut folders: Vec<&str> = idx4.copies(&ea).iter().map(|c| &*c.folder).collect();
    folders.sort();
    assert_eq!(folders, ["Archive", "Junk"]);
    // The expunged message is still named while its record stays (for /changes).
    let gone = joe.object_ids("INBOX", vec![a.uid], true).await.unwrap();
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].1.email, ea);
    assert!(joe
        .object_ids("INBOX", vec![a.uid], false)
        .await
        .unwrap()
        .is_empty());
    // A renamed folder keeps its copies under the new name.
    joe.rename("Junk", "Spam").await.unwrap();
    let idx5 = joe.email_index().await.unwrap();
    let mut folders: Vec<&str> = idx5.copies(&ea).iter().map(|c| &*c.folder).collect();
    folders.sort();
    assert_eq!(folders, ["Archive", "Spam"]);
    assert_eq!(idx5.len(), 2);
}

/// A cache entry written before ids existed (format 1: no trailer): the ids come from the
/// message file, the same as those of a copy delivered since.
#[tokio::test]
async fn entries_from_before_ids_are_named_from_the_file() {
    use msgstore::folder::{Folder, FolderFiles, LinkedMessage};
    let (dir, c) = setup().await;
    let joe = c.session_for("joe").await.unwrap();
    let a = joe
        .append("INBOX", REPLY.to_vec(), &[], None)
        .await
        .unwrap();
    // Link the same file in again with a format 1 structure, as an old store wrote it
    // (a second handle on the folder, as another process would be).
    let name = msgstore::MailboxName::parse("user/joe/INBOX").unwrap();
    let layout = msgstore::layout::Layout::new(dir.path());
    let files = FolderFiles::new(msgstore::layout::folder_dir(
        &layout.default_partition_dir("primary"),
        &name,
    ));
    let mut old = MessageStructure::parse(REPLY);
    old.email_id = None;
    let blob = old.to_bytes();
    assert_eq!(blob[0], 1, "a format 1 blob");
    let folder = Folder::new(name.as_str().to_owned(), files.clone());
    let uids = folder
        .append_linked(
            vec![LinkedMessage {
                source: files.message(a.uid),
                size: REPLY.len() as u64,
                content_crc: crc32(REPLY),
                internal_date: 1_790_000_000,
                flags: 0,
                keywords: vec![],
                structure: blob,
            }],
            u64::MAX,
        )
        .unwrap();
    let old_uid = uids[0];
    let sel = joe.select("INBOX", true).await.unwrap();
    assert_eq!(sel.structure(old_uid).await.unwrap().email_id, None);
    let ids = sel.object_ids(&[a.uid, old_uid]).await.unwrap();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0].1, ids[1].1, "one Email, one thread");
    assert_eq!(ids[1].1.email, EmailId::of_message(REPLY));
    assert_eq!(ids[1].1.thread, ThreadId::of_root(b"root@example.org"));
    let idx = joe.email_index().await.unwrap();
    assert_eq!(idx.copies(&EmailId::of_message(REPLY)).len(), 2);
}

fn crc32(b: &[u8]) -> u32 {
    // The store's content checksum is CRC-32 (IEEE); a bitwise one keeps this test free of
    // another dependency.
    let mut c = !0u32;
    for &x in b {
        c ^= u32::from(x);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}
