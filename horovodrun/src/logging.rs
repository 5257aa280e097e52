//! The launcher's own log lines (and its rendezvous store's warnings) on stderr: warnings, or
//! what the launcher is doing with `--verbose`, unless `RUST_LOG` gives the whole filter.

use std::io::IsTerminal;

use hora::config::LogSettings;

/// Installs the launcher's stderr logger.
pub(crate) fn init(verbose: bool) {
    // The same declaration the ranks read; HOROVOD_LOG_LEVEL is theirs, not the launcher's.
    let (rust_log, problem) = match LogSettings::from_env() {
        Ok(s) => (s.rust_log, None),
        Err(e) => (None, Some(e)),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(directives(
            rust_log, verbose,
        )))
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into a pipe or a log file.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .try_init();
    // A bad HOROVOD_LOG_LEVEL is the ranks' to report; a bad RUST_LOG is ours too.
    if let Some(e) = problem
        && matches!(&e, hora::Error::InvalidConfig { var, .. } if var == "RUST_LOG")
    {
        tracing::warn!("{e}; ignoring it");
    }
}

/// The filter: `RUST_LOG` when set, else every target at warn (`--verbose`: info).
fn directives(rust_log: Option<String>, verbose: bool) -> String {
    rust_log.unwrap_or_else(|| if verbose { "info" } else { "warn" }.to_owned())
}

#[cfg(test)]
mod tests;
