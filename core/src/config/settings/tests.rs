use std::path::{Path, PathBuf};

use super::*;

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

const BEGIN: &str = "<!-- The table is generated from core/src/config/settings.rs. -->\n";
const END: &str = "<!-- End of the generated table. -->";
const BLESS: &str = "HORA_BLESS=1 cargo test -p hora --lib config::settings";

/// docs/configuration.md's table is rendered from the declaration; regenerate it with
/// `HORA_BLESS=1 cargo test -p hora --lib config::settings`.
#[test]
fn docs_table_matches_the_declaration() {
    let path = root().join("docs/configuration.md");
    let text = std::fs::read_to_string(&path).expect("docs/configuration.md");
    let start = text.find(BEGIN).expect("the table's opening marker") + BEGIN.len();
    let stop = start + text[start..].find(END).expect("the table's closing marker");
    let table = render_table();
    if std::env::var_os("HORA_BLESS").is_some() {
        let fresh = format!("{}{table}{}", &text[..start], &text[stop..]);
        std::fs::write(&path, fresh).unwrap();
        return;
    }
    assert!(
        text[start..stop] == table,
        "docs/configuration.md is out of date with core/src/config/settings.rs; run {BLESS}"
    );
}

/// Every `HORA_*` / `HOROVOD_*` name in the sources of core, the transports and the launcher
/// is declared, so none is read (or set for the ranks) without the docs listing it.
#[test]
fn every_variable_named_in_core_transports_and_the_launcher_is_declared() {
    let declared: Vec<&str> = [TOPOLOGY, Tuning::SETTINGS, LogSettings::SETTINGS, ELSEWHERE]
        .into_iter()
        .flatten()
        .map(|s| s.var)
        .chain(REFUSED.iter().map(|r| r.var))
        .collect();
    // Set by tests to inject faults or report more; never by users.
    let test_only = [
        "HORA_SHM_KILL9_RANK",
        "HORA_SHM_KILL9_JOB",
        "HORA_BLESS",
        "HORA_TEST_LOG_CHILD",
    ];
    let mut missing = Vec::new();
    for dir in ["core/src", "transports", "horovodrun/src"] {
        for file in rust_files(&root().join(dir)) {
            let text = std::fs::read_to_string(&file).unwrap();
            for name in quoted_names(&text) {
                if !declared.contains(&name.as_str()) && !test_only.contains(&name.as_str()) {
                    missing.push(format!("{name} ({})", file.display()));
                }
            }
        }
    }
    assert!(missing.is_empty(), "undeclared variables: {missing:?}");
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && !p.ends_with("target") {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

/// `"HORA_X` / `"HOROVOD_X` string literals (a name inside a longer message is not a read).
fn quoted_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for prefix in ["\"HORA_", "\"HOROVOD_"] {
        for (i, _) in text.match_indices(prefix) {
            let name: String = text[i + 1..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if name.len() > prefix.len() - 1 && text[i + 1 + name.len()..].starts_with('"') {
                out.push(name);
            }
        }
    }
    out
}

#[test]
fn defaults_are_the_declared_ones() {
    let t = Tuning::read(&Vars(&vars(&[]))).unwrap();
    assert_eq!(t, Tuning::default());
    assert_eq!(t.tcp_sockbuf, None);
    assert_eq!(t.fusion_threshold, 128 << 20);
}

#[test]
fn tcp_sockbuf_is_a_byte_count_and_0_leaves_autotuning() {
    let read = |v: &str| Tuning::read(&Vars(&vars(&[("HORA_TCP_SOCKBUF", v)])));
    assert_eq!(read("4194304").unwrap().tcp_sockbuf, Some(4 << 20));
    assert_eq!(read("0").unwrap().tcp_sockbuf, None);
    let e = read("4M").unwrap_err().to_string();
    assert!(e.contains("HORA_TCP_SOCKBUF") && e.contains("4M"), "{e}");
}

#[test]
fn stall_check_disable_overrides_the_warning_time() {
    let t = Tuning::read(&Vars(&vars(&[
        ("HOROVOD_STALL_CHECK_TIME_SECONDS", "5"),
        ("HOROVOD_STALL_CHECK_DISABLE", "0"),
    ])))
    .unwrap();
    assert_eq!(t.stall_warning, Some(Duration::from_secs(5)));
    let t = Tuning::read(&Vars(&vars(&[
        ("HOROVOD_STALL_CHECK_TIME_SECONDS", "5"),
        ("HOROVOD_STALL_CHECK_DISABLE", "yes"),
    ])))
    .unwrap();
    assert_eq!(t.stall_warning, None);
}

#[test]
fn timeouts_keep_their_floors() {
    let t = Tuning::read(&Vars(&vars(&[
        ("HOROVOD_GLOO_TIMEOUT_SECONDS", "0"),
        ("HORA_OP_TIMEOUT_SECONDS", "0"),
        ("HORA_PEER_TIMEOUT_SECONDS", "1"),
        ("HOROVOD_STALL_SHUTDOWN_TIME_SECONDS", "0"),
    ])))
    .unwrap();
    assert_eq!(t.connect_timeout, Duration::from_secs(1));
    assert_eq!(t.op_timeout, Duration::from_secs(1));
    assert_eq!(t.peer_timeout, Some(Duration::from_secs(3)));
    assert_eq!(t.stall_shutdown, None);
    let t = Tuning::read(&Vars(&vars(&[("HORA_PEER_TIMEOUT_SECONDS", "0")]))).unwrap();
    assert_eq!(t.peer_timeout, None);
}

#[test]
fn controller_accepts_horovod_and_hora_names() {
    for (value, want) in [
        ("MPI", Controller::Mpi),
        ("gloo", Controller::Tcp),
        (" tcp ", Controller::Tcp),
        ("auto", Controller::Auto),
    ] {
        let t = Tuning::read(&Vars(&vars(&[("HOROVOD_CONTROLLER", value)]))).unwrap();
        assert_eq!(t.controller, want, "{value}");
    }
    let e = Tuning::read(&Vars(&vars(&[("HOROVOD_CONTROLLER", "nccl")])))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("HOROVOD_CONTROLLER") && e.contains("gloo/tcp"),
        "{e}"
    );
}

#[test]
fn log_level_governs_hora_crates_unless_rust_log_is_set() {
    let d = |pairs: &[(&str, &str)]| LogSettings::from_vars(&vars(pairs)).unwrap().directives();
    assert_eq!(d(&[]), "hora=warn,hora_tcp=warn,hora_transport=warn");
    assert_eq!(
        d(&[("HOROVOD_LOG_LEVEL", "DEBUG")]),
        "hora=debug,hora_tcp=debug,hora_transport=debug"
    );
    assert_eq!(
        d(&[("HOROVOD_LOG_LEVEL", "fatal")]),
        "hora=error,hora_tcp=error,hora_transport=error"
    );
    assert_eq!(
        d(&[
            ("HOROVOD_LOG_LEVEL", "debug"),
            ("RUST_LOG", "hora_tcp=trace,info")
        ]),
        "hora_tcp=trace,info"
    );
    assert_eq!(d(&[("RUST_LOG", " ")]), d(&[]));
}

#[test]
fn bad_log_settings_name_the_variable() {
    for (var, value) in [("HOROVOD_LOG_LEVEL", "loud"), ("RUST_LOG", "hora=[")] {
        let e = LogSettings::from_vars(&vars(&[(var, value)]))
            .unwrap_err()
            .to_string();
        assert!(e.contains(var) && e.contains(value), "{e}");
    }
}
