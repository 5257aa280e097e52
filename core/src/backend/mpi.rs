//! The MPI backend's wiring: under `mpirun` (or when asked for) MPI carries the job, its own
//! collectives behind the dispatch wrapper, hora's ring over the MPI transport for the rest.

use crate::config::{Config, Controller};
use crate::error::Error;

use super::Connected;

/// Whether this build has the MPI backend.
pub(super) const ENABLED: bool = hora_mpi::ENABLED;

/// The MPI backend when the job asks for it (`HOROVOD_CONTROLLER=mpi`) or, with the `mpi`
/// feature built in, when `mpirun` started the job; `None` keeps TCP (+ shared memory).
pub(super) fn select(config: &Config) -> Result<Option<Connected>, Error> {
    let launcher = hora_mpi::env::launcher_from_env();
    let topo = config.topology;
    let bad = |reason: String| Error::InvalidConfig {
        var: "HOROVOD_CONTROLLER".to_owned(),
        value: "mpi".to_owned(),
        reason,
    };
    match config.tuning.controller {
        Controller::Tcp => Ok(None),
        Controller::Auto if !ENABLED || launcher.is_none() || topo.size < 2 => Ok(None),
        Controller::Mpi if !ENABLED => Err(bad(
            "this build of hora has no MPI transport: rebuild with `--features mpi` (needs an \
             MPI library, e.g. libopenmpi-dev, and libclang-dev), or unset HOROVOD_CONTROLLER \
             to use TCP"
                .to_owned(),
        )),
        Controller::Mpi if launcher.is_none() => Err(bad(
            "the MPI transport needs the job started by mpirun (`horovodrun --mpi ...` or \
             `mpirun -np N ...`); this process has no OMPI_COMM_WORLD_SIZE or PMI_SIZE"
                .to_owned(),
        )),
        _ => connect(config).map(Some),
    }
}

#[cfg(not(feature = "mpi"))]
fn connect(_config: &Config) -> Result<Connected, Error> {
    unreachable!("select only connects over MPI when hora_mpi::ENABLED")
}

/// Starts MPI and checks that it sees the job the launcher's variables describe.
#[cfg(feature = "mpi")]
fn connect(config: &Config) -> Result<Connected, Error> {
    use std::sync::Arc;

    use hora_mpi::{MpiCollectives, MpiTransport};
    use hora_transport::Transport;

    use crate::collectives::Dispatch;

    let topo = config.topology;
    let fail = super::rendezvous_err(config);
    let t =
        MpiTransport::world().map_err(|e| fail(format!("cannot start the MPI transport: {e}")))?;
    if (t.rank(), t.size()) != (topo.rank, topo.size) {
        return Err(fail(format!(
            "MPI says this is rank {} of {}, but the launcher's variables say rank {} of {}",
            t.rank(),
            t.size(),
            topo.rank,
            topo.size
        )));
    }
    let t = Arc::new(t);
    let native = Box::new(MpiCollectives::new(t.clone()));
    let dyn_t: Arc<dyn Transport> = t;
    Ok(Connected {
        collectives: Box::new(Dispatch::new(native, super::flat(config, dyn_t.clone()))),
        transport: dyn_t,
        store: None,
        name: "mpi",
        keep_alive: super::KeepAlive::default(),
    })
}
