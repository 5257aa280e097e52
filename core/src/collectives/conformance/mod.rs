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

use std::collections::HashMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ::half::{bf16, f16};
use hora_transport::{TransportError, deadline_after};

use super::Collectives;
use super::segments::blocks_from_sizes;
use crate::reduce::{reduce_into, scale};
use crate::types::{DataType, ReduceOp};

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
fn call_err(what: impl fmt::Display, e: TransportError) -> String {
    format!("{what}: {e}")
}

// ---------------------------------------------------------------------------------------
// Inputs and references

/// Pseudo-random integer from a few coordinates.
pub fn mix(a: usize, b: usize, c: usize) -> u64 {
    let mut x = (a as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (b as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ (c as u64).wrapping_mul(0x1656_67B1_9E37_79F9);
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 32)
}

/// Deterministic, seed-dependent bytes for the data-moving collectives (the transport
/// table's generator).
pub use hora_transport::conformance::pattern;

/// Writes a small integer as element `i` of `buf` (exact in every dtype).
fn put(buf: &mut [u8], dtype: DataType, i: usize, v: i64) {
    let s = dtype.size();
    let dst = &mut buf[i * s..(i + 1) * s];
    match dtype {
        DataType::U8 => dst[0] = v as u8,
        DataType::I8 => dst[0] = v as i8 as u8,
        DataType::I32 => dst.copy_from_slice(&(v as i32).to_le_bytes()),
        DataType::I64 => dst.copy_from_slice(&v.to_le_bytes()),
        DataType::F32 => dst.copy_from_slice(&(v as f32).to_le_bytes()),
        DataType::F64 => dst.copy_from_slice(&(v as f64).to_le_bytes()),
        DataType::F16 => dst.copy_from_slice(&f16::from_f32(v as f32).to_le_bytes()),
        DataType::Bf16 => dst.copy_from_slice(&bf16::from_f32(v as f32).to_le_bytes()),
    }
}

/// Rank `rank`'s input: values chosen so that every op's result over up to 8 ranks is exact
/// in every dtype (sums of 0..=4, products of ±1 and 2, min/max of small integers), so
/// results compare bitwise whatever order an implementation reduces in.
pub fn input(dtype: DataType, op: ReduceOp, rank: usize, elems: usize, salt: usize) -> Vec<u8> {
    let mut buf = vec![0u8; elems * dtype.size()];
    for i in 0..elems {
        let r = mix(rank, i, salt);
        let v = match op {
            ReduceOp::Sum | ReduceOp::Average => (r % 5) as i64,
            ReduceOp::Product if dtype == DataType::U8 => 1 + (r % 2) as i64,
            ReduceOp::Product => [1, 2, -1][(r % 3) as usize],
            ReduceOp::Min | ReduceOp::Max if dtype == DataType::U8 => (r % 100) as i64,
            ReduceOp::Min | ReduceOp::Max => (r % 100) as i64 - 50,
        };
        put(&mut buf, dtype, i, v);
    }
    buf
}

type RefKey = (DataType, ReduceOp, usize, usize, usize, u64, u64);
type RefCell = Arc<OnceLock<Arc<Vec<u8>>>>;

/// The sequential reference of an allreduce of [`input`]s with the engine's scaling:
/// each input times `prescale`, folded in rank order, times `postscale` (divided by `np`
/// for Average). Memoised: on threads every rank asks for the same reference.
pub fn reference(
    dtype: DataType,
    op: ReduceOp,
    np: usize,
    elems: usize,
    salt: usize,
    prescale: f64,
    postscale: f64,
) -> Arc<Vec<u8>> {
    static CACHE: OnceLock<Mutex<HashMap<RefKey, RefCell>>> = OnceLock::new();
    let key = (
        dtype,
        op,
        np,
        elems,
        salt,
        prescale.to_bits(),
        postscale.to_bits(),
    );
    let cell = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_default()
        .clone();
    cell.get_or_init(|| {
        let (pre, post, rop) = scales(op, prescale, postscale, np);
        let mut acc = input(dtype, op, 0, elems, salt);
        scale(&mut acc, dtype, pre);
        for r in 1..np {
            let mut x = input(dtype, op, r, elems, salt);
            scale(&mut x, dtype, pre);
            reduce_into(&mut acc, &x, dtype, rop).expect("reference reduction");
        }
        scale(&mut acc, dtype, post);
        Arc::new(acc)
    })
    .clone()
}

/// The engine's rule: Average runs as Sum with the postscale divided by the rank count.
fn scales(op: ReduceOp, pre: f64, post: f64, np: usize) -> (f64, f64, ReduceOp) {
    if op == ReduceOp::Average {
        (pre, post / np as f64, ReduceOp::Sum)
    } else {
        (pre, post, op)
    }
}

/// An allreduce as the engine runs it: prescale, the collective (Average as Sum), postscale.
#[allow(clippy::too_many_arguments)]
pub fn allreduce_scaled(
    c: &dyn Collectives,
    buf: &mut [u8],
    dtype: DataType,
    op: ReduceOp,
    prescale: f64,
    postscale: f64,
    seq: u64,
    deadline: Instant,
) -> Result<(), TransportError> {
    let (pre, post, op) = scales(op, prescale, postscale, c.size());
    scale(buf, dtype, pre);
    c.allreduce(buf, dtype, op, seq, deadline)?;
    scale(buf, dtype, post);
    Ok(())
}

/// `Ok` if `got == want`, else where they first differ.
fn same(what: impl fmt::Display, got: &[u8], want: &[u8], elem: usize) -> Result<(), String> {
    if got == want {
        return Ok(());
    }
    if got.len() != want.len() {
        return Err(format!(
            "{what}: {} bytes, expected {}",
            got.len(),
            want.len()
        ));
    }
    let i = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
    let e = i / elem.max(1) * elem.max(1);
    let end = (e + elem.max(1)).min(got.len());
    Err(format!(
        "{what}: element {} (byte {i}) is {:02x?}, expected {:02x?}",
        i / elem.max(1),
        &got[e..end],
        &want[e..end]
    ))
}

// ---------------------------------------------------------------------------------------
// The checks

/// One allreduce of this rank's [`input`] (prescaled and postscaled by `scale`) checked
/// against the [`reference`]; `what` names it in a failure.
#[allow(clippy::too_many_arguments)]
fn check_allreduce(
    c: &dyn Collectives,
    seq: &mut Seq,
    dtype: DataType,
    op: ReduceOp,
    elems: usize,
    salt: usize,
    (pre, post): (f64, f64),
    what: &str,
) -> Result<(), String> {
    let mut buf = input(dtype, op, c.rank(), elems, salt);
    allreduce_scaled(c, &mut buf, dtype, op, pre, post, seq.take(), deadline())
        .map_err(|e| call_err(what, e))?;
    let want = reference(dtype, op, c.size(), elems, salt, pre, post);
    same(what, &buf, &want, dtype.size())
}

/// Element counts for the many-combination checks: empty, one, primes, past 32 KiB.
const SMALL_ELEMS: [usize; 8] = [0, 1, 2, 7, 13, 61, 1031, 4099];

/// Every dtype × op × small size (0, 1, primes; up to 32 KiB), against the reference.
pub fn allreduce_every_dtype_op_and_size(c: &dyn Collectives, seq: &mut Seq) -> Result<(), String> {
    for (salt, &elems) in SMALL_ELEMS.iter().enumerate() {
        for dtype in DataType::ALL {
            for op in ReduceOp::ALL {
                let what = format!("allreduce {dtype} {op} of {elems} elements");
                check_allreduce(c, seq, dtype, op, elems, salt, (1.0, 1.0), &what)?;
            }
        }
    }
    Ok(())
}

/// One allreduce per dtype past 1 MiB (several ring segments and shared-memory slices; an
/// odd element count), cycling through the ops.
pub fn allreduce_large(c: &dyn Collectives, seq: &mut Seq) -> Result<(), String> {
    for (i, dtype) in DataType::ALL.into_iter().enumerate() {
        let op = ReduceOp::ALL[i % ReduceOp::ALL.len()];
        let elems = (1 << 20) / dtype.size() + 2 * 4099 + 1;
        let salt = 100 + i;
        let what = format!("allreduce {dtype} {op} of {elems} elements");
        check_allreduce(c, seq, dtype, op, elems, salt, (1.0, 1.0), &what)?;
    }
    Ok(())
}

/// Average and prescale/postscale, the way the engine applies them, for every dtype.
pub fn allreduce_average_prescale_postscale(
    c: &dyn Collectives,
    seq: &mut Seq,
) -> Result<(), String> {
    let cases = [
        (ReduceOp::Average, 1.0, 1.0),
        (ReduceOp::Sum, 2.0, 0.5),
        (ReduceOp::Average, 0.5, 3.0),
        (ReduceOp::Sum, 1.0, 0.25),
        (ReduceOp::Max, 4.0, 1.0),
    ];
    for dtype in DataType::ALL {
        for (k, &(op, pre, post)) in cases.iter().enumerate() {
            let elems = 1031;
            let salt = 200 + k;
            let what = format!("allreduce {dtype} {op} prescale {pre} postscale {post}");
            check_allreduce(c, seq, dtype, op, elems, salt, (pre, post), &what)?;
        }
    }
    Ok(())
}

/// Random fractions (the sum depends on the order of additions): every rank must end with
/// the same bits, checked by allgathering a hash of each rank's result.
pub fn allreduce_inexact_floats_agree(c: &dyn Collectives, seq: &mut Seq) -> Result<(), String> {
    let (me, np) = (c.rank(), c.size());
    let floats = [DataType::F16, DataType::Bf16, DataType::F32, DataType::F64];
    for (k, elems) in [4099usize, (1 << 20) / 4 + 13].into_iter().enumerate() {
        for dtype in floats {
            let value =
                |rank: usize, i: usize| (mix(rank, i, 300 + k) % 1_000_000) as f64 / 7919.0 - 60.0;
            let mut buf = vec![0u8; elems * dtype.size()];
            for i in 0..elems {
                let x = value(me, i);
                let s = dtype.size();
                let dst = &mut buf[i * s..(i + 1) * s];
                match dtype {
                    DataType::F16 => dst.copy_from_slice(&f16::from_f64(x).to_le_bytes()),
                    DataType::Bf16 => dst.copy_from_slice(&bf16::from_f64(x).to_le_bytes()),
                    DataType::F32 => dst.copy_from_slice(&(x as f32).to_le_bytes()),
                    _ => dst.copy_from_slice(&x.to_le_bytes()),
                }
            }
            let what = format!("inexact allreduce {dtype} sum of {elems} elements");
            c.allreduce(&mut buf, dtype, ReduceOp::Sum, seq.take(), deadline())
                .map_err(|e| call_err(&what, e))?;
            if dtype == DataType::F64 {
                // It really is a sum (not one rank's input), up to rounding.
                let got = f64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
                let want: f64 = (0..np).map(|r| value(r, 0)).sum();
                if (got - want).abs() > 1e-9 {
                    return Err(format!("{what}: element 0 is {got}, expected about {want}"));
                }
            }
            let mine = fnv1a(&buf).to_le_bytes();
            let mut all = vec![0u8; 8 * np];
            c.allgatherv(&mine, &mut all, &vec![8; np], seq.take(), deadline())
                .map_err(|e| call_err(format!("allgather of the hashes after {what}"), e))?;
            let hashes: Vec<&[u8]> = all.chunks(8).collect();
            if hashes.iter().any(|h| *h != hashes[0]) {
                let differ: Vec<usize> = (0..np).filter(|&r| hashes[r] != hashes[0]).collect();
                return Err(format!(
                    "{what}: ranks {differ:?} hold different bits than rank 0"
                ));
            }
        }
    }
    Ok(())
}

fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Allgatherv with ragged contributions: empty ranks, single bytes, primes, and past 1 MiB.
pub fn allgatherv_ragged(c: &dyn Collectives, seq: &mut Seq) -> Result<(), String> {
    let (me, np) = (c.rank(), c.size());
    let layouts: [&dyn Fn(usize) -> usize; 4] = [
        &|r| (mix(r, 0, 1) % 40) as usize * usize::from(r % 3 != 1),
        &|r| [0, 1, 13, 4099, 61][r % 5],
        &|r| if r == np - 1 { 1 } else { 0 },
        &|r| if r == 0 { 0 } else { (1 << 20) + 7919 * r },
    ];
    for (k, layout) in layouts.iter().enumerate() {
        let sizes: Vec<usize> = (0..np).map(layout).collect();
        let mine = pattern(me + 100 * k, sizes[me]);
        let mut out = vec![0xEE; sizes.iter().sum()];
        let what = format!("allgatherv of {sizes:?} bytes");
        c.allgatherv(&mine, &mut out, &sizes, seq.take(), deadline())
            .map_err(|e| call_err(&what, e))?;
        let want: Vec<u8> = (0..np)
            .flat_map(|r| pattern(r + 100 * k, sizes[r]))
            .collect();
        same(&what, &out, &want, 1)?;
    }
    Ok(())
}

/// Broadcast from every root, of 0, 1, prime and past-1-MiB lengths.
pub fn broadcast_from_every_root(c: &dyn Collectives, seq: &mut Seq) -> Result<(), String> {
    let (me, np) = (c.rank(), c.size());
    for len in [0usize, 1, 13, 4099, (1 << 20) + 5] {
        for root in 0..np {
            let want = pattern(root * 7 + len, len);
            let mut buf = if me == root {
                want.clone()
            } else {
                vec![0xEE; len]
            };
            let what = format!("broadcast of {len} bytes from root {root}");
            c.broadcast(&mut buf, root, seq.take(), deadline())
                .map_err(|e| call_err(&what, e))?;
            same(&what, &buf, &want, 1)?;
        }
    }
    Ok(())
}

/// Alltoallv with uneven splits: about a third of the pairs exchange nothing; the last
/// layout moves about 1 MiB per rank.
pub fn alltoallv_uneven(c: &dyn Collectives, seq: &mut Seq) -> Result<(), String> {
    let (me, np) = (c.rank(), c.size());
    for salt in 0..4usize {
        let split = |s: usize, d: usize| -> usize {
            if salt == 3 {
                if (s + d).is_multiple_of(3) {
                    0
                } else {
                    (256 << 10) + 4099 * s + 61 * d
                }
            } else {
                let x = mix(s, d, salt) % 60;
                if x < 20 { 0 } else { x as usize }
            }
        };
        let part = |s: usize, d: usize| pattern(1000 * s + d + 7 * salt, split(s, d));
        let send: Vec<usize> = (0..np).map(|d| split(me, d)).collect();
        let recv: Vec<usize> = (0..np).map(|s| split(s, me)).collect();
        let inp: Vec<u8> = (0..np).flat_map(|d| part(me, d)).collect();
        let mut out = vec![0xEE; recv.iter().sum()];
        let what = format!("alltoallv sending {send:?} receiving {recv:?}");
        c.alltoallv(&inp, &send, &mut out, &recv, seq.take(), deadline())
            .map_err(|e| call_err(&what, e))?;
        let want: Vec<u8> = (0..np).flat_map(|s| part(s, me)).collect();
        same(&what, &out, &want, 1)?;
    }
    Ok(())
}

/// Reducescatter with uneven blocks (some empty) for every dtype and op, and one past 1 MiB.
pub fn reducescatter_uneven(c: &dyn Collectives, seq: &mut Seq) -> Result<(), String> {
    let np = c.size();
    let layouts: [&dyn Fn(usize) -> usize; 2] = [&|r| (mix(r, 1, 5) % 6) as usize, &|r| {
        [61, 0, 1031, 7, 1][r % 5]
    }];
    let mut salt = 400;
    for layout in layouts {
        let elems: Vec<usize> = (0..np).map(layout).collect();
        for dtype in DataType::ALL {
            for op in ReduceOp::ALL {
                salt += 1;
                check_reducescatter(c, seq, dtype, op, &elems, salt)?;
            }
        }
    }
    let elems: Vec<usize> = (0..np)
        .map(|r| [70_001, 0, 130_000, 99_999, 12_347][r % 5] * 2)
        .collect();
    for (dtype, op) in [
        (DataType::F32, ReduceOp::Sum),
        (DataType::I32, ReduceOp::Max),
    ] {
        salt += 1;
        check_reducescatter(c, seq, dtype, op, &elems, salt)?;
    }
    Ok(())
}

/// One reducescatter of this rank's [`input`] into blocks of `elems[r]` elements for rank
/// `r`, checked against this rank's block of the [`reference`].
fn check_reducescatter(
    c: &dyn Collectives,
    seq: &mut Seq,
    dtype: DataType,
    op: ReduceOp,
    elems: &[usize],
    salt: usize,
) -> Result<(), String> {
    let (me, np) = (c.rank(), c.size());
    let total: usize = elems.iter().sum();
    let bytes: Vec<usize> = elems.iter().map(|e| e * dtype.size()).collect();
    let mut inp = input(dtype, op, me, total, salt);
    let mut out = vec![0xEE; bytes[me]];
    // Average runs as Sum, then the engine's division (other ops: the op itself, no scaling).
    let (_, post, rop) = scales(op, 1.0, 1.0, np);
    let what = format!("reducescatter {dtype} {op} of blocks {elems:?}");
    c.reducescatter(
        &mut inp,
        &mut out,
        &bytes,
        dtype,
        rop,
        seq.take(),
        deadline(),
    )
    .map_err(|e| call_err(&what, e))?;
    scale(&mut out, dtype, post);
    let want = reference(dtype, op, np, total, salt, 1.0, 1.0);
    same(
        &what,
        &out,
        &want[blocks_from_sizes(&bytes)[me].clone()],
        dtype.size(),
    )
}

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

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

// ---------------------------------------------------------------------------------------
// Faults

/// The collectives a dead rank is checked against, by name.
pub const FAULT_KINDS: [&str; 6] = [
    "allreduce",
    "allgatherv",
    "broadcast",
    "alltoallv",
    "reducescatter",
    "barrier",
];

/// For each collective and each job size in `opts.nps`: after one good call of it (so
/// connections exist), rank 1 aborts while the others are inside the collective (for
/// broadcast it is the root, so everyone needs it). Every other rank must fail — not hang,
/// not succeed — within `opts.fault_bound`, with an error naming rank 1 (see
/// [`Options::all_name_the_dead_rank`]). As the engine does, a rank that fails aborts itself.
pub fn dead_rank_fails_the_others(factory: &(dyn Fn(usize) -> Vec<Member> + Sync), opts: &Options) {
    let mut problems = Vec::new();
    for np in opts.nps.clone() {
        for kind in FAULT_KINDS {
            let victim = 1;
            let members = factory(np);
            let outcomes = on_threads(&members, |m| fault_rank(m, kind, victim));
            let mut named = 0;
            for (r, o) in outcomes.iter().enumerate() {
                if r == victim {
                    continue;
                }
                match o {
                    Err(e) => problems.push(format!("np {np} {kind} rank {r}: {e}")),
                    Ok((err, took)) => {
                        let names = err.peer() == Some(victim)
                            || err.to_string().contains(&format!("rank {victim}"));
                        named += usize::from(names);
                        if *took > opts.fault_bound {
                            problems.push(format!(
                                "np {np} {kind} rank {r}: failed only after {took:?}: {err}"
                            ));
                        }
                        if opts.all_name_the_dead_rank.contains(&kind) && !names {
                            problems.push(format!(
                                "np {np} {kind} rank {r}: error does not name rank {victim}: {err}"
                            ));
                        }
                    }
                }
            }
            if named == 0 {
                problems.push(format!(
                    "np {np} {kind}: no rank's error names the dead rank {victim}: {:?}",
                    outcomes
                        .iter()
                        .map(|o| o.as_ref().map(|(e, _)| e.to_string()))
                        .collect::<Vec<_>>()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "dead_rank_fails_the_others:\n  {}",
        problems.join("\n  ")
    );
}

/// One rank of a fault scenario: `Ok((error, time to fail))` for a survivor that failed.
fn fault_rank(m: &Member, kind: &str, victim: usize) -> Result<(TransportError, Duration), String> {
    let c = m.collectives();
    let (me, np) = (c.rank(), c.size());
    let mut seq = Seq::default();
    let len = (1 << 20) + 4;
    let run = |s: u64| {
        let dl = deadline();
        match kind {
            "allreduce" => c.allreduce(&mut vec![1u8; len], DataType::F32, ReduceOp::Sum, s, dl),
            "allgatherv" => {
                let sizes = vec![len; np];
                c.allgatherv(&vec![1u8; len], &mut vec![0u8; len * np], &sizes, s, dl)
            }
            "broadcast" => c.broadcast(&mut vec![0u8; len], victim, s, dl),
            "alltoallv" => {
                let split = vec![len / np / 4 * 4; np];
                let total = split.iter().sum();
                c.alltoallv(
                    &vec![1u8; total],
                    &split,
                    &mut vec![0u8; total],
                    &split,
                    s,
                    dl,
                )
            }
            "reducescatter" => {
                let blocks = vec![len / 4 * 4; np];
                let total = blocks.iter().sum();
                let mut out = vec![0u8; blocks[me]];
                let (f, sum) = (DataType::F32, ReduceOp::Sum);
                c.reducescatter(&mut vec![0u8; total], &mut out, &blocks, f, sum, s, dl)
            }
            _ => c.barrier(s, dl),
        }
    };
    // The same call once with everyone: a job that ran it has made whatever connections it
    // needs (the TCP transport connects on first use, and a peer that dies before its first
    // contact is only seen at the deadline).
    run(seq.take()).map_err(|e| call_err(format!("{kind} with every rank alive"), e))?;
    if me == victim {
        // Let the others get inside the collective first.
        std::thread::sleep(Duration::from_millis(200));
        m.abort(&format!("rank {me} dies on purpose"));
        return Err("(the dead rank)".into());
    }
    let start = Instant::now();
    let res = run(seq.take());
    let took = start.elapsed();
    match res {
        Ok(()) => Err(format!("{kind} succeeded although rank {victim} was dead")),
        Err(e) => {
            m.abort(&format!("rank {me} failed: {e}"));
            Ok((e, took))
        }
    }
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
            allgatherv_ragged, broadcast_from_every_root, alltoallv_uneven,
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
