//! popd: the POP3 server of the suite (RFC 1939 with RFC 2449 CAPA and response codes,
//! RFC 2595 STLS and RFC 5034 AUTH PLAIN) over `store-client`.
//!
//! A session sees the user's INBOX as it was at login, numbered 1..n; DELE only marks, and
//! the marked messages are flagged `\Deleted` and expunged (exactly those UIDs) at a clean
//! QUIT: a dropped connection deletes nothing. UIDL is `<uidvalidity>.<uid>`, stable across
//! sessions and consistent with IMAP. Messages are streamed from their files (never read
//! whole), command lines are bounded to 255 octets, failed logins are delayed and counted
//! per peer address, and sessions of users with a `data/telemetry/pop/<userid>/` directory
//! are captured in the seed's telemetry format (passwords redacted).
//!
//! [`serve_connection`] runs one session over any async stream; the `popd` binary
//! (`src/main.rs`) is the TCP server started through `service-runtime`.

pub mod parse;

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use store_client::{ClientError, Flag, FlagOp, Secret, SelectedFolder, StoreClient};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{info, warn};

use parse::{parse_command, Command, ParseError, MAX_LINE};

/// The name in CAPA's IMPLEMENTATION line.
pub const IMPLEMENTATION: &str = "msgsuite-popd";

/// Tunables of the POP service (defaults follow RFC 1939 and the brief).
#[derive(Debug, Clone)]
pub struct PopSettings {
    /// `service.allowplaintextauth`: accept passwords on connections without TLS from
    /// non-loopback peers.
    pub allow_plaintext_auth: bool,
    /// Refuse a second session on a maildrop already in use (`-ERR [IN-USE]`).
    pub exclusive: bool,
    /// Time allowed before login.
    pub login_timeout: Duration,
    /// Idle time allowed after login (RFC 1939: at least 10 minutes).
    pub idle_timeout: Duration,
    /// Delay before the answer to a failed login.
    pub auth_fail_delay: Duration,
    /// Failed logins from one address within `auth_failure_window` before that address
    /// is refused outright.
    pub max_auth_failures: usize,
    pub auth_failure_window: Duration,
    /// Greeting text after `+OK `.
    pub greeting: String,
}

impl Default for PopSettings {
    fn default() -> Self {
        PopSettings {
            allow_plaintext_auth: false,
            exclusive: false,
            login_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(600),
            auth_fail_delay: Duration::from_secs(1),
            max_auth_failures: 10,
            auth_failure_window: Duration::from_secs(600),
            greeting: format!("{IMPLEMENTATION} POP3 server ready"),
        }
    }
}

/// What every session of a process shares: the store, TLS, settings, the maildrops in
/// use and the failed-login counts.
pub struct PopContext {
    client: StoreClient,
    root: PathBuf,
    tls: Option<service_runtime::TlsConfig>,
    settings: PopSettings,
    in_use: Mutex<HashSet<String>>,
    failures: service_runtime::AuthFailures,
}

impl PopContext {
    /// Whether a certificate is loaded (STLS and implicit TLS can be served).
    pub fn tls_available(&self) -> bool {
        self.tls.is_some()
    }

    /// Open the store of the instance at `root`. `tls` enables STLS.
    pub async fn open(
        root: impl AsRef<Path>,
        settings: PopSettings,
        tls: Option<service_runtime::TlsConfig>,
    ) -> Result<PopContext, ClientError> {
        let root = root.as_ref().to_path_buf();
        let client = StoreClient::open(&root).await?;
        Ok(PopContext {
            client,
            root,
            tls,
            in_use: Mutex::new(HashSet::new()),
            failures: service_runtime::AuthFailures::new(
                settings.max_auth_failures,
                settings.auth_failure_window,
            ),
            settings,
        })
    }

    pub fn settings(&self) -> &PopSettings {
        &self.settings
    }

    /// Claim a maildrop (exclusive mode); the guard releases it.
    fn claim(self: &Arc<Self>, user: &str) -> Option<InUse> {
        if !self.settings.exclusive {
            return Some(InUse {
                ctx: None,
                user: String::new(),
            });
        }
        let mut set = self.in_use.lock().ok()?;
        if !set.insert(user.to_owned()) {
            return None;
        }
        Some(InUse {
            ctx: Some(self.clone()),
            user: user.to_owned(),
        })
    }
}

/// A maildrop claimed by a session (exclusive mode).
struct InUse {
    ctx: Option<Arc<PopContext>>,
    user: String,
}

impl Drop for InUse {
    fn drop(&mut self) {
        if let Some(ctx) = &self.ctx {
            if let Ok(mut set) = ctx.in_use.lock() {
                set.remove(&self.user);
            }
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A session capture (telemetry), disabled with one log line on a write error.
struct Capture {
    writer: telemetry::CaptureWriter<std::fs::File>,
    path: PathBuf,
}

/// Capture buffer: small, so a capture never holds much of a session in memory.
const CAPTURE_BUFFER: usize = 16 * 1024;
/// Output is written out when this much is pending.
const OUT_CHUNK: usize = 64 * 1024;

enum Line {
    Ok(Vec<u8>),
    TooLong,
    Eof,
    Timeout,
}

/// One message of the maildrop snapshot.
struct Msg {
    uid: u32,
    size: u64,
    deleted: bool,
    /// Sent whole by RETR: marked \Seen at QUIT, as Dovecot does, so IMAP shows it read.
    retrieved: bool,
}

struct Maildrop {
    folder: SelectedFolder,
    msgs: Vec<Msg>,
    _in_use: InUse,
}

enum State {
    Authorization { user: Option<String> },
    Transaction(Box<Maildrop>),
}

struct Conn {
    io: Box<dyn Io>,
    inbuf: Vec<u8>,
    discarding: bool,
    out: Vec<u8>,
    capture: Option<Capture>,
    tls_active: bool,
    peer: SocketAddr,
    ctx: Arc<PopContext>,
}

/// Why a session ends early.
enum End {
    /// The client went away, timed out, or the stream failed: no UPDATE state.
    Gone,
}

impl From<io::Error> for End {
    fn from(_: io::Error) -> End {
        End::Gone
    }
}

type Step<T = ()> = Result<T, End>;

/// Serve one POP3 session on `stream` from `peer` until QUIT, EOF, timeout or error.
pub async fn serve_connection<S>(stream: S, peer: SocketAddr, ctx: Arc<PopContext>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    run_session(Box::new(stream), peer, ctx, false).await;
}

/// Serve one POP3 session over implicit TLS (port 995, RFC 8314): the TLS handshake comes
/// first, bounded by the login timeout, then the session runs as if STLS had succeeded.
pub async fn serve_tls_connection<S>(stream: S, peer: SocketAddr, ctx: Arc<PopContext>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(tls) = ctx.tls.clone() else {
        warn!("implicit TLS connection from {peer} but no certificate is configured");
        return;
    };
    let accepted =
        tokio::time::timeout(ctx.settings.login_timeout, tls.acceptor().accept(stream)).await;
    let stream = match accepted {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            info!("TLS negotiation with {peer} failed: {e}");
            return;
        }
        Err(_) => {
            info!("TLS negotiation with {peer} timed out");
            return;
        }
    };
    run_session(Box::new(stream), peer, ctx, true).await;
}

async fn run_session(io: Box<dyn Io>, peer: SocketAddr, ctx: Arc<PopContext>, tls_active: bool) {
    let mut conn = Conn {
        io,
        inbuf: Vec::with_capacity(1024),
        discarding: false,
        out: Vec::new(),
        capture: None,
        tls_active,
        peer,
        ctx,
    };
    let _ = conn.run().await;
    if let Some(mut c) = conn.capture.take() {
        if let Err(e) = c.writer.flush() {
            warn!("telemetry capture {}: {e}", c.path.display());
        }
    }
}

impl Conn {
    fn reply(&mut self, text: &str) {
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    async fn flush_out(&mut self) -> Step {
        if self.out.is_empty() {
            return Ok(());
        }
        let limit = self.ctx.settings.idle_timeout;
        let data = std::mem::take(&mut self.out);
        self.capture_chunk(telemetry::Direction::Server, &data);
        match tokio::time::timeout(limit, async {
            self.io.write_all(&data).await?;
            self.io.flush().await
        })
        .await
        {
            Ok(Ok(())) => {
                self.out = data;
                self.out.clear();
                if self.out.capacity() > 4 * OUT_CHUNK {
                    self.out = Vec::new();
                }
                Ok(())
            }
            _ => Err(End::Gone),
        }
    }

    fn capture_chunk(&mut self, dir: telemetry::Direction, data: &[u8]) {
        if let Some(c) = &mut self.capture {
            if let Err(e) = c.writer.record(dir, data, Instant::now()) {
                warn!("telemetry capture {}: {e}", c.path.display());
                self.capture = None;
            }
        }
    }

    /// Read one line, bounded: a line longer than [`MAX_LINE`] is discarded as it comes.
    async fn read_line(&mut self, timeout: Duration) -> Step<Line> {
        loop {
            if let Some(pos) = self.inbuf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.inbuf.drain(..=pos).collect();
                if self.discarding {
                    self.discarding = false;
                    return Ok(Line::TooLong);
                }
                if line.len() > MAX_LINE {
                    return Ok(Line::TooLong);
                }
                return Ok(Line::Ok(line));
            }
            if self.inbuf.len() > MAX_LINE {
                self.discarding = true;
                self.inbuf.clear();
            }
            // Nothing more to answer before waiting: send what is pending (pipelining).
            self.flush_out().await?;
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(timeout, self.io.read(&mut chunk)).await {
                Err(_) => return Ok(Line::Timeout),
                Ok(Err(_)) | Ok(Ok(0)) => return Ok(Line::Eof),
                Ok(Ok(n)) => self.inbuf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn plaintext_allowed(&self) -> bool {
        self.tls_active || self.peer.ip().is_loopback() || self.ctx.settings.allow_plaintext_auth
    }

    async fn run(&mut self) -> Step {
        let greeting = format!("+OK {}", self.ctx.settings.greeting);
        self.reply(&greeting);
        let mut state = State::Authorization { user: None };
        loop {
            let timeout = match state {
                State::Authorization { .. } => self.ctx.settings.login_timeout,
                State::Transaction(_) => self.ctx.settings.idle_timeout,
            };
            let line = match self.read_line(timeout).await? {
                Line::Ok(l) => l,
                Line::TooLong => {
                    self.capture_chunk(telemetry::Direction::Client, b"[line too long]\r\n");
                    self.reply("-ERR line too long");
                    continue;
                }
                Line::Eof => return Err(End::Gone),
                Line::Timeout => {
                    self.reply("-ERR autologout: idle for too long");
                    let _ = self.flush_out().await;
                    return Err(End::Gone);
                }
            };
            if Command::is_secret(&line) {
                let word: String = String::from_utf8_lossy(&line)
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_owned();
                self.capture_chunk(
                    telemetry::Direction::Client,
                    format!("{word} ***\r\n").as_bytes(),
                );
            } else {
                self.capture_chunk(telemetry::Direction::Client, &line);
            }
            let cmd = match parse_command(&line) {
                Ok(c) => c,
                Err(ParseError::Unknown) => {
                    self.reply("-ERR unknown command");
                    continue;
                }
                Err(e) => {
                    self.reply(&format!("-ERR {e}"));
                    continue;
                }
            };
            match &mut state {
                State::Authorization { user } => {
                    if let Some(drop) = self.authorization(cmd, user).await? {
                        state = State::Transaction(Box::new(drop));
                    }
                }
                State::Transaction(drop) => {
                    if self.transaction(cmd, drop).await? {
                        return Ok(());
                    }
                }
            }
        }
    }

    fn capa(&mut self, authorized: bool) {
        let mut lines = vec!["+OK Capability list follows", "TOP", "UIDL", "RESP-CODES"];
        lines.push("AUTH-RESP-CODE");
        lines.push("PIPELINING");
        if !authorized && self.plaintext_allowed() {
            lines.push("USER");
            lines.push("SASL PLAIN");
        }
        if !authorized && self.ctx.tls.is_some() && !self.tls_active {
            lines.push("STLS");
        }
        lines.extend(["EXPIRE NEVER", "LOGIN-DELAY 0"]);
        let imp = format!("IMPLEMENTATION {IMPLEMENTATION}");
        for l in lines {
            self.reply(l);
        }
        self.reply(&imp);
        self.reply(".");
    }

    /// A command in the AUTHORIZATION state; `Some` when the user logged in.
    async fn authorization(
        &mut self,
        cmd: Command,
        user: &mut Option<String>,
    ) -> Step<Option<Maildrop>> {
        match cmd {
            Command::Capa => self.capa(false),
            Command::Noop => self.reply("+OK"),
            Command::Quit => {
                self.reply("+OK bye");
                self.flush_out().await?;
                return Err(End::Gone);
            }
            Command::User(name) => {
                if !self.plaintext_allowed() {
                    self.reply("-ERR [AUTH] plaintext authentication is not allowed without TLS (use STLS)");
                } else {
                    *user = Some(name);
                    self.reply("+OK send your password");
                }
            }
            Command::Pass(password) => {
                let Some(name) = user.take() else {
                    self.reply("-ERR USER first");
                    return Ok(None);
                };
                if !self.plaintext_allowed() {
                    self.reply("-ERR [AUTH] plaintext authentication is not allowed without TLS (use STLS)");
                    return Ok(None);
                }
                return self
                    .login(
                        &name,
                        Secret::new(password),
                        &format!("USER {name}\r\nPASS ***\r\n"),
                    )
                    .await;
            }
            Command::Auth { mechanism, initial } => {
                return self.auth(mechanism, initial).await;
            }
            Command::Stls => self.stls().await?,
            Command::Apop => self.reply("-ERR APOP is not supported"),
            _ => self.reply("-ERR command not valid before login"),
        }
        Ok(None)
    }

    async fn auth(
        &mut self,
        mechanism: Option<String>,
        initial: Option<String>,
    ) -> Step<Option<Maildrop>> {
        let Some(mechanism) = mechanism else {
            self.reply("+OK SASL mechanisms follow");
            self.reply("PLAIN");
            self.reply(".");
            return Ok(None);
        };
        if mechanism != "PLAIN" {
            self.reply("-ERR unsupported authentication mechanism");
            return Ok(None);
        }
        if !self.plaintext_allowed() {
            self.reply(
                "-ERR [AUTH] plaintext authentication is not allowed without TLS (use STLS)",
            );
            return Ok(None);
        }
        let response = match initial {
            Some(r) => r,
            None => {
                self.reply("+ ");
                match self.read_line(self.ctx.settings.login_timeout).await? {
                    Line::Ok(l) => {
                        self.capture_chunk(telemetry::Direction::Client, b"***\r\n");
                        String::from_utf8_lossy(parse::strip_eol(&l)).into_owned()
                    }
                    Line::TooLong => {
                        self.reply("-ERR line too long");
                        return Ok(None);
                    }
                    Line::Eof | Line::Timeout => return Err(End::Gone),
                }
            }
        };
        let response = response.trim();
        if response == "*" {
            self.reply("-ERR authentication cancelled");
            return Ok(None);
        }
        let decoded = if response == "=" {
            Some(Vec::new())
        } else {
            parse::base64_decode(response)
        };
        let Some(decoded) = decoded else {
            self.reply("-ERR invalid base64 in authentication response");
            return Ok(None);
        };
        let parts: Vec<&[u8]> = decoded.split(|&b| b == 0).collect();
        let [authzid, authcid, password] = parts.as_slice() else {
            self.reply("-ERR [AUTH] malformed PLAIN response");
            return Ok(None);
        };
        let (Ok(authzid), Ok(authcid), Ok(password)) = (
            std::str::from_utf8(authzid),
            std::str::from_utf8(authcid),
            std::str::from_utf8(password),
        ) else {
            self.reply("-ERR [AUTH] malformed PLAIN response");
            return Ok(None);
        };
        if !authzid.is_empty() && authzid != authcid {
            self.reply("-ERR [AUTH] authorization identity not permitted");
            return Ok(None);
        }
        let authcid = authcid.to_owned();
        self.login(
            &authcid,
            Secret::new(password.to_owned()),
            "AUTH PLAIN ***\r\n",
        )
        .await
    }

    async fn stls(&mut self) -> Step {
        let Some(tls) = self.ctx.tls.clone() else {
            self.reply("-ERR TLS is not available");
            return Ok(());
        };
        if self.tls_active {
            self.reply("-ERR TLS is already active");
            return Ok(());
        }
        self.reply("+OK begin TLS negotiation");
        self.flush_out().await?;
        // Anything the client sent after STLS in plaintext is discarded (RFC 2595 3.1).
        self.inbuf.clear();
        self.discarding = false;
        let io = std::mem::replace(&mut self.io, Box::new(tokio::io::duplex(1).0));
        let accepted =
            tokio::time::timeout(self.ctx.settings.login_timeout, tls.acceptor().accept(io)).await;
        match accepted {
            Ok(Ok(stream)) => {
                self.io = Box::new(stream);
                self.tls_active = true;
                Ok(())
            }
            Ok(Err(e)) => {
                info!("TLS negotiation with {} failed: {e}", self.peer);
                Err(End::Gone)
            }
            Err(_) => Err(End::Gone),
        }
    }

    /// Authenticate and open the maildrop. `record` is what the capture shows for the
    /// login (the password redacted).
    async fn login(
        &mut self,
        name: &str,
        password: Secret<String>,
        record: &str,
    ) -> Step<Option<Maildrop>> {
        let ip = self.peer.ip();
        if self.ctx.failures.locked_out(ip) {
            self.reply("-ERR [AUTH] too many failures");
            return Ok(None);
        }
        let session = match self.ctx.client.authenticate(name, &password).await {
            Ok(s) => s,
            Err(ClientError::AuthenticationFailed) => {
                self.ctx.failures.record(ip);
                info!("authentication failed for {name:?} from {ip}");
                self.flush_out().await?;
                tokio::time::sleep(self.ctx.settings.auth_fail_delay).await;
                self.reply("-ERR [AUTH] invalid user name or password");
                return Ok(None);
            }
            Err(e) => {
                warn!("authentication of {name:?} from {ip}: {e}");
                self.reply("-ERR [SYS/TEMP] authentication is unavailable, try again later");
                return Ok(None);
            }
        };
        let userid = session.user().to_owned();
        let Some(in_use) = self.ctx.claim(&userid) else {
            self.reply("-ERR [IN-USE] maildrop is already in use by another session");
            return Ok(None);
        };
        let opened = async {
            let folder = session.select("INBOX", false).await?;
            let uids = folder.uids().to_vec();
            let metas = folder.fetch_meta(&uids).await?;
            Ok::<_, ClientError>((folder, metas))
        }
        .await;
        let (folder, metas) = match opened {
            Ok(x) => x,
            Err(e) => {
                warn!("opening the maildrop of {userid}: {e}");
                self.reply("-ERR [SYS/TEMP] unable to open the maildrop, try again later");
                return Ok(None);
            }
        };
        let msgs: Vec<Msg> = metas
            .into_iter()
            .map(|m| Msg {
                uid: m.uid,
                size: m.size,
                deleted: false,
                retrieved: false,
            })
            .collect();
        let total: u64 = msgs.iter().map(|m| m.size).sum();
        info!(
            "Login user={userid} from {ip}{}: {} messages",
            if self.tls_active { " (TLS)" } else { "" },
            msgs.len()
        );
        // Everything answered so far goes out before the capture starts.
        self.flush_out().await?;
        self.start_capture(&userid, record);
        self.reply(&format!(
            "+OK {userid} has {} messages ({total} octets)",
            msgs.len()
        ));
        Ok(Some(Maildrop {
            folder,
            msgs,
            _in_use: in_use,
        }))
    }

    fn start_capture(&mut self, userid: &str, record: &str) {
        match telemetry::start_session_capture(
            &self.ctx.root,
            "pop",
            userid,
            record,
            CAPTURE_BUFFER,
        ) {
            Ok(Some((path, writer))) => self.capture = Some(Capture { writer, path }),
            Ok(None) => {}
            Err(e) => warn!("{e}"),
        }
    }

    /// The message with number `n`, if it exists and is not marked deleted.
    fn message(&mut self, drop: &Maildrop, n: u32) -> Option<usize> {
        let i = (n as usize).checked_sub(1);
        match i.and_then(|i| drop.msgs.get(i)) {
            None => {
                self.reply("-ERR no such message");
                None
            }
            Some(m) if m.deleted => {
                self.reply("-ERR message already deleted");
                None
            }
            Some(_) => i,
        }
    }

    /// A command in the TRANSACTION state; true when the session is over.
    async fn transaction(&mut self, cmd: Command, drop: &mut Maildrop) -> Step<bool> {
        match cmd {
            Command::Capa => self.capa(true),
            Command::Noop => self.reply("+OK"),
            Command::Stat => {
                let live = drop.msgs.iter().filter(|m| !m.deleted);
                let (n, size) = live.fold((0u64, 0u64), |(n, s), m| (n + 1, s + m.size));
                self.reply(&format!("+OK {n} {size}"));
            }
            Command::List(None) | Command::Uidl(None) => {
                let uidl = matches!(cmd, Command::Uidl(_));
                self.reply("+OK");
                let v = drop.folder.uidvalidity();
                for (i, m) in drop.msgs.iter().enumerate() {
                    if m.deleted {
                        continue;
                    }
                    let line = if uidl {
                        format!("{} {v}.{}\r\n", i + 1, m.uid)
                    } else {
                        format!("{} {}\r\n", i + 1, m.size)
                    };
                    self.out.extend_from_slice(line.as_bytes());
                    if self.out.len() > OUT_CHUNK {
                        self.flush_out().await?;
                    }
                }
                self.reply(".");
            }
            Command::List(Some(n)) => {
                if let Some(i) = self.message(drop, n) {
                    let size = drop.msgs[i].size;
                    self.reply(&format!("+OK {n} {size}"));
                }
            }
            Command::Uidl(Some(n)) => {
                if let Some(i) = self.message(drop, n) {
                    let uid = drop.msgs[i].uid;
                    let v = drop.folder.uidvalidity();
                    self.reply(&format!("+OK {n} {v}.{uid}"));
                }
            }
            Command::Dele(n) => {
                if let Some(i) = self.message(drop, n) {
                    drop.msgs[i].deleted = true;
                    self.reply(&format!("+OK message {n} deleted"));
                }
            }
            Command::Rset => {
                for m in &mut drop.msgs {
                    m.deleted = false;
                }
                let n = drop.msgs.len();
                self.reply(&format!("+OK maildrop has {n} messages"));
            }
            Command::Retr(n) => {
                if let Some(i) = self.message(drop, n) {
                    self.send_message(drop, i, None).await?;
                    drop.msgs[i].retrieved = true;
                }
            }
            Command::Top(n, lines) => {
                if let Some(i) = self.message(drop, n) {
                    self.send_message(drop, i, Some(lines)).await?;
                }
            }
            Command::Quit => {
                self.update(drop).await;
                self.flush_out().await?;
                return Ok(true);
            }
            Command::User(_)
            | Command::Pass(_)
            | Command::Auth { .. }
            | Command::Apop
            | Command::Stls => self.reply("-ERR command not valid in this state"),
        }
        Ok(false)
    }

    /// The UPDATE state: mark retrieved messages \Seen, then flag and expunge exactly the
    /// messages marked deleted.
    async fn update(&mut self, drop: &mut Maildrop) {
        let seen: Vec<u32> = drop
            .msgs
            .iter()
            .filter(|m| m.retrieved && !m.deleted)
            .map(|m| m.uid)
            .collect();
        if !seen.is_empty() {
            if let Err(e) = drop
                .folder
                .store_flags(&seen, FlagOp::Add, &[Flag::Seen], None)
                .await
            {
                warn!("marking retrieved messages of {} seen: {e}", self.peer);
            }
        }
        let uids: Vec<u32> = drop
            .msgs
            .iter()
            .filter(|m| m.deleted)
            .map(|m| m.uid)
            .collect();
        if uids.is_empty() {
            self.reply("+OK bye");
            return;
        }
        let folder = &mut drop.folder;
        let result = async {
            folder
                .store_flags(&uids, FlagOp::Add, &[Flag::Deleted], None)
                .await?;
            folder.expunge(Some(&uids)).await
        }
        .await;
        match result {
            Ok(gone) => {
                self.reply(&format!("+OK bye ({} messages deleted)", gone.len()));
            }
            Err(e) => {
                warn!("removing deleted messages of {}: {e}", self.peer);
                self.reply("-ERR [SYS/TEMP] some deleted messages were not removed");
            }
        }
    }

    /// RETR (`top` = None) or TOP: stream the message file, dot-stuffed.
    async fn send_message(&mut self, drop: &Maildrop, i: usize, top: Option<u32>) -> Step {
        let m = &drop.msgs[i];
        let (mut file, _size) = match drop.folder.open_message(m.uid).await {
            Ok(f) => f,
            Err(ClientError::NoSuchMessage(_)) => {
                self.reply("-ERR no such message");
                return Ok(());
            }
            Err(e) => {
                warn!("opening message {} for {}: {e}", m.uid, self.peer);
                self.reply("-ERR [SYS/TEMP] cannot read the message, try again later");
                return Ok(());
            }
        };
        match top {
            None => self.reply(&format!("+OK {} octets", m.size)),
            Some(_) => self.reply("+OK"),
        }
        let mut s = Stuffer {
            line_start: true,
            line_blank: true,
            in_body: false,
            body_lines: 0,
            top,
            done: false,
        };
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = match file.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    // The +OK is out: the only honest way on is to close.
                    warn!("reading message {} for {}: {e}", m.uid, self.peer);
                    return Err(End::Gone);
                }
            };
            s.feed(&chunk[..n], &mut self.out);
            if self.out.len() >= OUT_CHUNK {
                self.flush_out().await?;
            }
            if s.done {
                break;
            }
        }
        if !s.line_start {
            self.out.extend_from_slice(b"\r\n");
        }
        self.reply(".");
        Ok(())
    }
}

/// Dot-stuffing (and TOP's line counting) across reads.
struct Stuffer {
    line_start: bool,
    line_blank: bool,
    in_body: bool,
    body_lines: u32,
    top: Option<u32>,
    done: bool,
}

impl Stuffer {
    fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.top.is_none() {
            // RETR: copy runs between line starts, doubling a leading dot.
            let mut rest = data;
            while !rest.is_empty() {
                if self.line_start && rest[0] == b'.' {
                    out.push(b'.');
                }
                match rest.iter().position(|&b| b == b'\n') {
                    Some(p) => {
                        out.extend_from_slice(&rest[..=p]);
                        rest = &rest[p + 1..];
                        self.line_start = true;
                    }
                    None => {
                        out.extend_from_slice(rest);
                        self.line_start = false;
                        rest = &[];
                    }
                }
            }
            return;
        }
        let limit = self.top.unwrap_or(u32::MAX);
        for &b in data {
            if self.in_body && self.line_start && self.body_lines >= limit {
                self.done = true;
                return;
            }
            if self.line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            if b == b'\n' {
                if self.in_body {
                    self.body_lines += 1;
                } else if self.line_blank {
                    self.in_body = true;
                }
                self.line_start = true;
                self.line_blank = true;
            } else {
                self.line_start = false;
                if b != b'\r' {
                    self.line_blank = false;
                }
            }
        }
        if self.in_body && self.line_start && self.body_lines >= limit {
            self.done = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Stuffer;

    fn run(input: &[&[u8]], top: Option<u32>) -> Vec<u8> {
        let mut s = Stuffer {
            line_start: true,
            line_blank: true,
            in_body: false,
            body_lines: 0,
            top,
            done: false,
        };
        let mut out = Vec::new();
        for chunk in input {
            if s.done {
                break;
            }
            s.feed(chunk, &mut out);
        }
        out
    }

    #[test]
    fn stuffing_across_chunks() {
        assert_eq!(
            run(&[b"A: b\r\n\r\n.x\r", b"\n", b".", b"y\r\n"], None),
            b"A: b\r\n\r\n..x\r\n..y\r\n"
        );
    }

    #[test]
    fn top_counts_body_lines() {
        let msg: &[u8] = b"A: b\r\nC: d\r\n\r\nl1\r\n.l2\r\nl3\r\n";
        assert_eq!(run(&[msg], Some(0)), b"A: b\r\nC: d\r\n\r\n");
        assert_eq!(run(&[msg], Some(2)), b"A: b\r\nC: d\r\n\r\nl1\r\n..l2\r\n");
        assert_eq!(
            run(&[msg], Some(99)),
            b"A: b\r\nC: d\r\n\r\nl1\r\n..l2\r\nl3\r\n"
        );
        assert_eq!(run(&[b"A: b\r\n"], Some(3)), b"A: b\r\n");
    }
}
