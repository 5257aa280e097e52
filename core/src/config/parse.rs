//! How one variable's text becomes a value. Each reader takes the variable's name and the
//! words for what it accepts (the same words docs/configuration.md shows), and returns
//! `Ok(None)` when the variable is unset or blank, so the setting keeps its default.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::error::Error;

/// An error naming the variable, the value and what is accepted.
pub(crate) fn invalid(var: &str, value: &str, reason: &str) -> Error {
    Error::InvalidConfig {
        var: var.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// The variables one configuration is read from (blank values count as unset).
pub(crate) struct Vars<'a>(pub(crate) &'a HashMap<String, String>);

impl Vars<'_> {
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(|s| s.as_str())
            .filter(|s| !s.trim().is_empty())
    }

    pub(crate) fn parse<T: FromStr>(&self, name: &str, accepted: &str) -> Result<Option<T>, Error> {
        match self.get(name) {
            None => Ok(None),
            Some(raw) => raw
                .trim()
                .parse::<T>()
                .map(Some)
                .map_err(|_| invalid(name, raw, &format!("expected {accepted}"))),
        }
    }

    /// A yes/no variable; unset reads as no.
    pub(crate) fn flag(&self, name: &str) -> Result<bool, Error> {
        Ok(flag(self, name, "")?.unwrap_or(false))
    }
}

/// Any `FromStr` number.
pub(crate) fn number<T: FromStr>(v: &Vars<'_>, var: &str, acc: &str) -> Result<Option<T>, Error> {
    v.parse(var, acc)
}

/// A number where 0 means "off" (`None`).
pub(crate) fn number_or_off(
    v: &Vars<'_>,
    var: &str,
    acc: &str,
) -> Result<Option<Option<usize>>, Error> {
    Ok(number::<usize>(v, var, acc)?.map(|n| (n > 0).then_some(n)))
}

/// A number that is `Some` whenever set (0 included): unset keeps an automatic choice.
pub(crate) fn some_number<T: FromStr>(
    v: &Vars<'_>,
    var: &str,
    acc: &str,
) -> Result<Option<Option<T>>, Error> {
    Ok(number(v, var, acc)?.map(Some))
}

/// Milliseconds as a fraction, > 0.
pub(crate) fn millis(v: &Vars<'_>, var: &str, acc: &str) -> Result<Option<Duration>, Error> {
    let Some(ms) = v.parse::<f64>(var, acc)? else {
        return Ok(None);
    };
    if !(ms.is_finite() && ms >= 0.0) {
        return Err(invalid(var, &ms.to_string(), "must be >= 0 ms"));
    }
    Ok(Some(Duration::from_secs_f64(ms / 1000.0)))
}

/// Whole seconds, at least 1 (0 would fail every wait at once).
pub(crate) fn seconds_at_least_1(
    v: &Vars<'_>,
    var: &str,
    acc: &str,
) -> Result<Option<Duration>, Error> {
    Ok(v.parse::<u64>(var, acc)?
        .map(|s| Duration::from_secs(s.max(1))))
}

/// Whole seconds where 0 means "off".
pub(crate) fn seconds_or_off(
    v: &Vars<'_>,
    var: &str,
    acc: &str,
) -> Result<Option<Option<Duration>>, Error> {
    Ok(v.parse::<u64>(var, acc)?
        .map(|s| (s > 0).then(|| Duration::from_secs(s))))
}

/// Whole seconds where 0 means "off"; at least 3 otherwise, since keepalive probes need a few
/// seconds to tell a silent link from a slow one.
pub(crate) fn peer_seconds(
    v: &Vars<'_>,
    var: &str,
    acc: &str,
) -> Result<Option<Option<Duration>>, Error> {
    Ok(v.parse::<u64>(var, acc)?
        .map(|s| (s > 0).then(|| Duration::from_secs(s.max(3)))))
}

/// Whole microseconds.
pub(crate) fn micros(v: &Vars<'_>, var: &str, acc: &str) -> Result<Option<Duration>, Error> {
    Ok(v.parse::<u64>(var, acc)?.map(Duration::from_micros))
}

/// A byte count of at least 4096 (smaller pipeline segments cost more in headers than
/// they save).
pub(crate) fn bytes_at_least_4096(
    v: &Vars<'_>,
    var: &str,
    acc: &str,
) -> Result<Option<usize>, Error> {
    let Some(b) = v.parse::<usize>(var, acc)? else {
        return Ok(None);
    };
    if b < 4096 {
        return Err(invalid(var, &b.to_string(), "must be >= 4096"));
    }
    Ok(Some(b))
}

/// 1/0, true/false, yes/no or on/off, in any case.
pub(crate) fn flag(v: &Vars<'_>, var: &str, _acc: &str) -> Result<Option<bool>, Error> {
    match v.get(var).map(|s| s.trim().to_ascii_lowercase()) {
        None => Ok(None),
        Some(s) if ["1", "true", "yes", "on"].contains(&s.as_str()) => Ok(Some(true)),
        Some(s) if ["0", "false", "no", "off"].contains(&s.as_str()) => Ok(Some(false)),
        Some(s) => Err(invalid(
            var,
            &s,
            "expected 1/0, true/false, yes/no or on/off",
        )),
    }
}

/// A flag that is `Some` whenever set: unset keeps an automatic choice.
pub(crate) fn some_flag(v: &Vars<'_>, var: &str, acc: &str) -> Result<Option<Option<bool>>, Error> {
    Ok(flag(v, var, acc)?.map(Some))
}

/// One of a fixed set of words (`T`'s `FromStr`).
pub(crate) fn choice<T: FromStr>(v: &Vars<'_>, var: &str, acc: &str) -> Result<Option<T>, Error> {
    match v.get(var) {
        None => Ok(None),
        Some(raw) => raw
            .parse()
            .map(Some)
            .map_err(|_| invalid(var, raw, &format!("expected {acc}"))),
    }
}

/// A file path, taken as written.
pub(crate) fn path(v: &Vars<'_>, var: &str, _acc: &str) -> Result<Option<Option<PathBuf>>, Error> {
    Ok(v.get(var).map(|p| Some(PathBuf::from(p))))
}

/// `tracing` filter directives, checked by the same parser the logger uses.
pub(crate) fn filter_directives(
    v: &Vars<'_>,
    var: &str,
    acc: &str,
) -> Result<Option<Option<String>>, Error> {
    match v.get(var) {
        None => Ok(None),
        Some(raw) => match tracing_subscriber::EnvFilter::try_new(raw) {
            Ok(_) => Ok(Some(Some(raw.to_owned()))),
            Err(e) => Err(invalid(var, raw, &format!("expected {acc} ({e})"))),
        },
    }
}

/// A count of at least 1 (0 steps or samples would never end a sample or a search).
pub(crate) fn count_at_least_1(v: &Vars<'_>, var: &str, acc: &str) -> Result<Option<usize>, Error> {
    match v.parse::<usize>(var, acc)? {
        Some(0) => Err(invalid(var, "0", &format!("expected {acc}"))),
        n => Ok(n),
    }
}

/// A finite number >= 0.
pub(crate) fn non_negative(v: &Vars<'_>, var: &str, acc: &str) -> Result<Option<f64>, Error> {
    match v.parse::<f64>(var, acc)? {
        Some(x) if !(x.is_finite() && x >= 0.0) => {
            Err(invalid(var, &x.to_string(), &format!("expected {acc}")))
        }
        x => Ok(x),
    }
}

/// `HOROVOD_AUTOTUNE`: a flag; when on, which knobs the user fixed by setting their own
/// variables (those are not tuned, as in Horovod).
pub(crate) fn autotune(
    v: &Vars<'_>,
    var: &str,
    acc: &str,
) -> Result<Option<Option<super::values::AutotuneFixed>>, Error> {
    Ok(flag(v, var, acc)?.map(|on| {
        on.then(|| super::values::AutotuneFixed {
            fusion_threshold: v.get("HOROVOD_FUSION_THRESHOLD").is_some(),
            segment_bytes: v.get("HORA_SEGMENT_BYTES").is_some(),
            cache: v.get("HOROVOD_CACHE_CAPACITY").is_some(),
        })
    }))
}
