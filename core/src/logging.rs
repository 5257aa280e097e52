//! Log set-up from `HOROVOD_LOG_LEVEL` (trace, debug, info, warning, error, fatal).

/// Installs a stderr logger once; a host application's own subscriber wins.
pub(crate) fn init_from_env() {
    let level = match std::env::var("HOROVOD_LOG_LEVEL")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "error" | "fatal" => "error",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::new(format!(
        "hora={level},hora_tcp={level},hora_transport={level}"
    ));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
