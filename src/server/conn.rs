//! One accepted TCP client: its socket, its streaming transform and the
//! replies the kernel has not taken yet.
//!
//! A `Connection` never touches the slab, the registry or another client. The
//! loop lends it the shared buffers (`Shared`) for the duration of one call
//! and it answers with a [`Status`]: keep it, call it again soon (its work
//! budget ran out), or close it (and why).
//!
//! Data flow for one read: the kernel's bytes land in the shared read buffer,
//! are transformed into the shared scratch buffer and written at once. Only
//! what the kernel refuses is copied into the connection's own output buffer,
//! which comes from a pool and goes back to it as soon as it drains, so an
//! idle connection holds no buffer at all.
//!
//! A telnet client (`[tcp] telnet`: every client with `true`, with `"auto"`
//! one whose first bytes are a telnet command) has its bytes go through the
//! connection's [`telnet::Filter`] before the transform: commands are
//! dropped or acted on (end of input, are-you-there, abort output), each
//! option request's refusal is put in the reply stream at its place, and
//! 0xFF in the replies is escaped. Other connections take the plain path
//! (one check per read, none per byte); an `auto` connection that turns out
//! not to be telnet drops its filter and takes it too.
//!
//! The socket is anything that implements [`Socket`] (read, write, FIN,
//! the kernel's count of unread bytes): the daemon's is a `TcpStream`, the
//! unit tests' a scripted fake that says `WouldBlock`, takes short writes,
//! resets or ends anywhere they choose.
//!
//! # Lifecycle
//!
//! Two sides, each with its own state; a connection is finished when its
//! input has ended and its output is empty.
//!
//! ## Input: what is done with the client's bytes (`Input`)
//!
//! ```text
//!                     +------+
//!        +------------| Open |-------------+----------------------------+
//!        |            +------+             |                            |
//!        | begin_shutdown:                 | telnet IAC EOF [h]         | read 0 (EOF) [h]
//!        | n = received_unread()           |                            |
//!        v                                 |                            |
//!  +-------------+                         |                            |
//!  | Draining(n) |-------------------------)---- read 0 (EOF) [h] ----->|
//!  +-------------+                         |                            |
//!   answered; each read asks <= n          |                            |
//!   bytes and takes what it got off n      |                            |
//!        |                                 |                            |
//!        | n = 0, or WouldBlock [h]        |                            |
//!        v                                 |                            |
//!  +-------------------+                   |                            |
//!  | Discarding(false) |<------------------+                            |
//!  +-------------------+--------------------------- read 0 (EOF) ------>|
//!   read and dropped                                                    |
//!        |                                                              |
//!        | no output pending: our FIN                                   |
//!        v                                                              |
//!  +------------------+                                                 |
//!  | Discarding(true) |--------------------------- read 0 (EOF) ------->|
//!  +------------------+                                                 v
//!   read and dropped                                                 +-----+
//!                                                                    | Eof |
//!                                                                    +-----+
//!                                          no output pending: our FIN   |
//!                                          Closed(Done)  <--------------+
//! ```
//!
//! `[h]`: what the telnet filter and the transform still hold (a lone
//! `IAC`, a character cut short) is answered as it is. Any socket error, in
//! any state, ends the connection: `Closed(Reset)` when the peer reset or
//! vanished, `Closed(Error)` otherwise. The idle timeout (`close_idle`)
//! answers what is held and sends our FIN from any state; the loop then
//! drops the connection.
//!
//! Whether to read at all is a flag beside the state (`readable`): set by a
//! READABLE event, cleared by `WouldBlock`, by EOF and, in `Open` only, by
//! a read shorter than asked for, unless an event reported hup or urgent
//! data (the short-read shortcut: on Linux, data arriving after a short
//! read raises a new edge). Reading pauses, the flag kept, while the output
//! backlog is at `max_pending_output`, and after `READS_PER_TURN` reads in
//! one call (`Status::Yielded`: the loop calls `run` again next turn).
//!
//! ## Output: replies the kernel has not taken (`out`)
//!
//! ```text
//!               the kernel takes a reply in part: the rest is copied
//!               into a buffer from the pool
//!  +-----------+ ------------------------------------> +--------------+
//!  | no buffer |                                       | Some(OutBuf) |
//!  +-----------+ <------------------------------------ +--------------+
//!   replies are written      a flush empties it:        replies queue behind the
//!   from the shared scratch  the buffer goes back       backlog; every call starts
//!   buffer as they are made  to the pool                with a flush; at
//!                                                       max_pending_output bytes
//!                                                       reading pauses until a
//!                                                       WRITABLE edge drains it
//! ```
//!
//! Our FIN (`shutdown_write`) is sent only with no buffer: the kernel then
//! holds every reply and sends them before it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};

use mio::net::TcpStream;

use crate::server::buffers::{OutBuf, Shared};
use crate::telnet;
use crate::transform::{self, Mode, Upcaser};

/// Reads one connection may do per turn before the others get theirs. With
/// the 64 KiB read buffer that is up to 256 KiB per turn: large enough that a
/// bulk transfer costs few wake-ups, small enough that one fast client cannot
/// starve thousands of others.
const READS_PER_TURN: usize = 4;

/// What a connection needs of its socket: non-blocking reads and writes
/// (`WouldBlock` when the kernel has nothing to give or no room to take),
/// our FIN, and how much input the kernel holds that was not read yet.
///
/// The daemon's only implementation is [`TcpStream`]; the unit tests drive
/// the state machine with a scripted fake. Generic, not `dyn`: the daemon's
/// `Connection` is compiled for `TcpStream` alone, at no cost.
pub trait Socket: Read + Write {
    /// Shuts down the sending side (`shutdown(SHUT_WR)`): the kernel sends
    /// our FIN after the bytes it has already accepted.
    fn shutdown_write(&self) -> io::Result<()>;

    /// Bytes the kernel has received on this socket that were not read yet.
    fn received_unread(&self) -> io::Result<usize>;

    /// One read, as [`Read::read`]: the daemon's is the `recv` system
    /// call alone, without the layers of `Read` around it (mio's, std's,
    /// libc's), which cost more than the rest of a small message's path.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read(buf)
    }

    /// One write, as [`Write::write`]: the daemon's is `send` alone
    /// (with `MSG_NOSIGNAL`, as std's).
    fn send(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write(data)
    }
}

/// What the loop should do with a connection after a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Nothing more to do until the next readiness event.
    Waiting,
    /// The work budget ran out with input still waiting in the kernel: call
    /// `run` again on the next turn of the loop (no event will come for it).
    Yielded,
    /// The connection is finished; drop it.
    Closed(Close),
}

/// What [`Connection::serve_fast`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fast {
    /// The connection is not in the plain steady state: nothing was done;
    /// the general path ([`Connection::ready`]) takes the event.
    General,
    /// A request was read, answered and sent whole, and the input is
    /// drained: bytes moved, nothing more to do until the next event.
    Served,
    /// The event went on by the general rules after the read: what the
    /// connection says about itself, and whether bytes moved.
    Ran(Status, bool),
}

/// A turn's result as the loop takes it: an error closes the connection.
fn status_of(result: io::Result<Status>) -> Status {
    match result {
        Ok(status) => status,
        Err(e) => Status::Closed(classify(&e)),
    }
}

/// Why a connection ended; each reason has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// The client shut down its side and every reply was delivered to the kernel.
    Done,
    /// The client reset the connection or vanished (ECONNRESET, EPIPE).
    Reset,
    /// Any other socket error.
    Error,
}

/// Where the input side of a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    /// Normal service: read, transform, reply.
    Open,
    /// Graceful shutdown began: answer this many more bytes, which the
    /// kernel had already received when it began, then stop. (Reading until
    /// `WouldBlock` instead would never end against a client that keeps
    /// sending faster than we drain.)
    Draining(usize),
    /// Shutting down (or the client's telnet `IAC EOF` came) and answered:
    /// read and drop further input until the client's EOF, so that closing never meets unread data (which would
    /// make the kernel send an RST and destroy replies in flight). `true`
    /// once our FIN is sent (after the last reply).
    Discarding(bool),
    /// The client sent EOF.
    Eof,
    /// A restart hands the connection over (`handover.rs`): what the kernel
    /// held when it began is answered; the rest stays in the kernel, unread,
    /// for the next process.
    Parked,
}

/// One accepted client, on a socket of type `S` (in the daemon always a
/// [`TcpStream`]).
#[derive(Debug)]
pub struct Connection<S = TcpStream> {
    /// The socket, registered once for READABLE | WRITABLE (edge-triggered).
    stream: S,
    /// The client's address, for logs.
    peer: SocketAddr,
    /// The streaming transform; carries at most 3 bytes of a split UTF-8 character.
    upcaser: Upcaser,
    /// Telnet command filter: while the connection is (or, with `auto`,
    /// may turn out to be) a telnet client.
    telnet: Option<telnet::Filter>,
    /// Replies the kernel has not accepted yet. `None` while nothing is
    /// pending (the buffer is back in the pool), so an idle connection pays
    /// 8 bytes for it.
    out: Option<Box<OutBuf>>,
    /// The kernel may hold input we have not read yet: the last read did not
    /// end in `WouldBlock` (reading was paused or the budget ran out). With
    /// edge-triggered readiness no new event comes for that data, so this
    /// flag is what resumes reading.
    readable: bool,
    /// State of the input side.
    input: Input,
    /// An event reported the client's FIN, an error or urgent data: read
    /// until `WouldBlock` before taking a short read for drained (Linux ends
    /// a read at the urgent mark, short, with more data behind it).
    hup: bool,
    /// A restart hands this connection to the next process: once what the
    /// kernel held is answered, input is `Parked` instead of ended.
    handing_over: bool,
    /// This process's descriptor is the socket's only one, so closing it
    /// sends our FIN: at the client's EOF the connection closes without a
    /// `shutdown` first. Not so once the socket went through the service
    /// manager's store (`handover.rs`), which may still hold a duplicate
    /// for a while: then only `shutdown` sends the FIN.
    alone: bool,
    /// Bytes read from this client, for its record when it ends.
    bytes_in: u64,
    /// Bytes of replies the kernel took, for its record when it ends.
    bytes_out: u64,
}

/// Where a connection handed to the next process stands (its input side;
/// see [`Snapshot`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Serving: read, transform, reply.
    Open,
    /// The client's EOF was read: the pending replies, then our FIN.
    Eof,
    /// Input is read and dropped until the client's EOF (after a telnet
    /// `IAC EOF`); `true` once our FIN is sent.
    Discarding(bool),
}

/// Everything a connection is besides its socket, as a restart hands it to
/// the next process (`handover.rs` serializes it).
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The client's address.
    pub peer: SocketAddr,
    /// The transform, with the part of a character it carries.
    pub upcaser: Upcaser,
    /// The telnet filter, with a command cut short and the `auto` decision.
    pub telnet: Option<telnet::Filter>,
    /// Replies the kernel had not taken.
    pub pending: Vec<u8>,
    /// The input side.
    pub stage: Stage,
}

impl Connection<TcpStream> {
    /// Whether this process's descriptor is the socket's only one (see
    /// the field): if not, closing it leaves the socket registered.
    pub fn alone(&self) -> bool {
        self.alone
    }

    /// The socket, for (de)registration by the loop.
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// The socket, to hand over to the service manager.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

impl<S: Socket> Connection<S> {
    /// Wraps a freshly accepted socket; `telnet` says whether it gets the
    /// telnet command filter (decided now for its whole life, or by its
    /// first bytes with `auto`).
    pub fn new(stream: S, peer: SocketAddr, mode: Mode, telnet: telnet::Setting) -> Connection<S> {
        Connection {
            stream,
            peer,
            upcaser: Upcaser::new(mode),
            telnet: telnet.filter(),
            out: None,
            // Nothing read yet, and nothing to try: registering with epoll
            // reports READABLE at once if the client sent data before we
            // accepted it, so a read here would only say WouldBlock for the
            // clients that have not.
            readable: false,
            input: Input::Open,
            hup: false,
            handing_over: false,
            alone: true,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    /// A connection handed over by the previous process, as it was there
    /// (`snapshot`); its pending replies go out at the first event, which
    /// registering the socket raises when the kernel can take them.
    pub fn restore(stream: S, snapshot: Snapshot, shared: &mut Shared) -> Connection<S> {
        let out = (!snapshot.pending.is_empty()).then(|| {
            let mut out = shared.pool.take();
            out.data.extend_from_slice(&snapshot.pending);
            out
        });
        Connection {
            stream,
            peer: snapshot.peer,
            upcaser: snapshot.upcaser,
            telnet: snapshot.telnet,
            out,
            // As for a new connection: registering reports what is there.
            readable: false,
            input: match snapshot.stage {
                Stage::Open => Input::Open,
                Stage::Eof => Input::Eof,
                Stage::Discarding(fin) => Input::Discarding(fin),
            },
            hup: false,
            handing_over: false,
            alone: false,
            // Its record in this process counts from here: the previous
            // one's share went with it.
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    /// What the next process needs to carry on with this connection.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            peer: self.peer,
            upcaser: self.upcaser.clone(),
            telnet: self.telnet.clone(),
            pending: self
                .out
                .as_ref()
                .map_or(Vec::new(), |out| out.unsent().to_vec()),
            stage: match self.input {
                Input::Eof => Stage::Eof,
                Input::Discarding(fin) => Stage::Discarding(fin),
                Input::Open | Input::Draining(_) | Input::Parked => Stage::Open,
            },
        }
    }

    /// A restart begins: as a graceful shutdown, the input the kernel holds
    /// now is answered, but then the connection parks (no FIN, nothing
    /// finished) to be handed over.
    pub fn begin_handover(&mut self, shared: &mut Shared) -> Status {
        self.handing_over = true;
        self.begin_shutdown(shared)
    }

    /// Whether the connection has done what it can before the handover:
    /// parked, or its input already ended, or held back by a client that
    /// does not read its replies (what it has not read stays in the kernel).
    pub fn ready_for_handover(&self, max_pending_output: usize) -> bool {
        match self.input {
            Input::Parked | Input::Eof | Input::Discarding(_) => true,
            Input::Draining(_) => self.pending_output() >= max_pending_output,
            Input::Open => false,
        }
    }

    /// The connection stays after all (the handover failed, or had no room
    /// for it): a graceful shutdown from where it stands.
    pub fn abandon_handover(&mut self, shared: &mut Shared) -> Status {
        self.handing_over = false;
        // The store may have taken a duplicate before the handover failed.
        self.alone = false;
        if self.input == Input::Parked {
            self.input = Input::Draining(0);
        }
        self.run(shared)
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The client is another than the socket's peer: a PROXY protocol
    /// header named it (`proxied.rs`).
    pub fn set_peer(&mut self, peer: SocketAddr) {
        self.peer = peer;
    }

    /// Bytes read from the client and bytes of replies sent, so far.
    pub fn bytes(&self) -> (u64, u64) {
        (self.bytes_in, self.bytes_out)
    }

    /// Bytes of replies waiting for the kernel to take them.
    pub fn pending_output(&self) -> usize {
        self.out.as_ref().map_or(0, |out| out.pending())
    }

    /// A readiness event arrived. Whatever it says, the connection tries what
    /// it can: reads until drained (or its budget), writes what is pending.
    /// `hup`: the event says the client shut down its side (or failed).
    pub fn ready(&mut self, readable: bool, hup: bool, shared: &mut Shared) -> Status {
        self.note(readable, hup);
        self.run(shared)
    }

    /// Records what a readiness event said without acting on it (the
    /// connection already ran this turn; its next run reads it).
    pub fn note(&mut self, readable: bool, hup: bool) {
        self.readable |= readable;
        self.hup |= hup;
    }

    /// Begin graceful shutdown: answer the input the kernel already holds,
    /// then stop reading it, flush, and half-close.
    pub fn begin_shutdown(&mut self, shared: &mut Shared) -> Status {
        if self.input == Input::Open {
            match self.stream.received_unread() {
                Ok(0) => self.input = Input::Draining(0),
                Ok(n) => {
                    self.input = Input::Draining(n);
                    // The bytes may have arrived after the last WouldBlock,
                    // their event not yet processed.
                    self.readable = true;
                }
                Err(e) => return Status::Closed(classify(&e)),
            }
        }
        self.run(shared)
    }

    /// The idle timeout struck: send what is still owed (a character the
    /// client left half-sent comes back raw, as at its EOF), then our FIN.
    /// The loop drops the connection next; errors no longer matter.
    pub fn close_idle(&mut self, shared: &mut Shared) {
        let _ = self.finish(shared);
        let _ = send_fin(&self.stream);
    }

    /// One turn of work: flush, read and reply within the budget, then see
    /// whether the connection is finished.
    pub fn run(&mut self, shared: &mut Shared) -> Status {
        status_of(self.turn(shared))
    }

    fn turn(&mut self, shared: &mut Shared) -> io::Result<Status> {
        if self.pending_output() > 0 {
            self.flush(shared)?;
        }
        if self.input == Input::Draining(0) {
            self.stop_answering(shared)?;
        }
        self.read_loop(shared, 0)
    }

    /// The read loop, `reads` reads of the turn's budget already spent,
    /// then the end of the turn (a finished connection's FIN).
    fn read_loop(&mut self, shared: &mut Shared, mut reads: usize) -> io::Result<Status> {
        let cap = shared.max_pending_output;
        while self.readable && !matches!(self.input, Input::Eof | Input::Parked) {
            if self.pending_output() >= cap {
                // Back-pressure: the client is not reading its replies. Leave
                // its input in the kernel, so TCP flow control slows it down;
                // the WRITABLE event that follows a drain resumes us.
                break;
            }
            if reads == READS_PER_TURN {
                return Ok(Status::Yielded);
            }
            reads += 1;
            // Never read more than the output cap allows: the pending output
            // stays below cap + one read (times the mode's growth).
            let mut len = shared.read_buf.len().min(cap);
            if let Input::Draining(left) = self.input {
                len = len.min(left);
            }
            let result = self.stream.recv(&mut shared.read_buf[..len]);
            self.took(shared, result, len)?;
        }
        if self.pending_output() == 0 {
            match self.input {
                Input::Eof => {
                    // Half-close done right: every reply is with the kernel,
                    // which delivers it before the FIN. The client's input is
                    // fully read, so closing sends no RST. The loop closes
                    // the socket next, which sends the FIN when no other
                    // process holds it (`alone`): one syscall less.
                    if !self.alone {
                        send_fin(&self.stream)?;
                    }
                    return Ok(Status::Closed(Close::Done));
                }
                Input::Discarding(false) => {
                    // Our FIN tells the client we are done; we keep reading
                    // (and dropping) until its EOF or the shutdown deadline.
                    send_fin(&self.stream)?;
                    self.input = Input::Discarding(true);
                }
                Input::Open | Input::Draining(_) | Input::Discarding(true) | Input::Parked => {}
            }
        }
        Ok(Status::Waiting)
    }

    /// Acts on what one read of at most `len` bytes gave.
    #[inline(always)]
    fn took(
        &mut self,
        shared: &mut Shared,
        result: io::Result<usize>,
        len: usize,
    ) -> io::Result<()> {
        let n = match result {
            Ok(n) if n > 0 => n,
            other => return self.took_nothing(shared, other),
        };
        self.count_read(shared, n);
        if n < len && !self.hup && self.input == Input::Open {
            // A short read emptied the receive queue: on Linux, data
            // arriving after it raises a new edge, so the read that would
            // only say WouldBlock is saved (one syscall in four for small
            // requests). Not once the client's FIN is known: it came with
            // the edge we are serving and no new edge would report the EOF.
            self.readable = false;
        }
        if !matches!(self.input, Input::Discarding(_)) {
            self.answer(shared, n)?;
        }
        if let Input::Draining(left) = self.input {
            let left = left.saturating_sub(n);
            self.input = Input::Draining(left);
            if left == 0 {
                self.stop_answering(shared)?;
            }
        }
        Ok(())
    }

    /// A read that brought `n` bytes, counted for the daemon and for the
    /// connection's record.
    #[inline(always)]
    fn count_read(&mut self, shared: &mut Shared, n: usize) {
        shared.counters.bytes_in += n as u64;
        shared.counters.tcp_reads += 1;
        self.bytes_in += n as u64;
    }

    /// [`took`](Connection::took) for a read that brought no bytes: the
    /// client's EOF, `WouldBlock`, an interruption or an error. Apart, so
    /// that the fast path's exit shares it without a second copy of the
    /// answer (which would keep it from being inlined into the read loop).
    #[inline(always)]
    fn took_nothing(&mut self, shared: &mut Shared, result: io::Result<usize>) -> io::Result<()> {
        match result {
            // A read of 0 bytes: the client's EOF (bytes go to `took`).
            Ok(_) => {
                self.readable = false;
                if !matches!(self.input, Input::Discarding(_)) {
                    self.finish(shared)?;
                }
                self.input = Input::Eof;
            }
            Err(e) if is_kind(&e, libc::EAGAIN, io::ErrorKind::WouldBlock) => {
                self.readable = false;
                if let Input::Draining(_) = self.input {
                    // Fewer bytes than counted (cannot happen with TCP,
                    // but a count is no promise): what there was is answered.
                    self.stop_answering(shared)?;
                }
            }
            Err(e) if is_kind(&e, libc::EINTR, io::ErrorKind::Interrupted) => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// A readiness event, on the path of a connection in the plain steady
    /// state: open, no telnet filter, nothing pending to send, no `hup`.
    /// There, one read, its answer and one send are the whole of the usual
    /// event, and they are done here, inlined into the loop, without the
    /// general path's call, state tests and result. Anything else leaves
    /// by the general rules: [`Fast::General`] before anything is done (the
    /// caller calls [`ready`](Connection::ready)), or, once the read is
    /// done, the rest of the turn out of line ([`Fast::Ran`]): a read that
    /// is not a request (EOF, `WouldBlock`, an error), a send the kernel
    /// did not take whole, a full read (more may wait: the read loop goes
    /// on, within the turn's budget, this read counted).
    ///
    /// The rules it keeps, as the general path: the read is at most the
    /// read buffer and the output cap; a short read without `hup` means
    /// drained; the transform carries a split character on; the counters
    /// and the connection's record count every byte.
    #[inline(always)]
    pub fn serve_fast(&mut self, readable: bool, hup: bool, shared: &mut Shared) -> Fast {
        // `|`: one branch for the six tests.
        if !readable
            | hup
            | self.hup
            | self.out.is_some()
            | self.telnet.is_some()
            | (self.input != Input::Open)
        {
            return Fast::General;
        }
        // As the read loop's first read: nothing is pending, so it is
        // under the cap (which is never 0) and within the budget.
        let len = shared.read_buf.len().min(shared.max_pending_output);
        let n = match self.stream.recv(&mut shared.read_buf[..len]) {
            Ok(n) if n > 0 => n,
            result => return self.fast_read_exit(shared, result),
        };
        self.count_read(shared, n);
        // The short-read rule (no `hup`, open): drained. The event was
        // readable, so a full read leaves `readable` set, as `note` would.
        self.readable = n == len;
        let scratch = &mut shared.scratch;
        scratch.clear();
        self.upcaser.feed_inline(&shared.read_buf[..n], scratch);
        // Nothing to send when the read was only part of a character:
        // `write_all_nonblocking` makes no call then either.
        if !scratch.is_empty() {
            match self.stream.send(scratch) {
                // Whole: `sent` counts it and queues nothing.
                Ok(written) if written == scratch.len() => self.sent(shared, written),
                result => return self.fast_send_exit(shared, result),
            }
        }
        if self.readable {
            return self.fast_more(shared);
        }
        Fast::Served
    }

    /// [`serve_fast`](Connection::serve_fast)'s read gave no request: that
    /// read as the read loop takes it, then the rest of the turn.
    #[cold]
    #[inline(never)]
    fn fast_read_exit(&mut self, shared: &mut Shared, result: io::Result<usize>) -> Fast {
        let moved = shared.counters.bytes_in + shared.counters.bytes_out;
        self.readable = true;
        let result = self
            .took_nothing(shared, result)
            .and_then(|()| self.read_loop(shared, 1));
        let moved = shared.counters.bytes_in + shared.counters.bytes_out != moved;
        Fast::Ran(status_of(result), moved)
    }

    /// [`serve_fast`](Connection::serve_fast)'s send went otherwise than
    /// whole (in part, `WouldBlock`, interrupted, an error): the write
    /// loop goes on as [`reply`](Connection::reply)'s, what the kernel
    /// does not take is queued, then the rest of the turn.
    #[cold]
    #[inline(never)]
    fn fast_send_exit(&mut self, shared: &mut Shared, first: io::Result<usize>) -> Fast {
        let scratch = &shared.scratch;
        let written = match first {
            Ok(0) => Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => write_all_nonblocking(&mut self.stream, &scratch[n..]).map(|more| n + more),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                write_all_nonblocking(&mut self.stream, scratch)
            }
            Err(e) => Err(e),
        };
        let result = written
            .map(|written| self.sent(shared, written))
            .and_then(|()| self.read_loop(shared, 1));
        Fast::Ran(status_of(result), true)
    }

    /// [`serve_fast`](Connection::serve_fast)'s read was full: more input
    /// may wait, and the read loop goes on with it, one read of the
    /// budget spent.
    #[cold]
    #[inline(never)]
    fn fast_more(&mut self, shared: &mut Shared) -> Fast {
        Fast::Ran(status_of(self.read_loop(shared, 1)), true)
    }

    /// Shutdown: everything received before it is answered (a character
    /// split at the very end passes through as it is); from now on input is
    /// read and dropped.
    fn stop_answering(&mut self, shared: &mut Shared) -> io::Result<()> {
        if self.handing_over {
            // The next process answers the rest; what the filter and the
            // transform hold goes with the connection.
            self.input = Input::Parked;
            return Ok(());
        }
        self.finish(shared)?;
        self.input = Input::Discarding(false);
        Ok(())
    }

    /// The input ended (EOF, shutdown, idle timeout): answers what the
    /// telnet filter and the transform still hold (a lone `IAC` of an
    /// undecided connection, a character cut short: both come back raw).
    fn finish(&mut self, shared: &mut Shared) -> io::Result<()> {
        if self.telnet.is_none() && self.upcaser.carried() == 0 && self.out.is_none() {
            // Nothing held and nothing queued (the usual end): `reply`
            // would produce no byte and write none.
            return Ok(());
        }
        let mut filter = self.telnet.take();
        let result = self.reply(shared, |upcaser, _, out| {
            if let Some(filter) = &mut filter {
                filter.finish(|piece| {
                    if let telnet::Piece::Raw(data) = piece {
                        upcaser.feed(data, out);
                    }
                });
            }
            upcaser.finish(out);
        });
        self.telnet = filter;
        result
    }

    /// Answers the `n` bytes just read into the shared read buffer. The
    /// plain path is inlined into the read loop: for a small request it is
    /// most of the work there is.
    #[inline]
    fn answer(&mut self, shared: &mut Shared, n: usize) -> io::Result<()> {
        // `auto` decided by the first byte, as `feed` would: no telnet,
        // and the filter goes before it costs a call.
        if (self.telnet.as_ref()).is_some_and(|f| f.turns_raw(shared.read_buf[0])) {
            self.telnet = None;
        }
        if let Some(filter) = self.telnet.take() {
            return self.answer_telnet(shared, n, filter);
        }
        self.reply(shared, |upcaser, input, out| upcaser.feed(&input[..n], out))
    }

    /// [`answer`](Connection::answer) for a telnet client (or one that
    /// may turn out to be one): its bytes go through `filter`, taken out
    /// of the connection for the call because `reply` borrows the whole
    /// connection (it is two bytes of state).
    #[inline(never)]
    fn answer_telnet(
        &mut self,
        shared: &mut Shared,
        n: usize,
        mut filter: telnet::Filter,
    ) -> io::Result<()> {
        // The replies not yet handed to the kernel: the last `pending`
        // bytes of the buffer `reply` gives (it may move them to its front
        // first, to make room), which is all an abort-output may drop.
        let pending = self.pending_output();
        let mut ended = false;
        let result = self.reply(shared, |upcaser, input, out| {
            let floor = out.len() - pending;
            filter.feed(&input[..n], |piece| match piece {
                telnet::Piece::Raw(data) => upcaser.feed(data, out),
                telnet::Piece::Data(data) => {
                    let start = out.len();
                    upcaser.feed(data, out);
                    telnet::escape_iac(out, start);
                }
                // Raw: a refusal must not go through the transform (in
                // ascii mode an option byte in a-z would be changed).
                telnet::Piece::Reply(reply) => out.extend_from_slice(&reply),
                telnet::Piece::AreYouThere => out.extend_from_slice(telnet::AYT_ANSWER),
                telnet::Piece::AbortOutput => {
                    out.truncate(floor);
                    out.extend_from_slice(&telnet::DATA_MARK);
                }
                telnet::Piece::EndOfInput => {
                    ended = true;
                    // A character the client left half-sent comes back raw,
                    // as at a FIN.
                    upcaser.finish(out);
                }
            });
        });
        if !filter.is_raw() {
            self.telnet = Some(filter);
        }
        result?;
        if ended {
            // As after a half-close: every reply goes out, then our FIN; what
            // the client sends after its end of input is read and dropped
            // until its own FIN, so closing never meets unread data.
            self.input = Input::Discarding(false);
        }
        Ok(())
    }

    /// Produces replies with `produce` and sends them: written at once from
    /// the shared scratch buffer when nothing is queued before them, appended
    /// to the queue otherwise (order is preserved).
    #[inline]
    fn reply<F>(&mut self, shared: &mut Shared, produce: F) -> io::Result<()>
    where
        F: FnOnce(&mut Upcaser, &[u8], &mut Vec<u8>),
    {
        if let Some(out) = &mut self.out {
            // Room for the largest reply first, within the buffer's bound:
            // the bytes already sent are dropped rather than the buffer grown.
            let cap = shared.max_pending_output;
            // A telnet client's replies grow more: 0xFF is doubled, an
            // AYT answered (telnet::max_growth, plus one AYT answer).
            let (growth, extra) = match self.telnet {
                Some(_) => (telnet::max_growth(), telnet::AYT_ANSWER.len()),
                None => (transform::max_growth(self.upcaser.mode()), 0),
            };
            let bound = OutBuf::bound(cap, growth) + extra;
            out.make_room(OutBuf::reply_bound(cap, growth) + extra, bound);
            produce(&mut self.upcaser, &shared.read_buf, &mut out.data);
            return self.flush(shared);
        }
        let scratch = &mut shared.scratch;
        scratch.clear();
        produce(&mut self.upcaser, &shared.read_buf, scratch);
        let written = write_all_nonblocking(&mut self.stream, scratch)?;
        self.sent(shared, written);
        Ok(())
    }

    /// The kernel took `written` bytes of the reply in the scratch
    /// buffer: counted, and the rest queued.
    #[inline(always)]
    fn sent(&mut self, shared: &mut Shared, written: usize) {
        shared.counters.bytes_out += written as u64;
        self.bytes_out += written as u64;
        let scratch = &shared.scratch;
        if written < scratch.len() {
            let mut out = shared.pool.take();
            out.data.extend_from_slice(&scratch[written..]);
            self.out = Some(out);
        }
    }

    /// Writes pending output until it is gone or the kernel refuses more.
    fn flush(&mut self, shared: &mut Shared) -> io::Result<()> {
        let Some(out) = &mut self.out else {
            return Ok(());
        };
        let written = write_all_nonblocking(&mut self.stream, out.unsent())?;
        shared.counters.bytes_out += written as u64;
        self.bytes_out += written as u64;
        out.consume(written);
        if out.pending() == 0 {
            if let Some(out) = self.out.take() {
                shared.pool.give(out);
            }
        }
        Ok(())
    }
}

// The production socket: the trait's implementation for `TcpStream`, and
// what the loop does with a `TcpStream` it will not serve.

/// The daemon's socket. `received_unread` is the kernel's count
/// (`FIONREAD`); `shutdown_write` is `shutdown(SHUT_WR)`.
impl Socket for TcpStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }

    fn received_unread(&self) -> io::Result<usize> {
        received_unread(self)
    }

    #[inline]
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (n, _) = rustix::net::recv(&*self, buf, rustix::net::RecvFlags::empty())?;
        Ok(n)
    }

    #[inline]
    fn send(&mut self, data: &[u8]) -> io::Result<usize> {
        // NOSIGNAL: a peer gone is an EPIPE error, not a SIGPIPE.
        Ok(rustix::net::send(
            &*self,
            data,
            rustix::net::SendFlags::NOSIGNAL,
        )?)
    }
}

/// Reads a refused client may cost before its socket is closed.
const REFUSE_READS: usize = 4;

/// Closes a client that will not be served (a limit), cleanly: our FIN
/// first, then what it already sent is read and dropped, so that `close`
/// finds the receive queue empty. (Closing a socket with unread data makes
/// Linux send an RST instead of a FIN, which the client sees as an error.)
/// Bounded: a client still sending after that meets a closed socket.
pub fn refuse(stream: &mut TcpStream, shared: &mut Shared) {
    let _ = send_fin(&*stream);
    for _ in 0..REFUSE_READS {
        match stream.read(&mut shared.read_buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => shared.counters.bytes_in += n as u64,
        }
    }
}

/// Writes as much of `data` as the kernel takes without blocking; returns how
/// much that was. Stops at `WouldBlock`, retries `Interrupted`.
#[inline]
pub(super) fn write_all_nonblocking<S: Socket>(stream: &mut S, data: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < data.len() {
        match stream.send(&data[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// Bytes the kernel has received on this socket that we have not read yet
/// (`FIONREAD`, also known as `SIOCINQ`).
fn received_unread(stream: &TcpStream) -> io::Result<usize> {
    let n = rustix::io::ioctl_fionread(stream)?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Sends our FIN. `NotConnected` means the peer is already gone, which is
/// no reason to count an error.
fn send_fin<S: Socket>(stream: &S) -> io::Result<()> {
    match stream.shutdown_write() {
        Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
        _ => Ok(()),
    }
}

/// `e` is `kind`, errno `code` if it came from the kernel: tested on the
/// number, as decoding an errno into a kind is a table walk, and a
/// connection that ends in a reset goes through three such tests.
fn is_kind(e: &io::Error, code: i32, kind: io::ErrorKind) -> bool {
    match e.raw_os_error() {
        Some(errno) => errno == code,
        None => e.kind() == kind,
    }
}

/// A peer that resets or vanishes is a normal end, not a server error.
pub(super) fn classify(e: &io::Error) -> Close {
    if let Some(errno) = e.raw_os_error() {
        return match errno {
            libc::ECONNRESET | libc::ECONNABORTED | libc::EPIPE | libc::ENOTCONN => Close::Reset,
            _ => Close::Error,
        };
    }
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::NotConnected => Close::Reset,
        _ => Close::Error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A connected pair on loopback: the client (blocking off) and the
    /// daemon's side as a `Connection`, whose kernel send buffer is as small
    /// as the kernel allows (what a small `tcp_wmem` or a capped
    /// `SO_SNDBUF` gives), while the client offers a small window: its
    /// replies can only leave a few KiB at a time.
    fn slow_pair(mode: Mode) -> (std::net::TcpStream, Connection) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let client = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        client.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        client.connect(&addr.into()).expect("connect");
        let client = std::net::TcpStream::from(client);
        client.set_nonblocking(true).expect("non-blocking");
        let (server, peer) = listener.accept().expect("accept");
        socket2::SockRef::from(&server)
            .set_send_buffer_size(4096)
            .expect("SO_SNDBUF");
        server.set_nonblocking(true).expect("non-blocking");
        let conn = Connection::new(
            TcpStream::from_std(server),
            peer,
            mode,
            telnet::Setting::Off,
        );
        (client, conn)
    }

    /// A client that keeps sending and reads 1 KiB whenever it gets a turn:
    /// the output buffer must stay within max_pending_output plus one read's
    /// worth of replies, however many bytes go through it.
    #[test]
    fn a_slow_reader_keeps_the_output_buffer_within_its_bound() {
        const PATTERN: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789\n";
        let (mut client, mut conn) = slow_pair(Mode::Ascii);
        let cap = 64 * 1024;
        let mut shared = Shared::new(cap);
        let chunk: Vec<u8> = PATTERN
            .iter()
            .copied()
            .cycle()
            .take(PATTERN.len() * 1800)
            .collect();
        let upper = PATTERN.to_ascii_uppercase();
        let (mut sent, mut got, mut peak) = (0usize, 0usize, 0usize);
        let mut buf = [0u8; 1024];
        let deadline = Instant::now() + Duration::from_secs(120);
        // Counted in bytes: 8 MiB through the buffer, whatever the pace.
        while got < 8 << 20 {
            assert!(Instant::now() < deadline, "only {got} bytes read in time");
            let at = sent % chunk.len();
            match client.write(&chunk[at..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("client write: {e}"),
            }
            let status = conn.ready(true, false, &mut shared);
            assert!(!matches!(status, Status::Closed(_)), "{status:?}");
            peak = peak.max(conn.out.as_ref().map_or(0, |out| out.data.capacity()));
            match client.read(&mut buf) {
                Ok(n) => {
                    assert!(n > 0, "EOF");
                    for (i, &b) in buf[..n].iter().enumerate() {
                        assert_eq!(b, upper[(got + i) % upper.len()], "reply byte {}", got + i);
                    }
                    got += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("client read: {e}"),
            }
        }
        let bound = cap + READ_BUF_BOUND;
        assert!(
            peak <= bound,
            "output buffer grew to {peak} bytes (bound {bound}) over {got} bytes read"
        );
    }

    /// One read's worth of replies in ascii mode, plus what the allocator
    /// may round a request up to.
    const READ_BUF_BOUND: usize = crate::server::buffers::READ_BUF_SIZE + 4096;

    // ---- The state machine against a scripted socket ----
    //
    // `Fake` stands for the kernel's side of one TCP socket: a queue of what
    // successive reads return, a send buffer with room for so many bytes,
    // and a record of every byte written and every FIN. Each test scripts
    // one situation and checks the exact bytes written and the exact Status.

    use std::cell::RefCell;
    use std::collections::VecDeque;

    /// What the next read returns.
    #[derive(Debug, Clone)]
    enum Rd {
        /// Bytes in the receive queue. A read given less room takes what
        /// fits and leaves the rest at the front; a read never runs past one
        /// `Data` into the next, so two in a row make a short read with more
        /// data queued behind it (what Linux does at the urgent mark, or
        /// when a segment arrives between the read and the next).
        Data(Vec<u8>),
        /// The receive queue is empty for now: `WouldBlock`, then on.
        WouldBlock,
        /// The client's FIN: every read from now on returns 0.
        Eof,
        /// One read fails with this error (ECONNRESET, EINTR...).
        Err(io::ErrorKind),
    }

    /// What the next write does, before the send buffer's `room` decides.
    #[derive(Debug, Clone)]
    enum Wr {
        /// Takes at most this many bytes (0: `Ok(0)`).
        Take(usize),
        /// Fails with this error.
        Err(io::ErrorKind),
    }

    /// A scripted socket (see above).
    #[derive(Debug)]
    struct Fake {
        /// What the next reads return, in order.
        reads: VecDeque<Rd>,
        /// Read calls made.
        read_calls: usize,
        /// What the next writes do; once it is empty, `room` and
        /// `per_write` decide.
        writes: VecDeque<Wr>,
        /// Room left in the send buffer: writes beyond it get WouldBlock.
        /// The client reading its replies is the test raising it.
        room: usize,
        /// The most one write call takes (short writes below `room`).
        per_write: usize,
        /// Every byte the kernel took, in order.
        written: Vec<u8>,
        /// `written.len()` at each `shutdown_write` (FIN) call.
        fins: RefCell<Vec<usize>>,
        /// What `received_unread` says instead of counting the queue.
        unread: Option<Result<usize, io::ErrorKind>>,
    }

    impl Fake {
        /// An empty receive queue and a send buffer that takes everything.
        fn new() -> Fake {
            Fake {
                reads: VecDeque::new(),
                read_calls: 0,
                writes: VecDeque::new(),
                room: usize::MAX,
                per_write: usize::MAX,
                written: Vec::new(),
                fins: RefCell::new(Vec::new()),
                unread: None,
            }
        }

        /// Queues reads.
        fn with(mut self, reads: impl IntoIterator<Item = Rd>) -> Fake {
            self.reads.extend(reads);
            self
        }

        fn fins(&self) -> Vec<usize> {
            self.fins.borrow().clone()
        }
    }

    /// `Rd::Data` from text.
    fn data(bytes: &[u8]) -> Rd {
        Rd::Data(bytes.to_vec())
    }

    impl Read for Fake {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.read_calls += 1;
            match self.reads.pop_front() {
                None | Some(Rd::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
                Some(Rd::Eof) => {
                    self.reads.push_front(Rd::Eof);
                    Ok(0)
                }
                Some(Rd::Err(kind)) => Err(kind.into()),
                Some(Rd::Data(mut bytes)) => {
                    let n = bytes.len().min(buf.len());
                    buf[..n].copy_from_slice(&bytes[..n]);
                    if n < bytes.len() {
                        self.reads.push_front(Rd::Data(bytes.split_off(n)));
                    }
                    Ok(n)
                }
            }
        }
    }

    impl Write for Fake {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if !self.fins.borrow().is_empty() {
                // Linux: writing after SHUT_WR is EPIPE.
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            let n = match self.writes.pop_front() {
                Some(Wr::Err(kind)) => return Err(kind.into()),
                Some(Wr::Take(n)) => n.min(buf.len()),
                None if self.room == 0 => return Err(io::ErrorKind::WouldBlock.into()),
                None => {
                    let n = buf.len().min(self.room).min(self.per_write);
                    self.room -= n;
                    n
                }
            };
            self.written.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Socket for Fake {
        fn shutdown_write(&self) -> io::Result<()> {
            self.fins.borrow_mut().push(self.written.len());
            Ok(())
        }

        /// What has arrived: the queued bytes before the first `WouldBlock`
        /// or EOF (what lies after a `WouldBlock` arrives later).
        fn received_unread(&self) -> io::Result<usize> {
            if let Some(unread) = self.unread {
                return unread.map_err(io::Error::from);
            }
            let mut n = 0;
            for rd in &self.reads {
                match rd {
                    Rd::Data(bytes) => n += bytes.len(),
                    Rd::WouldBlock | Rd::Eof => break,
                    Rd::Err(_) => {}
                }
            }
            Ok(n)
        }
    }

    /// A connection on `fake`, without telnet.
    fn on(fake: Fake, mode: Mode) -> Connection<Fake> {
        on_telnet(fake, mode, telnet::Setting::Off)
    }

    /// Not `alone`: every FIN the state machine means to send is a
    /// `shutdown_write` the fake records (an `alone` connection leaves the
    /// FIN at the client's EOF to the close; see `alone_at_eof_...`).
    fn on_telnet(fake: Fake, mode: Mode, setting: telnet::Setting) -> Connection<Fake> {
        let peer = SocketAddr::from(([192, 0, 2, 1], 40000));
        let mut conn = Connection::new(fake, peer, mode, setting);
        conn.alone = false;
        conn
    }

    #[test]
    fn alone_at_eof_every_reply_is_written_and_the_close_sends_the_fin() {
        let fake = Fake::new().with([data(b"abc"), Rd::Eof]);
        let peer = SocketAddr::from(([192, 0, 2, 1], 40000));
        let mut conn = Connection::new(fake, peer, Mode::Ascii, telnet::Setting::Off);
        let mut shared = shared();
        // The event that reports the data also reports the client's FIN.
        assert_eq!(
            conn.ready(true, true, &mut shared),
            Status::Closed(Close::Done)
        );
        assert_eq!(conn.stream.written, b"ABC");
        // No shutdown: dropping the connection closes its only descriptor.
        assert!(conn.stream.fins().is_empty());
    }

    #[test]
    fn errors_are_classified_by_errno_as_by_their_kind() {
        let by_kind = |e: &io::Error| match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected => Close::Reset,
            _ => Close::Error,
        };
        for errno in 1..200 {
            let e = io::Error::from_raw_os_error(errno);
            assert_eq!(classify(&e), by_kind(&e), "errno {errno}");
            let would_block = e.kind() == io::ErrorKind::WouldBlock;
            assert_eq!(
                is_kind(&e, libc::EAGAIN, io::ErrorKind::WouldBlock),
                would_block
            );
            let interrupted = e.kind() == io::ErrorKind::Interrupted;
            assert_eq!(
                is_kind(&e, libc::EINTR, io::ErrorKind::Interrupted),
                interrupted
            );
        }
        let simple = io::Error::from(io::ErrorKind::WouldBlock);
        assert!(is_kind(&simple, libc::EAGAIN, io::ErrorKind::WouldBlock));
        assert_eq!(
            classify(&io::Error::from(io::ErrorKind::BrokenPipe)),
            Close::Reset
        );
    }

    /// Shared buffers with the daemon's default output cap.
    fn shared() -> Shared {
        Shared::new(
            crate::config::Config::default()
                .tcp
                .max_pending_output
                .get(),
        )
    }

    const WAITING: Status = Status::Waiting;
    const DONE: Status = Status::Closed(Close::Done);
    const RESET: Status = Status::Closed(Close::Reset);
    const ERROR: Status = Status::Closed(Close::Error);

    /// The reply std's own upper-casing gives for the complete characters of
    /// `input` (what must have been written once `input` is read, a split
    /// character still held back).
    fn upper_of_complete(input: &[u8]) -> Vec<u8> {
        let valid = match std::str::from_utf8(input) {
            Ok(s) => s.len(),
            Err(e) => e.valid_up_to(),
        };
        let text = std::str::from_utf8(&input[..valid]).expect("valid prefix");
        text.to_uppercase().into_bytes()
    }

    /// A request cut in two at every byte (inside `ß` and `ä` too), with a
    /// `WouldBlock` after each part, then EOF: what is written after each
    /// read is the reply to every complete character so far, nothing is
    /// lost or doubled, and the FIN follows the last byte.
    #[test]
    fn a_request_cut_anywhere_with_would_block_between_is_answered_whole() {
        let request = "straße ä\n".as_bytes();
        let reply = b"STRASSE \xC3\x84\n";
        for cut in 0..=request.len() {
            let (first, second) = request.split_at(cut);
            let mut fake = Fake::new();
            for part in [first, second] {
                // (An empty part is no read at all: a read of 0 is EOF.)
                if !part.is_empty() {
                    fake.reads.push_back(data(part));
                }
                fake.reads.push_back(Rd::WouldBlock);
            }
            fake.reads.push_back(Rd::Eof);
            let mut conn = on(fake, Mode::Unicode);
            let mut shared = shared();
            // Each edge is served until WouldBlock (hup makes a short read
            // no proof of a drained queue).
            assert_eq!(conn.ready(true, true, &mut shared), WAITING, "cut {cut}");
            assert_eq!(conn.stream.written, upper_of_complete(first), "cut {cut}");
            assert_eq!(
                conn.stream.read_calls,
                1 + usize::from(cut > 0),
                "cut {cut}"
            );
            assert_eq!(conn.ready(true, true, &mut shared), WAITING, "cut {cut}");
            assert_eq!(conn.stream.written, reply, "cut {cut}");
            assert_eq!(conn.ready(true, true, &mut shared), DONE, "cut {cut}");
            assert_eq!(conn.stream.written, reply, "cut {cut}");
            assert_eq!(conn.stream.fins(), [reply.len()], "cut {cut}");
            assert_eq!(shared.counters.bytes_in, request.len() as u64, "cut {cut}");
            assert_eq!(shared.counters.bytes_out, reply.len() as u64, "cut {cut}");
        }
    }

    /// The kernel takes any number of the reply's bytes, then says
    /// `WouldBlock`: the rest waits in the connection's buffer and goes out
    /// on the WRITABLE edge; only then, EOF seen, comes the FIN.
    #[test]
    fn a_reply_the_kernel_takes_in_part_is_finished_on_writable() {
        let reply = b"HELLO, WORLD\n";
        for room in 0..=reply.len() {
            let mut fake = Fake::new().with([data(b"hello, world\n"), Rd::Eof]);
            fake.room = room;
            let mut conn = on(fake, Mode::Ascii);
            let mut shared = shared();
            let status = conn.ready(true, true, &mut shared);
            assert_eq!(conn.stream.written, reply[..room], "room {room}");
            if room < reply.len() {
                assert_eq!(status, WAITING, "room {room}");
                assert_eq!(conn.pending_output(), reply.len() - room, "room {room}");
                assert!(
                    conn.stream.fins().is_empty(),
                    "FIN before the reply, room {room}"
                );
                // A WRITABLE edge with no room yet changes nothing.
                assert_eq!(
                    conn.ready(false, false, &mut shared),
                    WAITING,
                    "room {room}"
                );
                assert_eq!(conn.stream.written, reply[..room], "room {room}");
                conn.stream.room = usize::MAX;
                assert_eq!(conn.ready(false, false, &mut shared), DONE, "room {room}");
            } else {
                assert_eq!(status, DONE, "room {room}");
            }
            assert_eq!(conn.stream.written, reply, "room {room}");
            assert_eq!(conn.stream.fins(), [reply.len()], "room {room}");
            assert_eq!(conn.pending_output(), 0, "room {room}");
            assert!(conn.out.is_none(), "buffer kept, room {room}");
            assert_eq!(shared.counters.bytes_out, reply.len() as u64, "room {room}");
        }
    }

    /// EINTR is no error: the read and the write are tried again.
    #[test]
    fn interrupted_reads_and_writes_are_retried() {
        let mut fake = Fake::new().with([
            Rd::Err(io::ErrorKind::Interrupted),
            data(b"abc"),
            Rd::Err(io::ErrorKind::Interrupted),
            Rd::WouldBlock,
        ]);
        fake.writes
            .extend([Wr::Err(io::ErrorKind::Interrupted), Wr::Take(1)]);
        let mut conn = on(fake, Mode::Ascii);
        let mut shared = shared();
        assert_eq!(conn.ready(true, true, &mut shared), WAITING);
        assert_eq!(conn.stream.written, b"ABC");
        assert_eq!(conn.stream.read_calls, 4);
        assert_eq!(conn.pending_output(), 0);
    }

    /// A client that does not read its replies: once `max_pending_output`
    /// bytes wait, reading stops and the rest of its input stays in the
    /// kernel (TCP flow control then slows the client); each WRITABLE edge
    /// writes what the kernel takes, in short writes, and reading resumes
    /// as soon as the backlog is below the cap.
    #[test]
    fn back_pressure_pauses_reading_at_the_cap_and_resumes_as_writes_drain() {
        let mut fake = Fake::new().with([data(b"abcdefghijklmnopqrstuvwx"), Rd::WouldBlock]);
        fake.room = 0;
        let mut conn = on(fake, Mode::Ascii);
        // A cap of 8: every read asks for at most 8 bytes.
        let mut shared = Shared::new(8);

        assert_eq!(conn.ready(true, false, &mut shared), WAITING);
        assert_eq!(conn.stream.written, b"");
        assert_eq!(conn.pending_output(), 8);
        assert_eq!(conn.stream.read_calls, 1, "read past the cap");

        // An event with the send buffer still full: nothing moves, and
        // nothing more is read.
        assert_eq!(conn.ready(true, false, &mut shared), WAITING);
        assert_eq!(conn.stream.written, b"");
        assert_eq!(conn.stream.read_calls, 1, "read past the cap");

        // The client read 5 bytes; the kernel takes at most 2 per write.
        conn.stream.room = 5;
        conn.stream.per_write = 2;
        assert_eq!(conn.ready(false, false, &mut shared), WAITING);
        assert_eq!(conn.stream.written, b"ABCDE");
        // 3 left, below the cap: one more read, whose reply queues behind
        // them, and the cap is reached again.
        assert_eq!(conn.stream.read_calls, 2);
        assert_eq!(conn.pending_output(), 3 + 8);

        // The client reads everything.
        conn.stream.room = usize::MAX;
        assert_eq!(conn.ready(false, false, &mut shared), WAITING);
        assert_eq!(conn.stream.written, b"ABCDEFGHIJKLMNOPQRSTUVWX");
        assert_eq!(conn.pending_output(), 0);
        assert!(conn.out.is_none(), "drained buffer not given back");
        // The backlog went out, the last 8 were read (and answered straight
        // from the scratch buffer), then WouldBlock.
        assert_eq!(conn.stream.read_calls, 4);
        assert_eq!(shared.counters.bytes_in, 24);
        assert_eq!(shared.counters.bytes_out, 24);

        conn.stream.reads.push_back(Rd::Eof);
        assert_eq!(conn.ready(true, true, &mut shared), DONE);
        assert_eq!(conn.stream.fins(), [24]);
    }

    /// The client resets the connection while its reply is being written
    /// (the kernel took part of it), or while the backlog is flushed: a
    /// normal end, counted as a reset.
    #[test]
    fn a_reset_in_the_middle_of_a_write_closes_as_reset() {
        let mut fake = Fake::new().with([data(b"hello\n"), Rd::WouldBlock]);
        fake.writes
            .extend([Wr::Take(3), Wr::Err(io::ErrorKind::ConnectionReset)]);
        let mut conn = on(fake, Mode::Ascii);
        let mut shared = shared();
        assert_eq!(conn.ready(true, false, &mut shared), RESET);
        assert_eq!(conn.stream.written, b"HEL");
        assert!(conn.stream.fins().is_empty());

        let mut fake = Fake::new().with([data(b"hello\n"), Rd::WouldBlock]);
        fake.room = 2;
        let mut conn = on(fake, Mode::Ascii);
        assert_eq!(conn.ready(true, false, &mut shared), WAITING);
        assert_eq!(conn.stream.written, b"HE");
        conn.stream
            .writes
            .push_back(Wr::Err(io::ErrorKind::ConnectionReset));
        assert_eq!(conn.ready(false, false, &mut shared), RESET);
        assert_eq!(conn.stream.written, b"HE");
        assert!(conn.stream.fins().is_empty());
    }

    /// A peer that resets or vanishes (on a read or a write) is a reset;
    /// anything else, a kernel that takes 0 bytes included, is an error.
    #[test]
    fn socket_errors_close_as_reset_or_error() {
        use io::ErrorKind::*;
        for (kind, status) in [
            (ConnectionReset, RESET),
            (ConnectionAborted, RESET),
            (BrokenPipe, RESET),
            (NotConnected, RESET),
            (TimedOut, ERROR),
            (PermissionDenied, ERROR),
            (Other, ERROR),
        ] {
            let mut conn = on(Fake::new().with([data(b"ab"), Rd::Err(kind)]), Mode::Ascii);
            let mut shared = shared();
            assert_eq!(
                conn.ready(true, true, &mut shared),
                status,
                "read: {kind:?}"
            );
            assert_eq!(conn.stream.written, b"AB", "read: {kind:?}");

            let mut fake = Fake::new().with([data(b"ab"), Rd::WouldBlock]);
            fake.writes.push_back(Wr::Err(kind));
            let mut conn = on(fake, Mode::Ascii);
            assert_eq!(
                conn.ready(true, true, &mut shared),
                status,
                "write: {kind:?}"
            );
            assert_eq!(conn.stream.written, b"", "write: {kind:?}");
        }
        let mut fake = Fake::new().with([data(b"ab"), Rd::WouldBlock]);
        fake.writes.push_back(Wr::Take(0));
        let mut conn = on(fake, Mode::Ascii);
        assert_eq!(
            conn.ready(true, true, &mut shared()),
            ERROR,
            "write returned 0"
        );
    }

    /// EOF after the first byte of `ä` (C3 A4): that byte comes back as it
    /// is, then the FIN. Without hup the short read is taken for drained and
    /// the byte is held until the event that brings the EOF.
    #[test]
    fn eof_in_the_middle_of_a_character_returns_it_raw_then_fin() {
        let mut conn = on(Fake::new().with([data(b"ab\xC3"), Rd::Eof]), Mode::Unicode);
        let mut shared = shared();
        assert_eq!(conn.ready(true, true, &mut shared), DONE);
        assert_eq!(conn.stream.written, b"AB\xC3");
        assert_eq!(conn.stream.fins(), [3]);

        let mut conn = on(Fake::new().with([data(b"ab\xC3"), Rd::Eof]), Mode::Unicode);
        assert_eq!(conn.ready(true, false, &mut shared), WAITING);
        assert_eq!(conn.stream.written, b"AB");
        assert_eq!(conn.ready(true, true, &mut shared), DONE);
        assert_eq!(conn.stream.written, b"AB\xC3");
        assert_eq!(conn.stream.fins(), [3]);
    }

    /// The client sends its EOF while replies still wait for room: no FIN
    /// until the last of them is with the kernel (a FIN first would cut
    /// them off), then FIN and a clean close.
    #[test]
    fn half_close_flushes_every_reply_before_the_fin() {
        let mut fake = Fake::new().with([data(b"hello\n"), Rd::Eof]);
        fake.room = 2;
        let mut conn = on(fake, Mode::Ascii);
        let mut shared = shared();
        assert_eq!(conn.ready(true, true, &mut shared), WAITING);
        assert_eq!(conn.stream.written, b"HE");
        assert!(conn.stream.fins().is_empty(), "FIN with replies pending");
        assert_eq!(conn.input, Input::Eof);

        conn.stream.room = 3;
        assert_eq!(conn.ready(false, false, &mut shared), WAITING);
        assert_eq!(conn.stream.written, b"HELLO");
        assert!(conn.stream.fins().is_empty(), "FIN with replies pending");

        conn.stream.room = usize::MAX;
        assert_eq!(conn.ready(false, false, &mut shared), DONE);
        assert_eq!(conn.stream.written, b"HELLO\n");
        assert_eq!(conn.stream.fins(), [6]);
        // EOF was read once: no read after it.
        assert_eq!(conn.stream.read_calls, 2);
    }

    /// Graceful shutdown: the 8 bytes the kernel holds when it begins are
    /// answered (read in pieces that never ask for more than is left), then
    /// our FIN; what arrives later is read and dropped until the client's
    /// EOF, so that closing never meets unread data.
    #[test]
    fn graceful_shutdown_answers_the_unread_bytes_then_discards_until_eof() {
        let fake = Fake::new().with([
            data(b"abc\n"),
            data(b"def\n"),
            Rd::WouldBlock,
            data(b"late\n"),
            Rd::WouldBlock,
            Rd::Eof,
        ]);
        let mut conn = on(fake, Mode::Ascii);
        let mut shared = shared();
        // No event has reported the 8 bytes yet.
        assert_eq!(conn.begin_shutdown(&mut shared), WAITING);
        assert_eq!(conn.stream.written, b"ABC\nDEF\n");
        assert_eq!(conn.stream.fins(), [8]);
        assert_eq!(conn.input, Input::Discarding(true));
        // Two reads for the 8 bytes, one WouldBlock.
        assert_eq!(conn.stream.read_calls, 3);

        assert_eq!(conn.ready(true, false, &mut shared), WAITING);
        assert_eq!(
            conn.stream.written, b"ABC\nDEF\n",
            "answered after shutdown"
        );
        // While discarding a short read is no proof of a drained queue.
        assert_eq!(conn.stream.read_calls, 5);
        assert_eq!(shared.counters.bytes_in, 13);

        assert_eq!(conn.ready(true, true, &mut shared), DONE);
        assert_eq!(conn.stream.written, b"ABC\nDEF\n");
        // The second shutdown(SHUT_WR), at the close, is a no-op.
        assert_eq!(conn.stream.fins(), [8, 8]);
    }

    /// Bytes that arrive between the count and the read are not answered:
    /// the read asks for the count, no more.
    #[test]
    fn graceful_shutdown_reads_no_further_than_the_count() {
        let mut fake = Fake::new().with([data(b"abc\ndef\n"), Rd::WouldBlock, Rd::Eof]);
        fake.unread = Some(Ok(4));
        let mut conn = on(fake, Mode::Ascii);
        let mut shared = shared();
        assert_eq!(conn.begin_shutdown(&mut shared), WAITING);
        assert_eq!(conn.stream.written, b"ABC\n");
        assert_eq!(conn.stream.fins(), [4]);
        assert_eq!(shared.counters.bytes_in, 8, "the rest read and dropped");
        assert_eq!(conn.ready(true, true, &mut shared), DONE);
        assert_eq!(conn.stream.written, b"ABC\n");
    }

    /// The count ends inside `ä`: its first byte comes back raw (as at an
    /// EOF) and the second, arriving later, is dropped.
    #[test]
    fn graceful_shutdown_returns_a_character_cut_by_the_count_raw() {
        let fake = Fake::new().with([
            data(b"ab\xC3"),
            Rd::WouldBlock,
            data(b"\xA4c"),
            Rd::WouldBlock,
            Rd::Eof,
        ]);
        let mut conn = on(fake, Mode::Unicode);
        let mut shared = shared();
        assert_eq!(conn.begin_shutdown(&mut shared), WAITING);
        assert_eq!(conn.stream.written, b"AB\xC3");
        assert_eq!(conn.stream.fins(), [3]);
        assert_eq!(conn.ready(true, false, &mut shared), WAITING);
        assert_eq!(conn.ready(true, true, &mut shared), DONE);
        assert_eq!(conn.stream.written, b"AB\xC3");
    }

    /// Nothing unread when shutdown begins: a character held from an
    /// earlier read comes back raw, then the FIN at once, without a read.
    #[test]
    fn graceful_shutdown_with_nothing_unread_sends_what_is_held_and_fin() {
        let mut conn = on(Fake::new().with([data(b"x\xC3")]), Mode::Unicode);
        let mut shared = shared();
        assert_eq!(conn.ready(true, false, &mut shared), WAITING);
        assert_eq!(conn.stream.written, b"X");
        assert_eq!(conn.begin_shutdown(&mut shared), WAITING);
        assert_eq!(conn.stream.written, b"X\xC3");
        assert_eq!(conn.stream.fins(), [2]);
        assert_eq!(conn.input, Input::Discarding(true));
        assert_eq!(conn.stream.read_calls, 1);
    }

    /// Shutdown begins while replies wait for room: the count is answered
    /// behind them and the FIN waits for all of it.
    #[test]
    fn graceful_shutdown_under_back_pressure_sends_the_fin_after_the_backlog() {
        let mut fake = Fake::new().with([data(b"abc\n"), Rd::WouldBlock, data(b"def\n")]);
        fake.room = 2;
        let mut conn = on(fake, Mode::Ascii);
        let mut shared = shared();
        assert_eq!(conn.ready(true, true, &mut shared), WAITING);
        assert_eq!(conn.stream.written, b"AB");
        assert_eq!(conn.begin_shutdown(&mut shared), WAITING);
        assert_eq!(conn.stream.written, b"AB");
        assert_eq!(conn.input, Input::Discarding(false));
        assert!(conn.stream.fins().is_empty(), "FIN with replies pending");
        conn.stream.room = usize::MAX;
        assert_eq!(conn.ready(false, false, &mut shared), WAITING);
        assert_eq!(conn.stream.written, b"ABC\nDEF\n");
        assert_eq!(conn.stream.fins(), [8]);
        assert_eq!(conn.input, Input::Discarding(true));
    }

    /// The kernel's count fails: the connection closes, classified.
    #[test]
    fn graceful_shutdown_closes_when_the_count_fails() {
        let mut fake = Fake::new().with([data(b"abc")]);
        fake.unread = Some(Err(io::ErrorKind::Other));
        let mut conn = on(fake, Mode::Ascii);
        assert_eq!(conn.begin_shutdown(&mut shared()), ERROR);
        assert_eq!(conn.stream.written, b"");
        assert_eq!(conn.stream.read_calls, 0);
    }

    /// Telnet `IAC EOF` is the client's end of input: what came before it
    /// is answered, nothing after it (in the same read or later), then our
    /// FIN while the connection reads and drops until the client's own.
    #[test]
    fn telnet_eof_answers_what_came_before_then_discards_until_the_fin() {
        let fake = Fake::new().with([
            data(b"hi\r\n\xFF\xECmore"),
            data(b"after"),
            Rd::WouldBlock,
            Rd::Eof,
        ]);
        let mut conn = on_telnet(fake, Mode::Ascii, telnet::Setting::On);
        let mut shared = shared();
        assert_eq!(conn.ready(true, false, &mut shared), WAITING);
        assert_eq!(conn.stream.written, b"HI\r\n");
        assert_eq!(conn.stream.fins(), [4]);
        assert_eq!(conn.input, Input::Discarding(true));

        assert_eq!(conn.ready(true, false, &mut shared), WAITING);
        assert_eq!(conn.stream.written, b"HI\r\n");
        assert_eq!(conn.ready(true, true, &mut shared), DONE);
        assert_eq!(conn.stream.written, b"HI\r\n");
        assert_eq!(shared.counters.bytes_in, 15);
    }

    /// Telnet's abort-output drops every reply not yet handed to the kernel,
    /// also when making room for the reply first moved the unsent bytes to
    /// the front of the buffer (so where they start is known only then).
    #[test]
    fn abort_output_drops_exactly_the_unsent_replies_after_a_reclaim() {
        let fake = Fake::new().with([
            data(b"abcdefgh"),
            Rd::WouldBlock,
            data(b"ijkl"),
            data(b"mn\xff\xf5xy"),
            Rd::WouldBlock,
        ]);
        let mut conn = on_telnet(fake, Mode::Ascii, telnet::Setting::On);
        // A cap of 8 bytes: reading pauses at 8 pending.
        let mut shared = Shared::new(8);
        conn.stream.room = 0;
        assert_eq!(conn.ready(true, false, &mut shared), WAITING);
        assert_eq!(conn.pending_output(), 8);
        conn.stream.room = 1;
        assert_eq!(conn.ready(false, false, &mut shared), WAITING);
        assert_eq!(conn.stream.written, b"A");
        // "ijkl" is read and queued (nothing can be written), then the
        // client takes 4 more bytes: 5 sent, 7 pending, in a 12-byte buffer.
        assert_eq!(conn.ready(true, false, &mut shared), WAITING);
        assert_eq!(conn.pending_output(), 11);
        conn.stream.room = 4;
        // An edge for both: 4 bytes flushed, then "mn IAC AO xy" read.
        // Making room for its reply drops the 5 sent bytes from the buffer
        // first.
        assert_eq!(conn.ready(true, false, &mut shared), WAITING);
        conn.stream.room = usize::MAX;
        assert_eq!(conn.ready(false, false, &mut shared), WAITING);
        assert_eq!(
            conn.stream.written,
            [&b"ABCDE"[..], &[telnet::IAC, telnet::DM], b"XY"].concat()
        );
    }

    /// After `READS_PER_TURN` full reads the connection yields, even when
    /// the queue turns out to be empty (only a read would tell); the loop
    /// calls `run` on the next turn, which carries on where it stopped.
    #[test]
    fn a_turn_yields_after_reads_per_turn_full_reads() {
        let chunk = b"abcdefghijklmnop";
        let mut fake = Fake::new();
        for _ in 0..READS_PER_TURN + 2 {
            fake.reads.push_back(data(chunk));
        }
        let mut conn = on(fake, Mode::Ascii);
        // A cap of 16: every read asks for 16 bytes, and gets them.
        let mut shared = Shared::new(chunk.len());
        let upper = chunk.to_ascii_uppercase();

        assert_eq!(conn.ready(true, false, &mut shared), Status::Yielded);
        assert_eq!(conn.stream.read_calls, READS_PER_TURN);
        assert_eq!(conn.stream.written, upper.repeat(READS_PER_TURN));

        assert_eq!(conn.run(&mut shared), WAITING);
        // The last two chunks, then WouldBlock.
        assert_eq!(conn.stream.read_calls, READS_PER_TURN + 3);
        assert_eq!(conn.stream.written, upper.repeat(READS_PER_TURN + 2));

        let mut fake = Fake::new();
        for _ in 0..READS_PER_TURN {
            fake.reads.push_back(data(chunk));
        }
        let mut conn = on(fake, Mode::Ascii);
        assert_eq!(conn.ready(true, false, &mut shared), Status::Yielded);
        assert_eq!(conn.run(&mut shared), WAITING);
        assert_eq!(conn.stream.read_calls, READS_PER_TURN + 1);
        assert_eq!(conn.stream.written, upper.repeat(READS_PER_TURN));
    }

    /// A read shorter than asked is taken for a drained queue (Linux raises
    /// a new edge for data arriving after it): the read that would say
    /// `WouldBlock` is saved. Not once an event reported hup or urgent data
    /// (`note` counts too): Linux ends a read at the urgent mark with more
    /// behind it, and no new edge would come for a FIN already reported.
    #[test]
    fn a_short_read_is_taken_for_drained_unless_hup_was_reported() {
        let script = || Fake::new().with([data(b"abc"), data(b"def"), Rd::WouldBlock, Rd::Eof]);
        let mut shared = shared();

        let mut conn = on(script(), Mode::Ascii);
        assert_eq!(conn.ready(true, false, &mut shared), WAITING);
        assert_eq!(conn.stream.written, b"ABC");
        assert_eq!(conn.stream.read_calls, 1);
        // No event: nothing is read.
        assert_eq!(conn.ready(false, false, &mut shared), WAITING);
        assert_eq!(conn.stream.read_calls, 1);
        assert_eq!(conn.ready(true, false, &mut shared), WAITING);
        assert_eq!(conn.stream.written, b"ABCDEF");
        assert_eq!(conn.stream.read_calls, 2);

        let mut conn = on(script(), Mode::Ascii);
        assert_eq!(conn.ready(true, true, &mut shared), WAITING);
        assert_eq!(conn.stream.written, b"ABCDEF");
        assert_eq!(conn.stream.read_calls, 3);
        assert_eq!(conn.ready(true, false, &mut shared), DONE);
        assert_eq!(conn.stream.fins(), [6]);

        let mut conn = on(script(), Mode::Ascii);
        conn.note(true, true);
        assert_eq!(conn.stream.read_calls, 0, "note read");
        assert_eq!(conn.run(&mut shared), WAITING);
        assert_eq!(conn.stream.written, b"ABCDEF");
        assert_eq!(conn.stream.read_calls, 3);
    }

    /// The idle timeout: a character the client left half-sent comes back
    /// raw, then the FIN, even with replies still waiting for room (the
    /// kernel sends the FIN after what it took).
    #[test]
    fn close_idle_sends_what_is_held_then_fin() {
        let mut conn = on(Fake::new().with([data(b"x\xC3")]), Mode::Unicode);
        let mut shared = shared();
        assert_eq!(conn.ready(true, false, &mut shared), WAITING);
        conn.close_idle(&mut shared);
        assert_eq!(conn.stream.written, b"X\xC3");
        assert_eq!(conn.stream.fins(), [2]);

        let mut fake = Fake::new().with([data(b"xy\xC3")]);
        fake.room = 1;
        let mut conn = on(fake, Mode::Unicode);
        assert_eq!(conn.ready(true, false, &mut shared), WAITING);
        conn.close_idle(&mut shared);
        assert_eq!(conn.stream.written, b"X");
        assert_eq!(conn.pending_output(), 2);
        assert_eq!(conn.stream.fins(), [1]);
    }

    /// A restart: the bytes the kernel held are answered, up to a character
    /// cut at their end, which stays carried; no FIN, nothing read after
    /// the count. The next process, given the snapshot, completes the
    /// character and carries on as if nothing happened.
    #[test]
    fn handover_answers_what_was_received_then_parks_and_resumes_elsewhere() {
        let fake = Fake::new().with([data(b"ab\xC3"), Rd::WouldBlock, data(b"later")]);
        let mut conn = on(fake, Mode::Unicode);
        let mut shared = shared();
        assert!(!conn.ready_for_handover(shared.max_pending_output));
        assert_eq!(conn.begin_handover(&mut shared), WAITING);
        assert!(conn.ready_for_handover(shared.max_pending_output));
        assert_eq!(conn.input, Input::Parked);
        assert_eq!(conn.stream.written, b"AB");
        assert!(conn.stream.fins().is_empty(), "FIN at a handover");
        // Parked: a new event reads nothing.
        assert_eq!(conn.ready(true, true, &mut shared), WAITING);
        assert_eq!(conn.stream.read_calls, 1);

        let snapshot = conn.snapshot();
        assert_eq!(snapshot.upcaser.carry(), b"\xC3");
        assert_eq!(snapshot.stage, Stage::Open);
        assert!(snapshot.pending.is_empty());
        let next = Fake::new().with([data(b"\xA4!"), Rd::Eof]);
        let mut conn = Connection::restore(next, snapshot, &mut shared);
        assert_eq!(conn.ready(true, true, &mut shared), DONE);
        assert_eq!(conn.stream.written, "\u{c4}!".as_bytes());
        assert_eq!(conn.stream.fins(), [3]);
    }

    /// A client that does not read its replies: the connection is ready as
    /// soon as its backlog is at the cap, and the backlog goes with it, in
    /// order, ahead of everything answered after the restart.
    #[test]
    fn handover_under_back_pressure_takes_the_unsent_replies_along() {
        let fake = Fake::new().with([data(b"abcdefgh"), data(b"ijkl"), Rd::WouldBlock]);
        let mut conn = on(fake, Mode::Ascii);
        conn.stream.room = 3;
        let mut shared = Shared::new(4);
        assert_eq!(conn.begin_handover(&mut shared), WAITING);
        assert_eq!(conn.input, Input::Draining(4));
        assert!(conn.ready_for_handover(shared.max_pending_output));
        let snapshot = conn.snapshot();
        assert_eq!(conn.stream.written, b"ABC");
        assert_eq!(snapshot.pending, b"DEFGH");

        let next = Fake::new().with([data(b"ijkl"), data(b"m"), Rd::Eof]);
        let mut conn = Connection::restore(next, snapshot, &mut Shared::new(4));
        assert_eq!(conn.pending_output(), 5);
        assert_eq!(conn.ready(true, true, &mut shared), DONE);
        assert_eq!(conn.stream.written, b"DEFGHIJKLM");
    }

    /// A handover that cannot take the connection after all: it shuts down
    /// gracefully from where it parked (what is held comes back raw, then
    /// the FIN), as if no handover had been tried.
    #[test]
    fn an_abandoned_handover_is_a_graceful_shutdown() {
        let fake = Fake::new().with([data(b"x\xC3"), Rd::WouldBlock, Rd::Eof]);
        let mut conn = on(fake, Mode::Unicode);
        let mut shared = shared();
        assert_eq!(conn.begin_handover(&mut shared), WAITING);
        assert_eq!(conn.stream.written, b"X");
        assert_eq!(conn.abandon_handover(&mut shared), WAITING);
        assert_eq!(conn.stream.written, b"X\xC3");
        assert_eq!(conn.stream.fins(), [2]);
        assert_eq!(conn.ready(true, true, &mut shared), DONE);
    }

    /// An event as the loop hands it to a connection: the fast path first,
    /// the general one if the fast path declines. Returns the status and
    /// whether the fast path was taken.
    fn event(
        conn: &mut Connection<Fake>,
        readable: bool,
        hup: bool,
        shared: &mut Shared,
    ) -> (Status, bool, bool) {
        let before = shared.counters.bytes_in + shared.counters.bytes_out;
        match conn.serve_fast(readable, hup, shared) {
            Fast::Served => {
                assert_ne!(shared.counters.bytes_in + shared.counters.bytes_out, before);
                (WAITING, true, true)
            }
            Fast::Ran(status, moved) => {
                let really = shared.counters.bytes_in + shared.counters.bytes_out != before;
                assert_eq!(moved, really, "moved");
                (status, moved, true)
            }
            Fast::General => {
                let status = conn.ready(readable, hup, shared);
                let moved = shared.counters.bytes_in + shared.counters.bytes_out != before;
                (status, moved, false)
            }
        }
    }

    /// One situation for the fast path: the socket's script, the output
    /// cap, the mode, and the events (readable, hup, the send buffer's
    /// room from then on, if it changes).
    struct Script {
        name: &'static str,
        reads: Vec<Rd>,
        writes: Vec<Wr>,
        room: usize,
        per_write: usize,
        cap: usize,
        mode: Mode,
        events: Vec<(bool, bool, Option<usize>)>,
        /// The connection's telnet setting.
        telnet: telnet::Setting,
        /// A graceful shutdown begins before the events.
        shutdown: bool,
        /// Whether the fast path must be taken at least once (`true`) or
        /// never (`false`: a state its entry test must decline).
        fast: bool,
    }

    impl Script {
        fn new(name: &'static str, reads: Vec<Rd>) -> Script {
            Script {
                name,
                reads,
                writes: Vec::new(),
                room: usize::MAX,
                per_write: usize::MAX,
                cap: 64 * 1024,
                mode: Mode::Unicode,
                events: vec![(true, false, None)],
                telnet: telnet::Setting::Off,
                shutdown: false,
                fast: true,
            }
        }

        fn connection(&self) -> Connection<Fake> {
            let mut fake = Fake::new().with(self.reads.iter().cloned());
            fake.writes.extend(self.writes.iter().cloned());
            fake.room = self.room;
            fake.per_write = self.per_write;
            on_telnet(fake, self.mode, self.telnet)
        }
    }

    /// Every exit of the fast path (a read that is EOF, `WouldBlock`,
    /// interrupted or an error; a full read, with the turn's budget; a
    /// send taken in part, refused, interrupted, failed or taking
    /// nothing; a read that is only part of a character) against the
    /// general path on the same script: after every event the same
    /// bytes written, FINs, reads, pending output, counters, status and
    /// "bytes moved" (what touches the idle list), the fast path taken
    /// at least once in each script.
    #[test]
    fn the_fast_path_does_exactly_what_the_general_path_does() {
        let twice = |events: usize| vec![(true, false, None); events];
        let scripts = vec![
            Script::new("short read", vec![data(b"hello\n"), Rd::WouldBlock]),
            Script {
                events: twice(3),
                ..Script::new(
                    "requests, then EOF",
                    vec![data(b"ab"), Rd::WouldBlock, data(b"cd"), Rd::Eof],
                )
            },
            Script::new("read WouldBlock", vec![Rd::WouldBlock]),
            Script::new(
                "read interrupted",
                vec![
                    Rd::Err(io::ErrorKind::Interrupted),
                    data(b"abc"),
                    Rd::WouldBlock,
                ],
            ),
            Script::new("read reset", vec![Rd::Err(io::ErrorKind::ConnectionReset)]),
            Script::new("read error", vec![Rd::Err(io::ErrorKind::Other)]),
            Script::new("EOF at once", vec![Rd::Eof]),
            Script {
                cap: 8,
                // The event, then the turns the loop queues it for.
                events: vec![
                    (true, false, None),
                    (false, false, None),
                    (false, false, None),
                ],
                ..Script::new(
                    "full reads over the budget",
                    vec![data(&[b'a'; 72]), Rd::WouldBlock],
                )
            },
            Script {
                cap: 8,
                events: twice(2),
                ..Script::new(
                    "a full read, then a short one",
                    vec![
                        data(b"abcdefgh"),
                        data(b"ij"),
                        Rd::WouldBlock,
                        data(b"k"),
                        Rd::Eof,
                    ],
                )
            },
            Script {
                room: 3,
                events: vec![(true, false, None), (false, false, Some(usize::MAX))],
                ..Script::new(
                    "send in part",
                    vec![data(b"hello, world\n"), Rd::WouldBlock],
                )
            },
            Script {
                per_write: 4,
                ..Script::new(
                    "short sends, all taken",
                    vec![data(b"hello, world\n"), Rd::WouldBlock],
                )
            },
            Script {
                room: 0,
                events: vec![(true, false, None), (false, false, Some(usize::MAX))],
                ..Script::new("send WouldBlock", vec![data(b"hello"), Rd::WouldBlock])
            },
            Script {
                room: 0,
                cap: 8,
                events: vec![(true, false, None), (false, false, Some(usize::MAX))],
                ..Script::new(
                    "full read, send refused, back-pressure",
                    vec![data(&[b'x'; 24]), Rd::WouldBlock],
                )
            },
            Script {
                writes: vec![Wr::Err(io::ErrorKind::Interrupted)],
                ..Script::new("send interrupted", vec![data(b"abc"), Rd::WouldBlock])
            },
            Script {
                writes: vec![Wr::Take(1), Wr::Err(io::ErrorKind::BrokenPipe)],
                ..Script::new(
                    "send reset after a part",
                    vec![data(b"abc"), Rd::WouldBlock],
                )
            },
            Script {
                writes: vec![Wr::Err(io::ErrorKind::Other)],
                ..Script::new("send error", vec![data(b"abc"), Rd::WouldBlock])
            },
            Script {
                writes: vec![Wr::Take(0)],
                ..Script::new("send takes nothing", vec![data(b"abc"), Rd::WouldBlock])
            },
            Script {
                events: twice(4),
                ..Script::new(
                    "a character split across reads",
                    vec![
                        data(b"stra\xC3"),
                        Rd::WouldBlock,
                        data(b"\x9F"),
                        Rd::WouldBlock,
                        data(b"e \xE2\x82"),
                        Rd::WouldBlock,
                        Rd::Eof,
                    ],
                )
            },
            Script {
                mode: Mode::Ascii,
                events: vec![(true, false, None), (true, true, None), (true, false, None)],
                ..Script::new(
                    "ascii mode, then the client's FIN",
                    vec![data(b"abc"), Rd::WouldBlock, data(b"d"), Rd::Eof],
                )
            },
            // The states the entry test declines, each met by a readable
            // event without `hup`, where a missing test would serve it.
            Script {
                // Urgent data (or an error, or the FIN) reported once: from
                // then on a short read is no proof of a drained queue.
                events: vec![(true, false, None), (true, true, None), (true, false, None)],
                ..Script::new(
                    "hup reported before, not now",
                    vec![
                        data(b"xy"),
                        data(b"ab"),
                        Rd::WouldBlock,
                        data(b"cd"),
                        data(b"ef"),
                        Rd::WouldBlock,
                    ],
                )
            },
            Script {
                room: 0,
                events: vec![(true, false, None), (true, false, Some(2))],
                ..Script::new(
                    "replies queued, then a request",
                    vec![data(b"hello"), data(b"abc"), Rd::WouldBlock],
                )
            },
            Script {
                telnet: telnet::Setting::On,
                fast: false,
                events: twice(2),
                ..Script::new(
                    "telnet",
                    vec![data(b"a\xFF\xF6b"), data(b"c\xFF\xFFd"), Rd::WouldBlock],
                )
            },
            Script {
                cap: 8,
                shutdown: true,
                fast: false,
                ..Script::new(
                    "a shutdown's drain over the budget",
                    vec![data(&[b'a'; 40]), Rd::WouldBlock],
                )
            },
        ];
        for script in scripts {
            let name = script.name;
            let mut general = script.connection();
            let mut fast = script.connection();
            let mut shared_general = Shared::new(script.cap);
            let mut shared_fast = Shared::new(script.cap);
            let mut taken = 0;
            if script.shutdown {
                let expected = general.begin_shutdown(&mut shared_general);
                let status = fast.begin_shutdown(&mut shared_fast);
                assert_eq!(status, expected, "{name}: shutdown");
                assert!(matches!(fast.input, Input::Draining(_)), "{name}: shutdown");
            }
            for (i, &(readable, hup, room)) in script.events.iter().enumerate() {
                if let Some(room) = room {
                    general.stream.room = room;
                    fast.stream.room = room;
                }
                let before = shared_general.counters.bytes_in + shared_general.counters.bytes_out;
                let expected = general.ready(readable, hup, &mut shared_general);
                let moved =
                    shared_general.counters.bytes_in + shared_general.counters.bytes_out != before;
                let (status, fast_moved, took_fast) =
                    event(&mut fast, readable, hup, &mut shared_fast);
                taken += usize::from(took_fast);
                let at = format!("{name}, event {i}");
                assert_eq!(status, expected, "{at}");
                assert_eq!(fast_moved, moved, "{at}: moved");
                assert_eq!(fast.stream.written, general.stream.written, "{at}");
                assert_eq!(fast.stream.fins(), general.stream.fins(), "{at}");
                assert_eq!(fast.stream.read_calls, general.stream.read_calls, "{at}");
                assert_eq!(fast.pending_output(), general.pending_output(), "{at}");
                assert_eq!(fast.input, general.input, "{at}");
                assert_eq!(fast.readable, general.readable, "{at}");
                assert_eq!(fast.bytes(), general.bytes(), "{at}");
                let counters = |s: &Shared| {
                    let c = &s.counters;
                    (c.bytes_in, c.bytes_out, c.tcp_reads)
                };
                assert_eq!(counters(&shared_fast), counters(&shared_general), "{at}");
                if matches!(expected, Status::Closed(_)) {
                    break;
                }
            }
            if script.fast {
                assert!(taken > 0, "{name}: the fast path was never taken");
            } else {
                assert_eq!(taken, 0, "{name}: the fast path was taken");
            }
        }
    }

    /// The fast path on a real socket whose kernel buffers are as small
    /// as they go and whose client does not read: the first replies go
    /// whole, then a send the kernel takes in part queues the rest, and
    /// from there the general path carries the connection; every byte
    /// comes back, in order, once the client reads.
    #[test]
    fn on_a_real_socket_the_fast_path_hands_a_partial_send_to_the_queue() {
        let (mut client, mut conn) = slow_pair(Mode::Ascii);
        let mut shared = Shared::new(1 << 20);
        let request: Vec<u8> = (0..4096).map(|i| b"abcdefghij\n"[i % 11]).collect();
        let mut sent = 0;
        let mut fast_served = 0;
        let mut queued = false;
        // Requests one by one, each served at its event, until a reply
        // no longer fits.
        while !queued {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut at = 0;
            while at < request.len() {
                assert!(Instant::now() < deadline, "request not sent");
                match client.write(&request[at..]) {
                    Ok(n) => at += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                    Err(e) => panic!("client write: {e}"),
                }
            }
            sent += request.len();
            // Wait for the bytes to arrive (the socket says so itself).
            while conn.stream.received_unread().unwrap() < request.len() {
                assert!(Instant::now() < deadline, "request never arrived");
                std::thread::yield_now();
            }
            match conn.serve_fast(true, false, &mut shared) {
                Fast::Served => fast_served += 1,
                Fast::Ran(status, moved) => {
                    assert_eq!(status, WAITING);
                    assert!(moved);
                    queued = conn.pending_output() > 0;
                    assert!(queued, "a read of {} bytes was not short", request.len());
                }
                Fast::General => panic!("a plain connection declined the fast path"),
            }
        }
        assert!(fast_served > 0, "the first reply did not fit");
        // Queued output: the fast path declines, the general path writes.
        assert_eq!(conn.serve_fast(true, false, &mut shared), Fast::General);
        let expected: Vec<u8> = (0..sent)
            .map(|i| b"abcdefghij\n"[(i % request.len()) % 11].to_ascii_uppercase())
            .collect();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < expected.len() {
            assert!(
                Instant::now() < deadline,
                "replies stalled at {}",
                got.len()
            );
            let mut buf = [0u8; 65536];
            match client.read(&mut buf) {
                Ok(0) => panic!("EOF"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert_eq!(conn.ready(false, false, &mut shared), WAITING);
                }
                Err(e) => panic!("client read: {e}"),
            }
        }
        assert_eq!(got, expected);
        assert_eq!(shared.counters.bytes_in, sent as u64);
        assert_eq!(shared.counters.bytes_out, sent as u64);
    }
}
