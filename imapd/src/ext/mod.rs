//! Our extension layer: the grammar of the IMAP extensions the core grammar in `parse.rs`
//! leaves out, one file per extension, each tested on its own.

pub mod acl;
pub mod catenate;
pub mod create_use;
pub mod esearch;
pub mod list_extended;
pub mod multiappend;
pub mod preview;
pub mod utf7;
