//! Hierarchical collectives across "hosts" on one machine: each rank is started by hand with
//! the `HOROVOD_LOCAL_*`/`HOROVOD_CROSS_*` a launcher would give ranks on different hosts
//! (rank 0 serves the store, as under torchrun), so the job runs real processes over real TCP
//! sockets between the "hosts" and real shared memory inside each.

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use hora_tests::{hora_bench, hora_rank};

/// (local rank, local size, cross rank, cross size) of each rank, in rank order.
type Place = (usize, usize, usize, usize);

/// 2 hosts × 2 ranks, numbered host by host.
const TWO_BY_TWO: [Place; 4] = [(0, 2, 0, 2), (1, 2, 0, 2), (0, 2, 1, 2), (1, 2, 1, 2)];

struct Rank {
    child: Child,
    out: thread::JoinHandle<String>,
    err: thread::JoinHandle<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(places: &[Place], args: &[&str], env: &[(&str, &str)]) -> Vec<Rank> {
    spawn_program(&hora_rank(), places, args, env)
}

fn spawn_program(
    program: &std::path::Path,
    places: &[Place],
    args: &[&str],
    env: &[(&str, &str)],
) -> Vec<Rank> {
    let store = format!("127.0.0.1:{}", free_port());
    places
        .iter()
        .enumerate()
        .map(|(r, &(lr, ls, cr, cs))| {
            let mut cmd = Command::new(program);
            cmd.args(args)
                .env("HOROVOD_RANK", r.to_string())
                .env("HOROVOD_SIZE", places.len().to_string())
                .env("HOROVOD_LOCAL_RANK", lr.to_string())
                .env("HOROVOD_LOCAL_SIZE", ls.to_string())
                .env("HOROVOD_CROSS_RANK", cr.to_string())
                .env("HOROVOD_CROSS_SIZE", cs.to_string())
                .env("HORA_STORE_ADDR", &store)
                .env("HORA_STORE_SERVE", "1")
                .env("HOROVOD_SECRET_KEY", "00112233445566778899aabbccddeeff")
                .env("HOROVOD_LOG_LEVEL", "info")
                .env("HORA_OP_TIMEOUT_SECONDS", "60")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            for (k, v) in env {
                cmd.env(k, v);
            }
            let mut child = cmd.spawn().expect("spawn hora-rank");
            let mut so = child.stdout.take().unwrap();
            let mut se = child.stderr.take().unwrap();
            Rank {
                child,
                out: thread::spawn(move || {
                    let mut s = String::new();
                    let _ = so.read_to_string(&mut s);
                    s
                }),
                err: thread::spawn(move || {
                    let mut s = String::new();
                    let _ = se.read_to_string(&mut s);
                    s
                }),
            }
        })
        .collect()
}

/// Waits for every rank (killing all after `limit`), returning (status, stdout, stderr).
fn finish(ranks: Vec<Rank>, limit: Duration) -> Vec<(ExitStatus, String, String)> {
    let start = Instant::now();
    let mut ranks = ranks;
    loop {
        let done = ranks
            .iter_mut()
            .all(|r| r.child.try_wait().ok().flatten().is_some());
        if done {
            break;
        }
        if start.elapsed() > limit {
            for r in &mut ranks {
                let _ = r.child.kill();
            }
            panic!("the job did not finish within {limit:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
    ranks
        .into_iter()
        .map(|mut r| {
            let status = r.child.wait().unwrap();
            (status, r.out.join().unwrap(), r.err.join().unwrap())
        })
        .collect()
}

fn run(places: &[Place], args: &[&str], env: &[(&str, &str)]) -> Vec<(ExitStatus, String, String)> {
    finish(spawn(places, args, env), Duration::from_secs(240))
}

#[test]
fn two_hosts_of_two_ranks_run_every_collective_hierarchically() {
    let results = run(&TWO_BY_TWO, &["collectives"], &[]);
    for (r, (status, out, err)) in results.iter().enumerate() {
        assert!(status.success(), "rank {r}: {status}\n{out}\n{err}");
        assert!(out.contains("collectives OK"), "rank {r}: {out}");
        // Taken, not just set up: each rank logs its first hierarchical call of each kind.
        assert!(
            err.contains("hierarchical allreduce in use"),
            "rank {r}:\n{err}"
        );
        assert!(
            err.contains("hierarchical allgather in use"),
            "rank {r}:\n{err}"
        );
    }
    assert!(
        results[0]
            .2
            .contains("hierarchical collectives: shared memory inside each host"),
        "{}",
        results[0].2
    );
}

#[test]
fn zero_forces_flat_allreduce_and_leader_mode_works() {
    let results = run(
        &TWO_BY_TWO,
        &["collectives"],
        &[("HOROVOD_HIERARCHICAL_ALLREDUCE", "0")],
    );
    for (r, (status, out, err)) in results.iter().enumerate() {
        assert!(status.success(), "rank {r}: {status}\n{out}\n{err}");
        assert!(
            !err.contains("hierarchical allreduce in use"),
            "rank {r}:\n{err}"
        );
        assert!(
            err.contains("hierarchical allgather in use"),
            "rank {r}:\n{err}"
        );
    }
    let results = run(
        &TWO_BY_TWO,
        &["collectives"],
        &[
            ("HORA_HIERARCHICAL_MODE", "leader"),
            ("HOROVOD_HIERARCHICAL_ALLGATHER", "0"),
        ],
    );
    for (r, (status, out, err)) in results.iter().enumerate() {
        assert!(status.success(), "rank {r}: {status}\n{out}\n{err}");
        assert!(
            err.contains("hierarchical allreduce in use"),
            "rank {r}:\n{err}"
        );
        assert!(err.contains("mode=Leader"), "rank {r}:\n{err}");
        assert!(
            !err.contains("hierarchical allgather in use"),
            "rank {r}:\n{err}"
        );
    }
}

#[test]
fn uneven_hosts_fall_back_to_flat_and_say_why() {
    // horovodrun -H a:2,b:1: local rank 1 exists on host a only.
    let uneven: [Place; 3] = [(0, 2, 0, 2), (1, 2, 0, 1), (0, 1, 1, 2)];
    let results = run(
        &uneven,
        &["collectives"],
        &[("HOROVOD_HIERARCHICAL_ALLREDUCE", "1")],
    );
    for (r, (status, out, err)) in results.iter().enumerate() {
        assert!(status.success(), "rank {r}: {status}\n{out}\n{err}");
        assert!(
            !err.contains("hierarchical allreduce in use"),
            "rank {r}:\n{err}"
        );
    }
    let err0 = &results[0].2;
    assert!(
        err0.contains("running flat") && err0.contains("different numbers of ranks"),
        "{err0}"
    );
}

#[test]
fn a_rank_killed_on_the_other_host_mid_allreduce_is_named_and_nobody_hangs() {
    // Back-to-back 16 MiB allreduces, so the kill lands inside a hierarchical allreduce.
    let args = [
        "allreduce",
        "-b",
        "16M",
        "-e",
        "16M",
        "-n",
        "1000000",
        "-w",
        "0",
    ];
    // Plain, and pipelined in 4 MiB pieces (a helper thread per rank runs the network step).
    for pipeline in ["0", "4194304"] {
        killed_mid_allreduce(&args, pipeline);
    }
}

fn killed_mid_allreduce(args: &[&str], pipeline: &str) {
    let env = [("HORA_HIERARCHICAL_PIPELINE_BYTES", pipeline)];
    let mut ranks = spawn_program(&hora_bench(), &TWO_BY_TWO, args, &env);
    // Let it run a little, then kill -9 rank 3 (host 1, local rank 1).
    thread::sleep(Duration::from_secs(4));
    for r in &mut ranks {
        assert!(
            r.child.try_wait().unwrap().is_none(),
            "a rank ended before the kill"
        );
    }
    ranks[3].child.kill().unwrap();
    let killed = Instant::now();
    let results = finish(ranks, Duration::from_secs(120));
    let took = killed.elapsed();
    for (r, (status, _, err)) in results.iter().enumerate().take(3) {
        assert!(
            !status.success(),
            "pipeline {pipeline}: rank {r} succeeded after the kill:\n{err}"
        );
    }
    // Rank 1 runs the cross-host ring with rank 3 (TCP), rank 2 shares its memory (the
    // shared-memory error, renumbered to the job's rank): both name it.
    for r in [1, 2] {
        assert!(
            results[r].2.contains("connection to rank 3 lost"),
            "pipeline {pipeline}: rank {r}:\n{}",
            results[r].2
        );
    }
    assert!(took < Duration::from_secs(90), "survivors took {took:?}");
}

#[test]
fn every_rank_agrees_whether_hosts_are_even() {
    // Hosts of 2, 1 and 2 ranks (cross ranks as Horovod numbers them), then 2 x 2.
    let uneven: [Place; 5] = [
        (0, 2, 0, 3),
        (1, 2, 0, 2),
        (0, 1, 1, 3),
        (0, 2, 2, 3),
        (1, 2, 1, 2),
    ];
    for (places, want) in [(&uneven[..], false), (&TWO_BY_TWO[..], true)] {
        let results = run(places, &["layout"], &[]);
        for (r, (status, out, err)) in results.iter().enumerate() {
            assert!(status.success(), "rank {r}: {status}\n{out}\n{err}");
            assert!(
                out.contains(&format!("rank {r}: homogeneous={want}")),
                "rank {r}: {out}"
            );
        }
    }
}

#[test]
fn process_sets_across_hosts_run_every_collective() {
    // Evens (0, 2) and odds (1, 3) each have one rank per host: their sets ring over TCP.
    let results = run(
        &TWO_BY_TWO,
        &["process-sets"],
        &[("HOROVOD_DYNAMIC_PROCESS_SETS", "1")],
    );
    for (r, (status, out, err)) in results.iter().enumerate() {
        assert!(status.success(), "rank {r}: {status}\n{out}\n{err}");
        assert!(out.contains("process-sets OK"), "rank {r}: {out}");
    }
}
