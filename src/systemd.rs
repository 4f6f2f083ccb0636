//! What upcased speaks of systemd's protocols, without linking libsystemd:
//!
//! - **sd_notify**: `NOTIFY_SOCKET` names a unix datagram socket (a path, or
//!   an abstract name written with a leading `@`); each notification is one
//!   datagram of `KEY=VALUE` lines: `READY=1`, `STATUS=…`, `RELOADING=1` with
//!   `MONOTONIC_USEC=…`, `STOPPING=1`, `WATCHDOG=1`. Outside systemd the
//!   variable is unset and nothing is sent.
//! - **Socket activation** (`sd_listen_fds`): `LISTEN_PID`, `LISTEN_FDS` and
//!   `LISTEN_FDNAMES` hand over already-bound sockets as descriptors 3, 4, ….
//! - **Watchdog**: `WATCHDOG_USEC` (and `WATCHDOG_PID`) ask for a
//!   `WATCHDOG=1` at least that often.
//! - **File descriptor store**: `FDSTORE=1` with `FDNAME=` and the
//!   descriptors attached (`SCM_RIGHTS`, at most [`MAX_FDS_PER_MESSAGE`] a
//!   message) asks the manager to keep them; they come back to the next
//!   process of the service in `LISTEN_FDS`/`LISTEN_FDNAMES`, until
//!   `FDSTOREREMOVE=1` removes them or the service really stops.
//!   `BARRIER=1` with one descriptor, which the manager closes once it has
//!   read every message before it, is how a process about to exit knows
//!   its messages were taken (after it exits they could not be attributed
//!   to the service).

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// Sends `state` (e.g. `"READY=1"`) to the service manager, if there is one.
/// Returns whether a notification was sent.
pub fn notify(state: &str) -> io::Result<bool> {
    notify_with_fds(state, &[])
}

/// Sends `state` with `fds` attached (`SCM_RIGHTS`; at most
/// [`MAX_FDS_PER_MESSAGE`]), if there is a service manager.
pub fn notify_with_fds(state: &str, fds: &[BorrowedFd<'_>]) -> io::Result<bool> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let socket = UnixDatagram::unbound()?;
    // A manager that stopped reading must not hang a process that is
    // handing over (a full queue blocks the send).
    socket.set_write_timeout(Some(SEND_TIMEOUT))?;
    let target = target.as_encoded_bytes();
    if let Some(name) = target.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.connect_addr(&addr)?;
    } else {
        socket.connect(Path::new(OsStr::from_bytes(target)))?;
    }
    if fds.is_empty() {
        socket.send(state.as_bytes())?;
        return Ok(true);
    }
    if fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} descriptors in one notification (at most {MAX_FDS_PER_MESSAGE})",
                fds.len()
            ),
        ));
    }
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let mut space =
        vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other(
            "no room for the descriptors in the control message",
        ));
    }
    let sent = rustix::net::sendmsg(
        &socket,
        &[io::IoSlice::new(state.as_bytes())],
        &mut control,
        SendFlags::empty(),
    )?;
    if sent != state.len() {
        return Err(io::Error::other("notification sent in part"));
    }
    Ok(true)
}

/// The most descriptors one message may carry: Linux refuses more
/// (`SCM_MAX_FD`).
pub const MAX_FDS_PER_MESSAGE: usize = 253;

/// How long one notification may wait for room in the manager's queue.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// How many descriptors the service manager keeps for this service, when it
/// keeps any: `$FDSTORE`, which systemd 254 and later set from
/// `FileDescriptorStoreMax=` and our units set by hand for systemd 252
/// (`Environment=FDSTORE=`, kept equal to it). `None` without a manager or
/// without the variable: then nothing is stored.
pub fn fd_store_max() -> Option<usize> {
    std::env::var_os("NOTIFY_SOCKET")?;
    let max: usize = std::env::var("FDSTORE").ok()?.trim().parse().ok()?;
    (max > 0).then_some(max)
}

/// Asks the manager to keep `fds` under `name` (`FDSTORE=1`), in as many
/// messages as it takes. An error says how many went out before it.
pub fn store_fds(name: &str, fds: &[BorrowedFd<'_>]) -> Result<(), (usize, io::Error)> {
    let message = format!("FDSTORE=1\nFDNAME={name}");
    let mut sent = 0;
    for batch in fds.chunks(MAX_FDS_PER_MESSAGE) {
        notify_with_fds(&message, batch).map_err(|e| (sent, e))?;
        sent += batch.len();
    }
    Ok(())
}

/// Asks the manager to close and forget every descriptor it keeps under
/// `name` (`FDSTOREREMOVE=1`).
pub fn remove_stored(name: &str) -> io::Result<bool> {
    notify(&format!("FDSTOREREMOVE=1\nFDNAME={name}"))
}

/// Waits (at most `timeout`) until the manager has read every notification
/// sent before: `BARRIER=1` carries one end of a socket pair, which the
/// manager closes after reading it; the other end then reads EOF. `Ok(false)`
/// without a manager.
pub fn barrier(timeout: Duration) -> io::Result<bool> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    if !notify_with_fds("BARRIER=1", &[theirs.as_fd()])? {
        return Ok(false);
    }
    drop(theirs);
    ours.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
    let mut byte = [0u8; 1];
    match io::Read::read(&mut &ours, &mut byte) {
        Ok(0) => Ok(true),
        Ok(_) => Err(io::Error::other("unexpected data on the barrier socket")),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the service manager did not answer the barrier in time",
            ))
        }
        Err(e) => Err(e),
    }
}

/// The `RELOADING=1` message: systemd wants the moment the reload began on
/// `CLOCK_MONOTONIC` with it.
pub fn reloading_message() -> String {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
    format!("RELOADING=1\nMONOTONIC_USEC={usec}")
}

/// A socket handed over by the service manager.
#[derive(Debug)]
pub struct ListenFd {
    /// The descriptor, now ours.
    pub fd: OwnedFd,
    /// Its name from `LISTEN_FDNAMES` (`FileDescriptorName=`, else the unit's name).
    pub name: Option<String>,
}

/// Takes the sockets passed by socket activation, if they are meant for this
/// process (`LISTEN_PID` is our pid), and removes the variables so that no
/// child would think they are its own. Empty when not socket-activated.
pub fn take_listen_fds() -> io::Result<Vec<ListenFd>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").ok();
    // SAFETY (for remove_var): called before any other thread exists.
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(Vec::new());
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        // Meant for another process (we inherited the environment).
        return Ok(Vec::new());
    }
    let count: i32 = fds.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("LISTEN_FDS={fds:?} is not a number"),
        )
    })?;
    let names: Vec<String> = names
        .map(|n| n.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut taken = Vec::new();
    for i in 0..count {
        let raw = LISTEN_FDS_START + i;
        // systemd's descriptors must not leak into children either.
        // This stays libc: it is also the check that the number is an open
        // descriptor at all, which a safe wrapper (rustix takes `AsFd`)
        // would have to assume first.
        // SAFETY: fcntl on a descriptor number; failure is reported.
        if unsafe { libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("LISTEN_FDS={count} but descriptor {raw} is not open"),
            ));
        }
        taken.push(ListenFd {
            // SAFETY: systemd passed this descriptor to us (LISTEN_PID is our
            // pid); nothing else in the process owns it.
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
            name: names.get(i as usize).cloned(),
        });
    }
    Ok(taken)
}

/// How often systemd wants a `WATCHDOG=1`, if it does (`WATCHDOG_USEC`, for
/// this process according to `WATCHDOG_PID` when that is set).
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The monotonic clock in microseconds, read directly.
    fn monotonic_usec() -> u64 {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
    }

    /// MONOTONIC_USEC is CLOCK_MONOTONIC in microseconds, read at the call:
    /// between two readings of that clock around it.
    #[test]
    fn reloading_carries_the_monotonic_clock_in_microseconds() {
        let before = monotonic_usec();
        let message = reloading_message();
        let after = monotonic_usec();
        let usec: u64 = message
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected message {message:?}"));
        assert!(
            (before..=after).contains(&usec),
            "{usec} not within {before}..={after}"
        );
    }
}
