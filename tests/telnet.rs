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
    config.tcp.telnet = upcase::telnet::Setting::On;
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
    // A DO in the middle of text is refused at its place; IAC IAC is a
    // 0xFF data byte, sent back escaped the same way.
    stream
        .write_all(&[b'a', IAC, DO, 5, b'b', IAC, IAC, b'\r', b'\n'])
        .unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        read_to_eof(&mut stream),
        [b'A', IAC, WONT, 5, b'B', IAC, IAC, b'\r', b'\n']
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
    // telnet = false: every byte is data (0xFF.. is not UTF-8 and passes
    // unchanged). This is what confuses PuTTY and why the filter exists.
    let mut config = loopback_config();
    config.tcp.telnet = upcase::telnet::Setting::Off;
    let server = InProcess::start(config);
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
    let sockets =
        "[tcp]\ntelnet = false\nlisten = [\"127.0.0.1:0\"]\n[udp]\nlisten = [\"127.0.0.1:0\"]\n";
    let config = TempFile::new("telnet-reload.toml", sockets);
    let daemon = Daemon::start(&["-c", config.path()], 2);
    let addr = daemon.tcp[0];
    let request = [IAC, DO, 1, b'o', b'k'];
    assert_eq!(round_trip(addr, &request), [IAC, DO, 1, b'O', b'K']);
    // A connection opened before the reload keeps what it started with.
    // Opened means accepted by the daemon, which connect() returning does
    // not say: a loaded daemon could take it in after the reload. Its count
    // does (the round trip above was the first).
    let mut old = connect(addr);
    daemon.counters_until("accepted the old connection", |l| {
        l.contains(" accepted=2 ")
    });

    std::fs::write(
        &config.0,
        sockets.replace("telnet = false", "telnet = true"),
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    let line = daemon.wait_for_log("configuration reloaded");
    assert!(line.contains("telnet on"), "{line}");
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
                Piece::Data(d) | Piece::Raw(d) => {
                    filtered.extend_from_slice(d);
                    let start = out.len();
                    upcaser.feed(d, &mut out);
                    data.extend_from_slice(&out[start..]);
                }
                Piece::Reply(r) => out.extend_from_slice(&r),
                Piece::AreYouThere => out.extend_from_slice(b"<AYT>"),
                Piece::AbortOutput => out.extend_from_slice(b"<AO>"),
                Piece::EndOfInput => out.extend_from_slice(b"<EOF>"),
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
            3 => select(vec![IAC, DO, DONT, WILL, WONT, SB, SE, 1, 241, 246, 245, 236, b'\r', 0])
                .prop_map(|b| vec![b]),
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

/// Telnet's end-of-file command (RFC 854).
const EOF_CMD: u8 = 236;
/// Telnet's "are you there" command.
const AYT: u8 = 246;
/// Telnet's "abort output" command.
const AO: u8 = 245;
/// Telnet's "interrupt process" command.
const IP: u8 = 244;
/// Telnet's data mark.
const DM: u8 = 242;

#[test]
fn ff_in_replies_is_sent_as_iac_iac() {
    // The client escapes its 0xFF data bytes as IAC IAC; the replies carry
    // them escaped too, or the client reads `ff 42` as a command.
    let server = telnet_server(Mode::Unicode);
    let request = [b'a', IAC, IAC, IAC, IAC, b'b', b'\r', b'\n'];
    assert_eq!(
        round_trip(server.tcp, &request),
        [b'A', IAC, IAC, IAC, IAC, b'B', b'\r', b'\n']
    );
    // Ascii mode too, where output length otherwise equals input length.
    let server = telnet_server(Mode::Ascii);
    assert_eq!(round_trip(server.tcp, &[IAC, IAC, b'z']), [IAC, IAC, b'Z']);
}

#[test]
fn iac_eof_ends_the_input_like_a_half_close() {
    // plink -telnet with piped input sends IAC EOF at the end of its input
    // and no FIN: it waits for the server to close.
    let server = telnet_server(Mode::Unicode);
    let mut stream = connect(server.tcp);
    let mut request = b"abc \xc3".to_vec();
    request.extend_from_slice(&[0xa9, IAC, EOF_CMD]);
    request.extend_from_slice(b"not answered");
    stream.write_all(&request).unwrap();
    // Everything before the EOF is answered, then the server's FIN.
    assert_eq!(read_to_eof(&mut stream), "ABC É".as_bytes());
    stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(server.stop().closed_done, 1);
}

#[test]
fn are_you_there_gets_a_visible_answer_and_cr_nul_is_a_cr() {
    let server = telnet_server(Mode::Unicode);
    let mut stream = connect(server.tcp);
    stream.write_all(&[b'a', IAC, AYT]).unwrap();
    assert_eq!(read_exact(&mut stream, 10), b"A\r\n[Yes]\r\n");
    // RFC 854: a bare CR is sent as CR NUL; a NUL elsewhere is data.
    stream.write_all(b"x\r\0y\0z\r").unwrap();
    stream.write_all(b"\0w\r\n").unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut stream), b"X\rY\0Z\rW\r\n");
}

#[test]
fn abort_output_and_interrupt_mark_the_cut_with_a_data_mark() {
    // Whatever replies are still unsent when IAC AO (or IAC IP) arrives are
    // dropped; IAC DM marks the place in the stream. Replies already
    // handed to the kernel cannot be taken back, so what precedes the DM
    // is a prefix of the full answer.
    for command in [AO, IP] {
        let server = telnet_server(Mode::Ascii);
        let mut stream = connect(server.tcp);
        let mut request = vec![b'q'; 1 << 20];
        request.extend_from_slice(&[IAC, command]);
        request.extend_from_slice(b"after");
        request.extend_from_slice(&[IAC, EOF_CMD]);
        let writer = {
            let mut stream = stream.try_clone().unwrap();
            thread::spawn(move || stream.write_all(&request).unwrap())
        };
        let reply = read_to_eof(&mut stream);
        writer.join().unwrap();
        let cut = reply
            .windows(2)
            .position(|w| w == [IAC, DM])
            .unwrap_or_else(|| panic!("no IAC DM in {} bytes", reply.len()));
        assert!(cut <= 1 << 20);
        assert!(reply[..cut].iter().all(|&b| b == b'Q'));
        assert_eq!(&reply[cut..], [&[IAC, DM][..], b"AFTER"].concat());
    }
}

#[test]
fn a_command_inside_a_utf8_character_is_answered_before_the_character() {
    // `C3 IAC DO 1 A9`: the data stream, commands removed, is `é`. Its reply
    // must be `É` whole, never split by the refusal: the refusal goes out
    // at once (before the character, which is complete only at `A9`).
    let server = telnet_server(Mode::Unicode);
    let request = [0xC3, IAC, DO, 1, 0xA9, b'\n'];
    let mut want = vec![IAC, WONT, 1];
    want.extend_from_slice("É\n".as_bytes());
    assert_eq!(round_trip(server.tcp, &request), want);
}

#[test]
fn by_default_a_connection_that_opens_with_negotiation_is_telnet() {
    let server = InProcess::start(loopback_config());
    // PuTTY's first bytes: IAC WILL NAWS ...
    let request = [IAC, WILL, 31, IAC, DO, 1, b'h', b'i', IAC, IAC, b'\n'];
    assert_eq!(
        round_trip(server.tcp, &request),
        [IAC, DONT, 31, IAC, WONT, 1, b'H', b'I', IAC, IAC, b'\n']
    );
    // The verb may come in the next segment: sent once the daemon (the
    // real binary, with the same default) has read the lone IAC, which its
    // counters say; a 50 ms pause did not ensure that on a loaded machine.
    let daemon = Daemon::start(&LOOPBACK, 2);
    let mut stream = connect(daemon.tcp[0]);
    stream.set_nodelay(true).unwrap();
    stream.write_all(&[IAC]).unwrap();
    daemon.counters_until("read the IAC", |l| l.contains(" bytes in=1 "));
    stream.write_all(&[DO, 3, b'o', b'k']).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut stream), [IAC, WONT, 3, b'O', b'K']);
}

#[test]
fn by_default_any_other_first_byte_means_raw_bytes_for_good() {
    let server = InProcess::start(loopback_config());
    // nc, a binary client: later IACs are data, passed as they are.
    let request = [b'x', IAC, DO, 1, IAC, IAC, b'\r', 0];
    assert_eq!(
        round_trip(server.tcp, &request),
        [b'X', IAC, DO, 1, IAC, IAC, b'\r', 0]
    );
    // IAC first but no telnet verb after it: raw too.
    assert_eq!(round_trip(server.tcp, &[IAC, b'a']), [IAC, b'A']);
    assert_eq!(round_trip(server.tcp, &[IAC, IAC]), [IAC, IAC]);
    // A lone IAC and then EOF: the byte is owed, and comes back.
    assert_eq!(round_trip(server.tcp, &[IAC]), [IAC]);
}

/// Runs `plink -telnet` against `port` with `input` piped in; it must exit
/// by itself (within `PATIENCE`). Returns its stdout.
fn plink_piped(port: u16, input: &[u8]) -> Vec<u8> {
    use std::process::{Command, Stdio};
    let mut child = Command::new("plink")
        .args(["-telnet", "-batch", "-P", &port.to_string(), "127.0.0.1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn plink");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut out).unwrap();
        out
    });
    let deadline = std::time::Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("plink did not exit by itself within {PATIENCE:?}");
        }
        thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "plink: {status}");
    reader.join().unwrap()
}

fn daemon_with_telnet(setting: &str) -> (TempFile, Daemon) {
    Daemon::with_config(
        &format!("telnet-{}.toml", setting.trim_matches('"')),
        &format!("[tcp]\ntelnet = {setting}\n"),
    )
}

#[test]
fn plink_piped_exits_by_itself_and_ff_round_trips() {
    if !have_tool("plink") {
        return;
    }
    // (With telnet = false plink cannot finish: it ends piped input with
    // IAC EOF, never a FIN, and a raw service echoes that back; this is
    // why "auto" is the default.)
    for setting in ["true", "\"auto\""] {
        let (_config, daemon) = daemon_with_telnet(setting);
        let port = daemon.tcp[0].port();
        // A raw 0xFF byte (plink sends it as IAC IAC in telnet mode) must
        // come back as it went, and non-ASCII text upper-cased.
        assert_eq!(
            plink_piped(port, b"hello\nx\xffy\n"),
            b"HELLO\nX\xffY\n",
            "telnet = {setting}"
        );
        assert_eq!(
            plink_piped(port, "straße ÿ\n".as_bytes()),
            "STRASSE Ÿ\n".as_bytes(),
            "telnet = {setting}"
        );
    }
}

#[test]
fn plink_interactive_shows_clean_upper_case_lines() {
    if !have_tool("plink") || !have_tool("tmux") {
        return;
    }
    for setting in ["true", "\"auto\""] {
        let (_config, daemon) = daemon_with_telnet(setting);
        let port = daemon.tcp[0].port();
        let tmux = Tmux::start(
            "plink",
            &format!("plink -telnet -batch -P {port} 127.0.0.1"),
        );
        tmux.send_keys(&["hello world", "Enter"]);
        tmux.wait_for("HELLO WORLD");
        tmux.send_keys(&["Straße 2", "Enter"]);
        let screen = tmux.wait_for("STRASSE 2");
        let lines: Vec<&str> = screen.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines,
            ["hello world", "HELLO WORLD", "Straße 2", "STRASSE 2"],
            "telnet = {setting}; screen:\n{screen}"
        );
    }
}
