//! Guards against clients that would use the daemon against others: a UDP
//! service answers whatever source a datagram claims, so a spoofed source
//! turns it into a reflector (and unicode growth into an amplifier, up to
//! three times the request).
//!
//! - Datagrams from the source ports of the classic services that answer
//!   anything (echo 7, daytime 13, chargen 19, time 37) are dropped: two such
//!   services, each answering the other, would bounce one datagram forever.
//! - Datagrams from the daemon's own UDP ports are dropped, whatever their
//!   address. One claiming to come from one of our own sockets would be
//!   answered to ourselves, forever; one from another upcased (on another
//!   host, or another address of this one, on the same port: 12000 is
//!   everyone's default) would start the same endless bounce between the
//!   two. The port alone decides, not the address: a wildcard bind
//!   (`0.0.0.0:P`, `[::]:P`) is reached at every address of the host, a set
//!   that changes under us (DHCP, containers, added addresses), while
//!   clients send from ephemeral ports (32768-60999 on Linux), which the
//!   default port lies outside.
//! - A token bucket per source address caps how much any one address can be
//!   sent, which is what a reflection's victim would receive.
//!
//! What remains: two services that answer anything, on ports unknown to
//! each other (an upcased on 12000 and one on 12001, or upcased and another
//! echo-like service on a port not in `blocked_source_ports`). A datagram
//! spoofed from one to the other bounces between them until one drops it.
//! The rate limit slows that to `rate_limit` a second per address, except
//! between loopback addresses when `rate_limit_loopback` is off, and
//! nothing stops it with `rate_limit = 0`: list the other service's port
//! in `blocked_source_ports`.
//!
//! The guard is on the path of every datagram, so it must cost the same
//! whatever a flood does: O(1) per datagram, however many distinct sources
//! (spoofed ones cost an attacker nothing). The buckets live in two
//! generations, each a hash table of at most [`MAX_SOURCES`]: a source is
//! looked up in the current one, then in the previous one (and moved to the
//! current); once a [`GENERATION`] has passed, the previous generation is
//! dropped whole and the current one becomes the previous. Nothing is ever
//! scanned. Dropping loses nothing: a source absent for a whole generation
//! was last seen at least a second ago, and a bucket holds one second's
//! worth, so its bucket would be full again anyway. Honest sources keep
//! exact per-source token-bucket semantics.
//!
//! When the current generation is full (16,384 sources seen within a
//! second), a source it does not hold is let through unrecorded (fail
//! open) until the next generation starts, at most a second later; one
//! the previous generation holds is still charged there. With that many
//! distinct sources a per-source limit no longer protects anyone, and
//! refusing strangers would punish legitimate clients: failing safe would
//! hand a spoofer the power to shut everyone out for the price of 16,384
//! datagrams a second.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use crate::config::UdpConfig;

/// Most source addresses one generation holds: a hash table of 32,768
/// slots of 48 bytes, so two generations take about 3 MiB at worst (given
/// back once the flood is over).
const MAX_SOURCES: usize = 16 * 1024;

/// How long a generation of buckets lasts: the time an empty bucket takes
/// to fill again, so a source unseen for that long has nothing to forget.
const GENERATION: Duration = Duration::from_secs(1);

/// What happens to one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Answer it.
    Answer,
    /// From a blocked source port.
    Blocked,
    /// From one of the daemon's own UDP ports: ours, or another upcased's.
    OwnPort,
    /// Over its source's rate.
    Limited,
}

/// The UDP policy: blocked ports and per-source rate.
#[derive(Debug)]
pub struct UdpGuard {
    /// `[udp] blocked_source_ports`.
    blocked_ports: Vec<u16>,
    /// The ports of the daemon's own UDP sockets (fixed: listen addresses
    /// do not change live).
    own_ports: Vec<u16>,
    /// Per-source token buckets, while `rate_limit` is on.
    limiter: Option<RateLimiter>,
    /// Whether loopback sources are rate-limited too.
    limit_loopback: bool,
}

impl UdpGuard {
    /// The policy of a `[udp]` table, for a daemon whose UDP sockets are
    /// bound to `own_ports`.
    pub fn new(config: &UdpConfig, own_ports: Vec<u16>) -> UdpGuard {
        UdpGuard {
            blocked_ports: config.blocked_source_ports.clone(),
            own_ports,
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
        if self.own_ports.contains(&port) {
            return Verdict::OwnPort;
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
/// `rate` stored (a burst of one second's worth). Two generations of them
/// (see the module doc): O(1) per datagram, at most `2 * MAX_SOURCES`.
#[derive(Debug)]
pub struct RateLimiter {
    rate: NonZeroU32,
    /// Buckets of the sources seen since `started`.
    current: HashMap<IpAddr, Bucket>,
    /// Buckets of the generation before, of sources not seen since.
    previous: HashMap<IpAddr, Bucket>,
    /// When the current generation began.
    started: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens left at `updated` (a datagram takes one).
    tokens: f64,
    /// When `tokens` was last brought up to date.
    updated: Instant,
}

impl RateLimiter {
    /// A limiter of `rate` datagrams per second per source.
    pub fn new(rate: NonZeroU32) -> RateLimiter {
        RateLimiter {
            rate,
            current: HashMap::new(),
            previous: HashMap::new(),
            started: Instant::now(),
        }
    }

    /// Takes a token for `ip`, if it has one. At most three hash lookups,
    /// whatever the tables hold.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let rate = f64::from(self.rate.get());
        if now.saturating_duration_since(self.started) >= GENERATION {
            self.next_generation(now);
        }
        let bucket = if self.current.len() < MAX_SOURCES || self.current.contains_key(&ip) {
            let carried = self.previous.remove(&ip);
            self.current.entry(ip).or_insert(carried.unwrap_or(Bucket {
                tokens: rate,
                updated: now,
            }))
        } else if let Some(bucket) = self.previous.get_mut(&ip) {
            // No room to move it: it is charged where it is.
            bucket
        } else {
            // Full of sources seen within the second: fail open.
            return true;
        };
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

    /// Drops the previous generation whole; the current one takes its place.
    /// Once a generation: `clear` of entries without destructors resets the
    /// table's control bytes, it visits no entry.
    fn next_generation(&mut self, now: Instant) {
        std::mem::swap(&mut self.current, &mut self.previous);
        self.current.clear();
        // After a flood, give the memory back rather than keep a table sized
        // for it: what the last generation needed, with room to grow.
        if self.current.capacity() > 4 * self.previous.len().max(256) {
            self.current.shrink_to(self.previous.len());
        }
        self.started = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(limiter.current.len(), MAX_SOURCES);
        // Full of sources seen within the second: a newcomer passes,
        // unrecorded, however often.
        let newcomer = IpAddr::from([10, 255, 255, 255]);
        assert!(limiter.allow(newcomer, t0));
        assert!(limiter.allow(newcomer, t0));
        assert_eq!(limiter.current.len(), MAX_SOURCES);
        // A known one is still limited (rate 1: its token is spent).
        assert!(!limiter.allow(IpAddr::from([0, 0, 0, 7]), t0));
        // A generation later there is room: the newcomer is counted.
        let t1 = t0 + GENERATION;
        assert!(limiter.allow(newcomer, t1));
        assert!(
            !limiter.allow(newcomer, t1),
            "rate 1: its one token is spent"
        );
        assert_eq!(limiter.current.len(), 1);
        assert_eq!(limiter.previous.len(), MAX_SOURCES);
        // Two generations later, the flood's sources are gone entirely.
        let t2 = t1 + GENERATION;
        limiter.allow(newcomer, t2);
        assert_eq!((limiter.current.len(), limiter.previous.len()), (1, 0));
    }

    #[test]
    fn a_source_keeps_its_bucket_across_a_generation() {
        let mut limiter = RateLimiter::new(NonZeroU32::new(10).unwrap());
        let t0 = limiter.started;
        // Drained just before the generation ends...
        let t1 = t0 + Duration::from_millis(950);
        assert_eq!((0..20).filter(|_| limiter.allow(ip(1), t1)).count(), 10);
        // ... and asked again just after: 100 ms is one token, not a fresh
        // burst (a forgotten bucket would give 10).
        let t2 = t0 + Duration::from_millis(1050);
        assert_eq!((0..20).filter(|_| limiter.allow(ip(1), t2)).count(), 1);
        assert!(limiter.current.contains_key(&ip(1)));
        assert!(!limiter.previous.contains_key(&ip(1)));
    }

    #[test]
    fn a_known_source_is_charged_even_when_the_new_generation_is_full() {
        let mut limiter = RateLimiter::new(NonZeroU32::new(10).unwrap());
        let t0 = limiter.started;
        let t1 = t0 + Duration::from_millis(950);
        assert_eq!((0..20).filter(|_| limiter.allow(ip(1), t1)).count(), 10);
        // A new generation filled by a flood before the source comes back.
        let t2 = t0 + GENERATION;
        for i in 0..MAX_SOURCES as u32 {
            limiter.allow(IpAddr::from((0x0a00_0000 | i).to_be_bytes()), t2);
        }
        assert_eq!(limiter.current.len(), MAX_SOURCES);
        // Charged in the previous generation: 50 ms is no token yet.
        assert!(!limiter.allow(ip(1), t2));
        let t3 = t1 + Duration::from_millis(150);
        assert!(limiter.allow(ip(1), t3), "150 ms is a token");
        assert!(!limiter.allow(ip(1), t3));
    }

    #[test]
    fn memory_is_given_back_after_a_flood() {
        let mut limiter = RateLimiter::new(NonZeroU32::new(10).unwrap());
        let t0 = limiter.started;
        for i in 0..MAX_SOURCES as u32 {
            limiter.allow(IpAddr::from(i.to_be_bytes()), t0);
        }
        let flooded = limiter.current.capacity();
        // Two quiet generations with one honest source.
        limiter.allow(ip(1), t0 + GENERATION);
        limiter.allow(ip(1), t0 + GENERATION * 2);
        limiter.allow(ip(1), t0 + GENERATION * 3);
        let now = limiter.current.capacity() + limiter.previous.capacity();
        assert!(now < flooded / 8, "{now} buckets kept after {flooded}");
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
        let mut guard = UdpGuard::new(&config, vec![]);
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

    #[test]
    fn the_daemons_own_ports_are_blocked_from_any_address() {
        let config = UdpConfig {
            listen: vec![],
            blocked_source_ports: vec![7],
            rate_limit: None,
            rate_limit_loopback: false,
        };
        let mut guard = UdpGuard::new(&config, vec![12000, 12001]);
        let now = Instant::now();
        let local = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(guard.check(local, 12000, now), Verdict::OwnPort);
        assert_eq!(guard.check(ip(1), 12001, now), Verdict::OwnPort);
        assert_eq!(guard.check(ip(1), 7, now), Verdict::Blocked);
        assert_eq!(guard.check(ip(1), 12002, now), Verdict::Answer);
        // A reload changes the configured list, not the sockets' ports.
        guard.reconfigure(&UdpConfig {
            blocked_source_ports: vec![],
            ..config
        });
        assert_eq!(guard.check(ip(1), 7, now), Verdict::Answer);
        assert_eq!(guard.check(ip(1), 12000, now), Verdict::OwnPort);
    }
}
