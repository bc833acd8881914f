//! Populate a store with many folders for bench/stored.sh: `populate ROOT FOLDERS [FIRST]`
//! makes users `b<k>` with 10 folders each (INBOX, the special-use folders, then `F<n>`), each
//! INBOX with one message, on 4 threads. FIRST numbers the users from there (to add folders
//! after a snapshot).

use std::sync::atomic::{AtomicUsize, Ordering};

use msgstore::{AppendRequest, MailboxName, Store, UserName};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: populate ROOT FOLDERS [FIRST-USER]");
        std::process::exit(64);
    }
    let root = std::path::PathBuf::from(&args[1]);
    let folders: usize = args[2].parse().expect("FOLDERS is a number");
    let first: usize = args
        .get(3)
        .map_or(0, |a| a.parse().expect("FIRST-USER is a number"));
    let store = Store::open(&root).expect("open the store");
    let users = folders.div_ceil(10);
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= users {
                    break;
                }
                let u = UserName::new(&format!("b{}", first + i)).expect("user name");
                let mut made = store.provision_user(&u).expect("provision").len();
                let mut n = 0;
                while made < 10 {
                    let name = MailboxName::for_user(&u, &format!("F{n}")).expect("name");
                    store.create_mailbox(&name, None, None).expect("create");
                    made += 1;
                    n += 1;
                }
                let inbox = MailboxName::for_user(&u, "INBOX").expect("name");
                store
                    .append(
                        &inbox,
                        vec![AppendRequest {
                            data: format!("Subject: {i}\r\n\r\nbody\r\n").into_bytes(),
                            ..Default::default()
                        }],
                    )
                    .expect("append");
            });
        }
    });
}
