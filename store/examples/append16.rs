//! Profiling aid: 16 threads appending 4 KB messages to one folder (with `spread` as the
//! second argument, each to a folder of its own), or (with `loop`) the disk's own
//! create+write+fdatasync+rename loop that store-bench compares appends with. Prints the rate
//! and the process's CPU time per operation.
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

const OPS: usize = 4000;

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills a zeroed struct.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().unwrap_or("/var/tmp/append16".into()));
    let mode = args.next();
    let disk_loop = mode.as_deref() == Some("loop");
    // `spread`: each writer appends to a folder of its own.
    let spread = mode.as_deref() == Some("spread");
    // Deleting files right before measuring would make every create scan past the
    // deleted inodes (ext4 without a journal skips recently freed ones): use a new directory.
    assert!(
        !dir.exists(),
        "{} exists: give a new directory",
        dir.display()
    );
    std::fs::create_dir_all(&dir).unwrap();
    let s = msgstore::Store::open(&dir).unwrap();
    let folders: Vec<msgstore::MailboxName> = (0..16)
        .map(|w| msgstore::MailboxName::parse(&format!("user/a{w}/INBOX")).unwrap())
        .collect();
    for f in &folders {
        s.create_mailbox(f, None, None).unwrap();
    }
    let data = vec![b'x'; 4096];
    let next = AtomicUsize::new(0);
    let cpu = cpu_seconds();
    let t = Instant::now();
    std::thread::scope(|sc| {
        for _ in 0..16 {
            sc.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= OPS {
                    break;
                }
                if disk_loop {
                    let tmp = dir.join(format!(".tmp.{i}"));
                    let mut f = std::fs::File::create(&tmp).unwrap();
                    f.write_all(&data).unwrap();
                    f.sync_data().unwrap();
                    std::fs::rename(&tmp, dir.join(format!("{i}.msg"))).unwrap();
                } else {
                    s.append(
                        &folders[if spread { i % 16 } else { 0 }],
                        vec![msgstore::AppendRequest {
                            data: data.clone(),
                            ..Default::default()
                        }],
                    )
                    .unwrap();
                }
            });
        }
    });
    let wall = t.elapsed().as_secs_f64();
    println!(
        "{}: {:.0} ops/s, {:.3} ms CPU per op",
        if disk_loop { "disk loop" } else { "append" },
        OPS as f64 / wall,
        (cpu_seconds() - cpu) * 1000.0 / OPS as f64
    );
    if !disk_loop {
        // The message log's checkpoint flushes the files later: count it.
        msgstore::wal::checkpoint_now();
        let wall = t.elapsed().as_secs_f64();
        println!(
            "append with checkpoint: {:.0} ops/s, {:.3} ms CPU per op",
            OPS as f64 / wall,
            (cpu_seconds() - cpu) * 1000.0 / OPS as f64
        );
    }
}
