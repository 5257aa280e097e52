//! The rendezvous store: a small key-value table ranks use to find each other.
//!
//! The launcher (or rank 0 under foreign launchers) runs a [`StoreServer`]; every rank opens one
//! [`StoreClient`] to it, publishes its listening address with [`Store::set`], waits for its
//! peers' addresses with [`Store::get`], and counts arrivals with [`Store::add`]. Tests use the
//! in-process [`MemoryStore`], which has the same semantics.
//!
//! This module does not replicate, persist, expire or delete keys: a store lives exactly as long
//! as one job.
//!
//! ## Security
//! Every connection first runs `hora_transport::handshake` with [`Purpose::Store`](hora_transport::handshake::Purpose::Store):
//! both sides prove they hold the job secret before a single store byte is exchanged. Strangers
//! are refused (and logged with their address, never the secret).
//!
//! ## Wire protocol (after the handshake; integers little-endian)
//! ```text
//! request  = op:u8  key_len:u32  key:[key_len]  body
//!   op 1 SET  body = value_len:u32 value:[value_len]
//!   op 2 GET  body = wait_ms:u64          (server waits up to wait_ms for the key to appear)
//!   op 3 ADD  body = delta:i64
//! response = status:u8  len:u32  payload:[len]
//!   status 0 OK           payload = value (GET), empty (SET), new counter as i64 (ADD)
//!   status 1 TIMEOUT      payload empty (GET only: the key did not appear in time)
//!   status 2 TOO_LARGE    payload = UTF-8 reason; the server then closes the connection
//!   status 3 NOT_COUNTER  payload = UTF-8 reason (ADD on a value that is not a decimal integer)
//!   status 4 BAD_REQUEST  payload = UTF-8 reason; the server then closes the connection
//!   status 5 SHUTDOWN     payload empty: the server is stopping
//! ```
//! One request is in flight per connection; a GET's wait happens on the server, so it costs a
//! single round trip. Keys are UTF-8 of at most [`MAX_KEY_LEN`] bytes; values are at most
//! [`MAX_VALUE_LEN`] bytes. Counters are stored as ASCII decimal, so `get` of a counter key
//! returns e.g. `b"3"`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

mod client;
mod memory;
mod server;
mod wire;

pub use client::StoreClient;
pub use memory::MemoryStore;
pub use server::StoreServer;

/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 4 * 1024;
/// Longest value accepted, in bytes.
pub const MAX_VALUE_LEN: usize = 16 * 1024 * 1024;
/// Handshake id used by clients that are not ranks (the launcher, tools).
pub const LAUNCHER_ID: u64 = u64::MAX;
/// Handshake id the store server presents to its clients.
pub const SERVER_ID: u64 = u64::MAX - 1;

/// A small key-value store ranks use to find each other.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Stores `value` under `key`, replacing any previous value and waking its waiters.
    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Waits until `key` exists (or the deadline passes → StoreError::Timeout naming the key).
    fn get(&self, key: &str, deadline: Instant) -> Result<Vec<u8>, StoreError>;
    /// Atomically adds `delta` to a counter (missing = 0) and returns the new value.
    fn add(&self, key: &str, delta: i64) -> Result<i64, StoreError>;
}

/// Why a store operation failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached.
    #[error("cannot connect to the rendezvous store at {addr}: {source}")]
    Connect {
        /// The store's address.
        addr: SocketAddr,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// The store and this process do not share the job secret (or the peer is not a hora store).
    #[error(
        "the rendezvous store at {addr} refused us or is not a hora store ({detail}); \
         check that HOROVOD_SECRET_KEY is the job's secret"
    )]
    Auth {
        /// The store's address.
        addr: SocketAddr,
        /// What went wrong in the handshake (never contains the secret).
        detail: String,
    },
    /// `get` gave up before the key appeared.
    #[error("timed out after {after:?} waiting for rendezvous key {key:?}")]
    Timeout {
        /// The key that never appeared.
        key: String,
        /// How long we waited.
        after: Duration,
    },
    /// The connection to the store failed mid-operation.
    #[error("rendezvous store connection to {addr} failed: {source}")]
    Io {
        /// The store's address.
        addr: SocketAddr,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// A key or value is over the store's limits.
    #[error("rendezvous {what} is {len} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// `"key"` or `"value"`.
        what: &'static str,
        /// The offending length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// `add` was called on a key whose value is not a decimal integer.
    #[error("rendezvous key {key:?} holds a value that is not a counter")]
    NotACounter {
        /// The key.
        key: String,
    },
    /// The store is shutting down.
    #[error("the rendezvous store is shutting down")]
    ShutDown,
    /// The other side broke the protocol.
    #[error("rendezvous store protocol error: {detail}")]
    Protocol {
        /// What was wrong.
        detail: String,
    },
}

/// Checks a key and value against the store's limits.
fn check_sizes(key: &str, value: Option<&[u8]>) -> Result<(), StoreError> {
    if key.len() > MAX_KEY_LEN {
        return Err(StoreError::TooLarge {
            what: "key",
            len: key.len(),
            limit: MAX_KEY_LEN,
        });
    }
    if let Some(v) = value
        && v.len() > MAX_VALUE_LEN
    {
        return Err(StoreError::TooLarge {
            what: "value",
            len: v.len(),
            limit: MAX_VALUE_LEN,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
