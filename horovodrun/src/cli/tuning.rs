//! The options that tune the ranks (Horovod's "tuneable parameter", autotune, timeline, stall
//! check, library and logging groups) and the elastic ones: each becomes the `HOROVOD_*`
//! variable Horovod sets for it, or is refused, with the reason and what to use instead, where
//! hora's engine lacks the feature. A `--no-…` form that asks for what hora does anyway
//! (`--no-autotune`, `--no-torus-allreduce`, ...) is accepted and exported as Horovod does.

use std::path::PathBuf;

use clap::Args as ClapArgs;

/// Horovod's log levels, in its spelling (`--log-level` takes any case, and `warn`).
const LOG_LEVELS: &[&str] = &["TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "FATAL"];

/// The tuning flags as clap reads them (a pair of flags per switch; see [`Tunables`]).
#[derive(Debug, Default, ClapArgs)]
pub(crate) struct TuningArgs {
    /// Fusion buffer size in MiB (HOROVOD_FUSION_THRESHOLD; 0 turns fusion off).
    #[arg(long, value_name = "MB", help_heading = "Tuning")]
    pub(crate) fusion_threshold_mb: Option<u64>,
    /// Cycle time in ms (HOROVOD_CYCLE_TIME); no effect in hora, whose engine has no cycle.
    #[arg(long, value_name = "MS", value_parser = parse_positive, help_heading = "Tuning")]
    pub(crate) cycle_time_ms: Option<f64>,
    /// Response cache entries (HOROVOD_CACHE_CAPACITY; 0 turns the cache off).
    #[arg(long, value_name = "N", help_heading = "Tuning")]
    pub(crate) cache_capacity: Option<u64>,
    /// Hierarchical allreduce across hosts (HOROVOD_HIERARCHICAL_ALLREDUCE=1); without either
    /// flag the ranks choose (on when the job spans hosts with several ranks on each).
    #[arg(long, help_heading = "Tuning")]
    pub(crate) hierarchical_allreduce: bool,
    /// Flat ring allreduce even across hosts (HOROVOD_HIERARCHICAL_ALLREDUCE=0).
    #[arg(
        long,
        conflicts_with = "hierarchical_allreduce",
        help_heading = "Tuning"
    )]
    pub(crate) no_hierarchical_allreduce: bool,
    /// Hierarchical allgather across hosts (HOROVOD_HIERARCHICAL_ALLGATHER=1).
    #[arg(long, help_heading = "Tuning")]
    pub(crate) hierarchical_allgather: bool,
    /// Flat allgather even across hosts (HOROVOD_HIERARCHICAL_ALLGATHER=0).
    #[arg(
        long,
        conflicts_with = "hierarchical_allgather",
        help_heading = "Tuning"
    )]
    pub(crate) no_hierarchical_allgather: bool,
    /// NCCL 2-D torus allreduce: refused (hora has no NCCL path).
    #[arg(long, help_heading = "Tuning")]
    pub(crate) torus_allreduce: bool,
    /// No torus allreduce (HOROVOD_TORUS_ALLREDUCE=0): what hora always does.
    #[arg(long, conflicts_with = "torus_allreduce", help_heading = "Tuning")]
    pub(crate) no_torus_allreduce: bool,

    /// Tune the fusion threshold, segment size and response cache online
    /// (HOROVOD_AUTOTUNE=1); a knob set by its own flag or variable is held constant.
    #[arg(long, help_heading = "Autotune")]
    pub(crate) autotune: bool,
    /// No autotuning (the default; nothing is exported).
    #[arg(long, conflicts_with = "autotune", help_heading = "Autotune")]
    pub(crate) no_autotune: bool,
    /// With --autotune: rank 0 writes one CSV row per sample here (HOROVOD_AUTOTUNE_LOG).
    #[arg(long, value_name = "FILE", help_heading = "Autotune")]
    pub(crate) autotune_log_file: Option<String>,
    /// With --autotune: samples discarded at the start (HOROVOD_AUTOTUNE_WARMUP_SAMPLES; 3).
    #[arg(long, value_name = "N", help_heading = "Autotune")]
    pub(crate) autotune_warmup_samples: Option<u64>,
    /// With --autotune: steps per sample (HOROVOD_AUTOTUNE_STEPS_PER_SAMPLE; 10).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..),
          help_heading = "Autotune")]
    pub(crate) autotune_steps_per_sample: Option<u64>,
    /// With --autotune: samples before the best values are fixed
    /// (HOROVOD_AUTOTUNE_BAYES_OPT_MAX_SAMPLES; 20).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..),
          help_heading = "Autotune")]
    pub(crate) autotune_bayes_opt_max_samples: Option<u64>,
    /// With --autotune: Gaussian-process noise in [0, 1]
    /// (HOROVOD_AUTOTUNE_GAUSSIAN_PROCESS_NOISE; 0.8).
    #[arg(long, value_name = "X", value_parser = parse_unit, help_heading = "Autotune")]
    pub(crate) autotune_gaussian_process_noise: Option<f64>,

    /// Write a Chrome-trace timeline here (HOROVOD_TIMELINE).
    #[arg(long, value_name = "FILE", help_heading = "Timeline")]
    pub(crate) timeline_filename: Option<PathBuf>,
    /// Mark each coordinator round on the timeline (HOROVOD_TIMELINE_MARK_CYCLES=1).
    #[arg(long, help_heading = "Timeline")]
    pub(crate) timeline_mark_cycles: bool,
    /// No cycle marks (HOROVOD_TIMELINE_MARK_CYCLES=0 with a timeline).
    #[arg(
        long,
        conflicts_with = "timeline_mark_cycles",
        help_heading = "Timeline"
    )]
    pub(crate) no_timeline_mark_cycles: bool,

    /// No stall warnings (HOROVOD_STALL_CHECK_DISABLE=1).
    #[arg(long, help_heading = "Stall check")]
    pub(crate) no_stall_check: bool,
    /// Stall warnings on (HOROVOD_STALL_CHECK_DISABLE=0; the default).
    #[arg(long, conflicts_with = "no_stall_check", help_heading = "Stall check")]
    pub(crate) stall_check: bool,
    /// Seconds before a stall warning (HOROVOD_STALL_CHECK_TIME_SECONDS).
    #[arg(long, value_name = "SECS", help_heading = "Stall check")]
    pub(crate) stall_check_warning_time_seconds: Option<u64>,
    /// Seconds before a stalled tensor fails the job (HOROVOD_STALL_SHUTDOWN_TIME_SECONDS).
    #[arg(long, value_name = "SECS", help_heading = "Stall check")]
    pub(crate) stall_check_shutdown_time_seconds: Option<u64>,

    /// MPI without threads: refused (hora's MPI transport needs MPI_THREAD_MULTIPLE).
    #[arg(long, help_heading = "Library")]
    pub(crate) mpi_threads_disable: bool,
    /// MPI with threads (HOROVOD_MPI_THREADS_DISABLE=0): what hora always does.
    #[arg(long, conflicts_with = "mpi_threads_disable", help_heading = "Library")]
    pub(crate) no_mpi_threads_disable: bool,
    /// NCCL streams: refused (hora has no NCCL path).
    #[arg(long, value_name = "N", help_heading = "Library")]
    pub(crate) num_nccl_streams: Option<u64>,
    /// Background thread's core: refused (hora does not pin its thread).
    #[arg(long, value_name = "CORE", help_heading = "Library")]
    pub(crate) thread_affinity: Option<u64>,
    /// Rendezvous and connection budget of the ranks (HOROVOD_GLOO_TIMEOUT_SECONDS; default:
    /// the start timeout).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..),
          help_heading = "Library")]
    pub(crate) gloo_timeout_seconds: Option<u64>,

    /// Log level of the ranks (HOROVOD_LOG_LEVEL): TRACE, DEBUG, INFO, WARNING, ERROR, FATAL
    /// (any case).
    #[arg(long, value_name = "LEVEL", value_parser = parse_log_level, help_heading = "Logging")]
    pub(crate) log_level: Option<String>,
    /// Time on the ranks' log lines (HOROVOD_LOG_HIDE_TIME=0; the default).
    #[arg(long, help_heading = "Logging")]
    pub(crate) log_with_timestamp: bool,
    /// No time on the ranks' log lines (HOROVOD_LOG_HIDE_TIME=1).
    #[arg(long, conflicts_with_all = ["log_with_timestamp", "no_log_hide_timestamp"],
          help_heading = "Logging")]
    pub(crate) log_without_timestamp: bool,
    /// Old spelling of --log-without-timestamp.
    #[arg(long, conflicts_with_all = ["log_with_timestamp", "no_log_hide_timestamp"],
          help_heading = "Logging")]
    pub(crate) log_hide_timestamp: bool,
    /// Old spelling of --log-with-timestamp.
    #[arg(long, conflicts_with = "log_with_timestamp", help_heading = "Logging")]
    pub(crate) no_log_hide_timestamp: bool,
}

/// Horovod's elastic options, parsed so that a typo is still a typo, then refused.
#[derive(Debug, Default, ClapArgs)]
pub(crate) struct ElasticArgs {
    /// Refused: elastic training.
    #[arg(
        long = "min-np",
        visible_alias = "min-num-proc",
        value_name = "N",
        help_heading = "Elastic (refused)"
    )]
    pub(crate) min_np: Option<u32>,
    /// Refused: elastic training.
    #[arg(
        long = "max-np",
        visible_alias = "max-num-proc",
        value_name = "N",
        help_heading = "Elastic (refused)"
    )]
    pub(crate) max_np: Option<u32>,
    /// Refused: elastic training.
    #[arg(long, value_name = "N", help_heading = "Elastic (refused)")]
    pub(crate) slots_per_host: Option<u32>,
    /// Refused: elastic training.
    #[arg(long, value_name = "SECS", help_heading = "Elastic (refused)")]
    pub(crate) elastic_timeout: Option<u64>,
    /// Refused: elastic training.
    #[arg(long, value_name = "N", help_heading = "Elastic (refused)")]
    pub(crate) reset_limit: Option<u64>,
    /// Refused: elastic training.
    #[arg(long, value_names = ["MIN", "MAX"], num_args = 2, help_heading = "Elastic (refused)")]
    pub(crate) blacklist_cooldown_range: Option<Vec<u64>>,
    /// Refused: elastic training.
    #[arg(long, value_name = "SCRIPT", help_heading = "Elastic (refused)")]
    pub(crate) host_discovery_script: Option<String>,
}

impl ElasticArgs {
    /// The first elastic option given, by its flag.
    pub(crate) fn given(&self) -> Option<&'static str> {
        [
            (self.min_np.is_some(), "--min-np"),
            (self.max_np.is_some(), "--max-np"),
            (self.slots_per_host.is_some(), "--slots-per-host"),
            (self.elastic_timeout.is_some(), "--elastic-timeout"),
            (self.reset_limit.is_some(), "--reset-limit"),
            (
                self.blacklist_cooldown_range.is_some(),
                "--blacklist-cooldown-range",
            ),
            (
                self.host_discovery_script.is_some(),
                "--host-discovery-script",
            ),
        ]
        .into_iter()
        .find_map(|(set, flag)| set.then_some(flag))
    }
}

/// Every tuning setting, `None` where neither the command line nor the config file gave it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Tunables {
    pub(crate) fusion_threshold_mb: Option<u64>,
    pub(crate) cycle_time_ms: Option<f64>,
    pub(crate) cache_capacity: Option<u64>,
    pub(crate) hierarchical_allreduce: Option<bool>,
    pub(crate) hierarchical_allgather: Option<bool>,
    pub(crate) torus_allreduce: Option<bool>,
    pub(crate) autotune: Option<bool>,
    pub(crate) autotune_log_file: Option<String>,
    pub(crate) autotune_warmup_samples: Option<u64>,
    pub(crate) autotune_steps_per_sample: Option<u64>,
    pub(crate) autotune_bayes_opt_max_samples: Option<u64>,
    pub(crate) autotune_gaussian_process_noise: Option<f64>,
    pub(crate) timeline_filename: Option<PathBuf>,
    pub(crate) timeline_mark_cycles: Option<bool>,
    pub(crate) no_stall_check: Option<bool>,
    pub(crate) stall_check_warning_time_seconds: Option<u64>,
    pub(crate) stall_check_shutdown_time_seconds: Option<u64>,
    pub(crate) mpi_threads_disable: Option<bool>,
    pub(crate) num_nccl_streams: Option<u64>,
    pub(crate) thread_affinity: Option<u64>,
    pub(crate) gloo_timeout_seconds: Option<u64>,
    /// Horovod's spelling (upper case).
    pub(crate) log_level: Option<String>,
    pub(crate) log_with_timestamp: Option<bool>,
    /// `--config-file` and the settings it gave (named as the config key), for messages.
    pub(crate) from_config: Option<(PathBuf, Vec<&'static str>)>,
}

/// A flag pair as one switch: `Some(true)`, `Some(false)` or not given.
fn switch(on: bool, off: bool) -> Option<bool> {
    match (on, off) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}

impl TuningArgs {
    /// The settings the command line gives.
    pub(crate) fn tunables(&self) -> Tunables {
        Tunables {
            fusion_threshold_mb: self.fusion_threshold_mb,
            cycle_time_ms: self.cycle_time_ms,
            cache_capacity: self.cache_capacity,
            hierarchical_allreduce: switch(
                self.hierarchical_allreduce,
                self.no_hierarchical_allreduce,
            ),
            hierarchical_allgather: switch(
                self.hierarchical_allgather,
                self.no_hierarchical_allgather,
            ),
            torus_allreduce: switch(self.torus_allreduce, self.no_torus_allreduce),
            autotune: switch(self.autotune, self.no_autotune),
            autotune_log_file: self.autotune_log_file.clone(),
            autotune_warmup_samples: self.autotune_warmup_samples,
            autotune_steps_per_sample: self.autotune_steps_per_sample,
            autotune_bayes_opt_max_samples: self.autotune_bayes_opt_max_samples,
            autotune_gaussian_process_noise: self.autotune_gaussian_process_noise,
            timeline_filename: self.timeline_filename.clone(),
            timeline_mark_cycles: switch(self.timeline_mark_cycles, self.no_timeline_mark_cycles),
            no_stall_check: switch(self.no_stall_check, self.stall_check),
            stall_check_warning_time_seconds: self.stall_check_warning_time_seconds,
            stall_check_shutdown_time_seconds: self.stall_check_shutdown_time_seconds,
            mpi_threads_disable: switch(self.mpi_threads_disable, self.no_mpi_threads_disable),
            num_nccl_streams: self.num_nccl_streams,
            thread_affinity: self.thread_affinity,
            gloo_timeout_seconds: self.gloo_timeout_seconds,
            log_level: self.log_level.clone(),
            log_with_timestamp: switch(
                self.log_with_timestamp || self.no_log_hide_timestamp,
                self.log_without_timestamp || self.log_hide_timestamp,
            ),
            from_config: None,
        }
    }
}

impl Tunables {
    /// How a message names a setting: its config key (and file) if the config file gave it,
    /// else the flag.
    fn named(&self, flag: &str, key: &'static str) -> String {
        match &self.from_config {
            Some((file, keys)) if keys.contains(&key) => {
                format!("`{key}` in --config-file {}", file.display())
            }
            _ => flag.to_owned(),
        }
    }

    /// Why each setting given that hora cannot honour is refused, and what to use instead.
    pub(crate) fn refusals(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut refuse = |given: bool, flag: &str, key: &'static str, why: &str| {
            if given {
                out.push(format!("{}: {why}", self.named(flag, key)));
            }
        };
        const NO_NCCL: &str = "hora has no GPU/NCCL path yet (its collectives run on CPU over \
                               TCP, shared memory or MPI)";
        refuse(
            self.torus_allreduce == Some(true),
            "--torus-allreduce",
            "params.torus_allreduce",
            &format!("{NO_NCCL}; use --hierarchical-allreduce for a two-level allreduce"),
        );
        refuse(
            self.mpi_threads_disable == Some(true),
            "--mpi-threads-disable",
            "library_options.mpi_threads_disable",
            "hora's MPI transport needs MPI_THREAD_MULTIPLE (its engine thread and yours both \
             call MPI); leave it out, or run without --mpi, where hora does not use MPI at all",
        );
        refuse(
            self.num_nccl_streams.is_some(),
            "--num-nccl-streams",
            "library_options.num_nccl_streams",
            &format!("{NO_NCCL}; leave it out"),
        );
        refuse(
            self.thread_affinity.is_some(),
            "--thread-affinity",
            "library_options.thread_affinity",
            "hora does not pin its background thread to a core; pin whole ranks instead \
             (--mpi --binding-args \"--bind-to core\", or numactl/taskset in the command)",
        );
        out
    }

    /// The variables the ranks get, as Horovod sets them (its `set_env_from_args`); call after
    /// [`Tunables::refusals`] came back empty.
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = Vec::new();
        let mut set = |k: &str, val: String| v.push((k.to_owned(), val));
        let bit = |b: bool| if b { "1" } else { "0" }.to_owned();
        if let Some(mb) = self.fusion_threshold_mb {
            set(
                "HOROVOD_FUSION_THRESHOLD",
                mb.saturating_mul(1 << 20).to_string(),
            );
        }
        if let Some(ms) = self.cycle_time_ms {
            set("HOROVOD_CYCLE_TIME", ms.to_string());
        }
        if let Some(c) = self.cache_capacity {
            set("HOROVOD_CACHE_CAPACITY", c.to_string());
        }
        if let Some(b) = self.hierarchical_allreduce {
            set("HOROVOD_HIERARCHICAL_ALLREDUCE", bit(b));
        }
        if let Some(b) = self.hierarchical_allgather {
            set("HOROVOD_HIERARCHICAL_ALLGATHER", bit(b));
        }
        if let Some(b) = self.torus_allreduce {
            set("HOROVOD_TORUS_ALLREDUCE", bit(b));
        }
        // As Horovod: the autotune group is exported only with autotuning on.
        if self.autotune == Some(true) {
            set("HOROVOD_AUTOTUNE", "1".into());
            if let Some(f) = &self.autotune_log_file {
                set("HOROVOD_AUTOTUNE_LOG", f.clone());
            }
            if let Some(n) = self.autotune_warmup_samples {
                set("HOROVOD_AUTOTUNE_WARMUP_SAMPLES", n.to_string());
            }
            if let Some(n) = self.autotune_steps_per_sample {
                set("HOROVOD_AUTOTUNE_STEPS_PER_SAMPLE", n.to_string());
            }
            if let Some(n) = self.autotune_bayes_opt_max_samples {
                set("HOROVOD_AUTOTUNE_BAYES_OPT_MAX_SAMPLES", n.to_string());
            }
            if let Some(x) = self.autotune_gaussian_process_noise {
                set("HOROVOD_AUTOTUNE_GAUSSIAN_PROCESS_NOISE", x.to_string());
            }
        }
        if let Some(f) = &self.timeline_filename {
            set("HOROVOD_TIMELINE", f.display().to_string());
            if let Some(b) = self.timeline_mark_cycles {
                set("HOROVOD_TIMELINE_MARK_CYCLES", bit(b));
            }
        }
        if let Some(b) = self.no_stall_check {
            set("HOROVOD_STALL_CHECK_DISABLE", bit(b));
        }
        if let Some(s) = self.stall_check_warning_time_seconds {
            set("HOROVOD_STALL_CHECK_TIME_SECONDS", s.to_string());
        }
        if let Some(s) = self.stall_check_shutdown_time_seconds {
            set("HOROVOD_STALL_SHUTDOWN_TIME_SECONDS", s.to_string());
        }
        if let Some(b) = self.mpi_threads_disable {
            set("HOROVOD_MPI_THREADS_DISABLE", bit(b));
        }
        if let Some(s) = self.gloo_timeout_seconds {
            set("HOROVOD_GLOO_TIMEOUT_SECONDS", s.to_string());
        }
        if let Some(l) = &self.log_level {
            set("HOROVOD_LOG_LEVEL", l.clone());
        }
        if let Some(with) = self.log_with_timestamp {
            set("HOROVOD_LOG_HIDE_TIME", bit(!with));
        }
        v
    }
}

fn parse_positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!(
            "`{s}` is not a number of milliseconds >= 0 (HOROVOD_CYCLE_TIME; hora's engine has \
             no cycle, so any value works the same)"
        )),
    }
}

fn parse_unit(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a number in [0, 1]")),
    }
}

/// A log level in Horovod's spelling (upper case); any case and `warn` are taken.
pub(crate) fn parse_log_level(s: &str) -> Result<String, String> {
    let up = s.trim().to_ascii_uppercase();
    let up = if up == "WARN" {
        "WARNING".to_owned()
    } else {
        up
    };
    if LOG_LEVELS.contains(&up.as_str()) {
        Ok(up)
    } else {
        Err(format!("`{s}` is not one of {}", LOG_LEVELS.join(", ")))
    }
}
