//! Settings of one rank's TCP transport.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use hora_transport::Rank;

/// How one rank's [`TcpTransport`](crate::TcpTransport) listens, authenticates and waits.
#[derive(Clone)]
pub struct TcpConfig {
    /// This process's rank.
    pub rank: Rank,
    /// Number of ranks in the job.
    pub size: usize,
    /// The job secret every peer must prove it holds.
    pub secret: Vec<u8>,
    /// The only address the listener binds (never the wildcard unless asked for).
    pub bind_ip: IpAddr,
    /// Budget for connecting to one peer and completing the handshake, in both directions.
    pub connect_timeout: Duration,
    /// How long a wait busy-polls before it sleeps in `poll(2)`.
    pub spin: Duration,
    /// A peer whose link is silent this long is declared lost (TCP keepalive probes and
    /// TCP_USER_TIMEOUT on every connection); `None` leaves the kernel defaults (hours).
    pub peer_timeout: Option<Duration>,
    /// Send and receive buffer size of every connection; `None` leaves the kernel's
    /// autotuning, which measured as fast or faster on loopback.
    pub sockbuf: Option<usize>,
}

impl TcpConfig {
    /// Default connect + handshake budget.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default busy-poll time before sleeping.
    pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);
    /// Default silent-peer timeout.
    pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(20);

    /// A config listening on 127.0.0.1 with the default timeouts.
    pub fn new(rank: Rank, size: usize, secret: Vec<u8>) -> Self {
        Self {
            rank,
            size,
            secret,
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            spin: Self::DEFAULT_SPIN,
            peer_timeout: Some(Self::DEFAULT_PEER_TIMEOUT),
            sockbuf: None,
        }
    }
}

impl fmt::Debug for TcpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret stays out of logs.
        f.debug_struct("TcpConfig")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("secret", &format_args!("<{} bytes>", self.secret.len()))
            .field("bind_ip", &self.bind_ip)
            .field("connect_timeout", &self.connect_timeout)
            .field("spin", &self.spin)
            .field("peer_timeout", &self.peer_timeout)
            .field("sockbuf", &self.sockbuf)
            .finish()
    }
}
