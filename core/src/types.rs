//! The vocabulary shared by every layer: element types, reduction ops (both defined by the
//! backend contract in `hora_transport`, so backends reduce without knowing the engine) and
//! collective kinds.

use std::fmt;

use serde::{Deserialize, Serialize};

pub use hora_transport::{DataType, ReduceOp};

/// Which collective a request or response is for.
///
/// The discriminant is the kind's stable code, shared with the Python faces
/// (`hora._core.KINDS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum CollectiveKind {
    /// Reduce across ranks; every rank gets the result.
    Allreduce = 0,
    /// Concatenate every rank's tensor along the first dimension.
    Allgather = 1,
    /// Copy the root's tensor to every rank.
    Broadcast = 2,
    /// Every rank sends a slice (rows) to every other rank.
    Alltoall = 3,
    /// Reduce, then each rank keeps one slice of the first dimension.
    Reducescatter = 4,
    /// Wait until every rank arrives.
    Barrier = 5,
    /// This rank has no more work; take part with neutral input until all have joined.
    Join = 6,
}

impl CollectiveKind {
    /// Every kind, in code order.
    pub const ALL: [Self; 7] = [
        Self::Allreduce,
        Self::Allgather,
        Self::Broadcast,
        Self::Alltoall,
        Self::Reducescatter,
        Self::Barrier,
        Self::Join,
    ];

    /// The stable code of this kind (its discriminant).
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The kind with stable code `code`, if there is one.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The lower-case name used in messages and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Allreduce => "allreduce",
            Self::Allgather => "allgather",
            Self::Broadcast => "broadcast",
            Self::Alltoall => "alltoall",
            Self::Reducescatter => "reducescatter",
            Self::Barrier => "barrier",
            Self::Join => "join",
        }
    }
}

impl fmt::Display for CollectiveKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_codes_are_stable_and_round_trip() {
        for (i, k) in CollectiveKind::ALL.into_iter().enumerate() {
            assert_eq!(k.code() as usize, i);
            assert_eq!(CollectiveKind::from_code(k.code()), Some(k));
        }
        assert_eq!(CollectiveKind::from_code(7), None);
    }
}
