//! msgcheck: the message store's health check, for monitoring (Nagios/Icinga plugin
//! conventions): one line per finding (`OK`, `WARNING` or `CRITICAL`, the check, the detail),
//! exit status 0 when all is well, 1 on a warning, 2 on a critical finding, 64 on a usage
//! error. It covers the seed's standard monitoring procedures (20.14.1): free space, stamp
//! file ages, database log files, services running, core files, and `reconstruct -r -n`.

use std::path::PathBuf;

use clap::Parser;
use stored::health::{self, Level, Thresholds};

#[derive(Parser, Debug)]
#[command(
    name = "msgcheck",
    version,
    about = "Check the message store's health (exit 0 OK, 1 warning, 2 critical)",
    after_help = "Exit status: 0 OK, 1 warning, 2 critical, 64 usage error."
)]
struct Cli {
    /// Instance root holding config/ and data/ (default: $MSG_ROOT, else ./msg).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Warn below this percentage of free space (or inodes).
    #[arg(long, default_value_t = 10.0, value_name = "PERCENT")]
    warn_free: f64,
    /// Critical below this percentage of free space (or inodes).
    #[arg(long, default_value_t = 5.0, value_name = "PERCENT")]
    crit_free: f64,
    /// Skip `reconstruct -r -n` (it reads every folder).
    #[arg(long)]
    no_folders: bool,
    /// Print only the findings that are not OK.
    #[arg(short, long)]
    quiet: bool,
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 64,
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    if !(0.0..=100.0).contains(&cli.warn_free)
        || !(0.0..=100.0).contains(&cli.crit_free)
        || cli.crit_free > cli.warn_free
    {
        eprintln!("msgcheck: thresholds must be percentages with --crit-free <= --warn-free");
        std::process::exit(64);
    }
    let root = service_runtime::instance_root(cli.root);
    let config = match msgconf::Config::load(root.join("config").join("msg.conf")) {
        Ok(c) => c,
        Err(e) => {
            println!("CRITICAL config: {e}");
            std::process::exit(2);
        }
    };
    let t = Thresholds {
        warn_free_pct: cli.warn_free,
        crit_free_pct: cli.crit_free,
        ..Thresholds::default()
    };
    let mut findings = health::check(&root, &config, &t);
    if !cli.no_folders {
        findings.push(health::check_folders(&root));
    }
    let worst = findings.iter().map(|f| f.level).max().unwrap_or(Level::Ok);
    for f in &findings {
        if !cli.quiet || f.level != Level::Ok {
            println!("{f}");
        }
    }
    std::process::exit(worst as i32);
}
