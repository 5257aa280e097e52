//! Versioned framing of the coordinator's control messages.
//!
//! A frame is one version byte followed by the postcard encoding of an
//! [`crate::coordinator::UpMsg`] or [`crate::coordinator::DownMsg`]. Decoding is
//! total: any byte string yields a message or a [`WireError`], never a panic. A forged length
//! prefix cannot make it allocate much: strings are bounded by the bytes left, and serde caps
//! the up-front capacity of a sequence (about 1 MiB) whatever length it claims.
//! A frame must be consumed exactly; trailing bytes are an error, so a truncated or glued frame
//! is caught here rather than misread.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::coordinator::{DownMsg, UpMsg};

/// The format version this build speaks; bump it on any change to the message types.
pub const VERSION: u8 = 3;

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The frame has no bytes at all.
    #[error("empty control frame")]
    Empty,
    /// The peer speaks another format version (mixed hora builds in one job).
    #[error(
        "control frame has format version {got}, this build speaks {expected}: are all ranks running the same hora version?"
    )]
    Version {
        /// The version byte received.
        got: u8,
        /// The version this build speaks.
        expected: u8,
    },
    /// The body is not a valid message.
    #[error("malformed control frame: {0}")]
    Malformed(String),
    /// A valid message followed by extra bytes.
    #[error("control frame has {0} trailing bytes")]
    Trailing(usize),
}

fn encode<T: Serialize>(m: &T) -> Vec<u8> {
    let out = vec![VERSION];
    // Serialising into a Vec only fails for types postcard cannot express, which ours are not.
    match postcard::to_extend(m, out) {
        Ok(v) => v,
        Err(e) => unreachable!("control messages always serialise: {e}"),
    }
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, WireError> {
    let (&version, body) = b.split_first().ok_or(WireError::Empty)?;
    if version != VERSION {
        return Err(WireError::Version {
            got: version,
            expected: VERSION,
        });
    }
    let (msg, rest) =
        postcard::take_from_bytes(body).map_err(|e| WireError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::Trailing(rest.len()));
    }
    Ok(msg)
}

/// Encodes a rank → coordinator message.
pub fn encode_up(m: &UpMsg) -> Vec<u8> {
    encode(m)
}

/// Decodes a rank → coordinator message.
pub fn decode_up(b: &[u8]) -> Result<UpMsg, WireError> {
    decode(b)
}

/// Encodes a coordinator → rank message.
pub fn encode_down(m: &DownMsg) -> Vec<u8> {
    encode(m)
}

/// Decodes a coordinator → rank message.
pub fn decode_down(b: &[u8]) -> Result<DownMsg, WireError> {
    decode(b)
}

#[cfg(test)]
mod tests;
