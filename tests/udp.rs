//! UDP: each datagram answered on its own, to its sender; errors cost one datagram.

use std::net::{SocketAddr, SocketAddrV4};
use std::thread;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::util::*;

#[test]
fn a_datagram_comes_back_in_upper_case() {
    let server = InProcess::start(loopback_config());
    let client = udp_client();
    assert_eq!(udp_exchange(&client, server.udp, b"hello"), b"HELLO");
    assert_eq!(
        udp_exchange(&client, server.udp, "straße été\n".as_bytes()),
        "STRASSE ÉTÉ\n".as_bytes()
    );
    // An empty datagram gets an empty reply.
    assert_eq!(udp_exchange(&client, server.udp, b""), b"");
}

#[test]
fn the_largest_datagram_is_answered_whole() {
    let server = InProcess::start(loopback_config());
    let client = udp_client();
    let input: Vec<u8> = (0..65_507).map(|i| b'a' + (i % 26) as u8).collect();
    let reply = udp_exchange(&client, server.udp, &input);
    assert_eq!(reply.len(), 65_507);
    assert_eq!(reply, input.to_ascii_uppercase());
}

#[test]
fn a_reply_too_large_for_a_datagram_is_dropped_and_service_goes_on() {
    let server = InProcess::start(loopback_config());
    let client = udp_client();
    // ΐ (2 bytes) upper-cases to three code points (6 bytes): 60,000 bytes
    // in, 180,000 out, more than any datagram can carry.
    let big = "ΐ".repeat(30_000);
    client.send_to(big.as_bytes(), server.udp).unwrap();
    assert_eq!(udp_exchange(&client, server.udp, b"next"), b"NEXT");
    let counters = server.stop();
    assert_eq!(counters.dgrams_in, 2);
    assert_eq!(counters.dgrams_dropped, 1);
    assert_eq!(counters.dgrams_out, 1);
}

#[test]
fn a_vanished_sender_does_not_disturb_the_others() {
    let server = InProcess::start(loopback_config());
    // Bound first, so no vanished sender below can have had its port.
    let client = udp_client();
    // Senders that close before their reply arrives: the replies hit closed
    // ports (ICMP port unreachable).
    for _ in 0..50 {
        let gone = udp_client();
        gone.send_to(b"bye", server.udp).unwrap();
    }
    for i in 0..100 {
        let msg = format!("message {i}");
        assert_eq!(
            udp_exchange(&client, server.udp, msg.as_bytes()),
            msg.to_uppercase().as_bytes()
        );
    }
}

#[test]
fn many_senders_each_get_their_own_replies() {
    let server = InProcess::start(loopback_config());
    let addr = server.udp;
    let senders: Vec<_> = (0..8)
        .map(|t| {
            thread::spawn(move || {
                let client = udp_client();
                for i in 0..200 {
                    let msg = format!("sender {t} message {i} é");
                    assert_eq!(
                        udp_exchange(&client, addr, msg.as_bytes()),
                        msg.to_uppercase().as_bytes()
                    );
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
}

#[test]
fn a_burst_is_answered_datagram_for_datagram() {
    // Sent back to back, these reach the server in batches (recvmmsg /
    // sendmmsg): every one must come back, on its own, exact.
    let server = InProcess::start(loopback_config());
    let client = udp_client();
    let sent: Vec<String> = (0..100)
        .map(|i| format!("burst {i:03} é{}", "x".repeat(i)))
        .collect();
    for msg in &sent {
        client.send_to(msg.as_bytes(), server.udp).unwrap();
    }
    let mut got = Vec::new();
    let mut buf = vec![0; 70_000];
    while got.len() < sent.len() {
        let (n, from) = client
            .recv_from(&mut buf)
            .expect("every reply of the burst");
        assert_eq!(from, server.udp);
        got.push(String::from_utf8(buf[..n].to_vec()).unwrap());
    }
    got.sort();
    let mut want: Vec<String> = sent.iter().map(|m| m.to_uppercase()).collect();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn a_reply_too_large_in_the_middle_of_a_burst_costs_only_itself() {
    let server = InProcess::start(loopback_config());
    let client = udp_client();
    let big = "ΐ".repeat(30_000); // 60,000 bytes in, 180,000 out
    for i in 0..10 {
        client
            .send_to(format!("before {i}").as_bytes(), server.udp)
            .unwrap();
    }
    client.send_to(big.as_bytes(), server.udp).unwrap();
    for i in 0..10 {
        client
            .send_to(format!("after {i}").as_bytes(), server.udp)
            .unwrap();
    }
    let mut got = Vec::new();
    let mut buf = vec![0; 70_000];
    while got.len() < 20 {
        let (n, _) = client.recv_from(&mut buf).expect("the other replies");
        got.push(String::from_utf8(buf[..n].to_vec()).unwrap());
    }
    got.sort();
    let mut want: Vec<String> = (0..10)
        .flat_map(|i| [format!("BEFORE {i}"), format!("AFTER {i}")])
        .collect();
    want.sort();
    assert_eq!(got, want);
    let counters = server.stop();
    assert_eq!(
        (
            counters.dgrams_in,
            counters.dgrams_out,
            counters.dgrams_dropped
        ),
        (21, 20, 1)
    );
}

/// A raw IPv4 socket that writes its own headers (`IPPROTO_RAW` implies
/// `IP_HDRINCL`), to send datagrams with any source address; `None` (the
/// test skips) without `CAP_NET_RAW`, except under `CI=true`, which runs as
/// root and where no test may skip.
fn spoofer() -> Option<Socket> {
    match Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(libc::IPPROTO_RAW)),
    ) {
        Ok(socket) => Some(socket),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "a raw socket needs root (CAP_NET_RAW), and under CI=true no test may skip"
            );
            eprintln!("skipped: a raw socket needs root (CAP_NET_RAW)");
            None
        }
        Err(e) => panic!("raw socket: {e}"),
    }
}

/// Sends one UDP datagram from `from` (whatever it is) to `to`. The kernel
/// fills in the IP checksum and total length; a UDP checksum of 0 means
/// "none" over IPv4.
fn send_spoofed(raw: &Socket, from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) {
    let udp_len = 8 + payload.len() as u16;
    let mut packet = Vec::with_capacity(20 + udp_len as usize);
    packet.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    packet.extend_from_slice(&from.ip().octets());
    packet.extend_from_slice(&to.ip().octets());
    packet.extend_from_slice(&from.port().to_be_bytes());
    packet.extend_from_slice(&to.port().to_be_bytes());
    packet.extend_from_slice(&udp_len.to_be_bytes());
    packet.extend_from_slice(&[0, 0]);
    packet.extend_from_slice(payload);
    let sent = raw
        .send_to(&packet, &SockAddr::from(SocketAddr::V4(to)))
        .expect("send a spoofed datagram");
    assert_eq!(sent, packet.len());
}

fn v4(addr: SocketAddr) -> SocketAddrV4 {
    match addr {
        SocketAddr::V4(v4) => v4,
        SocketAddr::V6(_) => panic!("{addr} is not IPv4"),
    }
}

/// Exchanges `n` datagrams with `server` from a client of its own: since a
/// socket is served in order, everything queued before has been handled
/// once this returns.
fn exchanges(server: SocketAddr, n: usize) {
    let client = udp_client();
    for i in 0..n {
        let msg = format!("after {i}");
        assert_eq!(
            udp_exchange(&client, server, msg.as_bytes()),
            msg.to_uppercase().as_bytes()
        );
    }
}

#[test]
fn two_servers_do_not_bounce_a_spoofed_datagram_between_them() {
    let Some(raw) = spoofer() else { return };
    // A on 127.0.0.1:P, B on 127.0.0.2:P: two upcased on the same port, as
    // on two hosts. A datagram to A that claims to come from B gets A's
    // reply sent to B, whose reply goes to A, and so on forever (loopback
    // is exempt from the rate limit; elsewhere the rate only slows it).
    let a = InProcess::start(loopback_config());
    let mut config = loopback_config();
    config.udp.listen = vec![SocketAddr::from(([127, 0, 0, 2], a.udp.port()))];
    let b = InProcess::start(config);
    send_spoofed(&raw, v4(b.udp), v4(a.udp), b"ping");
    // Events, not sleeps: these replies come after the spoofed datagram
    // was handled by A, and whatever A sent B before them by B.
    exchanges(a.udp, 50);
    exchanges(b.udp, 1);
    let (a, b) = (a.stop(), b.stop());
    let seen = (a.dgrams_in, a.dgrams_blocked, b.dgrams_in);
    assert_eq!(
        seen,
        (51, 1, 1),
        "(A in, A blocked, B in): the spoofed datagram bounced; A: {a}; B: {b}"
    );
}

#[test]
fn a_datagram_claiming_to_come_from_the_server_itself_is_not_answered() {
    let Some(raw) = spoofer() else { return };
    // Answered, it would come back to the server, which would answer it...
    let server = InProcess::start(loopback_config());
    send_spoofed(&raw, v4(server.udp), v4(server.udp), b"ping");
    exchanges(server.udp, 50);
    let counters = server.stop();
    let seen = (counters.dgrams_in, counters.dgrams_blocked);
    assert_eq!(
        seen,
        (51, 1),
        "(in, blocked): the server answered itself; {counters}"
    );
}
