//! Behind a load balancer: PROXY protocol listeners (`[tcp] proxy_listen`,
//! `proxy_trusted`), with the exact header bytes HAProxy and nginx send.

use std::io::Write;
use std::net::{Shutdown, SocketAddr};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use upcase::config::Config;
use upcase::proxy::encode;

use crate::util::*;

/// TCP on loopback, plain and PROXY listeners, ports chosen by the kernel.
fn proxy_config() -> Config {
    let mut config = loopback_config();
    config.tcp.proxy_listen = vec!["127.0.0.1:0".parse().unwrap()];
    config
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// `PROXY TCP4 192.0.2.1 198.51.100.11 56324 12100\r\n`, as HAProxy's
/// `send-proxy` and nginx's `proxy_protocol on` write it.
const V1: &[u8] = b"PROXY TCP4 192.0.2.1 198.51.100.11 56324 12100\r\n";

/// The same connection as HAProxy's `send-proxy-v2` writes it.
const V2: &[u8] =
    b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x01\xc6\x33\x64\x0b\xdc\x04\x2f\x44";

#[test]
fn v1_and_v2_headers_with_data_in_the_same_segment_are_answered_without_the_header() {
    assert_eq!(
        encode::v1(addr("192.0.2.1:56324"), addr("198.51.100.11:12100")),
        V1
    );
    assert_eq!(
        encode::v2(addr("192.0.2.1:56324"), addr("198.51.100.11:12100"), &[]),
        V2
    );
    let server = InProcess::start(proxy_config());
    for header in [V1, V2] {
        let mut request = header.to_vec();
        request.extend_from_slice("hello straße\n".as_bytes());
        // One write: the header and the data arrive in one segment.
        let mut client = connect_with_header(server.proxy[0], &request);
        assert_eq!(
            read_exact(&mut client, "HELLO STRASSE\n".len()),
            "HELLO STRASSE\n".as_bytes()
        );
        client.write_all(b"more\n").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_to_eof(&mut client), b"MORE\n");
    }
    let counters = server.stop();
    assert_eq!(counters.closed_done, 2);
    // Header bytes count as bytes in; none of them came back.
    let data = "hello straße\nmore\n".len() as u64;
    assert_eq!(counters.bytes_in, (V1.len() + V2.len()) as u64 + 2 * data);
    assert_eq!(counters.bytes_out, 2 * "HELLO STRASSE\nMORE\n".len() as u64);
}

#[test]
fn a_header_cut_into_single_bytes_is_waited_for() {
    let server = InProcess::start(proxy_config());
    let tlvs = b"\x04\x00\x03abc\x05\x00\x02id";
    let v2_tlvs = encode::v2(addr("[2001:db8::7]:1"), addr("[2001:db8::1]:12100"), tlvs);
    for header in [V1, V2, &v2_tlvs[..]] {
        let mut client = connect(server.proxy[0]);
        client.set_nodelay(true).unwrap();
        for byte in header {
            client.write_all(&[*byte]).unwrap();
            // Let each byte leave in its own segment.
            std::thread::sleep(Duration::from_millis(1));
        }
        client.write_all(b"abc").unwrap();
        assert_eq!(read_exact(&mut client, 3), b"ABC");
    }
    let counters = server.stop();
    assert_eq!(counters.closed_proxy, 0);
    assert_eq!(counters.conns_accepted, 3);
}

#[test]
fn local_and_unknown_are_served_as_the_balancers_own_connections() {
    let server = InProcess::start(proxy_config());
    for header in [
        &b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00"[..],
        b"PROXY UNKNOWN\r\n",
        b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
        // PROXY over UNIX stream: valid, served with the real endpoints.
        &encode::v2_raw(0x21, 0x31, &[0; 216]),
    ] {
        let mut client = connect_with_header(server.proxy[0], header);
        client.write_all(b"health").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_to_eof(&mut client), b"HEALTH", "after {header:?}");
    }
    assert_eq!(server.stop().closed_done, 4);
}

#[test]
fn the_proxied_client_is_what_max_connections_per_ip_counts() {
    let mut config = proxy_config();
    config.tcp.max_connections_per_ip = NonZeroUsize::new(1);
    let server = InProcess::start(config);
    let from = |ip: &str| encode::v2(addr(&format!("{ip}:40000")), addr("192.0.2.100:12100"), &[]);
    // Every connection comes from 127.0.0.1, the balancer; the limit is
    // per client the header names.
    let mut first = connect_with_header(server.proxy[0], &from("192.0.2.1"));
    first.write_all(b"one").unwrap();
    assert_eq!(read_exact(&mut first, 3), b"ONE");
    let mut second = connect_with_header(server.proxy[0], &from("192.0.2.1"));
    second.write_all(b"two").unwrap();
    assert!(
        closed_unanswered(&mut second),
        "a second connection of 192.0.2.1"
    );
    let mut other = connect_with_header(server.proxy[0], &from("198.51.100.7"));
    other.write_all(b"other").unwrap();
    assert_eq!(read_exact(&mut other, 5), b"OTHER");
    // IPv4-mapped is the same client.
    let mapped = encode::v2(addr("[::ffff:192.0.2.1]:1"), addr("[::1]:12100"), &[]);
    let mut again = connect_with_header(server.proxy[0], &mapped);
    assert!(
        closed_unanswered(&mut again),
        "192.0.2.1 as ::ffff:192.0.2.1"
    );
    drop((first, other));
    let counters = server.stop();
    assert_eq!(counters.closed_limit, 2);
    assert_eq!(counters.conns_accepted, 4);
}

#[test]
fn malformed_headers_are_closed_unanswered_and_counted() {
    let server = InProcess::start(proxy_config());
    let cases: [&[u8]; 7] = [
        b"hello\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.11 056324 12100\r\nhello",
        b"PROXY TCP4 192.0.2.1 198.51.100.11 56324 12100\nhello",
        b"PROXY TCP6 192.0.2.1 198.51.100.11 56324 12100\r\nhello",
        // Version 1 of the binary signature, and a length over the bound.
        b"\r\n\r\n\0\r\nQUIT\n\x11\x11\x00\x0c\xc0\x00\x02\x01\xc6\x33\x64\x0b\xdc\x04\x2f\x44",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x04\x01",
    ];
    for bytes in cases {
        let mut client = connect_with_header(server.proxy[0], bytes);
        assert!(closed_unanswered(&mut client), "{bytes:?}");
    }
    // Without a CRLF in 107 bytes: closed as soon as the 107th arrives.
    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.resize(107, b'x');
    let mut client = connect_with_header(server.proxy[0], &long);
    assert!(closed_unanswered(&mut client), "107 bytes without CRLF");
    // The client's EOF in the middle of a header.
    let mut client = connect_with_header(server.proxy[0], &V2[..20]);
    client.shutdown(Shutdown::Write).unwrap();
    assert!(closed_unanswered(&mut client), "EOF inside the header");
    // The plain listener still serves.
    assert_eq!(round_trip(server.tcp, b"still up"), b"STILL UP");
    let counters = server.stop();
    assert_eq!(counters.closed_proxy, 9);
    assert_eq!(counters.bytes_out, 8);
    assert_eq!(
        counters.conns_accepted,
        counters.conns_open + counters.closed_done + counters.closed_proxy
    );
}

#[test]
fn a_plain_listener_never_looks_for_a_header() {
    let server = InProcess::start(proxy_config());
    let mut request = V1.to_vec();
    request.extend_from_slice(b"data");
    let mut want = b"PROXY TCP4 192.0.2.1 198.51.100.11 56324 12100\r\nDATA".to_vec();
    assert_eq!(round_trip(server.tcp, &request), want);
    want = V2.to_ascii_uppercase();
    assert_eq!(round_trip(server.tcp, V2), want);
}

#[test]
fn peers_outside_proxy_trusted_are_closed_unanswered() {
    let mut config = proxy_config();
    config.tcp.proxy_trusted = vec!["192.0.2.0/24".parse().unwrap(), "::1".parse().unwrap()];
    let server = InProcess::start(config);
    let mut client = connect_with_header(server.proxy[0], V1);
    client.write_all(b"spoofed").unwrap();
    assert!(closed_unanswered(&mut client));
    let counters = server.stop();
    assert_eq!(counters.closed_untrusted, 1);
    assert_eq!(counters.bytes_out, 0);
}

#[test]
fn a_header_not_whole_within_five_seconds_is_closed() {
    let server = InProcess::start(proxy_config());
    let started = Instant::now();
    let mut client = connect_with_header(server.proxy[0], &V1[..10]);
    assert!(closed_unanswered(&mut client));
    assert_at_deadline(
        "close of a header-less connection",
        started.elapsed(),
        Duration::from_secs(5),
    );
    assert_eq!(server.stop().closed_proxy, 1);
}

/// The real daemon: the log line of a PROXY listener, the warning for a
/// bad header naming the balancer, the counters line's reasons.
#[test]
fn the_daemon_logs_proxy_listeners_and_counts_their_closes() {
    let config = "[tcp]\nproxy_listen = [\"127.0.0.1:0\"]\n";
    let (_file, daemon) = Daemon::with_config_listening("proxy.toml", config, 3);
    assert_eq!(daemon.proxy.len(), 1);
    let line = daemon.wait_for_log(" (PROXY protocol)");
    assert!(
        line.ends_with(&format!(
            "listening on tcp://{} (PROXY protocol)",
            daemon.proxy[0]
        )),
        "{line}"
    );
    let mut bad = connect_with_header(daemon.proxy[0], b"SSH-2.0-OpenSSH_9.2\r\n");
    let local = bad.local_addr().unwrap();
    assert!(closed_unanswered(&mut bad));
    let warning = daemon.wait_for_log("PROXY listener: closed");
    assert!(
        warning.ends_with(&format!(
            "PROXY listener: closed {local} unanswered: not a PROXY protocol header"
        )),
        "{warning}"
    );
    let mut good = connect_with_header(daemon.proxy[0], V2);
    good.write_all(b"x").unwrap();
    assert_eq!(read_exact(&mut good, 1), b"X");
    let counters = daemon.counters();
    assert!(
        counters.contains(
            " accepted=2 closed: done=0 reset=0 idle=0 error=0 proxy=1 untrusted=0 cut=0 limit=0;"
        ),
        "{counters}"
    );
    assert!(counters.contains(" open=1 "), "{counters}");
}
