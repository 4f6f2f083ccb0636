//! Restarts that no client notices: the listening sockets and the open
//! connections go to systemd's file descriptor store, and the next process
//! of the service takes them back from it.
//!
//! The manager keeps a duplicate of every descriptor a service stores
//! (`FDSTORE=1`, `FileDescriptorStoreMax=`), passes them to the next process
//! in `LISTEN_FDS`/`LISTEN_FDNAMES` after a restart, and closes them when
//! the service really stops. The daemon knows the store is there from
//! `$FDSTORE` (see [`crate::systemd::fd_store_max`]); without it, nothing
//! here runs and SIGTERM is the graceful shutdown it always was.
//!
//! ```text
//! start    bind (or take from the store) the configured listeners;
//!          store the ones just bound, each under its own name:
//!          upcased.tcp.ADDR / upcased.udp.ADDR (':' written '-')
//! SIGTERM  stop serving the listeners (the store keeps them: clients that
//!          connect now wait in the kernel's backlog, datagrams in the
//!          socket's queue); every connection answers what the kernel
//!          held at the signal, flushes what the kernel takes, and parks
//!          (the rest of its input stays unread in the kernel)
//! ready    (every connection parked, or held up by a client that does
//!          not read, or shutdown_timeout): each connection's state goes
//!          into a memfd; the sockets are stored as upcased.conn (253 a
//!          message), the memfd as upcased.state; BARRIER=1 waits until
//!          the manager has read it all; exit 0
//! start    the stored listeners are adopted instead of bound; each stored
//!          connection is matched to its state by the socket's inode and
//!          served on; upcased.conn and upcased.state are removed from the
//!          store (which would otherwise keep every socket open forever)
//! ```
//!
//! Under socket activation the listeners belong to the `.socket` unit:
//! only connections are stored. A connection that finds no room in the
//! store (more than `$FDSTORE` descriptors) or in the state (more than
//! [`MAX_STATE_BYTES`]) gets the graceful shutdown instead. A state that
//! is missing or fails its checks closes the stored connections cleanly
//! (our FIN, nothing guessed).
//!
//! The state format (version 1, little-endian) is documented in
//! `docs/internals.md`: a header (`UPCASEDH`, version, count), one record
//! per connection (inode, peer, mode, the carried bytes of a split UTF-8
//! character, the telnet filter's three bytes, the input stage, the unsent
//! replies), and an FNV-1a checksum of all that.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::accept::{self, Listener};
use super::conn::{self, Connection, Snapshot, Stage};
use super::records::Ended;
use super::throttle::count;
use super::udp::{self, Endpoint};
use super::{Server, ServerError};
use crate::config::Config;
use crate::systemd::{self, ListenFd};
use crate::telnet;
use crate::transform::{Mode, Upcaser};

/// The store's name for the connections' sockets.
pub const CONN_NAME: &str = "upcased.conn";
/// The store's name for the memfd with the connections' state.
pub const STATE_NAME: &str = "upcased.state";
/// Names of stored TCP listeners start with this, then the address.
const TCP_PREFIX: &str = "upcased.tcp.";
/// Names of stored UDP sockets start with this, then the address.
const UDP_PREFIX: &str = "upcased.udp.";

/// The most bytes of state handed over: connections whose record does not
/// fit get the graceful shutdown. Bounds what the next process reads.
pub const MAX_STATE_BYTES: usize = 256 << 20;

/// How long the old process waits for the manager to confirm it read
/// the handover.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(5);

/// The store's name for a listening socket: the protocol and the address,
/// with ':' (the separator of `LISTEN_FDNAMES`, not allowed in a name)
/// written '-'.
pub fn listener_name(proto: &str, addr: SocketAddr) -> String {
    format!("upcased.{proto}.{}", addr.to_string().replace(':', "-"))
}

/// What the handover knows while the daemon serves.
#[derive(Debug, Default)]
pub struct Handover {
    /// `$FDSTORE`: how many descriptors the manager keeps for us. `None`:
    /// no store, SIGTERM is a graceful shutdown.
    limit: Option<usize>,
    /// Descriptors of ours in the store already (the listeners we stored).
    stored: usize,
    /// SIGTERM came with a store: connections are parking.
    active: bool,
}

/// A listening socket a previous process left in the store.
#[derive(Debug)]
struct StoredListener {
    /// Its name in the store.
    name: String,
    /// The socket.
    socket: socket2::Socket,
    /// Where it is bound.
    addr: SocketAddr,
}

/// What a previous process of the service left in the store, told apart
/// from socket activation's sockets by name.
#[derive(Debug, Default)]
pub struct Inherited {
    /// Stored TCP listeners not taken yet.
    tcp: Vec<StoredListener>,
    /// Stored UDP sockets not taken yet.
    udp: Vec<StoredListener>,
    /// Addresses of the stored listeners taken (they are in the store
    /// already).
    taken: Vec<(&'static str, SocketAddr)>,
    /// Stored connections.
    conns: Vec<OwnedFd>,
    /// Stored states (one, unless something went wrong).
    states: Vec<OwnedFd>,
    /// The service is socket-activated: the listeners are the `.socket`
    /// unit's, none of ours is stored.
    activated: bool,
}

impl Inherited {
    /// Splits what the manager passed into socket activation's sockets
    /// (returned) and what a previous process stored (kept here).
    pub fn split(passed: Vec<ListenFd>) -> (Vec<ListenFd>, Inherited) {
        let mut inherited = Inherited::default();
        let mut activation = Vec::new();
        for fd in passed {
            let name = fd.name.clone().unwrap_or_default();
            if name == CONN_NAME {
                inherited.conns.push(fd.fd);
            } else if name == STATE_NAME {
                inherited.states.push(fd.fd);
            } else if let Some(list) = [
                (TCP_PREFIX, &mut inherited.tcp),
                (UDP_PREFIX, &mut inherited.udp),
            ]
            .into_iter()
            .find_map(|(prefix, list)| name.starts_with(prefix).then_some(list))
            {
                let socket = socket2::Socket::from(fd.fd);
                match socket.local_addr().map(|a| a.as_socket()) {
                    Ok(Some(addr)) => list.push(StoredListener { name, socket, addr }),
                    Ok(None) | Err(_) => {
                        warn!(target: super::LOG_TARGET, "stored socket {name} has no address: closed");
                        forget(&name);
                    }
                }
            } else {
                activation.push(fd);
            }
        }
        inherited.activated = !activation.is_empty();
        (activation, inherited)
    }

    /// The stored TCP listener for `addr` from the config, if there is one:
    /// the same IP and port, or any port when the config says 0 (the port
    /// the previous process got is as good as any, and clients know it).
    pub(super) fn take_tcp(
        &mut self,
        addr: SocketAddr,
        config: &Config,
    ) -> Result<Option<Listener>, ServerError> {
        let Some(stored) = take(&mut self.tcp, addr) else {
            return Ok(None);
        };
        let adopted = |e: io::Error| ServerError::Adopt(stored.name.clone(), e);
        // listen() again applies the configured backlog to the stored socket.
        let backlog = i32::try_from(config.tcp.backlog).unwrap_or(i32::MAX);
        stored.socket.listen(backlog).map_err(adopted)?;
        let listener = accept::adopt(stored.socket, config.tcp.socket_buffer).map_err(adopted)?;
        info!(target: super::LOG_TARGET, "tcp://{} taken from the service manager's store", stored.addr);
        self.taken.push(("tcp", stored.addr));
        Ok(Some(listener))
    }

    /// The stored UDP socket for `addr` from the config, if there is one
    /// (matched as [`take_tcp`](Inherited::take_tcp) does).
    pub(super) fn take_udp(&mut self, addr: SocketAddr) -> Result<Option<Endpoint>, ServerError> {
        let Some(stored) = take(&mut self.udp, addr) else {
            return Ok(None);
        };
        let endpoint = udp::adopt(stored.socket).map_err(|e| ServerError::Adopt(stored.name, e))?;
        info!(target: super::LOG_TARGET, "udp://{} taken from the service manager's store", stored.addr);
        self.taken.push(("udp", stored.addr));
        Ok(Some(endpoint))
    }
}

/// Removes from `list` the stored socket that serves `addr` of the config.
fn take(list: &mut Vec<StoredListener>, addr: SocketAddr) -> Option<StoredListener> {
    let at = list.iter().position(|s| {
        s.addr.ip() == addr.ip() && (addr.port() == 0 || s.addr.port() == addr.port())
    })?;
    Some(list.remove(at))
}

/// Asks the manager to drop what it keeps under `name`; a failure only
/// costs a descriptor kept open until the service stops.
fn forget(name: &str) {
    if let Err(e) = systemd::remove_stored(name) {
        warn!(target: super::LOG_TARGET, "cannot remove {name} from the service manager's store: {e}");
    }
}

impl Server {
    /// After the sockets are open: closes stored listeners the config no
    /// longer names, stores the listeners just bound (when the manager
    /// keeps descriptors, `store` = `$FDSTORE`), and serves on the
    /// connections a previous process handed over.
    pub fn take_over(&mut self, mut inherited: Inherited, store: Option<usize>) {
        for stale in inherited.tcp.drain(..).chain(inherited.udp.drain(..)) {
            info!(target: super::LOG_TARGET, "{} from the previous process is no longer configured: closed", stale.name);
            forget(&stale.name);
        }
        if let Some(max) = store {
            self.handover.limit = Some(max);
            if !inherited.activated {
                self.store_listeners(&inherited.taken);
            }
        }
        let now = Instant::now();
        if !inherited.conns.is_empty() || !inherited.states.is_empty() {
            self.adopt_connections(inherited.conns, inherited.states, now);
        }
    }

    /// Stores every listener of ours that is not in the store already.
    fn store_listeners(&mut self, taken: &[(&'static str, SocketAddr)]) {
        let tcp = (self.acceptor.listeners.iter()).map(|l| ("tcp", l.addr, l.socket.as_fd()));
        let udp = (self.udp.iter()).map(|u| ("udp", u.addr, u.socket.as_fd()));
        let ours: Vec<_> = tcp.chain(udp).collect();
        for &(proto, addr, fd) in &ours {
            if taken.contains(&(proto, addr)) {
                continue;
            }
            let name = listener_name(proto, addr);
            if let Err((_, e)) = systemd::store_fds(&name, &[fd]) {
                warn!(target: super::LOG_TARGET, "cannot store {name} with the service manager: {e}; \
                    a restart will be a graceful shutdown");
                self.handover.limit = None;
                return;
            }
            debug!(target: super::LOG_TARGET, "stored {name} with the service manager");
        }
        self.handover.stored = ours.len();
    }

    /// Serves on the connections a previous process stored, each as it
    /// was there (its state matched by the socket's inode). Without a state
    /// that passes every check, they are closed cleanly.
    fn adopt_connections(&mut self, conns: Vec<OwnedFd>, states: Vec<OwnedFd>, now: Instant) {
        // The store would keep its copies (and so the connections) open
        // for as long as the service runs; from here on they are ours.
        forget(CONN_NAME);
        forget(STATE_NAME);
        let records = match states.len() {
            1 => states
                .into_iter()
                .next()
                .map(read_state)
                .unwrap_or(Err(StateError::Missing)),
            0 => Err(StateError::Missing),
            n => Err(StateError::Several(n)),
        };
        let mut records = match records {
            Ok(records) => records,
            Err(e) => {
                warn!(target: super::LOG_TARGET, "cannot read the handover state ({e}): closing {} handed over",
                    count(conns.len() as u64, "connection"));
                for fd in conns {
                    self.close_stored(fd);
                }
                return;
            }
        };
        let (mut adopted, mut pending, mut unknown) = (0u64, 0u64, 0u64);
        for fd in conns {
            let record = rustix::fs::fstat(&fd)
                .ok()
                .and_then(|stat| records.remove(&stat.st_ino));
            let Some(snapshot) = record else {
                unknown += 1;
                self.close_stored(fd);
                continue;
            };
            pending += snapshot.pending.len() as u64;
            let stream = std::net::TcpStream::from(fd);
            if let Err(e) = stream.set_nonblocking(true) {
                warn!(target: super::LOG_TARGET, "{}: handed over, but: {e}", snapshot.peer);
                continue;
            }
            let stream = mio::net::TcpStream::from_std(stream);
            let ip_counted = self.config.tcp.max_connections_per_ip.is_some();
            if ip_counted {
                self.acceptor.count_adopted(snapshot.peer.ip());
            }
            self.shared.counters.conns_accepted += 1;
            let conn = Connection::restore(stream, snapshot, &mut self.shared);
            self.insert_connection(conn, ip_counted, false, now);
            adopted += 1;
        }
        let mut also = String::new();
        if !records.is_empty() {
            also += &format!(
                "; {} closed during the restart",
                count(records.len() as u64, "client")
            );
        }
        if unknown > 0 {
            also += &format!("; {} without state closed", count(unknown, "connection"));
        }
        info!(target: super::LOG_TARGET, "adopted {}, {} of pending output{also}",
            count(adopted, "connection"),
            format_bytes(pending)
        );
    }

    /// A stored connection we cannot serve: our FIN, then what the client
    /// sent is read and dropped (a close with unread data would reset it).
    fn close_stored(&mut self, fd: OwnedFd) {
        let stream = std::net::TcpStream::from(fd);
        if stream.set_nonblocking(true).is_ok() {
            conn::refuse(&mut mio::net::TcpStream::from_std(stream), &mut self.shared);
        }
    }

    /// SIGTERM with a store: whether to hand over instead of shutting down.
    pub(super) fn can_hand_over(&self) -> bool {
        self.handover.limit.is_some()
    }

    /// SIGTERM with a store: listeners and UDP sockets are left to the
    /// store (nothing is accepted or received any more: that waits for the
    /// next process), connections answer what they hold and park.
    pub(super) fn begin_handover(&mut self, now: Instant) {
        let timeout = self.config.shutdown_timeout;
        self.deadline = Some(now + timeout);
        self.handover.active = true;
        let open = count(self.conns.len() as u64, "connection");
        // A stop and a restart look alike from here (SIGTERM either way):
        // on a stop the manager closes what it was handed.
        self.notify(&format!(
            "STOPPING=1\nSTATUS=shutting down: handing over {open}"
        ));
        info!(target: super::LOG_TARGET, "shutting down: handing over {open} to the service manager for the next process (deadline {})",
            crate::config::format_duration(timeout));
        let registry = self.poll.registry();
        for mut l in self.acceptor.listeners.drain(..) {
            let _ = registry.deregister(&mut l.socket);
        }
        for mut u in self.udp.drain(..) {
            let _ = registry.deregister(&mut u.socket);
        }
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            if self.conns[key].header.is_some() {
                // Accepted on a PROXY listener moments ago, its header not
                // yet whole: its bytes were only peeked at, and the state
                // format has no record of a header still awaited, so the
                // next process would take the header for data. Closed
                // unanswered (counted `proxy`), as at the header timeout;
                // the balancer sees a connection closed before any reply.
                self.refuse_header(
                    key,
                    "shutting down for a restart before its header came",
                    now,
                );
                continue;
            }
            let status = self.conns[key].conn.begin_handover(&mut self.shared);
            self.after(key, status);
        }
    }

    /// After every turn of the loop: once every connection is ready (or
    /// the deadline passed), hands them over.
    pub(super) fn handover_turn(&mut self, now: Instant) {
        if !self.handover.active {
            return;
        }
        let cap = self.shared.max_pending_output;
        let late = self.deadline.is_some_and(|d| now >= d);
        if late
            || self
                .conns
                .iter()
                .all(|(_, s)| s.conn.ready_for_handover(cap))
        {
            self.hand_over();
        }
    }

    /// Stores the connections and their state; what cannot be handed over
    /// shuts down gracefully.
    fn hand_over(&mut self) {
        self.handover.active = false;
        let limit = self.handover.limit.unwrap_or(0);
        // Our listeners are in the store already, and the state takes one.
        let room = limit.saturating_sub(self.handover.stored + 1);
        let mut state = StateWriter::new();
        let mut chosen = Vec::new();
        let mut pending = 0u64;
        for (key, slot) in &self.conns {
            if chosen.len() == room {
                break;
            }
            // Sized before the snapshot copies its pending output: one
            // that does not fit is not copied at all.
            if state.len() + record_len(slot.conn.pending_output()) > MAX_STATE_BYTES {
                continue;
            }
            let snapshot = slot.conn.snapshot();
            let Ok(stat) = rustix::fs::fstat(slot.conn.stream()) else {
                continue;
            };
            pending += snapshot.pending.len() as u64;
            state.push(stat.st_ino, &snapshot);
            chosen.push(key);
        }
        if !chosen.is_empty() {
            match self.send_handover(&chosen, state.finish()) {
                Ok(()) => {
                    for &key in &chosen {
                        let _ = self
                            .poll
                            .registry()
                            .deregister(self.conns[key].conn.stream_mut());
                        self.shared.counters.closed_handed_over += 1;
                        self.record(key, Ended::HandedOver);
                        // Our copy closes; the store's keeps the connection.
                        self.remove(key);
                    }
                    info!(target: super::LOG_TARGET, "handed over {}, {} of pending output",
                        count(chosen.len() as u64, "connection"),
                        format_bytes(pending)
                    );
                }
                Err(e) => {
                    warn!(target: super::LOG_TARGET, "handover failed ({e}): shutting down gracefully instead");
                    forget(CONN_NAME);
                    forget(STATE_NAME);
                }
            }
        }
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        if !keys.is_empty() {
            info!(target: super::LOG_TARGET, "{} not handed over: shutting them down gracefully",
                count(keys.len() as u64, "connection"));
        }
        for key in keys {
            let status = self.conns[key].conn.abandon_handover(&mut self.shared);
            self.after(key, status);
        }
    }

    /// The state into a memfd, the sockets and the memfd into the store,
    /// and a barrier: when it returns `Ok`, the manager has them.
    fn send_handover(&self, chosen: &[usize], state: Vec<u8>) -> io::Result<()> {
        let memfd = rustix::fs::memfd_create("upcased-handover", rustix::fs::MemfdFlags::CLOEXEC)?;
        let mut file = File::from(memfd);
        file.write_all(&state)?;
        let fds: Vec<BorrowedFd<'_>> = chosen
            .iter()
            .map(|&k| self.conns[k].conn.stream().as_fd())
            .collect();
        systemd::store_fds(CONN_NAME, &fds).map_err(|(sent, e)| {
            io::Error::new(
                e.kind(),
                format!("storing the connections, {sent} of {} sent: {e}", fds.len()),
            )
        })?;
        systemd::store_fds(STATE_NAME, &[file.as_fd()])
            .map_err(|(_, e)| io::Error::new(e.kind(), format!("storing the state: {e}")))?;
        if let Err(e) = systemd::barrier(BARRIER_TIMEOUT) {
            // Sent is sent: the manager is slow, and may still take them.
            warn!(target: super::LOG_TARGET, "the service manager did not confirm the handover: {e}");
        }
        Ok(())
    }
}

/// `n` bytes for a log line: bytes below 10 KiB, KiB below 10 MiB, then MiB.
fn format_bytes(n: u64) -> String {
    match n {
        n if n < 10 << 10 => count(n, "byte"),
        n if n < 10 << 20 => format!("{} KiB", n >> 10),
        n => format!("{} MiB", n >> 20),
    }
}

/// Why a handover state cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Connections came without a state.
    #[error("no state was stored")]
    Missing,
    /// More than one state came.
    #[error("{0} states were stored")]
    Several(usize),
    /// The memfd could not be read.
    #[error("cannot read it: {0}")]
    Io(#[from] io::Error),
    /// Larger than any state we write.
    #[error("{0} bytes, more than the {MAX_STATE_BYTES} a state may have")]
    TooLarge(u64),
    /// Not a state of ours.
    #[error("not an upcased handover state")]
    Magic,
    /// A version this process does not read.
    #[error("version {0}, this upcased reads version {VERSION}")]
    Version(u32),
    /// The checksum does not match.
    #[error("checksum mismatch")]
    Checksum,
    /// It ends early, or a field holds a value we never write.
    #[error("record {0}: {1}")]
    Record(u32, &'static str),
    /// Bytes after the last record.
    #[error("{0} bytes after the last record")]
    Trailing(usize),
}

/// First bytes of a state.
const MAGIC: &[u8; 8] = b"UPCASEDH";
/// The state format's version; the reader refuses any other.
pub const VERSION: u32 = 1;
/// Header: magic, version, record count.
const HEADER_LEN: usize = 8 + 4 + 4;
/// A record without its pending bytes.
const RECORD_FIXED_LEN: usize = 8 + 1 + 16 + 2 + 1 + 1 + 3 + 1 + 3 + 1 + 4;
/// The checksum at the end.
const TRAILER_LEN: usize = 8;

/// Bytes a connection's record takes.
fn record_len(pending: usize) -> usize {
    RECORD_FIXED_LEN + pending
}

/// Builds a state, record by record.
struct StateWriter {
    bytes: Vec<u8>,
    records: u32,
}

impl StateWriter {
    fn new() -> StateWriter {
        let mut bytes = Vec::with_capacity(HEADER_LEN + TRAILER_LEN);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        StateWriter { bytes, records: 0 }
    }

    /// Bytes so far, with the trailer to come.
    fn len(&self) -> usize {
        self.bytes.len() + TRAILER_LEN
    }

    fn push(&mut self, inode: u64, s: &Snapshot) {
        let b = &mut self.bytes;
        b.extend_from_slice(&inode.to_le_bytes());
        let (family, ip) = match s.peer.ip() {
            IpAddr::V4(v4) => {
                let mut ip = [0u8; 16];
                ip[..4].copy_from_slice(&v4.octets());
                (4u8, ip)
            }
            IpAddr::V6(v6) => (6u8, v6.octets()),
        };
        b.push(family);
        b.extend_from_slice(&ip);
        b.extend_from_slice(&s.peer.port().to_le_bytes());
        b.push(match s.upcaser.mode() {
            Mode::Ascii => 0,
            Mode::Unicode => 1,
        });
        let carry = s.upcaser.carry();
        let mut carried = [0u8; 3];
        carried[..carry.len()].copy_from_slice(carry);
        b.push(carry.len() as u8);
        b.extend_from_slice(&carried);
        match &s.telnet {
            Some(filter) => {
                b.push(1);
                b.extend_from_slice(&filter.to_bytes());
            }
            None => b.extend_from_slice(&[0; 4]),
        }
        b.push(match s.stage {
            Stage::Open => 0,
            Stage::Eof => 1,
            Stage::Discarding(false) => 2,
            Stage::Discarding(true) => 3,
        });
        // At most MAX_STATE_BYTES: the caller checks before pushing.
        b.extend_from_slice(&(s.pending.len() as u32).to_le_bytes());
        b.extend_from_slice(&s.pending);
        self.records += 1;
    }

    fn finish(mut self) -> Vec<u8> {
        self.bytes[12..16].copy_from_slice(&self.records.to_le_bytes());
        let sum = fnv1a(&self.bytes);
        self.bytes.extend_from_slice(&sum.to_le_bytes());
        self.bytes
    }
}

/// FNV-1a, 64 bits: catches a state damaged or cut short, which is all it
/// is for (the memfd never leaves the machine).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Reads the state memfd (from its start: the writer's offset is shared).
fn read_state(fd: OwnedFd) -> Result<HashMap<u64, Snapshot>, StateError> {
    let mut file = File::from(fd);
    let size = file.metadata()?.len();
    if size > MAX_STATE_BYTES as u64 {
        return Err(StateError::TooLarge(size));
    }
    file.seek(io::SeekFrom::Start(0))?;
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(MAX_STATE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    decode_state(&bytes)
}

/// A cursor over a state's bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    record: u32,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StateError> {
        if self.bytes.len() < n {
            return Err(StateError::Record(self.record, "cut short"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StateError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn byte(&mut self) -> Result<u8, StateError> {
        Ok(self.array::<1>()?[0])
    }
}

/// Parses a state; every field is checked, nothing is trusted.
pub fn decode_state(bytes: &[u8]) -> Result<HashMap<u64, Snapshot>, StateError> {
    if bytes.len() < HEADER_LEN + TRAILER_LEN || &bytes[..8] != MAGIC {
        return Err(StateError::Magic);
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != VERSION {
        return Err(StateError::Version(version));
    }
    let (body, sum) = bytes.split_at(bytes.len() - TRAILER_LEN);
    if fnv1a(body).to_le_bytes() != sum {
        return Err(StateError::Checksum);
    }
    let records = u32::from_le_bytes([body[12], body[13], body[14], body[15]]);
    let mut cursor = Cursor {
        bytes: &body[HEADER_LEN..],
        record: 0,
    };
    let mut out = HashMap::new();
    for record in 0..records {
        cursor.record = record;
        let bad = |what| StateError::Record(record, what);
        let inode = u64::from_le_bytes(cursor.array()?);
        let family = cursor.byte()?;
        let ip: [u8; 16] = cursor.array()?;
        let port = u16::from_le_bytes(cursor.array()?);
        let ip = match family {
            4 => IpAddr::from([ip[0], ip[1], ip[2], ip[3]]),
            6 => IpAddr::from(ip),
            _ => return Err(bad("unknown address family")),
        };
        let mode = match cursor.byte()? {
            0 => Mode::Ascii,
            1 => Mode::Unicode,
            _ => return Err(bad("unknown mode")),
        };
        let carry_len = usize::from(cursor.byte()?);
        let carry: [u8; 3] = cursor.array()?;
        let carry = carry
            .get(..carry_len)
            .ok_or(bad("carry longer than 3 bytes"))?;
        let upcaser =
            Upcaser::resume(mode, carry).ok_or(bad("not a carry the transform leaves"))?;
        let has_filter = cursor.byte()?;
        let filter: [u8; 3] = cursor.array()?;
        let telnet = match has_filter {
            0 => None,
            1 => Some(telnet::Filter::from_bytes(filter).ok_or(bad("unknown telnet state"))?),
            _ => return Err(bad("unknown telnet flag")),
        };
        let stage = match cursor.byte()? {
            0 => Stage::Open,
            1 => Stage::Eof,
            2 => Stage::Discarding(false),
            3 => Stage::Discarding(true),
            _ => return Err(bad("unknown input stage")),
        };
        let pending_len = u32::from_le_bytes(cursor.array()?) as usize;
        let pending = cursor.take(pending_len)?.to_vec();
        let snapshot = Snapshot {
            peer: SocketAddr::new(ip, port),
            upcaser,
            telnet,
            pending,
            stage,
        };
        if out.insert(inode, snapshot).is_some() {
            return Err(bad("the same socket twice"));
        }
    }
    if !cursor.bytes.is_empty() {
        return Err(StateError::Trailing(cursor.bytes.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn snapshots() -> Vec<(u64, Snapshot)> {
        let mut auto = telnet::Filter::auto();
        auto.feed(&[telnet::IAC], |_| {});
        vec![
            (
                7,
                Snapshot {
                    peer: "192.0.2.1:40000".parse().unwrap(),
                    upcaser: Upcaser::resume(Mode::Unicode, b"\xE6\x9D").unwrap(),
                    telnet: None,
                    pending: b"HELLO".to_vec(),
                    stage: Stage::Open,
                },
            ),
            (
                u64::MAX,
                Snapshot {
                    peer: "[2001:db8::1]:1".parse().unwrap(),
                    upcaser: Upcaser::new(Mode::Ascii),
                    telnet: Some(auto),
                    pending: Vec::new(),
                    stage: Stage::Discarding(true),
                },
            ),
        ]
    }

    fn encode(records: &[(u64, Snapshot)]) -> Vec<u8> {
        let mut w = StateWriter::new();
        for (inode, s) in records {
            w.push(*inode, s);
        }
        w.finish()
    }

    #[test]
    fn a_state_reads_back_as_it_was_written() {
        let records = snapshots();
        let bytes = encode(&records);
        assert_eq!(
            bytes.len(),
            HEADER_LEN + TRAILER_LEN + 2 * RECORD_FIXED_LEN + 5
        );
        let read = decode_state(&bytes).expect("valid state");
        assert_eq!(read.len(), 2);
        for (inode, want) in &records {
            let got = &read[inode];
            assert_eq!(got.peer, want.peer);
            assert_eq!(got.upcaser.mode(), want.upcaser.mode());
            assert_eq!(got.upcaser.carry(), want.upcaser.carry());
            assert_eq!(
                got.telnet.as_ref().map(|f| f.to_bytes()),
                want.telnet.as_ref().map(|f| f.to_bytes())
            );
            assert_eq!(got.pending, want.pending);
            assert_eq!(got.stage, want.stage);
        }
        assert!(decode_state(&encode(&[])).expect("empty").is_empty());
    }

    #[test]
    fn a_damaged_state_is_refused_never_misread() {
        let bytes = encode(&snapshots());
        for cut in 0..bytes.len() {
            assert!(decode_state(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x20;
            assert!(decode_state(&damaged).is_err(), "flipped at {at}");
        }
        let mut v2 = bytes.clone();
        v2[8] = 2;
        assert!(matches!(decode_state(&v2), Err(StateError::Version(2))));
    }

    /// A state whose checksum is right but whose fields are not (written
    /// by a broken writer): each is refused with the field named.
    #[test]
    fn fields_are_checked_even_under_a_good_checksum() {
        let body_at = HEADER_LEN;
        for (offset, value, what) in [
            (8, 5u8, "unknown address family"),
            (8 + 1 + 16 + 2, 9, "unknown mode"),
            (8 + 1 + 16 + 2 + 1, 4, "carry longer than 3 bytes"),
            (
                8 + 1 + 16 + 2 + 1 + 1,
                b'A',
                "not a carry the transform leaves",
            ),
            (8 + 1 + 16 + 2 + 1 + 1 + 3, 2, "unknown telnet flag"),
            (8 + 1 + 16 + 2 + 1 + 1 + 3 + 1 + 3, 4, "unknown input stage"),
        ] {
            let mut bytes = encode(&snapshots()[..1]);
            bytes[body_at + offset] = value;
            let len = bytes.len() - TRAILER_LEN;
            let sum = fnv1a(&bytes[..len]);
            bytes[len..].copy_from_slice(&sum.to_le_bytes());
            match decode_state(&bytes) {
                Err(StateError::Record(0, said)) => assert_eq!(said, what),
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    proptest! {
        /// Whatever the bytes, decoding answers (never panics, never
        /// allocates more than the input allows).
        #[test]
        fn any_bytes_decode_without_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..200), fix in any::<bool>()) {
            if fix && bytes.len() >= HEADER_LEN + TRAILER_LEN {
                bytes[..8].copy_from_slice(MAGIC);
                bytes[8..12].copy_from_slice(&VERSION.to_le_bytes());
                let len = bytes.len() - TRAILER_LEN;
                let sum = fnv1a(&bytes[..len]);
                bytes[len..].copy_from_slice(&sum.to_le_bytes());
            }
            let _ = decode_state(&bytes);
        }
    }

    #[test]
    fn listener_names_have_no_colon() {
        assert_eq!(
            listener_name("tcp", "127.0.0.1:12000".parse().unwrap()),
            "upcased.tcp.127.0.0.1-12000"
        );
        assert_eq!(
            listener_name("udp", "[::1]:12000".parse().unwrap()),
            "upcased.udp.[--1]-12000"
        );
    }
}
