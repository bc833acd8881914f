//! The corpus of `bench/reconstruct.sh`: the same messages written into our store (through
//! the store's bulk import) and into a Cyrus IMAP partition (`N.` files in each mailbox's
//! directory, plus a `ctl_mboxlist -u` dump naming the mailboxes), so that both tools
//! reconstruct identical bytes with identical internal dates.
//!
//! ```sh
//! cargo run --release -p reconstruct --example rx-corpus -- \
//!     --ours DIR --cyrus-spool DIR --cyrus-dump FILE --users 1000 --folders 5 --messages 20
//! ```
//! With `--users 1 --folders 1 --messages 100000` it is one folder of 100,000 messages.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Parser;
use msgstore::{flag, AppendRequest, MailboxName, Store};

#[derive(Parser)]
struct Args {
    /// Instance root of our store (created).
    #[arg(long)]
    ours: PathBuf,
    /// The Cyrus partition directory (its `uuid/` tree is written).
    #[arg(long)]
    cyrus_spool: PathBuf,
    /// Where to write the JSON mailbox list for `ctl_mboxlist -u`.
    #[arg(long)]
    cyrus_dump: PathBuf,
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Folders per user: INBOX, then F1, F2, ...
    #[arg(long, default_value_t = 5)]
    folders: usize,
    /// Messages per folder.
    #[arg(long, default_value_t = 20)]
    messages: usize,
}

/// 2026-01-01T00:00:00Z.
const BASE_DATE: i64 = 1_767_225_600;
const LINE: &[u8] = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n";

fn seed(user: usize, folder: usize, n: usize) -> u64 {
    (user as u64)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add((folder as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9))
        .wrapping_add(n as u64)
}

/// One message: headers, then text; one in ten a multipart with a base64 attachment.
/// Sizes from 1 KB to 16 KB (mean about 4 KB).
fn message(user: usize, folder: usize, n: usize) -> (Vec<u8>, i64) {
    let mut rng = fastrand::Rng::with_seed(seed(user, folder, n));
    let date = BASE_DATE + n as i64 * 60;
    let class = rng.u32(0..100);
    let size = match class {
        0..=69 => rng.usize(1024..3072),
        70..=89 => rng.usize(3072..8192),
        _ => rng.usize(8192..16_384),
    };
    let k = rng.u32(1..40);
    let mut m = format!(
        "Return-Path: <sender{k}@example.org>\r\n\
         From: \"Sender {k}\" <sender{k}@example.org>\r\n\
         To: <u{user}@example.com>\r\n\
         Subject: Reconstruct corpus {user}/{folder}/{n}\r\n\
         Message-ID: <{n}.{folder}.{user}@corpus.example>\r\n\
         Date: Thu, 1 Jan 2026 00:00:00 +0000\r\n\
         MIME-Version: 1.0\r\n"
    )
    .into_bytes();
    if class >= 90 {
        m.extend_from_slice(
            b"Content-Type: multipart/mixed; boundary=\"=-b0undary\"\r\n\r\n\
              --=-b0undary\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
        );
        for _ in 0..5 {
            m.extend_from_slice(LINE);
        }
        m.extend_from_slice(
            b"\r\n--=-b0undary\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\n\
              Content-Disposition: attachment; filename=\"data.bin\"\r\n\
              Content-Transfer-Encoding: base64\r\n\r\n",
        );
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        while m.len() + 100 < size {
            for _ in 0..76 {
                m.push(B64[rng.usize(0..64)]);
            }
            m.extend_from_slice(b"\r\n");
        }
        m.extend_from_slice(b"\r\n--=-b0undary--\r\n");
    } else {
        m.extend_from_slice(b"Content-Type: text/plain; charset=us-ascii\r\n\r\n");
        while m.len() + LINE.len() < size {
            m.extend_from_slice(LINE);
        }
    }
    (m, date)
}

fn folder_name(folder: usize) -> String {
    if folder == 0 {
        "INBOX".to_owned()
    } else {
        format!("F{folder}")
    }
}

/// Cyrus 3.6 keeps a mailbox in `<partition>/uuid/<c0>/<c1>/<uniqueid>` (what `mbpath`
/// prints); the unique id is ours to choose in the dump.
fn cyrus_uniqueid(user: usize, folder: usize) -> String {
    let h = seed(user, folder, 0x5eed).wrapping_mul(0x94d0_49bb_1331_11eb);
    format!("{h:016x}{user:08x}{folder:08x}")
}

fn cyrus_dir(spool: &Path, uniqueid: &str) -> PathBuf {
    spool
        .join("uuid")
        .join(&uniqueid[0..1])
        .join(&uniqueid[1..2])
        .join(uniqueid)
}

fn write_cyrus(a: &Args, user: usize, folder: usize) -> Result<()> {
    let dir = cyrus_dir(&a.cyrus_spool, &cyrus_uniqueid(user, folder));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for n in 0..a.messages {
        let (data, date) = message(user, folder, n);
        let p = dir.join(format!("{}.", n + 1));
        let f = std::fs::File::create(&p).with_context(|| format!("{}", p.display()))?;
        (&f).write_all(&data)?;
        f.set_modified(UNIX_EPOCH + Duration::from_secs(date as u64))?;
    }
    Ok(())
}

fn write_ours(store: &Store, a: &Args, user: usize, folder: usize) -> Result<()> {
    let name = MailboxName::parse(&format!("user/u{user}/{}", folder_name(folder)))?;
    store.create_mailbox(&name, None, None)?;
    let mut n = 0;
    while n < a.messages {
        let k = 10_000.min(a.messages - n);
        let batch = (n..n + k)
            .map(|i| {
                let (data, date) = message(user, folder, i);
                AppendRequest {
                    data,
                    flags: if i % 3 == 0 { flag::SEEN } else { 0 },
                    keywords: Vec::new(),
                    internal_date: Some(date),
                }
            })
            .collect();
        store.append_bulk(&name, batch)?;
        n += k;
    }
    Ok(())
}

fn main() -> Result<()> {
    let a = Args::parse();
    let store = Store::open(&a.ours).with_context(|| format!("opening {}", a.ours.display()))?;
    let mut dump = String::from("{\n");
    for user in 1..=a.users {
        for folder in 0..a.folders {
            let cname = if folder == 0 {
                format!("user.u{user}")
            } else {
                format!("user.u{user}.F{folder}")
            };
            if dump.len() > 2 {
                dump.push_str(",\n");
            }
            dump.push_str(&format!(
                "\"{cname}\": {{\"partition\": \"default\", \"acl\": {{\"u{user}\": \"lrswipkxtecdan\"}}, \"uniqueid\": \"{}\", \"mbtype\": \"e\", \"uidvalidity\": \"{}\", \"createdmodseq\": \"1\", \"foldermodseq\": \"1\"}}",
                cyrus_uniqueid(user, folder),
                1_700_000_000 + user * 16 + folder
            ));
        }
    }
    dump.push_str("\n}\n");
    std::fs::write(&a.cyrus_dump, dump)?;

    // Four writers: folder creation and bulk import are mostly waiting for the disk.
    let jobs: Vec<(usize, usize)> = (1..=a.users)
        .flat_map(|u| (0..a.folders).map(move |f| (u, f)))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|sc| -> Result<()> {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                sc.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(u, f)) = jobs.get(i) else {
                            return Ok(());
                        };
                        write_ours(&store, &a, u, f)?;
                        write_cyrus(&a, u, f)?;
                    }
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a writer panicked"))??;
        }
        Ok(())
    })?;
    Ok(())
}
