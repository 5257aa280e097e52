//! The vocabulary shared by every layer: element types, reduction ops, collective kinds.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Element type of a tensor. The discriminants are stable codes shared with the faces (C, Python).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum DataType {
    /// Unsigned 8-bit integer.
    U8 = 0,
    /// Signed 8-bit integer.
    I8 = 1,
    /// Signed 32-bit integer.
    I32 = 2,
    /// Signed 64-bit integer.
    I64 = 3,
    /// IEEE 754 half precision.
    F16 = 4,
    /// bfloat16 (8-bit exponent, 7-bit mantissa).
    Bf16 = 5,
    /// IEEE 754 single precision.
    F32 = 6,
    /// IEEE 754 double precision.
    F64 = 7,
}

impl DataType {
    /// Every supported type, in a stable order.
    pub const ALL: [Self; 8] = [
        Self::U8,
        Self::I8,
        Self::I32,
        Self::I64,
        Self::F16,
        Self::Bf16,
        Self::F32,
        Self::F64,
    ];

    /// Size of one element in bytes.
    pub const fn size(self) -> usize {
        match self {
            Self::U8 | Self::I8 => 1,
            Self::F16 | Self::Bf16 => 2,
            Self::I32 | Self::F32 => 4,
            Self::I64 | Self::F64 => 8,
        }
    }

    /// The lower-case name users type (`f32`, `bf16`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Self::U8 => "u8",
            Self::I8 => "i8",
            Self::I32 => "i32",
            Self::I64 => "i64",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
            Self::F32 => "f32",
            Self::F64 => "f64",
        }
    }

    /// True for floating-point types.
    pub const fn is_float(self) -> bool {
        matches!(self, Self::F16 | Self::Bf16 | Self::F32 | Self::F64)
    }

    /// The stable code the C ABI and `hora._core` use for this type.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The type with this [`code`](Self::code), if any.
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::U8,
            1 => Self::I8,
            2 => Self::I32,
            3 => Self::I64,
            4 => Self::F16,
            5 => Self::Bf16,
            6 => Self::F32,
            7 => Self::F64,
            _ => return None,
        })
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DataType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = match s.to_ascii_lowercase().as_str() {
            "u8" | "uint8" => Self::U8,
            "i8" | "int8" => Self::I8,
            "i32" | "int32" => Self::I32,
            "i64" | "int64" => Self::I64,
            "f16" | "float16" | "half" => Self::F16,
            "bf16" | "bfloat16" => Self::Bf16,
            "f32" | "float32" | "float" => Self::F32,
            "f64" | "float64" | "double" => Self::F64,
            _ => {
                return Err(format!(
                    "unknown dtype {s:?}; accepted: u8, i8, i32, i64, f16, bf16, f32, f64"
                ));
            }
        };
        Ok(t)
    }
}

/// How allreduce and reducescatter combine values. The discriminants are Horovod's op codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum ReduceOp {
    /// Element-wise sum.
    Sum = 1,
    /// Sum divided by the number of ranks.
    Average = 0,
    /// Element-wise minimum.
    Min = 3,
    /// Element-wise maximum.
    Max = 4,
    /// Element-wise product.
    Product = 5,
}

impl ReduceOp {
    /// Every op, in a stable order.
    pub const ALL: [Self; 5] = [
        Self::Sum,
        Self::Average,
        Self::Min,
        Self::Max,
        Self::Product,
    ];

    /// The lower-case name users type.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Sum => "sum",
            Self::Average => "average",
            Self::Min => "min",
            Self::Max => "max",
            Self::Product => "product",
        }
    }

    /// The stable code the C ABI and `hora._core` use: Horovod's numbering, where 2 is its
    /// Adasum (which hora does not implement, so no op has that code).
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The op with this [`code`](Self::code), if any.
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Average,
            1 => Self::Sum,
            3 => Self::Min,
            4 => Self::Max,
            5 => Self::Product,
            _ => return None,
        })
    }
}

impl fmt::Display for ReduceOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ReduceOp {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "sum" => Self::Sum,
            "average" | "avg" | "mean" => Self::Average,
            "min" => Self::Min,
            "max" => Self::Max,
            "product" | "prod" => Self::Product,
            _ => {
                return Err(format!(
                    "unknown reduce op {s:?}; accepted: sum, average, min, max, product"
                ));
            }
        })
    }
}

/// Which collective a request or response is for. The discriminants are stable codes.
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

    /// The stable code `hora._core` uses for this collective.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The collective with this [`code`](Self::code), if any.
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Allreduce,
            1 => Self::Allgather,
            2 => Self::Broadcast,
            3 => Self::Alltoall,
            4 => Self::Reducescatter,
            5 => Self::Barrier,
            6 => Self::Join,
            _ => return None,
        })
    }
}

impl fmt::Display for CollectiveKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::{CollectiveKind, DataType, ReduceOp};

    /// The faces hard-code these numbers (C header, Horovod's `hvd.Sum`...), so they never move.
    #[test]
    fn codes_are_stable_and_round_trip() {
        let dtypes: Vec<(u8, DataType)> = (0..=u8::MAX)
            .filter_map(|c| DataType::from_code(c).map(|d| (c, d)))
            .collect();
        assert_eq!(
            dtypes.iter().map(|(_, d)| d.name()).collect::<Vec<_>>(),
            ["u8", "i8", "i32", "i64", "f16", "bf16", "f32", "f64"]
        );
        assert!(dtypes.iter().all(|&(c, d)| d.code() == c));
        assert!(
            DataType::ALL
                .iter()
                .all(|d| DataType::from_code(d.code()) == Some(*d))
        );

        let ops: Vec<(u8, &str)> = (0..=u8::MAX)
            .filter_map(|c| ReduceOp::from_code(c).map(|o| (c, o.name())))
            .collect();
        assert_eq!(
            ops,
            [
                (0, "average"),
                (1, "sum"),
                (3, "min"),
                (4, "max"),
                (5, "product")
            ]
        );
        assert!(
            ReduceOp::ALL
                .iter()
                .all(|o| ReduceOp::from_code(o.code()) == Some(*o))
        );

        let kinds: Vec<(u8, CollectiveKind)> = (0..=u8::MAX)
            .filter_map(|c| CollectiveKind::from_code(c).map(|k| (c, k)))
            .collect();
        assert_eq!(
            kinds.iter().map(|(_, k)| k.name()).collect::<Vec<_>>(),
            [
                "allreduce",
                "allgather",
                "broadcast",
                "alltoall",
                "reducescatter",
                "barrier",
                "join"
            ]
        );
        assert!(kinds.iter().all(|&(c, k)| k.code() == c));
    }
}
