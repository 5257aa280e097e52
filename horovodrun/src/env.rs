//! The job secret and the environment each rank starts with. The secret travels only in the
//! environment: never on a command line (where `ps` shows it) and never in a log line.
//!
//! As in Horovod, every rank gets the launcher's whole environment: local ranks inherit it, a
//! remote rank gets it in its launch description (on ssh's stdin), and under `--mpi` each
//! variable is named to mpirun (`-x NAME`). [`exportable`] is the deny list.

use std::net::SocketAddr;

/// Shortest secret accepted from HOROVOD_SECRET_KEY (the engine's own minimum).
const MIN_SECRET_BYTES: usize = 16;

/// The secret from HOROVOD_SECRET_KEY (hex) if set, else 32 fresh random bytes.
pub(crate) fn job_secret(from_env: Option<&str>) -> Result<Vec<u8>, String> {
    match from_env {
        Some(text) => {
            // The message never echoes the value: a near-miss secret is still a secret.
            let s = hex::decode(text.trim())
                .map_err(|e| format!("HOROVOD_SECRET_KEY is set but is not hex ({e})"))?;
            if s.len() < MIN_SECRET_BYTES {
                return Err(format!(
                    "HOROVOD_SECRET_KEY is set but holds {} bytes; it needs at least {MIN_SECRET_BYTES} ({} hex digits)",
                    s.len(),
                    2 * MIN_SECRET_BYTES
                ));
            }
            Ok(s)
        }
        None => {
            let mut s = vec![0u8; 32];
            getrandom::fill(&mut s).map_err(|e| format!("cannot generate a job secret: {e}"))?;
            Ok(s)
        }
    }
}

/// Variables of the launcher's environment that do not reach other hosts' ranks (nor mpirun's
/// `-x` list): Horovod's exclusions (`BASH_FUNC_*` shell functions, `OLDPWD`, any
/// `*CUDA_VISIBLE_DEVICES*`, which belongs to each host's GPUs, and the secret, which the job
/// sets itself), and the variables that describe this machine's own login session, which the
/// remote sshd sets for its own (`SSH_CONNECTION`, `SSH_CLIENT`, `SSH_TTY`, `SSH_AUTH_SOCK`,
/// `HOSTNAME`, and the shell's `_`).
pub(crate) const DENIED: &[&str] = &[
    "BASH_FUNC_*",
    "OLDPWD",
    "*CUDA_VISIBLE_DEVICES*",
    "HOROVOD_SECRET_KEY",
    "_HOROVOD_SECRET_KEY",
    "SSH_CONNECTION",
    "SSH_CLIENT",
    "SSH_TTY",
    "SSH_AUTH_SOCK",
    "HOSTNAME",
    "_",
];

/// Whether the launcher's variable `name` is forwarded to every rank (see [`DENIED`]).
pub(crate) fn exportable(name: &str) -> bool {
    !DENIED
        .iter()
        .any(|pat| match (pat.strip_prefix('*'), pat.strip_suffix('*')) {
            (Some(mid), Some(_)) => name.contains(mid.trim_end_matches('*')),
            (None, Some(head)) => name.starts_with(head),
            _ => name == *pat,
        })
}

/// The launcher's environment that every rank gets, minus [`DENIED`].
pub(crate) fn forwarded() -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    std::env::vars_os()
        .filter(|(k, _)| exportable(&k.to_string_lossy()))
        .collect()
}

/// Where one rank sits in the job.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placement {
    pub(crate) rank: u32,
    pub(crate) size: u32,
    pub(crate) local_rank: u32,
    pub(crate) local_size: u32,
    pub(crate) cross_rank: u32,
    pub(crate) cross_size: u32,
}

/// The variables the launcher adds to (or overrides in) its own environment for one rank.
pub(crate) fn rank_env(
    p: Placement,
    store: SocketAddr,
    secret_hex: &str,
    start_timeout_secs: u64,
    gloo_timeout_set: bool,
    listen_ip: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut v = vec![
        ("HOROVOD_RANK", p.rank.to_string()),
        ("HOROVOD_SIZE", p.size.to_string()),
        ("HOROVOD_LOCAL_RANK", p.local_rank.to_string()),
        ("HOROVOD_LOCAL_SIZE", p.local_size.to_string()),
        ("HOROVOD_CROSS_RANK", p.cross_rank.to_string()),
        ("HOROVOD_CROSS_SIZE", p.cross_size.to_string()),
        ("HORA_STORE_ADDR", store.to_string()),
        // Horovod's names for the same store (as its Gloo launcher sets them): scripts that
        // read them find it, and a stale pair in the launcher's environment cannot disagree.
        ("HOROVOD_GLOO_RENDEZVOUS_ADDR", store.ip().to_string()),
        ("HOROVOD_GLOO_RENDEZVOUS_PORT", store.port().to_string()),
        ("HOROVOD_SECRET_KEY", secret_hex.to_owned()),
        ("HOROVOD_START_TIMEOUT", start_timeout_secs.to_string()),
    ];
    // The address the rank listens on; a remote rank's wrapper finds its own on its host.
    if let Some(ip) = listen_ip {
        v.push(("HOROVOD_HOSTNAME", ip.to_owned()));
    }
    // The engine bounds its rendezvous by this; --start-timeout sets it unless the user did.
    if !gloo_timeout_set {
        v.push((
            "HOROVOD_GLOO_TIMEOUT_SECONDS",
            start_timeout_secs.to_string(),
        ));
    }
    v
}

#[cfg(test)]
mod tests;
