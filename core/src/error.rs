//! `hora::Error`: every failure a caller can see, with the rank, the tensor and the cause.

use std::sync::Arc;

use hora_transport::{CollectiveError, TransportError};

/// Result alias for hora's public API.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, and where.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The process was not started by a launcher, so it does not know its rank or peers.
    #[error("hora was not launched: {hint}")]
    NotLaunched {
        /// What to do about it.
        hint: String,
    },
    /// A setting has a value hora cannot use.
    #[error("invalid value {value:?} for {var}: {reason}")]
    InvalidConfig {
        /// The environment variable (or flag).
        var: String,
        /// The offending value (redacted for secrets).
        value: String,
        /// What is accepted.
        reason: String,
    },
    /// Ranks submitted the same tensor name with different parameters.
    #[error("rank {rank}: mismatched collective for tensor '{tensor}' ({field}): {detail}")]
    Mismatch {
        /// The rank reporting the error.
        rank: usize,
        /// The tensor name.
        tensor: String,
        /// Which parameter differs (shape, dtype, op, ...).
        field: String,
        /// Each rank's value.
        detail: String,
    },
    /// Moving bytes failed (a peer died, a connection broke, a deadline passed).
    #[error(
        "rank {rank}: {op} failed{}: {cause}",
        if tensor.is_empty() { String::new() } else { format!(" (tensors: {tensor})") }
    )]
    Transport {
        /// The rank reporting the error.
        rank: usize,
        /// What was running.
        op: String,
        /// The tensor(s) involved, comma-separated (empty when none was pending).
        tensor: String,
        /// The transport's account, or the reason the lost peer gave for stopping ("rank 2
        /// stopped: connection to rank 3 lost").
        cause: String,
        /// The peer involved, when known.
        peer: Option<usize>,
        /// The transport failure itself.
        #[source]
        source: Arc<TransportError>,
    },
    /// The engine is shut down (locally or because another rank shut down or failed).
    #[error("rank {rank}: hora is shut down{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    ShutDown {
        /// The rank reporting the error.
        rank: usize,
        /// Why, when known.
        reason: Option<String>,
    },
    /// A call's arguments are invalid (wrong length, duplicate name, bad root...).
    #[error("rank {rank}: invalid argument for tensor '{tensor}': {detail}")]
    InvalidArgument {
        /// The rank reporting the error.
        rank: usize,
        /// The tensor name.
        tensor: String,
        /// What is wrong.
        detail: String,
    },
    /// Finding the other ranks failed.
    #[error("rank {rank}: rendezvous failed: {detail}")]
    Rendezvous {
        /// The rank reporting the error.
        rank: usize,
        /// What failed.
        detail: String,
    },
    /// `init` has not been called (or `shutdown` was).
    #[error("hora is not initialized: call hora::init() first")]
    NotInitialized,
    /// A wait on a handle passed its deadline; the operation is still running.
    #[error("timed out waiting for tensor '{tensor}'")]
    WaitTimeout {
        /// The tensor name.
        tensor: String,
    },
    /// An internal invariant broke; please report it.
    #[error("internal error (a hora bug): {0}")]
    Bug(String),
}

impl Error {
    /// Wraps a transport failure with the rank, operation and tensor it hit.
    pub fn transport(
        rank: usize,
        op: &str,
        tensor: &str,
        failure: impl Into<Arc<TransportError>>,
    ) -> Self {
        let source = failure.into();
        Self::Transport {
            rank,
            op: op.to_string(),
            tensor: tensor.to_string(),
            cause: source.to_string(),
            peer: source.peer(),
            source,
        }
    }

    /// A collective's failure as the caller sees it: a caller's mistake is
    /// [`InvalidArgument`](Self::InvalidArgument), a transport failure
    /// [`Transport`](Self::Transport) with the failure kept as its source.
    pub fn collective(rank: usize, op: &str, tensor: &str, failure: CollectiveError) -> Self {
        match failure {
            CollectiveError::Transport(e) => Self::transport(rank, op, tensor, e),
            other => Self::InvalidArgument {
                rank,
                tensor: tensor.to_string(),
                detail: format!("{op}: {other}"),
            },
        }
    }

    /// The same failure, reported for another operation and tensor(s) (one failed fused
    /// collective fails each of its tensors); errors naming no tensor are returned as they are.
    pub fn for_tensor(&self, op: &str, tensor: &str) -> Self {
        match self {
            Self::Transport {
                rank,
                cause,
                peer,
                source,
                ..
            } => Self::Transport {
                rank: *rank,
                op: op.to_string(),
                tensor: tensor.to_string(),
                cause: cause.clone(),
                peer: *peer,
                source: source.clone(),
            },
            Self::InvalidArgument { rank, detail, .. } => Self::InvalidArgument {
                rank: *rank,
                tensor: tensor.to_string(),
                detail: detail.clone(),
            },
            other => other.clone(),
        }
    }

    /// The peer a transport failure is about, when known.
    pub fn peer(&self) -> Option<usize> {
        match self {
            Self::Transport { peer, .. } => *peer,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
