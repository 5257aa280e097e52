//! Picks and builds this rank's transport from the configuration: the only file that names
//! concrete transports.

use std::sync::Arc;
use std::time::Instant;

use hora_shm::{ShmConfig, ShmGroup, ShmTransport};
use hora_tcp::{PeerDirectory, TcpConfig, TcpTransport};
use hora_transport::{LocalTransport, Rank, Transport, TransportError};

use crate::collectives::{
    Collectives, DEFAULT_PIPELINE_BYTES, Hierarchical, Layout, Place, Ring, ShmCollectives,
    SubTransport,
};
use crate::config::{Config, Controller};
use crate::error::Error;
use crate::rendezvous::{Store, StoreClient, StoreError, StoreServer};

/// Publishes and finds rank addresses through the job's rendezvous store.
#[derive(Debug)]
pub struct StoreDirectory {
    store: Arc<dyn Store>,
    prefix: String,
}

impl StoreDirectory {
    /// Wraps a store; keys are `<prefix>addr/<rank>`.
    pub fn new(store: Arc<dyn Store>, prefix: &str) -> Self {
        Self {
            store,
            prefix: prefix.to_string(),
        }
    }
}

impl PeerDirectory for StoreDirectory {
    fn publish(&self, rank: Rank, addr: std::net::SocketAddr) -> Result<(), String> {
        let key = format!("{}addr/{rank}", self.prefix);
        self.store
            .set(&key, addr.to_string().as_bytes())
            .map_err(|e| e.to_string())
    }

    fn lookup(&self, rank: Rank, deadline: Instant) -> Result<std::net::SocketAddr, String> {
        let key = format!("{}addr/{rank}", self.prefix);
        let raw = self.store.get(&key, deadline).map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&raw);
        text.parse()
            .map_err(|e| format!("rank {rank} published a bad address {text:?}: {e}"))
    }
}

/// What `connect` built: the transport and the store it rendezvoused through.
#[derive(Debug)]
pub struct Connected {
    /// The rank's transport.
    pub transport: Arc<dyn Transport>,
    /// The rendezvous store (absent for a one-rank job).
    pub store: Option<Arc<dyn Store>>,
    /// Which transport was chosen, for logs and `--check-build`.
    pub name: &'static str,
    /// Native collectives to run data operations on instead of the ring over `transport`
    /// (shared memory when every rank is on this host).
    pub collectives: Option<Box<dyn Collectives>>,
}

/// Builds the transport for this rank; `generation` separates repeated inits in one job.
pub fn connect(config: &Config, generation: u64) -> Result<Connected, Error> {
    if let Some(connected) = select_mpi(config)? {
        return Ok(connected);
    }
    let topo = config.topology;
    let Some(rdv) = &config.rendezvous else {
        let t = LocalTransport::create(1).pop().expect("one rank");
        return Ok(Connected {
            transport: Arc::new(t),
            store: None,
            name: "local",
            collectives: None,
        });
    };
    let rank = topo.rank;
    let rendezvous_err = |detail: String| Error::Rendezvous { rank, detail };
    if rdv.secret_derived && rank == 0 {
        tracing::warn!(
            "no HOROVOD_SECRET_KEY: the job secret is derived from the launcher's variables, so \
             this job is only as safe as its network; export a random HOROVOD_SECRET_KEY to every rank"
        );
    }
    // Under mpirun, torchrun or srun nobody serves the store but rank 0.
    let server = if rdv.serve_store && rank == 0 {
        let s = StoreServer::start(rdv.store, rdv.secret.clone()).map_err(|e| {
            rendezvous_err(format!(
                "rank 0 cannot serve the rendezvous store at {} (HORA_STORE_ADDR / MASTER_ADDR, \
                 HORA_STORE_PORT / MASTER_PORT): {e}",
                rdv.store
            ))
        })?;
        tracing::debug!(addr = %s.addr(), "rank 0 serves the rendezvous store");
        Some(s)
    } else {
        None
    };
    let client = connect_store(config, rdv.serve_store)
        .map_err(|e| rendezvous_err(format!("cannot reach the store at {}: {e}", rdv.store)))?;
    let store: Arc<dyn Store> = Arc::new(client);
    let prefix = format!("hora/{generation}/");
    let directory = Arc::new(StoreDirectory::new(store.clone(), &prefix));
    let mut tcp = TcpConfig::new(rank, topo.size, rdv.secret.clone());
    tcp.bind_ip = rdv.bind_ip;
    tcp.connect_timeout = config.tuning.connect_timeout;
    tcp.spin = config.tuning.spin;
    tcp.peer_timeout = config.tuning.peer_timeout;
    tcp.sockbuf = config.tuning.tcp_sockbuf;
    let transport = TcpTransport::new(tcp, directory)
        .map_err(|e| rendezvous_err(format!("cannot start the TCP transport: {e}")))?;
    connect_to_coordinator(config, &transport)?;

    // Wait until every rank is up, so a missing rank is reported here, by count, and not as
    // a hang in the first collective.
    let arrived = store
        .add(&format!("{prefix}arrived"), 1)
        .map_err(|e| rendezvous_err(format!("store: {e}")))?;
    let all_key = format!("{prefix}all-arrived");
    if arrived as usize == topo.size {
        store
            .set(&all_key, b"1")
            .map_err(|e| rendezvous_err(format!("store: {e}")))?;
    }
    let deadline = hora_transport::deadline_after(config.tuning.connect_timeout);
    store.get(&all_key, deadline).map_err(|e| {
        let now = store.add(&format!("{prefix}arrived"), 0).unwrap_or(-1);
        rendezvous_err(format!(
            "only {now} of {} ranks arrived within {:?} (HOROVOD_GLOO_TIMEOUT_SECONDS): {e}",
            topo.size, config.tuning.connect_timeout
        ))
    })?;
    let (transport, collectives, name): (Arc<dyn Transport>, _, _) =
        if config.tuning.shm && topo.size > 1 && topo.local_size == topo.size {
            let group = ShmGroup::connect(&shm_config(
                config,
                &*store,
                &format!("{prefix}shm-job"),
                rank,
                topo.size,
            )?)
            .map_err(shm_err(rank))?;
            // Control messages (negotiation, abort notices) and the pairwise exchanges take
            // the shared-memory transport too: over loopback TCP each hop costs a socket
            // wake-up, which made up most of a small allreduce's time through the engine.
            let control = ShmTransport::connect(&shm_config(
                config,
                &*store,
                &format!("{prefix}shm-ctl"),
                rank,
                topo.size,
            )?)
            .map_err(shm_err(rank))?;
            let control: Arc<dyn Transport> = Arc::new(Keeping {
                inner: control,
                _server: server,
            });
            drop(transport);
            let c = ShmCollectives::with_transport(
                Arc::new(group),
                control.clone(),
                config.tuning.segment_bytes,
            );
            (control, Some(Box::new(c) as Box<dyn Collectives>), "shm")
        } else {
            let transport: Arc<dyn Transport> = Arc::new(Keeping {
                inner: transport,
                _server: server,
            });
            match hierarchical(config, &transport, &*store, &prefix)? {
                Some(h) => (
                    transport,
                    Some(Box::new(h) as Box<dyn Collectives>),
                    "tcp+shm hierarchical",
                ),
                None => (transport, None, "tcp"),
            }
        };
    Ok(Connected {
        transport,
        store: Some(store),
        name,
        collectives,
    })
}

/// Sequence number of the one-off exchange of host layouts (never reached by the engine's
/// own numbering, so its tag cannot meet an engine collective's).
const PLACES_SEQ: u64 = (1 << 56) - 1;

/// Hierarchical collectives when the job spans hosts with several ranks on each
/// (`collectives/hierarchical.rs`); `None` keeps the flat ring, saying why when the user
/// asked for hierarchical.
fn hierarchical(
    config: &Config,
    transport: &Arc<dyn Transport>,
    store: &dyn Store,
    prefix: &str,
) -> Result<Option<Hierarchical>, Error> {
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
    // Every rank gets here (the conditions above are the job's settings, the same on every
    // rank), so every rank takes part in this exchange, and all reach the same decision.
    let flat = Ring::new(transport.clone()).with_segment_bytes(t.segment_bytes);
    let me = Place {
        local_rank: topo.local_rank as u32,
        local_size: topo.local_size as u32,
        cross_rank: topo.cross_rank as u32,
        cross_size: topo.cross_size as u32,
    };
    let mut all = vec![0u8; Place::BYTES * topo.size];
    let deadline = hora_transport::deadline_after(t.connect_timeout);
    flat.allgatherv(
        &me.to_bytes(),
        &mut all,
        &vec![Place::BYTES; topo.size],
        PLACES_SEQ,
        deadline,
    )
    .map_err(|e| Error::Rendezvous {
        rank,
        detail: format!(
            "exchanging host layouts for hierarchical collectives \
             (HOROVOD_HIERARCHICAL_ALLREDUCE=0 HOROVOD_HIERARCHICAL_ALLGATHER=0 skips it): {e}"
        ),
    })?;
    let places: Vec<Place> = all
        .chunks_exact(Place::BYTES)
        .map(|c| Place::from_bytes(c.try_into().expect("Place::BYTES")))
        .collect();
    let layout = match Layout::from_places(&places) {
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
    let group = ShmGroup::connect(&shm_config(
        config,
        store,
        &format!("{prefix}shm-job/host{host}"),
        local_rank,
        layout.local_size(),
    )?)
    .map_err(shm_err(rank))?;
    let local = ShmCollectives::with_transport(
        Arc::new(group),
        sub(layout.host_ranks(host))?,
        t.segment_bytes,
    );
    let cross = Ring::new(sub(layout.cross_ranks(local_rank))?).with_segment_bytes(t.segment_bytes);
    // The pipelined allreduce runs a helper thread beside each rank's own; measured on a
    // 2-core VM at 2 x 2 ranks it gains 25% when the link is the limit but loses 20-40% when
    // the ranks already compete for cores, so by default it needs a core per thread.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let pipeline = t
        .hierarchical_pipeline_bytes
        .unwrap_or(if cores >= 2 * layout.local_size() {
            DEFAULT_PIPELINE_BYTES
        } else {
            0
        });
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
    Ok(Some(
        Hierarchical::new(layout, Box::new(local), Box::new(cross), Box::new(flat))
            .with_ops(want_ar, want_ag)
            .with_mode(t.hierarchical_mode)
            .with_pipeline_bytes(pipeline)
            .local_errors_name_local_ranks(),
    ))
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
    let job_rank = config.topology.rank;
    let deadline = hora_transport::deadline_after(config.tuning.connect_timeout);
    let job = if rank == 0 {
        let job = hora_shm::unique_job_name("hora");
        store
            .set(key, job.as_bytes())
            .map_err(|e| Error::Rendezvous {
                rank: job_rank,
                detail: format!("store: {e}"),
            })?;
        job
    } else {
        let raw = store.get(key, deadline).map_err(|e| Error::Rendezvous {
            rank: job_rank,
            detail: format!("rank 0 did not share the shared-memory job name: {e}"),
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

/// The MPI transport when the job asks for it (`HOROVOD_CONTROLLER=mpi`) or, with the `mpi`
/// feature built in, when `mpirun` started the job; `None` keeps TCP (+ shared memory).
fn select_mpi(config: &Config) -> Result<Option<Connected>, Error> {
    let launcher = hora_mpi::env::launcher_from_env();
    let topo = config.topology;
    let bad = |reason: String| Error::InvalidConfig {
        var: "HOROVOD_CONTROLLER".to_owned(),
        value: "mpi".to_owned(),
        reason,
    };
    match config.tuning.controller {
        Controller::Tcp => Ok(None),
        Controller::Auto if !hora_mpi::ENABLED || launcher.is_none() || topo.size < 2 => Ok(None),
        Controller::Mpi if !hora_mpi::ENABLED => Err(bad(
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
        _ => connect_mpi(config).map(Some),
    }
}

#[cfg(not(feature = "mpi"))]
fn connect_mpi(_config: &Config) -> Result<Connected, Error> {
    unreachable!("select_mpi only connects over MPI when hora_mpi::ENABLED")
}

/// Starts MPI and checks that it sees the job the launcher's variables describe.
#[cfg(feature = "mpi")]
fn connect_mpi(config: &Config) -> Result<Connected, Error> {
    use crate::collectives::MpiCollectives;
    let topo = config.topology;
    let fail = |detail: String| Error::Rendezvous {
        rank: topo.rank,
        detail,
    };
    let t = hora_mpi::MpiTransport::world()
        .map_err(|e| fail(format!("cannot start the MPI transport: {e}")))?;
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
    Ok(Connected {
        transport: t.clone(),
        store: None,
        name: "mpi",
        collectives: Some(Box::new(MpiCollectives::new(
            t,
            config.tuning.segment_bytes,
        ))),
    })
}

/// Every rank but 0 connects to rank 0 before it counts as arrived, so once init is over
/// rank 0 holds a connection to every rank and sees any of them hang up at once, even one
/// that dies before its first collective (TCP connections are otherwise made on first use;
/// rank 0 then tells the others, as for any lost rank). Costs one connection per rank that
/// the first negotiation would have made anyway (on one host, where control messages take
/// shared memory, it goes away with the TCP transport after init: about a millisecond).
fn connect_to_coordinator(config: &Config, transport: &TcpTransport) -> Result<(), Error> {
    let rank = config.topology.rank;
    if rank == 0 {
        return Ok(());
    }
    let deadline = hora_transport::deadline_after(config.tuning.connect_timeout);
    transport
        .connect_to(0, deadline)
        .map_err(|e| Error::Rendezvous {
            rank,
            detail: format!(
                "cannot connect to rank 0, the coordinator (HOROVOD_GLOO_TIMEOUT_SECONDS): {e}"
            ),
        })
}

/// Connects to the store; when rank 0 serves it (foreign launchers), it may not be listening
/// yet, so a refused connection is retried until the connect budget is spent.
fn connect_store(config: &Config, retry: bool) -> Result<StoreClient, StoreError> {
    let rdv = config.rendezvous.as_ref().ok_or(StoreError::ShutDown)?;
    let deadline = hora_transport::deadline_after(config.tuning.connect_timeout);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match StoreClient::connect(
            rdv.store,
            &rdv.secret,
            config.topology.rank as u64,
            left.max(std::time::Duration::from_millis(100)),
        ) {
            Err(StoreError::Connect { .. }) if retry && Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// The engine's transport, holding what must live as long as it: rank 0's store server under a
/// foreign launcher (TCP peers look addresses up on first contact).
#[derive(Debug)]
struct Keeping<T> {
    inner: T,
    _server: Option<StoreServer>,
}

impl<T: Transport> Transport for Keeping<T> {
    fn rank(&self) -> Rank {
        self.inner.rank()
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
    fn progress(&self, ops: &mut [hora_transport::Op<'_>]) -> Result<bool, TransportError> {
        self.inner.progress(ops)
    }
    fn wait(
        &self,
        ops: &mut [hora_transport::Op<'_>],
        deadline: Instant,
    ) -> Result<(), TransportError> {
        self.inner.wait(ops, deadline)
    }
    fn send_msg(
        &self,
        peer: Rank,
        tag: hora_transport::Tag,
        msg: &[u8],
    ) -> Result<(), TransportError> {
        self.inner.send_msg(peer, tag, msg)
    }
    fn recv_msg(
        &self,
        from: Option<Rank>,
        tag: hora_transport::Tag,
        deadline: Instant,
    ) -> Result<Option<(Rank, Vec<u8>)>, TransportError> {
        self.inner.recv_msg(from, tag, deadline)
    }
    fn waker(&self) -> hora_transport::Waker {
        self.inner.waker()
    }
    fn abort(&self, reason: &str) {
        self.inner.abort(reason);
    }
    fn capabilities(&self) -> hora_transport::Capabilities {
        self.inner.capabilities()
    }
    fn register(&self, buf: &[u8]) -> Result<(), TransportError> {
        self.inner.register(buf)
    }
    fn send(
        &self,
        peer: Rank,
        tag: hora_transport::Tag,
        data: &[u8],
        deadline: Instant,
    ) -> Result<(), TransportError> {
        self.inner.send(peer, tag, data, deadline)
    }
    fn recv(
        &self,
        peer: Rank,
        tag: hora_transport::Tag,
        buf: &mut [u8],
        deadline: Instant,
    ) -> Result<(), TransportError> {
        self.inner.recv(peer, tag, buf, deadline)
    }
}
