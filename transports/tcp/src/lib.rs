//! # hora-tcp: the TCP transport
//!
//! ## Design overview
//! [`TcpTransport`] implements [`hora_transport::Transport`] over TCP, one rank per process.
//!
//! - **Connections.** Each rank listens on `bind_ip:0` and publishes the address in a
//!   [`PeerDirectory`]. A pair of ranks shares one connection, dialed the first time one of them
//!   sends to the other (no full mesh at start-up). Every connection proves the job secret both
//!   ways ([`handshake`]) before anything else crosses it; strangers are logged and dropped. When
//!   both ranks dial at once, the lower rank's connection wins (see the `connect` module).
//!   [`TcpTransport::connect_to`] dials ahead of use (hora's ranks dial rank 0 at init).
//! - **Accepting** runs on a current-thread tokio runtime on its own thread; each handshake runs
//!   with a timeout on tokio's blocking pool, so a silent stranger cannot stall real peers.
//! - **Moving bytes** does not involve tokio or any other thread: `progress` and `wait` do
//!   non-blocking `recv`/`sendmsg` on the caller's thread; between rounds a wait busy-polls the
//!   sockets' readiness with a zero-timeout `ppoll(2)` for [`TcpConfig::spin`] (yielding every
//!   other round), then sleeps in `ppoll` on the sockets and an eventfd. A thread wake-up costs
//!   tens of microseconds on small VMs, more than a whole small-message round trip, so the data
//!   path never hands work to another thread. One wait moves sends and receives with different
//!   peers together (full duplex).
//! - **Framing.** A message is a 16-byte header (`tag`, `len`, little-endian) and its payload.
//!   Receives match by (peer, tag); a payload whose receive is waiting lands directly in the
//!   caller's buffer, anything else waits in a per-(peer, tag) FIFO. See the `peer` module for
//!   the exact rules, including what happens when an op is abandoned half way.
//! - **Failures.** A closed or reset connection fails every operation involving that peer with
//!   `ConnectionLost` (after delivering what had fully arrived), and `recv_msg(None, ..)` fails
//!   when any peer is lost, so a coordinator notices a dead rank; `abort` shuts every socket
//!   down so peers notice at once; every wait honours its deadline. A rank that died before
//!   anyone connected to it has no socket to hang up: a wait for bytes from a peer without a
//!   connection dials it after a second, and a refused dial (its listener is gone) is
//!   `ConnectionLost` naming it, remembered like a hang-up; so is a dial the peer hangs up on.
//! - **Caveats.** Dialing happens inside the first `progress`/`wait`/`send_msg` that needs the
//!   peer (or a wait that has waited a second to receive from it), so that call may block for up to [`TcpConfig::connect_timeout`] (or the wait's
//!   deadline). A send op started by `progress` owns its connection's outgoing stream until it
//!   completes: later `send_msg` bytes to that peer queue behind it, and a call that sends to
//!   that peer *without* the op declares the connection lost rather than corrupt the stream.
//!   Drive started ops to completion.
//!
//! What this crate does *not* do: it does not reconnect a lost peer (a job with a dead rank is
//! over), it does not encrypt traffic (the handshake authenticates; use a private network),
//! it does not run rendezvous itself (the [`PeerDirectory`] is supplied by the caller), and it
//! does not use more than one connection per pair or bind a wildcard address unless configured.
//!
//! It reads no environment variables: everything comes in [`TcpConfig`], which `hora` fills from
//! its settings. [`TcpConfig::sockbuf`] (hora: `HORA_TCP_SOCKBUF`) sets SO_SNDBUF/SO_RCVBUF
//! explicitly; by default the kernel's autotuning is kept, which measured as fast or faster on
//! loopback.

// Every `unsafe` of the crate is in `sys`, which says why each call is sound.
#![deny(unsafe_code)]

mod config;
mod connect;
mod directory;
mod frame;
pub use hora_transport::handshake;
mod peer;
#[allow(unsafe_code)]
mod sys;
mod transport;

pub use config::TcpConfig;
pub use directory::{MemoryDirectory, PeerDirectory};
pub use transport::TcpTransport;
