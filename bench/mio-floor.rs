//! The floor of this project's architecture: the least a single-threaded
//! `mio::Poll` + `slab` TCP server of this service can execute. It does what
//! ref-epoll-c (shared/anchors) does for TCP, no more: accept until the
//! listener would block, `TCP_NODELAY`, register for reading, then per
//! readiness event one read (edge-triggered, so again while a read fills the
//! buffer), ASCII upper case in place, one write, the unsent rest kept with
//! write interest until it drains; EOF or an error closes. No idle timeout,
//! no limits, no counters but the two the bench's figures need, no turn
//! budget, no PROXY header, no telnet, no records.
//!
//! `bench/callgrind --servers mio-floor` builds it in a scratch crate with
//! the project's own `Cargo.lock` (the same mio and slab) and counts it like
//! the other servers: what upcased costs above this line is its features'
//! and its code's; what this costs above ref-epoll-c is the crates' (mio's
//! event and socket wrappers, the slab).
//!
//! `mio-floor [PORT]`: prints `LISTENING <port>` on stdout once bound to
//! 127.0.0.1; on SIGTERM or SIGINT prints `tcp_in=N udp_out=0` on stderr
//! and exits.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

const LISTENER: Token = Token(usize::MAX);

struct Conn {
    stream: TcpStream,
    /// Bytes of a reply the socket did not take; empty while reading.
    pending: Vec<u8>,
}

fn main() -> io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .map(|p| p.parse().expect("PORT"))
        .unwrap_or(0);
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))?;

    let mut listener = TcpListener::bind(([127, 0, 0, 1], port).into())?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("LISTENING {}", listener.local_addr()?.port());
    io::stdout().flush()?;

    let mut conns: Slab<Conn> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 4096];
    let mut tcp_in: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            // A signal: the loop's test sees the flag.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            stream.set_nodelay(true)?;
                            let entry = conns.vacant_entry();
                            poll.registry().register(
                                &mut stream,
                                Token(entry.key()),
                                Interest::READABLE,
                            )?;
                            entry.insert(Conn {
                                stream,
                                pending: Vec::new(),
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                        Err(e) => return Err(e),
                    }
                }
                continue;
            }
            let key = event.token().0;
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            if serve(conn, &poll, key, &mut buf, &mut tcp_in).is_err() {
                // Closing the descriptor takes it out of the epoll set.
                conns.remove(key);
            }
        }
    }
    eprintln!("tcp_in={tcp_in} udp_out=0");
    Ok(())
}

/// One readiness event of a connection; `Err` closes it (EOF included).
fn serve(
    conn: &mut Conn,
    poll: &Poll,
    key: usize,
    buf: &mut [u8],
    tcp_in: &mut u64,
) -> io::Result<()> {
    if !conn.pending.is_empty() {
        let n = match conn.stream.write(&conn.pending) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        };
        conn.pending.drain(..n);
        if conn.pending.is_empty() {
            poll.registry()
                .reregister(&mut conn.stream, Token(key), Interest::READABLE)?;
        } else {
            return Ok(());
        }
    }
    loop {
        let n = match conn.stream.read(buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        *tcp_in += n as u64;
        buf[..n].make_ascii_uppercase();
        let w = match conn.stream.write(&buf[..n]) {
            Ok(w) => w,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        if w < n {
            conn.pending.extend_from_slice(&buf[w..n]);
            poll.registry().reregister(
                &mut conn.stream,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            return Ok(());
        }
        // A short read emptied the socket's queue: the next bytes bring a
        // new edge.
        if n < buf.len() {
            return Ok(());
        }
    }
}
