//! The process's file-descriptor limit: every connection is one descriptor.

use std::io;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (the soft one is often
/// 1024 for compatibility with `select`, which we never use). Returns the
/// soft limit before and after.
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one rlimit struct through
    // a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((before, limit.rlim_cur))
}

/// Descriptors the daemon needs besides its connections: stdio, the poll,
/// its waker and signal pipe, listeners and UDP sockets, with room to spare.
pub const RESERVED_FDS: u64 = 32;
