//! mshttpd: the HTTP front end (webmail page and JMAP).
//!
//! This crate will hold the HTTP and JMAP logic (issue 6) on top of `store-client`; the
//! server binary is added with it.
