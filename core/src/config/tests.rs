use super::*;
use std::time::Duration;

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const SECRET: &str = "00112233445566778899aabbccddeeff";

fn launched(extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut m = vars(&[
        ("HOROVOD_RANK", "1"),
        ("HOROVOD_SIZE", "2"),
        ("HORA_STORE_ADDR", "127.0.0.1:4000"),
        ("HOROVOD_SECRET_KEY", SECRET),
    ]);
    m.extend(vars(extra));
    m
}

#[test]
fn outside_a_launcher_says_how_to_launch() {
    let err = Config::from_vars(&vars(&[])).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::NotLaunched { .. }));
    assert!(text.contains("horovodrun -np"), "{text}");
}

#[test]
fn launched_rank_reads_topology_and_defaults() {
    let c = Config::from_vars(&launched(&[])).unwrap();
    assert_eq!(c.topology.rank, 1);
    assert_eq!(c.topology.size, 2);
    assert_eq!(c.tuning, Tuning::default());
    let r = c.rendezvous.unwrap();
    assert_eq!(r.store, "127.0.0.1:4000".parse().unwrap());
    assert_eq!(r.secret.len(), 16);
}

#[test]
fn bad_values_name_the_variable_and_what_is_accepted() {
    for (var, val, needle) in [
        ("HOROVOD_CYCLE_TIME", "fast", "milliseconds"),
        ("HOROVOD_CYCLE_TIME", "-1", ">= 0"),
        ("HOROVOD_FUSION_THRESHOLD", "1e9x", "byte count"),
        ("HOROVOD_STALL_CHECK_DISABLE", "maybe", "true/false"),
        ("HORA_STORE_ADDR", "nowhere", "IP:PORT"),
        ("HOROVOD_HOSTNAME", "eth0", "IP address"),
        ("HORA_SEGMENT_BYTES", "12", ">= 4096"),
    ] {
        let err = Config::from_vars(&launched(&[(var, val)])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(var), "{var}: {text}");
        assert!(text.contains(needle), "{var}: {text}");
    }
}

#[test]
fn rank_must_be_below_size() {
    let err = Config::from_vars(&launched(&[("HOROVOD_RANK", "2")])).unwrap_err();
    assert!(err.to_string().contains("HOROVOD_RANK"), "{err}");
}

#[test]
fn secret_is_never_echoed() {
    let err = Config::from_vars(&launched(&[("HOROVOD_SECRET_KEY", "zz-not-hex-zz")])).unwrap_err();
    assert!(!err.to_string().contains("zz-not-hex-zz"), "{err}");
    let c = Config::from_vars(&launched(&[])).unwrap();
    assert!(!format!("{c:?}").contains(SECRET));
}

#[test]
fn single_rank_needs_no_store() {
    let c = Config::from_vars(&vars(&[("HOROVOD_RANK", "0"), ("HOROVOD_SIZE", "1")])).unwrap();
    assert!(c.rendezvous.is_none());
}

#[test]
fn tuning_overrides_apply() {
    let c = Config::from_vars(&launched(&[
        ("HOROVOD_CYCLE_TIME", "0.5"),
        ("HOROVOD_FUSION_THRESHOLD", "1048576"),
        ("HOROVOD_CACHE_CAPACITY", "0"),
        ("HOROVOD_STALL_CHECK_DISABLE", "1"),
        ("HORA_SPIN_US", "0"),
    ]))
    .unwrap();
    assert_eq!(c.tuning.cycle_time, Duration::from_micros(500));
    assert_eq!(c.tuning.fusion_threshold, 1 << 20);
    assert_eq!(c.tuning.cache_capacity, 0);
    assert_eq!(c.tuning.stall_warning, None);
    assert_eq!(c.tuning.spin, Duration::ZERO);
}

#[test]
fn hierarchical_settings_are_automatic_unless_set() {
    let t = Config::from_vars(&launched(&[])).unwrap().tuning;
    assert_eq!(t.hierarchical_allreduce, None);
    assert_eq!(t.hierarchical_allgather, None);
    assert_eq!(t.hierarchical_mode, HierarchicalMode::Split);
    assert_eq!(t.hierarchical_pipeline_bytes, None);
    let t = Config::from_vars(&launched(&[
        ("HORA_HIERARCHICAL_PIPELINE_BYTES", "0"),
        ("HOROVOD_HIERARCHICAL_ALLREDUCE", "0"),
        ("HOROVOD_HIERARCHICAL_ALLGATHER", "true"),
        ("HORA_HIERARCHICAL_MODE", "Leader"),
    ]))
    .unwrap()
    .tuning;
    assert_eq!(t.hierarchical_allreduce, Some(false));
    assert_eq!(t.hierarchical_allgather, Some(true));
    assert_eq!(t.hierarchical_mode, HierarchicalMode::Leader);
    assert_eq!(t.hierarchical_pipeline_bytes, Some(0));
}

#[test]
fn bad_hierarchical_settings_name_the_variable() {
    for (var, value) in [
        ("HOROVOD_HIERARCHICAL_ALLREDUCE", "2"),
        ("HOROVOD_HIERARCHICAL_ALLGATHER", "maybe"),
        ("HORA_HIERARCHICAL_MODE", "tree"),
        ("HORA_HIERARCHICAL_PIPELINE_BYTES", "8M"),
    ] {
        let e = Config::from_vars(&launched(&[(var, value)]))
            .unwrap_err()
            .to_string();
        assert!(e.contains(var) && e.contains(value), "{e}");
    }
}

#[test]
fn a_cycle_time_of_zero_is_accepted_as_in_horovod() {
    let c = Config::from_vars(&launched(&[("HOROVOD_CYCLE_TIME", "0")])).unwrap();
    assert_eq!(c.tuning.cycle_time, Duration::ZERO);
}

#[test]
fn horovod_hostname_may_be_a_host_name() {
    let c = Config::from_vars(&launched(&[("HOROVOD_HOSTNAME", "localhost")])).unwrap();
    assert!(c.rendezvous.unwrap().bind_ip.is_loopback());
    let c = Config::from_vars(&launched(&[("HOROVOD_HOSTNAME", "10.1.2.3")])).unwrap();
    assert_eq!(
        c.rendezvous.unwrap().bind_ip,
        std::net::IpAddr::from([10, 1, 2, 3])
    );
}

#[test]
fn variables_for_features_hora_lacks_are_refused_unless_neutral() {
    for (var, val) in [
        ("HOROVOD_TORUS_ALLREDUCE", "1"),
        ("HOROVOD_ENABLE_XLA_OPS", "1"),
        ("HOROVOD_THREAD_AFFINITY", "0,1"),
        ("HOROVOD_ELASTIC", "1"),
        ("HOROVOD_CPU_OPERATIONS", "CCL"),
    ] {
        let err = Config::from_vars(&launched(&[(var, val)])).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, Error::InvalidConfig { .. }) && text.contains(var),
            "{var}={val}: {text}"
        );
    }
    // What Horovod's defaults and horovodrun's --no-* flags set passes.
    for (var, val) in [
        ("HOROVOD_AUTOTUNE", "0"),
        ("HOROVOD_TORUS_ALLREDUCE", "0"),
        ("HOROVOD_MPI_THREADS_DISABLE", "0"),
        ("HOROVOD_CPU_OPERATIONS", "gloo"),
    ] {
        Config::from_vars(&launched(&[(var, val)])).unwrap_or_else(|e| panic!("{var}={val}: {e}"));
    }
}

#[test]
fn autotune_settings_are_read_and_fix_the_knobs_the_user_set() {
    let c = Config::from_vars(&launched(&[])).unwrap();
    assert_eq!(c.tuning.autotune, None);
    let c = Config::from_vars(&launched(&[
        ("HOROVOD_AUTOTUNE", "1"),
        ("HOROVOD_AUTOTUNE_LOG", "/tmp/at.csv"),
        ("HOROVOD_AUTOTUNE_WARMUP_SAMPLES", "0"),
        ("HOROVOD_AUTOTUNE_STEPS_PER_SAMPLE", "4"),
        ("HOROVOD_AUTOTUNE_BAYES_OPT_MAX_SAMPLES", "7"),
        ("HOROVOD_AUTOTUNE_GAUSSIAN_PROCESS_NOISE", "0.25"),
        ("HOROVOD_FUSION_THRESHOLD", "1048576"),
    ]))
    .unwrap();
    let t = &c.tuning;
    assert_eq!(
        t.autotune,
        Some(AutotuneFixed {
            fusion_threshold: true,
            segment_bytes: false,
            cache: false,
        })
    );
    assert_eq!(
        t.autotune_log.as_deref(),
        Some(std::path::Path::new("/tmp/at.csv"))
    );
    assert_eq!(
        (
            t.autotune_warmup_samples,
            t.autotune_steps_per_sample,
            t.autotune_max_samples
        ),
        (0, 4, 7)
    );
    assert_eq!(t.autotune_noise, 0.25);
    let off = Config::from_vars(&launched(&[("HOROVOD_AUTOTUNE", "0")])).unwrap();
    assert_eq!(off.tuning.autotune, None);
}

#[test]
fn bad_autotune_settings_name_the_variable() {
    for (var, val) in [
        ("HOROVOD_AUTOTUNE", "maybe"),
        ("HOROVOD_AUTOTUNE_WARMUP_SAMPLES", "-1"),
        ("HOROVOD_AUTOTUNE_STEPS_PER_SAMPLE", "0"),
        ("HOROVOD_AUTOTUNE_BAYES_OPT_MAX_SAMPLES", "0"),
        ("HOROVOD_AUTOTUNE_BAYES_OPT_MAX_SAMPLES", "many"),
        ("HOROVOD_AUTOTUNE_GAUSSIAN_PROCESS_NOISE", "-0.5"),
        ("HOROVOD_AUTOTUNE_GAUSSIAN_PROCESS_NOISE", "nan"),
    ] {
        let err = Config::from_vars(&launched(&[(var, val)])).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, Error::InvalidConfig { .. })
                && text.contains(var)
                && text.contains("expected"),
            "{var}={val}: {text}"
        );
    }
}

/// A rank started with Horovod's variables only (rank, size, secret, Gloo rendezvous).
fn gloo_launched(extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut m = vars(&[
        ("HOROVOD_RANK", "0"),
        ("HOROVOD_SIZE", "2"),
        ("HOROVOD_SECRET_KEY", SECRET),
        ("HOROVOD_GLOO_RENDEZVOUS_ADDR", "localhost"),
        ("HOROVOD_GLOO_RENDEZVOUS_PORT", "4100"),
    ]);
    m.extend(vars(extra));
    m
}

#[test]
fn horovods_gloo_rendezvous_variables_name_the_store_and_rank_0_serves_it() {
    let r = Config::from_vars(&gloo_launched(&[]))
        .unwrap()
        .rendezvous
        .unwrap();
    assert_eq!(r.store, "127.0.0.1:4100".parse().unwrap());
    assert!(
        r.serve_store,
        "nobody else serves a store named only by Horovod's variables"
    );
    let r = Config::from_vars(&gloo_launched(&[("HORA_STORE_SERVE", "0")]))
        .unwrap()
        .rendezvous
        .unwrap();
    assert!(!r.serve_store);
    // horovodrun sets both names for its own store: they agree, and its store is not served
    // by rank 0.
    let r = Config::from_vars(&gloo_launched(&[("HORA_STORE_ADDR", "127.0.0.1:4100")]))
        .unwrap()
        .rendezvous
        .unwrap();
    assert!(!r.serve_store);
    // A one-rank job named a store uses it.
    let one = gloo_launched(&[("HOROVOD_SIZE", "1")]);
    assert!(Config::from_vars(&one).unwrap().rendezvous.is_some());
}

#[test]
fn bad_gloo_rendezvous_variables_are_named() {
    let no_port = {
        let mut m = gloo_launched(&[]);
        m.remove("HOROVOD_GLOO_RENDEZVOUS_PORT");
        m
    };
    let no_addr = {
        let mut m = gloo_launched(&[]);
        m.remove("HOROVOD_GLOO_RENDEZVOUS_ADDR");
        m
    };
    for (m, var, needle) in [
        (
            no_port,
            "HOROVOD_GLOO_RENDEZVOUS_ADDR",
            "without HOROVOD_GLOO_RENDEZVOUS_PORT",
        ),
        (
            no_addr,
            "HOROVOD_GLOO_RENDEZVOUS_PORT",
            "without HOROVOD_GLOO_RENDEZVOUS_ADDR",
        ),
        (
            gloo_launched(&[("HOROVOD_GLOO_RENDEZVOUS_PORT", "70000")]),
            "HOROVOD_GLOO_RENDEZVOUS_PORT",
            "below 65536",
        ),
        (
            gloo_launched(&[("HOROVOD_GLOO_RENDEZVOUS_ADDR", "no-such-host.invalid")]),
            "HOROVOD_GLOO_RENDEZVOUS_ADDR",
            "resolve",
        ),
        (
            gloo_launched(&[("HORA_STORE_ADDR", "127.0.0.1:4999")]),
            "HOROVOD_GLOO_RENDEZVOUS_ADDR",
            "HORA_STORE_ADDR=127.0.0.1:4999",
        ),
    ] {
        let text = Config::from_vars(&m).unwrap_err().to_string();
        assert!(text.contains(var) && text.contains(needle), "{var}: {text}");
    }
}

#[test]
fn gloo_iface_picks_the_listen_address_unless_hostname_does() {
    let c = Config::from_vars(&launched(&[("HOROVOD_GLOO_IFACE", "no-such-nic0,lo")])).unwrap();
    assert_eq!(c.rendezvous.unwrap().bind_ip, IpAddr::from([127, 0, 0, 1]));
    let c = Config::from_vars(&launched(&[
        ("HOROVOD_GLOO_IFACE", "lo"),
        ("HOROVOD_HOSTNAME", "10.1.2.3"),
    ]))
    .unwrap();
    assert_eq!(c.rendezvous.unwrap().bind_ip, IpAddr::from([10, 1, 2, 3]));
    let text = Config::from_vars(&launched(&[("HOROVOD_GLOO_IFACE", "no-such-nic0")]))
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("HOROVOD_GLOO_IFACE") && text.contains("no-such-nic0"),
        "{text}"
    );
}
