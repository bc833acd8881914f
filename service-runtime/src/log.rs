//! The service logs, in the seed's format:
//!
//! `[29/May/2006:17:44:37 +0000] usg197 imapd[6747]: General Critical: Not enough file descriptors ...`
//!
//! One file per service under the log directory (`<root>/data/log/imap`,
//! `pop`, `http`, `lmtp`, `default`), written by a background thread fed
//! through a bounded channel: a caller never waits for the disk, and a
//! line that does not fit in the queue is dropped and counted. The file
//! is rolled over (renamed to `<name>.<yyyymmdd-hhmmss>`) when it would
//! grow past `logfile.<svc>.maxlogfilesize` or is older than
//! `logfile.<svc>.rollovertime`; at most `logfile.<svc>.maxlogfiles`
//! rolled-over files are kept, none older than `logfile.<svc>.expirytime`.

use std::fmt::{self, Write as _};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use msgconf::names::logfile;
use msgconf::Config;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Layer};

/// The seed's severity words, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The service cannot do what it is configured to do.
    Critical,
    /// An operation failed.
    Error,
    /// Something is wrong but work goes on.
    Warning,
    /// Normal but significant (tracing INFO).
    Notice,
    /// Detail (tracing DEBUG).
    Information,
    /// Debugging (tracing TRACE).
    Debug,
}

impl Severity {
    /// The word written in the log line.
    pub fn word(self) -> &'static str {
        match self {
            Severity::Critical => "Critical",
            Severity::Error => "Error",
            Severity::Warning => "Warning",
            Severity::Notice => "Notice",
            Severity::Information => "Information",
            Severity::Debug => "Debug",
        }
    }

    /// The severity of a tracing level: ERROR is Error, WARN Warning, INFO
    /// Notice, DEBUG Information, TRACE Debug. (Critical is written with
    /// an event field `severity = "Critical"`.)
    pub fn from_level(level: Level) -> Severity {
        match level {
            Level::ERROR => Severity::Error,
            Level::WARN => Severity::Warning,
            Level::INFO => Severity::Notice,
            Level::DEBUG => Severity::Information,
            _ => Severity::Debug,
        }
    }

    /// Parses a severity word (case-insensitive).
    pub fn parse(word: &str) -> Option<Severity> {
        [
            Severity::Critical,
            Severity::Error,
            Severity::Warning,
            Severity::Notice,
            Severity::Information,
            Severity::Debug,
        ]
        .into_iter()
        .find(|s| s.word().eq_ignore_ascii_case(word))
    }

    /// The least severe tracing level that can produce this severity.
    fn level_filter(self) -> LevelFilter {
        match self {
            Severity::Critical | Severity::Error => LevelFilter::ERROR,
            Severity::Warning => LevelFilter::WARN,
            Severity::Notice => LevelFilter::INFO,
            Severity::Information => LevelFilter::DEBUG,
            Severity::Debug => LevelFilter::TRACE,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// A source of the current time (a fixed or stepping clock in tests).
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The real clock.
pub fn system_clock() -> Clock {
    Arc::new(SystemTime::now)
}

/// Why the log could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The log directory could not be created or the file opened.
    #[error("cannot open log file {}: {source}", path.display())]
    Open {
        /// The directory or file.
        path: PathBuf,
        /// The system error.
        source: io::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the log writer thread: {0}")]
    Thread(io::Error),
}

/// Everything that decides where and how one service logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// The log file's name, the service (`imap`, `pop`, `http`, `lmtp`, `default`).
    pub name: String,
    /// The process name written in each line (`imapd`).
    pub process: String,
    /// The host name written in each line.
    pub host: String,
    /// The process id written in each line.
    pub pid: u32,
    /// The directory of the log files.
    pub dir: PathBuf,
    /// Least severe level written; `None` is `Nolog`.
    pub level: Option<Severity>,
    /// Roll over before the file would grow past this many bytes.
    pub max_file_size: u64,
    /// Roll over a file older than this.
    pub rollover: Duration,
    /// Rolled-over files kept.
    pub max_files: usize,
    /// Rolled-over files older than this are removed; `None` = no age limit.
    pub expiry: Option<Duration>,
    /// Lines queued for the writer before new ones are dropped.
    pub queue: usize,
}

impl LogSettings {
    /// The settings of `service` from `logfile.<service>.*`, with the log
    /// directory resolved against `<root>/data`. `service` must be one of
    /// [`msgconf::LOG_SERVICES`].
    pub fn from_config(config: &Config, service: &str, process: &str, root: &Path) -> LogSettings {
        let level = config.get_str(&logfile(service, "loglevel"));
        let expiry = config.get_int(&logfile(service, "expirytime"));
        LogSettings {
            name: service.to_string(),
            process: process.to_string(),
            host: hostname(),
            pid: std::process::id(),
            dir: config.get_path(&logfile(service, "logdir"), root.join("data")),
            level: Severity::parse(&level),
            max_file_size: positive(config.get_int(&logfile(service, "maxlogfilesize"))),
            rollover: Duration::from_secs(positive(
                config.get_int(&logfile(service, "rollovertime")),
            )),
            max_files: usize::try_from(positive(config.get_int(&logfile(service, "maxlogfiles"))))
                .unwrap_or(usize::MAX),
            expiry: (expiry > 0).then(|| Duration::from_secs(positive(expiry))),
            queue: 4096,
        }
    }

    /// The current log file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }
}

fn positive(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0).max(1)
}

/// This machine's host name up to its first dot (`usg197`), or
/// `localhost` if it cannot be read.
pub fn hostname() -> String {
    let name = full_hostname().unwrap_or_default();
    let short = name.split('.').next().unwrap_or("");
    if short.is_empty() {
        "localhost".into()
    } else {
        short.to_string()
    }
}

/// This machine's host name as the system gives it.
pub(crate) fn full_hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at
    // most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    (!name.is_empty()).then_some(name)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// UTC calendar fields of a time: (year, month 1-12, day, hour, minute, second).
fn civil(time: SystemTime) -> (i64, u32, u32, u32, u32, u32) {
    let secs = match time.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month as u32,
        day as u32,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

/// `29/May/2006:17:44:37 +0000` (always UTC).
pub fn format_timestamp(time: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = civil(time);
    let mon = MONTHS[(mo as usize).saturating_sub(1) % 12];
    format!("{d:02}/{mon}/{y:04}:{h:02}:{mi:02}:{s:02} +0000")
}

/// `yyyymmdd-hhmmss` (UTC), the suffix of a rolled-over file.
pub fn format_stamp(time: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = civil(time);
    format!("{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}")
}

fn parse_stamp(stamp: &str) -> Option<SystemTime> {
    let b = stamp.as_bytes();
    if b.len() != 15 || b[8] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = stamp.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, s) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // days-from-civil
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2.rem_euclid(400);
    let mp = if mo > 2 { mo - 3 } else { mo + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + s;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// One log line (with its newline), e.g.
/// `[29/May/2006:17:44:37 +0000] usg197 imapd[6747]: General Critical: text`.
/// Control characters in the message become spaces, so a line is a line.
pub fn format_line(
    time: SystemTime,
    host: &str,
    process: &str,
    pid: u32,
    facility: &str,
    severity: Severity,
    message: &str,
) -> String {
    let mut line = String::with_capacity(64 + message.len());
    let _ = write!(
        line,
        "[{}] {host} {process}[{pid}]: {facility} {}: ",
        format_timestamp(time),
        severity.word()
    );
    line.extend(
        message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c }),
    );
    line.push('\n');
    line
}

enum Command {
    Line(String),
    Flush(mpsc::Sender<()>),
    Stop,
}

/// The tracing layer that formats events and queues them for the writer.
pub struct LogLayer {
    tx: SyncSender<Command>,
    dropped: Arc<AtomicU64>,
    clock: Clock,
    host: String,
    process: String,
    pid: u32,
    level: Option<Severity>,
}

/// The owner's side of a service log: flush it, count dropped lines, stop it.
pub struct LogHandle {
    tx: SyncSender<Command>,
    dropped: Arc<AtomicU64>,
    thread: Mutex<Option<JoinHandle<()>>>,
    path: PathBuf,
}

/// Opens the service log (creating its directory) and starts its writer
/// thread. Install the layer with [`install`] or in your own subscriber.
pub fn open(settings: &LogSettings, clock: Clock) -> Result<(LogLayer, LogHandle), LogError> {
    fs::create_dir_all(&settings.dir).map_err(|source| LogError::Open {
        path: settings.dir.clone(),
        source,
    })?;
    let mut writer = Writer::new(settings.clone(), clock.clone());
    writer.open().map_err(|source| LogError::Open {
        path: settings.path(),
        source,
    })?;
    writer.expire();
    let (tx, rx) = mpsc::sync_channel(settings.queue.max(1));
    let dropped = Arc::new(AtomicU64::new(0));
    let thread = {
        let dropped = dropped.clone();
        std::thread::Builder::new()
            .name(format!("log-{}", settings.name))
            .spawn(move || writer.run(rx, &dropped))
            .map_err(LogError::Thread)?
    };
    let layer = LogLayer {
        tx: tx.clone(),
        dropped: dropped.clone(),
        clock,
        host: settings.host.clone(),
        process: settings.process.clone(),
        pid: settings.pid,
        level: settings.level,
    };
    let handle = LogHandle {
        tx,
        dropped,
        thread: Mutex::new(Some(thread)),
        path: settings.path(),
    };
    Ok((layer, handle))
}

/// Installs `layer` as the process's global tracing subscriber. False if
/// one was already installed (the layer is then unused).
pub fn install(layer: LogLayer) -> bool {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    tracing_subscriber::registry()
        .with(layer)
        .try_init()
        .is_ok()
}

impl LogLayer {
    /// Queues one line without tracing (for callers that log before or
    /// outside a subscriber). Dropped and counted when the queue is full.
    pub fn log(&self, facility: &str, severity: Severity, message: &str) {
        if !self.wants(severity) {
            return;
        }
        let line = format_line(
            (self.clock)(),
            &self.host,
            &self.process,
            self.pid,
            facility,
            severity,
            message,
        );
        match self.tx.try_send(Command::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn wants(&self, severity: Severity) -> bool {
        self.level.is_some_and(|max| severity <= max)
    }

    fn filter(&self) -> LevelFilter {
        self.level.map_or(LevelFilter::OFF, Severity::level_filter)
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    severity: Option<Severity>,
    facility: Option<String>,
    extra: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "severity" => self.severity = Severity::parse(value),
            "facility" => self.facility = Some(value.to_string()),
            "message" => self.message.push_str(value),
            name => {
                let _ = write!(self.extra, " {name}={value}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            "severity" => self.severity = Severity::parse(&format!("{value:?}")),
            "facility" => self.facility = Some(format!("{value:?}")),
            name => {
                let _ = write!(self.extra, " {name}={value:?}");
            }
        }
    }
}

impl<S: Subscriber> Layer<S> for LogLayer {
    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        self.filter() >= *metadata.level()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.filter())
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let severity = fields
            .severity
            .unwrap_or_else(|| Severity::from_level(*event.metadata().level()));
        let facility = fields.facility.as_deref().unwrap_or("General");
        let mut message = fields.message;
        message.push_str(&fields.extra);
        self.log(facility, severity, &message);
    }
}

impl LogHandle {
    /// Waits until every line queued so far is written (at most `timeout`).
    /// False if the writer did not answer in time or has stopped.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (ack_tx, ack_rx) = mpsc::channel();
        let deadline = std::time::Instant::now() + timeout;
        let mut cmd = Command::Flush(ack_tx);
        loop {
            match self.tx.try_send(cmd) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(c)) => {
                    if std::time::Instant::now() >= deadline {
                        return false;
                    }
                    cmd = c;
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        ack_rx.recv_timeout(left).is_ok()
    }

    /// Lines dropped because the queue was full or a write failed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The current log file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LogHandle {
    fn drop(&mut self) {
        // Writes what is queued, then stops the thread (lines logged after
        // this are dropped and counted).
        let _ = self.flush(Duration::from_secs(2));
        if self.tx.try_send(Command::Stop).is_ok() {
            if let Ok(mut thread) = self.thread.lock() {
                if let Some(t) = thread.take() {
                    let _ = t.join();
                }
            }
        }
    }
}

struct Writer {
    settings: LogSettings,
    clock: Clock,
    file: Option<File>,
    size: u64,
    opened: SystemTime,
}

impl Writer {
    fn new(settings: LogSettings, clock: Clock) -> Writer {
        let opened = clock();
        Writer {
            settings,
            clock,
            file: None,
            size: 0,
            opened,
        }
    }

    fn open(&mut self) -> io::Result<()> {
        let path = self.settings.path();
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let meta = file.metadata()?;
        self.size = meta.len();
        self.opened = if self.size == 0 {
            (self.clock)()
        } else {
            meta.created()
                .or_else(|_| meta.modified())
                .unwrap_or_else(|_| (self.clock)())
        };
        self.file = Some(file);
        Ok(())
    }

    fn run(mut self, rx: Receiver<Command>, dropped: &AtomicU64) {
        while let Ok(cmd) = rx.recv() {
            match cmd {
                Command::Line(line) => {
                    if self.write(&line).is_err() {
                        dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Command::Flush(ack) => {
                    if let Some(f) = self.file.as_mut() {
                        let _ = f.flush();
                    }
                    let _ = ack.send(());
                }
                Command::Stop => break,
            }
        }
    }

    fn write(&mut self, line: &str) -> io::Result<()> {
        let now = (self.clock)();
        let len = line.len() as u64;
        let too_big = self.size > 0 && self.size.saturating_add(len) > self.settings.max_file_size;
        let too_old = self.size > 0
            && now.duration_since(self.opened).unwrap_or_default() >= self.settings.rollover;
        if self.file.is_none() || too_big || too_old {
            if too_big || too_old {
                self.rotate(now);
            }
            if self.file.is_none() {
                self.open()?;
            }
        }
        match self.file.as_mut() {
            Some(f) => {
                f.write_all(line.as_bytes())?;
                self.size += len;
                Ok(())
            }
            None => Err(io::Error::other("log file not open")),
        }
    }

    /// Renames the current file to `<name>.<stamp>` (`.<n>` added if that
    /// exists), then removes what is past the count and age limits.
    fn rotate(&mut self, now: SystemTime) {
        self.file = None;
        let from = self.settings.path();
        let base = format!("{}.{}", self.settings.name, format_stamp(now));
        let mut to = self.settings.dir.join(&base);
        let mut n = 1;
        while to.exists() {
            to = self.settings.dir.join(format!("{base}.{n}"));
            n += 1;
        }
        let _ = fs::rename(&from, &to);
        self.size = 0;
        self.expire();
    }

    /// The rolled-over files, oldest first, with the time in their names.
    fn rotated(&self) -> Vec<(SystemTime, u64, PathBuf)> {
        let prefix = format!("{}.", self.settings.name);
        let Ok(entries) = fs::read_dir(&self.settings.dir) else {
            return Vec::new();
        };
        let mut found: Vec<(SystemTime, u64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let rest = name.strip_prefix(&prefix)?;
                let (stamp, seq) = match rest.split_once('.') {
                    Some((s, n)) => (s, n.parse::<u64>().ok()?),
                    None => (rest, 0),
                };
                Some((parse_stamp(stamp)?, seq, e.path()))
            })
            .collect();
        found.sort();
        found
    }

    fn expire(&mut self) {
        let files = self.rotated();
        let now = (self.clock)();
        let excess = files.len().saturating_sub(self.settings.max_files);
        for (i, (time, _, path)) in files.iter().enumerate() {
            let old = self
                .settings
                .expiry
                .is_some_and(|max| now.duration_since(*time).unwrap_or_default() > max);
            if i < excess || old {
                let _ = fs::remove_file(path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 29 May 2006 17:44:37 UTC, the seed's moment.
    fn seed_time() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_148_924_677)
    }

    #[test]
    fn timestamps_and_stamps() {
        assert_eq!(format_timestamp(seed_time()), "29/May/2006:17:44:37 +0000");
        assert_eq!(format_stamp(seed_time()), "20060529-174437");
        assert_eq!(parse_stamp("20060529-174437"), Some(seed_time()));
        assert_eq!(format_timestamp(UNIX_EPOCH), "01/Jan/1970:00:00:00 +0000");
        // a leap day
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(format_timestamp(leap), "29/Feb/2000:00:00:00 +0000");
        assert_eq!(parse_stamp(&format_stamp(leap)), Some(leap));
        assert_eq!(parse_stamp("2006052-1744377"), None);
        assert_eq!(parse_stamp("20061329-174437"), None);
        assert_eq!(parse_stamp("2006052x-174437"), None);
    }

    #[test]
    fn a_line_in_the_seeds_format() {
        let line = format_line(
            seed_time(),
            "usg197",
            "imapd",
            6747,
            "General",
            Severity::Critical,
            "Not enough file descriptors to support 4000 sessions per process; \
             Recommend ulimit -n 12851 or 58 sessions per process.",
        );
        assert_eq!(
            line,
            "[29/May/2006:17:44:37 +0000] usg197 imapd[6747]: General Critical: \
             Not enough file descriptors to support 4000 sessions per process; \
             Recommend ulimit -n 12851 or 58 sessions per process.\n"
        );
        let line = format_line(seed_time(), "h", "p", 1, "Store", Severity::Notice, "a\nb");
        assert!(line.ends_with("Store Notice: a b\n"), "{line}");
    }

    #[test]
    fn severity_words_and_levels() {
        assert_eq!(Severity::from_level(Level::ERROR), Severity::Error);
        assert_eq!(Severity::from_level(Level::WARN), Severity::Warning);
        assert_eq!(Severity::from_level(Level::INFO), Severity::Notice);
        assert_eq!(Severity::from_level(Level::DEBUG), Severity::Information);
        assert_eq!(Severity::from_level(Level::TRACE), Severity::Debug);
        assert_eq!(Severity::parse("critical"), Some(Severity::Critical));
        assert_eq!(Severity::parse("Nolog"), None);
        assert!(Severity::Critical < Severity::Debug);
    }

    fn settings(dir: &Path) -> LogSettings {
        LogSettings {
            name: "imap".into(),
            process: "imapd".into(),
            host: "usg197".into(),
            pid: 6747,
            dir: dir.to_path_buf(),
            level: Some(Severity::Notice),
            max_file_size: 1_000_000,
            rollover: Duration::from_secs(86_400),
            max_files: 10,
            expiry: None,
            queue: 1024,
        }
    }

    fn fixed(t: SystemTime) -> Clock {
        Arc::new(move || t)
    }

    /// A clock that moves one second each time it is read.
    fn stepping(start: SystemTime) -> Clock {
        let n = Arc::new(AtomicU64::new(0));
        Arc::new(move || start + Duration::from_secs(n.fetch_add(1, Ordering::Relaxed)))
    }

    #[test]
    fn events_through_tracing_with_severity_and_facility_fields() {
        let dir = tempfile::tempdir().unwrap();
        let (layer, handle) = open(&settings(dir.path()), fixed(seed_time())).unwrap();
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(severity = "Critical", "Not enough file descriptors");
            tracing::error!("an error");
            tracing::warn!(facility = "Store", "a warning");
            tracing::info!(user = "joe", "a notice");
            tracing::debug!("not written at Notice");
        });
        assert!(handle.flush(Duration::from_secs(5)));
        let text = fs::read_to_string(dir.path().join("imap")).unwrap();
        let p = "[29/May/2006:17:44:37 +0000] usg197 imapd[6747]: ";
        assert_eq!(
            text,
            format!(
                "{p}General Critical: Not enough file descriptors\n\
                 {p}General Error: an error\n\
                 {p}Store Warning: a warning\n\
                 {p}General Notice: a notice user=joe\n"
            )
        );
        assert_eq!(handle.dropped(), 0);
    }

    #[test]
    fn level_filters_and_nolog() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        s.level = Some(Severity::Critical);
        let (layer, handle) = open(&s, fixed(seed_time())).unwrap();
        layer.log("General", Severity::Error, "no");
        layer.log("General", Severity::Critical, "yes");
        assert!(handle.flush(Duration::from_secs(5)));
        let text = fs::read_to_string(dir.path().join("imap")).unwrap();
        assert!(
            text.ends_with("General Critical: yes\n") && !text.contains("no"),
            "{text}"
        );
        drop((layer, handle));

        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        s.level = None;
        let (layer, handle) = open(&s, fixed(seed_time())).unwrap();
        layer.log("General", Severity::Critical, "no");
        assert!(handle.flush(Duration::from_secs(5)));
        assert_eq!(fs::read_to_string(dir.path().join("imap")).unwrap(), "");
    }

    #[test]
    fn full_queue_drops_and_counts_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        s.queue = 1;
        let (layer, handle) = open(&s, fixed(seed_time())).unwrap();
        let started = std::time::Instant::now();
        for i in 0..10_000 {
            layer.log("General", Severity::Notice, &format!("line {i}"));
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(handle.flush(Duration::from_secs(5)));
        let written = fs::read_to_string(dir.path().join("imap"))
            .unwrap()
            .lines()
            .count() as u64;
        assert_eq!(written + handle.dropped(), 10_000);
        assert!(handle.dropped() > 0);
    }

    fn rotated_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("imap."))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn rotation_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        // each line is 74 bytes: two fit, the third rolls over
        s.max_file_size = 150;
        let (layer, handle) = open(&s, stepping(seed_time())).unwrap();
        for i in 0..5 {
            layer.log("General", Severity::Notice, &format!("line {i}"));
        }
        assert!(handle.flush(Duration::from_secs(5)));
        let names = rotated_names(dir.path());
        assert_eq!(names.len(), 2, "{names:?}");
        for n in &names {
            let stamp = n.strip_prefix("imap.").unwrap();
            assert!(parse_stamp(stamp).is_some(), "{n}");
            let text = fs::read_to_string(dir.path().join(n)).unwrap();
            assert_eq!(text.lines().count(), 2, "{n}: {text}");
            assert!(text.len() <= 150);
        }
        let current = fs::read_to_string(dir.path().join("imap")).unwrap();
        assert!(current.ends_with("General Notice: line 4\n"), "{current}");
        assert_eq!(current.lines().count(), 1);
    }

    #[test]
    fn rotation_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        s.rollover = Duration::from_secs(3);
        // the stepping clock moves a second per read: the file ages as we log
        let (layer, handle) = open(&s, stepping(seed_time())).unwrap();
        for i in 0..4 {
            layer.log("General", Severity::Notice, &format!("line {i}"));
        }
        assert!(handle.flush(Duration::from_secs(5)));
        assert!(!rotated_names(dir.path()).is_empty());
    }

    #[test]
    fn expiry_by_count_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        s.max_file_size = 1;
        s.max_files = 3;
        let (layer, handle) = open(&s, stepping(seed_time())).unwrap();
        for i in 0..10 {
            layer.log("General", Severity::Notice, &format!("line {i}"));
        }
        assert!(handle.flush(Duration::from_secs(5)));
        let names = rotated_names(dir.path());
        assert_eq!(names.len(), 3, "{names:?}");
        // the newest three rolled-over files hold lines 6, 7 and 8
        let texts: Vec<String> = names
            .iter()
            .map(|n| fs::read_to_string(dir.path().join(n)).unwrap())
            .collect();
        for (t, want) in texts.iter().zip(["line 6", "line 7", "line 8"]) {
            assert!(t.trim_end().ends_with(want), "{t}");
        }
        // files of other names are left alone
        fs::write(dir.path().join("imap.notes"), "keep").unwrap();
        layer.log("General", Severity::Notice, "line 10");
        assert!(handle.flush(Duration::from_secs(5)));
        assert!(dir.path().join("imap.notes").exists());
    }

    #[test]
    fn expiry_by_age_and_same_second_names() {
        let dir = tempfile::tempdir().unwrap();
        let old = seed_time() - Duration::from_secs(8 * 86_400);
        fs::write(
            dir.path().join(format!("imap.{}", format_stamp(old))),
            "old\n",
        )
        .unwrap();
        let recent = seed_time() - Duration::from_secs(86_400);
        fs::write(
            dir.path().join(format!("imap.{}", format_stamp(recent))),
            "recent\n",
        )
        .unwrap();
        let mut s = settings(dir.path());
        s.expiry = Some(Duration::from_secs(7 * 86_400));
        s.max_file_size = 1;
        let (layer, handle) = open(&s, fixed(seed_time())).unwrap();
        for i in 0..3 {
            layer.log("General", Severity::Notice, &format!("line {i}"));
        }
        assert!(handle.flush(Duration::from_secs(5)));
        let names = rotated_names(dir.path());
        let stamp = format_stamp(seed_time());
        assert_eq!(
            names,
            vec![
                format!("imap.{}", format_stamp(recent)),
                format!("imap.{stamp}"),
                format!("imap.{stamp}.1"),
            ]
        );
    }
}
