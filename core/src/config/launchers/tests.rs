use super::*;
use crate::config::Config;

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn slurm_node_lists_give_their_first_host() {
    assert_eq!(
        slurm_first_node("node[07-10,12],gpu1").as_deref(),
        Some("node07")
    );
    assert_eq!(slurm_first_node("gpu1,node[1-2]").as_deref(), Some("gpu1"));
    assert_eq!(
        slurm_first_node("rack1-[3-4]-a").as_deref(),
        Some("rack1-3-a")
    );
    assert_eq!(slurm_first_node("solo").as_deref(), Some("solo"));
    assert_eq!(slurm_first_node(""), None);
    assert_eq!(slurm_tasks_on_node("2(x3),1", 0), Some(2));
    assert_eq!(slurm_tasks_on_node("2(x3),1", 3), Some(1));
    assert_eq!(slurm_tasks_on_node("2(x3),1", 4), None);
}

#[test]
fn torchrun_variables_make_a_job_whose_rank_0_serves_the_store() {
    let v = vars(&[
        ("RANK", "3"),
        ("WORLD_SIZE", "4"),
        ("LOCAL_RANK", "1"),
        ("LOCAL_WORLD_SIZE", "2"),
        ("GROUP_RANK", "1"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", "29500"),
        ("TORCHELASTIC_RUN_ID", "abc"),
    ]);
    let c = Config::from_vars(&v).unwrap();
    let t = c.topology;
    assert_eq!(
        (
            t.rank,
            t.size,
            t.local_rank,
            t.local_size,
            t.cross_rank,
            t.cross_size
        ),
        (3, 4, 1, 2, 1, 2)
    );
    let r = c.rendezvous.unwrap();
    assert_eq!(r.store.to_string(), "127.0.0.1:29501");
    assert!(r.serve_store && r.secret_derived);
    assert_eq!(r.secret.len(), 32);
    // Every rank derives the same secret; another run does not.
    let mut other_rank = v.clone();
    other_rank.insert("RANK".into(), "0".into());
    let r0 = Config::from_vars(&other_rank).unwrap().rendezvous.unwrap();
    assert_eq!(r0.secret, r.secret);
    let mut other_run = v.clone();
    other_run.insert("TORCHELASTIC_RUN_ID".into(), "xyz".into());
    assert_ne!(
        Config::from_vars(&other_run)
            .unwrap()
            .rendezvous
            .unwrap()
            .secret,
        r.secret
    );
    // A given secret wins and is not marked derived.
    let mut keyed = v;
    keyed.insert(
        "HOROVOD_SECRET_KEY".into(),
        "00112233445566778899aabbccddeeff".into(),
    );
    let rk = Config::from_vars(&keyed).unwrap().rendezvous.unwrap();
    assert!(!rk.secret_derived);
    assert_eq!(
        rk.secret,
        hex::decode("00112233445566778899aabbccddeeff").unwrap()
    );
}

#[test]
fn open_mpi_on_one_host_needs_no_address() {
    let c = Config::from_vars(&vars(&[
        ("OMPI_COMM_WORLD_RANK", "1"),
        ("OMPI_COMM_WORLD_SIZE", "2"),
        ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
        ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
    ]))
    .unwrap();
    assert_eq!(
        (c.topology.rank, c.topology.size, c.topology.cross_size),
        (1, 2, 1)
    );
    let r = c.rendezvous.unwrap();
    assert_eq!(r.store.to_string(), "127.0.0.1:29501");
    assert_eq!(r.bind_ip.to_string(), "127.0.0.1");
}

/// The variables MPICH 4's Hydra gives two ranks on one host: the ranks must derive one
/// secret, or rank 0's store turns rank 1 away (it did, when PMI_FD was hashed in).
#[test]
fn hydra_ranks_derive_the_same_secret() {
    let rank = |r: &str, fd: &str| {
        let v = vars(&[
            ("PMI_RANK", r),
            ("PMI_SIZE", "2"),
            ("PMI_FD", fd),
            ("HYDI_CONTROL_FD", "7"),
            ("MPI_LOCALRANKID", r),
            ("MPI_LOCALNRANKS", "2"),
            ("MPIR_CVAR_CH3_INTERFACE_HOSTNAME", "vm"),
        ]);
        Config::from_vars(&v).unwrap().rendezvous.unwrap()
    };
    let (r0, r1) = (rank("0", "6"), rank("1", "8"));
    assert!(r0.secret_derived && r0.serve_store);
    assert_eq!(r0.store, r1.store);
    assert_eq!(r0.secret, r1.secret);
}

#[test]
fn multi_host_mpirun_without_an_address_says_what_to_set() {
    let e = Config::from_vars(&vars(&[
        // TCP, so the store is needed in an MPI build too.
        ("HOROVOD_CONTROLLER", "gloo"),
        ("PMI_RANK", "0"),
        ("PMI_SIZE", "4"),
        ("MPI_LOCALRANKID", "0"),
        ("MPI_LOCALNRANKS", "2"),
    ]))
    .unwrap_err()
    .to_string();
    assert!(e.contains("MPICH") && e.contains("MASTER_ADDR"), "{e}");
}

#[test]
fn slurm_steps_use_the_first_node_and_a_job_derived_port() {
    let c = Config::from_vars(&vars(&[
        ("SLURM_PROCID", "5"),
        ("SLURM_STEP_NUM_TASKS", "6"),
        ("SLURM_LOCALID", "1"),
        ("SLURM_NODEID", "2"),
        ("SLURM_STEP_NUM_NODES", "3"),
        ("SLURM_STEP_TASKS_PER_NODE", "2(x3)"),
        ("SLURM_STEP_NODELIST", "localhost"),
        ("SLURM_JOB_ID", "1234"),
        ("SLURM_STEP_ID", "0"),
    ]))
    .unwrap();
    let t = c.topology;
    assert_eq!(
        (
            t.rank,
            t.size,
            t.local_rank,
            t.local_size,
            t.cross_rank,
            t.cross_size
        ),
        (5, 6, 1, 2, 2, 3)
    );
    let r = c.rendezvous.unwrap();
    assert!(r.store.ip().is_loopback());
    assert_eq!(r.store.port(), 20_000 + 1234 * 31 % 30_000);
    // A batch script (no step task count) is not a job of its own.
    assert!(matches!(
        Config::from_vars(&vars(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "4")])),
        Err(Error::NotLaunched { .. })
    ));
}

#[test]
fn horovodrun_variables_win_over_other_launchers() {
    let c = Config::from_vars(&vars(&[
        ("HOROVOD_RANK", "0"),
        ("HOROVOD_SIZE", "1"),
        ("RANK", "5"),
        ("WORLD_SIZE", "8"),
    ]))
    .unwrap();
    assert_eq!(c.topology.size, 1);
    assert!(c.rendezvous.is_none());
}
