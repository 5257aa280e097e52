//! The argument checks of every collective, in one place: [`Ring`](super::Ring) and
//! [`Dispatch`](super::Dispatch) run them before anything moves, so an algorithm or a native
//! backend behind them can rely on consistent lengths. Pure functions of lengths and ranks.

use hora_transport::CollectiveError;

use crate::types::{DataType, ReduceOp};

/// An allreduce buffer must be whole elements, and Adasum needs a float type.
pub fn allreduce(len: usize, dtype: DataType, op: ReduceOp) -> Result<(), CollectiveError> {
    if !len.is_multiple_of(dtype.size()) {
        return Err(CollectiveError::invalid(format_args!(
            "a buffer of {len} bytes is not whole {dtype} elements"
        )));
    }
    adasum_dtype(dtype, op)
}

/// Adasum is defined for float vectors only (dot products and norms); other ops take any type.
pub fn adasum_dtype(dtype: DataType, op: ReduceOp) -> Result<(), CollectiveError> {
    if op == ReduceOp::Adasum && !dtype.is_float() {
        return Err(CollectiveError::invalid(format_args!(
            "the Adasum reduction needs a float tensor (f16, bf16, f32 or f64), not {dtype}"
        )));
    }
    Ok(())
}

/// Reducescatter takes the element-wise ops only (as Horovod's, which has no Adasum).
pub fn reducescatter_op(op: ReduceOp) -> Result<(), CollectiveError> {
    if !op.is_elementwise() {
        return Err(CollectiveError::invalid(format_args!(
            "reducescatter does not take the {op} reduction (it is not element-wise)"
        )));
    }
    Ok(())
}

/// One block size per rank, this rank's input its block, the output their sum; returns the
/// output's length.
pub fn allgatherv(
    me: usize,
    size: usize,
    input: &[u8],
    output: &[u8],
    bytes_per_rank: &[usize],
) -> Result<usize, CollectiveError> {
    if bytes_per_rank.len() != size {
        return Err(CollectiveError::invalid(format_args!(
            "{} block sizes for {size} ranks",
            bytes_per_rank.len()
        )));
    }
    if input.len() != bytes_per_rank[me] {
        return Err(CollectiveError::invalid(format_args!(
            "input is {} bytes, this rank's block is {}",
            input.len(),
            bytes_per_rank[me]
        )));
    }
    let total: usize = bytes_per_rank.iter().sum();
    if output.len() != total {
        return Err(CollectiveError::invalid(format_args!(
            "output is {} bytes, blocks sum to {total}",
            output.len()
        )));
    }
    Ok(total)
}

/// The root must be a rank.
pub fn broadcast(size: usize, root: usize) -> Result<(), CollectiveError> {
    if root >= size {
        return Err(CollectiveError::invalid(format_args!(
            "broadcast root {root} is not a rank of {size}"
        )));
    }
    Ok(())
}

/// One send and one receive size per rank, summing to the buffers, and as many bytes to
/// this rank as from it.
pub fn alltoallv(
    me: usize,
    size: usize,
    input: &[u8],
    send_bytes: &[usize],
    output: &[u8],
    recv_bytes: &[usize],
) -> Result<(), CollectiveError> {
    if send_bytes.len() != size || recv_bytes.len() != size {
        return Err(CollectiveError::invalid(format_args!(
            "{} send and {} receive sizes for {size} ranks",
            send_bytes.len(),
            recv_bytes.len()
        )));
    }
    let (sent, received) = (
        send_bytes.iter().sum::<usize>(),
        recv_bytes.iter().sum::<usize>(),
    );
    if sent != input.len() || received != output.len() {
        return Err(CollectiveError::invalid(format_args!(
            "send sizes sum to {sent} (input {}), receive sizes to {received} (output {})",
            input.len(),
            output.len()
        )));
    }
    if send_bytes[me] != recv_bytes[me] {
        return Err(CollectiveError::invalid(format_args!(
            "sends {} bytes to itself but expects {}",
            send_bytes[me], recv_bytes[me]
        )));
    }
    Ok(())
}

/// One block per rank, whole elements each, covering the input; the output this rank's block.
pub fn reducescatter(
    me: usize,
    size: usize,
    input: &[u8],
    output: &[u8],
    bytes_per_rank: &[usize],
    dtype: DataType,
) -> Result<(), CollectiveError> {
    if bytes_per_rank.len() != size {
        return Err(CollectiveError::invalid(format_args!(
            "{} block sizes for {size} ranks",
            bytes_per_rank.len()
        )));
    }
    let total: usize = bytes_per_rank.iter().sum();
    if total != input.len() {
        return Err(CollectiveError::invalid(format_args!(
            "blocks sum to {total} bytes, input is {}",
            input.len()
        )));
    }
    if let Some(bad) = bytes_per_rank
        .iter()
        .find(|&&n| !n.is_multiple_of(dtype.size()))
    {
        return Err(CollectiveError::invalid(format_args!(
            "a block of {bad} bytes is not whole {dtype} elements"
        )));
    }
    if output.len() != bytes_per_rank[me] {
        return Err(CollectiveError::invalid(format_args!(
            "output is {} bytes, this rank's block is {}",
            output.len(),
            bytes_per_rank[me]
        )));
    }
    Ok(())
}
