//! One lock per release: every read-modify-write of a release (API call, round, alert,
//! expiry) holds its release's lock, so nothing of one is half-applied or lost, while
//! changes of different releases go on side by side — a dangerous alert for one release
//! never waits behind another release's catch-up rounds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// Entries kept before the locks nobody holds or waits for are dropped.
const PRUNE_ABOVE: usize = 1024;

/// The locks of the releases, made on first use.
#[derive(Debug, Default)]
pub struct ReleaseLocks {
    locks: Mutex<HashMap<i64, Arc<AsyncMutex<()>>>>,
}

impl ReleaseLocks {
    /// Waits for release `id`'s lock; it is held until the guard is dropped.
    pub async fn lock(&self, id: i64) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
            if locks.len() > PRUNE_ABOVE {
                // Held or waited for by someone else when another handle exists.
                locks.retain(|_, l| Arc::strong_count(l) > 1);
            }
            Arc::clone(locks.entry(id).or_default())
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn one_release_waits_for_itself_never_for_another() {
        let locks = ReleaseLocks::default();
        let held = locks.lock(1).await;
        // Another release's lock is free.
        tokio::time::timeout(Duration::from_secs(1), locks.lock(2))
            .await
            .expect("release 2 is not held up by release 1");
        // The same release waits until the guard goes.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), locks.lock(1))
                .await
                .is_err()
        );
        drop(held);
        tokio::time::timeout(Duration::from_secs(1), locks.lock(1))
            .await
            .expect("free again");
    }

    #[tokio::test]
    async fn locks_nobody_holds_are_pruned() {
        let locks = ReleaseLocks::default();
        let held = locks.lock(0).await;
        for id in 1..=(PRUNE_ABOVE as i64 + 1) {
            drop(locks.lock(id).await);
        }
        drop(locks.lock(PRUNE_ABOVE as i64 + 2).await);
        let map = locks.locks.lock().unwrap_or_else(PoisonError::into_inner);
        // The held lock, and those made since the last pruning.
        assert!(map.len() <= 3, "{} locks left", map.len());
        assert!(map.contains_key(&0), "a held lock is never dropped");
        drop(map);
        drop(held);
    }
}
