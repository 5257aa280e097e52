//! The frame header that precedes every message on a peer connection (pure, no I/O).
//!
//! Wire: `tag: u64 LE` then `len: u64 LE`, then `len` payload bytes. Fixed-size ops and
//! variable-length control messages share this framing, so one connection carries both.

use hora_transport::Tag;

/// Bytes in an encoded header.
pub(crate) const HEADER_LEN: usize = 16;

/// Largest payload a header may announce. Far above any real message, low enough that a
/// corrupted length is caught before anything tries to allocate it.
pub(crate) const MAX_PAYLOAD: u64 = 1 << 40;

/// One decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// The message tag.
    pub(crate) tag: Tag,
    /// Payload length in bytes.
    pub(crate) len: usize,
}

impl Header {
    /// Encodes the header for the wire.
    pub(crate) fn encode(self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..8].copy_from_slice(&self.tag.0.to_le_bytes());
        out[8..].copy_from_slice(&(self.len as u64).to_le_bytes());
        out
    }

    /// Decodes a header, refusing lengths no sender could have meant.
    pub(crate) fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Self, String> {
        let tag = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        let len = u64::from_le_bytes(bytes[8..].try_into().expect("8 bytes"));
        if len > MAX_PAYLOAD {
            return Err(format!(
                "frame announces {len} payload bytes (limit {MAX_PAYLOAD})"
            ));
        }
        let len = usize::try_from(len)
            .map_err(|_| format!("frame length {len} does not fit in memory"))?;
        Ok(Self { tag: Tag(tag), len })
    }
}

#[cfg(test)]
mod tests;
