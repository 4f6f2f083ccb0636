//! TCP: streaming uppercase, many clients, half-close, back-pressure, fairness.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use upcase::transform::Mode;

use crate::util::*;

#[test]
fn a_line_comes_back_in_upper_case() {
    let server = InProcess::start(loopback_config());
    let mut client = connect(server.tcp);
    client.write_all(b"hello\n").unwrap();
    assert_eq!(read_exact(&mut client, 6), b"HELLO\n");
    // The connection stays open for the next line.
    client.write_all("straße, été\n".as_bytes()).unwrap();
    assert_eq!(
        read_exact(&mut client, "STRASSE, ÉTÉ\n".len()),
        "STRASSE, ÉTÉ\n".as_bytes()
    );
}

#[test]
fn no_line_framing_is_needed() {
    let server = InProcess::start(loopback_config());
    let mut client = connect(server.tcp);
    // No newline: the reply still comes, at once.
    client.write_all(b"abc").unwrap();
    assert_eq!(read_exact(&mut client, 3), b"ABC");
}

#[test]
fn ascii_mode_maps_only_a_to_z() {
    let mut config = loopback_config();
    config.mode = Mode::Ascii;
    let server = InProcess::start(config);
    let input = "straße é {az}@[`~\u{0}\n".as_bytes();
    let mut want = input.to_vec();
    want.make_ascii_uppercase();
    assert_eq!(round_trip(server.tcp, input), want);
    // Binary-safe: every byte value, same length out.
    let all: Vec<u8> = (0..=255u8).collect();
    assert_eq!(round_trip(server.tcp, &all), all.to_ascii_uppercase());
}

#[test]
fn invalid_utf8_passes_through_unchanged() {
    let server = InProcess::start(loopback_config());
    let input = b"ok \xff\xfe \xc0\x80 \xed\xa0\x80 \x80 end \xe2\x82";
    assert_eq!(
        round_trip(server.tcp, input),
        b"OK \xff\xfe \xc0\x80 \xed\xa0\x80 \x80 END \xe2\x82"
    );
}

#[test]
fn a_character_split_across_reads_is_carried_over() {
    // The real binary, whose counters say how much it has read.
    let daemon = Daemon::start(&LOOPBACK, 2);
    let mut client = connect(daemon.tcp[0]);
    client.set_nodelay(true).unwrap();
    // "é" is C3 A9 and "😀" four bytes: send them split, each piece only
    // once the daemon has read the one before, so that it sees separate
    // reads (a 30 ms pause did not ensure that on a loaded machine).
    let mut sent = 0;
    for piece in [&b"x\xc3"[..], b"\xa9y\xf0\x9f", b"\x98", b"\x80z"] {
        client.write_all(piece).unwrap();
        sent += piece.len();
        let bytes_in = format!(" bytes in={sent} ");
        daemon.counters_until("read the piece", |l| l.contains(&bytes_in));
    }
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut client), "XÉY😀Z".as_bytes());
}

#[test]
fn two_thousand_concurrent_clients_each_get_their_own_reply() {
    let server = InProcess::start(loopback_config());
    let clients: Vec<_> = (0..2000).map(|_| connect(server.tcp)).collect();
    for (i, mut c) in clients.iter().enumerate() {
        c.write_all(format!("client {i} says straße\n").as_bytes())
            .unwrap();
    }
    for (i, mut c) in clients.iter().enumerate() {
        let want = format!("CLIENT {i} SAYS STRASSE\n");
        let mut got = vec![0; want.len()];
        c.read_exact(&mut got).unwrap();
        assert_eq!(got, want.as_bytes(), "client {i}");
    }
    drop(clients);
    let counters = server.stop();
    assert_eq!(counters.conns_accepted, 2000);
}

#[test]
fn one_megabyte_half_close_round_trip() {
    let server = InProcess::start(loopback_config());
    let input = mixed_text(1 << 20);
    let reply = round_trip(server.tcp, &input);
    assert_bytes_eq(&reply, &expected(&input));
}

#[test]
fn pipelined_twenty_megabytes_in_both_directions_at_once() {
    let server = InProcess::start(loopback_config());
    let input = Arc::new(mixed_text(20 << 20));
    let mut client = connect(server.tcp);
    let writer = {
        let mut client = client.try_clone().unwrap();
        let input = Arc::clone(&input);
        // Small writes, so that requests and replies really interleave.
        thread::spawn(move || {
            for chunk in input.chunks(1000) {
                client.write_all(chunk).unwrap();
            }
            client.shutdown(Shutdown::Write).unwrap();
        })
    };
    let reply = read_to_eof(&mut client);
    writer.join().unwrap();
    assert_bytes_eq(&reply, &expected(&input));
}

#[test]
fn a_reset_client_affects_only_itself() {
    let server = InProcess::start(loopback_config());
    let mut good = connect(server.tcp);
    {
        let bad = socket2::Socket::from(connect(server.tcp));
        bad.send(&vec![b'a'; 100_000]).unwrap();
        // SO_LINGER 0: close sends an RST instead of a FIN.
        bad.set_linger(Some(Duration::ZERO)).unwrap();
    }
    for i in 0..20 {
        let line = format!("still here {i}\n");
        good.write_all(line.as_bytes()).unwrap();
        assert_eq!(
            read_exact(&mut good, line.len()),
            line.to_uppercase().as_bytes()
        );
    }
    drop(good);
    let counters = server.stop();
    assert_eq!(counters.closed_reset + counters.closed_done, 2);
}

#[test]
fn a_client_that_stops_reading_costs_bounded_memory_and_resumes() {
    // The real binary, so its memory is its own.
    let mut daemon = Daemon::start(&LOOPBACK, 2);
    let before = daemon.rss_kib();
    let input = Arc::new(mixed_text(64 << 20));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut client = connect(daemon.tcp[0]);
    let writer = {
        let mut client = client.try_clone().unwrap();
        let (input, sent) = (Arc::clone(&input), Arc::clone(&sent));
        thread::spawn(move || {
            for chunk in input.chunks(64 * 1024) {
                client.write_all(chunk).unwrap();
                sent.fetch_add(chunk.len(), Ordering::SeqCst);
            }
            client.shutdown(Shutdown::Write).unwrap();
        })
    };
    // We read nothing: once every buffer between us is full, the writer
    // blocks. Wait until it has stopped making progress.
    let last = wait_until_stalled(&sent);
    assert!(
        last < input.len(),
        "the writer should be held back by flow control"
    );
    let during = daemon.rss_kib();
    eprintln!("server RSS {before} KiB before, {during} KiB with {last} bytes sent and none read");
    assert!(
        during < before + 4 * 1024,
        "server RSS grew from {before} KiB to {during} KiB for one client that does not read"
    );
    // Now read: everything arrives, exact, and the writer finishes.
    let reply = read_to_eof(&mut client);
    writer.join().unwrap();
    assert_bytes_eq(&reply, &expected(&input));
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

#[test]
fn a_flooding_client_does_not_starve_the_others() {
    let server = InProcess::start(loopback_config());
    let stop = Arc::new(AtomicBool::new(false));
    let echoed = Arc::new(AtomicUsize::new(0));
    // One client streams as fast as it can (and reads as fast as it can).
    let flood = {
        let (stop, echoed) = (Arc::clone(&stop), Arc::clone(&echoed));
        let mut client = connect(server.tcp);
        thread::spawn(move || {
            let mut reader = client.try_clone().unwrap();
            let drain = thread::spawn(move || {
                let mut buf = vec![0; 1 << 16];
                let mut total = 0usize;
                while let Ok(n) = reader.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    total += n;
                    echoed.fetch_add(n, Ordering::SeqCst);
                }
                total
            });
            let chunk = vec![b'x'; 1 << 16];
            let mut sent = 0;
            while !stop.load(Ordering::SeqCst) {
                client.write_all(&chunk).unwrap();
                sent += chunk.len();
            }
            client.shutdown(Shutdown::Write).unwrap();
            (sent, drain.join().unwrap())
        })
    };
    // The flood is under way once megabytes come back (not "100 ms
    // later", which on a loaded machine may be before it started).
    wait_until("the flood came back", || {
        echoed.load(Ordering::SeqCst) >= 4 << 20
    });
    // Meanwhile another client gets every one of its answers.
    let mut other = connect(server.tcp);
    let started = Instant::now();
    for i in 0..200 {
        let line = format!("ping {i}\n");
        other.write_all(line.as_bytes()).unwrap();
        assert_eq!(
            read_exact(&mut other, line.len()),
            line.to_uppercase().as_bytes()
        );
    }
    let served_in = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let (sent, received) = flood.join().unwrap();
    assert_eq!(
        sent, received,
        "the flooding client got every byte back too"
    );
    eprintln!("200 round trips beside a flooding client took {served_in:?}");
}

#[test]
fn data_after_urgent_data_is_answered_at_once() {
    // Telnet clients send urgent data on Ctrl-C (RFC 854's Synch). Linux
    // ends a read at the urgent mark, so the read before it is short
    // although more data waits behind it. The daemon is stopped while the
    // client sends, so that all three segments are queued before it reads.
    let daemon = Daemon::start(&LOOPBACK, 2);
    let mut stream = connect(daemon.tcp[0]);
    stream.set_nodelay(true).unwrap();
    daemon.signal(libc::SIGSTOP);
    // kill() returns before the daemon has stopped; until it has, it may
    // still read the first segment on its own.
    daemon.wait_stopped();
    stream.write_all(b"abc").unwrap();
    socket2::SockRef::from(&stream)
        .send_out_of_band(b"!")
        .unwrap();
    stream.write_all(b"defghi").unwrap();
    daemon.signal(libc::SIGCONT);
    // The urgent byte is data like any other (SO_OOBINLINE): it comes back
    // in its place, and what follows it comes back without the client
    // having to send anything more.
    assert_eq!(read_exact(&mut stream, 10), b"ABC!DEFGHI");
}
