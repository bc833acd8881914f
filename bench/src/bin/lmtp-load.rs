//! lmtp-load: a load generator for LMTP servers (ours and Dovecot's), used by `bench/lmtp.sh`.
//!
//! Each of `--connections` connections says LHLO once, then delivers messages of `--size`
//! bytes (MAIL, RCPT, DATA) to users `user1..userN` in turn, pipelining nothing, and counts a
//! delivery when the per-recipient 250 reply arrives. Prints `deliveries/s`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Server address, host:port.
    #[arg(long)]
    addr: String,
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Total deliveries.
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 4096)]
    size: usize,
    /// Recipients are user1..userN.
    #[arg(long, default_value_t = 50)]
    users: usize,
    #[arg(long, default_value = "example.com")]
    domain: String,
}

fn reply(r: &mut BufReader<TcpStream>) -> Result<String> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            bail!("connection closed");
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(line);
        }
    }
}

fn expect(r: &mut BufReader<TcpStream>, code: &str) -> Result<()> {
    let l = reply(r)?;
    if !l.starts_with(code) {
        bail!("expected {code}, got {}", l.trim_end());
    }
    Ok(())
}

fn body(size: usize, n: usize) -> Vec<u8> {
    let mut m = format!(
        "From: load@example.org\r\nSubject: load {n}\r\nMessage-ID: <{n}.{}@load>\r\n\r\n",
        std::process::id()
    )
    .into_bytes();
    while m.len() + 70 < size {
        m.extend_from_slice(
            b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklm\r\n",
        );
    }
    m
}

fn main() -> Result<()> {
    let a = Args::parse();
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|sc| -> Result<()> {
        let handles: Vec<_> = (0..a.connections)
            .map(|_| {
                sc.spawn(|| -> Result<()> {
                    let s = TcpStream::connect(&a.addr)
                        .with_context(|| format!("connecting to {}", a.addr))?;
                    s.set_nodelay(true)?;
                    let mut w = s.try_clone()?;
                    let mut r = BufReader::new(s);
                    expect(&mut r, "220")?;
                    write!(w, "LHLO load.example.org\r\n")?;
                    expect(&mut r, "250")?;
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= a.messages {
                            break;
                        }
                        let user = n % a.users + 1;
                        write!(w, "MAIL FROM:<load@example.org>\r\n")?;
                        expect(&mut r, "250")?;
                        write!(w, "RCPT TO:<user{user}@{}>\r\n", a.domain)?;
                        expect(&mut r, "250")?;
                        write!(w, "DATA\r\n")?;
                        expect(&mut r, "354")?;
                        w.write_all(&body(a.size, n))?;
                        w.write_all(b".\r\n")?;
                        expect(&mut r, "250")?;
                    }
                    write!(w, "QUIT\r\n")?;
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("connection thread panicked"))??;
        }
        Ok(())
    })?;
    println!("{:.0}", a.messages as f64 / start.elapsed().as_secs_f64());
    Ok(())
}
