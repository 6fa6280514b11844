//! Controller expectations (upstream's `ControllerExpectations`): after a controller asks
//! for N creations or deletions it waits until its informer has seen them before it
//! counts pods again, so a burst of events between the write and the watch never makes
//! it create or delete twice. Expectations expire after five minutes so a lost event
//! (say, a create that failed after the API accepted it) cannot wedge a controller.

use crate::server::informer::ObjectKey;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long unmet expectations hold before the controller counts again anyway.
const EXPECTATIONS_TTL: Duration = Duration::from_secs(300);

/// Deletions are tracked by pod name (upstream's UID-tracking expectations): a pod is
/// seen twice on its way out (deletionTimestamp set, then gone), and counting both would
/// satisfy a later expectation early.
#[derive(Clone, Debug)]
struct Pending {
    adds: i64,
    dels: HashSet<String>,
    set: Instant,
}

/// Outstanding creations and deletions per controller object.
#[derive(Default)]
pub struct Expectations {
    pending: Mutex<HashMap<ObjectKey, Pending>>,
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Pending>> {
        // Every critical section is a single map operation: a poisoned lock is consistent.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `key` may act now: everything it asked for was observed, or it asked for
    /// nothing, or its expectations expired.
    pub fn satisfied(&self, key: &ObjectKey) -> bool {
        match self.lock().get(key) {
            None => true,
            Some(p) => (p.adds <= 0 && p.dels.is_empty()) || p.set.elapsed() > EXPECTATIONS_TTL,
        }
    }

    /// Records that `key` is about to create `adds` objects and delete the pods named
    /// in `dels`.
    pub fn expect(&self, key: &ObjectKey, adds: i64, dels: Vec<String>) {
        self.lock().insert(
            key.clone(),
            Pending {
                adds,
                dels: dels.into_iter().collect(),
                set: Instant::now(),
            },
        );
    }

    /// One creation was observed (or will never happen: the create failed).
    pub fn creation_observed(&self, key: &ObjectKey) {
        if let Some(p) = self.lock().get_mut(key) {
            p.adds -= 1;
        }
    }

    /// The deletion of pod `name` was observed (or will never happen).
    pub fn deletion_observed(&self, key: &ObjectKey, name: &str) {
        if let Some(p) = self.lock().get_mut(key) {
            p.dels.remove(name);
        }
    }

    /// Forgets `key` (its object was deleted).
    pub fn forget(&self, key: &ObjectKey) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_until_every_expected_write_was_observed() {
        let e = Expectations::default();
        let k = ObjectKey::new("default", "web");
        assert!(e.satisfied(&k));
        e.expect(&k, 2, vec![]);
        assert!(!e.satisfied(&k));
        e.creation_observed(&k);
        assert!(!e.satisfied(&k));
        e.creation_observed(&k);
        assert!(e.satisfied(&k));
        e.expect(&k, 0, vec!["a".into()]);
        assert!(!e.satisfied(&k));
        e.deletion_observed(&k, "b");
        assert!(!e.satisfied(&k));
        e.deletion_observed(&k, "a");
        e.deletion_observed(&k, "a");
        assert!(e.satisfied(&k));
    }
}
