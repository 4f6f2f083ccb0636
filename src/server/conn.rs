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

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};

use mio::net::TcpStream;

use crate::server::buffers::{OutBuf, Shared};
use crate::telnet;
use crate::transform::{Mode, Upcaser};

/// Reads one connection may do per turn before the others get theirs. With
/// the 64 KiB read buffer that is up to 256 KiB per turn: large enough that a
/// bulk transfer costs few wake-ups, small enough that one fast client cannot
/// starve thousands of others.
const READS_PER_TURN: usize = 4;

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
}

/// One accepted client.
#[derive(Debug)]
pub struct Connection {
    /// The socket, registered once for READABLE | WRITABLE (edge-triggered).
    stream: TcpStream,
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
}

impl Connection {
    /// Wraps a freshly accepted socket; `telnet` says whether it gets the
    /// telnet command filter (decided now for its whole life, or by its
    /// first bytes with `auto`).
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        mode: Mode,
        telnet: telnet::Setting,
    ) -> Connection {
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
        }
    }

    /// The socket, for (de)registration by the loop.
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Bytes of replies waiting for the kernel to take them.
    pub fn pending_output(&self) -> usize {
        self.out.as_ref().map_or(0, |out| out.pending())
    }

    /// A readiness event arrived. Whatever it says, the connection tries what
    /// it can: reads until drained (or its budget), writes what is pending.
    /// `hup`: the event says the client shut down its side (or failed).
    pub fn ready(&mut self, readable: bool, hup: bool, shared: &mut Shared) -> Status {
        self.readable |= readable;
        self.hup |= hup;
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
            match received_unread(&self.stream) {
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
        let _ = shutdown_write(&self.stream);
    }

    /// One turn of work: flush, read and reply within the budget, then see
    /// whether the connection is finished.
    pub fn run(&mut self, shared: &mut Shared) -> Status {
        match self.turn(shared) {
            Ok(status) => status,
            Err(e) => Status::Closed(classify(&e)),
        }
    }

    fn turn(&mut self, shared: &mut Shared) -> io::Result<Status> {
        if self.pending_output() > 0 {
            self.flush(shared)?;
        }
        if self.input == Input::Draining(0) {
            self.stop_answering(shared)?;
        }
        let cap = shared.max_pending_output;
        let mut reads = 0;
        while self.readable && self.input != Input::Eof {
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
            match self.stream.read(&mut shared.read_buf[..len]) {
                Ok(0) => {
                    self.readable = false;
                    if !matches!(self.input, Input::Discarding(_)) {
                        self.finish(shared)?;
                    }
                    self.input = Input::Eof;
                }
                Ok(n) => {
                    shared.counters.bytes_in += n as u64;
                    if n < len && !self.hup && self.input == Input::Open {
                        // A short read emptied the receive queue: on Linux,
                        // data arriving after it raises a new edge, so the
                        // read that would only say WouldBlock is saved (one
                        // syscall in four for small requests). Not once the
                        // client's FIN is known: it came with the edge we
                        // are serving and no new edge would report the EOF.
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
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    if let Input::Draining(_) = self.input {
                        // Fewer bytes than counted (cannot happen with TCP,
                        // but a count is no promise): what there was is answered.
                        self.stop_answering(shared)?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.pending_output() == 0 {
            match self.input {
                Input::Eof => {
                    // Half-close done right: every reply is with the kernel,
                    // which delivers it before the FIN. The client's input is
                    // fully read, so closing sends no RST.
                    shutdown_write(&self.stream)?;
                    return Ok(Status::Closed(Close::Done));
                }
                Input::Discarding(false) => {
                    // Our FIN tells the client we are done; we keep reading
                    // (and dropping) until its EOF or the shutdown deadline.
                    shutdown_write(&self.stream)?;
                    self.input = Input::Discarding(true);
                }
                Input::Open | Input::Draining(_) | Input::Discarding(true) => {}
            }
        }
        Ok(Status::Waiting)
    }

    /// Shutdown: everything received before it is answered (a character
    /// split at the very end passes through as it is); from now on input is
    /// read and dropped.
    fn stop_answering(&mut self, shared: &mut Shared) -> io::Result<()> {
        self.finish(shared)?;
        self.input = Input::Discarding(false);
        Ok(())
    }

    /// The input ended (EOF, shutdown, idle timeout): answers what the
    /// telnet filter and the transform still hold (a lone `IAC` of an
    /// undecided connection, a character cut short: both come back raw).
    fn finish(&mut self, shared: &mut Shared) -> io::Result<()> {
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

    /// Answers the `n` bytes just read into the shared read buffer.
    fn answer(&mut self, shared: &mut Shared, n: usize) -> io::Result<()> {
        let Some(mut filter) = self.telnet.take() else {
            return self.reply(shared, |upcaser, input, out| upcaser.feed(&input[..n], out));
        };
        // Replies already handed to the kernel end here: an abort-output
        // command can drop only what lies after.
        let floor = self.out.as_ref().map_or(0, |out| out.sent);
        let mut ended = false;
        // The filter is taken out for the call because `reply` borrows the
        // whole connection; it is two bytes of state.
        let result = self.reply(shared, |upcaser, input, out| {
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
    fn reply<F>(&mut self, shared: &mut Shared, produce: F) -> io::Result<()>
    where
        F: FnOnce(&mut Upcaser, &[u8], &mut Vec<u8>),
    {
        if let Some(out) = &mut self.out {
            produce(&mut self.upcaser, &shared.read_buf, &mut out.data);
            return self.flush(shared);
        }
        let scratch = &mut shared.scratch;
        scratch.clear();
        produce(&mut self.upcaser, &shared.read_buf, scratch);
        let written = write_all_nonblocking(&mut self.stream, scratch)?;
        shared.counters.bytes_out += written as u64;
        if written < scratch.len() {
            let mut out = shared.pool.take();
            out.data.extend_from_slice(&scratch[written..]);
            self.out = Some(out);
        }
        Ok(())
    }

    /// Writes pending output until it is gone or the kernel refuses more.
    fn flush(&mut self, shared: &mut Shared) -> io::Result<()> {
        let Some(out) = &mut self.out else {
            return Ok(());
        };
        let written = write_all_nonblocking(&mut self.stream, &out.data[out.sent..])?;
        shared.counters.bytes_out += written as u64;
        out.sent += written;
        if out.pending() == 0 {
            if let Some(out) = self.out.take() {
                shared.pool.give(out);
            }
        }
        Ok(())
    }
}

/// Reads a refused client may cost before its socket is closed.
const REFUSE_READS: usize = 4;

/// Closes a client that will not be served (a limit), cleanly: our FIN
/// first, then what it already sent is read and dropped, so that `close`
/// finds the receive queue empty. (Closing a socket with unread data makes
/// Linux send an RST instead of a FIN, which the client sees as an error.)
/// Bounded: a client still sending after that meets a closed socket.
pub fn refuse(stream: TcpStream, shared: &mut Shared) {
    let mut stream = stream;
    let _ = shutdown_write(&stream);
    for _ in 0..REFUSE_READS {
        match stream.read(&mut shared.read_buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => shared.counters.bytes_in += n as u64,
        }
    }
}

/// Writes as much of `data` as the kernel takes without blocking; returns how
/// much that was. Stops at `WouldBlock`, retries `Interrupted`.
fn write_all_nonblocking(stream: &mut TcpStream, data: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < data.len() {
        match stream.write(&data[written..]) {
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
fn shutdown_write(stream: &TcpStream) -> io::Result<()> {
    match stream.shutdown(Shutdown::Write) {
        Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
        _ => Ok(()),
    }
}

/// A peer that resets or vanishes is a normal end, not a server error.
fn classify(e: &io::Error) -> Close {
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::NotConnected => Close::Reset,
        _ => Close::Error,
    }
}
