//! The shared-memory backend's wiring, for jobs whose ranks all share this host and for the
//! host groups of hierarchical jobs: the group's name goes through the store, and the group's
//! native collectives sit behind the dispatch wrapper.

use std::sync::Arc;

use hora_shm::{ShmConfig, ShmGroup, ShmTransport};
use hora_transport::{Transport, TransportError};

use super::flat;
use crate::collectives::{Collectives, Dispatch};
use crate::config::Config;
use crate::error::Error;
use crate::rendezvous::Store;

/// A transport and the collectives run beside it.
type Wired = (Arc<dyn Transport>, Box<dyn Collectives>);

/// The whole job on this host: control messages (negotiation, abort notices) and the ring's
/// pairwise exchanges over [`ShmTransport`], every other collective over a [`ShmGroup`].
pub(super) fn connect(config: &Config, store: &dyn Store, prefix: &str) -> Result<Wired, Error> {
    let topo = config.topology;
    let (rank, size) = (topo.rank, topo.size);
    // Over loopback TCP each control hop costs a socket wake-up, which made up most of a
    // small allreduce's time through the engine.
    let control_cfg = shm_config(config, store, &format!("{prefix}shm-ctl"), rank, size)?;
    let control: Arc<dyn Transport> =
        Arc::new(ShmTransport::connect(&control_cfg).map_err(shm_err(rank))?);
    let key = format!("{prefix}shm-job");
    let collectives = host_group(config, store, &key, rank, size, control.clone())?;
    Ok((control, Box::new(collectives)))
}

/// The shared-memory collectives of one host's `local_size` ranks (this rank is `local_rank`
/// of them; the group's name is shared at `key`), falling back to a ring over `transport`,
/// which numbers the same ranks alike.
pub(super) fn host_group(
    config: &Config,
    store: &dyn Store,
    key: &str,
    local_rank: usize,
    local_size: usize,
    transport: Arc<dyn Transport>,
) -> Result<Dispatch<ShmGroup>, Error> {
    let cfg = shm_config(config, store, key, local_rank, local_size)?;
    let group = ShmGroup::connect(&cfg).map_err(shm_err(config.topology.rank))?;
    Ok(Dispatch::new(Box::new(group), flat(config, transport)))
}

/// Settings for the shared-memory group of the ranks of one host, where this rank is `rank` of
/// `size`. The group's rank 0 picks a fresh job name (the abstract-socket namespace is per
/// host, so it must not collide with another job's) and shares it through the store at `key`.
fn shm_config(
    config: &Config,
    store: &dyn Store,
    key: &str,
    rank: usize,
    size: usize,
) -> Result<ShmConfig, Error> {
    let fail = super::rendezvous_err(config);
    let deadline = hora_transport::deadline_after(config.tuning.connect_timeout);
    let job = if rank == 0 {
        let job = hora_shm::unique_job_name("hora");
        store
            .set(key, job.as_bytes())
            .map_err(|e| fail(format!("store: {e}")))?;
        job
    } else {
        let raw = store.get(key, deadline).map_err(|e| {
            fail(format!(
                "rank 0 did not share the shared-memory job name: {e}"
            ))
        })?;
        String::from_utf8_lossy(&raw).into_owned()
    };
    let mut cfg = ShmConfig::new(rank, size, job);
    cfg.connect_timeout = config.tuning.connect_timeout;
    cfg.spin = config.tuning.spin;
    Ok(cfg)
}

/// The error for a shared-memory group that could not be set up on job rank `rank`.
fn shm_err(rank: usize) -> impl Fn(TransportError) -> Error {
    move |e| Error::Rendezvous {
        rank,
        detail: format!(
            "cannot set up shared memory between the ranks of this host \
             (HOROVOD_SHM=0 turns it off): {e}"
        ),
    }
}
