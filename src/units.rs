//! One vocabulary for durations and sizes, the same in the config file and
//! on the command lines of `upcased`, `upcase` and `upcase-bench`:
//!
//! - a duration is a whole number and a unit: `250ms`, `5s`, `5m`, `1h`
//!   ([`parse_duration`], printed back by [`format_duration`]);
//! - a size is a whole number of bytes, optionally with a unit: `65536`,
//!   `512B`, `64KiB`, `1MiB`, `2GiB` ([`parse_size`]).
//!
//! The parsers return complete messages (`invalid duration "5x": expected
//! ...`); the config file puts `FILE:LINE: KEY: ` in front of them, clap
//! `invalid value '5x' for '--flag <DURATION>': `. The clap value parsers
//! here add what a flag needs beyond the plain value: not zero
//! ([`nonzero_duration`], [`nonzero_size`]), and the bare numbers of seconds
//! that `upcase-bench` used to take ([`DeprecatedSeconds`]).

use std::ffi::OsStr;
use std::num::NonZeroUsize;
use std::time::Duration;

use clap::builder::TypedValueParser;

/// The message for every malformed duration.
pub(crate) const DURATION_EXPECTED: &str =
    "expected a whole number followed by ms, s, m or h (e.g. \"250ms\", \"5s\", \"5m\")";

/// Parses a duration written as a whole number followed by a unit: `ms`,
/// `s`, `m` or `h` (`"250ms"`, `"5s"`, `"5m"`, `"1h"`, `"0s"`).
///
/// Rejected: a missing or unknown unit (`"5"`, `"5x"`), signs (`"-1s"`),
/// fractions (`"1.5s"`; write `"1500ms"`), spaces, the empty string and
/// values too large for a [`Duration`]. The error text is complete, e.g.
/// `invalid duration "5x": expected a whole number followed by ms, s, m or h (e.g. "250ms", "5s", "5m")`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(digits_end);
    let invalid = || format!("invalid duration {s:?}: {DURATION_EXPECTED}");
    let scale: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(invalid()),
    };
    if digits.is_empty() {
        return Err(invalid());
    }
    let too_large = || format!("invalid duration {s:?}: too large");
    let number: u64 = digits.parse().map_err(|_| too_large())?;
    let millis = number.checked_mul(scale).ok_or_else(too_large)?;
    Ok(Duration::from_millis(millis))
}

/// Formats a duration in the largest unit that represents it exactly, in the
/// syntax [`parse_duration`] reads: 300 s -> `"5m"`, 1500 ms -> `"1500ms"`,
/// 2 h -> `"2h"`, zero -> `"0s"`. Parts below a millisecond are dropped.
pub fn format_duration(d: Duration) -> String {
    let millis = d.as_millis();
    if millis == 0 {
        return "0s".to_owned();
    }
    for (scale, unit) in [(3_600_000, "h"), (60_000, "m"), (1_000, "s")] {
        if millis % scale == 0 {
            return format!("{}{unit}", millis / scale);
        }
    }
    format!("{millis}ms")
}

/// Parses a byte size: a whole number, optionally followed by `B`, `KiB`,
/// `MiB` or `GiB` (`"4096"`, `"512B"`, `"64KiB"`, `"1MiB"`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(digits_end);
    let scale: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => 0,
    };
    if digits.is_empty() || scale == 0 {
        return Err(format!(
            "invalid size {s:?}: expected a whole number of bytes, optionally followed by B, KiB, MiB or GiB (e.g. 65536, \"64KiB\", \"1MiB\")"
        ));
    }
    let too_large = || format!("invalid size {s:?}: too large");
    let number: u64 = digits.parse().map_err(|_| too_large())?;
    number.checked_mul(scale).ok_or_else(too_large)
}

/// Value parser for a duration flag that cannot be zero (a timeout: to the
/// OS a zero read timeout means "block for ever"; to the bench a zero
/// connect timeout fails every connection before it starts).
pub fn nonzero_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("{s:?} is out of range: expected more than 0ms"));
    }
    Ok(d)
}

/// Value parser for a size flag that cannot be zero (`--size 4KiB`).
pub fn nonzero_size(s: &str) -> Result<NonZeroUsize, String> {
    let bytes = parse_size(s)?;
    let bytes = usize::try_from(bytes).map_err(|_| format!("invalid size {s:?}: too large"))?;
    NonZeroUsize::new(bytes)
        .ok_or_else(|| format!("{s:?} is out of range: expected at least 1 byte"))
}

/// Value parser for the duration flags of `upcase-bench`, which used to take
/// a bare number of seconds (`--duration 3`, `--warmup 0.5`). Those still
/// work, for the scripts that pass them, with a one-line deprecation warning
/// on standard error naming the new spelling; everything else is read by
/// [`parse_duration`] (or [`nonzero_duration`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct DeprecatedSeconds {
    /// Whether zero is rejected, in either spelling.
    pub nonzero: bool,
}

impl DeprecatedSeconds {
    /// A parser that rejects a zero duration (timeouts).
    pub fn nonzero() -> DeprecatedSeconds {
        DeprecatedSeconds { nonzero: true }
    }
}

/// A bare number of seconds as the old `upcase-bench` flags took it (any
/// non-negative, finite number `f64` reads: `"3"`, `"0.3"`), or `None`.
fn bare_seconds(s: &str) -> Option<Duration> {
    let secs: f64 = s.parse().ok()?;
    Duration::try_from_secs_f64(secs).ok()
}

impl TypedValueParser for DeprecatedSeconds {
    type Value = Duration;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<Duration, clap::Error> {
        let parse = if self.nonzero {
            nonzero_duration
        } else {
            parse_duration
        };
        let Some(text) = value.to_str() else {
            return parse.parse_ref(cmd, arg, value);
        };
        let Some(secs) = bare_seconds(text) else {
            return parse.parse_ref(cmd, arg, value);
        };
        // What to write instead: the value to the nearest millisecond, the
        // finest unit of the vocabulary (0.3 s as f64 is 0.29999... s).
        let rounded = Duration::from_millis((secs.as_secs_f64() * 1000.0).round() as u64);
        let new = format_duration(rounded);
        let flag = arg
            .and_then(clap::Arg::get_long)
            .map_or_else(|| "a duration".to_owned(), |long| format!("--{long}"));
        if self.nonzero && secs.is_zero() {
            // Refused as clap refuses any value: the same message format,
            // naming what was typed.
            let refuse = |typed: &str| {
                Err::<Duration, String>(format!(
                    "{typed:?} is out of range: expected more than 0ms"
                ))
            };
            return refuse.parse_ref(cmd, arg, value);
        }
        eprintln!(
            "{}: warning: {flag} {text}: a bare number of seconds is deprecated; write {new}",
            cmd.get_name()
        );
        Ok(secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    #[test]
    fn parse_duration_accepts() {
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0ms"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("007s"), Ok(Duration::from_secs(7)));
    }

    #[test]
    fn parse_duration_rejects() {
        for bad in [
            "5", "5x", "-1s", "", "1.5s", "s", "5 s", " 5s", "5s ", "5S", "+5s", "5ms5",
        ] {
            assert_eq!(
                parse_duration(bad),
                Err(format!("invalid duration {bad:?}: {DURATION_EXPECTED}")),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_duration("99999999999999999999s"),
            Err("invalid duration \"99999999999999999999s\": too large".to_owned())
        );
        assert_eq!(
            parse_duration("18446744073709551615h"),
            Err("invalid duration \"18446744073709551615h\": too large".to_owned())
        );
    }

    #[test]
    fn format_duration_cases() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(5)), "5s");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(format_duration(Duration::from_secs(5400)), "90m");
        assert_eq!(format_duration(Duration::from_micros(1500)), "1ms");
        for s in ["0s", "250ms", "1500ms", "5s", "5m", "1h", "90m"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }

    #[test]
    fn parse_size_cases() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        for bad in ["", "KiB", "64kib", "64 KiB", "1.5MiB", "-1"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn nonzero_parsers() {
        assert_eq!(nonzero_duration("1ms"), Ok(Duration::from_millis(1)));
        assert_eq!(
            nonzero_duration("0s"),
            Err("\"0s\" is out of range: expected more than 0ms".to_owned())
        );
        assert_eq!(nonzero_duration("1"), parse_duration("1"));
        assert_eq!(nonzero_size("4KiB"), Ok(NonZeroUsize::new(4096).unwrap()));
        assert_eq!(nonzero_size("64"), Ok(NonZeroUsize::new(64).unwrap()));
        assert_eq!(
            nonzero_size("0KiB"),
            Err("\"0KiB\" is out of range: expected at least 1 byte".to_owned())
        );
        assert_eq!(
            nonzero_size("64KB").unwrap_err(),
            parse_size("64KB").unwrap_err()
        );
    }

    /// A command with one `--wait` flag read by `parser`.
    fn wait(parser: DeprecatedSeconds, value: &str) -> Result<Duration, clap::Error> {
        Command::new("t")
            .arg(Arg::new("wait").long("wait").value_parser(parser))
            .try_get_matches_from(["t".to_owned(), format!("--wait={value}")])
            .map(|m| *m.get_one::<Duration>("wait").expect("given"))
    }

    #[test]
    fn deprecated_seconds_reads_both_spellings() {
        let old = DeprecatedSeconds::default();
        assert_eq!(wait(old, "3s").unwrap(), Duration::from_secs(3));
        assert_eq!(wait(old, "250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(wait(old, "0s").unwrap(), Duration::ZERO);
        // The old spelling, fractions included, as it always meant.
        assert_eq!(wait(old, "3").unwrap(), Duration::from_secs(3));
        assert_eq!(wait(old, "0").unwrap(), Duration::ZERO);
        let d = wait(old, "0.3").unwrap();
        assert!(d.abs_diff(Duration::from_millis(300)) < Duration::from_micros(1));
        for bad in ["3x", "-1", "inf", "1.5s", ""] {
            let e = wait(old, bad).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{bad:?}");
            assert_eq!(e.exit_code(), 2);
        }
        let e = wait(old, "3x").unwrap_err().to_string();
        assert!(e.contains("invalid duration \"3x\""), "{e}");

        let timeout = DeprecatedSeconds::nonzero();
        assert_eq!(wait(timeout, "2").unwrap(), Duration::from_secs(2));
        for zero in ["0", "0.0", "0s", "0ms"] {
            let e = wait(timeout, zero).unwrap_err().to_string();
            assert!(e.contains("expected more than 0ms"), "{zero:?}: {e}");
        }
    }
}
