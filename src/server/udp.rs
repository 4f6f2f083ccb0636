//! UDP sockets: each datagram is transformed on its own and answered to its
//! sender. Nothing is kept between datagrams.
//!
//! This file is the policy (the guard, the counters, the transform, the
//! budget and what an error costs); moving batches of datagrams in and out
//! of the kernel is `mmsg.rs`'s, and so is every `unsafe` of the UDP path.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use log::debug;
use mio::net::UdpSocket;
use socket2::{Domain, Protocol, Socket, Type};

use crate::server::buffers::Shared;
use crate::server::guard::{UdpGuard, Verdict};
use crate::server::mmsg::{self, RecvBatch, Reply};
use crate::transform::{upcase_into, Mode};

pub use crate::server::mmsg::{BATCH, SLOT};

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
    /// `recvmmsg` and answered with one `sendmmsg` (`mmsg.rs`): two
    /// syscalls per batch instead of two per datagram. A batch shorter than
    /// asked for emptied the queue (a datagram arriving later raises a new
    /// edge), so no call is spent on learning `EAGAIN`.
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
        // Lent out of `shared` for the call, so that its counters and
        // scratch buffer stay usable beside it.
        let mut slots = shared.take_udp_slots();
        // The headers are zeroed once per call, here; the same headers
        // carry each batch's receive and then its send.
        let mut batch = RecvBatch::new(&mut slots);
        let more = self.serve_batches(&mut batch, mode, guard, shared, budget, now);
        shared.udp_slots = slots;
        more
    }

    fn serve_batches(
        &mut self,
        batch: &mut RecvBatch<'_>,
        mode: Mode,
        guard: &mut UdpGuard,
        shared: &mut Shared,
        budget: usize,
        now: Instant,
    ) -> bool {
        // Datagrams received, plus one per receive error: what the budget
        // counts.
        let mut answered = 0;
        let mut errors_in_a_row = 0;
        while answered < budget {
            let want = BATCH.min(budget - answered);
            let received = match mmsg::recv_batch(&self.socket, batch, want) {
                Ok(received) => received,
                Err(e) => match e.kind() {
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
                        shared.counters.errors_udp_receive += 1;
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
                },
            };
            errors_in_a_row = 0;
            answered += received;
            let mut replies = [Reply::default(); BATCH];
            let count = self.answer(batch, mode, guard, shared, now, &mut replies);
            let replies = &replies[..count];
            let (addr, counters) = (self.addr, &mut shared.counters);
            mmsg::send_batch(&self.socket, batch, replies, &shared.scratch, |m, sent| {
                match sent {
                    Ok(bytes) => {
                        counters.dgrams_out += 1;
                        counters.bytes_out += bytes as u64;
                    }
                    Err(e) => {
                        // EMSGSIZE (unicode growth made the reply larger
                        // than a datagram can be; it is never truncated,
                        // let alone mid-character), WouldBlock (the send
                        // buffer is full: UDP may drop, and blocking the
                        // loop would be worse), or a stale ICMP error. That
                        // reply is dropped; the rest go on.
                        counters.dgrams_dropped += 1;
                        let len = replies[m].len();
                        debug!("udp://{addr}: a reply ({len} bytes) dropped: {e}");
                    }
                }
            });
            if received < want {
                return false;
            }
        }
        true
    }

    /// Counts the batch's datagrams, checks each against the guard and
    /// transforms those it lets through into the scratch buffer; fills
    /// `replies` (where each reply lies, and whom it answers) and returns
    /// how many.
    fn answer(
        &self,
        batch: &RecvBatch<'_>,
        mode: Mode,
        guard: &mut UdpGuard,
        shared: &mut Shared,
        now: Instant,
        replies: &mut [Reply; BATCH],
    ) -> usize {
        shared.scratch.clear();
        let mut count = 0;
        for (k, (datagram, from)) in batch.iter().enumerate() {
            shared.counters.dgrams_in += 1;
            shared.counters.bytes_in += datagram.len() as u64;
            let Some(from) = from else {
                continue;
            };
            match guard.check(super::canonical_ip(from.ip()), from.port(), now) {
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
            upcase_into(mode, datagram, &mut shared.scratch);
            replies[count] = Reply {
                to: k,
                start,
                end: shared.scratch.len(),
            };
            count += 1;
        }
        count
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
            let _ = done.send((more, shared.counters.errors()));
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
