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

/// A TCP server that runs `serve` on a thread per connection.
fn tcp_server(serve: impl Fn(std::net::TcpStream) + Copy + Send + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            thread::spawn(move || serve(stream));
        }
    });
    addr
}

/// A TCP server on a thread per connection that answers with `wrong`.
fn wrong_tcp_server(wrong: Wrong) -> SocketAddr {
    answering_tcp_server(move |_, bytes| wrong(bytes))
}

/// A TCP server on a thread per connection that answers every read with
/// its bytes after `answer(client address, bytes)`.
fn answering_tcp_server(
    answer: impl Fn(SocketAddr, &mut [u8]) + Copy + Send + 'static,
) -> SocketAddr {
    tcp_server(move |mut stream| {
        let Ok(peer) = stream.peer_addr() else {
            return;
        };
        let mut buf = [0u8; 4096];
        loop {
            let n = match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            answer(peer, &mut buf[..n]);
            if stream.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    })
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
    let addr = answers_once_then_hangs_up();
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

/// A corpus of bench/corpora, by file name.
fn corpus(name: &str) -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/bench/corpora/").to_string() + name
}

/// `--payload-file`: the same pieces of a text pass against upcased in
/// unicode mode and, with `--mode ascii`, in ascii mode, and each
/// expectation fails against the other mode: the replies checked are the
/// server's mode's, not the same for both.
#[test]
fn a_payload_file_passes_against_upcased_in_both_modes() {
    let unicode = InProcess::start(loopback_config());
    let mut config = loopback_config();
    config.mode = Mode::Ascii;
    let ascii = InProcess::start(config);
    for name in ["greek.txt", "emoji-chat.txt", "invalid-gzip.bin"] {
        let file = corpus(name);
        for (server, mode) in [(&unicode, "unicode"), (&ascii, "ascii")] {
            let tcp = [
                "tcp",
                "--connections",
                "3",
                "--pipeline",
                "4",
                "--size",
                "4KiB",
                "--payload-file",
                &file,
                "--mode",
                mode,
            ];
            let report = run(server.tcp, &tcp);
            assert!(report.ok && report.messages > 0, "{name} {mode}: {report}");
            assert_eq!(report.payload, format!("file:{name}"));
            assert_eq!(report.mode, mode);
            let udp = [
                "udp",
                "--connections",
                "2",
                "--pipeline",
                "4",
                "--size",
                "1400",
                "--payload-file",
                &file,
                "--mode",
                mode,
            ];
            let report = run(server.udp, &udp);
            assert!(
                report.ok && report.messages > 0,
                "{name} {mode} udp: {report}"
            );
        }
    }
    // Unicode mode's replies expected (the default) from ascii mode, and
    // ascii mode's from unicode mode: both wrong on Greek (the emoji have
    // no case, so the emoji chat's replies are the same in both).
    let greek = corpus("greek.txt");
    for (server, args) in [
        (&ascii, &["--payload-file", &greek][..]),
        (&unicode, &["--payload-file", &greek, "--mode", "ascii"]),
    ] {
        let mut all = vec!["tcp", "--connections", "1", "--size", "4KiB"];
        all.extend_from_slice(args);
        let report = run(server.tcp, &all);
        assert!(
            !report.ok && report.errors.mismatch > 0,
            "{args:?}: {report}"
        );
    }
    for server in [unicode, ascii] {
        let counters = server.stop();
        assert_eq!(counters.errors(), 0, "{counters:?}");
    }
}

#[test]
fn a_payload_file_fails_against_wrong_servers() {
    let file = corpus("english.txt");
    let text = std::fs::read(&file).unwrap();
    let request = bench::payload::Payloads::from_text(&text, Mode::Unicode, 4096)
        .unwrap()
        .request(0)
        .to_vec();
    let first_lower = request
        .iter()
        .position(u8::is_ascii_lowercase)
        .expect("English has lower case");
    let addr = wrong_tcp_server(echo);
    let args = ["tcp", "--connections", "1", "--size", "4KiB"];
    let report = run(addr, &[&args[..], &["--payload-file", &file]].concat());
    assert_wrong_byte_reported(&report, first_lower);
    // Letters right, but bytes >= 0x80 mangled: caught on Russian text.
    let addr = wrong_tcp_server(mangle);
    let russian = corpus("russian.txt");
    let report = run(addr, &[&args[..], &["--payload-file", &russian]].concat());
    assert!(!report.ok && report.errors.mismatch > 0, "{report}");
    let addr = wrong_udp_server(mangle);
    let report = run(
        addr,
        &["udp", "--size", "1400", "--payload-file", &russian][..],
    );
    assert!(!report.ok && report.errors.mismatch > 0, "{report}");
}

#[test]
fn a_payload_file_that_cannot_be_used_is_a_usage_error() {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let empty = std::env::temp_dir().join(format!("upcase-bench-empty-{}", std::process::id()));
    std::fs::write(&empty, b"").unwrap();
    let empty = empty.to_str().unwrap().to_string();
    for args in [
        &["tcp", "--payload-file", "/nonexistent/upcase-corpus"][..],
        &["tcp", "--payload-file", &empty],
    ] {
        let err = bench::run(&options(addr, args)).expect_err("a usage error");
        assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        assert!(err.to_string().contains("--payload-file"), "{err}");
    }
    let _ = std::fs::remove_file(&empty);
    // A payload kind and a file at once: which would it be?
    let argv = [
        "upcase-bench",
        "tcp",
        "--payload",
        "utf8",
        "--payload-file",
        "x",
    ];
    let err = Options::try_parse_from(argv).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    let err = Options::try_parse_from(["upcase-bench", "tcp", "--mode", "latin1"]).unwrap_err();
    assert_eq!(err.exit_code(), 2);
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
    let timeline = std::fs::read_to_string(out.join("timeline.svg")).unwrap_or_default();
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
        // The same utf8 requests checked against ascii mode's replies.
        "| mode: tcp 10 x 4 KiB utf8 text | upcased-ascii | utf8 |",
        // The per-script table: a corpus sent to both modes.
        "## Unicode mode against ascii mode, per script",
        "| greek |",
        "| 3c |",
        "| churn 2, fin | upcased |",
        "| churn 2, rst | upcased |",
        "| open loop: 50% of upcased's capacity, tcp 10 x 64 B, pipeline 4 | upcased |",
        "| open loop: 90% of upcased's capacity, tcp 10 x 64 B, pipeline 4 | upcased |",
        "![throughput and p99 over time](timeline.svg)",
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
    assert!(
        timeline.starts_with("<svg") && timeline.contains("churn 2, rst: connections/s"),
        "{timeline}"
    );
}

/// A server that answers the first 64-byte request right and then hangs up
/// (an orderly FIN, reading on so that it is no reset): fine for a client
/// that asks once, wrong for one that asks more on the same connection. A
/// thread per connection, so churn's many connections are served at once.
fn answers_once_then_hangs_up() -> SocketAddr {
    tcp_server(|mut stream| {
        let mut buf = [0u8; 64];
        if stream.read_exact(&mut buf).is_ok() {
            let reply = upcase::transform::upcase(Mode::Ascii, &buf);
            let _ = stream.write_all(&reply);
        }
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let _ = std::io::copy(&mut stream, &mut std::io::sink());
    })
}

fn churn_figures(report: &Report) -> &upcase::bench::report::ChurnFigures {
    report
        .churn
        .as_ref()
        .expect("a churn report has churn figures")
}

#[test]
fn churn_fails_against_wrong_servers_with_the_right_error() {
    for close in ["fin", "rst"] {
        for wrong in [echo as Wrong, mangle] {
            let addr = wrong_tcp_server(wrong);
            let report = run(addr, &["churn", "-c", "2", "--close", close]);
            assert_wrong_byte_reported(&report, first_wrong_byte(PayloadKind::Ascii, 64, wrong));
            // Every client's first connection got a wrong byte, so none is
            // up, and each failed while exchanging.
            assert_eq!(report.connections_up, 0, "{report}");
            assert_eq!(report.errors.mismatch, 2, "{report}");
            assert_eq!(churn_figures(&report).failures.exchange, 2, "{report}");
        }
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let report = run(addr, &["churn", "-c", "3", "--close", close]);
        assert!(!report.ok);
        assert_eq!(report.errors.connect_failed, 3, "{report}");
        assert_eq!(churn_figures(&report).failures.connect, 3, "{report}");
    }
}

#[test]
fn churn_with_several_requests_fails_against_a_server_that_hangs_up_after_one() {
    let addr = answers_once_then_hangs_up();
    for close in ["fin", "rst"] {
        let report = run(
            addr,
            &[
                "churn",
                "-c",
                "2",
                "--requests-per-connection",
                "3",
                "--close",
                close,
            ],
        );
        assert!(!report.ok, "{report}");
        assert_eq!(report.errors.unexpected_close, 2, "{report}");
        assert_eq!(report.errors.total(), 2, "{report}");
        assert_eq!(churn_figures(&report).failures.exchange, 2, "{report}");
        assert!(
            report.error_samples[0]
                .contains("closed by the server with 2 replies awaited, after 1 verified"),
            "{report}"
        );
    }
    // One request per connection is all that server gets right: it passes.
    let report = run(addr, &["churn", "-c", "2"]);
    assert!(report.ok, "{report}");
    assert!(churn_figures(&report).connections_total > 0, "{report}");
}

#[test]
fn upcased_passes_churn_with_fin_and_rst() {
    let server = InProcess::start(loopback_config());
    for args in [
        &["churn", "-c", "8", "--close", "fin"][..],
        &["churn", "-c", "8", "--close", "rst"],
        &[
            "churn",
            "-c",
            "4",
            "--close",
            "fin",
            "--requests-per-connection",
            "5",
            "--pipeline",
            "2",
            "--payload",
            "utf8",
        ],
        &[
            "churn",
            "-c",
            "4",
            "--close",
            "rst",
            "--requests-per-connection",
            "3",
            "--size",
            "4096",
        ],
    ] {
        let report = run(server.tcp, args);
        assert!(report.ok, "{args:?}: {report}");
        assert_eq!(report.connections_up, report.connections, "{report}");
        let churn = churn_figures(&report);
        assert!(
            churn.connections_total >= report.connections as u64,
            "{report}"
        );
        let f = &churn.failures;
        assert_eq!((f.connect, f.exchange, f.close), (0, 0, 0), "{report}");
    }
    let counters = server.stop();
    assert_eq!(counters.errors(), 0, "{counters:?}");
}

#[test]
fn options_of_one_kind_are_usage_errors_with_another() {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    for args in [
        &["tcp", "--close", "rst"][..],
        &["idle", "--requests-per-connection", "2"],
        &["churn", "--rate", "100"],
        &["udp", "--rate", "100"],
    ] {
        let err = bench::run(&options(addr, args)).expect_err("a usage error");
        assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
    }
}

#[test]
fn open_loop_fails_against_wrong_servers_with_the_right_error() {
    for wrong in [echo as Wrong, mangle] {
        let addr = wrong_tcp_server(wrong);
        let report = run(addr, &["tcp", "-c", "2", "--rate", "1000"]);
        assert_wrong_byte_reported(&report, first_wrong_byte(PayloadKind::Ascii, 64, wrong));
        assert_eq!(report.errors.mismatch, 2, "{report}");
    }
    // Up after its first exchange, then the schedule's first request meets
    // the server's EOF.
    let report = run(
        answers_once_then_hangs_up(),
        &["tcp", "-c", "2", "--rate", "1000"],
    );
    assert!(!report.ok, "{report}");
    assert_eq!(report.connections_up, 2, "{report}");
    assert_eq!(report.errors.unexpected_close, 2, "{report}");
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let report = run(addr, &["tcp", "-c", "3", "--rate", "1000"]);
    assert_eq!(report.errors.connect_failed, 3, "{report}");
}

#[test]
fn upcased_passes_open_loop_and_writes_its_histogram_and_timeline() {
    let server = InProcess::start(loopback_config());
    let hgrm = TempFile::new("open-loop.hgrm", "");
    let timeline = TempFile::new("open-loop.csv", "");
    let report = run(
        server.tcp,
        &[
            "tcp",
            "-c",
            "4",
            "--rate",
            "2000",
            "--pipeline",
            "4",
            "--payload",
            "utf8",
            "--latency-out",
            hgrm.path(),
            "--timeline",
            timeline.path(),
        ],
    );
    assert!(report.ok, "{report}");
    assert_eq!(report.connections_up, 4, "{report}");
    assert!(report.messages > 0, "{report}");
    let open = report.open_loop.as_ref().expect("open-loop figures");
    assert_eq!(open.offered_per_s, 2000.0);
    // The schedule is exact arithmetic: 2,000 a second for 0.3 s.
    assert_eq!(open.scheduled, 600, "{report}");
    // `run` does not write files: the binary does, through run_and_print.
    // So write the histogram the way it does and check the text.
    bench::write_latency_out(std::path::Path::new(hgrm.path()), &report).unwrap();
    let text = std::fs::read_to_string(hgrm.path()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "       Value     Percentile TotalCount 1/(1-Percentile)"
    );
    assert_hgrm_total(&text, report.messages);
    let rows = std::fs::read_to_string(timeline.path()).unwrap();
    let mut rows = rows.lines();
    assert_eq!(
        rows.next(),
        Some("second,span_s,phase,replies,replies_per_s,errors,connections,p50_us,p99_us")
    );
    // Every verified reply of the run is in some second's row.
    let replies: u64 = rows
        .map(|r| r.split(',').nth(3).unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(replies >= report.messages + 4, "{replies} rows: {report}");
    let counters = server.stop();
    assert_eq!(counters.errors(), 0, "{counters:?}");
}

/// The `.hgrm` text `text` counts `messages` replies in all.
fn assert_hgrm_total(text: &str, messages: u64) {
    let total = format!("Total count    = {messages:>12}]");
    assert!(
        text.lines().any(|l| l.ends_with(&total)),
        "no {total:?} in:\n{text}"
    );
}

/// Piped, the progress line is not drawn at all: stdout holds the report
/// alone and stderr stays empty, with and without --json.
#[test]
fn no_progress_line_when_not_a_terminal() {
    let server = InProcess::start(loopback_config());
    for args in [
        &["churn", "-c", "2"][..],
        &["tcp", "-c", "2", "--rate", "500"],
        &["churn", "-c", "2", "--close", "rst", "--json"],
    ] {
        let out = bench_binary(server.tcp, args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{args:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !args.contains(&"--json") {
            assert!(stdout.ends_with("OK\n"), "{args:?}: {stdout}");
            continue;
        }
        // The contract's keys, and churn's own.
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(json["ok"], true, "{json}");
        assert_eq!(json["connections_up"], 2, "{json}");
        for key in ["p50", "p99", "p999", "max"] {
            assert!(json["latency_us"][key].as_f64().is_some(), "{key}: {json}");
        }
        assert!(json["msgs_per_s"].as_f64().is_some(), "{json}");
        assert_eq!(json["errors"]["reset"], 0, "{json}");
        assert!(json["connections_per_second"].as_f64().is_some(), "{json}");
        assert_eq!(json["churn"]["close"], "rst", "{json}");
        assert_eq!(json["churn"]["failures"]["connect"], 0, "{json}");
    }
}

/// On a terminal the progress line is there while the run goes on
/// (connections up of the target, replies a second, errors, elapsed of
/// total), and gone when the report is printed.
#[test]
fn a_progress_line_on_a_terminal() {
    if !have_tool("tmux") {
        return;
    }
    let server = InProcess::start(loopback_config());
    let command = format!(
        "{} churn -c 3 --addr {} --duration 8s --warmup 0s; echo EXIT $?; sleep 600",
        env!("CARGO_BIN_EXE_upcase-bench"),
        server.tcp
    );
    let tmux = Tmux::start("bench-progress", &command);
    let screen = tmux.wait_for("measuring: 3/3 up");
    assert!(screen.contains("replies/s, 0 errors"), "{screen}");
    assert!(screen.contains("s/8."), "elapsed of the total: {screen}");
    // At the end the line is cleared and the report takes its place.
    let screen = tmux.wait_for("EXIT 0");
    assert!(!screen.contains("measuring:"), "{screen}");
    assert!(screen.contains("churn 127.0.0.1:"), "{screen}");
}

/// Runs the binary with `--json`; it must pass. Returns its report.
fn passing_json(addr: SocketAddr, args: &[&str]) -> serde_json::Value {
    let out = bench_binary(addr, &[args, &["--json"]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    // One JSON object: the workers' own results went to the coordinator.
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// A run split over worker processes (the binary runs itself with the
/// hidden `--part I/N`): the figures are the parts' sums, and upcased's own
/// counters agree with them to the connection and the byte.
#[test]
fn worker_processes_add_up_exactly() {
    let server = InProcess::start(loopback_config());
    // idle: one 64-byte request per connection, so the server's counters
    // say exactly what all the workers together did.
    let json = passing_json(server.tcp, &["idle", "-c", "30", "--workers", "3"]);
    assert_eq!(json["ok"], true, "{json}");
    assert_eq!(json["connections"], 30, "{json}");
    assert_eq!(json["connections_up"], 30, "{json}");
    assert_eq!(json["errors"]["other"], 0, "{json}");
    // tcp, split over 3 processes of 2 threads each: 6 event loops.
    let args = ["tcp", "-c", "12", "--workers", "3", "--threads", "2"];
    let json = passing_json(server.tcp, &args);
    assert_eq!(json["connections_up"], 12, "{json}");
    let messages = json["messages"].as_u64().unwrap_or(0);
    assert!(messages > 0, "{json}");
    // The replies per connection were summed over every part: their mean
    // times the connections is the message count.
    let mean = json["fairness"]["mean"].as_f64().unwrap_or(0.0);
    assert_eq!((mean * 12.0).round() as u64, messages, "{json}");
    // The merged histogram holds every reply of every part.
    let latency = &json["latency_us"];
    assert!(latency["p50"].as_f64().unwrap_or(0.0) > 0.0, "{json}");
    assert!(latency["max"].as_f64() >= latency["p99"].as_f64(), "{json}");
    let c = server.stop();
    assert_eq!((c.conns_accepted, c.closed_done), (42, 42), "{c:?}");
    // The idle run's 30 requests of 64 bytes are in there, exactly once.
    assert_eq!(c.bytes_in, c.bytes_out, "{c:?}");
    assert_eq!(c.bytes_in % 64, 0, "{c:?}");
    assert!(c.bytes_in >= (30 + messages) * 64, "{c:?}");
}

/// A server that upper-cases ASCII right, except for clients from
/// 127.0.0.3: those get an echo.
fn wrong_for_127_0_0_3() -> SocketAddr {
    answering_tcp_server(|peer, bytes| {
        if peer.ip() != std::net::Ipv4Addr::new(127, 0, 0, 3) {
            bytes.make_ascii_uppercase();
        }
    })
}

/// One worker of three meets a wrong server (its connection comes from
/// 127.0.0.3): the whole run fails, exit status 1, with that worker's
/// wrong byte in the report.
#[test]
fn one_failing_worker_fails_the_run() {
    let addr = wrong_for_127_0_0_3();
    let out = bench_binary(
        addr,
        &["tcp", "-c", "3", "--workers", "3", "--source-addrs", "3"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let pos = first_wrong_byte(PayloadKind::Ascii, 64, echo);
    // Connection 2 of the run is worker 2's first (its connection 0).
    let needle = format!("worker 2: connection 0: wrong byte at byte {pos} ");
    assert!(stdout.contains(&needle), "no {needle:?} in:\n{stdout}");
    assert!(stdout.contains("errors: 1 ("), "{stdout}");
    assert!(stdout.trim_end().ends_with("FAILED"), "{stdout}");
    // The same three connections from one address all get right replies.
    let out = bench_binary(
        addr,
        &["tcp", "-c", "3", "--workers", "3", "--source-addrs", "1"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
}

/// `--source-addrs` spreads the connections over 127.0.0.1, .2, .3: a
/// server that allows 2 connections per address takes 6 of them from 3
/// addresses (also split over event loops), and refuses 4 of 6 from one.
#[test]
fn source_addresses_spread_connections() {
    // A fresh server per run: the last run's connections may still count
    // against their address for a moment after the client saw their end.
    let limited = || {
        let mut config = loopback_config();
        config.tcp.max_connections_per_ip = std::num::NonZeroUsize::new(2);
        InProcess::start(config)
    };
    for extra in [&[][..], &["--threads", "3"]] {
        let server = limited();
        let mut args = vec!["idle", "-c", "6", "--source-addrs", "3"];
        args.extend_from_slice(extra);
        let report = run(server.tcp, &args);
        assert!(report.ok, "{args:?}: {report}");
        assert_eq!(report.connections_up, 6, "{report}");
        let c = server.stop();
        assert_eq!((c.conns_accepted, c.closed_limit), (6, 0), "{c:?}");
    }
    let server = limited();
    let report = run(server.tcp, &["idle", "-c", "6", "--source-addrs", "1"]);
    assert!(!report.ok, "{report}");
    assert_eq!(report.connections_up, 2, "{report}");
    let c = server.stop();
    assert_eq!((c.conns_accepted, c.closed_limit), (6, 4), "{c:?}");
}

/// Worker processes re-execute the binary: called as a library, the bench
/// says so instead of starting the test binary.
#[test]
fn worker_processes_need_the_binary() {
    let server = InProcess::start(loopback_config());
    let e = bench::run(&options(server.tcp, &["tcp", "-c", "4", "--workers", "2"]))
        .expect_err("no binary to re-execute");
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("upcase-bench binary"), "{e}");
}

/// churn, `--rate` and `--timeline` are one event loop's: split over worker
/// processes or threads they are usage errors (exit status 2) that say
/// why, before any connection is made; `--latency-out` of a split run is
/// the merged histogram, every reply of every worker in it.
#[test]
fn split_runs_reject_one_loop_options_and_merge_latency_out() {
    let server = InProcess::start(loopback_config());
    let timeline = TempFile::new("split.csv", "");
    for (args, flag) in [
        (&["churn", "-c", "4", "--workers", "2"][..], "--workers"),
        (&["churn", "-c", "4", "--threads", "2"], "--workers"),
        (
            &["tcp", "-c", "4", "--rate", "100", "--workers", "2"],
            "--rate",
        ),
        (
            &["tcp", "-c", "4", "--rate", "100", "--threads", "2"],
            "--rate",
        ),
        (
            &[
                "tcp",
                "-c",
                "4",
                "--timeline",
                timeline.path(),
                "--workers",
                "2",
            ],
            "--timeline",
        ),
    ] {
        let out = bench_binary(server.tcp, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("upcase-bench: "), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let hgrm = TempFile::new("split.hgrm", "");
    let json = passing_json(
        server.tcp,
        &[
            "tcp",
            "-c",
            "4",
            "--workers",
            "2",
            "--latency-out",
            hgrm.path(),
        ],
    );
    let messages = json["messages"].as_u64().unwrap_or(0);
    assert!(messages > 0, "{json}");
    assert_hgrm_total(&std::fs::read_to_string(hgrm.path()).unwrap(), messages);
    // The rejected runs made no connection: the 4 are the last run's.
    let c = server.stop();
    assert_eq!(c.conns_accepted, 4, "{c:?}");
}
