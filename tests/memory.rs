//! Memory under clients that read slowly or not at all: the daemon's own
//! allocations stay within their stated bound, and what a burst took is
//! given back when it ends.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use crate::util::*;

/// What the slow reader sends, over and over: ASCII, so the reply is the
/// same length and each reply byte can be checked against its position.
const PATTERN: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789 the slow reader\n";

/// A network namespace of the test's own (`ip netns add`), deleted on drop.
/// Its `lo` is up; its TCP sysctls start from the kernel's defaults.
struct Netns(String);

impl Netns {
    /// Creates it, or returns `None` (test skipped) where that cannot be done:
    /// not root, or no `ip`. Under `CI=true` neither may skip.
    fn create(name: &str) -> Option<Netns> {
        if !have_tool("ip") {
            return None;
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "this test needs root (network namespaces), and under CI=true no test may skip"
            );
            eprintln!("skipped: network namespaces need root");
            return None;
        }
        let ns = Netns(format!("upcase-test-{}-{name}", std::process::id()));
        // Left over from a run that was killed before its drop.
        if std::path::Path::new(&format!("/run/netns/{}", ns.0)).exists() {
            let _ = ns.ip(&["netns", "del", &ns.0]);
        }
        assert!(ns.ip(&["netns", "add", &ns.0]), "ip netns add {}", ns.0);
        assert!(ns.ip(&["-n", &ns.0, "link", "set", "lo", "up"]));
        Some(ns)
    }

    fn ip(&self, args: &[&str]) -> bool {
        std::process::Command::new("ip")
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Sets a sysctl of this namespace, e.g. `net/ipv4/tcp_wmem`.
    fn sysctl(&self, key: &str, value: &str) {
        let script = format!("echo '{value}' > /proc/sys/{key}");
        assert!(
            self.ip(&["netns", "exec", &self.0, "sh", "-c", &script]),
            "{key} = {value}"
        );
    }

    /// Moves the calling thread into the namespace: the sockets it creates,
    /// and the processes it starts, live there.
    fn enter(&self) {
        let file = std::fs::File::open(format!("/run/netns/{}", self.0)).expect("open netns");
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a descriptor we own, for this thread only.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.ip(&["netns", "del", &self.0]);
    }
}

/// A client whose receive buffer is as small as the kernel allows, set
/// before `connect` so the window it offers stays small.
fn connect_small_window(addr: std::net::SocketAddr) -> std::net::TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream = std::net::TcpStream::from(socket);
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    stream
}

#[test]
fn a_slow_reader_does_not_grow_the_output_buffer_without_bound() {
    let Some(ns) = Netns::create("slow-reader") else {
        return;
    };
    // Send buffers of at most 16 KiB: the daemon's socket takes only a few
    // KiB of replies at a time, as over a slow link, so its own queue of
    // replies never empties while the client keeps sending.
    ns.sysctl("net/ipv4/tcp_wmem", "4096 8192 16384");
    let ns = Arc::new(ns);
    // Everything runs on a thread inside the namespace (the daemon started
    // from it is in it too); the test thread stays where it was.
    let inside = {
        let ns = Arc::clone(&ns);
        thread::spawn(move || {
            ns.enter();
            slow_reader_body();
        })
    };
    if let Err(panic) = inside.join() {
        std::panic::resume_unwind(panic);
    }
}

fn slow_reader_body() {
    let daemon = Daemon::start(&LOOPBACK, 2);
    let addr = daemon.tcp[0];
    // Warm up: the shared buffers exist and have been touched.
    assert_eq!(round_trip(addr, b"warm up"), b"WARM UP");
    let baseline = daemon.rss_kib();

    let mut reader = connect_small_window(addr);
    let mut writer = reader.try_clone().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // The writer keeps the daemon's side supplied: whenever the daemon may
    // read again, input is waiting, so its queue of replies never empties.
    let sender = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let chunk: Vec<u8> = PATTERN
                .iter()
                .copied()
                .cycle()
                .take(PATTERN.len() * 1200)
                .collect();
            while !stop.load(Ordering::SeqCst) {
                // Blocks while the daemon holds back (back-pressure); the
                // error at the end (the test closed the socket) is expected.
                if writer.write_all(&chunk).is_err() {
                    break;
                }
            }
        })
    };
    // Read 8 MiB a KiB at a time, checking every byte. Counted in bytes,
    // not time: the same amount has gone through however slow the machine.
    const TOTAL: usize = 8 << 20;
    let upper: Vec<u8> = PATTERN.to_ascii_uppercase();
    let mut buf = [0u8; 1024];
    let mut got = 0;
    let mut peak = baseline;
    while got < TOTAL {
        let n = reader.read(&mut buf).expect("read a reply");
        assert!(n > 0, "EOF after {got} bytes");
        for (i, &b) in buf[..n].iter().enumerate() {
            assert_eq!(b, upper[(got + i) % upper.len()], "reply byte {}", got + i);
        }
        got += n;
        if got % (1 << 20) < n {
            peak = peak.max(daemon.rss_kib());
        }
    }
    let after = daemon.rss_kib();
    peak = peak.max(after);
    eprintln!(
        "slow reader: RSS {baseline} KiB before, peak {peak} KiB, {after} KiB after {} MiB read",
        TOTAL >> 20
    );
    stop.store(true, Ordering::SeqCst);
    // The writer holds a duplicate of the socket: shutting it down (not just
    // dropping ours) is what ends its blocked write.
    let _ = reader.shutdown(std::net::Shutdown::Both);
    sender.join().unwrap();
    // The bound on one connection's output buffer is max_pending_output
    // (64 KiB) plus one read's worth of replies (64 KiB times 3), 256 KiB;
    // 3 MiB leaves room for the allocator's own rounding. Without
    // reclaiming, the buffer holds every byte sent since it was last empty:
    // here that is most of the 8 MiB.
    assert!(
        peak <= baseline + 3072,
        "RSS rose from {baseline} KiB to {peak} KiB with one slow reader"
    );
}

/// The kernel's receive and send buffer sizes (`rb`, `tb` of `ss -m`'s
/// skmem) of the one socket `ss -tmnH FILTER...` lists.
fn skmem(filter: &[&str]) -> (u64, u64) {
    let out = std::process::Command::new("ss")
        .args(["-tmnH"])
        .args(filter)
        .output()
        .expect("run ss");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |name: &str| -> Vec<u64> {
        text.split(|c: char| c == ',' || c == '(' || c.is_whitespace())
            .filter_map(|f| f.strip_prefix(name))
            .filter_map(|v| v.parse().ok())
            .collect()
    };
    let (rb, tb) = (field("rb"), field("tb"));
    assert!(
        rb.len() == 1 && tb.len() == 1,
        "expected one socket from ss -tmnH {filter:?}:\n{text}"
    );
    (rb[0], tb[0])
}

#[test]
fn accepted_sockets_get_socket_buffer_and_a_reload_applies_to_new_ones() {
    if !have_tool("ss") {
        return;
    }
    let (config, daemon) =
        Daemon::with_config("socket-buffer.toml", "[tcp]\nsocket_buffer = \"128KiB\"\n");
    let addr = daemon.tcp[0];
    let sport = format!("sport = :{}", addr.port());
    // The daemon's end of a connection: its port is the source, the
    // client's the destination. Linux reports twice the size set.
    let daemon_side = |client: &std::net::TcpStream| {
        let dport = format!("dport = :{}", client.local_addr().unwrap().port());
        skmem(&["state", "established", &sport, "and", &dport])
    };
    let mut first = connect(addr);
    first.write_all(b"first").unwrap();
    assert_eq!(read_exact(&mut first, 5), b"FIRST");
    assert_eq!(daemon_side(&first), (2 * 131072, 2 * 131072));
    // The listener has it too (set before listen, for the handshake).
    assert_eq!(skmem(&["-l", &sport]).0, 2 * 131072);

    std::fs::write(&config.0, "[tcp]\nsocket_buffer = \"64KiB\"\n").unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_log("configuration reloaded");
    let mut second = connect(addr);
    second.write_all(b"second").unwrap();
    assert_eq!(read_exact(&mut second, 6), b"SECOND");
    assert_eq!(daemon_side(&second), (2 * 65536, 2 * 65536));
    assert_eq!(skmem(&["-l", &sport]).0, 2 * 65536);
    // A connection accepted before keeps what it was given.
    assert_eq!(daemon_side(&first), (2 * 131072, 2 * 131072));
}

/// A fresh counters line: sends SIGUSR1 and waits for the line it logs.
fn counters(daemon: &Daemon) -> String {
    let before = daemon.count_log("counters:");
    daemon.signal(libc::SIGUSR1);
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let lines = daemon.lines();
        let found: Vec<&String> = lines.iter().filter(|l| l.contains("counters:")).collect();
        if found.len() > before {
            return found[found.len() - 1].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no counters line after SIGUSR1"
        );
        thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The number after `name` (e.g. "open=") in a counters line.
fn counter(line: &str, name: &str) -> u64 {
    line.split(name)
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // After the name: state is field 3, utime 14 and stime 15.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Connects `count` clients that each send `request` and never read, and
/// waits until the daemon has stopped reading from every one of them (its
/// `bytes in` counter grew by at least `per_client` a client and then
/// stopped moving).
fn never_reading_burst(
    daemon: &Daemon,
    count: usize,
    request: &[u8],
    per_client: u64,
) -> Vec<std::net::TcpStream> {
    let start = counter(&counters(daemon), "bytes in=");
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        // Room for the whole request at once, so one blocking write returns.
        socket.set_send_buffer_size(2 * request.len()).unwrap();
        socket.connect(&daemon.tcp[0].into()).unwrap();
        let mut stream = std::net::TcpStream::from(socket);
        stream.set_write_timeout(Some(PATIENCE)).unwrap();
        stream.write_all(request).expect("send the request");
        clients.push(stream);
    }
    let deadline = std::time::Instant::now() + 3 * PATIENCE;
    let mut last = 0;
    loop {
        let line = counters(daemon);
        let read = counter(&line, "bytes in=") - start;
        if read >= count as u64 * per_client && read == last {
            return clients;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the clients never all stalled: {line}"
        );
        last = read;
        thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Waits until the counters say `open` connections are open.
fn wait_open(daemon: &Daemon, open: u64) -> String {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let line = counters(daemon);
        if counter(&line, "open=") == open {
            return line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "connections did not close: {line}"
        );
        thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn memory_taken_by_a_burst_of_never_reading_clients_is_given_back() {
    const CLIENTS: usize = 2000;
    let daemon = Daemon::start(&LOOPBACK, 2);
    let addr = daemon.tcp[0];
    assert_eq!(round_trip(addr, b"warm up"), b"WARM UP");
    let baseline = daemon.rss_kib();
    // Each client sends 256 KiB of text whose upper case is longer in
    // places and never reads: the daemon answers until the client's small
    // window and its own send buffer are full, queues replies up to
    // max_pending_output (64 KiB) and one read's worth, then stops reading.
    let request = mixed_text(256 * 1024);
    // A first burst that comes and goes whole: what it freed merges back
    // into the top of the heap, and glibc's own trimming returns it. It
    // leaves the allocator tuned to it (glibc raises its mmap threshold to
    // the largest chunk freed), so the buffers of the next burst come from
    // the heap.
    let first = never_reading_burst(&daemon, CLIENTS, &request, 65536);
    drop(first);
    wait_open(&daemon, 0);
    let between = daemon.rss_kib();
    // The second burst: all but the last client leave (with replies unread,
    // so the kernel resets each). The last one stays, as clients still
    // being served do: its buffer, allocated last, sits above the others,
    // so lowering the top of the heap gives nothing back.
    let mut second = never_reading_burst(&daemon, CLIENTS, &request, 65536);
    let peak = daemon.rss_kib();
    // The burst really took memory (64 KiB or more of replies a client),
    // or the check below would prove nothing.
    assert!(
        peak >= baseline + (CLIENTS * 32) as u64,
        "RSS only {peak} KiB at the burst's peak (baseline {baseline} KiB)"
    );
    let survivor = second.pop();
    let cpu = cpu_ticks(daemon.pid());
    drop(second);
    let line = wait_open(&daemon, 1);
    let cpu = cpu_ticks(daemon.pid()) - cpu;
    assert_eq!(
        counter(&line, "accepted="),
        2 * CLIENTS as u64 + 1,
        "{line}"
    );
    let after = daemon.rss_kib();
    eprintln!(
        "bursts of {CLIENTS} never-reading clients: RSS {baseline} KiB before, {between} KiB after the first, \
         {peak} KiB at the second's peak, {after} KiB after all but one closed \
         ({cpu} ticks of CPU to close them)"
    );
    drop(survivor);
    // Within twice the baseline, plus 1 MiB for the allocator's own
    // rounding and the one connection still open (at most 256 KiB).
    assert!(
        after <= 2 * baseline + 1024,
        "RSS stayed at {after} KiB after the burst (baseline {baseline} KiB, peak {peak} KiB)"
    );
}
