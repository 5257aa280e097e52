//! The process-set half of the API: adding and removing sets (collective over the global
//! set) and finding the engine a call on a set runs on. See `crate::process_set`.

use std::sync::Arc;

use parking_lot::Mutex;

use super::GLOBAL;
use crate::config::Config;
use crate::engine::{Engine, Op};
use crate::error::{Error, Result};
use crate::process_set::{
    self, GLOBAL_ID, Member, ProcessSet, Proposal, Table, agree_add, agree_remove,
};
use crate::rendezvous::Store;
use crate::types::DataType;

/// What an add or remove needs from the running job, taken out of the global slot so no
/// lock on it is held while ranks agree and connect.
struct Job {
    engine: Arc<Engine>,
    config: Config,
    store: Option<Arc<dyn Store>>,
    generation: u64,
    sets: Arc<Mutex<Table>>,
    changing: Arc<Mutex<u64>>,
}

fn job() -> Result<Job> {
    let g = GLOBAL.read();
    let r = g.as_ref().ok_or(Error::NotInitialized)?;
    Ok(Job {
        engine: r.engine.clone(),
        config: r.config.clone(),
        store: r.store.clone(),
        generation: r.generation,
        sets: r.sets.clone(),
        changing: r.changing.clone(),
    })
}

/// The error every rank raises when the ranks do not agree on a change of sets.
fn refused(rank: usize, what: &str, detail: String) -> Error {
    Error::InvalidArgument {
        rank,
        tensor: what.to_string(),
        detail,
    }
}

/// Adds a process set of `ranks` (global ranks, any order) and returns it with its id.
/// Collective: every rank of the job calls it, with the same ranks, in the same order of
/// calls. Needs `HOROVOD_DYNAMIC_PROCESS_SETS=1` (Horovod's rule); sets known from the start
/// go to [`init_with_process_sets`](super::init_with_process_sets).
pub fn add_process_set(ranks: &[usize]) -> Result<ProcessSet> {
    add(ranks, true)
}

pub(super) fn add(ranks: &[usize], dynamic: bool) -> Result<ProcessSet> {
    let job = job()?;
    let topo = job.config.topology;
    let me = topo.rank;
    if dynamic && !job.config.tuning.dynamic_process_sets {
        // Every rank has the same setting (the launcher gives it to all), so all refuse.
        return Err(refused(
            me,
            "add_process_set",
            "adding a process set after init needs HOROVOD_DYNAMIC_PROCESS_SETS=1 (or pass \
             the sets to init(process_sets=...))"
                .into(),
        ));
    }
    let mut seq = job.changing.lock();
    let local = process_set::normalize(ranks, topo.size);
    let proposal = match &local {
        Ok(r) => Proposal::Add(r.clone()),
        Err(why) => Proposal::BadAdd(why.clone()),
    };
    let (hosts, props) = agree(&job, &mut seq, &proposal)?;
    if let Err(why) = local {
        return Err(refused(me, "add_process_set", why));
    }
    let members = agree_add(&props).map_err(|why| refused(me, "add_process_set", why))?;
    let id = {
        let sets = job.sets.lock();
        if let Some(existing) = sets.find(&members) {
            return Err(refused(
                me,
                "add_process_set",
                format!("process set {existing} already has ranks {members:?}"),
            ));
        }
        sets.next_id()
    };
    if members.len() > 1 && job.store.is_none() {
        return Err(refused(
            me,
            "add_process_set",
            "process sets of more than one rank need the job's rendezvous store, which the MPI \
             backend does not use (hora has no MPI sub-communicators yet): launch with \
             horovodrun's default TCP backend (no --mpi)"
                .into(),
        ));
    }
    let set = ProcessSet { id, ranks: members };
    let member = set.rank_of(me).map(|_| connect(&job, &set, &hosts));
    // No rank returns before every member has connected: the store the members meet through
    // may be served by a rank outside the set (rank 0 under torchrun), which could otherwise
    // exit while they are still connecting; and a member that failed fails the add everywhere.
    let connected = !matches!(member, Some(Err(_)));
    let failed = settle(&job, &mut seq, connected)?;
    let member = member.transpose()?;
    if !failed.is_empty() {
        if let Some(m) = member {
            m.engine.shutdown();
        }
        return Err(refused(
            me,
            "add_process_set",
            format!(
                "rank(s) {failed:?} could not connect process set {id}'s backend (their own \
                 errors say why)"
            ),
        ));
    }
    job.sets.lock().insert(set.clone(), member);
    tracing::debug!(rank = me, id, ranks = ?set.ranks, "process set added");
    Ok(set)
}

/// Connects this rank's backend for `set` and starts its engine.
fn connect(job: &Job, set: &ProcessSet, hosts: &[u64]) -> Result<Member> {
    let me = job.config.topology.rank;
    let mut config = job.config.clone();
    config.topology = process_set::set_topology(&set.ranks, hosts, me);
    let prefix = format!("hora/{}/set/{}/", job.generation, set.id);
    let view = crate::process_set::SetView::new(set);
    let connected = crate::backend::connect_set(&config, job.store.as_ref(), &prefix)
        .map_err(|e| view.renumber(e))?;
    tracing::debug!(
        rank = me,
        id = set.id,
        backend = connected.name,
        "process set connected"
    );
    let engine = Engine::start_in_set(
        config.topology,
        config.tuning.clone(),
        connected.transport,
        connected.collectives,
        set,
    )?;
    Ok(Member {
        engine: Arc::new(engine),
        _keep_alive: connected.keep_alive,
    })
}

/// Removes process set `id` (collective, like [`add_process_set`]); its operations must
/// have finished on every rank. Needs `HOROVOD_DYNAMIC_PROCESS_SETS=1`.
pub fn remove_process_set(id: u32) -> Result<()> {
    let job = job()?;
    let me = job.config.topology.rank;
    if !job.config.tuning.dynamic_process_sets {
        return Err(refused(
            me,
            "remove_process_set",
            "removing a process set needs HOROVOD_DYNAMIC_PROCESS_SETS=1".into(),
        ));
    }
    let mut seq = job.changing.lock();
    let in_flight = job.sets.lock().engine(id).map_or(0, |e| e.in_flight());
    let (_, props) = agree(&job, &mut seq, &Proposal::Remove { id, in_flight })?;
    let id = agree_remove(&props).map_err(|why| refused(me, "remove_process_set", why))?;
    if id == GLOBAL_ID {
        return Err(refused(
            me,
            "remove_process_set",
            "the global process set (id 0) cannot be removed".into(),
        ));
    }
    let removed = job.sets.lock().remove(id);
    match removed {
        None => Err(refused(
            me,
            "remove_process_set",
            format!("there is no process set {id}"),
        )),
        Some((_, member)) => {
            if let Some(m) = member {
                m.engine.shutdown();
            }
            Ok(())
        }
    }
}

/// One allgather over the global set of whether each rank's part of a change went well;
/// returns the ranks whose part failed.
fn settle(job: &Job, seq: &mut u64, ok: bool) -> Result<Vec<usize>> {
    Ok(allgather_words(job, seq, vec![i64::from(ok)])?
        .iter()
        .enumerate()
        .filter(|(_, flag)| **flag == 0)
        .map(|(r, _)| r)
        .collect())
}

/// One fixed-size allgather over the global set: every rank's host key and proposal.
fn agree(job: &Job, seq: &mut u64, proposal: &Proposal) -> Result<(Vec<u64>, Vec<Proposal>)> {
    let topo = job.config.topology;
    // Ranks are numbered host by host (horovodrun, torchrun, Slurm blocks), so the first
    // rank of a host names it.
    let host = (topo.rank - topo.local_rank) as u64;
    // No unsigned 64-bit dtype: the words travel as i64, bit for bit.
    let words: Vec<i64> = proposal
        .encode(host, topo.size)
        .into_iter()
        .map(|w| w as i64)
        .collect();
    let gathered: Vec<u64> = allgather_words(job, seq, words)?
        .into_iter()
        .map(|w| w as u64)
        .collect();
    Proposal::decode_all(&gathered, topo.size)
}

/// Every rank's `words` (the same count on each), in rank order: one allgather over the global
/// set, named after the next change number `seq`.
fn allgather_words(job: &Job, seq: &mut u64, words: Vec<i64>) -> Result<Vec<i64>> {
    let name = format!("hora.process_sets.{}", *seq);
    *seq += 1;
    let op = Op::allgather(&name, DataType::I64, &[words.len() as u64]);
    let c = job.engine.submit(op, Some(Box::new(words))).wait()?;
    let out = c
        .output
        .ok_or_else(|| Error::Bug(format!("{name}: no output")))?;
    Ok(out.to_vec::<i64>())
}

/// The engine a call on process set `set` runs on: the global engine for 0, this rank's
/// engine of that set otherwise. A set this rank is not in, or an unknown one, is an error.
pub fn engine_for(set: u32) -> Result<Arc<Engine>> {
    let g = GLOBAL.read();
    let r = g.as_ref().ok_or(Error::NotInitialized)?;
    if set == GLOBAL_ID {
        return Ok(r.engine.clone());
    }
    let sets = r.sets.lock();
    let me = r.config.topology.rank;
    match (sets.get(set), sets.engine(set)) {
        (_, Some(e)) => Ok(e),
        (Some(s), None) => Err(Error::InvalidArgument {
            rank: me,
            tensor: String::new(),
            detail: format!(
                "rank {me} is not in process set {set} (ranks {:?}): only its members may \
                 run its collectives",
                s.ranks
            ),
        }),
        (None, None) => Err(no_such_set(me, set)),
    }
}

/// Process set `id` as this rank knows it.
pub fn process_set(id: u32) -> Result<ProcessSet> {
    let g = GLOBAL.read();
    let r = g.as_ref().ok_or(Error::NotInitialized)?;
    r.sets
        .lock()
        .get(id)
        .cloned()
        .ok_or_else(|| no_such_set(r.config.topology.rank, id))
}

/// The error for a set id this rank does not know, reported by `rank`.
fn no_such_set(rank: usize, id: u32) -> Error {
    Error::InvalidArgument {
        rank,
        tensor: String::new(),
        detail: format!("there is no process set {id} (removed, or never added)"),
    }
}

/// Every process set of the job, by id (the global set first).
pub fn process_sets() -> Result<Vec<ProcessSet>> {
    let g = GLOBAL.read();
    let r = g.as_ref().ok_or(Error::NotInitialized)?;
    Ok(r.sets.lock().all())
}

/// The rank inside process set `set` of global rank `rank` (a broadcast root); `what` names
/// the tensor for the error when `rank` is not a member.
pub fn set_rank(set: u32, rank: usize, what: &str) -> Result<usize> {
    let s = process_set(set)?;
    s.rank_of(rank).ok_or_else(|| Error::InvalidArgument {
        rank: super::rank().unwrap_or(rank),
        tensor: what.to_string(),
        detail: format!(
            "rank {rank} is not in process set {set} (ranks {:?}); a root must be a member",
            s.ranks
        ),
    })
}
