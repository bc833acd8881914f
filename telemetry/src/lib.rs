//! Session capture ("telemetry") files in the Sun Java System Messaging
//! Server format.
//!
//! When an administrator turns telemetry on for a user, the IMAP, POP and
//! HTTP servers record the whole protocol conversation of that user's
//! sessions, with timings, so that a client problem can be replayed and
//! diagnosed without a packet capture. This crate holds the format's core:
//! [`CaptureWriter`] produces a capture from the chunks a server reads and
//! writes (buffered, and never allowed to fail or stall the session it
//! records), and [`parse_capture`] / [`write_absolute`] read one back for
//! display. It has no dependencies beyond `std` and `thiserror`.
//!
//! # Format
//!
//! ```text
//! LOGIN redb 2003/11/26 13:03:21
//! >0.017>1 OK User logged in
//! 2 OK Completed
//! <0.046<3 select "INBOX"
//! >0.236>* FLAGS (\Answered ...)
//! ```
//!
//! The first line names the user and the (UTC) time of login. Each chunk
//! read from the client follows as `<S.mmm<data` and each chunk written to
//! it as `>S.mmm>data`, where `S.mmm` is the time in seconds, to the
//! millisecond, since the previous record (the first record: since login).
//! Data is copied verbatim, with no newline added, so a record ends where
//! the next line-start marker begins. Two consequences of the format
//! itself: a chunk that does not end with a newline is read back merged
//! with the record after it, and a data line that itself looks like a
//! marker (`<1.000<...` at the start of a line) reads back as a new record.
//! Protocol traffic is line-oriented, so both are rare in practice.

use std::fmt;
use std::io::{self, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Default amount of buffered capture data that triggers a write to the
/// underlying writer.
pub const DEFAULT_BUFFER_LIMIT: usize = 64 * 1024;

/// Which way a recorded chunk travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Read from the client (`<` marker).
    Client,
    /// Written to the client (`>` marker).
    Server,
}

impl Direction {
    /// The marker byte used in capture files.
    pub fn marker(self) -> u8 {
        match self {
            Direction::Client => b'<',
            Direction::Server => b'>',
        }
    }

    fn from_marker(b: u8) -> Option<Direction> {
        match b {
            b'<' => Some(Direction::Client),
            b'>' => Some(Direction::Server),
            _ => None,
        }
    }
}

/// An error from the capture writer. It is reported once; after it the
/// writer is disabled and silently discards everything.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// Writing the capture to its destination failed.
    #[error("telemetry capture disabled: writing the capture failed: {0}")]
    Write(#[source] io::Error),
}

/// Writes one session capture.
///
/// Records are collected in a memory buffer that is written to `W` once it
/// holds more than the buffer limit (and on [`flush`](Self::flush),
/// [`finish`](Self::finish) or drop), so a capture costs the session one
/// write per buffer-full. If a write to `W` fails the writer returns the
/// error once, drops its buffer and disables itself: every later call is a
/// cheap no-op returning `Ok(())`, so the session carries on untouched.
///
/// Times are passed in explicitly (an [`Instant`] per record), which keeps
/// the writer deterministic under test; a server passes `Instant::now()`.
///
/// Records passed before [`login`](Self::login) are ignored: a capture
/// starts at login, as telemetry is enabled per user.
pub struct CaptureWriter<W: Write> {
    inner: Option<W>,
    buf: Vec<u8>,
    limit: usize,
    /// Instant of the login; delays are derived from it.
    origin: Option<Instant>,
    /// Milliseconds since `origin` already accounted for by written
    /// delays. Deriving each delay from the total keeps rounding from
    /// drifting: the sum of the written delays stays within half a
    /// millisecond of the real elapsed time.
    emitted_ms: u128,
    failed: bool,
}

impl<W: Write> fmt::Debug for CaptureWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaptureWriter")
            .field("buffered", &self.buf.len())
            .field("limit", &self.limit)
            .field("logged_in", &self.origin.is_some())
            .field("disabled", &self.failed)
            .finish_non_exhaustive()
    }
}

impl<W: Write> CaptureWriter<W> {
    /// A writer with the [default buffer limit](DEFAULT_BUFFER_LIMIT).
    pub fn new(inner: W) -> Self {
        Self::with_buffer_limit(inner, DEFAULT_BUFFER_LIMIT)
    }

    /// A writer that writes its buffer out once it holds more than `limit`
    /// bytes (`0` writes every record straight through).
    pub fn with_buffer_limit(inner: W, limit: usize) -> Self {
        CaptureWriter {
            inner: Some(inner),
            buf: Vec::new(),
            limit,
            origin: None,
            emitted_ms: 0,
            failed: false,
        }
    }

    /// True once a write failed and the writer turned itself off.
    pub fn is_disabled(&self) -> bool {
        self.failed
    }

    /// Bytes recorded but not yet written to the destination.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Starts the capture: writes the `LOGIN <userid> <yyyy/mm/dd hh:mm:ss>`
    /// line. `wall` is the login time shown in the file (UTC); `at` is the
    /// same moment on the monotonic clock, from which the first record's
    /// delay is measured.
    ///
    /// Whitespace and control characters in `userid` would break the line's
    /// layout and are written as `_`. A second call is ignored.
    pub fn login(
        &mut self,
        userid: &str,
        wall: SystemTime,
        at: Instant,
    ) -> Result<(), TelemetryError> {
        if self.failed || self.origin.is_some() {
            return Ok(());
        }
        self.origin = Some(at);
        self.emitted_ms = 0;
        let user: String = userid
            .chars()
            .map(|c| {
                if c.is_whitespace() || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        let user = if user.is_empty() {
            "_".to_string()
        } else {
            user
        };
        let line = format!("LOGIN {user} {}\n", format_timestamp(wall, false));
        self.buf.extend_from_slice(line.as_bytes());
        self.maybe_flush()
    }

    /// Records a chunk read from the client.
    pub fn client_chunk(&mut self, data: &[u8], at: Instant) -> Result<(), TelemetryError> {
        self.record(Direction::Client, data, at)
    }

    /// Records a chunk written to the client.
    pub fn server_chunk(&mut self, data: &[u8], at: Instant) -> Result<(), TelemetryError> {
        self.record(Direction::Server, data, at)
    }

    /// Records a chunk read from the client, writing `replacement` in place
    /// of what was read: for commands carrying credentials, e.g. the
    /// caller turns `a001 LOGIN joe secret\r\n` into `a001 LOGIN joe ***\r\n`.
    /// The real data never reaches the writer.
    pub fn redact(&mut self, replacement: &[u8], at: Instant) -> Result<(), TelemetryError> {
        self.record(Direction::Client, replacement, at)
    }

    /// Records one chunk in the given direction.
    pub fn record(
        &mut self,
        direction: Direction,
        data: &[u8],
        at: Instant,
    ) -> Result<(), TelemetryError> {
        if self.failed {
            return Ok(());
        }
        let Some(origin) = self.origin else {
            return Ok(());
        };
        // Round to the nearest millisecond; instants before the previous
        // record (callers racing) count as no delay.
        let elapsed = at.saturating_duration_since(origin);
        let total_ms = (elapsed.as_micros() + 500) / 1000;
        let delay_ms = total_ms.saturating_sub(self.emitted_ms);
        self.emitted_ms = self.emitted_ms.max(total_ms);
        let m = direction.marker();
        let header = format!(
            "{}{}.{:03}{}",
            m as char,
            delay_ms / 1000,
            delay_ms % 1000,
            m as char
        );
        self.buf.extend_from_slice(header.as_bytes());
        self.buf.extend_from_slice(data);
        self.maybe_flush()
    }

    fn maybe_flush(&mut self) -> Result<(), TelemetryError> {
        if self.buf.len() > self.limit {
            self.flush()
        } else {
            Ok(())
        }
    }

    /// Writes everything buffered to the destination and flushes it.
    pub fn flush(&mut self) -> Result<(), TelemetryError> {
        if self.failed {
            return Ok(());
        }
        let Some(inner) = self.inner.as_mut() else {
            return Ok(());
        };
        let result = if self.buf.is_empty() {
            inner.flush()
        } else {
            inner.write_all(&self.buf).and_then(|()| inner.flush())
        };
        self.buf.clear();
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                self.failed = true;
                self.buf = Vec::new();
                Err(TelemetryError::Write(e))
            }
        }
    }

    /// Flushes and hands back the destination. A writer disabled by an
    /// earlier failure returns `None` (its error was already reported).
    pub fn finish(mut self) -> Result<Option<W>, TelemetryError> {
        self.flush()?;
        if self.failed {
            return Ok(None);
        }
        Ok(self.inner.take())
    }
}

impl<W: Write> Drop for CaptureWriter<W> {
    fn drop(&mut self) {
        // Best effort: a failure here has nobody left to report to.
        let _ = self.flush();
    }
}

/// Formats a time as `yyyy/mm/dd hh:mm:ss` (UTC), with `.mmm` appended
/// when `millis` is set. Times before 1970 are written as they are, with
/// the proleptic Gregorian calendar.
pub fn format_timestamp(t: SystemTime, millis: bool) -> String {
    let (secs, ms) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i128, d.subsec_millis()),
        Err(e) => {
            let d = e.duration();
            let mut secs = -(d.as_secs() as i128);
            let mut ms = 0;
            if d.subsec_nanos() > 0 {
                secs -= 1;
                ms = 1000 - d.subsec_nanos().div_ceil(1_000_000).min(1000);
            }
            (secs, ms)
        }
    };
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    let base = format!(
        "{y:04}/{mo:02}/{d:02} {:02}:{:02}:{:02}",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    );
    if millis {
        format!("{base}.{ms:03}")
    } else {
        base
    }
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(z: i128) -> (i128, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// One recorded chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Which way the chunk went.
    pub direction: Direction,
    /// Time since the previous record (for the first: since login),
    /// to the millisecond.
    pub delay: Duration,
    /// The bytes, verbatim.
    pub data: Vec<u8>,
}

/// A capture file read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    /// The user named on the `LOGIN` line.
    pub user: String,
    /// The login time from the `LOGIN` line (UTC, whole seconds).
    pub login: SystemTime,
    /// The records in file order.
    pub records: Vec<Record>,
}

impl Capture {
    /// Each record with its absolute time: login plus the delays so far.
    pub fn timed_records(&self) -> impl Iterator<Item = (SystemTime, &Record)> + '_ {
        let mut t = self.login;
        self.records.iter().map(move |r| {
            t = t.checked_add(r.delay).unwrap_or(t);
            (t, r)
        })
    }

    /// Writes the capture back in the file format. For a capture read by
    /// [`parse_capture`] this reproduces the file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "LOGIN {} {}\n",
            self.user,
            format_timestamp(self.login, false)
        )
        .into_bytes();
        for r in &self.records {
            let ms = r.delay.as_millis();
            let m = r.direction.marker() as char;
            out.extend_from_slice(format!("{m}{}.{:03}{m}", ms / 1000, ms % 1000).as_bytes());
            out.extend_from_slice(&r.data);
        }
        out
    }
}

/// Why a capture file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The first line is not `LOGIN <userid> <yyyy/mm/dd hh:mm:ss>`.
    #[error("not a telemetry capture: the first line must be `LOGIN <userid> <yyyy/mm/dd hh:mm:ss>`, found {found:?}")]
    BadLoginLine {
        /// The first line (up to 200 bytes, lossily decoded).
        found: String,
    },
    /// Something other than a record marker follows the `LOGIN` line.
    #[error("byte {offset}: expected a record marker such as `<0.046<` or `>0.017>`")]
    ExpectedRecord {
        /// Offset of the offending line in the file.
        offset: usize,
    },
}

/// Reads a capture file back into records.
///
/// Records are delimited by a marker at the start of a line: `<` or `>`,
/// decimal seconds, `.`, exactly three digits of milliseconds, and the
/// same `<` or `>` again. Everything up to the next such marker is the
/// record's data (including the newline before that marker).
pub fn parse_capture(input: &[u8]) -> Result<Capture, ParseError> {
    let line_end = input.iter().position(|&b| b == b'\n');
    let (first, body_start) = match line_end {
        Some(i) => (&input[..i], i + 1),
        None => (input, input.len()),
    };
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    let bad = || ParseError::BadLoginLine {
        found: String::from_utf8_lossy(&first[..first.len().min(200)]).into_owned(),
    };
    let text = std::str::from_utf8(first).map_err(|_| bad())?;
    let rest = text.strip_prefix("LOGIN ").ok_or_else(bad)?;
    // The user name may not contain spaces (the writer replaces them), but
    // split from the right so the date and time are found regardless.
    let mut parts = rest.rsplitn(3, ' ');
    let time = parts.next().ok_or_else(bad)?;
    let date = parts.next().ok_or_else(bad)?;
    let user = parts.next().ok_or_else(bad)?;
    if user.is_empty() {
        return Err(bad());
    }
    let login = parse_timestamp(date, time).ok_or_else(bad)?;

    let mut records = Vec::new();
    let mut pos = body_start;
    if pos < input.len() && parse_marker(&input[pos..]).is_none() {
        return Err(ParseError::ExpectedRecord { offset: pos });
    }
    while pos < input.len() {
        let Some((direction, delay, marker_len)) = parse_marker(&input[pos..]) else {
            // Unreachable: every loop start is at a marker.
            return Err(ParseError::ExpectedRecord { offset: pos });
        };
        let data_start = pos + marker_len;
        let mut end = input.len();
        let mut scan = data_start;
        while let Some(nl) = input[scan..].iter().position(|&b| b == b'\n') {
            let line_start = scan + nl + 1;
            if line_start >= input.len() {
                break;
            }
            if parse_marker(&input[line_start..]).is_some() {
                end = line_start;
                break;
            }
            scan = line_start;
        }
        records.push(Record {
            direction,
            delay,
            data: input[data_start..end].to_vec(),
        });
        pos = end;
    }
    Ok(Capture {
        user: user.to_string(),
        login,
        records,
    })
}

/// Parses a marker such as `<12.345<` at the start of `s`, returning the
/// direction, the delay and the marker's length.
fn parse_marker(s: &[u8]) -> Option<(Direction, Duration, usize)> {
    let (&open, rest) = s.split_first()?;
    let direction = Direction::from_marker(open)?;
    let int_len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if int_len == 0 || rest.get(int_len) != Some(&b'.') {
        return None;
    }
    let frac = rest.get(int_len + 1..int_len + 4)?;
    if !frac.iter().all(u8::is_ascii_digit) || rest.get(int_len + 4) != Some(&open) {
        return None;
    }
    let secs: u64 = std::str::from_utf8(&rest[..int_len]).ok()?.parse().ok()?;
    let ms = frac
        .iter()
        .fold(0u64, |acc, b| acc * 10 + u64::from(b - b'0'));
    Some((
        direction,
        Duration::from_secs(secs) + Duration::from_millis(ms),
        int_len + 6,
    ))
}

fn parse_timestamp(date: &str, time: &str) -> Option<SystemTime> {
    fn nums<const N: usize>(s: &str, sep: char) -> Option<[u32; N]> {
        let mut out = [0u32; N];
        let mut it = s.split(sep);
        for slot in &mut out {
            let part = it.next()?;
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            *slot = part.parse().ok()?;
        }
        it.next().is_none().then_some(out)
    }
    let [y, mo, d] = nums::<3>(date, '/')?;
    let [h, mi, s] = nums::<3>(time, ':')?;
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(i64::from(y), mo, d);
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + s);
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Writes a capture for reading by a person: the `LOGIN` line, then every
/// line of every record prefixed with its absolute time (UTC, to the
/// millisecond) and `C:` (from the client) or `S:` (from the server).
/// Line ends (`\r\n` or `\n`) are dropped, other control characters and
/// invalid UTF-8 are shown escaped (`\x07`), and a record that does not
/// end with a newline has ` [no newline]` after its last line.
pub fn write_absolute(capture: &Capture, out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "LOGIN {} {}",
        capture.user,
        format_timestamp(capture.login, false)
    )?;
    for (at, record) in capture.timed_records() {
        let stamp = format_timestamp(at, true);
        let tag = match record.direction {
            Direction::Client => "C:",
            Direction::Server => "S:",
        };
        let mut lines = record.data.split_inclusive(|&b| b == b'\n').peekable();
        if lines.peek().is_none() {
            writeln!(out, "{stamp} {tag} {NO_NEWLINE}")?;
        }
        for line in lines {
            let (content, complete) = match line.strip_suffix(b"\n") {
                Some(l) => (l.strip_suffix(b"\r").unwrap_or(l), true),
                None => (line, false),
            };
            let shown = escape(content);
            let cont = if complete { "" } else { NO_NEWLINE };
            let sep = if complete || shown.is_empty() {
                ""
            } else {
                " "
            };
            writeln!(out, "{stamp} {tag} {shown}{sep}{cont}")?;
        }
    }
    Ok(())
}

const NO_NEWLINE: &str = "[no newline]";

/// [`write_absolute`] into a `String`.
pub fn format_absolute(capture: &Capture) -> String {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = write_absolute(capture, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() && c != '\t' {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;

/// Starts capturing a session if support staff asked for it: when
/// `<root>/data/telemetry/<service>/<userid>/` exists, a new file there (named by time,
/// process and a counter, never reused) gets the `LOGIN` line and `record`, the redacted
/// login command. `Ok(None)` when no capture is wanted. The caller keeps the writer for the
/// session and logs an error without failing the session.
pub fn start_session_capture(
    root: &std::path::Path,
    service: &str,
    userid: &str,
    record: &str,
    buffer_limit: usize,
) -> Result<Option<(std::path::PathBuf, CaptureWriter<std::fs::File>)>, StartError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = root
        .join("data")
        .join("telemetry")
        .join(service)
        .join(userid);
    if !dir.is_dir() {
        return Ok(None);
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("{secs}-{}-{seq}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| StartError {
            path: path.clone(),
            source: TelemetryError::Write(e),
        })?;
    let mut writer = CaptureWriter::with_buffer_limit(file, buffer_limit);
    let at = Instant::now();
    writer
        .login(userid, now, at)
        .and_then(|()| writer.redact(record.as_bytes(), at))
        .map_err(|source| StartError {
            path: path.clone(),
            source,
        })?;
    Ok(Some((path, writer)))
}

/// A capture that could not be started (the session goes on without it).
#[derive(Debug, thiserror::Error)]
#[error("telemetry capture {}: cannot start: {source}", path.display())]
pub struct StartError {
    /// The capture file.
    pub path: std::path::PathBuf,
    /// What failed.
    #[source]
    pub source: TelemetryError,
}
