//! Integration tests: real sockets on loopback, exact bytes.
//!
//! In-process servers (the library's `Server`, stopped through its `Handle`)
//! serve most areas; the real `upcased` binary is used wherever signals,
//! logs, exit codes or the process's memory are what is checked.

mod util;

mod agent;
mod balancer;
mod bench;
mod config;
mod handover;
mod hostile;
mod interop;
mod lifecycle;
mod memory;
mod metrics;
mod netns;
mod proxy;
mod real_systemd;
mod systemd;
mod tcp;
mod telnet;
mod udp;
mod upcase_client;
