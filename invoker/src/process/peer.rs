//! Who is calling a Runtime API: the user owning the other end of a loopback TCP connection.
//!
//! An isolated environment's Runtime API serves only its own user (see `isolation`): any
//! process can connect to a port on 127.0.0.1, and a Lambda runtime client sends no
//! credentials, so the kernel's record of the connecting socket's owner is the only proof of
//! who calls. `/proc/net/tcp` lists every IPv4 TCP socket of the network namespace with its
//! owner; the caller's socket is the one whose local address is our peer's and whose remote
//! address is our listener.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

/// A Runtime API listener that accepts only connections from sockets owned by `uid`.
pub(super) struct OwnedBy {
    listener: TcpListener,
    local: SocketAddrV4,
    uid: u32,
    function: Arc<str>,
}

impl OwnedBy {
    /// Wraps `listener` (bound to an IPv4 address).
    pub(super) fn new(listener: TcpListener, uid: u32, function: Arc<str>) -> io::Result<Self> {
        let local = match listener.local_addr()? {
            SocketAddr::V4(local) => local,
            SocketAddr::V6(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the Runtime API listens on IPv4",
                ))
            }
        };
        Ok(Self {
            listener,
            local,
            uid,
            function,
        })
    }
}

impl axum::serve::Listener for OwnedBy {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, peer) = axum::serve::Listener::accept(&mut self.listener).await;
            let owner = match peer {
                SocketAddr::V4(peer) => socket_owner(peer, self.local),
                SocketAddr::V6(_) => Ok(None),
            };
            match owner {
                Ok(Some(owner)) if owner == self.uid => return (stream, peer),
                Ok(owner) => {
                    tracing::warn!(
                        function = %self.function,
                        %peer,
                        caller_uid = ?owner,
                        "Refused a Runtime API connection from another user than the environment's."
                    );
                    impulse_connectors::telemetry::runtime_api_refused(&self.function);
                }
                Err(e) => {
                    tracing::warn!(function = %self.function, %peer, error = %e, "Refused a Runtime API connection: its owner cannot be read.");
                    impulse_connectors::telemetry::runtime_api_refused(&self.function);
                }
            }
            // Dropping the stream closes the connection unanswered.
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(SocketAddr::V4(self.local))
    }
}

/// The uid owning the socket whose local address is `peer` and remote address `listener`;
/// `None` when no such socket is listed (it closed already).
fn socket_owner(peer: SocketAddrV4, listener: SocketAddrV4) -> io::Result<Option<u32>> {
    let table = std::fs::read_to_string("/proc/net/tcp")?;
    Ok(find_owner(&table, peer, listener))
}

/// Looks `local`→`remote` up in a `/proc/net/tcp` table: after a header line, one socket per
/// line, `sl local_address rem_address st tx:rx tr:when retrnsmt uid …`, addresses as
/// `IIIIIIII:PPPP` (the IPv4 address as the kernel's in-memory word, the port, both in hex).
fn find_owner(table: &str, local: SocketAddrV4, remote: SocketAddrV4) -> Option<u32> {
    let local = hex_address(local);
    let remote = hex_address(remote);
    table.lines().skip(1).find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_slot, from, to) = (fields.next()?, fields.next()?, fields.next()?);
        if from != local || to != remote {
            return None;
        }
        // st, tx_queue:rx_queue, tr:tm->when, retrnsmt, then uid.
        fields.nth(4)?.parse().ok()
    })
}

fn hex_address(address: SocketAddrV4) -> String {
    // The kernel prints the address word as stored (network byte order) read as a native u32.
    let word = u32::from_ne_bytes(address.ip().octets());
    format!("{word:08X}:{:04X}", address.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:A1B2 0100007F:1F90 01 00000000:00000000 00:00000000 00000000 200007        0 5678 1 0000000000000000 20 4 30 10 -1\n\
   2: 0100007F:1F90 0100007F:A1B2 01 00000000:00000000 00:00000000 00000000     0        0 9012 1 0000000000000000 20 4 30 10 -1\n";

    fn addr(text: &str) -> SocketAddrV4 {
        text.parse().expect("address")
    }

    #[test]
    fn the_callers_socket_is_found_by_both_ends() {
        let listener = addr("127.0.0.1:8080");
        let caller = addr("127.0.0.1:41394");
        assert_eq!(find_owner(TABLE, caller, listener), Some(200_007));
        // Our own end of the same connection is a different socket, owned by the broker.
        assert_eq!(find_owner(TABLE, listener, caller), Some(0));
        assert_eq!(find_owner(TABLE, addr("127.0.0.1:41395"), listener), None);
    }

    #[tokio::test]
    async fn a_real_connection_is_owned_by_this_process_s_user() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let SocketAddr::V4(local) = listener.local_addr().expect("addr") else {
            panic!("IPv4 listener");
        };
        let client = TcpStream::connect(local).await.expect("connect");
        let (_server, peer) = listener.accept().await.expect("accept");
        let SocketAddr::V4(peer) = peer else {
            panic!("IPv4 peer");
        };
        // `/proc/self` belongs to the process's effective user.
        let me =
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").expect("stat"));
        assert_eq!(socket_owner(peer, local).expect("read"), Some(me));
        drop(client);
    }
}
