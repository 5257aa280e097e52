//! Which failed rank to blame: the launcher's verdict when a job goes wrong.
//!
//! How it works: when one rank dies, its peers fail too, often within milliseconds (their
//! connections to it break), and the launcher may hear of a peer's exit before the dead rank's.
//! So the launcher collects every failure of a short window (see `launch_local`) and this
//! module orders them, most likely root cause first: a rank the launcher did not choose to
//! stop but that ended abruptly (killed by a signal, or its host lost) beats a rank that exited
//! with an error of its own (usually the echo); among equals, the one heard of first. It is
//! pure: no processes, no clock (the times are given).
//!
//! It does not decide *when* the window closes, nor which signals the launcher sent: the
//! caller only passes failures seen before it signalled anyone.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Instant;

use crate::launch_ssh::SSH_FAILED;
use crate::sys;

/// More than this many further failures are summed up in one line rather than listed.
const MAX_ALSO: usize = 8;

/// How a rank ended, as far as blame goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Killed by a signal (the caller guarantees not one the launcher sent).
    Signaled {
        /// The signal number.
        signal: i32,
        /// The kernel wrote a core file.
        core_dumped: bool,
    },
    /// A remote rank whose ssh session ended with ssh's own failure status.
    LostHost {
        /// The host the ssh went to.
        host: String,
    },
    /// Exited with this non-zero code.
    Exited(i32),
    /// The launcher could not read its status (the text says why).
    Unknown(String),
}

/// One failed rank: who, how, and when the launcher heard of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// The rank.
    pub(crate) rank: u32,
    /// How it is named in messages, e.g. `rank 2 (pid 4242)`.
    pub(crate) who: String,
    /// How it ended.
    pub(crate) outcome: Outcome,
    /// When the launcher learnt of it.
    pub(crate) at: Instant,
}

/// What the launcher prints and returns for a set of failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// The rank named first: the most likely root cause.
    pub(crate) culprit: u32,
    /// The launcher's exit code (see [`Outcome::exit_code`]).
    pub(crate) exit_code: i32,
    /// Lines for stderr, without a trailing newline.
    pub(crate) lines: Vec<String>,
}

impl Outcome {
    /// The outcome of a finished rank, or None if it succeeded. A remote rank's exit code
    /// [`SSH_FAILED`] is ssh's, not the rank's: its host was lost.
    pub(crate) fn from_status(status: ExitStatus, remote_host: Option<&str>) -> Option<Self> {
        if status.success() {
            return None;
        }
        if let Some(code) = status.code() {
            return Some(match remote_host {
                Some(host) if code == SSH_FAILED => Self::LostHost {
                    host: host.to_owned(),
                },
                _ => Self::Exited(code),
            });
        }
        if let Some(signal) = status.signal() {
            return Some(Self::Signaled {
                signal,
                core_dumped: status.core_dumped(),
            });
        }
        Some(Self::Unknown(format!("ended with status {status}")))
    }

    /// `exited with code 3`, `was killed by signal 9 (SIGKILL)`, ...: what follows the rank's
    /// name in a message.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Signaled {
                signal,
                core_dumped,
            } => format!(
                "was killed by signal {signal} ({}{})",
                sys::signal_name(*signal),
                if *core_dumped { ", core dumped" } else { "" }
            ),
            Self::LostHost { host } => format!(
                "lost its ssh connection to host {host} (ssh exited with {SSH_FAILED}: host down, network cut or ssh refused)"
            ),
            Self::Exited(code) => format!("exited with code {code}"),
            Self::Unknown(why) => why.clone(),
        }
    }

    /// The launcher's exit code when this is the failure it names first: the rank's own code
    /// if it exited, otherwise 1 (a signal number is not passed on as 128 + N, which would
    /// look as if the launcher itself had been killed).
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            Self::Exited(code) => *code,
            _ => 1,
        }
    }

    /// Lower is more likely the root cause. A rank that chose to exit with an error usually
    /// did so because a peer died; one killed by a signal or cut off with its host did not
    /// choose at all.
    fn suspicion_class(&self) -> u8 {
        match self {
            Self::Signaled { .. } | Self::LostHost { .. } => 0,
            Self::Exited(_) => 1,
            Self::Unknown(_) => 2,
        }
    }
}

/// Sorts `failures` most likely root cause first: by [`Outcome`] class (abrupt deaths, then
/// error exits, then unknown statuses), then by when the launcher heard of them, then by rank
/// (so the order never depends on the input's).
pub(crate) fn most_likely_first(failures: &mut [Failure]) {
    failures.sort_by(|a, b| {
        (a.outcome.suspicion_class(), a.at, a.rank).cmp(&(
            b.outcome.suspicion_class(),
            b.at,
            b.rank,
        ))
    });
}

/// The verdict on the failures of one window: the culprit's line (saying how many ranks are
/// still `running` and are being stopped), one `also:` line per other failure, most likely
/// first (at most [`MAX_ALSO`], then a count), and the exit code. None if there was no failure.
pub(crate) fn verdict(mut failures: Vec<Failure>, running: usize) -> Option<Verdict> {
    most_likely_first(&mut failures);
    let (first, others) = failures.split_first()?;
    let mut head = format!("horovodrun: {} {}", first.who, first.outcome.describe());
    if running > 0 {
        head.push_str(&format!(
            "; stopping the other {running} rank{}",
            plural(running)
        ));
    }
    let mut lines = vec![head];
    lines.extend(
        others
            .iter()
            .take(MAX_ALSO)
            .map(|f| format!("horovodrun: also: {} {}", f.who, f.outcome.describe())),
    );
    if others.len() > MAX_ALSO {
        let more = others.len() - MAX_ALSO;
        lines.push(format!(
            "horovodrun: also: {more} more rank{} failed at the same time (--verbose lists them)",
            plural(more)
        ));
    }
    Some(Verdict {
        culprit: first.rank,
        exit_code: first.outcome.exit_code(),
        lines,
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests;
