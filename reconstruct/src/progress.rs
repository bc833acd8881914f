//! Progress of a long `-r` run on stderr, so that stdout keeps one finding per line for
//! scripts: a bar redrawn in place when stderr is a terminal, a plain line every few seconds
//! otherwise (logs, cron mail, `2>file`).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// How progress is shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProgressMode {
    /// Nothing (the library's default: callers such as stored collect the lines themselves).
    #[default]
    Off,
    /// A single line redrawn in place (stderr is a terminal).
    Bar,
    /// A line every interval.
    Lines(Duration),
}

/// Bar redraws per second: often enough to look alive, rarely enough to cost nothing.
const BAR_TICK: Duration = Duration::from_millis(200);
const BAR_WIDTH: usize = 24;

/// Counters shared by the workers and the drawing thread.
pub struct Progress {
    mode: ProgressMode,
    total: AtomicU64,
    started: Instant,
    /// Folders finished.
    pub folders: AtomicU64,
    /// Messages checked or rebuilt so far (updated inside a folder, too).
    pub messages: AtomicU64,
    /// Serialises drawing with the output of findings (both may reach the same terminal).
    draw: Mutex<bool>,
    done: Mutex<bool>,
    wake: Condvar,
}

impl Progress {
    pub fn new(mode: ProgressMode, total: usize) -> Progress {
        Progress {
            mode,
            total: AtomicU64::new(total as u64),
            started: Instant::now(),
            folders: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            draw: Mutex::new(false),
            done: Mutex::new(false),
            wake: Condvar::new(),
        }
    }

    /// Sets the number of folders to expect, when it is known only once the work started.
    pub fn set_total(&self, total: usize) {
        self.total.store(total as u64, Ordering::Relaxed);
    }

    /// The plain form: `reconstruct: 1200/5000 folders, 240000 messages, 12 s`.
    pub fn line(&self) -> String {
        format!(
            "reconstruct: {}/{} folders, {} messages, {} s",
            self.folders.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
            self.messages.load(Ordering::Relaxed),
            self.started.elapsed().as_secs()
        )
    }

    /// The bar form: `[#####-----] 1200/5000 folders  24000 msg/s  ETA 12 s`.
    pub fn bar(&self) -> String {
        let done = self.folders.load(Ordering::Relaxed);
        let total = self.total.load(Ordering::Relaxed);
        let msgs = self.messages.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64();
        let filled = (done as usize * BAR_WIDTH)
            .checked_div(total as usize)
            .unwrap_or(0)
            .min(BAR_WIDTH);
        let rate = if secs > 0.0 { msgs as f64 / secs } else { 0.0 };
        let eta = if done > 0 && done < total {
            format!("ETA {:.0} s", secs * (total - done) as f64 / done as f64)
        } else {
            "ETA -".to_owned()
        };
        format!(
            "reconstruct [{}{}] {done}/{} folders  {rate:.0} msg/s  {eta}",
            "#".repeat(filled),
            "-".repeat(BAR_WIDTH - filled),
            total
        )
    }

    /// Run `f` (which prints a finding) with the bar taken off the screen first, so that the
    /// finding does not land after the bar's text.
    pub fn around_output(&self, f: impl FnOnce()) {
        if self.mode != ProgressMode::Bar {
            return f();
        }
        let mut shown = self.draw.lock().unwrap_or_else(|p| p.into_inner());
        if *shown {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
            *shown = false;
        }
        f();
    }

    fn draw_bar(&self) {
        let mut shown = self.draw.lock().unwrap_or_else(|p| p.into_inner());
        let _ = write!(std::io::stderr().lock(), "\r\x1b[K{}", self.bar());
        *shown = true;
    }

    /// Draw until `finish` is called; meant for its own thread.
    pub fn run(&self) {
        let every = match self.mode {
            ProgressMode::Off => return,
            ProgressMode::Bar => BAR_TICK,
            ProgressMode::Lines(d) => d.max(Duration::from_millis(10)),
        };
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let (d, _) = self
                .wake
                .wait_timeout(done, every)
                .unwrap_or_else(|p| p.into_inner());
            done = d;
            if *done {
                break;
            }
            match self.mode {
                ProgressMode::Bar => self.draw_bar(),
                _ => {
                    let _ = writeln!(std::io::stderr().lock(), "{}", self.line());
                }
            }
        }
        drop(done);
        if self.mode == ProgressMode::Bar {
            let mut shown = self.draw.lock().unwrap_or_else(|p| p.into_inner());
            if *shown {
                let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
                *shown = false;
            }
        }
    }

    /// Stop `run` (and take the bar off the screen).
    pub fn finish(&self) {
        *self.done.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let p = Progress::new(ProgressMode::Lines(Duration::from_secs(1)), 4);
        p.folders.store(1, Ordering::Relaxed);
        p.messages.store(250, Ordering::Relaxed);
        assert_eq!(p.line(), "reconstruct: 1/4 folders, 250 messages, 0 s");
        let b = p.bar();
        assert!(
            b.starts_with("reconstruct [######------------------] 1/4 folders"),
            "{b}"
        );
        assert!(b.contains("msg/s  ETA"), "{b}");
        // No folders at all: no division by zero.
        assert!(Progress::new(ProgressMode::Bar, 0).bar().contains("0/0"));
    }
}
