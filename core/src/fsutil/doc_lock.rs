//! Per-document locks for read-modify-write of metadata files. [`super::atomic_write`] makes
//! each write whole, but two writers that each read, change and write the same document would
//! lose one change; the store that owns a document holds its lock from the read (or the
//! in-memory copy) to the end of the write, and updates its in-memory state only once the
//! write succeeded.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// One async mutex per key, made on first use and forgotten when nobody holds or waits for it.
pub struct DocLocks<K> {
    locks: Mutex<HashMap<K, Weak<AsyncMutex<()>>>>,
}

impl<K> Default for DocLocks<K> {
    fn default() -> Self {
        Self {
            locks: Mutex::new(HashMap::new()),
        }
    }
}

/// Held while a document is read, changed and written.
pub struct DocGuard {
    _guard: OwnedMutexGuard<()>,
}

impl<K: Eq + Hash + Clone> DocLocks<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits for the document `key` and holds it until the guard is dropped.
    pub async fn lock(&self, key: &K) -> DocGuard {
        let mutex = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            // Forget keys nobody holds any more, so the map stays as small as the work.
            if locks.len() > 64 {
                locks.retain(|_, w| w.strong_count() > 0);
            }
            match locks.get(key).and_then(Weak::upgrade) {
                Some(m) => m,
                None => {
                    let m = Arc::new(AsyncMutex::new(()));
                    locks.insert(key.clone(), Arc::downgrade(&m));
                    m
                }
            }
        };
        DocGuard {
            _guard: mutex.lock_owned().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn serialises_one_key_and_not_others() {
        let locks = Arc::new(DocLocks::<String>::new());
        let inside = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (locks, inside) = (locks.clone(), inside.clone());
            tasks.push(tokio::spawn(async move {
                let _g = locks.lock(&"doc".to_string()).await;
                assert_eq!(
                    inside.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two holders at once"
                );
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        // Another document is not held up by the first.
        let _held = locks.lock(&"doc".to_string()).await;
        tokio::time::timeout(
            std::time::Duration::from_secs(1),
            locks.lock(&"other".to_string()),
        )
        .await
        .expect("an unrelated document waited");
        drop(_held);
        for t in tasks {
            t.await.unwrap();
        }
    }
}
