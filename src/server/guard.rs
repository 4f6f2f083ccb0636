//! Guards against clients that would use the daemon against others: a UDP
//! service answers whatever source a datagram claims, so a spoofed source
//! turns it into a reflector (and unicode growth into an amplifier, up to
//! three times the request).
//!
//! - Datagrams from the source ports of the classic services that answer
//!   anything (echo 7, daytime 13, chargen 19, time 37) are dropped: two such
//!   services, each answering the other, would bounce one datagram forever.
//! - A token bucket per source address caps how much any one address can be
//!   sent, which is what a reflection's victim would receive.
//!
//! The bucket table is bounded. When it is full of addresses active within
//! the last second, a new address is let through unrecorded (fail open): with
//! that many distinct sources a per-source limit no longer protects anyone,
//! and refusing strangers would punish legitimate clients.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Instant;

use crate::config::UdpConfig;

/// Most source addresses tracked at once (about 40 bytes each).
const MAX_SOURCES: usize = 16 * 1024;

/// What happens to one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Answer it.
    Answer,
    /// From a blocked source port.
    Blocked,
    /// Over its source's rate.
    Limited,
}

/// The UDP policy: blocked ports and per-source rate.
#[derive(Debug)]
pub struct UdpGuard {
    blocked_ports: Vec<u16>,
    limiter: Option<RateLimiter>,
    /// Whether loopback sources are rate-limited too.
    limit_loopback: bool,
}

impl UdpGuard {
    /// The policy of a `[udp]` table.
    pub fn new(config: &UdpConfig) -> UdpGuard {
        UdpGuard {
            blocked_ports: config.blocked_source_ports.clone(),
            limiter: config.rate_limit.map(RateLimiter::new),
            limit_loopback: config.rate_limit_loopback,
        }
    }

    /// Applies a reloaded `[udp]` table; buckets of a rate that did not
    /// change are kept.
    pub fn reconfigure(&mut self, config: &UdpConfig) {
        self.blocked_ports = config.blocked_source_ports.clone();
        self.limit_loopback = config.rate_limit_loopback;
        match (&mut self.limiter, config.rate_limit) {
            (Some(limiter), Some(rate)) if limiter.rate == rate => {}
            (_, rate) => self.limiter = rate.map(RateLimiter::new),
        }
    }

    /// Decides about one datagram from `ip`:`port` arriving at `now`.
    pub fn check(&mut self, ip: IpAddr, port: u16, now: Instant) -> Verdict {
        if self.blocked_ports.contains(&port) {
            return Verdict::Blocked;
        }
        if ip.is_loopback() && !self.limit_loopback {
            // Cannot be spoofed from outside this host: no reflection risk.
            return Verdict::Answer;
        }
        match self.limiter.as_mut().map(|limiter| limiter.allow(ip, now)) {
            Some(false) => Verdict::Limited,
            _ => Verdict::Answer,
        }
    }
}

/// Token buckets, one per source address: `rate` tokens a second, at most
/// `rate` stored (a burst of one second's worth).
#[derive(Debug)]
pub struct RateLimiter {
    rate: NonZeroU32,
    buckets: HashMap<IpAddr, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// A limiter of `rate` datagrams per second per source.
    pub fn new(rate: NonZeroU32) -> RateLimiter {
        RateLimiter {
            rate,
            buckets: HashMap::new(),
        }
    }

    /// Takes a token for `ip`, if it has one.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let rate = f64::from(self.rate.get());
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= MAX_SOURCES {
            // A bucket full again (idle for a second) says nothing: forget it.
            self.buckets
                .retain(|_, b| now.saturating_duration_since(b.updated).as_secs_f64() < 1.0);
            if self.buckets.len() >= MAX_SOURCES {
                return true;
            }
        }
        let bucket = self.buckets.entry(ip).or_insert(Bucket {
            tokens: rate,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn a_source_gets_a_burst_then_its_rate() {
        let mut limiter = RateLimiter::new(NonZeroU32::new(10).unwrap());
        let t0 = Instant::now();
        let burst = (0..20).filter(|_| limiter.allow(ip(1), t0)).count();
        assert_eq!(burst, 10, "one second's worth at once");
        // Another source is not affected.
        assert!(limiter.allow(ip(2), t0));
        // 300 ms later: 3 more tokens.
        let t1 = t0 + Duration::from_millis(300);
        let more = (0..20).filter(|_| limiter.allow(ip(1), t1)).count();
        assert_eq!(more, 3);
        // Long idle: refilled to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..20).filter(|_| limiter.allow(ip(1), t2)).count(), 10);
    }

    #[test]
    fn the_table_is_bounded_and_fails_open() {
        let mut limiter = RateLimiter::new(NonZeroU32::new(1).unwrap());
        let t0 = Instant::now();
        for i in 0..MAX_SOURCES as u32 {
            assert!(limiter.allow(IpAddr::from(i.to_be_bytes()), t0));
        }
        assert_eq!(limiter.buckets.len(), MAX_SOURCES);
        // All active: a newcomer passes, unrecorded.
        let newcomer = IpAddr::from([10, 255, 255, 255]);
        assert!(limiter.allow(newcomer, t0));
        assert!(limiter.allow(newcomer, t0));
        assert_eq!(limiter.buckets.len(), MAX_SOURCES);
        // A second later the idle ones are forgotten to make room.
        let t1 = t0 + Duration::from_secs(2);
        assert!(limiter.allow(newcomer, t1));
        assert_eq!(limiter.buckets.len(), 1);
    }

    /// A flood of distinct (spoofed) sources must cost the same per
    /// datagram as one known source, however full the table is: 100,000
    /// newcomers at a full table are a few milliseconds of work when each
    /// costs O(1), and many seconds when each scans the table.
    #[test]
    fn newcomers_at_a_full_table_cost_o1_each() {
        let mut limiter = RateLimiter::new(NonZeroU32::new(1).unwrap());
        let t0 = Instant::now();
        for i in 0..MAX_SOURCES as u32 {
            limiter.allow(IpAddr::from(i.to_be_bytes()), t0);
        }
        let started = Instant::now();
        for i in 0..100_000u32 {
            let newcomer = IpAddr::from((0x0a00_0000 | i).to_be_bytes());
            assert!(
                limiter.allow(newcomer, t0),
                "a newcomer at a full table passes"
            );
        }
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "100,000 newcomers at a full table took {took:?}"
        );
    }

    #[test]
    fn blocked_ports_are_dropped_before_counting() {
        let config = UdpConfig {
            listen: vec![],
            blocked_source_ports: vec![7, 19],
            rate_limit: NonZeroU32::new(1),
            rate_limit_loopback: false,
        };
        let mut guard = UdpGuard::new(&config);
        let now = Instant::now();
        assert_eq!(guard.check(ip(1), 19, now), Verdict::Blocked);
        assert_eq!(guard.check(ip(1), 40000, now), Verdict::Answer);
        assert_eq!(guard.check(ip(1), 40000, now), Verdict::Limited);
        // Loopback sources are exempt from the rate, not from the ports.
        let local = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(guard.check(local, 40000, now), Verdict::Answer);
        assert_eq!(guard.check(local, 40000, now), Verdict::Answer);
        assert_eq!(guard.check(local, 19, now), Verdict::Blocked);
        guard.reconfigure(&UdpConfig {
            rate_limit: None,
            ..config
        });
        assert_eq!(guard.check(ip(1), 40000, now), Verdict::Answer);
        assert_eq!(guard.check(ip(1), 7, now), Verdict::Blocked);
    }
}
