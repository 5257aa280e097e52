//! Process sets in the C ABI: adding and removing them (collective: every rank calls, with the
//! same ranks, in the same order; after `hora_init` this needs HOROVOD_DYNAMIC_PROCESS_SETS=1)
//! and asking about them. The collectives take a set through their `_in` forms.

use std::ffi::c_int;

use crate::{bad, guard, hora_status, write_int};

fn id_of(id: c_int) -> Result<u32, hora_core::Error> {
    u32::try_from(id).map_err(|_| bad(format!("process set {id} is negative")))
}

/// Adds a process set of the `count` job ranks at `ranks` (any order) and writes its id to
/// `*out_id`. Every rank gets the same id, or the same error when they disagree.
///
/// # Safety
/// `ranks` is valid for `count` ints; `out_id` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hora_process_set_add(
    ranks: *const c_int,
    count: usize,
    out_id: *mut c_int,
) -> hora_status {
    guard(|| {
        if ranks.is_null() && count > 0 {
            return Err(bad(format!("ranks is NULL but count is {count}")));
        }
        let given: &[c_int] = if count == 0 {
            &[]
        } else {
            // SAFETY: non-null and valid for `count` ints (the caller's contract).
            unsafe { std::slice::from_raw_parts(ranks, count) }
        };
        let list = given
            .iter()
            .map(|&r| usize::try_from(r).map_err(|_| bad(format!("rank {r} is negative"))))
            .collect::<Result<Vec<_>, _>>()?;
        let set = hora_core::api::add_process_set(&list)?;
        write_int(out_id, set.id as usize)
    })
}

/// Removes process set `id` (collective); refused while any rank has operations on it.
#[unsafe(no_mangle)]
pub extern "C" fn hora_process_set_remove(id: c_int) -> hora_status {
    guard(|| hora_core::api::remove_process_set(id_of(id)?))
}

/// The number of ranks in process set `id`.
///
/// # Safety
/// `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hora_process_set_size(id: c_int, out: *mut c_int) -> hora_status {
    guard(|| write_int(out, hora_core::api::process_set(id_of(id)?)?.size()))
}

/// This rank's rank inside process set `id`; `HORA_STATUS_INVALID_ARGUMENT` when it is not a
/// member.
///
/// # Safety
/// `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hora_process_set_rank(id: c_int, out: *mut c_int) -> hora_status {
    guard(|| {
        let set = hora_core::api::process_set(id_of(id)?)?;
        let me = hora_core::rank()?;
        let r = set.rank_of(me).ok_or_else(|| {
            bad(format!(
                "rank {me} is not in process set {id} (ranks {:?})",
                set.ranks
            ))
        })?;
        write_int(out, r)
    })
}

/// 1 if this rank is in process set `id`, 0 if not, -1 when there is no such set (or hora is
/// not initialized; `hora_last_error` says which).
#[unsafe(no_mangle)]
pub extern "C" fn hora_process_set_included(id: c_int) -> c_int {
    let mut included = -1;
    let status = guard(|| {
        let set = hora_core::api::process_set(id_of(id)?)?;
        included = c_int::from(set.rank_of(hora_core::rank()?).is_some());
        Ok(())
    });
    if status == hora_status::Ok {
        included
    } else {
        -1
    }
}
