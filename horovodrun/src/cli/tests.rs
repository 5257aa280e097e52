use clap::Parser;

use super::*;

fn os(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

fn parse(v: &[&str]) -> Result<Args, clap::Error> {
    Args::try_parse_from(normalize(os(v)))
}

#[test]
fn np_is_rewritten_only_before_the_command() {
    assert_eq!(
        normalize(os(&[
            "horovodrun",
            "-np",
            "2",
            "-H",
            "localhost:2",
            "prog",
            "-np",
            "x"
        ])),
        os(&[
            "horovodrun",
            "--num-proc",
            "2",
            "-H",
            "localhost:2",
            "prog",
            "-np",
            "x"
        ])
    );
    assert_eq!(
        normalize(os(&["horovodrun", "-np=3", "--", "-np"])),
        os(&["horovodrun", "--num-proc=3", "--", "-np"])
    );
    // A value that looks like the flag is a value, not the flag.
    assert_eq!(
        normalize(os(&["horovodrun", "--hosts", "-np", "-np", "1", "c"])),
        os(&["horovodrun", "--hosts", "-np", "--num-proc", "1", "c"])
    );
}

#[test]
fn horovod_style_command_line_parses() {
    let a = parse(&[
        "horovodrun",
        "-np",
        "4",
        "-H",
        "localhost:4",
        "--start-timeout",
        "7",
        "--verbose",
        "python",
        "-u",
        "train.py",
        "--lr",
        "0.1",
    ])
    .unwrap();
    assert_eq!(a.num_proc, Some(4));
    assert_eq!(a.hosts.as_deref(), Some("localhost:4"));
    assert_eq!(a.start_timeout, Some(7));
    assert!(a.verbose);
    assert_eq!(a.command, os(&["python", "-u", "train.py", "--lr", "0.1"]));
    assert_eq!(a.grace_period, 5.0);
}

#[test]
fn long_forms_parse() {
    let a = parse(&[
        "horovodrun",
        "--num-proc=2",
        "--hosts=127.0.0.1:2",
        "sh",
        "-c",
        "true",
    ])
    .unwrap();
    assert_eq!(a.num_proc, Some(2));
    assert_eq!(a.command, os(&["sh", "-c", "true"]));
}

#[test]
fn bad_input_is_a_usage_error() {
    for bad in [
        &["horovodrun", "-np", "0", "true"][..],
        &["horovodrun", "-np", "two", "true"],
        &["horovodrun", "-np", "2"],
        &["horovodrun", "-np", "2", "-x", "1BAD", "true"],
        &["horovodrun", "-np", "2", "--log-level", "loud", "true"],
        &[
            "horovodrun",
            "-np",
            "2",
            "-H",
            "a:1",
            "--hostfile",
            "f",
            "true",
        ],
        &["horovodrun", "-np", "2", "--cycle-time-ms", "-1", "true"],
        &["horovodrun", "--bogus", "-np", "2", "true"],
        &["horovodrun", "-np", "2", "--start-timeout", "0", "true"],
        &["horovodrun", "-np", "2", "--gloo", "--mpi", "true"],
        &["horovodrun", "-np", "2", "--mpi", "--jsrun", "true"],
        &[
            "horovodrun",
            "-np",
            "2",
            "-H",
            "a:2",
            "--host-discovery-script",
            "d",
            "true",
        ],
        &[
            "horovodrun",
            "-np",
            "2",
            "--hierarchical-allreduce",
            "--no-hierarchical-allreduce",
            "true",
        ],
        &[
            "horovodrun",
            "-np",
            "2",
            "--stall-check",
            "--no-stall-check",
            "true",
        ],
        &[
            "horovodrun",
            "-np",
            "2",
            "--log-with-timestamp",
            "--log-without-timestamp",
            "true",
        ],
        &[
            "horovodrun",
            "-np",
            "2",
            "--autotune-gaussian-process-noise",
            "1.5",
            "true",
        ],
        &[
            "horovodrun",
            "-np",
            "2",
            "--blacklist-cooldown-range",
            "1",
            "true",
        ],
        &[
            "horovodrun",
            "-np",
            "2",
            "--gloo-timeout-seconds",
            "0",
            "true",
        ],
        &[
            "horovodrun",
            "-np",
            "2",
            "--fusion-threshold-mb",
            "-1",
            "true",
        ],
        &["horovodrun", "-np", "2", "--grace-period", "-1", "true"],
    ] {
        let e = parse(bad).expect_err(&format!("{bad:?} parsed"));
        assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
    }
}

#[test]
fn common_flags_parse_together() {
    let a = parse(&[
        "horovodrun",
        "-np",
        "4",
        "--hostfile",
        "hf",
        "-p",
        "2222",
        "-i",
        "/k",
        "--network-interface",
        "eth0",
        "--start-timeout",
        "9",
        "--output-filename",
        "/tmp/o",
        "--disable-cache",
        "--fusion-threshold-mb",
        "32",
        "--cycle-time-ms",
        "2.5",
        "--cache-capacity",
        "10",
        "--timeline-filename",
        "/tmp/t.json",
        "--log-level",
        "debug",
        "-x",
        "A=1",
        "--env",
        "B=x=y",
        "--tcp",
        "prog",
        "-p",
        "1",
    ])
    .unwrap();
    assert_eq!(a.ssh_port, Some(2222));
    assert_eq!(a.nics(), ["eth0"]);
    assert_eq!(
        a.env,
        vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]
    );
    assert_eq!(a.tuning.fusion_threshold_mb, Some(32));
    assert!(a.disable_cache && a.tcp && !a.mpi);
    assert_eq!(a.command, os(&["prog", "-p", "1"]));
    assert!(parse(&["horovodrun", "--check-build"]).unwrap().check_build);
}

#[test]
fn single_dash_spellings_are_rewritten() {
    assert_eq!(
        normalize(os(&[
            "horovodrun",
            "-cb",
            "-hostfile",
            "hf",
            "-prefix-timestamp",
            "-hostfile=h2",
            "-v",
            "prog",
            "-cb",
            "-hostfile"
        ])),
        os(&[
            "horovodrun",
            "--check-build",
            "--hostfile",
            "hf",
            "--prefix-output-with-timestamp",
            "--hostfile=h2",
            "--version",
            "prog",
            "-cb",
            "-hostfile"
        ])
    );
    // Options with two values (read from clap's definition) skip both before the command.
    assert_eq!(
        normalize(os(&[
            "horovodrun",
            "--blacklist-cooldown-range",
            "1",
            "2",
            "-np",
            "3",
            "prog"
        ]))[4..],
        os(&["--num-proc", "3", "prog"])[..]
    );
}

#[test]
fn network_interfaces_merge_in_order_each_once() {
    let a = parse(&[
        "horovodrun",
        "-np",
        "2",
        "--network-interfaces",
        "eth1, eth0",
        "--network-interface",
        "eth2",
        "--network-interface",
        "eth0,eth3",
        "true",
    ])
    .unwrap();
    assert_eq!(a.nics(), ["eth1", "eth0", "eth2", "eth3"]);
}

#[test]
fn start_timeout_comes_from_the_flag_then_the_environment() {
    let a = parse(&["horovodrun", "-np", "2", "true"]).unwrap();
    assert_eq!(a.start_timeout(None), Ok(30));
    assert_eq!(a.start_timeout(Some("45")), Ok(45));
    let e = a.start_timeout(Some("soon")).unwrap_err();
    assert!(
        e.contains("HOROVOD_START_TIMEOUT") && e.contains("soon"),
        "{e}"
    );
    let a = parse(&["horovodrun", "-np", "2", "--start-timeout", "9", "true"]).unwrap();
    assert_eq!(a.start_timeout(Some("45")), Ok(9));
}
