//! Starting ranks on other hosts through ssh.
//!
//! Each remote rank is one `ssh -T host <horovodrun> --hora-remote-exec` process. Nothing about
//! the rank travels on that command line (which `ps` shows on both machines): its environment
//! (with the job secret), working directory and command are written to ssh's stdin as one
//! [`Launch`] blob, which the wrapper on the far side ([`crate::remote`]) reads. ssh's stdin then
//! stays open as a control channel: one byte per signal to forward, and EOF (ssh died, or the
//! launcher did) makes the wrapper stop the rank, so no rank outlives its launcher.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Control bytes on a remote rank's stdin.
pub(crate) const CTL_INT: u8 = b'I';
/// Forward SIGTERM.
pub(crate) const CTL_TERM: u8 = b'T';
/// Forward SIGKILL.
pub(crate) const CTL_KILL: u8 = b'K';
/// The hidden first argument that turns horovodrun into the remote wrapper.
pub(crate) const REMOTE_FLAG: &str = "--hora-remote-exec";
/// ssh's own exit code for connection failures.
pub(crate) const SSH_FAILED: i32 = 255;
/// ssh keepalives: a silent host is declared lost after about interval × count seconds.
const ALIVE_INTERVAL_SECS: u32 = 3;
const ALIVE_COUNT: u32 = 3;

/// How to reach the remote hosts.
#[derive(Debug, Clone, Default)]
pub(crate) struct SshOptions {
    pub(crate) port: Option<u16>,
    pub(crate) identity: Option<PathBuf>,
    pub(crate) config: Option<PathBuf>,
    pub(crate) connect_timeout_secs: u64,
    /// Where the shared connections' sockets live (a private directory), if multiplexing.
    pub(crate) control_dir: Option<PathBuf>,
    /// Hosts whose ranks share one ssh connection (set up by the reachability probe).
    pub(crate) mux_hosts: Vec<String>,
}

/// Hosts with more ranks than this get one ssh connection per rank: sshd's default
/// MaxSessions (10) caps the sessions of one shared connection.
pub(crate) const MAX_MUX_RANKS: u32 = 8;

impl SshOptions {
    /// `ssh` with our options for `host`: never prompts, notices a dead link, no terminal.
    pub(crate) fn command(&self, host: &str) -> Command {
        let mut c = Command::new("ssh");
        if let Some(cfg) = &self.config {
            c.arg("-F").arg(cfg);
        }
        c.args(["-o", "BatchMode=yes", "-T", "-x"])
            .arg("-o")
            .arg(format!(
                "ConnectTimeout={}",
                self.connect_timeout_secs.max(1)
            ))
            .arg("-o")
            .arg(format!("ServerAliveInterval={ALIVE_INTERVAL_SECS}"))
            .arg("-o")
            .arg(format!("ServerAliveCountMax={ALIVE_COUNT}"));
        if let Some(p) = self.port {
            c.arg("-p").arg(p.to_string());
        }
        if let Some(i) = &self.identity {
            c.arg("-i").arg(i);
        }
        if let Some(dir) = self.control_dir.as_ref().filter(|_| self.mux(host)) {
            // The probe's connection becomes the master; ranks' sessions reuse it, saving a
            // key exchange each. It lingers at most 30 s once its last session has gone.
            c.arg("-o")
                .arg(format!("ControlPath={}/%C", dir.display()))
                .args(["-o", "ControlMaster=auto", "-o", "ControlPersist=30"]);
        }
        c.arg("--").arg(host);
        c
    }

    fn mux(&self, host: &str) -> bool {
        self.mux_hosts.iter().any(|h| h == host)
    }

    /// Closes the shared connections (`ssh -O exit`) and removes their directory.
    pub(crate) fn close(&self) {
        let Some(dir) = &self.control_dir else {
            return;
        };
        for h in &self.mux_hosts {
            let c = self.command(h);
            // `-O exit` goes before the destination.
            let args: Vec<OsString> = c.get_args().map(OsStr::to_os_string).collect();
            let mut exit = Command::new("ssh");
            let dest = args.len().saturating_sub(2);
            exit.args(&args[..dest])
                .args(["-O", "exit"])
                .args(&args[dest..]);
            let _ = exit
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Quotes `s` for a POSIX shell (the remote login shell runs ssh's command).
pub(crate) fn shell_quote(s: &OsStr) -> OsString {
    let mut out = b"'".to_vec();
    for &b in s.as_bytes() {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    OsString::from_vec(out)
}

/// Checks that every host answers ssh within `timeout`, in parallel. Returns the hosts that did
/// not, each with ssh's last words.
pub(crate) fn unreachable(
    opts: &SshOptions,
    hosts: &[String],
    timeout: Duration,
) -> Vec<(String, String)> {
    let deadline = Instant::now() + timeout;
    let mut probes = Vec::new();
    let mut bad = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let mut c = opts.command(h);
        c.arg("true").stdin(Stdio::null()).stdout(Stdio::null());
        // A master connection left in the background keeps the probe's stderr open, so with
        // multiplexing ssh's words go to a file rather than a pipe we would wait on.
        let log = opts
            .control_dir
            .as_ref()
            .map(|d| d.join(format!("probe.{i}.log")));
        match log.as_ref().map(std::fs::File::create) {
            Some(Ok(f)) => c.stderr(f),
            _ => c.stderr(Stdio::piped()),
        };
        match c.spawn() {
            Ok(child) => probes.push((h.clone(), child, log)),
            Err(e) => bad.push((h.clone(), format!("cannot run ssh: {e}"))),
        }
    }
    for (host, mut child, log) in probes {
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        } else if let Some(l) = &log {
            err = std::fs::read_to_string(l).unwrap_or_default();
        }
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty() && !l.starts_with("Warning: Permanently added"))
            .unwrap_or("")
            .trim()
            .to_owned();
        match status {
            Some(s) if s.success() => {}
            Some(s) => bad.push((
                host,
                if last.is_empty() {
                    format!("ssh exited with {s}")
                } else {
                    last
                },
            )),
            None => bad.push((host, format!("no answer within {timeout:?}"))),
        }
    }
    bad
}

/// Everything a remote rank needs, sent on ssh's stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Launch {
    /// Working directory on the remote host (the launcher's own).
    pub(crate) cwd: OsString,
    /// Interface to listen on, or empty for "the one that routes to the store".
    pub(crate) nic: String,
    /// The store's address, to find the route back.
    pub(crate) store: String,
    /// Variables set for the rank, on top of the remote login environment.
    pub(crate) env: Vec<(OsString, OsString)>,
    /// The rank's command.
    pub(crate) command: Vec<OsString>,
}

const MAGIC: &[u8] = b"HORA-LAUNCH-1";

impl Launch {
    /// `len:u32 LE` then NUL-separated fields.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut f: Vec<&[u8]> = vec![
            MAGIC,
            self.cwd.as_bytes(),
            self.nic.as_bytes(),
            self.store.as_bytes(),
        ];
        let n_env = self.env.len().to_string();
        let n_cmd = self.command.len().to_string();
        let pairs: Vec<Vec<u8>> = self
            .env
            .iter()
            .map(|(k, v)| [k.as_bytes(), b"=", v.as_bytes()].concat())
            .collect();
        f.push(n_env.as_bytes());
        f.extend(pairs.iter().map(Vec::as_slice));
        f.push(n_cmd.as_bytes());
        f.extend(self.command.iter().map(|a| a.as_bytes()));
        let body = f.join(&0u8);
        let mut out = (body.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(&body);
        out
    }

    /// Reads one blob as [`Launch::encode`] writes it.
    pub(crate) fn read(r: &mut impl Read) -> Result<Self, String> {
        let mut len = [0u8; 4];
        r.read_exact(&mut len)
            .map_err(|e| format!("no launch description on stdin ({e})"))?;
        let len = u32::from_le_bytes(len) as usize;
        if len > 64 << 20 {
            return Err(format!("launch description of {len} bytes is too large"));
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)
            .map_err(|e| format!("truncated launch description ({e})"))?;
        let mut it = body.split(|&b| b == 0);
        let mut next = |what: &str| {
            it.next()
                .map(<[u8]>::to_vec)
                .ok_or_else(|| format!("launch description lacks {what}"))
        };
        if next("magic")? != MAGIC {
            return Err("not a horovodrun launch description (version mismatch?)".into());
        }
        let cwd = OsString::from_vec(next("cwd")?);
        let text = |b: Vec<u8>, what: &str| {
            String::from_utf8(b).map_err(|_| format!("launch description: {what} is not UTF-8"))
        };
        let nic = text(next("nic")?, "nic")?;
        let store = text(next("store")?, "store")?;
        let count = |b: Vec<u8>, what: &str| -> Result<usize, String> {
            text(b, what)?
                .parse()
                .map_err(|_| format!("launch description: bad {what}"))
        };
        let n_env = count(next("env count")?, "env count")?;
        let mut env = Vec::with_capacity(n_env.min(4096));
        for _ in 0..n_env {
            let kv = next("env entry")?;
            let eq = kv
                .iter()
                .position(|&b| b == b'=')
                .ok_or("launch description: env entry without =")?;
            env.push((
                OsString::from_vec(kv[..eq].to_vec()),
                OsString::from_vec(kv[eq + 1..].to_vec()),
            ));
        }
        let n_cmd = count(next("command length")?, "command length")?;
        let mut command = Vec::with_capacity(n_cmd.min(4096));
        for _ in 0..n_cmd {
            command.push(OsString::from_vec(next("command argument")?));
        }
        if command.is_empty() {
            return Err("launch description has an empty command".into());
        }
        Ok(Self {
            cwd,
            nic,
            store,
            env,
            command,
        })
    }
}

#[cfg(test)]
mod tests;
