//! # hora: the engine
//!
//! ## Design overview
//! (Being written.)

pub mod collectives;
pub mod config;
pub mod error;
pub mod reduce;
pub mod rendezvous;
pub mod types;
pub use error::{Error, Result};
pub use types::{CollectiveKind, DataType, ReduceOp};
