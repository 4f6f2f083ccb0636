//! The loop's one timer: a `timerfd` in the poll set that wakes it for the
//! nearest deadline (idle timeout, accept back-off, shutdown, watchdog).
//!
//! Why not `poll`'s timeout: epoll arms and cancels a kernel timer on every
//! wait that has one, and with idle timeouts on there always is one. With
//! one client that is a sleep and a wake-up per request; the timer was 1.5%
//! of the server's CPU there (`perf record`, 1 connection x 4 KiB). A timerfd
//! is armed only when the nearest deadline comes *earlier* than the time it
//! is set for. A deadline that moved later (a connection was active again)
//! leaves it alone: it fires early, the loop finds nothing due and arms it
//! for the new nearest deadline, once per timeout period instead of once
//! per request.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
    Timespec,
};

/// A monotonic timerfd and the instant it is set to fire at.
#[derive(Debug)]
pub struct Timer {
    /// The timerfd; a `File` so that reading its expiry count needs no `unsafe`.
    fd: File,
    /// When the timer fires; `None` when it is not armed (or has fired).
    armed: Option<Instant>,
}

impl Timer {
    /// A disarmed timer, registered READABLE under `token`.
    pub fn new(registry: &Registry, token: Token) -> io::Result<Timer> {
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        let fd = File::from(fd);
        registry.register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)?;
        Ok(Timer { fd, armed: None })
    }

    /// Makes sure the loop wakes by `at`. Costs a system call only when the
    /// timer is disarmed or set for later than `at`; the clock is read only
    /// then too.
    /// Inlined: the loop calls it every turn, and nearly always the timer
    /// is already set early enough.
    #[inline]
    pub fn wake_by(&mut self, at: Instant) -> io::Result<()> {
        if self.armed.is_some_and(|armed| armed <= at) {
            return Ok(());
        }
        self.arm(at)
    }

    /// Sets the timer for `at` (out of line: once per timeout period, or
    /// when a deadline comes earlier).
    #[inline(never)]
    fn arm(&mut self, at: Instant) -> io::Result<()> {
        // Relative to a clock read before the call, so it fires at `at` or
        // a little after, never before. Zero would disarm: at least 1 ns.
        let after = at
            .saturating_duration_since(Instant::now())
            .max(Duration::from_nanos(1));
        let spec = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: after.subsec_nanos().into(),
            },
        };
        // Relative (no TFD_TIMER_ABSTIME); the old value it returns is not needed.
        timerfd_settime(&self.fd, TimerfdTimerFlags::empty(), &spec)?;
        self.armed = Some(at);
        Ok(())
    }

    /// The timer's event arrived: consume the expiry (so the next one is a
    /// new edge) and mark it disarmed.
    pub fn fired(&mut self) {
        let mut expirations = [0u8; 8];
        // WouldBlock (a stale event after re-arming) leaves nothing to consume.
        let _ = self.fd.read(&mut expirations);
        self.armed = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};

    /// Waits for the timer's event; returns when it came.
    fn wait(poll: &mut Poll, timer: &mut Timer, limit: Duration) -> Option<Instant> {
        let mut events = Events::with_capacity(4);
        let end = Instant::now() + limit;
        while Instant::now() < end {
            poll.poll(&mut events, Some(end - Instant::now())).unwrap();
            if events.iter().any(|e| e.token() == Token(7)) {
                timer.fired();
                return Some(Instant::now());
            }
        }
        None
    }

    #[test]
    fn fires_at_the_deadline_not_before() {
        let mut poll = Poll::new().unwrap();
        let mut timer = Timer::new(poll.registry(), Token(7)).unwrap();
        let at = Instant::now() + Duration::from_millis(30);
        timer.wake_by(at).unwrap();
        let fired = wait(&mut poll, &mut timer, Duration::from_secs(5)).expect("no event");
        assert!(fired >= at, "fired {:?} early", at - fired);
        assert_eq!(timer.armed, None);
    }

    #[test]
    fn an_earlier_deadline_rearms_a_later_one_does_not() {
        let mut poll = Poll::new().unwrap();
        let mut timer = Timer::new(poll.registry(), Token(7)).unwrap();
        let now = Instant::now();
        timer.wake_by(now + Duration::from_secs(60)).unwrap();
        let soon = now + Duration::from_millis(20);
        timer.wake_by(soon).unwrap();
        assert_eq!(timer.armed, Some(soon));
        // Later than what is armed: kept (it will fire early, harmlessly).
        timer.wake_by(now + Duration::from_secs(120)).unwrap();
        assert_eq!(timer.armed, Some(soon));
        let fired = wait(&mut poll, &mut timer, Duration::from_secs(5)).expect("no event");
        assert!(fired >= soon);
    }

    #[test]
    fn a_deadline_already_past_fires_at_once() {
        let mut poll = Poll::new().unwrap();
        let mut timer = Timer::new(poll.registry(), Token(7)).unwrap();
        let past = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        timer.wake_by(past).unwrap();
        assert!(wait(&mut poll, &mut timer, Duration::from_secs(5)).is_some());
    }
}
