//! Buffers shared by every client of the loop.
//!
//! One thread serves every client, so one read buffer and one scratch buffer
//! serve them all: a connection borrows them for one call and keeps nothing.
//! Only replies the kernel refused need a buffer of their own; those come from
//! a small pool and go back to it when they drain.
//!
//! Memory a burst took is given back when it ends: the pool keeps at most
//! `POOL_KEEP` buffers of at most `POOL_MAX_CAPACITY`, every other buffer is
//! freed, and once a mebibyte of them has been freed the allocator is asked
//! to hand its free pages back to the kernel ([`trim`]).

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::server::stats::Counters;

/// Size of the shared read buffer: one `read`/`recv_from` takes at most this
/// much. 64 KiB holds the largest UDP datagram (65,507 bytes over IPv4,
/// 65,527 over IPv6) whole.
pub const READ_BUF_SIZE: usize = 64 * 1024;

/// Everything a handler may borrow from the loop for one call.
#[derive(Debug)]
pub struct Shared {
    /// Where the kernel's bytes land.
    pub read_buf: Box<[u8]>,
    /// Where the transform writes before the reply is sent.
    pub scratch: Vec<u8>,
    /// Output buffers for connections whose replies the kernel refused.
    pub pool: BufPool,
    /// Reading from a connection pauses while its pending output is at least this.
    pub max_pending_output: usize,
    /// What the daemon counts (logged on SIGUSR1 and at shutdown).
    pub counters: Counters,
    /// Receive buffers for a batch of datagrams (`udp::BATCH` slots of
    /// `udp::SLOT` bytes), allocated at the first datagram: a TCP-only
    /// daemon never pays for them, and the kernel backs with memory only
    /// the pages datagrams actually touch.
    pub udp_slots: Vec<u8>,
}

impl Shared {
    /// Buffers for a loop whose connections may queue `max_pending_output` bytes.
    pub fn new(max_pending_output: usize) -> Shared {
        Shared {
            read_buf: vec![0; READ_BUF_SIZE].into_boxed_slice(),
            scratch: Vec::with_capacity(READ_BUF_SIZE),
            pool: BufPool::default(),
            max_pending_output,
            counters: Counters::default(),
            udp_slots: Vec::new(),
        }
    }

    /// Takes the batch receive buffers (see `udp_slots`; allocated on
    /// first use); the caller puts them back.
    pub fn take_udp_slots(&mut self) -> Vec<u8> {
        if self.udp_slots.is_empty() {
            return vec![0; crate::server::udp::BATCH * crate::server::udp::SLOT];
        }
        std::mem::take(&mut self.udp_slots)
    }
}

/// Replies the kernel refused, waiting for it to take them: `data[sent..]`.
/// A connection holds one (boxed: 8 bytes in the connection) only while it
/// has such replies, which keeps idle connections small.
///
/// Bytes the kernel took are reclaimed as it takes them (see `consume` and
/// `make_room`), not only when the buffer drains: a client that reads
/// slowly but steadily may never let it drain, and the buffer would
/// otherwise hold every byte sent since it was last empty. So the
/// allocation, not only the pending bytes, stays within
/// [`OutBuf::bound`].
#[derive(Debug, Default)]
pub struct OutBuf {
    /// The queued bytes.
    pub data: Vec<u8>,
    /// How many of them the kernel has taken.
    pub sent: usize,
}

impl OutBuf {
    /// Bytes still to send.
    pub fn pending(&self) -> usize {
        self.data.len() - self.sent
    }

    /// The bytes still to send, in order.
    pub fn unsent(&self) -> &[u8] {
        &self.data[self.sent..]
    }

    /// The kernel took `n` more bytes. Once the bytes sent are at least as
    /// many as those still pending, the pending ones move to the front: each
    /// move copies no more than was sent since the last one, so reclaiming
    /// costs at most one byte copied per byte sent.
    pub fn consume(&mut self, n: usize) {
        self.sent += n;
        if self.sent >= self.pending() {
            self.reclaim();
        }
    }

    /// Makes room for `need` more bytes without letting the capacity pass
    /// `bound`, provided the pending bytes plus `need` fit in it: sent
    /// bytes are dropped first when growing would pass the bound, and
    /// growth doubles (few reallocations) but stops at the bound.
    pub fn make_room(&mut self, need: usize, bound: usize) {
        if self.data.capacity() - self.data.len() >= need {
            return;
        }
        if self.sent > 0 && self.data.len() + need > bound {
            self.reclaim();
        }
        let len = self.data.len();
        if self.data.capacity() - len < need {
            let target = self
                .data
                .capacity()
                .saturating_mul(2)
                .min(bound)
                .max(len + need);
            self.data.reserve_exact(target - len);
        }
    }

    /// Most bytes one connection's buffer may hold: `max_pending_output`
    /// (reading pauses at it, so at most that much is pending when a read
    /// is answered) plus the largest reply one read can produce (a read
    /// takes at most `READ_BUF_SIZE` and at most `max_pending_output`
    /// bytes; the transform's growth applies to them and to the up to 3
    /// bytes it carried over). For a telnet client pass
    /// `telnet::max_growth()` and add one `telnet::AYT_ANSWER`: escaped
    /// 0xFF bytes and answers to AYT grow more than the transform does.
    pub fn bound(max_pending_output: usize, growth: usize) -> usize {
        max_pending_output + OutBuf::reply_bound(max_pending_output, growth)
    }

    /// The largest reply one read can produce (see `bound`), and the
    /// spare room the transform may reserve while producing it
    /// (`transform::reserve_slack`, the most of any mode: the bound is
    /// one of the allocation, not only of the bytes).
    pub fn reply_bound(max_pending_output: usize, growth: usize) -> usize {
        growth * (READ_BUF_SIZE.min(max_pending_output) + 3)
            + crate::transform::reserve_slack(crate::transform::Mode::Unicode)
    }

    /// Drops the bytes already sent, moving the pending ones to the front.
    fn reclaim(&mut self) {
        self.data.drain(..self.sent);
        self.sent = 0;
    }
}

/// A free list of output buffers, so the hot path does not allocate.
#[derive(Debug, Default)]
pub struct BufPool {
    /// Empty buffers with their capacity kept. The boxes themselves are
    /// what is reused: taking one must not allocate.
    #[allow(clippy::vec_box)]
    free: Vec<Box<OutBuf>>,
}

/// How many free buffers the pool keeps; more are freed. Enough to spare
/// the allocator on the hot path (a buffer is only needed while a client is
/// behind on its replies), small enough that memory returns to baseline
/// after a burst of slow readers: at most 16 × 64 KiB kept.
const POOL_KEEP: usize = 16;

/// A buffer that grew past this (a client that fell behind by a large
/// backlog) is shrunk to it before it is kept, so the pool does not pin a
/// burst's peak; shrinking in place is cheaper than freeing it and
/// allocating a new one for the next client.
const POOL_MAX_CAPACITY: usize = 64 * 1024;

/// Bytes of output buffers freed since free memory was last handed back.
/// Process-wide, as the allocator is (and `trim` with it).
static FREED: AtomicUsize = AtomicUsize::new(0);

/// Hand free memory back once this many bytes of output buffers have been
/// freed: seldom enough to cost nothing in steady state (buffers are then
/// reused from the pool, not freed), often enough that what a burst leaves
/// behind stays within a mebibyte.
const TRIM_AFTER: usize = 1 << 20;

impl Drop for OutBuf {
    /// Counts the buffer's memory towards the next [`trim`].
    fn drop(&mut self) {
        let bytes = self.data.capacity();
        let freed = FREED.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if freed >= TRIM_AFTER {
            FREED.store(0, Ordering::Relaxed);
            trim();
        }
    }
}

/// Gives the allocator's free pages back to the kernel. glibc's `free`
/// returns memory by itself only from the top of the heap (past
/// `M_TRIM_THRESHOLD`) and from chunks it `mmap`ed; the output buffers of a
/// burst of clients lie interleaved in the heap with whatever was allocated
/// meanwhile, so after the burst the freed ones stayed resident (RSS 70–176
/// MB after 5,000 never-reading clients left, from 3.3 MB). `malloc_trim`
/// also releases every whole free page inside the heap (`MADV_DONTNEED`,
/// glibc 2.8 and later); it costs a walk of the free lists, which `TRIM_AFTER`
/// keeps rare. Other C libraries: nothing to call (musl returns large
/// chunks to the kernel at `free`).
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the allocator's own locks and touches only
    // memory that is free; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl BufPool {
    /// An empty buffer, reused when one is free.
    pub fn take(&mut self) -> Box<OutBuf> {
        self.free.pop().unwrap_or_default()
    }

    /// Returns a buffer; its contents are dropped. Past `POOL_KEEP` it is
    /// freed; a large one is shrunk to `POOL_MAX_CAPACITY` first.
    pub fn give(&mut self, mut buf: Box<OutBuf>) {
        if self.free.len() >= POOL_KEEP {
            return;
        }
        buf.data.clear();
        buf.data.shrink_to(POOL_MAX_CAPACITY);
        buf.sent = 0;
        self.free.push(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_bytes_are_reclaimed_once_they_outnumber_the_pending_ones() {
        let mut out = OutBuf::default();
        out.data.extend_from_slice(b"0123456789");
        out.consume(4);
        assert_eq!((out.unsent(), out.sent), (&b"456789"[..], 4));
        out.consume(1);
        // 5 sent, 5 pending: they move to the front.
        assert_eq!((out.unsent(), out.sent), (&b"56789"[..], 0));
        assert_eq!(out.data, b"56789");
        out.consume(5);
        assert_eq!((out.pending(), out.data.len()), (0, 0));
    }

    #[test]
    fn make_room_never_grows_past_the_bound() {
        // A slow reader: 100 bytes in, 90 out, a thousand times over.
        let bound = 1000;
        let mut out = OutBuf::default();
        let mut next = 0u8;
        let mut expected = std::collections::VecDeque::new();
        for _ in 0..1000 {
            if out.pending() < 500 {
                out.make_room(100, bound);
                for _ in 0..100 {
                    out.data.push(next);
                    expected.push_back(next);
                    next = next.wrapping_add(1);
                }
            }
            assert!(out.data.capacity() <= bound, "{}", out.data.capacity());
            for &b in &out.unsent()[..90] {
                assert_eq!(Some(b), expected.pop_front());
            }
            out.consume(90);
        }
        assert!(out.unsent().iter().eq(expected.iter()));
    }

    #[test]
    fn the_pool_keeps_a_bounded_number_of_bounded_buffers() {
        let mut pool = BufPool::default();
        let bufs: Vec<Box<OutBuf>> = (0..POOL_KEEP + 10)
            .map(|_| {
                let mut buf = pool.take();
                buf.data.resize(200 * 1024, b'x');
                buf.consume(1000);
                buf
            })
            .collect();
        for buf in bufs {
            pool.give(buf);
        }
        assert_eq!(pool.free.len(), POOL_KEEP);
        for buf in &pool.free {
            assert!(buf.data.is_empty() && buf.sent == 0);
            assert!(buf.data.capacity() <= POOL_MAX_CAPACITY);
        }
        // Taken again: the same buffers, empty.
        let again = pool.take();
        assert_eq!((again.pending(), again.data.len()), (0, 0));
    }

    /// A unicode-mode reply produced into the room `make_room` leaves
    /// (what `Connection::reply` does) keeps the allocation within
    /// `bound`: the transform must not reserve past it, at any level, for
    /// a read of any size up to the cap.
    #[test]
    fn a_unicode_reply_keeps_the_allocation_within_the_bound() {
        use crate::transform::{max_growth, Level, Mode, Upcaser};
        let growth = max_growth(Mode::Unicode);
        for level in Level::available() {
            for cap in [40, 100, 1000, 5000] {
                for text in ["\u{434}", "\u{390}", "\u{6771}", "a\u{e9}"] {
                    let input: Vec<u8> = text.bytes().cycle().take(cap).collect();
                    let bound = OutBuf::bound(cap, growth);
                    let mut out = OutBuf::default();
                    out.make_room(OutBuf::reply_bound(cap, growth), bound);
                    Upcaser::new(Mode::Unicode).feed_at(level, &input, &mut out.data);
                    assert!(
                        out.data.capacity() <= bound,
                        "{level:?}, {cap} bytes of {text:?}: capacity {} over the bound {bound}",
                        out.data.capacity()
                    );
                }
            }
        }
    }

    #[test]
    fn the_bound_is_the_cap_plus_one_reads_reply() {
        let slack = crate::transform::reserve_slack(crate::transform::Mode::Unicode);
        assert_eq!(OutBuf::bound(65536, 3), 65536 + 3 * (65536 + 3) + slack);
        assert_eq!(
            OutBuf::bound(1 << 20, 1),
            (1 << 20) + READ_BUF_SIZE + 3 + slack
        );
        assert_eq!(OutBuf::bound(100, 3), 100 + 3 * 103 + slack);
    }
}
