//! Every setting hora reads from the environment, read once, validated, and passed by value.
//!
//! Variable names and defaults follow Horovod where Horovod has the setting; hora's own
//! settings start with `HORA_`. Errors name the variable, the value and what is accepted.
//! Each variable is declared once, in `config/settings.rs`, which generates [`Tuning`],
//! [`LogSettings`], their parsers and the table of docs/configuration.md; the topology and
//! rendezvous variables are parsed here by hand (they depend on each other) and declared
//! there for the docs.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use crate::error::Error;

mod launchers;
pub mod net;
mod parse;
mod settings;
mod values;

use parse::{Vars, invalid};
pub use settings::{
    ELSEWHERE, LogSettings, REFUSED, Refused, Setting, TOPOLOGY, Tuning, render_table,
};
pub use values::{AutotuneFixed, Controller, HierarchicalMode, LogLevel};

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

/// The address `HOROVOD_HOSTNAME` names: an IP address as it is, or a host name resolved here.
fn listen_address(h: &str) -> Result<IpAddr, Error> {
    match h.parse::<IpAddr>() {
        Ok(ip) => Ok(ip),
        Err(_) => resolve("HOROVOD_HOSTNAME", h, 0).map(|a| a.ip()),
    }
}

/// `host:port` with `host` resolved here, an IPv4 address first (peers reach one another over
/// IPv4 in most clusters); errors name `var`, the variable that gave the host.
fn resolve(var: &str, host: &str, port: u16) -> Result<SocketAddr, Error> {
    use std::net::ToSocketAddrs;
    let found: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| {
            invalid(
                var,
                host,
                &format!("expected an IP address or a host name this machine resolves ({e})"),
            )
        })?
        .collect();
    found
        .iter()
        .find(|a| a.is_ipv4())
        .or(found.first())
        .copied()
        .ok_or_else(|| invalid(var, host, "the host name resolves to no address"))
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

        let rendezvous = if size == 1
            && v.get("HORA_STORE_ADDR").is_none()
            && v.get("HOROVOD_GLOO_RENDEZVOUS_ADDR").is_none()
        {
            None
        } else {
            Some(Self::rendezvous(&v)?)
        };

        settings::check_refused(vars)?;
        let t = Tuning::read(&v)?;
        Ok(Self {
            topology,
            rendezvous,
            tuning: t,
        })
    }

    fn rendezvous(v: &Vars<'_>) -> Result<Rendezvous, Error> {
        let gloo = gloo_store(v)?;
        let store = match (v.get("HORA_STORE_ADDR"), gloo) {
            (None, None) => {
                return Err(Error::NotLaunched {
                    hint: format!(
                        "HORA_STORE_ADDR (the launcher's rendezvous store) is not set; {LAUNCH_HINT}"
                    ),
                });
            }
            (None, Some(g)) => g,
            (Some(raw), gloo) => {
                let store = raw.parse::<SocketAddr>().map_err(|e| {
                    invalid("HORA_STORE_ADDR", raw, &format!("expected IP:PORT ({e})"))
                })?;
                if let Some(g) = gloo.filter(|g| *g != store) {
                    return Err(invalid(
                        "HOROVOD_GLOO_RENDEZVOUS_ADDR",
                        &g.to_string(),
                        &format!(
                            "names another store than HORA_STORE_ADDR={store}; set one of them"
                        ),
                    ));
                }
                store
            }
        };
        // Nobody serves a store named only by Horovod's variables (a script launching the
        // ranks itself), so rank 0 does, as under torchrun.
        let serve_store = if v.get("HORA_STORE_SERVE").is_none() {
            v.get("HORA_STORE_ADDR").is_none()
        } else {
            v.flag("HORA_STORE_SERVE")?
        };
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
        let bind_ip = match (v.get("HOROVOD_HOSTNAME"), v.get("HOROVOD_GLOO_IFACE")) {
            (Some(h), _) => listen_address(h)?,
            (None, Some(nics)) => interface_address(nics)?,
            (None, None) => route_to(store).unwrap_or(IpAddr::from([127, 0, 0, 1])),
        };
        Ok(Rendezvous {
            store,
            secret,
            bind_ip,
            serve_store,
            secret_derived: v.flag("HORA_SECRET_DERIVED")?,
        })
    }
}

/// The store Horovod's variables name (`HOROVOD_GLOO_RENDEZVOUS_ADDR` = an IP or a host name,
/// `HOROVOD_GLOO_RENDEZVOUS_PORT`), if they are set.
fn gloo_store(v: &Vars<'_>) -> Result<Option<SocketAddr>, Error> {
    let Some(host) = v.get("HOROVOD_GLOO_RENDEZVOUS_ADDR") else {
        if let Some(p) = v.get("HOROVOD_GLOO_RENDEZVOUS_PORT") {
            return Err(invalid(
                "HOROVOD_GLOO_RENDEZVOUS_PORT",
                p,
                "is set without HOROVOD_GLOO_RENDEZVOUS_ADDR (the store's host)",
            ));
        }
        return Ok(None);
    };
    let port = v
        .parse::<u16>("HOROVOD_GLOO_RENDEZVOUS_PORT", "a port number below 65536")?
        .ok_or_else(|| {
            invalid(
                "HOROVOD_GLOO_RENDEZVOUS_ADDR",
                host,
                "is set without HOROVOD_GLOO_RENDEZVOUS_PORT (the store's port)",
            )
        })?;
    resolve("HOROVOD_GLOO_RENDEZVOUS_ADDR", host, port).map(Some)
}

/// The address of the first interface of `HOROVOD_GLOO_IFACE` (one name, or a comma-separated
/// list as `horovodrun --network-interfaces` takes) that has one here.
fn interface_address(nics: &str) -> Result<IpAddr, Error> {
    let names: Vec<&str> = nics
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    match net::first_interface_ip(names.iter().copied()) {
        Ok(Some((_, ip))) => Ok(ip),
        Ok(None) => Err(invalid(
            "HOROVOD_GLOO_IFACE",
            nics,
            "no such network interface with an address on this host (see `ip -brief address`)",
        )),
        Err(e) => Err(invalid(
            "HOROVOD_GLOO_IFACE",
            nics,
            &format!("cannot list this host's network interfaces ({e})"),
        )),
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

#[cfg(test)]
mod tests;
