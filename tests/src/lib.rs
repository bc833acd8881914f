//! End-to-end tests live in `tests/tests/`: they run the real binaries (built into the same
//! target directory by `cargo test --workspace`) together with the library API.

/// Path of a workspace binary next to the running test executable.
pub use testkit::binary;
