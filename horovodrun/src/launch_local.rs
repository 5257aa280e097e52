//! Runs a job's ranks (on this machine, or through ssh on others) and watches them.
//!
//! How it works: every rank is its own process group (so a Ctrl-C typed at the terminal reaches
//! only the launcher, which forwards it, and so a rank's own children are stopped with it). A
//! waiter thread per rank and a signal thread feed one channel of [`Event`]s; the main thread
//! is a small state machine over that channel:
//!
//! ```text
//! Running ──rank fails──▶ Settling ──50 ms──▶ Grace (others may exit by themselves and print why)
//!    │                    (collect what       │ grace period (from the first failure) over:
//!    │                     else failed)       ▼ SIGTERM every rank
//!    └──SIGINT/SIGTERM──▶ Terminating ──2 s (5 s after a signal)──▶ SIGKILL ──▶ Killed
//! ```
//! A healthy job never meets a timeout: the launcher waits for as long as the ranks run.
//!
//! Why settle: when a rank dies its peers fail within milliseconds, and the launcher may hear
//! of a peer before the rank that died. Every failure of the first 50 ms (and of any rank
//! found already dead by then, see [`sys::child_ended`]) is judged together by
//! [`crate::failure`], which names the most likely root cause first, and the others after it.
//! No signal has been sent yet at that point, so every signal death it sees is not ours.
//!
//! A remote rank is an ssh process here (in its own group too); signals reach the rank as
//! control bytes on that ssh's stdin (see [`crate::launch_ssh`]), and SIGKILL kills the ssh,
//! whose end makes the remote wrapper stop the rank.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ChildStdin;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hora::rendezvous::StoreServer;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::env::{Placement, rank_env};
use crate::failure::{self, Failure, Outcome};
use crate::hosts::Slot;
use crate::launch_ssh::{self, CTL_INT, CTL_KILL, CTL_TERM, Launch, SshOptions};
use crate::output::{self, Stream};
use crate::sys;

/// After SIGTERM, how long ranks have before SIGKILL.
const TERM_TO_KILL: Duration = Duration::from_secs(2);
/// After forwarding the user's SIGINT/SIGTERM, how long ranks have before SIGKILL.
const SIGNAL_TO_KILL: Duration = Duration::from_secs(5);
/// After SIGKILL, how long we wait for the kernel to reap before giving up on a rank.
const KILL_TO_GIVE_UP: Duration = Duration::from_secs(10);
/// How long rank output may keep draining after the ranks are gone.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);
/// After the first failure, how long other failures are collected before the launcher names
/// the most likely root cause (at most the grace period). Peers of a killed rank fail within
/// milliseconds of it; this only delays the message, not the stopping of the others.
const SETTLE: Duration = Duration::from_millis(50);
/// After the settle time, how long the launcher still waits to hear from ranks already found
/// ended (their waiter threads report within microseconds unless the machine is swamped).
const SETTLE_STRAGGLERS: Duration = Duration::from_millis(500);
/// How often the launcher looks again for such ranks.
const SETTLE_POLL: Duration = Duration::from_millis(5);

/// What to launch.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) command: Vec<OsString>,
    pub(crate) np: u32,
    pub(crate) start_timeout_secs: u64,
    pub(crate) grace: Duration,
    /// Where each rank runs, in rank order (`localhost` = here).
    pub(crate) slots: Vec<Slot>,
    /// The address the store (and local ranks of a multi-host job) listen on.
    pub(crate) listen_ip: IpAddr,
    /// Interfaces remote ranks listen on, comma-separated: the first each host has (None: the
    /// one that routes back to the store).
    pub(crate) nic: Option<String>,
    /// How to reach remote hosts.
    pub(crate) ssh: SshOptions,
    /// Variables every rank gets (`-x` and tuning flags).
    pub(crate) extra_env: Vec<(String, String)>,
    /// Also write each rank's output under this directory.
    pub(crate) output_dir: Option<PathBuf>,
    /// Start each output line with the local time (`--prefix-output-with-timestamp`).
    pub(crate) timestamps: bool,
}

#[derive(Debug)]
enum Event {
    Exited {
        rank: u32,
        status: io::Result<ExitStatus>,
    },
    Signal(i32),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Running,
    /// A rank failed at `first`; others' failures are collected until `until`.
    Settling {
        first: Instant,
        until: Instant,
    },
    Grace(Instant),
    Terminating(Instant),
    Killed(Instant),
}

#[derive(Debug)]
struct RankProc {
    pid: u32,
    running: bool,
    /// `localhost`, or the remote host this rank's ssh goes to.
    host: String,
    /// A remote rank's control channel (ssh's stdin).
    control: Option<ChildStdin>,
}

/// Launches the plan's ranks, waits for them, and returns the launcher's exit code.
pub(crate) fn run(plan: &Plan, secret: &[u8]) -> i32 {
    let (tx, rx) = mpsc::channel();
    // Catch signals before any rank exists: with the default action a Ctrl-C would kill only the
    // launcher and leave the ranks (in their own groups) running as orphans.
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("horovodrun: cannot install signal handlers: {e}");
            return 1;
        }
    };
    let signal_handle = signals.handle();
    let sig_tx = tx.clone();
    let _ = thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for s in signals.forever() {
                if sig_tx.send(Event::Signal(s)).is_err() {
                    break;
                }
            }
        });

    let store = match StoreServer::start(SocketAddr::from((plan.listen_ip, 0)), secret.to_vec()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("horovodrun: cannot start the rendezvous store: {e}");
            return 1;
        }
    };
    tracing::info!(addr = %store.addr(), "rendezvous store listening");

    let mut job = Job::new(plan.grace);
    let secret_hex = hex::encode(secret);
    let gloo_timeout_set = std::env::var_os("HOROVOD_GLOO_TIMEOUT_SECONDS").is_some()
        || plan
            .extra_env
            .iter()
            .any(|(k, _)| k == "HOROVOD_GLOO_TIMEOUT_SECONDS");
    let listen = plan.listen_ip.to_string();
    for (rank, slot) in (0..plan.np).zip(&plan.slots) {
        let placement = Placement {
            rank,
            size: plan.np,
            local_rank: slot.local_rank,
            local_size: slot.local_size,
            cross_rank: slot.cross_rank,
            cross_size: slot.cross_size,
        };
        let remote = slot.host != "localhost";
        let env = rank_env(
            placement,
            store.addr(),
            &secret_hex,
            plan.start_timeout_secs,
            gloo_timeout_set,
            (!remote).then_some(listen.as_str()),
        );
        let spawned = if remote {
            job.spawn_remote(rank, plan, &slot.host, env, store.addr(), &tx)
        } else {
            job.spawn_rank(rank, plan, env, &tx)
        };
        if let Err(e) = spawned {
            let prog = plan.command[0].to_string_lossy();
            let on = if remote {
                format!(" on host {}", slot.host)
            } else {
                String::new()
            };
            eprintln!("horovodrun: cannot start rank {rank}{on} (`{prog}`): {e}");
            job.exit = Some(if e.kind() == io::ErrorKind::NotFound {
                127
            } else {
                126
            });
            job.terminate_now();
            break;
        }
    }

    while job.ranks.iter().any(|r| r.running) {
        let event = match job.phase.deadline() {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
        };
        match event {
            Ok(Event::Exited { rank, status }) => job.on_exit(rank, status),
            Ok(Event::Signal(sig)) => job.on_signal(sig),
            Err(RecvTimeoutError::Timeout) => {
                if !job.on_deadline() {
                    break;
                }
            }
            // We hold a sender, so this cannot happen; leave rather than spin if it does.
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }

    // The loop may end without a deadline having closed the window (say, on a lost channel).
    job.give_verdict();
    job.kill_leftovers();
    store.shutdown();
    job.drain_output();
    signal_handle.close();
    job.exit.unwrap_or(0)
}

#[derive(Debug)]
struct Job {
    ranks: Vec<RankProc>,
    pumps: Vec<JoinHandle<()>>,
    phase: Phase,
    /// The launcher's exit code once something went wrong.
    exit: Option<i32>,
    /// How long the other ranks get after the first failure, before SIGTERM.
    grace: Duration,
    /// Failures heard of while settling, not yet judged.
    failures: Vec<Failure>,
}

impl Phase {
    fn deadline(self) -> Option<Instant> {
        match self {
            Self::Running => None,
            Self::Settling { until, .. } => Some(until),
            Self::Grace(d) | Self::Terminating(d) | Self::Killed(d) => Some(d),
        }
    }
}

impl Job {
    fn new(grace: Duration) -> Self {
        Self {
            ranks: Vec::new(),
            pumps: Vec::new(),
            phase: Phase::Running,
            exit: None,
            grace,
            failures: Vec::new(),
        }
    }

    fn spawn_rank(
        &mut self,
        rank: u32,
        plan: &Plan,
        env: Vec<(&'static str, String)>,
        tx: &mpsc::Sender<Event>,
    ) -> io::Result<()> {
        let command = &plan.command;
        let mut cmd = Command::new(&command[0]);
        sys::die_with_launcher(&mut cmd);
        let child = cmd
            .args(&command[1..])
            .envs(plan.extra_env.iter().map(|(k, v)| (k, v)))
            .envs(env)
            // Its own group, led by the rank: see the module docs.
            .process_group(0)
            // A rank outside the terminal's foreground group would be stopped (SIGTTIN) if it
            // read the terminal, so ranks get no stdin.
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        tracing::info!(rank, pid = child.id(), "started rank");
        self.watch(rank, child, "localhost", None, plan, tx)
    }

    /// Starts one rank on `host` through ssh; its description goes on ssh's stdin.
    fn spawn_remote(
        &mut self,
        rank: u32,
        plan: &Plan,
        host: &str,
        env: Vec<(&'static str, String)>,
        store: SocketAddr,
        tx: &mpsc::Sender<Event>,
    ) -> io::Result<()> {
        let exe = std::env::current_exe()?;
        let mut cmd = plan.ssh.command(host);
        let mut remote_cmd = launch_ssh::shell_quote(exe.as_os_str());
        remote_cmd.push(" ");
        remote_cmd.push(launch_ssh::REMOTE_FLAG);
        cmd.arg(remote_cmd);
        sys::die_with_launcher(&mut cmd);
        // The launcher's whole environment, as Horovod gives it (minus `env::DENIED`).
        let mut vars = crate::env::forwarded();
        vars.extend(
            plan.extra_env
                .iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        );
        vars.extend(
            env.into_iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        );
        let launch = Launch {
            cwd: std::env::current_dir()
                .map(|d| d.into_os_string())
                .unwrap_or_default(),
            nic: plan.nic.clone().unwrap_or_default(),
            store: store.to_string(),
            env: vars,
            command: plan.command.clone(),
        };
        let mut child = cmd
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut control = child.stdin.take();
        if let Some(c) = control.as_mut() {
            // The secret goes down the encrypted channel, never onto a command line.
            if let Err(e) = c.write_all(&launch.encode()).and_then(|()| c.flush()) {
                tracing::warn!(rank, host, error = %e, "cannot send the launch description");
            }
        }
        tracing::info!(
            rank,
            host,
            pid = child.id(),
            "started remote rank through ssh"
        );
        self.watch(rank, child, host, control, plan, tx)
    }

    /// Pumps a started rank's output and waits for it on a thread of its own.
    fn watch(
        &mut self,
        rank: u32,
        mut child: std::process::Child,
        host: &str,
        control: Option<ChildStdin>,
        plan: &Plan,
        tx: &mpsc::Sender<Event>,
    ) -> io::Result<()> {
        let pid = child.id();
        self.ranks.push(RankProc {
            pid,
            running: true,
            host: host.to_owned(),
            control,
        });
        let files = match &plan.output_dir {
            None => (None, None),
            Some(dir) => {
                let d = dir.join(output::rank_dir(rank, plan.np));
                std::fs::create_dir_all(&d)?;
                (
                    Some(File::create(d.join("stdout"))?),
                    Some(File::create(d.join("stderr"))?),
                )
            }
        };
        if let Some(out) = child.stdout.take() {
            self.pumps.push(output::spawn(
                out,
                rank,
                Stream::Stdout,
                files.0,
                plan.timestamps,
            )?);
        }
        if let Some(err) = child.stderr.take() {
            self.pumps.push(output::spawn(
                err,
                rank,
                Stream::Stderr,
                files.1,
                plan.timestamps,
            )?);
        }
        let tx = tx.clone();
        let waiter = thread::Builder::new()
            .name(format!("wait-rank{rank}"))
            .spawn(move || {
                let status = child.wait();
                let _ = tx.send(Event::Exited { rank, status });
            });
        if let Err(e) = waiter {
            // Without a waiter we could never see this rank exit; kill it rather than hang.
            let _ = sys::signal_group(pid, libc::SIGKILL);
            return Err(e);
        }
        Ok(())
    }

    fn running(&self) -> usize {
        self.ranks.iter().filter(|r| r.running).count()
    }

    fn signal_running(&mut self, sig: i32) {
        for r in self.ranks.iter_mut().filter(|r| r.running) {
            if let Some(c) = r.control.as_mut() {
                let byte = match sig {
                    libc::SIGINT => CTL_INT,
                    libc::SIGKILL => CTL_KILL,
                    _ => CTL_TERM,
                };
                if c.write_all(&[byte]).and_then(|()| c.flush()).is_ok() && sig != libc::SIGKILL {
                    continue;
                }
                // SIGKILL (or a dead channel): end the ssh itself; the remote wrapper sees EOF
                // and stops the rank.
            }
            if let Err(e) = sys::signal_group(r.pid, sig) {
                tracing::warn!(pid = r.pid, error = %e, "cannot signal a rank");
            }
        }
    }

    /// How a rank is named in the launcher's messages.
    fn who(&self, rank: u32) -> String {
        let Some(r) = self.ranks.get(rank as usize) else {
            return format!("rank {rank}");
        };
        if r.host == "localhost" {
            format!("rank {rank} (pid {})", r.pid)
        } else {
            format!("rank {rank} on host {} (ssh pid {})", r.host, r.pid)
        }
    }

    fn on_exit(&mut self, rank: u32, status: io::Result<ExitStatus>) {
        let now = Instant::now();
        let Some(r) = self.ranks.get_mut(rank as usize) else {
            return;
        };
        r.running = false;
        // Closing the control channel of a finished rank lets its ssh end.
        r.control = None;
        let pid = r.pid;
        let remote = (r.host != "localhost").then(|| r.host.clone());
        let outcome = match status {
            Ok(s) => Outcome::from_status(s, remote.as_deref()),
            Err(e) => Some(Outcome::Unknown(format!("could not be waited for ({e})"))),
        };
        let Some(outcome) = outcome else {
            tracing::info!(rank, pid, "rank exited successfully");
            return;
        };
        tracing::info!(rank, pid, "rank {}", outcome.describe());
        let failure = Failure {
            rank,
            who: self.who(rank),
            outcome,
            at: now,
        };
        match self.phase {
            Phase::Running if self.exit.is_none() => {
                self.phase = Phase::Settling {
                    first: now,
                    until: now + SETTLE.min(self.grace),
                };
                self.failures.push(failure);
            }
            Phase::Settling { .. } => self.failures.push(failure),
            _ => {
                // Judged already, or the job is being stopped: later failures are usually the
                // echo of the first, but a lost host is worth naming: it is often a root cause.
                if matches!(failure.outcome, Outcome::LostHost { .. })
                    && self.phase != Phase::Running
                {
                    eprintln!("horovodrun: {} {}", failure.who, failure.outcome.describe());
                }
                return;
            }
        }
        if self.running() == 0 {
            // Nobody left who could still fail: no reason to wait.
            self.give_verdict();
        }
    }

    /// Ends the settle window: names the most likely root cause of the failures collected
    /// (and the others after it), sets the exit code, and starts the grace period, counted
    /// from the first failure. Does nothing outside the window.
    fn give_verdict(&mut self) {
        let Phase::Settling { first, .. } = self.phase else {
            return;
        };
        let running = self.running();
        match failure::verdict(std::mem::take(&mut self.failures), running) {
            Some(v) => {
                for line in &v.lines {
                    eprintln!("{line}");
                }
                tracing::info!(rank = v.culprit, "named as the most likely root cause");
                self.exit = Some(v.exit_code);
            }
            None => self.exit = Some(1),
        }
        self.phase = Phase::Grace(first + self.grace);
    }

    fn on_signal(&mut self, sig: i32) {
        // Name what failed before the user's signal makes every rank fail.
        self.give_verdict();
        let name = sys::signal_name(sig);
        if matches!(self.phase, Phase::Terminating(_) | Phase::Killed(_)) && self.exit.is_some() {
            // A second Ctrl-C: the user does not want to wait.
            eprintln!("horovodrun: received {name} again; killing all ranks");
            self.signal_running(libc::SIGKILL);
            self.phase = Phase::Killed(Instant::now() + KILL_TO_GIVE_UP);
            return;
        }
        let left = self.running();
        eprintln!(
            "horovodrun: received {name}; stopping {left} rank{}",
            if left == 1 { "" } else { "s" }
        );
        self.exit = Some(128 + sig);
        self.signal_running(sig);
        self.phase = Phase::Terminating(Instant::now() + SIGNAL_TO_KILL);
    }

    /// Moves to the next, harsher phase; false when there is nothing left to try.
    fn on_deadline(&mut self) -> bool {
        match self.phase {
            Phase::Running => {}
            Phase::Settling { first, .. } => {
                // A rank found ended whose news has not arrived yet may be the root cause.
                let stragglers = self
                    .ranks
                    .iter()
                    .any(|r| r.running && sys::child_ended(r.pid));
                let now = Instant::now();
                if stragglers && now < first + SETTLE_STRAGGLERS {
                    self.phase = Phase::Settling {
                        first,
                        until: now + SETTLE_POLL,
                    };
                } else {
                    self.give_verdict();
                }
            }
            Phase::Grace(_) => {
                tracing::info!("grace period over: sending SIGTERM to the remaining ranks");
                self.signal_running(libc::SIGTERM);
                self.phase = Phase::Terminating(Instant::now() + TERM_TO_KILL);
            }
            Phase::Terminating(_) => {
                tracing::info!("sending SIGKILL to the remaining ranks");
                self.signal_running(libc::SIGKILL);
                self.phase = Phase::Killed(Instant::now() + KILL_TO_GIVE_UP);
            }
            Phase::Killed(_) => {
                for r in self.ranks.iter().filter(|r| r.running) {
                    eprintln!(
                        "horovodrun: pid {} survived SIGKILL; giving up on it",
                        r.pid
                    );
                }
                return false;
            }
        }
        true
    }

    fn terminate_now(&mut self) {
        self.signal_running(libc::SIGTERM);
        self.phase = Phase::Terminating(Instant::now() + TERM_TO_KILL);
    }

    /// Kills whatever the ranks left behind in their groups (say, a background child that
    /// ignored the rank's signal), so no process of the job outlives the launcher.
    fn kill_leftovers(&self) {
        for r in &self.ranks {
            if sys::group_alive(r.pid) {
                tracing::info!(
                    pgid = r.pid,
                    "killing leftover processes of a finished rank"
                );
                let _ = sys::signal_group(r.pid, libc::SIGKILL);
            }
        }
    }

    /// Lets the output threads print what the ranks wrote last, without waiting forever on a
    /// pipe some escaped process still holds.
    fn drain_output(&mut self) {
        let until = Instant::now() + OUTPUT_DRAIN;
        while Instant::now() < until && self.pumps.iter().any(|p| !p.is_finished()) {
            thread::sleep(Duration::from_millis(5));
        }
        for p in self.pumps.drain(..).filter(|p| p.is_finished()) {
            let _ = p.join();
        }
    }
}

#[cfg(test)]
mod tests;
