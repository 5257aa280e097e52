//! The in-process store: a mutex-guarded table plus a condition variable for waiting gets.
//! The server keeps its data in one of these, so both share one set of semantics.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::{Store, StoreError, check_sizes};

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<String, Vec<u8>>,
    /// Set when the owning server stops, so waiting gets return instead of sleeping on.
    closed: bool,
}

/// In-process [`Store`] for tests and single-process jobs.
#[derive(Debug, Default)]
pub struct MemoryStore {
    table: Mutex<Table>,
    changed: Condvar,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock cannot leave the map half-updated (each mutation is a
        // single insert), so a poisoned lock is still safe to use.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes every waiting get with [`StoreError::ShutDown`]; later calls fail the same way.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }
}

impl Store for MemoryStore {
    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        check_sizes(key, Some(value))?;
        let mut t = self.lock();
        if t.closed {
            return Err(StoreError::ShutDown);
        }
        t.entries.insert(key.to_owned(), value.to_vec());
        drop(t);
        self.changed.notify_all();
        Ok(())
    }

    fn get(&self, key: &str, deadline: Instant) -> Result<Vec<u8>, StoreError> {
        check_sizes(key, None)?;
        let start = Instant::now();
        let mut t = self.lock();
        loop {
            if t.closed {
                return Err(StoreError::ShutDown);
            }
            if let Some(v) = t.entries.get(key) {
                return Ok(v.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(StoreError::Timeout {
                    key: key.to_owned(),
                    after: now - start,
                });
            }
            t = self
                .changed
                .wait_timeout(t, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn add(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        check_sizes(key, None)?;
        let mut t = self.lock();
        if t.closed {
            return Err(StoreError::ShutDown);
        }
        let old = match t.entries.get(key) {
            None => 0,
            Some(v) => std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| StoreError::NotACounter {
                    key: key.to_owned(),
                })?,
        };
        // Wrapping would silently corrupt a counter; saturating keeps it monotonic at the edge.
        let new = old.saturating_add(delta);
        t.entries
            .insert(key.to_owned(), new.to_string().into_bytes());
        drop(t);
        self.changed.notify_all();
        Ok(new)
    }
}
