//! Per-account concurrency limits of the session resource (RFC 8620 2: maxConcurrentUpload,
//! maxConcurrentRequests): a counter per account, a slot held for as long as a request (or
//! an upload) is being received and answered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Slots per account, `max` at most each.
#[derive(Clone)]
pub(crate) struct Slots {
    max: usize,
    held: Arc<Mutex<HashMap<String, usize>>>,
}

/// One held slot; dropping it gives the slot back.
pub(crate) struct Slot {
    held: Arc<Mutex<HashMap<String, usize>>>,
    user: String,
}

fn lock(m: &Mutex<HashMap<String, usize>>) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Slots {
    pub(crate) fn new(max: usize) -> Slots {
        Slots {
            max,
            held: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A slot for `user`, or None when the account already holds `max`.
    pub(crate) fn try_acquire(&self, user: &str) -> Option<Slot> {
        let mut held = lock(&self.held);
        let n = held.entry(user.to_owned()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            held: self.held.clone(),
            user: user.to_owned(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = lock(&self.held);
        if let Some(n) = held.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            // Idle accounts leave no entry behind: the table stays as small as the set of
            // accounts with a request in progress.
            if *n == 0 {
                held.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_per_account_and_given_back() {
        let s = Slots::new(2);
        let a1 = s.try_acquire("a");
        let a2 = s.try_acquire("a");
        assert!(a1.is_some() && a2.is_some());
        assert!(s.try_acquire("a").is_none());
        assert!(s.try_acquire("b").is_some());
        drop(a1);
        assert!(s.try_acquire("a").is_some());
        drop(a2);
        assert!(lock(&s.held).is_empty());
    }
}
