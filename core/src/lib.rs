//! # hora: the engine
//!
//! ## Design overview
//! (Being written.)

pub mod config;
pub mod error;
pub mod types;
pub use error::{Error, Result};
pub use types::{CollectiveKind, DataType, ReduceOp};
