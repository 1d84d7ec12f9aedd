//! Listening and serving: a unix socket, TCP, or TCP with TLS (rustls, `ring` provider), each
//! connection served by hyper's HTTP/1 with graceful shutdown.
//!
//! ```text
//!   bind(Listener) ──► Bound ──accept──► [TLS handshake] ──► hyper http1 ──► router
//!        shutdown future resolves ──► stop accepting ──► finish in-flight requests (10 s max)
//! ```
//!
//! `--tlsverify` ([`TlsFiles::verify_clients`]) requires client certificates signed by the CA.

use crate::backend::SwarmBackend;
use crate::routes::router;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};

/// How long in-flight requests (such as followed logs) may run after shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a client may take to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Certificate files for a TLS listener.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to.
    pub ca: Option<PathBuf>,
    /// Require and verify client certificates (`--tlsverify`).
    pub verify_clients: bool,
}

/// Where the API listens.
#[derive(Clone, Debug)]
pub enum Listener {
    /// A unix socket (parent directory created, stale socket removed, mode 0660).
    Unix(PathBuf),
    /// A TCP address, optionally with TLS.
    Tcp {
        addr: SocketAddr,
        tls: Option<TlsFiles>,
    },
}

enum Inner {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener, Option<tokio_rustls::TlsAcceptor>),
}

/// A bound listener, ready to serve.
pub struct Bound {
    inner: Inner,
}

impl Bound {
    /// The TCP address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.inner {
            Inner::Tcp(l, _) => l.local_addr().ok(),
            Inner::Unix(..) => None,
        }
    }

    /// The socket path of a unix listener.
    pub fn unix_path(&self) -> Option<&Path> {
        match &self.inner {
            Inner::Unix(_, p) => Some(p),
            Inner::Tcp(..) => None,
        }
    }
}

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

fn load_certs(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| other(format!("reading certificates from {}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| other(format!("reading certificates from {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(other(format!("no certificate found in {}", path.display())));
    }
    Ok(certs)
}

/// Builds the rustls server configuration for `files` (ring provider, TLS 1.2 and 1.3).
pub fn tls_config(files: &TlsFiles) -> io::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = load_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        other(format!(
            "reading private key from {}: {e}",
            files.key.display()
        ))
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| other(format!("TLS configuration: {e}")))?;
    let builder = if files.verify_clients {
        let ca = files.ca.as_ref().ok_or_else(|| {
            other("verifying client certificates needs a CA certificate (--tlscacert)".into())
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for c in load_certs(ca)? {
            roots
                .add(c)
                .map_err(|e| other(format!("CA certificate {}: {e}", ca.display())))?;
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| other(format!("client certificate verifier: {e}")))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| other(format!("server certificate {}: {e}", files.cert.display())))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Prepares a unix socket path: creates the parent directory and removes a stale socket.
fn prepare_socket_path(path: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(meta) => {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another daemon is already listening on {}", path.display()),
                ));
            }
            std::fs::remove_file(path)
        }
    }
}

/// Binds `listener`.
pub async fn bind(listener: Listener) -> io::Result<Bound> {
    match listener {
        Listener::Unix(path) => {
            prepare_socket_path(&path)?;
            let l = UnixListener::bind(&path)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))?;
            Ok(Bound {
                inner: Inner::Unix(l, path),
            })
        }
        Listener::Tcp { addr, tls } => {
            let acceptor = match tls {
                Some(files) => Some(tokio_rustls::TlsAcceptor::from(tls_config(&files)?)),
                None => None,
            };
            let l = TcpListener::bind(addr).await?;
            Ok(Bound {
                inner: Inner::Tcp(l, acceptor),
            })
        }
    }
}

/// Binds `listener` and serves the API on it until `shutdown` resolves.
pub async fn serve(
    listener: Listener,
    backend: Arc<dyn SwarmBackend>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let bound = bind(listener).await?;
    serve_bound(bound, backend, shutdown).await
}

type Svc = TowerToHyperService<axum::Router>;

fn serve_io<I>(io: I, svc: Svc, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), svc);
    tokio::spawn(async move {
        if let Err(e) = watcher.watch(conn).await {
            tracing::debug!(error = %e, "API connection ended with an error");
        }
    });
}

/// Serves the API on an already bound listener until `shutdown` resolves, then lets in-flight
/// requests finish (up to [`SHUTDOWN_GRACE`]).
pub async fn serve_bound(
    bound: Bound,
    backend: Arc<dyn SwarmBackend>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let svc = TowerToHyperService::new(router(backend));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        match &bound.inner {
            Inner::Unix(l, _) => {
                tokio::select! {
                    _ = &mut shutdown => break,
                    r = l.accept() => match r {
                        Ok((stream, _)) => serve_io(stream, svc.clone(), graceful.watcher()),
                        Err(e) => accept_failed(e).await,
                    },
                }
            }
            Inner::Tcp(l, tls) => {
                tokio::select! {
                    _ = &mut shutdown => break,
                    r = l.accept() => match r {
                        Ok((stream, peer)) => {
                            let _ = stream.set_nodelay(true);
                            match tls.clone() {
                                None => serve_io(stream, svc.clone(), graceful.watcher()),
                                Some(acceptor) => {
                                    let (svc, watcher) = (svc.clone(), graceful.watcher());
                                    tokio::spawn(async move {
                                        let hs = tokio::time::timeout(
                                            TLS_HANDSHAKE_TIMEOUT,
                                            acceptor.accept(stream),
                                        );
                                        match hs.await {
                                            Ok(Ok(tls_stream)) => serve_io(tls_stream, svc, watcher),
                                            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                                        }
                                    });
                                }
                            }
                        }
                        Err(e) => accept_failed(e).await,
                    },
                }
            }
        }
    }
    let path = bound.unix_path().map(Path::to_path_buf);
    drop(bound);
    if let Some(p) = path {
        let _ = std::fs::remove_file(p);
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("API connections still open after the shutdown grace period; closing them");
    }
    Ok(())
}

/// Accept errors (out of file descriptors, aborted connections) are transient: wait a little.
async fn accept_failed(e: io::Error) {
    tracing::warn!(error = %e, "accepting an API connection failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MockBackend;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const PING: &[u8] = b"GET /v1.51/_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n";

    async fn roundtrip<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> String {
        if s.write_all(PING).await.is_err() {
            return String::new();
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).to_string()
    }

    #[tokio::test]
    async fn unix_socket_replaces_stale_socket_and_shuts_down() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run/shoal/docker.sock");
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        drop(std::os::unix::net::UnixListener::bind(&path).expect("stale socket"));
        assert!(path.exists());

        let bound = bind(Listener::Unix(path.clone())).await.expect("bind");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        // A second daemon on the same socket is refused.
        assert!(bind(Listener::Unix(path.clone())).await.is_err());

        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_bound(bound, Arc::new(MockBackend::new()), async {
            let _ = rx.await;
        }));
        let resp = roundtrip(
            tokio::net::UnixStream::connect(&path)
                .await
                .expect("connect"),
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp}");
        assert!(
            resp.to_ascii_lowercase().contains("swarm: inactive"),
            "{resp}"
        );
        assert!(
            resp.to_ascii_lowercase().contains("api-version: 1.51"),
            "{resp}"
        );
        assert!(resp.ends_with("OK"), "{resp}");

        let _ = tx.send(());
        let done = tokio::time::timeout(Duration::from_secs(5), server).await;
        assert!(matches!(done, Ok(Ok(Ok(())))));
        assert!(!path.exists());
    }

    struct Pki {
        dir: tempfile::TempDir,
        ca_pem: String,
    }

    fn issue(
        ca: &CertifiedIssuer<'_, KeyPair>,
        names: Vec<String>,
        pki: &Pki,
        stem: &str,
    ) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, ca)
            .expect("sign");
        let cert_path = pki.dir.path().join(format!("{stem}.pem"));
        let key_path = pki.dir.path().join(format!("{stem}-key.pem"));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        (cert_path, key_path)
    }

    fn client_config(pki: &Pki, client: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
            roots.add(c.expect("ca pem")).expect("add root");
        }
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let cfg = match client {
            Some((cert, key)) => b
                .with_client_auth_cert(
                    load_certs(cert).expect("client cert"),
                    PrivateKeyDer::from_pem_file(key).expect("client key"),
                )
                .expect("client auth"),
            None => b.with_no_client_auth(),
        };
        Arc::new(cfg)
    }

    #[tokio::test]
    async fn tls_with_client_verification() {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key"))
            .expect("ca");
        let pki = Pki {
            dir: tempfile::tempdir().expect("tempdir"),
            ca_pem: ca.pem(),
        };
        let ca_path = pki.dir.path().join("ca.pem");
        std::fs::write(&ca_path, &pki.ca_pem).expect("write ca");
        let (server_cert, server_key) = issue(&ca, vec!["localhost".into()], &pki, "server");
        let (client_cert, client_key) = issue(&ca, vec!["client".into()], &pki, "client");

        let listener = Listener::Tcp {
            addr: "127.0.0.1:0".parse().expect("addr"),
            tls: Some(TlsFiles {
                cert: server_cert,
                key: server_key,
                ca: Some(ca_path),
                verify_clients: true,
            }),
        };
        let bound = bind(listener).await.expect("bind");
        let addr = bound.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_bound(bound, Arc::new(MockBackend::new()), async {
            let _ = rx.await;
        }));
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");

        let connector = tokio_rustls::TlsConnector::from(client_config(
            &pki,
            Some((client_cert.as_path(), client_key.as_path())),
        ));
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let tls = connector
            .connect(name.clone(), tcp)
            .await
            .expect("handshake");
        let resp = roundtrip(tls).await;
        assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp}");

        // Without a client certificate the server refuses to talk.
        let connector = tokio_rustls::TlsConnector::from(client_config(&pki, None));
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let resp = match connector.connect(name, tcp).await {
            Ok(tls) => roundtrip(tls).await,
            Err(_) => String::new(),
        };
        assert!(!resp.contains("200 OK"), "{resp}");

        // Verification without a CA is a configuration error.
        let err = tls_config(&TlsFiles {
            cert: pki.dir.path().join("server.pem"),
            key: pki.dir.path().join("server-key.pem"),
            ca: None,
            verify_clients: true,
        });
        assert!(err.is_err());

        let _ = tx.send(());
        let done = tokio::time::timeout(Duration::from_secs(5), server).await;
        assert!(matches!(done, Ok(Ok(Ok(())))));
    }
}
