//! journald's native protocol, for records with fields of their own
//! (`journalctl CLOSE_REASON=idle`): one datagram per entry on the unix
//! socket `/run/systemd/journal/socket`, each field a `KEY=VALUE` line.
//! A value holding a newline is written as `KEY`, a newline, its length
//! as a 64-bit little-endian integer, the value and a newline.
//!
//! Written here rather than taken from `systemd-journal-logger`: that crate
//! is a `log::Log` meant to be the process's logger, replacing env_logger
//! and the priority prefixes `logging` writes on the journal's stream, and
//! it always sends to the system's socket, so the records could not be
//! checked against a socket a test owns. The protocol is the few lines below.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

/// Where journald listens for native entries.
pub const SOCKET: &str = "/run/systemd/journal/socket";

/// A sender of journal entries to one socket.
#[derive(Debug)]
pub struct Journal {
    /// Unbound and non-blocking: a journald that falls behind makes a send
    /// fail with `WouldBlock` instead of stalling the event loop.
    socket: UnixDatagram,
    /// journald's socket (or a test's).
    path: PathBuf,
    /// The datagram being built, kept for the next entry.
    buf: Vec<u8>,
}

impl Journal {
    /// A sender to the socket at `path`.
    pub fn new(path: impl AsRef<Path>) -> io::Result<Journal> {
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(Journal {
            socket,
            path: path.as_ref().to_path_buf(),
            buf: Vec::new(),
        })
    }

    /// Sends one entry of `fields` (names in upper case: letters, digits
    /// and underscores, as journald requires).
    pub fn send(&mut self, fields: &[(&str, &str)]) -> io::Result<()> {
        self.buf.clear();
        encode(fields, &mut self.buf);
        self.socket.send_to(&self.buf, &self.path).map(|_| ())
    }
}

/// Appends the native encoding of `fields` to `out`.
pub fn encode(fields: &[(&str, &str)], out: &mut Vec<u8>) {
    for (name, value) in fields {
        out.extend_from_slice(name.as_bytes());
        if value.contains('\n') {
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        } else {
            out.push(b'=');
        }
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_are_lines_and_multiline_ones_carry_their_length() {
        let mut out = Vec::new();
        encode(&[("PEER", "127.0.0.1:5"), ("MESSAGE", "a\nb")], &mut out);
        let mut want = b"PEER=127.0.0.1:5\nMESSAGE\n".to_vec();
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(b"a\nb\n");
        assert_eq!(out, want);
    }

    #[test]
    fn an_entry_is_one_datagram_on_the_socket() {
        let path = std::env::temp_dir().join(format!("upcase-journal-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let journald = UnixDatagram::bind(&path).expect("bind");
        let mut journal = Journal::new(&path).expect("journal");
        journal
            .send(&[("CLOSE_REASON", "idle"), ("BYTES_IN", "12")])
            .expect("send");
        let mut buf = [0u8; 256];
        let n = journald.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"CLOSE_REASON=idle\nBYTES_IN=12\n");
        let _ = std::fs::remove_file(&path);
    }
}
