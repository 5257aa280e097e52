//! `horovodrun --mpi`: the job is started by `mpirun` (Open MPI or MPICH's Hydra), which places
//! the ranks, starts them on other hosts and forwards signals; this launcher still serves the
//! rendezvous store and makes the job secret.
//!
//! Ranks built with hora's `mpi` feature see that `mpirun` started them and run on the MPI
//! transport, ignoring the store. Ranks built without it (the default wheel) take their rank
//! and size from mpirun's variables and rendezvous over TCP through this launcher's store
//! (`HORA_STORE_ADDR`, `HORA_STORE_SERVE=0`), so `horovodrun --mpi python train.py` works with
//! either build. Every variable the ranks need is put in mpirun's environment and forwarded by
//! name (`-x NAME` / `-genvlist`), so the secret never appears on a command line.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;

use hora::rendezvous::StoreServer;
use hora_mpi::mpirun::{Flavor, Mpirun};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::hosts::Slot;
use crate::sys;

/// What the job needs from the command line.
#[derive(Debug)]
pub(crate) struct MpiPlan {
    pub(crate) command: Vec<OsString>,
    pub(crate) np: u32,
    /// Ranks per host, in placement order; `None` for a job on this host only.
    pub(crate) hosts: Option<Vec<(String, u32)>>,
    pub(crate) listen_ip: IpAddr,
    pub(crate) nic: Option<String>,
    pub(crate) start_timeout_secs: u64,
    pub(crate) extra_env: Vec<(String, String)>,
    /// `--mpi-args`, placed before the command.
    pub(crate) extra_args: Vec<String>,
    /// Options for the ssh that mpirun starts its remote daemons with (see [`ssh_options`]).
    pub(crate) ssh: Vec<String>,
    /// Whether the user gave an ssh flag (`-p`, `-i`, `--ssh-config-file`).
    pub(crate) ssh_given: bool,
}

impl MpiPlan {
    /// Ranks per host from the launcher's slot assignment; `None` when every rank is local.
    pub(crate) fn hosts_of(slots: &[Slot]) -> Option<Vec<(String, u32)>> {
        if slots.iter().all(|s| s.host == "localhost") {
            return None;
        }
        let mut out: Vec<(String, u32)> = Vec::new();
        for s in slots {
            match out.iter_mut().find(|(h, _)| *h == s.host) {
                Some((_, n)) => *n += 1,
                None => out.push((s.host.clone(), 1)),
            }
        }
        Some(out)
    }
}

/// horovodrun's ssh flags as options for mpirun's own ssh, which reaches the other hosts:
/// the user's port, key and config file, plus no password prompt and the start timeout for the
/// connection, so an unreachable host fails the job instead of stalling it.
pub(crate) fn ssh_options(
    port: Option<u16>,
    identity: Option<&Path>,
    config: Option<&Path>,
    connect_timeout_secs: u64,
) -> Result<Vec<String>, String> {
    let mut o = Vec::new();
    // mpirun splits these options at whitespace before it runs ssh.
    let mut path = |flag: &str, what: &str, p: &Path| match p.to_str() {
        Some(s) if !s.is_empty() && !s.contains(char::is_whitespace) => {
            o.push(flag.to_owned());
            o.push(s.to_owned());
            Ok(())
        }
        _ => Err(format!(
            "--mpi: the {what} path {} has whitespace (or is not UTF-8), which mpirun cannot \
             hand to ssh; use a path without it",
            p.display()
        )),
    };
    if let Some(c) = config {
        path("-F", "--ssh-config-file", c)?;
    }
    if let Some(i) = identity {
        path("-i", "--ssh-identity-file", i)?;
    }
    if let Some(p) = port {
        o.push("-p".to_owned());
        o.push(p.to_string());
    }
    o.extend([
        "-o".to_owned(),
        "BatchMode=yes".to_owned(),
        "-o".to_owned(),
        format!("ConnectTimeout={}", connect_timeout_secs.max(1)),
    ]);
    Ok(o)
}

/// Whether `--mpi-args` sets the MCA parameter `key` itself (Open MPI refuses one set twice
/// with different values, so ours then steps aside).
fn user_sets_mca(extra: &[String], key: &str) -> bool {
    extra
        .windows(2)
        .any(|w| matches!(w[0].as_str(), "--mca" | "-mca") && w[1] == key)
}

/// `mpirun` from `HORA_MPIRUN`, else the first `mpirun` on `PATH` (see [`Mpirun::locate`]).
pub(crate) fn find_mpirun() -> Result<PathBuf, String> {
    Mpirun::locate()?.ok_or_else(|| {
        "--mpi: mpirun was not found on PATH; install an MPI (Debian: `apt-get install \
         openmpi-bin`, or `mpich`), set HORA_MPIRUN=/path/to/mpirun, or run without --mpi \
         to use horovodrun's own launcher"
            .to_owned()
    })
}

/// The variables every rank gets through mpirun, beyond the ones MPI sets itself.
pub(crate) fn rank_env(
    plan: &MpiPlan,
    store: SocketAddr,
    secret_hex: &str,
    inherited: impl Iterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: String| {
        env.retain(|(n, _)| n != k);
        env.push((k.to_owned(), v));
    };
    // Horovod forwards the launcher's own HOROVOD_* settings; so do we (and hora's).
    for (k, v) in inherited {
        if k.starts_with("HOROVOD_") || k.starts_with("HORA_") {
            set(&k, v);
        }
    }
    set("HORA_STORE_ADDR", store.to_string());
    set("HORA_STORE_SERVE", "0".to_owned());
    set("HOROVOD_SECRET_KEY", secret_hex.to_owned());
    set("HOROVOD_START_TIMEOUT", plan.start_timeout_secs.to_string());
    if !plan
        .extra_env
        .iter()
        .any(|(k, _)| k == "HOROVOD_GLOO_TIMEOUT_SECONDS")
    {
        set(
            "HOROVOD_GLOO_TIMEOUT_SECONDS",
            plan.start_timeout_secs.to_string(),
        );
    }
    for (k, v) in &plan.extra_env {
        set(k, v.clone());
    }
    env.retain(|(k, _)| k != "HORA_MPIRUN");
    env
}

/// mpirun's arguments (the variables themselves go in its environment, named here only).
pub(crate) fn arguments(
    flavor: Flavor,
    plan: &MpiPlan,
    env_names: &[String],
    root: bool,
    cores: usize,
) -> Vec<OsString> {
    // The user's own binding replaces ours (Open MPI refuses two).
    let user_binds = plan
        .extra_args
        .iter()
        .any(|a| a == "--bind-to" || a == "-bind-to");
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |s: &str| a.push(s.into());
    match flavor {
        Flavor::OpenMpi => {
            push("-np");
            push(&plan.np.to_string());
            match &plan.hosts {
                Some(hosts) => {
                    push("-H");
                    push(&host_list(hosts));
                }
                // A local job may have more ranks than cores (tests, small machines).
                None if plan.np as usize > cores => push("--oversubscribe"),
                None => {}
            }
            if root {
                push("--allow-run-as-root");
            }
            if !user_binds {
                push("--bind-to");
                push("none");
            }
            for f in ["--map-by", "slot", "--tag-output"] {
                push(f);
            }
            if let Some(nic) = &plan.nic {
                for key in ["btl_tcp_if_include", "oob_tcp_if_include"] {
                    if !user_sets_mca(&plan.extra_args, key) {
                        push("--mca");
                        push(key);
                        push(nic);
                    }
                }
            }
            if plan.hosts.is_some()
                && !plan.ssh.is_empty()
                && !user_sets_mca(&plan.extra_args, "plm_rsh_args")
            {
                push("--mca");
                push("plm_rsh_args");
                push(&plan.ssh.join(" "));
            }
            for n in env_names {
                push("-x");
                push(n);
            }
        }
        Flavor::Hydra => {
            push("-np");
            push(&plan.np.to_string());
            if let Some(hosts) = &plan.hosts {
                push("-hosts");
                push(&host_list(hosts));
                // The other hosts' proxies connect back to this name, by default this
                // machine's hostname, which they may not resolve (or resolve to an address
                // they cannot reach); the address that routes to them works.
                if !plan.extra_args.iter().any(|a| a == "-localhost") {
                    push("-localhost");
                    push(&plan.listen_ip.to_string());
                }
            }
            if let Some(nic) = &plan.nic {
                push("-iface");
                push(nic);
            }
            // Its options go in HYDRA_LAUNCHER_EXTRA_ARGS (`mpirun_env`): MPICH's Hydra has
            // no flag for them.
            if hydra_ssh(plan) {
                push("-launcher");
                push("ssh");
            }
            if !user_binds {
                push("-bind-to");
                push("none");
            }
            push("-prepend-rank");
            if !env_names.is_empty() {
                push("-genvlist");
                push(&env_names.join(","));
            }
        }
    }
    a.extend(plan.extra_args.iter().map(OsString::from));
    a.extend(plan.command.iter().cloned());
    a
}

/// Whether Hydra is told to start its proxies with ssh and our ssh options. Only when the user
/// gave ssh flags: forcing ssh would override Hydra's own choice (Slurm's launcher inside an
/// allocation), and the options would then go to `srun`.
fn hydra_ssh(plan: &MpiPlan) -> bool {
    plan.hosts.is_some()
        && plan.ssh_given
        && !plan.extra_args.iter().any(|a| {
            ["-launcher", "--launcher", "-bootstrap", "--bootstrap"]
                .iter()
                .any(|f| a.starts_with(f))
        })
}

/// Variables for mpirun itself (not forwarded to the ranks): Hydra's ssh options, unless the
/// user set them (`user_set`).
pub(crate) fn mpirun_env(flavor: Flavor, plan: &MpiPlan, user_set: bool) -> Vec<(String, String)> {
    if flavor == Flavor::Hydra && hydra_ssh(plan) && !user_set {
        vec![("HYDRA_LAUNCHER_EXTRA_ARGS".to_owned(), plan.ssh.join(" "))]
    } else {
        Vec::new()
    }
}

fn host_list(hosts: &[(String, u32)]) -> String {
    hosts
        .iter()
        .map(|(h, n)| format!("{h}:{n}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs the job through mpirun and returns the exit code for the launcher.
pub(crate) fn run(plan: &MpiPlan, secret: &[u8]) -> i32 {
    let mpirun = match find_mpirun() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("horovodrun: {e}");
            return 1;
        }
    };
    let flavor = match Mpirun::at(mpirun.clone()) {
        Ok(m) => m.flavor,
        Err(e) => {
            eprintln!("horovodrun: --mpi: {e}");
            return 1;
        }
    };
    let store = match StoreServer::start(SocketAddr::from((plan.listen_ip, 0)), secret.to_vec()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("horovodrun: cannot start the rendezvous store: {e}");
            return 1;
        }
    };
    let env = rank_env(plan, store.addr(), &hex::encode(secret), std::env::vars());
    let names: Vec<String> = env.iter().map(|(k, _)| k.clone()).collect();
    let root = sys::is_root();
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let args = arguments(flavor, plan, &names, root, cores);
    tracing::info!(mpirun = %mpirun.display(), ?flavor, args = ?args, "starting the job through mpirun");

    // Catch Ctrl-C and SIGTERM before mpirun exists, to hand them on to it: mpirun stops
    // every rank on every host.
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("horovodrun: cannot install signal handlers: {e}");
            return 1;
        }
    };
    let own = mpirun_env(
        flavor,
        plan,
        std::env::var_os("HYDRA_LAUNCHER_EXTRA_ARGS").is_some(),
    );
    let mut child = match Command::new(&mpirun)
        .args(&args)
        .envs(env)
        .envs(own)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("horovodrun: cannot start {}: {e}", mpirun.display());
            return 1;
        }
    };
    let pid = child.id() as libc::pid_t;
    let handle = signals.handle();
    let forwarder = thread::spawn(move || {
        let mut first = None;
        for s in signals.forever() {
            first.get_or_insert(s);
            sys::signal_child(pid, s);
        }
        first
    });
    let status = child.wait();
    handle.close();
    let signalled = forwarder.join().ok().flatten();
    drop(store);
    match (status, signalled) {
        // Stopped on purpose: the launcher's own convention (as without --mpi), not mpirun's
        // status, which says 1 as if a rank had failed, and which Hydra sometimes gives as 0
        // after passing Ctrl-C on (seen once in the multi-host test).
        (Ok(_), Some(sig)) => {
            let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
            eprintln!("horovodrun: received {name}; mpirun stopped the job");
            128 + sig
        }
        (Ok(s), None) if s.success() => 0,
        (Ok(s), None) => {
            use std::os::unix::process::ExitStatusExt;
            let code = s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0));
            eprintln!(
                "horovodrun: mpirun exited with status {code}; the ranks' output above says which \
                 rank failed"
            );
            code.clamp(1, 255)
        }
        (Err(e), _) => {
            eprintln!("horovodrun: waiting for mpirun failed: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(hosts: Option<Vec<(String, u32)>>, np: u32) -> MpiPlan {
        MpiPlan {
            command: vec!["python".into(), "train.py".into()],
            np,
            hosts,
            listen_ip: IpAddr::from([127, 0, 0, 1]),
            nic: None,
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
        assert_eq!(get("PATH"), None, "mpirun passes PATH itself");
        assert_eq!(get("HORA_MPIRUN"), None);
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
        p.nic = Some("eth0".into());
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
        p.nic = Some("eth0".into());
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
}
