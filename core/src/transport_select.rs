//! Picks and builds this rank's transport from the configuration: the only file that names
//! concrete transports.

use std::sync::Arc;
use std::time::Instant;

use hora_shm::{ShmConfig, ShmGroup};
use hora_tcp::{PeerDirectory, TcpConfig, TcpTransport};
use hora_transport::{LocalTransport, Rank, Transport};

use crate::collectives::{Collectives, ShmCollectives};
use crate::config::Config;
use crate::error::Error;
use crate::rendezvous::{Store, StoreClient};

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
    let client = StoreClient::connect(
        rdv.store,
        &rdv.secret,
        rank as u64,
        config.tuning.connect_timeout,
    )
    .map_err(|e| rendezvous_err(format!("cannot reach the store at {}: {e}", rdv.store)))?;
    let store: Arc<dyn Store> = Arc::new(client);
    let prefix = format!("hora/{generation}/");
    let directory = Arc::new(StoreDirectory::new(store.clone(), &prefix));
    let mut tcp = TcpConfig::new(rank, topo.size, rdv.secret.clone());
    tcp.bind_ip = rdv.bind_ip;
    tcp.connect_timeout = config.tuning.connect_timeout;
    tcp.spin = config.tuning.spin;
    let transport = TcpTransport::new(tcp, directory)
        .map_err(|e| rendezvous_err(format!("cannot start the TCP transport: {e}")))?;

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
    let transport: Arc<dyn Transport> = Arc::new(transport);
    let collectives = if config.tuning.shm && topo.size > 1 && topo.local_size == topo.size {
        let group = shm_group(config, &*store, &prefix)?;
        Some(Box::new(ShmCollectives::with_transport(
            group,
            transport.clone(),
            config.tuning.segment_bytes,
        )) as Box<dyn Collectives>)
    } else {
        None
    };
    Ok(Connected {
        transport,
        store: Some(store),
        name: if collectives.is_some() {
            "tcp+shm"
        } else {
            "tcp"
        },
        collectives,
    })
}

/// Sets up the shared-memory group of a job whose ranks all run on this host. Rank 0 picks a
/// fresh job name (the abstract-socket namespace is per host, so it must not collide with
/// another job's) and shares it through the store.
fn shm_group(config: &Config, store: &dyn Store, prefix: &str) -> Result<ShmGroup, Error> {
    let topo = config.topology;
    let rank = topo.rank;
    let key = format!("{prefix}shm-job");
    let deadline = hora_transport::deadline_after(config.tuning.connect_timeout);
    let job = if rank == 0 {
        let job = hora_shm::unique_job_name("hora");
        store
            .set(&key, job.as_bytes())
            .map_err(|e| Error::Rendezvous {
                rank,
                detail: format!("store: {e}"),
            })?;
        job
    } else {
        let raw = store.get(&key, deadline).map_err(|e| Error::Rendezvous {
            rank,
            detail: format!("rank 0 did not share the shared-memory job name: {e}"),
        })?;
        String::from_utf8_lossy(&raw).into_owned()
    };
    let mut cfg = ShmConfig::new(rank, topo.size, job);
    cfg.connect_timeout = config.tuning.connect_timeout;
    cfg.spin = config.tuning.spin;
    ShmGroup::connect(&cfg).map_err(|e| Error::Rendezvous {
        rank,
        detail: format!(
            "cannot set up shared memory between the ranks of this host \
             (HOROVOD_SHM=0 turns it off): {e}"
        ),
    })
}
