//! popd: the POP3 front end.
//!
//! This crate will hold the POP3 session logic (issue 5) on top of `store-client`; the
//! server binary is added with it.
