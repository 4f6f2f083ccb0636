//! Running under systemd, tested with the tools systemd ships (no systemd
//! runs here): the units, socket activation, sd_notify, journald's log
//! format, and several processes on one port.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::util::*;

/// The units of `systemd/`, copied to a fresh folder with the installed
/// binary's path replaced by the one just built (verify checks that it exists).
fn units() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("upcase-test-{}-units", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd");
    let binary = daemon_path();
    for entry in std::fs::read_dir(source).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.replace("/usr/bin/upcased", binary.to_str().unwrap());
        std::fs::write(dir.join(path.file_name().unwrap()), text).unwrap();
    }
    dir
}

fn systemd_analyze(dir: &PathBuf, args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run systemd-analyze")
}

#[test]
fn the_units_verify_clean() {
    if !have_tool("systemd-analyze") {
        return;
    }
    let dir = units();
    // --man=no: the man pages come with the package, not with the test.
    let out = systemd_analyze(
        &dir,
        &[
            "verify",
            "--man=no",
            "./upcased.service",
            "./upcased.socket",
            "./upcased-activated.service",
            "./upcased@0.service",
        ],
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.is_empty(),
        "systemd-analyze verify:\n{said}"
    );
}

#[test]
fn the_units_are_hardened() {
    if !have_tool("systemd-analyze") {
        return;
    }
    let dir = units();
    // --threshold is the exposure level times ten: the check fails above it.
    for (unit, threshold) in [
        ("./upcased.service", "20"),
        ("./upcased@0.service", "20"),
        ("./upcased-activated.service", "10"),
    ] {
        let out = systemd_analyze(
            &dir,
            &[
                "security",
                "--offline=true",
                &format!("--threshold={threshold}"),
                unit,
            ],
        );
        let report = String::from_utf8_lossy(&out.stdout);
        let overall = report
            .lines()
            .find(|l| l.contains("Overall exposure"))
            .unwrap_or("");
        eprintln!("{overall}");
        assert!(
            out.status.success(),
            "{unit} is above {threshold}:\n{report}"
        );
    }
    // The check can fail: a threshold below the self-binding unit's score does.
    let out = systemd_analyze(
        &dir,
        &[
            "security",
            "--offline=true",
            "--threshold=5",
            "./upcased.service",
        ],
    );
    assert!(
        !out.status.success(),
        "threshold 0.5 should reject the self-binding unit"
    );
}

/// `systemd-socket-activate` prints where it listens, then execs upcased
/// with the socket when the first client comes.
fn socket_activate(extra: &[&str], port: u16) -> Daemon {
    let listen = format!("127.0.0.1:{port}");
    let mut command = Command::new("systemd-socket-activate");
    command.args(extra).args(["-l", &listen]).arg(daemon_path());
    let daemon = Daemon::spawn(&mut command);
    daemon.wait_for_log("Listening on");
    daemon
}

#[test]
fn socket_activation_over_tcp() {
    if !have_tool("systemd-socket-activate") {
        return;
    }
    let port = free_port();
    let mut daemon = socket_activate(&[], port);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // This first client is what starts upcased.
    assert_eq!(round_trip(addr, b"activated\n"), b"ACTIVATED\n");
    daemon.wait_listening(1);
    assert_eq!(
        daemon.tcp,
        vec![addr],
        "the passed socket, not the configured 12000"
    );
    assert!(daemon.udp.is_empty());
    daemon.wait_for_log("configured listen addresses are ignored");
    assert_eq!(round_trip(addr, "straße".as_bytes()), b"STRASSE");
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

#[test]
fn socket_activation_over_udp() {
    if !have_tool("systemd-socket-activate") {
        return;
    }
    let port = free_port();
    let mut daemon = socket_activate(&["--datagram"], port);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = udp_client();
    // The first datagram starts upcased and waits in the socket for it.
    assert_eq!(udp_exchange(&client, addr, b"first"), b"FIRST");
    daemon.wait_listening(1);
    assert_eq!(daemon.udp, vec![addr]);
    assert!(daemon.tcp.is_empty());
    assert_eq!(udp_exchange(&client, addr, b"second"), b"SECOND");
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

#[test]
fn sockets_meant_for_another_process_are_left_alone() {
    // LISTEN_PID names someone else: the variables were inherited, and
    // descriptor 3 is not ours to take. The configured addresses are bound.
    let mut command = Command::new(daemon_path());
    command
        .args(LOOPBACK)
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "1");
    let daemon = Daemon::start_with(&mut command, 2);
    assert_eq!(round_trip(daemon.tcp[0], b"x"), b"X");
    assert_eq!(daemon.count_log("socket activation"), 0);
}

/// A service manager's end of `NOTIFY_SOCKET`.
struct Manager {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Manager {
    fn new(name: &str) -> Manager {
        let path =
            std::env::temp_dir().join(format!("upcase-test-{}-{name}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(PATIENCE)).unwrap();
        Manager { socket, path }
    }

    /// The next notification that is not a periodic status update (which
    /// may come between any two others on a slow machine).
    fn next(&self) -> String {
        loop {
            let message = self.any();
            if !is_periodic(&message) {
                return message;
            }
        }
    }

    /// The next periodic status update, skipping anything else.
    fn next_periodic(&self) -> String {
        loop {
            let message = self.any();
            if is_periodic(&message) {
                return message;
            }
        }
    }

    fn any(&self) -> String {
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).expect("a notification");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }
}

/// A `STATUS=` renewed on the daemon's own schedule (serving, draining).
fn is_periodic(message: &str) -> bool {
    message.starts_with("STATUS=serving ") || message.starts_with("STATUS=draining ")
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn sd_notify_ready_status_reloading_stopping() {
    let manager = Manager::new("notify");
    let config = TempFile::new(
        "notify.toml",
        "[tcp]\nlisten = [\"127.0.0.1:0\"]\n[udp]\nlisten = [\"127.0.0.1:0\"]\n",
    );
    let mut command = Command::new(daemon_path());
    command
        .args(["-c", config.path()])
        .env("NOTIFY_SOCKET", &manager.path);
    let mut daemon = Daemon::start_with(&mut command, 2);

    let ready = manager.next();
    let want_status = format!(
        "STATUS=serving tcp://{} udp://{} (0 connections open)",
        daemon.tcp[0], daemon.udp[0]
    );
    assert_eq!(ready, format!("READY=1\n{want_status}"));

    daemon.signal(libc::SIGHUP);
    let reloading = manager.next();
    let mut lines = reloading.lines();
    assert_eq!(lines.next(), Some("RELOADING=1"));
    let usec = lines
        .next()
        .and_then(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("MONOTONIC_USEC");
    assert!(usec.parse::<u64>().unwrap() > 0);
    assert_eq!(manager.next(), format!("READY=1\n{want_status}"));

    daemon.signal(libc::SIGTERM);
    assert_eq!(
        manager.next(),
        "STOPPING=1\nSTATUS=shutting down: 0 connections to finish"
    );
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

#[test]
fn status_says_what_is_going_on_while_serving_and_draining() {
    let manager = Manager::new("status");
    let config = TempFile::new(
        "status.toml",
        "shutdown_timeout = \"60s\"\n[tcp]\nlisten = [\"127.0.0.1:0\"]\n[udp]\nlisten = [\"127.0.0.1:0\"]\n",
    );
    let mut command = Command::new(daemon_path());
    command
        .args(["-c", config.path()])
        .env("NOTIFY_SOCKET", &manager.path);
    let mut daemon = Daemon::start_with(&mut command, 2);
    assert!(manager.next().starts_with("READY=1\n"));
    // A client that stays, and two messages from it.
    let mut client = connect(daemon.tcp[0]);
    client.write_all(b"a").unwrap();
    assert_eq!(read_exact(&mut client, 1), b"A");
    client.write_all(b"b").unwrap();
    assert_eq!(read_exact(&mut client, 1), b"B");
    // Renewed every 2 s: the update after the messages shows the client
    // (the first may have been made before it connected).
    let deadline = std::time::Instant::now() + PATIENCE;
    let serving = loop {
        let status = manager.next_periodic();
        if status.starts_with("STATUS=serving 1 connection, ") {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
    };
    let rate = serving
        .strip_prefix("STATUS=serving 1 connection, ")
        .and_then(|rest| rest.strip_suffix(" msgs/s, 0 errors"))
        .unwrap_or_else(|| panic!("{serving}"));
    assert!(rate.parse::<u64>().is_ok(), "{serving}");

    // Draining: the client keeps the shutdown going; the countdown comes
    // with an extension of systemd's stop timeout up to the deadline.
    daemon.signal(libc::SIGTERM);
    assert_eq!(
        manager.next(),
        "STOPPING=1\nSTATUS=shutting down: 1 connection to finish"
    );
    let draining = manager.next_periodic();
    let (status, extend) = draining
        .split_once('\n')
        .unwrap_or_else(|| panic!("{draining}"));
    let left: f64 = status
        .strip_prefix("STATUS=draining 1 connection, ")
        .and_then(|rest| rest.strip_suffix(" s left"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{draining}"));
    assert!(
        left > 60.0 - PATIENCE.as_secs_f64() && left <= 60.0,
        "{draining}"
    );
    let usec: u64 = extend
        .strip_prefix("EXTEND_TIMEOUT_USEC=")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{draining}"));
    // The time left, rounded to tenths in the status, plus 2 s.
    assert!(
        (usec as f64 / 1e6 - (left + 2.0)).abs() <= 0.1,
        "{draining}"
    );
    client.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut client), b"");
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

#[test]
fn sd_notify_watchdog_pings() {
    let manager = Manager::new("watchdog");
    let mut command = Command::new(daemon_path());
    command
        .args(LOOPBACK)
        .env("NOTIFY_SOCKET", &manager.path)
        .env("WATCHDOG_USEC", "200000");
    let daemon = Daemon::start_with(&mut command, 2);
    assert!(manager.next().starts_with("READY=1\n"));
    // Several pings come, each with a status line.
    for _ in 0..3 {
        let ping = manager.next();
        assert!(ping.starts_with("WATCHDOG=1\nSTATUS=serving "), "{ping}");
    }
    drop(daemon);
}

#[test]
fn no_notification_outside_systemd() {
    // Without NOTIFY_SOCKET nothing is sent, and nothing complains.
    let daemon = Daemon::start_with(
        Command::new(daemon_path())
            .args(LOOPBACK)
            .env_remove("NOTIFY_SOCKET"),
        2,
    );
    assert_eq!(round_trip(daemon.tcp[0], b"q"), b"Q");
    // The daemon's answer to SIGUSR1 comes after anything it logged while
    // starting: once it is read, a "notify" line is not merely still in
    // the pipe (the reader thread lags on a loaded machine).
    daemon.counters();
    assert_eq!(daemon.count_log("notify"), 0);
    // The control: with a NOTIFY_SOCKET nobody listens on, the daemon does
    // try (and says it cannot), so the silence above means it did not try.
    let gone = std::env::temp_dir().join(format!("upcase-no-manager-{}", std::process::id()));
    let tried = Daemon::start_with(
        Command::new(daemon_path())
            .args(LOOPBACK)
            .env("NOTIFY_SOCKET", &gone),
        2,
    );
    // The warning follows the "listening on" lines (READY=1 is sent after
    // them): wait for it rather than count what has been read so far.
    tried.wait_for_log("cannot notify the service manager");
    assert_eq!(round_trip(tried.tcp[0], b"q"), b"Q");
}

#[test]
fn logs_carry_syslog_priorities_when_stderr_is_the_journal() {
    // A pipe stands in for journald's stream; JOURNAL_STREAM names it.
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors, which we own from here on.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    use std::os::fd::FromRawFd;
    let (read, write) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    // SAFETY: fstat on a descriptor we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::fstat(fds[1], &mut st) }, 0);
    let mut child = Command::new(daemon_path())
        .args(LOOPBACK)
        .env_remove("RUST_LOG")
        .env("JOURNAL_STREAM", format!("{}:{}", st.st_dev, st.st_ino))
        .stdin(Stdio::null())
        .stderr(Stdio::from(write))
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(read).lines();
    let first = lines.next().unwrap().unwrap();
    let second = lines.next().unwrap().unwrap();
    assert!(
        first.starts_with("<6>listening on tcp://127.0.0.1:"),
        "{first}"
    );
    assert!(
        second.starts_with("<6>listening on udp://127.0.0.1:"),
        "{second}"
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.starts_with("<6>shutting down")),
        "{rest:?}"
    );
    assert!(
        rest.iter().all(|l| l.starts_with('<')),
        "every line has a priority: {rest:?}"
    );
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn without_the_journal_logs_keep_env_loggers_format() {
    // JOURNAL_STREAM inherited but stderr elsewhere (our pipe): no prefixes.
    let mut command = Command::new(daemon_path());
    command.args(LOOPBACK).env("JOURNAL_STREAM", "1:1");
    let daemon = Daemon::start_with(&mut command, 2);
    let line = daemon.wait_for_log("listening on tcp://");
    assert!(line.starts_with('[') && line.contains("INFO"), "{line}");
}

#[test]
fn reuse_port_lets_two_processes_share_a_port_and_both_serve() {
    let port = free_port();
    let config = format!(
        "reuse_port = true\n[tcp]\nlisten = [\"127.0.0.1:{port}\"]\n[udp]\nlisten = [\"127.0.0.1:{port}\"]\n"
    );
    let file = TempFile::new("reuse.toml", &config);
    let first = Daemon::start(&["-c", file.path()], 2);
    let second = Daemon::start(&["-c", file.path()], 2);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for i in 0..200 {
        let line = format!("client {i}\n");
        assert_eq!(
            round_trip(addr, line.as_bytes()),
            line.to_uppercase().as_bytes()
        );
    }
    // The kernel spread the clients: each process accepted some.
    for daemon in [&first, &second] {
        daemon.signal(libc::SIGUSR1);
        let line = daemon.wait_for_log("counters:");
        assert!(
            !line.contains(" accepted=0 "),
            "one process served nobody: {line}"
        );
    }
    // Without reuse_port, the port is taken.
    let plain = TempFile::new("noreuse.toml", &config.replace("reuse_port = true", ""));
    let out = run_daemon(&["-c", plain.path()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
