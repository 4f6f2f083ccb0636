//! Spreading connections over loopback source addresses.
//!
//! The kernel tells TCP connections apart by their 4-tuple, so one source
//! address talking to one server address and port has only the ephemeral
//! port range for its connections (`net.ipv4.ip_local_port_range`, 28,232
//! ports by default), and connections a run closed keep theirs in TIME_WAIT
//! for a minute. Every address in 127.0.0.0/8 is on the loopback interface,
//! so `--source-addrs N` puts connection `i` on 127.0.0.(1 + i mod N)
//! (counting on into 127.0.1.0 past 255): N times the ports.
//!
//! Each socket is bound to its address before `connect` with
//! `IP_BIND_ADDRESS_NO_PORT`: without it `bind` picks the port at once,
//! unique for the address alone (so at most one port range per address
//! whatever the destination); with it the port is chosen at `connect`, per
//! 4-tuple, as for an unbound socket.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

use mio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

/// Connections one source address is given by default: a small share of
/// the 28,232 ports of the default ephemeral range. Not just to fit: the
/// kernel looks for a free port by probing the range, and the fuller it
/// is the longer that takes. Measured here, 15,000 connections to one
/// server port spent 3.1 s of kernel time connecting from one address and
/// 0.9 s from 8 (1,875 each); 30 addresses were no faster than 8.
pub const CONNECTIONS_PER_SOURCE: usize = 2_000;

/// The most source addresses: 127.0.0.1 up to 127.255.255.254.
pub const MAX_SOURCES: usize = (1 << 24) - 2;

/// How many source addresses a run of `connections` to `server` uses:
/// `asked` if given (more than one only towards an IPv4 loopback server),
/// else enough for [`CONNECTIONS_PER_SOURCE`] each on loopback and one
/// (the kernel's choice) elsewhere.
pub fn count(
    asked: Option<usize>,
    connections: usize,
    server: SocketAddr,
) -> Result<usize, String> {
    let loopback = matches!(server.ip(), IpAddr::V4(ip) if ip.is_loopback());
    match asked {
        Some(0) => Err("--source-addrs must be at least 1".into()),
        Some(n) if n > MAX_SOURCES => Err(format!(
            "--source-addrs {n}: 127.0.0.0/8 has {MAX_SOURCES} usable addresses"
        )),
        Some(n) if n > 1 && !loopback => Err(format!(
            "--source-addrs {n} spreads over 127.0.0.1 ... and needs a server on 127.0.0.0/8, not {server}"
        )),
        Some(n) => Ok(n),
        None if loopback => Ok(connections.div_ceil(CONNECTIONS_PER_SOURCE).max(1)),
        None => Ok(1),
    }
}

/// The source address of connection `index` (counted over the whole run,
/// every worker and thread) among `sources`; `None` with one source: the
/// kernel picks it, as for any client.
pub fn of_connection(index: usize, sources: usize) -> Option<Ipv4Addr> {
    if sources <= 1 {
        return None;
    }
    // 127.0.0.1 + k: the host part of 127.0.0.0/8 counts on past .255.
    let k = (index % sources) as u32;
    Some(Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 1)) + k))
}

/// Starts a non-blocking connect to `server`, from `source` when given.
pub fn connect(server: SocketAddr, source: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(server);
    };
    let socket = Socket::new(
        Domain::IPV4,
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    bind_address_no_port(&socket)?;
    socket.bind(&SocketAddrV4::new(source, 0).into())?;
    match socket.connect(&server.into()) {
        Ok(()) => {}
        // The non-blocking connect is under way: the loop sees it complete.
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// `IP_BIND_ADDRESS_NO_PORT` (Linux 4.2): neither socket2 nor rustix wraps it.
fn bind_address_no_port(socket: &Socket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, and a pointer to a c_int that
    // lives across the call with its size; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_go_round_from_127_0_0_1() {
        assert_eq!(of_connection(5, 1), None);
        let got: Vec<Ipv4Addr> = (0..4).filter_map(|i| of_connection(i, 3)).collect();
        let want: Vec<Ipv4Addr> = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(got, want);
        assert_eq!(of_connection(255, 300), Some(Ipv4Addr::new(127, 0, 1, 0)));
        assert_eq!(
            of_connection(MAX_SOURCES - 1, MAX_SOURCES),
            Some(Ipv4Addr::new(127, 255, 255, 254))
        );
    }

    #[test]
    fn the_count_follows_the_connections_on_loopback_only() {
        let lo: SocketAddr = "127.0.0.1:12000".parse().unwrap();
        let far: SocketAddr = "192.0.2.1:12000".parse().unwrap();
        assert_eq!(count(None, 100, lo), Ok(1));
        assert_eq!(count(None, 2_000, lo), Ok(1));
        assert_eq!(count(None, 2_001, lo), Ok(2));
        assert_eq!(count(None, 100_000, lo), Ok(50));
        assert_eq!(count(None, 100_000, far), Ok(1));
        assert_eq!(count(Some(3), 10, lo), Ok(3));
        assert_eq!(count(Some(1), 10, far), Ok(1));
        assert!(count(Some(3), 10, far)
            .unwrap_err()
            .contains("192.0.2.1:12000"));
        assert!(count(Some(0), 10, lo).is_err());
        assert!(count(Some(MAX_SOURCES + 1), 10, lo).is_err());
    }
}
