//! Request payloads and the replies they must get, computed once up front.
//!
//! The load generator sends the same few requests over and over, so their
//! expected replies are computed once with [`crate::transform::upcase`] (the
//! reference for what the server must answer) instead of once per message:
//! the client's CPU is the usual limit of a loopback benchmark, and every
//! cycle spent re-deriving a reply is a message not sent.
//!
//! There are [`VARIANTS`] different requests of the requested size, so
//! neighbouring requests on one connection differ and a server that answers
//! out of order, drops or repeats a piece of the stream, or mixes two
//! clients' bytes up, shows up as a wrong byte.

use std::fmt;

use crate::transform::{upcase, Mode};

/// How many distinct requests are cycled through.
pub const VARIANTS: usize = 32;

/// Length of the UDP sequence header: 16 upper-case hex digits, which the
/// uppercase transform leaves as they are in every mode.
pub const UDP_HEADER: usize = 16;

/// What the requests are made of; it decides the transform the server must
/// apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadKind {
    /// Printable ASCII (every byte from space to `~`, so `@[{~` and the
    /// other neighbours of the letters are included) and newlines. The reply
    /// is the same in the server's `ascii` and `unicode` modes, and from the
    /// ASCII reference servers.
    Ascii,
    /// Valid UTF-8 with 2-, 3- and 4-byte characters and characters whose
    /// upper case is longer (`ß` -> `SS`); expects the server's `unicode`
    /// mode.
    Utf8,
    /// Every byte value 0-255, expects the server's `ascii` mode (only
    /// `a`-`z` change).
    Binary,
}

impl PayloadKind {
    /// The server mode whose replies this payload is checked against.
    pub fn mode(self) -> Mode {
        match self {
            PayloadKind::Ascii | PayloadKind::Binary => Mode::Ascii,
            PayloadKind::Utf8 => Mode::Unicode,
        }
    }
}

impl fmt::Display for PayloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PayloadKind::Ascii => "ascii",
            PayloadKind::Utf8 => "utf8",
            PayloadKind::Binary => "binary",
        })
    }
}

/// Characters the UTF-8 payload is drawn from: ASCII (with the characters
/// next to the letters), Latin, Greek, CJK, an emoji, and characters whose
/// upper case is longer or several code points (`ß`, `ﬁ`, `ŉ`, `ΐ`).
const UTF8_CHARS: &[char] = &[
    'a', 'z', 'q', ' ', '@', '[', '{', '~', '`', '0', 'ö', 'ß', 'é', 'ﬁ', 'ŉ', 'ΐ', 'ω', 'я', '東',
    '京', 'ǅ', 'ı', '😀', 'ÿ', '\n',
];

/// The requests of one run and their expected replies.
pub struct Payloads {
    /// The request bodies; `requests[i]` answers with `replies[i]`.
    requests: Vec<Vec<u8>>,
    /// `upcase(kind.mode(), requests[i])`.
    replies: Vec<Vec<u8>>,
}

impl Payloads {
    /// [`VARIANTS`] requests of exactly `size` bytes (`size` ≥ 1).
    pub fn new(kind: PayloadKind, size: usize) -> Payloads {
        let requests: Vec<Vec<u8>> = (0..VARIANTS)
            .map(|v| generate(kind, size, v as u64))
            .collect();
        let replies = requests.iter().map(|r| upcase(kind.mode(), r)).collect();
        Payloads { requests, replies }
    }

    /// Request number `variant` (taken modulo [`VARIANTS`]).
    pub fn request(&self, variant: usize) -> &[u8] {
        &self.requests[variant % VARIANTS]
    }

    /// The reply request number `variant` must get.
    pub fn reply(&self, variant: usize) -> &[u8] {
        &self.replies[variant % VARIANTS]
    }
}

/// A small deterministic generator (xorshift64*): payloads must be the same
/// on every run so runs are comparable, and need no crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// One request of `size` bytes.
fn generate(kind: PayloadKind, size: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (seed + 1).wrapping_mul(0x1000_0000_01b3));
    let mut out = Vec::with_capacity(size);
    match kind {
        PayloadKind::Ascii => {
            while out.len() < size {
                // One byte in 32 a newline, as line-oriented clients send.
                let r = rng.next();
                out.push(if r % 32 == 0 {
                    b'\n'
                } else {
                    b' ' + ((r >> 8) % 95) as u8
                });
            }
        }
        PayloadKind::Binary => {
            while out.len() < size {
                out.push((rng.next() >> 24) as u8);
            }
        }
        PayloadKind::Utf8 => {
            let mut buf = [0u8; 4];
            while out.len() < size {
                let c = UTF8_CHARS[(rng.next() >> 16) as usize % UTF8_CHARS.len()];
                let encoded = c.encode_utf8(&mut buf).as_bytes();
                if out.len() + encoded.len() <= size {
                    out.extend_from_slice(encoded);
                } else {
                    // Pad with ASCII so every request is whole UTF-8: the
                    // reply to a pipelined stream is then exactly the
                    // concatenation of the replies to its requests.
                    out.push(b'x');
                }
            }
        }
    }
    out
}

/// Writes the UDP sequence header for `seq` into `out` (16 upper-case hex
/// digits: unchanged by the transform, so the reply carries it back).
pub fn udp_header(seq: u64, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for shift in (0..16).rev() {
        out.push(HEX[((seq >> (shift * 4)) & 0xf) as usize]);
    }
}

/// Reads the sequence header back from a reply datagram; `None` if it is
/// not one (too short, or not upper-case hex).
pub fn parse_udp_header(datagram: &[u8]) -> Option<u64> {
    let header = datagram.get(..UDP_HEADER)?;
    let mut seq = 0u64;
    for &b in header {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        seq = (seq << 4) | u64::from(digit);
    }
    Some(seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_the_exact_size_and_whole_characters() {
        for kind in [PayloadKind::Ascii, PayloadKind::Utf8, PayloadKind::Binary] {
            for size in [1, 2, 3, 5, 64, 4096] {
                let p = Payloads::new(kind, size);
                for v in 0..VARIANTS {
                    assert_eq!(p.request(v).len(), size, "{kind} {size}");
                    if kind != PayloadKind::Binary {
                        assert!(std::str::from_utf8(p.request(v)).is_ok());
                    }
                }
            }
        }
    }

    #[test]
    fn payloads_exercise_what_a_wrong_server_gets_wrong() {
        let ascii: Vec<u8> = (0..VARIANTS)
            .flat_map(|v| Payloads::new(PayloadKind::Ascii, 4096).request(v).to_vec())
            .collect();
        for b in b"@[{~`az" {
            assert!(ascii.contains(b), "ascii payload lacks {:?}", *b as char);
        }
        let utf8 = Payloads::new(PayloadKind::Utf8, 4096);
        assert_ne!(utf8.request(0).len(), utf8.reply(0).len(), "ß etc. grow");
        let binary = Payloads::new(PayloadKind::Binary, 4096);
        assert!(binary.request(0).iter().any(|&b| b >= 0x80));
    }

    #[test]
    fn udp_header_round_trips_through_the_transform() {
        let mut h = Vec::new();
        udp_header(0x0123_4567_89ab_cdef, &mut h);
        assert_eq!(h.len(), UDP_HEADER);
        assert_eq!(upcase(Mode::Unicode, &h), h);
        assert_eq!(parse_udp_header(&h), Some(0x0123_4567_89ab_cdef));
        assert_eq!(parse_udp_header(b"0123456789abcdef"), None);
        assert_eq!(parse_udp_header(b"0123"), None);
    }
}
