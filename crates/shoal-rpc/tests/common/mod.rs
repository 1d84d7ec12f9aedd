//! Test fixtures: a throw-away PKI made with rcgen (a root CA, node certificates with
//! CN = node ID and OU = swarm-manager | swarm-worker), rustls configs built from it, and a
//! server started on an ephemeral loopback port.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use shoal_rpc::{Handlers, Peer, PeerFn, PeerRole, RpcError};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A root CA and the identities of the certificates it issued.
pub struct Pki {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    pub root_pem: String,
    cluster_id: String,
    identities: Arc<Mutex<HashMap<Vec<u8>, Peer>>>,
}

/// A node certificate with its key.
pub struct NodeCert {
    pub peer: Peer,
    chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
}

impl NodeCert {
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

impl Pki {
    pub fn new(cluster_id: &str) -> Pki {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "swarm-ca");
        dn.push(DnType::OrganizationName, cluster_id);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        Pki {
            root_pem: cert.pem(),
            ca_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
            cluster_id: cluster_id.to_string(),
            identities: Arc::default(),
        }
    }

    /// A node certificate: CN = `node_id`, OU = swarm-manager | swarm-worker, O = cluster ID,
    /// SANs: the role name, the node ID, localhost and 127.0.0.1.
    pub fn node(&self, node_id: &str, role: PeerRole) -> NodeCert {
        let ou = match role {
            PeerRole::Manager => "swarm-manager",
            PeerRole::Worker => "swarm-worker",
        };
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node_id);
        dn.push(DnType::OrganizationalUnitName, ou);
        dn.push(DnType::OrganizationName, self.cluster_id.as_str());
        params.distinguished_name = dn;
        params.subject_alt_names = vec![
            SanType::DnsName(ou.try_into().unwrap()),
            SanType::DnsName(node_id.try_into().unwrap()),
            SanType::DnsName("localhost".try_into().unwrap()),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let peer = Peer {
            node_id: node_id.to_string(),
            role,
        };
        self.identities
            .lock()
            .unwrap()
            .insert(cert.der().to_vec(), peer.clone());
        NodeCert {
            peer,
            chain: vec![cert.der().clone(), self.ca_der.clone()],
            key_der: key.serialize_der(),
        }
    }

    fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        Arc::new(roots)
    }

    /// Server side: present `node`, require a client certificate from this CA when one is
    /// offered, and let clients without one through (joining nodes).
    pub fn server_config(&self, node: &NodeCert) -> Arc<ServerConfig> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots(), provider())
            .allow_unauthenticated()
            .build()
            .unwrap();
        let cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(node.chain.clone(), node.key())
            .unwrap();
        Arc::new(cfg)
    }

    /// Client side: present `node`, trust this CA.
    pub fn client_config(&self, node: &NodeCert) -> Arc<ClientConfig> {
        self.client_config_trusting(node, self)
    }

    /// Client side: present `node` (issued by this CA), trust `trusted`'s CA.
    pub fn client_config_trusting(&self, node: &NodeCert, trusted: &Pki) -> Arc<ClientConfig> {
        let cfg = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(trusted.roots())
            .with_client_auth_cert(node.chain.clone(), node.key())
            .unwrap();
        Arc::new(cfg)
    }

    /// Client side without a certificate (a node that has not joined yet), trusting this CA.
    pub fn anonymous_client_config(&self) -> Arc<ClientConfig> {
        let cfg = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots())
            .with_no_client_auth();
        Arc::new(cfg)
    }

    /// The certificate-to-identity function the server uses (what shoal-ca's `peer_identity`
    /// does by reading CN and OU; here a lookup of the certificates this CA issued).
    pub fn peer_fn(&self) -> PeerFn {
        let ids = Arc::clone(&self.identities);
        Arc::new(move |der: &[u8]| ids.lock().unwrap().get(der).cloned())
    }
}

/// A client config that trusts any server and presents no certificate: what a joining node uses
/// to fetch the root CA before it can verify anything.
pub fn bootstrap_client_config() -> Arc<ClientConfig> {
    #[derive(Debug)]
    struct AcceptAny(Arc<CryptoProvider>);
    impl ServerCertVerifier for AcceptAny {
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
            rustls::crypto::verify_tls12_signature(
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
            rustls::crypto::verify_tls13_signature(
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
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())))
        .with_no_client_auth();
    Arc::new(cfg)
}

/// A running `shoal_rpc::serve` on 127.0.0.1 with an ephemeral port.
pub struct TestServer {
    pub addr: String,
    stop: watch::Sender<bool>,
    handle: JoinHandle<Result<(), RpcError>>,
}

impl TestServer {
    pub async fn start(tls: Arc<ServerConfig>, peer_fn: PeerFn, handlers: Handlers) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, tls, peer_fn, handlers)
    }

    pub fn start_on(
        listener: TcpListener,
        tls: Arc<ServerConfig>,
        peer_fn: PeerFn,
        handlers: Handlers,
    ) -> TestServer {
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, rx) = watch::channel(false);
        let handle = tokio::spawn(shoal_rpc::serve(listener, tls, peer_fn, handlers, rx));
        TestServer { addr, stop, handle }
    }

    /// Signals shutdown and waits for `serve` to return; returns how long that took.
    pub async fn stop(self) -> Duration {
        let t = Instant::now();
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(15), self.handle)
            .await
            .expect("serve did not return after shutdown")
            .expect("serve panicked")
            .expect("serve failed");
        t.elapsed()
    }
}

/// An address on which nothing listens.
pub async fn closed_port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    addr
}

/// Polls `cond` until it holds or `timeout` passes.
pub async fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
