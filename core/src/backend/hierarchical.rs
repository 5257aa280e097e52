//! Hierarchical wiring for jobs that span hosts with several ranks on each: the ranks swap
//! their places, agree on a [`Layout`], and each host's ranks set up a shared-memory group;
//! the [`Hierarchical`] algorithm itself lives in `collectives/`.

use std::sync::Arc;

use hora_transport::Transport;

use super::{flat, shm};
use crate::collectives::{
    Collectives, DEFAULT_PIPELINE_BYTES, Dispatch, Hierarchical, Layout, Place, SubTransport,
};
use crate::config::Config;
use crate::error::Error;
use crate::rendezvous::Store;

/// Sequence number of the one-off exchange of host layouts (never reached by the engine's
/// own numbering, so its tag cannot meet an engine collective's).
const PLACES_SEQ: u64 = (1 << 56) - 1;

/// Hierarchical collectives when the job spans hosts with several ranks on each; `None`
/// keeps the flat ring, saying why when the user asked for hierarchical.
pub(super) fn build(
    config: &Config,
    transport: &Arc<dyn Transport>,
    store: &dyn Store,
    prefix: &str,
) -> Result<Option<Box<dyn Collectives>>, Error> {
    let topo = config.topology;
    let t = &config.tuning;
    let rank = topo.rank;
    let (ar, ag) = (t.hierarchical_allreduce, t.hierarchical_allgather);
    let asked = ar == Some(true) || ag == Some(true);
    let (want_ar, want_ag) = (ar != Some(false), ag != Some(false));
    let flat_because = |reason: &str| {
        if asked && rank == 0 {
            tracing::warn!(
                "HOROVOD_HIERARCHICAL_ALLREDUCE/ALLGATHER asked for, but running flat: {reason}"
            );
        } else {
            tracing::debug!(rank, "flat collectives: {reason}");
        }
    };
    if topo.size == 1 || !(want_ar || want_ag) {
        return Ok(None);
    }
    if !t.shm {
        flat_because("hierarchical collectives need shared memory inside a host (HOROVOD_SHM=0)");
        return Ok(None);
    }
    let layout = match exchange_layout(config, transport)? {
        Ok(l) => l,
        Err(reason) => {
            flat_because(&reason);
            return Ok(None);
        }
    };
    if layout.hosts() < 2 || layout.local_size() < 2 {
        flat_because(&format!(
            "{} host(s) × {} rank(s) each: nothing to gain",
            layout.hosts(),
            layout.local_size()
        ));
        return Ok(None);
    }
    let (host, local_rank) = layout.place_of(rank);
    let sub = |members: Vec<usize>| -> Result<Arc<dyn Transport>, Error> {
        SubTransport::new(transport.clone(), members)
            .map(|s| Arc::new(s) as Arc<dyn Transport>)
            .ok_or(Error::Bug(format!(
                "rank {rank} is missing from its own hierarchical group"
            )))
    };
    let local = shm::host_group(
        config,
        store,
        &format!("{prefix}shm-job/host{host}"),
        local_rank,
        layout.local_size(),
        sub(layout.host_ranks(host))?,
    )?;
    let cross = flat(config, sub(layout.cross_ranks(local_rank))?);
    let pipeline = pipeline_bytes(config, &layout);
    if rank == 0 {
        tracing::info!(
            hosts = layout.hosts(),
            local_size = layout.local_size(),
            allreduce = want_ar,
            allgather = want_ag,
            mode = ?t.hierarchical_mode,
            pipeline_bytes = pipeline,
            "hierarchical collectives: shared memory inside each host, rings across hosts"
        );
    }
    let hierarchical = Hierarchical::new(layout, rank, Box::new(local), Box::new(cross))
        .with_ops(want_ar, want_ag)
        .with_mode(t.hierarchical_mode)
        .with_pipeline_bytes(pipeline)
        .local_errors_name_local_ranks();
    Ok(Some(Box::new(Dispatch::new(
        Box::new(hierarchical),
        flat(config, transport.clone()),
    ))))
}

/// Every rank's place, swapped over the flat ring; the layout, or why there is none (hosts
/// with different numbers of ranks).
fn exchange_layout(
    config: &Config,
    transport: &Arc<dyn Transport>,
) -> Result<Result<Layout, String>, Error> {
    let topo = config.topology;
    // Every rank gets here (the conditions that lead here are the job's settings, the same on
    // every rank), so every rank takes part in this exchange, and all reach the same decision.
    let ring = flat(config, transport.clone());
    let me = Place {
        local_rank: topo.local_rank as u32,
        local_size: topo.local_size as u32,
        cross_rank: topo.cross_rank as u32,
        cross_size: topo.cross_size as u32,
    };
    let mut all = vec![0u8; Place::BYTES * topo.size];
    let deadline = hora_transport::deadline_after(config.tuning.connect_timeout);
    ring.allgatherv(
        &me.to_bytes(),
        &mut all,
        &vec![Place::BYTES; topo.size],
        PLACES_SEQ,
        deadline,
    )
    .map_err(|e| Error::Rendezvous {
        rank: topo.rank,
        detail: format!(
            "exchanging host layouts for hierarchical collectives \
             (HOROVOD_HIERARCHICAL_ALLREDUCE=0 HOROVOD_HIERARCHICAL_ALLGATHER=0 skips it): {e}"
        ),
    })?;
    let places: Vec<Place> = all
        .chunks_exact(Place::BYTES)
        .map(|c| Place::from_bytes(c.try_into().expect("Place::BYTES")))
        .collect();
    Ok(Layout::from_places(&places))
}

/// The pipelined allreduce runs a helper thread beside each rank's own; measured on a 2-core
/// VM at 2 x 2 ranks it gains 25% when the link is the limit but loses 20-40% when the ranks
/// already compete for cores, so by default it needs a core per thread.
fn pipeline_bytes(config: &Config, layout: &Layout) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    config
        .tuning
        .hierarchical_pipeline_bytes
        .unwrap_or(if cores >= 2 * layout.local_size() {
            DEFAULT_PIPELINE_BYTES
        } else {
            0
        })
}
