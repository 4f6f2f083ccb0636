//! The telnet filter: any bytes, cut into reads anywhere, never panic and
//! give the same data and refusals, in the same order, as the input fed
//! whole; that result is checked against a byte-at-a-time model of the
//! table in `src/telnet.rs`. Then the server's pipeline (filter, data
//! through an `Upcaser`, refusals raw, as in `server/conn.rs`): split
//! anywhere it gives the same bytes, and its data is the one-shot upcase
//! of the filtered data.

#![no_main]

use libfuzzer_sys::fuzz_target;
use upcase::telnet::{
    Filter, Piece, ABORT, AO, AYT, BRK, DO, DONT, EOF, IAC, IP, SB, SE, WILL, WONT,
};
use upcase::transform::{upcase, Mode, Upcaser};
use upcase_fuzz::{cuts_and_data, pieces};

/// What the filter produced, with adjacent data runs joined (how the data
/// is sliced depends on the reads; what it is must not).
#[derive(Debug, Default, PartialEq, Eq)]
struct Events(Vec<Event>);

#[derive(Debug, PartialEq, Eq)]
enum Event {
    Data(Vec<u8>),
    Reply([u8; 3]),
    AreYouThere,
    AbortOutput,
    EndOfInput,
}

impl Events {
    fn data(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        match self.0.last_mut() {
            Some(Event::Data(d)) => d.extend_from_slice(bytes),
            _ => self.0.push(Event::Data(bytes.to_vec())),
        }
    }

    fn reply(&mut self, reply: [u8; 3]) {
        self.0.push(Event::Reply(reply));
    }

    fn push(&mut self, event: Event) {
        self.0.push(event);
    }
}

fn filter(mut f: Filter, pieces: &[&[u8]]) -> Events {
    let mut events = Events::default();
    for piece in pieces {
        f.feed(piece, |p| match p {
            Piece::Data(d) | Piece::Raw(d) => {
                // Data is a part of this read's input (or the held IAC of an
                // undecided auto filter), never made up.
                assert!(!d.is_empty() && (d.len() <= piece.len() || d == [IAC]));
                events.data(d);
            }
            Piece::Reply(r) => events.reply(r),
            Piece::AreYouThere => events.push(Event::AreYouThere),
            Piece::AbortOutput => events.push(Event::AbortOutput),
            Piece::EndOfInput => events.push(Event::EndOfInput),
        });
    }
    f.finish(|p| match p {
        Piece::Raw(d) => events.data(d),
        other => panic!("{other:?} at finish"),
    });
    events
}

/// The table of `src/telnet.rs`, one byte at a time.
fn model(input: &[u8]) -> Events {
    #[derive(Clone, Copy)]
    enum S {
        Data,
        Iac,
        Verb(u8),
        Sub,
        SubIac,
        Ended,
    }
    let mut events = Events::default();
    let mut s = S::Data;
    // The last data byte was a CR (a NUL after it is dropped); an AYT was
    // answered with no data byte since (the next is not).
    let (mut after_cr, mut ayt_answered) = (false, false);
    for &b in input {
        s = match (s, b) {
            (S::Ended, _) => S::Ended,
            (S::Data, IAC) => {
                after_cr = false;
                S::Iac
            }
            (S::Data, 0) if after_cr => {
                after_cr = false;
                S::Data
            }
            (S::Data, _) => {
                events.data(&[b]);
                after_cr = b == b'\r';
                ayt_answered = false;
                S::Data
            }
            (S::Iac, IAC) => {
                events.data(&[IAC]);
                ayt_answered = false;
                S::Data
            }
            (S::Iac, WILL | WONT | DO | DONT) => S::Verb(b),
            (S::Iac, SB) => S::Sub,
            (S::Iac, AYT) => {
                if !ayt_answered {
                    events.push(Event::AreYouThere);
                    ayt_answered = true;
                }
                S::Data
            }
            (S::Iac, IP | BRK | AO | ABORT) => {
                events.push(Event::AbortOutput);
                S::Data
            }
            (S::Iac, EOF) => {
                events.push(Event::EndOfInput);
                S::Ended
            }
            (S::Iac, _) => S::Data,
            (S::Verb(DO), _) => {
                events.reply([IAC, WONT, b]);
                S::Data
            }
            (S::Verb(WILL), _) => {
                events.reply([IAC, DONT, b]);
                S::Data
            }
            (S::Verb(_), _) => S::Data,
            (S::Sub, IAC) => S::SubIac,
            (S::Sub, _) => S::Sub,
            (S::SubIac, SE) => S::Data,
            (S::SubIac, _) => S::Sub,
        };
    }
    events
}

/// The server's pipeline over `pieces`: the bytes sent back, and the
/// transformed data alone.
fn pipeline(mode: Mode, pieces: &[&[u8]]) -> (Vec<u8>, Vec<u8>) {
    let (mut f, mut u) = (Filter::new(), Upcaser::new(mode));
    let (mut out, mut data) = (Vec::new(), Vec::new());
    for piece in pieces {
        f.feed(piece, |p| match p {
            Piece::Data(d) | Piece::Raw(d) => {
                let start = out.len();
                u.feed(d, &mut out);
                data.extend_from_slice(&out[start..]);
            }
            Piece::Reply(r) => out.extend_from_slice(&r),
            Piece::AreYouThere => out.extend_from_slice(b"<AYT>"),
            Piece::AbortOutput => out.extend_from_slice(b"<AO>"),
            Piece::EndOfInput => out.extend_from_slice(b"<EOF>"),
        });
    }
    let start = out.len();
    u.finish(&mut out);
    data.extend_from_slice(&out[start..]);
    (out, data)
}

fuzz_target!(|input: &[u8]| {
    let (cuts, data) = cuts_and_data(input);
    let cut = pieces(data, &cuts);
    let bytes: Vec<&[u8]> = data.chunks(1).collect();

    let want = filter(Filter::new(), &[data]);
    assert_eq!(want, model(data), "whole vs model");
    assert_eq!(filter(Filter::new(), &cut), want, "cut at {cuts:?}");
    assert_eq!(filter(Filter::new(), &bytes), want, "byte by byte");

    // "auto": the same as a telnet filter if the input opens with IAC and a
    // verb, else every byte as it came; split anywhere, the same.
    let auto = filter(Filter::auto(), &[data]);
    let telnet_first = data.len() >= 2
        && data[0] == IAC
        && matches!(data[1], WILL | WONT | DO | DONT | SB);
    if telnet_first {
        assert_eq!(auto, want, "auto on a telnet client");
    } else {
        let mut raw = Events::default();
        raw.data(data);
        assert_eq!(auto, raw, "auto on raw bytes");
    }
    assert_eq!(filter(Filter::auto(), &cut), auto, "auto cut at {cuts:?}");
    assert_eq!(filter(Filter::auto(), &bytes), auto, "auto byte by byte");

    let filtered: Vec<u8> = want
        .0
        .iter()
        .flat_map(|e| match e {
            Event::Data(d) => d.as_slice(),
            _ => &[],
        })
        .copied()
        .collect();
    for mode in [Mode::Unicode, Mode::Ascii] {
        let (whole, whole_data) = pipeline(mode, &[data]);
        assert_eq!(whole_data, upcase(mode, &filtered), "{mode} data");
        assert_eq!(pipeline(mode, &cut).0, whole, "{mode} cut at {cuts:?}");
        assert_eq!(pipeline(mode, &bytes).0, whole, "{mode} byte by byte");
    }
});
