//! # hora: the engine
//!
//! ## Design overview
//! (Being written.)

// pub mod api; (waits for hora-tcp)
pub mod collectives;
pub mod coordinator;
pub mod config;
pub mod engine;
pub mod error;
pub mod handle;
mod logging;
pub mod reduce;
pub mod rendezvous;
// pub mod transport_select; (waits for hora-tcp)
pub mod types;
pub mod wire;
pub use engine::{Engine, OpOptions};
pub use error::{Error, Result};
pub use handle::{Completion, Element, Handle, TensorData};
pub use types::{CollectiveKind, DataType, ReduceOp};
