//! Log set-up from [`LogSettings`]: `RUST_LOG` when set, else `HOROVOD_LOG_LEVEL` (trace,
//! debug, info, warning, error, fatal) for hora's crates; `HOROVOD_LOG_HIDE_TIME=1` drops the
//! time stamp.

use std::io::IsTerminal;

use crate::config::LogSettings;

/// Installs a stderr logger once; a host application's own subscriber wins.
pub(crate) fn init_from_env() {
    let (settings, problem) = match LogSettings::from_env() {
        Ok(s) => (s, None),
        Err(e) => (LogSettings::default(), Some(e)),
    };
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(settings.directives()))
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into a pipe or a log file.
        .with_ansi(std::io::stderr().is_terminal());
    // The two builders differ in type, hence the two calls.
    let _ = if settings.hide_time {
        fmt.without_time().try_init()
    } else {
        fmt.try_init()
    };
    // A bad value must not stop the job, but it must not pass unnoticed either (a host
    // application's own subscriber, if it won, gets the warning).
    if let Some(e) = problem {
        tracing::warn!("{e}; logging at the default level (warning)");
    }
}

#[cfg(test)]
mod tests;
