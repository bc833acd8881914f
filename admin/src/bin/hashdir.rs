//! hashdir: print where a user's or a mailbox's files live in the spool.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use msg_admin::{instance_root, parse_args, run};
use msgstore::{layout, MailboxName, Store, UserName};

/// Print the directory of a user (USERID) or of a mailbox (user/<userid>/<folder>).
///
/// User directories are spread over two levels of hashed directories below each partition;
/// this prints the full path so you can inspect the files (seed step 3 of "User Mailbox
/// Directory Problems"). It works for users and folders the mailbox database does not know.
#[derive(Parser)]
#[command(
    name = "hashdir",
    version,
    after_help = "Exit status: 0 success, 1 failure, 64 usage error."
)]
struct Cli {
    /// Instance root holding config/ and data/ (default: $MSG_ROOT, else ./msg).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// The partition to look on (default: the one the database names, else the default).
    #[arg(short = 'p', value_name = "PARTITION")]
    partition: Option<String>,
    /// Print only the hash path relative to the partition (for example 3f/a2/=joe).
    #[arg(short = 'r')]
    relative: bool,
    /// A user id, or a mailbox name user/<userid>/<folder>.
    target: String,
}

fn main() {
    let cli: Cli = parse_args();
    let root = instance_root(cli.root.clone());
    run("hashdir", || {
        let store = Store::open(&root)
            .with_context(|| format!("cannot open the store at {}", root.display()))?;
        let (dir, partition_path) = if cli.target.contains('/') {
            let name = MailboxName::parse(&cli.target)
                .with_context(|| format!("invalid mailbox name {:?}", cli.target))?;
            let part = match &cli.partition {
                Some(p) => p.clone(),
                None => match store.db().get(name.as_str())? {
                    Some(e) => e.partition,
                    None => store.config().default_partition,
                },
            };
            let pp = store.partition_path(&part)?;
            (layout::folder_dir(&pp, &name), pp)
        } else {
            let user = UserName::new(&cli.target)
                .with_context(|| format!("invalid user id {:?}", cli.target))?;
            let dir = store.user_dir(&user, cli.partition.as_deref())?;
            let pp = dir
                .ancestors()
                .nth(3)
                .map(PathBuf::from)
                .unwrap_or_default();
            (dir, pp)
        };
        if cli.relative {
            println!(
                "{}",
                dir.strip_prefix(&partition_path).unwrap_or(&dir).display()
            );
        } else {
            println!("{}", dir.display());
        }
        if !dir.exists() {
            eprintln!("hashdir: note: {} does not exist", dir.display());
        }
        Ok(())
    });
}
