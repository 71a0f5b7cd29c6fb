//! The in-memory cache of lookup outcomes. Time is always passed in, so tests can
//! step past an expiry without sleeping.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::Outcome;

pub(crate) struct Cache {
    entries: Mutex<HashMap<String, Outcome>>,
    capacity: usize,
}

impl Cache {
    pub(crate) fn new(capacity: usize) -> Self {
        Cache {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Outcome>> {
        // a panic while holding the lock leaves a map that is still consistent
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The outcome for `address` if it is still fresh at `now`.
    pub(crate) fn get(&self, address: &str, now: SystemTime) -> Option<Outcome> {
        let map = self.lock();
        let hit = map.get(address)?;
        // a clock that went backwards past the lookup also makes the entry stale
        if now < hit.expires_at && now >= hit.looked_up_at {
            let mut out = hit.clone();
            out.from_cache = true;
            Some(out)
        } else {
            None
        }
    }

    pub(crate) fn put(&self, outcome: &Outcome, now: SystemTime) {
        if self.capacity == 0 || outcome.expires_at <= now {
            return;
        }
        let mut map = self.lock();
        if map.len() >= self.capacity && !map.contains_key(&outcome.address) {
            map.retain(|_, o| o.expires_at > now);
            if map.len() >= self.capacity {
                // still full: drop the entry closest to expiry
                if let Some(key) = map
                    .iter()
                    .min_by_key(|(_, o)| o.expires_at)
                    .map(|(k, _)| k.clone())
                {
                    map.remove(&key);
                }
            }
        }
        map.insert(outcome.address.clone(), outcome.clone());
    }

    pub(crate) fn forget(&self, address: &str) {
        self.lock().remove(address);
    }

    pub(crate) fn clear(&self) {
        self.lock().clear();
    }
}
