use std::process::{Command, Stdio};

use super::*;

/// Set only in the child process `lines_into_a_pipe_have_no_colour_codes` starts.
const CHILD: &str = "HORA_TEST_LOG_CHILD";

#[test]
fn lines_into_a_pipe_have_no_colour_codes() {
    if std::env::var_os(CHILD).is_some() {
        init_from_env();
        tracing::warn!(peer = 3, "a warning for the pipe");
        return;
    }
    // The child is this test binary running only this test, with its stderr a pipe.
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "logging::tests::lines_into_a_pipe_have_no_colour_codes",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env("HOROVOD_LOG_LEVEL", "info")
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("a warning for the pipe"), "{stderr}");
    assert!(!stderr.contains("\x1b["), "{stderr:?}");
}
