//! Namespace "hosts" on this one machine, for jobs that must cross hosts: each host is a Linux
//! network namespace with its own address on a bridge, its own hostname (a UTS namespace) and
//! its own sshd that accepts root with a key made for the test. The hosts share this machine's
//! filesystem, so the same binaries (and mpirun's `orted`) are at the same paths everywhere.
//!
//! The hostname matters for MPI: Open MPI names its shared-memory segments and session
//! directories after the node's hostname, and two "hosts" sharing `/dev/shm` under one name
//! overwrite each other's segments (ranks crash in the vader BTL).
//!
//! Needs root, iproute2, util-linux (`unshare`, `nsenter`) and openssh; [`skip_reason`] says
//! what is missing. Everything is torn down on drop, also when a test fails.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";

/// Runs `cmd` with `sh -c`, returning its stdout or an error with its stderr.
pub fn sh(cmd: &str) -> Result<String, String> {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{cmd}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why namespace hosts cannot be built here, if they cannot.
pub fn skip_reason() -> Option<String> {
    match sh("id -u") {
        Ok(uid) if uid.trim() == "0" => {}
        _ => return Some("needs root (network namespaces, veth, a bridge and sshd)".into()),
    }
    if !Path::new(SSHD).exists() {
        return Some(format!(
            "{SSHD} not found: install openssh-server (`make deps` does)"
        ));
    }
    for tool in ["ip", "ssh", "ssh-keygen", "unshare", "nsenter"] {
        if sh(&format!("command -v {tool}")).is_err() {
            return Some(format!("`{tool}` not found (`make deps` installs it)"));
        }
    }
    None
}

/// One namespace "host".
#[derive(Debug)]
pub struct Host {
    /// The network namespace's name (`ip netns`), also the host's hostname.
    pub ns: String,
    /// The root-namespace end of its veth pair (setting it down cuts the host off).
    pub veth: String,
    /// Its address on the bridge.
    pub ip: String,
    sshd: Option<Child>,
}

/// A bridge with namespace hosts, each running sshd, and the ssh client files to reach them.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    /// The bridge's address, the root namespace's (the launcher's) address towards the hosts.
    pub bridge_ip: String,
    /// The subnet of the bridge and the hosts, e.g. `10.123.45.0/24`.
    pub subnet: String,
    /// The hosts, in order.
    pub hosts: Vec<Host>,
    bridge: String,
}

impl Cluster {
    /// Builds `n` hosts, or returns why it cannot (the caller skips).
    pub fn new(n: usize) -> Result<Self, String> {
        if let Some(why) = skip_reason() {
            return Err(why);
        }
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("{}{seq}", pid % 100_000);
        // A subnet per (process, cluster), so concurrent test binaries do not collide.
        let net = format!("10.{}.{}", 100 + pid % 100, (seq * 7 + pid / 100) % 250);
        remove_stale();
        let dir = std::env::temp_dir().join(format!("hora-netns-{pid}-{seq}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut c = Self {
            dir,
            bridge_ip: format!("{net}.1"),
            subnet: format!("{net}.0/24"),
            hosts: Vec::new(),
            bridge: format!("hrb{tag}"),
        };
        c.build(n, &tag, &net, pid, seq)?;
        Ok(c)
    }

    fn build(&mut self, n: usize, tag: &str, net: &str, pid: u32, seq: u32) -> Result<(), String> {
        let d = self.dir.display().to_string();
        sh(&format!(
            "ssh-keygen -q -t ed25519 -N '' -f {d}/hostkey && ssh-keygen -q -t ed25519 -N '' -f {d}/id \
             && cp {d}/id.pub {d}/authorized_keys && mkdir -p /run/sshd"
        ))?;
        let b = &self.bridge;
        sh(&format!(
            "ip link add {b} type bridge && ip addr add {}/24 dev {b} && ip link set {b} up",
            self.bridge_ip
        ))?;
        let hostkey =
            std::fs::read_to_string(self.dir.join("hostkey.pub")).map_err(|e| e.to_string())?;
        let mut known = String::new();
        for h in 0..n {
            let ns = format!("hora-{pid}-{seq}-h{h}");
            let veth = format!("hrv{tag}h{h}");
            let ip = format!("{net}.{}", 11 + h);
            sh(&format!(
                "ip netns add {ns} && ip link add {veth} type veth peer name eth0 netns {ns} \
                 && ip link set {veth} master {b} up && ip -n {ns} addr add {ip}/24 dev eth0 \
                 && ip -n {ns} link set eth0 up && ip -n {ns} link set lo up"
            ))?;
            let cfg = self.dir.join(format!("sshd_config.{h}"));
            std::fs::write(
                &cfg,
                format!(
                    "ListenAddress {ip}\nHostKey {d}/hostkey\nAuthorizedKeysFile {d}/authorized_keys\n\
                     PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile {d}/sshd.{h}.pid\n\
                     MaxStartups 100\nMaxSessions 100\nClientAliveInterval 3\nClientAliveCountMax 3\n"
                ),
            )
            .map_err(|e| e.to_string())?;
            let log = std::fs::File::create(self.dir.join(format!("sshd.{h}.log")))
                .map_err(|e| e.to_string())?;
            // ip and unshare exec (no fork), and sh execs sshd: the child's pid is sshd's,
            // in the host's network and UTS namespaces (`enter` relies on it).
            let sshd = Command::new("ip")
                .args(["netns", "exec", &ns, "unshare", "--uts", "sh", "-c"])
                .arg(format!(
                    "hostname {ns} && exec {SSHD} -D -e -f {}",
                    cfg.display()
                ))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot start sshd: {e}"))?;
            known.push_str(&format!("{ip} {hostkey}"));
            self.hosts.push(Host {
                ns,
                veth,
                ip,
                sshd: Some(sshd),
            });
        }
        std::fs::write(self.dir.join("known_hosts"), known).map_err(|e| e.to_string())?;
        std::fs::write(
            self.ssh_config(),
            format!(
                "Host *\n  StrictHostKeyChecking yes\n  UserKnownHostsFile {d}/known_hosts\n  \
                 IdentitiesOnly yes\n  LogLevel ERROR\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        let until = Instant::now() + Duration::from_secs(10);
        for (i, h) in self.hosts.iter().enumerate() {
            let addr: SocketAddr = format!("{}:22", h.ip).parse().expect("host address");
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                if Instant::now() > until {
                    return Err(format!(
                        "sshd on {} did not start: {}",
                        h.ip,
                        std::fs::read_to_string(self.dir.join(format!("sshd.{i}.log")))
                            .unwrap_or_default()
                    ));
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// The ssh client configuration that knows every host's key (`ssh -F`).
    pub fn ssh_config(&self) -> PathBuf {
        self.dir.join("ssh_config")
    }

    /// The private key every host's sshd accepts for root (`ssh -i`).
    pub fn identity(&self) -> PathBuf {
        self.dir.join("id")
    }

    /// `ip:slots,...` for the first `slots.len()` hosts.
    pub fn hosts_arg(&self, slots: &[u32]) -> String {
        slots
            .iter()
            .zip(&self.hosts)
            .map(|(s, h)| format!("{}:{s}", h.ip))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A command run on host `h` itself (its network and UTS namespaces), as a user logged in
    /// there would run it.
    pub fn on_host(&self, h: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let pid = self.hosts[h]
            .sshd
            .as_ref()
            .expect("sshd of a live cluster")
            .id();
        let mut c = Command::new("nsenter");
        c.arg("-t")
            .arg(pid.to_string())
            .args(["-n", "-u", "--"])
            .arg(program);
        c
    }

    /// Pids of processes in host `h`'s namespace other than its sshd.
    pub fn busy_pids(&self, h: usize) -> Vec<String> {
        let host = &self.hosts[h];
        let listener = host.sshd.as_ref().map(|c| c.id().to_string());
        sh(&format!("ip netns pids {}", host.ns))
            .unwrap_or_default()
            .split_whitespace()
            .filter(|p| Some(*p) != listener.as_deref())
            .filter(|p| {
                // Per-connection sshd children may linger a moment after a session ends; only
                // job processes count.
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| !c.trim().starts_with("sshd"))
            })
            .map(str::to_owned)
            .collect()
    }

    /// Waits until no job process is left on any host; panics naming what is left.
    pub fn assert_no_orphans(&self, within: Duration) {
        let until = Instant::now() + within;
        loop {
            let left: Vec<(String, Vec<String>)> = (0..self.hosts.len())
                .map(|h| (self.hosts[h].ip.clone(), self.busy_pids(h)))
                .filter(|(_, p)| !p.is_empty())
                .collect();
            if left.is_empty() {
                return;
            }
            if Instant::now() > until {
                let detail: Vec<String> = left
                    .iter()
                    .flat_map(|(ip, ps)| {
                        ps.iter().map(move |p| {
                            let cmd = std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                                .unwrap_or_default()
                                .replace('\0', " ");
                            format!("{ip}: pid {p} {cmd}")
                        })
                    })
                    .collect();
                panic!("processes left on hosts after {within:?}: {detail:#?}");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for h in &mut self.hosts {
            // Everything in the namespace (sshd, sessions, stray ranks) goes.
            if let Ok(pids) = sh(&format!("ip netns pids {}", h.ns)) {
                for p in pids.split_whitespace() {
                    let _ = sh(&format!("kill -9 {p}"));
                }
            }
            if let Some(mut c) = h.sshd.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = sh(&format!("ip link del {}", h.veth));
            let _ = sh(&format!("ip netns del {}", h.ns));
        }
        let _ = sh(&format!("ip link del {}", self.bridge));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Deletes namespaces (`hora-<pid>-...`) left by a test process that was killed before its
/// drops ran. Only a dead pid's: every test binary using this module names its namespaces
/// after its own pid, so binaries running at once never remove each other's.
fn remove_stale() {
    let Ok(list) = sh("ip netns list") else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("hora-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            if let Ok(pids) = sh(&format!("ip netns pids {name}")) {
                for p in pids.split_whitespace() {
                    let _ = sh(&format!("kill -9 {p}"));
                }
            }
            let _ = sh(&format!("ip netns del {name}"));
        }
    }
}
