//! store-bench: the message store's benchmark (issue 2), run as
//!
//! ```text
//! cargo run --release -p store-bench --bin store-bench -- --dir /var/tmp/store-bench [--messages 1000000] [--runs 5]
//! ```
//!
//! 1. The disk's own limit: create a file, write 4 KB, fsync, rename; 1 and 16 writers.
//! 2. Durable appends of 4 KB messages through the store: 1 and 16 writers into one folder,
//!    and 16 writers into 16 folders; each as a ratio to (1) with the same writer count.
//! 3. A folder of N messages (default one million): opening it in a fresh store and reading
//!    every UID and flag, cold (index evicted from the page cache) and warm; a refresh when
//!    nothing changed; the resident memory the open folder costs.
//!
//! Each figure is the median of `--runs` runs; the machine is shared, so medians, not bests.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use msgstore::{AppendRequest, MailboxName, Store};

#[derive(Parser)]
struct Args {
    /// Scratch directory (on the disk to measure); it is emptied first.
    #[arg(long, default_value = "/var/tmp/store-bench")]
    dir: PathBuf,
    /// Messages in the large folder.
    #[arg(long, default_value_t = 1_000_000)]
    messages: usize,
    /// Runs per figure (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Files (appends) per run and writer count for the throughput figures.
    #[arg(long, default_value_t = 2000)]
    ops: usize,
    /// Writer counts for the throughput figures.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16])]
    writers: Vec<usize>,
    /// Skip the large-folder part.
    #[arg(long)]
    skip_large: bool,
    /// Skip the throughput part.
    #[arg(long)]
    skip_throughput: bool,
    /// Remove the scratch directory at the end (by default the large folder is kept, and
    /// reused by the next run when it has the same number of messages).
    #[arg(long)]
    clean: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn message(n: usize) -> Vec<u8> {
    let mut m = format!(
        "From: Bench <bench@example.com>\r\nTo: user@example.com\r\nSubject: message {n}\r\nDate: Tue, 3 Mar 2026 10:00:00 +0000\r\nMessage-ID: <{n}@bench.example.com>\r\n\r\n"
    )
    .into_bytes();
    while m.len() < 4096 - 2 {
        m.extend_from_slice(
            b"The quick brown fox jumps over the lazy dog. 0123456789 abcdefghij\r\n",
        );
    }
    m.truncate(4094);
    m.extend_from_slice(b"\r\n");
    m
}

/// Rate of `total` operations split over `writers` threads, each running `op(i)`, then
/// `settle()` (timed too).
fn rate(
    writers: usize,
    total: usize,
    op: impl Fn(usize) -> Result<()> + Sync,
    settle: impl FnOnce(),
) -> Result<f64> {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..writers)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            return Ok(());
                        }
                        op(i)?;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
        }
        Ok(())
    })?;
    settle();
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// After appends: the message log's checkpoint, which flushes the message files that the
/// appends made durable through the log, is part of their cost.
fn checkpoint() {
    msgstore::wal::checkpoint_now();
}

fn disk_rate(dir: &Path, writers: usize, total: usize) -> Result<f64> {
    std::fs::create_dir_all(dir)?;
    let data = message(0);
    let r = rate(
        writers,
        total,
        |i| {
            let tmp = dir.join(format!(".tmp.{i}"));
            let mut f = File::create(&tmp)?;
            f.write_all(&data)?;
            f.sync_data()?;
            std::fs::rename(&tmp, dir.join(format!("{i}.msg")))?;
            Ok(())
        },
        || {},
    )?;
    // The files stay until the end of the benchmark: deleting thousands of files right before
    // an append measure would make every file it creates pay a scan past the freed inodes
    // (ext4 without a journal does not reuse an inode freed in the last minutes), a cost the
    // loop itself did not pay.
    Ok(r)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn evict(path: &Path) {
    if let Ok(f) = File::open(path) {
        // SAFETY: fadvise on a valid descriptor; only drops clean cached pages.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let _ = std::fs::remove_dir_all(args.dir.join("root"));
    for &writers in &args.writers {
        for run in 0..args.runs {
            let _ = std::fs::remove_dir_all(args.dir.join(format!("disk-{writers}-{run}")));
        }
    }
    std::fs::create_dir_all(&args.dir).context("creating the scratch directory")?;
    println!(
        "# store-bench: {} runs per figure, medians; {} ops per run; append figures include the \
         checkpoint of the message log (the message files' own flush) at the end of each run",
        args.runs, args.ops
    );

    // 1 + 2: throughput.
    let store = Arc::new(Store::open(&args.dir.join("root"))?);
    let mut lines = Vec::new();
    let writer_counts: &[usize] = if args.skip_throughput {
        &[]
    } else {
        &args.writers
    };
    for &writers in writer_counts {
        let mut disk = Vec::new();
        let mut one_folder = Vec::new();
        let mut many_folders = Vec::new();
        for run in 0..args.runs {
            let total = if writers == 1 { args.ops } else { args.ops * 4 };
            disk.push(disk_rate(
                &args.dir.join(format!("disk-{writers}-{run}")),
                writers,
                total,
            )?);
            let f = MailboxName::parse(&format!("user/bench{writers}/r{run}"))?;
            store.create_mailbox(&f, None, None)?;
            let data = message(1);
            one_folder.push(rate(
                writers,
                total,
                |_| {
                    store.append(
                        &f,
                        vec![AppendRequest {
                            data: data.clone(),
                            ..Default::default()
                        }],
                    )?;
                    Ok(())
                },
                checkpoint,
            )?);
            if writers > 1 {
                let folders: Vec<MailboxName> = (0..writers)
                    .map(|w| MailboxName::parse(&format!("user/bench{w}/spread{run}")))
                    .collect::<std::result::Result<_, _>>()?;
                for f in &folders {
                    store.create_mailbox(f, None, None)?;
                }
                many_folders.push(rate(
                    writers,
                    total,
                    |i| {
                        store.append(
                            &folders[i % writers],
                            vec![AppendRequest {
                                data: data.clone(),
                                ..Default::default()
                            }],
                        )?;
                        Ok(())
                    },
                    checkpoint,
                )?);
            }
        }
        // The disk's rate moves from one minute to the next on a shared machine: besides the
        // ratio of the medians, the median of each run's own ratio (both measured seconds
        // apart) is shown.
        let per_run = |v: &[f64]| median(v.iter().zip(&disk).map(|(a, d)| a / d).collect());
        let a_run = per_run(&one_folder);
        let m_run = per_run(&many_folders);
        let d = median(disk);
        let a = median(one_folder);
        lines.push(format!(
            "| disk create+write 4 KB+fsync+rename, {writers} writer(s) | {d:.0} files/s | 1.00 | 1.00 |"
        ));
        lines.push(format!(
            "| durable append 4 KB, {writers} writer(s), one folder | {a:.0} msgs/s | {:.2} | {a_run:.2} |",
            a / d
        ));
        if !many_folders.is_empty() {
            let m = median(many_folders);
            lines.push(format!("| durable append 4 KB, {writers} writers, {writers} folders | {m:.0} msgs/s | {:.2} | {m_run:.2} |", m / d));
        }
    }
    if !lines.is_empty() {
        println!("\n| measure | figure | ratio to the disk's own rate | median of per-run ratios |\n|---|---|---|---|");
        for l in &lines {
            println!("{l}");
        }
    }
    drop(store);
    let _ = std::fs::remove_dir_all(args.dir.join("root"));
    for &writers in writer_counts {
        for run in 0..args.runs {
            let _ = std::fs::remove_dir_all(args.dir.join(format!("disk-{writers}-{run}")));
        }
    }

    if args.skip_large {
        return Ok(());
    }
    // 3: the large folder.
    let root = args.dir.join("large");
    let big = MailboxName::parse("user/big/INBOX")?;
    let existing = Store::open(&root)
        .and_then(|s| s.status(&big))
        .map(|st| st.messages as usize)
        .unwrap_or(0);
    if existing != args.messages {
        let _ = std::fs::remove_dir_all(&root);
        let store = Store::open(&root)?;
        store.create_mailbox(&big, None, None)?;
        let start = Instant::now();
        let batch = 10_000;
        let mut n = 0;
        while n < args.messages {
            let k = batch.min(args.messages - n);
            let msgs = (n..n + k)
                .map(|i| AppendRequest {
                    data: format!("From: a@example.com\r\nSubject: {i}\r\n\r\nbody {i}\r\n")
                        .into_bytes(),
                    flags: if i % 3 == 0 { msgstore::flag::SEEN } else { 0 },
                    ..Default::default()
                })
                .collect();
            store.append_bulk(&big, msgs)?;
            n += k;
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "\nbuilt a folder of {} messages in {secs:.1} s ({:.0} msgs/s, bulk import)",
            args.messages,
            args.messages as f64 / secs
        );
    }
    let idx = {
        let store = Store::open(&root)?;
        store.folder_dir(&big)?
    };
    let open_and_read = |cold: bool| -> Result<(f64, u64, usize, usize)> {
        if cold {
            evict(&idx.join("store.idx"));
            evict(&idx.join("store.jnl"));
        }
        let store = Store::open(&root)?;
        let before = rss_kib();
        let start = Instant::now();
        let (count, seen, bytes) = store.with_state(&big, |s| {
            let mut count = 0usize;
            let mut seen = 0usize;
            for m in s.live() {
                count += m.uid as usize & 1; // touch every UID
                seen += (m.flags & msgstore::flag::SEEN != 0) as usize;
            }
            Ok((count, seen, s.memory_bytes()))
        })?;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        let mem = rss_kib().saturating_sub(before);
        std::hint::black_box(count);
        Ok((ms, mem, seen, bytes))
    };
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    // The first load in this process grows the heap: its RSS delta is the folder's true cost.
    let (ms, first_rss_kib, seen, bytes) = open_and_read(true)?;
    cold.push(ms);
    for _ in 1..args.runs {
        let (ms, _, _, _) = open_and_read(true)?;
        cold.push(ms);
    }
    for _ in 0..args.runs {
        let (ms, _, _, _) = open_and_read(false)?;
        warm.push(ms);
    }
    std::hint::black_box(seen);
    // Refresh of an already open folder with nothing new (what every command pays).
    let store = Store::open(&root)?;
    store.with_state(&big, |_| Ok(()))?;
    let mut refresh = Vec::new();
    for _ in 0..args.runs.max(5) {
        let start = Instant::now();
        store.with_state(&big, |s| Ok(s.header.exists))?;
        refresh.push(start.elapsed().as_secs_f64() * 1e6);
    }
    println!("\n| {} messages | median |\n|---|---|", args.messages);
    println!(
        "| open + read every UID and flag, cold (index evicted) | {:.0} ms |",
        median(cold)
    );
    println!(
        "| open + read every UID and flag, warm | {:.0} ms |",
        median(warm)
    );
    println!(
        "| refresh of the open folder, nothing changed | {:.0} µs |",
        median(refresh)
    );
    println!(
        "| memory of the open folder: in-memory index / RSS growth at first open | {:.1} MiB / {:.1} MiB |",
        bytes as f64 / 1048576.0,
        first_rss_kib as f64 / 1024.0
    );
    if args.clean {
        let _ = std::fs::remove_dir_all(&args.dir);
    }
    Ok(())
}
