//! Command line of the `upcased` daemon and how it combines with the config
//! file: flags override the file, the file overrides the defaults.
//!
//! ```text
//! upcased [-c FILE] [--tcp ADDR]... [--udp ADDR]... [--mode ascii|unicode] [--reuse-port]
//!         [--check-config [-q]]
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::Parser;

use crate::config::{Config, ConfigError};
use crate::transform::Mode;

/// Text shown after the options in `--help`.
const AFTER_HELP: &str = "\
Without -c, the built-in defaults are used: TCP and UDP on 127.0.0.1:12000,
mode unicode. Flags override the config file, which overrides the defaults.

Exit status:
  0  clean shutdown (or --check-config found the configuration valid)
  1  runtime failure, e.g. a listen address cannot be bound
  2  bad usage or invalid configuration

Signals:
  SIGTERM, SIGINT  graceful shutdown (waits at most shutdown_timeout)
  SIGHUP           reload the config file (flags keep overriding it)
  SIGUSR1          log the traffic counters

Environment:
  RUST_LOG  overrides log_level from the config file (e.g. RUST_LOG=debug)";

/// Command-line arguments of the daemon.
#[derive(Parser, Debug)]
#[command(
    name = "upcased",
    version,
    about = "Answers every TCP byte stream and every UDP datagram with its upper case.",
    long_about = None,
    after_help = AFTER_HELP
)]
pub struct DaemonArgs {
    /// TOML config file
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// TCP addresses from `--tcp` (repeatable); when given, they replace
    /// `[tcp] listen` from the file.
    #[arg(
        long = "tcp",
        value_name = "ADDR",
        help = "TCP address to listen on (repeatable; replaces [tcp] listen)"
    )]
    pub tcp: Vec<SocketAddr>,

    /// UDP addresses from `--udp` (repeatable); when given, they replace
    /// `[udp] listen` from the file.
    #[arg(
        long = "udp",
        value_name = "ADDR",
        help = "UDP address to listen on (repeatable; replaces [udp] listen)"
    )]
    pub udp: Vec<SocketAddr>,

    /// How replies are upper-cased (replaces mode)
    #[arg(long, value_name = "MODE", value_parser = mode_parser())]
    pub mode: Option<Mode>,

    /// Bind with SO_REUSEPORT, as `reuse_port = true` does (replaces
    /// reuse_port): what the template unit passes, so that its instances
    /// share the ports with the shipped config.
    #[arg(
        long,
        help = "Share the listen ports with other upcased processes (SO_REUSEPORT; replaces reuse_port)"
    )]
    pub reuse_port: bool,

    /// Check the configuration, print the effective config as TOML and exit
    #[arg(long)]
    pub check_config: bool,

    /// With `--check-config`: print nothing when the configuration is
    /// valid; an invalid one is still reported on standard error. What the
    /// units' ExecStartPre= and ExecReload= use, so that the journal does
    /// not get the whole config at every start.
    #[arg(
        short = 'q',
        long,
        requires = "check_config",
        help = "With --check-config: print nothing if the configuration is valid, only the error otherwise"
    )]
    pub quiet: bool,
}

/// `--mode` of `upcased` and `upcase`: the possible values for help and
/// errors, parsed by [`Mode::from_str`](std::str::FromStr::from_str).
pub(crate) fn mode_parser() -> impl TypedValueParser<Value = Mode> {
    PossibleValuesParser::new([
        PossibleValue::new(Mode::Unicode.as_str())
            .help("full Unicode upper case of UTF-8 text (ß becomes SS)"),
        PossibleValue::new(Mode::Ascii.as_str())
            .help("only a-z become A-Z, byte by byte; binary-safe"),
    ])
    .try_map(|name| name.parse::<Mode>())
}

impl DaemonArgs {
    /// The effective configuration: the file given with `-c` (if any) read
    /// over the defaults, then the flag overrides applied.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        self.apply_overrides(&mut config);
        Ok(config)
    }

    /// Applies only the flag overrides to `config`: `--tcp` replaces
    /// `tcp.listen`, `--udp` replaces `udp.listen`, `--mode` replaces `mode`,
    /// `--reuse-port` sets `reuse_port`; absent flags leave the config alone. Used again on reload, so flags
    /// keep winning over the re-read file.
    pub fn apply_overrides(&self, config: &mut Config) {
        if !self.tcp.is_empty() {
            config.tcp.listen.clone_from(&self.tcp);
        }
        if !self.udp.is_empty() {
            config.udp.listen.clone_from(&self.udp);
        }
        if let Some(mode) = self.mode {
            config.mode = mode;
        }
        if self.reuse_port {
            config.reuse_port = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use clap::CommandFactory;
    use std::path::Path;

    /// A fresh temp file holding `text`, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, text: &str) -> TempFile {
            let path = std::env::temp_dir().join(format!(
                "upcased-cli-test-{}-{name}.toml",
                std::process::id()
            ));
            std::fs::write(&path, text).unwrap();
            TempFile(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn command_is_well_formed() {
        DaemonArgs::command().debug_assert();
    }

    #[test]
    fn no_flags_gives_defaults() {
        let args = DaemonArgs::try_parse_from(["upcased"]).unwrap();
        assert_eq!(args.config, None);
        assert!(!args.check_config);
        let config = args.resolve().unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.tcp.listen, vec![addr("127.0.0.1:12000")]);
        assert_eq!(config.udp.listen, vec![addr("127.0.0.1:12000")]);
        assert_eq!(config.mode, Mode::Unicode);
    }

    #[test]
    fn flags_override_the_file() {
        let file = TempFile::new(
            "override",
            "mode = \"unicode\"\nlog_level = \"debug\"\n[tcp]\nlisten = [\"127.0.0.1:1\"]\nbacklog = 7\n[udp]\nlisten = [\"127.0.0.1:2\"]\n",
        );
        let args = DaemonArgs::try_parse_from([
            "upcased",
            "-c",
            file.path(),
            "--tcp",
            "[::1]:7000",
            "--tcp",
            "0.0.0.0:7001",
            "--mode",
            "ascii",
            "--check-config",
        ])
        .unwrap();
        assert!(args.check_config);
        assert_eq!(args.config.as_deref(), Some(Path::new(file.path())));
        let config = args.resolve().unwrap();
        assert_eq!(config.mode, Mode::Ascii);
        assert_eq!(
            config.tcp.listen,
            vec![addr("[::1]:7000"), addr("0.0.0.0:7001")]
        );
        // Not overridden: from the file.
        assert_eq!(config.udp.listen, vec![addr("127.0.0.1:2")]);
        assert_eq!(config.log_level, log::LevelFilter::Debug);
        assert_eq!(config.tcp.backlog, 7);
    }

    #[test]
    fn tcp_flag_replaces_only_tcp() {
        let args = DaemonArgs::try_parse_from(["upcased", "--tcp", "127.0.0.1:9"]).unwrap();
        let config = args.resolve().unwrap();
        assert_eq!(
            config,
            Config {
                tcp: crate::config::TcpConfig {
                    listen: vec![addr("127.0.0.1:9")],
                    ..Default::default()
                },
                ..Config::default()
            }
        );
    }

    #[test]
    fn udp_flag_replaces_only_udp() {
        let file = TempFile::new("udp", "[tcp]\nlisten = []\n");
        let args =
            DaemonArgs::try_parse_from(["upcased", "--config", file.path(), "--udp", "[::]:5000"])
                .unwrap();
        let config = args.resolve().unwrap();
        assert!(config.tcp.listen.is_empty());
        assert_eq!(config.udp.listen, vec![addr("[::]:5000")]);
        assert_eq!(config.mode, Mode::Unicode);
    }

    #[test]
    fn apply_overrides_is_reusable_on_reload() {
        let args = DaemonArgs::try_parse_from(["upcased", "--mode", "ascii"]).unwrap();
        let mut reloaded = Config::from_toml(
            "mode = \"unicode\"\n[tcp]\nbacklog = 3\n",
            Path::new("x.toml"),
        )
        .unwrap();
        args.apply_overrides(&mut reloaded);
        assert_eq!(reloaded.mode, Mode::Ascii);
        assert_eq!(reloaded.tcp.backlog, 3);
        assert_eq!(reloaded.tcp.listen, vec![addr("127.0.0.1:12000")]);
    }

    #[test]
    fn reuse_port_flag_sets_reuse_port() {
        let file = TempFile::new("reuse", "reuse_port = false\n");
        let args =
            DaemonArgs::try_parse_from(["upcased", "-c", file.path(), "--reuse-port"]).unwrap();
        assert!(args.resolve().unwrap().reuse_port);
        let args = DaemonArgs::try_parse_from(["upcased", "-c", file.path()]).unwrap();
        assert!(!args.resolve().unwrap().reuse_port);
    }

    #[test]
    fn quiet_needs_check_config() {
        let args = DaemonArgs::try_parse_from(["upcased", "--check-config", "-q"]).unwrap();
        assert!(args.check_config && args.quiet);
        let args = DaemonArgs::try_parse_from(["upcased", "--check-config", "--quiet"]).unwrap();
        assert!(args.quiet);
        let e = DaemonArgs::try_parse_from(["upcased", "--quiet"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn bad_config_file_is_reported() {
        let file = TempFile::new("bad", "[tcp]\nidle_timeout = \"5x\"\n");
        let args = DaemonArgs::try_parse_from(["upcased", "-c", file.path()]).unwrap();
        let e = args.resolve().unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "{}:2: tcp.idle_timeout: invalid duration",
                file.path()
            )),
            "{e}"
        );
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        for argv in [
            &["upcased", "--mode", "fast"][..],
            &["upcased", "--tcp", "localhost:1"],
            &["upcased", "--udp", "1.2.3.4"],
            &["upcased", "--bogus"],
            &["upcased", "extra"],
        ] {
            let e = DaemonArgs::try_parse_from(argv).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{argv:?}");
        }
        let e = DaemonArgs::try_parse_from(["upcased", "--mode", "fast"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidValue);
        let text = e.to_string();
        assert!(text.contains("ascii") && text.contains("unicode"), "{text}");
    }

    #[test]
    fn help_and_version() {
        let e = DaemonArgs::try_parse_from(["upcased", "--version"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DisplayVersion);
        assert_eq!(e.exit_code(), 0);
        assert!(e.to_string().contains(env!("CARGO_PKG_VERSION")));

        let help = DaemonArgs::command().render_long_help().to_string();
        for needle in [
            "Usage: upcased",
            "--config <FILE>",
            "--tcp <ADDR>",
            "--udp <ADDR>",
            "--mode <MODE>",
            "ascii",
            "unicode",
            "--check-config",
            "--quiet",
            "--reuse-port",
            "Exit status:",
            "SIGHUP",
            "SIGUSR1",
            "RUST_LOG",
        ] {
            assert!(help.contains(needle), "{needle:?} missing from:\n{help}");
        }
        let short = DaemonArgs::command().render_help().to_string();
        assert!(
            short.contains("[possible values: unicode, ascii]"),
            "{short}"
        );
    }
}
