#![allow(dead_code)]
use msgstore::{AppendRequest, MailboxName, Store};

pub fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open store");
    (dir, store)
}

pub fn name(s: &str) -> MailboxName {
    MailboxName::parse(s).expect("valid name")
}

pub fn msg(subject: &str) -> AppendRequest {
    AppendRequest {
        data: format!(
            "From: Joe <joe@example.com>\r\nTo: bob@example.com\r\nSubject: {subject}\r\nDate: Mon, 7 Feb 1994 21:52:25 -0800\r\nMessage-ID: <{subject}@example.com>\r\n\r\nBody of {subject}\r\n"
        )
        .into_bytes(),
        ..Default::default()
    }
}
