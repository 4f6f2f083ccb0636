//! The sd_notify protocol, the part upcased needs: tell the service manager
//! when the daemon is ready and when it is stopping.
//!
//! Under systemd (`Type=notify`), `NOTIFY_SOCKET` names a unix datagram
//! socket: a path, or an abstract name written with a leading `@`. Each
//! notification is one datagram of `KEY=VALUE` lines. Outside systemd the
//! variable is unset and nothing is sent.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// Sends `state` (e.g. `"READY=1"`) to the service manager, if there is one.
/// Returns whether a notification was sent.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let socket = UnixDatagram::unbound()?;
    let target = target.as_encoded_bytes();
    if let Some(name) = target.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        let path = Path::new(OsStr::from_bytes(target));
        socket.send_to(state.as_bytes(), path)?;
    }
    Ok(true)
}
