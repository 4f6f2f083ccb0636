//! The command line and the config file, through the real binary.

use std::time::Duration;

use upcase::config::Config;
use upcase::transform::Mode;

use crate::util::*;

#[test]
fn check_config_prints_the_built_in_defaults() {
    let out = run_daemon(&["--check-config"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("mode = \"unicode\""), "{text}");
    assert!(text.contains("listen = [\"127.0.0.1:12000\"]"), "{text}");
    assert_eq!(effective_config(&[]), Config::default());
}

#[test]
fn flags_override_the_file_which_overrides_the_defaults() {
    let file = TempFile::new(
        "layers.toml",
        "mode = \"ascii\"\nshutdown_timeout = \"250ms\"\n\
         [tcp]\nlisten = [\"127.0.0.1:7000\"]\nbacklog = 64\n\
         [udp]\nlisten = [\"127.0.0.1:7001\"]\n",
    );
    let config = effective_config(&[
        "-c",
        file.path(),
        "--tcp",
        "[::1]:7002",
        "--mode",
        "unicode",
    ]);
    assert_eq!(config.mode, Mode::Unicode, "flag beats file");
    let tcp = vec!["[::1]:7002".parse().unwrap()];
    assert_eq!(config.tcp.listen, tcp, "--tcp replaces the TCP list");
    let udp = vec!["127.0.0.1:7001".parse().unwrap()];
    assert_eq!(config.udp.listen, udp, "--tcp leaves UDP alone");
    assert_eq!(config.tcp.backlog, 64, "file beats default");
    assert_eq!(config.shutdown_timeout, Duration::from_millis(250));
    assert_eq!(
        config.tcp.max_connections.get(),
        10_000,
        "default where neither says"
    );
}

#[test]
fn a_bad_config_exits_2_naming_file_line_and_key() {
    let file = TempFile::new(
        "bad.toml",
        "mode = \"unicode\"\n\n[tcp]\nidle_timeout = \"5 parsecs\"\n",
    );
    let out = run_daemon(&["-c", file.path()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "upcased: {}:4: tcp.idle_timeout: invalid duration \"5 parsecs\"",
        file.path()
    );
    assert!(stderr.starts_with(&want), "{stderr}");
}

#[test]
fn an_unknown_key_exits_2_naming_it() {
    let file = TempFile::new("unknown.toml", "[tcp]\nlisten = []\nmax_conections = 5\n");
    let out = run_daemon(&["-c", file.path(), "--check-config"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = format!("{}:3: tcp.max_conections: unknown key", file.path());
    assert!(stderr.contains(&want), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "nothing printed for an invalid config"
    );
}

/// What the units run before every start and reload: nothing on standard
/// output for a valid config (the journal would get all of it), exactly the
/// error on standard error for a bad one.
#[test]
fn check_config_quiet_prints_only_the_error() {
    let good = TempFile::new("quiet-good.toml", "mode = \"ascii\"\n");
    let out = run_daemon(&["-c", good.path(), "--check-config", "--quiet"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");

    let bad = TempFile::new("quiet-bad.toml", "mode = \"loud\"\n");
    let out = run_daemon(&["-c", bad.path(), "--check-config", "-q"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "upcased: {}:1: mode: unknown mode \"loud\": expected \"ascii\" or \"unicode\"\n",
            bad.path()
        )
    );
}

#[test]
fn reuse_port_flag_overrides_the_file() {
    let file = TempFile::new("reuse-flag.toml", "reuse_port = false\n");
    assert!(!effective_config(&["-c", file.path()]).reuse_port);
    assert!(effective_config(&["-c", file.path(), "--reuse-port"]).reuse_port);
}

#[test]
fn a_missing_config_file_exits_2_naming_it() {
    let out = run_daemon(&["-c", "/nonexistent/upcased.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read config file /nonexistent/upcased.toml"),
        "{stderr}"
    );
}

#[test]
fn bad_usage_exits_2_and_version_exits_0() {
    assert_eq!(run_daemon(&["--no-such-flag"]).status.code(), Some(2));
    assert_eq!(run_daemon(&["--mode", "shouty"]).status.code(), Some(2));
    assert_eq!(
        run_daemon(&["--tcp", "not-an-address"]).status.code(),
        Some(2)
    );
    let version = run_daemon(&["--version"]);
    assert_eq!(version.status.code(), Some(0));
    let want = format!("upcased {}", env!("CARGO_PKG_VERSION"));
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), want);
}

#[test]
fn the_example_config_is_the_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/upcased.toml");
    assert_eq!(effective_config(&["-c", path]), Config::default());
}
