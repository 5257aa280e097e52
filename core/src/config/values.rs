//! The enumerated values settings take. They live with the settings, not with the code that
//! acts on them, so reading the configuration depends on no algorithm or transport.

use std::str::FromStr;

/// Which transport carries a job's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Controller {
    /// MPI when this build has it and `mpirun` started the job, else TCP (+ shared memory).
    #[default]
    Auto,
    /// MPI, or an error saying why it cannot be had.
    Mpi,
    /// TCP (+ shared memory), even under `mpirun`.
    Tcp,
}

impl FromStr for Controller {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(Self::Auto),
            "mpi" => Ok(Self::Mpi),
            "gloo" | "tcp" => Ok(Self::Tcp),
            _ => Err(()),
        }
    }
}

/// How hierarchical allreduce splits the work (`HORA_HIERARCHICAL_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HierarchicalMode {
    /// Every local rank runs the cross-host ring on its `1/L` block (the default).
    #[default]
    Split,
    /// Local rank 0 runs the cross-host ring on the whole buffer.
    Leader,
}

impl FromStr for HierarchicalMode {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.trim().to_ascii_lowercase().as_str() {
            "split" => Ok(Self::Split),
            "leader" => Ok(Self::Leader),
            _ => Err(()),
        }
    }
}

/// Horovod's log levels (`HOROVOD_LOG_LEVEL`); `fatal` logs what `error` does, since hora
/// has no separate fatal level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogLevel {
    /// Everything, including per-message detail.
    Trace,
    /// Choices made at init and per-connection events.
    Debug,
    /// What the job is doing, once per step of set-up.
    Info,
    /// Only what may need the user's attention (the default).
    #[default]
    Warning,
    /// Only failures.
    Error,
}

impl LogLevel {
    /// The level's name in `tracing` filter syntax.
    pub fn directive(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warning => "warn",
            Self::Error => "error",
        }
    }
}

impl FromStr for LogLevel {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.trim().to_ascii_lowercase().as_str() {
            "trace" => Ok(Self::Trace),
            "debug" => Ok(Self::Debug),
            "info" => Ok(Self::Info),
            "warning" | "warn" => Ok(Self::Warning),
            "error" | "fatal" => Ok(Self::Error),
            _ => Err(()),
        }
    }
}

/// `HOROVOD_AUTOTUNE=1`: which knobs stay as their own variables set them (the user set
/// those variables, so the tuner leaves them alone, as Horovod does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AutotuneFixed {
    /// `HOROVOD_FUSION_THRESHOLD` is set.
    pub fusion_threshold: bool,
    /// `HORA_SEGMENT_BYTES` is set.
    pub segment_bytes: bool,
    /// `HOROVOD_CACHE_CAPACITY` is set.
    pub cache: bool,
}
