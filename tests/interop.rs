//! Real clients against the real binary: what a user types must work.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::util::*;

/// Runs `program args` with `input` on stdin; it must succeed. Returns
/// its stdout.
fn pipe_through(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let out = run_piped(Command::new(program).args(args), input);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs `program args`, writes `input` to it, and waits for `want` on its
/// stdout before closing its stdin; it must then exit by itself with
/// success, having printed exactly `want`. For datagram clients: after
/// the end of their input they wait a fixed time for replies (`nc -w1`,
/// socat's 0.5 s), so fed all at once they lose a reply slower than that
/// on a loaded machine; here the input ends only once the reply is in.
fn converse(program: &str, args: &[&str], input: &[u8], want: &[u8]) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + PATIENCE;
    let mut got = Vec::new();
    while got.len() < want.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(bytes) => got.extend_from_slice(&bytes),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{program} {args:?}: no reply ({e}); got {got:?}");
            }
        }
    }
    drop(stdin);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{program} {args:?} did not exit after the end of its input");
        }
        thread::sleep(Duration::from_millis(20));
    };
    reader.join().unwrap();
    got.extend(rx.try_iter().flatten());
    assert!(status.success(), "{program} {args:?} failed: {status}");
    assert_eq!(got, want, "{program} {args:?}");
}

#[test]
fn nc_over_tcp_with_half_close() {
    if !have_tool("nc") {
        return;
    }
    let daemon = Daemon::start(&LOOPBACK, 2);
    let port = daemon.tcp[0].port().to_string();
    assert_eq!(
        pipe_through("nc", &["-N", "127.0.0.1", &port], b"hello\n"),
        b"HELLO\n"
    );
    let big = mixed_text(1 << 20);
    let reply = pipe_through("nc", &["-N", "127.0.0.1", &port], &big);
    assert_bytes_eq(&reply, &expected(&big));
}

#[test]
fn nc_over_udp() {
    if !have_tool("nc") {
        return;
    }
    let daemon = Daemon::start(&LOOPBACK, 2);
    let port = daemon.udp[0].port().to_string();
    converse("nc", &["-u", "-w1", "127.0.0.1", &port], b"hello", b"HELLO");
}

#[test]
fn socat_over_tcp_and_udp() {
    if !have_tool("socat") {
        return;
    }
    let daemon = Daemon::start(&LOOPBACK, 2);
    let tcp = format!("TCP:{}", daemon.tcp[0]);
    assert_eq!(
        pipe_through("socat", &["-", &tcp], "grüße\n".as_bytes()),
        "GRÜSSE\n".as_bytes()
    );
    let udp = format!("UDP:{}", daemon.udp[0]);
    converse("socat", &["-", &udp], b"over udp\n", b"OVER UDP\n");
}

/// A one-connection TCP relay in front of `server` that records the bytes
/// going each way, so a test can check what a real client put on the wire.
struct Recorder {
    addr: SocketAddr,
    /// Joined when the client has gone: (client -> server, server -> client).
    done: JoinHandle<(Vec<u8>, Vec<u8>)>,
}

impl Recorder {
    fn start(server: SocketAddr) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let done = thread::spawn(move || {
            let (client, _) = listener.accept().expect("accept the client");
            let upstream = connect(server);
            let up = pump(client.try_clone().unwrap(), upstream.try_clone().unwrap());
            let down = pump(upstream, client);
            (up.join().unwrap(), down.join().unwrap())
        });
        Recorder { addr, done }
    }
}

/// Copies `from` to `to` until EOF (or an error: a client that quits may
/// reset), then half-closes `to`; returns what went through.
fn pump(mut from: TcpStream, mut to: TcpStream) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0; 4096];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            seen.extend_from_slice(&buf[..n]);
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
        seen
    })
}

#[test]
fn telnet_session_in_a_terminal() {
    if !have_tool("telnet") || !have_tool("tmux") {
        return;
    }
    let daemon = Daemon::start(&LOOPBACK, 2);
    // telnet talks to the daemon through a recorder, so the exact bytes of
    // the session (the CRLF that Enter sends in line mode) are checked, not
    // only what the screen shows.
    let recorder = Recorder::start(daemon.tcp[0]);
    let command = format!(
        "telnet 127.0.0.1 {}; echo exit=$?; sleep 600",
        recorder.addr.port()
    );
    let tmux = Tmux::start("telnet", &command);
    tmux.wait_for("Escape character is '^]'.");
    tmux.send_keys(&["hello there, straße", "Enter"]);
    tmux.wait_for("HELLO THERE, STRASSE");
    tmux.send_keys(&["C-]"]);
    tmux.wait_for("telnet>");
    tmux.send_keys(&["quit", "Enter"]);
    let screen = tmux.wait_for("exit=");
    let lines: Vec<&str> = screen.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines,
        [
            "Trying 127.0.0.1...",
            "Connected to 127.0.0.1.",
            "Escape character is '^]'.",
            "hello there, straße",
            "HELLO THERE, STRASSE",
            "^]",
            "telnet> quit",
            "Connection closed.",
            "exit=0",
        ],
        "{screen}"
    );
    let (sent, received) = recorder.done.join().unwrap();
    assert_eq!(sent, "hello there, straße\r\n".as_bytes(), "telnet's bytes");
    assert_eq!(
        received,
        "HELLO THERE, STRASSE\r\n".as_bytes(),
        "CRLF comes back as CRLF"
    );
}

/// Runs one of the textbook's clients (tests/textbook/NAME) against
/// `server`, its two constants pointed there, with `sentence` typed in.
fn textbook_client(name: &str, server: SocketAddr, sentence: &str) -> String {
    let source = std::fs::read_to_string(format!(
        "{}/tests/textbook/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("the textbook's client");
    let mut lines: Vec<String> = source.lines().map(str::to_owned).collect();
    for line in &mut lines {
        if line.starts_with("serverName = ") {
            *line = format!("serverName = '{}'", server.ip());
        } else if line.starts_with("serverPort = ") {
            *line = format!("serverPort = {}", server.port());
        }
    }
    let script = TempFile::new(name, &(lines.join("\n") + "\n"));
    let out = run_piped(
        Command::new("python3")
            .arg(script.path())
            .env("PYTHONIOENCODING", "utf-8"),
        format!("{sentence}\n").as_bytes(),
    );
    assert!(
        out.status.success(),
        "{name}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

#[test]
fn the_textbooks_python_clients() {
    if !have_tool("python3") {
        return;
    }
    let daemon = Daemon::start(&LOOPBACK, 2);
    for sentence in [
        "hello from the textbook",
        "grüße aus köln, straße",
        "привет, мир",
        "ﬁne ŉ ΐ",
    ] {
        let want: String = sentence.to_uppercase();
        assert_eq!(
            textbook_client("TCPClient.py", daemon.tcp[0], sentence),
            format!("Input lowercase sentence:From Server:  {want}\n")
        );
        assert_eq!(
            textbook_client("UDPClient.py", daemon.udp[0], sentence),
            format!("Input lowercase sentence:{want}\n")
        );
    }
}
