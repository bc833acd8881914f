//! start-msg: bring up the message store on its embedded default.
//!
//! Today it prepares an instance (configuration, data directories, mailbox database, a first
//! user with their folders) and reports what is there, with how to run `lmtpd`. As the
//! services arrive (stored, then imapd, popd, mshttpd and lmtpd), it will start them in that
//! order, as the seed's start-msg does.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use msg_admin::{instance_root, parse_args, run};
use msgstore::{Store, UserName};
use userdb::{Secret, UserDb};

/// Prepare and start the message store instance at the root directory.
#[derive(Parser)]
#[command(
    name = "start-msg",
    version,
    after_help = "Exit status: 0 success, 1 failure, 64 usage error."
)]
struct Cli {
    /// Instance root holding config/ and data/ (default: $MSG_ROOT, else ./msg).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// The first user to create when there is none yet.
    #[arg(long, default_value = "admin", value_name = "USERID")]
    user: String,
    /// Read the first user's password from this file (default: generate one and print it).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
}

fn random_password() -> anyhow::Result<String> {
    let mut bytes = [0u8; 12];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom")?;
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect())
}

fn main() {
    let cli: Cli = parse_args();
    let root = instance_root(cli.root.clone());
    run("start-msg", || {
        let config_dir = root.join("config");
        std::fs::create_dir_all(&config_dir)
            .with_context(|| format!("cannot create {}", config_dir.display()))?;
        let conf_path = config_dir.join("msg.conf");
        if !conf_path.exists() {
            std::fs::write(
                &conf_path,
                "# Message store configuration: manage with configutil (configutil -o NAME -v VALUE).\n\
                 # Every parameter not set here has its default; `configutil` lists them all.\n",
            )
            .with_context(|| format!("cannot write {}", conf_path.display()))?;
        }
        // A bad value stops startup with a message naming the parameter, value and range.
        let conf = msgconf::Config::load(&conf_path)
            .with_context(|| format!("invalid configuration in {}", conf_path.display()))?;
        for w in conf.warnings() {
            eprintln!("start-msg: warning: {w}");
        }
        let store = Store::open(&root)
            .with_context(|| format!("cannot open the store at {}", root.display()))?;
        let layout = store.layout().clone();
        for d in [layout.log_dir(), layout.telemetry_dir()] {
            std::fs::create_dir_all(&d)
                .with_context(|| format!("cannot create {}", d.display()))?;
        }
        store
            .db()
            .quick_check()
            .context("mailbox database check failed")?;

        let users = UserDb::open(layout.passwd_file()).context("cannot open the user database")?;
        let mut created = None;
        if users.list()?.is_empty() {
            let password = match &cli.password_file {
                Some(f) => std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read {}", f.display()))?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
                None => random_password()?,
            };
            users.add(&cli.user, &Secret::new(password.clone()))?;
            created = Some((cli.user.clone(), password, cli.password_file.is_none()));
        }
        let mut provisioned = 0;
        for u in users.list()? {
            let name = UserName::new(u.as_str())?;
            provisioned += store.provision_user(&name)?.len();
        }

        let root_abs = std::fs::canonicalize(&root).unwrap_or(root.clone());
        println!("Message store ready at {}", root_abs.display());
        println!("  configuration   {}", conf_path.display());
        println!("  mailbox db      {}", store.db().path().display());
        for (name, path) in &store.config().partitions {
            println!("  partition {name:<6} {}", path.display());
        }
        println!(
            "  users           {} ({} folders created now)",
            users.list()?.len(),
            provisioned
        );
        if let Some((user, password, generated)) = created {
            if generated {
                println!("\nFirst user created: {user}, password: {password}");
                println!(
                    "(shown once; change it with: msuser --root {} passwd {user})",
                    root_abs.display()
                );
            } else {
                println!("\nFirst user created: {user}");
            }
        }
        println!("\nNext steps:");
        println!(
            "  msuser --root {} add <userid>          add a user (password on stdin)",
            root_abs.display()
        );
        println!(
            "  mboxutil --root {} -l                  list mailboxes",
            root_abs.display()
        );
        println!(
            "  configutil --root {}                   list configuration parameters",
            root_abs.display()
        );
        println!(
            "  hashdir --root {} <userid>             where a user's files live",
            root_abs.display()
        );
        println!(
            "  lmtpd --root {} --listen 127.0.0.1:24   deliver mail over LMTP (for example from Postfix)",
            root_abs.display()
        );
        println!(
            "stored, imapd, popd and mshttpd are not in this release yet; start-msg will start"
        );
        println!("them, stored first, as they arrive.");
        Ok(())
    });
}
