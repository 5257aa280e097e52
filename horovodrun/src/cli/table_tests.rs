//! The table of every option of Horovod 0.28.1's `horovodrun` (horovod/runner/launch.py,
//! `parse_args`): each is parsed, and its effect checked where it has one here (the variables
//! the ranks get, the launch settings), or its refusal (the flag named, with the reason).
//! Effects on a running job (output files, timestamps, the environment on another host) are
//! checked by the integration tests in tests/tests/horovodrun_options.rs and multihost_env.rs.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;

use super::{Args, normalize};
use crate::options::{Resolved, resolve};

/// Every option string of Horovod's `horovodrun`, grouped by option (61 options; `-h` aside).
const HOROVOD: &[&[&str]] = &[
    &["-v", "--version"],
    &["-np", "--num-proc"],
    &["-cb", "--check-build"],
    &["--disable-cache"],
    &["--start-timeout"],
    &["--network-interfaces"],
    &["--network-interface"],
    &["--output-filename"],
    &["--verbose"],
    &["--config-file"],
    &["-p", "--ssh-port"],
    &["-i", "--ssh-identity-file"],
    &["--fusion-threshold-mb"],
    &["--cycle-time-ms"],
    &["--cache-capacity"],
    &["--hierarchical-allreduce"],
    &["--no-hierarchical-allreduce"],
    &["--hierarchical-allgather"],
    &["--no-hierarchical-allgather"],
    &["--torus-allreduce"],
    &["--no-torus-allreduce"],
    &["--autotune"],
    &["--no-autotune"],
    &["--autotune-log-file"],
    &["--autotune-warmup-samples"],
    &["--autotune-steps-per-sample"],
    &["--autotune-bayes-opt-max-samples"],
    &["--autotune-gaussian-process-noise"],
    &["--min-np", "--min-num-proc"],
    &["--max-np", "--max-num-proc"],
    &["--slots-per-host"],
    &["--elastic-timeout"],
    &["--reset-limit"],
    &["--blacklist-cooldown-range"],
    &["--timeline-filename"],
    &["--timeline-mark-cycles"],
    &["--no-timeline-mark-cycles"],
    &["--no-stall-check"],
    &["--stall-check"],
    &["--stall-check-warning-time-seconds"],
    &["--stall-check-shutdown-time-seconds"],
    &["--mpi-threads-disable"],
    &["--no-mpi-threads-disable"],
    &["--mpi-args"],
    &["--tcp"],
    &["--binding-args"],
    &["--num-nccl-streams"],
    &["--thread-affinity"],
    &["--gloo-timeout-seconds"],
    &["--log-level"],
    &["--log-with-timestamp"],
    &["--log-without-timestamp"],
    &["-prefix-timestamp", "--prefix-output-with-timestamp"],
    &["--log-hide-timestamp"],
    &["--no-log-hide-timestamp"],
    &["-H", "--hosts"],
    &["-hostfile", "--hostfile"],
    &["--host-discovery-script"],
    &["--gloo"],
    &["--mpi"],
    &["--jsrun"],
];

/// hora's own options (and clap's help), which Horovod does not have.
const HORA_ONLY: &[&str] = &[
    "--ssh-config-file",
    "--grace-period",
    "--env",
    "-x",
    "--help",
    "-h",
    "--np",
];

/// What a row expects.
enum Want {
    /// Parsed; the ranks get every one of these variables (and no other from the flags).
    Env(&'static [(&'static str, &'static str)]),
    /// Parsed; this holds of the arguments and the resolved launch.
    Holds(fn(&Args, &Resolved) -> bool),
    /// Refused at resolution: one error naming the option, with these words.
    Refused(&'static str),
    /// clap prints something and exits 0 (`--version`).
    Exits,
}

/// One row: the option (Horovod's first spelling), the arguments, what happens.
struct Row(&'static str, &'static [&'static str], Want);

fn rows() -> Vec<Row> {
    use Want::*;
    vec![
        Row("-v", &["-v"], Exits),
        Row("-np", &["-np", "3"], Holds(|a, _| a.num_proc == Some(3))),
        Row("-cb", &["-cb"], Holds(|a, _| a.check_build)),
        Row(
            "--disable-cache",
            &["-np", "2", "--disable-cache"],
            Env(&[]),
        ),
        Row(
            "--start-timeout",
            &["-np", "2", "--start-timeout", "9"],
            Holds(|_, r| r.start_timeout == 9),
        ),
        Row(
            "--network-interfaces",
            &["-np", "2", "--network-interfaces", "eth0,eth1"],
            Env(&[("NCCL_SOCKET_IFNAME", "eth0,eth1")]),
        ),
        Row(
            "--network-interface",
            &[
                "-np",
                "2",
                "--network-interface",
                "eth1",
                "--network-interface",
                "eth0",
            ],
            Holds(|_, r| r.nics == ["eth1", "eth0"]),
        ),
        Row(
            "--output-filename",
            &["-np", "2", "--output-filename", "/tmp/o"],
            Holds(|a, _| a.output_filename == Some(PathBuf::from("/tmp/o"))),
        ),
        Row(
            "--verbose",
            &["-np", "2", "--verbose"],
            Holds(|a, _| a.verbose),
        ),
        Row(
            "--config-file",
            &["-np", "2", "--config-file", "{cfg}"],
            // The stall_check section also means `enabled: true`, as in Horovod.
            Env(&[
                ("HOROVOD_FUSION_THRESHOLD", "33554432"),
                ("HOROVOD_STALL_CHECK_DISABLE", "0"),
                ("HOROVOD_STALL_CHECK_TIME_SECONDS", "0"),
            ]),
        ),
        Row(
            "-p",
            &["-np", "2", "-p", "2222"],
            Holds(|a, _| a.ssh_port == Some(2222)),
        ),
        Row(
            "-i",
            &["-np", "2", "-i", "/k/id"],
            Holds(|a, _| a.ssh_identity_file == Some(PathBuf::from("/k/id"))),
        ),
        Row(
            "--fusion-threshold-mb",
            &["-np", "2", "--fusion-threshold-mb", "32"],
            Env(&[("HOROVOD_FUSION_THRESHOLD", "33554432")]),
        ),
        Row(
            "--cycle-time-ms",
            &["-np", "2", "--cycle-time-ms", "2.5"],
            Holds(|_, r| {
                r.env == [("HOROVOD_CYCLE_TIME".to_owned(), "2.5".to_owned())]
                    && r.notes
                        .iter()
                        .any(|n| n.contains("--cycle-time-ms has no effect"))
            }),
        ),
        Row(
            "--cache-capacity",
            &["-np", "2", "--cache-capacity", "10"],
            Env(&[("HOROVOD_CACHE_CAPACITY", "10")]),
        ),
        Row(
            "--hierarchical-allreduce",
            &["-np", "2", "--hierarchical-allreduce"],
            Env(&[("HOROVOD_HIERARCHICAL_ALLREDUCE", "1")]),
        ),
        Row(
            "--no-hierarchical-allreduce",
            &["-np", "2", "--no-hierarchical-allreduce"],
            Env(&[("HOROVOD_HIERARCHICAL_ALLREDUCE", "0")]),
        ),
        Row(
            "--hierarchical-allgather",
            &["-np", "2", "--hierarchical-allgather"],
            Env(&[("HOROVOD_HIERARCHICAL_ALLGATHER", "1")]),
        ),
        Row(
            "--no-hierarchical-allgather",
            &["-np", "2", "--no-hierarchical-allgather"],
            Env(&[("HOROVOD_HIERARCHICAL_ALLGATHER", "0")]),
        ),
        Row(
            "--torus-allreduce",
            &["-np", "2", "--torus-allreduce"],
            Refused("no GPU/NCCL path"),
        ),
        Row(
            "--no-torus-allreduce",
            &["-np", "2", "--no-torus-allreduce"],
            Env(&[("HOROVOD_TORUS_ALLREDUCE", "0")]),
        ),
        Row(
            "--autotune",
            &["-np", "2", "--autotune"],
            Env(&[("HOROVOD_AUTOTUNE", "1")]),
        ),
        Row("--no-autotune", &["-np", "2", "--no-autotune"], Env(&[])),
        Row(
            "--autotune-log-file",
            &["-np", "2", "--autotune", "--autotune-log-file", "f"],
            Env(&[("HOROVOD_AUTOTUNE", "1"), ("HOROVOD_AUTOTUNE_LOG", "f")]),
        ),
        Row(
            "--autotune-warmup-samples",
            &["-np", "2", "--autotune", "--autotune-warmup-samples", "0"],
            Env(&[
                ("HOROVOD_AUTOTUNE", "1"),
                ("HOROVOD_AUTOTUNE_WARMUP_SAMPLES", "0"),
            ]),
        ),
        Row(
            "--autotune-steps-per-sample",
            &["-np", "2", "--autotune", "--autotune-steps-per-sample", "3"],
            Env(&[
                ("HOROVOD_AUTOTUNE", "1"),
                ("HOROVOD_AUTOTUNE_STEPS_PER_SAMPLE", "3"),
            ]),
        ),
        Row(
            "--autotune-bayes-opt-max-samples",
            &[
                "-np",
                "2",
                "--autotune",
                "--autotune-bayes-opt-max-samples",
                "7",
            ],
            Env(&[
                ("HOROVOD_AUTOTUNE", "1"),
                ("HOROVOD_AUTOTUNE_BAYES_OPT_MAX_SAMPLES", "7"),
            ]),
        ),
        Row(
            "--autotune-gaussian-process-noise",
            &[
                "-np",
                "2",
                "--autotune",
                "--autotune-gaussian-process-noise",
                "0.5",
            ],
            Env(&[
                ("HOROVOD_AUTOTUNE", "1"),
                ("HOROVOD_AUTOTUNE_GAUSSIAN_PROCESS_NOISE", "0.5"),
            ]),
        ),
        Row(
            "--min-np",
            &["-np", "2", "--min-np", "1"],
            Refused("elastic training is not built"),
        ),
        Row(
            "--max-np",
            &["-np", "2", "--max-np", "4"],
            Refused("elastic training is not built"),
        ),
        Row(
            "--slots-per-host",
            &["-np", "2", "--slots-per-host", "2"],
            Refused("elastic training is not built"),
        ),
        Row(
            "--elastic-timeout",
            &["-np", "2", "--elastic-timeout", "60"],
            Refused("elastic training is not built"),
        ),
        Row(
            "--reset-limit",
            &["-np", "2", "--reset-limit", "3"],
            Refused("elastic training is not built"),
        ),
        Row(
            "--blacklist-cooldown-range",
            &["-np", "2", "--blacklist-cooldown-range", "10", "100"],
            Refused("elastic training is not built"),
        ),
        Row(
            "--timeline-filename",
            &["-np", "2", "--timeline-filename", "/tmp/t.json"],
            Env(&[("HOROVOD_TIMELINE", "/tmp/t.json")]),
        ),
        Row(
            "--timeline-mark-cycles",
            &[
                "-np",
                "2",
                "--timeline-filename",
                "t",
                "--timeline-mark-cycles",
            ],
            Env(&[
                ("HOROVOD_TIMELINE", "t"),
                ("HOROVOD_TIMELINE_MARK_CYCLES", "1"),
            ]),
        ),
        Row(
            "--no-timeline-mark-cycles",
            &[
                "-np",
                "2",
                "--timeline-filename",
                "t",
                "--no-timeline-mark-cycles",
            ],
            Env(&[
                ("HOROVOD_TIMELINE", "t"),
                ("HOROVOD_TIMELINE_MARK_CYCLES", "0"),
            ]),
        ),
        Row(
            "--no-stall-check",
            &["-np", "2", "--no-stall-check"],
            Env(&[("HOROVOD_STALL_CHECK_DISABLE", "1")]),
        ),
        Row(
            "--stall-check",
            &["-np", "2", "--stall-check"],
            Env(&[("HOROVOD_STALL_CHECK_DISABLE", "0")]),
        ),
        Row(
            "--stall-check-warning-time-seconds",
            &["-np", "2", "--stall-check-warning-time-seconds", "7"],
            Env(&[("HOROVOD_STALL_CHECK_TIME_SECONDS", "7")]),
        ),
        Row(
            "--stall-check-shutdown-time-seconds",
            &["-np", "2", "--stall-check-shutdown-time-seconds", "9"],
            Env(&[("HOROVOD_STALL_SHUTDOWN_TIME_SECONDS", "9")]),
        ),
        Row(
            "--mpi-threads-disable",
            &["-np", "2", "--mpi-threads-disable"],
            Refused("MPI_THREAD_MULTIPLE"),
        ),
        Row(
            "--no-mpi-threads-disable",
            &["-np", "2", "--no-mpi-threads-disable"],
            Env(&[("HOROVOD_MPI_THREADS_DISABLE", "0")]),
        ),
        Row(
            "--mpi-args",
            &["-np", "2", "--mpi", "--mpi-args=--mca btl self"],
            Holds(|a, r| r.mpi && a.mpi_args.as_deref() == Some("--mca btl self")),
        ),
        Row(
            "--tcp",
            &["-np", "2", "--tcp"],
            Env(&[("NCCL_IB_DISABLE", "1")]),
        ),
        Row(
            "--binding-args",
            &["-np", "2", "--mpi", "--binding-args", "--bind-to core"],
            Holds(|_, r| r.binding == Some(vec!["--bind-to".into(), "core".into()])),
        ),
        Row(
            "--binding-args",
            &["-np", "2", "--binding-args", "--bind-to core"],
            Refused("use it with --mpi"),
        ),
        Row(
            "--num-nccl-streams",
            &["-np", "2", "--num-nccl-streams", "2"],
            Refused("no GPU/NCCL path"),
        ),
        Row(
            "--thread-affinity",
            &["-np", "2", "--thread-affinity", "1"],
            Refused("does not pin its background thread"),
        ),
        Row(
            "--gloo-timeout-seconds",
            &["-np", "2", "--gloo-timeout-seconds", "60"],
            Env(&[("HOROVOD_GLOO_TIMEOUT_SECONDS", "60")]),
        ),
        Row(
            "--log-level",
            &["-np", "2", "--log-level", "info"],
            Env(&[("HOROVOD_LOG_LEVEL", "INFO")]),
        ),
        Row(
            "--log-with-timestamp",
            &["-np", "2", "--log-with-timestamp"],
            Env(&[("HOROVOD_LOG_HIDE_TIME", "0")]),
        ),
        Row(
            "--log-without-timestamp",
            &["-np", "2", "--log-without-timestamp"],
            Env(&[("HOROVOD_LOG_HIDE_TIME", "1")]),
        ),
        Row(
            "-prefix-timestamp",
            &["-np", "2", "-prefix-timestamp"],
            Holds(|a, _| a.prefix_output_with_timestamp),
        ),
        Row(
            "--log-hide-timestamp",
            &["-np", "2", "--log-hide-timestamp"],
            Env(&[("HOROVOD_LOG_HIDE_TIME", "1")]),
        ),
        Row(
            "--no-log-hide-timestamp",
            &["-np", "2", "--no-log-hide-timestamp"],
            Env(&[("HOROVOD_LOG_HIDE_TIME", "0")]),
        ),
        Row(
            "-H",
            &["-np", "2", "-H", "a:1,b:1"],
            Holds(|a, _| a.hosts.as_deref() == Some("a:1,b:1")),
        ),
        Row(
            "-hostfile",
            &["-np", "2", "-hostfile", "hf"],
            Holds(|a, _| a.hostfile == Some(PathBuf::from("hf"))),
        ),
        Row(
            "--host-discovery-script",
            &["-np", "2", "--host-discovery-script", "d.sh"],
            Refused("elastic training is not built"),
        ),
        Row(
            "--gloo",
            &["-np", "2", "--gloo"],
            Env(&[("HOROVOD_CONTROLLER", "gloo")]),
        ),
        Row(
            "--mpi",
            &["-np", "2", "--mpi"],
            Holds(|_, r| r.mpi && r.env.is_empty()),
        ),
        Row(
            "--jsrun",
            &["-np", "2", "--jsrun"],
            Refused("jsrun is not on PATH"),
        ),
    ]
}

fn argv(fragment: &[&str], cfg: &str) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec!["horovodrun".into()];
    v.extend(
        fragment
            .iter()
            .map(|a| OsString::from(a.replace("{cfg}", cfg))),
    );
    v.push("prog".into());
    v
}

fn config_file() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("horovodrun-table-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("cfg.yaml");
    std::fs::write(
        &f,
        "params:\n  fusion_threshold_mb: 32\nstall_check:\n  warning_time_seconds: 0\n",
    )
    .unwrap();
    f
}

#[test]
fn every_horovod_option_is_parsed_and_does_what_it_says() {
    let cfg = config_file();
    let cfg = cfg.to_str().unwrap();
    for Row(option, fragment, want) in rows() {
        let parsed = Args::try_parse_from(normalize(argv(fragment, cfg)));
        if let Want::Exits = want {
            let e = parsed.expect_err(option);
            assert_eq!(e.exit_code(), 0, "{option}: {e}");
            continue;
        }
        let a = parsed.unwrap_or_else(|e| panic!("{option}: {fragment:?} did not parse: {e}"));
        let r = resolve(&a, |_| None, |_| false);
        match want {
            Want::Env(vars) => {
                let r = r.unwrap_or_else(|e| panic!("{option}: refused: {e:?}"));
                let want: Vec<(String, String)> = vars
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect();
                assert_eq!(r.env, want, "{option}");
            }
            Want::Holds(check) => {
                let r = r.unwrap_or_else(|e| panic!("{option}: refused: {e:?}"));
                assert!(check(&a, &r), "{option}: {a:?}\n{r:?}");
            }
            Want::Refused(words) => {
                let e = r.expect_err(option);
                assert_eq!(e.len(), 1, "{option}: {e:?}");
                assert!(
                    e[0].starts_with(option) && e[0].contains(words),
                    "{option}: {e:?}"
                );
            }
            Want::Exits => unreachable!(),
        }
    }
    let _ = std::fs::remove_dir_all(std::path::Path::new(cfg).parent().unwrap());
}

#[test]
fn the_table_covers_every_horovod_option_and_every_spelling_parses() {
    let rows = rows();
    assert_eq!(HOROVOD.len(), 61);
    for spellings in HOROVOD {
        assert!(
            rows.iter().any(|Row(o, _, _)| *o == spellings[0]),
            "no row for {}",
            spellings[0]
        );
        // Every spelling is an option clap knows (parsed, then perhaps refused: not unknown).
        for s in *spellings {
            let fragment: Vec<&str> = match rows.iter().find(|Row(o, _, _)| *o == spellings[0]) {
                Some(Row(o, f, _)) => f.iter().map(|a| if a == o { *s } else { *a }).collect(),
                None => unreachable!(),
            };
            let e = Args::try_parse_from(normalize(argv(&fragment, "/nonexistent")));
            if let Err(e) = e {
                assert_eq!(e.exit_code(), 0, "{s}: {e}");
            }
        }
    }
    // And clap knows no option that is neither Horovod's nor listed as hora's own.
    use clap::CommandFactory;
    let cmd = Args::command();
    for a in cmd.get_arguments().filter(|a| !a.is_positional()) {
        let names = a
            .get_long_and_visible_aliases()
            .into_iter()
            .flatten()
            .map(|l| format!("--{l}"))
            .chain(a.get_short().map(|s| format!("-{s}")));
        for n in names {
            let known =
                HOROVOD.iter().any(|s| s.contains(&n.as_str())) || HORA_ONLY.contains(&n.as_str());
            assert!(known, "{n} is neither Horovod's nor in HORA_ONLY");
        }
    }
}

#[test]
fn log_levels_take_horovods_spellings_in_any_case() {
    for (given, exported) in [
        ("TRACE", "TRACE"),
        ("DEBUG", "DEBUG"),
        ("INFO", "INFO"),
        ("WARNING", "WARNING"),
        ("ERROR", "ERROR"),
        ("FATAL", "FATAL"),
        ("warn", "WARNING"),
        ("Debug", "DEBUG"),
    ] {
        let a =
            Args::try_parse_from(normalize(argv(&["-np", "1", "--log-level", given], ""))).unwrap();
        let r = resolve(&a, |_| None, |_| false).unwrap();
        assert_eq!(
            r.env,
            [("HOROVOD_LOG_LEVEL".to_owned(), exported.to_owned())],
            "{given}"
        );
    }
    let e = Args::try_parse_from(normalize(argv(&["-np", "1", "--log-level", "loud"], "")))
        .unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("WARNING"), "{e}");
}

#[test]
fn jsrun_on_path_is_still_refused_with_its_own_reason() {
    let a = Args::try_parse_from(normalize(argv(&["-np", "2", "--jsrun"], ""))).unwrap();
    let e = resolve(&a, |_| None, |p| p == "jsrun").unwrap_err();
    assert!(
        e[0].contains("cannot start ranks through jsrun") && e[0].contains("--mpi"),
        "{e:?}"
    );
}

#[test]
fn every_refusal_is_reported_at_once_and_minus_x_wins() {
    let a = Args::try_parse_from(normalize(argv(
        &[
            "-np",
            "2",
            "--torus-allreduce",
            "--thread-affinity",
            "0",
            "--min-np",
            "1",
        ],
        "",
    )))
    .unwrap();
    let e = resolve(&a, |_| None, |_| false).unwrap_err();
    assert_eq!(e.len(), 3, "{e:?}");
    let a = Args::try_parse_from(normalize(argv(
        &[
            "-np",
            "2",
            "--log-level",
            "info",
            "-x",
            "HOROVOD_LOG_LEVEL=debug",
        ],
        "",
    )))
    .unwrap();
    let r = resolve(&a, |_| None, |_| false).unwrap();
    assert_eq!(
        r.env.last().unwrap(),
        &("HOROVOD_LOG_LEVEL".to_owned(), "debug".to_owned())
    );
    // A bad HOROVOD_START_TIMEOUT here is named.
    let a = Args::try_parse_from(normalize(argv(&["-np", "2"], ""))).unwrap();
    let e = resolve(
        &a,
        |k| (k == "HOROVOD_START_TIMEOUT").then(|| "x".into()),
        |_| false,
    )
    .unwrap_err();
    assert!(e[0].contains("HOROVOD_START_TIMEOUT"), "{e:?}");
}
