//! # hora-tcp: the TCP transport
//!
//! ## Design overview
//! (Being written.) Authenticated connections, one per peer pair, made on first use.

pub mod handshake;
