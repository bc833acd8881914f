//! End-to-end tests live in `tests/tests/`: they run the real binaries (built into the same
//! target directory by `cargo test --workspace`) together with the library API.

use std::path::PathBuf;

/// Path of a workspace binary next to the running test executable.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo test --workspace` (or `cargo build --workspace`) first",
        path.display()
    );
    path
}
