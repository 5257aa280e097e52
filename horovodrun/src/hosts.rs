//! The `-H host:slots,...` list, and the check that every host is this machine (remote hosts
//! need the ssh launcher, which this release does not have).

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
    /// A host is not this machine.
    Remote(String),
    /// The hosts have fewer slots than ranks were asked for.
    TooFewSlots { slots: u64, np: u32 },
}

impl fmt::Display for HostsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax(why) => write!(f, "bad -H/--hosts value: {why}"),
            Self::Remote(h) => write!(
                f,
                "host `{h}` is not this machine; remote hosts need ssh support, coming in the next release"
            ),
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

/// Checks the list against `np` for a local launch and returns the local slot count.
pub(crate) fn local_slots(
    hosts: &[HostSlots],
    np: u32,
    hostname: Option<&str>,
) -> Result<u64, HostsError> {
    if let Some(r) = hosts.iter().find(|h| !is_local(&h.host, hostname)) {
        return Err(HostsError::Remote(r.host.clone()));
    }
    let slots: u64 = hosts.iter().map(|h| u64::from(h.slots)).sum();
    if slots < u64::from(np) {
        return Err(HostsError::TooFewSlots { slots, np });
    }
    Ok(slots)
}

#[cfg(test)]
mod tests;
