//! The real-systemd test (`tests/real-systemd/run`): the Debian package in a
//! Debian 12 container booted with systemd 252 as PID 1, checked with the
//! real systemctl, journalctl and dpkg. The harness does the work and
//! prints a PASS/FAIL line per check; this runs it so that `cargo test`
//! covers it, and fails with its whole output if any check failed.
//!
//! It tests the packages named in `UPCASE_DEB` and `UPCASE_DEB_NEXT`, which
//! `.ci/run` builds before `cargo test`. Skipped (failed under `CI=true`)
//! when not root (it debootstraps, mounts and boots a container). Without
//! those variables it is skipped too outside CI: building the packages is
//! a release build of its own (the `cargo test` running this one holds the
//! lock on `target/`), minutes of CPU that a `cargo test` should not spend
//! unasked; `sudo tests/real-systemd/run` builds them and runs the checks.
//! Under `CI=true` without them, the harness builds them in
//! `target/real-systemd/cargo`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::util::skip;

#[test]
fn the_package_under_real_systemd() {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        skip("must run as root: it debootstraps, mounts and boots a container (tests/real-systemd/README.md)");
        return;
    }
    if std::env::var_os("UPCASE_DEB").is_none() && std::env::var("CI").as_deref() != Ok("true") {
        skip("no package to test: UPCASE_DEB and UPCASE_DEB_NEXT are unset (.ci/run sets them; or run sudo tests/real-systemd/run, which builds the packages)");
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut command = Command::new(repo.join("tests/real-systemd/run"));
    command.current_dir(repo).stdin(Stdio::null()).env(
        "REAL_SYSTEMD_CARGO_TARGET_DIR",
        repo.join("target/real-systemd/cargo"),
    );
    let out = command.output().expect("run tests/real-systemd/run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // libtest shows a passing test's output only with --nocapture; the
    // PASS lines are the record of what was checked, so they go straight
    // to stderr (write_all on the handle is not captured).
    let _ = std::io::stderr().write_all(
        format!(
            "real-systemd:\n{}",
            text.lines()
                .filter(|l| l.starts_with("PASS: ") || l.starts_with("SKIP"))
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        )
        .as_bytes(),
    );
    assert!(
        out.status.success(),
        "tests/real-systemd/run failed ({}):\n{text}",
        out.status
    );
    assert!(
        text.contains("PASS: ") && !text.contains("FAIL: "),
        "tests/real-systemd/run exited 0 but:\n{text}"
    );
}
