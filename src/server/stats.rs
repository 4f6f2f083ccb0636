//! What the daemon counts. Plain integers: one thread owns them.

use std::fmt;

/// Counters since start; logged as one line on SIGUSR1 and at shutdown.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    /// TCP connections open now.
    pub conns_open: u64,
    /// TCP connections accepted since start. Each one is open or has been
    /// closed for exactly one of the reasons below: `conns_accepted =
    /// conns_open + closed_*` always holds.
    pub conns_accepted: u64,
    /// Closed after the client's EOF, every reply delivered.
    pub closed_done: u64,
    /// Closed because the client reset or vanished.
    pub closed_reset: u64,
    /// Closed by the idle timeout.
    pub closed_idle: u64,
    /// Closed on another socket error.
    pub closed_error: u64,
    /// Cut by the shutdown deadline.
    pub closed_cut: u64,
    /// Handed to the service manager's store for the next process.
    pub closed_handed_over: u64,
    /// Accepted, then closed at once: its address had `max_connections_per_ip` open.
    pub closed_limit: u64,
    /// Closed unanswered on a PROXY listener (`[tcp] proxy_listen`): no
    /// valid header (malformed, cut short by EOF, or not whole within the
    /// header timeout).
    pub closed_proxy: u64,
    /// Closed unanswered on a PROXY listener: the peer is not in
    /// `[tcp] proxy_trusted`.
    pub closed_untrusted: u64,
    /// Bytes read from TCP clients and UDP datagrams.
    pub bytes_in: u64,
    /// Bytes of replies handed to the kernel.
    pub bytes_out: u64,
    /// UDP datagrams received.
    pub dgrams_in: u64,
    /// UDP replies sent.
    pub dgrams_out: u64,
    /// UDP datagrams not answered (reply too large, send buffer full, ...).
    pub dgrams_dropped: u64,
    /// UDP datagrams dropped for their source port (`blocked_source_ports`).
    pub dgrams_blocked: u64,
    /// UDP datagrams dropped over their source's `rate_limit`.
    pub dgrams_limited: u64,
    /// Errors that ended no connection, by kind (the counters line gives
    /// their sum as `errors=`): a failed accept (ECONNABORTED and the like;
    /// running out of descriptors is an accept pause instead)...
    pub errors_accept: u64,
    /// ... and a failed UDP receive (typically an ICMP error for an earlier reply).
    pub errors_udp_receive: u64,
    /// TCP reads that brought data: a client that waits for each reply
    /// sends one request per read (the "msgs/s" of systemd's status, with
    /// `dgrams_in`). Not on the counters line, whose format is a contract.
    pub tcp_reads: u64,
    /// Connection records (`log_connections`) not written, over their rate
    /// limit. Not on the counters line.
    pub records_suppressed: u64,
    /// Times accepting paused (connection limit or out of file descriptors).
    pub accept_pauses: u64,
}

impl Counters {
    /// Errors that ended no connection, all kinds together.
    pub fn errors(&self) -> u64 {
        self.errors_accept + self.errors_udp_receive
    }

    /// Connections closed, all reasons together.
    pub fn closed(&self) -> u64 {
        self.closed_done
            + self.closed_reset
            + self.closed_idle
            + self.closed_error
            + self.closed_proxy
            + self.closed_untrusted
            + self.closed_cut
            + self.closed_handed_over
            + self.closed_limit
    }
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "connections open={} accepted={} closed: done={} reset={} idle={} error={} proxy={} untrusted={} cut={} handed_over={} limit={}; \
             bytes in={} out={}; datagrams in={} out={} dropped={} blocked={} limited={}; \
             errors={} accept_pauses={}",
            self.conns_open,
            self.conns_accepted,
            self.closed_done,
            self.closed_reset,
            self.closed_idle,
            self.closed_error,
            self.closed_proxy,
            self.closed_untrusted,
            self.closed_cut,
            self.closed_handed_over,
            self.closed_limit,
            self.bytes_in,
            self.bytes_out,
            self.dgrams_in,
            self.dgrams_out,
            self.dgrams_dropped,
            self.dgrams_blocked,
            self.dgrams_limited,
            self.errors(),
            self.accept_pauses,
        )
    }
}
