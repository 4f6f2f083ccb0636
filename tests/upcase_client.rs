//! The `upcase` client binary against real servers on loopback.

use std::net::{SocketAddr, UdpSocket};
use std::thread::JoinHandle;

use crate::util::*;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn client_tcp_piped_lines() {
    let server = InProcess::start(loopback_config());
    let out = run_client(
        &[&server.tcp.to_string()],
        "hello, straße\nsecond line\r\nno newline".as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "HELLO, STRASSE\nSECOND LINE\r\nNO NEWLINE"
    );
    assert_eq!(text(&out.stderr), "", "no prompt when piped");
}

#[test]
fn client_tcp_streams_megabytes_byte_for_byte() {
    // Far more than the socket buffers in both directions: a client that
    // sent everything before reading would deadlock here.
    let server = InProcess::start(loopback_config());
    let input = mixed_text(8 << 20);
    let out = run_client(&[&server.tcp.to_string()], &input);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_bytes_eq(&out.stdout, &expected(&input));
}

#[test]
fn client_resolves_host_names_and_ipv6() {
    let mut config = loopback_config();
    config.tcp.listen = vec!["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()];
    config.udp.listen = vec!["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()];
    let server = upcase::server::Server::bind(config).expect("bind");
    let (tcp, udp) = (server.tcp_addrs(), server.udp_addrs());
    let handle = server.handle();
    let thread = std::thread::spawn(move || server.run());
    let cases = [
        (vec![format!("localhost:{}", tcp[0].port())], "by name\n"),
        (vec![format!("[::1]:{}", tcp[1].port())], "over six\n"),
        (
            vec!["--udp".to_owned(), format!("localhost:{}", udp[0].port())],
            "udp by name\n",
        ),
        (
            vec!["--udp".to_owned(), format!("[::1]:{}", udp[1].port())],
            "udp over six\n",
        ),
    ];
    for (args, line) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_client(&args, line.as_bytes());
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stdout), line.to_uppercase(), "{args:?}");
    }
    handle.shutdown();
    thread.join().unwrap().unwrap();
}

#[test]
fn client_connection_refused_names_the_address() {
    let port = free_port();
    let out = run_client(&[&format!("127.0.0.1:{port}")], b"hello\n");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "upcase: cannot connect to 127.0.0.1:{port}: connection refused (is upcased running there?)\n"
        )
    );
    assert_eq!(out.stdout, b"");
}

#[test]
fn client_usage_errors_exit_2() {
    for args in [&["localhost"][..], &["--retries", "x"], &["--bogus"]] {
        let out = run_client(args, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let out = run_client(&["--help"], b"");
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    assert!(help.contains("Exit status:"), "{help}");
    assert!(help.contains("2  bad usage"), "{help}");
}

#[test]
fn client_udp_one_datagram_per_line() {
    let server = InProcess::start(loopback_config());
    // A try of 10 s, not the default 1 s: a reply a loaded machine delays
    // past the try would be asked for again, and the count of datagrams
    // below is the point.
    let out = run_client(
        &["--udp", "--timeout", "10s", &server.udp.to_string()],
        "hello\nstraße\r\n\nlast".as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "HELLO\nSTRASSE\r\n\nLAST");
    let counters = server.stop();
    assert_eq!(counters.dgrams_in, 4);
}

/// A UDP "server" that receives but never answers.
fn silent_server() -> (UdpSocket, SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

#[test]
fn client_udp_reports_each_lost_reply_and_fails() {
    let (silent, addr) = silent_server();
    let out = run_client(
        &[
            "--udp",
            "--timeout",
            "50ms",
            "--retries",
            "1",
            &addr.to_string(),
        ],
        b"one\ntwo\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(out.stdout, b"");
    assert_eq!(
        text(&out.stderr),
        format!(
            "upcase: line 1: no reply from udp://{addr} after 2 tries (50ms each)\n\
             upcase: line 2: no reply from udp://{addr} after 2 tries (50ms each)\n\
             upcase: no reply from udp://{addr} to 2 of 2 lines\n"
        )
    );
    // Each line was sent once and retried once.
    let mut buf = [0; 100];
    for want in [&b"one\n"[..], b"one\n", b"two\n", b"two\n"] {
        let (n, _) = silent.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], want);
    }
}

#[test]
fn client_udp_ignores_replies_from_other_addresses() {
    let (server, addr) = silent_server();
    let client = std::thread::spawn(move || {
        run_client(
            &[
                "--udp",
                "--timeout",
                "20s",
                "--retries",
                "0",
                &addr.to_string(),
            ],
            b"who\n",
        )
    });
    let mut buf = [0; 100];
    let (n, client_addr) = server.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"who\n");
    // A stranger answers first, to the client's very port.
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    stranger.send_to(b"BOGUS\n", client_addr).unwrap();
    server.send_to(b"WHO\n", client_addr).unwrap();
    let out = client.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(out.stdout, b"WHO\n");
}

/// A UDP "server" slower than the client's timeout, made deterministic: it
/// answers each datagram only when the next one arrives, so every reply
/// comes after the client has timed out and sent again (a retry, or the next
/// line). That is a server answering late, without a clock in the test. An
/// empty datagram stops it; the thread returns how many datagrams it got.
fn one_step_late_server() -> (SocketAddr, JoinHandle<usize>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let addr = socket.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        let mut buf = [0; 1000];
        let mut late: Option<Vec<u8>> = None;
        let mut received = 0;
        loop {
            let (n, from) = socket.recv_from(&mut buf).expect("a datagram in time");
            if n == 0 {
                return received;
            }
            received += 1;
            if let Some(reply) = late.take() {
                socket.send_to(&reply, from).unwrap();
            }
            late = Some(expected(&buf[..n]));
        }
    });
    (addr, thread)
}

#[test]
fn client_udp_never_prints_a_late_reply_as_the_next_lines() {
    // The case: a server slower than --timeout. Each line is sent,
    // times out, is sent again; then the first try's reply comes and the
    // retry's reply arrives only after the next line was sent.
    let (addr, server) = one_step_late_server();
    let out = run_client(
        &[
            "--udp",
            "--timeout",
            "200ms",
            "--retries",
            "9",
            &addr.to_string(),
        ],
        b"one\ntwo\nthree\nfour\nfive\nsix\n",
    );
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(b"", addr)
        .unwrap();
    let received = server.join().unwrap();
    assert_eq!(
        text(&out.stdout),
        "ONE\nTWO\nTHREE\nFOUR\nFIVE\nSIX\n",
        "stderr: {}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Lines 2 to 6 each met the previous line's late reply at least once;
    // at most every reply the server sent beyond the six answers.
    let stderr = text(&out.stderr);
    let dropped: usize = stderr
        .strip_prefix("upcase: ignored ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of ignored replies on stderr: {stderr:?}"));
    assert!(
        (5..=received - 7).contains(&dropped),
        "{dropped} ignored, {received} datagrams sent: {stderr:?}"
    );
    assert_eq!(
        stderr,
        format!(
            "upcase: ignored {dropped} late replies from udp://{addr} \
             (not the upper case of the line then awaiting one)\n"
        )
    );
}

#[test]
fn client_udp_against_an_ascii_mode_server_needs_mode_ascii() {
    let mut config = loopback_config();
    config.mode = upcase::transform::Mode::Ascii;
    let server = InProcess::start(config);
    let addr = server.udp.to_string();
    let out = run_client(&["--udp", "--mode", "ascii", &addr], "straße\n".as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "STRAßE\n");
    assert_eq!(text(&out.stderr), "");
    // Without it the reply ("STRAßE") is not the unicode upper case
    // ("STRASSE"): ignored, the line lost, and the hint says why. The
    // reply must arrive within the client's one try to be ignored and
    // counted: 2 s, not 100 ms, which a loaded machine's server thread
    // can miss (no "ignored" line, and the test failed).
    let out = run_client(
        &["--udp", "--timeout", "2s", "--retries", "0", &addr],
        "straße\n".as_bytes(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(out.stdout, b"");
    assert_eq!(
        text(&out.stderr),
        format!(
            "upcase: line 1: no reply from udp://{addr} after 1 try (2s)\n\
             upcase: ignored 1 late reply from udp://{addr} (not the upper case of the line then awaiting one)\n\
             upcase: if upcased runs with --mode ascii, pass --mode ascii to upcase too\n\
             upcase: no reply from udp://{addr} to 1 of 1 line\n"
        )
    );
}

#[test]
fn client_udp_line_too_long_for_a_datagram() {
    let (_silent, addr) = silent_server();
    // 65,507 bytes of text and the newline: one byte over the IPv4 limit.
    let mut input = vec![b'a'; 65_507];
    input.push(b'\n');
    let out = run_client(&["--udp", &addr.to_string()], &input);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("upcase: line 1 is 65508 bytes, more than one UDP datagram to {addr} can carry (65507 bytes); send it over TCP\n")
    );
}

#[test]
fn client_udp_nothing_listening_is_refused() {
    // No socket at all on the port: loopback answers with ICMP port
    // unreachable, which a connected UDP socket reports as refused.
    let port = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let out = run_client(
        &["--udp", "--timeout", "5s", &format!("127.0.0.1:{port}")],
        b"anyone?\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("upcase: no server at udp://127.0.0.1:{port}: connection refused (is upcased running there?)\n")
    );
}

#[test]
fn client_interactive_in_a_terminal() {
    if !have_tool("tmux") {
        return;
    }
    let server = InProcess::start(loopback_config());
    let command = format!(
        "{} {}; echo exit=$?; sleep 600",
        client_path().display(),
        server.tcp
    );
    let tmux = Tmux::start("interactive", &command);
    tmux.wait_for("Ctrl-D quits");
    tmux.send_keys(&["hello, straße", "Enter"]);
    tmux.wait_for("HELLO, STRASSE");
    tmux.send_keys(&["second", "Enter"]);
    tmux.wait_for("SECOND");
    tmux.send_keys(&["C-d"]);
    let screen = tmux.wait_for("exit=");
    let lines: Vec<&str> = screen.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines,
        [
            &*format!(
                "upcase: talking to {} over TCP; type a line, Ctrl-D quits",
                server.tcp
            ),
            "> hello, straße",
            "HELLO, STRASSE",
            "> second",
            "SECOND",
            // The last prompt, answered by Ctrl-D (tmux trims the space).
            ">",
            "exit=0",
        ],
        "{screen}"
    );
}

#[test]
fn client_reports_a_server_that_hangs_up_before_the_input_ends() {
    // A server that says goodbye at once and never reads: the client's
    // input (far more than the socket buffers hold) cannot all be sent.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        stream
    });
    let input = vec![b'x'; 64 << 20];
    let out = run_client(&[&addr.to_string()], &input);
    let _stream = server.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("upcase: {addr} closed the connection before the end of the input\n")
    );
}
