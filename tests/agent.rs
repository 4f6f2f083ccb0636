//! The HAProxy agent check (`[agent] listen`): one line, then close, with
//! the exact bytes for each state.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::num::NonZeroUsize;
use std::process::Command;

use crate::util::*;

fn agent_config() -> upcase::config::Config {
    let mut config = loopback_config();
    config.agent.listen = vec!["127.0.0.1:0".parse().unwrap()];
    config
}

/// A served client: its reply has come, so the daemon counts it open.
fn served(addr: SocketAddr) -> TcpStream {
    let mut c = connect(addr);
    c.write_all(b"hi").unwrap();
    assert_eq!(read_exact(&mut c, 2), b"HI");
    c
}

#[test]
fn up_with_a_weight_that_falls_as_connections_near_the_limit() {
    let mut config = agent_config();
    config.tcp.max_connections = NonZeroUsize::new(4).unwrap();
    let server = InProcess::start(config);
    let agent = server.agent[0];
    assert_eq!(agent_says(agent), "up ready 100%\n");
    let mut held = vec![served(server.tcp)];
    assert_eq!(agent_says(agent), "up ready 75%\n");
    // Agent checks are not connections: the weight does not move.
    assert_eq!(agent_says(agent), "up ready 75%\n");
    held.push(served(server.tcp));
    held.push(served(server.tcp));
    assert_eq!(agent_says(agent), "up ready 25%\n");
    held.push(served(server.tcp));
    // At max_connections (which the agent is exempt from): weight 0,
    // which HAProxy shows as DRAIN.
    assert_eq!(agent_says(agent), "up ready 0%\n");
    for c in &held {
        c.shutdown(Shutdown::Write).unwrap();
    }
    for mut c in held {
        assert_eq!(read_to_eof(&mut c), b"");
    }
    wait_until("every client closed", || {
        agent_says(agent) == "up ready 100%\n"
    });
    let counters = server.stop();
    assert_eq!(counters.conns_accepted, 4);
    assert_eq!(counters.bytes_in, 8);
}

#[test]
fn the_agent_is_exempt_from_max_connections_per_ip() {
    let mut config = agent_config();
    config.tcp.max_connections_per_ip = NonZeroUsize::new(1);
    let server = InProcess::start(config);
    let _held = served(server.tcp);
    // 127.0.0.1 is at its limit; its agent checks are answered all the same.
    for _ in 0..3 {
        assert_eq!(agent_says(server.agent[0]), "up ready 100%\n");
    }
    let counters = server.stop();
    assert_eq!((counters.conns_accepted, counters.closed_limit), (1, 0));
}

/// SIGTERM with a client still connected: the agent says `drain` while the
/// client is still being served, and until the process exits.
#[test]
fn drain_from_the_start_of_a_graceful_shutdown() {
    let config = "shutdown_timeout = \"30s\"\n[agent]\nlisten = [\"127.0.0.1:0\"]\n";
    let (_file, mut daemon) = Daemon::with_config_listening("agent-drain.toml", config, 3);
    let line = daemon.wait_for_log(" (agent)");
    assert!(
        line.ends_with(&format!("listening on tcp://{} (agent)", daemon.agent[0])),
        "{line}"
    );
    let agent = daemon.agent[0];
    assert_eq!(agent_says(agent), "up ready 100%\n");
    let mut client = served(daemon.tcp[0]);
    daemon.signal(libc::SIGTERM);
    daemon.wait_for_log("shutting down");
    assert_eq!(agent_says(agent), "drain\n");
    // The client is still connected and served: its FIN has not come, the
    // daemon waits for it (up to the 30 s deadline).
    client.write_all(b"late").unwrap();
    assert_eq!(read_exact(&mut client, 4), b"LATE");
    assert_eq!(agent_says(agent), "drain\n");
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut client), b"");
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

/// The drain behind a balancer (issue 15): after SIGTERM a connection open
/// before it is answered as before, a client connecting before the
/// balancer has read `drain` is accepted and answered, the listeners
/// close a grace after that read, and the daemon exits 0 as soon as its
/// clients have closed, nothing cut.
#[test]
fn a_drain_serves_old_and_new_clients_until_they_close() {
    let config = "shutdown_timeout = \"30s\"\n[agent]\nlisten = [\"127.0.0.1:0\"]\n";
    let (_file, mut daemon) = Daemon::with_config_listening("agent-drain-serve.toml", config, 3);
    let (tcp, agent) = (daemon.tcp[0], daemon.agent[0]);
    // The balancer reads the agent before the shutdown.
    assert_eq!(agent_says(agent), "up ready 100%\n");
    let mut old = served(tcp);
    daemon.signal(libc::SIGTERM);
    let line = daemon.wait_for_log("shutting down");
    assert!(
        line.ends_with(
            "shutting down, draining: 1 connection open, listeners open until the balancer \
             reads drain (deadline 30s, what is open in its last 5s is closed gracefully)"
        ),
        "{line}"
    );
    // Before the balancer's next read: the old connection is answered, a
    // new one accepted and answered.
    old.write_all("straße".as_bytes()).unwrap();
    assert_eq!(read_exact(&mut old, 7), "STRASSE".as_bytes());
    let mut new = connect(tcp);
    new.write_all(b"new one").unwrap();
    assert_eq!(read_exact(&mut new, 7), b"NEW ONE");
    // The balancer reads `drain`; a grace later the listeners close.
    assert_eq!(agent_says(agent), "drain\n");
    daemon.wait_for_log("draining: the balancer read drain");
    let line = daemon.wait_for_log("draining: listeners closed");
    assert!(line.ends_with(", 2 connections open"), "{line}");
    let refused = std::net::TcpStream::connect(tcp).map(|_| ()).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    // Both connections are still served, the agent still says `drain`.
    for (c, input, output) in [(&mut old, b"more", b"MORE"), (&mut new, b"last", b"LAST")] {
        c.write_all(input).unwrap();
        assert_eq!(read_exact(c, 4), output);
    }
    assert_eq!(agent_says(agent), "drain\n");
    for c in [&old, &new] {
        c.shutdown(Shutdown::Write).unwrap();
    }
    for mut c in [old, new] {
        assert_eq!(read_to_eof(&mut c), b"");
    }
    assert_eq!(daemon.wait_exit().code(), Some(0));
    daemon.wait_for_log("drained: every client closed its connection");
    let last = daemon.wait_for_log("shutdown complete");
    assert_eq!(counter(&last, " accepted="), 2, "{last}");
    assert_eq!(counter(&last, " open="), 0, "{last}");
    assert_eq!(closed_sum(&last), 2, "accepted = open + closed: {last}");
    assert_eq!(counter(&last, " done="), 2, "{last}");
    assert_eq!(counter(&last, " cut="), 0, "{last}");
    assert_eq!(counter(&last, " bytes in="), 2 + 7 + 7 + 4 + 4, "{last}");
}

/// A drain nobody reads (no agent check came before the SIGTERM): the
/// listeners close at once, open connections are still served, and in
/// the last quarter of `shutdown_timeout` they get the graceful close:
/// their replies, then the daemon's FIN.
#[test]
fn a_drain_ends_in_a_graceful_close_before_the_deadline() {
    let config = "shutdown_timeout = \"6s\"\n[agent]\nlisten = [\"127.0.0.1:0\"]\n";
    let (_file, mut daemon) = Daemon::with_config_listening("agent-drain-close.toml", config, 3);
    let tcp = daemon.tcp[0];
    let mut client = served(tcp);
    daemon.signal(libc::SIGTERM);
    let line = daemon.wait_for_log("shutting down");
    assert!(
        line.contains("no balancer has read the agent yet, listeners close now"),
        "{line}"
    );
    daemon.wait_for_log("draining: listeners closed");
    client.write_all(b"still").unwrap();
    assert_eq!(read_exact(&mut client, 5), b"STILL");
    assert_eq!(agent_says(daemon.agent[0]), "drain\n");
    // 4.5 s after the signal: the graceful close, our FIN after the replies.
    assert_eq!(read_to_eof(&mut client), b"");
    let line = daemon.wait_for_log("closing them gracefully");
    assert!(
        line.contains("draining: 1 connection still open with "),
        "{line}"
    );
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(daemon.wait_exit().code(), Some(0));
    let last = daemon.wait_for_log("shutdown complete");
    assert_eq!(counter(&last, " accepted="), 1, "{last}");
    assert_eq!(closed_sum(&last), 1, "accepted = open + closed: {last}");
    assert_eq!(counter(&last, " done="), 1, "{last}");
    assert_eq!(counter(&last, " cut="), 0, "{last}");
}

/// Out of file descriptors, accepting pauses and the agent says `down`
/// (from its spare descriptor); once clients leave, `up` again.
#[test]
fn down_while_out_of_file_descriptors_then_up_again() {
    let file = TempFile::new("agent-down.toml", "[agent]\nlisten = [\"127.0.0.1:0\"]\n");
    let mut command = Command::new(daemon_path());
    command.args(Daemon::config_args(&file));
    limit_descriptors(&mut command, 64);
    let daemon = Daemon::start_with(&mut command, 3);
    let agent = daemon.agent[0];
    assert_eq!(agent_says(agent), "up ready 100%\n");
    // More clients than descriptors: the kernel queues the rest.
    let clients: Vec<TcpStream> = (0..80).map(|_| connect(daemon.tcp[0])).collect();
    daemon.wait_for_log("pausing accepts");
    assert_eq!(agent_says(agent), "down # out of file descriptors\n");
    assert_eq!(agent_says(agent), "down # out of file descriptors\n");
    drop(clients);
    wait_until("up again", || agent_says(agent) == "up ready 100%\n");
}

/// The sum of every close reason in a counters line (`closed: done=N
/// reset=N …;`), whichever reasons it has.
fn closed_sum(line: &str) -> u64 {
    let reasons = line.split("closed: ").nth(1).expect("a closed: part");
    let reasons = reasons.split(';').next().unwrap_or_default();
    reasons
        .split_whitespace()
        .map(|kv| {
            let (_, n) = kv.split_once('=').expect("reason=N");
            n.parse::<u64>().expect("a count")
        })
        .sum()
}
