//! The vocabulary shared by every layer: element types, reduction ops, collective kinds.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DataType {
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 8-bit integer.
    I8,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
    /// IEEE 754 half precision.
    F16,
    /// bfloat16 (8-bit exponent, 7-bit mantissa).
    Bf16,
    /// IEEE 754 single precision.
    F32,
    /// IEEE 754 double precision.
    F64,
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

/// How allreduce and reducescatter combine values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReduceOp {
    /// Element-wise sum.
    Sum,
    /// Sum divided by the number of ranks.
    Average,
    /// Element-wise minimum.
    Min,
    /// Element-wise maximum.
    Max,
    /// Element-wise product.
    Product,
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

/// Which collective a request or response is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CollectiveKind {
    /// Reduce across ranks; every rank gets the result.
    Allreduce,
    /// Concatenate every rank's tensor along the first dimension.
    Allgather,
    /// Copy the root's tensor to every rank.
    Broadcast,
    /// Every rank sends a slice (rows) to every other rank.
    Alltoall,
    /// Reduce, then each rank keeps one slice of the first dimension.
    Reducescatter,
    /// Wait until every rank arrives.
    Barrier,
    /// This rank has no more work; take part with neutral input until all have joined.
    Join,
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
}

impl fmt::Display for CollectiveKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
