//! msuser: add, delete and list users, and set passwords, in config/passwd.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use msg_admin::{instance_root, parse_args, run};
use userdb::{Secret, UserDb};

/// Manage the users of the message store (config/passwd, Dovecot's passwd-file format).
///
/// New passwords are stored as ARGON2ID hashes. Existing SHA512-CRYPT, SHA256-CRYPT,
/// BLF-CRYPT and ARGON2 hashes from Dovecot's `doveadm pw` are accepted as they are, so a
/// Dovecot passwd-file can be copied in unchanged.
///
/// The password is read from standard input (one line), or asked for twice on a terminal.
#[derive(Parser)]
#[command(
    name = "msuser",
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
    /// Add a user.
    Add { user: String },
    /// Delete a user (their mailboxes stay; remove them with mboxutil -d user/<userid>).
    Delete { user: String },
    /// List users.
    List,
    /// Set a user's password.
    Passwd { user: String },
}

fn read_password() -> anyhow::Result<Secret<String>> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let first = rpassword_like("Password: ")?;
        let second = rpassword_like("Again: ")?;
        if first.expose() != second.expose() {
            anyhow::bail!("the passwords differ");
        }
        return Ok(first);
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let pw = line.trim_end_matches(['\r', '\n']).to_owned();
    if pw.is_empty() {
        anyhow::bail!("empty password on standard input");
    }
    Ok(Secret::new(pw))
}

/// Prompt on the terminal with echo turned off.
fn rpassword_like(prompt: &str) -> anyhow::Result<Secret<String>> {
    eprint!("{prompt}");
    std::io::stderr().flush().ok();
    let echo_off = std::process::Command::new("stty")
        .arg("-echo")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let mut line = String::new();
    let r = std::io::stdin().lock().read_line(&mut line);
    if echo_off {
        let _ = std::process::Command::new("stty").arg("echo").status();
    }
    eprintln!();
    r.context("cannot read the password")?;
    Ok(Secret::new(line.trim_end_matches(['\r', '\n']).to_owned()))
}

fn main() {
    let cli: Cli = parse_args();
    let root = instance_root(cli.root.clone());
    let path = root.join("config").join("passwd");
    run("msuser", || {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let db = UserDb::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        match cli.cmd {
            Cmd::Add { user } => {
                let pw = read_password()?;
                let id = db.add(&user, &pw)?;
                println!("added user {}", id.as_str());
            }
            Cmd::Delete { user } => {
                db.delete(&user)?;
                println!("deleted user {user}");
            }
            Cmd::List => {
                for u in db.list()? {
                    println!("{}", u.as_str());
                }
            }
            Cmd::Passwd { user } => {
                let pw = read_password()?;
                db.set_password(&user, &pw)?;
                println!("password set for {user}");
            }
        }
        Ok(())
    });
}
