use std::process::{Command, Stdio};

use super::*;

/// Set only in the child processes `lines_into_a_pipe_have_no_colour_codes` starts.
const CHILD: &str = "HORA_TEST_LOG_CHILD";

/// Runs this test alone in a child whose stderr is a pipe, with `HOROVOD_LOG_LEVEL=level`.
fn child_stderr(level: &str) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "logging::tests::lines_into_a_pipe_have_no_colour_codes",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env("HOROVOD_LOG_LEVEL", level)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

#[test]
fn lines_into_a_pipe_have_no_colour_codes() {
    if std::env::var_os(CHILD).is_some() {
        init_from_env();
        tracing::warn!(peer = 3, "a warning for the pipe");
        return;
    }
    let stderr = child_stderr("info");
    assert!(stderr.contains("a warning for the pipe"), "{stderr}");
    assert!(!stderr.contains("\x1b["), "{stderr:?}");
    // A level hora cannot use is named, and logging goes on at the default.
    let stderr = child_stderr("loud");
    assert!(
        stderr.contains("HOROVOD_LOG_LEVEL") && stderr.contains("loud"),
        "{stderr}"
    );
    assert!(stderr.contains("a warning for the pipe"), "{stderr}");
}
