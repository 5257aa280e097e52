//! The `-H host:slots,...` list and `--hostfile` (`host slots=N` lines), and how ranks are
//! placed on them: hosts are filled in order, so ranks `0..slots(h0)` go to the first host, and
//! the local and cross ranks follow (Horovod's layout), even when slot counts differ.

use std::fmt;

/// One `host:slots` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostSlots {
    pub(crate) host: String,
    pub(crate) slots: u32,
}

/// Why a host list cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HostsError {
    /// The text is not `host[:slots],...`.
    Syntax(String),
    /// A hostfile line is malformed (file, line number, why).
    Hostfile(String, usize, String),
    /// The hosts have fewer slots than ranks were asked for.
    TooFewSlots { slots: u64, np: u32 },
}

impl fmt::Display for HostsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax(why) => write!(f, "bad -H/--hosts value: {why}"),
            Self::Hostfile(file, line, why) => write!(f, "{file}:{line}: {why}"),
            Self::TooFewSlots { slots, np } => write!(
                f,
                "-H/--hosts lists {slots} slot{} but -np asks for {np} ranks",
                if *slots == 1 { "" } else { "s" }
            ),
        }
    }
}

/// Parses `a:2,b:4` (a missing `:slots` means one slot).
pub(crate) fn parse(text: &str) -> Result<Vec<HostSlots>, HostsError> {
    let mut out = Vec::new();
    for entry in text.split(',').map(str::trim) {
        if entry.is_empty() {
            return Err(HostsError::Syntax(format!("empty host entry in `{text}`")));
        }
        // rsplit so a bracketed IPv6 address keeps its colons.
        let (host, slots) = match entry.rsplit_once(':') {
            Some((h, s)) if !h.ends_with(':') && !s.contains(']') => {
                let slots = s.parse::<u32>().ok().filter(|&n| n > 0).ok_or_else(|| {
                    HostsError::Syntax(format!("`{s}` in `{entry}` is not a positive slot count"))
                })?;
                (h, slots)
            }
            _ => (entry, 1),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(HostsError::Syntax(format!(
                "missing host name in `{entry}`"
            )));
        }
        out.push(HostSlots {
            host: host.to_owned(),
            slots,
        });
    }
    Ok(out)
}

/// True if `host` names this machine.
pub(crate) fn is_local(host: &str, hostname: Option<&str>) -> bool {
    let h = host.to_ascii_lowercase();
    matches!(h.as_str(), "localhost" | "127.0.0.1" | "::1")
        || hostname.is_some_and(|n| {
            let n = n.to_ascii_lowercase();
            // `node1` also matches `node1.cluster.example` and vice versa.
            h == n || n.split('.').next() == Some(&h) || h.split('.').next() == Some(&n)
        })
}

/// Parses a hostfile: one `host [slots=N]` (or `host:N`) per line; `#` starts a comment and
/// blank lines are skipped. `name` is used in errors.
pub(crate) fn parse_hostfile(name: &str, text: &str) -> Result<Vec<HostSlots>, HostsError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let err = |why: String| HostsError::Hostfile(name.to_owned(), i + 1, why);
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        let mut entry = match parse(first) {
            Ok(mut v) if v.len() == 1 => v.remove(0),
            Ok(_) => return Err(err(format!("`{first}`: one host per line"))),
            Err(HostsError::Syntax(why)) => return Err(err(why)),
            Err(e) => return Err(err(e.to_string())),
        };
        for w in words {
            let n = w
                .strip_prefix("slots=")
                .or_else(|| w.strip_prefix("max_slots="))
                .ok_or_else(|| err(format!("unknown field `{w}` (expected slots=N)")))?;
            if w.starts_with("max_slots=") {
                continue;
            }
            entry.slots = n
                .parse::<u32>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| err(format!("`{n}` is not a positive slot count")))?;
        }
        out.push(entry);
    }
    if out.is_empty() {
        return Err(HostsError::Hostfile(
            name.to_owned(),
            0,
            "lists no hosts".to_owned(),
        ));
    }
    Ok(out)
}

/// Where one rank runs and its place in the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slot {
    /// The host as the user wrote it.
    pub(crate) host: String,
    /// Rank among the ranks of this host.
    pub(crate) local_rank: u32,
    /// Ranks on this host.
    pub(crate) local_size: u32,
    /// Index of this host among the hosts that have a rank with this local rank.
    pub(crate) cross_rank: u32,
    /// Number of hosts that have a rank with this local rank.
    pub(crate) cross_size: u32,
}

/// Merges the entries that name this machine into one `localhost` entry and repeated names into
/// their first entry (slots add up), keeping the order of first appearance.
pub(crate) fn merge(hosts: &[HostSlots], hostname: Option<&str>) -> Vec<HostSlots> {
    let mut out: Vec<HostSlots> = Vec::new();
    for h in hosts {
        let name = if is_local(&h.host, hostname) {
            "localhost".to_owned()
        } else {
            h.host.clone()
        };
        match out.iter_mut().find(|o| o.host == name) {
            Some(o) => o.slots = o.slots.saturating_add(h.slots),
            None => out.push(HostSlots {
                host: name,
                slots: h.slots,
            }),
        }
    }
    out
}

/// Places `np` ranks on `hosts`, filling each host's slots in order.
pub(crate) fn assign(hosts: &[HostSlots], np: u32) -> Result<Vec<Slot>, HostsError> {
    let slots: u64 = hosts.iter().map(|h| u64::from(h.slots)).sum();
    if slots < u64::from(np) {
        return Err(HostsError::TooFewSlots { slots, np });
    }
    // How many ranks each host gets.
    let mut per_host = Vec::new();
    let mut left = np;
    for h in hosts {
        let n = h.slots.min(left);
        left -= n;
        if n > 0 {
            per_host.push((h.host.clone(), n));
        }
    }
    let mut out = Vec::with_capacity(np as usize);
    for (me, (host, n)) in per_host.iter().enumerate() {
        for local_rank in 0..*n {
            // Hosts that have a rank with this local rank, in host order.
            let with_this_local: Vec<usize> = per_host
                .iter()
                .enumerate()
                .filter(|(_, (_, m))| *m > local_rank)
                .map(|(i, _)| i)
                .collect();
            let cross_rank = with_this_local.iter().position(|&i| i == me).unwrap_or(0);
            out.push(Slot {
                host: host.clone(),
                local_rank,
                local_size: *n,
                cross_rank: cross_rank as u32,
                cross_size: with_this_local.len() as u32,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
