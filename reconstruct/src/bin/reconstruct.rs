//! reconstruct: check and repair folders, the mailbox database, quotas and the rights index.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Check and repair the message store.
///
/// Examples: reconstruct -n -r (check everything), reconstruct -r user/joe (repair joe's
/// folders), reconstruct -f -r user/joe/INBOX (force a rebuild), reconstruct -m,
/// reconstruct -p primary -u joe -m, reconstruct -q, reconstruct -l.
#[derive(Parser)]
#[command(
    name = "reconstruct",
    version,
    after_help = "Exit status: 0 nothing wrong, 1 damage found (and, without -n, repaired), \
                  2 something could not be checked or repaired, 64 usage error (nothing changed)."
)]
struct Cli {
    /// Instance root holding config/ and data/ (default: $MSG_ROOT, else ./msg).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,

    /// Check and repair the named mailboxes and everything below them (all mailboxes when
    /// none is named).
    #[arg(short = 'r')]
    recursive: bool,

    /// Check only: report problems, change nothing (needs a mailbox name or -r). With -f, also
    /// read every message file and compare it with the checksum taken at delivery.
    #[arg(short = 'n')]
    check_only: bool,

    /// Rebuild folders even when the check finds nothing wrong (a rebuild reads every message
    /// file, so it also finds files whose content changed); with -n, check content only.
    #[arg(short = 'f')]
    force: bool,

    /// Set store.idx to zero length before rebuilding (only folders actually rebuilt: add -f).
    #[arg(short = 'i')]
    zero_index: bool,

    /// Remove store.exp before rebuilding, bringing back expunged messages not yet erased
    /// (only folders actually rebuilt: add -f).
    #[arg(short = 'e')]
    restore_expunged: bool,

    /// Limit -r, mailbox names or -m to this partition (a name from msg.conf, not a path).
    #[arg(short = 'p', value_name = "PARTITION")]
    partition: Option<String>,

    /// With -p and -m: limit -m to this user's folders.
    #[arg(short = 'u', value_name = "USER")]
    user: Option<String>,

    /// Check the mailbox database against the spool: add entries for folder directories it
    /// lacks, remove entries whose directory is gone, correct quota roots that disagree with
    /// the folder's store.meta, fix the usage of the quota roots touched.
    #[arg(short = 'm')]
    mailbox_db: bool,

    /// Recompute every quota root's usage from the folders (safe while servers run).
    #[arg(short = 'q')]
    quota: bool,

    /// Rebuild the rights index (lright) from the folders' ACLs.
    #[arg(short = 'l')]
    rights: bool,

    /// Progress of -r, -m and -q on stderr: a bar when stderr is a terminal, otherwise a line every
    /// SECONDS seconds (0: no progress at all).
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0, value_parser = seconds)]
    progress: f64,

    /// Mailboxes: user/<userid>/<folder>, or user/<userid> for all of a user's folders.
    #[arg(value_name = "MAILBOX")]
    mailboxes: Vec<String>,
}

fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds from 0 to 86400")),
    }
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => reconstruct::EXIT_USAGE,
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let root = cli
        .root
        .or_else(|| std::env::var_os("MSG_ROOT").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("msg"));
    let opts = reconstruct::Options {
        root,
        recursive: cli.recursive,
        check_only: cli.check_only,
        force: cli.force,
        zero_index: cli.zero_index,
        restore_expunged: cli.restore_expunged,
        partition: cli.partition,
        user: cli.user,
        mailbox_db: cli.mailbox_db,
        quota: cli.quota,
        rights: cli.rights,
        mailboxes: cli.mailboxes,
        progress: if cli.progress == 0.0 {
            reconstruct::ProgressMode::Off
        } else if std::io::stderr().is_terminal() {
            reconstruct::ProgressMode::Bar
        } else {
            reconstruct::ProgressMode::Lines(std::time::Duration::from_secs_f64(cli.progress))
        },
    };
    let sink = |line: &str| {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{line}");
    };
    match reconstruct::run(&opts, &sink) {
        Ok(code) => std::process::exit(code),
        Err(f) => {
            eprintln!("reconstruct: {}", f.message());
            if f.code() == reconstruct::EXIT_USAGE {
                eprintln!("Try 'reconstruct --help' for more information.");
            }
            std::process::exit(f.code());
        }
    }
}
