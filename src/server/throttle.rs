//! Log lines about things that can happen thousands of times a second (a
//! limit reached, descriptors exhausted) are rate-limited: at most one line
//! per [`Throttle::EVERY`], which says how many it stands for.

use std::time::{Duration, Instant};

/// One kind of rate-limited log line.
#[derive(Debug, Default)]
pub struct Throttle {
    /// When the last line was logged.
    last: Option<Instant>,
    /// Occurrences since then that logged nothing.
    suppressed: u64,
}

impl Throttle {
    /// At most one line per this interval.
    pub const EVERY: Duration = Duration::from_secs(10);

    /// Something worth a line happened at `now`: `Some(n)` if it is to be
    /// logged now, `n` being how many occurrences since the last line were
    /// not; `None` if it is counted for the next line instead.
    pub fn ready(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|at| now.saturating_duration_since(at) < Self::EVERY)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// `1 connection`, `2 connections`: counts in log lines read as prose.
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A duration measured at run time, for a log line: `850 ms`, `4.2 s`.
pub fn elapsed(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_counting_the_rest() {
        let mut t = Throttle::default();
        let t0 = Instant::now();
        assert_eq!(t.ready(t0), Some(0));
        assert_eq!(t.ready(t0 + Duration::from_secs(1)), None);
        assert_eq!(t.ready(t0 + Duration::from_secs(9)), None);
        assert_eq!(t.ready(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(t.ready(t0 + Duration::from_secs(30)), Some(0));
    }

    #[test]
    fn counts_read_as_prose() {
        assert_eq!(count(1u64, "connection"), "1 connection");
        assert_eq!(count(0u64, "connection"), "0 connections");
        assert_eq!(count(812u64, "connection"), "812 connections");
        assert_eq!(elapsed(Duration::from_millis(850)), "850 ms");
        assert_eq!(elapsed(Duration::from_millis(4240)), "4.2 s");
    }
}
