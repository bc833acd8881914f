//! telemetry: list session captures and print one with absolute timestamps.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use msg_admin::{instance_root, parse_args, run};

/// Read the session captures that support staff switch on for a user.
///
/// To capture a user's sessions, create data/telemetry/<imap|pop|http>/<userid>/ under the
/// instance root (owned by or writable for the mail server user); each session after that
/// login is written to one new file there. Remove or rename the directory to stop.
#[derive(Parser)]
#[command(
    name = "telemetry",
    version,
    after_help = "Exit status: 0 success, 1 failure, 64 usage error."
)]
struct Cli {
    /// Instance root holding config/ and data/ (default: $MSG_ROOT, else ./msg).
    #[arg(long, value_name = "DIR", global = true)]
    root: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List capture files (all, one service's, or one user's): path, size, first line.
    List {
        /// imap, pop or http.
        service: Option<String>,
        user: Option<String>,
    },
    /// Print a capture with absolute timestamps (a path, or a name relative to data/telemetry).
    Show { file: PathBuf },
}

const SERVICES: [&str; 3] = ["imap", "pop", "http"];

fn list(base: &Path, service: Option<&str>, user: Option<&str>) -> anyhow::Result<usize> {
    if let Some(s) = service {
        if !SERVICES.contains(&s) {
            anyhow::bail!("unknown service {s:?}: use imap, pop or http");
        }
    }
    let mut n = 0;
    for s in SERVICES.iter().filter(|s| service.is_none_or(|x| x == **s)) {
        let dir = base.join(s);
        let Ok(users) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut users: Vec<_> = users.flatten().filter(|e| e.path().is_dir()).collect();
        users.sort_by_key(|e| e.file_name());
        for u in users {
            if user.is_some_and(|x| x != u.file_name().to_string_lossy()) {
                continue;
            }
            let mut files: Vec<_> = std::fs::read_dir(u.path())
                .with_context(|| format!("cannot read {}", u.path().display()))?
                .flatten()
                .filter(|e| e.path().is_file())
                .collect();
            files.sort_by_key(|e| e.file_name());
            for f in files {
                let first = std::fs::read(f.path())
                    .ok()
                    .and_then(|b| {
                        b.split(|&c| c == b'\n')
                            .next()
                            .map(|l| String::from_utf8_lossy(l).into_owned())
                    })
                    .unwrap_or_default();
                let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                println!("{}\t{}\t{}", f.path().display(), size, first.trim_end());
                n += 1;
            }
        }
    }
    Ok(n)
}

fn main() {
    let cli: Cli = parse_args();
    let root = instance_root(cli.root.clone());
    let base = root.join("data").join("telemetry");
    run("telemetry", || {
        match &cli.cmd {
            Cmd::List { service, user } => {
                let n = list(&base, service.as_deref(), user.as_deref())?;
                if n == 0 {
                    eprintln!("telemetry: no captures under {}", base.display());
                }
            }
            Cmd::Show { file } => {
                let path = if file.exists() {
                    file.clone()
                } else {
                    base.join(file)
                };
                let bytes = std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let capture = telemetry::parse_capture(&bytes)
                    .with_context(|| format!("{} is not a telemetry capture", path.display()))?;
                let mut out = std::io::stdout().lock();
                telemetry::write_absolute(&capture, &mut out)?;
            }
        }
        Ok(())
    });
}
