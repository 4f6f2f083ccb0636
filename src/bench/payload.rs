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
//!
//! Or the requests are a text's (`--payload-file`, [`Payloads::from_text`]):
//! its consecutive pieces of the requested size, each cut where a server
//! holds nothing back (not inside a UTF-8 character), so that the reply to
//! a piece is its transform alone and the reply to a pipelined stream of
//! pieces is the concatenation of theirs, in either mode.

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

/// The most requests a text is cut into (`--payload-file`): a large file
/// is not all held in memory twice.
pub const MAX_PIECES: usize = 1024;

/// The requests of one run and their expected replies.
pub struct Payloads {
    /// The request bodies; `requests[i]` answers with `replies[i]`. Never
    /// empty.
    requests: Vec<Vec<u8>>,
    /// `upcase(mode, requests[i])`, for the server's mode.
    replies: Vec<Vec<u8>>,
}

impl Payloads {
    /// [`VARIANTS`] generated requests of exactly `size` bytes (`size` ≥
    /// 1), checked against the mode `kind` is for.
    pub fn new(kind: PayloadKind, size: usize) -> Payloads {
        Payloads::generated(kind, kind.mode(), size)
    }

    /// [`VARIANTS`] generated requests of exactly `size` bytes (`size` ≥
    /// 1), checked against a server in `mode` (`--mode`: e.g. the utf8
    /// payload against ascii mode).
    pub fn generated(kind: PayloadKind, mode: Mode, size: usize) -> Payloads {
        let requests = (0..VARIANTS)
            .map(|v| generate(kind, size, v as u64))
            .collect();
        Payloads::with_replies(mode, requests)
    }

    /// The requests cut from `text` (`--payload-file`), checked against a
    /// server in `mode`: consecutive pieces of `size` bytes, each made
    /// shorter (by up to 3 bytes in valid UTF-8) where it would end inside
    /// a UTF-8 character: a server in unicode mode holds such a tail back
    /// until the rest comes, so its reply would not be the piece's alone.
    /// The same pieces in both modes, so the two are compared on the same
    /// bytes. A text
    /// shorter than `size` is repeated to make one piece; one longer than
    /// [`MAX_PIECES`] pieces is cut off there; a last piece shorter than
    /// the rest is left out. `None` for an empty text.
    pub fn from_text(text: &[u8], mode: Mode, size: usize) -> Option<Payloads> {
        if text.is_empty() || size == 0 {
            return None;
        }
        let repeated;
        let text = if text.len() < size {
            repeated = text.repeat(size.div_ceil(text.len()));
            &repeated[..]
        } else {
            text
        };
        let mut requests = Vec::new();
        let mut rest = text;
        while !rest.is_empty() && requests.len() < MAX_PIECES {
            let Some(end) = piece_end(rest, size) else {
                break;
            };
            requests.push(rest[..end].to_vec());
            rest = &rest[end..];
        }
        // A short last piece would weigh as much as a whole one in the
        // figures per message.
        if requests.len() > 1 && requests.last().is_some_and(|r| r.len() + 3 < size) {
            requests.pop();
        }
        if requests.is_empty() {
            return None;
        }
        Some(Payloads::with_replies(mode, requests))
    }

    /// The one place expected replies are made: [`upcase`] in the
    /// server's mode.
    fn with_replies(mode: Mode, requests: Vec<Vec<u8>>) -> Payloads {
        let replies = requests.iter().map(|r| upcase(mode, r)).collect();
        Payloads { requests, replies }
    }

    /// How many different requests there are.
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Always false: every constructor makes at least one request.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// Request number `variant` (taken modulo [`Payloads::len`]).
    pub fn request(&self, variant: usize) -> &[u8] {
        &self.requests[variant % self.requests.len()]
    }

    /// The reply request number `variant` must get.
    pub fn reply(&self, variant: usize) -> &[u8] {
        &self.replies[variant % self.replies.len()]
    }
}

/// Where the piece at the start of `rest` ends: at `size` bytes (or the end
/// of `rest`), or earlier where that would be inside a UTF-8 character (at
/// most 3 bytes earlier in valid UTF-8; in invalid bytes a run of lead
/// bytes can take it further); if there is no such end up to there, at the
/// first one after. `None` if `rest` has none (it is one incomplete
/// character).
fn piece_end(rest: &[u8], size: usize) -> Option<usize> {
    let end = size.min(rest.len());
    (1..=end)
        .rev()
        .chain(end + 1..=rest.len().min(end + 3))
        .find(|&e| !ends_incomplete(&rest[..e]))
}

/// Whether `bytes` ends with the start of a UTF-8 character whose other
/// bytes have not come: what a streaming decoder (the server's unicode
/// mode) keeps back. Decided with std alone, not with the code under test.
/// A byte that is not a continuation byte (`10xxxxxx`) always starts a new
/// sequence, and an incomplete one is at most 3 bytes long, so the last such
/// byte among the last 3 decides.
pub fn ends_incomplete(bytes: &[u8]) -> bool {
    let from = bytes.len().saturating_sub(3);
    let Some(start) = (from..bytes.len()).rev().find(|&i| bytes[i] & 0xc0 != 0x80) else {
        return false;
    };
    matches!(std::str::from_utf8(&bytes[start..]), Err(e) if e.error_len().is_none())
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
    fn incomplete_tails_are_what_std_says_needs_more_bytes() {
        for (bytes, incomplete) in [
            (&b""[..], false),
            (b"abc", false),
            (b"a\xc3", true),
            ("aé".as_bytes(), false),
            (b"\xe4\xb8", true),
            (b"\xf0\x9f\x98", true),
            ("😀".as_bytes(), false),
            (b"\xf0\x9f\x98\x80\x80", false),
            // Invalid at once: a surrogate's start, an overlong lead, a
            // lone continuation byte.
            (b"\xed\xa0", false),
            (b"\xc0", false),
            (b"\x80", false),
            (b"\xe4a", false),
        ] {
            assert_eq!(ends_incomplete(bytes), incomplete, "{bytes:x?}");
        }
    }

    /// The bytes a streaming server in `mode` answers to `pieces` sent one
    /// after the other, and whether it held anything back after any piece.
    fn streamed(mode: Mode, pieces: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut upcaser = crate::transform::Upcaser::new(mode);
        let mut out = Vec::new();
        let mut held = false;
        for piece in pieces {
            upcaser.feed(piece, &mut out);
            held |= upcaser.carried() > 0;
        }
        upcaser.finish(&mut out);
        (out, held)
    }

    #[test]
    fn text_pieces_are_whole_for_a_streaming_server_in_both_modes() {
        let mut mixed = Vec::new();
        for i in 0..3000u32 {
            let c = ['a', 'é', '東', '😀', 'ß', 'ΐ'][(i % 7 % 6) as usize];
            mixed.extend_from_slice(c.to_string().as_bytes());
            if i % 97 == 0 {
                // A truncated character and a lone continuation byte.
                mixed.extend_from_slice(b"\xe4\xb8a\x80");
            }
        }
        let texts: [&[u8]; 4] = [
            include_bytes!("../../bench/corpora/russian.txt"),
            include_bytes!("../../bench/corpora/emoji-chat.txt"),
            include_bytes!("../../bench/corpora/invalid-gzip.bin"),
            &mixed,
        ];
        for text in texts {
            for size in [1, 2, 5, 64, 4096] {
                for mode in [Mode::Unicode, Mode::Ascii] {
                    let p = Payloads::from_text(text, mode, size).unwrap();
                    let pieces: Vec<&[u8]> = (0..p.len()).map(|v| p.request(v)).collect();
                    let joined = pieces.concat();
                    assert!(text.starts_with(&joined), "{size}: consecutive pieces");
                    for piece in &pieces {
                        assert!(!piece.is_empty());
                        // Valid UTF-8 is cut at most 3 bytes short; a
                        // run of lead bytes in invalid bytes can take more.
                        if std::str::from_utf8(text).is_ok() && size >= 4 {
                            assert!(piece.len() <= size && piece.len() + 3 >= size);
                        } else if size >= 64 {
                            assert!(piece.len() <= size);
                        }
                    }
                    let (got, held) = streamed(mode, &pieces);
                    assert!(!held, "{size} {mode}: a piece ends inside a character");
                    let want: Vec<u8> = (0..p.len()).flat_map(|v| p.reply(v).to_vec()).collect();
                    assert_eq!(got, want, "{size} {mode}");
                }
            }
        }
        let p = Payloads::from_text(
            include_bytes!("../../bench/corpora/english.txt"),
            Mode::Unicode,
            4096,
        )
        .unwrap();
        assert_eq!(p.len(), 16);
    }

    /// bench/corpora/bench-utf8.txt is this generator's first 16 requests
    /// of 4 KiB (`bench/corpora/make` redoes it in Python), so the
    /// transform's benchmark measures the bytes the `mode:` cell sends.
    #[test]
    fn bench_utf8_corpus_is_the_generated_payload() {
        let want: Vec<u8> = (0..16)
            .flat_map(|v| generate(PayloadKind::Utf8, 4096, v))
            .collect();
        let corpus: &[u8] = include_bytes!("../../bench/corpora/bench-utf8.txt");
        assert!(
            corpus == want.as_slice(),
            "regenerate with bench/corpora/make"
        );
    }

    #[test]
    fn short_texts_repeat_and_empty_ones_are_refused() {
        let p = Payloads::from_text("ab😀".as_bytes(), Mode::Unicode, 64).unwrap();
        assert_eq!(p.len(), 1);
        // 64 bytes would end inside the 11th emoji.
        assert_eq!(p.request(0), ("ab😀".repeat(10) + "ab").as_bytes());
        assert_eq!(p.reply(0), ("AB😀".repeat(10) + "AB").as_bytes());
        assert!(Payloads::from_text(b"", Mode::Unicode, 64).is_none());
        // Only an incomplete character: no piece a server would answer.
        assert!(Payloads::from_text(b"\xe4\xb8", Mode::Unicode, 1).is_none());
        // The same bytes checked against either mode.
        let text = "straße ǅ".as_bytes();
        let u = Payloads::from_text(text, Mode::Unicode, text.len()).unwrap();
        let a = Payloads::from_text(text, Mode::Ascii, text.len()).unwrap();
        assert_eq!(u.request(0), a.request(0));
        assert_eq!(u.reply(0), "STRASSE Ǆ".as_bytes());
        assert_eq!(a.reply(0), "STRAßE ǅ".as_bytes());
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
