//! Horovod's single-dash long options (`-np 4`, `-cb`, `-hostfile F`, `-prefix-timestamp`,
//! `-v`) rewritten to the long forms clap knows, before the rank command only: the scan stops
//! at `--` or at the first argument that is neither an option nor an option's value, which is
//! where the command starts. Which options take values (and how many) is read from the clap
//! definition itself, so a new option cannot be forgotten here.

use std::ffi::OsString;

use clap::CommandFactory;

use super::Args;

/// Horovod's single-dash spellings and the long option each is.
const SINGLE_DASH: &[(&str, &str)] = &[
    ("-np", "--num-proc"),
    ("-cb", "--check-build"),
    ("-hostfile", "--hostfile"),
    ("-prefix-timestamp", "--prefix-output-with-timestamp"),
    ("-v", "--version"),
];

/// How many values each option of [`Args`] takes, by every spelling (`--long`, aliases, `-s`).
fn value_counts() -> Vec<(String, usize)> {
    let mut cmd = Args::command();
    cmd.build();
    let mut out = Vec::new();
    for a in cmd.get_arguments() {
        if a.is_positional() || !a.get_action().takes_values() {
            continue;
        }
        let n = a.get_num_args().map_or(1, |r| r.min_values().max(1));
        for l in a.get_long_and_visible_aliases().into_iter().flatten() {
            out.push((format!("--{l}"), n));
        }
        if let Some(s) = a.get_short() {
            out.push((format!("-{s}"), n));
        }
    }
    out
}

/// Rewrites the single-dash spellings in the options part of `args` (see the module docs).
pub(crate) fn normalize(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let counts = value_counts();
    let takes = |flag: &str| {
        counts
            .iter()
            .find(|(f, _)| f == flag)
            .map_or(0, |(_, n)| *n)
    };
    let mut out = Vec::new();
    let mut it = args.into_iter();
    if let Some(prog) = it.next() {
        out.push(prog);
    }
    let mut in_options = true;
    let mut values_next = 0usize;
    for a in it {
        if !in_options {
            out.push(a);
            continue;
        }
        if values_next > 0 {
            values_next -= 1;
            out.push(a);
            continue;
        }
        let s = a.to_string_lossy().into_owned();
        if s == "--" || !s.starts_with('-') || s == "-" {
            in_options = false;
            out.push(a);
            continue;
        }
        let (flag, attached) = match s.split_once('=') {
            Some((f, v)) => (f, Some(v)),
            None => (s.as_str(), None),
        };
        let long = SINGLE_DASH
            .iter()
            .find(|(short, _)| *short == flag)
            .map(|(_, long)| *long);
        match (long, attached) {
            (Some(long), Some(v)) => out.push(format!("{long}={v}").into()),
            (Some(long), None) => {
                values_next = takes(long);
                out.push(long.into());
            }
            (None, Some(_)) => out.push(a),
            (None, None) => {
                values_next = takes(flag);
                out.push(a);
            }
        }
    }
    out
}
