//! # hora-mpi: MPI as a hora transport
//!
//! With the `mpi` cargo feature this crate provides `MpiTransport`, the [`Transport`] trait
//! over MPI point-to-point messages (`MPI_Isend`/`MPI_Irecv` driven by `MPI_Test`, so every
//! wait keeps the trait's deadlines, abort and wake-ups), `Comm`, the communicator handle with
//! MPI's blocking collectives (`MPI_Allreduce` in place, `MPI_Bcast`, `MPI_Allgatherv`, ...),
//! and `MpiCollectives`, which offers those to hora's engine as a native backend
//! (`hora_transport::Collectives`). Rank, size and the local layout come from MPI itself, so a
//! job under `mpirun` needs no rendezvous store.
//!
//! Without the feature only [`mod@env`] and [`mod@mpirun`] are built: the first tells whether
//! this process was started by an MPI launcher, which the engine needs to choose a transport
//! and explain what is missing; the second finds `mpirun` and tells Open MPI's from MPICH's.
//! The default build therefore needs neither an MPI library nor libclang.
//!
//! [`Transport`]: hora_transport::Transport

pub mod env;
pub mod mpirun;

#[cfg(feature = "mpi")]
mod collectives;
#[cfg(feature = "mpi")]
mod comm;
#[cfg(feature = "mpi")]
mod init;
#[cfg(feature = "mpi")]
mod transport;

#[cfg(feature = "mpi")]
pub use collectives::MpiCollectives;
#[cfg(feature = "mpi")]
pub use comm::{Comm, MpiOp, MpiType};
#[cfg(feature = "mpi")]
pub use init::{finalize, initialize, library_version};
#[cfg(feature = "mpi")]
pub use transport::MpiTransport;

/// Whether this build has the MPI transport (the `mpi` cargo feature).
pub const ENABLED: bool = cfg!(feature = "mpi");
