//! The work queue controllers pull keys from, with client-go's semantics: a key is in
//! the queue at most once (adding it again while queued is a no-op), a key being
//! processed is never handed to a second worker (an add meanwhile re-queues it after
//! [`WorkQueue::done`]), and failed keys come back after a per-key exponential back-off
//! (5 ms doubling up to 1000 s) until [`WorkQueue::forget`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::{Debug, Display};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// First retry delay of a failing key.
const BASE_DELAY: Duration = Duration::from_millis(5);
/// Longest retry delay.
const MAX_DELAY: Duration = Duration::from_secs(1000);

struct State<K> {
    queue: VecDeque<K>,
    dirty: HashSet<K>,
    processing: HashSet<K>,
    failures: HashMap<K, u32>,
    shut_down: bool,
}

struct Inner<K> {
    state: Mutex<State<K>>,
    notify: Notify,
}

/// A deduplicating, rate-limited queue of keys. Cheap to clone (clones share the queue).
pub struct WorkQueue<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for WorkQueue<K> {
    fn clone(&self) -> Self {
        WorkQueue {
            inner: self.inner.clone(),
        }
    }
}

impl<K: Clone + Eq + Hash + Send + 'static> Default for WorkQueue<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Clone + Eq + Hash + Send + 'static> WorkQueue<K> {
    /// An empty queue.
    pub fn new() -> Self {
        WorkQueue {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    dirty: HashSet::new(),
                    processing: HashSet::new(),
                    failures: HashMap::new(),
                    shut_down: false,
                }),
                notify: Notify::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<K>> {
        // Every critical section leaves the state consistent, so poisoning is harmless.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `key` unless it is already waiting.
    pub fn add(&self, key: K) {
        let mut s = self.state();
        if s.shut_down || !s.dirty.insert(key.clone()) {
            return;
        }
        if s.processing.contains(&key) {
            // `done` puts it back once the current worker finishes.
            return;
        }
        s.queue.push_back(key);
        drop(s);
        self.inner.notify.notify_one();
    }

    /// Adds `key` after `delay`.
    pub fn add_after(&self, key: K, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let q = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add(key);
        });
    }

    /// Adds `key` after its back-off: 5 ms for the first failure, doubling per failure
    /// up to 1000 s.
    pub fn add_rate_limited(&self, key: K) {
        let delay = {
            let mut s = self.state();
            let n = s.failures.entry(key.clone()).or_insert(0);
            let d = backoff(*n);
            *n = n.saturating_add(1);
            d
        };
        self.add_after(key, delay);
    }

    /// Clears `key`'s failure count (call after a successful reconcile).
    pub fn forget(&self, key: &K) {
        self.state().failures.remove(key);
    }

    /// How many times `key` failed since it was last forgotten.
    pub fn retries(&self, key: &K) -> u32 {
        self.state().failures.get(key).copied().unwrap_or(0)
    }

    /// The next key to work on; waits while the queue is empty. None after
    /// [`WorkQueue::shut_down`]. Call [`WorkQueue::done`] when finished with the key.
    pub async fn get(&self) -> Option<K> {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.state();
                if let Some(k) = s.queue.pop_front() {
                    s.dirty.remove(&k);
                    s.processing.insert(k.clone());
                    let more = !s.queue.is_empty();
                    drop(s);
                    if more {
                        // Wake another worker: notify_one stores only one permit.
                        self.inner.notify.notify_one();
                    }
                    return Some(k);
                }
                if s.shut_down {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Marks `key` as finished; if it was added meanwhile it is queued again.
    pub fn done(&self, key: &K) {
        let mut s = self.state();
        s.processing.remove(key);
        if s.dirty.contains(key) && !s.shut_down {
            s.queue.push_back(key.clone());
            drop(s);
            self.inner.notify.notify_one();
        }
    }

    /// Keys waiting (not counting keys being processed).
    pub fn len(&self) -> usize {
        self.state().queue.len()
    }

    /// Whether no key is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops the queue: `get` returns None from now on, adds are ignored.
    pub fn shut_down(&self) {
        self.state().shut_down = true;
        self.inner.notify.notify_waiters();
    }

    /// Shuts the queue down when `shutdown` flips to true (or its sender is gone), so a
    /// controller's `run_controller` loop ends with the server.
    pub fn shut_down_on(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let queue = self.clone();
        tokio::spawn(async move {
            let _ = shutdown.wait_for(|s| *s).await;
            queue.shut_down();
        });
    }
}

fn backoff(failures: u32) -> Duration {
    let factor = 1u64.checked_shl(failures.min(40)).unwrap_or(u64::MAX);
    let ms = (BASE_DELAY.as_millis() as u64).saturating_mul(factor);
    Duration::from_millis(ms).min(MAX_DELAY)
}

/// Runs `workers` workers that take keys from `queue` and call `reconcile`: success
/// forgets the key's failures, an error logs it and re-queues the key with back-off.
/// Returns when the queue is shut down and the workers finished.
pub async fn run_controller<K, F, Fut, E>(
    name: &'static str,
    queue: WorkQueue<K>,
    workers: usize,
    reconcile: F,
) where
    K: Clone + Eq + Hash + Send + Sync + Debug + 'static,
    F: Fn(K) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Display + Send + 'static,
{
    let reconcile = Arc::new(reconcile);
    let mut tasks = Vec::new();
    for _ in 0..workers.max(1) {
        let queue = queue.clone();
        let reconcile = reconcile.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(key) = queue.get().await {
                match reconcile(key.clone()).await {
                    Ok(()) => queue.forget(&key),
                    Err(e) => {
                        tracing::debug!(controller = name, key = ?key, error = %e, "reconcile failed; retrying with back-off");
                        queue.add_rate_limited(key.clone());
                    }
                }
                queue.done(&key);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_5ms_to_1000s() {
        assert_eq!(backoff(0), Duration::from_millis(5));
        assert_eq!(backoff(1), Duration::from_millis(10));
        assert_eq!(backoff(10), Duration::from_millis(5120));
        assert_eq!(backoff(30), MAX_DELAY);
        assert_eq!(backoff(u32::MAX), MAX_DELAY);
    }

    #[tokio::test]
    async fn keys_are_deduplicated_while_queued_and_requeued_after_done() {
        let q: WorkQueue<&str> = WorkQueue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let k = q.get().await;
        assert_eq!(k, Some("a"));
        // Added while processing: not handed out until done.
        q.add("a");
        assert_eq!(q.get().await, Some("b"));
        assert!(q.is_empty());
        q.done(&"a");
        assert_eq!(q.get().await, Some("a"));
        q.done(&"a");
        q.done(&"b");
        q.shut_down();
        assert_eq!(q.get().await, None);
    }

    #[tokio::test]
    async fn failed_keys_come_back_after_backoff() {
        let q: WorkQueue<u32> = WorkQueue::new();
        q.add_rate_limited(7);
        assert_eq!(q.retries(&7), 1);
        let got = tokio::time::timeout(Duration::from_secs(2), q.get()).await;
        assert_eq!(got.ok().flatten(), Some(7));
        q.forget(&7);
        assert_eq!(q.retries(&7), 0);
    }
}
