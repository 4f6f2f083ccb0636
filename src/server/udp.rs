//! UDP sockets: each datagram is transformed on its own and answered to its
//! sender. Nothing is kept between datagrams.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use log::debug;
use mio::net::UdpSocket;
use socket2::{Domain, Protocol, Socket, Type};

use crate::server::buffers::Shared;
use crate::server::guard::{UdpGuard, Verdict};
use crate::transform::{upcase_into, Mode};

/// Datagrams one socket may answer per turn before the others get theirs.
pub const DATAGRAMS_PER_TURN: usize = 256;

/// Datagrams answered at shutdown, at most: more than a default receive
/// buffer can queue, yet a bound against a flood that never pauses.
pub const SHUTDOWN_BUDGET: usize = 4096;

/// One UDP socket.
#[derive(Debug)]
pub struct Endpoint {
    /// The socket, registered READABLE (edge-triggered).
    pub socket: UdpSocket,
    /// The address actually bound (port 0 resolved).
    pub addr: SocketAddr,
}

/// Binds a UDP socket: v6-only for IPv6, non-blocking, and deliberately
/// without `SO_REUSEADDR` (on UDP it would let another process bind the same
/// port and take a share of our datagrams).
///
/// `reuse_port` (`SO_REUSEPORT`) is the exception: several upcased processes
/// sharing a port on purpose, the kernel spreading datagrams by flow.
pub fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<Endpoint> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    adopt(socket)
}

/// Takes a bound UDP socket (ours, or passed by systemd) into the loop.
pub fn adopt(socket: Socket) -> io::Result<Endpoint> {
    socket.set_nonblocking(true)?;
    let socket = UdpSocket::from_std(socket.into());
    let addr = socket.local_addr()?;
    Ok(Endpoint { socket, addr })
}

impl Endpoint {
    /// Answers datagrams until `WouldBlock`, or until `budget` datagrams.
    /// Returns true if the budget ran out with datagrams possibly still queued.
    ///
    /// No error here stops the loop: each one costs at most one datagram.
    pub fn serve(
        &mut self,
        mode: Mode,
        guard: &mut UdpGuard,
        shared: &mut Shared,
        budget: usize,
        now: Instant,
    ) -> bool {
        let mut answered = 0;
        loop {
            if answered == budget {
                return true;
            }
            let (n, from) = match self.socket.recv_from(&mut shared.read_buf) {
                Ok(received) => received,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Typically ECONNREFUSED: an ICMP "port unreachable" for
                    // an earlier reply (its sender had gone) is reported on
                    // the next call. It concerns that old datagram only.
                    shared.counters.errors += 1;
                    debug!("udp://{}: receive error: {e}", self.addr);
                    continue;
                }
            };
            answered += 1;
            shared.counters.dgrams_in += 1;
            shared.counters.bytes_in += n as u64;
            match guard.check(canonical_ip(from.ip()), from.port(), now) {
                Verdict::Answer => {}
                Verdict::Blocked => {
                    shared.counters.dgrams_blocked += 1;
                    debug!(
                        "udp://{}: datagram from {from} dropped: blocked source port",
                        self.addr
                    );
                    continue;
                }
                Verdict::Limited => {
                    shared.counters.dgrams_limited += 1;
                    debug!(
                        "udp://{}: datagram from {from} dropped: over rate_limit",
                        self.addr
                    );
                    continue;
                }
            }
            shared.scratch.clear();
            upcase_into(mode, &shared.read_buf[..n], &mut shared.scratch);
            match self.socket.send_to(&shared.scratch, from) {
                Ok(sent) => {
                    shared.counters.dgrams_out += 1;
                    shared.counters.bytes_out += sent as u64;
                }
                Err(e) => {
                    // EMSGSIZE: unicode growth made the reply larger than a
                    // datagram can be (it is never truncated mid-character).
                    // WouldBlock: the socket's send buffer is full; UDP may
                    // drop, and blocking the loop for one datagram would be
                    // worse. ECONNREFUSED: a stale ICMP error surfaced here.
                    shared.counters.dgrams_dropped += 1;
                    debug!(
                        "udp://{}: reply to {from} ({} bytes) dropped: {e}",
                        self.addr,
                        shared.scratch.len()
                    );
                }
            }
        }
    }
}

/// The address a client is counted under: an IPv4-mapped IPv6 address
/// (`::ffff:a.b.c.d`, from a dual-stack socket) is the IPv4 address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
