//! Profiling aid: 16 threads appending 4 KB messages to one folder.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
fn main() {
    let dir = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or("/var/tmp/append16".into()),
    );
    let _ = std::fs::remove_dir_all(&dir);
    let s = msgstore::Store::open(&dir).unwrap();
    let n = msgstore::MailboxName::parse("user/a/INBOX").unwrap();
    s.create_mailbox(&n, None, None).unwrap();
    let data = vec![b'x'; 4096];
    let next = AtomicUsize::new(0);
    let t = Instant::now();
    std::thread::scope(|sc| {
        for _ in 0..16 {
            sc.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < 4000 {
                    s.append(
                        &n,
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
    println!("{:.0} appends/s", 4000.0 / t.elapsed().as_secs_f64());
}
