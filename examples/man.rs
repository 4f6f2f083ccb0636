//! Writes the man pages `upcased(8)`, `upcase(1)` and `upcase-bench(1)`,
//! and `upcased.toml(5)` from the config module's key declarations.
//!
//! ```sh
//! cargo run --example man -- target/man     # then: man -l target/man/upcased.8
//! ```
//!
//! The title, the SYNOPSIS and the OPTIONS come from the same clap
//! definitions the binaries parse with, so they cannot drift from `--help`.
//! The other sections (DESCRIPTION, SIGNALS, EXIT STATUS, ENVIRONMENT,
//! FILES, EXAMPLES, SEE ALSO) are roff written here: they say what the
//! README, `docs/` and the contract in `--help` say, and a change to one of
//! those (a signal, an exit code, a file) belongs here too. Every example is
//! a command that was run against the tree, with its real output.
//!
//! `.ci/run` renders each page with `MANWIDTH=80 man --warnings -l` and
//! fails on any warning. The Debian package (`cargo deb`, see Cargo.toml)
//! installs what this writes.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{ArgAction, Command, CommandFactory};

/// One man page: the clap command it documents and the sections written by
/// hand, in the order they appear.
struct Page {
    /// The command, as the binary parses it.
    command: Command,
    /// The manual section: 8 for the daemon, 1 for the tools.
    section: &'static str,
    /// The NAME line's description: lower case, no full stop, as `whatis`
    /// and `apropos` show it.
    summary: &'static str,
    /// Whether the SYNOPSIS shows an option by its short name when it has
    /// one (`-c FILE`, as the daemon's contract writes it) or always by its
    /// long one (`--connections N` reads better than `-c N`).
    short_in_synopsis: bool,
    /// DESCRIPTION, in roff, without its `.SH` line.
    description: &'static str,
    /// The sections after OPTIONS: title and roff body.
    sections: &'static [(&'static str, &'static str)],
}

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(
        std::env::args_os()
            .nth(1)
            .unwrap_or_else(|| "target/man".into()),
    );
    std::fs::create_dir_all(&dir)?;
    let pages = [
        Page {
            command: upcase::cli::DaemonArgs::command(),
            section: "8",
            summary: "answer every TCP byte stream and UDP datagram in upper case",
            short_in_synopsis: true,
            description: UPCASED_DESCRIPTION,
            sections: UPCASED_SECTIONS,
        },
        Page {
            command: upcase::client::ClientArgs::command(),
            section: "1",
            summary: "send lines to upcased and print the replies",
            short_in_synopsis: false,
            description: UPCASE_DESCRIPTION,
            sections: UPCASE_SECTIONS,
        },
        Page {
            command: upcase::bench::Options::command(),
            section: "1",
            summary: "load generator for upcased that checks every reply byte for byte",
            short_in_synopsis: false,
            description: BENCH_DESCRIPTION,
            sections: BENCH_SECTIONS,
        },
    ];
    for page in pages {
        let command = page.command.version(env!("CARGO_PKG_VERSION"));
        let name = command.get_name().to_owned();
        let synopsis = synopsis(&command, page.short_in_synopsis);
        let man = clap_mangen::Man::new(command).section(page.section);
        let mut roff = Vec::new();
        man.render_title(&mut roff)?;
        // Left-aligned: at 80 columns the gaps of justified text read worse
        // than a ragged right edge. (Paths and page names are kept whole
        // with `\%` where they stand.)
        let mut text = String::from(".ad l\n");
        let _ = write!(
            text,
            ".SH NAME\n{} \\- {}\n.SH SYNOPSIS\n{synopsis}.SH DESCRIPTION\n{}",
            roff_escape(&name),
            page.summary,
            page.description
        );
        roff.extend_from_slice(text.as_bytes());
        man.render_options_section(&mut roff)?;
        for (title, body) in page.sections {
            roff.extend_from_slice(format!(".SH {title}\n{body}").as_bytes());
        }
        let path = dir.join(format!("{name}.{}", page.section));
        std::fs::write(&path, roff)?;
        println!("{}", path.display());
    }
    // upcased.toml(5), from the config module's key declarations.
    let path = dir.join("upcased.toml.5");
    std::fs::write(&path, upcase::config::man_page())?;
    println!("{}", path.display());
    Ok(())
}

/// The SYNOPSIS from the clap definition, with every argument's name:
/// `[-c FILE] [--tcp ADDR]... [--mode unicode|ascii]`. One argument per
/// line inside `.SY`/`.YS`, which indents continuation lines under the
/// command name; an option and its value are joined by an unbreakable
/// space so a line never breaks inside a bracket.
fn synopsis(command: &Command, short_first: bool) -> String {
    let mut out = format!(".SY {}\n", roff_escape(command.get_name()));
    let args = command
        .get_arguments()
        .filter(|arg| !arg.is_hide_set() && !matches!(arg.get_id().as_str(), "help" | "version"));
    for arg in args {
        let takes_value = matches!(arg.get_action(), ArgAction::Set | ArgAction::Append);
        let value = if !takes_value {
            None
        } else {
            let choices: Vec<String> = arg
                .get_possible_values()
                .iter()
                .filter(|v| !v.is_hide_set())
                .map(|v| format!("\\fI{}\\fR", roff_escape(v.get_name())))
                .collect();
            Some(if choices.is_empty() {
                let name = arg
                    .get_value_names()
                    .and_then(|names| names.first())
                    .map_or_else(|| arg.get_id().as_str().to_uppercase(), |n| n.to_string());
                format!("\\fI{}\\fR", roff_escape(&name))
            } else {
                choices.join("|")
            })
        };
        let mut item = if arg.is_positional() {
            value.unwrap_or_default()
        } else {
            let flag = match (arg.get_short(), arg.get_long()) {
                (Some(short), _) if short_first => format!("\\-{short}"),
                (_, Some(long)) => format!("\\-\\-{}", roff_escape(long)),
                (Some(short), None) => format!("\\-{short}"),
                (None, None) => continue,
            };
            match value {
                Some(value) => format!("\\fB{flag}\\fR\\ {value}"),
                None => format!("\\fB{flag}\\fR"),
            }
        };
        let required = arg.is_required_set() && arg.get_default_values().is_empty();
        if !required {
            item = format!("[{item}]");
        }
        if matches!(arg.get_action(), ArgAction::Append) {
            item.push_str("...\\&");
        }
        let _ = writeln!(out, "{item}");
    }
    out.push_str(".YS\n");
    out
}

/// Escapes text for roff: backslashes and hyphens (a plain `-` may be
/// set as a hyphen, not the minus sign a command line needs).
fn roff_escape(text: &str) -> String {
    text.replace('\\', "\\e").replace('-', "\\-")
}

const UPCASED_DESCRIPTION: &str = r#".B upcased
answers every byte it receives over TCP, and every UDP datagram, with its
upper case: the classic socket-programming exercise (the client sends a
line, the server answers it in upper case) built as a daemon. One thread
and one event loop serve every socket and every client, with bounded memory
per client, graceful shutdown, live reload and counters.
It runs on Linux only.
.PP
Without
.BR \-c ,
the built-in defaults are used: TCP and UDP on 127.0.0.1:12000 (the
textbook's port), mode
.BR unicode .
Flags override the configuration file, which overrides the defaults;
.B \-\-tcp
replaces only the TCP addresses,
.B \-\-udp
only the UDP ones.
IPv6 addresses are bound v6-only, so 0.0.0.0:12000 and [::]:12000 coexist.
At start-up the daemon logs one line per socket, with the address it is
bound to (port 0 shows the real port):
.PP
.RS
.EX
listening on tcp://127.0.0.1:12000
listening on udp://127.0.0.1:12000
.EE
.RE
.PP
TCP is a stream transform, not a line protocol: every byte is answered as
soon as it is read.
After a client shuts down its side, every pending reply is sent, then the
daemon shuts down its own and closes.
A client that does not read its replies is held back by TCP flow control
once
.B max_pending_output
bytes of replies wait for it.
Telnet programs that negotiate (PuTTY) are known by their first bytes
.RB ( "[tcp] telnet = \(dqauto\(dq" ,
the default): their telnet commands are removed and every option request
refused.
Over UDP each datagram is answered on its own, to its sender.
Datagrams from the daemon's own UDP ports and, by default, from the classic
answer-anything ports (7, 13, 19, 37) are dropped, and each source address
is answered at most 1,000 times a second (loopback sources are exempt), so
the daemon cannot be made a reflector loop or an amplifier at will.
.PP
In
.B unicode
mode (the default), text is upper-cased as Unicode defines it (\[ss]
becomes SS, \['e] becomes \['E]) and bytes that are not valid UTF-8 pass
unchanged; in
.B ascii
mode only a\(enz become A\(enZ, byte by byte, which is binary-safe.
.PP
The configuration file is TOML.
Every key is optional; an unknown key or a bad value is an error that names
the file, the line and the key.
Durations are strings with a unit ("250ms", "5s", "5m", "1h"); sizes are a
number of bytes or a string such as "64KiB".
.B \-\-check\-config
prints the effective configuration in the same form, every key with its
value; every key, its default and whether a reload applies it are in
.BR \%upcased.toml (5).
.PP
Under systemd the daemon tells the manager when every socket is bound
(Type=notify), keeps a STATUS= line with its sockets and open connections,
pings the watchdog when WatchdogSec= is set, and logs with syslog
priorities for the journal.
Socket-activated, it serves the sockets it is given and ignores the
configured listen addresses.
"#;

const UPCASED_SECTIONS: &[(&str, &str)] = &[
    (
        "SIGNALS",
        r#".TP
.BR SIGTERM ", " SIGINT
Graceful shutdown: stop accepting, answer every byte already received,
flush, half-close, and wait for the clients to finish, at most
.B shutdown_timeout
(default 5s); whatever is cut then is logged.
With
.B [agent] listen
it drains first: the agent says
.BR drain ,
the listeners stay open until 1 s after the balancer read it, and
connections are served until their clients close them; only in the last
quarter of
.B shutdown_timeout
(at most 5 s) do those left get the graceful close.
A second signal exits at once, with status 1.
.TP
.B SIGHUP
Reload the configuration file (the flags keep overriding it).
.BR mode " and " telnet
(for connections accepted from then on;
.B mode
also for every datagram),
.BR log_level ,
the limits and the timeouts apply at once; listen addresses,
.BR backlog " and " reuse_port
need a restart (the log says so).
A bad file is rejected, and the old configuration stays.
.TP
.B SIGUSR1
Log one line of counters: connections open, accepted and closed by reason
(client done, reset, idle, error, cut at shutdown, per-address limit),
bytes in and out, datagrams in and out, dropped (reply impossible), blocked
(source port) and limited (rate), errors, accept pauses.
The same line is logged at shutdown.
"#,
    ),
    (
        "EXIT STATUS",
        r#".TP
.B 0
Clean shutdown (SIGTERM or SIGINT), or
.B \-\-check\-config
found the configuration valid.
.TP
.B 1
Runtime failure: a listen address cannot be bound (the message names the
address and the reason), or a second SIGTERM or SIGINT cut the graceful
shutdown short.
.TP
.B 2
Bad usage or an invalid configuration (the message names the file, the
line and the key).
"#,
    ),
    (
        "ENVIRONMENT",
        r#".TP
.B RUST_LOG
Overrides
.B log_level
from the configuration file, e.g.
.BR RUST_LOG=debug .
Nothing is logged per message above debug.
.TP
.BR LISTEN_FDS ", " LISTEN_PID ", " LISTEN_FDNAMES
Socket activation: the sockets systemd passes replace both listen lists.
.TP
.BR NOTIFY_SOCKET ", " WATCHDOG_USEC ", " WATCHDOG_PID
Where to send readiness, status and watchdog pings (sd_notify).
.TP
.B JOURNAL_STREAM
When standard error is the journal, log lines carry syslog priorities and
no timestamp of their own.
"#,
    ),
    (
        "FILES",
        r#".TP
.I \%/etc/upcased/upcased.toml
The configuration file the units pass with
.BR \-c ,
every key with its default and a comment (see
.BR \%upcased.toml (5));
a conffile, which upgrades never overwrite.
Without
.BR \-c ,
upcased reads no file.
.TP
.I \%/lib/systemd/system/upcased.service
The daemon binding its own sockets, enabled and started by the package
(Type=notify; ExecStartPre= refuses a bad configuration before anything
starts, and ExecReload= before signalling the daemon, so that
.B systemctl reload
fails).
.TP
.I \%/lib/systemd/system/upcased.socket
.TQ
.I \%/lib/systemd/system/upcased\-activated.service
Socket activation: systemd binds TCP and UDP 127.0.0.1:12000 and starts the
service, which has no network access of its own, on the first client.
They exclude upcased.service: starting one stops the other.
.TP
.I \%/lib/systemd/system/upcased@.service
Several instances on the same ports, e.g. one per CPU: the unit passes
.BR \-\-reuse\-port .
The instance name is only a name.
"#,
    ),
    (
        "EXAMPLES",
        r#"Serve on the defaults, and talk to it from another terminal:
.PP
.RS
.EX
$ upcased
$ printf 'hello, stra\[ss]e\en' | nc \-N 127.0.0.1 12000
HELLO, STRASSE
.EE
.RE
.PP
Serve TCP on IPv4 and IPv6 loopback, and UDP on IPv4:
.PP
.RS
.EX
$ upcased \-\-tcp 127.0.0.1:12000 \-\-tcp '[::1]:12000' \e
      \-\-udp 127.0.0.1:12000
.EE
.RE
.PP
Check a configuration file before using it (status 2 and the file, line
and key if it is wrong):
.PP
.RS
.EX
$ upcased \-c /etc/upcased/upcased.toml \-\-check\-config
.EE
.RE
.PP
Under systemd:
.PP
.RS
.EX
$ sudo systemctl enable \-\-now upcased   # or upcased.socket
$ sudo systemctl reload upcased         # SIGHUP
$ sudo systemctl kill \-s USR1 upcased   # log the counters
$ journalctl \-u upcased \-p warning      # warnings and errors
.EE
.RE
"#,
    ),
    (
        "SEE ALSO",
        r#".BR \%upcased.toml (5),
.BR \%upcase (1),
.BR \%upcase\-bench (1),
.BR \%systemctl (1),
.BR \%journalctl (1),
.BR \%systemd.service (5),
.BR \%systemd.socket (5),
.BR \%nc (1)
.PP
.I \%/usr/share/doc/upcase/README.md
and the pages in
.I \%/usr/share/doc/upcase/docs/
(operations, security, clients, internals).
"#,
    ),
];

const UPCASE_DESCRIPTION: &str = r#".B upcase
reads lines from standard input, sends them to
.BR \%upcased (8)
at
.I HOST:PORT
(default 127.0.0.1:12000) over TCP, or over UDP with
.BR \-\-udp ,
and prints the replies on standard output.
Host names resolve; an IPv6 address is written [::1]:12000.
.PP
When standard input is a terminal, it prompts (on standard error, so
.B "upcase > file"
keeps only the replies) and prints each reply as it comes; Ctrl-D ends.
.PP
Piped input is streamed over TCP: sending and receiving overlap, so a
multi-megabyte input never deadlocks and no line waits for the previous
reply.
At the end of input it half-closes and prints every remaining reply.
The output is exactly the server's bytes.
.PP
Over UDP each line, newline included, is one datagram (a line longer than
the largest datagram, 65,507 bytes over IPv4, is an error that says so).
A reply is awaited for
.B \-\-timeout
and the line sent again up to
.B \-\-retries
times; replies from any other address are ignored.
Datagrams carry no sequence number, so a reply is printed only if it is
the line in upper case as the server computes it
.RB ( \-\-mode ),
and a late reply to an earlier line is never taken for a later one's:
such replies are ignored and counted on standard error at the end.
A reply that never comes is reported for its line.
Where nothing listens at all, the ICMP "port unreachable" that comes back
ends the session at once, as a refused TCP connection does.
"#;

const UPCASE_SECTIONS: &[(&str, &str)] = &[
    (
        "EXIT STATUS",
        r#".TP
.B 0
Every line was sent and every reply printed.
.TP
.B 1
Network or runtime failure: cannot resolve or connect (refused, reset), a
UDP reply missing after every retry, a line too long for a datagram.
.TP
.B 2
Bad usage.
"#,
    ),
    (
        "EXAMPLES",
        r#".RS
.EX
$ printf 'hello, stra\[ss]e\ensecond line\en' | upcase
HELLO, STRASSE
SECOND LINE
$ seq 3 | sed 's/^/line /' | upcase \-\-udp
LINE 1
LINE 2
LINE 3
.EE
.RE
.PP
With nothing listening:
.PP
.RS
.EX
$ upcase 127.0.0.1:12001
upcase: cannot connect to 127.0.0.1:12001: connection refused
(is upcased running there?)
.EE
.RE
.PP
(one line on the terminal; broken here to fit).
"#,
    ),
    (
        "SEE ALSO",
        r#".BR \%upcased (8),
.BR \%upcase\-bench (1),
.BR \%nc (1),
.BR \%telnet (1),
.BR \%socat (1)
.PP
.I \%/usr/share/doc/upcase/docs/clients.md
"#,
    ),
];

const BENCH_DESCRIPTION: &str = r#".B upcase\-bench
is the load generator for
.BR \%upcased (8):
many concurrent TCP clients, a UDP flood, a crowd of idle connections, or
connection churn,
from one event loop (or several: see below), with every reply checked byte for byte
against the expected upper case (computed with the daemon's own transform),
in order.
.TP
.B tcp
.B \-\-connections
clients, each with
.B \-\-pipeline
requests of
.B \-\-size
bytes in flight.
A connection counts as up only after its first verified exchange;
.B \-\-warmup
seconds after all are up,
.B \-\-duration
seconds (or
.B \-\-messages
replies) are measured.
At the end nothing new is sent, the replies in flight are awaited, every
connection is half-closed and the server's end of stream awaited.
With
.BI \-\-rate " R"
the load is an open loop: R requests a second spread evenly over the
connections, each sent at its scheduled time (or as soon after as its
connection has a free pipeline slot), its latency measured from that time,
so a stalled server shows in the latency of every request it delayed
(coordinated omission corrected, as wrk2 does).
When the server cannot keep up the schedule keeps its times: latency grows,
and the report gives the achieved rate against the offered one and how late
the sends were.
.TP
.B udp
.B \-\-connections
flows, each a window of
.B \-\-pipeline
datagrams.
Each datagram starts with its sequence number in upper-case hex, so a reply
is matched to its request and compared whole.
A datagram unanswered after
.B \-\-udp\-timeout
is counted lost (UDP may drop; not a failure).
.TP
.B idle
Open
.B \-\-connections
connections, verify each once, and hold them for
.BR \-\-duration ;
with
.B \-\-server\-pid
it reports the server's memory per connection.
.TP
.B churn
Each of
.B \-\-connections
clients loops: connect, send
.B \-\-requests\-per\-connection
requests (default 1), verify every reply, close, connect again.
.B "\-\-close fin"
(the default) half-closes and awaits the server's end of stream, leaving
the client's port in TIME_WAIT (reused at once on loopback, where
.I net.ipv4.tcp_tw_reuse
is 2);
.B "\-\-close rst"
closes with
.B SO_LINGER
0, a reset, and no TIME_WAIT on either side.
Reported: connections a second, the latency of the connect, the first
reply, the close and the whole connection, failures by phase, and with
.B \-\-server\-pid
the server's CPU time per connection.
.PP
The payload is
.B ascii
(printable ASCII and newlines; any server),
.B utf8
(2-, 3- and 4-byte characters; upcased in unicode mode) or
.B binary
(every byte value; upcased in ascii mode).
.B \-\-payload\-file
sends a file's bytes instead (a text in some script, say): its
consecutive pieces of
.B \-\-size
bytes, each cut short where it would end inside a UTF-8 character, so
that a server in unicode mode holds nothing back and the reply to each
piece is its upper case alone.
.B \-\-mode
names the server's mode, whose replies are expected:
.B unicode
(each character's upper case as Rust's standard library has it, bytes
that are not UTF-8 unchanged; the default with a file) or
.B ascii
(only a to z change), so the same pieces can be sent to upcased in either
mode.
Reported: messages and megabytes a second, latency percentiles (from
sending a request to the last byte of its reply), replies per connection
and stalled connections, errors by kind; with
.BR \-\-server\-pid ,
the server's CPU time per message and its memory, read from
.IR /proc .
A wrong byte is printed with its position in the reply stream and both
texts.
.B \-\-json
prints the report as one JSON object.
On a terminal, a progress line on standard error shows the connections up,
replies a second, errors and the time elapsed; it is not drawn when
standard error is not a terminal or with
.BR \-\-json .
.B \-\-timeline
writes one row per second (replies, errors, connections, p50 and p99 of
that second);
.B \-\-latency\-out
writes the measured latency histogram in HdrHistogram's percentile
distribution format (milliseconds), which HdrHistogram's plotter reads.
.PP
One process holds as many connections as its open-file limit allows (it
raises its soft limit to the hard one).
Past that, a
.B tcp
or
.B idle
run splits itself:
.B \-\-workers
processes (by default as many as
.B \-\-connections
needs under that limit; the binary runs itself once per worker),
.B \-\-threads
event loops in each, and
.B \-\-source\-addrs
source addresses 127.0.0.1, 127.0.0.2, ... (by default one per 2,000
connections), each with the ephemeral port range of its own.
The parts measure the same window and their figures are merged exactly:
counts summed, latency histograms added, never averaged.
Any part with an error, or a worker that dies, fails the whole run.
.B churn
runs, and runs with
.B \-\-rate
or
.BR \-\-timeline ,
stay in one event loop: split, they are a usage error.
"#;

const BENCH_SECTIONS: &[(&str, &str)] = &[
    (
        "EXIT STATUS",
        r#".TP
.B 0
Every reply was verified.
.TP
.B 1
Errors: a wrong byte, a reset, an unexpected close, a failed or timed-out
connect, a reply still missing at the end.
.TP
.B 2
Bad usage.
.TP
.B 3
The bench itself failed.
"#,
    ),
    (
        "EXAMPLES",
        r#"Start a daemon and give the bench its process id (that of this one
daemon: \fB$(pidof upcased)\fR would list every upcased on the machine):
.PP
.RS
.EX
$ upcased \-\-tcp 127.0.0.1:12345 \-\-udp 127.0.0.1:12345 \e
      2> upcased.log &
$ pid=$!
.EE
.RE
.PP
100 connections, one 64-byte request in flight each, for one second:
.PP
.RS
.EX
$ upcase\-bench tcp \-\-addr 127.0.0.1:12345 \-\-connections 100 \e
      \-\-duration 1 \-\-warmup 0.5 \-\-server\-pid $pid
.EE
.RE
.PP
100 UDP flows of 4 datagrams each, the report as JSON:
.PP
.RS
.EX
$ upcase\-bench udp \-\-addr 127.0.0.1:12345 \-\-connections 100 \e
      \-\-pipeline 4 \-\-json
.EE
.RE
.PP
The server's memory for 1,000 idle connections:
.PP
.RS
.EX
$ upcase\-bench idle \-\-addr 127.0.0.1:12345 \-\-connections 1000 \e
      \-\-duration 2 \-\-server\-pid $pid
.EE
.RE
.PP
100,000 connections held for a minute, against several daemons sharing
one port with
.B reuse_port
(6 worker processes and 50 source addresses, chosen by themselves):
.PP
.RS
.EX
$ upcase\-bench idle \-\-addr 127.0.0.1:12000 \-\-connections 100000 \e
      \-\-duration 1m \-\-max\-connecting 1024 \-\-connect\-timeout 5m
.EE
.RE
.PP
16 clients connecting, asking once and closing with a reset, for 3
seconds, with the server's CPU time per connection:
.PP
.RS
.EX
$ upcase\-bench churn \-\-addr 127.0.0.1:12345 \-\-connections 16 \e
      \-\-close rst \-\-server\-pid $pid
.EE
.RE
.PP
20,000 requests a second over 100 connections, latency from each
request's scheduled time, the histogram for HdrHistogram's plotter and
one row per second:
.PP
.RS
.EX
$ upcase\-bench tcp \-\-addr 127.0.0.1:12345 \-\-connections 100 \e
      \-\-rate 20000 \-\-latency\-out latency.hgrm \e
      \-\-timeline timeline.csv
.EE
.RE
"#,
    ),
    (
        "SEE ALSO",
        r#".BR \%upcased (8),
.BR \%upcase (1)
.PP
.I \%/usr/share/doc/upcase/docs/benchmarks.md
"#,
    ),
];
