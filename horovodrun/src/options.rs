//! What the command line asks for once it is complete: the config file merged in (the command
//! line wins), every option hora cannot honour refused with its reason, and the variables the
//! ranks get from the flags.

use std::path::Path;

use crate::cli::config_file::{self, Controller};
use crate::cli::{Args, tuning::Tunables};

/// The launch the arguments describe, beyond what [`Args`] holds as given.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Resolved {
    /// Start the ranks with mpirun (`--mpi`, or `controller: mpi` in the config file).
    pub(crate) mpi: bool,
    /// Seconds for the start-up checks and the rendezvous.
    pub(crate) start_timeout: u64,
    /// `--network-interfaces` / `--network-interface`, in order, each once.
    pub(crate) nics: Vec<String>,
    /// The variables every rank gets from the flags (and `-x`, last, so it wins).
    pub(crate) env: Vec<(String, String)>,
    /// `--binding-args`, split at spaces.
    pub(crate) binding: Option<Vec<String>>,
    /// Lines for the user about accepted options that change nothing.
    pub(crate) notes: Vec<String>,
}

/// Completes and checks `args`. `var` reads the launcher's environment (`HOROVOD_START_TIMEOUT`)
/// and `on_path` says whether a program is on `PATH` (`jsrun`). Errors are usage errors, one
/// line each, naming the option.
pub(crate) fn resolve(
    args: &Args,
    var: impl Fn(&str) -> Option<String>,
    on_path: impl Fn(&str) -> bool,
) -> Result<Resolved, Vec<String>> {
    let mut t: Tunables = args.tuning.tunables();
    let mut mpi = args.mpi;
    let mut gloo = args.gloo;
    let mut errors = Vec::new();
    if let Some(path) = &args.config_file {
        match config_file::load(path).and_then(|c| {
            c.apply(path, &mut t)?;
            c.controller()
                .map_err(|e| format!("--config-file {}: {e}", path.display()))
        }) {
            // A controller on the command line wins over the file's.
            Ok(Some(Controller::Mpi)) if !args.gloo && !args.jsrun => mpi = true,
            Ok(Some(Controller::Gloo)) if !args.mpi && !args.jsrun => gloo = true,
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
    }
    if let Some(flag) = args.elastic.given() {
        errors.push(format!(
            "{flag}: elastic training is not built in hora yet (it is the elastic issue's \
             work); start a fixed-size job with -np and -H/--hostfile"
        ));
    }
    if args.jsrun {
        errors.push(if on_path("jsrun") {
            "--jsrun: hora cannot start ranks through jsrun yet (it would need LSF's rank \
             layout files); use --mpi with the LSF job's mpirun, or horovodrun's own launcher \
             with -H"
                .to_owned()
        } else {
            "--jsrun: jsrun is not on PATH (it comes with IBM Spectrum LSF); use --mpi, or \
             horovodrun's own launcher with -H"
                .to_owned()
        });
    }
    if args.binding_args.is_some() && !mpi {
        errors.push(
            "--binding-args: process binding is mpirun's; use it with --mpi, or pin each rank \
             with numactl or taskset in the command"
                .to_owned(),
        );
    }
    errors.extend(t.refusals());
    let start_timeout = match args.start_timeout(var("HOROVOD_START_TIMEOUT").as_deref()) {
        Ok(s) => s,
        Err(e) => {
            errors.push(e);
            30
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }

    let nics = args.nics();
    let mut env = t.env();
    let mut set = |k: &str, v: String| env.push((k.to_owned(), v));
    if args.tcp {
        // Horovod's --tcp keeps NCCL (which the frameworks may use) off InfiniBand.
        set("NCCL_IB_DISABLE", "1".into());
    }
    if !nics.is_empty() {
        // As Horovod: NCCL (if the program uses it) on the same interfaces.
        set("NCCL_SOCKET_IFNAME", nics.join(","));
    }
    if gloo {
        // As Horovod's Gloo launcher sets it; hora's ranks then run TCP (+ shared memory).
        set("HOROVOD_CONTROLLER", "gloo".into());
    }
    env.extend(args.env.iter().cloned());

    let mut notes = Vec::new();
    if t.cycle_time_ms.is_some() {
        notes.push(
            "note: --cycle-time-ms has no effect in hora: its engine starts a collective as soon \
             as every rank has submitted it, with no cycle to wait for (HOROVOD_CYCLE_TIME is \
             set for the ranks all the same)"
                .to_owned(),
        );
    }
    Ok(Resolved {
        mpi,
        start_timeout,
        nics,
        env,
        binding: args
            .binding_args
            .as_deref()
            .map(|b| b.split_whitespace().map(str::to_owned).collect()),
        notes,
    })
}

/// Whether `program` is an executable file in one of `PATH`'s directories.
pub(crate) fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|d| {
        let p: &Path = &d.join(program);
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}
