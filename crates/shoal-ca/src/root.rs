//! The swarm's root CA: generated once by `swarm init`, held (with its key) by managers, held
//! without its key by workers. It signs every node certificate and is the only trust anchor of
//! node-to-node TLS.
//!
//! ```text
//!  RootCa::generate(cluster_id)          CN=swarm-ca, O=<cluster id>, P-256, 20 years
//!        │ cert_pem() ─────────────────► every node (swarm-root-ca.crt), digest() in tokens
//!        │ key_pem()  ─────────────────► managers only (stored in the replicated store)
//!        ▼
//!  issue(csr_pem, node_id, role, validity)
//!        │  trusts only the CSR's public key (swarmkit's CSR whitelist); everything else
//!        │  comes from the arguments:
//!        ▼
//!  node cert: CN=<node id>, OU=swarm-manager|swarm-worker, O=<cluster id>, P-256,
//!             EKU serverAuth+clientAuth, SAN DNS: <OU>, <node id>, and swarm-ca for managers
//! ```
//!
//! The digest is swarmkit's: SHA-256 over the root certificate *PEM bytes exactly as stored and
//! sent*, so [`RootCa::from_pem`] keeps the text it was given byte for byte.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, UnixTime};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509CertificationRequest};
use zeroize::Zeroizing;

use crate::node::{identity_from_der, NodeIdentity};
use crate::token::{base36_digest, sha256};
use crate::x509::{certs_from_pem, is_p256, key_matches_cert, key_pair_from_pem, parse_cert};
use crate::{CaError, Role, CA_SERVER_NAME, ROOT_CN};

/// Lifetime of a generated root CA: 20 years (swarmkit's `RootCAExpiration`, 630720000 s).
pub const ROOT_CA_VALIDITY: Duration = Duration::from_secs(630_720_000);
/// Default lifetime of a node certificate: 90 days (swarmkit's `DefaultNodeCertExpiration`).
pub const DEFAULT_NODE_CERT_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// Shortest node certificate lifetime accepted (swarmkit's `MinNodeCertExpiration`).
pub const MIN_NODE_CERT_VALIDITY: Duration = Duration::from_secs(3600);
/// Certificates start this long before they are issued, to absorb clock skew between machines
/// (swarmkit's `CertBackdate`).
pub const CERT_BACKDATE: Duration = Duration::from_secs(3600);

/// The root certificate authority of one swarm.
#[derive(Clone)]
pub struct RootCa {
    /// The PEM exactly as generated or received (the digest is over these bytes).
    cert_pem: String,
    /// Every certificate of the PEM (normally one); the first is the signing one.
    certs: Vec<CertificateDer<'static>>,
    /// The O of the first certificate: the cluster id.
    cluster_id: Option<String>,
    /// The private key, on managers.
    key: Option<Arc<SigningKey>>,
}

struct SigningKey {
    pem: Zeroizing<String>,
    pair: KeyPair,
}

impl fmt::Debug for RootCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootCa")
            .field("cluster_id", &self.cluster_id)
            .field("digest", &self.digest())
            .field("can_sign", &self.can_sign())
            .finish()
    }
}

impl RootCa {
    /// A new root CA for the cluster `cluster_id`: ECDSA P-256, CN `swarm-ca`, O = cluster id,
    /// valid for [`ROOT_CA_VALIDITY`] (backdated by [`CERT_BACKDATE`]).
    pub fn generate(cluster_id: &str) -> Result<RootCa, CaError> {
        check_name("cluster id", cluster_id)?;
        let pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| {
            CaError::Generate {
                what: "root CA key",
                source,
            }
        })?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, cluster_id);
        dn.push(DnType::CommonName, ROOT_CN);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        params.not_before = now - CERT_BACKDATE;
        params.not_after = now + ROOT_CA_VALIDITY;
        let cert = params
            .self_signed(&pair)
            .map_err(|source| CaError::Generate {
                what: "root CA certificate",
                source,
            })?;
        let key_pem = Zeroizing::new(pair.serialize_pem());
        Ok(RootCa {
            cert_pem: cert.pem(),
            certs: vec![cert.der().clone()],
            cluster_id: Some(cluster_id.to_owned()),
            key: Some(Arc::new(SigningKey { pem: key_pem, pair })),
        })
    }

    /// Load a root CA from its certificate PEM and, on managers, its private key PEM.
    ///
    /// Every certificate in `cert_pem` must be a self-signed CA certificate (a bundle of several
    /// is trusted as a whole; the first one signs). A key must be ECDSA P-256 and match the
    /// first certificate. The PEM text is kept as given: the digest is computed over it.
    pub fn from_pem(cert_pem: &str, key_pem: Option<&str>) -> Result<RootCa, CaError> {
        const WHAT: &str = "root CA certificate";
        let certs = certs_from_pem(cert_pem, WHAT)?;
        let mut cluster_id = None;
        for (i, der) in certs.iter().enumerate() {
            let cert = parse_cert(der, WHAT)?;
            let is_ca = cert
                .basic_constraints()
                .map_err(|e| CaError::cert(WHAT, format!("bad basic constraints: {e}")))?
                .is_some_and(|bc| bc.value.ca);
            if !is_ca {
                return Err(CaError::cert(
                    WHAT,
                    "not a CA certificate (basicConstraints CA is not set)",
                ));
            }
            cert.verify_signature(None).map_err(|e| {
                CaError::cert(WHAT, format!("not self-signed (signature check: {e})"))
            })?;
            if i == 0 {
                cluster_id = cert
                    .subject()
                    .iter_organization()
                    .next()
                    .and_then(|o| o.as_str().ok())
                    .map(str::to_owned);
            }
        }
        let key = match key_pem {
            None => None,
            Some(pem) => {
                let pair = key_pair_from_pem(pem, "root CA key")?;
                let first = parse_cert(&certs[0], WHAT)?;
                if !key_matches_cert(&pair, &first) {
                    return Err(CaError::key(
                        "root CA key",
                        "does not match the root CA certificate",
                    ));
                }
                Some(Arc::new(SigningKey {
                    pem: Zeroizing::new(pem.to_owned()),
                    pair,
                }))
            }
        };
        Ok(RootCa {
            cert_pem: cert_pem.to_owned(),
            certs,
            cluster_id,
            key,
        })
    }

    /// The root certificate(s), PEM, exactly as the digest covers them.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The root private key PEM, on a node that holds it.
    pub fn key_pem(&self) -> Option<&str> {
        self.key.as_ref().map(|k| k.pem.as_str())
    }

    /// Whether this node holds the root key and so can [`issue`](Self::issue) certificates.
    pub fn can_sign(&self) -> bool {
        self.key.is_some()
    }

    /// The cluster id this root was made for (its O), if it has one.
    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    /// The root certificates in DER, the first being the signing one.
    pub fn certs_der(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    /// The token digest: SHA-256 of [`cert_pem`](Self::cert_pem), as a base36 number left-padded
    /// with zeros to 50 characters (swarmkit's `GenerateJoinToken`).
    pub fn digest(&self) -> String {
        base36_digest(&sha256(self.cert_pem.as_bytes()))
    }

    /// A rustls root store holding this CA's certificates.
    pub fn root_store(&self) -> Result<RootCertStore, CaError> {
        let mut store = RootCertStore::empty();
        for c in &self.certs {
            store
                .add(c.clone())
                .map_err(|e| CaError::cert("root CA certificate", e.to_string()))?;
        }
        Ok(store)
    }

    /// Sign a node certificate for the public key of `csr_pem`.
    ///
    /// Only the CSR's public key is used (it must be ECDSA P-256 and the CSR must be signed by
    /// it); subject and names come from the arguments: CN = `node_id`, OU = the role's name,
    /// O = the cluster id. EKU serverAuth + clientAuth. DNS SANs: the OU, the node id (when it is
    /// a valid DNS label) and, for managers, `swarm-ca`. Valid from now minus [`CERT_BACKDATE`]
    /// until now plus `validity` (at least [`MIN_NODE_CERT_VALIDITY`]; the usual value is
    /// [`DEFAULT_NODE_CERT_VALIDITY`]). Returns the certificate PEM (the node cert only, not
    /// the chain; the root travels separately).
    pub fn issue(
        &self,
        csr_pem: &str,
        node_id: &str,
        role: Role,
        validity: Duration,
    ) -> Result<String, CaError> {
        let key = self.key.as_ref().ok_or(CaError::CannotSign)?;
        let cluster_id = self.cluster_id.as_deref().ok_or_else(|| {
            CaError::cert(
                "root CA certificate",
                "it has no organization (O), so there is no cluster id to issue under",
            )
        })?;
        check_name("node id", node_id)?;
        if validity < MIN_NODE_CERT_VALIDITY {
            return Err(CaError::InvalidValidity(validity));
        }
        let public_key = csr_public_key(csr_pem)?;

        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, cluster_id);
        dn.push(DnType::OrganizationalUnitName, role.as_str());
        dn.push(DnType::CommonName, node_id);
        params.distinguished_name = dn;
        let mut sans = vec![dns_san(role.as_str())?];
        if is_dns_label(node_id) {
            sans.push(dns_san(node_id)?);
        }
        if role == Role::Manager {
            sans.push(dns_san(CA_SERVER_NAME)?);
        }
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        params.not_before = now - CERT_BACKDATE;
        params.not_after = now + validity;

        let issuer = Issuer::from_ca_cert_der(&self.certs[0], &key.pair).map_err(|source| {
            CaError::Generate {
                what: "issuer from the root CA certificate",
                source,
            }
        })?;
        let cert = params
            .signed_by(&public_key, &issuer)
            .map_err(|source| CaError::Generate {
                what: "node certificate",
                source,
            })?;
        Ok(cert.pem())
    }

    /// Verify that `cert_der` chains to this root, is valid at `now` and is usable for mutual
    /// TLS, then read its identity. Use on certificates that did not come through a rustls
    /// handshake (e.g. one just received from the CA, before saving it).
    pub fn verify(&self, cert_der: &[u8], now: SystemTime) -> Result<NodeIdentity, CaError> {
        let store = Arc::new(self.root_store()?);
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            store,
            crate::tls::provider(),
        )
        .build()
        .map_err(|e| CaError::Tls(e.to_string()))?;
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_err(|_| CaError::UntrustedCertificate("the clock is before 1970".into()))?;
        let der = CertificateDer::from(cert_der.to_vec());
        verifier
            .verify_client_cert(&der, &[], UnixTime::since_unix_epoch(secs))
            .map_err(|e| CaError::UntrustedCertificate(e.to_string()))?;
        identity_from_der(cert_der)
    }

    /// [`verify`](Self::verify) for a PEM certificate (the first one in the text).
    pub fn verify_pem(&self, cert_pem: &str, now: SystemTime) -> Result<NodeIdentity, CaError> {
        let der = crate::x509::first_cert_from_pem(cert_pem, "node certificate")?;
        self.verify(&der, now)
    }
}

/// Parse a CSR, check its self-signature and its key type, and return only its public key.
fn csr_public_key(csr_pem: &str) -> Result<rcgen::PublicKey, CaError> {
    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .map_err(|e| CaError::InvalidCsr(format!("not a PEM CERTIFICATE REQUEST: {e}")))?;
    let (rest, csr) = X509CertificationRequest::from_der(der.as_ref())
        .map_err(|e| CaError::InvalidCsr(format!("not a DER PKCS#10 request: {e}")))?;
    if !rest.is_empty() {
        return Err(CaError::InvalidCsr(
            "trailing data after the request".into(),
        ));
    }
    if !is_p256(&csr.certification_request_info.subject_pki) {
        return Err(CaError::InvalidCsr(
            "the public key is not ECDSA P-256".into(),
        ));
    }
    // rcgen checks the request's signature and gives us its key in the form it signs with.
    // Extensions it does not model make it refuse the CSR; ours carry none.
    let parsed = CertificateSigningRequestParams::from_der(&der)
        .map_err(|e| CaError::InvalidCsr(e.to_string()))?;
    Ok(parsed.public_key)
}

fn dns_san(name: &str) -> Result<SanType, CaError> {
    let ia5 = name.try_into().map_err(|source| CaError::Generate {
        what: "subject alternative name",
        source,
    })?;
    Ok(SanType::DnsName(ia5))
}

/// A lowercase DNS label: what swarm ids (base36) always are.
pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Node and cluster ids go into certificate subjects: printable ASCII without separators that
/// could confuse a reader, at most 64 characters (the X.520 upper bound for CN/O).
fn check_name(what: &'static str, value: &str) -> Result<(), CaError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(CaError::InvalidName {
            what,
            value: value.to_owned(),
            reason: "expected 1 to 64 characters of [A-Za-z0-9._-]",
        })
    }
}

/// 128 random bits, positive (top bit clear), never zero.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01 << 6;
    SerialNumber::from_slice(&bytes)
}
