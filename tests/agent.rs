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
    // The client is still connected: its FIN has not come, the daemon
    // waits for it (up to the 30 s deadline).
    client.write_all(b"late").unwrap();
    assert_eq!(agent_says(agent), "drain\n");
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut client), b"");
    assert_eq!(daemon.wait_exit().code(), Some(0));
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
