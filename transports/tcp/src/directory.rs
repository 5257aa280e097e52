//! Where ranks find each other's listening addresses.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hora_transport::Rank;
use parking_lot::{Condvar, Mutex};

/// Publishes and finds the listening address of each rank (the rendezvous store in a real job).
pub trait PeerDirectory: Send + Sync + fmt::Debug {
    /// Publishes this rank's listening address.
    fn publish(&self, rank: Rank, addr: SocketAddr) -> Result<(), String>;
    /// Looks up a peer's address, waiting until it is published or the deadline passes.
    fn lookup(&self, rank: Rank, deadline: Instant) -> Result<SocketAddr, String>;
}

/// An in-process directory, for tests and single-process jobs.
#[derive(Debug, Default)]
pub struct MemoryDirectory {
    addrs: Mutex<HashMap<Rank, SocketAddr>>,
    published: Condvar,
}

impl MemoryDirectory {
    /// An empty directory, shared by all ranks of one job.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
}

impl PeerDirectory for MemoryDirectory {
    fn publish(&self, rank: Rank, addr: SocketAddr) -> Result<(), String> {
        self.addrs.lock().insert(rank, addr);
        self.published.notify_all();
        Ok(())
    }

    fn lookup(&self, rank: Rank, deadline: Instant) -> Result<SocketAddr, String> {
        let mut addrs = self.addrs.lock();
        loop {
            if let Some(addr) = addrs.get(&rank) {
                return Ok(*addr);
            }
            if self.published.wait_until(&mut addrs, deadline).timed_out()
                && !addrs.contains_key(&rank)
            {
                return Err(format!("rank {rank} did not publish its address in time"));
            }
        }
    }
}

#[cfg(test)]
mod tests;
