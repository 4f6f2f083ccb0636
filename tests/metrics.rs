//! What operators see: the Prometheus endpoint (checked by `promtool` and
//! scraped by a real Prometheus server), and the per-connection records.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// A daemon on loopback with the endpoint on a port of the kernel's choice.
fn with_metrics(name: &str, extra: &str) -> (TempFile, Daemon) {
    let config = format!(
        "{extra}\n[tcp]\nlisten = [\"127.0.0.1:0\"]\n[udp]\nlisten = [\"127.0.0.1:0\"]\n\
         [metrics]\nlisten = [\"127.0.0.1:0\"]\n"
    );
    let file = TempFile::new(name, &config);
    let daemon = Daemon::start(&["-c", file.path()], 3);
    assert_eq!(daemon.metrics.len(), 1, "{:?}", daemon.lines());
    (file, daemon)
}

/// Sends `request` as it is and reads the answer until the server closes.
fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = connect(addr);
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    String::from_utf8(answer).unwrap()
}

/// The body of a `GET /metrics`, after checking the head.
fn scrape(addr: SocketAddr) -> String {
    let answer = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: upcased\r\n\r\n");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
        "{head}"
    );
    assert!(
        head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())),
        "{head}"
    );
    body.to_owned()
}

/// The value of the sample line `series` (name and labels, exactly).
fn sample(body: &str, series: &str) -> String {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{body}"))
        .to_owned()
}

#[test]
fn the_endpoint_reports_what_the_counters_line_says() {
    let (_config, daemon) = with_metrics("metrics-values.toml", "");
    let m = daemon.metrics[0];
    assert_eq!(round_trip(daemon.tcp[0], b"hello\n"), b"HELLO\n");
    assert_eq!(round_trip(daemon.tcp[0], b"abc"), b"ABC");
    let udp = udp_client();
    assert_eq!(udp_exchange(&udp, daemon.udp[0], b"ping"), b"PING");
    // Both closes seen: the same numbers as the SIGUSR1 line.
    let line = daemon.counters_until("both closed", |l| counter(l, "done=") == 2);
    let body = scrape(m);
    assert_eq!(sample(&body, "upcased_connections_accepted_total"), "2");
    assert_eq!(
        sample(&body, "upcased_connections_closed_total{reason=\"done\"}"),
        "2"
    );
    for reason in [
        "reset",
        "idle",
        "error",
        "proxy",
        "untrusted",
        "cut",
        "handed_over",
        "limit",
    ] {
        let series = format!("upcased_connections_closed_total{{reason=\"{reason}\"}}");
        assert_eq!(sample(&body, &series), "0", "{reason}");
    }
    assert_eq!(sample(&body, "upcased_connections_open"), "0");
    assert_eq!(
        sample(&body, "upcased_received_bytes_total"),
        counter(&line, "bytes in=").to_string()
    );
    assert_eq!(sample(&body, "upcased_received_bytes_total"), "13");
    assert_eq!(sample(&body, "upcased_sent_bytes_total"), "13");
    assert_eq!(sample(&body, "upcased_udp_received_datagrams_total"), "1");
    assert_eq!(sample(&body, "upcased_udp_sent_datagrams_total"), "1");
    assert_eq!(sample(&body, "upcased_errors_total{kind=\"accept\"}"), "0");
    assert_eq!(sample(&body, "upcased_build_info{version=\"0.1.0\"}"), "1");
    assert_eq!(sample(&body, "upcased_reloads_total{result=\"ok\"}"), "0");
    // The process metrics are this process's.
    let rss: u64 = sample(&body, "process_resident_memory_bytes")
        .parse()
        .unwrap();
    assert!(rss > 1 << 20 && rss < 1 << 30, "{rss}");
    let fds: u64 = sample(&body, "process_open_fds").parse().unwrap();
    assert!((5..100).contains(&fds), "{fds}");
    let start: f64 = sample(&body, "process_start_time_seconds").parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(start <= now && start > now - 600.0, "{start} vs {now}");

    // A reload, then a rejected one: counted by result.
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_log("configuration reloaded");
    std::fs::write(&_config.0, "bogus = 1\n").unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_log("reload failed");
    let body = scrape(m);
    assert_eq!(sample(&body, "upcased_reloads_total{result=\"ok\"}"), "1");
    assert_eq!(
        sample(&body, "upcased_reloads_total{result=\"failed\"}"),
        "1"
    );
    assert_eq!(sample(&body, "upcased_config_last_reload_successful"), "0");
}

#[test]
fn bad_requests_get_their_status_and_never_reach_the_transform() {
    let (_config, daemon) = with_metrics("metrics-bad.toml", "");
    let m = daemon.metrics[0];
    let status = |request: &[u8]| {
        let answer = exchange(m, request);
        answer.lines().next().unwrap_or("").to_owned()
    };
    assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), "HTTP/1.1 404 Not Found");
    assert_eq!(
        status(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
        "HTTP/1.1 405 Method Not Allowed"
    );
    assert!(exchange(m, b"DELETE /metrics HTTP/1.1\r\n\r\n").contains("\r\nAllow: GET, HEAD\r\n"));
    assert_eq!(status(b"hello world\r\n\r\n"), "HTTP/1.1 400 Bad Request");
    let huge = [
        b"GET /metrics HTTP/1.1\r\nX: ".as_slice(),
        &[b'a'; 9000],
        b"\r\n\r\n",
    ]
    .concat();
    assert_eq!(
        status(&huge),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    // HEAD: the head alone.
    let head = exchange(m, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "{head}");
    // OpenMetrics when asked for.
    let om = exchange(
        m,
        b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0\r\n\r\n",
    );
    assert!(
        om.contains(
            "\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n"
        ),
        "{om}"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");
    // None of it was a client of the daemon's.
    let line = daemon.counters();
    assert_eq!(counter(&line, "accepted="), 0, "{line}");
    assert_eq!(counter(&line, "bytes in="), 0, "{line}");
}

#[test]
fn scrapers_are_outside_the_limits_and_bounded_on_their_own() {
    let (_config, daemon) = with_metrics("metrics-bounds.toml", "");
    let m = daemon.metrics[0];
    // Four silent scrapers take every place...
    let silent: Vec<TcpStream> = (0..4).map(|_| connect(m)).collect();
    // ... a fifth is closed at once, unanswered.
    let mut fifth = connect(m);
    let mut buf = [0u8; 64];
    let _ = fifth.write_all(b"GET /metrics HTTP/1.1\r\n\r\n");
    match fifth.read(&mut buf) {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!(
            "the fifth scraper got {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
    }
    // The daemon's own clients are served meanwhile.
    assert_eq!(round_trip(daemon.tcp[0], b"still here"), b"STILL HERE");
    // The silent ones are closed at the timeout; then scrapes work again.
    let started = Instant::now();
    for mut s in silent {
        assert_eq!(s.read(&mut buf).unwrap_or(0), 0);
    }
    assert!(started.elapsed() < PATIENCE);
    assert!(scrape(m).contains("upcased_connections_accepted_total 1\n"));
}

#[test]
fn scrapes_are_served_at_max_connections() {
    let (_config, daemon) = with_metrics("metrics-limit.toml", "");
    // Not max_connections = 1 in the file (the helper writes [tcp]): a
    // reload applies it live.
    let text = std::fs::read_to_string(&_config.0).unwrap();
    std::fs::write(
        &_config.0,
        text.replace(
            "[tcp]\n",
            "[tcp]\nmax_connections = 1\nmax_connections_per_ip = 1\n",
        ),
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_log("configuration reloaded");
    let mut held = connect(daemon.tcp[0]);
    held.write_all(b"x").unwrap();
    assert_eq!(read_exact(&mut held, 1), b"X");
    for _ in 0..3 {
        let body = scrape(daemon.metrics[0]);
        assert_eq!(sample(&body, "upcased_connections_open"), "1");
    }
}

/// `promtool check metrics` (the Prometheus project's linter) on both formats.
#[test]
fn promtool_accepts_the_output() {
    if !have_tool("promtool") {
        return;
    }
    let (_config, daemon) = with_metrics("metrics-promtool.toml", "log_connections = true");
    assert_eq!(round_trip(daemon.tcp[0], b"x"), b"X");
    let body = scrape(daemon.metrics[0]);
    let out = run_piped(
        Command::new("promtool").args(["check", "metrics"]),
        body.as_bytes(),
    );
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Prometheus server on loopback, its data in a folder of its own; killed
/// and removed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Prometheus {
    /// Scrapes `target` every second. `--web.listen-address` takes no port
    /// 0, so a free port is picked, and picked again if another process
    /// took it before Prometheus could bind it.
    fn start(target: SocketAddr) -> Prometheus {
        let dir =
            std::env::temp_dir().join(format!("upcase-test-{}-prometheus", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: upcased\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("run prometheus");
            let mut server = Prometheus {
                child,
                port,
                dir: dir.clone(),
            };
            let deadline = Instant::now() + PATIENCE * 3;
            loop {
                if server.get("/-/ready").starts_with("HTTP/1.1 200") {
                    return server;
                }
                if let Ok(Some(_)) = server.child.try_wait() {
                    break; // the port was taken: another one
                }
                assert!(Instant::now() < deadline, "prometheus never became ready");
                std::thread::sleep(Duration::from_millis(100));
            }
            // Dropping it would remove the folder the next try uses.
            std::mem::forget(server);
        }
        panic!("prometheus could not start on any port");
    }

    /// The whole answer to `GET path`, or "" if nothing listens.
    fn get(&self, path: &str) -> String {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return String::new();
        };
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        if s.write_all(request.as_bytes()).is_err() {
            return String::new();
        }
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// The value of the one series `query` returns, once it has one.
    fn query(&self, query: &str) -> Option<(serde_json::Value, String)> {
        let answer = self.get(&format!("/api/v1/query?query={query}"));
        let (_, body) = answer.split_once("\r\n\r\n")?;
        let json: serde_json::Value = serde_json::from_str(body).ok()?;
        let series = json["data"]["result"].get(0)?.clone();
        let value = series["value"][1].as_str()?.to_owned();
        Some((series["metric"].clone(), value))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_prometheus_server_scrapes_the_endpoint() {
    if !have_tool("prometheus") {
        return;
    }
    let (_config, daemon) = with_metrics("metrics-prometheus.toml", "");
    for _ in 0..3 {
        assert_eq!(round_trip(daemon.tcp[0], b"scraped"), b"SCRAPED");
    }
    daemon.counters_until("three closed", |l| counter(l, "done=") == 3);
    let prometheus = Prometheus::start(daemon.metrics[0]);
    let wait = |query: &str, want: &str| {
        let deadline = Instant::now() + PATIENCE * 3;
        loop {
            match prometheus.query(query) {
                Some((metric, value)) if value == want => return metric,
                other => assert!(Instant::now() < deadline, "{query}: {other:?}, want {want}"),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let up = wait("up", "1");
    assert_eq!(up["job"], "upcased");
    wait("upcased_connections_accepted_total", "3");
    wait("upcased_connections_closed_total{reason=\"done\"}", "3");
    wait("upcased_received_bytes_total", "21");
    let info = wait("upcased_build_info", "1");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["instance"], daemon.metrics[0].to_string());
}

/// The record a connection leaves with `log_connections = true`.
#[test]
fn log_connections_writes_one_record_per_connection() {
    let (config, daemon) = with_metrics("records.toml", "log_connections = true");
    let mut client = connect(daemon.tcp[0]);
    let me = client.local_addr().unwrap();
    client.write_all(b"record me").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut client), b"RECORD ME");
    let line = daemon.wait_for_log(&format!("connection peer={me} "));
    let record = line.split("] ").nth(1).expect("env_logger's prefix");
    let duration = record
        .split(' ')
        .find_map(|f| f.strip_prefix("duration_usec="))
        .and_then(|d| d.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{record}"));
    assert!(duration < PATIENCE.as_micros() as u64, "{record}");
    assert_eq!(
        record,
        format!("connection peer={me} duration_usec={duration} bytes_in=9 bytes_out=9 close_reason=done")
    );
    // Reloaded off: no more records.
    let text = std::fs::read_to_string(&config.0).unwrap();
    std::fs::write(&config.0, text.replace("log_connections = true", "")).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_log("configuration reloaded");
    let quiet = connect(daemon.tcp[0]);
    let quiet_addr = quiet.local_addr().unwrap();
    drop(quiet);
    daemon.counters_until("the second closed", |l| {
        counter(l, "accepted=") == 2 && counter(l, "open=") == 0
    });
    assert_eq!(
        daemon.count_log(&format!("connection peer={quiet_addr} ")),
        0
    );
}

#[test]
fn an_idle_connection_is_recorded_as_idle() {
    let (_config, daemon) = with_metrics("records-idle.toml", "log_connections = true");
    // The idle timeout is in [tcp], which the helper writes: set it live.
    let text = std::fs::read_to_string(&_config.0).unwrap();
    std::fs::write(
        &_config.0,
        text.replace("[tcp]\n", "[tcp]\nidle_timeout = \"300ms\"\n"),
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_log("configuration reloaded");
    let mut client = connect(daemon.tcp[0]);
    let me = client.local_addr().unwrap();
    client.write_all(b"zz").unwrap();
    assert_eq!(read_to_eof(&mut client), b"ZZ");
    let line = daemon.wait_for_log(&format!("connection peer={me} "));
    assert!(
        line.ends_with(" bytes_in=2 bytes_out=2 close_reason=idle"),
        "{line}"
    );
    let body = scrape(daemon.metrics[0]);
    assert_eq!(
        sample(&body, "upcased_connections_closed_total{reason=\"idle\"}"),
        "1"
    );
}

/// A daemon with a PROXY listener beside the endpoint, `[tcp]` keys `tcp`
/// added, `log_connections` on.
fn with_proxy_listener(name: &str, tcp: &str) -> (TempFile, Daemon) {
    let config = format!(
        "log_connections = true\n[tcp]\nlisten = [\"127.0.0.1:0\"]\n\
         proxy_listen = [\"127.0.0.1:0\"]\n{tcp}[udp]\nlisten = [\"127.0.0.1:0\"]\n\
         [metrics]\nlisten = [\"127.0.0.1:0\"]\n"
    );
    let file = TempFile::new(name, &config);
    let daemon = Daemon::start(&["-c", file.path()], 4);
    assert_eq!(daemon.proxy.len(), 1, "{:?}", daemon.lines());
    assert_eq!(daemon.metrics.len(), 1, "{:?}", daemon.lines());
    (file, daemon)
}

/// Behind a balancer the record names both: the balancer (the socket's
/// peer) and the client its PROXY header named; a bad header is recorded
/// `proxy`, and the metrics count it.
#[test]
fn a_proxied_connection_is_recorded_with_the_balancer_and_the_client() {
    let (_config, daemon) = with_proxy_listener("records-proxy.toml", "");
    let mut good = connect_with_header(
        daemon.proxy[0],
        b"PROXY TCP4 198.51.100.7 127.0.0.1 50412 12000\r\nproxied",
    );
    let balancer = good.local_addr().unwrap();
    good.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut good), b"PROXIED");
    let line = daemon.wait_for_log(&format!("connection peer={balancer} "));
    let record = line.split("] ").nth(1).expect("env_logger's prefix");
    let duration = record
        .split(' ')
        .find_map(|f| f.strip_prefix("duration_usec="))
        .unwrap_or_else(|| panic!("{record}"));
    assert_eq!(
        record,
        format!(
            "connection peer={balancer} proxied_peer=198.51.100.7:50412 \
             duration_usec={duration} bytes_in=7 bytes_out=7 close_reason=done"
        )
    );

    let mut bad = connect_with_header(daemon.proxy[0], b"GET / HTTP/1.1\r\n\r\n");
    let me = bad.local_addr().unwrap();
    assert!(closed_unanswered(&mut bad));
    let line = daemon.wait_for_log(&format!("connection peer={me} "));
    assert!(
        line.ends_with(" bytes_in=0 bytes_out=0 close_reason=proxy"),
        "{line}"
    );
    assert!(!line.contains("proxied_peer="), "{line}");
    let body = scrape(daemon.metrics[0]);
    for (reason, want) in [("done", "1"), ("proxy", "1"), ("untrusted", "0")] {
        let series = format!("upcased_connections_closed_total{{reason=\"{reason}\"}}");
        assert_eq!(sample(&body, &series), want, "{reason}");
    }
    assert_eq!(sample(&body, "upcased_connections_accepted_total"), "2");
}

/// A peer outside `proxy_trusted` is refused before it is served: counted
/// `untrusted` in the metrics, and no record.
#[test]
fn an_untrusted_balancer_is_counted_and_not_recorded() {
    let (_config, daemon) = with_proxy_listener(
        "records-untrusted.toml",
        "proxy_trusted = [\"192.0.2.0/24\"]\n",
    );
    let mut client = connect_with_header(
        daemon.proxy[0],
        b"PROXY TCP4 198.51.100.7 127.0.0.1 50412 12000\r\nspoofed",
    );
    let me = client.local_addr().unwrap();
    assert!(closed_unanswered(&mut client));
    daemon.counters_until("the untrusted close", |l| counter(l, "untrusted=") == 1);
    let body = scrape(daemon.metrics[0]);
    assert_eq!(
        sample(
            &body,
            "upcased_connections_closed_total{reason=\"untrusted\"}"
        ),
        "1"
    );
    assert_eq!(sample(&body, "upcased_connections_accepted_total"), "1");
    assert_eq!(daemon.count_log(&format!("connection peer={me} ")), 0);
}
