//! stop-msg: stop the message store's services in the reverse of start-msg's order (lmtpd,
//! mshttpd, popd, imapd, then stored last), each with SIGTERM, waiting for it to finish its
//! sessions and exit; one still running after the timeout is killed. Reports each service.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use msg_admin::{instance_root, parse_args, EXIT_FAILURE};
use stored::control::{self, Stopped};

/// Stop the services of the instance at the root directory (stored last).
#[derive(Parser)]
#[command(
    name = "stop-msg",
    version,
    after_help = "Exit status: 0 every service stopped (or was not running), 1 a service had to be killed, 64 usage error."
)]
struct Cli {
    /// Instance root holding config/ and data/ (default: $MSG_ROOT, else ./msg).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Seconds to wait for each service after SIGTERM before killing it.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    timeout: u64,
}

fn main() {
    let cli: Cli = parse_args();
    let root = instance_root(cli.root);
    let run_dir = root.join("data").join("run");
    let mut killed = 0;
    for svc in control::SERVICES.iter().rev() {
        let pid_file = run_dir.join(format!("{svc}.pid"));
        let state = match control::running(&pid_file, svc) {
            Some(pid) => {
                let s = match control::terminate(pid, Duration::from_secs(cli.timeout)) {
                    Stopped::Clean(t) => format!("stopped (pid {pid}, {} ms)", t.as_millis()),
                    Stopped::Killed => {
                        killed += 1;
                        format!("did not stop within {} s: killed (pid {pid})", cli.timeout)
                    }
                };
                let _ = std::fs::remove_file(&pid_file);
                s
            }
            None if pid_file.exists() => {
                let _ = std::fs::remove_file(&pid_file);
                "not running (stale pid file removed)".to_owned()
            }
            None => "not running".to_owned(),
        };
        println!("{svc:<8} {state}");
    }
    if killed > 0 {
        std::process::exit(EXIT_FAILURE);
    }
}
