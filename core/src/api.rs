//! The process-wide API (`hora::init`, `hora::allreduce`, ...), over one global engine.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::backend::KeepAlive;
use crate::config::Config;
use crate::engine::{Engine, Op};
use crate::error::{Error, Result};
use crate::handle::{Element, Handle};
use crate::types::ReduceOp;

/// The process-wide engine slot: the engine, and what its backend needs kept alive.
static GLOBAL: RwLock<Option<Running>> = RwLock::new(None);
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// A started engine with the name of its backend and what must outlive its transport.
struct Running {
    engine: Arc<Engine>,
    backend: &'static str,
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
    let mut global = GLOBAL.write();
    if global.is_some() {
        return Ok(());
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
    *global = Some(Running {
        engine: Arc::new(engine),
        backend: connected.name,
        _keep_alive: connected.keep_alive,
    });
    Ok(())
}

/// Stops hora; pending operations fail with `ShutDown`.
pub fn shutdown() {
    let running = GLOBAL.write().take();
    if let Some(r) = running {
        r.engine.shutdown();
    }
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
    let op = Op::allreduce(name, T::DTYPE, &shape_of(&data)).reduce_op(op);
    Ok(engine()?.submit(op, Some(Box::new(data))))
}

/// Allreduces `data` and returns the result.
pub fn allreduce<T: Element>(name: &str, data: Vec<T>, op: ReduceOp) -> Result<Vec<T>> {
    take_vec(allreduce_async(name, data, op)?)
}

/// Concatenates every rank's `data` (lengths may differ) in rank order.
pub fn allgather<T: Element>(name: &str, data: Vec<T>) -> Result<Vec<T>> {
    let op = Op::allgather(name, T::DTYPE, &shape_of(&data));
    let c = engine()?.submit(op, Some(Box::new(data))).wait()?;
    Ok(c.output.map(|o| o.to_vec()).unwrap_or_default())
}

/// Copies `root`'s `data` to every rank.
pub fn broadcast<T: Element>(name: &str, data: Vec<T>, root: usize) -> Result<Vec<T>> {
    let op = Op::broadcast(name, T::DTYPE, &shape_of(&data), root);
    take_vec(engine()?.submit(op, Some(Box::new(data))))
}

/// Sends `splits[d]` elements to rank `d` (empty = even split); returns what arrived and how
/// many elements came from each rank.
pub fn alltoall<T: Element>(
    name: &str,
    data: Vec<T>,
    splits: Vec<u64>,
) -> Result<(Vec<T>, Vec<u64>)> {
    let op = Op::alltoall(name, T::DTYPE, &shape_of(&data)).splits(splits);
    let c = engine()?.submit(op, Some(Box::new(data))).wait()?;
    Ok((
        c.output.map(|o| o.to_vec()).unwrap_or_default(),
        c.received_splits,
    ))
}

/// Reduces `data` and returns this rank's share (earlier ranks get one more when uneven).
pub fn reducescatter<T: Element>(name: &str, data: Vec<T>, op: ReduceOp) -> Result<Vec<T>> {
    let op = Op::reducescatter(name, T::DTYPE, &shape_of(&data)).reduce_op(op);
    let c = engine()?.submit(op, Some(Box::new(data))).wait()?;
    Ok(c.output.map(|o| o.to_vec()).unwrap_or_default())
}

/// Waits until every rank arrives.
pub fn barrier() -> Result<()> {
    engine()?.barrier()
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
