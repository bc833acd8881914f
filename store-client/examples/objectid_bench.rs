//! What object ids cost: building a user's `EmailIndex` from cold, bringing it up to date
//! when nothing or one message changed, and naming every message of a selected folder.
//!
//! ```sh
//! cargo run --release -p store-client --example objectid_bench -- /var/tmp/objectid-bench 100000
//! ```
//! The directory must not exist (it is created, and removed at the end).

use std::time::Instant;

use store_client::{Secret, StoreClient};

fn mail(i: usize) -> Vec<u8> {
    format!(
        "From: Alice <alice@example.com>\r\nTo: joe@example.com\r\nSubject: Report {i}\r\n\
Message-ID: <m{i}@example.com>\r\nReferences: <m{}@example.com>\r\n\r\n{}\r\n",
        i / 10 * 10,
        "All the figures for this week are in the attached sheet. ".repeat(20)
    )
    .into_bytes()
}

fn ms(t: Instant) -> String {
    format!("{:.1} ms", t.elapsed().as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().ok_or("usage: DIR [MESSAGES]")?);
    let n: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);
    if dir.exists() {
        return Err(format!("{} exists", dir.display()).into());
    }
    std::fs::create_dir_all(dir.join("config"))?;
    let users = userdb::UserDb::open(dir.join("config/passwd"))?;
    users.add("joe", &Secret::new("pw".to_string()))?;
    let client = StoreClient::open(&dir).await?;
    let joe = client.session_for("joe").await?;

    let t = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let batch = chunk.iter().map(|&i| (mail(i), vec![], None)).collect();
        joe.append_many("INBOX", batch).await?;
    }
    println!(
        "append {n} messages of {} bytes (parse + SHA-256 + store): {}",
        mail(0).len(),
        ms(t)
    );

    // A second handle on the store: its index starts cold, as in a fresh process.
    let cold = StoreClient::open(&dir).await?.session_for("joe").await?;
    let t = Instant::now();
    let idx = cold.email_index().await?;
    println!("email_index cold, {} Emails: {}", idx.len(), ms(t));
    // Callers drop their snapshot when done; one still held is copied on the next change.
    drop(idx);
    let t = Instant::now();
    cold.email_index().await?;
    println!("email_index, nothing changed: {}", ms(t));
    joe.append("INBOX", mail(n), &[], None).await?;
    let t = Instant::now();
    let idx = cold.email_index().await?;
    println!(
        "email_index after one delivery: {} ({} Emails)",
        ms(t),
        idx.len()
    );

    let sel = cold.select("INBOX", true).await?;
    let uids = sel.uids().to_vec();
    let t = Instant::now();
    let ids = sel.object_ids(&uids).await?;
    println!("SelectedFolder::object_ids of {}: {}", ids.len(), ms(t));
    let t = Instant::now();
    let st = sel.structures(&uids).await?;
    println!("for comparison, structures of {}: {}", st.len(), ms(t));

    drop((sel, cold, joe, client));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
