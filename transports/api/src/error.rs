//! Errors a transport reports, each naming the peer involved where there is one.

use std::time::Duration;

use crate::Rank;

/// What went wrong while moving bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The connection to `peer` closed or broke (the peer process died, or the network dropped).
    #[error("connection to rank {peer} lost: {detail}")]
    ConnectionLost {
        /// The rank on the other end.
        peer: Rank,
        /// What the operating system or the protocol said.
        detail: String,
    },
    /// A deadline passed before the operation completed.
    #[error("timed out after {after:?} waiting for {what}{}", peer_suffix(*peer))]
    Timeout {
        /// The rank we were waiting on, when it is one rank.
        peer: Option<Rank>,
        /// How long we waited.
        after: Duration,
        /// What we were waiting for.
        what: String,
    },
    /// A connection did not prove it holds the job's secret.
    #[error("authentication failed{}: {detail}", peer_suffix(*peer))]
    AuthFailed {
        /// The rank it claimed to be, if it got that far.
        peer: Option<Rank>,
        /// Why it was rejected.
        detail: String,
    },
    /// An operating-system error.
    #[error("I/O error{}: {source}", peer_suffix(*peer))]
    Io {
        /// The peer whose connection failed, when known.
        peer: Option<Rank>,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The peer sent something that breaks the protocol (wrong length, bad header).
    #[error("protocol error with rank {peer}: {detail}")]
    Protocol {
        /// The peer that sent it.
        peer: Rank,
        /// What was wrong.
        detail: String,
    },
    /// The transport was aborted, locally or because a peer failed.
    #[error("transport aborted: {reason}")]
    Aborted {
        /// Why it was aborted.
        reason: String,
    },
    /// An operation named a rank outside `0..size`, or this rank itself.
    #[error("invalid peer {peer} (job size {size}, this rank {me})")]
    InvalidPeer {
        /// The rank that was named.
        peer: Rank,
        /// The job size.
        size: usize,
        /// This rank.
        me: Rank,
    },
}

impl TransportError {
    /// The peer this error is about, when it is about one.
    pub fn peer(&self) -> Option<Rank> {
        match self {
            Self::ConnectionLost { peer, .. } | Self::Protocol { peer, .. } => Some(*peer),
            Self::Timeout { peer, .. } | Self::AuthFailed { peer, .. } | Self::Io { peer, .. } => {
                *peer
            }
            Self::InvalidPeer { peer, .. } => Some(*peer),
            Self::Aborted { .. } => None,
        }
    }
}

fn peer_suffix(peer: Option<Rank>) -> String {
    match peer {
        Some(p) => format!(" (rank {p})"),
        None => String::new(),
    }
}
