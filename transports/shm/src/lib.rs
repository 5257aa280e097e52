//! # hora-shm: ranks on one host, through shared memory
//!
//! ## Design overview
//! Ranks on the same host map each other's memory and run collectives through it, so data
//! moves at memory speed with no kernel copies. [`ShmGroup::connect`] sets a group up: every
//! rank creates one anonymous segment (memfd), the ranks swap the descriptors over abstract
//! unix sockets and map all segments; nothing has a file-system name, so no segment outlives
//! the last process using it, however the processes end (`kill -9` included). A dead peer is
//! seen within milliseconds through the hang-up of the socket each pair keeps open.
//!
//! [`ShmGroup::allreduce`] is the fast path: each rank reduces its share of every pipeline
//! step straight from its peers' segments (see `allreduce.rs`). Waits spin briefly, then
//! yield, then sleep on a futex, so jobs with more ranks than cores still run well.
//!
//! [`ShmGroup::broadcast`], [`ShmGroup::allgatherv`] and [`ShmGroup::barrier`] use the same
//! pipeline with one copy in and one copy out per byte.
//!
//! [`ShmTransport`] implements [`hora_transport::Transport`] (tagged point-to-point messages)
//! over one byte ring per ordered pair in the same segments, and passes the shared
//! conformance table.
//!
//! [`ShmGroup`] also implements [`hora_transport::Collectives`], reducing with the contract's
//! kernels; it runs every collective but alltoall (see `collectives.rs`).
//!
//! What this crate does *not* do: choose when to be used (`hora`'s `backend` module does),
//! or talk to other hosts.

mod allreduce;
mod collectives;
mod gather;
mod group;
mod sys;
mod transport;

#[cfg(test)]
mod tests;

pub use group::{ShmConfig, ShmGroup};
pub use transport::ShmTransport;

/// A job name for tests and tools: unique per call within this host.
pub fn unique_job_name(prefix: &str) -> String {
    let mut r = [0u8; 8];
    // A clock-based fallback is fine: the name only has to differ between concurrent jobs.
    if getrandom::fill(&mut r).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        r = t.to_le_bytes();
    }
    format!(
        "{prefix}/{}/{:016x}",
        std::process::id(),
        u64::from_le_bytes(r)
    )
}
