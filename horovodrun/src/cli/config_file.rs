//! `--config-file FILE`: Horovod's YAML file of tuning settings. Horovod's layout is one level
//! of sections, each a block of `key: scalar` lines, plus a top-level `controller:`:
//!
//! ```yaml
//! controller: gloo
//! params: {fusion_threshold_mb, cycle_time_ms, cache_capacity, hierarchical_allreduce,
//!          hierarchical_allgather, torus_allreduce}
//! autotune: {enabled, log_file, warmup_samples, steps_per_sample, bayes_opt_max_samples,
//!            gaussian_process_noise}
//! timeline: {filename, mark_cycles}
//! stall_check: {enabled, warning_time_seconds, shutdown_time_seconds}
//! library_options: {mpi_threads_disable, num_nccl_streams, thread_affinity, gloo_timeout_seconds}
//! logging: {level, with_timestamp}
//! ```
//!
//! No YAML crate is on the project's list of vetted dependencies, so this reads that subset of
//! YAML by hand: block mappings two levels deep, plain, single- and double-quoted scalars,
//! YAML 1.1 booleans (`true/false/yes/no/on/off`, as PyYAML reads them), integers, floats,
//! `null`/`~`/empty, and `#` comments. Anything else (lists, flow collections, anchors, block
//! scalars, tags, deeper nesting) is an error naming the line, and so are an unknown section or
//! key, and a value of the wrong type: Horovod ignores unknown keys, but here nothing is
//! accepted and ignored. Flags on the command line win over the file, wherever they stand.

use std::path::Path;

use super::tuning::{Tunables, parse_log_level};

/// A scalar as read, with its text (for string-valued keys).
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

/// One `section.key: value` (or top-level `key: value`, with an empty section) and its line.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    section: String,
    key: String,
    value: Scalar,
    line: usize,
}

/// Which controller the file asks for (`controller:`), applied only when the command line
/// names none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Controller {
    Gloo,
    Mpi,
}

/// What a config file says.
#[derive(Debug, Default)]
pub(crate) struct ConfigFile {
    entries: Vec<Entry>,
    /// Sections present (even when empty), for Horovod's section defaults.
    sections: Vec<String>,
}

/// The keys of each section, as Horovod's `config_parser` reads them (and `hide_timestamp`,
/// the spelling Horovod's own test file uses, which hora takes as the opposite of
/// `with_timestamp` rather than ignore it).
const KEYS: &[(&str, &[&str])] = &[
    ("", &["controller"]),
    (
        "params",
        &[
            "fusion_threshold_mb",
            "cycle_time_ms",
            "cache_capacity",
            "hierarchical_allreduce",
            "hierarchical_allgather",
            "torus_allreduce",
        ],
    ),
    (
        "autotune",
        &[
            "enabled",
            "log_file",
            "warmup_samples",
            "steps_per_sample",
            "bayes_opt_max_samples",
            "gaussian_process_noise",
        ],
    ),
    ("timeline", &["filename", "mark_cycles"]),
    (
        "stall_check",
        &["enabled", "warning_time_seconds", "shutdown_time_seconds"],
    ),
    (
        "library_options",
        &[
            "mpi_threads_disable",
            "num_nccl_streams",
            "thread_affinity",
            "gloo_timeout_seconds",
        ],
    ),
    ("logging", &["level", "with_timestamp", "hide_timestamp"]),
];

/// Reads and checks `path`.
pub(crate) fn load(path: &Path) -> Result<ConfigFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--config-file {}: cannot read it: {e}", path.display()))?;
    parse(&text).map_err(|(line, why)| format!("--config-file {}:{line}: {why}", path.display()))
}

/// Parses the text of a config file; an error is `(line, why)`.
fn parse(text: &str) -> Result<ConfigFile, (usize, String)> {
    let mut cfg = ConfigFile::default();
    let mut section: Option<(String, usize)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let body = strip_comment(raw);
        if body.trim().is_empty() || (section.is_none() && matches!(body.trim(), "---" | "...")) {
            continue;
        }
        let indent = body.len() - body.trim_start_matches([' ', '\t']).len();
        if body[..indent].contains('\t') {
            return Err((line, "tabs cannot indent YAML; use spaces".into()));
        }
        let (key, rest) = split_key(body.trim(), line)?;
        if indent == 0 {
            section = None;
            if rest.is_empty() {
                if !KEYS.iter().any(|(s, _)| *s == key) || key.is_empty() {
                    return Err((line, unknown_section(&key)));
                }
                if cfg.sections.contains(&key) {
                    return Err((line, format!("section `{key}` appears twice")));
                }
                cfg.sections.push(key.clone());
                section = Some((key, 0));
            } else {
                cfg.push("", &key, scalar(rest, line)?, line)?;
            }
            continue;
        }
        let Some((name, width)) = section.as_mut() else {
            return Err((line, "indented line outside a section".into()));
        };
        if *width == 0 {
            *width = indent;
        } else if indent != *width {
            return Err((
                line,
                format!(
                    "indented by {indent} spaces where section `{name}` uses {width}; hora reads \
                     Horovod's layout: sections of `key: value` lines"
                ),
            ));
        }
        if rest.is_empty() {
            return Err((
                line,
                format!("`{name}.{key}` has no value (nested sections are not Horovod's layout)"),
            ));
        }
        let name = name.clone();
        cfg.push(&name, &key, scalar(rest, line)?, line)?;
    }
    Ok(cfg)
}

impl ConfigFile {
    fn push(
        &mut self,
        section: &str,
        key: &str,
        value: Scalar,
        line: usize,
    ) -> Result<(), (usize, String)> {
        let Some((_, keys)) = KEYS.iter().find(|(s, _)| *s == section) else {
            return Err((line, unknown_section(section)));
        };
        if !keys.contains(&key) {
            return Err((
                line,
                if section.is_empty() {
                    unknown_section(key)
                } else {
                    format!(
                        "`{section}` has no key `{key}` (Horovod's keys there: {})",
                        keys.join(", ")
                    )
                },
            ));
        }
        if self
            .entries
            .iter()
            .any(|e| e.section == section && e.key == key)
        {
            return Err((line, format!("`{}` is set twice", dotted(section, key))));
        }
        self.entries.push(Entry {
            section: section.to_owned(),
            key: key.to_owned(),
            value,
            line,
        });
        Ok(())
    }

    fn get(&self, section: &str, key: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.section == section && e.key == key && e.value != Scalar::Null)
    }

    /// The controller the file names, if any.
    pub(crate) fn controller(&self) -> Result<Option<Controller>, String> {
        let Some(e) = self.get("", "controller") else {
            return Ok(None);
        };
        match &e.value {
            Scalar::Str(s) if s.eq_ignore_ascii_case("gloo") => Ok(Some(Controller::Gloo)),
            Scalar::Str(s) if s.eq_ignore_ascii_case("mpi") => Ok(Some(Controller::Mpi)),
            _ => Err(format!(
                "line {}: `controller` must be gloo or mpi (got {})",
                e.line,
                shown(&e.value)
            )),
        }
    }

    /// Fills the settings the command line left unset; records which came from the file.
    pub(crate) fn apply(&self, path: &Path, t: &mut Tunables) -> Result<(), String> {
        let mut from: Vec<&'static str> = Vec::new();
        if let (Some(_), Some(e)) = (
            self.get("logging", "with_timestamp"),
            self.get("logging", "hide_timestamp"),
        ) {
            return Err(format!(
                "--config-file {}:{}: `logging.with_timestamp` and `logging.hide_timestamp` say \
                 the same thing; keep one",
                path.display(),
                e.line
            ));
        }
        let err = |e: &Entry, want: &str| {
            format!(
                "--config-file {}:{}: `{}` must be {want} (got {})",
                path.display(),
                e.line,
                dotted(&e.section, &e.key),
                shown(&e.value)
            )
        };
        macro_rules! fill {
            ($field:ident, $section:literal, $key:literal, $conv:expr, $want:literal) => {
                if let Some(e) = self.get($section, $key) {
                    let v = ($conv)(&e.value).ok_or_else(|| err(e, $want))?;
                    if t.$field.is_none() {
                        t.$field = Some(v);
                        from.push(concat!($section, ".", $key));
                    }
                }
            };
        }
        fill!(
            fusion_threshold_mb,
            "params",
            "fusion_threshold_mb",
            count,
            "a whole number >= 0"
        );
        fill!(
            cycle_time_ms,
            "params",
            "cycle_time_ms",
            non_negative,
            "a number of milliseconds >= 0"
        );
        fill!(
            cache_capacity,
            "params",
            "cache_capacity",
            count,
            "a whole number >= 0"
        );
        fill!(
            hierarchical_allreduce,
            "params",
            "hierarchical_allreduce",
            boolean,
            "true or false"
        );
        fill!(
            hierarchical_allgather,
            "params",
            "hierarchical_allgather",
            boolean,
            "true or false"
        );
        fill!(
            torus_allreduce,
            "params",
            "torus_allreduce",
            boolean,
            "true or false"
        );
        fill!(autotune, "autotune", "enabled", boolean, "true or false");
        fill!(
            autotune_log_file,
            "autotune",
            "log_file",
            text,
            "a file name"
        );
        fill!(
            autotune_warmup_samples,
            "autotune",
            "warmup_samples",
            count,
            "a whole number >= 0"
        );
        fill!(
            autotune_steps_per_sample,
            "autotune",
            "steps_per_sample",
            count,
            "a whole number >= 0"
        );
        fill!(
            autotune_bayes_opt_max_samples,
            "autotune",
            "bayes_opt_max_samples",
            count,
            "a whole number >= 0"
        );
        fill!(
            autotune_gaussian_process_noise,
            "autotune",
            "gaussian_process_noise",
            unit,
            "a number in [0, 1]"
        );
        fill!(
            timeline_filename,
            "timeline",
            "filename",
            |v| text(v).map(Into::into),
            "a file name"
        );
        fill!(
            timeline_mark_cycles,
            "timeline",
            "mark_cycles",
            boolean,
            "true or false"
        );
        fill!(
            no_stall_check,
            "stall_check",
            "enabled",
            |v| boolean(v).map(|b| !b),
            "true or false"
        );
        fill!(
            stall_check_warning_time_seconds,
            "stall_check",
            "warning_time_seconds",
            count,
            "a whole number of seconds >= 0"
        );
        fill!(
            stall_check_shutdown_time_seconds,
            "stall_check",
            "shutdown_time_seconds",
            count,
            "a whole number of seconds >= 0"
        );
        fill!(
            mpi_threads_disable,
            "library_options",
            "mpi_threads_disable",
            boolean,
            "true or false"
        );
        fill!(
            num_nccl_streams,
            "library_options",
            "num_nccl_streams",
            count,
            "a whole number >= 0"
        );
        fill!(
            thread_affinity,
            "library_options",
            "thread_affinity",
            count,
            "a whole number >= 0"
        );
        fill!(
            gloo_timeout_seconds,
            "library_options",
            "gloo_timeout_seconds",
            |v| count(v).filter(|&s| s >= 1),
            "a whole number of seconds >= 1"
        );
        fill!(
            log_level,
            "logging",
            "level",
            |v| text(v).and_then(|s| parse_log_level(&s).ok()),
            "one of TRACE, DEBUG, INFO, WARNING, ERROR, FATAL"
        );
        fill!(
            log_with_timestamp,
            "logging",
            "with_timestamp",
            boolean,
            "true or false"
        );
        fill!(
            log_with_timestamp,
            "logging",
            "hide_timestamp",
            |v| boolean(v).map(|b| !b),
            "true or false"
        );
        // Horovod's section defaults: an autotune section means `enabled: false` unless it
        // says otherwise, a stall_check section `enabled: true`.
        if self.sections.iter().any(|s| s == "autotune") && t.autotune.is_none() {
            t.autotune = Some(false);
        }
        if self.sections.iter().any(|s| s == "stall_check") && t.no_stall_check.is_none() {
            t.no_stall_check = Some(false);
        }
        t.from_config = Some((path.to_owned(), from));
        Ok(())
    }
}

fn dotted(section: &str, key: &str) -> String {
    if section.is_empty() {
        key.to_owned()
    } else {
        format!("{section}.{key}")
    }
}

fn unknown_section(name: &str) -> String {
    let known: Vec<&str> = KEYS
        .iter()
        .map(|(s, k)| if s.is_empty() { k[0] } else { *s })
        .collect();
    format!(
        "`{name}` is not one of Horovod's config sections ({})",
        known.join(", ")
    )
}

fn shown(v: &Scalar) -> String {
    match v {
        Scalar::Null => "nothing".into(),
        Scalar::Bool(b) => b.to_string(),
        Scalar::Int(i) => i.to_string(),
        Scalar::Float(f) => f.to_string(),
        Scalar::Str(s) => format!("{s:?}"),
    }
}

fn count(v: &Scalar) -> Option<u64> {
    match v {
        Scalar::Int(i) => u64::try_from(*i).ok(),
        _ => None,
    }
}

fn number(v: &Scalar) -> Option<f64> {
    match v {
        Scalar::Int(i) => Some(*i as f64),
        Scalar::Float(f) if f.is_finite() => Some(*f),
        _ => None,
    }
}

fn non_negative(v: &Scalar) -> Option<f64> {
    number(v).filter(|&x| x >= 0.0)
}

fn unit(v: &Scalar) -> Option<f64> {
    number(v).filter(|x| (0.0..=1.0).contains(x))
}

fn boolean(v: &Scalar) -> Option<bool> {
    match v {
        Scalar::Bool(b) => Some(*b),
        _ => None,
    }
}

fn text(v: &Scalar) -> Option<String> {
    match v {
        Scalar::Str(s) if !s.is_empty() => Some(s.clone()),
        Scalar::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// The line without its comment (`#` at the start or after a space, outside quotes).
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '#' && prev.is_whitespace() => return &line[..i],
            None => {}
        }
        prev = c;
    }
    line
}

/// `key: rest` (rest may be empty).
fn split_key(s: &str, line: usize) -> Result<(String, &str), (usize, String)> {
    let unsupported = |what: &str| {
        (
            line,
            format!(
                "{what} is YAML that hora's config reader does not take; it reads Horovod's \
                 layout: sections of `key: value` lines"
            ),
        )
    };
    if s.starts_with("- ") || s == "-" {
        return Err(unsupported("a list"));
    }
    let colon = s
        .find(": ")
        .or_else(|| s.ends_with(':').then(|| s.len() - 1))
        .ok_or_else(|| (line, format!("`{s}` is not a `key: value` line")))?;
    let key = s[..colon].trim();
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err((line, format!("`{key}` is not a plain key")));
    }
    Ok((key.to_owned(), s[colon + 1..].trim()))
}

/// One scalar value, as PyYAML would read it (the subset above).
fn scalar(s: &str, line: usize) -> Result<Scalar, (usize, String)> {
    let bad = |what: &str| {
        (
            line,
            format!(
                "{what} is YAML that hora's config reader does not take; it reads Horovod's \
                 layout: sections of `key: value` lines"
            ),
        )
    };
    if let Some(inner) = s.strip_prefix('\'') {
        let inner = inner
            .strip_suffix('\'')
            .ok_or_else(|| (line, "unterminated '...' string".to_owned()))?;
        return Ok(Scalar::Str(inner.replace("''", "'")));
    }
    if let Some(inner) = s.strip_prefix('"') {
        let inner = inner
            .strip_suffix('"')
            .ok_or_else(|| (line, "unterminated \"...\" string".to_owned()))?;
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(c @ ('"' | '\\' | '/')) => out.push(c),
                other => {
                    return Err((
                        line,
                        format!("unsupported escape \\{}", other.unwrap_or(' ')),
                    ));
                }
            }
        }
        return Ok(Scalar::Str(out));
    }
    match s.chars().next() {
        Some('[' | '{') => return Err(bad("a flow collection")),
        Some('&' | '*') => return Err(bad("an anchor or alias")),
        Some('!') => return Err(bad("a tag")),
        Some('|' | '>') => return Err(bad("a block scalar")),
        _ => {}
    }
    Ok(match s {
        "" | "~" | "null" | "Null" | "NULL" => Scalar::Null,
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Scalar::Bool(true),
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => {
            Scalar::Bool(false)
        }
        _ => {
            let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
            if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
                s.parse()
                    .map(Scalar::Int)
                    .map_err(|_| (line, format!("`{s}` is too large")))?
            } else if digits.starts_with(|c: char| c.is_ascii_digit() || c == '.')
                && let Ok(f) = s.parse::<f64>()
            {
                Scalar::Float(f)
            } else {
                Scalar::Str(s.to_owned())
            }
        }
    })
}

#[cfg(test)]
mod tests;
