//! upcase-bench: it must pass against a correct server and fail loudly —
//! with the position of the wrong byte and both texts — against wrong ones.
//! The wrong servers are written here: tiny std threads that echo, or that
//! upper-case letters but get the neighbours of the letters and non-ASCII
//! bytes wrong. Runs are a fraction of a second; nothing here is timed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::Command;
use std::thread;

use clap::Parser;
use upcase::bench::{self, Options, PayloadKind, Report};
use upcase::transform::Mode;

use crate::util::*;

/// Options for a short run of `args` against `addr`.
fn options(addr: SocketAddr, args: &[&str]) -> Options {
    let addr = addr.to_string();
    let mut argv = vec!["upcase-bench"];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&[
        "--addr",
        &addr,
        "--duration",
        "300ms",
        "--warmup",
        "0s",
        "--connect-timeout",
        "10s",
        "--drain-timeout",
        "5s",
    ]);
    Options::try_parse_from(argv).expect("valid options")
}

fn run(addr: SocketAddr, args: &[&str]) -> Report {
    bench::run(&options(addr, args)).expect("the bench runs")
}

/// What a wrong server does to the bytes it gets.
type Wrong = fn(&mut [u8]);

/// Answers with the bytes unchanged.
fn echo(_: &mut [u8]) {}

/// Upper-cases letters, but maps `@[{~` as if they were letters too
/// (`c & !0x20`, the classic "toupper" bug), and flips bytes >= 0x80.
fn mangle(bytes: &mut [u8]) {
    for b in bytes {
        *b = match *b {
            b'a'..=b'z' => *b - 32,
            b'@' | b'[' | b'{' | b'~' => *b ^ 0x20,
            0x80.. => *b ^ 0x20,
            other => other,
        };
    }
}

/// A TCP server on a thread per connection that answers with `wrong`.
fn wrong_tcp_server(wrong: Wrong) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    let n = match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    wrong(&mut buf[..n]);
                    if stream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A UDP server that answers every datagram with `wrong`.
fn wrong_udp_server(wrong: Wrong) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            wrong(&mut buf[..n]);
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    addr
}

/// Position of the first byte of request 0 that `wrong` answers wrongly.
fn first_wrong_byte(kind: PayloadKind, size: usize, wrong: Wrong) -> usize {
    let request = bench::payload::Payloads::new(kind, size)
        .request(0)
        .to_vec();
    let want = upcase::transform::upcase(kind.mode(), &request);
    let mut got = request.clone();
    wrong(&mut got);
    got.iter()
        .zip(&want)
        .position(|(g, w)| g != w)
        .expect("the wrong server gets request 0 wrong")
}

fn assert_wrong_byte_reported(report: &Report, position: usize) {
    assert!(!report.ok, "{report}");
    assert!(report.errors.mismatch > 0, "{report}");
    let needle = format!("wrong byte at byte {position} ");
    assert!(
        report.error_samples.iter().any(|s| s.contains(&needle)),
        "no {needle:?} in:\n{report}"
    );
}

#[test]
fn an_echo_server_fails_at_the_first_lower_case_byte() {
    let addr = wrong_tcp_server(echo);
    let report = run(addr, &["tcp", "--connections", "1"]);
    assert_wrong_byte_reported(&report, first_wrong_byte(PayloadKind::Ascii, 64, echo));
}

#[test]
fn a_server_that_mangles_punctuation_fails_with_position_and_both_texts() {
    let addr = wrong_tcp_server(mangle);
    let pos = first_wrong_byte(PayloadKind::Ascii, 4096, mangle);
    let report = run(addr, &["tcp", "--connections", "1", "--size", "4096"]);
    assert_wrong_byte_reported(&report, pos);
    let request = bench::payload::Payloads::new(PayloadKind::Ascii, 4096)
        .request(0)
        .to_vec();
    // Both bytes are named: what came, and what should have.
    let got = request[pos] ^ 0x20;
    let want = request[pos];
    let sample = &report.error_samples[0];
    assert!(
        sample.contains(&format!("got 0x{got:02x}, want 0x{want:02x}")),
        "{sample}"
    );
}

#[test]
fn a_server_that_mangles_high_bytes_fails_on_binary_and_utf8_payloads() {
    let addr = wrong_tcp_server(mangle);
    for (kind, name) in [(PayloadKind::Binary, "binary"), (PayloadKind::Utf8, "utf8")] {
        let report = run(addr, &["tcp", "--connections", "1", "--payload", name]);
        // In utf8 the server's letters are right but é, ß... are not, so the
        // first wrong byte is somewhere in the first multi-byte character.
        assert!(!report.ok && report.errors.mismatch > 0, "{name}: {report}");
        if kind == PayloadKind::Binary {
            assert_wrong_byte_reported(&report, first_wrong_byte(kind, 64, mangle));
        }
    }
}

#[test]
fn a_pipelined_echo_fails_on_many_connections_too() {
    let addr = wrong_tcp_server(echo);
    let report = run(addr, &["tcp", "--connections", "20", "--pipeline", "8"]);
    assert!(!report.ok);
    assert_eq!(report.errors.mismatch, 20, "every connection: {report}");
}

#[test]
fn udp_replies_from_a_wrong_server_fail() {
    for wrong in [echo as Wrong, mangle] {
        let addr = wrong_udp_server(wrong);
        let report = run(addr, &["udp", "--connections", "2", "--pipeline", "4"]);
        assert!(!report.ok && report.errors.mismatch > 0, "{report}");
        assert!(
            report
                .error_samples
                .iter()
                .any(|s| s.contains("wrong byte at byte")),
            "{report}"
        );
    }
}

#[test]
fn nothing_listening_is_a_failed_connect() {
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let report = run(addr, &["tcp", "--connections", "3"]);
    assert!(!report.ok);
    assert_eq!(report.errors.connect_failed, 3, "{report}");
}

#[test]
fn a_server_that_closes_early_is_an_unexpected_close() {
    // Answers the first request correctly, then hangs up.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0u8; 64];
            if stream.read_exact(&mut buf).is_ok() {
                let reply = upcase::transform::upcase(Mode::Ascii, &buf);
                let _ = stream.write_all(&reply);
            }
            let _ = stream.shutdown(std::net::Shutdown::Write);
            // Keep reading so the close is a FIN, not a reset.
            let _ = std::io::copy(&mut stream, &mut std::io::sink());
        }
    });
    let report = run(addr, &["tcp", "--connections", "1"]);
    assert!(!report.ok);
    assert_eq!(report.errors.unexpected_close, 1, "{report}");
}

#[test]
fn upcased_passes_every_mode_with_zero_errors() {
    let server = InProcess::start(loopback_config());
    for args in [
        &["tcp", "--connections", "20", "--payload", "utf8"][..],
        &[
            "tcp",
            "--connections",
            "10",
            "--pipeline",
            "16",
            "--size",
            "4096",
            "--payload",
            "utf8",
        ],
        &[
            "tcp",
            "--connections",
            "5",
            "--payload",
            "ascii",
            "--messages",
            "500",
        ],
        &["idle", "--connections", "200", "--payload", "utf8"],
    ] {
        let report = run(server.tcp, args);
        assert!(report.ok, "{args:?}: {report}");
        assert_eq!(report.connections_up, report.connections, "{report}");
        // Not "no stalled connection": how evenly a 0.3 s window is shared
        // is a timing figure, and tests assert no timing.
        if args[0] == "tcp" {
            assert!(report.messages > 0, "{report}");
        }
    }
    let report = run(
        server.udp,
        &[
            "udp",
            "--connections",
            "4",
            "--pipeline",
            "8",
            "--payload",
            "utf8",
        ],
    );
    assert!(report.ok && report.messages > 0, "{report}");
    let counters = server.stop();
    assert_eq!(counters.errors(), 0, "{counters:?}");
}

#[test]
fn binary_payloads_pass_against_ascii_mode() {
    let mut config = loopback_config();
    config.mode = Mode::Ascii;
    let server = InProcess::start(config);
    let report = run(
        server.tcp,
        &[
            "tcp",
            "--connections",
            "4",
            "--pipeline",
            "4",
            "--payload",
            "binary",
        ],
    );
    assert!(report.ok && report.messages > 0, "{report}");
    // ... and fail against unicode mode, which changes some binary bytes
    // that happen to form valid UTF-8 (e.g. 0xc3 0xa9, é, becomes É).
    let server = InProcess::start(loopback_config());
    let report = run(
        server.tcp,
        &[
            "tcp",
            "--connections",
            "1",
            "--size",
            "4096",
            "--payload",
            "binary",
        ],
    );
    assert!(!report.ok, "{report}");
}

/// Runs the real binary.
fn bench_binary(addr: SocketAddr, args: &[&str]) -> std::process::Output {
    let addr = addr.to_string();
    Command::new(env!("CARGO_BIN_EXE_upcase-bench"))
        .args(args)
        .args(["--addr", &addr, "--duration", "300ms", "--warmup", "0s"])
        .output()
        .expect("run upcase-bench")
}

/// Scripts written for the old flags (`--duration 0.3 --warmup 0`: bare
/// seconds) keep working, with one warning line per such flag that names
/// the new spelling; the new spelling warns about nothing.
#[test]
fn bare_seconds_still_work_with_a_deprecation_warning() {
    let server = InProcess::start(loopback_config());
    let addr = server.tcp.to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_upcase-bench"))
        .args(["tcp", "--addr", &addr, "--duration", "0.3", "--warmup", "0"])
        .args(["--drain-timeout", "5", "--json"])
        .output()
        .expect("run upcase-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(json["ok"], true, "{json}");
    // The window was the 0.3 s asked for, not 0.3 of some other unit.
    let window = json["window_s"].as_f64().unwrap_or(0.0);
    assert!((window - 0.3).abs() < 1e-3, "{json}");
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            "upcase-bench: warning: --duration 0.3: a bare number of seconds is deprecated; write 300ms",
            "upcase-bench: warning: --warmup 0: a bare number of seconds is deprecated; write 0s",
            "upcase-bench: warning: --drain-timeout 5: a bare number of seconds is deprecated; write 5s",
        ],
        "{stderr}"
    );
    let out = bench_binary(server.tcp, &["tcp", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("deprecated"), "{stderr}");
}

#[test]
fn the_binary_exits_non_zero_and_prints_the_wrong_byte() {
    let addr = wrong_tcp_server(mangle);
    let out = bench_binary(addr, &["tcp", "--connections", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let pos = first_wrong_byte(PayloadKind::Ascii, 64, mangle);
    let needle = format!("wrong byte at byte {pos} ");
    assert!(
        stdout.contains(&needle) && stdout.contains("FAILED"),
        "{stdout}"
    );
    assert!(stderr.contains(&needle), "printed as it happens: {stderr}");
}

#[test]
fn the_binary_reports_json_and_server_figures() {
    let daemon = Daemon::start(&LOOPBACK, 2);
    let pid = daemon.pid().to_string();
    let out = bench_binary(
        daemon.tcp[0],
        &["tcp", "--connections", "8", "--json", "--server-pid", &pid],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The progress line is for terminals: piped, stderr stays clean.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains('\u{1b}'),
        "escape codes on a pipe: {stderr:?}"
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(json["ok"], true);
    assert_eq!(json["connections_up"], 8);
    assert!(json["messages"].as_u64().unwrap() > 0);
    assert!(json["latency_us"]["p99"].as_f64().unwrap() > 0.0);
    assert!(json["server"]["rss_kib"].as_u64().unwrap() > 0);

    let out = bench_binary(daemon.tcp[0], &["udp", "--size", "8"]);
    assert_eq!(out.status.code(), Some(2), "too small for the UDP header");
}

/// The suite itself (`bench/run`), in its seconds-long smoke mode: upcased
/// only (the reference servers need a C compiler and a tokio build) and,
/// in the mode cells, upcased in ascii mode; tiny cells, one round, the
/// binaries this test run built. It checks that the script, the bench's
/// JSON, the per-cell server lists and the report generator still fit
/// together. The Targets section is only checked to be there: its verdicts
/// are timing figures, and tests assert no timing.
#[test]
fn the_benchmark_suite_runs_in_smoke_mode() {
    if !have_tool("python3") {
        return;
    }
    let out = std::env::temp_dir().join(format!("upcase-bench-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let result = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/run"))
        .arg("--smoke")
        .arg("--out")
        .arg(&out)
        .env("UPCASED", daemon_path())
        .env("UPCASE_BENCH", env!("CARGO_BIN_EXE_upcase-bench"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run bench/run");
    let md = std::fs::read_to_string(out.join("latest.md")).unwrap_or_default();
    let svg = std::fs::read_to_string(out.join("chart.svg")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&out);
    assert!(
        result.status.success(),
        "bench/run --smoke failed:\n{}\n{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    for row in [
        "| tcp 10 x 64 B | upcased |",
        "| tcp 10 x 64 B, pipeline 16 | upcased |",
        "| udp 2 flows x 64 B, window 4 | upcased |",
        "| idle 50 | upcased | 50 of 50 |",
        "| mode: tcp 10 x 4 KiB ascii text | upcased | ascii |",
        "| mode: tcp 10 x 4 KiB ascii text | upcased-ascii | ascii |",
        "| mode: tcp 10 x 4 KiB utf8 text | upcased | utf8 |",
        "## Targets",
    ] {
        assert!(md.contains(row), "no {row:?} in latest.md:\n{md}");
    }
    // Every reply right is no timing figure: that target must be met.
    let errors = md.lines().find(|l| l.starts_with("| 6 |")).unwrap_or("");
    assert!(errors.ends_with("| **met** |"), "{md}");
    // The matrix cells ran on upcased alone: upcased-ascii is in the mode
    // cells only.
    assert!(!md.contains("| tcp 10 x 64 B | upcased-ascii |"), "{md}");
    assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{svg}");
}
