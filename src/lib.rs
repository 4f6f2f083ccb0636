//! upcase: the textbook "send a line, get it back in upper case" exercise,
//! made into a daemon (`upcased`) that serves TCP and UDP from one thread.
//!
//! # Layout
//!
//! - [`mod@bench`]: `upcase-bench`, the load generator that checks every reply
//!   byte for byte (its own layout is in its module docs).
//! - [`transform`]: the uppercase transform, pure (bytes in, bytes out); the
//!   streaming form carries a UTF-8 character split across reads.
//! - [`config`]: the TOML file read key by key (toml's spanned tree) and
//!   validated into
//!   [`config::Config`], whose fields are already-checked types.
//! - [`units`]: the one vocabulary of durations (`250ms`, `5s`, `5m`) and
//!   sizes (`64KiB`) of the config file and all three command lines, with
//!   their clap value parsers.
//! - [`cli`]: the command-line definitions (clap), shared by the binary and
//!   the man pages.
//! - [`daemon`]: `upcased` from arguments to exit: config, logging, the
//!   descriptor limit, socket activation or binding, the reloader, and
//!   [`daemon::DaemonError`] with its exit code.
//! - [`client`]: the textbook client behind `upcase` (its arguments, TCP
//!   streamed or interactive, UDP with timeout and retries).
//! - [`telnet`]: telnet commands removed from a TCP stream, every option
//!   request refused, 0xFF escaped in replies (`[tcp] telnet`, `"auto"` by
//!   default), pure like the transform.
//! - [`server`]: the event loop. `server/mod.rs` owns the one `mio::Poll`
//!   and every registration; `accept.rs` (listeners and the accept policy:
//!   connection limit, descriptor back-off, per-address limit),
//!   `lifecycle.rs` (shutdown, reload, systemd status and watchdog),
//!   `udp.rs` (datagrams: guard, counters, transform), `mmsg.rs`
//!   (`recvmmsg`/`sendmmsg` behind a safe batch API: the UDP path's only
//!   `unsafe`),
//!   `conn.rs` (one client: read, transform, write, back-pressure,
//!   half-close), `buffers.rs` (the buffers all clients share), `idle.rs`
//!   (connections in order of last activity, for idle timeouts), `guard.rs`
//!   (UDP reflection guard: blocked source ports, per-source rate),
//!   `turns.rs` (the run queue: work left over from one turn for the next,
//!   each source once), `throttle.rs` (rate-limited log lines), `timer.rs`
//!   (the loop's deadline timer), `stats.rs` (counters), `handover.rs`
//!   (restarts: listeners and connections through systemd's file
//!   descriptor store, with each connection's state in a memfd),
//!   `metrics.rs` (the Prometheus endpoint, `[metrics] listen`),
//!   `records.rs` (one record per connection, `log_connections`).
//! - [`proxy`]: the PROXY protocol header (v1 and v2) a load balancer puts
//!   before a relayed connection, parsed from bytes (pure), and the
//!   networks trusted to send it.
//! - [`signals`]: the only module that knows signal-hook; signals arrive as
//!   one more token in the poll.
//! - [`systemd`]: what systemd is told (ready, status, reloading, stopping,
//!   watchdog: the sd_notify protocol)
//!   and socket activation (`LISTEN_FDS`), the file descriptor store
//!   (`FDSTORE=1`, descriptors as `SCM_RIGHTS`), without libsystemd.
//! - [`rlimit`]: the file-descriptor limit, raised at start-up (daemon and
//!   bench), and what it means for `max_connections`.
//! - [`logging`]: env_logger set up from `log_level`, `RUST_LOG` winning.
//! - [`journal`]: journald's native protocol, for records with fields.
//!
//! Binaries in `src/bin/` stay thin, `main → run → ExitCode` as ripgrep's:
//! parse arguments, call the library's `run` ([`daemon::run`],
//! [`client::run`], [`bench::run_and_print`]), map its error to an exit
//! code.

// Linux only, on purpose: the loop relies on Linux raising a new readiness
// edge for data that arrives after a short read (it saves one read per
// request), on recvmmsg/sendmmsg, timerfd, SO_OOBINLINE's behaviour at the
// urgent mark, and on systemd's protocols. Elsewhere it would build and
// then misbehave, so it does not build.
#[cfg(not(target_os = "linux"))]
compile_error!("upcase runs on Linux only (see the comment above this line in src/lib.rs)");

pub mod bench;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod journal;
pub mod logging;
pub mod proxy;
pub mod rlimit;
pub mod server;
pub mod signals;
pub mod systemd;
pub mod telnet;
pub mod transform;
pub mod units;
