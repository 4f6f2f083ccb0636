//! The PROXY protocol, receiver side: the header a load balancer (HAProxy
//! `send-proxy`/`send-proxy-v2`, nginx `proxy_protocol on`, AWS NLB) puts
//! in front of a TCP stream to say whose connection it relays. Pure: bytes
//! in, a verdict out; no sockets, no logging. Written from HAProxy's
//! `doc/proxy-protocol.txt` (2020/03/05), both versions, strictly.
//!
//! [`parse`] takes every byte received so far on a connection (the server
//! peeks at the socket, so bytes after the header stay in the kernel and are
//! read as data) and answers:
//!
//! - [`Parsed::NeedMore`]: a header has begun and nothing in it is wrong
//!   yet (a balancer or a network may cut it anywhere);
//! - [`Parsed::Header`]: a whole, valid header of `consumed` bytes;
//! - [`Parsed::Invalid`]: this is not a valid header, and no further byte
//!   can make it one: the connection is to be closed.
//!
//! The verdict depends only on the bytes, never on how they were cut: for
//! any input, every prefix shorter than a header is `NeedMore`, and once an
//! input is `Invalid` so is every longer one (the unit tests and the fuzz
//! target check both). A verdict other than `NeedMore` comes by
//! [`MAX_HEADER`] bytes at the latest, so the bytes to look at are bounded.
//!
//! What is accepted (section 2 of the spec):
//!
//! - version 1: one line `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n` of at
//!   most 107 bytes, single spaces, addresses of the announced family
//!   (IPv4 as four decimal numbers without leading zeros; IPv6 as
//!   `inet_ntop` writes it), ports without leading zeros; or `PROXY
//!   UNKNOWN` followed by anything up to the CRLF. A lone CR or LF is an
//!   error;
//! - version 2: the 12-byte signature, version 2, command `LOCAL` (the
//!   balancer's own connection, a health check: the address block is
//!   skipped whatever it says) or `PROXY`; for `PROXY`, TCP over IPv4 or
//!   IPv6 gives the addresses, and the other valid combinations (UNSPEC,
//!   UDP, UNIX) are served as `UNKNOWN` (the real endpoints), which the spec
//!   allows; any other family or protocol byte is an error. The length may
//!   cover TLVs beyond the addresses; they are skipped, up to
//!   [`MAX_V2_LENGTH`] bytes.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// The 12 bytes that open a version 2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The longest version 1 line, CRLF included: `PROXY UNKNOWN` with two
/// full IPv6 addresses and ports (the spec's worst case).
pub const V1_MAX: usize = 107;

/// The most a version 2 header's length field may say: the address block
/// (216 bytes at most, for UNIX) and TLVs. The spec sets no bound; the
/// headers balancers send are far below it (HAProxy's with TLVs for TLS and
/// a unique id, AWS's with its endpoint id: a few hundred bytes), and a
/// bound keeps what the server must look at small.
pub const MAX_V2_LENGTH: usize = 1024;

/// The longest header of either version: by this many bytes every input
/// has its verdict.
pub const MAX_HEADER: usize = 16 + MAX_V2_LENGTH;

/// What a valid header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A relayed connection: the client's address and the one it connected to.
    Proxied {
        /// The client (what the server counts and logs).
        source: SocketAddr,
        /// The address the client connected to (on the balancer).
        destination: SocketAddr,
    },
    /// Version 2 `LOCAL`: the balancer's own connection (a health check).
    Local,
    /// Version 1 `UNKNOWN`, or version 2 `PROXY` for a family or protocol
    /// other than TCP over IP: the real endpoints stand.
    Unknown,
}

/// The verdict on the bytes received so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// No verdict yet: the bytes are a valid beginning.
    NeedMore,
    /// A valid header of `consumed` bytes; what follows is data.
    Header {
        /// What it says.
        header: Header,
        /// Its length in bytes.
        consumed: usize,
    },
    /// Not a valid header, whatever follows.
    Invalid(Invalid),
}

/// Why bytes are not a valid header (the log line says it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// Neither `PROXY ` nor the version 2 signature.
    #[error("not a PROXY protocol header")]
    NotProxy,
    /// Version 1 without its CRLF in the first 107 bytes.
    #[error("version 1 line longer than 107 bytes")]
    V1TooLong,
    /// Version 1 with a CR not followed by LF, or an LF alone.
    #[error("version 1 line with a lone CR or LF")]
    V1LoneCrLf,
    /// Version 1 with a protocol other than TCP4, TCP6 or UNKNOWN.
    #[error("version 1 protocol is not TCP4, TCP6 or UNKNOWN")]
    V1Protocol,
    /// Version 1 fields: not four single-space-separated fields, or an
    /// address or port that is not in its canonical form.
    #[error("version 1 {0}")]
    V1Field(&'static str),
    /// Version 2 signature followed by another version than 2.
    #[error("version 2 signature with version {0}")]
    V2Version(u8),
    /// Version 2 command other than LOCAL (0) or PROXY (1).
    #[error("version 2 command {0} is neither LOCAL nor PROXY")]
    V2Command(u8),
    /// Version 2 family and protocol byte outside the spec's list.
    #[error("version 2 family/protocol byte {0:#04x} is not one the spec defines")]
    V2Family(u8),
    /// Version 2 length field over [`MAX_V2_LENGTH`].
    #[error("version 2 length {0} is over the limit of {MAX_V2_LENGTH}")]
    V2TooLong(usize),
    /// Version 2 length field shorter than the announced addresses.
    #[error("version 2 length {0} is too short for the announced addresses")]
    V2TooShort(usize),
}

/// The verdict on `received`, every byte received on the connection so far
/// (see the module docs).
pub fn parse(received: &[u8]) -> Parsed {
    match received.first() {
        None => Parsed::NeedMore,
        Some(b'P') => v1(received),
        Some(b'\r') => v2(received),
        Some(_) => Parsed::Invalid(Invalid::NotProxy),
    }
}

/// Whether `have` is a beginning of `want` (or `want` a beginning of it).
fn agrees(have: &[u8], want: &[u8]) -> bool {
    let n = have.len().min(want.len());
    have[..n] == want[..n]
}

fn v1(received: &[u8]) -> Parsed {
    const PREFIX: &[u8] = b"PROXY ";
    if !agrees(received, PREFIX) {
        return Parsed::Invalid(Invalid::NotProxy);
    }
    // Refuse a wrong protocol word as soon as it shows, as the spec
    // recommends, rather than at the CRLF.
    let word = &received[PREFIX.len().min(received.len())..];
    if ![&b"TCP4 "[..], b"TCP6 ", b"UNKNOWN"]
        .iter()
        .any(|w| agrees(word, w))
    {
        return Parsed::Invalid(Invalid::V1Protocol);
    }
    let window = &received[..received.len().min(V1_MAX)];
    let mut end = None;
    for (i, &byte) in window.iter().enumerate() {
        match byte {
            b'\n' => return Parsed::Invalid(Invalid::V1LoneCrLf),
            b'\r' => match window.get(i + 1) {
                Some(b'\n') => {
                    end = Some(i);
                    break;
                }
                Some(_) => return Parsed::Invalid(Invalid::V1LoneCrLf),
                // The LF would be byte 108.
                None if i + 1 == V1_MAX => return Parsed::Invalid(Invalid::V1TooLong),
                None => return Parsed::NeedMore,
            },
            _ => {}
        }
    }
    let Some(end) = end else {
        if window.len() == V1_MAX {
            return Parsed::Invalid(Invalid::V1TooLong);
        }
        return Parsed::NeedMore;
    };
    let line = &received[PREFIX.len().min(end)..end];
    let consumed = end + 2;
    if let Some(rest) = line.strip_prefix(b"UNKNOWN") {
        // Anything may follow UNKNOWN before the CRLF, and is ignored.
        return match rest.first() {
            None | Some(b' ') => Parsed::Header {
                header: Header::Unknown,
                consumed,
            },
            Some(_) => Parsed::Invalid(Invalid::V1Protocol),
        };
    }
    let (v6, fields) = match (line.strip_prefix(b"TCP4 "), line.strip_prefix(b"TCP6 ")) {
        (Some(fields), _) => (false, fields),
        (_, Some(fields)) => (true, fields),
        _ => return Parsed::Invalid(Invalid::V1Protocol),
    };
    match v1_fields(v6, fields) {
        Ok((source, destination)) => Parsed::Header {
            header: Header::Proxied {
                source,
                destination,
            },
            consumed,
        },
        Err(what) => Parsed::Invalid(Invalid::V1Field(what)),
    }
}

/// `SRC DST SPORT DPORT`, exactly one space apart.
fn v1_fields(v6: bool, fields: &[u8]) -> Result<(SocketAddr, SocketAddr), &'static str> {
    let mut split = fields.split(|&b| b == b' ');
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        split.next(),
        split.next(),
        split.next(),
        split.next(),
        split.next(),
    ) else {
        return Err("line is not four fields separated by single spaces");
    };
    let address = |field: &[u8]| {
        if v6 {
            ipv6(field).map(IpAddr::V6).ok_or("IPv6 address is invalid")
        } else {
            ipv4(field).map(IpAddr::V4).ok_or("IPv4 address is invalid")
        }
    };
    let (src, dst) = (address(src)?, address(dst)?);
    let (sport, dport) = (port(sport)?, port(dport)?);
    Ok((SocketAddr::new(src, sport), SocketAddr::new(dst, dport)))
}

/// A decimal number in `0..=max` without leading zeros.
fn decimal(field: &[u8], max: u32) -> Option<u32> {
    if field.is_empty() || field.len() > 5 || (field.len() > 1 && field[0] == b'0') {
        return None;
    }
    let mut n = 0u32;
    for &b in field {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u32::from(b - b'0');
    }
    (n <= max).then_some(n)
}

fn port(field: &[u8]) -> Result<u16, &'static str> {
    decimal(field, 65535)
        .and_then(|n| u16::try_from(n).ok())
        .ok_or("port is not a number from 0 to 65535 without leading zeros")
}

/// Four decimal numbers 0-255 without leading zeros, dot-separated.
fn ipv4(field: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = field.split(|&b| b == b'.');
    for octet in &mut octets {
        *octet = u8::try_from(decimal(parts.next()?, 255)?).ok()?;
    }
    parts.next().is_none().then_some(Ipv4Addr::from(octets))
}

/// An IPv6 address as `inet_ntop` writes it (groups of up to 4 hex digits,
/// one `::`, a dotted IPv4 tail for mapped addresses); no zone, no brackets.
fn ipv6(field: &[u8]) -> Option<Ipv6Addr> {
    if field.len() > 45
        || !field
            .iter()
            .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    {
        return None;
    }
    Ipv6Addr::from_str(std::str::from_utf8(field).ok()?).ok()
}

fn v2(received: &[u8]) -> Parsed {
    if !agrees(received, &V2_SIGNATURE) {
        return Parsed::Invalid(Invalid::NotProxy);
    }
    let Some(&version_command) = received.get(12) else {
        return Parsed::NeedMore;
    };
    if version_command >> 4 != 2 {
        return Parsed::Invalid(Invalid::V2Version(version_command >> 4));
    }
    let local = match version_command & 0x0F {
        0 => true,
        1 => false,
        other => return Parsed::Invalid(Invalid::V2Command(other)),
    };
    let Some(&family) = received.get(13) else {
        return Parsed::NeedMore;
    };
    // Bytes of addresses each family takes; LOCAL ignores the family.
    let needs = match family {
        _ if local => 0,
        0x00 => 0,
        0x11 | 0x12 => 12,
        0x21 | 0x22 => 36,
        0x31 | 0x32 => 216,
        other => return Parsed::Invalid(Invalid::V2Family(other)),
    };
    let [Some(&hi), Some(&lo)] = [received.get(14), received.get(15)] else {
        return Parsed::NeedMore;
    };
    let length = usize::from(u16::from_be_bytes([hi, lo]));
    if length > MAX_V2_LENGTH {
        return Parsed::Invalid(Invalid::V2TooLong(length));
    }
    if length < needs {
        return Parsed::Invalid(Invalid::V2TooShort(length));
    }
    let consumed = 16 + length;
    let Some(block) = received.get(16..consumed) else {
        return Parsed::NeedMore;
    };
    let header = match family {
        _ if local => Header::Local,
        0x11 => {
            let ip =
                |at: usize| IpAddr::from([block[at], block[at + 1], block[at + 2], block[at + 3]]);
            let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
            Header::Proxied {
                source: SocketAddr::new(ip(0), port(8)),
                destination: SocketAddr::new(ip(4), port(10)),
            }
        }
        0x21 => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&block[at..at + 16]);
                IpAddr::from(octets)
            };
            let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
            Header::Proxied {
                source: SocketAddr::new(ip(0), port(32)),
                destination: SocketAddr::new(ip(16), port(34)),
            }
        }
        // UNSPEC, UDP, UNIX: valid, but nothing a TCP client is counted
        // under; the spec lets the receiver use the real endpoints.
        _ => Header::Unknown,
    };
    Parsed::Header { header, consumed }
}

/// A network in CIDR notation (`127.0.0.0/8`, `::1/128`; a bare address is
/// the one host), for `[tcp] proxy_trusted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address (host bits zero).
    network: IpAddr,
    /// The prefix length: at most 32 for IPv4, 128 for IPv6.
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the network. An IPv4-mapped IPv6 address (a
    /// client of a dual-stack socket) is its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, crate::server::canonical_ip(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u128::from(u32::from(ip)), 32, self.prefix) == u128::from(u32::from(net))
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask(u128::from(ip), 128, self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// `value` (of `bits` bits) with all but its first `prefix` bits cleared.
fn mask(value: u128, bits: u32, prefix: u8) -> u128 {
    let host = bits - u32::from(prefix);
    if host >= 128 {
        0
    } else {
        value >> host << host
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let expected = "expected an address or a network such as \"127.0.0.0/8\" or \"::1/128\"";
        let (address, prefix) = match s.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (s, None),
        };
        let network =
            IpAddr::from_str(address).map_err(|_| format!("invalid network {s:?}: {expected}"))?;
        let bits: u8 = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => match decimal(p.as_bytes(), bits.into()) {
                Some(n) => n as u8,
                None => {
                    return Err(format!(
                        "invalid network {s:?}: the prefix length must be 0 to {bits}"
                    ))
                }
            },
        };
        let value = match network {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            IpAddr::V6(v6) => u128::from(v6),
        };
        let masked = mask(value, bits.into(), prefix);
        if masked != value {
            let network = match network {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(masked as u32)),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(masked)),
            };
            return Err(format!(
                "invalid network {s:?}: host bits are set (the network is \"{network}/{prefix}\")"
            ));
        }
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The default `[tcp] proxy_trusted`: loopback only.
pub fn default_trusted() -> Vec<Cidr> {
    vec![
        Cidr {
            network: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
            prefix: 8,
        },
        Cidr {
            network: IpAddr::V6(Ipv6Addr::LOCALHOST),
            prefix: 128,
        },
    ]
}

/// Test and fuzz helpers: headers as balancers send them, byte for byte.
pub mod encode {
    use super::V2_SIGNATURE;
    use std::net::SocketAddr;

    /// A version 1 line for a TCP connection from `source` to `destination`
    /// (both of one family), as HAProxy's `send-proxy` writes it.
    pub fn v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
        let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
        format!(
            "PROXY {family} {} {} {} {}\r\n",
            source.ip(),
            destination.ip(),
            source.port(),
            destination.port()
        )
        .into_bytes()
    }

    /// A version 2 `PROXY` header for TCP from `source` to `destination`
    /// (both of one family), followed by `tlvs` (raw TLV bytes), as
    /// HAProxy's `send-proxy-v2` writes it.
    pub fn v2(source: SocketAddr, destination: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
        let mut block = Vec::new();
        let family = match (source, destination) {
            (SocketAddr::V4(s), SocketAddr::V4(d)) => {
                block.extend_from_slice(&s.ip().octets());
                block.extend_from_slice(&d.ip().octets());
                0x11
            }
            (SocketAddr::V6(s), SocketAddr::V6(d)) => {
                block.extend_from_slice(&s.ip().octets());
                block.extend_from_slice(&d.ip().octets());
                0x21
            }
            _ => panic!("source and destination of different families"),
        };
        block.extend_from_slice(&source.port().to_be_bytes());
        block.extend_from_slice(&destination.port().to_be_bytes());
        block.extend_from_slice(tlvs);
        v2_raw(0x21, family, &block)
    }

    /// A version 2 `LOCAL` header (the balancer's health check) without
    /// an address block.
    pub fn v2_local() -> Vec<u8> {
        v2_raw(0x20, 0x00, &[])
    }

    /// A version 2 header with any version/command and family bytes and
    /// address block (its length field is the block's length).
    pub fn v2_raw(version_command: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(version_command);
        out.push(family);
        out.extend_from_slice(
            &u16::try_from(block.len())
                .expect("block fits")
                .to_be_bytes(),
        );
        out.extend_from_slice(block);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::encode;
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Every prefix shorter than the header is NeedMore; the header alone,
    /// and the header followed by data, give `want` with the header's
    /// length; byte by byte (each prefix) agrees.
    fn check_valid(bytes: &[u8], want: Header) {
        for cut in 0..bytes.len() {
            assert_eq!(
                parse(&bytes[..cut]),
                Parsed::NeedMore,
                "cut at {cut} of {bytes:?}"
            );
        }
        let done = Parsed::Header {
            header: want,
            consumed: bytes.len(),
        };
        assert_eq!(parse(bytes), done, "{bytes:?}");
        let mut with_data = bytes.to_vec();
        with_data.extend_from_slice(b"hello\r\n\0\xFF");
        assert_eq!(parse(&with_data), done, "followed by data");
    }

    /// Some prefix is Invalid(`why`), and from there every longer one.
    fn check_invalid(bytes: &[u8], why: Invalid) {
        let mut seen = None;
        for cut in 0..=bytes.len() {
            match parse(&bytes[..cut]) {
                Parsed::NeedMore => assert!(seen.is_none(), "NeedMore after Invalid at {cut}"),
                Parsed::Invalid(w) => {
                    seen.get_or_insert(cut);
                    assert_eq!(w, why, "cut at {cut} of {bytes:?}");
                }
                other => panic!("{other:?} at {cut} of {bytes:?}"),
            }
        }
        assert!(seen.is_some(), "{bytes:?} never invalid");
    }

    #[test]
    fn v1_tcp4_and_tcp6_as_haproxy_sends_them() {
        let v4 = Header::Proxied {
            source: addr("192.0.2.1:56324"),
            destination: addr("198.51.100.11:443"),
        };
        check_valid(b"PROXY TCP4 192.0.2.1 198.51.100.11 56324 443\r\n", v4);
        check_valid(
            &encode::v1(addr("192.0.2.1:56324"), addr("198.51.100.11:443")),
            v4,
        );
        check_valid(
            b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
            Header::Proxied {
                source: addr("255.255.255.255:65535"),
                destination: addr("255.255.255.255:65535"),
            },
        );
        check_valid(
            b"PROXY TCP4 0.0.0.0 10.0.0.0 0 0\r\n",
            Header::Proxied {
                source: addr("0.0.0.0:0"),
                destination: addr("10.0.0.0:0"),
            },
        );
        check_valid(
            b"PROXY TCP6 2001:db8::1 ::ffff:192.0.2.7 1 12000\r\n",
            Header::Proxied {
                source: addr("[2001:db8::1]:1"),
                destination: addr("[::ffff:192.0.2.7]:12000"),
            },
        );
        let longest = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF 65535 65535\r\n";
        assert_eq!(longest.len(), 104);
        let all = addr("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
        check_valid(
            longest,
            Header::Proxied {
                source: all,
                destination: all,
            },
        );
    }

    #[test]
    fn v1_unknown_ignores_the_rest_of_its_line_up_to_107_bytes() {
        check_valid(b"PROXY UNKNOWN\r\n", Header::Unknown);
        check_valid(b"PROXY UNKNOWN whatever 1 2 x\r\n", Header::Unknown);
        let mut longest = b"PROXY UNKNOWN ".to_vec();
        longest.resize(V1_MAX - 2, b'f');
        longest.extend_from_slice(b"\r\n");
        assert_eq!(longest.len(), 107);
        check_valid(&longest, Header::Unknown);
        let mut too_long = longest[..V1_MAX - 2].to_vec();
        too_long.extend_from_slice(b"f\r\n");
        check_invalid(&too_long, Invalid::V1TooLong);
        // A CR as byte 107 with its LF beyond.
        check_invalid(&too_long[..V1_MAX], Invalid::V1TooLong);
        check_invalid(b"PROXY UNKNOWNX\r\n", Invalid::V1Protocol);
    }

    #[test]
    fn v1_malformed_lines_are_refused_as_soon_as_they_show() {
        check_invalid(b"GET / HTTP/1.1\r\n", Invalid::NotProxy);
        check_invalid(b"PROXY\tTCP4", Invalid::NotProxy);
        check_invalid(b"proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n", Invalid::NotProxy);
        check_invalid(b"PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n", Invalid::V1Protocol);
        check_invalid(b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n", Invalid::V1LoneCrLf);
        check_invalid(b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\rx\n", Invalid::V1LoneCrLf);
        let field = |what| Invalid::V1Field(what);
        let fields = field("line is not four fields separated by single spaces");
        let v4 = field("IPv4 address is invalid");
        let v6 = field("IPv6 address is invalid");
        let port = field("port is not a number from 0 to 65535 without leading zeros");
        for (line, why) in [
            (&b"PROXY TCP4 1.2.3.4  1.2.3.4 1 2\r\n"[..], fields),
            (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 \r\n", fields),
            (b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n", fields),
            (b"PROXY TCP4 01.2.3.4 1.2.3.4 1 2\r\n", v4),
            (b"PROXY TCP4 1.2.3.256 1.2.3.4 1 2\r\n", v4),
            (b"PROXY TCP4 1.2.3 1.2.3.4 1 2\r\n", v4),
            (b"PROXY TCP4 1.2.3.4.5 1.2.3.4 1 2\r\n", v4),
            (b"PROXY TCP4 ::1 ::1 1 2\r\n", v4),
            (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", v6),
            (b"PROXY TCP6 ::1%eth0 ::1 1 2\r\n", v6),
            (b"PROXY TCP6 [::1] ::1 1 2\r\n", v6),
            (b"PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n", port),
            (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 65536\r\n", port),
            (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 -2\r\n", port),
            (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 +2\r\n", port),
        ] {
            check_invalid(line, why);
        }
    }

    #[test]
    fn v2_tcp_over_ipv4_and_ipv6_with_and_without_tlvs() {
        let (s4, d4) = (addr("192.0.2.1:56324"), addr("198.51.100.11:12100"));
        let want = Header::Proxied {
            source: s4,
            destination: d4,
        };
        let bytes = encode::v2(s4, d4, &[]);
        assert_eq!(
            bytes,
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x01\xc6\x33\x64\x0b\xdc\x04\x2f\x44"
        );
        check_valid(&bytes, want);
        // A NOOP TLV and a unique-id TLV are skipped.
        check_valid(&encode::v2(s4, d4, b"\x04\x00\x02ab\x05\x00\x03xyz"), want);
        let (s6, d6) = (addr("[2001:db8::7]:1"), addr("[2001:db8::1]:12100"));
        check_valid(
            &encode::v2(s6, d6, &[]),
            Header::Proxied {
                source: s6,
                destination: d6,
            },
        );
        let mut block = vec![0u8; MAX_V2_LENGTH];
        block[..4].copy_from_slice(&[192, 0, 2, 9]);
        let longest = encode::v2_raw(0x21, 0x11, &block);
        assert_eq!(longest.len(), MAX_HEADER);
        check_valid(
            &longest,
            Header::Proxied {
                source: addr("192.0.2.9:0"),
                destination: addr("0.0.0.0:0"),
            },
        );
    }

    #[test]
    fn v2_local_and_the_other_families_use_the_real_endpoints() {
        check_valid(&encode::v2_local(), Header::Local);
        // LOCAL skips whatever block it has, whatever its family byte says.
        check_valid(&encode::v2_raw(0x20, 0x11, &[1; 12]), Header::Local);
        check_valid(&encode::v2_raw(0x20, 0xFF, &[]), Header::Local);
        for (family, len) in [
            (0x00, 0),
            (0x00, 5),
            (0x12, 12),
            (0x22, 36),
            (0x31, 216),
            (0x32, 220),
        ] {
            check_valid(
                &encode::v2_raw(0x21, family, &vec![7; len]),
                Header::Unknown,
            );
        }
    }

    #[test]
    fn v2_malformed_headers_are_refused() {
        check_invalid(b"\r\n\r\n\0\r\nQUIT\r", Invalid::NotProxy);
        check_invalid(b"\r\r", Invalid::NotProxy);
        check_invalid(&encode::v2_raw(0x11, 0x11, &[0; 12]), Invalid::V2Version(1));
        check_invalid(&encode::v2_raw(0x31, 0x11, &[0; 12]), Invalid::V2Version(3));
        check_invalid(&encode::v2_raw(0x22, 0x11, &[0; 12]), Invalid::V2Command(2));
        for family in [0x01, 0x10, 0x13, 0x23, 0x40, 0xFF] {
            check_invalid(
                &encode::v2_raw(0x21, family, &[0; 12]),
                Invalid::V2Family(family),
            );
        }
        check_invalid(
            &encode::v2_raw(0x21, 0x11, &[0; 11]),
            Invalid::V2TooShort(11),
        );
        check_invalid(
            &encode::v2_raw(0x21, 0x21, &[0; 35]),
            Invalid::V2TooShort(35),
        );
        check_invalid(
            &encode::v2_raw(0x21, 0x31, &[0; 215]),
            Invalid::V2TooShort(215),
        );
        let over = encode::v2_raw(0x21, 0x11, &vec![0; MAX_V2_LENGTH + 1]);
        check_invalid(&over, Invalid::V2TooLong(MAX_V2_LENGTH + 1));
        // Refused at its length field, long before the bytes it announces.
        assert_eq!(
            parse(&over[..16]),
            Parsed::Invalid(Invalid::V2TooLong(1025))
        );
    }

    #[test]
    fn cidr_parsing_and_matching() {
        let net = |s: &str| s.parse::<Cidr>().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(net("127.0.0.0/8").to_string(), "127.0.0.0/8");
        assert_eq!(net("10.1.2.3").to_string(), "10.1.2.3/32");
        assert_eq!(net("::1").to_string(), "::1/128");
        assert_eq!(net("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert!(net("127.0.0.0/8").contains(ip("127.255.0.1")));
        assert!(!net("127.0.0.0/8").contains(ip("128.0.0.1")));
        // A dual-stack socket's IPv4 client matches IPv4 networks.
        assert!(net("127.0.0.0/8").contains(ip("::ffff:127.0.0.1")));
        assert!(!net("127.0.0.0/8").contains(ip("::1")));
        assert!(net("::1/128").contains(ip("::1")));
        assert!(!net("::1/128").contains(ip("127.0.0.1")));
        assert!(net("0.0.0.0/0").contains(ip("203.0.113.5")));
        assert!(net("::/0").contains(ip("2001:db8::5")));
        assert!(net("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
        assert!(!net("2001:db8::/32").contains(ip("2001:db9::1")));
        assert!(net("192.0.2.0/24").contains(ip("192.0.2.255")));
        assert_eq!(
            "10.0.0.1/8".parse::<Cidr>().unwrap_err(),
            "invalid network \"10.0.0.1/8\": host bits are set (the network is \"10.0.0.0/8\")"
        );
        assert_eq!(
            "10.0.0.0/33".parse::<Cidr>().unwrap_err(),
            "invalid network \"10.0.0.0/33\": the prefix length must be 0 to 32"
        );
        assert_eq!(
            "::/08".parse::<Cidr>().unwrap_err(),
            "invalid network \"::/08\": the prefix length must be 0 to 128"
        );
        assert_eq!(
            "localhost".parse::<Cidr>().unwrap_err(),
            "invalid network \"localhost\": expected an address or a network such as \"127.0.0.0/8\" or \"::1/128\""
        );
        assert_eq!(
            default_trusted()
                .iter()
                .map(Cidr::to_string)
                .collect::<Vec<_>>(),
            ["127.0.0.0/8", "::1/128"]
        );
    }
}
