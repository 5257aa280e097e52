//! Every environment variable hora knows, declared once: name, type, default, what it
//! accepts and what it does. The [`Tuning`] and [`LogSettings`] structs, their `Default`, their
//! parser and the table in docs/configuration.md are all generated from the declarations
//! below, so they cannot drift apart (a test renders the table and compares it with the
//! checked-in file).
//!
//! Topology and rendezvous variables (`HOROVOD_RANK`, `HORA_STORE_ADDR`, ...) are parsed by
//! hand in `config.rs`, because they depend on each other (a rank below the size, a store
//! only for several ranks); they are declared here as [`TOPOLOGY`] rows so the docs list them.
//! Variables of other launchers (`MASTER_ADDR`, ...) are translated in `config/launchers.rs`.
//! `horovodrun` reads a few on its own, before any rank exists: `HOROVOD_SECRET_KEY` (a
//! user's secret is reused rather than a fresh one made), whether `HOROVOD_GLOO_TIMEOUT_SECONDS`
//! is set (so `--start-timeout` does not override it), `HOROVOD_START_TIMEOUT` (the default of
//! `--start-timeout`), `HORA_MPIRUN` (through
//! `hora_mpi::mpirun`) and `PYTHON` (`--check-build`). Those not declared above are listed in
//! [`ELSEWHERE`]; a test checks that every `HORA_*`/`HOROVOD_*` name in core, the transports
//! and the launcher is declared somewhere here.

use super::parse::{self, Vars};
use super::values::{AutotuneFixed, Controller, HierarchicalMode, LogLevel};
use crate::error::Error;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// One environment variable as docs/configuration.md lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The variable's name.
    pub var: &'static str,
    /// The default, in words.
    pub default: &'static str,
    /// What it accepts (for parsed settings, also the "expected ..." of its error).
    pub accepts: &'static str,
    /// What it does (Markdown; one line per source line of the declaration).
    pub doc: &'static str,
}

/// Declares a group of settings: a struct with one documented field per variable, its
/// `Default`, a reader (`read`) and the rows docs/configuration.md shows (`SETTINGS`).
/// A `modifiers` block adds variables that change fields already declared instead of
/// having their own (each with a parser and the function that applies its value).
macro_rules! settings {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[doc = $doc:literal])+
                $var:literal => $field:ident: $ty:ty = $default:expr,
                    shown $shown:literal, accepts $accepts:literal, parse $parse:expr;
            )*
        }
        $(modifiers {
            $(
                $(#[doc = $mdoc:literal])+
                $mvar:literal => shown $mshown:literal, accepts $maccepts:literal,
                    parse $mparse:expr, apply $apply:expr;
            )*
        })?
    ) => {
        $(#[$meta])*
        pub struct $name {
            $(
                $(#[doc = $doc])+
                #[doc = ""]
                #[doc = concat!("Set by `", $var, "`; default: ", $shown, ".")]
                pub $field: $ty,
            )*
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $($field: $default,)* }
            }
        }

        impl $name {
            /// The variables of this group, in the order the docs list them.
            pub const SETTINGS: &'static [Setting] = &[
                $(Setting {
                    var: $var,
                    default: $shown,
                    accepts: $accepts,
                    doc: concat!($($doc, "\n"),+),
                },)*
                $($(Setting {
                    var: $mvar,
                    default: $mshown,
                    accepts: $maccepts,
                    doc: concat!($($mdoc, "\n"),+),
                },)*)?
            ];

            /// Reads every variable of the group; an unset one keeps its default.
            pub(crate) fn read(v: &Vars<'_>) -> Result<Self, Error> {
                let mut s = Self::default();
                $(
                    if let Some(x) = ($parse)(v, $var, $accepts)? {
                        s.$field = x;
                    }
                )*
                $($(
                    if let Some(x) = ($mparse)(v, $mvar, $maccepts)? {
                        ($apply)(&mut s, x);
                    }
                )*)?
                Ok(s)
            }
        }
    };
}

settings! {
    /// Engine settings (everything but the topology and the rendezvous).
    #[derive(Debug, Clone, PartialEq)]
    pub struct Tuning {
        /// Accepted and validated for Horovod compatibility; has no effect: hora's engine is
        /// event-driven (see "Cycle time" below).
        "HOROVOD_CYCLE_TIME" => cycle_time: Duration = Duration::from_millis(1),
            shown "1", accepts "milliseconds >= 0, e.g. 1, 0.5 or 0", parse parse::millis;
        /// Largest fused allreduce, bytes.
        "HOROVOD_FUSION_THRESHOLD" => fusion_threshold: usize = 128 << 20,
            shown "134217728", accepts "a byte count, e.g. 67108864", parse parse::number;
        /// Response-cache entries; 0 turns the fast path off.
        "HOROVOD_CACHE_CAPACITY" => cache_capacity: usize = 1024,
            shown "1024", accepts "a number of entries (0 = off)", parse parse::number;
        /// 1: the tensors of a grouped operation (`grouped_allreduce` and friends) are fused
        /// only with each other, never with tensors outside the group, as in Horovod; 0: a
        /// group is still negotiated as one unit but fuses with whatever else is ready.
        "HOROVOD_DISABLE_GROUP_FUSION" => disable_group_fusion: bool = false,
            shown "0", accepts "1/0, true/false, yes/no or on/off", parse parse::flag;
        /// Warn about tensors that some ranks submitted and others did not after this long;
        /// 0 (or `HOROVOD_STALL_CHECK_DISABLE=1`) turns the warning off.
        "HOROVOD_STALL_CHECK_TIME_SECONDS" => stall_warning: Option<Duration> =
            Some(Duration::from_secs(60)),
            shown "60", accepts "seconds", parse parse::seconds_or_off;
        /// Fail such tensors after this long; 0 = never.
        "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS" => stall_shutdown: Option<Duration> = None,
            shown "off", accepts "seconds", parse parse::seconds_or_off;
        /// Rendezvous and connection budget (at least 1 s); `horovodrun --start-timeout` sets
        /// it unless it is set already.
        "HOROVOD_GLOO_TIMEOUT_SECONDS" => connect_timeout: Duration = Duration::from_secs(30),
            shown "30", accepts "seconds", parse parse::seconds_at_least_1;
        /// Longest a running collective waits on its peers (at least 1 s).
        "HORA_OP_TIMEOUT_SECONDS" => op_timeout: Duration = Duration::from_secs(300),
            shown "300", accepts "seconds", parse parse::seconds_at_least_1;
        /// Busy-poll at most this long before sleeping in the kernel (each wait site lowers
        /// its own budget while spins are wasted, e.g. on a busy host); 0 never spins (the MPI
        /// transport never spins: it starved the peer).
        "HORA_SPIN_US" => spin: Duration = Duration::from_micros(50),
            shown "50", accepts "microseconds (0 = never spin)", parse parse::micros;
        /// Largest pipeline segment of the ring algorithms, bytes.
        "HORA_SEGMENT_BYTES" => segment_bytes: usize = 1 << 20,
            shown "1048576", accepts "a byte count >= 4096", parse parse::bytes_at_least_4096;
        /// A peer whose link stays silent this long (link cut, host down) is declared lost,
        /// even mid-wait (at least 3 s); 0 leaves the kernel's default (hours).
        "HORA_PEER_TIMEOUT_SECONDS" => peer_timeout: Option<Duration> =
            Some(Duration::from_secs(20)),
            shown "20", accepts "seconds (0 = off)", parse parse::peer_seconds;
        /// When every rank is on this host, allreduce runs through shared memory
        /// ([transports.md](transports.md)); 0 keeps it on TCP.
        "HOROVOD_SHM" => shm: bool = true,
            shown "1", accepts "1/0, true/false, yes/no or on/off", parse parse::flag;
        /// 1 lets `add_process_set` / `remove_process_set` change the job's process sets
        /// after `init`; 0 allows only the sets given to `init(process_sets=...)`
        /// ([process-sets.md](process-sets.md)).
        "HOROVOD_DYNAMIC_PROCESS_SETS" => dynamic_process_sets: bool = false,
            shown "0", accepts "1/0, true/false, yes/no or on/off", parse parse::flag;
        /// `mpi`: the MPI transport (needs `--features mpi` and `mpirun`, else init fails
        /// saying so); `gloo` or `tcp`: TCP (+ shared memory) even under mpirun; unset or
        /// `auto`: MPI when built in and started by mpirun, else TCP.
        "HOROVOD_CONTROLLER" => controller: Controller = Controller::Auto,
            shown "automatic", accepts "mpi (the MPI transport, under mpirun) or gloo/tcp",
            parse parse::choice;
        /// Rank 0 writes a Chrome-trace timeline (a lane per tensor: NEGOTIATE, with a tick
        /// named after each rank when its request arrived, then the collective) to this path;
        /// `horovodrun --timeline-filename` sets it. `DYNAMIC`:
        /// nothing is written until `start_timeline(path)` (which needs this variable set).
        "HOROVOD_TIMELINE" => timeline: Option<PathBuf> = None,
            shown "off", accepts "a file path, or DYNAMIC", parse parse::path;
        /// 1: the timeline also marks each coordinator round (a `CYCLE_START` instant event
        /// when rank 0 sends a plan; hora has no fixed cycle); `start_timeline(...,
        /// mark_cycles=True)` turns it on later.
        "HOROVOD_TIMELINE_MARK_CYCLES" => timeline_mark_cycles: bool = false,
            shown "0", accepts "1/0, true/false, yes/no or on/off", parse parse::flag;
        /// 1: allreduce runs shared memory inside each host and rings between hosts
        /// ([transports.md](transports.md#hierarchical-collectives-several-hosts)); 0: always
        /// the flat ring over TCP; unset: hierarchical when the job spans hosts with the same
        /// number (≥ 2) of ranks on each. `horovodrun --hierarchical-allreduce` sets 1.
        "HOROVOD_HIERARCHICAL_ALLREDUCE" => hierarchical_allreduce: Option<bool> = None,
            shown "automatic", accepts "1/0, true/false, yes/no or on/off",
            parse parse::some_flag;
        /// The same for allgather; `horovodrun --hierarchical-allgather` sets 1.
        "HOROVOD_HIERARCHICAL_ALLGATHER" => hierarchical_allgather: Option<bool> = None,
            shown "automatic", accepts "1/0, true/false, yes/no or on/off",
            parse parse::some_flag;
        /// `split`: every rank of a host runs the cross-host ring on its share of the buffer;
        /// `leader`: one rank per host runs it on the whole buffer.
        "HORA_HIERARCHICAL_MODE" => hierarchical_mode: HierarchicalMode = HierarchicalMode::Split,
            shown "split",
            accepts "split (every local rank runs the cross-host ring on its share) or leader \
                (one rank per host does)",
            parse parse::choice;
        /// Split allreduces of at least twice this size overlap the shared-memory steps with
        /// the network step in pieces of it; 0 never; unset: 8388608 when the host has ≥ 2
        /// cores per rank, else 0.
        "HORA_HIERARCHICAL_PIPELINE_BYTES" => hierarchical_pipeline_bytes: Option<usize> = None,
            shown "automatic", accepts "a byte count (0 = no pipelining)",
            parse parse::some_number;
        /// Socket send and receive buffer size of every TCP connection, bytes; unset or 0
        /// leaves the kernel's autotuning, which measured as fast or faster on loopback.
        "HORA_TCP_SOCKBUF" => tcp_sockbuf: Option<usize> = None,
            shown "kernel autotuning", accepts "a byte count (0 = kernel autotuning)",
            parse parse::number_or_off;
        /// 1: rank 0 tunes the fusion threshold, `HORA_SEGMENT_BYTES` and the response
        /// cache's use online from measured throughput (Bayesian optimisation), and every
        /// rank switches at the same coordinator message ([autotune.md](autotune.md)); a knob
        /// whose own variable is set stays as set. `horovodrun --autotune` sets it.
        "HOROVOD_AUTOTUNE" => autotune: Option<AutotuneFixed> = None,
            shown "0", accepts "1/0, true/false, yes/no or on/off", parse parse::autotune;
        /// Rank 0 writes one CSV row per autotune sample (knob values and score, bytes per
        /// second) and a last row with the best values, kept from then on.
        "HOROVOD_AUTOTUNE_LOG" => autotune_log: Option<PathBuf> = None,
            shown "off", accepts "a file path", parse parse::path;
        /// Autotune samples discarded at the start, while the job warms up.
        "HOROVOD_AUTOTUNE_WARMUP_SAMPLES" => autotune_warmup_samples: usize = 3,
            shown "3", accepts "a number of samples", parse parse::number;
        /// Training steps (a tensor name coming back) per autotune sample; a sample scores
        /// the median of its steps' throughput.
        "HOROVOD_AUTOTUNE_STEPS_PER_SAMPLE" => autotune_steps_per_sample: usize = 10,
            shown "10", accepts "a number of steps >= 1", parse parse::count_at_least_1;
        /// Samples scored before the best values are fixed (the first few are a fixed
        /// design, the rest chosen by expected improvement).
        "HOROVOD_AUTOTUNE_BAYES_OPT_MAX_SAMPLES" => autotune_max_samples: usize = 20,
            shown "20", accepts "a number of samples >= 1", parse parse::count_at_least_1;
        /// Noise term of the Gaussian process, added to its kernel's diagonal (scores are
        /// standardised first, so 0.8 trusts single samples little).
        "HOROVOD_AUTOTUNE_GAUSSIAN_PROCESS_NOISE" => autotune_noise: f64 = 0.8,
            shown "0.8", accepts "a number >= 0, e.g. 0.8", parse parse::non_negative;
    }
    modifiers {
        /// 1 turns stall warnings off (whatever `HOROVOD_STALL_CHECK_TIME_SECONDS` says).
        "HOROVOD_STALL_CHECK_DISABLE" => shown "0", accepts "1/0, true/false, yes/no or on/off",
            parse parse::flag, apply |t: &mut Tuning, off: bool| {
                if off {
                    t.stall_warning = None;
                }
            };
    }
}

settings! {
    /// How hora logs, read apart from [`Config`](super::Config) because logging starts
    /// before (and regardless of) the rest of the configuration.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct LogSettings {
        /// Level of hora's own log lines on stderr (when `RUST_LOG` is unset); `horovodrun
        /// --log-level` sets it for every rank.
        "HOROVOD_LOG_LEVEL" => level: LogLevel = LogLevel::Warning,
            shown "warning", accepts "trace, debug, info, warning, error or fatal",
            parse parse::choice;
        /// When set, the whole log filter (`tracing` EnvFilter syntax, e.g.
        /// `hora=debug,hora_tcp=trace`), in place of `HOROVOD_LOG_LEVEL`; read by
        /// `horovodrun` too, whose default is warnings (`--verbose`: info).
        "RUST_LOG" => rust_log: Option<String> = None,
            shown "unset", accepts "tracing filter directives", parse parse::filter_directives;
        /// 1: hora's log lines carry no time stamp; `horovodrun --log-without-timestamp`
        /// sets it (`--log-with-timestamp`: 0).
        "HOROVOD_LOG_HIDE_TIME" => hide_time: bool = false,
            shown "0", accepts "1/0, true/false, yes/no or on/off", parse parse::flag;
    }
}

use crate::backend::LOG_TARGETS;

impl LogSettings {
    /// Reads `HOROVOD_LOG_LEVEL` and `RUST_LOG` from a map of variables.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, Error> {
        Self::read(&Vars(vars))
    }

    /// Reads `HOROVOD_LOG_LEVEL` and `RUST_LOG` from the process environment.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// The `tracing` filter: `RUST_LOG` when set, else hora's crates at `HOROVOD_LOG_LEVEL`.
    pub fn directives(&self) -> String {
        match &self.rust_log {
            Some(f) => f.clone(),
            None => LOG_TARGETS
                .iter()
                .map(|t| format!("{t}={}", self.level.directive()))
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

/// The topology and rendezvous variables, parsed by hand in `config.rs` (they depend on each
/// other); the launcher sets them.
pub const TOPOLOGY: &[Setting] = &[
    Setting {
        var: "HOROVOD_RANK",
        default: "set by the launcher",
        accepts: "a rank number (0, 1, ...), below `HOROVOD_SIZE`",
        doc: "This process's rank.",
    },
    Setting {
        var: "HOROVOD_SIZE",
        default: "set by the launcher",
        accepts: "the number of ranks (1, 2, ...)",
        doc: "The job size.",
    },
    Setting {
        var: "HOROVOD_LOCAL_RANK",
        default: "the rank",
        accepts: "a number, below `HOROVOD_LOCAL_SIZE`",
        doc: "Place among the processes of this host.",
    },
    Setting {
        var: "HOROVOD_LOCAL_SIZE",
        default: "the size",
        accepts: "a number",
        doc: "Number of processes on this host.",
    },
    Setting {
        var: "HOROVOD_CROSS_RANK",
        default: "0",
        accepts: "a number",
        doc: "Index of this host.",
    },
    Setting {
        var: "HOROVOD_CROSS_SIZE",
        default: "1",
        accepts: "a number",
        doc: "Number of hosts.",
    },
    Setting {
        var: "HORA_STORE_ADDR",
        default: "set by the launcher",
        accepts: "IP:PORT",
        doc: "Address of the rendezvous store (not needed by a one-rank job).",
    },
    Setting {
        var: "HOROVOD_GLOO_RENDEZVOUS_ADDR",
        default: "unset",
        accepts: "an IP address or a host name",
        doc: "Horovod's name for the store's host, for scripts that start the ranks themselves: \
              with `HOROVOD_GLOO_RENDEZVOUS_PORT` it stands for `HORA_STORE_ADDR` (if both are \
              set they must agree), and rank 0 serves the store there unless \
              `HORA_STORE_SERVE=0`. A Horovod launcher's own rendezvous server cannot serve \
              hora's ranks.",
    },
    Setting {
        var: "HOROVOD_GLOO_RENDEZVOUS_PORT",
        default: "unset",
        accepts: "a port number below 65536",
        doc: "The store's port, with `HOROVOD_GLOO_RENDEZVOUS_ADDR`.",
    },
    Setting {
        var: "HOROVOD_SECRET_KEY",
        default: "made by the launcher",
        accepts: "hex digits, at least 16 bytes",
        doc: "Job secret; authenticates every connection; never logged.",
    },
    Setting {
        var: "HOROVOD_HOSTNAME",
        default: "the address that routes to the store",
        accepts: "an IP address or a host name",
        doc: "The address this rank listens on (a host name is resolved, IPv4 first).",
    },
    Setting {
        var: "HOROVOD_GLOO_IFACE",
        default: "unset",
        accepts: "a network interface name, or a comma-separated list",
        doc: "Without `HOROVOD_HOSTNAME`: this rank listens on the address of the first of \
              these interfaces that has one here (an unknown interface fails init).",
    },
    Setting {
        var: "HORA_STORE_SERVE",
        default: "0 (1 when only `HOROVOD_GLOO_RENDEZVOUS_ADDR` names the store)",
        accepts: "1/0, true/false, yes/no or on/off",
        doc: "1: rank 0 serves the rendezvous store itself at `HORA_STORE_ADDR` (set when \
              mpirun, torchrun or srun started the job; `horovodrun --mpi` sets 0 and serves it).",
    },
    Setting {
        var: "HORA_SECRET_DERIVED",
        default: "0",
        accepts: "1/0, true/false, yes/no or on/off",
        doc: "1: the secret was derived from the launcher's variables, not given, so rank 0 \
              warns that the job is only as safe as its network (set with the derived secret).",
    },
];

/// Variables read outside this declaration, on purpose: the translation of other launchers'
/// variables (`config/launchers.rs`) and `horovodrun`'s own.
pub const ELSEWHERE: &[Setting] = &[
    Setting {
        var: "MASTER_ADDR",
        default: "unset",
        accepts: "a host name or IPv4 address",
        doc: "Under mpirun, torchrun or srun (no `HOROVOD_RANK`): the host whose rank 0 serves \
              the store (default under Slurm: the step's first node; on one host: 127.0.0.1).",
    },
    Setting {
        var: "MASTER_PORT",
        default: "unset",
        accepts: "a port number",
        doc: "Under those launchers the store listens on `MASTER_PORT + 1` (torchrun's own \
              store holds `MASTER_PORT`).",
    },
    Setting {
        var: "HORA_STORE_PORT",
        default: "29501 (Slurm: derived from the job and step ids)",
        accepts: "a port number below 65536",
        doc: "Under those launchers, the store's port in place of `MASTER_PORT + 1`.",
    },
    Setting {
        var: "HORA_MPIRUN",
        default: "`mpirun` on `PATH`",
        accepts: "an executable",
        doc: "The mpirun `horovodrun --mpi` starts (read by `horovodrun` and the MPI tests).",
    },
    Setting {
        var: "PYTHON",
        default: "`python3` on `PATH`",
        accepts: "a Python interpreter",
        doc: "The Python `horovodrun --check-build` imports `hora.torch`, `hora.tensorflow` and \
              `hora.keras` with, to report which faces work.",
    },
    Setting {
        var: "HOROVOD_START_TIMEOUT",
        default: "30",
        accepts: "seconds (at least 1)",
        doc: "Read by `horovodrun` as the default of `--start-timeout`, as Horovod does; it \
              gives each rank the timeout here too. The ranks do not read it (their rendezvous \
              is bounded by `HOROVOD_GLOO_TIMEOUT_SECONDS`, which `--start-timeout` also sets).",
    },
];

/// A Horovod variable for a feature hora does not have: accepted with its neutral values
/// (what Horovod's defaults and `horovodrun`'s `--no-*` flags set), refused otherwise, so a
/// job never runs believing it got something it did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The variable's name.
    pub var: &'static str,
    /// The values accepted (they ask for nothing hora lacks).
    pub neutral: &'static [&'static str],
    /// Why any other value is refused, and what to do instead.
    pub reason: &'static str,
}

const NO_GPU: &str = "hora has no GPU (CUDA/NCCL) support yet; unset it";

/// Every Horovod variable hora refuses unless it has a neutral value.
pub const REFUSED: &[Refused] = &[
    Refused {
        var: "HOROVOD_TORUS_ALLREDUCE",
        neutral: &["0"],
        reason: "the torus allreduce is an NCCL algorithm and hora has no GPU support yet",
    },
    Refused {
        var: "HOROVOD_MPI_THREADS_DISABLE",
        neutral: &["0"],
        reason: "hora's MPI transport needs MPI_THREAD_MULTIPLE; without --mpi hora does not \
                 use MPI at all",
    },
    Refused {
        var: "HOROVOD_CPU_OPERATIONS",
        neutral: &["GLOO", "gloo"],
        reason: "hora's CPU collectives come from its backend: HOROVOD_CONTROLLER=mpi under \
                 mpirun runs MPI's; there is no oneCCL",
    },
    Refused {
        var: "HOROVOD_NUM_NCCL_STREAMS",
        neutral: &["1"],
        reason: NO_GPU,
    },
    Refused {
        var: "HOROVOD_BATCH_D2D_MEMCOPIES",
        neutral: &["1"],
        reason: NO_GPU,
    },
    Refused {
        var: "HOROVOD_ENABLE_ASYNC_COMPLETION",
        neutral: &["0"],
        reason: NO_GPU,
    },
    Refused {
        var: "HOROVOD_DISABLE_NVTX_RANGES",
        neutral: &["0", "1"],
        reason: NO_GPU,
    },
    Refused {
        var: "HOROVOD_ENABLE_XLA_OPS",
        neutral: &["0"],
        reason: "hora's TensorFlow collectives are tf.py_function ops, which XLA cannot \
                 compile; use tf.function(jit_compile=False) for the step that calls them",
    },
    Refused {
        var: "HOROVOD_THREAD_AFFINITY",
        neutral: &[],
        reason: "hora does not pin its background thread; pin whole ranks instead (horovodrun \
                 --mpi --binding-args \"--bind-to core\", or numactl/taskset)",
    },
    Refused {
        var: "HOROVOD_ADASUM_MPI_CHUNK_SIZE",
        neutral: &[],
        reason: "hora's Adasum runs its own exchanges, not MPI's; HORA_SEGMENT_BYTES sets the \
                 pieces collectives move",
    },
    Refused {
        var: "HOROVOD_CCL_CACHE",
        neutral: &["0"],
        reason: "hora has no oneCCL support",
    },
    Refused {
        var: "HOROVOD_ELASTIC",
        neutral: &["0"],
        reason: "elastic training is not built yet (it is its own piece of work); run a fixed \
                 number of ranks",
    },
];

/// Refuses the first variable of [`REFUSED`] set to a value that is not neutral.
pub(crate) fn check_refused(vars: &HashMap<String, String>) -> Result<(), Error> {
    for r in REFUSED {
        if let Some(v) = vars.get(r.var)
            && !r.neutral.contains(&v.trim())
        {
            return Err(Error::InvalidConfig {
                var: r.var.into(),
                value: v.clone(),
                reason: r.reason.into(),
            });
        }
    }
    Ok(())
}

/// The Markdown table of docs/configuration.md: every variable hora or `horovodrun` reads.
pub fn render_table() -> String {
    let mut out = String::from("| variable | default | accepts | meaning |\n|---|---|---|---|\n");
    let refused: Vec<Setting> = REFUSED
        .iter()
        .map(|r| Setting {
            var: r.var,
            default: "unset",
            accepts: if r.neutral.is_empty() {
                "nothing (refused when set)"
            } else {
                r.neutral.first().copied().unwrap_or("")
            },
            doc: r.reason,
        })
        .collect();
    let groups = [
        TOPOLOGY,
        Tuning::SETTINGS,
        LogSettings::SETTINGS,
        ELSEWHERE,
        &refused[..],
    ];
    for s in groups.into_iter().flatten() {
        let doc: Vec<&str> = s.doc.lines().map(str::trim).collect();
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            s.var,
            s.default,
            s.accepts,
            doc.join(" ").replace('|', "\\|")
        ));
    }
    out
}

#[cfg(test)]
mod tests;
