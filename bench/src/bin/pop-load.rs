//! pop-load: a load generator for POP3 servers (ours and Dovecot's), used by `bench/pop.sh`.
//!
//! `--mode login`: each of `--connections` connections in turn connects, logs in
//! (USER/PASS) as `user1..userN`, says QUIT, for `--seconds`; prints logins/s.
//! `--mode retr`: each connection logs in once per pass and RETRs every message of the
//! maildrop, for `--seconds`; prints megabytes (10^6 bytes) retrieved per second.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    addr: String,
    #[arg(long, default_value = "login")]
    mode: String,
    #[arg(long, default_value_t = 8)]
    connections: usize,
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    #[arg(long, default_value_t = 50)]
    users: usize,
    #[arg(long, default_value = "pass")]
    password: String,
}

struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    fn open(addr: &str) -> Result<Conn> {
        let s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let w = s.try_clone()?;
        let mut c = Conn {
            r: BufReader::with_capacity(256 * 1024, s),
            w,
        };
        c.ok()?;
        Ok(c)
    }
    fn line(&mut self) -> Result<String> {
        let mut l = String::new();
        if self.r.read_line(&mut l)? == 0 {
            bail!("connection closed");
        }
        Ok(l)
    }
    fn ok(&mut self) -> Result<String> {
        let l = self.line()?;
        if !l.starts_with("+OK") {
            bail!("expected +OK, got {}", l.trim_end());
        }
        Ok(l)
    }
    fn cmd(&mut self, c: &str) -> Result<String> {
        self.w.write_all(c.as_bytes())?;
        self.w.write_all(b"\r\n")?;
        self.ok()
    }
    /// Read a multi-line response body up to the terminating ".", returning its size.
    fn body(&mut self) -> Result<u64> {
        let mut n = 0u64;
        let mut buf = Vec::with_capacity(1024);
        loop {
            buf.clear();
            if self.r.read_until(b'\n', &mut buf)? == 0 {
                bail!("connection closed in a multi-line response");
            }
            if buf == b".\r\n" {
                return Ok(n);
            }
            n += buf.len() as u64;
        }
    }
}

fn login(c: &mut Conn, user: usize, pw: &str) -> Result<()> {
    c.cmd(&format!("USER user{user}"))?;
    c.cmd(&format!("PASS {pw}"))?;
    Ok(())
}

fn main() -> Result<()> {
    let a = Args::parse();
    let next = AtomicUsize::new(0);
    let count = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let start = Instant::now();
    std::thread::scope(|sc| -> Result<()> {
        let hs: Vec<_> = (0..a.connections)
            .map(|_| {
                sc.spawn(|| -> Result<()> {
                    while Instant::now() < deadline {
                        let user = next.fetch_add(1, Ordering::Relaxed) % a.users + 1;
                        let mut c = Conn::open(&a.addr)?;
                        login(&mut c, user, &a.password)?;
                        if a.mode == "retr" {
                            let stat = c.cmd("STAT")?;
                            let n: usize = stat
                                .split_whitespace()
                                .nth(1)
                                .and_then(|v| v.parse().ok())
                                .unwrap_or(0);
                            for i in 1..=n {
                                c.cmd(&format!("RETR {i}"))?;
                                count.fetch_add(c.body()?, Ordering::Relaxed);
                                if Instant::now() >= deadline {
                                    break;
                                }
                            }
                        } else {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        c.cmd("QUIT")?;
                        let mut rest = Vec::new();
                        let _ = c.r.read_to_end(&mut rest);
                    }
                    Ok(())
                })
            })
            .collect();
        for h in hs {
            h.join()
                .map_err(|_| anyhow::anyhow!("connection thread panicked"))??;
        }
        Ok(())
    })?;
    let secs = start.elapsed().as_secs_f64();
    let total = count.load(Ordering::Relaxed) as f64;
    if a.mode == "retr" {
        println!("{:.1}", total / 1e6 / secs);
    } else {
        println!("{:.0}", total / secs);
    }
    Ok(())
}
