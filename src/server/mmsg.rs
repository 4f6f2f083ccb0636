//! `recvmmsg`/`sendmmsg` behind a safe batch API: the UDP path's only
//! `unsafe` and its only C structs are here, as quinn-udp keeps them in its
//! `unix.rs`. What to do with a datagram (the guard, the counters, the
//! transform) is `udp.rs`'s business; this module only moves bytes.
//!
//! ```text
//! RecvBatch::new(slots)             headers zeroed once per socket turn
//! recv_batch(socket, batch, max)    one recvmmsg: up to `max` datagrams
//! batch.iter()                      (bytes, source) of each datagram
//! send_batch(socket, batch, ...)    one sendmmsg (more after a refusal):
//!                                   replies to sources of the batch, over
//!                                   the same headers
//! ```
//!
//! A datagram's slot is [`SLOT`] bytes, more than any UDP payload, so
//! nothing is ever truncated. The source addresses are decoded by
//! `socket2::SockAddr`, not by hand.

use std::io;
use std::mem::{self, size_of};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::ptr;

use socket2::{SockAddr, SockAddrStorage};

/// Datagrams taken (and answered) per `recvmmsg`/`sendmmsg` pair.
pub const BATCH: usize = 16;

/// Room for one datagram in the batch buffer: the largest UDP payload
/// (65,507 bytes over IPv4, 65,527 over IPv6) fits whole.
pub const SLOT: usize = 64 * 1024;

/// Up to [`BATCH`] datagrams, received into the caller's buffer, and the
/// headers that carry their replies back.
///
/// The headers point into the batch itself (names, iovecs) and into the
/// buffers of the call in progress; they are filled in by each call, just
/// before the system call, so the batch may move between calls.
///
/// `repr(C)`, with the slot buffer's address between the names and the
/// headers, so that zeroing them is two `memset`s of at most 2 KiB each,
/// as before this type existed: one of 3.3 KiB crosses glibc's threshold
/// for `rep stosb`, which callgrind counts as an instruction per byte
/// (+17 per datagram in `bench/callgrind`'s UDP cell).
#[repr(C)]
pub struct RecvBatch<'a> {
    /// Where the kernel writes the source address of each datagram; a
    /// reply's header points back at its request's.
    names: [SockAddrStorage; BATCH],
    /// The receive buffer, lent by the caller: slot `k` (`SLOT` bytes at
    /// `k * SLOT`) takes datagram `k`.
    slots: &'a mut [u8],
    /// One iovec per header: a slot while receiving, a reply while sending.
    iovs: [libc::iovec; BATCH],
    /// The headers: `recvmmsg` writes each datagram's length and address
    /// length here; the same headers are then rewritten for `sendmmsg`.
    hdrs: [libc::mmsghdr; BATCH],
    /// How many datagrams the last receive left in the batch; zero once
    /// their headers have been used for a send.
    received: usize,
}

impl std::fmt::Debug for RecvBatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("slots", &(self.slots.len() / SLOT))
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

/// One reply of a batch: `data[start..end]`, sent to the source of
/// datagram `to`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reply {
    /// The datagram (its index in the batch) whose source gets the reply.
    pub to: usize,
    /// Where the reply starts in the data handed to [`send_batch`].
    pub start: usize,
    /// Where it ends (exclusive).
    pub end: usize,
}

impl Reply {
    /// The reply's length in bytes.
    pub fn len(&self) -> usize {
        self.end - self.start
    }
}

impl<'a> RecvBatch<'a> {
    /// A batch receiving into `slots`: as many datagrams at a time as it
    /// has whole [`SLOT`]s, at most [`BATCH`]. The headers are zeroed here,
    /// once; each call then sets only the fields it uses.
    #[inline]
    pub fn new(slots: &'a mut [u8]) -> RecvBatch<'a> {
        // SAFETY: all-zero is a valid value of these C structs (and of
        // socket2's storage, which wraps one): null pointers, zero lengths,
        // no control data, an AF_UNSPEC address.
        let (names, iovs, mut hdrs): (_, _, [libc::mmsghdr; BATCH]) =
            unsafe { (mem::zeroed(), mem::zeroed(), mem::zeroed()) };
        // One iovec per message, receiving and sending alike.
        for hdr in &mut hdrs {
            hdr.msg_hdr.msg_iovlen = 1;
        }
        RecvBatch {
            slots,
            names,
            iovs,
            hdrs,
            received: 0,
        }
    }

    /// How many datagrams one receive can take.
    pub fn capacity(&self) -> usize {
        (self.slots.len() / SLOT).min(BATCH)
    }

    /// The datagrams of the batch, in order: each one's bytes and source
    /// (`None` for an address that is neither IPv4 nor IPv6, which a UDP
    /// socket does not report).
    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Option<SocketAddr>)> + '_ {
        let received = self.received;
        self.hdrs[..received]
            .iter()
            .zip(&self.names[..received])
            .zip(self.slots.chunks_exact(SLOT))
            .map(|((hdr, name), slot)| {
                // The kernel never writes more than the iovec's SLOT bytes.
                let bytes = &slot[..(hdr.msg_len as usize).min(slot.len())];
                // SAFETY: recvmmsg wrote the source address into `name`,
                // family first, and its length (at most the storage's size)
                // into `msg_namelen`, so family and length describe the
                // address; the storage is plain data without `Drop`, so a
                // bitwise copy of it is a value of its own.
                let addr = unsafe { SockAddr::new(ptr::read(name), hdr.msg_hdr.msg_namelen) };
                (bytes, addr.as_socket())
            })
    }
}

// The kernel writes a `sockaddr_storage` where a `SockAddrStorage` lies:
// socket2 defines it as one (on Unix, `#[repr(transparent)]` over libc's).
const _: () = assert!(
    size_of::<SockAddrStorage>() == size_of::<libc::sockaddr_storage>()
        && mem::align_of::<SockAddrStorage>() >= mem::align_of::<libc::sockaddr_storage>()
);

/// Receives up to `max` datagrams (fewer if the batch has less room) with
/// one non-blocking `recvmmsg`; returns how many. The batch's earlier
/// datagrams are gone.
///
/// Fewer than asked for means the queue is empty: a datagram arriving
/// later raises a new readiness edge. `WouldBlock` means there was none;
/// any error is returned as the kernel reported it (`Interrupted`
/// included: whether to retry is the caller's policy).
#[inline]
pub fn recv_batch(socket: &impl AsFd, batch: &mut RecvBatch<'_>, max: usize) -> io::Result<usize> {
    let want = max.min(batch.capacity());
    batch.received = 0;
    for (k, slot) in batch.slots.chunks_exact_mut(SLOT).take(want).enumerate() {
        batch.iovs[k] = libc::iovec {
            iov_base: slot.as_mut_ptr().cast(),
            iov_len: slot.len(),
        };
        let hdr = &mut batch.hdrs[k].msg_hdr;
        hdr.msg_name = (&raw mut batch.names[k]).cast();
        hdr.msg_namelen = batch.names[k].size_of();
        hdr.msg_iov = &raw mut batch.iovs[k];
    }
    // SAFETY: the first `want` headers each point at their own name
    // (namelen: its full size) and at one iovec (`msg_iovlen` is 1 from
    // `new` on; neither the kernel nor this module changes it) over their
    // own SLOT-sized part of `slots`, all borrowed mutably for the call;
    // their control pointers are null. recvmmsg writes at most that much
    // into each.
    let received = unsafe {
        libc::recvmmsg(
            socket.as_fd().as_raw_fd(),
            batch.hdrs.as_mut_ptr(),
            want as libc::c_uint,
            libc::MSG_DONTWAIT,
            ptr::null_mut(),
        )
    };
    if received < 0 {
        return Err(io::Error::last_os_error());
    }
    // recvmmsg fills at most the `want` headers it was given.
    batch.received = (received as usize).min(want);
    Ok(batch.received)
}

/// Sends `replies` (parts of `data`, each to the source of one datagram of
/// the batch) with `sendmmsg`, over the batch's own headers; the batch is
/// empty afterwards. Calls `outcome(m, result)` once for each reply `m`,
/// in order: the bytes sent, or why the kernel refused it. A refused reply
/// is not retried (UDP may drop; blocking the loop would be worse); the
/// rest still go.
///
/// Reply `m` answers datagram `m` or a later one, as replies in the
/// batch's order do (at most one per datagram): its header is rewritten
/// only after it has given up the address length the kernel put there.
/// Panics if a reply lies outside `data`, and in debug builds if it breaks
/// that order or is addressed to a datagram the batch does not hold.
#[inline]
pub fn send_batch(
    socket: &impl AsFd,
    batch: &mut RecvBatch<'_>,
    replies: &[Reply],
    data: &[u8],
    mut outcome: impl FnMut(usize, io::Result<usize>),
) {
    let received = mem::take(&mut batch.received).min(BATCH);
    assert!(
        replies.len() <= received,
        "{} replies to {received} datagrams",
        replies.len()
    );
    for (m, reply) in replies.iter().enumerate() {
        // Out of order, or to a datagram the batch does not hold, a reply
        // would go to the address of another datagram (or to none, which
        // the kernel refuses): wrong, though within the batch's memory,
        // which indexing checks.
        debug_assert!(
            m <= reply.to && reply.to < received,
            "reply {m} to datagram {} of {received}",
            reply.to
        );
        let bytes = &data[reply.start..reply.end];
        batch.iovs[m] = libc::iovec {
            // sendmmsg only reads through it.
            iov_base: bytes.as_ptr().cast_mut().cast(),
            iov_len: bytes.len(),
        };
        // Header `to` is still as recvmmsg left it (to >= m): its address
        // length is the kernel's.
        let namelen = batch.hdrs[reply.to].msg_hdr.msg_namelen;
        let hdr = &mut batch.hdrs[m].msg_hdr;
        hdr.msg_name = (&raw mut batch.names[reply.to]).cast();
        hdr.msg_namelen = namelen;
        hdr.msg_iov = &raw mut batch.iovs[m];
    }
    let fd = socket.as_fd().as_raw_fd();
    let hdrs = &mut batch.hdrs[..replies.len()];
    let mut next = 0;
    while next < hdrs.len() {
        // SAFETY: the headers from `next` on point at names of the batch
        // (with the lengths the kernel gave them) and at one iovec each
        // over a part of `data` (borrowed for the call; sendmmsg only
        // reads it), set above in this call; their control pointers are
        // null.
        let sent = unsafe {
            libc::sendmmsg(
                fd,
                hdrs[next..].as_mut_ptr(),
                (hdrs.len() - next) as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if sent < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // The first reply failed (sendmmsg reports an error only when
            // it sent none): it is dropped, the rest go on.
            outcome(next, Err(e));
            next += 1;
            continue;
        }
        let sent = sent as usize;
        for (m, hdr) in hdrs.iter().enumerate().skip(next).take(sent) {
            outcome(m, Ok(hdr.msg_len as usize));
        }
        next += sent;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::Duration;

    /// A blocking socket bound to port 0 of `ip`, whose reads give up after
    /// a generous bound (`recv_batch` does not block: it asks MSG_DONTWAIT).
    fn bound(ip: &str) -> UdpSocket {
        let socket = UdpSocket::bind((ip, 0)).expect("bind a loopback UDP socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("a read timeout");
        socket
    }

    /// Sends each `(client, bytes)` to `server`, then receives batches of
    /// at most `max` until every datagram has come; returns them as
    /// received, `(bytes, source)`, and the size of each batch. The last
    /// batch stays in `batch`.
    fn exchange(
        server: &UdpSocket,
        batch: &mut RecvBatch<'_>,
        sends: &[(&UdpSocket, &[u8])],
        max: usize,
    ) -> (Vec<(Vec<u8>, SocketAddr)>, Vec<usize>) {
        let to = server.local_addr().unwrap();
        for (client, bytes) in sends {
            client.send_to(bytes, to).unwrap();
        }
        let mut got = Vec::new();
        let mut sizes = Vec::new();
        while got.len() < sends.len() {
            // Wait for the next datagram, then take what is queued.
            let mut byte = [0u8; 1];
            server.peek(&mut byte).expect("a datagram within 20 s");
            let n = recv_batch(server, batch, max).expect("recv_batch");
            assert_eq!(n, batch.iter().count());
            assert!(n <= max, "{n} datagrams for a batch of at most {max}");
            sizes.push(n);
            for (bytes, from) in batch.iter() {
                got.push((bytes.to_vec(), from.expect("an IP source address")));
            }
        }
        (got, sizes)
    }

    /// Runs `exchange` until the datagrams come in batches of `sizes`.
    /// Loopback delivers a datagram before `send_to` returns, so the first
    /// try does; a loaded kernel may defer one, hence a bounded retry.
    fn exchange_in(
        server: &UdpSocket,
        batch: &mut RecvBatch<'_>,
        sends: &[(&UdpSocket, &[u8])],
        max: usize,
        sizes: &[usize],
    ) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut seen = Vec::new();
        for _ in 0..20 {
            let (got, got_sizes) = exchange(server, batch, sends, max);
            let sent: Vec<_> = sends
                .iter()
                .map(|(c, b)| (b.to_vec(), c.local_addr().unwrap()))
                .collect();
            assert_eq!(got, sent, "datagrams and their sources, in the order sent");
            if got_sizes == sizes {
                return got;
            }
            seen.push(got_sizes);
        }
        panic!("never received in batches of {sizes:?}: {seen:?}");
    }

    /// Reads one reply at `client`, from `server`.
    fn reply(client: &UdpSocket, server: &UdpSocket) -> Vec<u8> {
        let mut buf = vec![0u8; 128 * 1024];
        let (n, from) = client.recv_from(&mut buf).expect("a reply within 20 s");
        assert_eq!(from, server.local_addr().unwrap(), "the reply's source");
        buf.truncate(n);
        buf
    }

    /// Nothing more is queued at `client`.
    fn assert_no_more(client: &UdpSocket) {
        client.set_nonblocking(true).unwrap();
        let mut buf = vec![0u8; 128 * 1024];
        let r = client.recv_from(&mut buf);
        assert!(
            matches!(&r, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "a datagram nobody sent: {:?}",
            r.map(|(n, _)| buf[..n].to_vec())
        );
        client.set_nonblocking(false).unwrap();
    }

    /// Six datagrams from two sources, taken four and then two at a time
    /// (a short batch: the queue is empty); replies to some of them reach
    /// exactly their senders.
    fn two_sources(ip: &str) {
        let server = bound(ip);
        let (a, b) = (bound(ip), bound(ip));
        let mut slots = vec![0; BATCH * SLOT];
        let mut batch = RecvBatch::new(&mut slots);
        assert_eq!(batch.capacity(), BATCH);
        let sends: Vec<(&UdpSocket, &[u8])> = vec![
            (&a, b"a0"),
            (&b, b"b0"),
            (&a, b"a1"),
            (&b, b"b1 longer"),
            (&a, b""),
            (&b, b"b2"),
        ];
        let got = exchange_in(&server, &mut batch, &sends, 4, &[4, 2]);
        // The batch holds the last two: an empty one from a, b2 from b.
        let held: Vec<_> = batch.iter().map(|(d, f)| (d.to_vec(), f)).collect();
        assert_eq!(
            held,
            vec![(vec![], Some(got[4].1)), (b"b2".to_vec(), Some(got[5].1))]
        );

        // Answer both, over the batch's headers.
        let data = b"to ato b";
        let replies = [
            Reply {
                to: 0,
                start: 0,
                end: 4,
            },
            Reply {
                to: 1,
                start: 4,
                end: 8,
            },
        ];
        let mut outcomes = Vec::new();
        send_batch(&server, &mut batch, &replies, data, |m, r| {
            outcomes.push((m, r.map_err(|e| e.to_string())))
        });
        assert_eq!(outcomes, vec![(0, Ok(4)), (1, Ok(4))]);
        assert_eq!(batch.iter().count(), 0, "the batch was used for the send");
        assert_eq!(reply(&a, &server), b"to a");
        assert_eq!(reply(&b, &server), b"to b");
        assert_no_more(&a);
        assert_no_more(&b);

        // The same batch takes the next datagrams whole.
        let again = exchange_in(&server, &mut batch, &sends[..3], BATCH, &[3]);
        assert_eq!(again.len(), 3);
        let data = b"A0";
        let replies = [Reply {
            to: 2,
            start: 0,
            end: 2,
        }];
        send_batch(&server, &mut batch, &replies, data, |m, r| {
            assert_eq!((m, r.ok()), (0, Some(2)));
        });
        assert_eq!(reply(&a, &server), b"A0");
        assert_no_more(&a);
        assert_no_more(&b);
    }

    #[test]
    fn a_batch_from_two_ipv4_sources() {
        two_sources("127.0.0.1");
    }

    #[test]
    fn a_batch_from_two_ipv6_sources() {
        two_sources("::1");
    }

    /// A reply larger than a datagram can be is refused (EMSGSIZE) and
    /// reported as dropped; the replies before and after it still go.
    #[test]
    fn an_oversize_reply_is_dropped_and_the_rest_go() {
        let server = bound("127.0.0.1");
        let c = bound("127.0.0.1");
        let mut slots = vec![0; BATCH * SLOT];
        let mut batch = RecvBatch::new(&mut slots);
        let sends: Vec<(&UdpSocket, &[u8])> = vec![(&c, b"one"), (&c, b"two"), (&c, b"three")];
        exchange_in(&server, &mut batch, &sends, BATCH, &[3]);
        // 70,000 bytes: more than the 65,507 an IPv4 datagram can carry.
        let mut data = vec![b'x'; 70_000];
        data.extend_from_slice(b"ONETHREE");
        let replies = [
            Reply {
                to: 0,
                start: 70_000,
                end: 70_003,
            },
            Reply {
                to: 1,
                start: 0,
                end: 70_000,
            },
            Reply {
                to: 2,
                start: 70_003,
                end: 70_008,
            },
        ];
        let mut outcomes = Vec::new();
        send_batch(&server, &mut batch, &replies, &data, |m, r| {
            outcomes.push((m, r.map_err(|e| e.raw_os_error())))
        });
        assert_eq!(
            outcomes,
            vec![(0, Ok(3)), (1, Err(Some(libc::EMSGSIZE))), (2, Ok(5))]
        );
        assert_eq!(reply(&c, &server), b"ONE");
        assert_eq!(reply(&c, &server), b"THREE");
        assert_no_more(&c);
    }

    /// A receive with nothing queued reports `WouldBlock` and leaves an
    /// empty batch; a buffer of two slots takes two datagrams at a time.
    #[test]
    fn a_batch_is_as_large_as_its_buffer() {
        let server = bound("127.0.0.1");
        let c = bound("127.0.0.1");
        let mut slots = vec![0; 2 * SLOT + 100];
        let mut batch = RecvBatch::new(&mut slots);
        assert_eq!(batch.capacity(), 2);
        let e = recv_batch(&server, &mut batch, BATCH).expect_err("nothing was sent");
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(batch.iter().count(), 0);
        let sends: Vec<(&UdpSocket, &[u8])> = vec![(&c, b"1"), (&c, b"2"), (&c, b"3")];
        exchange_in(&server, &mut batch, &sends, BATCH, &[2, 1]);
    }
}
