//! RFC 8474 object ids: the content digest (EMAILID) and the thread root (THREADID), and the
//! cache blob that carries them, old blobs included.

use message_structure::{EmailId, MessageStructure, ThreadId};

fn crlf(s: &str) -> Vec<u8> {
    s.replace('\n', "\r\n").into_bytes()
}

const ROOT: &str = "Message-ID: <root@example.org>\nSubject: Lunch\n\nShall we?\n";
const REPLY: &str = "Message-ID: <r1@example.net>\nIn-Reply-To: <root@example.org>\n\
References: <root@example.org>\nSubject: Re: Lunch\n\nYes\n";
const REPLY2: &str = "Message-ID: <r2@example.org>\nIn-Reply-To: <r1@example.net>\n\
References: <root@example.org>\n <r1@example.net>\nSubject: Re: Re: Lunch\n\nNoon\n";
const IRT_ONLY: &str =
    "Message-ID: <r3@example.org>\nIn-Reply-To: <root@example.org> (joe's message)\n\nOk\n";
const NO_IDS: &str = "Subject: Lunch\n\nno ids at all\n";

#[test]
fn email_id_is_the_digest_of_the_content() {
    let a = MessageStructure::parse(&crlf(ROOT));
    let b = MessageStructure::parse(&crlf(ROOT));
    let c = MessageStructure::parse(&crlf(REPLY));
    assert_eq!(a.email_id, Some(EmailId::of_message(&crlf(ROOT))));
    assert_eq!(a.email_id, b.email_id, "identical content, one Email");
    assert_ne!(a.email_id, c.email_id);
    // One changed byte is another message.
    let mut changed = crlf(ROOT);
    let last = changed.len() - 3;
    changed[last] = b'!';
    assert_ne!(MessageStructure::parse(&changed).email_id, a.email_id);
    // RFC 8474 objectid syntax: 1-255 of [A-Za-z0-9_-].
    let s = a.email_id.unwrap().to_string();
    assert!(s.len() <= 255 && s.bytes().all(|b| b.is_ascii_alphanumeric()));
}

#[test]
fn thread_id_is_the_digest_of_the_root_message_id() {
    let ids: Vec<(EmailId, ThreadId)> = [ROOT, REPLY, REPLY2, IRT_ONLY]
        .iter()
        .map(|m| MessageStructure::parse(&crlf(m)).object_ids().unwrap())
        .collect();
    let root = ThreadId::of_root(b"<root@example.org>");
    for (_, t) in &ids {
        assert_eq!(*t, root);
    }
    // The thread root: References first, then In-Reply-To, then the own Message-ID.
    let r2 = MessageStructure::parse(&crlf(REPLY2));
    assert_eq!(r2.thread_root().as_deref(), Some(&b"root@example.org"[..]));
    let irt = MessageStructure::parse(&crlf(IRT_ONLY));
    assert_eq!(irt.thread_root().as_deref(), Some(&b"root@example.org"[..]));
    // Without any id the message is a thread of its own, named by its content.
    let lone = MessageStructure::parse(&crlf(NO_IDS));
    assert_eq!(lone.thread_root(), None);
    let (e, t) = lone.object_ids().unwrap();
    assert_eq!(t, ThreadId::of_email(e));
    assert_ne!(t, root);
    // The known limit: a reply whose References lost the root starts another thread.
    let lost = MessageStructure::parse(&crlf(
        "Message-ID: <r4@x>\nReferences: <r1@example.net>\nIn-Reply-To: <r1@example.net>\n\nhi\n",
    ));
    assert_ne!(lost.object_ids().unwrap().1, root);
}

#[test]
fn blobs_carry_the_ids_and_old_blobs_still_decode() {
    let st = MessageStructure::parse(&crlf(REPLY2));
    let bytes = st.to_bytes();
    assert_eq!(bytes[0], 2);
    assert_eq!(
        MessageStructure::object_ids_from_bytes(&bytes),
        st.object_ids()
    );
    let back = MessageStructure::from_bytes(&bytes).unwrap();
    assert_eq!(back, st);
    assert_eq!(back.object_ids(), st.object_ids());

    // A version 1 blob, as the store's cache holds for messages delivered before ids: the
    // postcard body alone. It decodes, without an email id, and says so.
    let mut v1 = vec![1u8];
    v1.extend(postcard::to_allocvec(&st).unwrap());
    let old = MessageStructure::from_bytes(&v1).unwrap();
    assert_eq!(old.email_id, None);
    assert_eq!(old.object_ids(), None);
    assert_eq!(MessageStructure::object_ids_from_bytes(&v1), None);
    assert_eq!(old.envelope, st.envelope);
    // Its thread is still known from the headers, given the id computed from the file.
    let e = EmailId::of_message(&crlf(REPLY2));
    assert_eq!(Some(old.thread_id_with(e)), st.object_ids().map(|x| x.1));
    // Written back without an id it stays version 1 rather than invent one.
    assert_eq!(old.to_bytes()[0], 1);
    assert_eq!(MessageStructure::from_bytes(&old.to_bytes()).unwrap(), old);

    // A damaged trailer is an error, never a wrong id.
    assert!(MessageStructure::from_bytes(&bytes[..bytes.len() - 1]).is_err());
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(MessageStructure::from_bytes(&longer).is_err());
    assert_eq!(MessageStructure::object_ids_from_bytes(&[2, 0]), None);
}

#[test]
fn arbitrary_bytes_get_ids_without_panicking() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for len in [0usize, 1, 7, 100, 3000] {
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 256) as u8
            })
            .collect();
        let st = MessageStructure::parse(&data);
        assert!(st.object_ids().is_some());
        let b = st.to_bytes();
        assert_eq!(MessageStructure::from_bytes(&b).unwrap(), st);
    }
}
