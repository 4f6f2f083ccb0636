//! TCP listening ("welcome") sockets.

use std::io;
use std::net::SocketAddr;

use mio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

/// One listening socket and what the loop knows about it.
#[derive(Debug)]
pub struct Listener {
    /// The socket, registered READABLE (edge-triggered).
    pub socket: TcpListener,
    /// The address actually bound (port 0 resolved).
    pub addr: SocketAddr,
    /// Clients may be waiting in the kernel's accept queue: the last accept
    /// did not end in `WouldBlock`. Edge-triggered readiness sends no new
    /// event for clients already queued, so after a pause (connection limit,
    /// no file descriptors) this flag is what restarts accepting.
    pub pending: bool,
    /// Its place in the loop's run queue.
    pub mark: crate::server::turns::Mark,
}

/// Binds a listening socket the way a daemon should: built with socket2 so
/// that IPv6 is v6-only (`0.0.0.0:P` and `[::]:P` can coexist), the backlog is
/// ours (mio's own `bind` uses 128, too small for a load test's burst of
/// connects), close-on-exec and non-blocking from the start.
///
/// With `reuse_port`, several processes may listen on one port
/// (`SO_REUSEPORT`): the kernel spreads new connections across them.
pub fn bind(addr: SocketAddr, backlog: u32, reuse_port: bool) -> io::Result<Listener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Lets a restarted daemon bind while its old connections sit in
    // TIME_WAIT; on Linux it does not let two live listeners share a port.
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    adopt(socket)
}

/// Takes a socket that is already bound and listening (ours, or passed by
/// systemd, which hands them over blocking) into the loop.
pub fn adopt(socket: Socket) -> io::Result<Listener> {
    socket.set_nonblocking(true)?;
    let socket = TcpListener::from_std(socket.into());
    let addr = socket.local_addr()?;
    Ok(Listener {
        socket,
        addr,
        pending: false,
        mark: Default::default(),
    })
}

/// Accept errors that mean "out of a resource", not "this client failed":
/// retrying at once would spin, since the client stays queued (and, under
/// edge-triggered readiness, no new event comes for it).
pub fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
