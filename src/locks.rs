//! Locking that outlives a panicked holder: the runtime's shared state stays usable (and its
//! workers reapable) even if one thread panicked while holding a lock.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking the data as it is if a holder panicked.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
