//! Shared helpers: servers in-process and as a real process, clients, checks.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use upcase::config::Config;
use upcase::server::{Counters, Handle, Server};

/// upcased's flags for TCP and UDP on loopback, ports chosen by the kernel.
pub const LOOPBACK: [&str; 4] = ["--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"];

/// How long any single wait in a test may take before it fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A config serving TCP and UDP on 127.0.0.1 with kernel-chosen ports.
pub fn loopback_config() -> Config {
    let mut config = Config::default();
    config.tcp.listen = vec!["127.0.0.1:0".parse().unwrap()];
    config.udp.listen = vec!["127.0.0.1:0".parse().unwrap()];
    config
}

/// A server running on a thread of the test process.
pub struct InProcess {
    pub tcp: SocketAddr,
    pub udp: SocketAddr,
    /// The PROXY listeners (`[tcp] proxy_listen`), in config order.
    pub proxy: Vec<SocketAddr>,
    /// The agent-check sockets (`[agent] listen`), in config order.
    pub agent: Vec<SocketAddr>,
    handle: Handle,
    thread: Option<JoinHandle<Counters>>,
}

impl InProcess {
    pub fn start(config: Config) -> InProcess {
        let server = Server::bind(config).expect("bind on loopback");
        let tcp = server
            .tcp_addrs()
            .first()
            .copied()
            .unwrap_or(([0, 0, 0, 0], 0).into());
        let udp = server
            .udp_addrs()
            .first()
            .copied()
            .unwrap_or(([0, 0, 0, 0], 0).into());
        let proxy = server.proxy_addrs();
        let agent = server.agent_addrs();
        let handle = server.handle();
        let thread = thread::spawn(move || server.run().expect("server run"));
        InProcess {
            tcp,
            udp,
            proxy,
            agent,
            handle,
            thread: Some(thread),
        }
    }

    /// Graceful shutdown; returns the final counters.
    pub fn stop(mut self) -> Counters {
        self.handle.shutdown();
        self.thread.take().unwrap().join().expect("server thread")
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.handle.shutdown();
            let _ = thread.join();
        }
    }
}

/// A TCP client with timeouts, so a broken server fails the test instead of hanging it.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// Connects to a PROXY listener and sends `header`, exactly these bytes, as
/// a balancer does first on each connection (`upcase::proxy::encode` makes
/// them as HAProxy and nginx do; tests also write them out by hand).
pub fn connect_with_header(addr: SocketAddr, header: &[u8]) -> TcpStream {
    let mut stream = connect(addr);
    stream.write_all(header).expect("send PROXY header");
    stream
}

/// Whether the server closes `stream` without a byte of reply: EOF or a
/// reset, and nothing read before it.
pub fn closed_unanswered(stream: &mut TcpStream) -> bool {
    let mut got = Vec::new();
    match stream.read_to_end(&mut got) {
        Ok(_) => got.is_empty(),
        Err(e) => got.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// What the agent check on `addr` says: everything up to its EOF, the way
/// HAProxy's `agent-check` connects and reads (sending nothing).
pub fn agent_says(addr: SocketAddr) -> String {
    let mut stream = connect(addr);
    String::from_utf8(read_to_eof(&mut stream)).expect("the agent's line is text")
}

/// Reads exactly `n` bytes.
pub fn read_exact(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    stream.read_exact(&mut buf).expect("read reply");
    buf
}

/// Reads until EOF; panics on an error (a reset is an error).
pub fn read_to_eof(stream: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).expect("read to EOF");
    buf
}

/// Sends `request`, half-closes, and returns everything up to the server's EOF.
pub fn round_trip(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = connect(addr);
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        let request = request.to_vec();
        thread::spawn(move || {
            stream.write_all(&request).expect("send request");
            stream
                .shutdown(std::net::Shutdown::Write)
                .expect("half-close");
        })
    };
    let reply = read_to_eof(&mut stream);
    writer.join().unwrap();
    reply
}

/// A UDP client bound to loopback with a receive timeout: [`PATIENCE`],
/// like every other wait, so that a reply a loaded machine delays is
/// waited for; no test infers "not answered" from it.
pub fn udp_client() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    socket
}

/// Sends one datagram and waits for its reply.
pub fn udp_exchange(socket: &UdpSocket, server: SocketAddr, request: &[u8]) -> Vec<u8> {
    socket.send_to(request, server).expect("send datagram");
    let mut buf = vec![0; 70_000];
    let (n, from) = socket.recv_from(&mut buf).expect("reply datagram");
    assert_eq!(from, server, "reply from the server's address");
    buf.truncate(n);
    buf
}

/// Text with ASCII, two- and three-byte characters and characters whose upper
/// case is longer (ß -> SS, ﬁ -> FI, ŉ -> ʼN, ΐ -> three code points).
pub const MIXED_LINE: &str = "hello wörld, straße ﬁsh ŉ ΐ été — 東京 ok\n";

/// `len` bytes or more of repeated mixed text (whole lines).
pub fn mixed_text(len: usize) -> Vec<u8> {
    let mut text = Vec::with_capacity(len + MIXED_LINE.len());
    let mut i = 0u64;
    while text.len() < len {
        text.extend_from_slice(format!("{i:08} ").as_bytes());
        text.extend_from_slice(MIXED_LINE.as_bytes());
        i += 1;
    }
    text
}

/// The reference: what the server must answer for a whole stream.
pub fn expected(input: &[u8]) -> Vec<u8> {
    upcase::transform::upcase(upcase::transform::Mode::Unicode, input)
}

/// Checks that `received` is the unicode uppercase of a prefix of the valid
/// UTF-8 `input` (a character cut at the end passing through raw, as the
/// server does when a stream stops mid-character), and returns that prefix's
/// length in bytes.
pub fn uppercased_prefix_len(input: &str, received: &[u8]) -> usize {
    let mut out = 0;
    let mut consumed = 0;
    for c in input.chars() {
        // No char upper-cases to more than three chars of four bytes.
        let mut upper_buf = [0u8; 12];
        let mut len = 0;
        for u in c.to_uppercase() {
            len += u.encode_utf8(&mut upper_buf[len..]).len();
        }
        let upper = &upper_buf[..len];
        if received[out..].starts_with(upper) {
            out += upper.len();
            consumed += c.len_utf8();
            continue;
        }
        let rest = &received[out..];
        assert!(
            rest.len() < c.len_utf8() && input.as_bytes()[consumed..].starts_with(rest),
            "reply diverges from the uppercase of the input at reply byte {out} (input byte {consumed}): \
             got {:?}, expected {:?}",
            String::from_utf8_lossy(&rest[..rest.len().min(40)]),
            String::from_utf8_lossy(upper),
        );
        return consumed + rest.len();
    }
    assert_eq!(
        out,
        received.len(),
        "reply longer than the uppercase of the whole input"
    );
    consumed
}

/// Asserts two byte strings are equal, reporting the first difference
/// instead of dumping megabytes.
pub fn assert_bytes_eq(got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let window = |b: &[u8]| {
        String::from_utf8_lossy(&b[at.saturating_sub(20)..(at + 20).min(b.len())]).into_owned()
    };
    panic!(
        "bytes differ at {at} (got {} bytes, want {}): got {:?}, want {:?}",
        got.len(),
        want.len(),
        window(got),
        window(want)
    );
}

/// The real `upcased` binary, with its stderr collected line by line.
pub struct Daemon {
    pub child: Child,
    pub tcp: Vec<SocketAddr>,
    pub udp: Vec<SocketAddr>,
    /// `[tcp] proxy_listen` sockets (`listening on tcp://ADDR (PROXY protocol)`).
    pub proxy: Vec<SocketAddr>,
    /// `[agent] listen` sockets (`listening on tcp://ADDR (agent)`).
    pub agent: Vec<SocketAddr>,
    /// The Prometheus endpoint's addresses (`listening on tcp://ADDR (metrics)`).
    pub metrics: Vec<SocketAddr>,
    log: Arc<(Mutex<Vec<String>>, Condvar)>,
    reader: Option<JoinHandle<()>>,
}

/// Path of the built daemon.
pub fn daemon_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_upcased"))
}

impl Daemon {
    /// Starts `upcased ARGS` and waits for `sockets` "listening on" lines.
    pub fn start(args: &[&str], sockets: usize) -> Daemon {
        Daemon::start_with(Command::new(daemon_path()).args(args), sockets)
    }

    /// Starts `upcased -c FILE` on loopback port 0 (TCP and UDP), FILE
    /// holding `config`; the file lives as long as the returned guard.
    pub fn with_config(name: &str, config: &str) -> (TempFile, Daemon) {
        Daemon::with_config_listening(name, config, 2)
    }

    /// As [`Daemon::with_config`], waiting for `sockets` "listening on"
    /// lines (the config adds PROXY or agent listeners).
    pub fn with_config_listening(name: &str, config: &str, sockets: usize) -> (TempFile, Daemon) {
        let file = TempFile::new(name, config);
        let mut command = Command::new(daemon_path());
        command.args(Daemon::config_args(&file));
        (file, Daemon::start_with(&mut command, sockets))
    }

    /// `-c FILE` and TCP and UDP on loopback port 0.
    pub fn config_args(file: &TempFile) -> [&str; 6] {
        [
            "-c",
            file.path(),
            "--tcp",
            "127.0.0.1:0",
            "--udp",
            "127.0.0.1:0",
        ]
    }

    /// Spawns `command` (the daemon, or something that execs it) with its
    /// stderr collected, and waits for `sockets` "listening on" lines.
    pub fn start_with(command: &mut Command, sockets: usize) -> Daemon {
        let mut daemon = Daemon::spawn(command);
        daemon.wait_listening(sockets);
        daemon
    }

    /// Spawns `command` with its stderr collected, without waiting.
    pub fn spawn(command: &mut Command) -> Daemon {
        let mut child = command
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn upcased");
        let stderr = child.stderr.take().unwrap();
        let log: Arc<(Mutex<Vec<String>>, Condvar)> = Arc::default();
        let reader = {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let (lines, changed) = &*log;
                    lines.lock().unwrap().push(line);
                    changed.notify_all();
                }
            })
        };
        Daemon {
            child,
            tcp: Vec::new(),
            udp: Vec::new(),
            proxy: Vec::new(),
            agent: Vec::new(),
            metrics: Vec::new(),
            log,
            reader: Some(reader),
        }
    }

    /// Waits for `sockets` "listening on" lines and records their addresses.
    pub fn wait_listening(&mut self, sockets: usize) {
        let daemon = self;
        let deadline = Instant::now() + PATIENCE;
        loop {
            let lines = daemon.lines();
            let listening: Vec<&String> = lines
                .iter()
                .filter(|l| l.contains("listening on "))
                .collect();
            if listening.len() >= sockets {
                for line in listening {
                    let url = line.split("listening on ").nth(1).unwrap().trim();
                    // `tcp://ADDR`, or `tcp://ADDR (what)` for the sockets
                    // that serve something else than plain TCP.
                    let (url, what) = url.split_once(' ').unwrap_or((url, ""));
                    if let Some(addr) = url.strip_prefix("tcp://") {
                        let addr = addr.parse().expect("tcp address in log");
                        match what {
                            "(PROXY protocol)" => daemon.proxy.push(addr),
                            "(agent)" => daemon.agent.push(addr),
                            "(metrics)" => daemon.metrics.push(addr),
                            _ => daemon.tcp.push(addr),
                        }
                    } else if let Some(addr) = url.strip_prefix("udp://") {
                        daemon.udp.push(addr.parse().expect("udp address in log"));
                    }
                }
                return;
            }
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!(
                    "upcased exited with {status} before listening:\n{}",
                    lines.join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "upcased did not listen in time:\n{}",
                lines.join("\n")
            );
            daemon.wait_log_change(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Every stderr line so far.
    pub fn lines(&self) -> Vec<String> {
        self.log.0.lock().unwrap().clone()
    }

    fn wait_log_change(&self, at_most: Duration) {
        let (lines, changed) = &*self.log;
        let guard = lines.lock().unwrap();
        let _ = changed.wait_timeout(guard, at_most).unwrap();
    }

    /// Waits for a log line containing `needle`; returns it.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| l.contains(needle)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?}:\n{}",
                self.lines().join("\n")
            );
            self.wait_log_change(Duration::from_millis(50));
        }
    }

    /// How many log lines contain `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(needle)).count()
    }

    /// Sends SIGUSR1 and waits for the counters line it asks for (a
    /// `counters:` line beyond those seen before the signal); returns it.
    /// Lines arrive in the order the daemon wrote them, so every line the
    /// daemon logged before this one has been collected too: an absence
    /// checked after it is an absence, not a line still in the pipe.
    pub fn counters(&self) -> String {
        let before = self.count_log("counters:");
        self.signal(libc::SIGUSR1);
        let deadline = Instant::now() + PATIENCE;
        loop {
            let fresh = self
                .lines()
                .into_iter()
                .filter(|l| l.contains("counters:"))
                .nth(before);
            if let Some(line) = fresh {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no counters line after SIGUSR1:\n{}",
                self.lines().join("\n")
            );
            self.wait_log_change(Duration::from_millis(50));
        }
    }

    /// Asks for counters lines (SIGUSR1) until one satisfies `done`; returns
    /// it. For a state the daemon reaches on its own schedule (a close it
    /// has yet to see), each try waiting for the daemon's own answer.
    pub fn counters_until(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let line = self.counters();
            if done(&line) {
                return line;
            }
            assert!(Instant::now() < deadline, "never {what}: {line}");
        }
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with our own child's pid and a valid signal number.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
    }

    /// Waits until the process is stopped (state `T` in /proc/PID/stat),
    /// as it is some time after kill(SIGSTOP) returns, not at once.
    pub fn wait_stopped(&self) {
        wait_until("stopped", || {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
                .expect("read /proc/PID/stat");
            // The state follows the parenthesised command name.
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('T'))
        });
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                if let Some(reader) = self.reader.take() {
                    reader.join().unwrap();
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "upcased did not exit:\n{}",
                self.lines().join("\n")
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Resident memory of the daemon, in KiB, from /proc/PID/status.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes `command` run with a soft and hard `RLIMIT_NOFILE` of `limit`
/// (set in the child before exec), to drive the daemon out of descriptors.
pub fn limit_descriptors(command: &mut Command, limit: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit in the child before exec touches nothing shared.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Runs `upcased ARGS` to completion (for --check-config, bad configs, ...).
pub fn run_daemon(args: &[&str]) -> std::process::Output {
    Command::new(daemon_path())
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run upcased")
}

/// Runs `upcased ARGS --check-config`, which must succeed, and parses the
/// effective configuration it prints.
pub fn effective_config(args: &[&str]) -> Config {
    let mut args = args.to_vec();
    args.push("--check-config");
    let out = run_daemon(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    Config::from_toml(&text, std::path::Path::new("<--check-config>"))
        .unwrap_or_else(|e| panic!("--check-config output does not parse back: {e}\n{text}"))
}

/// The number after `key` (e.g. `" accepted="`) in a counters line.
pub fn counter(line: &str, key: &str) -> u64 {
    let at = line
        .find(key)
        .unwrap_or_else(|| panic!("no {key:?} in {line}"));
    line[at + key.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("no number after {key:?} in {line}"))
}

/// Waits until `done()` holds, for a state only polling can see (a kernel
/// queue); fails after [`PATIENCE`] saying it never came to be `what`.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "never {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

/// Bytes written on `stream` that the peer's kernel has not acknowledged yet.
pub fn unsent_bytes(stream: &TcpStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ on sockets) writes one c_int.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    assert_eq!(rc, 0, "ioctl(SIOCOUTQ)");
    n as usize
}

/// How many connections wait in the accept queue of the TCP listener on
/// `addr` (IPv4): for a listening socket, /proc/net/tcp's `rx_queue` is
/// that queue's length (and `tx_queue` its limit).
pub fn accept_queue(addr: SocketAddr) -> usize {
    let SocketAddr::V4(v4) = addr else {
        panic!("accept_queue: {addr} is not IPv4")
    };
    // The address as the kernel prints it: the IP in host byte order
    // (x86 and arm64 are little-endian), the port in network order.
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(v4.ip().octets()),
        v4.port()
    );
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 4 && f[1] == local && f[3] == "0A")
        .and_then(|f| f[4].split_once(':'))
        .and_then(|(_, rx)| usize::from_str_radix(rx, 16).ok())
        .unwrap_or_else(|| panic!("no listener on {addr} in /proc/net/tcp"))
}

/// How much earlier than its deadline a test accepts an event the daemon
/// times. Each test reads its clock *before* the event the daemon's clock
/// starts from (a write, a connect, a signal), and the daemon never fires
/// early (its timerfd is armed relative to a clock read before arming), so
/// a correct daemon needs no slack at all; these few milliseconds only
/// keep clock-read granularity from ever deciding a test.
pub const CLOCK_SLACK: Duration = Duration::from_millis(10);

/// How much later than its deadline an event may come on a slow, loaded
/// machine (two cores, CPU hogs, a 10,000-connection churn beside it):
/// generous, and still far below [`PATIENCE`], so that "never" fails.
pub const LATE_MARGIN: Duration = Duration::from_secs(5);

/// Asserts that `what` took `elapsed`, which must be `deadline` (measured
/// from a clock read before the event the daemon counts from) and may be
/// late by up to [`LATE_MARGIN`], but never early beyond [`CLOCK_SLACK`].
pub fn assert_at_deadline(what: &str, elapsed: Duration, deadline: Duration) {
    assert!(
        elapsed + CLOCK_SLACK >= deadline,
        "{what} after {elapsed:?}, before its {deadline:?}"
    );
    assert!(
        elapsed <= deadline + LATE_MARGIN,
        "{what} after {elapsed:?}, more than {LATE_MARGIN:?} past its {deadline:?}"
    );
}

/// Waits until a writer that counts its progress in `sent` makes none for
/// 200 ms (every buffer between it and a server that stopped reading is
/// full); returns the count then. A writer that has sent nothing yet has
/// not stalled, it has not started (a loaded machine may not have run its
/// thread in 200 ms).
pub fn wait_until_stalled(sent: &std::sync::atomic::AtomicUsize) -> usize {
    let deadline = Instant::now() + PATIENCE;
    let mut last = 0;
    loop {
        thread::sleep(Duration::from_millis(200));
        let now = sent.load(std::sync::atomic::Ordering::SeqCst);
        if now == last && now > 0 {
            return last;
        }
        assert!(Instant::now() < deadline, "the writer never stalled");
        last = now;
    }
}

/// A temporary file that is removed when dropped.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(name: &str, contents: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("upcase-test-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A free TCP port on 127.0.0.1 (and, the kernel willing, on ::1): bind port
/// 0, note the port, release it. Another process could take it in between;
/// on a test machine that is rare enough.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether a command-line tool is installed; when it is not, the calling
/// test is [`skip`]ped (which fails it under `CI=true`), and returns.
pub fn have_tool(tool: &str) -> bool {
    let found = tool_installed(tool);
    if !found {
        skip(&format!(
            "{tool} is not installed (apt-get install it to run this test; .ci/run does)"
        ));
    }
    found
}

/// Whether a command-line tool is installed, without skipping anything.
pub fn tool_installed(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Every test skipped in this process, as "TEST: REASON", for the summary
/// printed at exit.
static SKIPPED: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Registers the exit hook that prints that summary, once.
static SKIP_SUMMARY: std::sync::Once = std::sync::Once::new();

/// Marks the calling test as skipped for `reason`; the test then returns
/// (and libtest counts it as passed, which is why this exists). Under
/// `CI=true` it fails the test instead: CI installs every tool, so a skip
/// there is a broken setup.
///
/// libtest captures what a test prints with `eprintln!` and shows it only
/// for failures, so a skip printed that way is invisible. This writes
/// `SKIPPED: TEST: REASON` straight to the process's stderr (`write_all`
/// on the handle is not captured; only the print macros are), and at exit,
/// after libtest's summary, one more line counts them all.
pub fn skip(reason: &str) {
    // libtest names each test's thread after the test.
    let test = thread::current().name().unwrap_or("a test").to_owned();
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "under CI=true no test may skip, and {test} would: {reason}"
    );
    let line = format!("{test}: {reason}");
    let _ = std::io::stderr().write_all(format!("SKIPPED: {line}\n").as_bytes());
    SKIPPED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(line);
    SKIP_SUMMARY.call_once(|| {
        // SAFETY: atexit(3) with a function that takes no arguments, never
        // unwinds and only writes to stderr; it runs once, after main
        // returns or calls exit (libtest does either after its summary).
        unsafe { libc::atexit(print_skipped) };
    });
}

/// The exit hook: "N tests skipped", one line per skip. It must not panic
/// (it runs inside libc's exit), hence no unwrap anywhere.
extern "C" fn print_skipped() {
    let skipped = match SKIPPED.try_lock() {
        Ok(guard) => guard,
        Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        // A test thread still inside skip() as the process exits.
        Err(std::sync::TryLockError::WouldBlock) => return,
    };
    let mut text = format!(
        "{} {} skipped (libtest counted {} as passed):\n",
        skipped.len(),
        if skipped.len() == 1 { "test" } else { "tests" },
        if skipped.len() == 1 { "it" } else { "them" },
    );
    for line in skipped.iter() {
        text.push_str(&format!("    {line}\n"));
    }
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// Path of the built `upcase` client.
pub fn client_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_upcase"))
}

/// Runs `command` with `input` piped to its stdin from a thread (so a
/// program that sends and receives at once is never held up by the test),
/// and waits for it. The program may exit without reading everything (an
/// error it reports): the write then fails with a broken pipe, which is
/// left to the caller's checks of the output; any other write error fails.
pub fn run_piped(command: &mut Command, input: &[u8]) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", command.get_program()));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = thread::spawn(move || match stdin.write_all(&input) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e),
        _ => Ok(()),
    });
    let out = child.wait_with_output().expect("wait");
    feeder.join().unwrap().expect("feed stdin");
    out
}

/// Runs `upcase ARGS` with `input` piped to it.
pub fn run_client(args: &[&str], input: &[u8]) -> std::process::Output {
    run_piped(Command::new(client_path()).args(args), input)
}

/// A terminal for programs that need one (telnet, the interactive client):
/// a detached tmux session on a tmux server of its own (its own socket name),
/// which is killed on drop.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `command` (run by the shell) in an 80x20 window.
    pub fn start(name: &str, command: &str) -> Tmux {
        let tmux = Tmux {
            socket: format!("upcase-test-{}-{name}", std::process::id()),
        };
        tmux.run(&[
            "new-session",
            "-d",
            "-x",
            "80",
            "-y",
            "20",
            "-s",
            "t",
            command,
        ]);
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .env_remove("TMUX")
            .stdin(Stdio::null())
            .output()
            .expect("run tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `keys` (tmux key names: "hello", "Enter", "C-d", "C-]").
    pub fn send_keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// What the window shows now.
    pub fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "t"])
    }

    /// Waits until the window shows `needle`; returns the screen.
    pub fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} never appeared on the screen:\n{screen}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
