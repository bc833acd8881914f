//! mboxutil: list, create, delete and rename folders, and get or set quotas.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;
use msg_admin::{instance_root, parse_args, parse_size, run, usage_error};
use msgstore::{MailboxName, Pattern, Store, UserName};

/// Manage mailboxes (folders) in the message store.
///
/// Mailboxes are named as the store names them: user/<userid>/<folder>, for example
/// user/joe/INBOX or user/joe/Work/2026.
///
/// Patterns (-p) use IMAP LIST wildcards: '*' matches anything, '%' anything but the '/'
/// separator. Most shells expand '*' themselves, so quote patterns: mboxutil -l -p "user/usr44*".
#[derive(Parser)]
#[command(
    name = "mboxutil",
    version,
    after_help = "Exit status: 0 success, 1 failure, 64 usage error."
)]
struct Cli {
    /// Instance root holding config/ and data/ (default: $MSG_ROOT, else ./msg).
    #[arg(long, value_name = "DIR", global = true)]
    root: Option<PathBuf>,

    /// List mailboxes (all, or those matching -p): name, partition, messages, size.
    #[arg(short = 'l', group = "op")]
    list: bool,

    /// With -l: only mailboxes matching PATTERN (quote it: "user/joe/*").
    #[arg(short = 'p', value_name = "PATTERN", requires = "list")]
    pattern: Option<String>,

    /// With -l: also print each mailbox's directory.
    #[arg(short = 'x', requires = "list")]
    paths: bool,

    /// Create MAILBOX (and any missing parent).
    #[arg(short = 'c', value_name = "MAILBOX", group = "op")]
    create: Option<String>,

    /// With -c: the partition to create it on (default: the user's, else store.defaultpartition).
    #[arg(short = 'P', value_name = "PARTITION", requires = "create")]
    partition: Option<String>,

    /// Delete MAILBOX and its sub-mailboxes; user/<userid> deletes all of a user's mailboxes.
    #[arg(short = 'd', value_name = "MAILBOX", group = "op")]
    delete: Option<String>,

    /// Rename OLD to NEW with its sub-mailboxes, optionally onto PARTITION (works while the
    /// user is logged in). OLD == NEW with a PARTITION moves the mailbox to that partition.
    #[arg(short = 'r', num_args = 2..=3, value_names = ["OLD", "NEW", "PARTITION"], group = "op")]
    rename: Option<Vec<String>>,

    /// Show the quota of ROOT (user/<userid>); with -s/-m, set it.
    #[arg(short = 'q', value_name = "ROOT", group = "op")]
    quota: Option<String>,

    /// With -q: storage limit (bytes, or with K/M/G/T; 'none' for unlimited).
    #[arg(short = 's', value_name = "SIZE", requires = "quota")]
    storage: Option<String>,

    /// With -q: message count limit ('none' for unlimited).
    #[arg(short = 'm', value_name = "COUNT", requires = "quota")]
    messages: Option<String>,
}

fn mailbox(s: &str) -> anyhow::Result<MailboxName> {
    if s.starts_with('/') || s.starts_with('.') {
        bail!("{s:?} looks like a path: name mailboxes as user/<userid>/<folder>");
    }
    MailboxName::parse(s).with_context(|| format!("invalid mailbox name {s:?}"))
}

fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", U[i])
    }
}

fn main() {
    let cli: Cli = parse_args();
    let root = instance_root(cli.root.clone());
    if !cli.list
        && cli.create.is_none()
        && cli.delete.is_none()
        && cli.rename.is_none()
        && cli.quota.is_none()
    {
        usage_error("mboxutil", "one of -l, -c, -d, -r or -q is required");
    }
    run("mboxutil", || {
        let store = Store::open(&root)
            .with_context(|| format!("cannot open the store at {}", root.display()))?;
        if cli.list {
            let pattern = Pattern::new(cli.pattern.as_deref().unwrap_or("*"));
            let entries = store.list(&pattern)?;
            if entries.is_empty() {
                eprintln!(
                    "mboxutil: no mailbox matches {}",
                    cli.pattern.as_deref().unwrap_or("*")
                );
                std::process::exit(1);
            }
            for e in entries {
                let name = MailboxName::parse(&e.name)?;
                let status = store.status(&name);
                let (msgs, size) = match &status {
                    Ok(s) => (s.messages.to_string(), human(s.size)),
                    Err(err) => ("?".into(), format!("({err})")),
                };
                if cli.paths {
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        e.name,
                        e.partition,
                        msgs,
                        size,
                        store.folder_dir(&name)?.display()
                    );
                } else {
                    println!("{}\t{}\t{}\t{}", e.name, e.partition, msgs, size);
                }
            }
        } else if let Some(c) = &cli.create {
            let name = mailbox(c)?;
            for parent in store.create_parents(&name, cli.partition.as_deref())? {
                println!("created {parent}");
            }
            let e = store.create_mailbox(&name, cli.partition.as_deref(), None)?;
            println!("created {} on partition {}", e.name, e.partition);
        } else if let Some(d) = &cli.delete {
            let parts: Vec<&str> = d.trim_end_matches('/').split('/').collect();
            if parts.len() == 2 && parts[0] == "user" {
                let user = UserName::new(parts[1])
                    .with_context(|| format!("invalid user id {:?}", parts[1]))?;
                let all = store.db().list_prefix(&format!("user/{user}/"))?;
                if all.is_empty() {
                    bail!("user {user} has no mailboxes");
                }
                for e in all.iter().rev() {
                    store.delete_mailbox(&MailboxName::parse(&e.name)?, false)?;
                    println!("deleted {}", e.name);
                }
            } else {
                let name = mailbox(d)?;
                let subtree = store.subtree(&name)?;
                if subtree.is_empty() {
                    bail!("mailbox does not exist: {name}");
                }
                for e in subtree.iter().rev() {
                    store.delete_mailbox(&MailboxName::parse(&e.name)?, false)?;
                    println!("deleted {}", e.name);
                }
                if store.db().get(name.as_str())?.is_some() {
                    bail!("{name} was not deleted");
                }
            }
        } else if let Some(r) = &cli.rename {
            let from = mailbox(&r[0])?;
            let to = mailbox(&r[1])?;
            store.rename_mailbox(&from, &to, r.get(2).map(String::as_str))?;
            match r.get(2) {
                Some(p) => println!("renamed {from} to {to} on partition {p}"),
                None => println!("renamed {from} to {to}"),
            }
        } else if let Some(q) = &cli.quota {
            let root_name = q.trim_end_matches('/');
            let parts: Vec<&str> = root_name.split('/').collect();
            if parts.len() != 2 || parts[0] != "user" || UserName::new(parts[1]).is_err() {
                bail!("invalid quota root {q:?}: quota roots are user/<userid>");
            }
            if cli.storage.is_some() || cli.messages.is_some() {
                let cur = store.quota(root_name)?;
                let storage = match &cli.storage {
                    Some(s) => parse_size(s).map_err(anyhow::Error::msg)?,
                    None => cur.storage_limit,
                };
                let messages = match &cli.messages {
                    Some(m) if m.eq_ignore_ascii_case("none") => None,
                    Some(m) => Some(m.parse::<u64>().map_err(|_| {
                        anyhow::anyhow!("invalid message count {m:?}: expected a number or 'none'")
                    })?),
                    None => cur.message_limit,
                };
                store.set_quota(root_name, storage, messages)?;
            }
            let qt = store.quota(root_name)?;
            let lim = |v: Option<u64>, f: fn(u64) -> String| {
                v.map(f).unwrap_or_else(|| "unlimited".into())
            };
            println!("quota root {}", qt.root);
            println!(
                "  storage  {} used of {}",
                human(qt.storage_used),
                lim(qt.storage_limit, human)
            );
            println!(
                "  messages {} used of {}",
                qt.messages_used,
                lim(qt.message_limit, |n| n.to_string())
            );
        }
        Ok(())
    });
}
