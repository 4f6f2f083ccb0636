//! HAProxy's agent check (`[agent] listen`): HAProxy connects to this port
//! every `agent-inter`, reads one line and acts on its words. Each
//! connection is accepted, written one line, half-closed and closed: never
//! read from (beyond dropping what HAProxy's `agent-send` may have sent,
//! so the close is a FIN, not a reset), never registered, never counted
//! among the connections, so `max_connections`, the per-address limit and
//! the idle list never see it.
//!
//! The line (HAProxy's `agent-check` grammar: words separated by spaces,
//! a `#` starting a description):
//!
//! - `drain` from the moment a graceful shutdown begins (SIGTERM), before
//!   anything is closed, until the process exits: HAProxy sends no new
//!   connection, open ones finish;
//! - `down # out of file descriptors` while accepting is paused because
//!   the process (EMFILE) or the system (ENFILE) has no descriptor left;
//! - otherwise `up ready W%`: `up` undoes an earlier `down`, `ready` an
//!   earlier `drain` (HAProxy keeps what an agent said until the agent
//!   says otherwise, so a restarted daemon must lift its predecessor's
//!   drain), and the weight `W = ceil(100 × (max_connections − open) /
//!   max_connections)` is the share of connection slots still free: 100%
//!   when idle, falling linearly, 0% (which HAProxy shows as DRAIN) at the
//!   limit, and at least 1% while one slot is free.
//!
//! Out of descriptors, `accept` on the agent port fails like any other;
//! the agent keeps one spare descriptor (`/dev/null`, opened at start) and
//! gives it up for the time of one answer, so that `down` can still be
//! said when it matters most.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Instant;

use log::debug;
use mio::net::TcpListener;

use super::accept::is_resource_exhaustion;
use super::turns::Mark;
use super::Server;

/// Agent connections answered per listener per turn: a connect flood on the
/// agent port cannot hold the loop; what is left waits for the next turn.
const ANSWERS_PER_TURN: usize = 64;

/// The agent's listening sockets and its spare descriptor.
#[derive(Debug, Default)]
pub struct Agent {
    /// The `[agent] listen` sockets; their tokens are `AGENT_BASE + index`.
    pub listeners: Vec<AgentListener>,
    /// Given up, for one accept, when the process is out of descriptors.
    spare: Option<File>,
    /// A check has been answered: something reads the agent (`drain.rs`).
    pub checked: bool,
}

/// One agent-check socket.
#[derive(Debug)]
pub struct AgentListener {
    /// The socket, registered READABLE (edge-triggered).
    pub socket: TcpListener,
    /// The address actually bound (port 0 resolved).
    pub addr: SocketAddr,
    /// Its place in the loop's run queue.
    pub mark: Mark,
}

/// What the agent says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Serving, with this weight in percent.
    Up(u32),
    /// A graceful shutdown is under way.
    Drain,
    /// Accepting is paused: no file descriptors.
    Down,
}

impl State {
    /// The state of a daemon with `open` of `max` connections, shutting
    /// down or not, out of descriptors or not.
    pub fn of(open: usize, max: usize, shutting_down: bool, out_of_descriptors: bool) -> State {
        if shutting_down {
            State::Drain
        } else if out_of_descriptors {
            State::Down
        } else {
            let free = max.saturating_sub(open) as u64;
            let weight = (100 * free).div_ceil(max.max(1) as u64);
            State::Up(u32::try_from(weight).unwrap_or(100))
        }
    }

    /// The line HAProxy reads.
    pub fn line(self) -> String {
        match self {
            State::Up(weight) => format!("up ready {weight}%\n"),
            State::Drain => "drain\n".to_owned(),
            State::Down => "down # out of file descriptors\n".to_owned(),
        }
    }
}

impl Agent {
    /// Binds the agent's sockets (the spare descriptor only if there is one).
    pub fn bind(addrs: &[SocketAddr], reuse_port: bool) -> Result<Agent, (SocketAddr, io::Error)> {
        let mut listeners = Vec::new();
        for &addr in addrs {
            // A small backlog: HAProxy connects once per check interval.
            let l = super::accept::bind(addr, 64, reuse_port, None).map_err(|e| (addr, e))?;
            listeners.push(AgentListener {
                socket: l.socket,
                addr: l.addr,
                mark: Mark::default(),
            });
        }
        let spare = if listeners.is_empty() {
            None
        } else {
            Some(File::open("/dev/null").map_err(|e| (addrs[0], e))?)
        };
        Ok(Agent {
            listeners,
            spare,
            checked: false,
        })
    }
}

impl Server {
    /// What the agent says now.
    fn agent_state(&self) -> State {
        State::of(
            self.conns.len(),
            self.config.tcp.max_connections.get(),
            self.deadline.is_some(),
            self.acceptor.out_of_descriptors(),
        )
    }

    /// Agent listener `i` is readable: answers the checks waiting on it,
    /// up to the per-turn budget.
    pub(super) fn on_agent(&mut self, i: usize, token: mio::Token) {
        let Some(listener) = self.agent.listeners.get_mut(i) else {
            return;
        };
        if !self.turns.may_run(&mut listener.mark) {
            return;
        }
        let state = self.agent_state();
        let line = state.line();
        for _ in 0..ANSWERS_PER_TURN {
            let listener = &self.agent.listeners[i];
            let accepted = match listener.socket.accept() {
                Err(e) if is_resource_exhaustion(&e) => {
                    // No descriptor for the check: use the spare one.
                    match self.agent.spare.take() {
                        Some(spare) => {
                            drop(spare);
                            let retried = listener.socket.accept();
                            self.agent.spare = File::open("/dev/null").ok();
                            retried
                        }
                        None => Err(e),
                    }
                }
                other => other,
            };
            match accepted {
                Ok((stream, peer)) => {
                    answer(stream, peer, &line);
                    self.agent_answered(state == State::Drain, Instant::now());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_resource_exhaustion(&e) => {
                    // The check waits in the backlog for the next edge.
                    debug!(target: super::LOG_TARGET, "agent on tcp://{}: {e}", listener.addr);
                    return;
                }
                // A check gone before it was accepted: the next may be fine.
                Err(e) => {
                    debug!(target: super::LOG_TARGET, "agent on tcp://{}: {e}", listener.addr)
                }
            }
        }
        let listener = &mut self.agent.listeners[i];
        self.turns.requeue(token, &mut listener.mark);
    }
}

/// Writes `line` to a freshly accepted check and closes it. The line is a
/// few bytes into an empty send buffer: one write takes it whole.
fn answer(mut stream: mio::net::TcpStream, peer: SocketAddr, line: &str) {
    match stream.write(line.as_bytes()) {
        Ok(n) if n == line.len() => {}
        other => debug!(target: super::LOG_TARGET, "agent check from {peer}: write: {other:?}"),
    }
    // Our FIN after the line; then what `agent-send` sent, if it came
    // already, is dropped, so that closing sends no reset.
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.read(&mut [0u8; 512]);
    debug!(target: super::LOG_TARGET, "agent check from {peer}: {}", line.trim_end());
}

#[cfg(test)]
mod tests {
    use super::State;

    #[test]
    fn the_weight_is_the_share_of_free_slots_rounded_up() {
        let up = |open, max| State::of(open, max, false, false).line();
        assert_eq!(up(0, 10_000), "up ready 100%\n");
        assert_eq!(up(1, 10_000), "up ready 100%\n");
        assert_eq!(up(100, 10_000), "up ready 99%\n");
        assert_eq!(up(5_000, 10_000), "up ready 50%\n");
        assert_eq!(up(9_999, 10_000), "up ready 1%\n");
        assert_eq!(up(10_000, 10_000), "up ready 0%\n");
        assert_eq!(up(1, 4), "up ready 75%\n");
        assert_eq!(up(3, 4), "up ready 25%\n");
        assert_eq!(up(0, 1), "up ready 100%\n");
        // After a reload lowered max_connections below the open count.
        assert_eq!(up(12, 10), "up ready 0%\n");
    }

    #[test]
    fn drain_wins_over_down_which_wins_over_the_weight() {
        assert_eq!(State::of(5, 10, true, true).line(), "drain\n");
        assert_eq!(State::of(5, 10, true, false).line(), "drain\n");
        assert_eq!(
            State::of(5, 10, false, true).line(),
            "down # out of file descriptors\n"
        );
    }
}
