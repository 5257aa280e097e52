//! [`Op`]: how every face (Rust, Python, C) describes one operation to submit.
//!
//! A builder over the coordinator's request, which stays private: faces say what they want
//! (`Op::allreduce(name, dtype, shape).reduce_op(op).scales(pre, post)`) and never build the
//! wire vocabulary themselves, so it can change without touching them. The builder checks
//! nothing by itself; [`Engine::submit`](super::Engine::submit) checks an op against the job
//! and the lent buffer.

use crate::coordinator::Request;
use crate::error::Error;
use crate::types::{CollectiveKind, DataType, ReduceOp};

/// Options of one operation beyond its name and data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpOptions {
    /// Multiply the input by this before reducing.
    pub prescale: f64,
    /// Multiply the result by this after reducing.
    pub postscale: f64,
}

impl Default for OpOptions {
    fn default() -> Self {
        Self {
            prescale: 1.0,
            postscale: 1.0,
        }
    }
}

/// One collective operation to submit: everything the ranks must agree on.
///
/// ```
/// use hora::{DataType, ReduceOp};
/// use hora::engine::Op;
///
/// let op = Op::allreduce("grad/w", DataType::F32, &[4, 8])
///     .reduce_op(ReduceOp::Average)
///     .scales(1.0, 0.5);
/// assert_eq!(op.name(), "grad/w");
/// assert_eq!(op.shape(), &[4, 8]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    pub(crate) req: Request,
}

impl Op {
    /// An operation of any `kind` with neutral options (sum, root 0, scales 1, even splits),
    /// for faces that receive the kind as a value.
    pub fn new(
        kind: CollectiveKind,
        name: impl Into<String>,
        dtype: DataType,
        shape: &[u64],
    ) -> Self {
        Self {
            req: Request::new(name, kind, dtype, shape.to_vec()),
        }
    }

    /// Reduces every rank's tensor (sum unless [`Op::reduce_op`] says otherwise), in place.
    pub fn allreduce(name: impl Into<String>, dtype: DataType, shape: &[u64]) -> Self {
        Self::new(CollectiveKind::Allreduce, name, dtype, shape)
    }

    /// Concatenates every rank's tensor along dim 0 (which may differ between ranks).
    pub fn allgather(name: impl Into<String>, dtype: DataType, shape: &[u64]) -> Self {
        Self::new(CollectiveKind::Allgather, name, dtype, shape)
    }

    /// Copies `root`'s tensor to every rank, in place.
    pub fn broadcast(name: impl Into<String>, dtype: DataType, shape: &[u64], root: usize) -> Self {
        Self::new(CollectiveKind::Broadcast, name, dtype, shape).root(root)
    }

    /// Sends rows of dim 0 to every rank (evenly unless [`Op::splits`] says otherwise).
    pub fn alltoall(name: impl Into<String>, dtype: DataType, shape: &[u64]) -> Self {
        Self::new(CollectiveKind::Alltoall, name, dtype, shape)
    }

    /// Reduces, then rank r keeps its share of dim 0 (earlier ranks one more row when uneven).
    pub fn reducescatter(name: impl Into<String>, dtype: DataType, shape: &[u64]) -> Self {
        Self::new(CollectiveKind::Reducescatter, name, dtype, shape)
    }

    /// Waits until every rank submits a barrier of this name; carries no tensor.
    pub fn barrier(name: impl Into<String>) -> Self {
        Self::new(CollectiveKind::Barrier, name, DataType::U8, &[0])
    }

    /// This rank has no more work; completes once every rank has joined.
    pub fn join() -> Self {
        Self::new(CollectiveKind::Join, "join", DataType::U8, &[0])
    }

    /// The reduction (allreduce, reducescatter).
    pub fn reduce_op(mut self, op: ReduceOp) -> Self {
        self.req.op = op;
        self
    }

    /// Factors applied to the input before reducing and to the result after.
    pub fn scales(mut self, prescale: f64, postscale: f64) -> Self {
        self.req.prescale = prescale;
        self.req.postscale = postscale;
        self
    }

    /// [`Op::scales`] from an [`OpOptions`].
    pub fn options(self, opts: OpOptions) -> Self {
        self.scales(opts.prescale, opts.postscale)
    }

    /// The broadcast root (a rank past `u32::MAX` is kept as an invalid root, not wrapped).
    pub fn root(mut self, root: usize) -> Self {
        self.req.root = u32::try_from(root).unwrap_or(u32::MAX);
        self
    }

    /// Alltoall: `splits[d]` rows of dim 0 go to rank `d`; empty means an even split.
    pub fn splits(mut self, splits: Vec<u64>) -> Self {
        self.req.splits = splits;
        self
    }

    /// The tensor name.
    pub fn name(&self) -> &str {
        &self.req.name
    }

    /// Which collective.
    pub fn kind(&self) -> CollectiveKind {
        self.req.kind
    }

    /// The element type.
    pub fn dtype(&self) -> DataType {
        self.req.dtype
    }

    /// The dimensions, outermost first.
    pub fn shape(&self) -> &[u64] {
        &self.req.shape
    }

    /// Checks this op against a job of `size` ranks and, when a buffer is lent, its length;
    /// the error names `rank` and the tensor.
    pub(crate) fn check(&self, rank: usize, size: usize, lent: Option<usize>) -> Result<(), Error> {
        let req = &self.req;
        let invalid = |detail: String| Error::InvalidArgument {
            rank,
            tensor: req.name.clone(),
            detail,
        };
        if let Some(len) = lent {
            let expected = req.shape.iter().product::<u64>() as usize * req.dtype.size();
            if len != expected {
                return Err(invalid(format!(
                    "buffer is {len} bytes but shape {:?} of {} needs {expected}",
                    req.shape, req.dtype
                )));
            }
        }
        if req.op == ReduceOp::Adasum {
            if req.kind != CollectiveKind::Allreduce {
                return Err(invalid(format!(
                    "the Adasum reduction is for allreduce only, not {}",
                    req.kind.name()
                )));
            }
            if !req.dtype.is_float() {
                return Err(invalid(format!(
                    "the Adasum reduction needs a float tensor (f16, bf16, f32 or f64), not {}",
                    req.dtype
                )));
            }
        }
        let reduces = matches!(
            req.kind,
            CollectiveKind::Allreduce | CollectiveKind::Reducescatter
        );
        // Truth values have no mean and no multiple (Horovod's scaling throws on bool too).
        if reduces && req.dtype == DataType::Bool {
            if req.op == ReduceOp::Average {
                return Err(invalid(
                    "a bool tensor cannot be averaged; use Sum (logical or), Max (or), \
                     Min (and) or Product (and)"
                        .into(),
                ));
            }
            if req.prescale != 1.0 || req.postscale != 1.0 {
                return Err(invalid(format!(
                    "a bool tensor cannot be scaled (prescale {}, postscale {})",
                    req.prescale, req.postscale
                )));
            }
        }
        if req.kind == CollectiveKind::Broadcast && req.root as usize >= size {
            return Err(invalid(format!(
                "broadcast root {} is not a rank of this job (size {size})",
                req.root
            )));
        }
        if req.kind == CollectiveKind::Alltoall && !req.splits.is_empty() {
            let rows = req.shape.first().copied().unwrap_or(0);
            if req.splits.len() != size || req.splits.iter().sum::<u64>() != rows {
                return Err(invalid(format!(
                    "alltoall splits {:?} must have one entry per rank ({size}) summing to dim 0 ({rows})",
                    req.splits
                )));
            }
        }
        Ok(())
    }
}
