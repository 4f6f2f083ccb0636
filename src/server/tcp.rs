//! TCP listening ("welcome") sockets.

use std::io;
use std::net::SocketAddr;
use std::num::NonZeroUsize;

use mio::net::TcpListener;
use socket2::{Domain, Protocol, SockRef, Socket, Type};

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
/// `socket_buffer` caps the kernel buffers of every connection it accepts
/// (see [`set_buffers`]); it is set before `listen`, so that no client
/// completes a handshake under the kernel's defaults.
pub fn bind(
    addr: SocketAddr,
    backlog: u32,
    reuse_port: bool,
    socket_buffer: Option<NonZeroUsize>,
) -> io::Result<Listener> {
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
    if let Some(size) = socket_buffer {
        set_buffers(SockRef::from(&socket), size)?;
    }
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    // The buffers are set already, before `listen`.
    adopt(socket, None)
}

/// Takes a socket that is already bound and listening (ours, or passed by
/// systemd, which hands them over blocking) into the loop. A passed one
/// gets `socket_buffer` now: handshakes from here on use it.
pub fn adopt(socket: Socket, socket_buffer: Option<NonZeroUsize>) -> io::Result<Listener> {
    if let Some(size) = socket_buffer {
        set_buffers(SockRef::from(&socket), size)?;
    }
    // Urgent data (telnet's Synch on Ctrl-C) stays in the stream as an
    // ordinary byte, in its place, instead of being cut out of it to wait
    // for a MSG_OOB read that never comes. Set here once: accepted sockets
    // inherit it (and the buffer sizes) from the listener.
    socket.set_out_of_band_inline(true)?;
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

/// Caps a socket's kernel buffers: `SO_RCVBUF` and `SO_SNDBUF` of `size`
/// bytes, which the kernel doubles for its bookkeeping (and clamps to
/// `net.core.rmem_max` / `wmem_max`). Setting them also turns the kernel's
/// autotuning off for that socket, which is the point: autotuning grows each
/// buffer up to `tcp_rmem`/`tcp_wmem`'s maxima (tens of MiB), so a few
/// hundred clients that send without reading could hold gigabytes and push
/// the whole host past `tcp_mem`, where every connection stalls.
///
/// On a listener it matters for the handshake: the window scale and the
/// largest window a connection will ever offer (its clamp) are chosen from
/// the listener's receive buffer when the SYN arrives, and the accepted
/// socket inherits the buffers. Capped only after `accept`, a connection
/// would already have offered a window sized for the autotuned maximum,
/// which its smaller buffer could not hold (the kernel then prunes and drops
/// what arrives, and the peer retransmits).
pub fn set_buffers(socket: SockRef<'_>, size: NonZeroUsize) -> io::Result<()> {
    socket.set_recv_buffer_size(size.get())?;
    socket.set_send_buffer_size(size.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_and_their_connections_get_the_buffer_size() {
        let size = NonZeroUsize::new(96 * 1024);
        let listener = bind("127.0.0.1:0".parse().expect("addr"), 16, false, size).expect("bind");
        // Linux reports twice what was set: half is for its bookkeeping.
        let doubled = 2 * 96 * 1024;
        let l = SockRef::from(&listener.socket);
        assert_eq!(l.recv_buffer_size().expect("SO_RCVBUF"), doubled);
        let _client = std::net::TcpStream::connect(listener.addr).expect("connect");
        let (accepted, _) = loop {
            match listener.socket.accept() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                other => break other.expect("accept"),
            }
        };
        // Inherited from the listener, before the loop sets them again.
        let a = SockRef::from(&accepted);
        assert_eq!(a.recv_buffer_size().expect("SO_RCVBUF"), doubled);
        assert_eq!(a.send_buffer_size().expect("SO_SNDBUF"), doubled);
        set_buffers(a, NonZeroUsize::new(64 * 1024).expect("non-zero")).expect("set");
        let a = SockRef::from(&accepted);
        assert_eq!(a.recv_buffer_size().expect("SO_RCVBUF"), 2 * 64 * 1024);
        assert_eq!(a.send_buffer_size().expect("SO_SNDBUF"), 2 * 64 * 1024);
    }
}
