//! Real clients against the real binary: what a user types must work.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::util::*;

const LOOPBACK: [&str; 4] = ["--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"];

/// Runs `program args` with `input` on stdin and returns its stdout.
fn pipe_through(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        out.status
    );
    out.stdout
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
    assert_eq!(
        pipe_through("nc", &["-u", "-w1", "127.0.0.1", &port], b"hello"),
        b"HELLO"
    );
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
    assert_eq!(
        pipe_through("socat", &["-", &udp], b"over udp\n"),
        b"OVER UDP\n"
    );
}
