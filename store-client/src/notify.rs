//! Change notification across sessions and processes.
//!
//! A write made through this process's `StoreClient` wakes watchers at once (`poke`). Writes
//! made by other processes (an LMTP delivery, a POP3 expunge, `reconstruct`) are found by one
//! poller task per process that reads each watched folder's index header every 250 ms: a
//! 256-byte read per folder, whatever the folder's size, which keeps the one-second promise.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use msgstore::{MailboxName, Store};
use tokio::sync::watch;

use crate::{ClientError, Result};

pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(250);

pub(crate) type Token = (u64, u64, u64);

struct Watched {
    name: MailboxName,
    tx: watch::Sender<Token>,
    refs: usize,
}

type Map = Arc<Mutex<HashMap<String, Watched>>>;

pub(crate) struct Notifier {
    store: Arc<Store>,
    map: Map,
    poller: Mutex<bool>,
    /// When the poller last began a pass that it then completed, in milliseconds since
    /// `epoch`: every change made by another process before then has reached the tokens.
    last_pass: Arc<AtomicU64>,
    epoch: Instant,
}

impl Notifier {
    pub(crate) fn new(store: Arc<Store>) -> Notifier {
        Notifier {
            store,
            map: Arc::new(Mutex::new(HashMap::new())),
            poller: Mutex::new(false),
            last_pass: Arc::new(AtomicU64::new(0)),
            epoch: Instant::now(),
        }
    }

    /// Whether the poller is running and has completed a pass within the last second, so
    /// that a token nobody changed is known current to within that second. (It is a task:
    /// it stops with the runtime that started it.)
    pub(crate) fn poller_fresh(&self) -> bool {
        let last = self.last_pass.load(Ordering::Acquire);
        let now = self.epoch.elapsed().as_millis() as u64;
        last != 0 && now.saturating_sub(last) < 1000
    }

    fn lock(map: &Map) -> std::sync::MutexGuard<'_, HashMap<String, Watched>> {
        map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) async fn watch(&self, name: MailboxName) -> Result<Watcher> {
        let store = self.store.clone();
        let n = name.clone();
        let token = crate::blocking(move || Ok(store.peek_change_token(&n)?)).await?;
        Ok(self.watch_from(&name, token))
    }

    /// A watcher started from a change token the caller has just read under the folder's
    /// lock, so that no blocking call is needed (a selected folder's own subscription).
    pub(crate) fn watch_from(&self, name: &MailboxName, token: Token) -> Watcher {
        self.ensure_poller();
        let mut map = Self::lock(&self.map);
        let w = map.entry(name.to_string()).or_insert_with(|| Watched {
            name: name.clone(),
            tx: watch::channel(token).0,
            refs: 0,
        });
        w.refs += 1;
        let mut rx = w.tx.subscribe();
        rx.borrow_and_update();
        Watcher {
            rx,
            key: name.to_string(),
            map: Arc::downgrade(&self.map),
        }
    }

    /// A change was just made in this process: tell watchers now rather than at the next poll.
    pub(crate) fn poke(&self, name: &MailboxName) {
        let tx = match Self::lock(&self.map).get(name.as_str()) {
            Some(w) => w.tx.clone(),
            None => return,
        };
        match self.store.peek_change_token(name) {
            Ok(t) => {
                tx.send_if_modified(|cur| {
                    let changed = *cur != t;
                    *cur = t;
                    changed
                });
            }
            // Deleted or renamed away: wake watchers so they find out.
            Err(_) => {
                tx.send_modify(|cur| cur.0 = cur.0.wrapping_add(1 << 32));
            }
        }
    }

    fn ensure_poller(&self) {
        let mut started = self.poller.lock().unwrap_or_else(|p| p.into_inner());
        if *started {
            return;
        }
        *started = true;
        let map = Arc::downgrade(&self.map);
        let store = self.store.clone();
        let stamp = (self.last_pass.clone(), self.epoch);
        tokio::spawn(poll_loop(map, store, stamp));
    }
}

async fn poll_loop(
    map: Weak<Mutex<HashMap<String, Watched>>>,
    store: Arc<Store>,
    (last_pass, epoch): (Arc<AtomicU64>, Instant),
) {
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Taken before the pass: what changed before it is in the tokens once it is done.
        let began = (epoch.elapsed().as_millis() as u64).max(1);
        let Some(map) = map.upgrade() else { return };
        let targets: Vec<(MailboxName, watch::Sender<Token>)> = Notifier::lock(&map)
            .values()
            .map(|w| (w.name.clone(), w.tx.clone()))
            .collect();
        drop(map);
        if targets.is_empty() {
            last_pass.store(began, Ordering::Release);
            continue;
        }
        let store = store.clone();
        let done = tokio::task::spawn_blocking(move || {
            let mut complete = true;
            for (name, tx) in targets {
                let token = match store.peek_change_token(&name) {
                    Ok(t) => t,
                    Err(msgstore::StoreError::NoSuchMailbox(_)) => (u64::MAX, u64::MAX, u64::MAX),
                    Err(_) => {
                        // A torn read while a writer is mid-update: next tick.
                        complete = false;
                        continue;
                    }
                };
                tx.send_if_modified(|cur| {
                    let changed = *cur != token;
                    *cur = token;
                    changed
                });
            }
            complete
        })
        .await;
        if done.unwrap_or(false) {
            last_pass.store(began, Ordering::Release);
        }
    }
}

/// Resolves `changed()` each time the watched folder changes.
pub struct Watcher {
    rx: watch::Receiver<Token>,
    key: String,
    map: Weak<Mutex<HashMap<String, Watched>>>,
}

impl Watcher {
    /// The folder's change token as last seen by the notifier (this process's writes at
    /// once, other processes' within the poll interval).
    pub(crate) fn token(&self) -> Token {
        *self.rx.borrow()
    }

    /// Wait for the next change. Several changes close together may be reported once.
    pub async fn changed(&mut self) -> Result<()> {
        self.rx
            .changed()
            .await
            .map_err(|_| ClientError::Internal("store closed".into()))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(map) = self.map.upgrade() {
            let mut m = Notifier::lock(&map);
            if let Some(w) = m.get_mut(&self.key) {
                w.refs -= 1;
                if w.refs == 0 {
                    m.remove(&self.key);
                }
            }
        }
    }
}
