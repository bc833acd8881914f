//! imapd: the IMAP4rev1/IMAP4rev2 front end.
//!
//! This crate will hold the IMAP session logic (issue 4) on top of `store-client`; the
//! server binary is added with it. It is part of the workspace now so that the dependency
//! direction (front end -> store-client, never front end -> front end) is fixed from the start.
