//! `horovodrun --mpi` across hosts: two network-namespace "hosts" (`hora_tests::netns`: own
//! address, hostname and sshd each) with two ranks on each, started by the real mpirun, which
//! reaches them over ssh with horovodrun's ssh flags. The ranks run real collectives over the
//! MPI transport and say where they ran, so the test sees that ranks on different hosts worked
//! together; a rank that fails on the remote host must end the job, named, leaving nothing
//! behind.
//!
//! Runs with the mpirun `horovodrun --mpi` would pick (`HORA_MPIRUN`, else `mpirun` on `PATH`),
//! Open MPI's or MPICH's Hydra, as `make test-mpi` runs this file under each. Skips, saying
//! why, without root, the namespace tools or an mpirun.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use hora_tests::netns::{Cluster, sh};
use hora_tests::{hora_rank, horovodrun};

use super::Ran;

/// Generous: a loaded 2-core machine may run other test binaries at the same time.
const LIMIT: Duration = Duration::from_secs(120);

/// One cluster at a time: each job uses every core.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The mpirun horovodrun would use.
struct Mpi {
    path: PathBuf,
    /// MPICH's Hydra, else Open MPI.
    hydra: bool,
}

/// The mpirun horovodrun would use (`HORA_MPIRUN`, else `mpirun` on `PATH`), or why this test
/// skips.
fn find_mpirun() -> Result<Mpi, String> {
    let path = match std::env::var_os("HORA_MPIRUN").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => {
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .map(|d| d.join("mpirun"))
                .find(|p| p.exists())
                .ok_or("mpirun is not installed")?
        }
    };
    let out = Command::new(&path)
        .arg("--version")
        .output()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let version = String::from_utf8_lossy(&out.stdout);
    if version.contains("Open MPI") {
        Ok(Mpi { path, hydra: false })
    } else if version.contains("HYDRA") {
        Ok(Mpi { path, hydra: true })
    } else {
        panic!(
            "{} is neither Open MPI's nor MPICH's mpirun",
            path.display()
        )
    }
}

/// A two-host cluster and the mpirun, or a skip.
macro_rules! setup_or_skip {
    () => {{
        let mpi = match find_mpirun() {
            Ok(m) => m,
            Err(why) => {
                eprintln!("SKIPPED: multi-host horovodrun --mpi: {why}");
                return;
            }
        };
        match Cluster::new(2) {
            Ok(c) => (c, mpi),
            Err(why) => {
                eprintln!("SKIPPED: multi-host horovodrun --mpi: {why}");
                return;
            }
        }
    }};
}

/// The arguments of `horovodrun --mpi -np 4 -H hostA:2,hostB:2` with the cluster's ssh files.
fn mpi_args(c: &Cluster) -> Vec<OsString> {
    let mut a: Vec<OsString> = ["--mpi", "-np", "4", "-H", &c.hosts_arg(&[2, 2])]
        .map(OsString::from)
        .to_vec();
    a.push("--ssh-config-file".into());
    a.push(c.ssh_config().into());
    a.push("-i".into());
    a.push(c.identity().into());
    a
}

/// `sh -c` that prints where the rank runs (hostname, network namespace), then becomes
/// `program args...`.
fn placed(program: impl Into<OsString>, args: &[&str]) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        "sh".into(),
        "-c".into(),
        "echo \"rank ${OMPI_COMM_WORLD_RANK:-$PMI_RANK} on $(hostname) in netns $(ip netns identify)\"; \
         exec \"$0\" \"$@\""
            .into(),
        program.into(),
    ];
    a.extend(args.iter().map(OsString::from));
    a
}

/// Runs `cmd` under `mpi`'s mpirun to completion, killing it (and failing the test) past
/// `limit`.
fn run(mpi: &Mpi, cmd: Command, limit: Duration) -> Ran {
    run_watching(mpi, cmd, limit, |_, _| {})
}

/// [`run`], showing `watch` the (untagged) output so far and the launcher's pid as it runs.
fn run_watching(mpi: &Mpi, mut cmd: Command, limit: Duration, watch: impl FnMut(&str, u32)) -> Ran {
    cmd.env("HORA_MPIRUN", &mpi.path);
    super::run_watching(cmd, limit, |out| untagged(out, mpi.hydra), watch)
}

/// `text` without mpirun's output prefixes: Open MPI's `--tag-output` (`[1,3]<stderr>:`),
/// and for Hydra its `-prepend-rank` (`[3] `). mpirun tags each chunk it reads from a rank,
/// and Rust's unbuffered `eprintln!` writes a formatted line in several pieces, so one line
/// can arrive as `rank [1,3]<stderr>:3[1,3]<stderr>:: ...`.
fn untagged(text: &str, hydra: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('[') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let tag_len = |prefix: &str, digits_then: &[&str]| -> Option<usize> {
            let body = after.strip_prefix(prefix)?;
            let digits = body.bytes().take_while(u8::is_ascii_digit).count();
            let t = digits_then
                .iter()
                .find(|t| digits > 0 && body[digits..].starts_with(**t))?;
            Some(prefix.len() + digits + t.len())
        };
        let skip = tag_len("1,", &["]<stdout>:", "]<stderr>:"])
            .or_else(|| hydra.then(|| tag_len("", &["] "])).flatten());
        match skip {
            Some(n) => rest = &after[n..],
            None => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn tags_are_removed_even_inside_a_line() {
    assert_eq!(
        untagged(
            "[1,3]<stderr>:rank [1,3]<stderr>:3[1,3]<stderr>:: x\n[1,0]<stdout>:[1,a] [2] ok\n",
            false
        ),
        "rank 3: x\n[1,a] [2] ok\n"
    );
    assert_eq!(
        untagged("[3] rank [3] 3: x\n[12] [a] ok\n", true),
        "rank 3: x\n[a] ok\n"
    );
}

/// Ranks 0 and 1 ran on the first host, 2 and 3 on the second.
fn assert_placed_on_both_hosts(c: &Cluster, ran: &Ran) {
    for rank in 0..4 {
        let ns = &c.hosts[rank / 2].ns;
        let want = format!("rank {rank} on {ns} in netns {ns}");
        assert!(
            ran.out.lines().any(|l| l.ends_with(&want)),
            "rank {rank} did not run on host {ns}:\n{}",
            ran.out
        );
    }
}

/// The engine's collectives (every op, ragged sizes, join) with two ranks on each of two
/// hosts, over the MPI transport (insisted on, so a fallback to TCP fails); hora's ring over
/// MPI point-to-point messages (the conformance table); and the engine over TCP, as ranks
/// built without MPI run under `horovodrun --mpi`.
#[test]
fn two_hosts_with_two_ranks_each_run_collectives_over_mpi() {
    let _g = serial();
    let (c, mpi) = setup_or_skip!();
    let mut cmd = Command::new(horovodrun());
    cmd.args(mpi_args(&c))
        .args(["-x", "HOROVOD_CONTROLLER=mpi"])
        .args(placed(hora_rank(), &["collectives"]));
    let ran = run(&mpi, cmd, LIMIT);
    assert_eq!(ran.code, Some(0), "engine collectives:\n{}", ran.out);
    assert_placed_on_both_hosts(&c, &ran);
    for rank in 0..4 {
        assert!(
            ran.out.contains(&format!("rank {rank}: collectives OK")),
            "rank {rank} did not pass:\n{}",
            ran.out
        );
    }
    eprintln!("engine collectives on 2 hosts x 2 ranks: {:?}", ran.elapsed);

    let mut cmd = Command::new(horovodrun());
    cmd.args(mpi_args(&c)).args(placed(
        env!("CARGO_BIN_EXE_hora-mpi-collectives"),
        &["ring"],
    ));
    let ran = run(&mpi, cmd, LIMIT);
    assert_eq!(ran.code, Some(0), "conformance (ring):\n{}", ran.out);
    assert_placed_on_both_hosts(&c, &ran);
    for rank in 0..4 {
        assert!(
            ran.out
                .contains(&format!("rank {rank}: collectives conformance (ring) OK")),
            "rank {rank} did not pass:\n{}",
            ran.out
        );
    }
    eprintln!("conformance (ring) on 2 hosts x 2 ranks: {:?}", ran.elapsed);

    // What ranks of a build without MPI (the default wheel) do under `horovodrun --mpi`: TCP
    // (and shared memory inside each host), rendezvous through the launcher's store.
    let mut cmd = Command::new(horovodrun());
    cmd.args(mpi_args(&c))
        .args(["-x", "HOROVOD_CONTROLLER=gloo", "--log-level", "info"])
        .args(placed(hora_rank(), &["collectives"]));
    let ran = run(&mpi, cmd, LIMIT);
    assert_eq!(
        ran.code,
        Some(0),
        "engine collectives over TCP:\n{}",
        ran.out
    );
    assert_placed_on_both_hosts(&c, &ran);
    // The ranks see the placement mpirun made: two hosts of two.
    assert!(
        ran.out
            .contains("shared memory inside each host, rings across hosts hosts=2 local_size=2"),
        "{}",
        ran.out
    );
    for rank in 0..4 {
        assert!(
            ran.out.contains(&format!("rank {rank}: collectives OK")),
            "rank {rank} did not pass over TCP:\n{}",
            ran.out
        );
    }
    eprintln!("engine collectives over TCP: {:?}", ran.elapsed);
    c.assert_no_orphans(Duration::from_secs(10));
}

/// Launched on the first host itself, as on a cluster's head node, with
/// `--network-interface eth0` (the same name on every host): mpirun gets it as Open MPI's
/// `btl_tcp_if_include`/`oob_tcp_if_include` or Hydra's `-iface`, and the ranks connect as
/// `hora::init` does.
#[test]
fn network_interface_on_a_head_node_carries_the_job() {
    let _g = serial();
    let (c, mpi) = setup_or_skip!();
    let mut cmd = c.on_host(0, horovodrun());
    cmd.args(mpi_args(&c))
        .args(["--network-interface", "eth0", "--verbose"])
        .args(placed(env!("CARGO_BIN_EXE_hora-conformance"), &[]));
    let ran = run(&mpi, cmd, LIMIT);
    assert_eq!(ran.code, Some(0), "{}", ran.out);
    let given = if mpi.hydra {
        ran.out.contains("\"-iface\", \"eth0\"")
    } else {
        ran.out.contains("\"btl_tcp_if_include\", \"eth0\"")
            && ran.out.contains("\"oob_tcp_if_include\", \"eth0\"")
    };
    assert!(given, "the interface did not reach mpirun:\n{}", ran.out);
    assert_placed_on_both_hosts(&c, &ran);
    for rank in 0..4 {
        assert!(
            ran.out
                .contains(&format!("rank {rank}: collectives conformance over mpi OK")),
            "rank {rank} did not pass over MPI:\n{}",
            ran.out
        );
    }
    c.assert_no_orphans(Duration::from_secs(10));
}

/// A rank on the remote host that fails inside a collective (its peers blocked in MPI), or
/// dies on a signal, ends the whole job, named, and nothing is left on either host.
#[test]
fn a_rank_failing_on_the_remote_host_ends_the_job() {
    let _g = serial();
    let (c, mpi) = setup_or_skip!();
    let mut cmd = Command::new(horovodrun());
    cmd.args(mpi_args(&c))
        .args(["-x", "HORA_CONFORMANCE_FAIL=3"])
        .arg(env!("CARGO_BIN_EXE_hora-mpi-collectives"))
        .arg("native");
    let ran = run(&mpi, cmd, LIMIT);
    assert_ne!(ran.code, Some(0), "{}", ran.out);
    assert!(
        ran.out
            .contains("rank 3: collectives conformance (native) FAILED")
            && ran.out.contains("injected failure"),
        "rank 3's failure is not reported:\n{}",
        ran.out
    );
    assert!(
        ran.out.contains("horovodrun: mpirun exited with status"),
        "{}",
        ran.out
    );
    eprintln!("failing remote rank: job ended in {:?}", ran.elapsed);
    c.assert_no_orphans(Duration::from_secs(10));

    let mut cmd = Command::new(horovodrun());
    cmd.args(mpi_args(&c))
        .args(["-x", "HORA_RANK_DIE=2"])
        .arg(hora_rank())
        .args(["loop", "100000"]);
    let ran = run(&mpi, cmd, LIMIT);
    assert_ne!(ran.code, Some(0), "{}", ran.out);
    // Open MPI names the rank and its host; Hydra the host (the rank named itself above).
    let remote = c.hosts[1].ip.as_str();
    let named = if mpi.hydra {
        ran.out.contains(&format!("RUNNING AT {remote}"))
    } else {
        ran.out
            .lines()
            .any(|l| l.contains("process rank 2 ") && l.contains(remote))
    };
    assert!(
        ran.out.contains("rank 2 dies now") && named,
        "the dead rank and its host are not named:\n{}",
        ran.out
    );
    eprintln!("killed remote rank: job ended in {:?}", ran.elapsed);
    c.assert_no_orphans(Duration::from_secs(10));
}

/// Ctrl-C reaches mpirun, which stops every rank on every host; horovodrun says so and exits
/// 130 (128 + SIGINT), as it does without --mpi, rather than with mpirun's "a rank failed" 1.
#[test]
fn ctrl_c_stops_the_ranks_on_every_host() {
    let _g = serial();
    let (c, mpi) = setup_or_skip!();
    let mut cmd = Command::new(horovodrun());
    cmd.args(mpi_args(&c))
        .arg(hora_rank())
        .args(["loop", "100000"]);
    let mut sent = false;
    let ran = run_watching(&mpi, cmd, LIMIT, |out, pid| {
        // Once ranks on both hosts are well into the loop.
        if !sent && out.contains("rank 0 step 20") && out.contains("rank 3 step 20") {
            sh(&format!("kill -INT {pid}")).expect("send SIGINT");
            sent = true;
        }
    });
    assert!(sent, "the job never got going:\n{}", ran.out);
    assert_eq!(ran.code, Some(130), "{}", ran.out);
    assert!(
        ran.out
            .contains("horovodrun: received SIGINT; mpirun stopped the job"),
        "{}",
        ran.out
    );
    c.assert_no_orphans(Duration::from_secs(10));
}

/// A host that does not answer ssh is named before mpirun starts, within `--start-timeout`,
/// as Horovod does (Open MPI alone prints a generic daemon failure after ssh's own timeout,
/// over a minute; MPICH's Hydra hangs).
#[test]
fn an_unreachable_host_is_named_before_mpirun_starts() {
    let _g = serial();
    let (c, mpi) = setup_or_skip!();
    sh(&format!("ip link set {} down", c.hosts[1].veth)).expect("cut the link");
    let mut cmd = Command::new(horovodrun());
    cmd.args(mpi_args(&c))
        .args(["--start-timeout", "3"])
        .arg(hora_rank())
        .arg("collectives");
    let ran = run(&mpi, cmd, LIMIT);
    assert_eq!(ran.code, Some(1), "{}", ran.out);
    assert!(
        ran.out
            .contains("1 of 2 hosts cannot be reached over ssh within 3 s")
            && ran.out.contains(&format!("  {}:", c.hosts[1].ip))
            && ran.out.contains("no rank was started"),
        "the unreachable host is not named:\n{}",
        ran.out
    );
    assert!(
        !ran.out.contains(&format!("  {}:", c.hosts[0].ip)),
        "{}",
        ran.out
    );
    c.assert_no_orphans(Duration::from_secs(10));
}
