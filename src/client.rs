//! The textbook client behind the `upcase` binary: read lines from standard
//! input, send them to the server, print the replies.
//!
//! Three ways to talk, chosen by [`run`] (the whole of the binary):
//!
//! - [`tcp_stream`] (TCP, input piped): two threads. One copies the input to
//!   the socket and then shuts down the write side; the other copies the
//!   socket to the output until the server's EOF. Sending and receiving
//!   overlap, so a multi-megabyte input never deadlocks (a client that wrote
//!   everything before reading would fill both directions' buffers and wait
//!   for ever), and no line waits for the previous reply.
//! - [`tcp_interactive`] (TCP, input is a terminal): prompt, send one line,
//!   print its reply (read up to the reply's newline: an upper-cased line may
//!   be longer than the line, `ß` → `SS`), repeat; Ctrl-D half-closes and
//!   prints whatever is left.
//! - [`udp_session`] (UDP, either): one datagram per line, a reply awaited
//!   with a timeout and the line re-sent a few times, since UDP may lose
//!   either datagram. Lines whose reply never came are reported one by one
//!   and make the session fail. Datagrams carry no sequence number, so a
//!   reply that comes after its line's `--timeout` (a slow server, or the
//!   answer to a retry that crossed the first reply) would look like the
//!   answer to whatever line is sent next. The client knows what it sent:
//!   it computes the upper case of the line with the server's own transform
//!   ([`crate::transform`], in `--mode`, unicode as upcased's default) and
//!   prints a reply only if it is exactly that; anything else is a late
//!   reply to an earlier line, ignored and counted (one line on standard
//!   error at the end).
//!
//! A *line* is the bytes up to and including `'\n'` (the last one may lack
//! it): the newline is sent too, so every reply carries its own line end and
//! output lines up exactly as the server wrote them (CRLF stays CRLF).

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;

use crate::transform::{self, Mode};

/// The server the client talks to by default: the daemon's default address.
pub const DEFAULT_SERVER: &str = "127.0.0.1:12000";

/// Largest UDP payload over IPv4: 65,535 minus the 20-byte IP header and
/// the 8-byte UDP header.
pub const MAX_DATAGRAM_V4: usize = 65_507;
/// Largest UDP payload over IPv6 (no jumbograms): 65,535 minus the UDP header.
pub const MAX_DATAGRAM_V6: usize = 65_527;

/// Text shown after the options in `--help`.
const AFTER_HELP: &str = "\
Reads lines from standard input, sends them to upcased and prints the
replies. When standard input is a terminal, it prompts (on standard error)
and prints each reply as it comes; Ctrl-D ends. Piped input is streamed over
TCP: sending and receiving overlap, and at the end of input every remaining
reply is printed. Over UDP each line (newline included) is one datagram.

Exit status:
  0  every line was sent and every reply printed
  1  network or runtime failure: cannot resolve or connect (refused, reset),
     a UDP reply missing after every retry, a line too long for a datagram
  2  bad usage";

/// Command-line arguments of the `upcase` client.
#[derive(Parser, Debug)]
#[command(
    name = "upcase",
    version,
    about = "Sends lines to upcased and prints them back in upper case.",
    long_about = None,
    after_help = AFTER_HELP
)]
pub struct ClientArgs {
    /// Talk UDP: one datagram per line
    #[arg(long)]
    pub udp: bool,

    /// UDP: how long to wait for a reply before sending the line again
    /// (e.g. 500ms, 2s)
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = crate::units::nonzero_duration)]
    pub timeout: Duration,

    /// UDP: how many times a line is sent again before its reply counts as lost
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub retries: u32,

    /// UDP: the server's mode; a reply is printed only if it is the line in
    /// that upper case, so a late reply to an earlier line is never taken
    /// for the answer to a later one
    #[arg(long, value_name = "MODE", default_value = "unicode", value_parser = crate::cli::mode_parser())]
    pub mode: Mode,

    /// The server, HOST:PORT (host names resolve; IPv6 as [::1]:12000)
    #[arg(value_name = "HOST:PORT", default_value = DEFAULT_SERVER, value_parser = Target::parse)]
    pub server: Target,
}

/// A server as the user wrote it: host (name or IP) and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Host name or IP address, without the brackets of an IPv6 address.
    pub host: String,
    /// TCP or UDP port.
    pub port: u16,
}

impl Target {
    /// Parses `HOST:PORT`, `IPv4:PORT` or `[IPv6]:PORT`.
    pub fn parse(s: &str) -> Result<Target, String> {
        let invalid = || {
            format!("invalid server {s:?}: expected HOST:PORT such as 127.0.0.1:12000, localhost:12000 or [::1]:12000")
        };
        let (host, port) = s.rsplit_once(':').ok_or_else(invalid)?;
        let host = match host.strip_prefix('[') {
            Some(inner) => inner.strip_suffix(']').ok_or_else(invalid)?,
            // An unbracketed IPv6 address ("::1:12000") is ambiguous.
            None if host.contains(':') => return Err(invalid()),
            None => host,
        };
        let port = port.parse().map_err(|_| invalid())?;
        if host.is_empty() {
            return Err(invalid());
        }
        Ok(Target {
            host: host.to_owned(),
            port,
        })
    }

    /// Every address the host resolves to, in the resolver's order.
    pub fn resolve(&self) -> Result<Vec<SocketAddr>, ClientError> {
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|source| ClientError::Resolve {
                target: self.to_string(),
                source,
            })?
            .collect();
        if addrs.is_empty() {
            return Err(ClientError::Resolve {
                target: self.to_string(),
                source: io::Error::new(io::ErrorKind::NotFound, "no address"),
            });
        }
        Ok(addrs)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Why a session failed. Every message names the cause and the address.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The host name did not resolve.
    #[error("cannot resolve {target}: {source}")]
    Resolve {
        /// The server as given.
        target: String,
        /// The resolver's reason.
        source: io::Error,
    },
    /// No address of the server accepted the connection.
    #[error(
        "cannot connect to {target}{}: {}",
        tried(target, addrs),
        reason(source)
    )]
    Connect {
        /// The server as given.
        target: String,
        /// Every address tried.
        addrs: Vec<SocketAddr>,
        /// Why the last one failed.
        source: io::Error,
    },
    /// The connection failed after it was set up (reset, ...).
    #[error("connection to {addr} failed: {}", reason(source))]
    Connection {
        /// The server's address.
        addr: SocketAddr,
        /// The OS reason.
        source: io::Error,
    },
    /// The server closed the connection while there was input left to send
    /// (or in the middle of an interactive reply).
    #[error("{addr} closed the connection before the end of the input")]
    ClosedEarly {
        /// The server's address.
        addr: SocketAddr,
    },
    /// Nothing at the server's UDP address (an ICMP "port unreachable" came back).
    #[error(
        "no server at udp://{target}{}: {}",
        tried(target, addrs),
        reason(source)
    )]
    UdpUnreachable {
        /// The server as given.
        target: String,
        /// Every address tried.
        addrs: Vec<SocketAddr>,
        /// The OS reason (connection refused).
        source: io::Error,
    },
    /// A UDP socket could not be set up or used.
    #[error("udp://{addr}: {}", reason(source))]
    Udp {
        /// The server's address.
        addr: SocketAddr,
        /// The OS reason.
        source: io::Error,
    },
    /// A line does not fit in one datagram.
    #[error("line {line} is {len} bytes, more than one UDP datagram to {addr} can carry ({max} bytes); send it over TCP")]
    LineTooLong {
        /// 1-based line number.
        line: u64,
        /// Its length, newline included.
        len: usize,
        /// The largest payload for the address family.
        max: usize,
        /// The server's address.
        addr: SocketAddr,
    },
    /// Some UDP replies never came (each was reported when it was given up).
    #[error(
        "no reply from udp://{addr} to {missing} of {lines} {}",
        if *lines == 1 { "line" } else { "lines" }
    )]
    MissingReplies {
        /// The server's address.
        addr: SocketAddr,
        /// Lines without a reply.
        missing: u64,
        /// Lines sent.
        lines: u64,
    },
    /// Standard input could not be read.
    #[error("cannot read standard input: {0}")]
    Input(#[source] io::Error),
    /// Standard output could not be written (other than a closed pipe).
    #[error("cannot write standard output: {0}")]
    Output(#[source] io::Error),
}

impl ClientError {
    /// The exit status for this error: 1, a network or runtime failure
    /// (clap exits with 2 on bad usage before a session starts).
    pub fn exit_code(&self) -> u8 {
        1
    }
}

/// " (tried A, B)" when the target is not simply the one address tried.
fn tried(target: &str, addrs: &[SocketAddr]) -> String {
    match addrs {
        [one] if one.to_string() == target => String::new(),
        _ => {
            let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            format!(" ({})", list.join(", "))
        }
    }
}

/// The OS reason in words a user acts on.
fn reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => {
            "connection refused (is upcased running there?)".to_owned()
        }
        io::ErrorKind::ConnectionReset => "connection reset by the server".to_owned(),
        io::ErrorKind::TimedOut => "timed out".to_owned(),
        _ => e.to_string(),
    }
}

/// Connects to the first address of `target` that accepts.
pub fn connect(target: &Target) -> Result<TcpStream, ClientError> {
    let addrs = target.resolve()?;
    let mut last = None;
    for &addr in &addrs {
        match TcpStream::connect(addr) {
            Ok(stream) => {
                // Interactive lines are small and each waits for its reply:
                // Nagle's algorithm would only delay them.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(ClientError::Connect {
        target: target.to_string(),
        addrs,
        source: last.unwrap_or_else(|| io::ErrorKind::NotFound.into()),
    })
}

/// The server's address, for messages. Only an unconnected socket has
/// none, and its first read or write then reports the real error.
fn peer(stream: &TcpStream) -> SocketAddr {
    stream
        .peer_addr()
        .unwrap_or_else(|_| (std::net::Ipv4Addr::UNSPECIFIED, 0).into())
}

/// A closed output pipe (`upcase | head -1`) means the reader has seen
/// enough: the session ends quietly, as other filters do.
fn output_result(result: io::Result<()>) -> Result<(), ClientError> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(ClientError::Output(e)),
        Ok(()) => Ok(()),
    }
}

/// How the input-copying thread ended.
enum Sent {
    /// All input sent and the write side shut down.
    Done,
    /// Reading the input failed.
    Input(io::Error),
    /// Writing to the server failed.
    Socket(io::Error),
}

/// Streams `input` to the server and the replies to `output`, at the same
/// time (see the module docs); at the end of input shuts down the write side
/// and prints every remaining reply, until the server's EOF.
///
/// `input` is read on a thread of its own, which is not waited for when the
/// session fails (a read from a pipe cannot be interrupted): hence `'static`.
pub fn tcp_stream<R, W>(stream: TcpStream, input: R, mut output: W) -> Result<(), ClientError>
where
    R: Read + Send + 'static,
    W: Write,
{
    let addr = peer(&stream);
    let mut sender = stream
        .try_clone()
        .map_err(|source| ClientError::Connection { addr, source })?;
    // Set just before the write side is shut down: an EOF from the server
    // after that is the normal end; before it, the server quit early.
    let input_done = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = mpsc::channel();
    {
        let input_done = Arc::clone(&input_done);
        thread::spawn(move || {
            let mut input = input;
            let sent = match copy(&mut input, &mut sender) {
                Ok(()) => {
                    input_done.store(true, Ordering::SeqCst);
                    match sender.shutdown(Shutdown::Write) {
                        Ok(()) => Sent::Done,
                        Err(e) => Sent::Socket(e),
                    }
                }
                Err(Failure::Read(e)) => Sent::Input(e),
                Err(Failure::Write(e)) => Sent::Socket(e),
            };
            // The receiver may be gone (the session already failed).
            let _ = done_tx.send(sent);
        });
    }
    let mut receiver = stream;
    match copy(&mut receiver, &mut output) {
        Ok(()) => {}
        Err(Failure::Read(source)) => return Err(ClientError::Connection { addr, source }),
        Err(Failure::Write(e)) => return output_result(Err(e)),
    }
    output_result(output.flush())?;
    // The server's EOF. If the input was all sent, the sender is at most
    // finishing its shutdown call: wait for its verdict. If not, the server
    // hung up early; the sender may be blocked reading input and is left.
    let sent = if input_done.load(Ordering::SeqCst) {
        done_rx.recv().ok()
    } else {
        done_rx.try_recv().ok()
    };
    match sent {
        Some(Sent::Done) => Ok(()),
        Some(Sent::Input(e)) => Err(ClientError::Input(e)),
        Some(Sent::Socket(source)) if source.kind() != io::ErrorKind::BrokenPipe => {
            Err(ClientError::Connection { addr, source })
        }
        Some(Sent::Socket(_)) | None => Err(ClientError::ClosedEarly { addr }),
    }
}

/// Which side of a copy failed.
enum Failure {
    Read(io::Error),
    Write(io::Error),
}

/// Copies until the reader's EOF, telling read errors from write errors
/// (`io::copy` does not).
fn copy(from: &mut impl Read, to: &mut impl Write) -> Result<(), Failure> {
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Failure::Read(e)),
        };
        to.write_all(&buf[..n]).map_err(Failure::Write)?;
    }
}

/// Where the interactive prompt goes (standard error, so that it never mixes
/// with the replies when standard output is redirected).
pub struct Prompt<'a> {
    /// The stream the prompt is written to.
    pub out: &'a mut dyn Write,
    /// The prompt text, e.g. `"> "`.
    pub text: &'a str,
}

impl Prompt<'_> {
    fn show(&mut self) {
        // A prompt that cannot be shown is no reason to stop the session.
        let _ = self.out.write_all(self.text.as_bytes());
        let _ = self.out.flush();
    }
}

/// One line at a time: prompt, read a line, send it, print its reply (up to
/// the reply's newline), repeat. At the end of input (Ctrl-D) the write side
/// is shut down and whatever the server still sends is printed.
pub fn tcp_interactive<W: Write>(
    stream: TcpStream,
    mut input: impl BufRead,
    mut output: W,
    mut prompt: Prompt<'_>,
) -> Result<(), ClientError> {
    let addr = peer(&stream);
    let broken = |source| ClientError::Connection { addr, source };
    let mut sender = stream.try_clone().map_err(broken)?;
    let mut replies = BufReader::new(stream);
    let mut line = Vec::new();
    let mut reply = Vec::new();
    loop {
        prompt.show();
        line.clear();
        input
            .read_until(b'\n', &mut line)
            .map_err(ClientError::Input)?;
        if line.last() != Some(&b'\n') {
            // End of input (a line cut short by Ctrl-D goes as it is).
            sender.write_all(&line).map_err(broken)?;
            sender.shutdown(Shutdown::Write).map_err(broken)?;
            let mut rest = Vec::new();
            replies.read_to_end(&mut rest).map_err(broken)?;
            output_result(output.write_all(&rest).and_then(|()| output.flush()))?;
            if line.is_empty() {
                // Leave the terminal's cursor on a fresh line after "> ^D".
                let _ = prompt.out.write_all(b"\n");
            }
            return Ok(());
        }
        sender.write_all(&line).map_err(broken)?;
        reply.clear();
        replies.read_until(b'\n', &mut reply).map_err(broken)?;
        output_result(output.write_all(&reply).and_then(|()| output.flush()))?;
        if reply.last() != Some(&b'\n') {
            return Err(ClientError::ClosedEarly { addr });
        }
    }
}

/// UDP retry policy, and how a reply is recognised.
#[derive(Clone, Copy, Debug)]
pub struct UdpOptions {
    /// How long to wait for a reply before sending the line again.
    pub timeout: Duration,
    /// How many times a line is sent again before it counts as lost.
    pub retries: u32,
    /// The server's mode: a reply is the line's upper case in this mode.
    pub mode: Mode,
}

/// A UDP socket connected to the server: the kernel then delivers only
/// datagrams from the server's address and port, so replies from anyone
/// else are dropped before we see them, and an ICMP "port unreachable"
/// comes back as `ConnectionRefused`.
fn udp_connect(addr: SocketAddr, timeout: Duration) -> Result<UdpSocket, ClientError> {
    let local: SocketAddr = if addr.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let failed = |source| ClientError::Udp { addr, source };
    let socket = UdpSocket::bind(local).map_err(failed)?;
    socket.connect(addr).map_err(failed)?;
    socket.set_read_timeout(Some(timeout)).map_err(failed)?;
    Ok(socket)
}

/// What became of one line sent over UDP.
enum Answer {
    /// The reply came (it equals the expected upper case).
    Reply,
    /// No reply after every try.
    Lost,
    /// ICMP port unreachable: nothing listens at this address.
    Refused(io::Error),
}

/// Sends `line` and waits for its reply, `expected`, sending again after
/// each timeout. Every other datagram is a late reply to an earlier line (or
/// to an earlier try of one): it is counted in `ignored` and the wait goes on
/// until the try's timeout, which runs from the send, not from the last
/// datagram (a stream of stale replies must not hold a try open for ever).
///
/// A late reply to an earlier *identical* line (or to any line with the same
/// upper case: `strasse` and `straße`) is accepted: it is the same bytes the
/// answer to this line would be, so what is printed is right either way.
fn exchange(
    socket: &UdpSocket,
    line: &[u8],
    expected: &[u8],
    buf: &mut [u8],
    options: UdpOptions,
    ignored: &mut u64,
) -> io::Result<Answer> {
    *ignored += drain_stale(socket, buf)?;
    for _ in 0..=options.retries {
        match socket.send(line) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Ok(Answer::Refused(e))
            }
            Err(e) => return Err(e),
        }
        let deadline = Instant::now() + options.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // Never zero here: a zero read timeout would block for ever.
            socket.set_read_timeout(Some(left))?;
            match socket.recv(buf) {
                Ok(n) if buf[..n] == *expected => return Ok(Answer::Reply),
                Ok(_) => *ignored += 1,
                // The read timeout: try again (SO_RCVTIMEO reports EAGAIN).
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    break
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    return Ok(Answer::Refused(e))
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(Answer::Lost)
}

/// Drops replies already queued for earlier lines (one given up on that came
/// late, or the server's answer to a retry that crossed the first reply)
/// before the next line is sent; returns how many. Those that come after the
/// send are told apart by [`exchange`].
fn drain_stale(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<u64> {
    socket.set_nonblocking(true)?;
    let mut dropped = 0;
    let result = loop {
        match socket.recv(buf) {
            Ok(_) => dropped += 1,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(dropped),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A refusal left over from an earlier send says nothing new; the
            // send that follows will meet it again if it still holds.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => break Err(e),
        }
    };
    socket.set_nonblocking(false)?;
    result
}

/// One datagram per line, each reply printed as it comes (see the module
/// docs): only a reply that is the line's upper case in `options.mode`;
/// late replies to earlier lines are ignored, and their count is reported
/// on `report` at the end. A line whose reply never comes is reported at once;
/// the session goes on and fails at the end with
/// [`ClientError::MissingReplies`]. When the server's address refuses
/// (nothing listens there) the next resolved address is tried.
pub fn udp_session<W: Write>(
    target: &Target,
    mut input: impl BufRead,
    mut output: W,
    report: &mut dyn Write,
    mut prompt: Option<Prompt<'_>>,
    options: UdpOptions,
) -> Result<(), ClientError> {
    let addrs = target.resolve()?;
    let mut index = 0;
    let mut addr = addrs[0];
    let mut socket = udp_connect(addr, options.timeout)?;
    // Room for the largest datagram: a reply may be longer than its line.
    let mut buf = vec![0; 65_536];
    let mut line = Vec::new();
    let mut expected = Vec::new();
    let (mut lines, mut missing, mut ignored) = (0u64, 0u64, 0u64);
    loop {
        if let Some(prompt) = prompt.as_mut() {
            prompt.show();
        }
        line.clear();
        input
            .read_until(b'\n', &mut line)
            .map_err(ClientError::Input)?;
        if line.is_empty() {
            if let Some(prompt) = prompt.as_mut() {
                let _ = prompt.out.write_all(b"\n");
            }
            break;
        }
        lines += 1;
        let max = if addr.is_ipv6() {
            MAX_DATAGRAM_V6
        } else {
            MAX_DATAGRAM_V4
        };
        if line.len() > max {
            return Err(ClientError::LineTooLong {
                line: lines,
                len: line.len(),
                max,
                addr,
            });
        }
        expected.clear();
        transform::upcase_into(options.mode, &line, &mut expected);
        loop {
            let answer = exchange(&socket, &line, &expected, &mut buf, options, &mut ignored)
                .map_err(|source| ClientError::Udp { addr, source })?;
            match answer {
                Answer::Reply => {
                    output_result(output.write_all(&expected).and_then(|()| output.flush()))?;
                }
                Answer::Lost => {
                    missing += 1;
                    let tries = u64::from(options.retries) + 1;
                    let _ = if tries == 1 {
                        writeln!(
                            report,
                            "upcase: line {lines}: no reply from udp://{addr} after 1 try ({:?})",
                            options.timeout
                        )
                    } else {
                        writeln!(
                            report,
                            "upcase: line {lines}: no reply from udp://{addr} after {tries} tries ({:?} each)",
                            options.timeout
                        )
                    };
                }
                Answer::Refused(source) => {
                    // `localhost` may resolve to ::1 first while the
                    // daemon listens on 127.0.0.1 only.
                    index += 1;
                    let Some(&next) = addrs.get(index) else {
                        return Err(ClientError::UdpUnreachable {
                            target: target.to_string(),
                            addrs,
                            source,
                        });
                    };
                    addr = next;
                    socket = udp_connect(addr, options.timeout)?;
                    continue;
                }
            }
            break;
        }
    }
    if ignored > 0 {
        let _ = writeln!(
            report,
            "upcase: ignored {ignored} late {} from udp://{addr} (not the upper case of the line then awaiting one)",
            if ignored == 1 { "reply" } else { "replies" },
        );
        if missing > 0 && options.mode == Mode::Unicode {
            // Not late at all, maybe: an ascii-mode server leaves non-ASCII
            // letters alone, so its replies never equal the unicode upper case.
            let _ = writeln!(
                report,
                "upcase: if upcased runs with --mode ascii, pass --mode ascii to upcase too"
            );
        }
    }
    if missing > 0 {
        return Err(ClientError::MissingReplies {
            addr,
            missing,
            lines,
        });
    }
    Ok(())
}

/// The whole of `upcase`: picks the way to talk from `args` and from whether
/// standard input is a terminal (TCP streamed or interactive, UDP), and runs
/// it on the process's standard streams.
pub fn run(args: &ClientArgs) -> Result<(), ClientError> {
    use std::io::IsTerminal;
    let interactive = io::stdin().is_terminal();
    let stdout = io::stdout();
    let mut stderr = io::stderr();
    let transport = if args.udp { "UDP" } else { "TCP" };
    if args.udp {
        let options = UdpOptions {
            timeout: args.timeout,
            retries: args.retries,
            mode: args.mode,
        };
        let mut prompt_out = io::stderr();
        let prompt = interactive.then(|| {
            greet(&mut prompt_out, &args.server, transport);
            Prompt {
                out: &mut prompt_out,
                text: "> ",
            }
        });
        return udp_session(
            &args.server,
            io::stdin().lock(),
            stdout.lock(),
            &mut stderr,
            prompt,
            options,
        );
    }
    let stream = connect(&args.server)?;
    if interactive {
        greet(&mut stderr, &args.server, transport);
        let prompt = Prompt {
            out: &mut stderr,
            text: "> ",
        };
        tcp_interactive(stream, io::stdin().lock(), stdout.lock(), prompt)
    } else {
        tcp_stream(stream, io::stdin(), stdout.lock())
    }
}

/// The interactive banner, on standard error like the prompt.
fn greet(out: &mut impl Write, server: &Target, transport: &str) {
    let _ = writeln!(
        out,
        "upcase: talking to {server} over {transport}; type a line, Ctrl-D quits"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = |host: &str, port| Target {
            host: host.to_owned(),
            port,
        };
        assert_eq!(Target::parse("127.0.0.1:12000"), Ok(t("127.0.0.1", 12000)));
        assert_eq!(Target::parse("localhost:1"), Ok(t("localhost", 1)));
        assert_eq!(Target::parse("[::1]:12000"), Ok(t("::1", 12000)));
        assert_eq!(t("::1", 12000).to_string(), "[::1]:12000");
        assert_eq!(t("localhost", 7).to_string(), "localhost:7");
        for bad in [
            "localhost",
            "::1:12000",
            "[::1:12000",
            ":12000",
            "host:port",
            "host:70000",
            "",
        ] {
            let e = Target::parse(bad).unwrap_err();
            assert!(e.starts_with("invalid server"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn args() {
        use clap::CommandFactory;
        ClientArgs::command().debug_assert();
        let a = ClientArgs::try_parse_from(["upcase"]).unwrap();
        assert!(!a.udp);
        assert_eq!(a.timeout, Duration::from_secs(1));
        assert_eq!(a.retries, 3);
        assert_eq!(a.mode, Mode::Unicode, "upcased's default mode");
        assert_eq!(a.server, Target::parse(DEFAULT_SERVER).unwrap());
        let a = ClientArgs::try_parse_from([
            "upcase",
            "--udp",
            "--timeout",
            "250ms",
            "--retries",
            "0",
            "--mode",
            "ascii",
            "[::1]:9",
        ])
        .unwrap();
        assert!(a.udp);
        assert_eq!(a.mode, Mode::Ascii);
        assert_eq!(a.timeout, Duration::from_millis(250));
        assert_eq!(a.retries, 0);
        assert_eq!(a.server.to_string(), "[::1]:9");
        for argv in [
            &["upcase", "--timeout", "0s"][..],
            &["upcase", "--timeout", "1"],
            &["upcase", "--retries", "-1"],
            &["upcase", "nohost"],
            &["upcase", "a:1", "b:2"],
            &["upcase", "--mode", "klingon"],
        ] {
            let e = ClientArgs::try_parse_from(argv).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{argv:?}");
        }
        let help = ClientArgs::command().render_long_help().to_string();
        for needle in [
            "--udp",
            "--timeout",
            "--retries",
            "--mode",
            "HOST:PORT",
            "Exit status:",
        ] {
            assert!(help.contains(needle), "{needle:?} missing from:\n{help}");
        }
    }

    #[test]
    fn messages_name_cause_and_address() {
        let refused = || io::Error::from(io::ErrorKind::ConnectionRefused);
        let e = ClientError::Connect {
            target: "127.0.0.1:12000".to_owned(),
            addrs: vec!["127.0.0.1:12000".parse().unwrap()],
            source: refused(),
        };
        assert_eq!(
            e.to_string(),
            "cannot connect to 127.0.0.1:12000: connection refused (is upcased running there?)"
        );
        let e = ClientError::Connect {
            target: "localhost:12000".to_owned(),
            addrs: vec![
                "[::1]:12000".parse().unwrap(),
                "127.0.0.1:12000".parse().unwrap(),
            ],
            source: refused(),
        };
        assert_eq!(
            e.to_string(),
            "cannot connect to localhost:12000 ([::1]:12000, 127.0.0.1:12000): connection refused (is upcased running there?)"
        );
        let e = ClientError::LineTooLong {
            line: 2,
            len: 70_000,
            max: MAX_DATAGRAM_V4,
            addr: "127.0.0.1:9".parse().unwrap(),
        };
        assert_eq!(e.to_string(), "line 2 is 70000 bytes, more than one UDP datagram to 127.0.0.1:9 can carry (65507 bytes); send it over TCP");
    }
}
