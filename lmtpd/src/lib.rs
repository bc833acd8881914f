//! lmtpd: local delivery into the message store over LMTP (RFC 2033).
//!
//! An MTA hands each message to lmtpd once for many local recipients and gets one reply per
//! recipient, each given only after the store has put that copy on stable storage. Delivery
//! goes through `store-client` (never the store's files): the recipient's local part names
//! the user, `user+detail` delivers into the folder `detail` when the user has one (else
//! INBOX), and every copy gets `Return-Path:` and `Received:` header fields. The protocol
//! parser is hand-written and bounded ([`parse`]): command lines are limited, an overlong
//! line is discarded without being buffered, a message over the size limit is read to its
//! end and refused. [`serve_connection`] runs one session over any byte stream (TCP, a
//! Unix socket, a test pipe); the accept loop lives in the binary.

pub mod parse;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use store_client::{ClientError, Session, StoreClient};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use parse::{parse_command, parse_recipient, printable, Command, DataDecoder, ParseError};

/// The default message size limit: the store's default `local.store.maxmessagesize`.
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 52_428_800;

/// How many deliveries of one message run at once (each holds a copy of the message).
const PARALLEL_DELIVERIES: usize = 4;

/// Errors setting up the service.
#[derive(Debug, thiserror::Error)]
pub enum LmtpError {
    #[error("opening the message store: {0}")]
    Store(#[from] ClientError),
}

/// The limits a session enforces.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest message accepted (bytes after dot-unstuffing, before lmtpd's header fields).
    pub max_message_size: u64,
    /// Recipients per transaction.
    pub max_recipients: usize,
    /// Longest command line, CRLF included.
    pub max_line: usize,
    /// How long a client may send nothing before the session is closed.
    pub idle_timeout: Duration,
    /// Refused commands before the session is closed.
    pub max_errors: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_recipients: 1000,
            max_line: 4096,
            idle_timeout: Duration::from_secs(300),
            max_errors: 20,
        }
    }
}

/// What every session of a process shares.
pub struct LmtpContext {
    client: StoreClient,
    host: String,
    limits: Limits,
    shutdown: watch::Sender<bool>,
}

impl LmtpContext {
    pub fn new(client: StoreClient, host: impl Into<String>, limits: Limits) -> LmtpContext {
        LmtpContext {
            client,
            host: host.into(),
            limits,
            shutdown: watch::Sender::new(false),
        }
    }

    /// Open the store of the instance at `root`.
    pub async fn open(
        root: impl AsRef<std::path::Path>,
        host: impl Into<String>,
        limits: Limits,
    ) -> Result<LmtpContext, LmtpError> {
        let client = StoreClient::open(root).await?;
        Ok(LmtpContext::new(client, host, limits))
    }

    pub fn client(&self) -> &StoreClient {
        &self.client
    }
    pub fn host(&self) -> &str {
        &self.host
    }
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Ask sessions to end: a session waiting for a command replies 421 and closes; one
    /// receiving or delivering a message finishes that first.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// Why a session stopped reading.
#[derive(Debug)]
enum End {
    Closed,
    Timeout,
    Shutdown,
    Io(std::io::Error),
}

impl From<std::io::Error> for End {
    fn from(e: std::io::Error) -> Self {
        End::Io(e)
    }
}

enum LineRead {
    Line,
    TooLong,
}

/// The connection: buffered input, and replies held until no more input is buffered
/// (RFC 2920 pipelining).
struct Conn<S> {
    io: BufReader<S>,
    out: Vec<u8>,
    idle: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn reply(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    async fn flush(&mut self) -> Result<(), End> {
        if self.out.is_empty() {
            return Ok(());
        }
        let w = self.io.get_mut();
        let out = &self.out;
        match tokio::time::timeout(self.idle, async {
            w.write_all(out).await?;
            w.flush().await
        })
        .await
        {
            Err(_) => return Err(End::Timeout),
            Ok(r) => r?,
        }
        self.out.clear();
        Ok(())
    }

    /// Make sure input is buffered, flushing replies first when none is.
    async fn fill(&mut self, shutdown: Option<&mut watch::Receiver<bool>>) -> Result<(), End> {
        if !self.io.buffer().is_empty() {
            return Ok(());
        }
        self.flush().await?;
        let idle = self.idle;
        let read = tokio::time::timeout(idle, self.io.fill_buf());
        let r = match shutdown {
            Some(rx) => tokio::select! {
                r = read => r,
                _ = rx.wait_for(|v| *v) => return Err(End::Shutdown),
            },
            None => read.await,
        };
        match r {
            Err(_) => Err(End::Timeout),
            Ok(Err(e)) => Err(End::Io(e)),
            Ok(Ok([])) => Err(End::Closed),
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// Read one line into `buf` (emptied first), keeping at most `max` bytes: the rest of
    /// an overlong line is read and dropped.
    async fn read_line(
        &mut self,
        buf: &mut Vec<u8>,
        max: usize,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<LineRead, End> {
        buf.clear();
        let mut too_long = false;
        loop {
            let at_start = buf.is_empty() && !too_long;
            self.fill(if at_start { Some(&mut *shutdown) } else { None })
                .await?;
            let avail = self.io.buffer();
            let (take, done) = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (avail.len(), false),
            };
            if !too_long {
                if buf.len() + take > max {
                    too_long = true;
                    buf.clear();
                } else {
                    buf.extend_from_slice(&avail[..take]);
                }
            }
            self.io.consume(take);
            if done {
                return Ok(if too_long {
                    LineRead::TooLong
                } else {
                    LineRead::Line
                });
            }
        }
    }
}

/// An accepted recipient.
struct Rcpt {
    /// The address as given in RCPT TO.
    addr: String,
    session: Session,
    detail: Option<String>,
}

/// The transaction under way.
#[derive(Default)]
struct Txn {
    from: Option<String>,
    rcpts: Vec<Rcpt>,
}

struct LmtpSession<S> {
    conn: Conn<S>,
    peer: String,
    ctx: Arc<LmtpContext>,
    shutdown: watch::Receiver<bool>,
    lhlo: Option<String>,
    txn: Txn,
    errors: u32,
}

static DELIVERY_COUNTER: AtomicU64 = AtomicU64::new(0);

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A transaction id unique across processes and restarts.
fn new_id() -> String {
    let n = DELIVERY_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:X}.{:X}.{n}", now_unix(), std::process::id())
}

/// Serve one LMTP session over `stream` until QUIT, EOF, timeout or shutdown. `peer`
/// names the client in logs and in the `Received:` field.
pub async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    peer: String,
    ctx: Arc<LmtpContext>,
) {
    let shutdown = ctx.shutdown.subscribe();
    let mut s = LmtpSession {
        conn: Conn {
            io: BufReader::with_capacity(16 * 1024, stream),
            out: Vec::new(),
            idle: ctx.limits.idle_timeout,
        },
        peer,
        ctx,
        shutdown,
        lhlo: None,
        txn: Txn::default(),
        errors: 0,
    };
    debug!(peer = %s.peer, "connection");
    match s.run().await {
        Ok(()) | Err(End::Closed) => debug!(peer = %s.peer, "connection closed"),
        Err(End::Timeout) => info!(peer = %s.peer, "connection timed out"),
        Err(End::Shutdown) => info!(peer = %s.peer, "connection closed for shutdown"),
        Err(End::Io(e)) => info!(peer = %s.peer, "connection error: {e}"),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> LmtpSession<S> {
    async fn run(&mut self) -> Result<(), End> {
        let host = self.ctx.host.clone();
        if self.ctx.is_shutting_down() {
            self.conn
                .reply(&format!("421 4.3.2 {host} Service shutting down"));
            return self.conn.flush().await;
        }
        self.conn.reply(&format!("220 {host} LMTP lmtpd ready"));
        let mut line = Vec::new();
        loop {
            let max_line = self.ctx.limits.max_line;
            match self
                .conn
                .read_line(&mut line, max_line, &mut self.shutdown)
                .await
            {
                Ok(LineRead::Line) => {}
                Ok(LineRead::TooLong) => {
                    self.refuse("500 5.5.2 Line too long").await?;
                    continue;
                }
                Err(End::Timeout) => {
                    self.conn.reply(&format!(
                        "421 4.4.2 {host} Idle timeout, closing connection"
                    ));
                    let _ = self.conn.flush().await;
                    return Err(End::Timeout);
                }
                Err(End::Shutdown) => {
                    self.conn
                        .reply(&format!("421 4.3.2 {host} Service shutting down"));
                    let _ = self.conn.flush().await;
                    return Err(End::Shutdown);
                }
                Err(e) => return Err(e),
            }
            let cmd = match parse_command(&line) {
                Ok(c) => c,
                Err(e) => {
                    if e == ParseError::Unknown {
                        debug!(peer = %self.peer, "unknown command {:?}",
                            printable(&String::from_utf8_lossy(&line), 40));
                    }
                    self.refuse(&e.reply()).await?;
                    continue;
                }
            };
            if !self.command(cmd).await? {
                return self.conn.flush().await;
            }
        }
    }

    /// Reply with an error; close the session after too many.
    async fn refuse(&mut self, reply: &str) -> Result<(), End> {
        self.conn.reply(reply);
        self.errors += 1;
        if self.errors >= self.ctx.limits.max_errors {
            let host = &self.ctx.host;
            self.conn.reply(&format!(
                "421 4.7.0 {host} Too many errors, closing connection"
            ));
            self.conn.flush().await?;
            return Err(End::Closed);
        }
        Ok(())
    }

    /// Handle one command; `false` ends the session.
    async fn command(&mut self, cmd: Command) -> Result<bool, End> {
        match cmd {
            Command::Lhlo(name) => {
                self.txn = Txn::default();
                let host = &self.ctx.host;
                let max = self.ctx.limits.max_message_size;
                self.conn.reply(&format!("250-{host}"));
                self.conn.reply("250-PIPELINING");
                self.conn.reply("250-ENHANCEDSTATUSCODES");
                self.conn.reply("250-8BITMIME");
                self.conn.reply(&format!("250-SIZE {max}"));
                self.conn.reply("250 HELP");
                self.lhlo = Some(name);
            }
            Command::Helo => {
                self.refuse("500 5.5.1 This is an LMTP server: use LHLO")
                    .await?
            }
            Command::Mail { from, size, .. } => {
                if self.lhlo.is_none() {
                    self.refuse("503 5.5.1 Send LHLO first").await?;
                } else if self.txn.from.is_some() {
                    self.refuse("503 5.5.1 Sender already given").await?;
                } else if size.is_some_and(|s| s > self.ctx.limits.max_message_size) {
                    self.conn
                        .reply("552 5.3.4 Message size exceeds fixed maximum message size");
                } else {
                    self.txn.from = Some(from);
                    self.conn.reply("250 2.1.0 Sender OK");
                }
            }
            Command::Rcpt { to } => self.rcpt(to).await?,
            Command::Data => {
                if self.txn.from.is_none() {
                    self.refuse("503 5.5.1 Need MAIL command").await?;
                } else if self.txn.rcpts.is_empty() {
                    self.refuse("503 5.5.1 No valid recipients").await?;
                } else {
                    self.data().await?;
                }
            }
            Command::Rset => {
                self.txn = Txn::default();
                self.conn.reply("250 2.0.0 OK");
            }
            Command::Noop => self.conn.reply("250 2.0.0 OK"),
            Command::Vrfy => self
                .conn
                .reply("252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery"),
            Command::Help => self
                .conn
                .reply("214 2.0.0 Commands: LHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP"),
            Command::Quit => {
                let host = &self.ctx.host;
                self.conn
                    .reply(&format!("221 2.0.0 {host} closing connection"));
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn rcpt(&mut self, to: String) -> Result<(), End> {
        if self.txn.from.is_none() {
            return self.refuse("503 5.5.1 Need MAIL before RCPT").await;
        }
        if self.txn.rcpts.len() >= self.ctx.limits.max_recipients {
            self.conn.reply("452 4.5.3 Too many recipients");
            return Ok(());
        }
        let Some(r) = parse_recipient(&to) else {
            return self.refuse("501 5.1.3 Bad recipient address syntax").await;
        };
        match self.ctx.client.session_for(&r.user).await {
            Ok(session) => {
                self.txn.rcpts.push(Rcpt {
                    addr: to,
                    session,
                    detail: r.detail,
                });
                self.conn.reply("250 2.1.5 Recipient OK");
            }
            Err(ClientError::NoSuchMailbox(_) | ClientError::InvalidArgument(_)) => {
                debug!(peer = %self.peer, "unknown recipient {}", printable(&to, 80));
                self.conn.reply("550 5.1.1 No such user here");
            }
            Err(e) => {
                warn!(peer = %self.peer, "recipient {}: {e}", printable(&to, 80));
                self.conn
                    .reply("451 4.3.0 Temporary failure looking up the recipient");
            }
        }
        Ok(())
    }

    async fn data(&mut self) -> Result<(), End> {
        self.conn
            .reply("354 Start mail input; end with <CRLF>.<CRLF>");
        let limit = usize::try_from(self.ctx.limits.max_message_size).unwrap_or(usize::MAX);
        let mut dec = DataDecoder::new(limit);
        loop {
            // An error here (EOF, timeout) drops the transaction: nothing is delivered.
            if let Err(e) = self.conn.fill(None).await {
                if matches!(e, End::Timeout) {
                    let host = &self.ctx.host;
                    self.conn
                        .reply(&format!("421 4.4.2 {host} Timeout reading message"));
                    let _ = self.conn.flush().await;
                }
                if matches!(e, End::Closed) {
                    info!(peer = %self.peer, "connection closed during DATA: nothing delivered");
                }
                return Err(e);
            }
            let buf = self.conn.io.buffer();
            let end = dec.feed(buf);
            let n = end.unwrap_or(buf.len());
            self.conn.io.consume(n);
            if end.is_some() {
                break;
            }
        }
        let txn = std::mem::take(&mut self.txn);
        if dec.overflowed() {
            info!(peer = %self.peer, size = dec.total(),
                "message exceeds {} bytes: refused", limit);
            for _ in &txn.rcpts {
                self.conn
                    .reply("552 5.3.4 Message size exceeds fixed maximum message size");
            }
            return Ok(());
        }
        self.deliver(txn, dec.into_message()).await;
        Ok(())
    }

    /// Deliver to every recipient, replying for each in RCPT order.
    async fn deliver(&mut self, txn: Txn, body: Vec<u8>) {
        let id = new_id();
        let date = parse::rfc5322_date(now_unix());
        let from = txn.from.unwrap_or_default();
        let lhlo = self.lhlo.clone().unwrap_or_default();
        let body = Arc::new(body);
        let mut rcpts = txn.rcpts.into_iter().peekable();
        while rcpts.peek().is_some() {
            let mut tasks = Vec::with_capacity(PARALLEL_DELIVERIES);
            for r in rcpts.by_ref().take(PARALLEL_DELIVERIES) {
                let header = format!(
                    "Return-Path: <{from}>\r\nReceived: from {lhlo} ({peer}) by {host} (lmtpd) \
                     with LMTP id {id} for <{rcpt}>; {date}\r\n",
                    peer = self.peer,
                    host = self.ctx.host,
                    rcpt = r.addr,
                );
                let body = body.clone();
                let addr = r.addr.clone();
                let task = tokio::spawn(async move {
                    let mut data = Vec::with_capacity(header.len() + body.len());
                    data.extend_from_slice(header.as_bytes());
                    data.extend_from_slice(&body);
                    drop(body);
                    deliver_one(r.session, r.detail, data).await
                });
                tasks.push((addr, task));
            }
            for (addr, task) in tasks {
                let reply = match task.await {
                    Ok(Ok(folder)) => {
                        info!(peer = %self.peer, id = %id, from = %printable(&from, 200),
                            to = %printable(&addr, 200), folder = %folder,
                            size = body.len(), "delivered");
                        "250 2.1.5 Delivered".to_owned()
                    }
                    Ok(Err(e)) => {
                        warn!(peer = %self.peer, id = %id, to = %printable(&addr, 200),
                            "delivery failed: {e}");
                        failure_reply(&e)
                    }
                    Err(e) => {
                        warn!(peer = %self.peer, id = %id, to = %printable(&addr, 200),
                            "delivery task failed: {e}");
                        "451 4.3.0 Internal error".to_owned()
                    }
                };
                self.conn.reply(&reply);
            }
        }
    }
}

/// The folder a `+detail` asks for, if it may be used: the user's own folders only.
fn detail_folder(detail: Option<String>) -> Option<String> {
    let d = detail?;
    let shared = store_client::SHARED_PREFIX;
    let is_shared = d
        .get(..shared.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(shared));
    (!is_shared && !d.chars().any(|c| c.is_control())).then_some(d)
}

/// Append one copy; returns the folder it went into.
async fn deliver_one(
    session: Session,
    detail: Option<String>,
    data: Vec<u8>,
) -> Result<String, ClientError> {
    let mut folder = "INBOX".to_owned();
    if let Some(d) = detail_folder(detail) {
        match session.status(&d).await {
            Ok(_) => folder = d,
            Err(e) => debug!("+{d} for {}: {e}; delivering to INBOX", session.user()),
        }
    }
    session.append(&folder, data, &[], None).await?;
    Ok(folder)
}

/// The per-recipient reply for a failed append.
fn failure_reply(e: &ClientError) -> String {
    match e {
        ClientError::OverQuota(_) => "452 4.2.2 Mailbox over quota",
        ClientError::TooLarge { .. } => "552 5.3.4 Message too large",
        ClientError::MailboxFull(_) => "552 5.2.2 Mailbox full",
        ClientError::NoSuchMailbox(_) => "550 5.1.1 No such user here",
        ClientError::InvalidArgument(_) => "554 5.6.0 Message refused by the store",
        _ => "451 4.3.0 Internal error, try again later",
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_replies() {
        assert!(failure_reply(&ClientError::OverQuota("x".into())).starts_with("452 4.2.2"));
        assert!(
            failure_reply(&ClientError::TooLarge { size: 2, limit: 1 }).starts_with("552 5.3.4")
        );
        assert!(failure_reply(&ClientError::MailboxFull("x".into())).starts_with("552 5.2.2"));
        assert!(failure_reply(&ClientError::DiskFull).starts_with("451 4.3.0"));
        assert!(failure_reply(&ClientError::Internal("x".into())).starts_with("451 4.3.0"));
    }

    #[test]
    fn detail_folders() {
        assert_eq!(detail_folder(Some("lists".into())), Some("lists".into()));
        assert_eq!(detail_folder(Some("other users/bob".into())), None);
        assert_eq!(detail_folder(None), None);
    }
}
