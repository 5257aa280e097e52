//! Every setting hora reads from the environment, read once, validated, and passed by value.
//!
//! Variable names and defaults follow Horovod where Horovod has the setting; hora's own
//! settings start with `HORA_`. Errors name the variable, the value and what is accepted.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::collectives::HierarchicalMode;
use crate::error::Error;

mod launchers;

/// Where this process sits in the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    /// Global rank, `0..size`.
    pub rank: usize,
    /// Number of ranks in the job.
    pub size: usize,
    /// Rank among the processes on this host.
    pub local_rank: usize,
    /// Number of processes on this host.
    pub local_size: usize,
    /// Index of this host among hosts (ranks with the same local rank).
    pub cross_rank: usize,
    /// Number of hosts.
    pub cross_size: usize,
}

impl Topology {
    /// A job of one process.
    pub fn single() -> Self {
        Self {
            rank: 0,
            size: 1,
            local_rank: 0,
            local_size: 1,
            cross_rank: 0,
            cross_size: 1,
        }
    }
}

/// Engine settings (everything but the topology and the rendezvous).
#[derive(Debug, Clone, PartialEq)]
pub struct Tuning {
    /// Upper bound of the idle wait between housekeeping passes (`HOROVOD_CYCLE_TIME`, ms).
    pub cycle_time: Duration,
    /// Largest fused allreduce in bytes (`HOROVOD_FUSION_THRESHOLD`, default 128 MiB).
    pub fusion_threshold: usize,
    /// Response-cache entries; 0 disables the fast path (`HOROVOD_CACHE_CAPACITY`, default 1024).
    pub cache_capacity: usize,
    /// Warn about tensors some ranks submitted and others did not after this long
    /// (`HOROVOD_STALL_CHECK_TIME_SECONDS`, default 60; `HOROVOD_STALL_CHECK_DISABLE=1` turns it off).
    pub stall_warning: Option<Duration>,
    /// Fail such tensors after this long (`HOROVOD_STALL_SHUTDOWN_TIME_SECONDS`, default off).
    pub stall_shutdown: Option<Duration>,
    /// Connect and rendezvous budget (`HOROVOD_GLOO_TIMEOUT_SECONDS`, default 30).
    pub connect_timeout: Duration,
    /// Longest a running collective may wait on its peers before failing
    /// (`HORA_OP_TIMEOUT_SECONDS`, default 300).
    pub op_timeout: Duration,
    /// Busy-poll this long before sleeping in the kernel (`HORA_SPIN_US`, default 50).
    pub spin: Duration,
    /// Largest pipeline segment of the ring algorithms (`HORA_SEGMENT_BYTES`, default 1 MiB).
    pub segment_bytes: usize,
    /// A peer whose link stays silent this long is declared lost, even mid-wait
    /// (`HORA_PEER_TIMEOUT_SECONDS`, default 20; 0 = the kernel's hours-long default).
    pub peer_timeout: Option<Duration>,
    /// Run allreduce through shared memory when every rank is on this host
    /// (`HOROVOD_SHM`, default on; `HOROVOD_SHM=0` keeps everything on the transport).
    pub shm: bool,
    /// Which transport carries the job (`HOROVOD_CONTROLLER`: mpi, gloo/tcp, or unset for
    /// MPI under `mpirun` when built with it, TCP otherwise).
    pub controller: Controller,
    /// Rank 0 writes a Chrome-trace timeline of negotiation and collectives here
    /// (`HOROVOD_TIMELINE`, default off).
    pub timeline: Option<std::path::PathBuf>,
    /// Hierarchical allreduce across hosts (`HOROVOD_HIERARCHICAL_ALLREDUCE`): `None` = automatic
    /// (on when the job spans hosts with several ranks on each), `Some(false)` forces flat.
    pub hierarchical_allreduce: Option<bool>,
    /// Hierarchical allgather across hosts (`HOROVOD_HIERARCHICAL_ALLGATHER`), like
    /// `hierarchical_allreduce`.
    pub hierarchical_allgather: Option<bool>,
    /// How hierarchical allreduce splits the work (`HORA_HIERARCHICAL_MODE`: split or leader).
    pub hierarchical_mode: HierarchicalMode,
    /// Split hierarchical allreduces of at least twice this many bytes overlap the
    /// shared-memory and network steps in pieces of it (`HORA_HIERARCHICAL_PIPELINE_BYTES`;
    /// 0 = never). `None`: 8 MiB when the host has a core for each rank's two threads, else
    /// never.
    pub hierarchical_pipeline_bytes: Option<usize>,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            cycle_time: Duration::from_millis(1),
            fusion_threshold: 128 << 20,
            cache_capacity: 1024,
            stall_warning: Some(Duration::from_secs(60)),
            stall_shutdown: None,
            connect_timeout: Duration::from_secs(30),
            op_timeout: Duration::from_secs(300),
            spin: Duration::from_micros(50),
            segment_bytes: 1 << 20,
            peer_timeout: Some(Duration::from_secs(20)),
            shm: true,
            controller: Controller::Auto,
            timeline: None,
            hierarchical_allreduce: None,
            hierarchical_allgather: None,
            hierarchical_mode: HierarchicalMode::Split,
            hierarchical_pipeline_bytes: None,
        }
    }
}

/// Which transport carries a job's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Controller {
    /// MPI when this build has it and `mpirun` started the job, else TCP (+ shared memory).
    #[default]
    Auto,
    /// MPI, or an error saying why it cannot be had.
    Mpi,
    /// TCP (+ shared memory), even under `mpirun`.
    Tcp,
}

/// How this rank finds its peers.
#[derive(Clone, PartialEq, Eq)]
pub struct Rendezvous {
    /// The store served by the launcher (`HORA_STORE_ADDR=host:port`).
    pub store: SocketAddr,
    /// The job secret that authenticates every connection (`HOROVOD_SECRET_KEY`, hex).
    pub secret: Vec<u8>,
    /// The address this rank listens on (`HOROVOD_HOSTNAME`; default: the local address that
    /// routes to the store, so loopback for a store on this host).
    pub bind_ip: IpAddr,
    /// This rank serves the store itself at `store` (rank 0 under mpirun, torchrun or Slurm:
    /// `HORA_STORE_SERVE=1`).
    pub serve_store: bool,
    /// The secret was derived from launcher variables, not given (`HORA_SECRET_DERIVED=1`).
    pub secret_derived: bool,
}

impl std::fmt::Debug for Rendezvous {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret never reaches logs.
        f.debug_struct("Rendezvous")
            .field("store", &self.store)
            .field("secret", &"<redacted>")
            .field("bind_ip", &self.bind_ip)
            .field("serve_store", &self.serve_store)
            .field("secret_derived", &self.secret_derived)
            .finish()
    }
}

/// The whole configuration of one rank.
#[derive(Debug, Clone)]
pub struct Config {
    /// Rank, size and host layout.
    pub topology: Topology,
    /// Peer discovery; `None` only for a one-rank job.
    pub rendezvous: Option<Rendezvous>,
    /// Engine settings.
    pub tuning: Tuning,
}

const LAUNCH_HINT: &str = "start the job with a launcher, for example `horovodrun -np 2 python train.py` \
     (or set HOROVOD_RANK=0 HOROVOD_SIZE=1 to run a single process)";

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// A one-rank job with default settings (no launcher needed).
    pub fn single_process() -> Self {
        Self {
            topology: Topology::single(),
            rendezvous: None,
            tuning: Tuning::default(),
        }
    }

    /// Reads settings from a map of variables (the environment, or a test's own map).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, Error> {
        // Started by mpirun, torchrun or srun rather than horovodrun: read their variables.
        if vars.get("HOROVOD_RANK").is_none_or(|r| r.trim().is_empty())
            && let Some(translated) = launchers::translate(vars)?
        {
            return Self::from_vars(&translated);
        }
        let v = Vars(vars);
        let Some(rank) = v.parse::<usize>("HOROVOD_RANK", "a rank number (0, 1, ...)")? else {
            return Err(Error::NotLaunched {
                hint: LAUNCH_HINT.to_string(),
            });
        };
        let size = v
            .parse::<usize>("HOROVOD_SIZE", "the number of ranks (1, 2, ...)")?
            .ok_or_else(|| Error::NotLaunched {
                hint: format!("HOROVOD_RANK is set but HOROVOD_SIZE is not; {LAUNCH_HINT}"),
            })?;
        if size == 0 {
            return Err(invalid(
                "HOROVOD_SIZE",
                "0",
                "a job needs at least one rank",
            ));
        }
        if rank >= size {
            return Err(invalid(
                "HOROVOD_RANK",
                &rank.to_string(),
                &format!("must be below HOROVOD_SIZE={size}"),
            ));
        }
        let local_rank = v.parse("HOROVOD_LOCAL_RANK", "a number")?.unwrap_or(rank);
        let local_size = v.parse("HOROVOD_LOCAL_SIZE", "a number")?.unwrap_or(size);
        let cross_rank = v.parse("HOROVOD_CROSS_RANK", "a number")?.unwrap_or(0);
        let cross_size = v.parse("HOROVOD_CROSS_SIZE", "a number")?.unwrap_or(1);
        if local_rank >= local_size {
            return Err(invalid(
                "HOROVOD_LOCAL_RANK",
                &local_rank.to_string(),
                &format!("must be below HOROVOD_LOCAL_SIZE={local_size}"),
            ));
        }
        let topology = Topology {
            rank,
            size,
            local_rank,
            local_size,
            cross_rank,
            cross_size,
        };

        let rendezvous = if size == 1 && v.get("HORA_STORE_ADDR").is_none() {
            None
        } else {
            Some(Self::rendezvous(&v)?)
        };

        let mut t = Tuning::default();
        if let Some(ms) = v.parse::<f64>("HOROVOD_CYCLE_TIME", "milliseconds, e.g. 1 or 0.5")? {
            if !(ms.is_finite() && ms > 0.0) {
                return Err(invalid(
                    "HOROVOD_CYCLE_TIME",
                    &ms.to_string(),
                    "must be > 0 ms",
                ));
            }
            t.cycle_time = Duration::from_secs_f64(ms / 1000.0);
        }
        if let Some(b) = v.parse("HOROVOD_FUSION_THRESHOLD", "a byte count, e.g. 67108864")? {
            t.fusion_threshold = b;
        }
        if let Some(c) = v.parse("HOROVOD_CACHE_CAPACITY", "a number of entries (0 = off)")? {
            t.cache_capacity = c;
        }
        if let Some(s) = v.parse::<u64>("HOROVOD_STALL_CHECK_TIME_SECONDS", "seconds")? {
            t.stall_warning = (s > 0).then(|| Duration::from_secs(s));
        }
        if v.flag("HOROVOD_STALL_CHECK_DISABLE")? {
            t.stall_warning = None;
        }
        if let Some(s) = v.parse::<u64>("HOROVOD_STALL_SHUTDOWN_TIME_SECONDS", "seconds")? {
            t.stall_shutdown = (s > 0).then(|| Duration::from_secs(s));
        }
        if let Some(s) = v.parse::<u64>("HOROVOD_GLOO_TIMEOUT_SECONDS", "seconds")? {
            t.connect_timeout = Duration::from_secs(s.max(1));
        }
        if let Some(s) = v.parse::<u64>("HORA_OP_TIMEOUT_SECONDS", "seconds")? {
            t.op_timeout = Duration::from_secs(s.max(1));
        }
        if let Some(us) = v.parse::<u64>("HORA_SPIN_US", "microseconds (0 = never spin)")? {
            t.spin = Duration::from_micros(us);
        }
        if let Some(s) = v.parse::<u64>("HORA_PEER_TIMEOUT_SECONDS", "seconds (0 = off)")? {
            t.peer_timeout = (s > 0).then(|| Duration::from_secs(s.max(3)));
        }
        if let Some(b) = v.parse::<usize>("HORA_SEGMENT_BYTES", "a byte count >= 4096")? {
            if b < 4096 {
                return Err(invalid(
                    "HORA_SEGMENT_BYTES",
                    &b.to_string(),
                    "must be >= 4096",
                ));
            }
            t.segment_bytes = b;
        }
        t.timeline = v.get("HOROVOD_TIMELINE").map(std::path::PathBuf::from);
        if let Some(c) = v.get("HOROVOD_CONTROLLER") {
            t.controller = match c.trim().to_ascii_lowercase().as_str() {
                "" | "auto" => Controller::Auto,
                "mpi" => Controller::Mpi,
                "gloo" | "tcp" => Controller::Tcp,
                _ => {
                    return Err(invalid(
                        "HOROVOD_CONTROLLER",
                        c,
                        "expected mpi (the MPI transport, under mpirun) or gloo/tcp",
                    ));
                }
            };
        }
        if v.get("HOROVOD_SHM").is_some() {
            t.shm = v.flag("HOROVOD_SHM")?;
        }
        for (var, slot) in [
            (
                "HOROVOD_HIERARCHICAL_ALLREDUCE",
                &mut t.hierarchical_allreduce,
            ),
            (
                "HOROVOD_HIERARCHICAL_ALLGATHER",
                &mut t.hierarchical_allgather,
            ),
        ] {
            if v.get(var).is_some() {
                *slot = Some(v.flag(var)?);
            }
        }
        if let Some(b) = v.parse::<usize>(
            "HORA_HIERARCHICAL_PIPELINE_BYTES",
            "a byte count (0 = no pipelining)",
        )? {
            t.hierarchical_pipeline_bytes = Some(b);
        }
        if let Some(m) = v.get("HORA_HIERARCHICAL_MODE") {
            t.hierarchical_mode = m.parse().map_err(|()| {
                invalid(
                    "HORA_HIERARCHICAL_MODE",
                    m,
                    "expected split (every local rank runs the cross-host ring on its share) \
                     or leader (one rank per host does)",
                )
            })?;
        }
        Ok(Self {
            topology,
            rendezvous,
            tuning: t,
        })
    }

    fn rendezvous(v: &Vars<'_>) -> Result<Rendezvous, Error> {
        let store_raw = v.get("HORA_STORE_ADDR").ok_or_else(|| Error::NotLaunched {
            hint: format!(
                "HORA_STORE_ADDR (the launcher's rendezvous store) is not set; {LAUNCH_HINT}"
            ),
        })?;
        let store = store_raw.parse::<SocketAddr>().map_err(|e| {
            invalid(
                "HORA_STORE_ADDR",
                store_raw,
                &format!("expected IP:PORT ({e})"),
            )
        })?;
        let key = v
            .get("HOROVOD_SECRET_KEY")
            .ok_or_else(|| Error::NotLaunched {
                hint: format!("HOROVOD_SECRET_KEY (the job secret) is not set; {LAUNCH_HINT}"),
            })?;
        let secret = hex::decode(key.trim()).map_err(|e| {
            // Never echo the secret itself.
            invalid(
                "HOROVOD_SECRET_KEY",
                "<redacted>",
                &format!("expected hex digits ({e})"),
            )
        })?;
        if secret.len() < 16 {
            return Err(invalid(
                "HOROVOD_SECRET_KEY",
                "<redacted>",
                "must be at least 16 bytes (32 hex digits)",
            ));
        }
        let bind_ip = match v.get("HOROVOD_HOSTNAME") {
            None => route_to(store).unwrap_or(IpAddr::from([127, 0, 0, 1])),
            Some(h) => h.parse::<IpAddr>().map_err(|e| {
                invalid(
                    "HOROVOD_HOSTNAME",
                    h,
                    &format!("expected an IP address to listen on ({e})"),
                )
            })?,
        };
        Ok(Rendezvous {
            store,
            secret,
            bind_ip,
            serve_store: v.flag("HORA_STORE_SERVE")?,
            secret_derived: v.flag("HORA_SECRET_DERIVED")?,
        })
    }
}

/// The local address the kernel would use to reach `to` (connecting a UDP socket picks the
/// route and sends nothing).
fn route_to(to: SocketAddr) -> Option<IpAddr> {
    let any = if to.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    };
    let s = std::net::UdpSocket::bind(any).ok()?;
    s.connect(to).ok()?;
    Some(s.local_addr().ok()?.ip())
}

fn invalid(var: &str, value: &str, reason: &str) -> Error {
    Error::InvalidConfig {
        var: var.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

struct Vars<'a>(&'a HashMap<String, String>);

impl Vars<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(|s| s.as_str())
            .filter(|s| !s.trim().is_empty())
    }

    fn parse<T: std::str::FromStr>(&self, name: &str, accepted: &str) -> Result<Option<T>, Error> {
        match self.get(name) {
            None => Ok(None),
            Some(raw) => raw
                .trim()
                .parse::<T>()
                .map(Some)
                .map_err(|_| invalid(name, raw, &format!("expected {accepted}"))),
        }
    }

    fn flag(&self, name: &str) -> Result<bool, Error> {
        match self.get(name).map(|s| s.trim().to_ascii_lowercase()) {
            None => Ok(false),
            Some(s) if ["1", "true", "yes", "on"].contains(&s.as_str()) => Ok(true),
            Some(s) if ["0", "false", "no", "off"].contains(&s.as_str()) => Ok(false),
            Some(s) => Err(invalid(
                name,
                &s,
                "expected 1/0, true/false, yes/no or on/off",
            )),
        }
    }
}

#[cfg(test)]
mod tests;
