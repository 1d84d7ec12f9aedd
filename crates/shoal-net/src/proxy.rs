//! The routing mesh in userspace: one listener per published port, in the daemon.
//!
//! Used where the kernel path (nftables NAT, see [`crate::kernel`]) is unavailable or switched
//! off by the daemon flag. The agent turns each ingress [`PortPlan`](shoal_api::netmap::PortPlan)
//! of its node's map into a [`Proxy::set_port`] call with the service's backend addresses:
//!
//! ```text
//!  client ──► 0.0.0.0:published ──accept──► round robin over backends ──connect──► task:target
//!                (one listener per           (connect timeout, then the next one;
//!                 protocol and port)          none left: the client is reset at once)
//!
//!  TCP bytes:  socket ──splice──► pipe ──splice──► socket     (Linux: no copy through userspace)
//!              tokio::io::copy_bidirectional, 32 KiB buffers  (elsewhere, or if no pipe)
//!  UDP:        one session socket per client address, connected to its backend; replies leave
//!              from the listening socket; sessions end after 30 s idle; their number is bounded
//! ```
//!
//! Listeners stay open while the port is published; a new backend list replaces the old one at
//! once (new connections use it, established ones carry on). Removing a port closes its listener
//! and lets established TCP connections finish. Half-closes are passed on: when one side shuts
//! down its sending half, the proxy shuts down its sending half towards the other side.

#[cfg(target_os = "linux")]
mod splice;
mod udp;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

pub use shoal_api::netmap::Protocol;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The buffer per direction when copying without splice (tokio's default is 8 KiB, which costs
/// a system call pair per 8 KiB of a bulk transfer; 32 KiB moves about as fast as 64 KiB here).
const COPY_BUF: usize = 32 << 10;

/// How a [`Proxy`] behaves. [`ProxyConfig::default`] is what the daemon uses.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// How long to wait for one backend to accept before trying the next one.
    pub connect_timeout: Duration,
    /// A UDP session (client address ↔ backend) ends after this long without a datagram either
    /// way.
    pub udp_idle_timeout: Duration,
    /// At most this many UDP sessions per published port; datagrams from further clients are
    /// dropped until a session ends.
    pub udp_max_sessions: usize,
    /// Copy TCP data with splice(2) on Linux (otherwise through a userspace buffer).
    pub splice: bool,
    /// The capacity asked for each splice pipe, in bytes (0: the kernel's default, 64 KiB).
    /// Bigger pipes move more per system call; the kernel may refuse (per-user pipe limits),
    /// and then the pipe keeps its size.
    pub pipe_size: usize,
    /// The listen backlog of TCP listeners.
    pub backlog: u32,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            connect_timeout: Duration::from_secs(2),
            udp_idle_timeout: Duration::from_secs(30),
            udp_max_sessions: 4096,
            splice: cfg!(target_os = "linux"),
            pipe_size: 0,
            backlog: 1024,
        }
    }
}

/// The userspace routing mesh of one node. Cheap to clone (the clones share the listeners);
/// everything closes when the last clone is dropped or at [`Proxy::shutdown`].
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    config: ProxyConfig,
    ports: Mutex<HashMap<(Protocol, u16), PortEntry>>,
    /// Set to true at shutdown: established TCP connections end.
    closed: watch::Sender<bool>,
}

struct PortEntry {
    backends: Arc<Backends>,
    task: JoinHandle<()>,
    udp: Option<Arc<udp::Sessions>>,
}

/// The backend list of one port, swapped as a whole, with its round-robin position.
struct Backends {
    list: RwLock<Arc<[SocketAddr]>>,
    next: AtomicUsize,
}

impl Backends {
    fn new(list: Vec<SocketAddr>) -> Self {
        Backends {
            list: RwLock::new(list.into()),
            next: AtomicUsize::new(0),
        }
    }

    fn current(&self) -> Arc<[SocketAddr]> {
        self.list
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, list: Vec<SocketAddr>) {
        *self.list.write().unwrap_or_else(PoisonError::into_inner) = list.into();
    }

    /// The current list, rotated to start at the next round-robin position.
    fn pick_order(&self) -> Vec<SocketAddr> {
        let list = self.current();
        if list.is_empty() {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % list.len();
        list[start..]
            .iter()
            .chain(&list[..start])
            .copied()
            .collect()
    }
}

impl Default for Proxy {
    fn default() -> Self {
        Self::new()
    }
}

impl Proxy {
    /// A proxy with no ports, configured as the daemon uses it.
    pub fn new() -> Self {
        Self::with_config(ProxyConfig::default())
    }

    pub fn with_config(config: ProxyConfig) -> Self {
        Proxy {
            inner: Arc::new(Inner {
                config,
                ports: Mutex::new(HashMap::new()),
                closed: watch::channel(false).0,
            }),
        }
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.inner.config
    }

    /// Publishes `published` (on 0.0.0.0, IPv4) towards `backends`. The first call for a port
    /// opens its listener; later calls swap the backend list at once, leaving established
    /// connections alone (UDP sessions to a backend no longer listed end). Binding errors name
    /// the port, as Docker's do.
    pub async fn set_port(
        &self,
        protocol: Protocol,
        published: u16,
        backends: Vec<SocketAddr>,
    ) -> io::Result<()> {
        if *self.inner.closed.borrow() {
            return Err(io::Error::other("the routing mesh proxy is shut down"));
        }
        let mut ports = self.inner.lock_ports();
        if let Some(entry) = ports.get(&(protocol, published)) {
            if let Some(sessions) = &entry.udp {
                sessions.retain_backends(&backends);
            }
            entry.backends.replace(backends);
            return Ok(());
        }
        let backends = Arc::new(Backends::new(backends));
        let entry = match protocol {
            Protocol::Tcp => {
                let listener = bind_tcp(published, self.inner.config.backlog)?;
                let task = tokio::spawn(accept_loop(
                    listener,
                    backends.clone(),
                    self.inner.config.clone(),
                    self.inner.closed.subscribe(),
                ));
                PortEntry {
                    backends,
                    task,
                    udp: None,
                }
            }
            Protocol::Udp => {
                let socket = bind_udp(published)?;
                let sessions = Arc::new(udp::Sessions::new(
                    socket,
                    backends.clone(),
                    self.inner.config.clone(),
                ));
                let task = tokio::spawn(udp::listen_loop(sessions.clone()));
                PortEntry {
                    backends,
                    task,
                    udp: Some(sessions),
                }
            }
        };
        tracing::debug!(
            port = published,
            protocol = protocol.as_str(),
            "routing mesh port opened (userspace)"
        );
        ports.insert((protocol, published), entry);
        Ok(())
    }

    /// Stops publishing a port: its listener is closed when this returns. Established TCP
    /// connections may finish; UDP sessions end. Nothing happens for a port not published.
    pub async fn remove_port(&self, protocol: Protocol, published: u16) {
        let entry = self.inner.lock_ports().remove(&(protocol, published));
        if let Some(entry) = entry {
            entry.close().await;
            tracing::debug!(
                port = published,
                protocol = protocol.as_str(),
                "routing mesh port closed (userspace)"
            );
        }
    }

    /// The published ports, sorted.
    pub fn ports(&self) -> Vec<(Protocol, u16)> {
        let mut ports: Vec<_> = self.inner.lock_ports().keys().copied().collect();
        ports.sort();
        ports
    }

    /// The number of live UDP sessions of a published port (0 when not published).
    pub fn udp_sessions(&self, published: u16) -> usize {
        self.inner
            .lock_ports()
            .get(&(Protocol::Udp, published))
            .and_then(|e| e.udp.as_ref().map(|s| s.len()))
            .unwrap_or(0)
    }

    /// Closes every listener and ends every connection and session. The proxy takes no ports
    /// afterwards.
    pub async fn shutdown(&self) {
        self.inner.closed.send_replace(true);
        let entries: Vec<PortEntry> = self
            .inner
            .lock_ports()
            .drain()
            .map(|(_, entry)| entry)
            .collect();
        for entry in entries {
            entry.close().await;
        }
    }
}

impl Inner {
    fn lock_ports(&self) -> std::sync::MutexGuard<'_, HashMap<(Protocol, u16), PortEntry>> {
        self.ports.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.closed.send_replace(true);
        for (_, entry) in self.lock_ports().drain() {
            entry.task.abort();
            if let Some(sessions) = entry.udp {
                sessions.clear();
            }
        }
    }
}

impl PortEntry {
    async fn close(self) {
        self.task.abort();
        // The listener is dropped with the task: wait for that, so the port is closed on return.
        let _ = self.task.await;
        if let Some(sessions) = self.udp {
            for task in sessions.clear() {
                let _ = task.await;
            }
        }
    }
}

/// Go's text for an errno ("address already in use"), as in Docker's messages.
fn errno_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => {
            let text = nix::errno::Errno::from_raw(code).desc();
            let mut chars = text.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => e.to_string(),
            }
        }
        None => e.to_string(),
    }
}

fn bind_error(proto: &str, port: u16, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!(
            "Error starting userland proxy: listen {proto}4 0.0.0.0:{port}: bind: {}",
            errno_text(&e)
        ),
    )
}

fn bind_tcp(port: u16, backlog: u32) -> io::Result<TcpListener> {
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr).map_err(|e| bind_error("tcp", port, e))?;
    socket
        .listen(backlog)
        .map_err(|e| bind_error("tcp", port, e))
}

fn bind_udp(port: u16) -> io::Result<tokio::net::UdpSocket> {
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    let socket = std::net::UdpSocket::bind(addr).map_err(|e| bind_error("udp", port, e))?;
    socket.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(socket)
}

async fn accept_loop(
    listener: TcpListener,
    backends: Arc<Backends>,
    config: ProxyConfig,
    closed: watch::Receiver<bool>,
) {
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                tokio::spawn(serve_tcp(
                    client,
                    backends.clone(),
                    config.clone(),
                    closed.clone(),
                ));
            }
            Err(e) => {
                // Out of descriptors or memory: wait a little rather than spin.
                tracing::warn!(error = %e, "routing mesh: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Connects to the first backend in round-robin order that accepts within the timeout.
async fn connect_backend(backends: &Backends, timeout: Duration) -> Option<TcpStream> {
    for addr in backends.pick_order() {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Some(stream),
            Ok(Err(e)) => {
                tracing::debug!(backend = %addr, error = %e, "routing mesh: backend refused")
            }
            Err(_) => tracing::debug!(backend = %addr, "routing mesh: backend connect timed out"),
        }
    }
    None
}

async fn serve_tcp(
    mut client: TcpStream,
    backends: Arc<Backends>,
    config: ProxyConfig,
    mut closed: watch::Receiver<bool>,
) {
    let Some(mut upstream) = connect_backend(&backends, config.connect_timeout).await else {
        // No backend: reset the client at once, as the kernel path does with no rule target.
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let copy = async {
        #[cfg(target_os = "linux")]
        if config.splice {
            match splice::copy_bidirectional(&client, &upstream, config.pipe_size).await {
                Err(e) if e.kind() == io::ErrorKind::Unsupported => {}
                other => return other,
            }
        }
        tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, COPY_BUF, COPY_BUF)
            .await
    };
    let result = tokio::select! {
        r = copy => r.map(|_| ()),
        _ = closed.wait_for(|c| *c) => Ok(()),
    };
    if let Err(e) = result {
        // One side failed (reset, say): reset the other one too rather than close it cleanly.
        tracing::trace!(error = %e, "routing mesh: connection ended with an error");
        let _ = client.set_zero_linger();
        let _ = upstream.set_zero_linger();
    }
}
