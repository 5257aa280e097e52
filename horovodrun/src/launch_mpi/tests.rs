use super::*;

fn plan(hosts: Option<Vec<(String, u32)>>, np: u32) -> MpiPlan {
    MpiPlan {
        command: vec!["python".into(), "train.py".into()],
        np,
        hosts,
        listen_ip: IpAddr::from([127, 0, 0, 1]),
        nics: Vec::new(),
        binding: None,
        output_dir: None,
        timestamps: false,
        start_timeout_secs: 30,
        extra_env: vec![("HOROVOD_CYCLE_TIME".into(), "2".into())],
        extra_args: Vec::new(),
        ssh: Vec::new(),
        ssh_given: false,
    }
}

fn strings(a: Vec<OsString>) -> Vec<String> {
    a.into_iter()
        .map(|s| s.into_string().expect("utf-8"))
        .collect()
}

#[test]
fn open_mpi_local_job_as_root_oversubscribed() {
    let names = vec![
        "HORA_STORE_ADDR".to_owned(),
        "HOROVOD_SECRET_KEY".to_owned(),
    ];
    let a = strings(arguments(Flavor::OpenMpi, &plan(None, 4), &names, true, 2));
    assert_eq!(
        a,
        [
            "-np",
            "4",
            "--oversubscribe",
            "--allow-run-as-root",
            "--bind-to",
            "none",
            "--map-by",
            "slot",
            "--tag-output",
            "-x",
            "HORA_STORE_ADDR",
            "-x",
            "HOROVOD_SECRET_KEY",
            "python",
            "train.py"
        ]
    );
    let a = strings(arguments(Flavor::OpenMpi, &plan(None, 2), &[], false, 2));
    assert!(
        !a.iter()
            .any(|s| s == "--oversubscribe" || s == "--allow-run-as-root")
    );
}

#[test]
fn hosts_map_to_each_mpirun_syntax() {
    let hosts = Some(vec![("node1".to_owned(), 2), ("node2".to_owned(), 1)]);
    let p = plan(hosts, 3);
    let a = strings(arguments(Flavor::OpenMpi, &p, &[], false, 64));
    let i = a.iter().position(|s| s == "-H").expect("-H");
    assert_eq!(a[i + 1], "node1:2,node2:1");
    let a = strings(arguments(
        Flavor::Hydra,
        &p,
        &["A".into(), "B".into()],
        true,
        64,
    ));
    assert_eq!(
        a,
        [
            "-np",
            "3",
            "-hosts",
            "node1:2,node2:1",
            "-localhost",
            "127.0.0.1",
            "-bind-to",
            "none",
            "-prepend-rank",
            "-genvlist",
            "A,B",
            "python",
            "train.py"
        ]
    );
}

#[test]
fn mpi_args_go_before_the_command_and_replace_our_binding() {
    let mut p = plan(None, 2);
    p.extra_args = vec![
        "--bind-to".into(),
        "core".into(),
        "--mca".into(),
        "btl".into(),
        "self,vader".into(),
    ];
    let a = strings(arguments(Flavor::OpenMpi, &p, &[], false, 2));
    assert_eq!(a.iter().filter(|s| *s == "--bind-to").count(), 1, "{a:?}");
    assert_eq!(
        &a[a.len() - 7..],
        [
            "--bind-to",
            "core",
            "--mca",
            "btl",
            "self,vader",
            "python",
            "train.py"
        ]
    );
}

#[test]
fn ranks_get_the_store_the_secret_and_the_launchers_settings() {
    let inherited = vec![
        ("HOROVOD_FUSION_THRESHOLD".to_owned(), "1024".to_owned()),
        ("HORA_MPIRUN".to_owned(), "/x/mpirun".to_owned()),
        ("PATH".to_owned(), "/bin".to_owned()),
        ("OMP_NUM_THREADS".to_owned(), "2".to_owned()),
        ("OLDPWD".to_owned(), "/old".to_owned()),
        ("BASH_FUNC_f%%".to_owned(), "() { :; }".to_owned()),
        ("CUDA_VISIBLE_DEVICES".to_owned(), "0".to_owned()),
        ("HOROVOD_SECRET_KEY".to_owned(), "launchers-own".to_owned()),
    ];
    let env = rank_env(
        &plan(None, 2),
        "127.0.0.1:4000".parse().unwrap(),
        "ab",
        inherited.into_iter(),
    );
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("HORA_STORE_ADDR"), Some("127.0.0.1:4000"));
    assert_eq!(get("HORA_STORE_SERVE"), Some("0"));
    assert_eq!(get("HOROVOD_SECRET_KEY"), Some("ab"));
    assert_eq!(get("HOROVOD_FUSION_THRESHOLD"), Some("1024"));
    assert_eq!(get("HOROVOD_CYCLE_TIME"), Some("2"));
    assert_eq!(get("HOROVOD_GLOO_TIMEOUT_SECONDS"), Some("30"));
    // The whole environment, as Horovod names it to mpirun, minus the deny list.
    assert_eq!(get("PATH"), Some("/bin"));
    assert_eq!(get("OMP_NUM_THREADS"), Some("2"));
    for denied in [
        "OLDPWD",
        "BASH_FUNC_f%%",
        "CUDA_VISIBLE_DEVICES",
        "HORA_MPIRUN",
    ] {
        assert_eq!(get(denied), None, "{denied}");
    }
}

#[test]
fn ssh_flags_become_options_for_mpiruns_ssh() {
    let o = ssh_options(
        Some(2222),
        Some(Path::new("/k/id")),
        Some(Path::new("/k/cfg")),
        7,
    )
    .unwrap();
    assert_eq!(
        o.join(" "),
        "-F /k/cfg -i /k/id -p 2222 -o BatchMode=yes -o ConnectTimeout=7"
    );
    assert_eq!(
        ssh_options(None, None, None, 30).unwrap().join(" "),
        "-o BatchMode=yes -o ConnectTimeout=30"
    );
    let e = ssh_options(None, Some(Path::new("/my keys/id")), None, 30).unwrap_err();
    assert!(
        e.contains("--ssh-identity-file") && e.contains("/my keys/id"),
        "{e}"
    );
}

#[test]
fn open_mpi_multi_host_gets_ssh_options_and_interface() {
    let hosts = Some(vec![("a".to_owned(), 2), ("b".to_owned(), 2)]);
    let mut p = plan(hosts, 4);
    p.ssh = ssh_options(None, Some(Path::new("/k/id")), None, 9).unwrap();
    p.nics = vec!["eth0".into()];
    let a = strings(arguments(Flavor::OpenMpi, &p, &[], true, 2));
    let mca = |key: &str| {
        a.windows(3)
            .filter(|w| w[0] == "--mca" && w[1] == key)
            .map(|w| w[2].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        mca("plm_rsh_args"),
        ["-i /k/id -o BatchMode=yes -o ConnectTimeout=9"],
        "{a:?}"
    );
    assert_eq!(mca("btl_tcp_if_include"), ["eth0"], "{a:?}");
    assert_eq!(mca("oob_tcp_if_include"), ["eth0"], "{a:?}");
    assert!(!a.iter().any(|s| s == "--oversubscribe"), "{a:?}");
    // A local job starts no daemon over ssh.
    let mut local = plan(None, 2);
    local.ssh = p.ssh.clone();
    let a = strings(arguments(Flavor::OpenMpi, &local, &[], false, 2));
    assert!(!a.iter().any(|s| s == "plm_rsh_args"), "{a:?}");
}

#[test]
fn the_users_mca_settings_replace_ours() {
    let hosts = Some(vec![("a".to_owned(), 1), ("b".to_owned(), 1)]);
    let mut p = plan(hosts, 2);
    p.ssh = ssh_options(None, None, None, 9).unwrap();
    p.nics = vec!["eth0".into()];
    p.extra_args = "--mca plm_rsh_args -q -mca btl_tcp_if_include 10.0.0.0/8"
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let a = strings(arguments(Flavor::OpenMpi, &p, &[], false, 2));
    let count = |key: &str| a.iter().filter(|s| *s == key).count();
    assert_eq!(count("plm_rsh_args"), 1, "{a:?}");
    assert_eq!(count("btl_tcp_if_include"), 1, "{a:?}");
    assert_eq!(count("oob_tcp_if_include"), 1, "{a:?}");
    assert!(!a.iter().any(|s| s.contains("BatchMode")), "{a:?}");
}

#[test]
fn hydra_uses_ssh_options_only_when_given() {
    let hosts = Some(vec![("a".to_owned(), 1), ("b".to_owned(), 1)]);
    let mut p = plan(hosts, 2);
    p.ssh = ssh_options(Some(2200), None, None, 9).unwrap();
    let a = strings(arguments(Flavor::Hydra, &p, &[], false, 2));
    assert!(!a.iter().any(|s| s == "-launcher"), "{a:?}");
    assert!(mpirun_env(Flavor::Hydra, &p, false).is_empty());
    p.ssh_given = true;
    let a = strings(arguments(Flavor::Hydra, &p, &[], false, 2));
    let i = a.iter().position(|s| s == "-launcher").expect("-launcher");
    assert_eq!(a[i + 1], "ssh");
    assert_eq!(
        mpirun_env(Flavor::Hydra, &p, false),
        [(
            "HYDRA_LAUNCHER_EXTRA_ARGS".to_owned(),
            "-p 2200 -o BatchMode=yes -o ConnectTimeout=9".to_owned()
        )]
    );
    assert!(
        mpirun_env(Flavor::Hydra, &p, true).is_empty(),
        "the user's own"
    );
    assert!(mpirun_env(Flavor::OpenMpi, &p, false).is_empty());
    // The user's launcher choice stands, and so does their -localhost.
    p.extra_args = vec![
        "-launcher".into(),
        "slurm".into(),
        "-localhost".into(),
        "n0".into(),
    ];
    let a = strings(arguments(Flavor::Hydra, &p, &[], false, 2));
    assert_eq!(a.iter().filter(|s| *s == "-launcher").count(), 1, "{a:?}");
    assert_eq!(a.iter().filter(|s| *s == "-localhost").count(), 1, "{a:?}");
    assert!(mpirun_env(Flavor::Hydra, &p, false).is_empty());
}

#[test]
fn local_slots_mean_no_host_list() {
    let slot = |h: &str| Slot {
        host: h.into(),
        local_rank: 0,
        local_size: 1,
        cross_rank: 0,
        cross_size: 1,
    };
    assert_eq!(
        MpiPlan::hosts_of(&[slot("localhost"), slot("localhost")]),
        None
    );
    assert_eq!(
        MpiPlan::hosts_of(&[slot("localhost"), slot("a"), slot("a")]),
        Some(vec![("localhost".into(), 1), ("a".into(), 2)])
    );
}

#[test]
fn binding_args_replace_ours_and_interfaces_are_listed() {
    let hosts = Some(vec![("a".to_owned(), 1), ("b".to_owned(), 1)]);
    let mut p = plan(hosts, 2);
    p.binding = Some(vec![
        "--bind-to".into(),
        "core".into(),
        "--map-by".into(),
        "core".into(),
    ]);
    p.nics = vec!["eth1".into(), "eth0".into()];
    let a = strings(arguments(Flavor::OpenMpi, &p, &[], false, 2));
    assert_eq!(a.iter().filter(|s| *s == "--bind-to").count(), 1, "{a:?}");
    assert_eq!(a.iter().filter(|s| *s == "--map-by").count(), 1, "{a:?}");
    let i = a.iter().position(|s| s == "--bind-to").unwrap();
    assert_eq!(a[i + 1], "core", "{a:?}");
    assert_eq!(&a[a.len() - 2..], ["python", "train.py"]);
    let mca = a
        .windows(3)
        .find(|w| w[0] == "--mca" && w[1] == "btl_tcp_if_include")
        .map(|w| w[2].clone());
    assert_eq!(mca.as_deref(), Some("eth1,eth0"), "{a:?}");
    let a = strings(arguments(Flavor::Hydra, &p, &[], false, 2));
    let i = a.iter().position(|s| s == "-iface").unwrap();
    assert_eq!(a[i + 1], "eth1", "Hydra takes the first: {a:?}");
    assert!(!a.iter().any(|s| s == "none"), "{a:?}");
    assert!(a.iter().any(|s| s == "core"), "{a:?}");
}
