//! Network namespaces as hosts on a private Ethernet segment, for tests
//! that put real programs (a load balancer) between client and daemon.
//!
//! One namespace, the hub, holds a bridge; every other namespace is a host
//! joined to it by a veth pair whose two ends are created straight inside
//! the hub and the host (never in the namespace the test runs in). Hosts
//! get addresses from 192.0.2.0/24 (TEST-NET-1, documentation only), and
//! nothing links the segment to the outside: no packet can leave it.
//!
//! Names are `balancer-PID-TAG-HOST`, so two test runs (or two tests of
//! one run) never collide; dropping the [`Net`] kills whatever still runs
//! in its namespaces and deletes them, also when a test fails.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;

use crate::util::*;

/// The segment's prefix length: every host is on 192.0.2.0/24.
const PREFIX_LEN: u8 = 24;

/// The namespaces of one test, and a scratch directory for its files.
pub struct Net {
    /// `balancer-PID-TAG`, the prefix of every name.
    base: String,
    /// The hub's namespace name (its host name is `hub`).
    hub: String,
    /// Every namespace created, the hub first.
    namespaces: Vec<String>,
    /// Config files, sockets, logs of the programs under test.
    dir: PathBuf,
}

/// Whether the test can build namespaces here: root, `ip` installed. When
/// not, the calling test is skipped (failed under `CI=true`) with a reason.
pub fn available() -> bool {
    // SAFETY: geteuid(2) has no failure mode and no arguments.
    if unsafe { libc::geteuid() } != 0 {
        skip("needs root (network namespaces); run the tests as root");
        return false;
    }
    have_tool("ip")
}

/// Runs `ip ARGS`, which must succeed.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Net {
    /// Creates the hub (namespace `hub`, a bridge `br0` holding
    /// `hub_addr`) and a scratch directory.
    pub fn new(tag: &str, hub_addr: &str) -> Net {
        let base = format!("balancer-{}-{tag}", std::process::id());
        let dir = std::env::temp_dir().join(&base);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        let hub = format!("{base}-hub");
        let mut net = Net {
            base,
            hub: hub.clone(),
            namespaces: Vec::new(),
            dir,
        };
        net.add_namespace(&hub);
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        let cidr = format!("{hub_addr}/{PREFIX_LEN}");
        ip(&["-n", &hub, "addr", "add", &cidr, "dev", "br0"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        net
    }

    /// `ip netns add`, recorded for deletion first, loopback up.
    fn add_namespace(&mut self, name: &str) {
        self.namespaces.push(name.to_owned());
        ip(&["netns", "add", name]);
        ip(&["-n", name, "link", "set", "lo", "up"]);
    }

    /// Adds host `host` (at most 12 characters) with address `addr`,
    /// joined to the hub's bridge.
    pub fn add_host(&mut self, host: &str, addr: &str) {
        let ns = self.ns(host);
        self.add_namespace(&ns);
        // The hub's end is named after the host; interface names are at
        // most 15 bytes, and local to their namespace.
        let port = format!("v-{host}");
        let hub = self.hub.clone();
        ip(&[
            "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip(&["-n", &hub, "link", "set", &port, "master", "br0"]);
        ip(&["-n", &hub, "link", "set", &port, "up"]);
        let cidr = format!("{addr}/{PREFIX_LEN}");
        ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
    }

    /// The namespace name of `host` (`hub` for the hub).
    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.base)
    }

    /// The scratch directory (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `contents` to `name` in the scratch directory; returns its path.
    pub fn file(&self, name: &str, contents: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, contents).expect("write a scratch file");
        path.to_str().expect("UTF-8 temp path").to_owned()
    }

    /// `program` to be run inside `host`'s namespace (`ip netns exec`
    /// execs it, so the child's pid is the program's).
    pub fn command(&self, host: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns(host)]).arg(program);
        command
    }

    /// Runs `f` on a thread that has entered `host`'s network namespace
    /// (setns(2) moves only the calling thread), so that the test's own
    /// sockets are the host's; a panic in `f` is the caller's.
    pub fn run_in<T: Send>(&self, host: &str, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.ns(host));
        thread::scope(|scope| {
            scope
                .spawn(|| {
                    enter(&path);
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

/// setns(2) into the network namespace mounted at `path`.
fn enter(path: &str) {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns with a namespace file descriptor we hold open and the
    // matching type; it changes only this thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
}

impl Drop for Net {
    fn drop(&mut self) {
        // Whatever still runs in a namespace (a program whose guard leaked,
        // a grandchild) would keep it alive after `ip netns delete`: kill
        // those, by pid, first. Every one of them was started by this test.
        for ns in self.namespaces.iter().rev() {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        // SAFETY: kill(2) on a pid listed in our own namespace.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
            let _ = Command::new("ip")
                .args(["netns", "delete", ns])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
