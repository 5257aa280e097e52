//! # hora-transport: the backend contract
//!
//! ## Design overview
//! Everything a backend crate (tcp, shm, mpi, and later nccl or verbs) needs to plug into
//! hora, and nothing of the engine: [`Transport`], which moves byte buffers between ranks of
//! one job; [`Collectives`], which a backend with collectives of its own implements (it may
//! run only some calls and leave the rest to hora's ring, see [`Collectives::runs`]); the
//! element vocabulary ([`DataType`], [`ReduceOp`], with stable codes) and the reduction
//! kernels ([`reduce`]) such a backend reduces with; and the job-secret [`handshake`] every
//! connection between ranks, or to the rendezvous store, starts with. A transport does not
//! know what a tensor or a collective is; algorithms in `hora` are written against
//! [`Transport`] and never against a concrete transport.
//!
//! The contract:
//! - **Operations carry their own progress.** An [`Op`] is a send or a receive of one message with
//!   a [`Tag`]; it borrows the caller's buffer and records how many bytes have moved. A transport
//!   only touches a buffer while the caller is inside [`Transport::progress`] or
//!   [`Transport::wait`] with that op in the slice, so the API is safe without `unsafe` or `'static`
//!   buffers, and dropping an op can never leave a dangling pointer behind.
//! - **Full duplex.** One `wait` call may hold a send to one peer and a receive from another; the
//!   transport moves both at once, so a ring step never deadlocks on buffers larger than the
//!   kernel's socket buffers.
//! - **Ordering.** Messages between one ordered pair of ranks with the same tag arrive in the order
//!   they were sent. Messages with different tags may be matched in any order.
//! - **Message sizes.** A receive op must be exactly as long as the matching send; a mismatch is a
//!   [`TransportError::Protocol`]. Variable-length control messages use
//!   [`Transport::send_msg`]/[`Transport::recv_msg`].
//! - **Deadlines.** No wait is unbounded: every blocking call takes a deadline and fails with
//!   [`TransportError::Timeout`] after it. [`Transport::abort`] wakes every waiter with
//!   [`TransportError::Aborted`].
//!
//! What this crate does *not* do: connection set-up across machines, authentication or
//! rendezvous (those belong to each concrete transport and to `hora`'s store).

#![forbid(unsafe_code)]

mod collectives;
mod error;
pub mod handshake;
mod local;
mod op;
pub mod reduce;
mod spin;
mod transport;
mod types;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use collectives::{Call, CollectiveError, Collectives};
pub use error::TransportError;
pub use local::LocalTransport;
pub use op::{Op, OpKind};
pub use spin::AdaptiveSpin;
pub use transport::{Capabilities, Rank, Tag, Transport, Waker, deadline_after};
pub use types::{DataType, ReduceOp};
