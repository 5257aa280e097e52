//! The collectives conformance table (`hora::collectives::conformance`) for every transport
//! and native implementation this crate builds: ranks are threads of this process; the TCP
//! ranks talk over real loopback sockets and the shared-memory ranks through real segments.

use std::sync::Arc;
use std::time::Duration;

use hora::collectives::conformance::{Member, Options};
use hora::collectives::{Collectives, Dispatch, Ring};
use hora_shm::{ShmConfig, ShmTransport, unique_job_name};
use hora_tcp::{MemoryDirectory, TcpConfig, TcpTransport};
use hora_transport::{LocalTransport, Transport};

/// A ring over `t`, with `abort` reaching the transport.
fn ring_member<T: Transport + 'static>(t: Arc<T>, ring: impl FnOnce(Ring<T>) -> Ring<T>) -> Member {
    let c: Arc<dyn Collectives> = Arc::new(ring(Ring::new(t.clone())));
    Member::new(c, move |reason| t.abort(reason))
}

/// The in-process transport, default segments.
mod local {
    use super::*;

    fn job(n: usize) -> Vec<Member> {
        LocalTransport::create(n)
            .into_iter()
            .map(|t| ring_member(Arc::new(t), |r| r))
            .collect()
    }

    hora::collectives_conformance!(job);
}

/// The in-process transport with small segments and no recursive doubling: every size past
/// 4 KiB takes the pipelined ring paths.
mod local_small_segments {
    use super::*;

    fn job(n: usize) -> Vec<Member> {
        LocalTransport::create(n)
            .into_iter()
            .map(|t| {
                ring_member(Arc::new(t), |r| {
                    r.with_segment_bytes(4096).with_small_allreduce_bytes(0)
                })
            })
            .collect()
    }

    hora::collectives_conformance!(job);
}

/// The ring over TCP: one listener per rank on 127.0.0.1, authenticated connections.
mod tcp {
    use super::*;

    fn job(n: usize) -> Vec<Member> {
        let dir = MemoryDirectory::new();
        (0..n)
            .map(|rank| {
                let t = TcpTransport::new(
                    TcpConfig::new(rank, n, b"collectives-conformance".to_vec()),
                    dir.clone() as Arc<_>,
                )
                .expect("start a TCP rank");
                ring_member(Arc::new(t), |r| r)
            })
            .collect()
    }

    hora::collectives_conformance!(job);
}

/// Connects `n` shared-memory ranks (each blocks until all are there, so one thread each).
fn shm_transports(n: usize) -> Vec<ShmTransport> {
    let job = unique_job_name("hora-coll-conformance");
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|r| {
                let job = job.clone();
                s.spawn(move || {
                    let mut c = ShmConfig::new(r, n, job);
                    c.connect_timeout = Duration::from_secs(60);
                    // Small slices and rings: big buffers wrap around them many times.
                    c.slice_bytes = 16 << 10;
                    c.ring_bytes = 64 << 10;
                    ShmTransport::connect(&c).expect("start a shared-memory rank")
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The ring over `ShmTransport` (point-to-point byte rings in shared memory).
mod shm_ring {
    use super::*;

    fn job(n: usize) -> Vec<Member> {
        shm_transports(n)
            .into_iter()
            .map(|t| ring_member(Arc::new(t), |r| r))
            .collect()
    }

    hora::collectives_conformance!(job);
}

/// The native shared-memory collectives (what the engine runs on one host), with alltoall over
/// `ShmTransport`. A dead rank's name reaches every rank through the segment headers (not
/// through `ShmTransport`'s errors, so alltoall is held to the ring's rule).
mod shm_native {
    use super::*;

    fn job(n: usize) -> Vec<Member> {
        shm_transports(n)
            .into_iter()
            .map(|t| {
                let t = Arc::new(t);
                let group = t.group().clone();
                let ring = Ring::new(t.clone() as Arc<dyn Transport>)
                    .with_segment_bytes(hora::collectives::DEFAULT_SEGMENT_BYTES);
                let c: Arc<dyn Collectives> = Arc::new(Dispatch::new(Box::new(group), ring));
                Member::new(c, move |reason| t.abort(reason))
            })
            .collect()
    }

    hora::collectives_conformance!(
        job,
        Options {
            all_name_the_dead_rank: &[
                "allreduce",
                "allgatherv",
                "broadcast",
                "reducescatter",
                "barrier"
            ],
            ..Options::default()
        }
    );
}
