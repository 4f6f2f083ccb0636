//! Configuration: the checked [`Config`] type, its defaults, the TOML file
//! format and its error messages.
//!
//! The file is TOML. Every key is optional (defaults fill the rest) and
//! unknown keys, at any level, are errors. Durations are strings with a unit
//! (`"250ms"`, `"5s"`, `"5m"`, `"1h"`), sizes an integer or a string with a
//! unit (`"64KiB"`): the vocabulary of [`crate::units`], which the command
//! lines share. The documented example with every key at its default value
//! is `config/upcased.toml`, which is exactly what [`Config::to_toml`]
//! prints for [`Config::default`].
//!
//! A bad file is reported as `FILE:LINE: KEY: what is wrong: what is expected`,
//! with the dotted key (`tcp.idle_timeout`), e.g.
//!
//! ```text
//! config/upcased.toml:7: tcp.idle_timeout: invalid duration "5x": expected a whole number followed by ms, s, m or h (e.g. "250ms", "5s", "5m")
//! ```
//!
//! # One place per key
//!
//! Each table is declared once, by the `config_table!` macro below: every key's
//! field, type, default, kind of value (which parses and prints it), the
//! one-line comment it gets in the file and whether a reload (SIGHUP)
//! applies it. From that declaration come the [`Config`] structs and their
//! defaults, the serde "file" structs (`#[serde(deny_unknown_fields)]`), the
//! key lists ([`TOP_KEYS`], [`TCP_KEYS`], [`UDP_KEYS`]) and so the
//! unknown-key messages, [`Config::to_toml`] (what `--check-config` prints
//! and `config/upcased.toml` must equal) and the man page [`man_page`].
//!
//! Adding a key is one entry in its table's `config_table!` block (field,
//! doc comment, type, default, kind, reload, file comment), a kind in
//! `kinds!` if no existing kind fits, and `config/upcased.toml` regenerated
//! (`upcased --check-config > config/upcased.toml`; a test compares them).
//! Acting on a reload is `Server::apply_reload`'s business.
//!
//! # How a file is checked
//!
//! toml parses the text (a syntax error stops there, see `syntax_error`);
//! then serde, wrapped in `serde_path_to_error`, deserializes it into the file
//! structs. Every value is read by its kind's `Deserialize` impl, which
//! produces this module's own messages (`expected an integer, found a
//! string`, ranges, units); toml attaches the span of the value (or of the
//! key, for an unknown key) and `serde_path_to_error` the dotted path, so the
//! line and the key come from the parser, not from guessing at the text.
//! toml keeps tables in source order (its `preserve_order` feature), so the
//! first problem in the file is the one reported.

use std::marker::PhantomData;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use log::LevelFilter;
use serde::de::{self, Deserialize, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::transform::Mode;

/// The address both transports listen on by default: `127.0.0.1:12000`.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 12000));

/// The default `[tcp] socket_buffer`: 128 KiB each way (the kernel doubles
/// it for its bookkeeping), so a connection's sockets cost at most about
/// 512 KiB of kernel memory however its client behaves. Chosen by
/// measurement (bench/hostile-mix, bench/socket-buffer-cost): no cost
/// measurable on the 4 KiB cells or a 64 KiB stream against autotuning,
/// and beside 300 clients that never read, the good clients' p99.9 stays
/// under 100 ms, which it did not at 256 KiB.
pub const DEFAULT_SOCKET_BUFFER: usize = 128 * 1024;

/// The default `[udp] blocked_source_ports`.
pub const DEFAULT_BLOCKED_SOURCE_PORTS: [u16; 4] = [7, 13, 19, 37];

/// One config key as the documentation describes it (an entry of
/// [`TOP_KEYS`], [`TCP_KEYS`] or [`UDP_KEYS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    /// The table it lives in: `""` for the top level, else `"tcp"` or `"udp"`.
    pub table: &'static str,
    /// The key's name in its table.
    pub name: &'static str,
    /// What it takes, as the wrong-type message says (`an integer`).
    pub takes: &'static str,
    /// The comment above it in the file, one or more lines (joined by `\n`).
    pub doc: &'static str,
    /// When a reload (SIGHUP) applies a new value.
    pub reload: Reload,
    /// What else a reload of this key does, for the man page (or `""`).
    pub reload_note: &'static str,
}

/// When a changed value takes effect after a reload (SIGHUP); what
/// `Server::apply_reload` does with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reload {
    /// Applied at once, to everything.
    Live,
    /// Applied to connections accepted after the reload; open ones keep
    /// the old value.
    NewConnections,
    /// Applied to TCP connections accepted after the reload, and to every
    /// datagram at once.
    NewConnectionsAndDatagrams,
    /// Needs a restart: a reload keeps the old value and logs a warning.
    Restart,
}

impl Reload {
    /// How the man page says it.
    pub fn describe(self) -> &'static str {
        match self {
            Reload::Live => "yes",
            Reload::NewConnections => "yes, for connections accepted after the reload",
            Reload::NewConnectionsAndDatagrams => {
                "yes, for connections accepted after the reload and for every datagram"
            }
            Reload::Restart => "no, a restart is needed",
        }
    }
}

/// Declares one config table in one place: the checked struct (with each
/// field's doc comment and default), its serde file struct (`raw`, every
/// key an `Option` of its kind, unknown keys denied), its key list (`keys`)
/// with each key's file comment and reloadability, and its sub-tables.
///
/// A key reads `field: Type = default, kind Kind, reload When ["note"],
/// "comment";` where `Kind` implements [`Field`] with `Value = Type` (it
/// parses the value from the file, with the messages, and prints it back)
/// and `When` is a [`Reload`] variant, what `Server::apply_reload` does.
macro_rules! config_table {
    (
        $(#[$meta:meta])*
        pub struct $name:ident, raw $raw:ident, table $table:literal, keys $keys:ident {
            $(
                $(#[$fdoc:meta])*
                $field:ident: $ty:ty = $default:expr, kind $kind:ty,
                reload $reload:ident $($note:literal)?,
                $doc:literal;
            )*
        }
        $(tables {
            $(
                $(#[$tdoc:meta])*
                $tfield:ident: $tty:ident, raw $traw:ident;
            )*
        })?
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name {
            $( $(#[$fdoc])* pub $field: $ty, )*
            $($( $(#[$tdoc])* pub $tfield: $tty, )*)?
        }

        impl Default for $name {
            fn default() -> $name {
                $name {
                    $( $field: $default, )*
                    $($( $tfield: $tty::default(), )*)?
                }
            }
        }

        #[doc = concat!("The keys of the `", $table, "` table, in file order.")]
        pub const $keys: &[Key] = &[
            $(
                Key {
                    table: $table,
                    name: stringify!($field),
                    takes: <$kind as Leaf>::TAKES,
                    doc: $doc,
                    reload: Reload::$reload,
                    reload_note: concat!("" $(, $note)?),
                },
            )*
        ];

        /// The table as the file holds it: what serde reads, unknown keys
        /// denied, every key optional.
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $raw {
            $( #[serde(default)] $field: Option<$kind>, )*
            $($( #[serde(default)] $tfield: Option<Section<$traw>>, )*)?
        }

        impl Table for $raw {
            type Checked = $name;
            fn apply(self, to: &mut $name) {
                $( if let Some(value) = self.$field { to.$field = value.into_value(); } )*
                $($( if let Some(Section(table)) = self.$tfield { table.apply(&mut to.$tfield); } )*)?
            }
        }

        impl $name {
            /// The table's keys.
            const KEYS: &'static [Key] = $keys;

            /// Every name the table takes, keys then sub-tables (the list an
            /// unknown-key message gives).
            const NAMES: &'static [&'static str] = &[
                $( stringify!($field), )*
                $($( stringify!($tfield), )*)?
            ];

            /// Each key with its value as TOML text, in file order.
            fn values(&self) -> Vec<(&'static Key, String)> {
                $keys
                    .iter()
                    .zip([$( <$kind as Field>::to_toml(&self.$field) ),*])
                    .collect()
            }
        }

        $(impl $name {
            /// The tables, this one (the top level) first: each one's name,
            /// keys and the names it takes.
            const TABLES: &'static [(&'static str, &'static [Key], &'static [&'static str])] = &[
                ($table, $name::KEYS, $name::NAMES),
                $( (stringify!($tfield), $tty::KEYS, $tty::NAMES), )*
            ];

            /// Each table's name with its keys' values as TOML text, in
            /// file order.
            fn tables(&self) -> Vec<(&'static str, Vec<(&'static Key, String)>)> {
                vec![($table, self.values()) $(, (stringify!($tfield), self.$tfield.values()))*]
            }
        })?
    };
}

config_table! {
    /// The checked daemon configuration: every field already holds a valid value.
    ///
    /// Build it with [`Config::default`], [`Config::from_toml`] or
    /// [`Config::load`]; command-line flags are applied on top by
    /// `cli::DaemonArgs::apply_overrides`.
    pub struct Config, raw ConfigFile, table "", keys TOP_KEYS {
        /// How replies are upper-cased (`mode`; default `unicode`).
        mode: Mode = Mode::Unicode, kind ModeKind, reload NewConnectionsAndDatagrams,
        "How replies are upper-cased: \"unicode\" (full Unicode mapping) or \"ascii\" (a-z only).";
        /// Log verbosity (`log_level`; default `info`). `RUST_LOG`, when set,
        /// takes precedence; that is up to the logger setup, not this module.
        log_level: LevelFilter = LevelFilter::Info, kind LevelKind, reload Live,
        "Log verbosity: off, error, warn, info, debug or trace (RUST_LOG overrides it).";
        /// How long a graceful shutdown may take before remaining connections are
        /// dropped (`shutdown_timeout`; default 5 s).
        shutdown_timeout: Duration = Duration::from_secs(5), kind DurationKind, reload Live,
        "Graceful shutdown (SIGTERM/SIGINT) waits at most this long for connections to finish.";
        /// Bind with `SO_REUSEPORT` (`reuse_port`; default false), so that several
        /// upcased processes can share one port, the kernel spreading clients
        /// across them: one process per core.
        reuse_port: bool = false, kind BoolKind, reload Restart,
        "Share the listen ports with other upcased processes (SO_REUSEPORT), one per core.";
        /// One record per TCP connection when it ends: peer, duration, bytes
        /// each way, why it closed (`log_connections`; default false). Under
        /// journald the fields are the journal's own (`CLOSE_REASON=idle`).
        log_connections: bool = false, kind BoolKind, reload Live,
        "Log one record per TCP connection when it ends (peer, duration, bytes, close reason).";
    }
    tables {
        /// The `[tcp]` table.
        tcp: TcpConfig, raw TcpFile;
        /// The `[udp]` table.
        udp: UdpConfig, raw UdpFile;
        /// The `[agent]` table.
        agent: AgentConfig, raw AgentFile;
        /// The `[metrics]` table.
        metrics: MetricsConfig, raw MetricsFile;
    }
}

config_table! {
    /// The `[tcp]` table: the stream transport.
    pub struct TcpConfig, raw TcpFile, table "tcp", keys TCP_KEYS {
        /// Addresses to listen on; empty turns TCP off
        /// (default `[127.0.0.1:12000]`).
        listen: Vec<SocketAddr> = vec![DEFAULT_LISTEN], kind Listen, reload Restart,
        "TCP addresses to listen on, IP:PORT (\"[::]:12000\" for IPv6); [] turns TCP off.";
        /// Listen backlog passed to `listen(2)`, `1..=65535` (default 1024).
        backlog: u32 = 1024, kind Backlog, reload Restart,
        "Listen backlog: connections the kernel queues before they are accepted (1-65535).";
        /// Most simultaneously open client connections (default 10000).
        max_connections: NonZeroUsize = NonZeroUsize::new(10_000).expect("non-zero"),
        kind AtLeastOne, reload Live,
        "Most client connections open at the same time.";
        /// Close a connection after this long without activity; `None` (written
        /// `"0s"`) means never (default 5 min).
        idle_timeout: Option<Duration> = Some(Duration::from_secs(5 * 60)),
        kind DurationOrNever, reload Live,
        "Close a connection idle for this long; \"0s\" = never.";
        /// Per connection, most bytes of reply waiting to be sent before the
        /// daemon stops reading from that client (default 65536).
        max_pending_output: NonZeroUsize = NonZeroUsize::new(64 * 1024).expect("non-zero"),
        kind PendingOutput, reload Live,
        "Per connection, most bytes of reply not yet sent before reading pauses (or \"64KiB\").";
        /// Which connections get the telnet filter (commands stripped, option
        /// requests refused, 0xFF escaped in replies), for clients that
        /// negotiate on any port (PuTTY): `"auto"` (a client whose first bytes
        /// are a telnet command; the default), `true` (every client) or `false`
        /// (none). Applies to connections accepted after it is set.
        telnet: crate::telnet::Setting = crate::telnet::Setting::Auto,
        kind Telnet, reload NewConnections,
        "Telnet clients that negotiate (PuTTY): drop IAC commands, refuse every option,\n\
         escape 0xFF. \"auto\": clients whose first bytes are a telnet command; true: all; false: none.";
        /// Most connections open at once from one client address; `None`
        /// (written `0`) means no such limit (default). IPv4-mapped IPv6
        /// addresses count as the IPv4 address.
        max_connections_per_ip: Option<NonZeroUsize> = None, kind PerIpLimit, reload NewConnections,
        "Most connections open at once from one client address; 0 = no limit.";
        /// Per connection, the kernel's receive and send buffers (`SO_RCVBUF`
        /// and `SO_SNDBUF`, set on the listeners too so the handshake offers a
        /// window that fits); `None` (written `0`) leaves them to the kernel's
        /// autotuning, up to `tcp_rmem`/`tcp_wmem`'s maxima (default 128 KiB).
        /// Applies to connections accepted after it is set.
        socket_buffer: Option<NonZeroUsize> = NonZeroUsize::new(DEFAULT_SOCKET_BUFFER),
        kind SocketBuffer, reload NewConnections "going back to 0 (autotuning) needs a restart",
        "Per connection, kernel receive and send buffers (SO_RCVBUF/SO_SNDBUF, or \"128KiB\"); 0 = autotuning.";
        /// Addresses to listen on for a load balancer that sends the PROXY
        /// protocol (v1 or v2): every connection must open with a header
        /// (HAProxy `send-proxy-v2`, nginx `proxy_protocol on`), whose
        /// client address is then the one counted and logged. Empty by
        /// default; `listen` sockets never look for a header.
        proxy_listen: Vec<SocketAddr> = Vec::new(), kind Listen, reload Restart,
        "Addresses where every connection must begin with a PROXY protocol header (v1 or v2),\n\
         as a load balancer sends it (HAProxy send-proxy-v2, nginx proxy_protocol on).";
        /// Networks allowed to connect to `proxy_listen`: any other peer is
        /// closed unanswered (default loopback: `127.0.0.0/8`, `::1/128`).
        /// IPv4-mapped IPv6 peers match IPv4 networks.
        proxy_trusted: Vec<crate::proxy::Cidr> = crate::proxy::default_trusted(),
        kind Networks, reload NewConnections,
        "Networks (CIDR) of the balancers allowed on proxy_listen; others are closed unanswered.";
    }
}

config_table! {
    /// The `[udp]` table: the datagram transport.
    pub struct UdpConfig, raw UdpFile, table "udp", keys UDP_KEYS {
        /// Addresses to listen on; empty turns UDP off
        /// (default `[127.0.0.1:12000]`).
        listen: Vec<SocketAddr> = vec![DEFAULT_LISTEN], kind Listen, reload Restart,
        "UDP addresses to listen on, IP:PORT (\"[::]:12000\" for IPv6); [] turns UDP off.";
        /// Datagrams from these source ports are dropped unanswered: the
        /// classic services that answer anything (echo 7, daytime 13, chargen
        /// 19, time 37), so a spoofed datagram cannot make two services bounce
        /// replies between them forever (default `[7, 13, 19, 37]`).
        blocked_source_ports: Vec<u16> = DEFAULT_BLOCKED_SOURCE_PORTS.to_vec(),
        kind Ports, reload Live,
        "Datagrams from these source ports are dropped (echo, daytime, chargen, time).";
        /// Datagrams answered per second per source address, with a burst of one
        /// second's worth (a token bucket); excess is dropped and counted. `None`
        /// (written `0`) turns it off (default 1000: plenty for one honest
        /// client, and a cap on what a spoofed source can aim at its victim).
        rate_limit: Option<NonZeroU32> = NonZeroU32::new(1000), kind RateLimit, reload Live,
        "Datagrams answered per second per source address (burst: one second's worth); 0 = off.";
        /// Whether `rate_limit` applies to loopback sources too (default false).
        /// A loopback source cannot be spoofed from the network (Linux drops
        /// such packets arriving on any other interface), and local clients,
        /// load generators among them, are trusted anyway.
        rate_limit_loopback: bool = false, kind BoolKind, reload Live,
        "Apply rate_limit to loopback sources too (they cannot be spoofed from outside).";
    }
}

config_table! {
    /// The `[agent]` table: HAProxy's agent check.
    pub struct AgentConfig, raw AgentFile, table "agent", keys AGENT_KEYS {
        /// Addresses of the agent-check port: each connection is answered
        /// with one line (`up ready 100%`, a lower weight near
        /// `max_connections`, `drain` from the start of a graceful shutdown,
        /// `down` while out of file descriptors), then closed. Empty (the
        /// default) turns it off.
        listen: Vec<SocketAddr> = Vec::new(), kind Listen, reload Restart,
        "HAProxy agent-check addresses: one line (up/weight, drain, down), then close; [] = off.";
    }
}

config_table! {
    /// The `[metrics]` table: the Prometheus endpoint.
    pub struct MetricsConfig, raw MetricsFile, table "metrics", keys METRICS_KEYS {
        /// Addresses of the Prometheus endpoint (`GET /metrics`); empty
        /// (the default) turns it off. Outside `[tcp] max_connections` and
        /// the per-address limit: it has small bounds of its own.
        listen: Vec<SocketAddr> = Vec::new(), kind Listen, reload Restart,
        "Prometheus endpoint (GET /metrics), IP:PORT such as \"127.0.0.1:12002\"; [] = off.";
    }
}

/// The names a table takes (keys and sub-tables), by its dotted name.
fn names_of(table: &str) -> Option<&'static [&'static str]> {
    Config::TABLES
        .iter()
        .find(|(name, _, _)| *name == table)
        .map(|(_, _, names)| *names)
}

/// The comment at the top of the file [`Config::to_toml`] writes.
const FILE_HEADER: &str = "\
# upcased configuration (TOML).
#
# Every key is optional: a missing key takes its built-in default (the example
# config/upcased.toml lists every default, as does `upcased --check-config`).
# Unknown keys are errors. Durations are strings with a unit: \"250ms\", \"5s\",
# \"5m\", \"1h\". The flags --tcp, --udp and --mode override this file.
";

/// Why a configuration file could not be used.
///
/// Every variant's message names the file; [`ConfigError::Invalid`] and
/// [`ConfigError::Syntax`] also name the line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, permissions, not UTF-8, ...).
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file as given.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A key is unknown, has the wrong type or an invalid value (or the TOML
    /// is malformed on a line whose key could be recognized).
    #[error("{}:{line}: {key}: {message}", path.display())]
    Invalid {
        /// The file (the `origin` given to [`Config::from_toml`]).
        path: PathBuf,
        /// 1-based line of the offending key or value.
        line: usize,
        /// The dotted key, e.g. `tcp.idle_timeout`.
        key: String,
        /// What is wrong and what is expected.
        message: String,
    },
    /// The file is not valid TOML and no key could be named.
    #[error("{}:{line}: {message}", path.display())]
    Syntax {
        /// The file (the `origin` given to [`Config::from_toml`]).
        path: PathBuf,
        /// 1-based line where the TOML parser gave up.
        line: usize,
        /// The TOML parser's message.
        message: String,
    },
}

impl Config {
    /// Parses and checks a TOML document; `origin` is only used in error
    /// messages (normally the file's path).
    ///
    /// Missing keys take their defaults; unknown keys, wrong types and invalid
    /// values are errors naming the line and the dotted key.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let document = toml::de::Deserializer::parse(text)
            .map_err(|error| syntax_error(text, origin, &error))?;
        let file: ConfigFile = serde_path_to_error::deserialize(document)
            .map_err(|error| invalid(text, origin, error))?;
        let mut config = Config::default();
        file.apply(&mut config);
        Ok(config)
    }

    /// Reads the file at `path` and parses it with [`Config::from_toml`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// The effective config as TOML text, every key present, with the same
    /// layout and one-line comments as `config/upcased.toml` (for the default
    /// config it is exactly that file). It parses back with
    /// [`Config::from_toml`] to an equal `Config` (durations are written in
    /// whole milliseconds, see [`format_duration`]).
    pub fn to_toml(&self) -> String {
        let mut out = String::from(FILE_HEADER);
        for (table, values) in self.tables() {
            out.push('\n');
            if !table.is_empty() {
                out.push_str(&format!("[{table}]\n"));
            }
            for (key, value) in values {
                for comment in key.doc.lines() {
                    out.push_str(&format!("# {comment}\n"));
                }
                out.push_str(&format!("{} = {value}\n", key.name));
            }
        }
        out
    }
}

// The duration and size vocabulary is shared with the command lines; it
// lives in `units`. Re-exported here, where it was first written, so that
// `config::parse_duration` and `config::format_duration` keep working.
use crate::units::parse_size;
pub use crate::units::{format_duration, parse_duration};

/// The config-file name of a log level (lower case).
fn level_name(level: LevelFilter) -> &'static str {
    match level {
        LevelFilter::Off => "off",
        LevelFilter::Error => "error",
        LevelFilter::Warn => "warn",
        LevelFilter::Info => "info",
        LevelFilter::Debug => "debug",
        LevelFilter::Trace => "trace",
    }
}

/// Parses a config-file log level name (lower case only, like `mode`).
fn parse_level(s: &str) -> Result<LevelFilter, String> {
    [
        LevelFilter::Off,
        LevelFilter::Error,
        LevelFilter::Warn,
        LevelFilter::Info,
        LevelFilter::Debug,
        LevelFilter::Trace,
    ]
    .into_iter()
    .find(|&level| level_name(level) == s)
    .ok_or_else(|| {
        format!("unknown log level {s:?}: expected one of off, error, warn, info, debug, trace")
    })
}

/// Parses one listen address (IP:PORT; host names are not resolved).
fn parse_address(s: &str) -> Result<SocketAddr, String> {
    SocketAddr::from_str(s).map_err(|_| {
        format!(
            "invalid address {s:?}: expected IP:PORT such as \"127.0.0.1:12000\" or \"[::]:12000\" (host names are not allowed)"
        )
    })
}

/// A TOML basic string literal for `s`.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A TOML array of address strings.
fn address_list(addresses: &[SocketAddr]) -> String {
    let items: Vec<String> = addresses.iter().map(|a| quote(&a.to_string())).collect();
    format!("[{}]", items.join(", "))
}

// ---------------------------------------------------------------------------
// Kinds of value: how each key is read from the file and written back.

/// How a kind reads what the file holds, saying in this module's words
/// what is wrong. The defaults refuse everything with the wrong-type
/// message; a kind overrides what it takes.
trait Leaf: Sized {
    /// What it takes, for the wrong-type message (`expected TAKES, found a
    /// string`) and the man page.
    const TAKES: &'static str;

    /// Checks a scalar.
    fn check(found: Found<'_>) -> Result<Self, String> {
        Err(found.wrong(Self::TAKES))
    }

    /// Checks an array.
    fn check_seq<'de, A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        drop(seq);
        Err(de::Error::custom(wrong_type(Self::TAKES, "an array")))
    }

    /// Checks a table; toml hands a datetime over as a table too, with one
    /// magic key.
    fn check_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let found = match map.next_key::<String>()? {
            Some(key) if key == TOML_DATETIME_FIELD => "a datetime",
            _ => "a table",
        };
        Err(de::Error::custom(wrong_type(Self::TAKES, found)))
    }
}

/// A kind of config value: a newtype over the checked type, read by its
/// [`Leaf`] checks and written back by `to_toml`.
trait Field: Leaf {
    /// The checked type it yields (the `Config` field's type).
    type Value;
    /// The checked value.
    fn into_value(self) -> Self::Value;
    /// The value as TOML text, in the syntax it is read back from.
    fn to_toml(value: &Self::Value) -> String;
}

/// A serde file struct, applied onto the checked struct's defaults.
trait Table {
    /// The checked struct it fills in.
    type Checked;
    /// Overwrites in `to` every key the file sets.
    fn apply(self, to: &mut Self::Checked);
}

/// What the file holds where a scalar is read, as the kinds see it.
#[derive(Clone, Copy)]
enum Found<'a> {
    Str(&'a str),
    /// Any integer toml reads (i128 holds every one of them).
    Int(i128),
    Bool(bool),
    /// What no kind takes as a scalar, by its name: "a float".
    Other(&'static str),
}

impl Found<'_> {
    /// The wrong-type message.
    fn wrong(self, expected: &str) -> String {
        let found = match self {
            Found::Str(_) => "a string",
            Found::Int(_) => "an integer",
            Found::Bool(_) => "a boolean",
            Found::Other(name) => name,
        };
        wrong_type(expected, found)
    }

    /// An integer within `min..=max`; `expected` describes the range.
    fn integer(self, min: i128, max: i128, expected: &str) -> Result<i128, String> {
        match self {
            Found::Int(n) if (min..=max).contains(&n) => Ok(n),
            Found::Int(n) => Err(format!("{n} is out of range: expected {expected}")),
            _ => Err(self.wrong("an integer")),
        }
    }

    /// A string run through `parse`.
    fn string<T>(
        self,
        expected: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, String> {
        match self {
            Found::Str(s) => parse(s),
            _ => Err(self.wrong(expected)),
        }
    }

    /// A size in bytes: an integer from `min`, or a string with a unit (see
    /// `parse_size`).
    fn size(self, min: i128, expected: &str, takes: &str) -> Result<u64, String> {
        match self {
            Found::Int(_) => self
                .integer(min, i64::MAX.into(), expected)
                .map(|n| u64::try_from(n).expect("checked range")),
            Found::Str(s) => parse_size(s),
            _ => Err(self.wrong(takes)),
        }
    }

    /// A limit where `0` means off (at most `u32::MAX`).
    fn count_or_off(self) -> Result<u32, String> {
        let n = self.integer(0, u32::MAX.into(), "0 (off) or more")?;
        Ok(u32::try_from(n).expect("checked range"))
    }
}

fn wrong_type(expected: &str, found: &str) -> String {
    format!("expected {expected}, found {found}")
}

/// The key toml's deserializer shows a datetime under, when it hands one
/// over as a map (`toml_datetime`'s private `FIELD`).
const TOML_DATETIME_FIELD: &str = "$__toml_private_datetime";

/// Reads any value and hands it to `T`'s checks.
struct LeafVisitor<T>(PhantomData<T>);

impl<'de, T: Leaf> Visitor<'de> for LeafVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(T::TAKES)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        T::check(Found::Str(v)).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::check(Found::Int(v.into())).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::check(Found::Int(v.into())).map_err(E::custom)
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<T, E> {
        T::check(Found::Int(v)).map_err(E::custom)
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<T, E> {
        // Past i128 is past every range a key takes.
        T::check(Found::Int(i128::try_from(v).unwrap_or(i128::MAX))).map_err(E::custom)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<T, E> {
        T::check(Found::Other("a float")).map_err(E::custom)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
        T::check(Found::Bool(v)).map_err(E::custom)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        T::check_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::check_map(map)
    }
}

/// Declares kinds of value: `kind Kind(Type) takes "..."; write |v| text;` then
/// the checks it overrides, `check |found| ...;` (a [`Found`] scalar to a
/// `Result<Type, String>`) and/or `check_seq |seq| ...;` (an array).
macro_rules! kinds {
    ($(
        $(#[$doc:meta])*
        kind $kind:ident($ty:ty) takes $takes:expr;
        write |$w:ident| $write:expr;
        $(check |$f:ident| $check:expr;)?
        $(check_seq |$s:ident| $seq:expr;)?
    )*) => {$(
        $(#[$doc])*
        struct $kind($ty);

        impl Leaf for $kind {
            const TAKES: &'static str = $takes;
            $(fn check($f: Found<'_>) -> Result<Self, String> {
                $check.map($kind)
            })?
            $(fn check_seq<'de, A: SeqAccess<'de>>($s: A) -> Result<Self, A::Error> {
                $seq.map($kind)
            })?
        }

        impl Field for $kind {
            type Value = $ty;
            fn into_value(self) -> $ty {
                self.0
            }
            fn to_toml($w: &$ty) -> String {
                $write
            }
        }

        impl<'de> Deserialize<'de> for $kind {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$kind, D::Error> {
                d.deserialize_any(LeafVisitor(PhantomData))
            }
        }
    )*};
}

/// What a duration key takes.
const DURATION_TAKES: &str = "a duration string such as \"5s\"";

kinds! {
    /// `mode`: `"ascii"` or `"unicode"`.
    kind ModeKind(Mode) takes "a string (\"ascii\" or \"unicode\")";
    write |v| quote(v.as_str());
    check |found| found.string(Self::TAKES, Mode::from_str);

    /// `log_level`: a level name, lower case.
    kind LevelKind(LevelFilter) takes "a string (off, error, warn, info, debug or trace)";
    write |v| quote(level_name(*v));
    check |found| found.string(Self::TAKES, parse_level);

    /// A duration string (see [`parse_duration`]).
    kind DurationKind(Duration) takes DURATION_TAKES;
    write |v| quote(&format_duration(*v));
    check |found| found.string(Self::TAKES, parse_duration);

    /// A duration string where `"0s"` means never.
    kind DurationOrNever(Option<Duration>) takes DURATION_TAKES;
    write |v| quote(&format_duration(v.unwrap_or(Duration::ZERO)));
    check |found| found
        .string(Self::TAKES, parse_duration)
        .map(|d| (!d.is_zero()).then_some(d));

    /// `true` or `false`.
    kind BoolKind(bool) takes "true or false";
    write |v| v.to_string();
    check |found| match found {
        Found::Bool(b) => Ok(b),
        _ => Err(found.wrong(Self::TAKES)),
    };

    /// `[tcp] backlog`: what `listen(2)` takes, `1..=65535`.
    kind Backlog(u32) takes "an integer";
    write |v| v.to_string();
    check |found| found
        .integer(1, 65535, "an integer from 1 to 65535")
        .map(|n| u32::try_from(n).expect("checked range"));

    /// A count of at least 1.
    kind AtLeastOne(NonZeroUsize) takes "an integer";
    write |v| v.to_string();
    check |found| {
        let n = found.integer(1, i64::MAX.into(), "an integer of at least 1")?;
        usize::try_from(n)
            .ok()
            .and_then(NonZeroUsize::new)
            .ok_or_else(|| format!("{n} is out of range: too large"))
    };

    /// `[tcp] max_pending_output`: a size of at least 1 byte.
    kind PendingOutput(NonZeroUsize) takes "an integer or a string such as \"64KiB\"";
    write |v| v.to_string();
    check |found| {
        let expected = "at least 1 byte";
        match (found.size(1, expected, Self::TAKES)?, found) {
            (0, Found::Str(s)) => Err(format!("{s:?} is out of range: expected {expected}")),
            (bytes, _) => usize::try_from(bytes)
                .ok()
                .and_then(NonZeroUsize::new)
                .ok_or_else(|| format!("{bytes} bytes is too large")),
        }
    };

    /// `[tcp] socket_buffer`: a size as `max_pending_output` takes, 0 = off,
    /// at most what `setsockopt` takes (a C int).
    kind SocketBuffer(Option<NonZeroUsize>) takes "an integer or a string such as \"128KiB\"";
    write |v| v.map_or(0, NonZeroUsize::get).to_string();
    check |found| {
        let max = i32::MAX as u64;
        match found.size(0, "0 (off) or a number of bytes", Self::TAKES)? {
            bytes if bytes > max => Err(format!("{bytes} bytes is too large (at most {max})")),
            bytes => Ok(NonZeroUsize::new(bytes as usize)),
        }
    };

    /// `[tcp] telnet`: `true`, `false` or `"auto"`.
    kind Telnet(crate::telnet::Setting) takes "true, false or \"auto\"";
    write |v| v.as_toml().to_owned();
    check |found| match found {
        Found::Bool(true) => Ok(crate::telnet::Setting::On),
        Found::Bool(false) => Ok(crate::telnet::Setting::Off),
        Found::Str("auto") => Ok(crate::telnet::Setting::Auto),
        Found::Str(s) => Err(format!("{s:?} is not a setting: expected true, false or \"auto\"")),
        _ => Err(found.wrong(Self::TAKES)),
    };

    /// `[tcp] max_connections_per_ip`: a count, 0 = no limit.
    kind PerIpLimit(Option<NonZeroUsize>) takes "an integer";
    write |v| v.map_or(0, NonZeroUsize::get).to_string();
    check |found| found.count_or_off().map(|n| NonZeroUsize::new(n as usize));

    /// `[udp] rate_limit`: datagrams per second, 0 = off.
    kind RateLimit(Option<NonZeroU32>) takes "an integer";
    write |v| v.map_or(0, NonZeroU32::get).to_string();
    check |found| found.count_or_off().map(NonZeroU32::new);

    /// One listen address (an item of `listen`).
    kind Address(SocketAddr) takes "an address string such as \"127.0.0.1:12000\"";
    write |v| quote(&v.to_string());
    check |found| found.string(Self::TAKES, parse_address);

    /// One network (an item of `proxy_trusted`).
    kind Network(crate::proxy::Cidr) takes "a network string such as \"127.0.0.0/8\"";
    write |v| quote(&v.to_string());
    check |found| found.string(Self::TAKES, crate::proxy::Cidr::from_str);

    /// `[tcp] proxy_trusted`: an array of networks.
    kind Networks(Vec<crate::proxy::Cidr>) takes "an array of networks such as [\"127.0.0.0/8\"]";
    write |v| format!("[{}]", v.iter().map(|n| quote(&n.to_string())).collect::<Vec<_>>().join(", "));
    check_seq |seq| items(seq).map(|items: Vec<Network>| items.into_iter().map(|n| n.0).collect());

    /// `listen`: an array of addresses.
    kind Listen(Vec<SocketAddr>) takes "an array of addresses such as [\"127.0.0.1:12000\"]";
    write |v| address_list(v);
    check_seq |seq| items(seq).map(|items: Vec<Address>| items.into_iter().map(|a| a.0).collect());

    /// One port number (an item of `blocked_source_ports`).
    kind Port(u16) takes "an integer";
    write |v| v.to_string();
    check |found| found
        .integer(0, 65535, "a port from 0 to 65535")
        .map(|n| u16::try_from(n).expect("checked range"));

    /// `[udp] blocked_source_ports`: an array of port numbers.
    kind Ports(Vec<u16>) takes "an array of port numbers such as [7, 19]";
    write |v| format!("[{}]", v.iter().map(u16::to_string).collect::<Vec<_>>().join(", "));
    check_seq |seq| items(seq).map(|items: Vec<Port>| items.into_iter().map(|p| p.0).collect());
}

/// Reads an array item by item, each through its own `Deserialize` (so an
/// error carries the item's span, and so its line).
fn items<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(mut seq: A) -> Result<Vec<T>, A::Error> {
    let mut items = Vec::new();
    while let Some(item) = seq.next_element()? {
        items.push(item);
    }
    Ok(items)
}

/// A sub-table (`[tcp]`, `[udp]`), read by its file struct: a table and
/// nothing else (the derived struct visitor alone would also take an
/// array, `[[udp]]`). A datetime arrives as a table too; its magic key is
/// then reported as "found a datetime" by `invalid`.
struct Section<T>(T);

impl<T: DeserializeOwned> Leaf for Section<T> {
    const TAKES: &'static str = "a table";

    fn check_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Section)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Section<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Section<T>, D::Error> {
        d.deserialize_any(LeafVisitor(PhantomData))
    }
}

/// Turns a deserialization error into [`ConfigError::Invalid`]: the dotted
/// key from the path (array indices dropped: the key is the array's), the
/// line from the span toml attached (the value's, or the key's for an
/// unknown key), and for an unknown key this module's message instead of
/// serde's (`unknown field ...`).
fn invalid(
    text: &str,
    origin: &Path,
    error: serde_path_to_error::Error<toml::de::Error>,
) -> ConfigError {
    use serde_path_to_error::Segment;
    let mut key: Vec<String> = error
        .path()
        .iter()
        .filter_map(|segment| match segment {
            Segment::Map { key } => Some(key.clone()),
            _ => None,
        })
        .collect();
    let error = error.into_inner();
    let mut message = error.message().trim_end().to_owned();
    if let Some((name, parent)) = key.split_last() {
        let known = names_of(&parent.join("."));
        if name == TOML_DATETIME_FIELD {
            // A datetime where a table belongs (see `Section`).
            message = wrong_type("a table", "a datetime");
            key.pop();
        } else if let Some(known) = known.filter(|known| !known.contains(&name.as_str())) {
            message = format!("unknown key; expected one of: {}", known.join(", "));
        }
    }
    let offset = error.span().map_or(text.len(), |span| span.start);
    ConfigError::Invalid {
        path: origin.to_path_buf(),
        line: line_of(text, offset),
        key: key.join("."),
        message,
    }
}

// ---------------------------------------------------------------------------
// The man page.

/// Escapes text for roff: backslashes, and a leading `.` or `'` that would
/// read as a request.
fn roff(text: &str) -> String {
    let text = text.replace('\\', "\\e").replace('-', "\\-");
    if text.starts_with('.') || text.starts_with('\'') {
        format!("\\&{text}")
    } else {
        text
    }
}

/// The man page's section title for a table.
fn man_section(table: &str) -> String {
    match table {
        "" => "TOP-LEVEL KEYS".to_owned(),
        table => format!("[{table}] TABLE"),
    }
}

/// The man page `upcased.toml(5)`, in roff: every key with what it takes,
/// its default and whether a reload applies it, from the same declarations
/// as [`Config::to_toml`] (and so `--check-config` and the example file).
pub fn man_page() -> String {
    let defaults = Config::default();
    let mut out = String::new();
    let mut line = |s: &str| {
        out.push_str(s);
        out.push('\n');
    };
    line(&format!(
        ".TH UPCASED.TOML 5 \"\" \"upcase {}\" \"File Formats\"",
        env!("CARGO_PKG_VERSION")
    ));
    line(".SH NAME");
    line("upcased.toml \\- configuration file of upcased");
    line(".SH SYNOPSIS");
    line("/etc/upcased/upcased.toml");
    line(".SH DESCRIPTION");
    line(&roff(
        "upcased(8) reads its configuration from the TOML file given with -c \
         (the packaged service uses /etc/upcased/upcased.toml). Every key is optional: \
         a missing key takes its default. Unknown keys are errors, reported as \
         FILE:LINE: KEY: message, as are wrong types and invalid values. \
         Durations are strings with a unit: \"250ms\", \"5s\", \"5m\", \"1h\". \
         Sizes are integers (bytes) or strings with a unit: \"512B\", \"64KiB\", \"1MiB\", \"1GiB\". \
         The flags --tcp, --udp and --mode override the file.",
    ));
    line(".PP");
    line(&roff(
        "upcased --check-config prints the effective configuration in this format, \
         every key present.",
    ));
    for (table, values) in defaults.tables() {
        line(&format!(".SH {}", roff(&man_section(table))));
        for (key, default) in values {
            line(".TP");
            line(&format!(".B {}", roff(key.name)));
            line(&roff(&key.doc.replace('\n', " ")));
            line(".br");
            line(&format!("Takes {}.", roff(key.takes)));
            line(".br");
            line(&format!("Default: {}", roff(&default)));
            line(".br");
            let note = match key.reload_note {
                "" => String::new(),
                note => format!("; {note}"),
            };
            line(&roff(&format!(
                "Reloads (SIGHUP): {}{note}.",
                key.reload.describe()
            )));
        }
    }
    line(".SH RELOAD");
    line(&roff(
        "On SIGHUP upcased reads the file again. A key that reloads takes its new value \
         at once or, where said, for connections accepted from then on. A key that does \
         not keeps its old value until a restart, and the reload logs a warning. \
         An invalid file is reported and the running configuration kept.",
    ));
    line(".SH FILES");
    line(".TP");
    line("/etc/upcased/upcased.toml");
    line("The configuration the packaged units use.");
    line(".SH SEE ALSO");
    line("upcased(8), upcase(1)");
    out
}

// ---------------------------------------------------------------------------
// Locating errors in the source text.

/// 1-based line number of a byte offset (offsets past the end count as the
/// last line).
fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Turns a TOML syntax error into [`ConfigError::Invalid`] when the offending
/// line is a `key = ...` line (the key is then prefixed with the last
/// `[table]` header above it), else into [`ConfigError::Syntax`].
fn syntax_error(text: &str, origin: &Path, error: &toml::de::Error) -> ConfigError {
    let offset = error.span().map_or(text.len(), |span| span.start);
    let line = line_of(text, offset);
    let message = format!("invalid TOML: {}", error.message().trim_end());
    match key_on_line(text, line) {
        Some(key) => ConfigError::Invalid {
            path: origin.to_path_buf(),
            line,
            key,
            message,
        },
        None => ConfigError::Syntax {
            path: origin.to_path_buf(),
            line,
            message,
        },
    }
}

/// A bare (possibly dotted) key: letters, digits, `_`, `-`, `.`.
fn bare_key(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split('.').map(str::trim).collect();
    let valid = parts.iter().all(|part| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    });
    valid.then(|| parts.join("."))
}

/// The dotted key defined on 1-based line `line`, best effort: the name in a
/// `[table]` header on that line, or the `key =` at its start prefixed by the
/// last `[table]` header above.
fn key_on_line(text: &str, line: usize) -> Option<String> {
    let mut header: Option<String> = None;
    for (index, source_line) in text.lines().enumerate() {
        let trimmed = source_line.trim_start();
        let header_name = trimmed.strip_prefix('[').map(|rest| {
            let rest = rest.strip_prefix('[').unwrap_or(rest);
            rest.split_once(']').and_then(|(name, _)| bare_key(name))
        });
        if index + 1 == line {
            if let Some(name) = header_name {
                return name;
            }
            let (key, _) = trimmed.split_once('=')?;
            let key = bare_key(key)?;
            return Some(match header {
                Some(header) => format!("{header}.{key}"),
                None => key,
            });
        }
        if let Some(name) = header_name {
            header = name;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv6Addr};

    const EXAMPLE: &str = include_str!("../config/upcased.toml");

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"))
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(config) => panic!("expected an error, got {config:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn non_default() -> Config {
        Config {
            mode: Mode::Ascii,
            log_level: LevelFilter::Trace,
            shutdown_timeout: Duration::from_millis(1500),
            reuse_port: true,
            log_connections: true,
            tcp: TcpConfig {
                listen: vec![
                    "0.0.0.0:7000".parse().unwrap(),
                    SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 7001),
                ],
                backlog: 1,
                max_connections: NonZeroUsize::new(3).unwrap(),
                idle_timeout: None,
                max_pending_output: NonZeroUsize::new(1 << 20).unwrap(),
                telnet: crate::telnet::Setting::On,
                max_connections_per_ip: NonZeroUsize::new(4),
                socket_buffer: None,
                proxy_listen: vec!["10.0.0.2:12100".parse().unwrap()],
                proxy_trusted: vec![
                    "10.0.0.0/24".parse().unwrap(),
                    "2001:db8::/32".parse().unwrap(),
                ],
            },
            udp: UdpConfig {
                listen: vec![],
                blocked_source_ports: vec![],
                rate_limit: None,
                rate_limit_loopback: true,
            },
            agent: AgentConfig {
                listen: vec!["127.0.0.1:12001".parse().unwrap()],
            },
            metrics: MetricsConfig {
                listen: vec!["127.0.0.1:12002".parse().unwrap()],
            },
        }
    }

    #[test]
    fn defaults() {
        let c = Config::default();
        assert_eq!(c.mode, Mode::Unicode);
        assert_eq!(c.log_level, LevelFilter::Info);
        assert_eq!(c.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(c.tcp.listen, vec!["127.0.0.1:12000".parse().unwrap()]);
        assert_eq!(c.tcp.backlog, 1024);
        assert_eq!(c.tcp.max_connections.get(), 10_000);
        assert_eq!(c.tcp.idle_timeout, Some(Duration::from_secs(300)));
        assert_eq!(c.tcp.max_pending_output.get(), 65536);
        assert_eq!(c.tcp.telnet, crate::telnet::Setting::Auto);
        assert_eq!(c.udp.listen, vec![DEFAULT_LISTEN]);
    }

    #[test]
    fn empty_file_is_default() {
        assert_eq!(parse("").unwrap(), Config::default());
        assert_eq!(parse("# nothing\n\n").unwrap(), Config::default());
        assert_eq!(parse("[tcp]\n[udp]\n").unwrap(), Config::default());
    }

    #[test]
    fn example_file_is_default() {
        assert_eq!(
            Config::from_toml(EXAMPLE, Path::new("config/upcased.toml")).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn example_file_is_default_to_toml() {
        // Same layout and comments: the example is the default config's to_toml.
        assert_eq!(Config::default().to_toml(), EXAMPLE);
    }

    #[test]
    fn full_file() {
        let text = r#"
mode = "ascii"
log_level = "trace"
shutdown_timeout = "1500ms"
reuse_port = true
log_connections = true

[tcp]
listen = ["0.0.0.0:7000", "[::]:7001"]
backlog = 1
max_connections = 3
idle_timeout = "0s"
max_pending_output = "1MiB"
telnet = true
max_connections_per_ip = 4
socket_buffer = 0
proxy_listen = ["10.0.0.2:12100"]
proxy_trusted = ["10.0.0.0/24", "2001:db8::/32"]

[udp]
listen = []
blocked_source_ports = []
rate_limit = 0
rate_limit_loopback = true

[agent]
listen = ["127.0.0.1:12001"]

[metrics]
listen = ["127.0.0.1:12002"]
"#;
        assert_eq!(parse(text).unwrap(), non_default());
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let c = parse("[tcp]\nbacklog = 0x10\n").unwrap();
        assert_eq!(
            c,
            Config {
                tcp: TcpConfig {
                    backlog: 16,
                    ..TcpConfig::default()
                },
                ..Config::default()
            }
        );
    }

    #[test]
    fn inline_and_dotted_tables() {
        let c = parse("tcp = { backlog = 5 }\nudp.listen = []\n").unwrap();
        assert_eq!(c.tcp.backlog, 5);
        assert!(c.udp.listen.is_empty());
    }

    #[test]
    fn empty_listen_lists_are_allowed() {
        let c = parse("[tcp]\nlisten = []\n[udp]\nlisten = []\n").unwrap();
        assert!(c.tcp.listen.is_empty());
        assert!(c.udp.listen.is_empty());
        assert_eq!(c.tcp.backlog, 1024);
    }

    #[test]
    fn unknown_top_level_key() {
        assert_eq!(
            error("mode = \"ascii\"\nbogus = 1\n"),
            "test.toml:2: bogus: unknown key; expected one of: mode, log_level, shutdown_timeout, reuse_port, log_connections, tcp, udp, agent, metrics"
        );
    }

    #[test]
    fn unknown_tcp_key() {
        assert_eq!(
            error("[tcp]\nbacklog = 5\n\nbogus = true\n"),
            "test.toml:4: tcp.bogus: unknown key; expected one of: listen, backlog, max_connections, idle_timeout, max_pending_output, telnet, max_connections_per_ip, socket_buffer, proxy_listen, proxy_trusted"
        );
    }

    #[test]
    fn unknown_udp_key_in_inline_table() {
        assert_eq!(
            error("udp = { listen = [], port = 1 }\n"),
            "test.toml:1: udp.port: unknown key; expected one of: listen, blocked_source_ports, rate_limit, rate_limit_loopback"
        );
    }

    #[test]
    fn unknown_table() {
        assert_eq!(
            error("[tcp]\n\n[http]\nlisten = []\n"),
            "test.toml:3: http: unknown key; expected one of: mode, log_level, shutdown_timeout, reuse_port, log_connections, tcp, udp, agent, metrics"
        );
        assert_eq!(
            error("[tcp.extra]\nx = 1\n"),
            "test.toml:1: tcp.extra: unknown key; expected one of: listen, backlog, max_connections, idle_timeout, max_pending_output, telnet, max_connections_per_ip, socket_buffer, proxy_listen, proxy_trusted"
        );
    }

    #[test]
    fn first_error_in_file_order_wins() {
        // Keys are checked in source order, not alphabetically.
        assert_eq!(
            error("zzz = 1\naaa = 2\n"),
            "test.toml:1: zzz: unknown key; expected one of: mode, log_level, shutdown_timeout, reuse_port, log_connections, tcp, udp, agent, metrics"
        );
    }

    #[test]
    fn wrong_types() {
        assert_eq!(
            error("[tcp]\nbacklog = \"1024\"\n"),
            "test.toml:2: tcp.backlog: expected an integer, found a string"
        );
        assert_eq!(
            error("\nmode = 1\n"),
            "test.toml:2: mode: expected a string (\"ascii\" or \"unicode\"), found an integer"
        );
        assert_eq!(
            error("tcp = 5\n"),
            "test.toml:1: tcp: expected a table, found an integer"
        );
        assert_eq!(
            error("[[udp]]\nlisten = []\n"),
            "test.toml:1: udp: expected a table, found an array"
        );
        assert_eq!(
            error("[udp]\nlisten = \"127.0.0.1:1\"\n"),
            "test.toml:2: udp.listen: expected an array of addresses such as [\"127.0.0.1:12000\"], found a string"
        );
        assert_eq!(
            error("[tcp]\nlisten = [\n  \"127.0.0.1:1\",\n  2,\n]\n"),
            "test.toml:4: tcp.listen: expected an address string such as \"127.0.0.1:12000\", found an integer"
        );
        assert_eq!(
            error("shutdown_timeout = 5\n"),
            "test.toml:1: shutdown_timeout: expected a duration string such as \"5s\", found an integer"
        );
        assert_eq!(
            error("[tcp]\nmax_pending_output = true\n"),
            "test.toml:2: tcp.max_pending_output: expected an integer or a string such as \"64KiB\", found a boolean"
        );
        assert_eq!(
            error("[tcp]\nmax_connections = 1.5\n"),
            "test.toml:2: tcp.max_connections: expected an integer, found a float"
        );
    }

    #[test]
    fn bad_duration() {
        let text = "mode = \"unicode\"\n\n[tcp]\nlisten = [\"127.0.0.1:12000\"]\nbacklog = 1024\n\nidle_timeout = \"5x\"\n";
        let e = Config::from_toml(text, Path::new("config/upcased.toml")).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"config/upcased.toml:7: tcp.idle_timeout: invalid duration "5x": expected a whole number followed by ms, s, m or h (e.g. "250ms", "5s", "5m")"#
        );
        assert!(
            matches!(e, ConfigError::Invalid { line: 7, ref key, .. } if key == "tcp.idle_timeout")
        );
        assert_eq!(
            error("shutdown_timeout = \"-1s\"\n"),
            r#"test.toml:1: shutdown_timeout: invalid duration "-1s": expected a whole number followed by ms, s, m or h (e.g. "250ms", "5s", "5m")"#
        );
    }

    #[test]
    fn backlog_out_of_range() {
        assert_eq!(
            error("[tcp]\nbacklog = 0\n"),
            "test.toml:2: tcp.backlog: 0 is out of range: expected an integer from 1 to 65535"
        );
        assert_eq!(
            error("[tcp]\nbacklog = 70000\n"),
            "test.toml:2: tcp.backlog: 70000 is out of range: expected an integer from 1 to 65535"
        );
        assert_eq!(
            parse("[tcp]\nbacklog = 65535\n").unwrap().tcp.backlog,
            65535
        );
    }

    #[test]
    fn other_ranges() {
        assert_eq!(
            error("[tcp]\nmax_connections = 0\n"),
            "test.toml:2: tcp.max_connections: 0 is out of range: expected an integer of at least 1"
        );
        assert_eq!(
            error("[tcp]\nmax_pending_output = -1\n"),
            "test.toml:2: tcp.max_pending_output: -1 is out of range: expected at least 1 byte"
        );
        assert_eq!(
            error("[tcp]\nmax_pending_output = \"0KiB\"\n"),
            "test.toml:2: tcp.max_pending_output: \"0KiB\" is out of range: expected at least 1 byte"
        );
        assert_eq!(
            error("[tcp]\nmax_pending_output = \"64KB\"\n"),
            "test.toml:2: tcp.max_pending_output: invalid size \"64KB\": expected a whole number of bytes, optionally followed by B, KiB, MiB or GiB (e.g. 65536, \"64KiB\", \"1MiB\")"
        );
    }

    #[test]
    fn guards_against_hostile_clients() {
        let c = parse("[tcp]\nmax_connections_per_ip = 0\n[udp]\nrate_limit = 50\nblocked_source_ports = [7, 1900]\n")
            .unwrap();
        assert_eq!(c.tcp.max_connections_per_ip, None);
        assert_eq!(c.udp.rate_limit, NonZeroU32::new(50));
        assert_eq!(c.udp.blocked_source_ports, [7, 1900]);
        assert_eq!(
            error("[udp]\nblocked_source_ports = [7, 70000]\n"),
            "test.toml:2: udp.blocked_source_ports: 70000 is out of range: expected a port from 0 to 65535"
        );
        assert_eq!(
            error("[udp]\nrate_limit = -1\n"),
            "test.toml:2: udp.rate_limit: -1 is out of range: expected 0 (off) or more"
        );
        assert_eq!(
            error("[tcp]\nmax_connections_per_ip = \"10\"\n"),
            "test.toml:2: tcp.max_connections_per_ip: expected an integer, found a string"
        );
    }

    #[test]
    fn telnet_is_a_boolean_or_auto() {
        use crate::telnet::Setting;
        let telnet = |v: &str| parse(&format!("[tcp]\ntelnet = {v}\n")).unwrap().tcp.telnet;
        assert_eq!(telnet("true"), Setting::On);
        assert_eq!(telnet("false"), Setting::Off);
        assert_eq!(telnet("\"auto\""), Setting::Auto);
        assert_eq!(
            error("[tcp]\ntelnet = \"yes\"\n"),
            "test.toml:2: tcp.telnet: \"yes\" is not a setting: expected true, false or \"auto\""
        );
        assert_eq!(
            error("[tcp]\ntelnet = 1\n"),
            "test.toml:2: tcp.telnet: expected true, false or \"auto\", found an integer"
        );
    }

    #[test]
    fn proxy_keys_name_the_bad_network_and_its_line() {
        let c = parse("[tcp]\nproxy_listen = [\"127.0.0.1:12100\"]\nproxy_trusted = [\"192.0.2.0/24\", \"::1\"]\n")
            .unwrap();
        assert_eq!(c.tcp.proxy_listen, ["127.0.0.1:12100".parse().unwrap()]);
        let trusted: Vec<String> = c.tcp.proxy_trusted.iter().map(|n| n.to_string()).collect();
        assert_eq!(trusted, ["192.0.2.0/24", "::1/128"]);
        assert_eq!(
            error("[tcp]\nproxy_trusted = [\n  \"10.0.0.0/8\",\n  \"10.0.0.1/8\",\n]\n"),
            "test.toml:4: tcp.proxy_trusted: invalid network \"10.0.0.1/8\": host bits are set (the network is \"10.0.0.0/8\")"
        );
        assert_eq!(
            error("[tcp]\nproxy_trusted = \"127.0.0.0/8\"\n"),
            "test.toml:2: tcp.proxy_trusted: expected an array of networks such as [\"127.0.0.0/8\"], found a string"
        );
        assert_eq!(
            error("[tcp]\nproxy_trusted = [\"lb.example\"]\n"),
            "test.toml:2: tcp.proxy_trusted: invalid network \"lb.example\": expected an address or a network such as \"127.0.0.0/8\" or \"::1/128\""
        );
        assert_eq!(
            error("[agent]\nlisten = [\"127.0.0.1\"]\n"),
            "test.toml:2: agent.listen: invalid address \"127.0.0.1\": expected IP:PORT such as \"127.0.0.1:12000\" or \"[::]:12000\" (host names are not allowed)"
        );
    }

    #[test]
    fn socket_buffer_values() {
        let get = |v: &str| {
            parse(&format!("[tcp]\nsocket_buffer = {v}\n"))
                .map(|c| c.tcp.socket_buffer)
                .ok()
        };
        assert_eq!(
            Config::default().tcp.socket_buffer,
            NonZeroUsize::new(131072)
        );
        assert_eq!(get("0"), Some(None));
        assert_eq!(get("\"0KiB\""), Some(None));
        assert_eq!(get("65536"), Some(NonZeroUsize::new(65536)));
        assert_eq!(get("\"1MiB\""), Some(NonZeroUsize::new(1 << 20)));
        assert_eq!(
            error("[tcp]\nsocket_buffer = \"4GiB\"\n"),
            "test.toml:2: tcp.socket_buffer: 4294967296 bytes is too large (at most 2147483647)"
        );
        assert_eq!(
            error("[tcp]\nsocket_buffer = -1\n"),
            "test.toml:2: tcp.socket_buffer: -1 is out of range: expected 0 (off) or a number of bytes"
        );
        assert_eq!(
            error("[tcp]\nsocket_buffer = false\n"),
            "test.toml:2: tcp.socket_buffer: expected an integer or a string such as \"128KiB\", found a boolean"
        );
    }

    #[test]
    fn max_pending_output_units() {
        let pending = |v: &str| {
            parse(&format!("[tcp]\nmax_pending_output = {v}\n"))
                .unwrap()
                .tcp
                .max_pending_output
                .get()
        };
        assert_eq!(pending("\"64KiB\""), 65536);
        assert_eq!(pending("\"1MiB\""), 1 << 20);
        assert_eq!(pending("\"512B\""), 512);
        assert_eq!(pending("\"4096\""), 4096);
        assert_eq!(pending("100"), 100);
    }

    #[test]
    fn bad_address() {
        assert_eq!(
            error("[udp]\nlisten = [\"localhost:12000\"]\n"),
            "test.toml:2: udp.listen: invalid address \"localhost:12000\": expected IP:PORT such as \"127.0.0.1:12000\" or \"[::]:12000\" (host names are not allowed)"
        );
        assert!(error("[tcp]\nlisten = [\"127.0.0.1\"]\n")
            .starts_with("test.toml:2: tcp.listen: invalid address \"127.0.0.1\""));
    }

    #[test]
    fn bad_mode() {
        assert_eq!(
            error("mode = \"fast\"\n"),
            "test.toml:1: mode: unknown mode \"fast\": expected \"ascii\" or \"unicode\""
        );
    }

    #[test]
    fn bad_log_level() {
        assert_eq!(
            error("\n\nlog_level = \"verbose\"\n"),
            "test.toml:3: log_level: unknown log level \"verbose\": expected one of off, error, warn, info, debug, trace"
        );
        for (name, level) in [
            ("off", LevelFilter::Off),
            ("error", LevelFilter::Error),
            ("warn", LevelFilter::Warn),
            ("info", LevelFilter::Info),
            ("debug", LevelFilter::Debug),
            ("trace", LevelFilter::Trace),
        ] {
            let c = parse(&format!("log_level = \"{name}\"")).unwrap();
            assert_eq!(c.log_level, level);
        }
    }

    #[test]
    fn syntax_error_without_key() {
        let e = parse("mode = \"ascii\"\n[tcp\nbacklog = 1\n").unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { line: 2, .. }), "{e:?}");
        assert!(
            e.to_string().starts_with("test.toml:2: invalid TOML: "),
            "{e}"
        );
    }

    #[test]
    fn syntax_error_with_key() {
        let e = parse("[tcp]\nbacklog = 1\nidle_timeout = 5m\n").unwrap_err();
        assert!(
            matches!(e, ConfigError::Invalid { line: 3, ref key, .. } if key == "tcp.idle_timeout"),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with("test.toml:3: tcp.idle_timeout: invalid TOML: "),
            "{e}"
        );
    }

    #[test]
    fn duplicate_key_is_an_error() {
        let e = error("[tcp]\nbacklog = 1\nbacklog = 2\n");
        assert!(
            e.starts_with("test.toml:3: tcp.backlog: invalid TOML: "),
            "{e}"
        );
        let e = error("[udp]\n\n[udp]\n");
        assert!(e.starts_with("test.toml:3: udp: invalid TOML: "), "{e}");
    }

    #[test]
    fn unreadable_file() {
        let path = std::env::temp_dir().join(format!(
            "upcased-config-test-{}-missing.toml",
            std::process::id()
        ));
        let e = Config::load(&path).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        let text = e.to_string();
        let prefix = format!("cannot read config file {}: ", path.display());
        assert!(text.starts_with(&prefix), "{text}");
        assert!(text.len() > prefix.len(), "{text}");
    }

    #[test]
    fn load_reads_the_file() {
        let path = std::env::temp_dir().join(format!(
            "upcased-config-test-{}-load.toml",
            std::process::id()
        ));
        std::fs::write(&path, "mode = \"ascii\"\n[tcp]\nbacklog = 0\n").unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            e,
            format!(
                "{}:3: tcp.backlog: 0 is out of range: expected an integer from 1 to 65535",
                path.display()
            )
        );
    }

    #[test]
    fn to_toml_round_trips() {
        for config in [Config::default(), non_default()] {
            let text = config.to_toml();
            assert_eq!(parse(&text).unwrap(), config, "{text}");
        }
        let text = non_default().to_toml();
        assert!(
            text.contains("listen = [\"0.0.0.0:7000\", \"[::]:7001\"]\n"),
            "{text}"
        );
        assert!(text.contains("idle_timeout = \"0s\"\n"), "{text}");
        assert!(text.contains("shutdown_timeout = \"1500ms\"\n"), "{text}");
        assert!(text.contains("[udp]\n# "), "{text}");
        assert!(text.contains("listen = []\n"), "{text}");
        assert!(text.contains("rate_limit_loopback = true\n"), "{text}");
        assert!(
            text.contains("[agent]\n# HAProxy agent-check addresses: one line (up/weight, drain, down), then close; [] = off.\nlisten = [\"127.0.0.1:12001\"]\n\n[metrics]\n"),
            "{text}"
        );
        assert!(
            text.ends_with("[metrics]\n# Prometheus endpoint (GET /metrics), IP:PORT such as \"127.0.0.1:12002\"; [] = off.\nlisten = [\"127.0.0.1:12002\"]\n"),
            "{text}"
        );
    }

    #[test]
    fn reuse_port_must_be_a_boolean() {
        assert!(parse("reuse_port = true\n").unwrap().reuse_port);
        assert_eq!(
            error("\nreuse_port = \"yes\"\n"),
            "test.toml:2: reuse_port: expected true or false, found a string"
        );
    }

    #[test]
    fn to_toml_has_a_comment_above_every_key() {
        let text = Config::default().to_toml();
        let lines: Vec<&str> = text.lines().collect();
        let mut keys = 0;
        for (i, line) in lines.iter().enumerate() {
            if line.contains(" = ") && !line.starts_with('#') {
                keys += 1;
                assert!(lines[i - 1].starts_with("# "), "no comment above {line}");
            }
        }
        assert_eq!(keys, 21);
    }

    #[test]
    fn datetimes_floats_and_tables_are_named() {
        assert_eq!(
            error("tcp = 1979-05-27\n"),
            "test.toml:1: tcp: expected a table, found a datetime"
        );
        assert_eq!(
            error("mode = 1979-05-27\n"),
            "test.toml:1: mode: expected a string (\"ascii\" or \"unicode\"), found a datetime"
        );
        assert_eq!(
            error("[tcp]\nlisten = [\n\"1.1.1.1:1\",\n{a = 1}\n]\n"),
            "test.toml:4: tcp.listen: expected an address string such as \"127.0.0.1:12000\", found a table"
        );
        assert_eq!(
            error("tcp.listen.x = 1\n"),
            "test.toml:1: tcp.listen: expected an array of addresses such as [\"127.0.0.1:12000\"], found a table"
        );
    }

    /// Every table's key list, its unknown-key list and what to_toml
    /// writes are the one declaration.
    #[test]
    fn one_declaration_per_key() {
        let tables = [
            ("", TOP_KEYS, Config::NAMES),
            ("tcp", TCP_KEYS, TcpConfig::NAMES),
            ("udp", UDP_KEYS, UdpConfig::NAMES),
            ("agent", AGENT_KEYS, AgentConfig::NAMES),
            ("metrics", METRICS_KEYS, MetricsConfig::NAMES),
        ];
        assert_eq!(Config::TABLES, tables);
        for (table, keys, names) in tables {
            assert!(keys.iter().all(|key| key.table == table), "{table}");
            let declared: Vec<&str> = keys.iter().map(|key| key.name).collect();
            assert_eq!(names[..keys.len()], declared[..], "{table}");
            assert_eq!(names_of(table), Some(names));
        }
        assert_eq!(
            Config::NAMES[TOP_KEYS.len()..],
            ["tcp", "udp", "agent", "metrics"]
        );
        assert_eq!(TcpConfig::NAMES.len(), TCP_KEYS.len());
        assert_eq!(UdpConfig::NAMES.len(), UDP_KEYS.len());

        let text = Config::default().to_toml();
        let mut table = "";
        let mut written = Vec::new();
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                table = header;
            } else if let Some((name, _)) = line.split_once(" = ") {
                written.push((table, name));
            }
        }
        let declared: Vec<(&str, &str)> = TOP_KEYS
            .iter()
            .chain(TCP_KEYS)
            .chain(UDP_KEYS)
            .chain(AGENT_KEYS)
            .chain(METRICS_KEYS)
            .map(|key| (key.table, key.name))
            .collect();
        assert_eq!(written, declared);
    }

    #[test]
    fn man_page_has_every_key_with_its_default_and_reload() {
        let page = man_page();
        assert!(page.starts_with(".TH UPCASED.TOML 5 "), "{page}");
        let defaults = Config::default();
        let tables = [
            ("TOP\\-LEVEL KEYS", defaults.values()),
            ("[tcp] TABLE", defaults.tcp.values()),
            ("[udp] TABLE", defaults.udp.values()),
            ("[agent] TABLE", defaults.agent.values()),
            ("[metrics] TABLE", defaults.metrics.values()),
        ];
        let titles: Vec<String> = defaults
            .tables()
            .iter()
            .map(|(t, _)| roff(&man_section(t)))
            .collect();
        let want: Vec<&str> = tables.iter().map(|(title, _)| *title).collect();
        assert_eq!(titles, want);
        for (title, values) in tables {
            let start = page
                .find(&format!(".SH {title}\n"))
                .unwrap_or_else(|| panic!("no section {title}"));
            let section = &page[start..];
            let section = &section[..section[4..]
                .find(".SH ")
                .map_or(section.len(), |end| end + 4)];
            let entries: Vec<&str> = section.split(".TP\n").skip(1).collect();
            assert_eq!(entries.len(), values.len(), "{section}");
            for (entry, (key, default)) in entries.iter().zip(values) {
                assert!(
                    entry.starts_with(&format!(".B {}\n", roff(key.name))),
                    "{entry}"
                );
                assert!(
                    entry.contains(&format!("Default: {}\n", roff(&default))),
                    "{entry}"
                );
                let reload = format!("Reloads (SIGHUP): {}", key.reload.describe());
                assert!(entry.contains(&roff(&reload)), "{entry}");
            }
        }
        let socket_buffer = &TCP_KEYS[7];
        assert_eq!(socket_buffer.name, "socket_buffer");
        assert!(page.contains(&roff(socket_buffer.reload_note)));
        assert!(!socket_buffer.reload_note.is_empty());
    }

    #[test]
    fn key_on_line_cases() {
        let text = "a = 1\n[tcp]\n x . y = 2\n[[udp]]\nlisten = [\n\"q\" = 1\n";
        assert_eq!(key_on_line(text, 1).as_deref(), Some("a"));
        assert_eq!(key_on_line(text, 2).as_deref(), Some("tcp"));
        assert_eq!(key_on_line(text, 3).as_deref(), Some("tcp.x.y"));
        assert_eq!(key_on_line(text, 5).as_deref(), Some("udp.listen"));
        assert_eq!(key_on_line(text, 6), None);
        assert_eq!(key_on_line(text, 99), None);
    }
}
