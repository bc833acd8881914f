//! Shared plumbing of the administration commands (`mboxutil`, `hashdir`, `configutil`,
//! `msuser`, `start-msg`): finding the instance root, parsing arguments with the exit codes
//! scripts rely on, and reporting errors on stderr.
//!
//! Exit codes: 0 success, 1 the operation failed, 64 usage error (as sysexits' EX_USAGE).

use std::path::PathBuf;

/// The usage-error exit code (sysexits EX_USAGE).
pub const EXIT_USAGE: i32 = 64;
/// The operation failed.
pub const EXIT_FAILURE: i32 = 1;

/// Environment variable naming the instance root (the directory holding `config/` and `data/`).
pub const ROOT_ENV: &str = "MSG_ROOT";
/// The instance root when neither `--root` nor `MSG_ROOT` is given.
pub const DEFAULT_ROOT: &str = "msg";

/// The instance root: `--root`, else `$MSG_ROOT`, else `./msg`.
pub fn instance_root(cli: Option<PathBuf>) -> PathBuf {
    cli.or_else(|| std::env::var_os(ROOT_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT))
}

/// Parse arguments; on a usage error print clap's message and exit 64 (help and version exit 0).
pub fn parse_args<T: clap::Parser>() -> T {
    // Listings are piped into head, grep and less: a closed pipe ends the command quietly,
    // as it does for ls or cat, instead of a panic in println!.
    // SAFETY: resetting a signal's disposition to the default has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match T::try_parse() {
        Ok(v) => v,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => EXIT_USAGE,
            };
            let _ = e.print();
            std::process::exit(code);
        }
    }
}

/// Print `error` as `<command>: <message>` (with its causes) on stderr and exit with `code`.
pub fn fail(command: &str, error: &anyhow::Error, code: i32) -> ! {
    eprint!("{command}: {error}");
    for cause in error.chain().skip(1) {
        eprint!(": {cause}");
    }
    eprintln!();
    std::process::exit(code)
}

/// Run a command's body, turning an error into a message on stderr and exit status 1.
pub fn run(command: &str, body: impl FnOnce() -> anyhow::Result<()>) {
    if let Err(e) = body() {
        fail(command, &e, EXIT_FAILURE);
    }
}

/// A usage error found after parsing (contradictory options and the like): exit 64.
pub fn usage_error(command: &str, message: &str) -> ! {
    eprintln!("{command}: {message}");
    eprintln!("Try '{command} --help' for more information.");
    std::process::exit(EXIT_USAGE)
}

/// Parse a size such as `500`, `100K`, `20M`, `2G` (bytes, binary multiples) or `none`.
pub fn parse_size(s: &str) -> Result<Option<u64>, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("none") || t.eq_ignore_ascii_case("unlimited") || t == "-1" {
        return Ok(None);
    }
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => {
                    return Err(format!(
                        "invalid size {s:?}: unknown unit {c:?} (use K, M, G or T)"
                    ))
                }
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid size {s:?}: expected a number, optionally with K, M, G or T, or 'none'")
    })?;
    n.checked_mul(mult)
        .map(Some)
        .ok_or_else(|| format!("invalid size {s:?}: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("500"), Ok(Some(500)));
        assert_eq!(parse_size("2K"), Ok(Some(2048)));
        assert_eq!(parse_size("1g"), Ok(Some(1 << 30)));
        assert_eq!(parse_size("none"), Ok(None));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("abc").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
