//! The element vocabulary every backend shares: element types and reduction ops, each with
//! a stable numeric code.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Element type of a tensor.
///
/// The discriminant is the type's stable code, shared by the C ABI (`hora_dtype`) and the
/// Python faces (`hora._core.DTYPES`).
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
    /// Signed 16-bit integer.
    I16 = 8,
    /// Unsigned 16-bit integer.
    U16 = 9,
    /// Boolean, one byte per element (0 is false, anything else true); reduced logically:
    /// Sum and Max are OR, Product and Min are AND (what Horovod's Gloo path computes on C++
    /// `bool`), and Average, Adasum and scale factors are refused.
    Bool = 10,
}

impl DataType {
    /// Every supported type, in a stable order.
    pub const ALL: [Self; 11] = [
        Self::U8,
        Self::I8,
        Self::I32,
        Self::I64,
        Self::F16,
        Self::Bf16,
        Self::F32,
        Self::F64,
        Self::I16,
        Self::U16,
        Self::Bool,
    ];

    /// The stable code of this type (its discriminant).
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The type with stable code `code`, if there is one.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.code() == code)
    }

    /// Size of one element in bytes.
    pub const fn size(self) -> usize {
        match self {
            Self::U8 | Self::I8 | Self::Bool => 1,
            Self::I16 | Self::U16 | Self::F16 | Self::Bf16 => 2,
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
            Self::I16 => "i16",
            Self::U16 => "u16",
            Self::Bool => "bool",
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
            "i16" | "int16" | "short" => Self::I16,
            "u16" | "uint16" => Self::U16,
            "bool" => Self::Bool,
            _ => {
                return Err(format!(
                    "unknown dtype {s:?}; accepted: u8, i8, i16, u16, i32, i64, f16, bf16, f32, \
                     f64, bool"
                ));
            }
        };
        Ok(t)
    }
}

/// How allreduce and reducescatter combine values.
///
/// The discriminant is the op's stable code, Horovod's numbering (`hvd.Average` is 0,
/// `hvd.Sum` 1, `hvd.Adasum` 2), shared by the C ABI (`hora_op`) and the Python faces
/// (`hora._core.OPS`). Every op but [`Adasum`](Self::Adasum) is element-wise.
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
    /// Adasum (float types, allreduce only): whole vectors combined pairwise as
    /// `(1 - a·b / 2|a|²) a + (1 - a·b / 2|b|²) b`, over a recursion of halving vectors; not
    /// element-wise, so it has no kernel in [`reduce`](crate::reduce).
    Adasum = 2,
}

impl ReduceOp {
    /// Every op, in a stable order.
    pub const ALL: [Self; 6] = [
        Self::Sum,
        Self::Average,
        Self::Min,
        Self::Max,
        Self::Product,
        Self::Adasum,
    ];

    /// The element-wise ops (every op but Adasum), in the order of [`ALL`](Self::ALL).
    pub const ELEMENTWISE: [Self; 5] = [
        Self::Sum,
        Self::Average,
        Self::Min,
        Self::Max,
        Self::Product,
    ];

    /// Whether each element of the result depends only on the same element of the inputs
    /// (what the [`reduce`](crate::reduce) kernels compute); false for Adasum.
    pub const fn is_elementwise(self) -> bool {
        !matches!(self, Self::Adasum)
    }

    /// The stable code of this op (its discriminant; Horovod's numbering).
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The op with stable code `code`, if there is one.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.code() == code)
    }

    /// The lower-case name users type.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Sum => "sum",
            Self::Average => "average",
            Self::Min => "min",
            Self::Max => "max",
            Self::Product => "product",
            Self::Adasum => "adasum",
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
            "adasum" => Self::Adasum,
            _ => {
                return Err(format!(
                    "unknown reduce op {s:?}; accepted: sum, average, min, max, product, adasum"
                ));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_round_trip() {
        let dtypes: Vec<u8> = DataType::ALL.iter().map(|d| d.code()).collect();
        assert_eq!(dtypes, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(ReduceOp::Average.code(), 0);
        assert_eq!(ReduceOp::Sum.code(), 1);
        assert_eq!(ReduceOp::Min.code(), 3);
        assert_eq!(ReduceOp::Max.code(), 4);
        assert_eq!(ReduceOp::Product.code(), 5);
        for d in DataType::ALL {
            assert_eq!(DataType::from_code(d.code()), Some(d));
        }
        for o in ReduceOp::ALL {
            assert_eq!(ReduceOp::from_code(o.code()), Some(o));
        }
        assert_eq!(ReduceOp::Adasum.code(), 2);
        assert_eq!(DataType::from_code(11), None);
        assert_eq!(ReduceOp::from_code(6), None);
        assert!(ReduceOp::ELEMENTWISE.iter().all(|o| o.is_elementwise()));
        assert!(!ReduceOp::Adasum.is_elementwise());
        assert_eq!("Adasum".parse::<ReduceOp>(), Ok(ReduceOp::Adasum));
    }
}
