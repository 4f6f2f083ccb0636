//! UDP sockets: each datagram is transformed on its own and answered to its
//! sender. Nothing is kept between datagrams.

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::ptr;
use std::time::Instant;

use log::debug;
use mio::net::UdpSocket;
use socket2::{Domain, Protocol, Socket, Type};

use crate::server::buffers::Shared;
use crate::server::guard::{UdpGuard, Verdict};
use crate::transform::{upcase_into, Mode};

/// Datagrams taken (and answered) per `recvmmsg`/`sendmmsg` pair.
pub const BATCH: usize = 16;

/// Room for one datagram in the batch buffer: the largest UDP payload
/// (65,507 bytes over IPv4, 65,527 over IPv6) fits whole.
pub const SLOT: usize = 64 * 1024;

/// Datagrams one socket may answer per turn before the others get theirs.
pub const DATAGRAMS_PER_TURN: usize = 256;

/// Receive errors in a row that end a socket's turn: more than a stale
/// ICMP error or two (reported once each), few enough that an error that
/// recurs on every call costs next to nothing.
pub const ERRORS_IN_A_ROW: usize = 8;

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
    /// Its place in the loop's run queue.
    pub mark: crate::server::turns::Mark,
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
    Ok(Endpoint {
        socket,
        addr,
        mark: Default::default(),
    })
}

impl Endpoint {
    /// Answers datagrams until the socket is drained, or until about
    /// `budget` datagrams. Returns true if the budget ran out with datagrams
    /// possibly still queued.
    ///
    /// Datagrams are taken in batches of up to [`BATCH`] with one
    /// `recvmmsg` and answered with one `sendmmsg`: two syscalls per batch
    /// instead of two per datagram. A batch shorter than asked for emptied
    /// the queue (a datagram arriving later raises a new edge), so no call
    /// is spent on learning `EAGAIN`.
    ///
    /// No error here stops the loop: each one costs at most one datagram,
    /// and counts against the budget like one; [`ERRORS_IN_A_ROW`] errors
    /// in a row end the turn (false: wait for the next event).
    pub fn serve(
        &mut self,
        mode: Mode,
        guard: &mut UdpGuard,
        shared: &mut Shared,
        budget: usize,
        now: Instant,
    ) -> bool {
        let fd = self.socket.as_raw_fd();
        // Lent out of `shared` for the call, so that its counters and
        // scratch buffer stay usable beside it.
        let mut slots = shared.take_udp_slots();
        let more = self.serve_batches(fd, mode, guard, shared, &mut slots, budget, now);
        shared.udp_slots = slots;
        more
    }

    #[allow(clippy::too_many_arguments)]
    fn serve_batches(
        &mut self,
        fd: std::os::fd::RawFd,
        mode: Mode,
        guard: &mut UdpGuard,
        shared: &mut Shared,
        slots: &mut [u8],
        budget: usize,
        now: Instant,
    ) -> bool {
        // Zeroed once per call; each batch sets the fields it uses. The
        // same headers carry the receive and then the send.
        // SAFETY: all-zero is a valid value for these C structs.
        let mut names: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
        let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        // Datagrams received, plus one per receive error: what the budget
        // counts.
        let mut answered = 0;
        let mut errors_in_a_row = 0;
        while answered < budget {
            let want = BATCH.min(budget - answered);
            for (k, chunk) in slots.chunks_mut(SLOT).take(want).enumerate() {
                iovs[k] = libc::iovec {
                    iov_base: chunk.as_mut_ptr().cast(),
                    iov_len: chunk.len(),
                };
                hdrs[k].msg_hdr.msg_name = (&raw mut names[k]).cast();
                hdrs[k].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
                hdrs[k].msg_hdr.msg_iov = &raw mut iovs[k];
                hdrs[k].msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: `want` headers, each pointing at its own name and one
            // iovec over its own SLOT-sized part of `slots`, all alive for
            // the call.
            let received = unsafe {
                libc::recvmmsg(
                    fd,
                    hdrs.as_mut_ptr(),
                    want as u32,
                    libc::MSG_DONTWAIT,
                    ptr::null_mut(),
                )
            };
            if received < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => return false,
                    io::ErrorKind::Interrupted => continue,
                    _ => {
                        // Typically ECONNREFUSED: an ICMP "port unreachable"
                        // for an earlier reply (its sender had gone) is
                        // reported on the next call. It concerns that old
                        // datagram only, and the kernel clears it once
                        // reported. An error that comes back call after
                        // call (ENOMEM, a socket in a state recvmmsg cannot
                        // serve) must not spin the loop: each costs a
                        // datagram's worth of budget, and a few in a row
                        // end the turn without asking for another. The
                        // socket is served again at its next readiness
                        // event: under edge-triggered epoll every new
                        // datagram (or error) raises one.
                        shared.counters.errors += 1;
                        debug!("udp://{}: receive error: {e}", self.addr);
                        answered += 1;
                        errors_in_a_row += 1;
                        if errors_in_a_row >= ERRORS_IN_A_ROW {
                            debug!(
                                "udp://{}: {errors_in_a_row} receive errors in a row: \
                                 waiting for the next event",
                                self.addr
                            );
                            return false;
                        }
                        continue;
                    }
                }
            }
            errors_in_a_row = 0;
            let received = received as usize;
            answered += received;
            // Transform every datagram into the scratch buffer, noting where
            // each reply lies; the send headers point into it only once it
            // has stopped growing.
            shared.scratch.clear();
            let mut replies: [(usize, usize, usize); BATCH] = [(0, 0, 0); BATCH];
            let mut count = 0;
            for k in 0..received {
                let len = hdrs[k].msg_len as usize;
                shared.counters.dgrams_in += 1;
                shared.counters.bytes_in += len as u64;
                let Some(from) = socket_addr(&names[k]) else {
                    continue;
                };
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
                    Verdict::OwnPort => {
                        shared.counters.dgrams_blocked += 1;
                        debug!(
                            "udp://{}: datagram from {from} dropped: its source port is one of ours \
                             (answering would bounce it back and forth)",
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
                let start = shared.scratch.len();
                upcase_into(mode, &slots[k * SLOT..k * SLOT + len], &mut shared.scratch);
                replies[count] = (k, start, shared.scratch.len());
                count += 1;
            }
            // Reply m answers request k >= m, whose header and iovec are no
            // longer needed: the headers are rewritten in place, in order.
            let base = shared.scratch.as_mut_ptr();
            for (m, &(k, start, end)) in replies[..count].iter().enumerate() {
                iovs[m] = libc::iovec {
                    // SAFETY: start..end lies within the scratch buffer.
                    iov_base: unsafe { base.add(start) }.cast(),
                    iov_len: end - start,
                };
                hdrs[m].msg_hdr.msg_name = (&raw mut names[k]).cast();
                hdrs[m].msg_hdr.msg_namelen = socket_len(&names[k]);
                hdrs[m].msg_hdr.msg_iov = &raw mut iovs[m];
            }
            self.send_replies(&mut hdrs[..count], shared);
            if received < want {
                return false;
            }
        }
        true
    }

    /// Sends the replies of one batch with `sendmmsg`, each to the address
    /// its request came from (`hdrs`: one header per reply, pointing at
    /// that address and at the reply in the scratch buffer). A reply the
    /// kernel refuses is dropped and counted, and the rest still go.
    fn send_replies(&mut self, hdrs: &mut [libc::mmsghdr], shared: &mut Shared) {
        let fd = self.socket.as_raw_fd();
        let mut next = 0;
        while next < hdrs.len() {
            // SAFETY: the headers from `next` on point at live names, iovecs
            // and scratch bytes that nothing modifies during the call.
            let sent = unsafe {
                libc::sendmmsg(
                    fd,
                    hdrs[next..].as_mut_ptr(),
                    (hdrs.len() - next) as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if sent < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // The first reply failed: EMSGSIZE (unicode growth made it
                // larger than a datagram can be; it is never truncated, let
                // alone mid-character), WouldBlock (the send buffer is full:
                // UDP may drop, and blocking the loop would be worse), or a
                // stale ICMP error. That reply is dropped; the rest go on.
                // SAFETY: the header's iovec is alive (see above).
                let len = unsafe { (*hdrs[next].msg_hdr.msg_iov).iov_len };
                shared.counters.dgrams_dropped += 1;
                debug!("udp://{}: a reply ({len} bytes) dropped: {e}", self.addr);
                next += 1;
                continue;
            }
            for hdr in &hdrs[next..next + sent as usize] {
                shared.counters.dgrams_out += 1;
                shared.counters.bytes_out += u64::from(hdr.msg_len);
            }
            next += sent as usize;
        }
    }
}

/// The sender's address the kernel wrote into `storage`.
fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, and
            // sockaddr_storage is large and aligned enough for any.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// The length of the socket address in `storage`, from its family.
fn socket_len(storage: &libc::sockaddr_storage) -> libc::socklen_t {
    let len = match i32::from(storage.ss_family) {
        libc::AF_INET6 => size_of::<libc::sockaddr_in6>(),
        _ => size_of::<libc::sockaddr_in>(),
    };
    len as libc::socklen_t
}

/// The address a client is counted under: an IPv4-mapped IPv6 address
/// (`::ffff:a.b.c.d`, from a dual-stack socket) is the IPv4 address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UdpConfig;
    use std::sync::mpsc;
    use std::time::Duration;

    /// An error that every `recvmmsg` call repeats must not keep one turn
    /// going: the turn ends within its budget and the loop moves on.
    ///
    /// A TCP socket that is not connected stands in for any such error:
    /// `recvmmsg` on it fails with `ENOTCONN` on every call, never with
    /// `EAGAIN`.
    #[test]
    fn a_recurring_receive_error_ends_the_turn() {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a TCP socket");
        let mut endpoint = adopt(socket).expect("adopt the socket");
        let (done, result) = mpsc::channel();
        // On a thread: if `serve` never returns, the test must still end.
        std::thread::spawn(move || {
            let mut guard = UdpGuard::new(&UdpConfig::default(), vec![]);
            let mut shared = Shared::new(1024);
            let budget = DATAGRAMS_PER_TURN;
            let more = endpoint.serve(Mode::Ascii, &mut guard, &mut shared, budget, Instant::now());
            let _ = done.send((more, shared.counters.errors));
        });
        let (more, errors) = result
            .recv_timeout(Duration::from_secs(20))
            .expect("serve did not return within 20 s: it spins on the recurring error");
        assert!(
            (1..=DATAGRAMS_PER_TURN as u64).contains(&errors),
            "{errors} receive errors counted in one turn"
        );
        // Nothing was received: the socket waits for its next event
        // instead of being queued for another turn of the same error.
        assert!(!more, "a socket failing every call was queued again");
    }
}
