use std::process::{Command, Stdio};

use super::*;

/// Set only in the child processes `lines_into_a_pipe_have_no_colour_codes` starts.
const CHILD: &str = "HORA_TEST_LOG_CHILD";

/// Runs this test alone in a child whose stderr is a pipe, with `HOROVOD_LOG_LEVEL=level`.
fn child_stderr(level: &str) -> String {
    child_stderr_with(level, "0")
}

/// The same, with `HOROVOD_LOG_HIDE_TIME=hide`.
fn child_stderr_with(level: &str, hide: &str) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "logging::tests::lines_into_a_pipe_have_no_colour_codes",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env("HOROVOD_LOG_LEVEL", level)
        .env("HOROVOD_LOG_HIDE_TIME", hide)
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

#[test]
fn hide_time_drops_the_time_stamp() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    // The default layout starts with an RFC 3339 time (`2026-12-07T23:35:00.123456Z`).
    let stamped = |s: &str| {
        s.lines()
            .find(|l| l.contains("a warning for the pipe"))
            .is_some_and(|l| l.len() > 20 && l.as_bytes()[4] == b'-' && l.as_bytes()[10] == b'T')
    };
    let with = child_stderr_with("info", "0");
    assert!(stamped(&with), "{with}");
    let without = child_stderr_with("info", "1");
    assert!(without.contains("a warning for the pipe"), "{without}");
    assert!(!stamped(&without), "{without}");
}
