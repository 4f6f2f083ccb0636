//! A real load balancer in front: three upcased hosts, HAProxy (TCP mode,
//! `send-proxy-v2`, `agent-check`) or nginx `stream` (`proxy_protocol on`)
//! in front of them, clients behind it; every one a network namespace of
//! its own on a private segment ([`crate::netns`]). What a client sends is
//! checked byte for byte (`upcase-bench` across the balancer, exact bytes
//! for `nc` and the test's own clients); which host served what is read
//! from each host's counters (SIGUSR1) and from HAProxy's stats socket.
//!
//! ```text
//!   client1 192.0.2.21 ─┐                 ┌─ h1 192.0.2.11  upcased
//!   client2 192.0.2.22 ─┼─ br0 in hub ────┼─ h2 192.0.2.12  upcased
//!                       │  192.0.2.2      └─ h3 192.0.2.13  upcased
//!                       │  HAProxy or nginx, port 12000
//! ```
//!
//! Root only: elsewhere each test is skipped with a printed reason (and
//! fails under `CI=true`, where `.ci/run` installs every tool).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::netns::{self, Net};
use crate::util::*;

/// The balancer's address and port, on the hub (the namespace is ours, so
/// a fixed port cannot collide).
const FRONT: &str = "192.0.2.2:12000";
const HUB_ADDR: &str = "192.0.2.2";
/// The hosts and their addresses.
const HOSTS: [(&str, &str); 3] = [
    ("h1", "192.0.2.11"),
    ("h2", "192.0.2.12"),
    ("h3", "192.0.2.13"),
];
const CLIENT1: (&str, &str) = ("client1", "192.0.2.21");
const CLIENT2: (&str, &str) = ("client2", "192.0.2.22");
/// HAProxy's health-check and agent-check interval, and how many failed
/// checks mark a server down.
const CHECK_INTER_MS: u64 = 300;
const CHECK_FALL: u64 = 2;
/// nginx's stream module as Debian's libnginx-mod-stream installs it.
const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

fn front() -> SocketAddr {
    FRONT.parse().unwrap()
}

/// One upcased host.
struct Host {
    name: &'static str,
    /// The TCP listener the balancer sends to.
    tcp: SocketAddr,
    /// The agent-check listener.
    agent: SocketAddr,
    daemon: Daemon,
}

impl Host {
    /// Open connections now (SIGUSR1, then the counters line).
    fn open(&self) -> u64 {
        counter(&self.daemon.counters(), " open=")
    }
}

/// Which balancer is in front.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Haproxy,
    Nginx,
}

/// Everything one test runs. Fields drop in order: the processes go before
/// the namespaces they run in.
struct Topology {
    hosts: Vec<Host>,
    balancer: Daemon,
    kind: Kind,
    /// HAProxy's stats socket.
    stats: String,
    net: Net,
}

/// Whether this machine can run the test: root, `ip`, the balancer and
/// `nc`; otherwise the test is skipped with the reason printed.
fn available(kind: Kind) -> bool {
    if !netns::available() || !have_tool("nc") {
        return false;
    }
    match kind {
        Kind::Haproxy => have_tool("haproxy"),
        Kind::Nginx => {
            if !have_tool("nginx") {
                return false;
            }
            if !std::path::Path::new(NGINX_STREAM_MODULE).exists() {
                skip(&format!(
                    "{NGINX_STREAM_MODULE} is missing (apt-get install libnginx-mod-stream; .ci/run does)"
                ));
                return false;
            }
            true
        }
    }
}

/// The config of a host at `addr`: its one TCP listener requires the
/// PROXY header, which only the balancer (at [`HUB_ADDR`]) may send, and
/// its agent answers HAProxy's agent check; `extra_tcp` goes into the
/// `[tcp]` table.
fn host_config(addr: &str, extra_tcp: &str) -> String {
    format!(
        "shutdown_timeout = \"30s\"\n\
         [tcp]\n\
         listen = []\n\
         proxy_listen = [\"{addr}:0\"]\n\
         proxy_trusted = [\"{HUB_ADDR}/32\"]\n\
         {extra_tcp}\n\
         [udp]\n\
         listen = []\n\
         [agent]\n\
         listen = [\"{addr}:0\"]\n"
    )
}

impl Topology {
    /// Builds the namespaces, starts the three hosts (`extra_tcp` added to
    /// their `[tcp]` table) and the balancer, and waits until the balancer
    /// answers through every host.
    fn start(tag: &str, kind: Kind, extra_tcp: &str) -> Topology {
        let mut net = Net::new(tag, HUB_ADDR);
        for (name, addr) in HOSTS.iter().chain(&[CLIENT1, CLIENT2]) {
            net.add_host(name, addr);
        }
        let hosts: Vec<Host> = HOSTS
            .iter()
            .map(|&(name, addr)| {
                let config = net.file(&format!("{name}.toml"), &host_config(addr, extra_tcp));
                // Its two listeners: PROXY, and the agent.
                let daemon =
                    Daemon::start_with(net.command(name, daemon_path()).args(["-c", &config]), 2);
                let tcp = daemon.proxy[0];
                let agent = daemon.agent[0];
                Host {
                    name,
                    tcp,
                    agent,
                    daemon,
                }
            })
            .collect();
        let stats = net.dir().join("haproxy.sock").to_str().unwrap().to_owned();
        let balancer = match kind {
            Kind::Haproxy => {
                let config = net.file("haproxy.cfg", &haproxy_config(&stats, &hosts));
                Daemon::spawn(net.command("hub", "haproxy").args(["-db", "-f", &config]))
            }
            Kind::Nginx => {
                let config = net.file("nginx.conf", &nginx_config(&net, &hosts));
                let prefix = format!("{}/", net.dir().display());
                Daemon::spawn(
                    net.command("hub", "nginx")
                        .args(["-p", &prefix, "-c", &config, "-e", "stderr"]),
                )
            }
        };
        let topology = Topology {
            hosts,
            balancer,
            kind,
            stats,
            net,
        };
        match kind {
            Kind::Haproxy => {
                topology.wait_servers("all UP, agents answering", |s| {
                    s.iter().zip(HOSTS).all(|(s, (name, _))| {
                        // Checked, and the agent answered (`up ready 100%`).
                        s.name == name && s.status == "UP" && s.agent_status == "L7OK"
                    })
                });
            }
            Kind::Nginx => {
                // nginx has no stats: ready is when it answers.
                let deadline = Instant::now() + PATIENCE;
                topology.net.run_in("client1", || loop {
                    match exchange(front(), b"ready\n") {
                        Ok(reply) if reply == b"READY\n" => return,
                        other => assert!(
                            Instant::now() < deadline,
                            "nginx never answered: {other:?}\n{}",
                            topology.balancer.lines().join("\n")
                        ),
                    }
                    thread::sleep(Duration::from_millis(50));
                });
            }
        }
        topology
    }

    /// Open connections on every host, in host order.
    fn open(&self) -> Vec<u64> {
        self.hosts.iter().map(Host::open).collect()
    }

    /// Waits until the hosts hold `total` connections together; returns
    /// each host's share. A host counts HAProxy's health checks among its
    /// open connections (they carry a header, and are served): behind
    /// HAProxy, each host's count must also be what HAProxy has sessions
    /// on it, so that no check is taken for a client's connection.
    fn wait_open(&self, total: u64) -> Vec<u64> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let open = self.open();
            if open.iter().sum::<u64>() == total {
                if self.kind == Kind::Nginx {
                    return open;
                }
                let sessions: Vec<u64> = self.servers().iter().map(|s| s.scur).collect();
                if sessions == open {
                    return open;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the hosts never held {total} connections together: {open:?}"
            );
        }
    }

    /// Asserts that no host closed a connection for its PROXY header (bad,
    /// missing, or from an untrusted peer): every one the balancer opened,
    /// health checks included, carried a header the host accepted.
    fn assert_headers_accepted(&self) {
        for h in &self.hosts {
            let line = h.daemon.counters();
            assert_eq!(counter(&line, " proxy="), 0, "{}: {line}", h.name);
            assert_eq!(counter(&line, " untrusted="), 0, "{}: {line}", h.name);
        }
    }

    /// HAProxy's view of the servers (`show stat` on its stats socket).
    fn servers(&self) -> Vec<ServerStat> {
        assert_eq!(self.kind, Kind::Haproxy);
        server_stats(&self.stats)
    }

    /// Waits until HAProxy's servers satisfy `done`; returns them.
    fn wait_servers(&self, what: &str, done: impl Fn(&[ServerStat]) -> bool) -> Vec<ServerStat> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            assert!(
                !exited(&self.balancer),
                "haproxy exited:\n{}",
                self.balancer.lines().join("\n")
            );
            if std::path::Path::new(&self.stats).exists() {
                if let Ok(servers) = try_server_stats(&self.stats) {
                    if servers.len() == HOSTS.len() && done(&servers) {
                        return servers;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "HAProxy's servers never {what}: {servers:#?}\n{}",
                        self.balancer.lines().join("\n")
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "HAProxy's stats socket never answered:\n{}",
                self.balancer.lines().join("\n")
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `upcase-bench ARGS --addr FRONT --json` in `client`'s
    /// namespace, in the background.
    fn bench(&self, client: &str, args: &[&str]) -> Child {
        self.net
            .command(client, env!("CARGO_BIN_EXE_upcase-bench"))
            .args(args)
            .args(["--addr", FRONT, "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn upcase-bench")
    }

    /// `nc` in `client`'s namespace gets its line back in upper case,
    /// exactly.
    fn assert_nc_upcases(&self, client: &str) {
        let line = "hello wörld, straße\n";
        assert_bytes_eq(
            &self.nc(client, line.as_bytes()),
            &expected(line.as_bytes()),
        );
    }

    /// The load every test puts on: `upcase-bench` from client1, 30
    /// connections for 4 s, unicode requests, every reply verified.
    fn load(&self) -> Child {
        self.bench(
            "client1",
            &[
                "tcp",
                "-c",
                "30",
                "--duration",
                "4s",
                "--warmup",
                "0s",
                "--payload",
                "utf8",
            ],
        )
    }

    /// Runs `nc -N FRONT` in `client`'s namespace with `input` on its stdin;
    /// returns what it printed.
    fn nc(&self, client: &str, input: &[u8]) -> Vec<u8> {
        let (host, port) = FRONT.split_once(':').unwrap();
        let out = run_piped(
            self.net.command(client, "nc").args(["-N", host, port]),
            input,
        );
        assert!(
            out.status.success(),
            "nc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

/// Whether `process` has exited (a zombie, or gone), without reaping it.
fn exited(process: &Daemon) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", process.pid())).map_or(true, |stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
    })
}

/// Asserts that every host holds a fair part of the 30 connections of
/// [`Topology::load`] (round robin gives each 10; at least 5 is asked).
fn assert_spread(open: &[u64]) {
    for ((name, _), n) in HOSTS.iter().zip(open) {
        assert!(*n >= 5, "{name} got {n} of 30 connections: {open:?}");
    }
}

/// The report of a finished `upcase-bench --json`, checked to be JSON.
fn bench_report(child: Child) -> serde_json::Value {
    let out = child.wait_with_output().expect("wait for upcase-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "upcase-bench printed no JSON ({e}), exit {}:\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `errors.KEY` of a bench report.
fn bench_errors(report: &serde_json::Value, key: &str) -> u64 {
    report["errors"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("no errors.{key} in {report}"))
}

/// Every error a bench report counts.
fn bench_error_total(report: &serde_json::Value) -> u64 {
    report["errors"]
        .as_object()
        .expect("errors in the report")
        .values()
        .map(|v| v.as_u64().expect("a count"))
        .sum()
}

/// One textbook exchange: connect, send `request`, half-close, read the
/// reply to the server's EOF.
fn exchange(addr: SocketAddr, request: &[u8]) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr, PATIENCE)?;
    stream.set_read_timeout(Some(PATIENCE))?;
    stream.set_write_timeout(Some(PATIENCE))?;
    stream.write_all(request)?;
    stream.shutdown(Shutdown::Write)?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    Ok(reply)
}

/// A connection held open after one verified exchange of `request`
/// (no half-close); `None` when the server closed it unanswered.
fn hold(addr: SocketAddr, request: &[u8]) -> Option<TcpStream> {
    let mut stream = connect(addr);
    stream.write_all(request).expect("send");
    let want = expected(request);
    let mut reply = vec![0; want.len()];
    let mut got = 0;
    while got < reply.len() {
        match stream.read(&mut reply[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            // A refusal may come as a reset rather than a FIN.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read a held connection's reply: {e}"),
        }
    }
    if got == 0 {
        return None;
    }
    assert_bytes_eq(&reply[..got], &want);
    Some(stream)
}

/// One HAProxy server, as `show stat` reports it.
#[derive(Debug, Clone)]
struct ServerStat {
    name: String,
    /// `UP`, `DOWN`, `DRAIN`, `UP 1/2`, ...
    status: String,
    /// Sessions now, and since start.
    scur: u64,
    stot: u64,
    /// Connections that failed on this server and went to another.
    wredis: u64,
    /// What the last agent check said (`L7OK`, ...).
    agent_status: String,
}

fn server_stats(socket: &str) -> Vec<ServerStat> {
    try_server_stats(socket).unwrap_or_else(|e| panic!("HAProxy stats socket {socket}: {e}"))
}

/// `show stat` on HAProxy's stats socket, the servers of backend `be`.
fn try_server_stats(socket: &str) -> io::Result<Vec<ServerStat>> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(PATIENCE))?;
    stream.write_all(b"show stat\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .and_then(|h| h.strip_prefix("# "))
        .ok_or_else(|| io::Error::other(format!("no CSV header in {text:?}")))?
        .split(',')
        .collect();
    let mut servers = Vec::new();
    for line in lines {
        let row: HashMap<&str, &str> = header.iter().copied().zip(line.split(',')).collect();
        if row.get("pxname") != Some(&"be") || matches!(row.get("svname"), None | Some(&"BACKEND"))
        {
            continue;
        }
        let num = |key: &str| row.get(key).and_then(|v| v.parse().ok()).unwrap_or(0);
        let text = |key: &str| row.get(key).copied().unwrap_or("").to_owned();
        servers.push(ServerStat {
            name: text("svname"),
            status: text("status"),
            scur: num("scur"),
            stot: num("stot"),
            wredis: num("wredis"),
            agent_status: text("agent_status"),
        });
    }
    Ok(servers)
}

/// HAProxy in TCP mode: round robin over the hosts, PROXY v2 to them, a
/// connect that fails retried on another server (`option redispatch`),
/// health checks and agent checks every [`CHECK_INTER_MS`]; servers'
/// state changes logged on stderr (connections are not); the admin stats
/// socket at `stats`.
fn haproxy_config(stats: &str, hosts: &[Host]) -> String {
    let mut servers = String::new();
    for h in hosts {
        // Health checks send the header too (v2 LOCAL: the balancer's own
        // connection), or the host would count each as a bad header.
        servers.push_str(&format!(
            "    server {} {} send-proxy-v2 check check-send-proxy",
            h.name, h.tcp
        ));
        servers.push_str(&format!(
            " agent-check agent-addr {} agent-port {} agent-inter {CHECK_INTER_MS}ms",
            h.agent.ip(),
            h.agent.port()
        ));
        servers.push('\n');
    }
    format!(
        "global\n\
         \x20   log stderr format raw local0 info\n\
         \x20   stats socket {stats} mode 600 level admin\n\
         defaults\n\
         \x20   mode tcp\n\
         \x20   log global\n\
         \x20   timeout connect 2s\n\
         \x20   timeout client 60s\n\
         \x20   timeout server 60s\n\
         \x20   retries 3\n\
         \x20   option redispatch 1\n\
         frontend fe\n\
         \x20   bind {FRONT}\n\
         \x20   no log\n\
         \x20   default_backend be\n\
         backend be\n\
         \x20   balance roundrobin\n\
         \x20   default-server inter {CHECK_INTER_MS}ms fall {CHECK_FALL} rise 1\n\
         {servers}"
    )
}

/// nginx `stream`: round robin over the hosts; a connect that fails is
/// retried on the next one and marks its host failed for a while (nginx's
/// free edition has no active checks: `max_fails` is all it knows). A
/// client's half-close is passed on (`proxy_half_close`; by default nginx
/// would close both ways at the client's FIN, before the replies came).
fn nginx_config(net: &Net, hosts: &[Host]) -> String {
    let mut servers = String::new();
    for h in hosts {
        servers.push_str(&format!(
            "        server {} max_fails=1 fail_timeout=30s;\n",
            h.tcp
        ));
    }
    let dir = net.dir().display();
    format!(
        "load_module {NGINX_STREAM_MODULE};\n\
         daemon off;\n\
         worker_processes 1;\n\
         pid {dir}/nginx.pid;\n\
         error_log stderr notice;\n\
         events {{ worker_connections 1024; }}\n\
         stream {{\n\
         \x20   upstream hosts {{\n\
         {servers}\
         \x20   }}\n\
         \x20   server {{\n\
         \x20       listen {FRONT};\n\
         \x20       proxy_pass hosts;\n\
         \x20       proxy_protocol on;\n\
         \x20       proxy_connect_timeout 2s;\n\
         \x20       proxy_next_upstream on;\n\
         \x20       proxy_half_close on;\n\
         \x20   }}\n\
         }}\n"
    )
}

/// Connections from one client spread over every host behind HAProxy, and
/// every byte comes back upper-cased: `nc`, then `upcase-bench` with 30
/// connections (each host's counters show its share while they are open).
#[test]
fn haproxy_spreads_connections_over_the_hosts() {
    if !available(Kind::Haproxy) {
        return;
    }
    let t = Topology::start("spread", Kind::Haproxy, "");
    t.assert_nc_upcases("client1");

    let bench = t.load();
    let open = t.wait_open(30);
    let report = bench_report(bench);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["connections_up"], 30, "{report}");
    assert!(report["msgs_per_s"].as_f64().unwrap() > 0.0, "{report}");
    eprintln!("haproxy spread of 30 connections over h1, h2, h3: {open:?}; {report}");
    assert_spread(&open);
    t.assert_headers_accepted();
}

/// Exchange number `i` of a textbook client through the balancer: its
/// own request, the reply checked to the byte; the error in words.
fn textbook(client: &str, i: u64) -> Result<(), String> {
    let request = format!("{client} {i:06} {MIXED_LINE}");
    match exchange(front(), request.as_bytes()) {
        Ok(reply) if reply == expected(request.as_bytes()) => Ok(()),
        Ok(reply) => Err(format!(
            "exchange {i}: got {:?}",
            String::from_utf8_lossy(&reply)
        )),
        Err(e) => Err(format!("exchange {i}: {e}")),
    }
}

/// Textbook clients in `client`'s namespace, one after another, each a
/// new connection with its own request, every reply checked to the byte;
/// they run until `stop` is set, then say how many exchanges succeeded
/// and what went wrong in the others.
fn clients_until(
    net: &Net,
    client: &str,
    stop: &std::sync::atomic::AtomicBool,
    done: &std::sync::atomic::AtomicU64,
) -> Vec<String> {
    use std::sync::atomic::Ordering;
    net.run_in(client, || {
        let mut failures = Vec::new();
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            match textbook(client, i) {
                Ok(()) => {
                    done.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => failures.push(e),
            }
            i += 1;
        }
        failures
    })
}

/// Sets its flag when dropped: the clients of [`clients_until`] stop
/// also when the test fails while they run (a scope waits for them).
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Waits until `done` has counted `n` more exchanges than `from`.
fn wait_exchanges(done: &std::sync::atomic::AtomicU64, from: u64, n: u64) -> u64 {
    let mut now = from;
    wait_until("the clients made their exchanges", || {
        now = done.load(std::sync::atomic::Ordering::SeqCst);
        now >= from + n
    });
    now
}

/// `kill -9` one host under load behind HAProxy: exactly the bench's
/// connections on it fail; HAProxy's health check marks it down within
/// its interval; connects that reach the dead host before that are
/// retried on the others, so new clients see no error, and once it is
/// down not one new connection is sent to it.
#[test]
fn haproxy_routes_around_a_killed_host() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    if !available(Kind::Haproxy) {
        return;
    }
    let mut t = Topology::start("kill", Kind::Haproxy, "");
    let bench = t.load();
    let open = t.wait_open(30);
    let on_victim = open[2];
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    t.hosts[2].daemon.signal(libc::SIGKILL);
    let killed = Instant::now();
    // Until the process is gone its listener still takes connections
    // (which then die with it): new clients start once it is reaped.
    let _ = t.hosts[2].daemon.wait_exit();
    let (failures, figures) = thread::scope(|scope| {
        let clients = scope.spawn(|| clients_until(&t.net, "client2", &stop, &done));
        let _stop = StopOnDrop(&stop);
        let down = t.wait_servers("marked h3 down", |s| s[2].status.starts_with("DOWN"));
        let took = killed.elapsed();
        // After the mark: more exchanges, none of which may reach h3.
        let before = done.load(Ordering::SeqCst);
        let marked = before;
        let after = wait_exchanges(&done, marked, 30);
        let servers = t.servers();
        stop.store(true, Ordering::SeqCst);
        let failures = clients.join().unwrap();
        (failures, (before, took, down, after - marked, servers))
    });
    let (before, took, down, after, servers) = figures;
    let report = bench_report(bench);
    eprintln!(
        "haproxy kill -9 h3 (open {open:?}): marked down after {took:?}; \
         {before} exchanges before the mark ({} of them retried on another host), \
         {after} after it, failures {failures:?}; bench errors {}; {report}",
        down[2].wredis, report["errors"]
    );
    assert!(failures.is_empty(), "new clients saw errors: {failures:?}");
    // Down after `fall` failed checks, each `inter` apart (the first may
    // start up to one interval after the kill).
    let interval = Duration::from_millis(CHECK_INTER_MS * (CHECK_FALL + 1));
    assert!(
        took <= interval + LATE_MARGIN,
        "h3 marked down after {took:?}"
    );
    assert_eq!(
        servers[2].stot, down[2].stot,
        "HAProxy sent connections to h3 after marking it down"
    );
    // Only connections on the killed host failed, each once: at most
    // the bench's connections on h3, and the kill was seen. Not exactly
    // that many: a session HAProxy had not finished connecting to h3 at
    // the kill is retried on another host (`retries`, `option
    // redispatch`) and its client never notices (seen once on a loaded
    // machine: 8 errors with 10 sessions on h3).
    let errors = bench_error_total(&report);
    assert!(
        (1..=on_victim).contains(&errors),
        "h3 held {on_victim} of the bench's connections, {errors} failed: {report}"
    );
    assert_eq!(bench_errors(&report, "mismatch"), 0, "{report}");
    // The killed host's connections may not have completed their first
    // exchange yet; every other one did.
    assert!(
        report["connections_up"].as_u64().unwrap() >= 30 - on_victim,
        "{report}"
    );
}

/// nginx `stream` in front: connections spread over the hosts, and after
/// `kill -9` of one host only its connections fail; every new client is
/// served by the others (a refused connect is retried on the next host,
/// `proxy_next_upstream`, and marks the host failed, `max_fails`).
#[test]
fn nginx_stream_spreads_and_routes_around_a_killed_host() {
    if !available(Kind::Nginx) {
        return;
    }
    let mut t = Topology::start("nginx", Kind::Nginx, "");
    t.assert_nc_upcases("client1");

    let bench = t.load();
    let open = t.wait_open(30);
    assert_spread(&open);
    // nginx sends PROXY v1, the text header.
    t.assert_headers_accepted();
    let accepted = |h: &Host| counter(&h.daemon.counters(), " accepted=");
    let survivors_before: u64 = t.hosts[..2].iter().map(accepted).sum();
    t.hosts[2].daemon.signal(libc::SIGKILL);
    let _ = t.hosts[2].daemon.wait_exit();
    let exchanges = 30;
    let failures = t.net.run_in("client2", || {
        let mut failures = Vec::new();
        for i in 0..exchanges {
            if let Err(e) = textbook("client2", i) {
                failures.push(e);
            }
        }
        failures
    });
    let survivors_after: u64 = t.hosts[..2].iter().map(accepted).sum();
    let report = bench_report(bench);
    eprintln!(
        "nginx spread of 30 connections over h1, h2, h3: {open:?}; after kill -9 h3: \
         {} new connections on h1+h2 for {exchanges} exchanges, failures {failures:?}; \
         bench errors {}; {report}",
        survivors_after - survivors_before,
        report["errors"]
    );
    assert!(failures.is_empty(), "new clients saw errors: {failures:?}");
    // nginx makes no health checks: the survivors' new connections are
    // exactly the new clients.
    assert_eq!(survivors_after - survivors_before, exchanges);
    assert_eq!(bench_error_total(&report), open[2], "{report}");
    assert_eq!(bench_errors(&report, "mismatch"), 0, "{report}");
    // The killed host's connections may not have completed their first
    // exchange yet; every other one did.
    assert!(
        report["connections_up"].as_u64().unwrap() >= 30 - open[2],
        "{report}"
    );
}

/// `max_connections_per_ip` behind HAProxy counts the real client, whose
/// address the PROXY v2 header carries, not HAProxy's: with a limit of 2,
/// client1 holds 2 connections on each host, client2 2 more on each (the
/// balancer's one address now has 4 there), and client1's next connection
/// on every host is refused.
#[test]
fn haproxy_per_ip_limit_counts_the_real_client() {
    if !available(Kind::Haproxy) {
        return;
    }
    let t = Topology::start("perip", Kind::Haproxy, "max_connections_per_ip = 2");
    let open = |client: &str, n: usize| -> Vec<Option<TcpStream>> {
        t.net.run_in(client, || {
            (0..n)
                .map(|i| hold(front(), format!("{client} {i} {MIXED_LINE}").as_bytes()))
                .collect()
        })
    };
    // Round robin: six connections in a row are two on each host.
    let first = open("client1", 6);
    assert!(first.iter().all(Option::is_some), "client1 was refused");
    assert_eq!(t.wait_open(6), [2, 2, 2]);
    let second = open("client2", 6);
    assert!(
        second.iter().all(Option::is_some),
        "client2 was refused: the limit counted HAProxy's address"
    );
    assert_eq!(t.wait_open(12), [4, 4, 4]);
    let third = open("client1", 3);
    assert!(
        third.iter().all(Option::is_none),
        "client1 got past its limit of 2 per host"
    );
    let refused: Vec<u64> = t
        .hosts
        .iter()
        .map(|h| counter(&h.daemon.counters(), " limit="))
        .collect();
    eprintln!("haproxy per-ip limit 2: client1 6 held, client2 6 held, client1 3 more refused per host {refused:?}");
    assert_eq!(refused, [1, 1, 1]);
    assert_eq!(t.wait_open(12), [4, 4, 4]);
    drop((first, second));
}

/// What [`sigterm_under_load`] saw.
struct Sigterm {
    /// Connections each host held when h1 got SIGTERM.
    open: Vec<u64>,
    /// How long after the signal HAProxy showed h1 DRAIN, and h1 then.
    took: Duration,
    drained: ServerStat,
    /// h1 once new clients made 30 more exchanges after DRAIN, and once
    /// HAProxy marked it DOWN (its process gone).
    later: ServerStat,
    down: ServerStat,
    /// New clients' exchanges before the signal and after DRAIN, and what
    /// went wrong in any exchange.
    before: u64,
    after: u64,
    failures: Vec<String>,
    /// The bench's report, h1's exit status and its last counters line.
    report: serde_json::Value,
    status: std::process::ExitStatus,
    last: String,
}

/// SIGTERM to h1 behind HAProxy under load: 30 bench connections from
/// client1, one idle connection per host whose exchange is done (its
/// client has not hung up yet, so h1's shutdown lasts until it does), and
/// a stream of new textbook clients from client2.
fn sigterm_under_load(tag: &str) -> Sigterm {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let mut t = Topology::start(tag, Kind::Haproxy, "");
    let bench = t.load();
    let loaded = t.wait_open(30);
    // Round robin: three in a row are one on each host.
    let held: Vec<TcpStream> = t.net.run_in("client1", || {
        (0..3)
            .map(|i| {
                hold(front(), format!("held {i} {MIXED_LINE}").as_bytes())
                    .expect("a held connection answered")
            })
            .collect()
    });
    let open = t.wait_open(33);
    let one_more: Vec<u64> = loaded.iter().map(|n| n + 1).collect();
    assert_eq!(open, one_more, "the held connections are not one per host");
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let (failures, before, took, drained, after, later, down, status) = thread::scope(|scope| {
        let clients = scope.spawn(|| clients_until(&t.net, "client2", &stop, &done));
        let _stop = StopOnDrop(&stop);
        let before = wait_exchanges(&done, 0, 20);
        t.hosts[0].daemon.signal(libc::SIGTERM);
        let signalled = Instant::now();
        let drained = t.wait_servers("showed h1 DRAIN", |s| s[0].status.starts_with("DRAIN"));
        let took = signalled.elapsed();
        let from = done.load(Ordering::SeqCst);
        let after = wait_exchanges(&done, from, 30) - from;
        let later = t.servers();
        // The idle clients hang up: each reads the end of its connection,
        // nothing more (h1's FIN follows theirs: it drains).
        for mut stream in held {
            stream.shutdown(Shutdown::Write).expect("half-close");
            assert_eq!(read_to_eof(&mut stream), b"", "bytes after the reply");
        }
        let status = t.hosts[0].daemon.wait_exit();
        let down = t.wait_servers("marked h1 DOWN", |s| s[0].status.starts_with("DOWN"));
        stop.store(true, Ordering::SeqCst);
        let failures = clients.join().unwrap();
        (
            failures,
            before,
            took,
            drained[0].clone(),
            after,
            later[0].clone(),
            down[0].clone(),
            status,
        )
    });
    let report = bench_report(bench);
    let last = t.hosts[0].daemon.wait_for_log("shutdown complete");
    let run = Sigterm {
        open,
        took,
        drained,
        later,
        down,
        before,
        after,
        failures,
        report,
        status,
        last,
    };
    eprintln!(
        "haproxy SIGTERM h1 (open {:?}): DRAIN after {:?} ({} connects to h1 redispatched \
         before); {} exchanges before the signal, {} after DRAIN, failures {:?}; h1 {}, {}; \
         DOWN with {} sessions in all (DRAIN {}); bench errors {}",
        run.open,
        run.took,
        run.drained.wredis,
        run.before,
        run.after,
        run.failures,
        run.status,
        run.last,
        run.down.stot,
        run.drained.stot,
        run.report["errors"]
    );
    run
}

/// SIGTERM one host under load behind HAProxy: its agent says `drain`,
/// HAProxy shows it DRAIN within an agent interval and from then on sends
/// it nothing; no byte is lost and no new client sees an error. The host
/// answers every request it received and cuts nothing (exit 0, `cut=0`);
/// the bench verifies every reply, and its only errors are connections
/// the host itself closed (at most the ones it held).
#[test]
fn haproxy_drains_a_host_on_sigterm() {
    if !available(Kind::Haproxy) {
        return;
    }
    let run = sigterm_under_load("term");
    let interval = Duration::from_millis(2 * CHECK_INTER_MS);
    assert!(
        run.took <= interval + LATE_MARGIN,
        "DRAIN after {:?}",
        run.took
    );
    assert_eq!(
        run.later.stot, run.drained.stot,
        "HAProxy sent h1 connections after DRAIN"
    );
    assert_eq!(
        run.down.stot, run.drained.stot,
        "HAProxy sent h1 connections after DRAIN"
    );
    assert!(
        run.failures.is_empty(),
        "new clients saw errors: {:?}",
        run.failures
    );
    assert!(run.status.success(), "h1 exited with {}", run.status);
    assert_eq!(counter(&run.last, " cut="), 0, "{}", run.last);
    let report = &run.report;
    for key in [
        "mismatch",
        "missing",
        "reset",
        "no_eof",
        "connect_failed",
        "connect_timeout",
        "other",
    ] {
        assert_eq!(bench_errors(report, key), 0, "{key}: {report}");
    }
    // h1 held one idle connection besides the bench's.
    let bench_on_h1 = run.open[0] - 1;
    assert!(
        bench_errors(report, "unexpected_close") <= bench_on_h1,
        "more connections closed than h1's {bench_on_h1} bench connections: {report}"
    );
    assert_eq!(report["connections_up"], 30, "{report}");
}

/// The rest of issue 15's drain: the connections a draining host holds
/// run until their clients end them, so not even the bench sees an error;
/// its listeners stay open until HAProxy has read `drain`, so no connect
/// HAProxy sent it was refused and redispatched.
#[test]
fn haproxy_drain_lets_open_connections_finish() {
    if !available(Kind::Haproxy) {
        return;
    }
    let run = sigterm_under_load("finish");
    assert_eq!(run.report["ok"], true, "{}", run.report);
    assert_eq!(run.down.wredis, 0, "connects to h1 redispatched");
}
