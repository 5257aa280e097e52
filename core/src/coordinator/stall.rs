//! The stall inspector: names tensors that some ranks submitted and others never did.
//!
//! Time is passed in. A pending name whose first submission is older than the warning period
//! is reported once per period with the ranks that have not submitted it; with a shutdown period
//! set, a name older than that is failed with an error response for every rank, together with
//! the names grouped with it. A name every rank has submitted but that waits for the rest of its
//! group is not itself stalled: the member some rank lacks is the one reported.

use std::time::{Duration, Instant};

use super::negotiate::{MessageTable, Pending, Ready, rank_list};

/// Stall checks over the message table.
#[derive(Debug)]
pub(crate) struct StallInspector {
    warning: Option<Duration>,
    shutdown: Option<Duration>,
}

/// Ranks that have neither submitted the name nor joined.
fn missing(table: &MessageTable, p: &Pending) -> Vec<u32> {
    p.slots
        .iter()
        .enumerate()
        .filter(|(r, s)| s.is_none() && !table.is_joined(*r))
        .map(|(r, _)| r as u32)
        .collect()
}

/// Whole periods of `period` in `elapsed` (0 for a zero period).
fn periods(elapsed: Duration, period: Duration) -> u32 {
    if period.is_zero() {
        return 0;
    }
    u32::try_from(elapsed.as_nanos() / period.as_nanos()).unwrap_or(u32::MAX)
}

impl StallInspector {
    /// An inspector warning after `warning` and failing after `shutdown` (None disables each).
    /// A zero period is treated as disabled: it would make every check due at once, forever.
    pub(crate) fn new(warning: Option<Duration>, shutdown: Option<Duration>) -> Self {
        let nonzero = |d: Option<Duration>| d.filter(|d| !d.is_zero());
        Self {
            warning: nonzero(warning),
            shutdown: nonzero(shutdown),
        }
    }

    /// When the next check is due, if any name is pending.
    pub(crate) fn next_deadline(&self, table: &MessageTable) -> Option<Instant> {
        table
            .pending()
            .filter(|(_, p)| !missing(table, p).is_empty())
            .flat_map(|(_, p)| {
                let warn = self.warning.and_then(|w| {
                    let n = p.warnings.checked_add(1)?;
                    p.first_seen.checked_add(w.checked_mul(n)?)
                });
                let stop = self.shutdown.and_then(|s| p.first_seen.checked_add(s));
                [warn, stop]
            })
            .flatten()
            .min()
    }

    /// Runs the checks at `now`: returns a warning naming every newly stalled name (if any), and
    /// the error responses of names stalled past the shutdown period and of the names grouped
    /// with them (all removed from the table).
    pub(crate) fn check(&self, now: Instant, table: &mut MessageTable) -> (Option<String>, Ready) {
        let mut order: Vec<(u64, String)> = table
            .pending()
            .map(|(name, p)| (p.serial, name.clone()))
            .collect();
        order.sort_unstable();
        let mut lines = Vec::new();
        let mut errors = Ready::default();
        for (_, name) in order {
            let Some(p) = table.get(&name) else { continue };
            let elapsed = now.saturating_duration_since(p.first_seen);
            let lacking = missing(table, p);
            if lacking.is_empty() {
                continue;
            }
            if self.shutdown.is_some_and(|s| elapsed >= s) {
                let why = format!(
                    "stalled for {:.1}s: {} never submitted it",
                    elapsed.as_secs_f64(),
                    rank_list(&lacking)
                );
                table.fail_groups(now, &name, "stall", why, lacking, &mut errors);
                continue;
            }
            let Some(w) = self.warning else { continue };
            let due = periods(elapsed, w);
            if due > p.warnings {
                lines.push(format!(
                    "'{name}' waiting {:.1}s for {}",
                    elapsed.as_secs_f64(),
                    rank_list(&lacking)
                ));
                if let Some(p) = table.pending_mut(&name) {
                    p.warnings = due;
                }
            }
        }
        let warning = (!lines.is_empty()).then(|| {
            format!(
                "tensors submitted by some ranks but not all: {}",
                lines.join("; ")
            )
        });
        (warning, errors)
    }
}
