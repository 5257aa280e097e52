//! # hora: the engine
//!
//! ## Design overview
//! Each process runs one [`Engine`]: a background thread that takes operations enqueued by
//! the caller (who gets a [`Handle`] at once), agrees with the other ranks on what to run,
//! and runs it. Rank 0 also hosts the [`coordinator`], a sans-IO state machine that checks
//! that every rank submitted the same tensor with matching dtype, shape, op and root, fuses
//! ready allreduces, and answers repeated tensors through a response cache. The engine is
//! event-driven: a tensor goes to the coordinator the moment it is enqueued, so an idle job
//! runs a small allreduce in one round trip plus the data exchange.
//!
//! The [`collectives`] are generic over `hora_transport::Transport`; the backend (a transport
//! and the collectives run on it) is chosen once, at init, in [`backend`], the only module
//! naming concrete backends. Reductions live in [`reduce`].
//!
//! What this crate does *not* do: launch processes (that is `horovodrun`), know anything about
//! a framework's tensors (bindings lend their memory through [`TensorData`]), or move bytes
//! itself (transports do).

// The only `unsafe`: getifaddrs in `config::net` (std has no interface list) and one clock
// read in the test-support conformance table.
#![deny(unsafe_code)]

pub mod api;
pub mod autotune;
pub mod backend;
pub mod build_info;
pub mod collectives;
pub mod config;
pub mod coordinator;
pub mod engine;
pub mod error;
mod fasthash;
pub mod handle;
mod logging;
pub mod process_set;
pub mod rendezvous;
pub mod timeline;

pub mod types;
pub mod wire;
pub use api::{
    allgather, allreduce, allreduce_async, alltoall, barrier, broadcast, cross_rank, cross_size,
    init, is_initialized, join, local_rank, local_size, rank, reducescatter, shutdown, size,
};
pub use build_info::{BuildInfo, build_info};
pub use engine::{Engine, OpOptions};
pub use error::{Error, Result};
pub use handle::{Completion, Element, Handle, TensorData};
/// Element-wise reductions (the kernels live in the backend contract crate).
pub use hora_transport::reduce;
pub use process_set::ProcessSet;
pub use types::{CollectiveKind, DataType, ReduceOp};
