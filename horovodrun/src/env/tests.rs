use super::*;

#[test]
fn generated_secrets_are_fresh_and_long() {
    let a = job_secret(None).unwrap();
    let b = job_secret(None).unwrap();
    assert_eq!(a.len(), 32);
    assert_ne!(a, b);
}

#[test]
fn secret_from_env_is_decoded_and_checked_without_echoing() {
    let hex = "00112233445566778899aabbccddeeff";
    assert_eq!(job_secret(Some(hex)).unwrap(), hex::decode(hex).unwrap());
    let e = job_secret(Some("zz-not-hex-zz")).unwrap_err();
    assert!(
        e.contains("HOROVOD_SECRET_KEY") && !e.contains("zz-not-hex-zz"),
        "{e}"
    );
    let e = job_secret(Some("abcd")).unwrap_err();
    assert!(e.contains("at least 16") && !e.contains("abcd"), "{e}");
}

#[test]
fn rank_env_has_every_variable() {
    let p = Placement {
        rank: 2,
        size: 4,
        local_rank: 2,
        local_size: 4,
        cross_rank: 0,
        cross_size: 1,
    };
    let env = rank_env(
        p,
        "127.0.0.1:5000".parse().unwrap(),
        "ab12",
        9,
        false,
        Some("127.0.0.1"),
    );
    let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("HOROVOD_RANK"), Some("2"));
    assert_eq!(get("HOROVOD_SIZE"), Some("4"));
    assert_eq!(get("HOROVOD_LOCAL_RANK"), Some("2"));
    assert_eq!(get("HOROVOD_LOCAL_SIZE"), Some("4"));
    assert_eq!(get("HOROVOD_CROSS_RANK"), Some("0"));
    assert_eq!(get("HOROVOD_CROSS_SIZE"), Some("1"));
    assert_eq!(get("HOROVOD_HOSTNAME"), Some("127.0.0.1"));
    assert_eq!(get("HORA_STORE_ADDR"), Some("127.0.0.1:5000"));
    assert_eq!(get("HOROVOD_GLOO_RENDEZVOUS_ADDR"), Some("127.0.0.1"));
    assert_eq!(get("HOROVOD_GLOO_RENDEZVOUS_PORT"), Some("5000"));
    assert_eq!(get("HOROVOD_SECRET_KEY"), Some("ab12"));
    assert_eq!(get("HOROVOD_START_TIMEOUT"), Some("9"));
    assert_eq!(get("HOROVOD_GLOO_TIMEOUT_SECONDS"), Some("9"));
    let env = rank_env(p, "127.0.0.1:5000".parse().unwrap(), "ab12", 9, true, None);
    assert!(
        !env.iter()
            .any(|(n, _)| *n == "HOROVOD_GLOO_TIMEOUT_SECONDS")
    );
}

#[test]
fn the_deny_list_is_horovods_plus_the_login_session() {
    for denied in [
        "BASH_FUNC_module%%",
        "OLDPWD",
        "CUDA_VISIBLE_DEVICES",
        "NVIDIA_CUDA_VISIBLE_DEVICES",
        "HOROVOD_SECRET_KEY",
        "_HOROVOD_SECRET_KEY",
        "SSH_CONNECTION",
        "SSH_AUTH_SOCK",
        "HOSTNAME",
        "_",
    ] {
        assert!(!exportable(denied), "{denied}");
    }
    for kept in [
        "PATH",
        "OMP_NUM_THREADS",
        "NCCL_DEBUG",
        "PWD",
        "HOME",
        "HOROVOD_FUSION_THRESHOLD",
        "MY_APP_SETTING",
        "BASH",
        "OLDPWD_NOT",
        "SSH_CONNECTION_X",
    ] {
        assert!(exportable(kept), "{kept}");
    }
}
