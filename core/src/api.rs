//! The process-wide API (`hora::init`, `hora::allreduce`, ...), over one global engine and
//! the engines of the process sets this rank belongs to (`sets.rs`).

mod sets;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::backend::KeepAlive;
use crate::config::Config;
use crate::engine::{Engine, Op};
use crate::error::{Error, Result};
use crate::handle::{Element, Handle};
use crate::process_set::{GLOBAL_ID, Table};
use crate::rendezvous::Store;
use crate::types::ReduceOp;

pub use sets::{
    add_process_set, engine_for, process_set, process_sets, remove_process_set, set_rank,
};

/// The process-wide engine slot: the engine, and what its backend needs kept alive.
static GLOBAL: RwLock<Option<Running>> = RwLock::new(None);
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// A started engine with the name of its backend and what must outlive its transport, and
/// what process sets need: the configuration and store their backends connect with.
struct Running {
    engine: Arc<Engine>,
    backend: &'static str,
    config: Config,
    store: Option<Arc<dyn Store>>,
    generation: u64,
    /// Every process set of the job; this rank's member engines.
    sets: Arc<Mutex<Table>>,
    /// Adds and removes one at a time (they are collective, in the same order everywhere).
    changing: Arc<Mutex<u64>>,
    /// Every host has the same number of ranks.
    homogeneous: bool,
    // Dropped after the engine has shut down (see `shutdown`).
    _keep_alive: KeepAlive,
}

/// Starts hora in this process from the launcher's environment. Calling it again while
/// initialized does nothing.
pub fn init() -> Result<()> {
    init_with(Config::from_env()?)
}

/// Starts hora with an explicit configuration.
pub fn init_with(config: Config) -> Result<()> {
    init_with_process_sets(config, &[])
}

/// Starts hora with the process sets every rank names in the same order (Horovod's static
/// `init(process_sets=...)`); they get ids 1, 2, ... in that order, the global set being 0.
/// Calling it again while initialized does nothing.
pub fn init_with_process_sets(config: Config, process_sets: &[Vec<usize>]) -> Result<()> {
    if !start(config)? {
        return Ok(());
    }
    for ranks in process_sets {
        if let Err(e) = sets::add(ranks, false) {
            shutdown();
            return Err(e);
        }
    }
    Ok(())
}

/// Starts the global engine; false when one is already running.
fn start(config: Config) -> Result<bool> {
    let mut global = GLOBAL.write();
    if global.is_some() {
        return Ok(false);
    }
    crate::logging::init_from_env();
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
    let connected = crate::backend::connect(&config, generation)?;
    tracing::debug!(
        rank = config.topology.rank,
        transport = connected.name,
        "hora initialized"
    );
    let engine = Engine::start_with(
        config.topology,
        config.tuning.clone(),
        connected.transport,
        Some(connected.collectives),
    )?;
    let engine = Arc::new(engine);
    let homogeneous = same_local_sizes(&engine, config.topology)?;
    *global = Some(Running {
        engine,
        homogeneous,
        backend: connected.name,
        sets: Arc::new(Mutex::new(Table::new(config.topology.size))),
        changing: Arc::new(Mutex::new(0)),
        config,
        store: connected.store,
        generation,
        _keep_alive: connected.keep_alive,
    });
    Ok(true)
}

/// Whether every rank has the same local size: one small allgather at init (a rank's own
/// local and cross sizes cannot tell, e.g. hosts of 3, 1 and 2 ranks).
fn same_local_sizes(engine: &Engine, topo: crate::config::Topology) -> Result<bool> {
    if topo.size == 1 {
        return Ok(true);
    }
    let op = Op::allgather("hora.init.local_sizes", crate::types::DataType::I64, &[1]);
    let c = engine
        .submit(op, Some(Box::new(vec![topo.local_size as i64])))
        .wait()?;
    let sizes: Vec<i64> = c.output.map(|o| o.to_vec()).unwrap_or_default();
    Ok(sizes.windows(2).all(|w| w[0] == w[1]))
}

/// Stops hora (every process set's engine, then the global one); pending operations fail
/// with `ShutDown`.
pub fn shutdown() {
    let running = GLOBAL.write().take();
    if let Some(r) = running {
        for member in r.sets.lock().drain_members() {
            member.engine.shutdown();
        }
        r.engine.shutdown();
    }
}

/// Starts (or moves) the timeline to `path` on rank 0, marking coordinator rounds when
/// `mark_cycles`. Needs `HOROVOD_TIMELINE` set (to a path, or `DYNAMIC` to start none at
/// init), as in Horovod.
pub fn start_timeline(path: &std::path::Path, mark_cycles: bool) -> Result<()> {
    let g = GLOBAL.read();
    let r = g.as_ref().ok_or(Error::NotInitialized)?;
    if r.config.tuning.timeline.is_none() {
        return Err(Error::InvalidArgument {
            rank: r.config.topology.rank,
            tensor: String::new(),
            detail: "start_timeline needs HOROVOD_TIMELINE set when the job starts (a file \
                     path, or DYNAMIC to write nothing until start_timeline); horovodrun \
                     --timeline-filename sets it"
                .into(),
        });
    }
    r.engine.start_timeline(path.to_path_buf(), mark_cycles);
    Ok(())
}

/// Stops the timeline (closes its file); a no-op when none is being written.
pub fn stop_timeline() -> Result<()> {
    engine()?.stop_timeline();
    Ok(())
}

/// Whether every host runs the same number of ranks (decided once at init from every rank's
/// local size).
pub fn is_homogeneous() -> Result<bool> {
    let g = GLOBAL.read();
    Ok(g.as_ref().ok_or(Error::NotInitialized)?.homogeneous)
}

/// Whether `init` has run (and `shutdown` has not).
pub fn is_initialized() -> bool {
    GLOBAL.read().is_some()
}

/// The running engine.
pub fn engine() -> Result<Arc<Engine>> {
    GLOBAL
        .read()
        .as_ref()
        .map(|r| r.engine.clone())
        .ok_or(Error::NotInitialized)
}

/// The transport this process runs on, as chosen at `init`: `local`, `tcp`, `shm` (every rank on
/// this host), `tcp+shm hierarchical`, `mpi`.
pub fn transport_name() -> Result<&'static str> {
    GLOBAL
        .read()
        .as_ref()
        .map(|r| r.backend)
        .ok_or(Error::NotInitialized)
}

/// This process's rank.
pub fn rank() -> Result<usize> {
    Ok(engine()?.topology().rank)
}

/// Number of ranks.
pub fn size() -> Result<usize> {
    Ok(engine()?.topology().size)
}

/// Rank on this host.
pub fn local_rank() -> Result<usize> {
    Ok(engine()?.topology().local_rank)
}

/// Ranks on this host.
pub fn local_size() -> Result<usize> {
    Ok(engine()?.topology().local_size)
}

/// Index of this host.
pub fn cross_rank() -> Result<usize> {
    Ok(engine()?.topology().cross_rank)
}

/// Number of hosts.
pub fn cross_size() -> Result<usize> {
    Ok(engine()?.topology().cross_size)
}

fn shape_of<T>(v: &[T]) -> [u64; 1] {
    [v.len() as u64]
}

/// Starts an allreduce of `data`; the handle's completion holds the reduced `Vec<T>`.
pub fn allreduce_async<T: Element>(name: &str, data: Vec<T>, op: ReduceOp) -> Result<Handle> {
    allreduce_async_in(GLOBAL_ID, name, data, op)
}

/// [`allreduce_async`] among the ranks of process set `set`.
pub fn allreduce_async_in<T: Element>(
    set: u32,
    name: &str,
    data: Vec<T>,
    op: ReduceOp,
) -> Result<Handle> {
    let op = Op::allreduce(name, T::DTYPE, &shape_of(&data)).reduce_op(op);
    Ok(engine_for(set)?.submit(op, Some(Box::new(data))))
}

/// Allreduces `data` and returns the result.
pub fn allreduce<T: Element>(name: &str, data: Vec<T>, op: ReduceOp) -> Result<Vec<T>> {
    take_vec(allreduce_async(name, data, op)?)
}

/// [`allreduce`] among the ranks of process set `set`.
pub fn allreduce_in<T: Element>(
    set: u32,
    name: &str,
    data: Vec<T>,
    op: ReduceOp,
) -> Result<Vec<T>> {
    take_vec(allreduce_async_in(set, name, data, op)?)
}

/// Concatenates every rank's `data` (lengths may differ) in rank order.
pub fn allgather<T: Element>(name: &str, data: Vec<T>) -> Result<Vec<T>> {
    allgather_in(GLOBAL_ID, name, data)
}

/// [`allgather`] among the ranks of process set `set` (in their rank order).
pub fn allgather_in<T: Element>(set: u32, name: &str, data: Vec<T>) -> Result<Vec<T>> {
    let op = Op::allgather(name, T::DTYPE, &shape_of(&data));
    let c = engine_for(set)?.submit(op, Some(Box::new(data))).wait()?;
    Ok(c.output.map(|o| o.to_vec()).unwrap_or_default())
}

/// Copies `root`'s `data` to every rank.
pub fn broadcast<T: Element>(name: &str, data: Vec<T>, root: usize) -> Result<Vec<T>> {
    broadcast_in(GLOBAL_ID, name, data, root)
}

/// [`broadcast`] among the ranks of process set `set`; `root` is a global rank in the set
/// (as in Horovod).
pub fn broadcast_in<T: Element>(set: u32, name: &str, data: Vec<T>, root: usize) -> Result<Vec<T>> {
    let root = set_rank(set, root, name)?;
    let op = Op::broadcast(name, T::DTYPE, &shape_of(&data), root);
    take_vec(engine_for(set)?.submit(op, Some(Box::new(data))))
}

/// Sends `splits[d]` elements to rank `d` (empty = even split); returns what arrived and how
/// many elements came from each rank.
pub fn alltoall<T: Element>(
    name: &str,
    data: Vec<T>,
    splits: Vec<u64>,
) -> Result<(Vec<T>, Vec<u64>)> {
    alltoall_in(GLOBAL_ID, name, data, splits)
}

/// [`alltoall`] among the ranks of process set `set`: `splits[d]` goes to its `d`-th member.
pub fn alltoall_in<T: Element>(
    set: u32,
    name: &str,
    data: Vec<T>,
    splits: Vec<u64>,
) -> Result<(Vec<T>, Vec<u64>)> {
    let op = Op::alltoall(name, T::DTYPE, &shape_of(&data)).splits(splits);
    let c = engine_for(set)?.submit(op, Some(Box::new(data))).wait()?;
    Ok((
        c.output.map(|o| o.to_vec()).unwrap_or_default(),
        c.received_splits,
    ))
}

/// Reduces `data` and returns this rank's share (earlier ranks get one more when uneven).
pub fn reducescatter<T: Element>(name: &str, data: Vec<T>, op: ReduceOp) -> Result<Vec<T>> {
    reducescatter_in(GLOBAL_ID, name, data, op)
}

/// [`reducescatter`] among the ranks of process set `set`.
pub fn reducescatter_in<T: Element>(
    set: u32,
    name: &str,
    data: Vec<T>,
    op: ReduceOp,
) -> Result<Vec<T>> {
    let op = Op::reducescatter(name, T::DTYPE, &shape_of(&data)).reduce_op(op);
    let c = engine_for(set)?.submit(op, Some(Box::new(data))).wait()?;
    Ok(c.output.map(|o| o.to_vec()).unwrap_or_default())
}

/// Waits until every rank arrives.
pub fn barrier() -> Result<()> {
    engine()?.barrier()
}

/// Waits until every rank of process set `set` arrives.
pub fn barrier_in(set: u32) -> Result<()> {
    engine_for(set)?.barrier()
}

/// This rank is done; returns the last rank to join once all have.
pub fn join() -> Result<usize> {
    engine()?.join()
}

fn take_vec<T: Element>(h: Handle) -> Result<Vec<T>> {
    let name = h.name().to_string();
    let mut c = h.wait()?;
    c.take_data::<Vec<T>>()
        .ok_or_else(|| Error::Bug(format!("tensor '{name}' came back with another type")))
}
