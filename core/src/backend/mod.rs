//! Backends: which ones this build has, which one a job runs on, and how each is wired up.
//! The only place in `core` that names concrete backends (`.ci/lint.sh` checks it).
//!
//! How a job picks (once, at init, from the [`Config`]): MPI when asked for or when `mpirun`
//! started a build that has it (`mpi.rs`); a one-rank job without a store gets the in-process
//! transport; everything else rendezvouses through the job's store and connects over TCP
//! (`tcp.rs`), then runs its collectives through shared memory when every rank is on this
//! host (`shm.rs`), or hierarchically when the job spans hosts with several ranks on each
//! (`hierarchical.rs`), or on hora's ring over TCP otherwise.
//!
//! Adding a backend (NCCL, verbs, a per-process-set backend): its crate implements
//! `hora_transport::Transport` (bytes) and, if it has collectives of its own,
//! `hora_transport::Collectives` with `runs()` saying which calls it takes; a file here wires
//! it from the configuration and wraps it as `Dispatch::new(native, ring)`, so argument checks
//! and the fallback to the ring come for free; `connect` below gets one more branch and
//! [`crate::build_info()`] one more row. See docs/engine.md.

mod hierarchical;
mod mpi;
mod shm;
mod tcp;

use std::sync::Arc;

use hora_transport::{LocalTransport, Transport};

use crate::collectives::{Collectives, Ring};
use crate::config::Config;
use crate::error::Error;
use crate::rendezvous::{Store, StoreServer};

pub use tcp::StoreDirectory;

/// Whether this build has the MPI backend (`--features mpi`).
pub const MPI_BUILT: bool = mpi::ENABLED;

/// The crates whose log lines `HOROVOD_LOG_LEVEL` governs (the engine, the backend contract,
/// and the TCP backend).
pub const LOG_TARGETS: [&str; 3] = ["hora", "hora_tcp", "hora_transport"];

/// What must live as long as the engine's transport, although nothing on the data path uses
/// it: rank 0's store server under a foreign launcher (TCP peers look addresses up on first
/// contact).
#[derive(Debug, Default)]
pub struct KeepAlive {
    _store_server: Option<StoreServer>,
}

/// What `connect` built: the transport, the collectives to run on it, and the store it
/// rendezvoused through.
#[derive(Debug)]
pub struct Connected {
    /// The rank's transport (control messages, and the ring's bytes).
    pub transport: Arc<dyn Transport>,
    /// The rendezvous store (absent for a one-rank job and under MPI).
    pub store: Option<Arc<dyn Store>>,
    /// Which backend was chosen, for logs and `--check-build`.
    pub name: &'static str,
    /// The collectives data operations run on: a native backend behind
    /// [`Dispatch`](crate::collectives::Dispatch), or hora's ring over `transport`.
    pub collectives: Box<dyn Collectives>,
    /// Keep this as long as `transport` is used.
    pub keep_alive: KeepAlive,
}

/// Builds this rank's backend; `generation` separates repeated inits in one job.
pub fn connect(config: &Config, generation: u64) -> Result<Connected, Error> {
    if let Some(connected) = mpi::select(config)? {
        return Ok(connected);
    }
    let Some(rdv) = &config.rendezvous else {
        return Ok(single_process(config));
    };
    let prefix = format!("hora/{generation}/");
    let (store, server) = tcp::rendezvous(config, rdv)?;
    let mut connected = wire(config, rdv, store, &prefix)?;
    connected.keep_alive = KeepAlive {
        _store_server: server,
    };
    Ok(connected)
}

/// Builds the backend of a process set among the ranks whose set-local numbering
/// `set_config.topology` gives, through the job's store (`store`, from the job's [`Connected`])
/// under its own `prefix`: its own connections, so a set's collectives never share a byte
/// stream or a waker with another set's, and the same choice of shared memory, hierarchy or
/// ring as a job of that shape would get.
pub fn connect_set(
    set_config: &Config,
    store: Option<&Arc<dyn Store>>,
    prefix: &str,
) -> Result<Connected, Error> {
    if set_config.topology.size == 1 {
        return Ok(single_process(set_config));
    }
    let (Some(rdv), Some(store)) = (&set_config.rendezvous, store) else {
        return Err(Error::InvalidArgument {
            rank: set_config.topology.rank,
            tensor: String::new(),
            detail: "process sets of more than one rank need the job's rendezvous store, which \
                     the MPI backend does not use (hora has no MPI sub-communicators yet): \
                     launch with horovodrun's default TCP backend (no --mpi, HOROVOD_MPI unset)"
                .into(),
        });
    };
    wire(set_config, rdv, store.clone(), prefix)
}

/// Connects the ranks of `config` over TCP through `store` and picks their collectives:
/// shared memory when they all share this host, hierarchical across hosts, the ring otherwise.
fn wire(
    config: &Config,
    rdv: &crate::config::Rendezvous,
    store: Arc<dyn Store>,
    prefix: &str,
) -> Result<Connected, Error> {
    let transport = tcp::connect(config, rdv, &store, prefix)?;
    let topo = config.topology;
    let t = &config.tuning;
    let (transport, collectives, name) = if t.shm && topo.size > 1 && topo.local_size == topo.size {
        let (control, collectives) = shm::connect(config, &*store, prefix)?;
        // The TCP transport only served the rendezvous: control messages take shared memory.
        drop(transport);
        (control, collectives, "shm")
    } else {
        let transport: Arc<dyn Transport> = Arc::new(transport);
        match hierarchical::build(config, &transport, &*store, prefix)? {
            Some(h) => (transport, h, "tcp+shm hierarchical"),
            None => (transport.clone(), ring(config, transport), "tcp"),
        }
    };
    Ok(Connected {
        transport,
        store: Some(store),
        name,
        collectives,
        keep_alive: KeepAlive::default(),
    })
}

/// A one-rank job without a store: the in-process transport.
fn single_process(config: &Config) -> Connected {
    let t: Arc<dyn Transport> = Arc::new(LocalTransport::create(1).pop().expect("one rank"));
    Connected {
        collectives: ring(config, t.clone()),
        transport: t,
        store: None,
        name: "local",
        keep_alive: KeepAlive::default(),
    }
}

/// hora's ring over `transport` with the configured segment size.
fn ring(config: &Config, transport: Arc<dyn Transport>) -> Box<dyn Collectives> {
    Box::new(flat(config, transport))
}

/// The flat ring a native backend falls back to.
fn flat(config: &Config, transport: Arc<dyn Transport>) -> Ring<dyn Transport> {
    Ring::new(transport).with_segment_bytes(config.tuning.segment_bytes)
}

/// The error for rendezvous failures on this rank.
fn rendezvous_err(config: &Config) -> impl Fn(String) -> Error + '_ {
    move |detail| Error::Rendezvous {
        rank: config.topology.rank,
        detail,
    }
}
