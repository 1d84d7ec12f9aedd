//! rustls configurations for node-to-node traffic on port 2377 (all on the `ring` provider,
//! TLS 1.3, ALPN `h2`).
//!
//! | config | presents | verifies the other side | used for |
//! | --- | --- | --- | --- |
//! | [`server_config`] | node cert | client cert *if any* against the root; none is allowed | every manager listener |
//! | [`client_config`] | node cert | server chain against the root + name | raft, dispatcher, renewals |
//! | [`pinned_client_config`] | nothing | server chain against the root + name | the join CSR call |
//! | [`dangerous_unverified_bootstrap_client_config`] | nothing | **nothing** | fetching the root CA, whose digest the caller then checks against the token |
//!
//! **Server names.** Following swarmkit, certificates carry DNS SANs: managers
//! `swarm-manager`, `swarm-ca` and their node id; workers `swarm-worker` and their node id. So
//! the standard WebPKI verifier checks names: dial any manager as [`MANAGER_SERVER_NAME`], the
//! CA as [`CA_SERVER_NAME`], or a specific node by its node id (raft peers), with
//! [`server_name`]. No custom "skip the name" verifier exists outside the bootstrap one.
//!
//! **Anonymous clients.** The server accepts connections without a client certificate
//! because a joining node has none yet; a presented certificate must still verify against the
//! root or the handshake fails. Each RPC decides what it needs with [`identify_peer`]:
//! the join RPCs accept [`Peer::Anonymous`], everything else requires a node (and raft a
//! manager).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::node::{identity_from_der, NodeIdentity};
use crate::x509::{certs_from_pem, first_cert_from_pem, private_key_der_from_pem};
use crate::{CaError, NodeCredentials, RootCa};

/// The name to dial any manager by (every manager certificate carries it).
pub const MANAGER_SERVER_NAME: &str = "swarm-manager";
/// The name to dial the CA by (every manager certificate carries it; swarmkit's `CARole`).
pub const CA_SERVER_NAME: &str = "swarm-ca";
/// The ALPN protocol offered and required on both sides (gRPC over HTTP/2).
pub const ALPN_H2: &[u8] = b"h2";

/// The crypto provider every config here uses: rustls' `ring` provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server name for rustls: [`MANAGER_SERVER_NAME`], [`CA_SERVER_NAME`] or a node id.
pub fn server_name(name: &str) -> Result<ServerName<'static>, CaError> {
    ServerName::try_from(name.to_owned())
        .map_err(|e| CaError::Tls(format!("invalid server name {name:?}: {e}")))
}

/// Who is on the other end of a server-side connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// No client certificate (a node that is joining).
    Anonymous,
    /// A node with a certificate that rustls verified against the root.
    Node(NodeIdentity),
}

/// Identify the client from the chain rustls reports after a handshake with [`server_config`]
/// (`ServerConnection::peer_certificates`, tonic's `Request::peer_certs`). `None` or an empty
/// chain is [`Peer::Anonymous`].
pub fn identify_peer(chain: Option<&[CertificateDer<'_>]>) -> Result<Peer, CaError> {
    match chain.and_then(|c| c.first()) {
        None => Ok(Peer::Anonymous),
        Some(leaf) => identity_from_der(leaf).map(Peer::Node),
    }
}

fn tls_err(e: impl std::fmt::Display) -> CaError {
    CaError::Tls(e.to_string())
}

fn chain_and_key(
    creds: &NodeCredentials,
) -> Result<
    (
        Vec<CertificateDer<'static>>,
        rustls_pki_types::PrivateKeyDer<'static>,
    ),
    CaError,
> {
    let leaf = first_cert_from_pem(&creds.cert_pem, "node certificate")?;
    let key = private_key_der_from_pem(&creds.key_pem, "node key")?;
    Ok((vec![leaf], key))
}

fn roots(root_pem: &str) -> Result<Arc<rustls::RootCertStore>, CaError> {
    let mut store = rustls::RootCertStore::empty();
    for c in certs_from_pem(root_pem, "root CA certificate")? {
        store
            .add(c)
            .map_err(|e| CaError::cert("root CA certificate", e.to_string()))?;
    }
    Ok(Arc::new(store))
}

/// The listener config of a manager: presents the node certificate; verifies a client
/// certificate against the root if one is presented, and also accepts clients without one
/// (see [`identify_peer`]). ALPN `h2`.
pub fn server_config(creds: &NodeCredentials) -> Result<ServerConfig, CaError> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots(&creds.root_pem)?, provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(tls_err)?;
    let (chain, key) = chain_and_key(creds)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(tls_err)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// Mutual TLS as a node: presents the node certificate, trusts only the root, checks the
/// server name (dial with [`MANAGER_SERVER_NAME`], or a node id). ALPN `h2`.
pub fn client_config(creds: &NodeCredentials) -> Result<ClientConfig, CaError> {
    let provider = provider();
    let verifier =
        WebPkiServerVerifier::builder_with_provider(roots(&creds.root_pem)?, provider.clone())
            .build()
            .map_err(tls_err)?;
    let (chain, key) = chain_and_key(creds)?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .map_err(tls_err)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// For the join CSR call: trusts only `root_pem` (already checked against the token), presents
/// no certificate. Dial with [`CA_SERVER_NAME`]. ALPN `h2`.
pub fn pinned_client_config(root_pem: &str) -> Result<ClientConfig, CaError> {
    let provider = provider();
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(root_pem)?, provider.clone())
        .build()
        .map_err(tls_err)?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_webpki_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// **Verifies nothing about the server.** Only for the first call of a join: fetch the root
/// CA certificate, then check it with [`verify_ca_digest`](crate::verify_ca_digest) before
/// trusting anything it says; every later call uses [`pinned_client_config`] or
/// [`client_config`]. (swarmkit's `GetRemoteCA` uses `InsecureSkipVerify` the same way.)
/// Handshake signatures are still checked, so the server must hold the key of the certificate
/// it shows.
pub fn dangerous_unverified_bootstrap_client_config() -> Result<ClientConfig, CaError> {
    let provider = provider();
    let verifier = accept_any_server_cert(provider.clone());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// A verifier that accepts any server certificate and checks only that the handshake is signed
/// by its key: the session is encrypted to whoever holds that key (a join's first contact,
/// before the CA is pinned; the CLI's `--tls` without `--tlsverify`).
pub fn accept_any_server_cert(provider: Arc<CryptoProvider>) -> Arc<dyn ServerCertVerifier> {
    Arc::new(AcceptAnyServerCert(provider))
}

#[derive(Debug)]
struct AcceptAnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl RootCa {
    /// [`pinned_client_config`] for this root.
    pub fn pinned_client_config(&self) -> Result<ClientConfig, CaError> {
        pinned_client_config(self.cert_pem())
    }
}
