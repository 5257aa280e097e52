//! The TCP backend's wiring: the job's rendezvous store (rank 0 serves it under foreign
//! launchers), rank addresses published through it, the authenticated TCP transport, and the
//! wait until every rank has arrived.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hora_tcp::{PeerDirectory, TcpConfig, TcpTransport};
use hora_transport::Rank;

use super::rendezvous_err;
use crate::config::{Config, Rendezvous};
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

/// Connects to the job's store, serving it first on rank 0 when no launcher does (mpirun,
/// torchrun, srun); returns the client and the server to keep alive.
pub(super) fn rendezvous(
    config: &Config,
    rdv: &Rendezvous,
) -> Result<(Arc<dyn Store>, Option<StoreServer>), Error> {
    let rank = config.topology.rank;
    let fail = rendezvous_err(config);
    if rdv.secret_derived && rank == 0 {
        tracing::warn!(
            "no HOROVOD_SECRET_KEY: the job secret is derived from the launcher's variables, so \
             this job is only as safe as its network; export a random HOROVOD_SECRET_KEY to every rank"
        );
    }
    let server = if rdv.serve_store && rank == 0 {
        let s = StoreServer::start(rdv.store, rdv.secret.clone()).map_err(|e| {
            fail(format!(
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
    let client = connect_store(config, rdv, rdv.serve_store)
        .map_err(|e| fail(format!("cannot reach the store at {}: {e}", rdv.store)))?;
    Ok((Arc::new(client), server))
}

/// The TCP transport, once every rank has published its address, connected to rank 0 and
/// arrived.
pub(super) fn connect(
    config: &Config,
    rdv: &Rendezvous,
    store: &Arc<dyn Store>,
    prefix: &str,
) -> Result<TcpTransport, Error> {
    let topo = config.topology;
    let fail = rendezvous_err(config);
    let directory = Arc::new(StoreDirectory::new(store.clone(), prefix));
    let mut tcp = TcpConfig::new(topo.rank, topo.size, rdv.secret.clone());
    tcp.bind_ip = rdv.bind_ip;
    tcp.connect_timeout = config.tuning.connect_timeout;
    tcp.spin = config.tuning.spin;
    tcp.peer_timeout = config.tuning.peer_timeout;
    tcp.sockbuf = config.tuning.tcp_sockbuf;
    let transport = TcpTransport::new(tcp, directory)
        .map_err(|e| fail(format!("cannot start the TCP transport: {e}")))?;
    connect_to_coordinator(config, &transport)?;
    wait_for_every_rank(config, &**store, prefix)?;
    Ok(transport)
}

/// Waits until every rank is up, so a missing rank is reported here, by count, and not as a
/// hang in the first collective.
fn wait_for_every_rank(config: &Config, store: &dyn Store, prefix: &str) -> Result<(), Error> {
    let size = config.topology.size;
    let fail = rendezvous_err(config);
    let arrived = store
        .add(&format!("{prefix}arrived"), 1)
        .map_err(|e| fail(format!("store: {e}")))?;
    let all_key = format!("{prefix}all-arrived");
    if arrived as usize == size {
        store
            .set(&all_key, b"1")
            .map_err(|e| fail(format!("store: {e}")))?;
    }
    let deadline = hora_transport::deadline_after(config.tuning.connect_timeout);
    store.get(&all_key, deadline).map_err(|e| {
        let now = store.add(&format!("{prefix}arrived"), 0).unwrap_or(-1);
        fail(format!(
            "only {now} of {size} ranks arrived within {:?} (HOROVOD_GLOO_TIMEOUT_SECONDS): {e}",
            config.tuning.connect_timeout
        ))
    })?;
    Ok(())
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
    transport.connect_to(0, deadline).map_err(|e| {
        rendezvous_err(config)(format!(
            "cannot connect to rank 0, the coordinator (HOROVOD_GLOO_TIMEOUT_SECONDS): {e}"
        ))
    })
}

/// Connects to the store; when rank 0 serves it (foreign launchers), it may not be listening
/// yet, so a refused connection is retried until the connect budget is spent.
fn connect_store(
    config: &Config,
    rdv: &Rendezvous,
    retry: bool,
) -> Result<StoreClient, StoreError> {
    let deadline = hora_transport::deadline_after(config.tuning.connect_timeout);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match StoreClient::connect(
            rdv.store,
            &rdv.secret,
            config.topology.rank as u64,
            left.max(Duration::from_millis(100)),
        ) {
            Err(StoreError::Connect { .. }) if retry && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}
