//! `[tcp] telnet = true`: what a negotiating telnet client (PuTTY) sends,
//! byte for byte, and what it must get back.

use std::io::Write;
use std::net::Shutdown;
use std::thread;

use upcase::telnet::{DO, DONT, IAC, SB, SE, WILL, WONT};
use upcase::transform::Mode;

use crate::util::*;

fn telnet_server(mode: Mode) -> InProcess {
    let mut config = loopback_config();
    config.tcp.telnet = true;
    config.mode = mode;
    InProcess::start(config)
}

#[test]
fn putty_negotiation_split_anywhere_is_refused_and_text_upcased() {
    let server = telnet_server(Mode::Unicode);
    let mut stream = connect(server.tcp);
    stream.set_nodelay(true).unwrap();
    // PuTTY's opening offers and requests, then a NAWS subnegotiation and a
    // line of text; each write ends in the middle of a command, and the
    // test waits for the replies to the write before, so the server's reads
    // really are split there (one write is one segment on loopback).
    let mut text = vec![SE];
    text.extend_from_slice("hello, straße".as_bytes());
    let steps: [(&[u8], &[u8]); 5] = [
        (
            &[IAC, WILL, 31, IAC, WILL, 32, IAC],
            &[IAC, DONT, 31, IAC, DONT, 32],
        ),
        (
            &[WILL, 24, IAC, WILL, 39, IAC, DO],
            &[IAC, DONT, 24, IAC, DONT, 39],
        ),
        (
            &[1, IAC, WILL, 3, IAC, DO, 3, IAC, WILL],
            &[IAC, WONT, 1, IAC, DONT, 3, IAC, WONT, 3],
        ),
        (&[34, IAC, SB, 31, 0, 80, 0, 24, IAC], &[IAC, DONT, 34]),
        (&text, "HELLO, STRASSE".as_bytes()),
    ];
    for (i, (send, want)) in steps.iter().enumerate() {
        stream.write_all(send).unwrap();
        assert_eq!(read_exact(&mut stream, want.len()), *want, "step {i}");
    }
    // A DO in the middle of text is refused at its place; IAC IAC is 0xFF.
    stream
        .write_all(&[b'a', IAC, DO, 5, b'b', IAC, IAC, b'\r', b'\n'])
        .unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        read_to_eof(&mut stream),
        [b'A', IAC, WONT, 5, b'B', 0xFF, b'\r', b'\n']
    );
}

#[test]
fn refusals_are_never_upcased() {
    // In ascii mode option 97 is the byte 'a': the refusal must carry it
    // unchanged, only the text around it is upper-cased.
    let server = telnet_server(Mode::Ascii);
    let request = [b'x', IAC, DO, b'a', IAC, WILL, b'z', b'y', b'\n'];
    assert_eq!(
        round_trip(server.tcp, &request),
        [b'X', IAC, WONT, b'a', IAC, DONT, b'z', b'Y', b'\n']
    );
}

#[test]
fn telnet_off_echoes_negotiation_as_data() {
    // The default: every byte is data (0xFF.. is not UTF-8 and passes
    // unchanged). This is what confuses PuTTY and why the option exists.
    let server = InProcess::start(loopback_config());
    let request = [IAC, DO, 1, b'h', b'i'];
    assert_eq!(round_trip(server.tcp, &request), [IAC, DO, 1, b'H', b'I']);
}

#[test]
fn many_negotiating_clients_at_once() {
    let server = telnet_server(Mode::Unicode);
    let addr = server.tcp;
    let clients: Vec<_> = (0..50)
        .map(|i| {
            thread::spawn(move || {
                let mut request = vec![IAC, WILL, 31, IAC, DO, 1];
                request.extend_from_slice(format!("client {i} ß\r\n").as_bytes());
                let mut want = vec![IAC, DONT, 31, IAC, WONT, 1];
                want.extend_from_slice(format!("CLIENT {i} SS\r\n").as_bytes());
                assert_eq!(round_trip(addr, &request), want);
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
}

#[test]
fn sighup_turns_telnet_on_for_new_connections() {
    let sockets = "[tcp]\nlisten = [\"127.0.0.1:0\"]\n[udp]\nlisten = [\"127.0.0.1:0\"]\n";
    let config = TempFile::new("telnet-reload.toml", sockets);
    let daemon = Daemon::start(&["-c", config.path()], 2);
    let addr = daemon.tcp[0];
    let request = [IAC, DO, 1, b'o', b'k'];
    assert_eq!(round_trip(addr, &request), [IAC, DO, 1, b'O', b'K']);
    // A connection opened before the reload keeps what it started with.
    let mut old = connect(addr);

    std::fs::write(
        &config.0,
        sockets.replace("[tcp]\n", "[tcp]\ntelnet = true\n"),
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    let line = daemon.wait_for_log("configuration reloaded");
    assert!(line.contains("telnet true"), "{line}");
    assert_eq!(round_trip(addr, &request), [IAC, WONT, 1, b'O', b'K']);

    old.write_all(&request).unwrap();
    old.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut old), [IAC, DO, 1, b'O', b'K']);
}

/// The filter alone, no sockets: random bytes rich in telnet commands and
/// UTF-8, cut into reads at random points, give what the same bytes give fed
/// whole (the property `fuzz/fuzz_targets/telnet.rs` fuzzes).
mod split_anywhere {
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::{select, Index};
    use upcase::telnet::{Filter, Piece, DO, DONT, IAC, SB, SE, WILL, WONT};
    use upcase::transform::{upcase, Mode, Upcaser};

    /// The server's pipeline (filter, data through the transform, refusals
    /// raw) over `pieces`: everything sent back, and the data part alone.
    fn pipeline(mode: Mode, pieces: &[&[u8]]) -> (Vec<u8>, Vec<u8>) {
        let (mut filter, mut upcaser) = (Filter::new(), Upcaser::new(mode));
        let (mut out, mut data, mut filtered) = (Vec::new(), Vec::new(), Vec::new());
        for piece in pieces {
            filter.feed(piece, |p| match p {
                Piece::Data(d) => {
                    filtered.extend_from_slice(d);
                    let start = out.len();
                    upcaser.feed(d, &mut out);
                    data.extend_from_slice(&out[start..]);
                }
                Piece::Reply(r) => out.extend_from_slice(&r),
            });
        }
        let start = out.len();
        upcaser.finish(&mut out);
        data.extend_from_slice(&out[start..]);
        assert_eq!(data, upcase(mode, &filtered));
        (out, filtered)
    }

    fn telnet_soup() -> impl Strategy<Value = Vec<u8>> {
        let token = prop_oneof![
            3 => select(vec![IAC, DO, DONT, WILL, WONT, SB, SE, 1, 241]).prop_map(|b| vec![b]),
            2 => any::<char>().prop_map(|c| c.to_string().into_bytes()),
            2 => vec(any::<u8>(), 1..4),
            1 => "[a-z ]{1,10}".prop_map(String::into_bytes),
        ];
        vec(token, 0..60).prop_map(|tokens| tokens.concat())
    }

    proptest! {
        #[test]
        fn same_as_fed_whole(bytes in telnet_soup(), cuts in vec(any::<Index>(), 0..10)) {
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut start = 0;
            for c in cuts {
                pieces.push(&bytes[start..c]);
                start = c;
            }
            pieces.push(&bytes[start..]);
            let one_by_one: Vec<&[u8]> = bytes.chunks(1).collect();
            for mode in [Mode::Unicode, Mode::Ascii] {
                let whole = pipeline(mode, &[&bytes]);
                prop_assert_eq!(&pipeline(mode, &pieces), &whole);
                prop_assert_eq!(&pipeline(mode, &one_by_one), &whole);
            }
        }
    }
}
