//! Mutual proof of the job secret, used by every hora connection (rank to rank, rank to store).
//!
//! How it works: each side sends a fresh 32-byte nonce; each proves it knows the secret by
//! sending an HMAC-SHA256 over both nonces, both identities, the connection's purpose and its own
//! role. Neither side sends anything else before the other side's proof checks out, so a
//! stranger learns nothing and gets nothing; nonces make replayed proofs useless. The secret
//! itself never crosses the wire.
//!
//! Wire (all integers little-endian):
//! ```text
//! client → server  b"HORA" ver:u8 purpose:u8 client_id:u64 client_nonce:[32]
//! server → client  b"HORA" ver:u8 server_id:u64 server_nonce:[32] server_proof:[32]
//! client → server  client_proof:[32]
//! server → client  b"OK"
//! ```

use std::io::{Read, Write};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const MAGIC: &[u8; 4] = b"HORA";
const VERSION: u8 = 1;
const NONCE: usize = 32;
const PROOF: usize = 32;

/// What a connection is for; a proof made for one purpose is useless for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Purpose {
    /// A rank-to-rank data connection.
    Peer = 1,
    /// A connection to the rendezvous store.
    Store = 2,
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The other side does not speak hora's protocol (or another version of it).
    #[error("not a hora peer: {0}")]
    BadHello(String),
    /// The other side could not prove it holds the job secret.
    #[error("the other side does not hold the job secret")]
    BadProof,
    /// The connection failed or timed out mid-handshake.
    #[error("handshake I/O: {0}")]
    Io(#[from] std::io::Error),
}

fn proof(
    secret: &[u8],
    role: &[u8],
    purpose: u8,
    nonces: (&[u8], &[u8]),
    ids: (u64, u64),
) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(role);
    mac.update(&[VERSION, purpose]);
    mac.update(nonces.0);
    mac.update(nonces.1);
    mac.update(&ids.0.to_le_bytes());
    mac.update(&ids.1.to_le_bytes());
    mac
}

fn nonce() -> [u8; NONCE] {
    let mut n = [0u8; NONCE];
    getrandom::fill(&mut n).expect("the OS random source failed");
    n
}

/// Runs the client side on a connected stream (with timeouts already set by the caller).
/// Returns the server's id once both sides have proven the secret.
pub fn client<S: Read + Write>(
    stream: &mut S,
    secret: &[u8],
    purpose: Purpose,
    my_id: u64,
) -> Result<u64, HandshakeError> {
    let my_nonce = nonce();
    let mut hello = Vec::with_capacity(4 + 2 + 8 + NONCE);
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&[VERSION, purpose as u8]);
    hello.extend_from_slice(&my_id.to_le_bytes());
    hello.extend_from_slice(&my_nonce);
    stream.write_all(&hello)?;

    let mut reply = [0u8; 4 + 1 + 8 + NONCE + PROOF];
    stream.read_exact(&mut reply)?;
    if &reply[..4] != MAGIC || reply[4] != VERSION {
        return Err(HandshakeError::BadHello(format!(
            "unexpected greeting {:02x?}",
            &reply[..5]
        )));
    }
    let server_id = u64::from_le_bytes(reply[5..13].try_into().unwrap());
    let server_nonce = &reply[13..13 + NONCE];
    let server_proof = &reply[13 + NONCE..];
    let nonces = (&my_nonce[..], server_nonce);
    proof(secret, b"server", purpose as u8, nonces, (my_id, server_id))
        .verify_slice(server_proof)
        .map_err(|_| HandshakeError::BadProof)?;

    let mine = proof(secret, b"client", purpose as u8, nonces, (my_id, server_id));
    stream.write_all(&mine.finalize().into_bytes())?;
    let mut ok = [0u8; 2];
    stream.read_exact(&mut ok)?;
    if &ok != b"OK" {
        return Err(HandshakeError::BadProof);
    }
    Ok(server_id)
}

/// Runs the server side on an accepted stream (with timeouts already set by the caller).
/// Returns the client's id once both sides have proven the secret; on failure the caller
/// should close the stream (nothing has been revealed).
pub fn server<S: Read + Write>(
    stream: &mut S,
    secret: &[u8],
    purpose: Purpose,
    my_id: u64,
) -> Result<u64, HandshakeError> {
    let mut hello = [0u8; 4 + 2 + 8 + NONCE];
    // Check the greeting before waiting for the rest, so a stray client is dropped at once.
    stream.read_exact(&mut hello[..6])?;
    if &hello[..4] != MAGIC || hello[4] != VERSION {
        return Err(HandshakeError::BadHello(format!(
            "unexpected greeting {:02x?}",
            &hello[..5]
        )));
    }
    stream.read_exact(&mut hello[6..])?;
    if hello[5] != purpose as u8 {
        return Err(HandshakeError::BadHello(format!(
            "connection is for purpose {}, this endpoint serves {}",
            hello[5], purpose as u8
        )));
    }
    let client_id = u64::from_le_bytes(hello[6..14].try_into().unwrap());
    let client_nonce = &hello[14..];
    let my_nonce = nonce();
    let nonces = (client_nonce, &my_nonce[..]);
    let mine = proof(secret, b"server", purpose as u8, nonces, (client_id, my_id));
    let mut reply = Vec::with_capacity(4 + 1 + 8 + NONCE + PROOF);
    reply.extend_from_slice(MAGIC);
    reply.push(VERSION);
    reply.extend_from_slice(&my_id.to_le_bytes());
    reply.extend_from_slice(&my_nonce);
    reply.extend_from_slice(&mine.finalize().into_bytes());
    stream.write_all(&reply)?;

    let mut theirs = [0u8; PROOF];
    stream.read_exact(&mut theirs)?;
    proof(secret, b"client", purpose as u8, nonces, (client_id, my_id))
        .verify_slice(&theirs)
        .map_err(|_| HandshakeError::BadProof)?;
    stream.write_all(b"OK")?;
    Ok(client_id)
}

#[cfg(test)]
mod tests;
