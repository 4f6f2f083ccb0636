//! The real binary: listening lines, signals, graceful shutdown, exit codes.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::util::*;

#[test]
fn logs_the_real_address_of_every_socket() {
    let daemon = Daemon::start(&LOOPBACK, 2);
    assert_eq!(daemon.tcp.len(), 1);
    assert_eq!(daemon.udp.len(), 1);
    assert_ne!(
        daemon.tcp[0].port(),
        0,
        "port 0 is resolved to the real port"
    );
    assert_ne!(daemon.udp[0].port(), 0);
    assert_eq!(round_trip(daemon.tcp[0], b"hello\n"), b"HELLO\n");
    assert_eq!(
        udp_exchange(&udp_client(), daemon.udp[0], b"hello"),
        b"HELLO"
    );
}

#[test]
fn sigterm_with_idle_clients_closes_them_cleanly_and_exits_0() {
    let mut daemon = Daemon::start(&LOOPBACK, 2);
    let mut clients: Vec<TcpStream> = (0..10).map(|_| connect(daemon.tcp[0])).collect();
    for c in &mut clients {
        c.write_all(b"hi").unwrap();
        assert_eq!(read_exact(c, 2), b"HI");
    }
    daemon.signal(libc::SIGTERM);
    for c in &mut clients {
        // The server half-closes: a clean EOF, no reset.
        assert_eq!(read_to_eof(c), b"");
        c.shutdown(Shutdown::Write).unwrap();
    }
    assert_eq!(daemon.wait_exit().code(), Some(0));
    daemon.wait_for_log("shutdown complete");
}

#[test]
fn sigint_also_shuts_down_gracefully() {
    let mut daemon = Daemon::start(&LOOPBACK, 2);
    daemon.signal(libc::SIGINT);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

#[test]
fn sigterm_mid_stream_answers_everything_received_and_ends_in_a_clean_eof() {
    let mut daemon = Daemon::start(&LOOPBACK, 2);
    let text: Arc<str> = String::from_utf8(mixed_text(64 << 20)).unwrap().into();
    let client = connect(daemon.tcp[0]);
    let sent = Arc::new(AtomicUsize::new(0));
    let paused = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut client = client.try_clone().unwrap();
        let (text, sent, paused, stop) = (text.clone(), sent.clone(), paused.clone(), stop.clone());
        thread::spawn(move || {
            for (i, chunk) in text.as_bytes().chunks(4096).enumerate() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if i == 1024 {
                    // After 4 MB, pause until told to go on (see below).
                    paused.store(true, Ordering::SeqCst);
                    while paused.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
                        thread::sleep(Duration::from_millis(1));
                    }
                }
                if client.write_all(chunk).is_err() {
                    break; // the server is gone: expected once it closed
                }
                sent.fetch_add(chunk.len(), Ordering::SeqCst);
            }
            let _ = client.shutdown(Shutdown::Write);
        })
    };
    let reader = {
        let mut client = client.try_clone().unwrap();
        thread::spawn(move || {
            let mut reply = Vec::new();
            let mut buf = vec![0; 1 << 16];
            loop {
                match client.read(&mut buf) {
                    Ok(0) => return Ok(reply),
                    Ok(n) => reply.extend_from_slice(&buf[..n]),
                    Err(e) => return Err((e, reply.len())),
                }
            }
        })
    };
    // Wait until the writer paused at 4 MB, then until the server's kernel
    // has every byte of it (the client's send queue is empty): those bytes
    // are "already received" when the signal comes, whatever the server has
    // read of them so far.
    let deadline = Instant::now() + PATIENCE;
    while !paused.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(1));
    }
    let before_signal = sent.load(Ordering::SeqCst);
    while unsent_bytes(&client) > 0 {
        assert!(Instant::now() < deadline, "the server stopped taking input");
        thread::sleep(Duration::from_millis(1));
    }
    daemon.signal(libc::SIGTERM);
    // The writer goes on sending during the shutdown: that input is no
    // longer answered, but must not turn the close into a reset.
    paused.store(false, Ordering::SeqCst);
    let reply = reader
        .join()
        .unwrap()
        .unwrap_or_else(|(e, at)| panic!("reply cut by {e} after {at} bytes"));
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    client.shutdown(Shutdown::Both).ok();
    let answered = uppercased_prefix_len(&text, &reply);
    eprintln!("received before SIGTERM: {before_signal} bytes; answered: {answered} bytes");
    assert!(
        answered >= before_signal,
        "only {answered} bytes answered of the {before_signal} received before SIGTERM"
    );
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

#[test]
fn shutdown_timeout_cuts_clients_that_never_finish_and_says_so() {
    let (_config, mut daemon) = Daemon::with_config("cut.toml", "shutdown_timeout = \"300ms\"\n");
    let mut stubborn = connect(daemon.tcp[0]);
    stubborn.write_all(b"x").unwrap();
    assert_eq!(read_exact(&mut stubborn, 1), b"X");
    // Read before the signal: the daemon's deadline counts from its
    // handling of it, later.
    let started = Instant::now();
    daemon.signal(libc::SIGTERM);
    // We never half-close: the daemon waits for us until its deadline,
    // and not much beyond.
    assert_eq!(daemon.wait_exit().code(), Some(0));
    assert_at_deadline(
        "the daemon exited",
        started.elapsed(),
        Duration::from_millis(300),
    );
    let line = daemon.wait_for_log("shutdown deadline passed");
    assert!(line.contains("cut 1 connection with"), "{line}");
}

#[test]
fn a_second_sigterm_exits_at_once() {
    let mut daemon = Daemon::start(&LOOPBACK, 2);
    let mut stubborn = connect(daemon.tcp[0]);
    // Let the daemon accept it, so that the shutdown has a client to wait
    // for: after a round trip on a second connection (closed once it is
    // done), the daemon's count says the first is open.
    assert_eq!(round_trip(daemon.tcp[0], b"a"), b"A");
    daemon.counters_until("accepted the stubborn client", |l| {
        l.contains(" open=1 accepted=2 ")
    });
    daemon.signal(libc::SIGTERM);
    daemon.wait_for_log("shutting down");
    // The shutdown half-closes the client and waits for its EOF; not "still
    // running 100 ms later", which says nothing on a slow machine: the FIN,
    // and then a counters line, which only a daemon still in its loop writes.
    assert_eq!(read_to_eof(&mut stubborn), b"");
    daemon.counters();
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "still finishing its client"
    );
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(1));
    daemon.wait_for_log("second shutdown signal");
}

#[test]
fn sigusr1_logs_the_counters() {
    let daemon = Daemon::start(&LOOPBACK, 2);
    assert_eq!(round_trip(daemon.tcp[0], b"abc"), b"ABC");
    assert_eq!(udp_exchange(&udp_client(), daemon.udp[0], b"de"), b"DE");
    // The close is counted once the daemon has seen it; wait for that.
    let line = daemon.counters_until("counted the close", |l| l.contains("done=1"));
    assert!(line.contains("open=0 accepted=1"), "{line}");
    assert!(line.contains("bytes in=5 out=5"), "{line}");
    assert!(line.contains("datagrams in=1 out=1 dropped=0"), "{line}");
}

#[test]
fn sighup_reloads_the_mode_and_keeps_the_old_config_when_the_file_is_bad() {
    // Listen addresses in the file, not in flags: flags would keep winning
    // over the re-read file.
    let sockets = "[tcp]\nlisten = [\"127.0.0.1:0\"]\n[udp]\nlisten = [\"127.0.0.1:0\"]\n";
    let config = TempFile::new("reload.toml", &format!("mode = \"unicode\"\n{sockets}"));
    let daemon = Daemon::start(&["-c", config.path()], 2);
    let addr = daemon.tcp[0];
    assert_eq!(round_trip(addr, "é".as_bytes()), "É".as_bytes());

    std::fs::write(&config.0, format!("mode = \"ascii\"\n{sockets}")).unwrap();
    daemon.signal(libc::SIGHUP);
    let line = daemon.wait_for_log("configuration reloaded");
    // As an operator would write it: config spellings, no Rust debug values.
    assert!(
        line.ends_with(
            "configuration reloaded: mode ascii, telnet auto, max_connections 10000, \
             idle_timeout 5m, max_pending_output 65536 bytes, socket_buffer 131072 bytes, \
             shutdown_timeout 5s"
        ),
        "{line}"
    );
    assert_eq!(round_trip(addr, "éa".as_bytes()), "éA".as_bytes());

    std::fs::write(
        &config.0,
        format!("mode = \"unicode\"\nbogus = 1\n{sockets}"),
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    let line = daemon.wait_for_log("reload failed");
    assert!(line.contains("bogus"), "{line}");
    assert_eq!(
        round_trip(addr, "éa".as_bytes()),
        "éA".as_bytes(),
        "the old config stays"
    );

    std::fs::write(&config.0, "[tcp]\nlisten = [\"127.0.0.1:1\"]\n").unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_log("cannot change live");
    // Still serving where it listened, now in the file's (default) mode.
    assert_eq!(round_trip(addr, "é".as_bytes()), "É".as_bytes());
}

#[test]
fn idle_connections_are_closed_and_active_ones_are_not() {
    // A timeout far above the active client's pauses (50 ms and a round
    // trip), even when a loaded machine keeps the test thread off the CPU
    // for a while: 300 ms was not.
    let timeout = Duration::from_secs(1);
    let (_config, daemon) = Daemon::with_config("idle.toml", "[tcp]\nidle_timeout = \"1s\"\n");
    // Read before connecting: the daemon's clock for the idle client
    // starts at its accept, later.
    let started = Instant::now();
    let mut idle = connect(daemon.tcp[0]);
    let mut active = connect(daemon.tcp[0]);
    // The idle client's EOF is the event; a thread waits for it.
    let idle = thread::spawn(move || (read_to_eof(&mut idle), started.elapsed()));
    // The active client talks every 50 ms until the idle one is closed (at
    // the deadline both had at connect), then for one more timeout.
    let mut idle_gone: Option<Instant> = None;
    while idle_gone.is_none_or(|at| at.elapsed() < timeout) {
        active.write_all(b"z").unwrap();
        assert_eq!(read_exact(&mut active, 1), b"Z");
        if idle_gone.is_none() && idle.is_finished() {
            idle_gone = Some(Instant::now());
        }
        thread::sleep(Duration::from_millis(50));
    }
    // The idle one was closed cleanly (EOF, no reset), at its timeout.
    let (reply, after) = idle.join().unwrap();
    assert_eq!(reply, b"");
    assert_at_deadline("the idle client was closed", after, timeout);
    active.write_all(b"still open").unwrap();
    assert_eq!(read_exact(&mut active, 10), b"STILL OPEN");
}

/// The loop's timer is set for the oldest deadline and fires early when the
/// client was active since; it must then be set again for the real one.
#[test]
fn a_client_that_falls_silent_is_closed_one_timeout_after_its_last_byte() {
    // A timeout far above the client's pauses (40 ms and a round trip),
    // even on a loaded machine.
    let timeout = Duration::from_secs(1);
    let (_config, daemon) = Daemon::with_config("silent.toml", "[tcp]\nidle_timeout = \"1s\"\n");
    let mut client = connect(daemon.tcp[0]);
    let started = Instant::now();
    let mut last = started;
    // Active for twice the timeout: the timer, set at the connect, fires
    // while the client is still talking, and must be set again.
    while started.elapsed() < 2 * timeout {
        // Read before the write: the daemon's clock for the client
        // restarts when the byte arrives, later.
        last = Instant::now();
        client.write_all(b"q").unwrap();
        assert_eq!(read_exact(&mut client, 1), b"Q");
        thread::sleep(Duration::from_millis(40));
    }
    assert_eq!(read_to_eof(&mut client), b"");
    assert_at_deadline("closed after its last byte", last.elapsed(), timeout);
}

#[test]
fn at_max_connections_new_clients_wait_and_are_served_when_a_slot_frees() {
    let (_config, daemon) = Daemon::with_config("limit.toml", "[tcp]\nmax_connections = 2\n");
    let addr = daemon.tcp[0];
    let mut first = connect(addr);
    let mut second = connect(addr);
    for c in [&mut first, &mut second] {
        c.write_all(b"in").unwrap();
        assert_eq!(read_exact(c, 2), b"IN");
    }
    // The third connects (the kernel's backlog takes it) but is not served
    // yet. Not "no reply within 300 ms", which a slow daemon passes too:
    // the daemon's own account, once it has seen the third waiting.
    let mut third = connect(addr);
    third.write_all(b"waiting").unwrap();
    wait_until("the kernel queued the third client and its request (was it accepted beyond max_connections?)", || {
        accept_queue(addr) == 1 && unsent_bytes(&third) == 0
    });
    // Its arrival was ready for the daemon before the first signal; the
    // second counters line comes from a later turn of the loop than any
    // that had it in hand.
    for _ in 0..2 {
        let line = daemon.counters();
        assert!(
            line.contains(" open=2 accepted=2 "),
            "served beyond max_connections: {line}"
        );
    }
    // Never accepted, so nothing can have been answered.
    let mut buf = [0u8; 7];
    third.set_nonblocking(true).unwrap();
    let early = third.read(&mut buf);
    assert!(
        early
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "served beyond max_connections: {early:?}"
    );
    third.set_nonblocking(false).unwrap();
    daemon.wait_for_log("connection limit reached");
    // A slot frees: the waiting client is accepted and gets its reply.
    first.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut first), b"");
    third.set_read_timeout(Some(PATIENCE)).unwrap();
    third.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"WAITING");
}

#[test]
fn ipv4_and_ipv6_bind_the_same_port() {
    let port = free_port();
    let v4 = format!("127.0.0.1:{port}");
    let v6 = format!("[::1]:{port}");
    let daemon = Daemon::start(&["--tcp", &v4, "--tcp", &v6, "--udp", &v4, "--udp", &v6], 4);
    let v6_addr: SocketAddr = v6.parse().unwrap();
    assert_eq!(daemon.tcp, vec![v4.parse::<SocketAddr>().unwrap(), v6_addr]);
    assert_eq!(round_trip(daemon.tcp[0], b"four"), b"FOUR");
    assert_eq!(round_trip(daemon.tcp[1], b"six"), b"SIX");
    let client6 = std::net::UdpSocket::bind("[::1]:0").unwrap();
    client6.set_read_timeout(Some(PATIENCE)).unwrap();
    assert_eq!(udp_exchange(&client6, v6_addr, b"six"), b"SIX");
    assert_eq!(udp_exchange(&udp_client(), daemon.udp[0], b"four"), b"FOUR");
}

#[test]
fn a_port_in_use_exits_1_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run_daemon(&["--tcp", &addr, "--udp", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot bind tcp://{addr}")),
        "{stderr}"
    );
    assert!(stderr.contains("Address already in use"), "{stderr}");
}

#[test]
fn nothing_to_listen_on_is_a_config_error() {
    let config = TempFile::new("empty.toml", "[tcp]\nlisten = []\n[udp]\nlisten = []\n");
    let out = run_daemon(&["-c", config.path()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to listen on"));
}

#[test]
fn an_empty_listen_list_turns_a_transport_off() {
    let config = TempFile::new(
        "udp-only.toml",
        "[tcp]\nlisten = []\n[udp]\nlisten = [\"127.0.0.1:0\"]\n",
    );
    let daemon = Daemon::start(&["-c", config.path()], 1);
    assert!(daemon.tcp.is_empty());
    assert_eq!(
        udp_exchange(&udp_client(), daemon.udp[0], b"only udp"),
        b"ONLY UDP"
    );
    assert_eq!(daemon.count_log("listening on tcp://"), 0);
}

#[test]
fn sigterm_answers_input_the_kernel_holds_for_a_client_that_is_behind() {
    // A client that writes without reading: the server stops reading once
    // its replies back up, so at the signal the server's kernel holds input
    // the server has not read yet. "Already received" includes it.
    let mut daemon = Daemon::start(&LOOPBACK, 2);
    let text: Arc<str> = String::from_utf8(mixed_text(64 << 20)).unwrap().into();
    let client = connect(daemon.tcp[0]);
    let sent = Arc::new(AtomicUsize::new(0));
    let writer = {
        let mut client = client.try_clone().unwrap();
        let (text, sent) = (text.clone(), sent.clone());
        thread::spawn(move || {
            for chunk in text.as_bytes().chunks(4096) {
                if client.write_all(chunk).is_err() {
                    break; // the server is gone: expected once it closed
                }
                sent.fetch_add(chunk.len(), Ordering::SeqCst);
            }
        })
    };
    // Wait until the writer is stuck: every buffer on the way is full.
    let last = wait_until_stalled(&sent);
    // What the server's kernel has acknowledged is received, read or not:
    // at least the count now (the writer may have moved on, if it was only
    // kept off the CPU) less what is still unacknowledged after it.
    let counted = sent.load(Ordering::SeqCst);
    let received = counted.saturating_sub(unsent_bytes(&client));
    daemon.signal(libc::SIGTERM);
    daemon.wait_for_log("shutting down");
    // Only now read the replies.
    let mut reader = client.try_clone().unwrap();
    let mut reply = Vec::new();
    reader
        .read_to_end(&mut reply)
        .expect("a clean EOF, no reset");
    client.shutdown(Shutdown::Write).unwrap();
    writer.join().unwrap();
    let answered = uppercased_prefix_len(&text, &reply);
    eprintln!("written {last}, received by the server's kernel {received}, answered {answered}");
    assert!(
        answered >= received,
        "only {answered} of the {received} bytes received before SIGTERM answered"
    );
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

/// How to give a process a network namespace of its own, where 127.0.0.1:12000
/// is free whatever runs on this machine: the `unshare` flags (root: a new
/// network namespace; anyone else: a new user namespace too, mapped to root
/// in it, where the kernel allows unprivileged user namespaces) and the
/// matching `nsenter` flags to join it. `Err` says why there is none.
fn own_network_namespace() -> Result<(&'static [&'static str], &'static [&'static str]), String> {
    for tool in ["unshare", "nsenter", "ip"] {
        if !tool_installed(tool) {
            return Err(format!("{tool} is not installed"));
        }
    }
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let (unshare, nsenter): (&[&str], &[&str]) = if root {
        (&["--net"], &["--net"])
    } else {
        // --preserve-credentials: nsenter would otherwise become root in
        // the namespace and call setgroups(2), which unshare denied there
        // (an unprivileged gid_map requires it).
        (
            &["--user", "--map-root-user", "--net"],
            &["--user", "--net", "--preserve-credentials"],
        )
    };
    // A fresh namespace has only `lo`, down and without 127.0.0.1 until it
    // is brought up: the probe does what the daemon's wrapper will.
    let probe = Command::new("unshare")
        .args(unshare)
        .args(["ip", "link", "set", "lo", "up"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("unshare: {e}"))?;
    if !probe.status.success() {
        return Err(format!(
            "cannot make a network namespace (unshare {}: {})",
            unshare.join(" "),
            String::from_utf8_lossy(&probe.stderr).trim()
        ));
    }
    Ok((unshare, nsenter))
}

#[test]
fn with_no_file_and_no_flags_it_serves_both_transports_on_port_12000() {
    // The newcomer's command, `upcased` with nothing else. Port 12000 may be
    // taken here (the README's quick start leaves an upcased running), so
    // the daemon gets a network namespace of its own where it cannot be,
    // and the checks run in it with the real client through nsenter.
    let namespace = own_network_namespace();
    let (mut daemon, enter): (Daemon, Option<&[&str]>) = match namespace {
        Ok((unshare, nsenter)) => {
            let daemon = Daemon::start_with(
                Command::new("unshare")
                    .args(unshare)
                    // exec: the daemon keeps the pid, which the signal and
                    // nsenter --target use.
                    .args(["sh", "-c", "ip link set lo up && exec \"$0\""])
                    .arg(daemon_path()),
                2,
            );
            (daemon, Some(nsenter))
        }
        Err(why) => {
            if std::net::TcpListener::bind("127.0.0.1:12000").is_err() {
                skip(&format!(
                    "127.0.0.1:12000 is in use here (is an upcased running?) and {why}"
                ));
                return;
            }
            (Daemon::start(&[], 2), None)
        }
    };
    let default: SocketAddr = "127.0.0.1:12000".parse().unwrap();
    assert_eq!(daemon.tcp, vec![default]);
    assert_eq!(daemon.udp, vec![default]);
    let client = |args: &[&str], input: &str| {
        let mut command = match enter {
            Some(nsenter) => {
                let mut c = Command::new("nsenter");
                c.args(["--target", &daemon.pid().to_string()])
                    .args(nsenter)
                    .arg(client_path());
                c
            }
            None => Command::new(client_path()),
        };
        let out = run_piped(command.args(args), input.as_bytes());
        assert_eq!(
            out.status.code(),
            Some(0),
            "upcase {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 replies")
    };
    assert_eq!(client(&[], "hello\n"), "HELLO\n");
    assert_eq!(client(&["--udp"], "hello"), "HELLO");
    // unicode mode by default
    assert_eq!(client(&[], "straße"), "STRASSE");
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

#[test]
fn sighup_changes_the_log_level_live() {
    let sockets = "[tcp]\nlisten = [\"127.0.0.1:0\"]\n[udp]\nlisten = [\"127.0.0.1:0\"]\n";
    let config = TempFile::new("loglevel.toml", &format!("log_level = \"info\"\n{sockets}"));
    let daemon = Daemon::start(&["-c", config.path()], 2);
    assert_eq!(round_trip(daemon.tcp[0], b"quiet"), b"QUIET");
    std::fs::write(&config.0, format!("log_level = \"debug\"\n{sockets}")).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_log("configuration reloaded");
    assert_eq!(daemon.count_log(": connected"), 0, "no debug lines at info");
    assert_eq!(round_trip(daemon.tcp[0], b"loud"), b"LOUD");
    let line = daemon.wait_for_log(": connected");
    assert!(line.contains("DEBUG"), "{line}");
}
