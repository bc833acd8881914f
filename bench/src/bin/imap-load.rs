//! imap-load: a load generator for IMAP servers (ours and Dovecot's), used by `bench/imap.sh`.
//!
//! Subcommands:
//! - `mixed`: `--clients` concurrent clients, each looping sessions for `--seconds` (or up to
//!   `--sessions` in all): connect,
//!   LOGIN, SELECT INBOX, then `--rounds` times: UID FETCH 1:* (FLAGS), UID FETCH of a window
//!   of 20 messages (ENVELOPE), UID FETCH BODY.PEEK[] of a random message, UID STORE +FLAGS or
//!   -FLAGS (\Flagged) on a random message, APPEND of a new message, UID STORE +FLAGS.SILENT
//!   (\Deleted) and UID EXPUNGE of that message (by its APPENDUID); then LOGOUT. Prints
//!   operations per second, latency percentiles per command, and errors (any NO or BAD, any
//!   broken connection or timeout).
//! - `big`: SELECT plus UID FETCH 1:* (FLAGS) on one (large) folder, `--runs` times on fresh
//!   connections; prints the median times.
//! - `idle`: opens `--connections` connections, logs each in, holds them until the file
//!   `--release` exists (or `--hold` seconds pass); prints `ready` once all are logged in, so
//!   that a script can measure the server's memory per idle authenticated connection.
//! - `load-store` / `load-maildir`: write the same generated corpus (users `user1..userN`, each
//!   with `--messages` messages in INBOX, and optionally a user `big` with a large INBOX) into
//!   our store (through the store API) or into Maildir directories for Dovecot. Messages are a
//!   deterministic function of (user, number), so both sides get identical bytes, flags and
//!   internal dates.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The mixed workload.
    Mixed(MixedArgs),
    /// SELECT + UID FETCH 1:* (FLAGS) on one folder.
    Big(BigArgs),
    /// Hold many idle authenticated connections.
    Idle(IdleArgs),
    /// Load the corpus into our store (instance root).
    LoadStore(LoadArgs),
    /// Load the corpus into Maildir homes (HOME/USER/Maildir) for Dovecot.
    LoadMaildir(LoadArgs),
}

#[derive(Parser)]
struct MixedArgs {
    /// Seconds to wait for the server at any one step before counting a failure.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Server address, host:port.
    #[arg(long)]
    addr: String,
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Start no new session after this many seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Stop after this many sessions in all (0: no limit, only --seconds).
    #[arg(long, default_value_t = 0)]
    sessions: usize,
    /// Rounds of fetch/store/append/expunge per session (between LOGIN and LOGOUT).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Sessions log in as user1..userN in turn.
    #[arg(long, default_value_t = 50)]
    users: usize,
    #[arg(long, default_value = "pass")]
    password: String,
}

#[derive(Parser)]
struct BigArgs {
    /// Seconds to wait for the server at any one step before counting a failure.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    #[arg(long)]
    addr: String,
    #[arg(long, default_value = "big")]
    user: String,
    #[arg(long, default_value = "pass")]
    password: String,
    #[arg(long, default_value = "INBOX")]
    folder: String,
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

#[derive(Parser)]
struct IdleArgs {
    /// Seconds to wait for the server at any one step before counting a failure.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    #[arg(long)]
    addr: String,
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Logins in flight at once while opening the connections.
    #[arg(long, default_value_t = 32)]
    parallel: usize,
    #[arg(long, default_value_t = 50)]
    users: usize,
    #[arg(long, default_value = "pass")]
    password: String,
    /// Close the connections once this file exists.
    #[arg(long)]
    release: PathBuf,
    /// Close them after this many seconds at the latest.
    #[arg(long, default_value_t = 600)]
    hold: u64,
}

#[derive(Parser)]
struct LoadArgs {
    /// Instance root (load-store) or the directory of the users' homes (load-maildir).
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value_t = 50)]
    users: usize,
    /// Messages per user.
    #[arg(long, default_value_t = 200)]
    messages: usize,
    /// Messages in the INBOX of the user `big` (0: no such user).
    #[arg(long, default_value_t = 0)]
    big: usize,
}

// ---------------------------------------------------------------------------------------
// The corpus.

/// 2026-01-01T00:00:00Z; message n of a folder is dated n minutes later.
const BASE_DATE: i64 = 1_767_225_600;

/// Days since 1970-01-01 to (year, month, day) (H. Hinnant's civil_from_days).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn rfc5322_date(t: i64) -> String {
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = t.div_euclid(86_400);
    let s = t.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    format!(
        "{}, {d} {} {y} {:02}:{:02}:{:02} +0000",
        WD[days.rem_euclid(7) as usize],
        MON[(m - 1) as usize],
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

const LINE: &[u8] = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n";

/// One corpus message: its bytes, whether it is \Seen and \Flagged, its internal date.
struct CorpusMsg {
    data: Vec<u8>,
    seen: bool,
    flagged: bool,
    date: i64,
}

fn seed(user: &str, n: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in user.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h ^ (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Message `n` of `user`'s INBOX: mostly small text, some medium, one in ten a multipart
/// with a base64 attachment (sizes from 1 KB to 128 KB, mean about 15 KB).
fn corpus_message(user: &str, n: usize) -> CorpusMsg {
    let mut rng = fastrand::Rng::with_seed(seed(user, n));
    let date = BASE_DATE + n as i64 * 60;
    let k = rng.u32(1..40);
    let class = rng.u32(0..100);
    let size = match class {
        0..=59 => rng.usize(1024..4096),
        60..=89 => rng.usize(4096..32_768),
        _ => rng.usize(32_768..131_072),
    };
    let mut m = format!(
        "Return-Path: <sender{k}@example.org>\r\n\
         Date: {}\r\n\
         From: \"Sender {k}\" <sender{k}@example.org>\r\n\
         To: \"{user}\" <{user}@example.com>\r\n\
         Subject: Corpus message {n} for {user}: quarterly figures\r\n\
         Message-ID: <{n}.{user}@corpus.example>\r\n\
         MIME-Version: 1.0\r\n",
        rfc5322_date(date)
    )
    .into_bytes();
    if class >= 90 {
        m.extend_from_slice(
            b"Content-Type: multipart/mixed; boundary=\"=-b0undary\"\r\n\r\n\
              --=-b0undary\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
        );
        for _ in 0..10 {
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
    CorpusMsg {
        data: m,
        seen: !n.is_multiple_of(3),
        flagged: n.is_multiple_of(17),
        date,
    }
}

/// Message `n` of the large folder: small (about 200 bytes), every third one \Seen.
fn big_message(n: usize) -> CorpusMsg {
    let date = BASE_DATE + n as i64;
    CorpusMsg {
        data: format!(
            "From: a@example.org\r\nTo: big@example.com\r\nSubject: message {n}\r\n\
             Date: {}\r\nMessage-ID: <{n}@big.example>\r\n\r\nbody {n}\r\n",
            rfc5322_date(date)
        )
        .into_bytes(),
        seen: n.is_multiple_of(3),
        flagged: false,
        date,
    }
}

fn load_store(a: &LoadArgs) -> Result<()> {
    use msgstore::{flag, AppendRequest, MailboxName, Store, UserName};
    let store = Store::open(&a.dir).with_context(|| format!("opening {}", a.dir.display()))?;
    let req = |m: CorpusMsg| AppendRequest {
        flags: if m.seen { flag::SEEN } else { 0 } | if m.flagged { flag::FLAGGED } else { 0 },
        data: m.data,
        keywords: Vec::new(),
        internal_date: Some(m.date),
    };
    let mut jobs: Vec<(String, usize)> = (1..=a.users)
        .map(|u| (format!("user{u}"), a.messages))
        .collect();
    if a.big > 0 {
        jobs.push(("big".to_owned(), a.big));
    }
    for (user, count) in jobs {
        let name = UserName::new(&user)?;
        store.provision_user(&name)?;
        let inbox = MailboxName::for_user(&name, "INBOX")?;
        let mut n = 0;
        while n < count {
            let k = 10_000.min(count - n);
            let msgs = (n..n + k)
                .map(|i| {
                    req(if user == "big" {
                        big_message(i)
                    } else {
                        corpus_message(&user, i)
                    })
                })
                .collect();
            store.append_bulk(&inbox, msgs)?;
            n += k;
        }
    }
    Ok(())
}

fn load_maildir(a: &LoadArgs) -> Result<()> {
    let write_folder = |user: &str, count: usize, big: bool| -> Result<()> {
        let md = a.dir.join(user).join("Maildir");
        for d in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(md.join(d))?;
        }
        for i in 0..count {
            let m = if big {
                big_message(i)
            } else {
                corpus_message(user, i)
            };
            // Maildir flag letters in ASCII order; the file is stored with CRLF line ends,
            // so its size is also its RFC 822 size (S= and W=).
            let flags = format!(
                "{}{}",
                if m.flagged { "F" } else { "" },
                if m.seen { "S" } else { "" }
            );
            let size = m.data.len();
            let p = md.join("cur").join(format!(
                "{}.M{i}P1.bench,S={size},W={size}:2,{flags}",
                m.date
            ));
            let f = std::fs::File::create(&p).with_context(|| format!("{}", p.display()))?;
            (&f).write_all(&m.data)?;
            // INTERNALDATE of a Maildir message is its file's modification time.
            f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(m.date as u64))?;
        }
        Ok(())
    };
    for u in 1..=a.users {
        write_folder(&format!("user{u}"), a.messages, false)?;
    }
    if a.big > 0 {
        write_folder("big", a.big, true)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The IMAP client.

struct Imap {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
    tag: u64,
    line: Vec<u8>,
    /// How long to wait for any one read or write.
    timeout: Duration,
}

struct Reply {
    ok: bool,
    /// The tagged response line, without the tag.
    text: String,
}

impl Imap {
    async fn connect(addr: &str, timeout: Duration) -> Result<Imap> {
        let s = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        s.set_nodelay(true)?;
        let (r, w) = s.into_split();
        let mut c = Imap {
            r: BufReader::with_capacity(16 * 1024, r),
            w,
            tag: 0,
            line: Vec::with_capacity(1024),
            timeout,
        };
        c.read_line().await?;
        if !c.line.starts_with(b"* OK") && !c.line.starts_with(b"* PREAUTH") {
            bail!("greeting: {}", String::from_utf8_lossy(&c.line).trim_end());
        }
        Ok(c)
    }

    /// Read one response line into `self.line`, with the contents of any literals it
    /// carries (`{N}` at the end of a line is followed by N bytes, then the line goes on).
    async fn read_line(&mut self) -> Result<()> {
        self.line.clear();
        loop {
            let start = self.line.len();
            let n = tokio::time::timeout(self.timeout, self.r.read_until(b'\n', &mut self.line))
                .await
                .context("timed out waiting for the server")??;
            if n == 0 {
                bail!("connection closed by the server");
            }
            let l = &self.line[start..];
            if l.ends_with(b"}\r\n") {
                if let Some(open) = l.iter().rposition(|&b| b == b'{') {
                    let digits = &l[open + 1..l.len() - 3];
                    let len: usize = std::str::from_utf8(digits)
                        .ok()
                        .and_then(|d| d.parse().ok())
                        .context("bad literal length")?;
                    if len > 1 << 30 {
                        bail!("literal of {len} bytes");
                    }
                    let at = self.line.len();
                    self.line.resize(at + len, 0);
                    tokio::time::timeout(self.timeout, self.r.read_exact(&mut self.line[at..]))
                        .await
                        .context("timed out in a literal")??;
                    continue;
                }
            }
            return Ok(());
        }
    }

    fn next_tag(&mut self) -> String {
        self.tag += 1;
        format!("a{}", self.tag)
    }

    async fn send(&mut self, data: &[u8]) -> Result<()> {
        tokio::time::timeout(self.timeout, self.w.write_all(data))
            .await
            .context("timed out writing")??;
        Ok(())
    }

    /// Read responses up to the tagged one for `tag`, handing each untagged line to `f`.
    async fn reply(&mut self, tag: &str, mut f: impl FnMut(&[u8])) -> Result<Reply> {
        loop {
            self.read_line().await?;
            let l = &self.line;
            if l.len() > tag.len() && l.starts_with(tag.as_bytes()) && l[tag.len()] == b' ' {
                let text = String::from_utf8_lossy(&l[tag.len() + 1..])
                    .trim_end()
                    .to_owned();
                return Ok(Reply {
                    ok: text.starts_with("OK"),
                    text,
                });
            }
            f(l);
        }
    }

    async fn cmd(&mut self, c: &str, f: impl FnMut(&[u8])) -> Result<Reply> {
        let tag = self.next_tag();
        self.send(format!("{tag} {c}\r\n").as_bytes()).await?;
        self.reply(&tag, f).await
    }

    /// APPEND with a synchronizing literal (what a client must do without LITERAL+).
    async fn append(&mut self, folder: &str, flags: &str, data: &[u8]) -> Result<Reply> {
        let tag = self.next_tag();
        self.send(format!("{tag} APPEND {folder} ({flags}) {{{}}}\r\n", data.len()).as_bytes())
            .await?;
        loop {
            self.read_line().await?;
            if self.line.starts_with(b"+") {
                break;
            }
            if self.line.starts_with(tag.as_bytes()) {
                let text = String::from_utf8_lossy(&self.line[tag.len()..])
                    .trim()
                    .to_owned();
                return Ok(Reply { ok: false, text });
            }
        }
        self.send(data).await?;
        self.send(b"\r\n").await?;
        self.reply(&tag, |_| {}).await
    }

    async fn login(&mut self, user: &str, password: &str) -> Result<Reply> {
        self.cmd(&format!("LOGIN {user} {password}"), |_| {}).await
    }
}

/// The number after `key ` in an untagged line (e.g. "UID 17", or "* 5 EXISTS" read
/// backwards with `number_before`).
fn number_after(l: &[u8], key: &[u8]) -> Option<u32> {
    let at = l.windows(key.len()).position(|w| w == key)? + key.len();
    let digits: Vec<u8> = l[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// The UID in `OK [APPENDUID <uidvalidity> <uid>] ...` (RFC 4315).
fn appended_uid(text: &str) -> Option<u32> {
    let rest = &text[text.find("[APPENDUID ")? + 11..];
    let mut it = rest.split([' ', ']']);
    it.next()?;
    it.next()?.parse().ok()
}

fn exists(l: &[u8]) -> Option<u32> {
    if l.starts_with(b"* ") && l.ends_with(b" EXISTS\r\n") {
        std::str::from_utf8(&l[2..l.len() - 9]).ok()?.parse().ok()
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------
// The mixed workload.

#[derive(Clone, Copy)]
enum Op {
    Login,
    Select,
    FetchFlags,
    FetchEnvelope,
    FetchBody,
    Store,
    Append,
    Expunge,
    Logout,
}
const OPS: [&str; 9] = [
    "LOGIN (with connect)",
    "SELECT",
    "UID FETCH 1:* (FLAGS)",
    "UID FETCH (ENVELOPE) x20",
    "UID FETCH BODY.PEEK[]",
    "UID STORE",
    "APPEND",
    "UID EXPUNGE",
    "LOGOUT",
];

#[derive(Default)]
struct Stats {
    /// Latency in microseconds of every successful operation, by kind.
    lat: [Vec<u32>; 9],
    /// NO or BAD answers, by kind.
    refused: [u64; 9],
    /// Broken sessions (I/O error, timeout, unexpected response).
    broken: u64,
    sessions: u64,
    body_bytes: u64,
    first_error: Option<String>,
}

impl Stats {
    fn done(&mut self, op: Op, t: Instant, r: &Reply) -> bool {
        if r.ok {
            self.lat[op as usize].push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
        } else {
            self.refused[op as usize] += 1;
            if self.first_error.is_none() {
                self.first_error = Some(format!("{}: {}", OPS[op as usize], r.text));
            }
        }
        r.ok
    }
}

async fn mixed_session(
    a: &MixedArgs,
    user: &str,
    rng: &mut fastrand::Rng,
    st: &mut Stats,
    serial: &mut usize,
) -> Result<()> {
    let t = Instant::now();
    let mut c = Imap::connect(&a.addr, Duration::from_secs(a.timeout)).await?;
    let r = c.login(user, &a.password).await?;
    if !st.done(Op::Login, t, &r) {
        return Ok(());
    }
    let t = Instant::now();
    let r = c.cmd("SELECT INBOX", |_| {}).await?;
    if st.done(Op::Select, t, &r) {
        let mut uids: Vec<u32> = Vec::new();
        for _ in 0..a.rounds {
            uids.clear();
            let t = Instant::now();
            let r = c
                .cmd("UID FETCH 1:* (FLAGS)", |l| {
                    if let Some(u) = number_after(l, b"UID ") {
                        uids.push(u);
                    }
                })
                .await?;
            st.done(Op::FetchFlags, t, &r);
            if uids.is_empty() {
                bail!("the folder of {user} is empty");
            }
            uids.sort_unstable();
            let i = rng.usize(0..uids.len());
            let j = (i + 19).min(uids.len() - 1);
            let t = Instant::now();
            let r = c
                .cmd(
                    &format!("UID FETCH {}:{} (ENVELOPE)", uids[i], uids[j]),
                    |_| {},
                )
                .await?;
            st.done(Op::FetchEnvelope, t, &r);
            let u = uids[rng.usize(0..uids.len())];
            let t = Instant::now();
            let mut bytes = 0;
            let r = c
                .cmd(&format!("UID FETCH {u} (BODY.PEEK[])"), |l| {
                    bytes += l.len() as u64
                })
                .await?;
            st.body_bytes += bytes;
            st.done(Op::FetchBody, t, &r);
            let u = uids[rng.usize(0..uids.len())];
            let sign = if rng.bool() { '+' } else { '-' };
            let t = Instant::now();
            let r = c
                .cmd(&format!("UID STORE {u} {sign}FLAGS (\\Flagged)"), |_| {})
                .await?;
            st.done(Op::Store, t, &r);
            *serial += 1;
            let msg = corpus_message(&format!("{user}-{}", std::process::id()), *serial);
            let t = Instant::now();
            let r = c.append("INBOX", "\\Seen", &msg.data).await?;
            if st.done(Op::Append, t, &r) {
                let Some(new) = appended_uid(&r.text) else {
                    bail!("APPEND without APPENDUID: {}", r.text);
                };
                let t = Instant::now();
                let r = c
                    .cmd(
                        &format!("UID STORE {new} +FLAGS.SILENT (\\Deleted)"),
                        |_| {},
                    )
                    .await?;
                if st.done(Op::Store, t, &r) {
                    let t = Instant::now();
                    let r = c.cmd(&format!("UID EXPUNGE {new}"), |_| {}).await?;
                    st.done(Op::Expunge, t, &r);
                }
            }
        }
    }
    let t = Instant::now();
    let r = c.cmd("LOGOUT", |_| {}).await?;
    st.done(Op::Logout, t, &r);
    st.sessions += 1;
    Ok(())
}

fn pct(v: &[u32], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    f64::from(v[i]) / 1000.0
}

async fn mixed(a: MixedArgs) -> Result<()> {
    let a = Arc::new(a);
    let next_user = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(a.seconds);
    let mut tasks = Vec::new();
    for id in 0..a.clients {
        let a = a.clone();
        let next_user = next_user.clone();
        tasks.push(tokio::spawn(async move {
            let mut st = Stats::default();
            let mut rng = fastrand::Rng::with_seed(id as u64 * 7919 + 1);
            let mut serial = id * 1_000_000_000;
            while Instant::now() < deadline {
                let n = next_user.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if a.sessions > 0 && n >= a.sessions {
                    break;
                }
                let u = n % a.users;
                let user = format!("user{}", u + 1);
                if let Err(e) = mixed_session(&a, &user, &mut rng, &mut st, &mut serial).await {
                    st.broken += 1;
                    if st.first_error.is_none() {
                        st.first_error = Some(format!("{user}: {e:#}"));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            st
        }));
    }
    let mut all = Stats::default();
    for t in tasks {
        let st = t.await.context("a client task failed")?;
        for k in 0..OPS.len() {
            all.lat[k].extend_from_slice(&st.lat[k]);
            all.refused[k] += st.refused[k];
        }
        all.broken += st.broken;
        all.sessions += st.sessions;
        all.body_bytes += st.body_bytes;
        if all.first_error.is_none() {
            all.first_error = st.first_error;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let mut every: Vec<u32> = Vec::new();
    let mut err = Vec::new();
    eprintln!(
        "{:<26} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "command", "count", "p50 ms", "p90 ms", "p99 ms", "max ms", "NO/BAD"
    );
    for (k, name) in OPS.iter().enumerate() {
        let v = &mut all.lat[k];
        v.sort_unstable();
        eprintln!(
            "{name:<26} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>7}",
            v.len(),
            pct(v, 0.5),
            pct(v, 0.9),
            pct(v, 0.99),
            pct(v, 1.0),
            all.refused[k]
        );
        every.extend_from_slice(v);
        err.push(all.refused[k]);
    }
    every.sort_unstable();
    let refused: u64 = err.iter().sum();
    if let Some(e) = &all.first_error {
        eprintln!("first error: {e}");
    }
    eprintln!(
        "{} clients, {secs:.1} s, {} sessions, {:.1} MB of bodies fetched",
        a.clients,
        all.sessions,
        all.body_bytes as f64 / 1e6
    );
    println!(
        "ops={} ops_per_s={:.0} sessions_per_s={:.1} p50_ms={:.2} p99_ms={:.2} errors={} broken={}",
        every.len(),
        every.len() as f64 / secs,
        all.sessions as f64 / secs,
        pct(&every, 0.5),
        pct(&every, 0.99),
        refused,
        all.broken
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The large folder.

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn big(a: BigArgs) -> Result<()> {
    let (mut sel, mut fet, mut tot) = (Vec::new(), Vec::new(), Vec::new());
    let mut n_exists = 0;
    for run in 0..a.runs.max(1) {
        let mut c = Imap::connect(&a.addr, Duration::from_secs(a.timeout)).await?;
        let r = c.login(&a.user, &a.password).await?;
        if !r.ok {
            bail!("LOGIN as {}: {}", a.user, r.text);
        }
        let t0 = Instant::now();
        let mut n = 0;
        let r = c
            .cmd(&format!("SELECT {}", a.folder), |l| {
                if let Some(e) = exists(l) {
                    n = e;
                }
            })
            .await?;
        if !r.ok {
            bail!("SELECT: {}", r.text);
        }
        let t1 = Instant::now();
        let mut fetched = 0u32;
        let r = c
            .cmd("UID FETCH 1:* (FLAGS)", |l| {
                fetched += u32::from(l.starts_with(b"* ") && number_after(l, b"UID ").is_some())
            })
            .await?;
        if !r.ok {
            bail!("UID FETCH: {}", r.text);
        }
        let t2 = Instant::now();
        if fetched != n {
            bail!("{fetched} FETCH responses for {n} messages");
        }
        let _ = c.cmd("LOGOUT", |_| {}).await;
        let (s, f) = ((t1 - t0).as_secs_f64() * 1e3, (t2 - t1).as_secs_f64() * 1e3);
        eprintln!("run {run}: SELECT {s:.0} ms, UID FETCH 1:* (FLAGS) {f:.0} ms, {n} messages");
        sel.push(s);
        fet.push(f);
        tot.push(s + f);
        n_exists = n;
    }
    println!(
        "select_ms={:.0} fetch_ms={:.0} total_ms={:.0} messages={n_exists}",
        median(sel),
        median(fet),
        median(tot)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Idle connections.

fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on this process with a valid struct.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

async fn idle(a: IdleArgs) -> Result<()> {
    raise_fd_limit();
    let a = Arc::new(a);
    let gate = Arc::new(tokio::sync::Semaphore::new(a.parallel.max(1)));
    let mut tasks = Vec::new();
    for i in 0..a.connections {
        let a = a.clone();
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await?;
            let mut c = Imap::connect(&a.addr, Duration::from_secs(a.timeout)).await?;
            let r = c
                .login(&format!("user{}", i % a.users + 1), &a.password)
                .await?;
            if !r.ok {
                bail!("LOGIN: {}", r.text);
            }
            Ok::<_, anyhow::Error>(c)
        }));
    }
    let mut held = Vec::with_capacity(a.connections);
    let mut errors = 0;
    let mut first = None;
    for t in tasks {
        match t.await? {
            Ok(c) => held.push(c),
            Err(e) => {
                errors += 1;
                first.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first {
        eprintln!("first error: {e:#}");
    }
    println!("ready connections={} errors={errors}", held.len());
    std::io::stdout().flush()?;
    let until = Instant::now() + Duration::from_secs(a.hold);
    while !a.release.exists() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(held);
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the runtime")
    };
    match cli.cmd {
        Cmd::Mixed(a) => rt()?.block_on(mixed(a)),
        Cmd::Big(a) => rt()?.block_on(big(a)),
        Cmd::Idle(a) => rt()?.block_on(idle(a)),
        Cmd::LoadStore(a) => load_store(&a),
        Cmd::LoadMaildir(a) => load_maildir(&a),
    }
}
