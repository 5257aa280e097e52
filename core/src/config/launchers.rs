//! Jobs started by other launchers: `mpirun` (Open MPI, MPICH/Hydra), `torchrun` and Slurm's
//! `srun`. Their variables are translated into the ones `horovodrun` sets, so the rest of the
//! configuration is read one way. Under them there is no launcher-served store: rank 0 serves
//! it (`HORA_STORE_SERVE=1`) at an address every rank can compute:
//!
//! - host: `HORA_STORE_ADDR` if set (`ip:port`, used as is); else `MASTER_ADDR`; else, under
//!   Slurm, the first node of the step's node list; else, for an mpirun job whose ranks are all
//!   on one host, 127.0.0.1. Otherwise the error says to set `MASTER_ADDR`.
//! - port: `HORA_STORE_PORT`; else `MASTER_PORT + 1` (torchrun's own store holds
//!   `MASTER_PORT`); else, under Slurm, one derived from the job and step ids; else 29501.
//!
//! The secret is `HOROVOD_SECRET_KEY` if set. Otherwise it is derived by hashing what every
//! rank of the job shares (job ids, node list, master address): that keeps other jobs out,
//! but anyone on the network who can guess those values can join, so such a job is only as
//! safe as its network. `HORA_SECRET_DERIVED=1` marks this so init can warn.
//!
//! These launchers' own variables (`OMPI_COMM_WORLD_RANK`, `MASTER_ADDR`, `SLURM_*`, ...) are
//! read here, not through the settings declaration: they are translated, not settings of
//! hora's. The ones a user sets on purpose are listed in `settings::ELSEWHERE` for the docs.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};

use sha2::{Digest, Sha256};

use super::parse::Vars;
use super::{Controller, Tuning};
use crate::error::Error;

/// Which launcher started us, with the variables it gave.
#[derive(Debug, PartialEq, Eq)]
struct Found {
    launcher: &'static str,
    rank: usize,
    size: usize,
    local_rank: usize,
    local_size: usize,
    cross_rank: usize,
    cross_size: usize,
    /// Variables whose values every rank shares, hashed into a derived secret.
    shared: &'static [&'static str],
}

fn num(vars: &HashMap<String, String>, name: &str) -> Result<Option<usize>, Error> {
    match vars.get(name).map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| Error::InvalidConfig {
            var: name.to_owned(),
            value: s.to_owned(),
            reason: "expected a number".to_owned(),
        }),
    }
}

/// Local size and node index from Slurm's `2(x3),1`-style tasks-per-node list.
fn slurm_tasks_on_node(list: &str, node: usize) -> Option<usize> {
    let mut seen = 0usize;
    for part in list.split(',') {
        let (n, reps) = match part.split_once("(x") {
            Some((n, r)) => (n, r.trim_end_matches(')').parse::<usize>().ok()?),
            None => (part, 1),
        };
        let n: usize = n.trim().parse().ok()?;
        if node < seen + reps {
            return Some(n);
        }
        seen += reps;
    }
    None
}

/// The first host of a Slurm node list such as `node[07-10,12],gpu1`.
pub(crate) fn slurm_first_node(list: &str) -> Option<String> {
    let list = list.trim();
    let open = list.find('[');
    let comma = list.find(',');
    match (open, comma) {
        (Some(o), c) if c.is_none_or(|c| o < c) => {
            let close = list[o..].find(']')? + o;
            let inner = &list[o + 1..close];
            let first = inner.split(',').next()?.split('-').next()?;
            let suffix_end = list[close + 1..]
                .find(',')
                .map_or(list.len(), |i| close + 1 + i);
            Some(format!(
                "{}{first}{}",
                &list[..o],
                &list[close + 1..suffix_end]
            ))
        }
        (_, Some(c)) => Some(list[..c].to_owned()).filter(|s| !s.is_empty()),
        (_, None) => Some(list.to_owned()).filter(|s| !s.is_empty()),
    }
}

fn detect(v: &HashMap<String, String>) -> Result<Option<Found>, Error> {
    let get = |n: &str| num(v, n);
    // Open MPI.
    if let (Some(rank), Some(size)) = (get("OMPI_COMM_WORLD_RANK")?, get("OMPI_COMM_WORLD_SIZE")?) {
        let local_rank = get("OMPI_COMM_WORLD_LOCAL_RANK")?.unwrap_or(rank);
        let local_size = get("OMPI_COMM_WORLD_LOCAL_SIZE")?.unwrap_or(size);
        return Ok(Some(uniform(
            "mpirun (Open MPI)",
            rank,
            size,
            local_rank,
            local_size,
            &[
                "PMIX_NAMESPACE",
                "OMPI_MCA_ess_base_jobid",
                "OMPI_MCA_orte_ess_jobid",
                "PMIX_SERVER_URI41",
            ],
        )));
    }
    // MPICH / Hydra (and Intel MPI).
    if let (Some(rank), Some(size)) = (get("PMI_RANK")?, get("PMI_SIZE")?) {
        let local_rank = get("MPI_LOCALRANKID")?.unwrap_or(rank);
        let local_size = get("MPI_LOCALNRANKS")?.unwrap_or(size);
        return Ok(Some(uniform(
            "mpirun (MPICH/Hydra)",
            rank,
            size,
            local_rank,
            local_size,
            // Not PMI_FD or HYDI_CONTROL_FD: descriptor numbers, which differ between the
            // ranks of one job (Hydra gives rank 0 PMI_FD=6 and rank 1 PMI_FD=8).
            &["PMI_PORT", "PMI_KVSNAME"],
        )));
    }
    // torchrun / torch.distributed.run.
    if let (Some(rank), Some(size)) = (get("RANK")?, get("WORLD_SIZE")?) {
        let local_rank = get("LOCAL_RANK")?.unwrap_or(rank);
        let local_size = get("LOCAL_WORLD_SIZE")?.unwrap_or(size);
        let mut f = uniform(
            "torchrun",
            rank,
            size,
            local_rank,
            local_size,
            &[
                "TORCHELASTIC_RUN_ID",
                "MASTER_ADDR",
                "MASTER_PORT",
                "WORLD_SIZE",
            ],
        );
        if let Some(node) = get("GROUP_RANK")? {
            f.cross_rank = node;
        }
        return Ok(Some(f));
    }
    // Slurm srun (a batch script's own environment has no step task count, so it is not a job).
    if let (Some(rank), Some(size)) = (get("SLURM_PROCID")?, get("SLURM_STEP_NUM_TASKS")?) {
        let node = get("SLURM_NODEID")?.unwrap_or(0);
        let local_size = v
            .get("SLURM_STEP_TASKS_PER_NODE")
            .and_then(|l| slurm_tasks_on_node(l, node))
            .unwrap_or(size);
        let local_rank = get("SLURM_LOCALID")?.unwrap_or(0);
        let mut f = uniform(
            "srun (Slurm)",
            rank,
            size,
            local_rank,
            local_size,
            &[
                "SLURM_JOB_ID",
                "SLURM_STEP_ID",
                "SLURM_STEP_NODELIST",
                "SLURM_STEP_NUM_TASKS",
            ],
        );
        f.cross_rank = node;
        if let Some(nodes) = get("SLURM_STEP_NUM_NODES")? {
            f.cross_size = nodes;
        }
        return Ok(Some(f));
    }
    Ok(None)
}

/// Cross rank and size for a launcher that places the same number of ranks on every host, in
/// blocks (the usual layout; Horovod's definition otherwise needs the whole placement).
fn uniform(
    launcher: &'static str,
    rank: usize,
    size: usize,
    local_rank: usize,
    local_size: usize,
    shared: &'static [&'static str],
) -> Found {
    let local_size = local_size.max(1);
    Found {
        launcher,
        rank,
        size,
        local_rank,
        local_size,
        cross_rank: rank / local_size,
        cross_size: size.div_ceil(local_size),
        shared,
    }
}

/// Whether this job will run on the MPI transport (built in, started by mpirun, and not told
/// to use TCP), so it needs no rendezvous store. `HOROVOD_CONTROLLER` is read by the same
/// declaration `Config` uses, so a bad value fails here as it would there.
fn mpi_carries(vars: &HashMap<String, String>, launcher: &str) -> Result<bool, Error> {
    let controller = Tuning::read(&Vars(vars))?.controller;
    Ok(
        crate::backend::MPI_BUILT
            && launcher.starts_with("mpirun")
            && controller != Controller::Tcp,
    )
}

fn missing_addr(launcher: &str) -> Error {
    Error::NotLaunched {
        hint: format!(
            "started by {launcher} on several hosts, but nothing says where rank 0 serves the \
             rendezvous store: export MASTER_ADDR=<rank 0's host> (and optionally MASTER_PORT) \
             to every rank, e.g. `mpirun -x MASTER_ADDR=node1 ...`, or set HORA_STORE_ADDR=ip:port"
        ),
    }
}

/// If another launcher started this process, returns the variables `horovodrun` would have
/// set, added to `vars`. `Ok(None)`: no launcher we know.
pub(crate) fn translate(
    vars: &HashMap<String, String>,
) -> Result<Option<HashMap<String, String>>, Error> {
    let Some(f) = detect(vars)? else {
        return Ok(None);
    };
    let get = |n: &str| vars.get(n).map(|s| s.trim()).filter(|s| !s.is_empty());
    let mut out = vars.clone();
    let mut set = |k: &str, v: String| {
        out.insert(k.to_owned(), v);
    };
    set("HOROVOD_RANK", f.rank.to_string());
    set("HOROVOD_SIZE", f.size.to_string());
    set("HOROVOD_LOCAL_RANK", f.local_rank.to_string());
    set("HOROVOD_LOCAL_SIZE", f.local_size.to_string());
    set("HOROVOD_CROSS_RANK", f.cross_rank.to_string());
    set("HOROVOD_CROSS_SIZE", f.cross_size.to_string());
    // `horovodrun --mpi` serves the store itself and says so with HORA_STORE_SERVE=0.
    if get("HORA_STORE_SERVE").is_none() {
        set("HORA_STORE_SERVE", "1".to_owned());
    }

    let store = match get("HORA_STORE_ADDR") {
        Some(a) => a.to_owned(),
        None => {
            let slurm_node = get("SLURM_STEP_NODELIST")
                .or_else(|| get("SLURM_JOB_NODELIST"))
                .or_else(|| get("SLURM_NODELIST"))
                .and_then(slurm_first_node);
            let host = match (get("MASTER_ADDR"), slurm_node) {
                (Some(h), _) => h.to_owned(),
                (None, Some(h)) if f.launcher.starts_with("srun") => h,
                _ if f.local_size == f.size => "127.0.0.1".to_owned(),
                // The MPI transport needs no store; the address is never used.
                _ if mpi_carries(vars, f.launcher)? => "127.0.0.1".to_owned(),
                _ => return Err(missing_addr(f.launcher)),
            };
            let port = match (
                num(vars, "HORA_STORE_PORT")?,
                num(vars, "MASTER_PORT")?,
                num(vars, "SLURM_JOB_ID")?,
            ) {
                (Some(p), _, _) => p,
                (None, Some(p), _) => p + 1,
                (None, None, Some(job)) if f.launcher.starts_with("srun") => {
                    let step = num(vars, "SLURM_STEP_ID")?.unwrap_or(0);
                    20_000 + (job * 31 + step) % 30_000
                }
                _ => 29_501,
            };
            let port = u16::try_from(port).map_err(|_| Error::InvalidConfig {
                var: "HORA_STORE_PORT".to_owned(),
                value: port.to_string(),
                reason: "the store port must be below 65536".to_owned(),
            })?;
            let addr: SocketAddr = (host.as_str(), port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.find(SocketAddr::is_ipv4))
                .ok_or_else(|| Error::InvalidConfig {
                    var: "MASTER_ADDR".to_owned(),
                    value: host.clone(),
                    reason: "cannot resolve this host to an IPv4 address".to_owned(),
                })?;
            addr.to_string()
        }
    };
    set("HORA_STORE_ADDR", store.clone());

    if get("HOROVOD_SECRET_KEY").is_none() {
        let mut h = Sha256::new();
        h.update(b"hora derived job secret v1\0");
        h.update(f.launcher.as_bytes());
        h.update(store.as_bytes());
        h.update(f.size.to_le_bytes());
        for name in f.shared {
            h.update(name.as_bytes());
            h.update(b"=");
            h.update(get(name).unwrap_or("").as_bytes());
            h.update(b"\0");
        }
        set("HOROVOD_SECRET_KEY", hex::encode(h.finalize()));
        set("HORA_SECRET_DERIVED", "1".to_owned());
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests;
