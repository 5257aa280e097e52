//! # hora: the engine
//!
//! ## Design overview
//! (Being written.)

pub mod types;
pub use types::{CollectiveKind, DataType, ReduceOp};
