//! UDP through the userspace routing mesh: sessions per client address.
//!
//! ```text
//!  client A ──► listener (0.0.0.0:published) ──► session socket A (connected to backend i) ──► task i
//!  client A ◄── listener ◄───────────────────────────── session socket A ◄──────────────────── task i
//! ```
//!
//! The first datagram from a client address opens a session: a socket connected to the next
//! backend in round-robin order. Datagrams from that client go out of its session socket;
//! replies arriving on it are sent back to the client from the listening socket, so the client
//! sees answers from the address it wrote to. A session ends after `udp_idle_timeout` without a
//! datagram either way, when its backend refuses (ICMP port unreachable: the next datagram picks
//! another backend), or when its backend leaves the list. At most `udp_max_sessions` exist per
//! port; datagrams from further clients are dropped until one ends.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use super::{Backends, ProxyConfig};

/// The largest datagram carried (IPv4's limit).
const MAX_DATAGRAM: usize = 65_535;

thread_local! {
    /// Where session sockets receive replies (one buffer per runtime thread, not per session).
    static RECV_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; MAX_DATAGRAM]);
}

/// The listening socket of one UDP port and its sessions.
pub(super) struct Sessions {
    socket: Arc<UdpSocket>,
    backends: Arc<Backends>,
    config: ProxyConfig,
    /// The time base of `Session::last`.
    epoch: Instant,
    next_id: AtomicU64,
    map: Mutex<HashMap<SocketAddr, Session>>,
}

struct Session {
    id: u64,
    socket: Arc<UdpSocket>,
    backend: SocketAddr,
    /// Milliseconds since `Sessions::epoch` of the last datagram either way.
    last: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Sessions {
    pub(super) fn new(socket: UdpSocket, backends: Arc<Backends>, config: ProxyConfig) -> Self {
        Sessions {
            socket: Arc::new(socket),
            backends,
            config,
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Session>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Ends every session; returns their tasks, to be awaited by whoever needs them gone (they
    /// hold the listening socket).
    pub(super) fn clear(&self) -> Vec<JoinHandle<()>> {
        self.lock()
            .drain()
            .map(|(_, session)| {
                session.task.abort();
                session.task
            })
            .collect()
    }

    /// Ends the sessions whose backend is not in `backends`.
    pub(super) fn retain_backends(&self, backends: &[SocketAddr]) {
        self.lock().retain(|_, session| {
            let keep = backends.contains(&session.backend);
            if !keep {
                session.task.abort();
            }
            keep
        });
    }

    /// The session socket for a client: the existing one, or a new one to the next backend.
    /// None when there is no backend or no room for another session.
    fn session_for(self: &Arc<Self>, client: SocketAddr) -> Option<(Arc<UdpSocket>, u64)> {
        let now = self.now_ms();
        let mut map = self.lock();
        if let Some(session) = map.get(&client) {
            session.last.store(now, Ordering::Relaxed);
            return Some((session.socket.clone(), session.id));
        }
        if map.len() >= self.config.udp_max_sessions {
            tracing::debug!(%client, "routing mesh: too many UDP sessions, datagram dropped");
            return None;
        }
        let (socket, backend) = self.backends.pick_order().into_iter().find_map(|backend| {
            match connect_session(backend) {
                Ok(socket) => Some((Arc::new(socket), backend)),
                Err(e) => {
                    tracing::debug!(%backend, error = %e, "routing mesh: UDP session socket failed");
                    None
                }
            }
        })?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let last = Arc::new(AtomicU64::new(now));
        let task = tokio::spawn(reply_loop(
            self.clone(),
            id,
            client,
            socket.clone(),
            last.clone(),
        ));
        map.insert(
            client,
            Session {
                id,
                socket: socket.clone(),
                backend,
                last,
                task,
            },
        );
        Some((socket, id))
    }

    /// Ends a session (its task included) if it is still the one with this id.
    fn end(&self, client: SocketAddr, id: u64) {
        let mut map = self.lock();
        if map.get(&client).is_some_and(|s| s.id == id) {
            if let Some(session) = map.remove(&client) {
                session.task.abort();
            }
        }
    }

    /// Forgets a session if it is still the one with this id.
    fn remove(&self, client: SocketAddr, id: u64) {
        let mut map = self.lock();
        if map.get(&client).is_some_and(|s| s.id == id) {
            map.remove(&client);
        }
    }
}

fn connect_session(backend: SocketAddr) -> io::Result<UdpSocket> {
    let socket =
        std::net::UdpSocket::bind(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)))?;
    socket.connect(backend)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// Receives on the listening socket and forwards each datagram through its client's session.
pub(super) async fn listen_loop(sessions: Arc<Sessions>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, client) = match sessions.socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors about earlier replies surface here on Linux: not fatal.
                tracing::trace!(error = %e, "routing mesh: UDP receive error");
                continue;
            }
        };
        // A refusal reported on send (the backend answered an earlier datagram with ICMP port
        // unreachable) ends the session; the datagram then goes to the next backend, once.
        for _ in 0..2 {
            let Some((socket, id)) = sessions.session_for(client) else {
                break;
            };
            match socket.send(&buf[..n]).await {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::debug!(%client, "routing mesh: UDP backend refused, session ended");
                    sessions.end(client, id);
                }
                Err(e) => {
                    tracing::trace!(%client, error = %e, "routing mesh: UDP send to backend failed");
                    break;
                }
            }
        }
    }
}

/// Sends a session's replies back to its client until it has been idle too long or its
/// backend refuses.
async fn reply_loop(
    sessions: Arc<Sessions>,
    id: u64,
    client: SocketAddr,
    socket: Arc<UdpSocket>,
    last: Arc<AtomicU64>,
) {
    let idle = sessions.config.udp_idle_timeout;
    let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
    loop {
        let since = sessions
            .now_ms()
            .saturating_sub(last.load(Ordering::Relaxed));
        if since >= idle_ms {
            break;
        }
        let wait = Duration::from_millis(idle_ms - since);
        // Readable, or an error queued (ICMP port unreachable from the backend).
        let ready = socket.ready(Interest::READABLE | Interest::ERROR);
        match tokio::time::timeout(wait, ready).await {
            Err(_) => continue, // re-check: the client may have written meanwhile
            Ok(Err(e)) => {
                tracing::debug!(%client, error = %e, "routing mesh: UDP session socket failed");
                break;
            }
            Ok(Ok(ready)) => {
                if ready.is_error() {
                    if let Ok(Some(e)) = socket.take_error() {
                        tracing::debug!(%client, error = %e, "routing mesh: UDP backend refused, session ended");
                        break;
                    }
                    // Already taken (by a send): clear the readiness so it is not seen again.
                    let _ = socket.try_io(Interest::ERROR, || {
                        Err::<(), _>(io::Error::from(io::ErrorKind::WouldBlock))
                    });
                }
                if !ready.is_readable() {
                    continue;
                }
            }
        }
        // Received into the thread's buffer, so an idle session holds no 64 KiB of its own.
        let reply = RECV_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            socket.try_recv(&mut buf[..]).map(|n| buf[..n].to_vec())
        });
        match reply {
            Ok(reply) => {
                last.store(sessions.now_ms(), Ordering::Relaxed);
                if let Err(e) = sessions.socket.send_to(&reply, client).await {
                    tracing::trace!(%client, error = %e, "routing mesh: UDP reply failed");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                tracing::debug!(%client, error = %e, "routing mesh: UDP backend refused, session ended");
                break;
            }
        }
    }
    sessions.remove(client, id);
}
