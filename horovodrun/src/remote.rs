//! The far side of an ssh launch: `horovodrun --hora-remote-exec`, started by sshd on a remote
//! host. It reads the rank's [`Launch`] description from stdin, finds the address this host
//! should listen on, starts the rank in its own process group and then watches stdin: a control
//! byte forwards a signal, and EOF (the launcher or its ssh went away) stops the rank — SIGTERM,
//! then SIGKILL two seconds later — so no rank is left running on any host. It exits with the
//! rank's exit code (128 + signal for a rank killed by a signal).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitCode, Stdio};
use std::thread;
use std::time::Duration;

use crate::launch_ssh::{CTL_INT, CTL_KILL, CTL_TERM, Launch};
use crate::sys;

/// After the control channel closes, how long the rank has between SIGTERM and SIGKILL.
const EOF_TERM_TO_KILL: Duration = Duration::from_secs(2);

fn fail(msg: &str) -> ExitCode {
    let _ = writeln!(
        std::io::stderr(),
        "horovodrun (remote on {}): {msg}",
        host()
    );
    ExitCode::from(1)
}

fn host() -> String {
    sys::hostname().unwrap_or_else(|| "?".into())
}

/// Runs the wrapper; never returns to clap.
pub(crate) fn main() -> ExitCode {
    let mut stdin = std::io::stdin().lock();
    let launch = match Launch::read(&mut stdin) {
        Ok(l) => l,
        Err(e) => return fail(&e),
    };
    drop(stdin);
    let listen_ip = if launch.nic.is_empty() {
        let store: SocketAddr = match launch.store.parse() {
            Ok(a) => a,
            Err(e) => return fail(&format!("bad store address {:?}: {e}", launch.store)),
        };
        match sys::route_to(store) {
            Ok(ip) => ip,
            Err(e) => return fail(&format!("no route to the launcher's store at {store}: {e}")),
        }
    } else {
        // `--network-interfaces a,b`: the first of them this host has.
        match hora::config::net::first_interface_ip(launch.nic.split(',')) {
            Ok(Some((_, ip))) => ip,
            Ok(None) => {
                return fail(&format!(
                    "none of the network interfaces {} exists here with an address",
                    launch.nic
                ));
            }
            Err(e) => return fail(&format!("cannot list network interfaces: {e}")),
        }
    };

    let mut cmd = Command::new(&launch.command[0]);
    sys::die_with_launcher(&mut cmd);
    cmd.args(&launch.command[1..])
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .env("HOROVOD_HOSTNAME", listen_ip.to_string())
        .process_group(0)
        .stdin(Stdio::null());
    if std::path::Path::new(&launch.cwd).is_dir() {
        cmd.current_dir(&launch.cwd);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = fail(&format!(
                "cannot start `{}`: {e}",
                launch.command[0].to_string_lossy()
            ));
            return ExitCode::from(if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            });
        }
    };
    let pgid = child.id();

    // The control channel: its own thread, since reading stdin blocks.
    let _ = thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut b = [0u8; 1];
            loop {
                match stdin.read(&mut b) {
                    Ok(1) => {
                        let sig = match b[0] {
                            CTL_INT => libc::SIGINT,
                            CTL_TERM => libc::SIGTERM,
                            CTL_KILL => libc::SIGKILL,
                            _ => continue,
                        };
                        let _ = sys::signal_group(pgid, sig);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // EOF or a broken channel: the launcher is gone.
                    _ => break,
                }
            }
            let _ = sys::signal_group(pgid, libc::SIGTERM);
            thread::sleep(EOF_TERM_TO_KILL);
            let _ = sys::signal_group(pgid, libc::SIGKILL);
        });

    let status = child.wait();
    // Whatever the rank left behind in its group goes with it.
    if sys::group_alive(pgid) {
        let _ = sys::signal_group(pgid, libc::SIGKILL);
    }
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
            (None, Some(sig)) => ExitCode::from(u8::try_from(128 + sig).unwrap_or(1)),
            _ => ExitCode::from(1),
        },
        Err(e) => fail(&format!("cannot wait for the rank: {e}")),
    }
}
