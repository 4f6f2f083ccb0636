//! The process's file-descriptor limit: every connection is one descriptor.
//! Raised at start-up by the daemon ([`crate::daemon`]) and by the bench,
//! and checked against `max_connections`.

use std::io;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (the soft one is often
/// 1024 for compatibility with `select`, which we never use). Returns the
/// soft limit before and after.
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    // `None` is RLIM_INFINITY.
    let infinite = |v: Option<u64>| v.unwrap_or(u64::MAX);
    let limit = getrlimit(Resource::Nofile);
    let before = infinite(limit.current);
    if before < infinite(limit.maximum) {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        setrlimit(Resource::Nofile, raised)?;
        return Ok((before, infinite(limit.maximum)));
    }
    Ok((before, before))
}

/// Descriptors the daemon needs besides its connections: stdio, the poll,
/// its waker and signal pipe, listeners and UDP sockets, with room to spare.
pub const RESERVED_FDS: u64 = 32;

/// Descriptors the daemon needs to hold `max_connections` connections at
/// once: one each, plus [`RESERVED_FDS`].
pub fn descriptors_for(max_connections: usize) -> u64 {
    (max_connections as u64).saturating_add(RESERVED_FDS)
}

/// Whether `max_connections` fits under a descriptor limit of `limit`; if
/// not, accepting pauses at EMFILE before `max_connections` is reached
/// (which works, but the operator should know).
pub fn fits(max_connections: usize, limit: u64) -> bool {
    descriptors_for(max_connections) <= limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_counted() {
        assert_eq!(descriptors_for(10_000), 10_032);
        assert!(fits(10_000, 10_032));
        assert!(!fits(10_000, 10_031));
        assert!(!fits(usize::MAX, u64::MAX - 1));
    }

    #[test]
    fn raising_never_lowers() {
        let (before, after) = raise_nofile_limit().expect("getrlimit works");
        assert!(after >= before);
        // Raised already: a second call changes nothing.
        assert_eq!(
            raise_nofile_limit().expect("getrlimit works"),
            (after, after)
        );
    }
}
