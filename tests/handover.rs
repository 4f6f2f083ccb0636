//! Restarts through the service manager's file descriptor store (issue 14
//! C), with the manager emulated: a unix datagram socket of the test's as
//! `NOTIFY_SOCKET` that keeps the descriptors sent with `FDSTORE=1`
//! (`SCM_RIGHTS`), drops them on `FDSTOREREMOVE=1`, closes a `BARRIER=1`'s,
//! and starts the next upcased with duplicates of what it keeps as
//! `LISTEN_FDS`/`LISTEN_FDNAMES`/`LISTEN_PID`, as systemd does after
//! `systemctl restart`.

use std::io::{self, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

use crate::util::*;

/// What the emulated manager holds.
#[derive(Default)]
struct Store {
    /// The stored descriptors and their names, in the order they came.
    fds: Vec<(String, OwnedFd)>,
    /// Every notification, as text.
    messages: Vec<String>,
    /// Keeps connections' descriptors past `FDSTOREREMOVE=1`, as a manager
    /// that has not got to the message yet does: the window in which the
    /// store still holds a duplicate of a socket the daemon closes.
    slow_to_remove: bool,
}

impl Store {
    fn names(&self) -> Vec<&str> {
        self.fds.iter().map(|(n, _)| n.as_str()).collect()
    }

    fn count(&self, name: &str) -> usize {
        self.fds.iter().filter(|(n, _)| n == name).count()
    }
}

/// The service manager's end of `NOTIFY_SOCKET`, with a file descriptor store.
struct FdManager {
    path: PathBuf,
    store: Arc<(Mutex<Store>, Condvar)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FdManager {
    fn new(name: &str) -> FdManager {
        let path = std::env::temp_dir().join(format!(
            "upcase-test-{}-fdstore-{name}.sock",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        // The receiving thread looks at `stop` this often.
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let store: Arc<(Mutex<Store>, Condvar)> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if let Some((text, fds)) = receive(&socket) {
                        let (lock, changed) = &*store;
                        lock.lock().unwrap().apply(text, fds);
                        changed.notify_all();
                    }
                }
            })
        };
        FdManager {
            path,
            store,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits until the store satisfies `done`.
    fn wait_for(&self, what: &str, done: impl Fn(&Store) -> bool) {
        let (lock, changed) = &*self.store;
        let deadline = Instant::now() + PATIENCE;
        let mut store = lock.lock().unwrap();
        while !done(&store) {
            assert!(
                Instant::now() < deadline,
                "the store never had {what}: {:?}",
                store.names()
            );
            store = changed
                .wait_timeout(store, Duration::from_millis(100))
                .unwrap()
                .0;
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        f(&mut self.store.0.lock().unwrap())
    }

    /// Starts upcased as the manager starts the next process of the
    /// service: duplicates of the stored descriptors as 3, 4, … with their
    /// names, `$FDSTORE` and `NOTIFY_SOCKET` set.
    fn start_next(&self, args: &[&str], fdstore: &str, sockets: usize) -> Daemon {
        let (names, dups): (Vec<String>, Vec<OwnedFd>) = self.with(|store| {
            let first_free = 3 + store.fds.len() as i32;
            store
                .fds
                .iter()
                .map(|(name, fd)| {
                    // Above every target number, so no dup2 below
                    // overwrites a descriptor still to be moved.
                    let dup = rustix::io::fcntl_dupfd_cloexec(fd, first_free).unwrap();
                    (name.clone(), dup)
                })
                .unzip()
        });
        let raw: Vec<i32> = dups.iter().map(|fd| fd.as_raw_fd()).collect();
        let mut command = Command::new("/bin/sh");
        // LISTEN_PID must be upcased's pid: the shell's, which exec keeps.
        command
            .arg("-c")
            .arg("export LISTEN_PID=$$; exec \"$0\" \"$@\"")
            .arg(daemon_path())
            .args(args)
            .env("LISTEN_FDS", raw.len().to_string())
            .env("LISTEN_FDNAMES", names.join(":"))
            .env("NOTIFY_SOCKET", &self.path)
            .env("FDSTORE", fdstore);
        // SAFETY: dup2 is async-signal-safe; the closure allocates nothing.
        unsafe {
            command.pre_exec(move || {
                for (i, &fd) in raw.iter().enumerate() {
                    if libc::dup2(fd, 3 + i as i32) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let daemon = Daemon::start_with(&mut command, sockets);
        drop(dups);
        daemon
    }
}

impl Store {
    fn apply(&mut self, text: String, fds: Vec<OwnedFd>) {
        let lines: Vec<&str> = text.lines().collect();
        let name = lines
            .iter()
            .find_map(|l| l.strip_prefix("FDNAME="))
            .unwrap_or("stored")
            .to_owned();
        if lines.contains(&"BARRIER=1") {
            // Everything before it has been read: closing says so.
            drop(fds);
        } else if lines.contains(&"FDSTORE=1") {
            self.fds
                .extend(fds.into_iter().map(|fd| (name.clone(), fd)));
        } else if lines.contains(&"FDSTOREREMOVE=1")
            && !(self.slow_to_remove && name == "upcased.conn")
        {
            self.fds.retain(|(n, _)| *n != name);
        }
        self.messages.push(text);
    }
}

/// One notification and its descriptors; `None` after the read timeout.
fn receive(socket: &UnixDatagram) -> Option<(String, Vec<OwnedFd>)> {
    let mut buf = [0u8; 4096];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(253))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let n = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        match rustix::net::recvmsg(socket, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Ok(msg) => msg.bytes,
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => return None,
            Err(e) => panic!("recvmsg: {e}"),
        }
    };
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    Some((String::from_utf8_lossy(&buf[..n]).into_owned(), fds))
}

impl Drop for FdManager {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Starts the first upcased of a service with a store of `fdstore`
/// descriptors; waits until its two listeners are stored.
fn start_first(manager: &FdManager, args: &[&str], fdstore: &str) -> Daemon {
    let mut command = Command::new(daemon_path());
    command
        .args(args)
        .env("NOTIFY_SOCKET", &manager.path)
        .env("FDSTORE", fdstore);
    let daemon = Daemon::start_with(&mut command, 2);
    manager.wait_for("both listeners", |s| {
        s.names()
            .iter()
            .filter(|n| n.starts_with("upcased.tcp."))
            .count()
            == 1
            && s.names()
                .iter()
                .filter(|n| n.starts_with("upcased.udp."))
                .count()
                == 1
    });
    daemon
}

/// SIGTERM, and the exit status 0 of a handover that went through.
fn restart(daemon: &mut Daemon, manager: &FdManager, conns: usize) {
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0), "{:?}", daemon.lines());
    // A state comes with connections only.
    let states = usize::from(conns > 0);
    manager.wait_for("the connections and their state", |s| {
        s.count("upcased.conn") == conns && s.count("upcased.state") == states
    });
}

/// The tail of "… handed over N connections, X of pending output".
fn pending_output(line: &str) -> String {
    line.split(", ").last().unwrap().to_owned()
}

/// Clients in the middle of their streams, each holding some state, keep
/// talking across the restart to the next process, which answers them as
/// if nothing happened: a character cut in two by the restart, a telnet
/// command cut in two (and the `auto` decision), and replies the client has
/// not read yet because it stopped reading.
#[test]
fn clients_mid_stream_carry_on_with_the_next_process() {
    let manager = FdManager::new("midstream");
    let config = TempFile::new(
        "handover-midstream.toml",
        "[tcp]\nsocket_buffer = \"4KiB\"\n",
    );
    let args = [
        "-c",
        config.path(),
        "--tcp",
        "127.0.0.1:0",
        "--udp",
        "127.0.0.1:0",
    ];
    let mut first = start_first(&manager, &args, "100");
    let addr = first.tcp[0];

    // The first byte of "ä" (C3 A4) ends what this client sends before
    // the restart: the transform carries it.
    let mut utf8 = connect(addr);
    utf8.write_all(b"abc\xC3").unwrap();
    assert_eq!(read_exact(&mut utf8, 3), b"ABC");

    // A telnet client (`auto` decides at its first bytes), whose last byte
    // before the restart is the IAC of a command cut in two.
    let mut telnet = connect(addr);
    telnet.write_all(b"\xFF\xFD\x01hi\xFF").unwrap();
    assert_eq!(read_exact(&mut telnet, 5), b"\xFF\xFC\x01HI");

    // A client that stops reading: its replies back up in the server.
    let stalled = {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&addr.into()).unwrap();
        TcpStream::from(socket)
    };
    stalled.set_read_timeout(Some(PATIENCE)).unwrap();
    let text = mixed_text(512 << 10);
    let writer = {
        let mut stalled = stalled.try_clone().unwrap();
        let text = text.clone();
        thread::spawn(move || {
            stalled.write_all(&text).unwrap();
            stalled.shutdown(Shutdown::Write).unwrap();
        })
    };
    // Well past what the small buffers on both sides hold: the rest of
    // what it read waits in the server as unsent replies.
    first.counters_until("read 40 kB", |line| {
        let bytes_in = line.split("bytes in=").nth(1).unwrap();
        bytes_in
            .split_whitespace()
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 40_000
    });

    restart(&mut first, &manager, 3);
    let handed = first.wait_for_log("handed over 3 connections");
    assert_ne!(
        pending_output(&handed),
        "0 bytes of pending output",
        "{handed}"
    );

    let second = manager.start_next(&args, "100", 2);
    assert_eq!(second.tcp, first.tcp, "the same listener");
    assert_eq!(second.udp, first.udp);
    let adopted = second.wait_for_log("adopted 3 connections");
    assert_eq!(pending_output(&adopted), pending_output(&handed));
    // Taken back: the store keeps only the listeners.
    manager.wait_for("the listeners only", |s| s.fds.len() == 2);

    utf8.write_all(b"\xA4def\n").unwrap();
    assert_eq!(read_exact(&mut utf8, 6), "\u{c4}DEF\n".as_bytes());
    // The cut command is an AYT; 0xFF in a reply is still escaped.
    telnet.write_all(b"\xF6ok\xFF\xFF").unwrap();
    assert_eq!(read_exact(&mut telnet, 13), b"\r\n[Yes]\r\nOK\xFF\xFF");
    let mut reply = Vec::new();
    (&stalled)
        .read_to_end(&mut reply)
        .expect("every reply, then EOF");
    writer.join().unwrap();
    assert_bytes_eq(&reply, &expected(&text));

    for mut client in [utf8, telnet] {
        client.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_to_eof(&mut client), b"");
    }
    second.counters_until("all three closed as done", |l| {
        l.contains("open=0 accepted=3 closed: done=3")
    });
}

/// The listeners stay in the store while no process runs: a client that
/// connects then is accepted by the kernel and answered by the next
/// process, and so is a datagram sent then.
#[test]
fn a_client_connecting_during_the_restart_waits_and_is_answered() {
    let manager = FdManager::new("gap");
    let mut first = start_first(&manager, &LOOPBACK, "100");
    restart(&mut first, &manager, 0);
    assert_eq!(first.count_log("handed over"), 0, "nothing to hand over");

    // No process: the connect completes in the kernel's backlog.
    let mut gap = TcpStream::connect_timeout(&first.tcp[0], PATIENCE).expect("not refused");
    gap.set_read_timeout(Some(PATIENCE)).unwrap();
    gap.write_all(b"gap\n").unwrap();
    let udp = udp_client();
    udp.send_to(b"datagram", first.udp[0]).unwrap();

    let second = manager.start_next(&LOOPBACK, "100", 2);
    assert_eq!((&second.tcp, &second.udp), (&first.tcp, &first.udp));
    assert_eq!(read_exact(&mut gap, 4), b"GAP\n");
    let mut buf = [0u8; 16];
    let (n, from) = udp.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"DATAGRAM"[..], first.udp[0]));
    // Only new listeners are stored: none here.
    second.counters();
    manager.with(|s| assert_eq!(s.fds.len(), 2, "{:?}", s.names()));
}

/// Without `$FDSTORE` (systemd 252 with a unit that does not set it), or
/// without a manager at all, SIGTERM is today's graceful shutdown: replies,
/// then a clean EOF; nothing is stored.
#[test]
fn without_the_store_sigterm_is_the_graceful_shutdown() {
    let manager = FdManager::new("nostore");
    for (notify, fdstore) in [(true, None), (false, Some("100"))] {
        let mut command = Command::new(daemon_path());
        command.args(LOOPBACK).env_remove("FDSTORE");
        if notify {
            command.env("NOTIFY_SOCKET", &manager.path);
        }
        if let Some(n) = fdstore {
            command.env("FDSTORE", n);
        }
        let mut daemon = Daemon::start_with(&mut command, 2);
        let mut client = connect(daemon.tcp[0]);
        client.write_all(b"hi\xC3").unwrap();
        assert_eq!(read_exact(&mut client, 2), b"HI");
        daemon.signal(libc::SIGTERM);
        // The held byte comes back raw, then our FIN.
        assert_eq!(read_to_eof(&mut client), b"\xC3");
        client.shutdown(Shutdown::Write).unwrap();
        assert_eq!(daemon.wait_exit().code(), Some(0));
        daemon.wait_for_log("shutdown complete");
        assert_eq!(daemon.count_log("handing over"), 0);
    }
    manager.with(|s| {
        assert!(s.fds.is_empty(), "{:?}", s.names());
        assert!(
            s.messages.iter().all(|m| !m.contains("FDSTORE")),
            "{:?}",
            s.messages
        );
        assert!(s.messages.iter().any(|m| m.starts_with("STOPPING=1")));
    });
}

/// A state that fails its checks, or none at all: the handed-over
/// connections are closed cleanly (EOF, not a reset), the reason logged;
/// the new process serves on.
#[test]
fn a_damaged_or_missing_state_closes_the_connections_cleanly() {
    for damage in ["damaged", "missing"] {
        let manager = FdManager::new(damage);
        let mut first = start_first(&manager, &LOOPBACK, "100");
        let mut client = connect(first.tcp[0]);
        client.write_all(b"ab").unwrap();
        assert_eq!(read_exact(&mut client, 2), b"AB");
        restart(&mut first, &manager, 1);
        manager.with(|s| {
            let at = s
                .fds
                .iter()
                .position(|(n, _)| n == "upcased.state")
                .unwrap();
            if damage == "missing" {
                s.fds.remove(at);
            } else {
                let file = std::fs::File::from(s.fds[at].1.try_clone().unwrap());
                file.write_at(b"\xAA\xAA", 20).unwrap();
            }
        });
        let second = manager.start_next(&LOOPBACK, "100", 2);
        let line = second.wait_for_log("cannot read the handover state");
        let why = if damage == "missing" {
            "no state was stored"
        } else {
            "checksum mismatch"
        };
        assert!(
            line.contains(&format!("({why}): closing 1 connection handed over")),
            "{line}"
        );
        assert_eq!(read_to_eof(&mut client), b"", "a clean EOF");
        manager.wait_for("the listeners only", |s| s.fds.len() == 2);
        assert_eq!(round_trip(second.tcp[0], b"still here"), b"STILL HERE");
        drop(second);
    }
}

/// The next process's config names another TCP address: the stored
/// listener is closed and removed from the store, the new one bound and
/// stored; the UDP socket, still configured, is taken over.
#[test]
fn a_listener_no_longer_configured_is_closed_and_forgotten() {
    let manager = FdManager::new("relisten");
    let mut first = start_first(&manager, &LOOPBACK, "100");
    restart(&mut first, &manager, 0);
    let old = first.tcp[0];
    let second = manager.start_next(&["--tcp", "127.0.0.2:0", "--udp", "127.0.0.1:0"], "100", 2);
    second.wait_for_log(&format!(
        "upcased.tcp.127.0.0.1-{} from the previous process is no longer configured: closed",
        old.port()
    ));
    assert_eq!(second.udp, first.udp, "the UDP socket taken over");
    assert_eq!(second.tcp[0].ip().to_string(), "127.0.0.2");
    let name = format!("upcased.tcp.127.0.0.2-{}", second.tcp[0].port());
    manager.wait_for("the new listener, not the old", |s| {
        s.count(&name) == 1
            && s.names()
                .iter()
                .filter(|n| n.starts_with("upcased.tcp."))
                .count()
                == 1
    });
    let refused = TcpStream::connect(old).expect_err("the old listener is closed");
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    assert_eq!(round_trip(second.tcp[0], b"moved"), b"MOVED");
}

/// `$FDSTORE` bounds what is stored: with 5, two listeners and the state
/// leave room for two connections; the third gets the graceful shutdown.
#[test]
fn the_store_limit_bounds_the_handover() {
    let manager = FdManager::new("bounded");
    let mut first = start_first(&manager, &LOOPBACK, "5");
    let mut clients: Vec<TcpStream> = (0..3)
        .map(|i| {
            let mut c = connect(first.tcp[0]);
            c.write_all(format!("c{i}").as_bytes()).unwrap();
            assert_eq!(read_exact(&mut c, 2), format!("C{i}").as_bytes());
            c
        })
        .collect();
    first.signal(libc::SIGTERM);
    first.wait_for_log("handed over 2 connections");
    first.wait_for_log("1 connection not handed over: shutting them down gracefully");
    // The third, accepted last, is the one left out.
    let mut third = clients.pop().unwrap();
    assert_eq!(read_to_eof(&mut third), b"");
    third.shutdown(Shutdown::Write).unwrap();
    assert_eq!(first.wait_exit().code(), Some(0));
    manager.wait_for("two connections", |s| s.count("upcased.conn") == 2);
    let second = manager.start_next(&LOOPBACK, "5", 2);
    second.wait_for_log("adopted 2 connections");
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(b"again").unwrap();
        assert_eq!(read_exact(c, 5), b"AGAIN", "client {i}");
    }
}

/// Every unit lets the manager keep `max_connections` connections plus
/// the listeners and the state, and tells the daemon so in `$FDSTORE`
/// (systemd 252 does not set it): the same number in both places.
#[test]
fn the_units_keep_a_store_for_every_connection() {
    let max_connections = upcase::config::Config::default().tcp.max_connections.get();
    for unit in [
        "upcased.service",
        "upcased@.service",
        "upcased-activated.service",
    ] {
        let path = format!("{}/systemd/{unit}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let value = |key: &str| -> usize {
            let found: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix(key)).collect();
            assert_eq!(found.len(), 1, "{unit}: {key} once");
            found[0].trim().parse().unwrap()
        };
        let max = value("FileDescriptorStoreMax=");
        assert_eq!(value("Environment=FDSTORE="), max, "{unit}");
        assert!(max >= max_connections + 3, "{unit}: {max}");
    }
}

/// With `log_connections`, a connection handed over leaves a record
/// `handed_over` in the old process (its bytes so far), and one more in the
/// next process when it really ends, counting from the adoption.
#[test]
fn a_handed_over_connection_is_recorded_by_both_processes() {
    let manager = FdManager::new("records");
    let config = TempFile::new("handover-records.toml", "log_connections = true\n");
    let args = Daemon::config_args(&config);
    let mut first = start_first(&manager, &args, "100");
    let mut client = connect(first.tcp[0]);
    let me = client.local_addr().unwrap();
    client.write_all(b"before").unwrap();
    assert_eq!(read_exact(&mut client, 6), b"BEFORE");
    restart(&mut first, &manager, 1);
    let line = first.wait_for_log(&format!("connection peer={me} "));
    assert!(
        line.ends_with(" bytes_in=6 bytes_out=6 close_reason=handed_over"),
        "{line}"
    );
    let second = manager.start_next(&args, "100", 2);
    second.wait_for_log("adopted 1 connection");
    client.write_all(b"after!!").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut client), b"AFTER!!");
    let line = second.wait_for_log(&format!("connection peer={me} "));
    assert!(
        line.ends_with(" bytes_in=7 bytes_out=7 close_reason=done"),
        "{line}"
    );
    let counters = first.lines().join("\n");
    assert!(counters.contains("handed_over=1"), "{counters}");
}

/// The epoll set's registrations of `pid` (its `/proc` fdinfo) that no
/// longer stand for an open descriptor of the process: a socket closed
/// while another descriptor of it lives on stays in an epoll set
/// (registrations belong to the open file, not to the number), and its
/// events keep coming under the old token.
fn stale_registrations(pid: i32) -> Vec<String> {
    let fds = format!("/proc/{pid}/fd");
    let mut stale = Vec::new();
    for entry in std::fs::read_dir(&fds).unwrap() {
        let entry = entry.unwrap();
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if target.to_string_lossy() != "anon_inode:[eventpoll]" {
            continue;
        }
        let info = format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy());
        for line in std::fs::read_to_string(info).unwrap().lines() {
            let Some(rest) = line.strip_prefix("tfd:") else {
                continue;
            };
            let words: Vec<&str> = rest.split_whitespace().collect();
            let tfd = words[0];
            let ino = words
                .iter()
                .find_map(|w| w.strip_prefix("ino:"))
                .expect("ino: in an epoll fdinfo line");
            let ino = u64::from_str_radix(ino, 16).unwrap();
            let open = std::fs::metadata(format!("{fds}/{tfd}"))
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m) == ino)
                .unwrap_or(false);
            if !open {
                stale.push(line.to_owned());
            }
        }
    }
    stale
}

/// A connection the next process adopted is closed while the manager
/// still holds the duplicate it was handed over in (the store drops it
/// when it gets to `FDSTOREREMOVE=1`): the daemon takes it out of its
/// epoll set itself, so no event of that socket reaches the connection
/// that gets its slot next.
#[test]
fn an_adopted_connection_closed_before_the_store_lets_go_leaves_no_registration() {
    let manager = FdManager::new("lingering");
    manager.with(|s| s.slow_to_remove = true);
    let args = ["--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"];
    let mut first = start_first(&manager, &args, "100");
    let mut client = connect(first.tcp[0]);
    client.write_all(b"before\n").unwrap();
    assert_eq!(read_exact(&mut client, 7), b"BEFORE\n");
    restart(&mut first, &manager, 1);
    let second = manager.start_next(&args, "100", 2);
    second.wait_for_log("adopted 1 connection,");
    client.write_all(b"after\n").unwrap();
    assert_eq!(read_exact(&mut client, 6), b"AFTER\n");
    assert_eq!(stale_registrations(second.pid()), Vec::<String>::new());

    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut client), b"");
    second.counters_until("the adopted connection closed", |l| l.contains(" open=0 "));
    manager.with(|s| assert_eq!(s.count("upcased.conn"), 1, "the store let go"));
    assert_eq!(stale_registrations(second.pid()), Vec::<String>::new());
}
