//! Telnet commands in a TCP stream: removed from the data, every option
//! request refused, the few commands that mean something to a line service
//! acted on. Pure: bytes in, data and replies out; no sockets.
//!
//! BSD `telnet HOST PORT` sends no negotiation, but PuTTY's telnet mode (and
//! other clients) opens every connection with option requests such as
//! `IAC WILL NAWS` or `IAC DO ECHO` (RFC 854/855). A server that upper-cases
//! them and sends them back would look, to the client, like a server
//! negotiating on its own; the client answers, and the text on its screen is
//! mixed with negotiation. So each connection's input can go through a
//! [`Filter`] first (`[tcp] telnet`, see [`Setting`]):
//!
//! | input | data out | reply / action |
//! |---|---|---|
//! | `IAC IAC` | one `0xFF` data byte (the escape for a literal 0xFF) | |
//! | `IAC DO x` | | `IAC WONT x` |
//! | `IAC WILL x` | | `IAC DONT x` |
//! | `IAC WONT x`, `IAC DONT x` | | none: they confirm what we want, and answering them could loop |
//! | `IAC SB … IAC SE` | | none (we never agreed to an option, so there is nothing to read in it) |
//! | `IAC EOF` | | end of input, as a half-close: everything before it is answered, then the server closes; input after it is read and dropped ([`Piece::EndOfInput`]; plink sends it at the end of piped input, and never a FIN) |
//! | `IAC AYT` | | `\r\n[Yes]\r\n` ([`AYT_ANSWER`]); a second one with no data byte since the last answer gets none, so every answer costs the client at least 3 bytes |
//! | `IAC IP`, `IAC BRK`, `IAC AO`, `IAC ABORT` | | replies not yet handed to the kernel are dropped and `IAC DM` marks the cut ([`Piece::AbortOutput`]): RFC 854 asks a server to stop the output of the "process", and for a stream service the unsent replies are that output |
//! | `IAC DM`, `IAC NOP`, `IAC GA`, `IAC EC`, `IAC EL`, `IAC SUSP`, `IAC EOR`, any other | | none: no meaning here (EC and EL edit a line, and replies are streamed, never held as lines) |
//! | `CR NUL` | `CR` (RFC 854: a bare carriage return is sent as CR NUL) | |
//!
//! Refusing every option is always allowed (RFC 854: either side may refuse
//! any request) and ends the negotiation at once: the client settles into the
//! plain "network virtual terminal" and sends only text. The replies come out
//! in order with the data, at the point where their request was.
//!
//! Output: in telnet mode every `0xFF` data byte of a reply is sent as
//! `IAC IAC` ([`escape_iac`]), or the client would read it and the next byte
//! as a command. That doubles such bytes; with the answers to AYT, the growth
//! bound of a reply in telnet mode is [`max_growth`] (3) times the input,
//! plus one [`AYT_ANSWER`].
//!
//! A command may be split anywhere across reads (`IAC` at the end of one, the
//! option in the next): the filter keeps that state between calls. A command
//! inside a UTF-8 character (`C3 IAC DO 1 A9`) is answered at once; the
//! character, complete only at `A9`, follows whole (`IAC WONT 1`, `É`): the
//! data stream is never cut by a reply.
//!
//! Urgent data (the TCP half of RFC 854's "Synch", sent by telnet clients on
//! Ctrl-C) is read inline (`SO_OOBINLINE`): the urgent byte is the `DM` of
//! the `IAC DM` that follows the client's `IAC IP`, dropped like any `DM`.
//! The data before it is not discarded: it has been answered already, as it
//! arrived.

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
/// Go ahead.
pub const GA: u8 = 249;
/// Erase line.
pub const EL: u8 = 248;
/// Erase character.
pub const EC: u8 = 247;
/// Are you there.
pub const AYT: u8 = 246;
/// Abort output.
pub const AO: u8 = 245;
/// Interrupt process.
pub const IP: u8 = 244;
/// Break.
pub const BRK: u8 = 243;
/// Data mark: where a Synch's discarding ends.
pub const DM: u8 = 242;
/// No operation.
pub const NOP: u8 = 241;
/// End of a subnegotiation.
pub const SE: u8 = 240;
/// Abort process (RFC 1184).
pub const ABORT: u8 = 238;
/// End of file (RFC 1184): the client has no more input.
pub const EOF: u8 = 236;

/// What the server answers to `IAC AYT`: visible text, on a line of its own.
pub const AYT_ANSWER: &[u8] = b"\r\n[Yes]\r\n";

/// The marker put where [`Piece::AbortOutput`] cut the replies.
pub const DATA_MARK: [u8; 2] = [IAC, DM];

const CR: u8 = b'\r';

/// When a connection gets the telnet filter (`[tcp] telnet`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Setting {
    /// Decided by the client's first bytes: `IAC` and a verb (`WILL`,
    /// `WONT`, `DO`, `DONT`, `SB`) make it a telnet client, filtered from
    /// then on; any other first byte means raw bytes for good (so `nc`,
    /// binary clients and ascii mode are unaffected). The default.
    #[default]
    Auto,
    /// Every connection is a telnet client (`true`).
    On,
    /// No connection is (`false`): every byte is data.
    Off,
}

impl Setting {
    /// As written in the config file: `"auto"`, `true`, `false`.
    pub fn as_toml(self) -> &'static str {
        match self {
            Setting::Auto => "\"auto\"",
            Setting::On => "true",
            Setting::Off => "false",
        }
    }

    /// The filter a new connection starts with, if any.
    pub fn filter(self) -> Option<Filter> {
        match self {
            Setting::Auto => Some(Filter::auto()),
            Setting::On => Some(Filter::new()),
            Setting::Off => None,
        }
    }
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Setting::Auto => "auto",
            Setting::On => "on",
            Setting::Off => "off",
        })
    }
}

/// Largest number of reply bytes one input byte can give in telnet mode,
/// whatever the transform's mode, one [`AYT_ANSWER`] aside: unicode's
/// worst case is 3, a doubled 0xFF is 2, and an answered AYT is 9 bytes for
/// at least 3 (a data byte, then `IAC AYT`).
pub const fn max_growth() -> usize {
    3
}

/// Doubles every 0xFF in `out[from..]`, in place: the telnet escape for a
/// literal 0xFF data byte. Costs one scan when there is none (the usual case).
pub fn escape_iac(out: &mut Vec<u8>, from: usize) {
    let Some(first) = out[from..].iter().position(|&b| b == IAC) else {
        return;
    };
    let tail = out.split_off(from + first);
    for &b in &tail {
        out.push(b);
        if b == IAC {
            out.push(IAC);
        }
    }
}

/// One piece of filtered output, in stream order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Data bytes of a telnet client, to be transformed, escaped
    /// ([`escape_iac`]) and answered.
    Data(&'a [u8]),
    /// Bytes of a connection that turned out not to be telnet (`auto`):
    /// transformed and answered as they are, and so is everything after.
    Raw(&'a [u8]),
    /// A refusal to send back to the client as it is (never transformed).
    Reply([u8; 3]),
    /// `IAC AYT`: send [`AYT_ANSWER`].
    AreYouThere,
    /// `IAC IP`, `BRK`, `AO` or `ABORT`: drop the replies not yet sent and
    /// put [`DATA_MARK`] where they were cut.
    AbortOutput,
    /// `IAC EOF`: the client's end of input. Nothing after it is emitted.
    EndOfInput,
}

/// Where the filter stands between two bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum State {
    /// `auto`: nothing received yet.
    Undecided,
    /// `auto`: the first byte was `IAC`, the second decides.
    FirstIac,
    /// Not a telnet client: every byte is raw data.
    Raw,
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
    /// After `IAC EOF`: the input has ended.
    Ended,
}

/// The telnet command filter of one connection; two bytes of state.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Where the last call stopped (a command may span reads).
    state: State,
    /// The last data byte was a CR: a NUL right after it is dropped.
    after_cr: bool,
    /// An AYT was answered and no data byte has come since: another AYT
    /// now gets no answer.
    ayt_answered: bool,
}

impl Filter {
    /// A filter for a telnet client (`telnet = true`).
    pub fn new() -> Filter {
        Filter::default()
    }

    /// A filter that first decides whether the client speaks telnet
    /// (`telnet = "auto"`).
    pub fn auto() -> Filter {
        Filter {
            state: State::Undecided,
            ..Filter::default()
        }
    }

    /// The filter's whole state in three bytes (where it stands, the verb
    /// of a command cut after it, the two flags), for a restart that hands
    /// the connection to the next process (see `server::handover`).
    pub fn to_bytes(&self) -> [u8; 3] {
        let (tag, verb) = match self.state {
            State::Undecided => (0, 0),
            State::FirstIac => (1, 0),
            State::Raw => (2, 0),
            State::Data => (3, 0),
            State::Iac => (4, 0),
            State::Verb(verb) => (5, verb),
            State::Sub => (6, 0),
            State::SubIac => (7, 0),
            State::Ended => (8, 0),
        };
        let flags = u8::from(self.after_cr) | u8::from(self.ayt_answered) << 1;
        [tag, verb, flags]
    }

    /// The filter [`to_bytes`](Filter::to_bytes) described; `None` for
    /// bytes it never writes.
    pub fn from_bytes([tag, verb, flags]: [u8; 3]) -> Option<Filter> {
        let state = match (tag, verb) {
            (0, 0) => State::Undecided,
            (1, 0) => State::FirstIac,
            (2, 0) => State::Raw,
            (3, 0) => State::Data,
            (4, 0) => State::Iac,
            (5, WILL | WONT | DO | DONT) => State::Verb(verb),
            (6, 0) => State::Sub,
            (7, 0) => State::SubIac,
            (8, 0) => State::Ended,
            _ => return None,
        };
        if flags > 3 {
            return None;
        }
        Some(Filter {
            state,
            after_cr: flags & 1 != 0,
            ayt_answered: flags & 2 != 0,
        })
    }

    /// An undecided (`auto`) filter whose next input starts with `first`
    /// that is not `IAC`: the client does not speak telnet, and `feed`
    /// would pass every byte through raw. The caller may drop the filter
    /// without feeding it (the first read of most connections).
    pub fn turns_raw(&self, first: u8) -> bool {
        self.state == State::Undecided && first != IAC
    }

    /// The client turned out not to speak telnet: the filter only passes
    /// bytes through from now on, and the caller may drop it.
    pub fn is_raw(&self) -> bool {
        self.state == State::Raw
    }

    /// The input ended (the client's EOF): emits what the filter held back,
    /// which is only ever the lone `IAC` of an undecided `auto` connection
    /// (a command cut by the EOF is dropped).
    pub fn finish<'a>(&mut self, mut emit: impl FnMut(Piece<'a>)) {
        if self.state == State::FirstIac {
            emit(Piece::Raw(&[IAC]));
            self.state = State::Raw;
        }
    }

    /// Splits `input` into data and commands, calling `emit` for each piece
    /// in order. Data runs between commands come out as one slice each (a
    /// search for `IAC`, not a byte-by-byte loop).
    pub fn feed<'a>(&mut self, input: &'a [u8], mut emit: impl FnMut(Piece<'a>)) {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Undecided => {
                    if input[i] != IAC {
                        self.state = State::Raw;
                    } else {
                        i += 1;
                        self.state = State::FirstIac;
                    }
                }
                State::FirstIac => {
                    if matches!(input[i], WILL | WONT | DO | DONT | SB) {
                        // A telnet client: the IAC starts its first command.
                        self.state = State::Iac;
                    } else {
                        emit(Piece::Raw(&[IAC]));
                        self.state = State::Raw;
                    }
                }
                State::Raw => {
                    emit(Piece::Raw(&input[i..]));
                    return;
                }
                State::Data => {
                    let rest = &input[i..];
                    if self.after_cr && rest[0] == 0 {
                        // CR NUL: the NUL only says the CR was bare.
                        self.after_cr = false;
                        i += 1;
                        continue;
                    }
                    let Some(at) = rest.iter().position(|&b| b == IAC || b == 0) else {
                        emit(Piece::Data(rest));
                        self.after_cr = rest.last() == Some(&CR);
                        self.ayt_answered = false;
                        return;
                    };
                    if at > 0 {
                        emit(Piece::Data(&rest[..at]));
                        self.ayt_answered = false;
                    }
                    self.after_cr = false;
                    if rest[at] == IAC {
                        self.state = State::Iac;
                    } else if at == 0 || rest[at - 1] != CR {
                        // A NUL that follows no CR is data.
                        emit(Piece::Data(&rest[at..=at]));
                        self.ayt_answered = false;
                    }
                    i += at + 1;
                }
                State::Iac => {
                    let byte = input[i];
                    i += 1;
                    self.state = State::Data;
                    match byte {
                        IAC => {
                            // IAC IAC: the second one is a literal 0xFF.
                            emit(Piece::Data(&input[i - 1..i]));
                            self.ayt_answered = false;
                        }
                        WILL | WONT | DO | DONT => self.state = State::Verb(byte),
                        SB => self.state = State::Sub,
                        AYT if !self.ayt_answered => {
                            self.ayt_answered = true;
                            emit(Piece::AreYouThere);
                        }
                        IP | BRK | AO | ABORT => emit(Piece::AbortOutput),
                        EOF => {
                            self.state = State::Ended;
                            emit(Piece::EndOfInput);
                            return;
                        }
                        // DM, NOP, GA, EC, EL, SUSP, EOR, a stray SE, an
                        // AYT with no data since the last answer: dropped.
                        _ => {}
                    }
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
                State::Ended => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Data and replies, merged: what the client gets back (data not
    /// transformed, so the test sees exactly what was kept; the actions as
    /// markers).
    fn run(filter: &mut Filter, input: &[u8], out: &mut Vec<u8>) {
        filter.feed(input, |piece| match piece {
            Piece::Data(d) | Piece::Raw(d) => out.extend_from_slice(d),
            Piece::Reply(r) => out.extend_from_slice(&r),
            Piece::AreYouThere => out.extend_from_slice(b"<AYT>"),
            Piece::AbortOutput => out.extend_from_slice(b"<AO>"),
            Piece::EndOfInput => out.extend_from_slice(b"<EOF>"),
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
    fn commands_without_meaning_here_are_dropped() {
        // NOP, DM, EC, EL, GA, SUSP, EOR, a stray SE.
        for command in [NOP, DM, EC, EL, GA, 237, 239, SE] {
            check(&[b'a', IAC, command, b'b'], b"ab");
        }
    }

    #[test]
    fn commands_that_act() {
        check(&[b'a', IAC, AYT, b'b'], b"a<AYT>b");
        for command in [IP, BRK, AO, ABORT] {
            check(&[b'a', IAC, command, b'b'], b"a<AO>b");
        }
        // Nothing after the end of input, in this read or any later one.
        check(&[b'a', IAC, EOF, b'b', IAC, DO, 1], b"a<EOF>");
    }

    #[test]
    fn are_you_there_is_answered_again_only_after_data() {
        check(
            &[
                IAC, AYT, IAC, AYT, IAC, NOP, IAC, AYT, b'x', IAC, AYT, IAC, AYT,
            ],
            b"<AYT>x<AYT>",
        );
        check(&[IAC, AYT, IAC, IAC, IAC, AYT], b"<AYT>\xff<AYT>");
    }

    #[test]
    fn cr_nul_is_a_cr_and_other_nuls_are_data() {
        check(b"a\r\0b", b"a\rb");
        check(b"\0a\0\r\r\0\0", b"\0a\0\r\r\0");
        check(b"\r\n\r\0", b"\r\n\r");
        // A command between CR and NUL: the NUL no longer follows the CR.
        check(&[b'\r', IAC, NOP, 0], &[b'\r', 0]);
    }

    /// `check` for an `auto` filter, with the lone IAC flushed at the end.
    fn check_auto(input: &[u8], want: &[u8]) {
        let all = |pieces: &[&[u8]]| {
            let (mut filter, mut out) = (Filter::auto(), Vec::new());
            for p in pieces {
                run(&mut filter, p, &mut out);
            }
            filter.finish(|p| match p {
                Piece::Raw(d) => out.extend_from_slice(d),
                other => panic!("{other:?} at finish"),
            });
            out
        };
        assert_eq!(all(&[input]), want, "whole");
        for split in 0..=input.len() {
            assert_eq!(
                all(&[&input[..split], &input[split..]]),
                want,
                "split at {split}"
            );
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(all(&bytes), want, "byte by byte");
    }

    #[test]
    fn turns_raw_is_what_feeding_the_first_byte_decides() {
        for first in 0..=u8::MAX {
            let mut filter = Filter::auto();
            let mut pieces = Vec::new();
            filter.feed(&[first, b'a'], |p| pieces.push(format!("{p:?}")));
            let raw = filter.is_raw() && pieces == [format!("{:?}", Piece::Raw(&[first, b'a']))];
            assert_eq!(
                Filter::auto().turns_raw(first),
                raw,
                "first byte {first:#04x}"
            );
            // Decided already (either way), or never undecided: no.
            assert!(!filter.turns_raw(first));
            assert!(!Filter::new().turns_raw(first));
        }
    }

    #[test]
    fn auto_is_telnet_only_for_iac_and_a_verb_first() {
        for verb in [WILL, WONT, DO, DONT] {
            let input = [IAC, verb, 1, b'x', IAC, IAC, IAC, DO, 3];
            let reply = match verb {
                WILL => &[IAC, DONT, 1][..],
                DO => &[IAC, WONT, 1][..],
                _ => &[][..],
            };
            check_auto(&input, &[reply, &[b'x', IAC, IAC, WONT, 3]].concat());
        }
        check_auto(&[IAC, SB, 31, 0, IAC, SE, b'k'], b"k");
        // Anything else first: raw for good, IACs and NULs included.
        check_auto(&[b'x', IAC, DO, 1, b'\r', 0], &[b'x', IAC, DO, 1, b'\r', 0]);
        check_auto(&[IAC, IAC, IAC, DO, 1], &[IAC, IAC, IAC, DO, 1]);
        check_auto(&[IAC, b'a'], &[IAC, b'a']);
        check_auto(&[IAC], &[IAC]);
        check_auto(&[], &[]);
        let mut filter = Filter::auto();
        filter.feed(b"hi", |_| {});
        assert!(filter.is_raw());
        let mut filter = Filter::auto();
        filter.feed(&[IAC, DO, 1], |_| {});
        assert!(!filter.is_raw());
    }

    #[test]
    fn escape_doubles_every_ff_after_the_start() {
        let mut out = vec![IAC, b'a'];
        escape_iac(&mut out, 2);
        assert_eq!(out, [IAC, b'a']);
        out.extend_from_slice(&[IAC, b'b', IAC, IAC]);
        escape_iac(&mut out, 2);
        assert_eq!(out, [IAC, b'a', IAC, IAC, b'b', IAC, IAC, IAC, IAC]);
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

    /// Every state survives the trip through three bytes, at every point
    /// of a stream full of commands; bytes the filter never writes are
    /// refused.
    #[test]
    fn the_state_survives_to_bytes_and_back_anywhere_in_a_stream() {
        let input: &[u8] =
            b"\xFF\xFD\x01ab\r\0c\xFF\xFA\x18\x01\xFF\xFF\xFF\xF0\xFF\xF6\xFF\xF6d\xFF\xEC";
        for start in [Filter::auto(), Filter::new()] {
            let (mut whole, mut want) = (start.clone(), Vec::new());
            run(&mut whole, input, &mut want);
            for cut in 0..=input.len() {
                let (mut first, mut out) = (start.clone(), Vec::new());
                run(&mut first, &input[..cut], &mut out);
                let mut second = Filter::from_bytes(first.to_bytes()).expect("valid");
                assert_eq!(second.to_bytes(), first.to_bytes());
                run(&mut second, &input[cut..], &mut out);
                assert_eq!(out, want, "cut at {cut}");
            }
        }
        for bad in [[9, 0, 0], [5, 0, 0], [5, b'a', 0], [3, 1, 0], [3, 0, 4]] {
            assert!(Filter::from_bytes(bad).is_none(), "{bad:?}");
        }
    }
}
