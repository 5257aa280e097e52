//! The barrier check.

use std::time::Duration;

use super::{Collectives, Seq, call_err, deadline};

/// Nobody leaves a barrier before the last rank entered it. Ranks arrive staggered; entry
/// and exit times (the host's monotonic clock, shared by every process on it) are allgathered
/// and the latest entry must precede the earliest exit. Assumes ranks on one host.
pub fn barrier_holds_every_rank(c: &dyn Collectives, seq: &mut Seq) -> Result<(), String> {
    let (me, np) = (c.rank(), c.size());
    for round in 0..3usize {
        std::thread::sleep(Duration::from_millis(
            ((me * 7 + round * 3) % 11) as u64 * 3,
        ));
        let enter = monotonic_ns();
        c.barrier(seq.take(), deadline())
            .map_err(|e| call_err(format!("barrier round {round}"), e))?;
        let leave = monotonic_ns();
        let mut mine = enter.to_le_bytes().to_vec();
        mine.extend_from_slice(&leave.to_le_bytes());
        let mut all = vec![0u8; 16 * np];
        c.allgatherv(&mine, &mut all, &vec![16; np], seq.take(), deadline())
            .map_err(|e| call_err("allgather of barrier times", e))?;
        let t = |r: usize, k: usize| {
            u64::from_le_bytes(
                all[16 * r + 8 * k..16 * r + 8 * k + 8]
                    .try_into()
                    .expect("8"),
            )
        };
        let last_in = (0..np).max_by_key(|&r| t(r, 0)).expect("ranks");
        let first_out = (0..np).min_by_key(|&r| t(r, 1)).expect("ranks");
        if t(first_out, 1) < t(last_in, 0) {
            return Err(format!(
                "barrier round {round}: rank {first_out} left {} us before rank {last_in} entered",
                (t(last_in, 0) - t(first_out, 1)) / 1000
            ));
        }
    }
    Ok(())
}

// Not `Instant`: its value cannot be sent to another process on the host to compare.
#[allow(unsafe_code)]
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
