//! The launcher's log lines carry no colour codes when stderr is a pipe (or a file).

use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_horovodrun");

#[test]
fn store_warnings_into_a_pipe_have_no_colour_codes() {
    // The rank knocks on the launcher's store without the job secret, so the store warns.
    let knock = "exec 3<>/dev/tcp/${HORA_STORE_ADDR%:*}/${HORA_STORE_ADDR##*:} && \
                 echo not-a-handshake >&3 && sleep 1";
    let out = Command::new(BIN)
        .args(["--verbose", "-np", "1", "bash", "-c", knock])
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("launching ranks"), "{stderr}");
    assert!(stderr.contains("rendezvous store"), "{stderr}");
    assert!(!stderr.contains("\x1b["), "{stderr:?}");
}

#[test]
fn rust_log_is_the_launchers_filter_when_set() {
    let out = Command::new(BIN)
        .args(["--verbose", "-np", "1", "true"])
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("launching ranks"), "{stderr}");
}
