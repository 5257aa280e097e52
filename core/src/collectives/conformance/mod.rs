//! The collectives conformance table: one set of checks that every [`Collectives`]
//! implementation must pass, whatever moves its bytes (ring over the in-process, TCP or
//! shared-memory transport, native shared memory, MPI).
//!
//! How it works. A check is a function that runs on *one rank*: it builds that rank's
//! inputs from a deterministic formula, calls the collectives, and compares the result
//! bit for bit with a sequential reference it computes itself (rank inputs folded in rank
//! order with the same reduction kernels). Inputs are small integers, so every reduction is
//! exact in every dtype and the order in which an implementation combines values cannot
//! change a bit. Because a check needs nothing from the other ranks but the collectives
//! themselves, the same table runs on threads ([`run_on_threads`], the
//! [`collectives_conformance!`](crate::collectives_conformance) macro) and in one process per
//! rank ([`run_rank`], for example under `mpirun`).
//!
//! Sizes: 0, 1, primes, past the 64 KiB recursive-doubling threshold, past the 128 KiB
//! shared-memory slice and past 1 MiB (the ring's default segment), chosen so the whole table
//! runs in well under a minute per transport on a 2-core machine with np 2..=5.
//!
//! Faults ([`dead_rank_fails_the_others`]) need a handle that can make one rank fail, so
//! they run on threads only: the dead rank aborts while the others are inside a collective;
//! every other rank must fail within [`Options::fault_bound`], and the error must name the
//! dead rank.

use std::fmt;
use std::ops::RangeInclusive;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hora_transport::{CollectiveError, deadline_after};

use super::Collectives;

pub mod adasum;
mod allreduce;
mod barrier;
mod faults;
mod gather;
mod inputs;
mod reducescatter;

pub use adasum::adasum_every_float_dtype;
pub use allreduce::{
    allreduce_average_prescale_postscale, allreduce_every_dtype_op_and_size,
    allreduce_inexact_floats_agree, allreduce_large,
};
pub use barrier::barrier_holds_every_rank;
pub use faults::{FAULT_KINDS, dead_rank_fails_the_others};
pub use gather::{allgatherv_ragged, alltoallv_uneven, broadcast_from_every_root};
pub use inputs::{allreduce_scaled, input, mix, pattern, reference};
pub use reducescatter::reducescatter_uneven;

/// Deadline of every collective call in the table: long, so only a hang reaches it.
const OP_TIMEOUT: Duration = Duration::from_secs(120);

/// One rank's handle: the collectives under test, and how to make this rank fail.
pub struct Member {
    collectives: Arc<dyn Collectives>,
    abort: Arc<dyn Fn(&str) + Send + Sync>,
}

impl Member {
    /// Wraps one rank's collectives; `abort(reason)` must make this rank's current and future
    /// collectives fail and its peers' waits on it fail promptly (e.g. `Transport::abort`).
    pub fn new(
        collectives: Arc<dyn Collectives>,
        abort: impl Fn(&str) + Send + Sync + 'static,
    ) -> Self {
        Self {
            collectives,
            abort: Arc::new(abort),
        }
    }

    /// The collectives under test.
    pub fn collectives(&self) -> &dyn Collectives {
        &*self.collectives
    }

    /// Makes this rank fail (as the engine does when a collective fails).
    pub fn abort(&self, reason: &str) {
        (self.abort)(reason)
    }
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Member")
            .field("collectives", &self.collectives)
            .finish_non_exhaustive()
    }
}

/// How the table runs for one implementation.
#[derive(Debug, Clone)]
pub struct Options {
    /// Job sizes to run every check with.
    pub nps: RangeInclusive<usize>,
    /// How soon the surviving ranks must fail after a rank dies.
    pub fault_bound: Duration,
    /// The collectives (names as in [`FAULT_KINDS`]) after which *every* surviving rank's
    /// error must name the dead rank (implementations that propagate the root cause, like the
    /// shared-memory segments). For the others it is enough that one rank names it: with a
    /// ring, ranks that never talk to the dead rank fail through their neighbours, and naming
    /// the root cause job-wide is then the engine's job.
    pub all_name_the_dead_rank: &'static [&'static str],
}

impl Default for Options {
    fn default() -> Self {
        Self {
            nps: 2..=5,
            fault_bound: Duration::from_secs(30),
            all_name_the_dead_rank: &[],
        }
    }
}

/// The sequence numbers of a rank's collective calls (the same on every rank).
#[derive(Debug, Default)]
pub struct Seq(u64);

impl Seq {
    /// The next call's sequence number.
    pub fn take(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }
}

/// A check of the table, run on every rank of a job; `Err` describes the first wrong result.
pub type CheckFn = fn(&dyn Collectives, &mut Seq) -> Result<(), String>;

/// Every data check of the table, by name (faults are separate: they need [`Member::abort`]).
pub const CHECKS: &[(&str, CheckFn)] = &[
    (
        "allreduce_every_dtype_op_and_size",
        allreduce_every_dtype_op_and_size,
    ),
    ("allreduce_large", allreduce_large),
    (
        "allreduce_average_prescale_postscale",
        allreduce_average_prescale_postscale,
    ),
    (
        "allreduce_inexact_floats_agree",
        allreduce_inexact_floats_agree,
    ),
    ("adasum_every_float_dtype", adasum_every_float_dtype),
    ("allgatherv_ragged", allgatherv_ragged),
    ("broadcast_from_every_root", broadcast_from_every_root),
    ("alltoallv_uneven", alltoallv_uneven),
    ("reducescatter_uneven", reducescatter_uneven),
    ("barrier_holds_every_rank", barrier_holds_every_rank),
];

/// Runs every data check in order on this rank (one process per rank, e.g. under `mpirun`;
/// every rank must call it). On failure the rank aborts, so its peers fail instead of hanging.
pub fn run_rank(member: &Member) -> Result<(), String> {
    let mut seq = Seq::default();
    for (name, check) in CHECKS {
        run_guarded(member, name, |c| check(c, &mut seq))?;
    }
    Ok(())
}

/// Runs one check on one thread per rank for each job size in `nps`, with a fresh job from
/// `factory` each time, and panics listing every rank's failure.
pub fn run_on_threads(
    factory: &(dyn Fn(usize) -> Vec<Member> + Sync),
    name: &str,
    check: CheckFn,
    nps: RangeInclusive<usize>,
) {
    for np in nps {
        let members = factory(np);
        assert_eq!(
            members.len(),
            np,
            "the factory built the wrong number of ranks"
        );
        let results = on_threads(&members, |m| {
            run_guarded(m, name, |c| check(c, &mut Seq::default()))
        });
        let failures: Vec<String> = results
            .into_iter()
            .enumerate()
            .filter_map(|(r, res)| res.err().map(|e| format!("  np {np} rank {r}: {e}")))
            .collect();
        assert!(
            failures.is_empty(),
            "{name} failed:\n{}",
            failures.join("\n")
        );
    }
}

/// One thread per member; results in rank order.
fn on_threads<R: Send>(members: &[Member], f: impl Fn(&Member) -> R + Sync) -> Vec<R> {
    std::thread::scope(|s| {
        let hs: Vec<_> = members.iter().map(|m| s.spawn(|| f(m))).collect();
        hs.into_iter()
            .map(|h| h.join().expect("conformance rank thread panicked"))
            .collect()
    })
}

/// Runs `f`, turning a panic into an error and aborting the rank on failure (as the engine
/// does), so the other ranks fail fast rather than wait for one that left.
fn run_guarded(
    member: &Member,
    name: &str,
    f: impl FnOnce(&dyn Collectives) -> Result<(), String>,
) -> Result<(), String> {
    let c = member.collectives();
    let res = catch_unwind(AssertUnwindSafe(|| f(c))).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(format!("panicked: {msg}"))
    });
    res.map_err(|e| {
        let e = format!("{name}: {e}");
        member.abort(&format!("rank {} failed {e}", c.rank()));
        e
    })
}

fn deadline() -> Instant {
    deadline_after(OP_TIMEOUT)
}

/// Names a failed call for an error message.
fn call_err(what: impl fmt::Display, e: CollectiveError) -> String {
    format!("{what}: {e}")
}

/// Expands to one `#[test]` per check of the collectives conformance table, plus the fault
/// test, each building jobs with `$factory: Fn(usize) -> Vec<Member>` (np ranks of a fresh
/// job). An optional second argument is an [`Options`] expression.
///
/// ```ignore
/// hora::collectives_conformance!(|n| my_job(n));
/// hora::collectives_conformance!(|n| my_job(n), Options { nps: 2..=3, ..Options::default() });
/// ```
#[macro_export]
macro_rules! collectives_conformance {
    ($factory:expr) => {
        $crate::collectives_conformance!($factory, $crate::collectives::conformance::Options::default());
    };
    ($factory:expr, $opts:expr) => {
        $crate::collectives_conformance!(@tests $factory, $opts;
            allreduce_every_dtype_op_and_size, allreduce_large,
            allreduce_average_prescale_postscale, allreduce_inexact_floats_agree,
            adasum_every_float_dtype, allgatherv_ragged, broadcast_from_every_root, alltoallv_uneven,
            reducescatter_uneven, barrier_holds_every_rank);
        #[test]
        fn dead_rank_fails_the_others() {
            $crate::collectives::conformance::dead_rank_fails_the_others(&$factory, &$opts);
        }
    };
    (@tests $factory:expr, $opts:expr; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                let opts: $crate::collectives::conformance::Options = $opts;
                $crate::collectives::conformance::run_on_threads(
                    &$factory,
                    stringify!($name),
                    $crate::collectives::conformance::$name,
                    opts.nps,
                );
            }
        )*
    };
}
