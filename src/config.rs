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
//! The file is parsed into toml's spanned document tree
//! ([`toml::de::DeTable`]), which keeps the byte span of every key and value,
//! and then checked key by key into [`Config`]; so every error message knows
//! its exact line and key without guessing from the source text (only TOML
//! syntax errors fall back to reading the key from the offending line).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::num::{NonZeroU32, NonZeroUsize};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use log::LevelFilter;
use toml::de::{DeString, DeTable, DeValue};
use toml::Spanned;

use crate::transform::Mode;

/// The address both transports listen on by default: `127.0.0.1:12000`.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 12000));

/// The checked daemon configuration: every field already holds a valid value.
///
/// Build it with [`Config::default`], [`Config::from_toml`] or
/// [`Config::load`]; command-line flags are applied on top by
/// `cli::DaemonArgs::apply_overrides`.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// How replies are upper-cased (`mode`; default `unicode`).
    pub mode: Mode,
    /// Log verbosity (`log_level`; default `info`). `RUST_LOG`, when set,
    /// takes precedence; that is up to the logger setup, not this module.
    pub log_level: LevelFilter,
    /// How long a graceful shutdown may take before remaining connections are
    /// dropped (`shutdown_timeout`; default 5 s).
    pub shutdown_timeout: Duration,
    /// Bind with `SO_REUSEPORT` (`reuse_port`; default false), so that several
    /// upcased processes can share one port, the kernel spreading clients
    /// across them: one process per core.
    pub reuse_port: bool,
    /// The `[tcp]` table.
    pub tcp: TcpConfig,
    /// The `[udp]` table.
    pub udp: UdpConfig,
}

/// The `[tcp]` table: the stream transport.
#[derive(Clone, Debug, PartialEq)]
pub struct TcpConfig {
    /// Addresses to listen on; empty turns TCP off
    /// (default `[127.0.0.1:12000]`).
    pub listen: Vec<SocketAddr>,
    /// Listen backlog passed to `listen(2)`, `1..=65535` (default 1024).
    pub backlog: u32,
    /// Most simultaneously open client connections (default 10000).
    pub max_connections: NonZeroUsize,
    /// Close a connection after this long without activity; `None` (written
    /// `"0s"`) means never (default 5 min).
    pub idle_timeout: Option<Duration>,
    /// Per connection, most bytes of reply waiting to be sent before the
    /// daemon stops reading from that client (default 65536).
    pub max_pending_output: NonZeroUsize,
    /// Which connections get the telnet filter (commands stripped, option
    /// requests refused, 0xFF escaped in replies), for clients that
    /// negotiate on any port (PuTTY): `"auto"` (a client whose first bytes
    /// are a telnet command; the default), `true` (every client) or `false`
    /// (none). Applies to connections accepted after it is set.
    pub telnet: crate::telnet::Setting,
    /// Most connections open at once from one client address; `None`
    /// (written `0`) means no such limit (default). IPv4-mapped IPv6
    /// addresses count as the IPv4 address.
    pub max_connections_per_ip: Option<NonZeroUsize>,
}

/// The `[udp]` table: the datagram transport.
#[derive(Clone, Debug, PartialEq)]
pub struct UdpConfig {
    /// Addresses to listen on; empty turns UDP off
    /// (default `[127.0.0.1:12000]`).
    pub listen: Vec<SocketAddr>,
    /// Datagrams from these source ports are dropped unanswered: the
    /// classic services that answer anything (echo 7, daytime 13, chargen
    /// 19, time 37), so a spoofed datagram cannot make two services bounce
    /// replies between them forever (default `[7, 13, 19, 37]`).
    pub blocked_source_ports: Vec<u16>,
    /// Datagrams answered per second per source address, with a burst of one
    /// second's worth (a token bucket); excess is dropped and counted. `None`
    /// (written `0`) turns it off (default 1000: plenty for one honest
    /// client, and a cap on what a spoofed source can aim at its victim).
    pub rate_limit: Option<NonZeroU32>,
    /// Whether `rate_limit` applies to loopback sources too (default false).
    /// A loopback source cannot be spoofed from the network (Linux drops
    /// such packets arriving on any other interface), and local clients,
    /// load generators among them, are trusted anyway.
    pub rate_limit_loopback: bool,
}

/// The default `[udp] blocked_source_ports`.
pub const DEFAULT_BLOCKED_SOURCE_PORTS: [u16; 4] = [7, 13, 19, 37];

impl Default for Config {
    fn default() -> Config {
        Config {
            mode: Mode::Unicode,
            log_level: LevelFilter::Info,
            shutdown_timeout: Duration::from_secs(5),
            reuse_port: false,
            tcp: TcpConfig::default(),
            udp: UdpConfig::default(),
        }
    }
}

impl Default for TcpConfig {
    fn default() -> TcpConfig {
        TcpConfig {
            listen: vec![DEFAULT_LISTEN],
            backlog: 1024,
            max_connections: NonZeroUsize::new(10_000).expect("non-zero"),
            idle_timeout: Some(Duration::from_secs(5 * 60)),
            max_pending_output: NonZeroUsize::new(64 * 1024).expect("non-zero"),
            telnet: crate::telnet::Setting::Auto,
            max_connections_per_ip: None,
        }
    }
}

impl Default for UdpConfig {
    fn default() -> UdpConfig {
        UdpConfig {
            listen: vec![DEFAULT_LISTEN],
            blocked_source_ports: DEFAULT_BLOCKED_SOURCE_PORTS.to_vec(),
            rate_limit: NonZeroU32::new(1000),
            rate_limit_loopback: false,
        }
    }
}

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
        let document = match DeTable::parse(text) {
            Ok(document) => document,
            Err(error) => return Err(syntax_error(text, origin, &error)),
        };
        check_document(document.get_ref()).map_err(|fault| ConfigError::Invalid {
            path: origin.to_path_buf(),
            line: line_of(text, fault.offset),
            key: fault.key,
            message: fault.message,
        })
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
        let mut out = String::new();
        let mut line = |s: &str| {
            out.push_str(s);
            out.push('\n');
        };
        line("# upcased configuration (TOML).");
        line("#");
        line("# Every key is optional: a missing key takes its built-in default (the example");
        line("# config/upcased.toml lists every default, as does `upcased --check-config`).");
        line("# Unknown keys are errors. Durations are strings with a unit: \"250ms\", \"5s\",");
        line("# \"5m\", \"1h\". The flags --tcp, --udp and --mode override this file.");
        line("");
        line("# How replies are upper-cased: \"unicode\" (full Unicode mapping) or \"ascii\" (a-z only).");
        line(&format!("mode = {}", quote(self.mode.as_str())));
        line("# Log verbosity: off, error, warn, info, debug or trace (RUST_LOG overrides it).");
        line(&format!(
            "log_level = {}",
            quote(level_name(self.log_level))
        ));
        line("# Graceful shutdown (SIGTERM/SIGINT) waits at most this long for connections to finish.");
        line(&format!(
            "shutdown_timeout = {}",
            quote(&format_duration(self.shutdown_timeout))
        ));
        line("# Share the listen ports with other upcased processes (SO_REUSEPORT), one per core.");
        line(&format!("reuse_port = {}", self.reuse_port));
        line("");
        line("[tcp]");
        line("# TCP addresses to listen on, IP:PORT (\"[::]:12000\" for IPv6); [] turns TCP off.");
        line(&format!("listen = {}", address_list(&self.tcp.listen)));
        line("# Listen backlog: connections the kernel queues before they are accepted (1-65535).");
        line(&format!("backlog = {}", self.tcp.backlog));
        line("# Most client connections open at the same time.");
        line(&format!("max_connections = {}", self.tcp.max_connections));
        line("# Close a connection idle for this long; \"0s\" = never.");
        line(&format!(
            "idle_timeout = {}",
            quote(&format_duration(
                self.tcp.idle_timeout.unwrap_or(Duration::ZERO)
            ))
        ));
        line("# Per connection, most bytes of reply not yet sent before reading pauses (or \"64KiB\").");
        line(&format!(
            "max_pending_output = {}",
            self.tcp.max_pending_output
        ));
        line("# Telnet clients that negotiate (PuTTY): drop IAC commands, refuse every option,");
        line("# escape 0xFF. \"auto\": clients whose first bytes are a telnet command; true: all; false: none.");
        line(&format!("telnet = {}", self.tcp.telnet.as_toml()));
        line("# Most connections open at once from one client address; 0 = no limit.");
        line(&format!(
            "max_connections_per_ip = {}",
            self.tcp.max_connections_per_ip.map_or(0, NonZeroUsize::get)
        ));
        line("");
        line("[udp]");
        line("# UDP addresses to listen on, IP:PORT (\"[::]:12000\" for IPv6); [] turns UDP off.");
        line(&format!("listen = {}", address_list(&self.udp.listen)));
        line("# Datagrams from these source ports are dropped (echo, daytime, chargen, time).");
        let ports: Vec<String> = self
            .udp
            .blocked_source_ports
            .iter()
            .map(u16::to_string)
            .collect();
        line(&format!("blocked_source_ports = [{}]", ports.join(", ")));
        line("# Datagrams answered per second per source address (burst: one second's worth); 0 = off.");
        line(&format!(
            "rate_limit = {}",
            self.udp.rate_limit.map_or(0, NonZeroU32::get)
        ));
        line("# Apply rate_limit to loopback sources too (they cannot be spoofed from outside).");
        line(&format!(
            "rate_limit_loopback = {}",
            self.udp.rate_limit_loopback
        ));
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
// Checking the parsed document.

/// One problem found while checking: where, which key, what.
struct Fault {
    /// Byte offset in the source text.
    offset: usize,
    /// Dotted key.
    key: String,
    /// What is wrong and what is expected.
    message: String,
}

type Checked<T> = Result<T, Fault>;
type Key<'i> = Spanned<DeString<'i>>;
type Value<'i> = Spanned<DeValue<'i>>;

const TOP_KEYS: &[&str] = &[
    "mode",
    "log_level",
    "shutdown_timeout",
    "reuse_port",
    "tcp",
    "udp",
];
const TCP_KEYS: &[&str] = &[
    "listen",
    "backlog",
    "max_connections",
    "idle_timeout",
    "max_pending_output",
    "telnet",
    "max_connections_per_ip",
];
const UDP_KEYS: &[&str] = &[
    "listen",
    "blocked_source_ports",
    "rate_limit",
    "rate_limit_loopback",
];

fn fault(span: Range<usize>, key: &str, message: String) -> Fault {
    Fault {
        offset: span.start,
        key: key.to_owned(),
        message,
    }
}

/// The table's entries in source order, so the first problem in the file is
/// the one reported.
fn entries<'a, 'i>(table: &'a DeTable<'i>) -> Vec<(&'a Key<'i>, &'a Value<'i>)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

fn unknown_key(key: &Key<'_>, dotted: &str, known: &[&str]) -> Fault {
    fault(
        key.span(),
        dotted,
        format!("unknown key; expected one of: {}", known.join(", ")),
    )
}

/// "a string", "an integer", ... for messages.
fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn wrong_type(value: &Value<'_>, key: &str, expected: &str) -> Fault {
    fault(
        value.span(),
        key,
        format!("expected {expected}, found {}", type_name(value.get_ref())),
    )
}

/// A string value run through `parse`; `expected` describes the accepted
/// values for the wrong-type message.
fn string_value<T>(
    value: &Value<'_>,
    key: &str,
    expected: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Checked<T> {
    match value.get_ref() {
        DeValue::String(s) => parse(s).map_err(|message| fault(value.span(), key, message)),
        _ => Err(wrong_type(value, key, expected)),
    }
}

fn duration_value(value: &Value<'_>, key: &str) -> Checked<Duration> {
    string_value(
        value,
        key,
        "a duration string such as \"5s\"",
        parse_duration,
    )
}

/// An integer value within `min..=max`; `expected` describes the range.
fn integer_value(value: &Value<'_>, key: &str, min: i64, max: i64, expected: &str) -> Checked<i64> {
    let DeValue::Integer(integer) = value.get_ref() else {
        return Err(wrong_type(value, key, "an integer"));
    };
    let text = integer.as_str();
    match i64::from_str_radix(text, integer.radix()) {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(n) => Err(fault(
            value.span(),
            key,
            format!("{n} is out of range: expected {expected}"),
        )),
        Err(_) => Err(fault(
            value.span(),
            key,
            format!("{text} is out of range: expected {expected}"),
        )),
    }
}

fn bool_value(value: &Value<'_>, key: &str) -> Checked<bool> {
    match value.get_ref() {
        DeValue::Boolean(b) => Ok(*b),
        _ => Err(wrong_type(value, key, "true or false")),
    }
}

/// `[tcp] telnet`: `true`, `false` or `"auto"`.
fn telnet_value(value: &Value<'_>) -> Checked<crate::telnet::Setting> {
    use crate::telnet::Setting;
    match value.get_ref() {
        DeValue::Boolean(true) => Ok(Setting::On),
        DeValue::Boolean(false) => Ok(Setting::Off),
        DeValue::String(s) if s.as_ref() == "auto" => Ok(Setting::Auto),
        DeValue::String(s) => Err(fault(
            value.span(),
            "tcp.telnet",
            format!(
                "{:?} is not a setting: expected true, false or \"auto\"",
                s.as_ref()
            ),
        )),
        _ => Err(wrong_type(value, "tcp.telnet", "true, false or \"auto\"")),
    }
}

/// A limit where `0` means off.
fn count_or_off(value: &Value<'_>, key: &str) -> Checked<u32> {
    let n = integer_value(value, key, 0, i64::from(u32::MAX), "0 (off) or more")?;
    Ok(u32::try_from(n).expect("checked range"))
}

fn table_value<'a, 'i>(value: &'a Value<'i>, key: &str) -> Checked<&'a DeTable<'i>> {
    match value.get_ref() {
        DeValue::Table(table) => Ok(table),
        _ => Err(wrong_type(value, key, "a table")),
    }
}

fn listen_value(value: &Value<'_>, key: &str) -> Checked<Vec<SocketAddr>> {
    let DeValue::Array(items) = value.get_ref() else {
        return Err(wrong_type(
            value,
            key,
            "an array of addresses such as [\"127.0.0.1:12000\"]",
        ));
    };
    items
        .iter()
        .map(|item| {
            string_value(
                item,
                key,
                "an address string such as \"127.0.0.1:12000\"",
                parse_address,
            )
        })
        .collect()
}

fn check_document(table: &DeTable<'_>) -> Checked<Config> {
    let mut config = Config::default();
    for (key, value) in entries(table) {
        match key.get_ref().as_ref() {
            "mode" => {
                config.mode = string_value(
                    value,
                    "mode",
                    "a string (\"ascii\" or \"unicode\")",
                    Mode::from_str,
                )?;
            }
            "log_level" => {
                config.log_level = string_value(
                    value,
                    "log_level",
                    "a string (off, error, warn, info, debug or trace)",
                    parse_level,
                )?;
            }
            "shutdown_timeout" => {
                config.shutdown_timeout = duration_value(value, "shutdown_timeout")?;
            }
            "reuse_port" => config.reuse_port = bool_value(value, "reuse_port")?,
            "tcp" => check_tcp(table_value(value, "tcp")?, &mut config.tcp)?,
            "udp" => check_udp(table_value(value, "udp")?, &mut config.udp)?,
            other => return Err(unknown_key(key, other, TOP_KEYS)),
        }
    }
    Ok(config)
}

fn check_tcp(table: &DeTable<'_>, tcp: &mut TcpConfig) -> Checked<()> {
    for (key, value) in entries(table) {
        match key.get_ref().as_ref() {
            "listen" => tcp.listen = listen_value(value, "tcp.listen")?,
            "backlog" => {
                let n =
                    integer_value(value, "tcp.backlog", 1, 65535, "an integer from 1 to 65535")?;
                tcp.backlog = u32::try_from(n).expect("checked range");
            }
            "max_connections" => {
                let key = "tcp.max_connections";
                let expected = "an integer of at least 1";
                let n = integer_value(value, key, 1, i64::MAX, expected)?;
                tcp.max_connections = usize::try_from(n)
                    .ok()
                    .and_then(NonZeroUsize::new)
                    .ok_or_else(|| {
                        fault(value.span(), key, format!("{n} is out of range: too large"))
                    })?;
            }
            "idle_timeout" => {
                let d = duration_value(value, "tcp.idle_timeout")?;
                tcp.idle_timeout = (!d.is_zero()).then_some(d);
            }
            "max_pending_output" => {
                tcp.max_pending_output = check_pending_output(value)?;
            }
            "telnet" => tcp.telnet = telnet_value(value)?,
            "max_connections_per_ip" => {
                let n = count_or_off(value, "tcp.max_connections_per_ip")?;
                tcp.max_connections_per_ip = NonZeroUsize::new(n as usize);
            }
            other => return Err(unknown_key(key, &format!("tcp.{other}"), TCP_KEYS)),
        }
    }
    Ok(())
}

fn check_pending_output(value: &Value<'_>) -> Checked<NonZeroUsize> {
    let key = "tcp.max_pending_output";
    let expected = "at least 1 byte";
    let bytes = match value.get_ref() {
        DeValue::Integer(_) => integer_value(value, key, 1, i64::MAX, expected)? as u64,
        DeValue::String(s) => {
            let bytes = parse_size(s).map_err(|message| fault(value.span(), key, message))?;
            if bytes == 0 {
                return Err(fault(
                    value.span(),
                    key,
                    format!("{s:?} is out of range: expected {expected}"),
                ));
            }
            bytes
        }
        _ => {
            return Err(wrong_type(
                value,
                key,
                "an integer or a string such as \"64KiB\"",
            ))
        }
    };
    usize::try_from(bytes)
        .ok()
        .and_then(NonZeroUsize::new)
        .ok_or_else(|| fault(value.span(), key, format!("{bytes} bytes is too large")))
}

fn check_udp(table: &DeTable<'_>, udp: &mut UdpConfig) -> Checked<()> {
    for (key, value) in entries(table) {
        match key.get_ref().as_ref() {
            "listen" => udp.listen = listen_value(value, "udp.listen")?,
            "blocked_source_ports" => {
                let key = "udp.blocked_source_ports";
                let DeValue::Array(items) = value.get_ref() else {
                    return Err(wrong_type(
                        value,
                        key,
                        "an array of port numbers such as [7, 19]",
                    ));
                };
                udp.blocked_source_ports = items
                    .iter()
                    .map(|item| {
                        integer_value(item, key, 0, 65535, "a port from 0 to 65535")
                            .map(|n| u16::try_from(n).expect("checked range"))
                    })
                    .collect::<Checked<Vec<u16>>>()?;
            }
            "rate_limit" => {
                udp.rate_limit = NonZeroU32::new(count_or_off(value, "udp.rate_limit")?)
            }
            "rate_limit_loopback" => {
                udp.rate_limit_loopback = bool_value(value, "udp.rate_limit_loopback")?;
            }
            other => return Err(unknown_key(key, &format!("udp.{other}"), UDP_KEYS)),
        }
    }
    Ok(())
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
            },
            udp: UdpConfig {
                listen: vec![],
                blocked_source_ports: vec![],
                rate_limit: None,
                rate_limit_loopback: true,
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

[tcp]
listen = ["0.0.0.0:7000", "[::]:7001"]
backlog = 1
max_connections = 3
idle_timeout = "0s"
max_pending_output = "1MiB"
telnet = true
max_connections_per_ip = 4

[udp]
listen = []
blocked_source_ports = []
rate_limit = 0
rate_limit_loopback = true
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
            "test.toml:2: bogus: unknown key; expected one of: mode, log_level, shutdown_timeout, reuse_port, tcp, udp"
        );
    }

    #[test]
    fn unknown_tcp_key() {
        assert_eq!(
            error("[tcp]\nbacklog = 5\n\nbogus = true\n"),
            "test.toml:4: tcp.bogus: unknown key; expected one of: listen, backlog, max_connections, idle_timeout, max_pending_output, telnet, max_connections_per_ip"
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
            "test.toml:3: http: unknown key; expected one of: mode, log_level, shutdown_timeout, reuse_port, tcp, udp"
        );
        assert_eq!(
            error("[tcp.extra]\nx = 1\n"),
            "test.toml:1: tcp.extra: unknown key; expected one of: listen, backlog, max_connections, idle_timeout, max_pending_output, telnet, max_connections_per_ip"
        );
    }

    #[test]
    fn first_error_in_file_order_wins() {
        // Keys are checked in source order, not alphabetically.
        assert_eq!(
            error("zzz = 1\naaa = 2\n"),
            "test.toml:1: zzz: unknown key; expected one of: mode, log_level, shutdown_timeout, reuse_port, tcp, udp"
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
        assert!(text.ends_with("rate_limit_loopback = true\n"), "{text}");
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
        assert_eq!(keys, 15);
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
