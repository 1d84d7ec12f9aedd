//! TLS on both ends, with the caller's rustls configs used as they are.
//!
//! ```text
//!  server: TcpListener ─accept─► spawn: TlsAcceptor(ServerConfig) handshake (10 s limit)
//!             │ ok: peer cert DER ─► PeerFn ─► ConnInfo          │ failed: logged, dropped
//!             ▼
//!          mpsc ─► incoming stream of PeerStream ─► tonic serve_with_incoming
//!                  (PeerStream: Connected, so ConnInfo is in every request's extensions)
//!
//!  client: Endpoint::connect_with_connector(service_fn: TcpStream::connect(addr)
//!             ─► TlsConnector(ClientConfig + ALPN h2, server name) ─► TokioIo)
//! ```
//!
//! Handshakes run in their own tasks (at most `MAX_HANDSHAKES` at once) so a slow or silent
//! client cannot hold up the others.
//! Only the ClientConfig gets one change: its ALPN list is set to `h2`.

use std::error::Error as StdError;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic::transport::server::Connected;

use crate::auth::{ConnInfo, PeerFn};

/// How long a client has to complete the TLS handshake.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many TLS handshakes may be in progress at once.
pub(crate) const MAX_HANDSHAKES: usize = 256;

/// A server-side TLS connection with what we know of its peer.
pub(crate) struct PeerStream {
    io: tokio_rustls::server::TlsStream<TcpStream>,
    info: ConnInfo,
}

impl Connected for PeerStream {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Accepts TCP connections, runs the TLS handshakes and yields the connections that completed
/// one. Stops accepting (and closes the listener) when `shutdown` turns true or the stream is
/// dropped.
pub(crate) fn incoming(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    peer_fn: PeerFn,
    mut shutdown: watch::Receiver<bool>,
) -> impl Stream<Item = Result<PeerStream, io::Error>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<PeerStream>(64);
    let acceptor = TlsAcceptor::from(tls);
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => break,
                _ = crate::server::wait_for_shutdown(&mut shutdown) => break,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off a little, keep serving.
                    tracing::warn!(error = %e, "accepting a node-to-node connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            // Bound the handshakes in flight; past that, new connections wait their turn.
            let permit = tokio::select! {
                p = Arc::clone(&handshakes).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = crate::server::wait_for_shutdown(&mut shutdown) => break,
            };
            let acceptor = acceptor.clone();
            let peer_fn = Arc::clone(&peer_fn);
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote, "TLS handshake timed out");
                        return;
                    }
                };
                let peer = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .and_then(|der| {
                        let peer = peer_fn(der.as_ref());
                        if peer.is_none() {
                            tracing::warn!(%remote, "client certificate names no node of this swarm; treating the connection as anonymous");
                        }
                        peer
                    });
                tracing::trace!(%remote, ?peer, "node-to-node connection");
                let info = ConnInfo {
                    peer,
                    remote_addr: Some(remote),
                };
                let _ = tx.send(PeerStream { io: tls, info }).await;
            });
        }
    });
    futures::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok)
}

/// The caller's client config with ALPN set to HTTP/2.
pub(crate) fn h2_client_config(tls: &rustls::ClientConfig) -> Arc<rustls::ClientConfig> {
    let mut cfg = tls.clone();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(cfg)
}

/// A tonic connector: TCP to `addr`, then TLS with `tls` presenting `server_name`.
pub(crate) fn connector(
    addr: String,
    tls: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
) -> impl tower::Service<
    http::Uri,
    Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
    Error = io::Error,
    Future = impl Send + 'static,
> + Send
       + Clone
       + 'static {
    let connector = TlsConnector::from(tls);
    tower::service_fn(move |_uri: http::Uri| {
        let addr = addr.clone();
        let connector = connector.clone();
        let server_name = server_name.clone();
        async move {
            let tcp = TcpStream::connect(&addr).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(server_name, tcp).await?;
            Ok(TokioIo::new(tls))
        }
    })
}

/// An error with its chain of causes, `a: b: c`, skipping repeats.
pub(crate) fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}
