//! The session cap and the shutdown signal every front end shares.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

#[derive(Debug)]
struct LimiterInner {
    cap: u64,
    active: AtomicU64,
    idle: Notify,
}

/// Counts live sessions against the cap the descriptor check allowed.
/// Cloning shares the count.
#[derive(Debug, Clone)]
pub struct SessionLimiter {
    inner: Arc<LimiterInner>,
}

/// One admitted session; dropping it frees the place.
#[derive(Debug)]
pub struct SessionPermit {
    inner: Arc<LimiterInner>,
}

impl SessionLimiter {
    /// A limiter admitting at most `cap` sessions at once (at least 1).
    pub fn new(cap: u64) -> SessionLimiter {
        SessionLimiter {
            inner: Arc::new(LimiterInner {
                cap: cap.max(1),
                active: AtomicU64::new(0),
                idle: Notify::new(),
            }),
        }
    }

    /// A place for one more session, or `None` at the cap (the caller then
    /// gives its protocol's busy reply and closes).
    pub fn try_acquire(&self) -> Option<SessionPermit> {
        let admitted = self
            .inner
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.inner.cap).then_some(n + 1)
            })
            .is_ok();
        admitted.then(|| SessionPermit {
            inner: self.inner.clone(),
        })
    }

    /// Sessions admitted now.
    pub fn active(&self) -> u64 {
        self.inner.active.load(Ordering::Acquire)
    }

    /// The cap.
    pub fn cap(&self) -> u64 {
        self.inner.cap
    }

    /// Waits until no session is active, at most `timeout`. Returns the
    /// number still active (0 when all ended in time).
    pub async fn wait_idle(&self, timeout: Duration) -> u64 {
        let wait = async {
            loop {
                let notified = self.inner.idle.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.active() == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
        self.active()
    }
}

impl Drop for SessionPermit {
    fn drop(&mut self) {
        if self.inner.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.idle.notify_waiters();
        }
    }
}

/// The process-wide "stop now" signal: triggered by SIGTERM or SIGINT
/// (once [`Shutdown::on_signals`] runs) or by [`Shutdown::trigger`].
/// [`crate::serve`] stops accepting when it fires; sessions can await
/// [`Shutdown::wait`] to say goodbye. Cloning shares the signal.
#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    /// A signal not yet triggered.
    pub fn new() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        Shutdown {
            tx: Arc::new(tx),
            rx,
        }
    }

    /// Fires the signal (idempotent).
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// True once fired.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Completes when the signal fires (at once if it has).
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        // The sender lives in `self`, so the channel cannot close.
        let _ = rx.wait_for(|v| *v).await;
    }

    /// Spawns a task that fires the signal on SIGTERM or SIGINT. Must be
    /// called inside a tokio runtime.
    pub fn on_signals(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let this = self.clone();
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!("{name} received; shutting down");
            this.trigger();
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_caps_and_frees() {
        let l = SessionLimiter::new(2);
        let a = l.try_acquire().unwrap();
        let b = l.try_acquire().unwrap();
        assert!(l.try_acquire().is_none());
        assert_eq!(l.active(), 2);
        drop(a);
        let c = l.try_acquire().unwrap();
        drop((b, c));
        assert_eq!(l.active(), 0);
        assert_eq!(SessionLimiter::new(0).cap(), 1);
    }

    #[test]
    fn limiter_under_contention_never_exceeds_the_cap() {
        let l = SessionLimiter::new(7);
        let peak = Arc::new(AtomicU64::new(0));
        std::thread::scope(|s| {
            for _ in 0..8 {
                let (l, peak) = (l.clone(), peak.clone());
                s.spawn(move || {
                    for _ in 0..2000 {
                        if let Some(p) = l.try_acquire() {
                            peak.fetch_max(l.active(), Ordering::Relaxed);
                            drop(p);
                        }
                    }
                });
            }
        });
        assert!(peak.load(Ordering::Relaxed) <= 7);
        assert_eq!(l.active(), 0);
    }

    #[tokio::test]
    async fn wait_idle_returns_when_the_last_session_ends() {
        let l = SessionLimiter::new(3);
        let p = l.try_acquire().unwrap();
        assert_eq!(l.wait_idle(Duration::from_millis(20)).await, 1);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(p);
        });
        assert_eq!(l.wait_idle(Duration::from_secs(10)).await, 0);
    }

    #[tokio::test]
    async fn shutdown_wakes_every_waiter() {
        let s = Shutdown::new();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move { s.wait().await })
            })
            .collect();
        assert!(!s.is_triggered());
        s.trigger();
        for w in waiters {
            tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .unwrap()
                .unwrap();
        }
        assert!(s.is_triggered());
        s.wait().await; // already fired: immediate
    }
}
