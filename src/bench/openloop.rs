//! `tcp --rate R`: open-loop load, sans I/O. The schedule says when each
//! request is due; the `tcp` mode's loop sends it then, or as soon after as
//! the connection can, and measures its latency from when it was due.
//!
//! Requests are numbered n = 0, 1, 2, ... across all C connections: request
//! n is due at `start + n / R` on connection `n mod C`, so each connection
//! sends at R/C per second and the connections' sends are spread evenly in
//! between (connection i's k-th request is n = k·C + i).
//!
//! Why from when it was due (coordinated omission, as wrk2 corrects it): in
//! a closed loop a server that stalls for a second also stops the requests
//! that would have measured the stall, so one slow reply is counted where a
//! second's worth of users waited. Here the schedule keeps its times
//! whatever the server does: a request that cannot be sent at its time
//! (its connection still has `--pipeline` requests in flight, or its socket
//! buffer is full) waits, and the wait counts in its latency. When the
//! server cannot keep up, latency grows with the backlog, the achieved rate
//! falls below the offered one, and the report says so (`sent_late`,
//! `max_send_delay_us`, `achieved_per_s` against `offered_per_s`).

use std::time::{Duration, Instant};

use super::report::OpenLoopFigures;

/// A send this much after its time counts as late.
const LATE: Duration = Duration::from_millis(1);

/// The schedule of an open-loop run.
pub(super) struct Schedule {
    /// When request 0 is due.
    start: Instant,
    /// Requests per second.
    rate: u64,
    /// Connections the requests are spread over.
    conns: u64,
    /// Every request below this number is due (released).
    released: u64,
    /// Requests due in the measured window that were sent.
    due_and_sent: u64,
    /// Requests sent during the window.
    sent_in_window: u64,
    /// Of those, sent more than [`LATE`] after their time.
    late: u64,
    /// Their longest delay past their time, nanoseconds.
    max_delay_ns: u64,
}

impl Schedule {
    /// A schedule of `rate` requests per second over `conns` connections,
    /// the first due at `start`.
    pub fn new(start: Instant, rate: u64, conns: usize) -> Schedule {
        Schedule {
            start,
            rate: rate.max(1),
            conns: conns.max(1) as u64,
            released: 0,
            due_and_sent: 0,
            sent_in_window: 0,
            late: 0,
            max_delay_ns: 0,
        }
    }

    /// When request `n` is due.
    pub fn due(&self, n: u64) -> Instant {
        // u128: n · 10^9 overflows u64 after ~584 years at 1 request a
        // second, but after only minutes at millions a second.
        let ns = u128::from(n) * 1_000_000_000 / u128::from(self.rate);
        self.start + Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// Releases every request due by `now`; returns the connections
    /// (indexes 0..C) that got one, in order, one entry per request.
    pub fn release(&mut self, now: Instant) -> impl Iterator<Item = usize> + use<> {
        let first = self.released;
        while self.due(self.released) <= now {
            self.released += 1;
        }
        let conns = self.conns;
        (first..self.released).map(move |n| (n % conns) as usize)
    }

    /// When the next request falls due.
    pub fn next_due(&self) -> Instant {
        self.due(self.released)
    }

    /// The request connection `conn` owes as its `k`-th, if it is due:
    /// its number and its time.
    pub fn owed(&self, conn: usize, k: u64) -> Option<(u64, Instant)> {
        let n = k * self.conns + conn as u64;
        (n < self.released).then(|| (n, self.due(n)))
    }

    /// A request due at `due` is sent at `now`; `window`: the measured
    /// window, once open.
    pub fn sent(&mut self, due: Instant, now: Instant, window: Option<(Instant, Instant)>) {
        let Some((from, to)) = window else {
            return;
        };
        self.due_and_sent += u64::from(due >= from && due < to);
        if now < from || now >= to {
            return;
        }
        let delay = now.saturating_duration_since(due);
        self.sent_in_window += 1;
        self.late += u64::from(delay > LATE);
        self.max_delay_ns = self.max_delay_ns.max(delay.as_nanos() as u64);
    }

    /// How many requests are due in `[from, to)`.
    pub fn due_between(&self, from: Instant, to: Instant) -> u64 {
        let count_before = |t: Instant| -> u64 {
            // Requests n with due(n) < t: n < (t - start) · rate, rounded up.
            let ns = t.saturating_duration_since(self.start).as_nanos();
            let n = (ns * u128::from(self.rate)).div_ceil(1_000_000_000);
            u64::try_from(n).unwrap_or(u64::MAX)
        };
        count_before(to).saturating_sub(count_before(from))
    }

    /// The figures, given the window and the replies verified in it.
    pub fn figures(&self, window: Option<(Instant, Instant)>, replies: u64) -> OpenLoopFigures {
        let (scheduled, window_s) = match window {
            Some((from, to)) => (
                self.due_between(from, to),
                to.saturating_duration_since(from).as_secs_f64(),
            ),
            None => (0, 0.0),
        };
        OpenLoopFigures {
            offered_per_s: self.rate as f64,
            achieved_per_s: if window_s > 0.0 {
                replies as f64 / window_s
            } else {
                0.0
            },
            scheduled,
            sent: self.sent_in_window,
            sent_late: self.late,
            max_send_delay_us: self.max_delay_ns as f64 / 1000.0,
            unsent: scheduled.saturating_sub(self.due_and_sent),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_spread_evenly_over_time_and_connections() {
        let t0 = Instant::now();
        // 1,000 a second over 4 connections: one every millisecond, taking
        // turns.
        let mut s = Schedule::new(t0, 1000, 4);
        assert_eq!(s.due(0), t0);
        assert_eq!(s.due(3), t0 + Duration::from_millis(3));
        let got: Vec<usize> = s.release(t0 + Duration::from_micros(5500)).collect();
        assert_eq!(got, [0, 1, 2, 3, 0, 1]);
        assert_eq!(s.next_due(), t0 + Duration::from_millis(6));
        // Connection 1 owes its requests n = 1 and n = 5, not n = 9 yet.
        assert_eq!(s.owed(1, 0), Some((1, t0 + Duration::from_millis(1))));
        assert_eq!(s.owed(1, 1), Some((5, t0 + Duration::from_millis(5))));
        assert_eq!(s.owed(1, 2), None);
        assert_eq!(s.release(t0 + Duration::from_micros(5900)).count(), 0);
        assert_eq!(
            s.due_between(t0, t0 + Duration::from_secs(1)),
            1000,
            "one second holds exactly R requests"
        );
        assert_eq!(
            s.due_between(
                t0 + Duration::from_micros(500),
                t0 + Duration::from_micros(2500)
            ),
            2
        );
    }

    #[test]
    fn a_late_send_is_counted_and_its_delay_kept() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, 100, 1);
        s.release(t0 + Duration::from_millis(50)).for_each(drop);
        let window = Some((t0, t0 + Duration::from_millis(50)));
        s.sent(t0, t0 + Duration::from_micros(10), window);
        s.sent(s.due(1), s.due(1) + Duration::from_millis(30), window);
        // Due in the window, sent after it: not unsent, not timed.
        s.sent(s.due(2), s.due(2) + Duration::from_secs(9), window);
        // Before the window opened: not counted at all.
        s.sent(s.due(3), s.due(3), None);
        let f = s.figures(window, 2);
        assert_eq!((f.scheduled, f.sent, f.sent_late), (5, 2, 1));
        assert_eq!(f.unsent, 2);
        assert_eq!(f.max_send_delay_us, 30_000.0);
        assert_eq!(f.offered_per_s, 100.0);
        assert_eq!(f.achieved_per_s, 40.0);
    }
}
