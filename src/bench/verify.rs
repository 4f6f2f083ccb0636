//! Checking replies byte for byte, sans I/O: the socket code hands every
//! received piece to a [`StreamCheck`] (TCP) or [`check_datagram`] (UDP) and
//! acts on what they report.
//!
//! TCP replies are one byte stream, in request order, with no framing, and
//! the network may cut it anywhere: a piece can end in the middle of a reply
//! or hold the end of one and the start of the next. So a connection keeps
//! the queue of requests it has in flight, and each received byte is
//! compared with the next expected byte of the oldest one. A reply is
//! complete (and its latency taken) when its last byte arrives.

use std::collections::VecDeque;
use std::fmt;

use super::payload::Payloads;

/// How many bytes of context a mismatch shows on each side.
const WINDOW: usize = 24;

/// A reply byte that is not the expected one (or a byte that no request
/// asked for, or a datagram of the wrong length).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// Position of the first wrong byte in the connection's whole reply
    /// stream (TCP) or in the datagram (UDP), counted from 0.
    pub stream_offset: u64,
    /// Which reply it is: 0 for the first reply on the connection or flow.
    pub reply_index: u64,
    /// Position of the first wrong byte within that reply.
    pub reply_offset: usize,
    /// The bytes received, from a little before the wrong byte.
    pub got: Vec<u8>,
    /// The bytes expected, from the same position; empty if no reply was
    /// expected at all.
    pub want: Vec<u8>,
    /// How many bytes of `got` and `want` come before the wrong byte.
    pub context: usize,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let byte = |b: &[u8]| match b.get(self.context) {
            Some(v) => format!("0x{v:02x}"),
            None => "nothing".to_string(),
        };
        if self.want.is_empty() {
            return write!(
                f,
                "unexpected bytes at byte {} of the reply stream, after every reply was complete: got {}",
                self.stream_offset,
                show(&self.got)
            );
        }
        write!(
            f,
            "wrong byte at byte {} of the reply stream (byte {} of reply #{}): got {}, want {} \
             (text from {} bytes before: got {}, want {})",
            self.stream_offset,
            self.reply_offset,
            self.reply_index,
            byte(&self.got),
            byte(&self.want),
            self.context,
            show(&self.got),
            show(&self.want),
        )
    }
}

/// Bytes as a quoted, escaped string: readable for text, exact for binary.
fn show(bytes: &[u8]) -> String {
    let mut s = String::from("\"");
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            s.extend(c.escape_debug());
        }
        for b in chunk.invalid() {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s.push('"');
    s
}

/// One request in flight on a connection.
struct InFlight<T> {
    /// Which payload variant was sent (selects the expected reply).
    variant: usize,
    /// Whatever the caller wants back when the reply completes (the send
    /// time, for latency).
    tag: T,
}

/// The reply stream of one TCP connection, checked as it arrives.
pub struct StreamCheck<T> {
    /// Requests sent (or being sent) whose replies are not complete, oldest
    /// first.
    in_flight: VecDeque<InFlight<T>>,
    /// How many bytes of the oldest reply have arrived (and matched).
    head_offset: usize,
    /// Bytes received on the connection so far.
    received: u64,
    /// Replies completed so far.
    completed: u64,
}

impl<T> Default for StreamCheck<T> {
    fn default() -> Self {
        StreamCheck {
            in_flight: VecDeque::new(),
            head_offset: 0,
            received: 0,
            completed: 0,
        }
    }
}

impl<T> StreamCheck<T> {
    /// Notes that request `variant` was sent, after every earlier one.
    pub fn expect(&mut self, variant: usize, tag: T) {
        self.in_flight.push_back(InFlight { variant, tag });
    }

    /// Replies still awaited.
    pub fn pending(&self) -> usize {
        self.in_flight.len()
    }

    /// Replies completed so far.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// Checks the next piece of the reply stream. Calls `done(tag)` for
    /// every reply whose last byte is in `data`, in order. On the first
    /// wrong byte it stops and reports it; the stream cannot be trusted
    /// after that, so the caller closes the connection.
    pub fn check(
        &mut self,
        payloads: &Payloads,
        mut data: &[u8],
        mut done: impl FnMut(T),
    ) -> Result<(), Mismatch> {
        while !data.is_empty() {
            let Some(head) = self.in_flight.front() else {
                return Err(Mismatch {
                    stream_offset: self.received,
                    reply_index: self.completed,
                    reply_offset: 0,
                    got: data[..data.len().min(WINDOW)].to_vec(),
                    want: Vec::new(),
                    context: 0,
                });
            };
            let want = &payloads.reply(head.variant)[self.head_offset..];
            let n = want.len().min(data.len());
            if want[..n] != data[..n] {
                let at = want[..n]
                    .iter()
                    .zip(&data[..n])
                    .position(|(w, g)| w != g)
                    .unwrap_or(0);
                let reply = payloads.reply(head.variant);
                let reply_offset = self.head_offset + at;
                // Context before the wrong byte comes from the expected
                // reply: up to the wrong byte, got and want are equal.
                let context = reply_offset.min(WINDOW);
                let before = &reply[reply_offset - context..reply_offset];
                let mut got = before.to_vec();
                got.extend_from_slice(&data[at..data.len().min(at + WINDOW)]);
                let mut want = before.to_vec();
                want.extend_from_slice(
                    &reply[reply_offset..reply.len().min(reply_offset + WINDOW)],
                );
                return Err(Mismatch {
                    stream_offset: self.received + at as u64,
                    reply_index: self.completed,
                    reply_offset,
                    got,
                    want,
                    context,
                });
            }
            self.received += n as u64;
            data = &data[n..];
            if n == want.len() {
                self.head_offset = 0;
                self.completed += 1;
                if let Some(head) = self.in_flight.pop_front() {
                    done(head.tag);
                }
            } else {
                self.head_offset += n;
            }
        }
        Ok(())
    }
}

/// Compares a whole reply datagram with the expected one (`reply_index`
/// only labels the report).
pub fn check_datagram(got: &[u8], want: &[u8], reply_index: u64) -> Result<(), Mismatch> {
    if got == want {
        return Ok(());
    }
    // A datagram that is a prefix of the other differs at the shorter length.
    let at = got
        .iter()
        .zip(want)
        .position(|(g, w)| g != w)
        .unwrap_or(got.len().min(want.len()));
    let context = at.min(WINDOW);
    Err(Mismatch {
        stream_offset: at as u64,
        reply_index,
        reply_offset: at,
        got: got[at - context..got.len().min(at + WINDOW)].to_vec(),
        want: want[at - context..want.len().min(at + WINDOW)].to_vec(),
        context,
    })
}

#[cfg(test)]
mod tests {
    use super::super::payload::PayloadKind;
    use super::*;

    fn stream(p: &Payloads, variants: &[usize]) -> Vec<u8> {
        variants.iter().flat_map(|&v| p.reply(v).to_vec()).collect()
    }

    #[test]
    fn a_correct_stream_passes_however_it_is_cut() {
        for kind in [PayloadKind::Ascii, PayloadKind::Utf8, PayloadKind::Binary] {
            let p = Payloads::new(kind, 100);
            let all = stream(&p, &[0, 1, 2, 3]);
            for cut in [1, 7, 99, 100, 101, 250, all.len()] {
                let mut check = StreamCheck::default();
                for v in 0..4 {
                    check.expect(v, v);
                }
                let mut done = Vec::new();
                for piece in all.chunks(cut) {
                    check.check(&p, piece, |t| done.push(t)).unwrap();
                }
                assert_eq!(done, vec![0, 1, 2, 3], "{kind} cut {cut}");
                assert_eq!(check.pending(), 0);
            }
        }
    }

    #[test]
    fn an_echo_is_caught_at_the_first_lower_case_letter() {
        let p = Payloads::new(PayloadKind::Ascii, 64);
        let mut check = StreamCheck::default();
        check.expect(0, ());
        let echo = p.request(0).to_vec();
        let first = echo.iter().position(u8::is_ascii_lowercase).unwrap();
        let err = check.check(&p, &echo, |_| {}).unwrap_err();
        assert_eq!(err.stream_offset, first as u64);
        assert_eq!(err.reply_offset, first);
        assert_eq!(err.got[err.context], echo[first]);
        assert_eq!(err.want[err.context], echo[first].to_ascii_uppercase());
        let text = err.to_string();
        assert!(
            text.contains(&format!("wrong byte at byte {first}")),
            "{text}"
        );
    }

    #[test]
    fn a_wrong_byte_in_a_later_reply_gives_its_stream_position() {
        let p = Payloads::new(PayloadKind::Utf8, 50);
        let mut check = StreamCheck::default();
        check.expect(0, ());
        check.expect(1, ());
        let mut bytes = stream(&p, &[0, 1]);
        let first_len = p.reply(0).len();
        bytes[first_len + 5] ^= 0x01;
        let err = check.check(&p, &bytes, |_| {}).unwrap_err();
        assert_eq!(err.stream_offset, (first_len + 5) as u64);
        assert_eq!((err.reply_index, err.reply_offset), (1, 5));
    }

    #[test]
    fn replies_out_of_order_or_extra_bytes_fail() {
        let p = Payloads::new(PayloadKind::Ascii, 64);
        let mut check = StreamCheck::default();
        check.expect(0, ());
        check.expect(1, ());
        assert!(check.check(&p, &stream(&p, &[1, 0]), |_| {}).is_err());

        let mut check = StreamCheck::default();
        check.expect(0, ());
        let mut bytes = stream(&p, &[0]);
        bytes.push(b'X');
        let err = check.check(&p, &bytes, |_| {}).unwrap_err();
        assert!(err.want.is_empty());
        assert_eq!(err.stream_offset, 64);
        assert!(err.to_string().contains("unexpected bytes at byte 64"));
    }

    #[test]
    fn datagrams_are_compared_whole() {
        assert!(check_datagram(b"ABC", b"ABC", 0).is_ok());
        let err = check_datagram(b"ABc", b"ABC", 3).unwrap_err();
        assert_eq!((err.stream_offset, err.reply_index), (2, 3));
        let err = check_datagram(b"AB", b"ABC", 0).unwrap_err();
        assert_eq!(err.stream_offset, 2);
        assert!(err.to_string().contains("got nothing, want 0x43"));
        assert!(show(b"\xff\xc3a\n").contains("\\xff\\xc3a\\n"));
    }
}
