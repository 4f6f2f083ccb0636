//! UDP: each datagram answered on its own, to its sender; errors cost one datagram.

use std::thread;

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
