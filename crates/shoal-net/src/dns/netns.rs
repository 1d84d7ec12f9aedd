//! Binding the embedded server's sockets inside a task's network namespace.
//!
//! A socket belongs to the namespace it was created in for its whole life, whichever thread
//! later uses it. So a short-lived thread joins the task's namespace, binds, and ends; the
//! daemon's threads never leave the node's namespace.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;

use nix::sched::{setns, CloneFlags};

/// Binds a UDP socket and a TCP listener on `addr` inside the network namespace at `netns`
/// (`/run/netns/NAME`), both non-blocking, ready for [`super::DnsServer::add_task`]. The calling
/// thread's namespace is left unchanged.
pub fn bind_in_netns(netns: &Path, addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let ns = File::open(netns)?;
    let handle = std::thread::Builder::new()
        .name("shoal-dns-bind".into())
        .spawn(move || -> io::Result<(UdpSocket, TcpListener)> {
            setns(&ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            let udp = UdpSocket::bind(addr)?;
            let tcp = TcpListener::bind(addr)?;
            udp.set_nonblocking(true)?;
            tcp.set_nonblocking(true)?;
            Ok((udp, tcp))
        })?;
    handle
        .join()
        .map_err(|_| io::Error::other("the namespace binding thread panicked"))?
}
