//! Buffers shared by every client of the loop.
//!
//! One thread serves every client, so one read buffer and one scratch buffer
//! serve them all: a connection borrows them for one call and keeps nothing.
//! Only replies the kernel refused need a buffer of their own; those come from
//! a small pool and go back to it when they drain.

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
/// the allocator on the hot path, small enough that memory returns to
/// baseline after a burst of slow readers (at most 32 × 128 KiB kept).
const POOL_KEEP: usize = 32;

/// A buffer that grew past this (a client that stalled with a large backlog)
/// is freed rather than kept, so the pool does not pin the peak forever.
const POOL_MAX_CAPACITY: usize = 128 * 1024;

impl BufPool {
    /// An empty buffer, reused when one is free.
    pub fn take(&mut self) -> Box<OutBuf> {
        self.free.pop().unwrap_or_default()
    }

    /// Returns a buffer; its contents are dropped.
    pub fn give(&mut self, mut buf: Box<OutBuf>) {
        if buf.data.capacity() > POOL_MAX_CAPACITY || self.free.len() >= POOL_KEEP {
            return;
        }
        buf.data.clear();
        buf.sent = 0;
        self.free.push(buf);
    }
}
