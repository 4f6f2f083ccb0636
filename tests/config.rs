//! The command line and the config file, through the real binary.

use crate::util::*;

#[test]
fn check_config_prints_the_built_in_defaults() {
    let out = run_daemon(&["--check-config"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let config = upcase::config::Config::from_toml(&text, std::path::Path::new("<stdout>"))
        .unwrap_or_else(|e| panic!("--check-config output does not parse back: {e}\n{text}"));
    assert_eq!(config, upcase::config::Config::default());
    assert!(text.contains("mode = \"unicode\""), "{text}");
    assert!(text.contains("listen = [\"127.0.0.1:12000\"]"), "{text}");
}

#[test]
fn flags_override_the_file_which_overrides_the_defaults() {
    let file = TempFile::new(
        "layers.toml",
        "mode = \"ascii\"\nshutdown_timeout = \"250ms\"\n[tcp]\nlisten = [\"127.0.0.1:7000\"]\nbacklog = 64\n[udp]\nlisten = [\"127.0.0.1:7001\"]\n",
    );
    let out = run_daemon(&[
        "-c",
        file.path(),
        "--tcp",
        "[::1]:7002",
        "--mode",
        "unicode",
        "--check-config",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = upcase::config::Config::from_toml(
        &String::from_utf8(out.stdout).unwrap(),
        std::path::Path::new("-"),
    )
    .unwrap();
    assert_eq!(
        config.mode,
        upcase::transform::Mode::Unicode,
        "flag beats file"
    );
    assert_eq!(
        config.tcp.listen,
        vec!["[::1]:7002".parse().unwrap()],
        "--tcp replaces the TCP list"
    );
    assert_eq!(
        config.udp.listen,
        vec!["127.0.0.1:7001".parse().unwrap()],
        "--tcp leaves UDP alone"
    );
    assert_eq!(config.tcp.backlog, 64, "file beats default");
    assert_eq!(
        config.shutdown_timeout,
        std::time::Duration::from_millis(250)
    );
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
    assert!(stderr.contains(&format!("{}:4:", file.path())), "{stderr}");
    assert!(stderr.contains("tcp.idle_timeout"), "{stderr}");
}

#[test]
fn an_unknown_key_exits_2_naming_it() {
    let file = TempFile::new("unknown.toml", "[tcp]\nlisten = []\nmax_conections = 5\n");
    let out = run_daemon(&["-c", file.path(), "--check-config"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(":3:"), "{stderr}");
    assert!(stderr.contains("max_conections"), "{stderr}");
}

#[test]
fn a_missing_config_file_exits_2_naming_it() {
    let out = run_daemon(&["-c", "/nonexistent/upcased.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/upcased.toml"));
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
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("upcased {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_example_config_is_the_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/upcased.toml");
    let out = run_daemon(&["-c", path, "--check-config"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = upcase::config::Config::from_toml(
        &String::from_utf8(out.stdout).unwrap(),
        std::path::Path::new("-"),
    )
    .unwrap();
    assert_eq!(config, upcase::config::Config::default());
}
