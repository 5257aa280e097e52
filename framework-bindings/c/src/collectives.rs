//! The collectives of the C ABI: each has a `_in` form that runs among the ranks of a process
//! set (`process_set`: its id, 0 for every rank) and a form without the suffix for the whole
//! job, which is the `_in` form with set 0.

use std::ffi::{c_char, c_int};

use hora_core::OpOptions;

use crate::{
    bad, buffer, copy_out, guard, hora_dtype, hora_handle, hora_op, hora_status, hora_wait, name_of,
};

/// The engine of process set `set` for this call.
fn engine_of(set: c_int) -> Result<std::sync::Arc<hora_core::Engine>, hora_core::Error> {
    let id = u32::try_from(set).map_err(|_| bad(format!("process set {set} is negative")))?;
    hora_core::api::engine_for(id)
}

/// A root given as a job rank, renumbered inside set `set` (which it must belong to).
fn root_in(set: c_int, root: c_int, name: &str) -> Result<usize, hora_core::Error> {
    let root = usize::try_from(root).map_err(|_| bad(format!("root {root} is negative")))?;
    if set == 0 {
        return Ok(root);
    }
    hora_core::api::set_rank(set as u32, root, name)
}

/// Starts an in-place allreduce of `count` elements at `buf`. `name` may be NULL (a name is
/// made up) and must otherwise be the same on every rank. `buf` must stay valid and untouched
/// until `hora_wait` returns or `hora_poll` reports completion. On success `*out` receives a
/// handle to pass to `hora_wait` or `hora_release`.
///
/// # Safety
/// `name` is NULL or NUL-terminated; `buf` is valid for `count` elements; `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hora_allreduce_async(
    name: *const c_char,
    buf: *mut std::ffi::c_void,
    count: usize,
    dtype: hora_dtype,
    op: hora_op,
    out: *mut *mut hora_handle,
) -> hora_status {
    // SAFETY: forwarded caller contract.
    unsafe { hora_allreduce_async_in(0, name, buf, count, dtype, op, out) }
}

/// `hora_allreduce_async` among the ranks of process set `process_set`.
///
/// # Safety
/// As for `hora_allreduce_async`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hora_allreduce_async_in(
    process_set: c_int,
    name: *const c_char,
    buf: *mut std::ffi::c_void,
    count: usize,
    dtype: hora_dtype,
    op: hora_op,
    out: *mut *mut hora_handle,
) -> hora_status {
    guard(|| {
        if out.is_null() {
            return Err(bad("handle output pointer is NULL"));
        }
        // SAFETY: forwarded caller contract.
        let name = unsafe { name_of(name, "allreduce") }?;
        let data = buffer(buf, count, dtype, "buf")?;
        let engine = engine_of(process_set)?;
        let h = engine.allreduce_async(
            &name,
            dtype.into(),
            &[count as u64],
            Box::new(data),
            op.into(),
            OpOptions::default(),
        );
        let boxed = Box::new(hora_handle {
            handle: Some(h),
            result: None,
        });
        // SAFETY: checked non-null; the caller passes a writable pointer.
        unsafe { *out = Box::into_raw(boxed) };
        Ok(())
    })
}

/// In-place allreduce of `count` elements at `buf`.
///
/// # Safety
/// As for `hora_allreduce_async`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hora_allreduce(
    name: *const c_char,
    buf: *mut std::ffi::c_void,
    count: usize,
    dtype: hora_dtype,
    op: hora_op,
) -> hora_status {
    // SAFETY: forwarded caller contract.
    unsafe { hora_allreduce_in(0, name, buf, count, dtype, op) }
}

/// `hora_allreduce` among the ranks of process set `process_set`.
///
/// # Safety
/// As for `hora_allreduce_async`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hora_allreduce_in(
    process_set: c_int,
    name: *const c_char,
    buf: *mut std::ffi::c_void,
    count: usize,
    dtype: hora_dtype,
    op: hora_op,
) -> hora_status {
    let mut h = std::ptr::null_mut();
    // SAFETY: forwarded caller contract.
    let s = unsafe { hora_allreduce_async_in(process_set, name, buf, count, dtype, op, &mut h) };
    if s != hora_status::Ok {
        return s;
    }
    // SAFETY: `h` was just created.
    unsafe { hora_wait(h) }
}

/// Starts an in-place allreduce of `n` tensors as one group: negotiated as a unit (answered
/// once every member is ready on every rank) and fused together, as Horovod's
/// `grouped_allreduce`. Tensor `i` is `counts[i]` elements of `dtypes[i]` at `bufs[i]`, named
/// `<name>.<i>` (`name` may be NULL). Every rank must group the same tensors. On success
/// `out[i]` receives tensor `i`'s handle (wait for or release each); on failure no handle is
/// made and nothing is started.
///
/// # Safety
/// `name` is NULL or NUL-terminated; `bufs`, `counts` and `dtypes` are valid for `n` entries
/// and each `bufs[i]` for `counts[i]` elements, untouched until its handle completes; `out`
/// is writable for `n` handles.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hora_grouped_allreduce_async_in(
    process_set: c_int,
    name: *const c_char,
    n: usize,
    bufs: *const *mut std::ffi::c_void,
    counts: *const usize,
    dtypes: *const hora_dtype,
    op: hora_op,
    out: *mut *mut hora_handle,
) -> hora_status {
    guard(|| {
        if n == 0 {
            return Ok(());
        }
        for (ptr, what) in [
            (bufs.cast::<()>(), "bufs"),
            (counts.cast(), "counts"),
            (dtypes.cast(), "dtypes"),
            (out.cast_const().cast(), "handle output array"),
        ] {
            if ptr.is_null() {
                return Err(bad(format!("{what} is NULL for a group of {n} tensors")));
            }
        }
        // SAFETY: forwarded caller contract.
        let base = unsafe { name_of(name, "grouped_allreduce") }?;
        // SAFETY: checked non-null; the caller passes `n` entries in each array.
        let (bufs, counts, dtypes) = unsafe {
            (
                std::slice::from_raw_parts(bufs, n),
                std::slice::from_raw_parts(counts, n),
                std::slice::from_raw_parts(dtypes, n),
            )
        };
        let engine = engine_of(process_set)?;
        let mut ops = Vec::with_capacity(n);
        for i in 0..n {
            let member = format!("{base}.{i}");
            let data = buffer(
                bufs[i],
                counts[i],
                dtypes[i],
                &format!("bufs[{i}] ({member})"),
            )?;
            let req =
                hora_core::engine::Op::allreduce(member, dtypes[i].into(), &[counts[i] as u64])
                    .reduce_op(op.into());
            ops.push((req, Some(Box::new(data) as Box<dyn hora_core::TensorData>)));
        }
        for (i, h) in engine.submit_group(ops).into_iter().enumerate() {
            let boxed = Box::new(hora_handle {
                handle: Some(h),
                result: None,
            });
            // SAFETY: checked non-null; the caller passes room for `n` handles.
            unsafe { *out.add(i) = Box::into_raw(boxed) };
        }
        Ok(())
    })
}

/// `hora_grouped_allreduce_async_in` for every rank of the job.
///
/// # Safety
/// As for `hora_grouped_allreduce_async_in`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hora_grouped_allreduce_async(
    name: *const c_char,
    n: usize,
    bufs: *const *mut std::ffi::c_void,
    counts: *const usize,
    dtypes: *const hora_dtype,
    op: hora_op,
    out: *mut *mut hora_handle,
) -> hora_status {
    // SAFETY: forwarded caller contract.
    unsafe { hora_grouped_allreduce_async_in(0, name, n, bufs, counts, dtypes, op, out) }
}

/// In-place grouped allreduce among the ranks of `process_set`: waits for every member and
/// returns the first failure (every handle is waited for and released either way).
///
/// # Safety
/// As for `hora_grouped_allreduce_async_in` (without `out`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hora_grouped_allreduce_in(
    process_set: c_int,
    name: *const c_char,
    n: usize,
    bufs: *const *mut std::ffi::c_void,
    counts: *const usize,
    dtypes: *const hora_dtype,
    op: hora_op,
) -> hora_status {
    let mut handles = vec![std::ptr::null_mut(); n];
    // SAFETY: forwarded caller contract; `handles` has room for `n`.
    let s = unsafe {
        hora_grouped_allreduce_async_in(
            process_set,
            name,
            n,
            bufs,
            counts,
            dtypes,
            op,
            handles.as_mut_ptr(),
        )
    };
    if s != hora_status::Ok {
        return s;
    }
    let mut first = hora_status::Ok;
    let mut message = String::new();
    for h in handles {
        // SAFETY: each handle was just created and is waited for once.
        let r = unsafe { hora_wait(h) };
        if r != hora_status::Ok && first == hora_status::Ok {
            first = r;
            message = crate::last_error_text();
        }
    }
    if first != hora_status::Ok {
        crate::set_last_error(&message);
    }
    first
}

/// `hora_grouped_allreduce_in` for every rank of the job.
///
/// # Safety
/// As for `hora_grouped_allreduce_async_in` (without `out`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hora_grouped_allreduce(
    name: *const c_char,
    n: usize,
    bufs: *const *mut std::ffi::c_void,
    counts: *const usize,
    dtypes: *const hora_dtype,
    op: hora_op,
) -> hora_status {
    // SAFETY: forwarded caller contract.
    unsafe { hora_grouped_allreduce_in(0, name, n, bufs, counts, dtypes, op) }
}

/// Copies `root`'s `count` elements at `buf` into every rank's `buf`.
///
/// # Safety
/// `name` is NULL or NUL-terminated; `buf` is valid for `count` elements.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hora_broadcast(
    name: *const c_char,
    buf: *mut std::ffi::c_void,
    count: usize,
    dtype: hora_dtype,
    root: c_int,
) -> hora_status {
    // SAFETY: forwarded caller contract.
    unsafe { hora_broadcast_in(0, name, buf, count, dtype, root) }
}

/// `hora_broadcast` among the ranks of process set `process_set`; `root` is a job rank that
/// belongs to the set.
///
/// # Safety
/// As for `hora_broadcast`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hora_broadcast_in(
    process_set: c_int,
    name: *const c_char,
    buf: *mut std::ffi::c_void,
    count: usize,
    dtype: hora_dtype,
    root: c_int,
) -> hora_status {
    guard(|| {
        // SAFETY: forwarded caller contract.
        let name = unsafe { name_of(name, "broadcast") }?;
        let root = root_in(process_set, root, &name)?;
        let data = buffer(buf, count, dtype, "buf")?;
        let engine = engine_of(process_set)?;
        engine
            .broadcast_async(&name, dtype.into(), &[count as u64], Box::new(data), root)
            .wait()
            .map(|_| ())
    })
}

/// Concatenates every rank's `count` elements (counts may differ) into `out` in rank order.
/// `*out_count` (if not NULL) receives the total; fails with INVALID_ARGUMENT when it exceeds
/// `out_capacity`.
///
/// # Safety
/// `name` NULL or NUL-terminated; `in` valid for `count`, `out` for `out_capacity` elements;
/// `out_count` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hora_allgather(
    name: *const c_char,
    input: *const std::ffi::c_void,
    count: usize,
    dtype: hora_dtype,
    out: *mut std::ffi::c_void,
    out_capacity: usize,
    out_count: *mut usize,
) -> hora_status {
    // SAFETY: forwarded caller contract.
    unsafe { hora_allgather_in(0, name, input, count, dtype, out, out_capacity, out_count) }
}

/// `hora_allgather` among the ranks of process set `process_set` (in their rank order).
///
/// # Safety
/// As for `hora_allgather`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn hora_allgather_in(
    process_set: c_int,
    name: *const c_char,
    input: *const std::ffi::c_void,
    count: usize,
    dtype: hora_dtype,
    out: *mut std::ffi::c_void,
    out_capacity: usize,
    out_count: *mut usize,
) -> hora_status {
    guard(|| {
        // SAFETY: forwarded caller contract.
        let name = unsafe { name_of(name, "allgather") }?;
        let data = buffer(input, count, dtype, "in")?;
        let engine = engine_of(process_set)?;
        let c = engine
            .allgather_async(&name, dtype.into(), &[count as u64], Box::new(data))
            .wait()?;
        // SAFETY: forwarded caller contract.
        unsafe { copy_out(&c, dtype, out, out_capacity, out_count) }
    })
}

/// Sends `send_counts[d]` consecutive elements of `in` to rank `d` and receives every rank's
/// part into `out` in rank order; `recv_counts` (size() entries, or NULL) receives how many
/// elements came from each rank.
///
/// # Safety
/// `send_counts` holds size() entries; `in` is valid for their sum; `out` for `out_capacity`
/// elements; `recv_counts` is NULL or holds size() entries.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn hora_alltoall(
    name: *const c_char,
    input: *const std::ffi::c_void,
    send_counts: *const usize,
    dtype: hora_dtype,
    out: *mut std::ffi::c_void,
    out_capacity: usize,
    recv_counts: *mut usize,
) -> hora_status {
    // SAFETY: forwarded caller contract.
    unsafe {
        hora_alltoall_in(
            0,
            name,
            input,
            send_counts,
            dtype,
            out,
            out_capacity,
            recv_counts,
        )
    }
}

/// `hora_alltoall` among the ranks of process set `process_set`: `send_counts` and
/// `recv_counts` have one entry per member, in the set's rank order.
///
/// # Safety
/// As for `hora_alltoall`, with the set's size in place of size().
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn hora_alltoall_in(
    process_set: c_int,
    name: *const c_char,
    input: *const std::ffi::c_void,
    send_counts: *const usize,
    dtype: hora_dtype,
    out: *mut std::ffi::c_void,
    out_capacity: usize,
    recv_counts: *mut usize,
) -> hora_status {
    guard(|| {
        // SAFETY: forwarded caller contract.
        let name = unsafe { name_of(name, "alltoall") }?;
        let engine = engine_of(process_set)?;
        let size = engine.topology().size;
        if send_counts.is_null() {
            return Err(bad("send_counts is NULL"));
        }
        // SAFETY: the caller passes one count per member.
        let splits: Vec<u64> = unsafe { std::slice::from_raw_parts(send_counts, size) }
            .iter()
            .map(|&c| c as u64)
            .collect();
        let total: u64 = splits.iter().sum();
        let data = buffer(input, total as usize, dtype, "in")?;
        let c = engine
            .alltoall_async(&name, dtype.into(), &[total], Box::new(data), splits)
            .wait()?;
        if !recv_counts.is_null() {
            for (i, &n) in c.received_splits.iter().enumerate() {
                // SAFETY: the caller passes NULL or one writable count per member.
                unsafe { *recv_counts.add(i) = n as usize };
            }
        }
        // SAFETY: forwarded caller contract.
        unsafe { copy_out(&c, dtype, out, out_capacity, std::ptr::null_mut()) }
    })
}

/// Reduces `count` elements of `in` across ranks and writes this rank's share into `out`
/// (earlier ranks get one more element when `count` does not divide evenly); `*out_count`
/// receives the share's length.
///
/// # Safety
/// As for `hora_allgather`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn hora_reducescatter(
    name: *const c_char,
    input: *const std::ffi::c_void,
    count: usize,
    dtype: hora_dtype,
    op: hora_op,
    out: *mut std::ffi::c_void,
    out_capacity: usize,
    out_count: *mut usize,
) -> hora_status {
    // SAFETY: forwarded caller contract.
    unsafe {
        hora_reducescatter_in(
            0,
            name,
            input,
            count,
            dtype,
            op,
            out,
            out_capacity,
            out_count,
        )
    }
}

/// `hora_reducescatter` among the ranks of process set `process_set`.
///
/// # Safety
/// As for `hora_allgather`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn hora_reducescatter_in(
    process_set: c_int,
    name: *const c_char,
    input: *const std::ffi::c_void,
    count: usize,
    dtype: hora_dtype,
    op: hora_op,
    out: *mut std::ffi::c_void,
    out_capacity: usize,
    out_count: *mut usize,
) -> hora_status {
    guard(|| {
        // SAFETY: forwarded caller contract.
        let name = unsafe { name_of(name, "reducescatter") }?;
        let data = buffer(input, count, dtype, "in")?;
        let engine = engine_of(process_set)?;
        let c = engine
            .reducescatter_async(
                &name,
                dtype.into(),
                &[count as u64],
                Box::new(data),
                op.into(),
                OpOptions::default(),
            )
            .wait()?;
        // SAFETY: forwarded caller contract.
        unsafe { copy_out(&c, dtype, out, out_capacity, out_count) }
    })
}

/// Returns once every rank has called it.
#[unsafe(no_mangle)]
pub extern "C" fn hora_barrier() -> hora_status {
    hora_barrier_in(0)
}

/// Returns once every rank of process set `process_set` has called it.
#[unsafe(no_mangle)]
pub extern "C" fn hora_barrier_in(process_set: c_int) -> hora_status {
    guard(|| engine_of(process_set)?.barrier())
}
