//! One IMAP session: the driver (bounded command reading with literals, STARTTLS,
//! COMPRESS=DEFLATE, IDLE) and the commands carried out against the store.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use store_client::{
    ClientError, EmailId, Flag, FlagOp, MessageMeta, MessageStructure, NumberSet, ObjectIds,
    SearchKey, Secret, SelectedFolder, Session, ThreadId, Update, Watcher,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{info, warn};

use crate::encode;
use crate::ext::acl::{self, AclCommand};
use crate::ext::catenate::{self, CatPart};
use crate::ext::esearch::{self, compact_set, ReturnOptions};
use crate::ext::list_extended::ListCommand;
use crate::ext::multiappend::AppendData;
use crate::ext::utf7;
use crate::parse::{
    self, BodyKind, Command, FetchAtt, Search, SectionText, SeqSet, StatusItem, StoreOp,
};
use crate::respond::{self, Kind, Reply, StatusValue};
use crate::{ImapContext, Peer, MAX_COMMAND, MAX_LINE, MAX_SMALL_LITERAL};

trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// Capture buffer: small, so a capture never holds much of a session in memory.
const CAPTURE_BUFFER: usize = 16 * 1024;
/// Largest non-synchronising literal under LITERAL- (RFC 7888 section 5).
const LITERAL_MINUS_MAX: u64 = 4096;
/// Pending output is written out past this size, so a big FETCH streams.
const OUT_CHUNK: usize = 256 * 1024;
/// Inflated input handled per read with COMPRESS active (a deflate bomb stays bounded).
const INFLATE_CHUNK: usize = 64 * 1024;

struct Capture {
    writer: telemetry::CaptureWriter<std::fs::File>,
    path: PathBuf,
}

struct Deflate {
    inflate: Decompress,
    deflate: Compress,
    /// Compressed input not yet inflated.
    pending: Vec<u8>,
}

/// Why a session ends.
#[derive(Debug)]
struct Gone;

impl From<std::io::Error> for Gone {
    fn from(_: std::io::Error) -> Gone {
        Gone
    }
}

type Step<T = ()> = Result<T, Gone>;

enum Incoming {
    Command(Vec<u8>),
    /// Refused before it was read: (tag, response).
    Refused(Option<String>, Reply<'static>),
    Timeout,
}

enum Line {
    Ok(Vec<u8>),
    /// Too long: discarded; its start, for the tag.
    TooLong(Vec<u8>),
    Timeout,
}

#[derive(Default)]
struct Enabled {
    condstore: bool,
    qresync: bool,
    utf8: bool,
    rev2: bool,
}

struct Selected {
    folder: SelectedFolder,
    watcher: Option<Watcher>,
    /// A poll held expunges back: the next command that may announce them must poll.
    held_back: bool,
}

struct Conn {
    io: Box<dyn Io>,
    inbuf: Vec<u8>,
    deflate: Option<Box<Deflate>>,
    out: Vec<u8>,
    capture: Option<Capture>,
    tls_active: bool,
    peer: Peer,
    ctx: Arc<ImapContext>,
    session: Option<Session>,
    selected: Option<Selected>,
    enabled: Enabled,
    /// SEARCHRES: the UIDs saved by `SEARCH RETURN (SAVE)`.
    saved: Vec<u32>,
    /// Discarding the rest of an over-long line.
    discarding: bool,
    /// A FETCH response line's buffer and segment list, kept between lines (small ones
    /// only) so FETCH 1:* does not allocate per message.
    fetch_line: Vec<u8>,
    fetch_segs: Vec<Seg>,
}

/// Serve one IMAP session on `stream` until LOGOUT, EOF, timeout or error.
pub async fn serve_connection<S>(stream: S, peer: Peer, ctx: Arc<ImapContext>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
{
    let mut conn = Conn {
        io: Box::new(stream),
        inbuf: Vec::new(),
        deflate: None,
        out: Vec::new(),
        capture: None,
        tls_active: peer.tls,
        peer,
        ctx,
        session: None,
        selected: None,
        enabled: Enabled::default(),
        saved: Vec::new(),
        discarding: false,
        fetch_line: Vec::new(),
        fetch_segs: Vec::new(),
    };
    let _ = conn.run().await;
    if let Some(mut c) = conn.capture.take() {
        if let Err(e) = c.writer.flush() {
            warn!("telemetry capture {}: {e}", c.path.display());
        }
    }
}

/// The protocol answer to a store error: status, response code and text.
fn store_error(e: &ClientError) -> Reply<'static> {
    match e {
        ClientError::AuthenticationFailed => {
            Reply::no("authentication failed").code("AUTHENTICATIONFAILED")
        }
        ClientError::NoSuchMailbox(m) => {
            Reply::no(format!("no such mailbox: {m}")).code("NONEXISTENT")
        }
        ClientError::MailboxExists(m) => {
            Reply::no(format!("mailbox already exists: {m}")).code("ALREADYEXISTS")
        }
        ClientError::HasChildren(m) => {
            Reply::no(format!("mailbox has children: {m}")).code("INUSE")
        }
        ClientError::NoSuchMessage(u) => {
            Reply::no(format!("message {u} no longer exists")).code("EXPUNGEISSUED")
        }
        ClientError::OverQuota(m) => Reply::no(format!("over quota: {m}")).code("OVERQUOTA"),
        ClientError::TooLarge { size, limit } => Reply::no(format!(
            "message of {size} bytes is over the limit of {limit}"
        ))
        .code("TOOBIG"),
        ClientError::MailboxFull(m) => Reply::no(m.clone()).code("LIMIT"),
        ClientError::PermissionDenied(m) => Reply::no(m.clone()).code("NOPERM"),
        ClientError::InvalidArgument(m) => Reply::no(m.clone()).code("CANNOT"),
        ClientError::DiskFull => Reply::no("the server is out of disk space").code("OVERQUOTA"),
        ClientError::Corrupt(m) => Reply::no(m.clone()).code("CORRUPTION"),
        ClientError::Internal(m) => Reply::no(m.clone()).code("SERVERBUG"),
    }
}

impl Conn {
    // ---------------------------------------------------------------- output

    fn line(&mut self, s: &str) {
        self.out.extend_from_slice(s.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    fn tagged(&mut self, tag: &str, r: Reply<'_>) {
        respond::status(&mut self.out, Some(tag), &r);
    }

    fn untagged(&mut self, r: Reply<'_>) {
        respond::untagged(&mut self.out, &r);
    }

    fn capture_chunk(&mut self, dir: telemetry::Direction, data: &[u8]) {
        if let Some(c) = &mut self.capture {
            if let Err(e) = c.writer.record(dir, data, Instant::now()) {
                warn!("telemetry capture {}: {e}", c.path.display());
                self.capture = None;
            }
        }
    }

    async fn flush_out(&mut self) -> Step {
        if self.out.is_empty() {
            return Ok(());
        }
        let mut data = std::mem::take(&mut self.out);
        self.capture_chunk(telemetry::Direction::Server, &data);
        let compressed = match &mut self.deflate {
            Some(z) => {
                let mut out = Vec::with_capacity(data.len() / 2 + 64);
                let mut input = &data[..];
                loop {
                    if out.capacity() - out.len() < 1024 {
                        out.reserve(64 * 1024);
                    }
                    let before = z.deflate.total_in();
                    let status = z
                        .deflate
                        .compress_vec(input, &mut out, FlushCompress::Sync)
                        .map_err(|_| Gone)?;
                    let used = (z.deflate.total_in() - before) as usize;
                    input = &input[used..];
                    // Done when all input is consumed and the sync flush fit.
                    if input.is_empty() && out.capacity() > out.len() && status != Status::BufError
                    {
                        break;
                    }
                }
                Some(out)
            }
            None => None,
        };
        let wire: &[u8] = compressed.as_deref().unwrap_or(&data);
        // A client that never reads: the write times out and the session ends.
        let limit = self.ctx.settings.idle_timeout.min(Duration::from_secs(600));
        let r = match tokio::time::timeout(limit, async {
            self.io.write_all(wire).await?;
            self.io.flush().await
        })
        .await
        {
            Ok(Ok(())) => Ok(()),
            _ => Err(Gone),
        };
        // Reused while a command streams its output (no allocation per chunk); released
        // before the session waits for input (see read_line).
        if data.capacity() <= 2 * OUT_CHUNK {
            data.clear();
            self.out = data;
        }
        r
    }

    // ----------------------------------------------------------------- input

    /// Read more input into `inbuf` (inflating it when COMPRESS is active).
    async fn fill(&mut self, timeout: Duration) -> Step<Option<()>> {
        if let Some(z) = &mut self.deflate {
            if !z.pending.is_empty() {
                return Self::inflate(z, &mut self.inbuf).map(Some);
            }
        }
        // Read straight into the buffer: an idle session holds no read buffer in its task.
        let dst = match &mut self.deflate {
            Some(z) => &mut z.pending,
            None => &mut self.inbuf,
        };
        dst.reserve(if dst.capacity() >= 64 * 1024 {
            64 * 1024
        } else {
            4096
        });
        match tokio::time::timeout(timeout, self.io.read_buf(dst)).await {
            Err(_) => return Ok(None),
            Ok(Err(_)) | Ok(Ok(0)) => return Err(Gone),
            Ok(Ok(_)) => {}
        }
        if let Some(z) = &mut self.deflate {
            Self::inflate(z, &mut self.inbuf)?;
        }
        Ok(Some(()))
    }

    fn inflate(z: &mut Deflate, inbuf: &mut Vec<u8>) -> Step {
        let start = inbuf.len();
        inbuf.reserve(INFLATE_CHUNK);
        let before = z.inflate.total_in();
        z.inflate
            .decompress_vec(&z.pending, inbuf, FlushDecompress::Sync)
            .map_err(|_| Gone)?;
        let used = (z.inflate.total_in() - before) as usize;
        z.pending.drain(..used);
        if used == 0 && inbuf.len() == start && !z.pending.is_empty() {
            return Err(Gone);
        }
        Ok(())
    }

    /// One line, bounded: a longer line is discarded as it comes.
    async fn read_line(&mut self, timeout: Duration) -> Step<Line> {
        let mut head: Vec<u8> = Vec::new();
        loop {
            if let Some(pos) = self.inbuf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.inbuf.drain(..=pos).collect();
                if self.discarding {
                    self.discarding = false;
                    return Ok(Line::TooLong(head));
                }
                if line.len() > MAX_LINE {
                    return Ok(Line::TooLong(line[..64].to_vec()));
                }
                return Ok(Line::Ok(line));
            }
            if self.inbuf.len() > MAX_LINE {
                if !self.discarding {
                    head = self.inbuf[..64].to_vec();
                }
                self.discarding = true;
                self.inbuf.clear();
            }
            self.flush_out().await?;
            // An idle session keeps no output buffer.
            if self.out.capacity() > 4096 {
                self.out = Vec::new();
            }
            match self.fill(timeout).await? {
                Some(()) => {}
                None => return Ok(Line::Timeout),
            }
            if self.inbuf.is_empty() && self.deflate.is_none() {
                continue;
            }
        }
    }

    /// Exactly `n` bytes (a literal), appended to `dst`; `discard` drops them instead.
    async fn read_exact_into(&mut self, n: u64, dst: &mut Vec<u8>, discard: bool) -> Step<bool> {
        let mut left = n;
        let timeout = self.timeout();
        loop {
            let take = (self.inbuf.len() as u64).min(left) as usize;
            if !discard {
                dst.extend_from_slice(&self.inbuf[..take]);
            }
            self.inbuf.drain(..take);
            left -= take as u64;
            if left == 0 {
                return Ok(true);
            }
            self.flush_out().await?;
            if self.fill(timeout).await?.is_none() {
                return Ok(false);
            }
        }
    }

    fn timeout(&self) -> Duration {
        if self.session.is_some() {
            self.ctx.settings.idle_timeout
        } else {
            self.ctx.settings.login_timeout
        }
    }

    /// One complete command with its literals, within the limits.
    async fn read_command(&mut self) -> Step<Incoming> {
        let timeout = self.timeout();
        let mut cmd: Vec<u8> = Vec::new();
        let mut tag = None;
        let mut literal_limit = MAX_SMALL_LITERAL;
        let mut total_limit = MAX_COMMAND as u64;
        let mut refused: Option<Reply<'static>> = None;
        let mut first = true;
        loop {
            let line = match self.read_line(timeout).await? {
                Line::Ok(l) => l,
                Line::TooLong(head) => {
                    let t = tag.clone().or_else(|| parse::tag_of(&head));
                    return Ok(Incoming::Refused(
                        t,
                        Reply::bad(format!("command line longer than {MAX_LINE} octets"))
                            .code("TOOBIG"),
                    ));
                }
                Line::Timeout => return Ok(Incoming::Timeout),
            };
            if first {
                first = false;
                tag = parse::tag_of(&line);
                let name = parse::command_name(&line);
                if self.session.is_some() && name == "APPEND" {
                    literal_limit = self.ctx.settings.max_message_size;
                    total_limit =
                        self.ctx.settings.max_message_size.saturating_mul(2) + MAX_COMMAND as u64;
                }
            }
            let marker = parse::literal_marker(&line);
            if refused.is_none() {
                cmd.extend_from_slice(&line);
            }
            let Some((n, sync)) = marker else {
                if let Some(r) = refused {
                    return Ok(Incoming::Refused(tag, r));
                }
                return Ok(Incoming::Command(cmd));
            };
            if refused.is_none() {
                if n > literal_limit {
                    let kind = if literal_limit > MAX_SMALL_LITERAL {
                        Kind::No
                    } else {
                        Kind::Bad
                    };
                    refused = Some(
                        Reply::new(
                            kind,
                            format!("literal of {n} octets is over the limit of {literal_limit}"),
                        )
                        .code("TOOBIG"),
                    );
                } else if cmd.len() as u64 + n > total_limit {
                    refused = Some(Reply::bad("command too long").code("TOOBIG"));
                }
                // LITERAL- (RFC 7888 section 5) before login: a non-synchronising literal
                // over 4096 octets is refused; its bytes are read and thrown away.
                if refused.is_none() && !sync && self.session.is_none() && n > LITERAL_MINUS_MAX {
                    refused = Some(Reply::bad(format!(
                        "non-synchronizing literal of {n} octets is over LITERAL-'s limit of {LITERAL_MINUS_MAX}: send it as a synchronizing literal"
                    )).code("TOOBIG"));
                }
                if refused.is_some() {
                    cmd = Vec::new();
                    if sync {
                        // Not invited: the client sends nothing more of this command.
                        let r = refused
                            .take()
                            .unwrap_or_else(|| Reply::bad("refused").code("TOOBIG"));
                        return Ok(Incoming::Refused(tag, r));
                    }
                }
            }
            if sync {
                respond::continuation(&mut self.out, "Ready for literal data");
            }
            let discard = refused.is_some();
            if !self.read_exact_into(n, &mut cmd, discard).await? {
                return Ok(Incoming::Timeout);
            }
        }
    }

    fn plaintext_allowed(&self) -> bool {
        let s = &self.ctx.settings;
        plaintext_allowed(
            self.tls_active,
            self.peer.addr.ip(),
            s.loopback_plaintext,
            s.allow_plaintext_auth,
        )
    }

    fn capabilities(&self) -> String {
        // RFC 7888 section 5: never both. Before login only LITERAL- holds (unauthenticated
        // clients send small literals); after it, LITERAL+ lifts the 4096-octet bound.
        let literal = if self.session.is_none() {
            "LITERAL-"
        } else {
            "LITERAL+"
        };
        let mut caps = vec![
            "IMAP4rev1",
            "IMAP4rev2",
            literal,
            "SASL-IR",
            "ID",
            "ENABLE",
            "IDLE",
        ];
        if self.session.is_none() {
            if self.ctx.tls.is_some() && !self.tls_active {
                caps.push("STARTTLS");
            }
            if self.plaintext_allowed() {
                caps.push("AUTH=PLAIN");
            } else {
                caps.push("LOGINDISABLED");
            }
            return caps.join(" ");
        }
        caps.extend([
            "NAMESPACE",
            "UNSELECT",
            "UIDPLUS",
            "MOVE",
            "CHILDREN",
            "LIST-EXTENDED",
            "LIST-STATUS",
            "SPECIAL-USE",
            "CREATE-SPECIAL-USE",
            "ESEARCH",
            "SEARCHRES",
            "CONDSTORE",
            "QRESYNC",
            "QUOTA",
            "QUOTA=RES-STORAGE",
            "QUOTA=RES-MESSAGE",
            "MULTIAPPEND",
            "CATENATE",
            "BINARY",
            "SORT",
            "SORT=DISPLAY",
            "ESORT",
            "THREAD=ORDEREDSUBJECT",
            "THREAD=REFERENCES",
            "STATUS=SIZE",
            "SAVEDATE",
            "OBJECTID",
            "PREVIEW",
            "UTF8=ACCEPT",
            "ACL",
            "RIGHTS=texk",
            "WITHIN",
        ]);
        if self.deflate.is_none() {
            caps.push("COMPRESS=DEFLATE");
        }
        let mut s = caps.join(" ");
        s.push_str(&format!(
            " APPENDLIMIT={}",
            self.ctx.settings.max_message_size
        ));
        s
    }

    // ------------------------------------------------------------- main loop

    async fn run(&mut self) -> Step {
        let caps = self.capabilities();
        respond::greeting(&mut self.out, &caps, &self.ctx.settings.greeting);
        loop {
            let incoming = self.read_command().await?;
            let buf = match incoming {
                Incoming::Command(b) => b,
                Incoming::Refused(tag, text) => {
                    self.capture_chunk(telemetry::Direction::Client, b"[refused command]\r\n");
                    match tag {
                        Some(t) => self.tagged(&t, text),
                        None => self.untagged(text),
                    }
                    continue;
                }
                Incoming::Timeout => {
                    respond::bye(&mut self.out, None, "autologout: idle for too long");
                    let _ = self.flush_out().await;
                    return Err(Gone);
                }
            };
            let name = parse::command_name(&buf);
            if matches!(name.as_str(), "LOGIN" | "AUTHENTICATE") {
                let t = parse::tag_of(&buf).unwrap_or_default();
                self.capture_chunk(
                    telemetry::Direction::Client,
                    format!("{t} {name} ***\r\n").as_bytes(),
                );
            } else {
                self.capture_chunk(telemetry::Direction::Client, &buf);
            }
            let (tag, cmd) = match parse::parse_command(&buf) {
                Ok(x) => x,
                Err(e) => {
                    // An unsupported charset is NO [BADCHARSET] (RFC 9051 6.4.4), the rest BAD.
                    let kind = if e.0.starts_with("[BADCHARSET") {
                        Kind::No
                    } else {
                        Kind::Bad
                    };
                    let text = e.to_string();
                    match parse::tag_of(&buf) {
                        Some(t) => self.tagged(&t, Reply::from_text(kind, &text)),
                        None => self.untagged(Reply::from_text(Kind::Bad, &text)),
                    }
                    continue;
                }
            };
            // Boxed: the session's future stays small while it waits for the next command.
            if Box::pin(self.dispatch(&tag, cmd)).await? {
                self.flush_out().await?;
                return Ok(());
            }
            if self.out.len() > OUT_CHUNK {
                self.flush_out().await?;
            }
            // A big command (an APPEND) does not leave its buffer behind.
            if self.inbuf.is_empty() && self.inbuf.capacity() > 16 * 1024 {
                self.inbuf = Vec::new();
            }
        }
    }

    /// Carry out one command; `true` at LOGOUT.
    async fn dispatch(&mut self, tag: &str, cmd: Command) -> Step<bool> {
        match cmd {
            Command::Capability => {
                let c = self.capabilities();
                respond::capability(&mut self.out, &c);
                self.tagged(tag, Reply::ok("CAPABILITY completed"));
            }
            Command::Noop | Command::Check => {
                self.updates(true).await?;
                self.tagged(tag, Reply::ok("completed"));
            }
            Command::Logout => {
                respond::bye(&mut self.out, None, "logging out");
                self.tagged(tag, Reply::ok("LOGOUT completed"));
                return Ok(true);
            }
            Command::Id => {
                respond::id(
                    &mut self.out,
                    &[
                        ("name", crate::IMPLEMENTATION),
                        ("version", env!("CARGO_PKG_VERSION")),
                    ],
                );
                self.tagged(tag, Reply::ok("ID completed"));
            }
            Command::StartTls => self.starttls(tag).await?,
            Command::Login(user, password) => {
                if self.session.is_some() {
                    self.tagged(tag, Reply::bad("already authenticated"));
                } else if !self.plaintext_allowed() {
                    self.tagged(
                        tag,
                        Reply::no("use STARTTLS before LOGIN").code("PRIVACYREQUIRED"),
                    );
                } else {
                    let user = String::from_utf8_lossy(&user).into_owned();
                    let pw = String::from_utf8_lossy(&password).into_owned();
                    self.login(tag, &user, Secret::new(pw)).await?;
                }
            }
            Command::Authenticate { mechanism, initial } => {
                self.authenticate(tag, &mechanism, initial).await?
            }
            _ if self.session.is_none() => {
                self.tagged(tag, Reply::bad("command not valid before authentication"))
            }
            Command::Enable(caps) => {
                let mut done = Vec::new();
                for c in caps {
                    let flag = match c.as_str() {
                        "CONDSTORE" => &mut self.enabled.condstore,
                        "QRESYNC" => &mut self.enabled.qresync,
                        "UTF8=ACCEPT" => &mut self.enabled.utf8,
                        "IMAP4REV2" => &mut self.enabled.rev2,
                        _ => continue,
                    };
                    if !*flag {
                        *flag = true;
                        done.push(c);
                    }
                }
                if self.enabled.qresync {
                    self.enabled.condstore = true;
                }
                respond::enabled(&mut self.out, &done);
                self.tagged(tag, Reply::ok("ENABLE completed"));
            }
            Command::Namespace => {
                let other = self.wire_name(store_client::SHARED_PREFIX);
                respond::namespace(&mut self.out, &other);
                self.tagged(tag, Reply::ok("NAMESPACE completed"));
            }
            Command::Select {
                mailbox,
                read_only,
                condstore,
                qresync,
            } => {
                self.select(tag, &mailbox, read_only, condstore, qresync)
                    .await?
            }
            Command::Create {
                mailbox,
                special_use,
            } => {
                let Some(name) = self.mailbox_name(tag, &mailbox) else {
                    return Ok(false);
                };
                let r = self.sess().create(&name, special_use.as_deref()).await;
                self.done(tag, r.map(|_| ()), "CREATE").await?;
            }
            Command::Delete(m) => {
                let Some(name) = self.mailbox_name(tag, &m) else {
                    return Ok(false);
                };
                if self
                    .selected
                    .as_ref()
                    .is_some_and(|s| s.folder.name() == name)
                {
                    self.selected = None;
                }
                let r = self.sess().delete(&name).await;
                self.done(tag, r, "DELETE").await?;
            }
            Command::Rename(a, b) => {
                let (Some(a), Some(b)) = (self.mailbox_name(tag, &a), self.mailbox_name(tag, &b))
                else {
                    return Ok(false);
                };
                let r = self.sess().rename(&a, &b).await;
                self.done(tag, r, "RENAME").await?;
            }
            Command::Subscribe(m) => {
                let Some(name) = self.mailbox_name(tag, &m) else {
                    return Ok(false);
                };
                let r = self.sess().subscribe(&name).await;
                self.done(tag, r, "SUBSCRIBE").await?;
            }
            Command::Unsubscribe(m) => {
                let Some(name) = self.mailbox_name(tag, &m) else {
                    return Ok(false);
                };
                let r = self.sess().unsubscribe(&name).await;
                self.done(tag, r, "UNSUBSCRIBE").await?;
            }
            Command::List(l) => self.list(tag, l).await?,
            Command::Lsub(reference, pattern) => self.lsub(tag, &reference, &pattern).await?,
            Command::Status(m, items) => {
                let Some(name) = self.mailbox_name(tag, &m) else {
                    return Ok(false);
                };
                match self.status_line(&name, &items).await {
                    Ok(l) => {
                        self.out.extend_from_slice(&l);
                        self.updates(true).await?;
                        self.tagged(tag, Reply::ok("STATUS completed"));
                    }
                    Err(e) => self.tagged(tag, store_error(&e)),
                }
            }
            Command::Append(m, msgs) => self.append(tag, &m, msgs).await?,
            Command::Idle => self.idle(tag).await?,
            Command::Compress(alg) => {
                if alg != "DEFLATE" {
                    self.tagged(tag, Reply::no("only DEFLATE is supported").code("CANNOT"));
                } else if self.deflate.is_some() {
                    self.tagged(
                        tag,
                        Reply::no("compression is already active").code("COMPRESSIONACTIVE"),
                    );
                } else {
                    self.tagged(tag, Reply::ok("DEFLATE active"));
                    self.flush_out().await?;
                    let pending = std::mem::take(&mut self.inbuf);
                    self.deflate = Some(Box::new(Deflate {
                        inflate: Decompress::new(false),
                        deflate: Compress::new(Compression::fast(), false),
                        pending,
                    }));
                }
            }
            Command::GetQuota(root) => {
                let root = String::from_utf8_lossy(&root).into_owned();
                match self.sess().quota(&root).await {
                    Ok(q) => {
                        quota_data(&mut self.out, &q);
                        self.tagged(tag, Reply::ok("GETQUOTA completed"));
                    }
                    Err(e) => self.tagged(tag, store_error(&e)),
                }
            }
            Command::GetQuotaRoot(m) => {
                let Some(name) = self.mailbox_name(tag, &m) else {
                    return Ok(false);
                };
                match self.sess().quota_roots(&name).await {
                    Ok(roots) => {
                        let names: Vec<&str> = roots.iter().map(|q| q.root.as_str()).collect();
                        let wire = self.wire_name(&name);
                        respond::quota_root(&mut self.out, &wire, &names);
                        for q in &roots {
                            quota_data(&mut self.out, q);
                        }
                        self.tagged(tag, Reply::ok("GETQUOTAROOT completed"));
                    }
                    Err(e) => self.tagged(tag, store_error(&e)),
                }
            }
            Command::SetQuota(_) => self.tagged(
                tag,
                Reply::no("quotas are set by the administrator (mboxutil -q)").code("NOPERM"),
            ),
            Command::Acl(a) => self.acl(tag, a).await?,
            // Everything below needs a selected folder.
            _ if self.selected.is_none() => self.tagged(tag, Reply::bad("no mailbox selected")),
            Command::Close | Command::Unselect => {
                let close = matches!(cmd, Command::Close);
                if let Some(mut sel) = self.selected.take() {
                    if close && !sel.folder.read_only() {
                        // CLOSE expunges silently (RFC 9051 6.4.1).
                        if let Err(e) = sel.folder.expunge(None).await {
                            warn!("CLOSE expunge: {e}");
                        }
                    }
                }
                self.tagged(tag, Reply::ok("completed"));
            }
            Command::Expunge => {
                let r = self.sel().folder.expunge(None).await;
                match r {
                    Ok(_) => {
                        self.updates(true).await?;
                        self.tagged(tag, Reply::ok("EXPUNGE completed"));
                    }
                    Err(e) => self.tagged(tag, store_error(&e)),
                }
            }
            Command::UidExpunge(set) => {
                let uids = self.resolve(&set, true);
                let r = self.sel().folder.expunge(Some(&uids)).await;
                match r {
                    Ok(_) => {
                        self.updates(true).await?;
                        self.tagged(tag, Reply::ok("UID EXPUNGE completed"));
                    }
                    Err(e) => self.tagged(tag, store_error(&e)),
                }
            }
            Command::Search { uid, ret, key } => self.search(tag, uid, ret, &key).await?,
            Command::Fetch {
                uid,
                set,
                atts,
                changed_since,
                vanished,
            } => {
                self.fetch(tag, uid, &set, atts, changed_since, vanished)
                    .await?
            }
            Command::Store {
                uid,
                set,
                op,
                silent,
                flags,
                unchanged_since,
            } => {
                self.store(tag, uid, &set, op, silent, &flags, unchanged_since)
                    .await?
            }
            Command::Copy { uid, set, mailbox } => {
                self.copy(tag, uid, &set, &mailbox, false).await?
            }
            Command::Move { uid, set, mailbox } => {
                self.copy(tag, uid, &set, &mailbox, true).await?
            }
            Command::Sort {
                uid,
                ret,
                criteria,
                key,
            } => self.sort(tag, uid, ret, &criteria, &key).await?,
            Command::Thread {
                uid,
                algorithm,
                key,
            } => self.thread(tag, uid, algorithm, &key).await?,
        }
        Ok(false)
    }

    fn sess(&self) -> Session {
        self.session.clone().expect("checked by dispatch")
    }

    fn sel(&mut self) -> &mut Selected {
        self.selected.as_mut().expect("checked by dispatch")
    }

    /// Finish a command that only succeeds or fails.
    async fn done(&mut self, tag: &str, r: Result<(), ClientError>, what: &str) -> Step {
        match r {
            Ok(()) => {
                self.updates(true).await?;
                self.tagged(tag, Reply::ok(format!("{what} completed")));
            }
            Err(e) => self.tagged(tag, store_error(&e)),
        }
        Ok(())
    }

    /// A mailbox name from the wire (modified UTF-7 unless UTF8=ACCEPT), INBOX normalised.
    fn mailbox_name(&mut self, tag: &str, raw: &[u8]) -> Option<String> {
        let s = match std::str::from_utf8(raw) {
            Ok(s) => s,
            Err(_) => {
                self.tagged(tag, Reply::bad("mailbox name is not UTF-8"));
                return None;
            }
        };
        let name = if self.enabled.utf8 {
            Some(s.to_owned())
        } else {
            utf7::decode(s)
        };
        let Some(name) = name else {
            self.tagged(tag, Reply::bad("invalid modified UTF-7 mailbox name"));
            return None;
        };
        Some(normalise_inbox(&name))
    }

    /// A store name as it goes on the wire.
    fn wire_name(&self, name: &str) -> String {
        if self.enabled.utf8 {
            name.to_owned()
        } else {
            utf7::encode(name)
        }
    }

    // --------------------------------------------------------------- updates

    /// Announce what changed in the selected folder. `allow_expunge` is false during FETCH,
    /// STORE and SEARCH by sequence number (RFC 9051 7.5.1).
    async fn updates(&mut self, allow_expunge: bool) -> Step {
        let Some(sel) = self.selected.as_mut() else {
            return Ok(());
        };
        // The watcher wakes on every change to the folder, this process's own writes at
        // once and other processes' within its poll interval: without one there is nothing
        // new, and the poll (a trip to the blocking pool) is skipped.
        let changed = match sel.watcher.as_mut() {
            Some(w) => !matches!(
                tokio::time::timeout(Duration::ZERO, w.changed()).await,
                Err(_elapsed)
            ),
            None => true,
        };
        if !(changed || (allow_expunge && sel.held_back)) {
            return Ok(());
        }
        sel.held_back = !allow_expunge;
        let up = match sel.folder.poll(allow_expunge).await {
            Ok(u) => u,
            Err(ClientError::NoSuchMailbox(_)) => {
                // Deleted (or renamed away) under this session: as Dovecot does, say so
                // and end the session rather than serve numbers that mean nothing.
                info!("{} was deleted while selected", sel.folder.name());
                self.selected = None;
                respond::bye(
                    &mut self.out,
                    Some("NONEXISTENT"),
                    "the selected mailbox no longer exists",
                );
                let _ = self.flush_out().await;
                return Err(Gone);
            }
            Err(e) => {
                warn!("polling {}: {e}", sel.folder.name());
                return Ok(());
            }
        };
        self.announce(up);
        Ok(())
    }

    fn announce(&mut self, up: Update) {
        if up.is_empty() {
            return;
        }
        if !up.vanished.is_empty() && self.enabled.qresync {
            let mut v = up.vanished.clone();
            v.sort_unstable();
            respond::vanished(&mut self.out, false, &respond::ranges(&v));
        } else {
            for seq in &up.expunged {
                respond::expunge(&mut self.out, *seq);
            }
        }
        if let Some(kw) = &up.keywords {
            respond::flags(&mut self.out, kw);
            let code = respond::permanent_flags(kw, false);
            self.untagged(Reply::ok("flags permitted").with(code));
        }
        if let Some(n) = up.exists {
            respond::exists(&mut self.out, n);
        }
        if let Some(r) = up.recent {
            if !self.enabled.rev2 {
                respond::recent(&mut self.out, r);
            }
        }
        let (qresync, condstore) = (self.enabled.qresync, self.enabled.condstore);
        for (seq, uid, flags, modseq) in &up.flags {
            respond::fetch_flags(
                &mut self.out,
                *seq,
                Some((flags, false)),
                qresync.then_some(*uid),
                condstore.then_some(*modseq),
            );
        }
    }

    // ------------------------------------------------------ authentication

    async fn starttls(&mut self, tag: &str) -> Step {
        let Some(tls) = self.ctx.tls.clone() else {
            self.tagged(tag, Reply::no("TLS is not available").code("UNAVAILABLE"));
            return Ok(());
        };
        if self.tls_active || self.session.is_some() {
            self.tagged(tag, Reply::bad("STARTTLS is not allowed now"));
            return Ok(());
        }
        self.tagged(tag, Reply::ok("begin TLS negotiation now"));
        self.flush_out().await?;
        // Anything pipelined after STARTTLS in plaintext is discarded (RFC 9051 6.2.1).
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
                info!("TLS negotiation with {} failed: {e}", self.peer.addr);
                Err(Gone)
            }
            Err(_) => Err(Gone),
        }
    }

    async fn authenticate(&mut self, tag: &str, mechanism: &str, initial: Option<String>) -> Step {
        if self.session.is_some() {
            self.tagged(tag, Reply::bad("already authenticated"));
            return Ok(());
        }
        if mechanism != "PLAIN" {
            self.tagged(
                tag,
                Reply::no("unsupported authentication mechanism").code("CANNOT"),
            );
            return Ok(());
        }
        if !self.plaintext_allowed() {
            self.tagged(
                tag,
                Reply::no("use STARTTLS before AUTHENTICATE PLAIN").code("PRIVACYREQUIRED"),
            );
            return Ok(());
        }
        let response = match initial {
            Some(r) => r,
            None => {
                respond::continuation_base64(&mut self.out);
                match self.read_line(self.ctx.settings.login_timeout).await? {
                    Line::Ok(l) => {
                        self.capture_chunk(telemetry::Direction::Client, b"***\r\n");
                        String::from_utf8_lossy(&l).trim().to_owned()
                    }
                    Line::TooLong(_) => {
                        self.tagged(tag, Reply::bad("response too long"));
                        return Ok(());
                    }
                    Line::Timeout => return Err(Gone),
                }
            }
        };
        if response == "*" {
            self.tagged(tag, Reply::bad("authentication cancelled"));
            return Ok(());
        }
        use base64::Engine;
        let decoded = if response == "=" {
            Ok(Vec::new())
        } else {
            base64::engine::general_purpose::STANDARD.decode(response.as_bytes())
        };
        let Ok(decoded) = decoded else {
            self.tagged(tag, Reply::bad("invalid base64 in authentication response"));
            return Ok(());
        };
        let parts: Vec<&[u8]> = decoded.split(|&b| b == 0).collect();
        let [authzid, authcid, password] = parts.as_slice() else {
            self.tagged(
                tag,
                Reply::no("malformed PLAIN response").code("AUTHENTICATIONFAILED"),
            );
            return Ok(());
        };
        let (Ok(authzid), Ok(authcid), Ok(password)) = (
            std::str::from_utf8(authzid),
            std::str::from_utf8(authcid),
            std::str::from_utf8(password),
        ) else {
            self.tagged(
                tag,
                Reply::no("malformed PLAIN response").code("AUTHENTICATIONFAILED"),
            );
            return Ok(());
        };
        if !authzid.is_empty() && authzid != authcid {
            self.tagged(
                tag,
                Reply::no("authorization identity not permitted").code("AUTHORIZATIONFAILED"),
            );
            return Ok(());
        }
        let (authcid, password) = (authcid.to_owned(), password.to_owned());
        self.login(tag, &authcid, Secret::new(password)).await
    }

    async fn login(&mut self, tag: &str, name: &str, password: Secret<String>) -> Step {
        let ip = self.peer.addr.ip();
        if self.ctx.failures.locked_out(ip) {
            self.tagged(
                tag,
                Reply::no("too many failed logins, try again later").code("UNAVAILABLE"),
            );
            return Ok(());
        }
        let session = match self.ctx.client.authenticate(name, &password).await {
            Ok(s) => s,
            Err(ClientError::AuthenticationFailed) => {
                self.ctx.failures.record(ip);
                info!("authentication failed for {name:?} from {ip}");
                self.flush_out().await?;
                tokio::time::sleep(self.ctx.settings.auth_fail_delay).await;
                self.tagged(
                    tag,
                    Reply::no("invalid user name or password").code("AUTHENTICATIONFAILED"),
                );
                return Ok(());
            }
            Err(e) => {
                warn!("authentication of {name:?} from {ip}: {e}");
                self.tagged(
                    tag,
                    Reply::no("authentication is unavailable, try again later").code("UNAVAILABLE"),
                );
                return Ok(());
            }
        };
        let userid = session.user().to_owned();
        info!(
            "Login user={userid} from {ip}{}",
            if self.tls_active { " (TLS)" } else { "" }
        );
        self.flush_out().await?;
        self.start_capture(&userid, &format!("{tag} LOGIN {userid} ***\r\n"));
        self.session = Some(session);
        let caps = self.capabilities();
        let mut reply = Reply::ok("logged in");
        reply.code = respond::capability_code(&caps);
        self.tagged(tag, reply);
        Ok(())
    }

    fn start_capture(&mut self, userid: &str, record: &str) {
        match telemetry::start_session_capture(
            &self.ctx.root,
            "imap",
            userid,
            record,
            CAPTURE_BUFFER,
        ) {
            Ok(Some((path, writer))) => self.capture = Some(Capture { writer, path }),
            Ok(None) => {}
            Err(e) => warn!("{e}"),
        }
    }

    // ------------------------------------------------------------- folders

    async fn select(
        &mut self,
        tag: &str,
        raw: &[u8],
        read_only: bool,
        condstore: bool,
        qresync: Option<parse::QresyncParams>,
    ) -> Step {
        if qresync.is_some() && !self.enabled.qresync {
            self.tagged(tag, Reply::bad("QRESYNC is not enabled"));
            return Ok(());
        }
        let Some(name) = self.mailbox_name(tag, raw) else {
            return Ok(());
        };
        if self.selected.take().is_some() && (self.enabled.qresync || self.enabled.rev2) {
            self.untagged(Reply::ok("previous mailbox closed").code("CLOSED"));
        }
        self.saved.clear();
        if condstore {
            self.enabled.condstore = true;
        }
        let session = self.sess();
        let folder = match session.select(&name, read_only).await {
            Ok(f) => f,
            Err(e) => {
                self.tagged(tag, store_error(&e));
                return Ok(());
            }
        };
        let watcher = session.watch(&name).await.ok();
        let kws: Vec<String> = folder.keywords().to_vec();
        respond::flags(&mut self.out, &kws);
        let permanent = respond::permanent_flags(&kws, folder.read_only());
        let text = if folder.read_only() {
            "read-only mailbox"
        } else {
            "flags permitted"
        };
        self.untagged(Reply::ok(text).with(permanent));
        respond::exists(&mut self.out, folder.exists());
        if self.enabled.rev2 {
            // IMAP4rev2 SELECT includes the folder's LIST response (RFC 9051 6.3.2).
            if let Ok(infos) = session.list("*").await {
                if let Some(info) = infos.iter().find(|i| i.name == name) {
                    let mut attrs = vec![if info.has_children {
                        "\\HasChildren".to_string()
                    } else {
                        "\\HasNoChildren".to_string()
                    }];
                    attrs.extend(info.special_use.clone());
                    let wire = self.wire_name(&name);
                    respond::list(&mut self.out, &attrs, &wire, false);
                }
            }
        }
        if !self.enabled.rev2 {
            respond::recent(&mut self.out, folder.recent_count());
            if let Some(code) = folder.first_unseen().and_then(respond::unseen) {
                self.untagged(Reply::ok("first unseen").with(code));
            }
        }
        if let Some(code) = respond::uid_validity(folder.uidvalidity()) {
            self.untagged(Reply::ok("UIDs valid").with(code));
        }
        if let Some(code) = respond::uid_next(folder.uidnext()) {
            self.untagged(Reply::ok("predicted next UID").with(code));
        }
        // imap-types' HIGHESTMODSEQ cannot carry the 0 of a folder that never changed;
        // that one is written as the store reports it, through the generic code form
        // (NOMODSEQ would tell the client modseqs are not kept at all).
        let modseq = folder.highest_modseq();
        let code = respond::highest_modseq(modseq)
            .unwrap_or_else(|| respond::other_code(format!("HIGHESTMODSEQ {modseq}")));
        self.untagged(Reply::ok("highest modseq").with(code));
        let id = respond::other_code(format!("MAILBOXID ({})", mailbox_id(folder.uidvalidity())));
        self.untagged(Reply::ok("mailbox id").with(id));
        let sel = Selected {
            folder,
            watcher,
            // Changes between the snapshot and the watcher's start are picked up once.
            held_back: true,
        };
        if let Some(q) = qresync {
            if q.uidvalidity == sel.folder.uidvalidity() {
                let known: Option<Vec<(u32, u32)>> = q
                    .known_uids
                    .as_ref()
                    .map(|s| s.resolve(sel.folder.uidnext()));
                match vanished_earlier(&sel.folder, q.modseq, known.as_deref()).await {
                    Ok(v) => respond::vanished(&mut self.out, true, &v),
                    Err(e) => warn!("VANISHED for {name}: {e}"),
                }
                let uids = sel.folder.uids().to_vec();
                if let Ok(metas) = sel.folder.fetch_meta(&uids).await {
                    for m in metas.iter().filter(|m| m.modseq > q.modseq) {
                        let seq = sel.folder.seq_of(m.uid).unwrap_or(0);
                        let recent = sel.folder.is_recent(m.uid) && !self.enabled.rev2;
                        respond::fetch_uid_flags_modseq(
                            &mut self.out,
                            seq,
                            m.uid,
                            (&m.flags, recent),
                            m.modseq,
                        );
                    }
                }
            }
        }
        let mode = if sel.folder.read_only() {
            "READ-ONLY"
        } else {
            "READ-WRITE"
        };
        self.selected = Some(sel);
        self.tagged(tag, Reply::ok("SELECT completed").code(mode));
        Ok(())
    }

    async fn status_line(&self, name: &str, items: &[StatusItem]) -> Result<Vec<u8>, ClientError> {
        let session = self.sess();
        let st = session.status(name).await?;
        let mut parts = Vec::new();
        let mut values = Vec::new();
        for i in items {
            let (part, value) = match i {
                StatusItem::Messages => (
                    format!("MESSAGES {}", st.messages),
                    u32::try_from(st.messages).ok().map(StatusValue::Messages),
                ),
                StatusItem::Recent => {
                    // Messages above the folder's recent mark, counted on a read-only view.
                    let view = session.select(name, true).await?;
                    let n = view.uids().iter().filter(|&&u| u > st.recent_uid).count();
                    let n = u32::try_from(n).unwrap_or(u32::MAX);
                    (format!("RECENT {n}"), Some(StatusValue::Recent(n)))
                }
                StatusItem::UidNext => (
                    format!("UIDNEXT {}", st.uidnext),
                    Some(StatusValue::UidNext(st.uidnext)),
                ),
                StatusItem::UidValidity => (
                    format!("UIDVALIDITY {}", st.uidvalidity),
                    Some(StatusValue::UidValidity(st.uidvalidity)),
                ),
                StatusItem::Unseen => (
                    format!("UNSEEN {}", st.unseen),
                    u32::try_from(st.unseen).ok().map(StatusValue::Unseen),
                ),
                StatusItem::Deleted => (
                    format!("DELETED {}", st.deleted),
                    u32::try_from(st.deleted).ok().map(StatusValue::Deleted),
                ),
                StatusItem::Size => (
                    format!("SIZE {}", st.size),
                    Some(StatusValue::Size(st.size)),
                ),
                StatusItem::HighestModSeq => (
                    format!("HIGHESTMODSEQ {}", st.highest_modseq),
                    Some(StatusValue::HighestModSeq(st.highest_modseq)),
                ),
                // Not in imap-types: these make the whole line ours.
                StatusItem::AppendLimit => (
                    format!("APPENDLIMIT {}", self.ctx.settings.max_message_size),
                    None,
                ),
                StatusItem::MailboxId => {
                    (format!("MAILBOXID ({})", mailbox_id(st.uidvalidity)), None)
                }
            };
            parts.push(part);
            values.push(value);
        }
        let wire = self.wire_name(name);
        let mut l = Vec::new();
        if let Some(values) = values.into_iter().collect::<Option<Vec<StatusValue>>>() {
            if respond::status_data(&mut l, &wire, &values) {
                return Ok(l);
            }
        }
        l.extend_from_slice(b"* STATUS ");
        encode::mailbox(&mut l, &wire);
        l.extend_from_slice(format!(" ({})\r\n", parts.join(" ")).as_bytes());
        Ok(l)
    }

    fn pattern_of(&self, reference: &[u8], pattern: &[u8]) -> Option<String> {
        let mut full = reference.to_vec();
        full.extend_from_slice(pattern);
        let s = String::from_utf8(full).ok()?;
        if self.enabled.utf8 {
            Some(s)
        } else {
            utf7::decode(&s)
        }
    }

    async fn list(&mut self, tag: &str, c: ListCommand) -> Step {
        let session = self.sess();
        if c.patterns.len() == 1 && c.patterns[0].is_empty() {
            // The hierarchy delimiter and root (RFC 9051 6.3.9).
            respond::list(&mut self.out, &["\\Noselect".to_string()], "", false);
            self.tagged(tag, Reply::ok("LIST completed"));
            return Ok(());
        }
        let all = match session.list("*").await {
            Ok(a) => a,
            Err(e) => {
                self.tagged(tag, store_error(&e));
                return Ok(());
            }
        };
        let subs: HashSet<String> = match session.subscriptions().await {
            Ok(s) => s.into_iter().collect(),
            Err(e) => {
                self.tagged(tag, store_error(&e));
                return Ok(());
            }
        };
        let mut patterns = Vec::new();
        for p in &c.patterns {
            match self.pattern_of(&c.reference, p) {
                Some(p) => patterns.push(p),
                None => {
                    self.tagged(tag, Reply::bad("invalid mailbox pattern"));
                    return Ok(());
                }
            }
        }
        let matches = |name: &str| {
            patterns
                .iter()
                .any(|p| pattern_matches(p, name) || pattern_matches(&normalise_inbox(p), name))
        };
        // Parents that are not folders themselves (`Other Users/bob` above a shared folder)
        // are listed as \Noselect so clients can show the hierarchy (RFC 9051 6.3.9).
        let mut all = all;
        let mut synthetic: HashSet<String> = HashSet::new();
        if !c.select_subscribed && !c.select_special_use {
            let names: HashSet<String> = all.iter().map(|i| i.name.clone()).collect();
            for n in &names {
                let mut p = n.as_str();
                while let Some(i) = p.rfind('/') {
                    p = &p[..i];
                    if !p.is_empty() && !names.contains(p) {
                        synthetic.insert(p.to_owned());
                    }
                }
            }
            for p in &synthetic {
                all.push(store_client::MailboxInfo {
                    name: p.clone(),
                    special_use: None,
                    has_children: true,
                    subscribed: false,
                    shared: false,
                });
            }
            all.sort_by(|a, b| (a.name != "INBOX", &a.name).cmp(&(b.name != "INBOX", &b.name)));
        }
        let show_subscribed = c.return_subscribed || c.select_subscribed;
        let mut lines: Vec<(String, Vec<String>, Option<&str>, bool)> = Vec::new();
        let mut seen = HashSet::new();
        for info in &all {
            let subscribed = subs.contains(&info.name);
            if c.select_special_use && info.special_use.is_none() {
                continue;
            }
            let mut attrs = vec![if info.has_children {
                "\\HasChildren".to_string()
            } else {
                "\\HasNoChildren".to_string()
            }];
            if synthetic.contains(&info.name) {
                attrs.insert(0, "\\Noselect".to_string());
            }
            if let Some(su) = &info.special_use {
                attrs.push(su.clone());
            }
            if show_subscribed && subscribed {
                attrs.push("\\Subscribed".into());
            }
            let mut childinfo = None;
            if c.select_subscribed && !subscribed {
                let prefix = format!("{}/", info.name);
                if c.recursive_match && subs.iter().any(|s| s.starts_with(&prefix)) {
                    childinfo = Some("SUBSCRIBED");
                } else {
                    continue;
                }
            }
            if !matches(&info.name) {
                continue;
            }
            seen.insert(info.name.clone());
            let selectable = !synthetic.contains(&info.name);
            lines.push((info.name.clone(), attrs, childinfo, selectable));
        }
        if c.select_subscribed {
            let mut missing: Vec<&String> = subs
                .iter()
                .filter(|s| !seen.contains(*s) && !all.iter().any(|i| &i.name == *s))
                .filter(|s| matches(s))
                .collect();
            missing.sort();
            for s in missing {
                lines.push((
                    s.clone(),
                    vec!["\\NonExistent".into(), "\\Subscribed".into()],
                    None,
                    false,
                ));
            }
        }
        for (name, attrs, childinfo, exists) in lines {
            let wire = self.wire_name(&name);
            match childinfo {
                None => respond::list(&mut self.out, &attrs, &wire, false),
                // LIST-EXTENDED's CHILDINFO is not in imap-types: ours.
                Some(ci) => {
                    let mut l = format!("* LIST ({}) \"/\" ", attrs.join(" ")).into_bytes();
                    encode::mailbox(&mut l, &wire);
                    l.extend_from_slice(format!(" (\"CHILDINFO\" (\"{ci}\"))\r\n").as_bytes());
                    self.out.extend_from_slice(&l);
                }
            }
            if let (Some(items), true) = (&c.return_status, exists) {
                match self.status_line(&name, items).await {
                    Ok(s) => self.out.extend_from_slice(&s),
                    Err(e) => warn!("LIST-STATUS {name}: {e}"),
                }
            }
        }
        self.updates(true).await?;
        self.tagged(tag, Reply::ok("LIST completed"));
        Ok(())
    }

    async fn lsub(&mut self, tag: &str, reference: &[u8], pattern: &[u8]) -> Step {
        let session = self.sess();
        let Some(pattern) = self.pattern_of(reference, pattern) else {
            self.tagged(tag, Reply::bad("invalid mailbox pattern"));
            return Ok(());
        };
        match session.subscriptions().await {
            Ok(mut subs) => {
                subs.sort();
                for s in subs.iter().filter(|s| {
                    pattern_matches(&pattern, s) || pattern_matches(&normalise_inbox(&pattern), s)
                }) {
                    let wire = self.wire_name(s);
                    respond::list(&mut self.out, &[], &wire, true);
                }
                self.tagged(tag, Reply::ok("LSUB completed"));
            }
            Err(e) => self.tagged(tag, store_error(&e)),
        }
        Ok(())
    }

    async fn append(
        &mut self,
        tag: &str,
        raw: &[u8],
        msgs: Vec<crate::ext::multiappend::AppendMessage>,
    ) -> Step {
        let Some(name) = self.mailbox_name(tag, raw) else {
            return Ok(());
        };
        let mut batch = Vec::with_capacity(msgs.len());
        for m in msgs {
            let mut flags = Vec::new();
            for f in &m.flags {
                if f.eq_ignore_ascii_case("\\Recent") {
                    continue;
                }
                match Flag::parse(f) {
                    Ok(f) => flags.push(f),
                    Err(e) => {
                        self.tagged(tag, Reply::bad(e.to_string()));
                        return Ok(());
                    }
                }
            }
            let data = match m.data {
                AppendData::Literal(d) => d,
                AppendData::Catenate(parts) => match self.catenate(parts).await {
                    Ok(d) => d,
                    Err(status) => {
                        self.tagged(tag, status);
                        return Ok(());
                    }
                },
            };
            if data.is_empty() {
                self.tagged(tag, Reply::no("empty message").code("CANNOT"));
                return Ok(());
            }
            batch.push((data, flags, m.date));
        }
        // To the selected folder: through it, so that the EXISTS announced next costs no
        // second trip to the store.
        let r = match self.selected.as_mut() {
            Some(sel) => sel.folder.append_many(&name, batch).await,
            None => self.sess().append_many(&name, batch).await,
        };
        match r {
            Ok((validity, uids)) => {
                self.updates(true).await?;
                // One message: imap-types' APPENDUID; MULTIAPPEND's UID set (RFC 4315
                // uid-set) is ours.
                let code = match uids.as_slice() {
                    [uid] => respond::append_uid(validity, *uid),
                    _ => None,
                }
                .unwrap_or_else(|| {
                    respond::other_code(format!("APPENDUID {validity} {}", compact_set(&uids)))
                });
                self.tagged(tag, Reply::ok("APPEND completed").with(code));
            }
            Err(ClientError::NoSuchMailbox(m)) => self.tagged(
                tag,
                Reply::no(format!("no such mailbox: {m}")).code("TRYCREATE"),
            ),
            Err(e) => self.tagged(tag, store_error(&e)),
        }
        Ok(())
    }

    /// CATENATE (RFC 4469): the message its parts make, or the tagged status refusing it.
    async fn catenate(&mut self, parts: Vec<CatPart>) -> Result<Vec<u8>, Reply<'static>> {
        let limit = self.ctx.settings.max_message_size;
        let mut out = Vec::new();
        for part in parts {
            let bytes = match part {
                CatPart::Text(t) => t,
                CatPart::Url(u) => self.url_bytes(&u).await.map_err(|why| {
                    let code = format!("BADURL {}", catenate::resp_url(&u));
                    match respond::code_from_text(&code) {
                        Some(c) => Reply::no(why).with(c),
                        None => Reply::no(why).code("BADURL"),
                    }
                })?,
            };
            if out.len() as u64 + bytes.len() as u64 > limit {
                return Err(Reply::no(format!(
                    "the catenated message is over the limit of {limit} octets"
                ))
                .code("TOOBIG"));
            }
            out.extend_from_slice(&bytes);
        }
        Ok(out)
    }

    /// The bytes an IMAP URL in CATENATE names, from the user's own folders (or any folder
    /// the user may read), checked against its UIDVALIDITY.
    async fn url_bytes(&mut self, url: &str) -> Result<Vec<u8>, String> {
        let u = catenate::parse_url(url)?;
        let session = self.sess();
        if let Some(user) = &u.user {
            if user != session.user() {
                return Err("the URL names another user".into());
            }
        }
        let folder = match &u.mailbox {
            Some(raw) => {
                let s = std::str::from_utf8(raw).map_err(|_| "mailbox is not UTF-8")?;
                // RFC 5092 names mailboxes in UTF-8; modified UTF-7 is taken too.
                let name = if s.contains('&') {
                    utf7::decode(s).unwrap_or_else(|| s.to_owned())
                } else {
                    s.to_owned()
                };
                normalise_inbox(&name)
            }
            None => match &self.selected {
                Some(sel) => sel.folder.name().to_owned(),
                None => return Err("a relative URL needs a selected mailbox".into()),
            },
        };
        let status = session
            .status(&folder)
            .await
            .map_err(|_| "no such mailbox".to_string())?;
        if u.uidvalidity.is_some_and(|v| v != status.uidvalidity) {
            return Err("UIDVALIDITY does not match".into());
        }
        let data = session
            .message_bytes(&folder, u.uid)
            .await
            .map_err(|_| "no such message".to_string())?;
        let data = match &u.section {
            None => data,
            Some(sec) => {
                let st = session
                    .message_structure(&folder, u.uid)
                    .await
                    .map_err(|_| "no such message".to_string())?;
                catenate::section_bytes(&data, &st, sec)
            }
        };
        Ok(catenate::apply_partial(data, u.partial))
    }

    async fn acl(&mut self, tag: &str, a: AclCommand) -> Step {
        let session = self.sess();
        let raw = match &a {
            AclCommand::SetAcl(m, ..)
            | AclCommand::DeleteAcl(m, _)
            | AclCommand::GetAcl(m)
            | AclCommand::ListRights(m, _)
            | AclCommand::MyRights(m) => m.clone(),
        };
        let Some(name) = self.mailbox_name(tag, &raw) else {
            return Ok(());
        };
        let wire = self.wire_name(&name);
        let mut l = Vec::new();
        let r: Result<(), ClientError> = async {
            match a {
                AclCommand::SetAcl(_, who, rights) => {
                    let current = if rights.starts_with(['+', '-']) {
                        session
                            .acl(&name)
                            .await?
                            .into_iter()
                            .find(|(id, _)| *id == who)
                            .map(|(_, r)| r)
                            .unwrap_or_default()
                    } else {
                        String::new()
                    };
                    let new = acl::apply(&current, &rights);
                    session.set_acl(&name, &who, &new).await?;
                }
                AclCommand::DeleteAcl(_, who) => session.set_acl(&name, &who, "").await?,
                AclCommand::GetAcl(_) => {
                    let entries = session.acl(&name).await?;
                    l.extend_from_slice(b"* ACL ");
                    encode::mailbox(&mut l, &wire);
                    let owner = owner_of(&name, session.user());
                    if !entries.iter().any(|(id, _)| *id == owner) {
                        l.push(b' ');
                        encode::mailbox(&mut l, &owner);
                        l.extend_from_slice(format!(" {}", acl::ALL_RIGHTS).as_bytes());
                    }
                    for (id, rights) in entries {
                        l.push(b' ');
                        encode::mailbox(&mut l, &id);
                        l.push(b' ');
                        encode::mailbox(&mut l, &rights);
                    }
                    l.extend_from_slice(b"\r\n");
                }
                AclCommand::ListRights(_, who) => {
                    // Must be able to administer the folder to ask.
                    session.acl(&name).await?;
                    l.extend_from_slice(b"* LISTRIGHTS ");
                    encode::mailbox(&mut l, &wire);
                    l.push(b' ');
                    encode::mailbox(&mut l, &who);
                    if who == owner_of(&name, session.user()) {
                        l.extend_from_slice(format!(" {}", acl::ALL_RIGHTS).as_bytes());
                    } else {
                        l.extend_from_slice(b" \"\" l r s w i p k x t e a");
                    }
                    l.extend_from_slice(b"\r\n");
                }
                AclCommand::MyRights(_) => {
                    let rights = session.my_rights(&name).await?;
                    l.extend_from_slice(b"* MYRIGHTS ");
                    encode::mailbox(&mut l, &wire);
                    l.push(b' ');
                    encode::mailbox(&mut l, &rights);
                    l.extend_from_slice(b"\r\n");
                }
            }
            Ok(())
        }
        .await;
        match r {
            Ok(()) => {
                self.out.extend_from_slice(&l);
                self.tagged(tag, Reply::ok("completed"));
            }
            Err(e) => self.tagged(tag, store_error(&e)),
        }
        Ok(())
    }

    // ------------------------------------------------------------- messages

    /// The UIDs a set names, in sequence order (sequence numbers out of range are skipped).
    fn resolve(&self, set: &SeqSet, uid: bool) -> Vec<u32> {
        let Some(sel) = self.selected.as_ref() else {
            return Vec::new();
        };
        let uids = sel.folder.uids();
        if *set == SeqSet::Saved {
            let saved: HashSet<u32> = self.saved.iter().copied().collect();
            return uids.iter().copied().filter(|u| saved.contains(u)).collect();
        }
        let mut out: Vec<u32> = Vec::new();
        if uid {
            let star = uids.last().copied().unwrap_or(0);
            for (a, b) in set.resolve(star) {
                let lo = uids.partition_point(|&u| u < a);
                let hi = uids.partition_point(|&u| u <= b);
                out.extend_from_slice(&uids[lo..hi]);
            }
        } else {
            let star = uids.len() as u32;
            for (a, b) in set.resolve(star) {
                let a = a.max(1) as usize;
                let b = (b as usize).min(uids.len());
                if a <= b {
                    out.extend_from_slice(&uids[a - 1..b]);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// `ids`: the object ids of the folder's messages, when the program names EMAILID or
    /// THREADID (RFC 8474 4.3).
    fn search_key(&self, s: &Search, ids: &[(u32, ObjectIds)]) -> Result<SearchKey, String> {
        let sel = self.selected.as_ref().ok_or("no mailbox selected")?;
        let uids = sel.folder.uids();
        let set_of = |v: &[(u32, u32)]| {
            let mut n = NumberSet::new();
            for &(a, b) in v {
                n.push(a, b);
            }
            n
        };
        let saved = || {
            let mut n = NumberSet::new();
            for &u in &self.saved {
                n.push(u, u);
            }
            SearchKey::Uid(n)
        };
        Ok(match s {
            Search::All | Search::SaveDateSupported => SearchKey::All,
            Search::Seq(SeqSet::Saved) | Search::Uid(SeqSet::Saved) => saved(),
            Search::Seq(set) => SearchKey::Seq(set_of(&set.resolve(uids.len() as u32))),
            Search::Uid(set) => {
                SearchKey::Uid(set_of(&set.resolve(uids.last().copied().unwrap_or(0))))
            }
            Search::Flag(f, on) => {
                let f = Flag::parse(f).map_err(|e| e.to_string())?;
                if *on {
                    SearchKey::Flag(f)
                } else {
                    SearchKey::NotFlag(f)
                }
            }
            Search::Recent => SearchKey::Recent,
            Search::New => SearchKey::New,
            Search::Old => SearchKey::Old,
            Search::Before(d) => SearchKey::Before(*d),
            Search::On(d) => SearchKey::On(*d),
            Search::Since(d) => SearchKey::Since(*d),
            Search::SentBefore(d) => SearchKey::SentBefore(*d),
            Search::SentOn(d) => SearchKey::SentOn(*d),
            Search::SentSince(d) => SearchKey::SentSince(*d),
            Search::SaveDateBefore(d) => SearchKey::SaveDateBefore(*d),
            Search::SaveDateOn(d) => SearchKey::SaveDateOn(*d),
            Search::SaveDateSince(d) => SearchKey::SaveDateSince(*d),
            Search::Younger(s) => SearchKey::Younger(*s),
            Search::Older(s) => SearchKey::Older(*s),
            Search::Larger(n) => SearchKey::Larger(*n),
            Search::Smaller(n) => SearchKey::Smaller(*n),
            Search::Header(f, v) => SearchKey::Header(f.clone(), v.clone()),
            Search::Body(t) => SearchKey::Body(t.clone()),
            Search::Text(t) => SearchKey::Text(t.clone()),
            Search::ModSeq(m) => SearchKey::ModSeq(*m),
            // A malformed id matches nothing.
            Search::EmailId(id) => {
                let mut n = NumberSet::new();
                if let Some(e) = EmailId::parse(id) {
                    for (u, _) in ids.iter().filter(|(_, o)| o.email == e) {
                        n.push(*u, *u);
                    }
                }
                SearchKey::Uid(n)
            }
            Search::ThreadId(id) => {
                let mut n = NumberSet::new();
                if let Some(t) = ThreadId::parse(id) {
                    for (u, _) in ids.iter().filter(|(_, o)| o.thread == t) {
                        n.push(*u, *u);
                    }
                }
                SearchKey::Uid(n)
            }
            Search::Not(k) => SearchKey::Not(Box::new(self.search_key(k, ids)?)),
            Search::Or(a, b) => SearchKey::Or(
                Box::new(self.search_key(a, ids)?),
                Box::new(self.search_key(b, ids)?),
            ),
            Search::And(v) => SearchKey::And(
                v.iter()
                    .map(|k| self.search_key(k, ids))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    async fn run_search(&mut self, tag: &str, key: &Search) -> Step<Option<Vec<u32>>> {
        let mut ids = Vec::new();
        if names_object_id(key) {
            if let Some(sel) = &self.selected {
                let uids = sel.folder.uids().to_vec();
                match sel.folder.object_ids(&uids).await {
                    Ok(v) => ids = v,
                    Err(e) => {
                        self.tagged(tag, store_error(&e));
                        return Ok(None);
                    }
                }
            }
        }
        let k = match self.search_key(key, &ids) {
            Ok(k) => k,
            Err(e) => {
                self.tagged(tag, Reply::bad(e.to_string()));
                return Ok(None);
            }
        };
        match self.sel().folder.search(&k).await {
            Ok(u) => Ok(Some(u)),
            Err(e) => {
                self.tagged(tag, store_error(&e));
                Ok(None)
            }
        }
    }

    async fn search(
        &mut self,
        tag: &str,
        uid: bool,
        ret: Option<ReturnOptions>,
        key: &Search,
    ) -> Step {
        let Some(uids) = self.run_search(tag, key).await? else {
            return Ok(());
        };
        let has_modseq = contains_modseq(key);
        if has_modseq {
            self.enabled.condstore = true;
        }
        let modseq = if has_modseq && !uids.is_empty() {
            match self.sel().folder.fetch_meta(&uids).await {
                Ok(m) => m.iter().map(|m| m.modseq).max(),
                Err(_) => None,
            }
        } else {
            None
        };
        let nums: Vec<u32> = if uid {
            uids.clone()
        } else {
            let f = &self.sel().folder;
            let mut v: Vec<u32> = uids.iter().filter_map(|&u| f.seq_of(u)).collect();
            v.sort_unstable();
            v
        };
        let ret = match ret {
            Some(r) => Some(r),
            None if self.enabled.rev2 => Some(ReturnOptions {
                all: true,
                ..Default::default()
            }),
            None => None,
        };
        match ret {
            Some(r) => {
                if r.save {
                    self.saved = uids.clone();
                }
                if r.min || r.max || r.all || r.count {
                    let l = esearch::response(tag, uid, &r, &nums, modseq);
                    self.line(&l);
                }
            }
            None => respond::search(&mut self.out, &nums, modseq),
        }
        self.updates(uid).await?;
        self.tagged(tag, Reply::ok("SEARCH completed"));
        Ok(())
    }

    async fn sort(
        &mut self,
        tag: &str,
        uid: bool,
        ret: Option<ReturnOptions>,
        criteria: &[(bool, parse::SortKey)],
        key: &Search,
    ) -> Step {
        let Some(uids) = self.run_search(tag, key).await? else {
            return Ok(());
        };
        let items = match self.sort_items(&uids).await {
            Ok(i) => i,
            Err(e) => {
                self.tagged(tag, store_error(&e));
                return Ok(());
            }
        };
        let sorted = crate::order::sort(items, criteria);
        let f = &self.sel().folder;
        let nums: Vec<u32> = sorted
            .iter()
            .filter_map(|&u| if uid { Some(u) } else { f.seq_of(u) })
            .collect();
        match ret {
            // ESORT (RFC 5267): an ESEARCH response in sort order.
            Some(r) => {
                if r.save {
                    let mut v = sorted.clone();
                    v.sort_unstable();
                    self.saved = v;
                }
                if r.min || r.max || r.all || r.count {
                    let l = esearch::sort_response(tag, uid, &r, &nums);
                    self.line(&l);
                }
            }
            None => respond::sort(&mut self.out, &nums),
        }
        self.updates(uid).await?;
        self.tagged(tag, Reply::ok("SORT completed"));
        Ok(())
    }

    async fn sort_items(&mut self, uids: &[u32]) -> Result<Vec<crate::order::Item>, ClientError> {
        let folder = &self.sel().folder;
        let metas = folder.fetch_meta(uids).await?;
        let mut out = Vec::with_capacity(metas.len());
        for chunk in metas.chunks(256) {
            let ids: Vec<u32> = chunk.iter().map(|m| m.uid).collect();
            let mut structures: std::collections::HashMap<u32, MessageStructure> =
                folder.structures(&ids).await?.into_iter().collect();
            for m in chunk {
                // Expunged meanwhile: left out.
                if let Some(st) = structures.remove(&m.uid) {
                    out.push(crate::order::Item::new(m, &st));
                }
            }
        }
        Ok(out)
    }

    async fn thread(
        &mut self,
        tag: &str,
        uid: bool,
        algorithm: parse::ThreadAlgorithm,
        key: &Search,
    ) -> Step {
        let Some(uids) = self.run_search(tag, key).await? else {
            return Ok(());
        };
        let items = match self.sort_items(&uids).await {
            Ok(i) => i,
            Err(e) => {
                self.tagged(tag, store_error(&e));
                return Ok(());
            }
        };
        let threads = crate::order::thread(items, algorithm);
        if let Some(sel) = self.selected.as_ref() {
            let f = &sel.folder;
            let map = |u: u32| if uid { u } else { f.seq_of(u).unwrap_or(0) };
            respond::thread(&mut self.out, &threads, &map);
        }
        self.updates(uid).await?;
        self.tagged(tag, Reply::ok("THREAD completed"));
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn store(
        &mut self,
        tag: &str,
        uid: bool,
        set: &SeqSet,
        op: StoreOp,
        silent: bool,
        flags: &[String],
        unchanged_since: Option<u64>,
    ) -> Step {
        if unchanged_since.is_some() {
            self.enabled.condstore = true;
        }
        let mut parsed = Vec::new();
        for f in flags {
            if f.eq_ignore_ascii_case("\\Recent") {
                continue;
            }
            match Flag::parse(f) {
                Ok(f) => parsed.push(f),
                Err(e) => {
                    self.tagged(tag, Reply::bad(e.to_string()));
                    return Ok(());
                }
            }
        }
        let uids = self.resolve(set, uid);
        let op = match op {
            StoreOp::Add => FlagOp::Add,
            StoreOp::Remove => FlagOp::Remove,
            StoreOp::Replace => FlagOp::Replace,
        };
        let r = self
            .sel()
            .folder
            .store_flags(&uids, op, &parsed, unchanged_since)
            .await;
        let result = match r {
            Ok(r) => r,
            Err(e) => {
                self.tagged(tag, store_error(&e));
                return Ok(());
            }
        };
        let modified: HashSet<u32> = result.modified.iter().copied().collect();
        if !silent || self.enabled.condstore {
            // Changed messages come back with their new flags; only the others (already as
            // asked) are read, and only when their FLAGS are to be shown.
            let mut metas: Vec<(u32, store_client::Flags, u64)> = result.changed.clone();
            if !silent {
                let changed: HashSet<u32> = metas.iter().map(|m| m.0).collect();
                let rest: Vec<u32> = uids
                    .iter()
                    .copied()
                    .filter(|u| !modified.contains(u) && !changed.contains(u))
                    .collect();
                if !rest.is_empty() {
                    let more = self
                        .sel()
                        .folder
                        .fetch_meta(&rest)
                        .await
                        .unwrap_or_default();
                    metas.extend(more.into_iter().map(|m| (m.uid, m.flags, m.modseq)));
                }
                metas.sort_by_key(|m| m.0);
            }
            let rev2 = self.enabled.rev2;
            let condstore = self.enabled.condstore;
            let Some(sel) = self.selected.as_ref() else {
                return Ok(());
            };
            let f = &sel.folder;
            for (muid, flags, modseq) in metas {
                let Some(seq) = f.seq_of(muid) else { continue };
                if silent && !uid && !condstore {
                    continue;
                }
                let recent = f.is_recent(muid) && !rev2;
                respond::fetch_flags(
                    &mut self.out,
                    seq,
                    (!silent).then_some((&flags, recent)),
                    uid.then_some(muid),
                    condstore.then_some(modseq),
                );
            }
        }
        self.updates(uid).await?;
        if modified.is_empty() {
            self.tagged(tag, Reply::ok("STORE completed"));
        } else {
            let f = &self.sel().folder;
            let nums: Vec<u32> = if uid {
                result.modified.clone()
            } else {
                result
                    .modified
                    .iter()
                    .filter_map(|&u| f.seq_of(u))
                    .collect()
            };
            let mut nums = nums;
            nums.sort_unstable();
            nums.dedup();
            let mut r = Reply::ok("conditional STORE failed for some");
            r.code = respond::modified(&nums);
            self.tagged(tag, r);
        }
        Ok(())
    }

    async fn copy(&mut self, tag: &str, uid: bool, set: &SeqSet, raw: &[u8], mv: bool) -> Step {
        let Some(dest) = self.mailbox_name(tag, raw) else {
            return Ok(());
        };
        let uids = self.resolve(set, uid);
        if uids.is_empty() {
            self.updates(uid || mv).await?;
            self.tagged(tag, Reply::ok("nothing to do"));
            return Ok(());
        }
        let session = self.sess();
        let from = self.sel().folder.name().to_owned();
        if mv && self.sel().folder.read_only() {
            self.tagged(tag, Reply::no("mailbox is read-only").code("READ-ONLY"));
            return Ok(());
        }
        let r = if mv {
            session.move_messages(&from, &uids, &dest).await
        } else {
            session.copy(&from, &uids, &dest).await
        };
        match r {
            Ok(c) => {
                let src: Vec<u32> = c.map.iter().map(|p| p.0).collect();
                let dst: Vec<u32> = c.map.iter().map(|p| p.1).collect();
                let code = respond::copy_uid(c.uidvalidity, &src, &dst);
                if mv {
                    let mut r = Reply::ok("moved");
                    r.code = code;
                    self.untagged(r);
                    self.updates(true).await?;
                    self.tagged(tag, Reply::ok("MOVE completed"));
                } else {
                    self.updates(uid).await?;
                    let mut r = Reply::ok("COPY completed");
                    r.code = code;
                    self.tagged(tag, r);
                }
            }
            Err(ClientError::NoSuchMailbox(m)) if m.contains(&dest) || m.contains("user/") => self
                .tagged(
                    tag,
                    Reply::no(format!("no such mailbox: {dest}")).code("TRYCREATE"),
                ),
            Err(e) => self.tagged(tag, store_error(&e)),
        }
        Ok(())
    }

    async fn fetch(
        &mut self,
        tag: &str,
        uid: bool,
        set: &SeqSet,
        mut atts: Vec<FetchAtt>,
        changed_since: Option<u64>,
        vanished: bool,
    ) -> Step {
        if changed_since.is_some() || atts.contains(&FetchAtt::ModSeq) {
            self.enabled.condstore = true;
        }
        if vanished && !self.enabled.qresync {
            self.tagged(tag, Reply::bad("VANISHED needs QRESYNC enabled"));
            return Ok(());
        }
        if uid && !atts.contains(&FetchAtt::Uid) {
            atts.insert(0, FetchAtt::Uid);
        }
        if changed_since.is_some() && !atts.contains(&FetchAtt::ModSeq) {
            atts.push(FetchAtt::ModSeq);
        }
        let uids = self.resolve(set, uid);
        if let (true, Some(cs)) = (vanished, changed_since) {
            let ranges = match set {
                SeqSet::Saved => compact_ranges(&self.saved),
                _ => set.resolve(self.sel().folder.uidnext()),
            };
            match vanished_earlier(&self.sel().folder, cs, Some(&ranges)).await {
                Ok(v) => respond::vanished(&mut self.out, true, &v),
                Err(e) => warn!("VANISHED: {e}"),
            }
        }
        let sets_seen = atts.iter().any(|a| match a {
            FetchAtt::Section { peek, .. } => !peek,
            FetchAtt::Rfc822 | FetchAtt::Rfc822Text => true,
            _ => false,
        });
        let needs_structure = atts.iter().any(|a| {
            matches!(
                a,
                FetchAtt::Envelope
                    | FetchAtt::BodyStructure
                    | FetchAtt::Body
                    | FetchAtt::Section { .. }
                    | FetchAtt::Rfc822Header
                    | FetchAtt::Rfc822Text
                    | FetchAtt::Preview
            )
        });
        let mut metas = match self.sel().folder.fetch_meta(&uids).await {
            Ok(m) => m,
            Err(e) => {
                self.tagged(tag, store_error(&e));
                return Ok(());
            }
        };
        if let Some(cs) = changed_since {
            metas.retain(|m| m.modseq > cs);
        }
        let mut seen_set: HashSet<u32> = HashSet::new();
        if sets_seen && !self.sel().folder.read_only() {
            let unseen: Vec<u32> = metas
                .iter()
                .filter(|m| !m.flags.is_seen())
                .map(|m| m.uid)
                .collect();
            if !unseen.is_empty() {
                match self
                    .sel()
                    .folder
                    .store_flags(&unseen, FlagOp::Add, &[Flag::Seen], None)
                    .await
                {
                    Ok(r) => {
                        for (u, flags, modseq) in r.changed {
                            if let Some(m) = metas.iter_mut().find(|m| m.uid == u) {
                                m.flags = flags;
                                m.modseq = modseq;
                            }
                            seen_set.insert(u);
                        }
                    }
                    Err(e) => warn!("setting \\Seen: {e}"),
                }
            }
        }
        let needs_ids = atts
            .iter()
            .any(|a| matches!(a, FetchAtt::EmailId | FetchAtt::ThreadId));
        let mut failed = None;
        // Structures are read a chunk at a time: one trip to the blocking pool per chunk.
        'chunks: for chunk in metas.chunks(128) {
            let mut structures: std::collections::HashMap<u32, MessageStructure> =
                std::collections::HashMap::new();
            let mut ids: std::collections::HashMap<u32, ObjectIds> =
                std::collections::HashMap::new();
            let uids: Vec<u32> = chunk.iter().map(|m| m.uid).collect();
            if needs_structure {
                match self.sel().folder.structures(&uids).await {
                    Ok(v) => structures.extend(v),
                    Err(e) => {
                        failed = Some(store_error(&e));
                        break;
                    }
                }
            }
            if needs_ids {
                match self.sel().folder.object_ids(&uids).await {
                    Ok(v) => ids.extend(v),
                    Err(e) => {
                        failed = Some(store_error(&e));
                        break;
                    }
                }
            }
            for m in chunk {
                let structure = structures.remove(&m.uid);
                let oid = ids.remove(&m.uid);
                if (needs_structure && structure.is_none()) || (needs_ids && oid.is_none()) {
                    continue; // expunged meanwhile
                }
                match self
                    .fetch_one(
                        m,
                        structure.as_ref(),
                        oid.as_ref(),
                        &atts,
                        seen_set.contains(&m.uid),
                    )
                    .await
                {
                    Ok(out) => {
                        if !out.ok {
                            failed = Some(
                                Reply::no("unknown Content-Transfer-Encoding").code("UNKNOWN-CTE"),
                            );
                        }
                        self.emit(out).await?;
                    }
                    Err(e) => {
                        failed = Some(store_error(&e));
                        break 'chunks;
                    }
                }
                if self.out.len() > OUT_CHUNK {
                    self.flush_out().await?;
                }
            }
        }
        self.updates(uid).await?;
        match failed {
            Some(f) => self.tagged(tag, f),
            None => self.tagged(tag, Reply::ok("FETCH completed")),
        }
        Ok(())
    }

    /// Send one planned FETCH response: its bytes, and large literals streamed from the
    /// message file in [`STREAM_CHUNK`] pieces, so a session never holds a big message.
    async fn emit(&mut self, out: FetchOut) -> Step {
        let FetchOut { mut segs, file, .. } = out;
        let mut file = file;
        for seg in segs.drain(..) {
            match seg {
                Seg::Bytes(mut b) => {
                    self.out.extend_from_slice(&b);
                    // Kept for the next line when small: an idle session stays small.
                    if b.capacity() <= 1024 {
                        b.clear();
                        self.fetch_line = b;
                    }
                }
                Seg::Stream { start, len } => {
                    let Some(f) = file.as_mut() else {
                        return Err(Gone);
                    };
                    self.stream_to_client(f, start, len).await?;
                }
            }
            if self.out.len() > OUT_CHUNK {
                self.flush_out().await?;
            }
        }
        if segs.capacity() <= 8 {
            self.fetch_segs = segs;
        }
        Ok(())
    }

    /// `len` bytes of `f` from `start` to the client, a chunk at a time.
    async fn stream_to_client(&mut self, f: &mut tokio::fs::File, start: u64, len: u64) -> Step {
        use tokio::io::AsyncSeekExt;
        if f.seek(std::io::SeekFrom::Start(start)).await.is_err() {
            warn!("seeking in a message file while sending it");
            return Err(Gone);
        }
        let mut left = len;
        let mut buf = vec![0u8; STREAM_CHUNK];
        while left > 0 {
            let want = (left.min(STREAM_CHUNK as u64)) as usize;
            let n = match f.read(&mut buf[..want]).await {
                Ok(0) | Err(_) => {
                    warn!("a message file ended before its recorded size while being sent");
                    return Err(Gone);
                }
                Ok(n) => n,
            };
            self.out.extend_from_slice(&buf[..n]);
            left -= n as u64;
            if self.out.len() >= OUT_CHUNK {
                self.flush_out().await?;
            }
        }
        Ok(())
    }

    /// Plan one `* n FETCH (...)` response; `ok` is false when a BINARY part had an unknown
    /// encoding. Large byte ranges of the message file are left to [`Conn::emit`] to stream.
    async fn fetch_one(
        &mut self,
        m: &MessageMeta,
        st: Option<&MessageStructure>,
        oid: Option<&ObjectIds>,
        atts: &[FetchAtt],
        seen_now: bool,
    ) -> Result<FetchOut, ClientError> {
        let rev2 = self.enabled.rev2;
        let mut segs = std::mem::take(&mut self.fetch_segs);
        segs.clear();
        let mut o = std::mem::take(&mut self.fetch_line);
        o.clear();
        o.reserve(128);
        let sel = self
            .selected
            .as_ref()
            .ok_or(ClientError::NoSuchMessage(m.uid))?;
        let f = &sel.folder;
        let Some(seq) = f.seq_of(m.uid) else {
            return Ok(FetchOut::default());
        };
        let mut file: Option<tokio::fs::File> = None;
        o.extend_from_slice(b"* ");
        respond::push_u64(&mut o, seq.into());
        o.extend_from_slice(b" FETCH (");
        let mut first = true;
        let mut ok = true;
        let mut sep = |o: &mut Vec<u8>| {
            if !first {
                o.push(b' ');
            }
            first = false;
        };
        let recent = f.is_recent(m.uid) && !rev2;
        let mut flags_sent = false;
        for a in atts {
            sep(&mut o);
            match a {
                FetchAtt::Flags => {
                    flags_sent = true;
                    o.extend_from_slice(b"FLAGS ");
                    respond::flag_fetch_list(&mut o, &m.flags, recent);
                }
                FetchAtt::Uid => {
                    o.extend_from_slice(b"UID ");
                    respond::push_u64(&mut o, m.uid.into());
                }
                FetchAtt::InternalDate => o.extend_from_slice(
                    format!("INTERNALDATE {}", encode::internal_date(m.internal_date)).as_bytes(),
                ),
                FetchAtt::SaveDate => o.extend_from_slice(
                    format!("SAVEDATE {}", encode::internal_date(m.save_date)).as_bytes(),
                ),
                FetchAtt::Size => {
                    o.extend_from_slice(b"RFC822.SIZE ");
                    respond::push_u64(&mut o, m.size);
                }
                FetchAtt::ModSeq => {
                    o.extend_from_slice(b"MODSEQ (");
                    respond::push_u64(&mut o, m.modseq);
                    o.push(b')');
                }
                FetchAtt::EmailId => {
                    if let Some(ids) = oid {
                        o.extend_from_slice(format!("EMAILID ({})", ids.email).as_bytes());
                    }
                }
                FetchAtt::ThreadId => {
                    if let Some(ids) = oid {
                        o.extend_from_slice(format!("THREADID ({})", ids.thread).as_bytes());
                    }
                }
                FetchAtt::Envelope => {
                    o.extend_from_slice(b"ENVELOPE ");
                    if let Some(st) = st {
                        encode::envelope(&mut o, &st.envelope);
                    }
                }
                FetchAtt::BodyStructure | FetchAtt::Body => {
                    let ext = *a == FetchAtt::BodyStructure;
                    o.extend_from_slice(if ext { b"BODYSTRUCTURE " } else { b"BODY " });
                    if let Some(st) = st {
                        encode::body_structure(&mut o, &st.body, ext);
                    }
                }
                FetchAtt::Preview => {
                    o.extend_from_slice(b"PREVIEW ");
                    let p = st.map(|s| s.preview.as_bytes()).unwrap_or_default();
                    encode::string(&mut o, p);
                }
                FetchAtt::Rfc822 => {
                    o.extend_from_slice(b"RFC822 ");
                    if m.size >= STREAM_MIN {
                        let (_, size) = open_once(f, m.uid, &mut file).await?;
                        o.extend_from_slice(format!("{{{size}}}\r\n").as_bytes());
                        segs.push(Seg::Bytes(std::mem::take(&mut o)));
                        segs.push(Seg::Stream {
                            start: 0,
                            len: size,
                        });
                    } else {
                        let data = f.read_message(m.uid).await?;
                        encode::literal(&mut o, &data);
                    }
                }
                FetchAtt::Rfc822Header | FetchAtt::Rfc822Text => {
                    let Some(st) = st else { continue };
                    let (name, r) = if *a == FetchAtt::Rfc822Header {
                        ("RFC822.HEADER ", st.header_range())
                    } else {
                        ("RFC822.TEXT ", st.text_range())
                    };
                    o.extend_from_slice(name.as_bytes());
                    let len = r.end.saturating_sub(r.start);
                    if len >= STREAM_MIN {
                        let (_, size) = open_once(f, m.uid, &mut file).await?;
                        if r.end > size {
                            return Err(ClientError::Corrupt(format!(
                                "message {} is shorter than its structure says",
                                m.uid
                            )));
                        }
                        o.extend_from_slice(format!("{{{len}}}\r\n").as_bytes());
                        segs.push(Seg::Bytes(std::mem::take(&mut o)));
                        segs.push(Seg::Stream {
                            start: r.start,
                            len,
                        });
                    } else {
                        let data = f.read_range(m.uid, r.start, len).await?;
                        encode::literal(&mut o, &data);
                    }
                }
                FetchAtt::Section {
                    kind,
                    section,
                    partial,
                    ..
                } => {
                    let Some(st) = st else { continue };
                    if let Some((start, end)) = stream_range_of(st, section, *kind) {
                        let (start, len) = match partial {
                            Some((origin, n)) => {
                                let s = start.saturating_add(*origin as u64).min(end);
                                (s, (*n as u64).min(end - s))
                            }
                            None => (start, end - start),
                        };
                        let binary = *kind == BodyKind::Binary;
                        let label = if binary { "BINARY" } else { "BODY" };
                        o.extend_from_slice(
                            format!("{label}[{}]", section_spec(section)).as_bytes(),
                        );
                        if let Some((origin, _)) = partial {
                            o.extend_from_slice(format!("<{origin}>").as_bytes());
                        }
                        if len < STREAM_MIN {
                            // Small: just those octets, never the whole part.
                            let data = f.read_range(m.uid, start, len).await?;
                            o.push(b' ');
                            if binary && data.contains(&0) {
                                o.push(b'~');
                            }
                            encode::literal(&mut o, &data);
                            continue;
                        }
                        let (fl, size) = open_once(f, m.uid, &mut file).await?;
                        if start.saturating_add(len) > size {
                            return Err(ClientError::Corrupt(format!(
                                "message {} is shorter than its structure says",
                                m.uid
                            )));
                        }
                        // BINARY: a literal8 when the octets hold a NUL (RFC 3516 4.3).
                        let nul = binary
                            && has_nul(fl, start, len).await.map_err(|e| {
                                ClientError::Internal(format!("reading message: {e}"))
                            })?;
                        o.extend_from_slice(
                            format!(" {}{{{len}}}\r\n", if nul { "~" } else { "" }).as_bytes(),
                        );
                        segs.push(Seg::Bytes(std::mem::take(&mut o)));
                        segs.push(Seg::Stream { start, len });
                        continue;
                    }
                    let data = section_data(f, m.uid, st, section, *kind).await?;
                    let Some(data) = data else {
                        ok = false;
                        o.extend_from_slice(b"BODY[] NIL");
                        continue;
                    };
                    let label = match kind {
                        BodyKind::Body => "BODY",
                        BodyKind::Binary => "BINARY",
                        BodyKind::BinarySize => "BINARY.SIZE",
                    };
                    o.extend_from_slice(format!("{label}[{}]", section_spec(section)).as_bytes());
                    if *kind == BodyKind::BinarySize {
                        o.extend_from_slice(format!(" {}", data.len()).as_bytes());
                        continue;
                    }
                    let slice: &[u8] = match partial {
                        Some((origin, len)) => {
                            o.extend_from_slice(format!("<{origin}>").as_bytes());
                            let s = (*origin as usize).min(data.len());
                            let e = s.saturating_add(*len as usize).min(data.len());
                            &data[s..e]
                        }
                        None => &data,
                    };
                    o.push(b' ');
                    if *kind == BodyKind::Binary && slice.contains(&0) {
                        o.push(b'~');
                    }
                    encode::literal(&mut o, slice);
                }
            }
        }
        if seen_now && !flags_sent {
            sep(&mut o);
            o.extend_from_slice(b"FLAGS ");
            respond::flag_fetch_list(&mut o, &m.flags, recent);
        }
        o.extend_from_slice(b")\r\n");
        segs.push(Seg::Bytes(o));
        Ok(FetchOut { ok, segs, file })
    }

    // ----------------------------------------------------------------- IDLE

    async fn idle(&mut self, tag: &str) -> Step {
        self.updates(true).await?;
        respond::continuation(&mut self.out, "idling");
        self.flush_out().await?;
        if self.out.capacity() > 4096 {
            self.out = Vec::new();
        }
        let mut watcher = self.selected.as_mut().and_then(|s| s.watcher.take());
        let timeout = self.ctx.settings.idle_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let result = loop {
            if let Some(pos) = self.inbuf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.inbuf.drain(..=pos).collect();
                let done = String::from_utf8_lossy(&line)
                    .trim()
                    .eq_ignore_ascii_case("DONE");
                break Ok(done);
            }
            if self.inbuf.len() > MAX_LINE {
                break Ok(false);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let changed = async {
                match watcher.as_mut() {
                    Some(w) => w.changed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = self.fill(left) => match r {
                    Ok(Some(())) => {}
                    Ok(None) => {
                        respond::bye(&mut self.out, None, "autologout: idle for too long");
                        let _ = self.flush_out().await;
                        break Err(Gone);
                    }
                    Err(g) => break Err(g),
                },
                r = changed => {
                    if r.is_err() {
                        watcher = None;
                    }
                    self.updates(true).await?;
                    self.flush_out().await?;
                }
            }
        };
        if let (Some(s), Some(w)) = (self.selected.as_mut(), watcher) {
            s.watcher = Some(w);
        }
        match result? {
            true => {
                self.updates(true).await?;
                self.tagged(tag, Reply::ok("IDLE terminated"));
            }
            false => self.tagged(tag, Reply::bad("expected DONE")),
        }
        Ok(())
    }
}

/// The `VANISHED (EARLIER)` set for a client at `modseq` (empty when nothing vanished), within
/// `known`; see `crate::qresync` for what is reported once compaction has dropped records.
async fn vanished_earlier(
    folder: &SelectedFolder,
    modseq: u64,
    known: Option<&[(u32, u32)]>,
) -> Result<Vec<(u32, u32)>, ClientError> {
    if modseq >= folder.highest_modseq() {
        return Ok(Vec::new());
    }
    let recorded = folder.vanished_since(0).await?;
    let after = folder.vanished_since(modseq).await?;
    // A recorded expunge at or below the client's modseq postdates the last compaction, so
    // everything compaction dropped was expunged before the client's state.
    let gaps_possible = recorded.len() == after.len();
    let mut present: Vec<u32> = folder.uids().to_vec();
    present.extend_from_slice(&recorded);
    present.sort_unstable();
    present.dedup();
    Ok(crate::qresync::vanished_ranges(
        folder.uidnext(),
        known,
        &present,
        &after,
        gaps_possible,
    ))
}

/// Ascending UIDs as ranges.
fn compact_ranges(uids: &[u32]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &u in uids {
        match out.last_mut() {
            Some(last) if last.1.checked_add(1) == Some(u) => last.1 = u,
            _ => out.push((u, u)),
        }
    }
    out
}

/// Literals at least this large are streamed from the message file rather than read whole.
const STREAM_MIN: u64 = 64 * 1024;
/// Bytes read from a message file at a time while streaming.
const STREAM_CHUNK: usize = 64 * 1024;

/// One planned FETCH response.
struct FetchOut {
    ok: bool,
    segs: Vec<Seg>,
    /// The message file, opened when a part of it is streamed.
    file: Option<tokio::fs::File>,
}

impl Default for FetchOut {
    fn default() -> Self {
        FetchOut {
            ok: true,
            segs: Vec::new(),
            file: None,
        }
    }
}

enum Seg {
    Bytes(Vec<u8>),
    /// `len` octets of the message file from `start`, sent as they are read.
    Stream {
        start: u64,
        len: u64,
    },
}

/// The message file, opened once per FETCH response; with its size.
async fn open_once<'a>(
    f: &SelectedFolder,
    uid: u32,
    file: &'a mut Option<tokio::fs::File>,
) -> Result<(&'a mut tokio::fs::File, u64), ClientError> {
    if file.is_none() {
        let (fl, _) = f.open_message(uid).await?;
        *file = Some(fl);
    }
    let fl = file
        .as_mut()
        .ok_or_else(|| ClientError::Internal("message file".into()))?;
    let size = fl
        .metadata()
        .await
        .map_err(|e| ClientError::Internal(format!("message file: {e}")))?
        .len();
    Ok((fl, size))
}

/// The byte range of the message file a section is, when it is one untouched range
/// (`BODY[]`, `BODY[TEXT]`, `BODY[n]`, and `BINARY[]` or `BINARY[n]` of a part that needs no
/// decoding); `None` when the answer must be computed.
fn stream_range_of(
    st: &MessageStructure,
    section: &parse::Section,
    kind: BodyKind,
) -> Option<(u64, u64)> {
    if kind == BodyKind::BinarySize {
        return None;
    }
    if section.part.is_empty() {
        return match (&section.text, kind) {
            (None, _) => Some((0, st.size)),
            (Some(SectionText::Text), BodyKind::Body) => {
                let r = st.text_range();
                Some((r.start, r.end))
            }
            _ => None,
        };
    }
    if section.text.is_some() {
        return None;
    }
    let part = st.part(&section.part)?;
    if kind == BodyKind::Binary {
        let enc = part.encoding.to_ascii_lowercase();
        if !matches!(enc.as_slice(), b"7bit" | b"8bit" | b"binary") {
            return None;
        }
    }
    let r = part.body_range();
    Some((r.start, r.end))
}

/// Whether `len` octets of `f` from `start` hold a NUL (read a chunk at a time).
async fn has_nul(f: &mut tokio::fs::File, start: u64, len: u64) -> std::io::Result<bool> {
    use tokio::io::AsyncSeekExt;
    f.seek(std::io::SeekFrom::Start(start)).await?;
    let mut left = len;
    let mut buf = vec![0u8; STREAM_CHUNK];
    while left > 0 {
        let want = (left.min(STREAM_CHUNK as u64)) as usize;
        let n = f.read(&mut buf[..want]).await?;
        if n == 0 {
            return Ok(false);
        }
        if buf[..n].contains(&0) {
            return Ok(true);
        }
        left -= n as u64;
    }
    Ok(false)
}

/// Passwords in the clear only over TLS, from loopback (unless
/// `local.service.imap.loopbackplaintext` is 0), or where `service.allowplaintextauth` says
/// so; otherwise the capabilities say LOGINDISABLED and LOGIN is refused.
fn plaintext_allowed(
    tls: bool,
    peer: std::net::IpAddr,
    loopback: bool,
    allow_plaintext: bool,
) -> bool {
    tls || (loopback && peer.is_loopback()) || allow_plaintext
}

/// The bytes a body section names (before any partial range); `None` when BINARY meets an
/// unknown transfer encoding.
async fn section_data(
    f: &SelectedFolder,
    uid: u32,
    st: &MessageStructure,
    section: &parse::Section,
    kind: BodyKind,
) -> Result<Option<Vec<u8>>, ClientError> {
    let read = |r: std::ops::Range<u64>| f.read_range(uid, r.start, r.end.saturating_sub(r.start));
    if section.part.is_empty() {
        return Ok(Some(match &section.text {
            None => f.read_message(uid).await?,
            Some(SectionText::Header) => read(st.header_range()).await?,
            Some(SectionText::Text) => read(st.text_range()).await?,
            Some(SectionText::HeaderFields(fl)) => {
                encode::header_fields(&read(st.header_range()).await?, fl, false)
            }
            Some(SectionText::HeaderFieldsNot(fl)) => {
                encode::header_fields(&read(st.header_range()).await?, fl, true)
            }
            Some(SectionText::Mime) => Vec::new(),
        }));
    }
    let Some(part) = st.part(&section.part) else {
        return Ok(Some(Vec::new()));
    };
    let data = match &section.text {
        None => {
            let raw = read(part.body_range()).await?;
            if kind == BodyKind::Body {
                raw
            } else {
                match encode::decode_transfer(&part.encoding, &raw) {
                    Some(d) => d,
                    None => return Ok(None),
                }
            }
        }
        Some(SectionText::Mime) => read(part.header_range()).await?,
        Some(t) => {
            // HEADER / TEXT of an encapsulated message.
            let Some((_, body)) = part.encapsulated() else {
                return Ok(Some(Vec::new()));
            };
            let header = body.header_start..body.body_start;
            match t {
                SectionText::Header => read(header).await?,
                SectionText::Text => read(body.body_range()).await?,
                SectionText::HeaderFields(fl) => {
                    encode::header_fields(&read(header).await?, fl, false)
                }
                SectionText::HeaderFieldsNot(fl) => {
                    encode::header_fields(&read(header).await?, fl, true)
                }
                SectionText::Mime => Vec::new(),
            }
        }
    };
    Ok(Some(data))
}

fn section_spec(s: &parse::Section) -> String {
    let mut out: Vec<String> = s.part.iter().map(u32::to_string).collect();
    if let Some(t) = &s.text {
        out.push(match t {
            SectionText::Header => "HEADER".into(),
            SectionText::Text => "TEXT".into(),
            SectionText::Mime => "MIME".into(),
            SectionText::HeaderFields(f) => format!("HEADER.FIELDS ({})", quote_fields(f)),
            SectionText::HeaderFieldsNot(f) => format!("HEADER.FIELDS.NOT ({})", quote_fields(f)),
        });
    }
    out.join(".")
}

fn quote_fields(f: &[String]) -> String {
    f.iter()
        .map(|x| {
            let mut v = Vec::new();
            encode::mailbox(&mut v, x);
            String::from_utf8_lossy(&v).into_owned()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn quota_data(out: &mut Vec<u8>, q: &store_client::Quota) {
    let storage = q
        .storage_limit
        .map(|l| (q.storage_used.div_ceil(1024), l / 1024));
    let messages = q.message_limit.map(|l| (q.messages_used, l));
    respond::quota(out, &q.root, storage, messages);
}

/// `inbox` in any case is INBOX (RFC 9051 5.1), also as the first level of a path.
fn normalise_inbox(name: &str) -> String {
    if name
        .get(..5)
        .is_some_and(|h| h.eq_ignore_ascii_case("INBOX"))
    {
        let rest = &name[5..];
        if rest.is_empty() || rest.starts_with('/') {
            return format!("INBOX{rest}");
        }
    }
    name.to_owned()
}

/// LIST pattern matching: `*` matches anything, `%` anything but the delimiter.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // dp[j]: pattern prefix i matches name prefix j.
    let mut dp = vec![false; n.len() + 1];
    dp[0] = true;
    for &pc in &p {
        let mut next = vec![false; n.len() + 1];
        match pc {
            '*' => {
                let mut any = false;
                for j in 0..=n.len() {
                    any |= dp[j];
                    next[j] = any;
                }
            }
            '%' => {
                for j in 0..=n.len() {
                    if dp[j] {
                        next[j] = true;
                        let mut k = j;
                        while k < n.len() && n[k] != '/' {
                            k += 1;
                            next[k] = true;
                        }
                    }
                }
            }
            c => {
                for j in 0..n.len() {
                    if dp[j] && n[j] == c {
                        next[j + 1] = true;
                    }
                }
            }
        }
        dp = next;
    }
    dp[n.len()]
}

fn owner_of(name: &str, me: &str) -> String {
    match name.strip_prefix(store_client::SHARED_PREFIX) {
        Some(rest) => rest.split('/').next().unwrap_or(me).to_owned(),
        None => me.to_owned(),
    }
}

fn contains_modseq(s: &Search) -> bool {
    match s {
        Search::ModSeq(_) => true,
        Search::Not(k) => contains_modseq(k),
        Search::Or(a, b) => contains_modseq(a) || contains_modseq(b),
        Search::And(v) => v.iter().any(contains_modseq),
        _ => false,
    }
}

/// OBJECTID (RFC 8474): a folder's id from its UIDVALIDITY (kept across RENAME).
fn mailbox_id(uidvalidity: u32) -> String {
    format!("F{uidvalidity:08x}")
}

/// Whether a search program names EMAILID or THREADID.
fn names_object_id(s: &Search) -> bool {
    match s {
        Search::EmailId(_) | Search::ThreadId(_) => true,
        Search::Not(k) => names_object_id(k),
        Search::Or(a, b) => names_object_id(a) || names_object_id(b),
        Search::And(v) => v.iter().any(names_object_id),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_rule() {
        let remote: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        let local: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        assert!(!plaintext_allowed(false, remote, true, false));
        assert!(plaintext_allowed(true, remote, true, false));
        assert!(plaintext_allowed(false, remote, true, true));
        assert!(plaintext_allowed(false, local, true, false));
        // Loopback not trusted: like any address.
        assert!(!plaintext_allowed(false, local, false, false));
        assert!(plaintext_allowed(true, local, false, false));
        assert!(plaintext_allowed(false, local, false, true));
    }

    #[test]
    fn patterns() {
        assert!(pattern_matches("*", "a/b"));
        assert!(pattern_matches("%", "a"));
        assert!(!pattern_matches("%", "a/b"));
        assert!(pattern_matches("a/%", "a/b"));
        assert!(pattern_matches("INBOX*", "INBOX/x"));
        assert!(!pattern_matches("Sent", "Sent/x"));
    }

    #[test]
    fn names_and_ids() {
        assert_eq!(normalise_inbox("inbox"), "INBOX");
        assert_eq!(normalise_inbox("Inbox/Sub"), "INBOX/Sub");
        assert_eq!(normalise_inbox("Inboxes"), "Inboxes");
        assert_eq!(normalise_inbox("Entwürfe"), "Entwürfe");
        assert_eq!(owner_of("Other Users/bob/x", "joe"), "bob");
    }
}
