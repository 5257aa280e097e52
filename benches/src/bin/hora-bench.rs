//! `hora-bench`: times hora's collectives over a range of sizes, like nccl-tests.
//!
//! Run under the launcher: `horovodrun -np 2 hora-bench allreduce -b 4K -e 256M -f 4 --check`.
//! Timing follows the peer benchmarks in this repository: before each timed call all ranks
//! meet at a barrier, each rank times its own call, the per-iteration time is the maximum over
//! ranks, and a size reports the median over iterations. busbw uses nccl-tests' factors.
//!
//! `--transport tcp|shm|mpi` forces the transport (default: what the job would choose); the
//! header line says which one ran. `--raw` times the chosen collectives directly, without the
//! engine (allreduce only).

#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use half::{bf16, f16};
use hora::engine::OpOptions;
use hora::handle::Completion;
use hora::{DataType, ReduceOp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Collective {
    Allreduce,
    Allgather,
    Broadcast,
    Alltoall,
    Reducescatter,
}

/// A transport `--transport` can force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TransportChoice {
    /// The ring over TCP, even when every rank is on one host (`HOROVOD_SHM=0`).
    Tcp,
    /// Shared-memory collectives (every rank on this host), control messages over TCP.
    Shm,
    /// MPI's transport and native collectives (a build with `--features mpi`, under mpirun).
    Mpi,
}

/// Benchmark hora's collectives (run it under horovodrun).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Which collective to time.
    #[arg(value_enum)]
    collective: Collective,
    /// Smallest size in bytes (K, M, G suffixes).
    #[arg(short = 'b', long = "minbytes", default_value = "4K", value_parser = parse_size)]
    min_bytes: usize,
    /// Largest size in bytes.
    #[arg(short = 'e', long = "maxbytes", default_value = "64M", value_parser = parse_size)]
    max_bytes: usize,
    /// Multiply the size by this between steps.
    #[arg(short = 'f', long = "stepfactor", default_value_t = 4)]
    factor: usize,
    /// Element type: u8, i8, i32, i64, f16, bf16, f32, f64.
    #[arg(long, default_value = "f32")]
    dtype: DataType,
    /// Reduction: sum, average, min, max, product, adasum (float dtypes, allreduce only).
    #[arg(long, default_value = "sum")]
    op: ReduceOp,
    /// Timed iterations per size (default depends on size, as in the peer benchmarks).
    #[arg(short = 'n', long)]
    iters: Option<usize>,
    /// Untimed warm-up iterations per size.
    #[arg(short = 'w', long)]
    warmup: Option<usize>,
    /// Check the result of one call per size and count wrong elements.
    #[arg(short = 'c', long)]
    check: bool,
    /// Also write one JSON object per size to this file (rank 0).
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Force the transport: tcp, shm or mpi (default: what the job would choose).
    #[arg(long, value_enum)]
    transport: Option<TransportChoice>,
    /// Time the transport's allreduce itself, without the engine (no negotiation, no engine
    /// thread): what the job's collectives cost on their own, e.g. beside MPI's.
    #[arg(long)]
    raw: bool,
    /// Split the job into process sets of this many consecutive ranks (given at init) and time
    /// each set's collectives on its own, every set at once; rank 0 reports set 1's.
    #[arg(long, value_name = "N")]
    set_of: Option<usize>,
    /// With --set-of: only the first set runs; the other ranks wait (a set inside a bigger,
    /// idle job).
    #[arg(long, requires = "set_of")]
    first_set_only: bool,
    /// Allreduce only: each size is split into this many equal tensors submitted as one group
    /// (Horovod's grouped_allreduce: negotiated as a unit, fused), to compare with one tensor of
    /// the whole size.
    #[arg(long, value_name = "N")]
    group: Option<usize>,
}

/// The job's configuration from the environment, with `--transport` applied.
fn config_for(choice: Option<TransportChoice>) -> Result<hora::config::Config, hora::Error> {
    use hora::config::Controller;
    let mut config = hora::config::Config::from_env()?;
    let topo = config.topology;
    let refuse = |value: &str, reason: String| hora::Error::InvalidConfig {
        var: "--transport".into(),
        value: value.into(),
        reason,
    };
    match choice {
        None => {}
        Some(TransportChoice::Tcp) => {
            config.tuning.shm = false;
            config.tuning.controller = Controller::Tcp;
        }
        Some(TransportChoice::Shm) => {
            if topo.local_size != topo.size || topo.size < 2 {
                return Err(refuse(
                    "shm",
                    format!(
                        "transport shm needs at least 2 ranks, all on this host; this job has {} \
                     rank(s), {} on this host",
                        topo.size, topo.local_size
                    ),
                ));
            }
            config.tuning.shm = true;
            config.tuning.controller = Controller::Tcp;
        }
        Some(TransportChoice::Mpi) => {
            // The hook for the MPI transport: with the `mpi` feature the engine's own
            // selection (HOROVOD_CONTROLLER=mpi) takes over and says what else is missing.
            if !cfg!(feature = "mpi") {
                return Err(refuse(
                    "mpi",
                    "transport mpi needs a build with --features mpi \
                     (cargo build --release -p hora-bench --features mpi)"
                        .into(),
                ));
            }
            config.tuning.controller = Controller::Mpi;
        }
    }
    Ok(config)
}

fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&s[..s.len() - 1], 1usize << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<usize>()
        .map(|n| n * mult)
        .map_err(|e| format!("bad size {s:?}: {e}"))
}

fn default_iters(bytes: usize) -> (usize, usize) {
    match bytes {
        0..=65_536 => (20, 200),
        65_537..=1_048_576 => (10, 50),
        1_048_577..=16_777_216 => (3, 15),
        16_777_217..=67_108_864 => (2, 8),
        _ => (1, 5),
    }
}

fn write_value(buf: &mut [u8], dtype: DataType, i: usize, v: f64) {
    let s = dtype.size();
    let dst = &mut buf[i * s..(i + 1) * s];
    match dtype {
        DataType::U8 => dst.copy_from_slice(&(v as u8).to_le_bytes()),
        DataType::I8 => dst.copy_from_slice(&(v as i8).to_le_bytes()),
        DataType::I16 => dst.copy_from_slice(&(v as i16).to_le_bytes()),
        DataType::U16 => dst.copy_from_slice(&(v as u16).to_le_bytes()),
        DataType::Bool => dst[0] = u8::from(v != 0.0),
        DataType::I32 => dst.copy_from_slice(&(v as i32).to_le_bytes()),
        DataType::I64 => dst.copy_from_slice(&(v as i64).to_le_bytes()),
        DataType::F16 => dst.copy_from_slice(&f16::from_f64(v).to_le_bytes()),
        DataType::Bf16 => dst.copy_from_slice(&bf16::from_f64(v).to_le_bytes()),
        DataType::F32 => dst.copy_from_slice(&(v as f32).to_le_bytes()),
        DataType::F64 => dst.copy_from_slice(&v.to_le_bytes()),
    }
}

fn read_value(buf: &[u8], dtype: DataType, i: usize) -> f64 {
    let s = dtype.size();
    let b = &buf[i * s..(i + 1) * s];
    match dtype {
        DataType::U8 => f64::from(b[0]),
        DataType::I8 => f64::from(b[0] as i8),
        DataType::I16 => f64::from(i16::from_le_bytes(b.try_into().unwrap())),
        DataType::U16 => f64::from(u16::from_le_bytes(b.try_into().unwrap())),
        DataType::Bool => f64::from(b[0]),
        DataType::I32 => f64::from(i32::from_le_bytes(b.try_into().unwrap())),
        DataType::I64 => i64::from_le_bytes(b.try_into().unwrap()) as f64,
        DataType::F16 => f16::from_le_bytes(b.try_into().unwrap()).to_f64(),
        DataType::Bf16 => bf16::from_le_bytes(b.try_into().unwrap()).to_f64(),
        DataType::F32 => f64::from(f32::from_le_bytes(b.try_into().unwrap())),
        DataType::F64 => f64::from_le_bytes(b.try_into().unwrap()),
    }
}

/// One benchmark job: the engine, the reused buffer, and the job's shape.
struct Bench {
    engine: std::sync::Arc<hora::engine::Engine>,
    args: Args,
    rank: usize,
    size: usize,
    /// The buffer of the current size, moved into each call and back out of its handle.
    buf: Option<Vec<u8>>,
    /// With --group: the members' buffers, moved into the group's calls and back.
    members: Vec<Vec<u8>>,
}

impl Bench {
    /// With --group: `buf` (of `bytes`) cut into the members (outside any timing).
    fn split_into_members(&mut self, k: usize) {
        let buf = self.buf.get_or_insert_with(Vec::new);
        let chunk = buf.len() / k;
        self.members = buf
            .chunks(chunk.max(1))
            .take(k)
            .map(<[u8]>::to_vec)
            .collect();
    }

    /// With --group: the members put back together into `buf`.
    fn join_members(&mut self) {
        self.buf = Some(self.members.concat());
    }

    /// One grouped allreduce of `bytes`, `k` members (the buffers are kept).
    fn call_group(&mut self, bytes: usize, k: usize) -> Result<Completion, hora::Error> {
        let dtype = self.args.dtype;
        let per = bytes / k / dtype.size();
        if self.members.len() != k || self.members[0].len() != per * dtype.size() {
            self.buf = Some(vec![0u8; per * k * dtype.size()]);
            self.split_into_members(k);
        }
        let ops = std::mem::take(&mut self.members)
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                let op =
                    hora::engine::Op::allreduce(format!("bench.{bytes}.{i}"), dtype, &[per as u64])
                        .reduce_op(self.args.op);
                (op, Some(Box::new(m) as Box<dyn hora::TensorData>))
            })
            .collect();
        let mut last = None;
        for h in self.engine.submit_group(ops) {
            let mut c = h.wait()?;
            self.members
                .push(c.take_data::<Vec<u8>>().unwrap_or_default());
            last = Some(c);
        }
        Ok(last.expect("a group of at least one member"))
    }

    /// Runs one call of `bytes` total and returns the completion (the buffer is kept).
    fn call(&mut self, bytes: usize) -> Result<Completion, hora::Error> {
        if let Some(k) = self.args.group {
            return self.call_group(bytes, k);
        }
        let dtype = self.args.dtype;
        let n = self.size;
        let e = &self.engine;
        let name = format!("bench.{bytes}");
        let per_rank = match self.args.collective {
            Collective::Allgather => bytes / n / dtype.size(),
            _ => bytes / dtype.size(),
        };
        if self
            .buf
            .as_ref()
            .is_none_or(|b| b.len() != per_rank * dtype.size())
        {
            self.buf = Some(vec![0u8; per_rank * dtype.size()]);
        }
        // The buffer moves into the engine and back out of the handle: no copies.
        let view = self.buf.take().expect("buffer present");
        let shape = [per_rank as u64];
        let h = match self.args.collective {
            Collective::Allreduce => e.allreduce_async(
                &name,
                dtype,
                &shape,
                Box::new(view),
                self.args.op,
                OpOptions::default(),
            ),
            Collective::Allgather => e.allgather_async(&name, dtype, &shape, Box::new(view)),
            Collective::Broadcast => e.broadcast_async(&name, dtype, &shape, Box::new(view), 0),
            Collective::Alltoall => {
                let splits = even(per_rank as u64, n);
                e.alltoall_async(&name, dtype, &shape, Box::new(view), splits)
            }
            Collective::Reducescatter => e.reducescatter_async(
                &name,
                dtype,
                &shape,
                Box::new(view),
                self.args.op,
                OpOptions::default(),
            ),
        };
        let mut c = h.wait()?;
        self.buf = c.take_data::<Vec<u8>>();
        Ok(c)
    }
}

fn even(rows: u64, n: usize) -> Vec<u64> {
    let n64 = n as u64;
    (0..n64)
        .map(|r| rows / n64 + u64::from(r < rows % n64))
        .collect()
}

fn expected(args: &Args, n: usize, rank_value: impl Fn(usize) -> f64) -> f64 {
    let vals: Vec<f64> = (0..n).map(rank_value).collect();
    match args.op {
        ReduceOp::Sum => vals.iter().sum(),
        ReduceOp::Average => vals.iter().sum::<f64>() / n as f64,
        ReduceOp::Min => vals.iter().cloned().fold(f64::INFINITY, f64::min),
        ReduceOp::Max => vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
        ReduceOp::Product => vals.iter().product(),
        ReduceOp::Adasum => adasum_of_parallel(vals),
    }
}

/// Adasum of parallel vectors `v[r]·u` (the check's inputs) is `(a + b) / 2` per pair, taken
/// over Adasum's tree: ranks `p..n` folded into `r - p` (`p` the largest power of two ≤ n),
/// then pairs of neighbours level by level.
fn adasum_of_parallel(mut v: Vec<f64>) -> f64 {
    let p = 1usize << (usize::BITS - 1 - v.len().leading_zeros());
    for r in 0..v.len() - p {
        v[r] = (v[r] + v[r + p]) / 2.0;
    }
    v.truncate(p);
    while v.len() > 1 {
        v = v.chunks(2).map(|w| (w[0] + w[1]) / 2.0).collect();
    }
    v[0]
}

fn bus_factor(c: Collective, n: usize) -> f64 {
    let n = n as f64;
    match c {
        Collective::Allreduce => 2.0 * (n - 1.0) / n,
        Collective::Broadcast => 1.0,
        Collective::Allgather | Collective::Alltoall | Collective::Reducescatter => (n - 1.0) / n,
    }
}

/// Counts wrong elements after one call with rank r contributing r+1 (alltoall/allgather: a
/// value identifying the sender).
fn check(b: &mut Bench, bytes: usize) -> Result<u64, hora::Error> {
    let dtype = b.args.dtype;
    let n = b.size;
    let r = b.rank;
    let elems = bytes / dtype.size();
    let per_rank = if b.args.collective == Collective::Allgather {
        elems / n
    } else {
        elems
    };
    b.buf = Some(vec![0u8; per_rank * dtype.size()]);
    {
        let buf = b.buf.as_mut().unwrap();
        for i in 0..per_rank {
            let v = match b.args.collective {
                Collective::Broadcast => {
                    if r == 0 {
                        (i % 7) as f64
                    } else {
                        99.0
                    }
                }
                _ => (r + 1) as f64,
            };
            write_value(buf, dtype, i, v);
        }
    }
    if let Some(k) = b.args.group {
        b.split_into_members(k);
    }
    let c = b.call(bytes)?;
    if b.args.group.is_some() {
        b.join_members();
    }
    let mut wrong = 0u64;
    match b.args.collective {
        Collective::Allreduce => {
            let want = expected(&b.args, n, |r| (r + 1) as f64);
            let buf = b.buf.as_ref().unwrap();
            let tolerance = if dtype.is_float() {
                want.abs() * 1e-2
            } else {
                0.0
            };
            for i in 0..elems {
                let got = read_value(buf, dtype, i);
                // Integer averages truncate.
                let want = if !dtype.is_float() && b.args.op == ReduceOp::Average {
                    want.trunc()
                } else {
                    want
                };
                if (got - want).abs() > tolerance {
                    wrong += 1;
                }
            }
        }
        Collective::Broadcast => {
            let buf = b.buf.as_ref().unwrap();
            wrong = (0..elems)
                .filter(|&i| read_value(buf, dtype, i) != (i % 7) as f64)
                .count() as u64;
        }
        Collective::Allgather => {
            let out = c.output.unwrap_or_default();
            let per = elems / n;
            let ob = out.as_bytes();
            wrong = (0..per * n)
                .filter(|&i| read_value(ob, dtype, i) != (i / per.max(1) + 1) as f64)
                .count() as u64;
        }
        Collective::Alltoall => {
            let out = c.output.unwrap_or_default();
            let ob = out.as_bytes();
            let mut i = 0;
            for (src, &rows) in c.received_splits.iter().enumerate() {
                for _ in 0..rows {
                    if read_value(ob, dtype, i) != (src + 1) as f64 {
                        wrong += 1;
                    }
                    i += 1;
                }
            }
        }
        Collective::Reducescatter => {
            let want = expected(&b.args, n, |r| (r + 1) as f64);
            let out = c.output.unwrap_or_default();
            let ob = out.as_bytes();
            let tolerance = if dtype.is_float() {
                want.abs() * 1e-2
            } else {
                0.0
            };
            let want = if !dtype.is_float() && b.args.op == ReduceOp::Average {
                want.trunc()
            } else {
                want
            };
            wrong = (0..ob.len() / dtype.size())
                .filter(|&i| (read_value(ob, dtype, i) - want).abs() > tolerance)
                .count() as u64;
        }
    }
    // Reset to zeros so timing runs cannot overflow.
    if let Some(buf) = b.buf.as_mut() {
        buf.fill(0);
    }
    for m in &mut b.members {
        m.fill(0);
    }
    Ok(wrong)
}

/// `--raw`: the transport's own allreduce, called in a loop on this thread (no engine).
fn run_raw(args: Args) -> Result<bool, hora::Error> {
    if args.collective != Collective::Allreduce || args.op == ReduceOp::Average {
        return Err(hora::Error::InvalidConfig {
            var: "--raw".into(),
            value: format!("{:?} {}", args.collective, args.op.name()).to_lowercase(),
            reason: "--raw times allreduce with sum, min, max or product only \
                     (average is the engine's postscale)"
                .into(),
        });
    }
    let config = config_for(args.transport)?;
    let (rank, n) = (config.topology.rank, config.topology.size);
    let conn = hora::backend::connect(&config, 0)?;
    let coll = conn.collectives;
    let fail = |what: &str, e: hora::collectives::CollectiveError| {
        hora::Error::collective(rank, what, "bench", e)
    };
    let deadline = || hora_transport::deadline_after(config.tuning.op_timeout);
    let mut seq = 0u64;
    let mut next = || {
        seq += 1;
        seq
    };
    let (dtype, op) = (args.dtype, args.op);
    let dsize = dtype.size();
    if rank == 0 {
        println!(
            "# hora-bench Allreduce --raw: {n} ranks, dtype {dtype}, op {}, transport {} (no engine)",
            op.name(),
            conn.name
        );
        println!(
            "# {:>12} {:>12} {:>6} {:>8} {:>12} {:>9} {:>9}",
            "size(B)", "count", "type", "redop", "time(us)", "algbw", "busbw"
        );
    }
    let max = args.max_bytes.max(args.min_bytes) / dsize * dsize;
    let mut bytes = args.min_bytes.max(dsize) / dsize * dsize;
    loop {
        let (warm, iters) = default_iters(bytes);
        let warm = args.warmup.unwrap_or(warm);
        let iters = args.iters.unwrap_or(iters).max(1);
        let mut buf = vec![0u8; bytes];
        for i in 0..bytes / dsize {
            write_value(&mut buf, dtype, i, 1.0);
        }
        let mut times = Vec::with_capacity(iters);
        for i in 0..warm + iters {
            coll.barrier(next(), deadline())
                .map_err(|e| fail("barrier", e))?;
            let t0 = Instant::now();
            coll.allreduce(&mut buf, dtype, op, next(), deadline())
                .map_err(|e| fail("allreduce", e))?;
            if i >= warm {
                times.push(t0.elapsed().as_secs_f64());
            }
        }
        // Per iteration, the slowest rank decides; then the median over iterations.
        let mut raw: Vec<u8> = times.iter().flat_map(|t| t.to_le_bytes()).collect();
        coll.allreduce(&mut raw, DataType::F64, ReduceOp::Max, next(), deadline())
            .map_err(|e| fail("allreduce", e))?;
        let mut times: Vec<f64> = raw
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let t = times[times.len() / 2];
        let algbw = bytes as f64 / t / 1e9;
        if rank == 0 {
            println!(
                "  {:>12} {:>12} {:>6} {:>8} {:>12.1} {:>9.3} {:>9.3}",
                bytes,
                bytes / dsize,
                dtype.name(),
                op.name(),
                t * 1e6,
                algbw,
                algbw * bus_factor(Collective::Allreduce, n)
            );
        }
        if bytes >= max {
            break;
        }
        bytes = (bytes * args.factor.max(2)).min(max) / dsize * dsize;
    }
    coll.barrier(next(), deadline())
        .map_err(|e| fail("barrier", e))?;
    Ok(true)
}

fn run(args: Args) -> Result<bool, hora::Error> {
    if args.raw {
        return run_raw(args);
    }
    if let Some(k) = args.group
        && (k == 0 || args.collective != Collective::Allreduce)
    {
        return Err(hora::Error::InvalidConfig {
            var: "--group".into(),
            value: k.to_string(),
            reason: "groups are timed for allreduce, with at least one member".into(),
        });
    }
    let config = config_for(args.transport)?;
    let job = config.topology;
    let set = match args.set_of {
        None => 0,
        Some(k) if k == 0 || job.size % k != 0 => {
            return Err(hora::Error::InvalidConfig {
                var: "--set-of".into(),
                value: k.to_string(),
                reason: format!("must divide the job's {} ranks", job.size),
            });
        }
        Some(k) => {
            let groups: Vec<Vec<usize>> = (0..job.size / k)
                .map(|g| (g * k..(g + 1) * k).collect())
                .collect();
            hora::api::init_with_process_sets(config, &groups)?;
            (job.rank / k + 1) as u32
        }
    };
    if set == 0 {
        hora::api::init_with(config_for(args.transport)?)?;
    }
    let engine = hora::api::engine_for(set)?;
    let transport = hora::api::transport_name()?;
    if args.first_set_only && set != 1 {
        // Idle until the first set is done, as ranks of a bigger job that is not using them.
        hora::api::barrier()?;
        hora::api::shutdown();
        return Ok(true);
    }
    let how = if args.transport.is_some() {
        "forced by --transport"
    } else {
        "chosen by the job"
    };
    let topo = engine.topology();
    let (rank, n) = (topo.rank, topo.size);
    let dsize = args.dtype.size();
    let unit = dsize
        * if args.collective == Collective::Allgather {
            n
        } else {
            args.group.unwrap_or(1)
        };
    let max = args.max_bytes.max(args.min_bytes) / unit * unit;
    let mut json = match (&args.json, rank) {
        (Some(p), 0) => {
            Some(
                std::fs::File::create(p).map_err(|e| hora::Error::InvalidArgument {
                    rank,
                    tensor: "-".into(),
                    detail: format!("cannot create {}: {e}", p.display()),
                })?,
            )
        }
        _ => None,
    };
    let collective = args.collective;
    let mut b = Bench {
        engine: engine.clone(),
        rank,
        size: n,
        buf: None,
        members: Vec::new(),
        args,
    };
    if rank == 0 {
        println!(
            "# hora-bench {collective:?}: {n} ranks, dtype {}, op {}, transport {transport} ({how})",
            b.args.dtype, b.args.op
        );
        if let Some(k) = b.args.group {
            println!("# each size is {k} tensors in one group (grouped_allreduce)");
        }
        if set != 0 {
            let others = if b.args.first_set_only {
                "the other ranks idle"
            } else {
                "every set at once"
            };
            println!(
                "# process set {set} of {} ranks in a job of {} ({others})",
                n, job.size
            );
        }
        println!(
            "# {:>12} {:>12} {:>6} {:>8} {:>12} {:>9} {:>9} {:>8}",
            "size(B)", "count", "type", "redop", "time(us)", "algbw", "busbw", "#wrong"
        );
    }
    let mut all_ok = true;
    let mut bytes = b.args.min_bytes.max(unit) / unit * unit;
    loop {
        let (warm, iters) = default_iters(bytes);
        let warm = b.args.warmup.unwrap_or(warm);
        let iters = b.args.iters.unwrap_or(iters).max(1);
        let wrong_local = if b.args.check {
            check(&mut b, bytes)?
        } else {
            0
        };
        for _ in 0..warm {
            b.call(bytes)?;
        }
        let mut times = Vec::with_capacity(iters);
        for _ in 0..iters {
            engine.barrier()?;
            let t0 = Instant::now();
            b.call(bytes)?;
            times.push(t0.elapsed().as_secs_f64());
        }
        // Per iteration, the slowest rank decides; then the median over iterations.
        let mut times =
            hora::api::allreduce_in(set, &format!("bench.times.{bytes}"), times, ReduceOp::Max)?;
        let wrong = hora::api::allreduce_in(
            set,
            &format!("bench.wrong.{bytes}"),
            vec![wrong_local as i64],
            ReduceOp::Sum,
        )?[0];
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let t = times[times.len() / 2];
        let algbw = bytes as f64 / t / 1e9;
        let busbw = algbw * bus_factor(collective, n);
        all_ok &= wrong == 0;
        if rank == 0 {
            let redop = if matches!(
                collective,
                Collective::Allreduce | Collective::Reducescatter
            ) {
                b.args.op.name()
            } else {
                "none"
            };
            println!(
                "  {:>12} {:>12} {:>6} {:>8} {:>12.1} {:>9.3} {:>9.3} {:>8}",
                bytes,
                bytes / dsize,
                b.args.dtype.name(),
                redop,
                t * 1e6,
                algbw,
                busbw,
                if b.args.check {
                    wrong.to_string()
                } else {
                    "-".into()
                }
            );
            if let Some(f) = json.as_mut() {
                let row = serde_json::json!({
                    "collective": format!("{collective:?}").to_lowercase(), "np": n, "bytes": bytes,
                    "count": bytes / dsize, "dtype": b.args.dtype.name(), "op": redop,
                    "time_us": t * 1e6, "algbw_gbs": algbw, "busbw_gbs": busbw,
                    "wrong": if b.args.check { Some(wrong) } else { None }, "iters": iters,
                    "transport": transport,
                });
                let _ = writeln!(f, "{row}");
            }
        }
        if bytes >= max {
            break;
        }
        bytes = (bytes * b.args.factor.max(2)).min(max) / unit * unit;
    }
    if set != 0 {
        hora::api::barrier()?;
    }
    hora::api::shutdown();
    Ok(all_ok)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let forced = args.transport;
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("hora-bench: some results were wrong");
            ExitCode::FAILURE
        }
        Err(e) => {
            match forced {
                Some(t) => eprintln!(
                    "hora-bench (--transport {}): {e}",
                    format!("{t:?}").to_lowercase()
                ),
                None => eprintln!("hora-bench: {e}"),
            }
            ExitCode::FAILURE
        }
    }
}
