//! Telnet commands in a TCP stream: removed from the data, every option
//! request refused. Pure: bytes in, data and replies out; no sockets.
//!
//! BSD `telnet HOST PORT` sends no negotiation, but PuTTY's telnet mode (and
//! other clients) opens every connection with option requests such as
//! `IAC WILL NAWS` or `IAC DO ECHO` (RFC 854/855). A server that upper-cases
//! them and sends them back would look, to the client, like a server
//! negotiating on its own; the client answers, and the text on its screen is
//! mixed with negotiation. With `[tcp] telnet = true` the daemon runs each
//! connection's input through a [`Filter`] first:
//!
//! | input | data out | reply |
//! |---|---|---|
//! | `IAC IAC` | one `0xFF` data byte (the escape for a literal 0xFF) | |
//! | `IAC DO x` | | `IAC WONT x` |
//! | `IAC WILL x` | | `IAC DONT x` |
//! | `IAC WONT x`, `IAC DONT x` | | none: they confirm what we want, and answering them could loop |
//! | `IAC SB … IAC SE` | | none (we never agreed to an option, so there is nothing to read in it) |
//! | `IAC` + any other byte (`NOP`, `AYT`, `GA`, `IP`, …) | | none |
//!
//! Refusing every option is always allowed (RFC 854: either side may refuse
//! any request) and ends the negotiation at once: the client settles into the
//! plain "network virtual terminal" and sends only text. The replies come out
//! in order with the data, at the point where their request was.
//!
//! A command may be split anywhere across reads (`IAC` at the end of one, the
//! option in the next): the filter keeps that state between calls.

/// "Interpret as command": every telnet command starts with this byte.
pub const IAC: u8 = 255;
/// The sender refuses to perform, or stops performing, an option.
pub const DONT: u8 = 254;
/// The sender asks the other side to perform an option.
pub const DO: u8 = 253;
/// The sender refuses to perform, or stops performing, an option.
pub const WONT: u8 = 252;
/// The sender wants to perform an option.
pub const WILL: u8 = 251;
/// Start of a subnegotiation, ended by `IAC SE`.
pub const SB: u8 = 250;
/// End of a subnegotiation.
pub const SE: u8 = 240;

/// One piece of filtered output, in stream order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Data bytes, to be transformed and answered.
    Data(&'a [u8]),
    /// A refusal to send back to the client as it is (never transformed).
    Reply([u8; 3]),
}

/// Where the filter stands between two bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum State {
    /// Plain data.
    #[default]
    Data,
    /// After `IAC`.
    Iac,
    /// After `IAC` and a verb (`WILL`, `WONT`, `DO`, `DONT`): the option follows.
    Verb(u8),
    /// Inside `IAC SB …`.
    Sub,
    /// Inside a subnegotiation, after `IAC`.
    SubIac,
}

/// The telnet command filter of one connection; one byte of state.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Where the last call stopped (a command may span reads).
    state: State,
}

impl Filter {
    /// A filter at the start of a stream.
    pub fn new() -> Filter {
        Filter::default()
    }

    /// Splits `input` into data and refusals, calling `emit` for each piece in
    /// order. Data runs between commands come out as one slice each (a
    /// search for `IAC`, not a byte-by-byte loop).
    pub fn feed<'a>(&mut self, input: &'a [u8], mut emit: impl FnMut(Piece<'a>)) {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Data => {
                    let rest = &input[i..];
                    let Some(at) = rest.iter().position(|&b| b == IAC) else {
                        emit(Piece::Data(rest));
                        return;
                    };
                    if at > 0 {
                        emit(Piece::Data(&rest[..at]));
                    }
                    i += at + 1;
                    self.state = State::Iac;
                }
                State::Iac => {
                    let byte = input[i];
                    i += 1;
                    self.state = match byte {
                        IAC => {
                            // IAC IAC: the second one is a literal 0xFF.
                            emit(Piece::Data(&input[i - 1..i]));
                            State::Data
                        }
                        WILL | WONT | DO | DONT => State::Verb(byte),
                        SB => State::Sub,
                        // A two-byte command (NOP, AYT, GA, ...): dropped.
                        _ => State::Data,
                    };
                }
                State::Verb(verb) => {
                    let option = input[i];
                    i += 1;
                    match verb {
                        DO => emit(Piece::Reply([IAC, WONT, option])),
                        WILL => emit(Piece::Reply([IAC, DONT, option])),
                        _ => {}
                    }
                    self.state = State::Data;
                }
                State::Sub => match input[i..].iter().position(|&b| b == IAC) {
                    Some(at) => {
                        i += at + 1;
                        self.state = State::SubIac;
                    }
                    None => return,
                },
                State::SubIac => {
                    // Only IAC SE ends it; IAC IAC is an escaped data byte of
                    // the subnegotiation, dropped with the rest.
                    self.state = if input[i] == SE {
                        State::Data
                    } else {
                        State::Sub
                    };
                    i += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Data and replies, merged: what the client gets back (data not
    /// transformed, so the test sees exactly what was kept).
    fn run(filter: &mut Filter, input: &[u8], out: &mut Vec<u8>) {
        filter.feed(input, |piece| match piece {
            Piece::Data(d) => out.extend_from_slice(d),
            Piece::Reply(r) => out.extend_from_slice(&r),
        });
    }

    fn whole(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        run(&mut Filter::new(), input, &mut out);
        out
    }

    /// The same input split at every point, and byte by byte, gives the
    /// same output as in one piece.
    fn check(input: &[u8], want: &[u8]) {
        assert_eq!(whole(input), want, "whole");
        for split in 0..=input.len() {
            let (mut filter, mut out) = (Filter::new(), Vec::new());
            run(&mut filter, &input[..split], &mut out);
            run(&mut filter, &input[split..], &mut out);
            assert_eq!(out, want, "split at {split}");
        }
        let (mut filter, mut out) = (Filter::new(), Vec::new());
        for b in input {
            run(&mut filter, std::slice::from_ref(b), &mut out);
        }
        assert_eq!(out, want, "byte by byte");
    }

    #[test]
    fn plain_data_passes_in_one_piece() {
        let mut pieces = Vec::new();
        Filter::new().feed(b"hello\r\n", |p| pieces.push(p));
        assert_eq!(pieces, [Piece::Data(b"hello\r\n")]);
        check(b"", b"");
    }

    #[test]
    fn requests_are_refused_in_order() {
        check(
            &[b'a', IAC, DO, 1, b'b', IAC, WILL, 31, b'c'],
            &[b'a', IAC, WONT, 1, b'b', IAC, DONT, 31, b'c'],
        );
        let mut pieces = Vec::new();
        Filter::new().feed(&[b'x', IAC, DO, 3, b'y'], |p| pieces.push(p));
        assert_eq!(
            pieces,
            [
                Piece::Data(b"x"),
                Piece::Reply([IAC, WONT, 3]),
                Piece::Data(b"y")
            ]
        );
    }

    #[test]
    fn refusals_from_the_client_are_not_answered() {
        check(&[IAC, WONT, 1, IAC, DONT, 3, b'k'], b"k");
    }

    #[test]
    fn escaped_ff_is_one_data_byte() {
        check(&[b'a', IAC, IAC, b'b'], &[b'a', 0xFF, b'b']);
        check(&[IAC, IAC, IAC, IAC], &[0xFF, 0xFF]);
        // IAC IAC then a command: the pair is data, the third IAC a command.
        check(&[IAC, IAC, IAC, DO, 1], &[0xFF, IAC, WONT, 1]);
    }

    #[test]
    fn subnegotiation_is_dropped() {
        // IAC SB NAWS 0 80 0 24 IAC SE, with an escaped 0xFF inside.
        check(
            &[b'<', IAC, SB, 31, 0, 80, IAC, IAC, 0, 24, IAC, SE, b'>'],
            b"<>",
        );
        // An SE without IAC inside does not end it.
        check(&[IAC, SB, 24, SE, 1, IAC, SE, b'z'], b"z");
        // A request inside a subnegotiation is part of it.
        check(&[IAC, SB, 1, IAC, DO, 1, IAC, SE], b"");
    }

    #[test]
    fn two_byte_commands_are_dropped() {
        // NOP, DM, BRK, IP, AO, AYT, EC, EL, GA, and a stray SE.
        for command in [241, 242, 243, 244, 245, 246, 247, 248, 249, SE] {
            check(&[b'a', IAC, command, b'b'], b"ab");
        }
    }

    #[test]
    fn putty_opening_negotiation() {
        let mut input = vec![
            IAC, WILL, 31, // NAWS
            IAC, WILL, 32, // TERMINAL-SPEED
            IAC, WILL, 24, // TERMINAL-TYPE
            IAC, WILL, 39, // NEW-ENVIRON
            IAC, DO, 1, // ECHO
            IAC, WILL, 3, // SUPPRESS-GO-AHEAD
            IAC, DO, 3, // SUPPRESS-GO-AHEAD
        ];
        input.extend_from_slice(b"hello\r\n");
        let want = [
            IAC, DONT, 31, IAC, DONT, 32, IAC, DONT, 24, IAC, DONT, 39, IAC, WONT, 1, IAC, DONT, 3,
            IAC, WONT, 3, b'h', b'e', b'l', b'l', b'o', b'\r', b'\n',
        ];
        check(&input, &want);
    }

    #[test]
    fn state_survives_any_number_of_calls() {
        let mut filter = Filter::new();
        let mut out = Vec::new();
        run(&mut filter, &[b'a', IAC], &mut out);
        run(&mut filter, &[DO], &mut out);
        run(&mut filter, &[], &mut out);
        run(&mut filter, &[34, b'b', IAC, SB], &mut out);
        run(&mut filter, &[1, 2, IAC], &mut out);
        run(&mut filter, &[SE, b'c'], &mut out);
        assert_eq!(out, [b'a', IAC, WONT, 34, b'b', b'c']);
    }
}
