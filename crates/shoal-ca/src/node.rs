//! A node's own credentials (key, certificate, root) and the identity read out of certificates.
//!
//! ```text
//!  NodeCredentials::generate_csr() ──► NodeKeyRequest { csr_pem, key_pem }
//!        csr_pem ──► manager: RootCa::issue ──► cert_pem
//!  request.into_credentials(cert_pem, root_pem) ──► NodeCredentials  (checked: key ↔ cert,
//!                                                   cert ↔ root)
//!  creds.save(dir) / NodeCredentials::load(dir)      swarm-root-ca.crt  0644
//!                                                    swarm-node.crt     0644
//!                                                    swarm-node.key     0600
//!  creds.identity() / peer_identity(der) ──► NodeIdentity { node_id, role, cluster_id, .. }
//!  identity.needs_renewal(now): past a point fixed per certificate in [50%, 80%] of its life
//! ```
//!
//! Renewal point: swarmkit picks a random instant between 50% and 80% of the certificate's
//! lifetime so a cluster's certificates do not all renew at once. Here the "random" fraction is
//! derived from the SHA-256 of the certificate's serial number, which is itself random, so it
//! spreads the same way but every process that looks at the same certificate agrees on it.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DistinguishedName, KeyPair};
use zeroize::Zeroizing;

use crate::disk;
use crate::token::sha256;
use crate::x509::{first_cert_from_pem, key_matches_cert, key_pair_from_pem, parse_cert};
use crate::{CaError, Role, RootCa};

/// Who a certificate says a node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The node id (the certificate's CN).
    pub node_id: String,
    /// The node's role (the certificate's OU).
    pub role: Role,
    /// The cluster id (the certificate's O).
    pub cluster_id: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// The certificate's serial number, big-endian bytes.
    pub serial: Vec<u8>,
}

/// Lower bound of the renewal point, in millionths of the lifetime (swarmkit's 0.5).
const RENEW_LOWER_PPM: u64 = 500_000;
/// Upper bound of the renewal point, in millionths of the lifetime (swarmkit's 0.8).
const RENEW_UPPER_PPM: u64 = 800_000;

impl NodeIdentity {
    /// When this certificate should be renewed: `not_before` plus a fraction of the lifetime in
    /// [50%, 80%], fixed per certificate (derived from its serial number).
    pub fn renewal_time(&self) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        let h = sha256(&self.serial);
        let mut first = [0u8; 8];
        first.copy_from_slice(&h[..8]);
        let ppm =
            RENEW_LOWER_PPM + u64::from_be_bytes(first) % (RENEW_UPPER_PPM - RENEW_LOWER_PPM + 1);
        let offset_ms = lifetime.as_millis() * u128::from(ppm) / 1_000_000;
        let offset = Duration::from_millis(u64::try_from(offset_ms).unwrap_or(u64::MAX));
        self.not_before + offset
    }

    /// Whether the certificate is due for renewal at `now` (at or past
    /// [`renewal_time`](Self::renewal_time); always true once expired).
    pub fn needs_renewal(&self, now: SystemTime) -> bool {
        now >= self.renewal_time() || now >= self.not_after
    }

    /// Whether `now` is outside the validity window.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.not_after || now < self.not_before
    }
}

/// Read the identity out of a DER certificate, without checking who signed it.
///
/// Call it only on a certificate that has been verified: the one rustls hands over after a
/// handshake with [`server_config`](crate::server_config) (it verified the chain against the
/// root), or after [`RootCa::verify`]. Fails if CN, OU (exactly one of `swarm-manager`,
/// `swarm-worker`) or O is missing.
pub fn peer_identity(der: &[u8]) -> Result<NodeIdentity, CaError> {
    identity_from_der(der)
}

pub(crate) fn identity_from_der(der: &[u8]) -> Result<NodeIdentity, CaError> {
    const WHAT: &str = "node certificate";
    let cert = parse_cert(der, WHAT)?;
    let subject = cert.subject();
    let one = |values: Vec<&str>, field: &str| -> Result<String, CaError> {
        match values.as_slice() {
            [v] if !v.is_empty() => Ok((*v).to_owned()),
            [] => Err(CaError::cert(WHAT, format!("no {field} in the subject"))),
            _ => Err(CaError::cert(
                WHAT,
                format!("expected exactly one {field} in the subject"),
            )),
        }
    };
    fn text<'a>(
        attr: &'a x509_parser::x509::AttributeTypeAndValue<'_>,
        field: &str,
    ) -> Result<&'a str, CaError> {
        attr.as_str()
            .map_err(|_| CaError::cert(WHAT, format!("the {field} is not a string")))
    }
    let cns = subject
        .iter_common_name()
        .map(|a| text(a, "CN"))
        .collect::<Result<Vec<_>, _>>()?;
    let node_id = one(cns, "CN (node id)")?;
    let os = subject
        .iter_organization()
        .map(|a| text(a, "O"))
        .collect::<Result<Vec<_>, _>>()?;
    let cluster_id = one(os, "O (cluster id)")?;
    let ous = subject
        .iter_organizational_unit()
        .map(|a| text(a, "OU"))
        .collect::<Result<Vec<_>, _>>()?;
    let ou = one(ous, "OU (role)")?;
    let role = Role::from_ou(&ou).ok_or_else(|| {
        CaError::cert(
            WHAT,
            format!("unknown role OU {ou:?} (expected swarm-manager or swarm-worker)"),
        )
    })?;
    let validity = cert.validity();
    Ok(NodeIdentity {
        node_id,
        role,
        cluster_id,
        not_before: to_system_time(validity.not_before.timestamp()),
        not_after: to_system_time(validity.not_after.timestamp()),
        serial: cert.raw_serial().to_vec(),
    })
}

fn to_system_time(unix: i64) -> SystemTime {
    if unix >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(unix.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs())
    }
}

/// A fresh node key and the CSR to send to the CA for it.
pub struct NodeKeyRequest {
    /// The PKCS#10 request, PEM (`CERTIFICATE REQUEST`). Carries only the public key: the CA
    /// chooses the subject.
    pub csr_pem: String,
    /// The new private key, PKCS#8 PEM. Stays on this node.
    pub key_pem: Zeroizing<String>,
}

impl fmt::Debug for NodeKeyRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKeyRequest")
            .field("csr_pem", &self.csr_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl NodeKeyRequest {
    /// Combine with the certificate the CA returned and the root, checking that the certificate
    /// is for this key and chains to the root now.
    pub fn into_credentials(
        self,
        cert_pem: String,
        root_pem: String,
    ) -> Result<NodeCredentials, CaError> {
        let creds = NodeCredentials {
            cert_pem,
            key_pem: self.key_pem,
            root_pem,
        };
        creds.validate(SystemTime::now())?;
        Ok(creds)
    }
}

/// A node's TLS credentials: its certificate, its private key and the swarm's root CA, all PEM.
#[derive(Clone)]
pub struct NodeCredentials {
    /// The node certificate (first block) issued by the root.
    pub cert_pem: String,
    /// The node's private key, PKCS#8 PEM.
    pub key_pem: Zeroizing<String>,
    /// The root CA certificate(s), PEM, as received (the join token digest covers these bytes).
    pub root_pem: String,
}

impl fmt::Debug for NodeCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.identity().ok();
        f.debug_struct("NodeCredentials")
            .field("identity", &id)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl NodeCredentials {
    /// A new ECDSA P-256 key and a CSR for it.
    pub fn generate_csr() -> Result<NodeKeyRequest, CaError> {
        let pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| {
            CaError::Generate {
                what: "node key",
                source,
            }
        })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let csr = params
            .serialize_request(&pair)
            .map_err(|source| CaError::Generate {
                what: "certificate signing request",
                source,
            })?;
        let csr_pem = csr.pem().map_err(|source| CaError::Generate {
            what: "certificate signing request PEM",
            source,
        })?;
        Ok(NodeKeyRequest {
            csr_pem,
            key_pem: Zeroizing::new(pair.serialize_pem()),
        })
    }

    /// Issue a complete set locally (a manager holding the root key issuing its own
    /// certificate, as `swarm init` does).
    pub fn issue_local(
        root: &RootCa,
        node_id: &str,
        role: Role,
        validity: Duration,
    ) -> Result<NodeCredentials, CaError> {
        let req = Self::generate_csr()?;
        let cert_pem = root.issue(&req.csr_pem, node_id, role, validity)?;
        req.into_credentials(cert_pem, root.cert_pem().to_owned())
    }

    /// Who this node's certificate says it is.
    pub fn identity(&self) -> Result<NodeIdentity, CaError> {
        let der = first_cert_from_pem(&self.cert_pem, "node certificate")?;
        identity_from_der(&der)
    }

    /// Whether the certificate should be renewed at `now` (see [`NodeIdentity::needs_renewal`]).
    /// A certificate that cannot be read needs renewal.
    pub fn needs_renewal(&self, now: SystemTime) -> bool {
        self.identity()
            .map(|id| id.needs_renewal(now))
            .unwrap_or(true)
    }

    /// The root CA, without its key.
    pub fn root(&self) -> Result<RootCa, CaError> {
        RootCa::from_pem(&self.root_pem, None)
    }

    /// Check that the key is P-256 and matches the certificate, and that the certificate
    /// chains to the root and is valid at `now`. Returns the identity.
    pub fn validate(&self, now: SystemTime) -> Result<NodeIdentity, CaError> {
        let key = key_pair_from_pem(&self.key_pem, "node key")?;
        let der = first_cert_from_pem(&self.cert_pem, "node certificate")?;
        let cert = parse_cert(&der, "node certificate")?;
        if !key_matches_cert(&key, &cert) {
            return Err(CaError::key(
                "node key",
                "does not match the node certificate",
            ));
        }
        self.root()?.verify(&der, now)
    }

    /// Write the credentials under `dir` in swarmkit's layout (`swarm-root-ca.crt`,
    /// `swarm-node.crt`, `swarm-node.key` mode 0600), each file replaced atomically.
    ///
    /// A data key already in `swarm-node.key` (a manager's, see [`KeyStore`](crate::KeyStore))
    /// is kept. If the key file is locked by autolock this fails with
    /// [`CaError::SwarmLocked`]: save through [`KeyStore::save_credentials`](crate::KeyStore::save_credentials).
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<(), CaError> {
        let dir = dir.as_ref();
        let keys = match disk::read_key_file(dir)? {
            None => disk::Secrets::new(self.key_pem.clone()),
            Some(disk::KeyFile::Locked { .. }) => return Err(CaError::SwarmLocked),
            Some(disk::KeyFile::Plain(mut secrets)) => {
                secrets.node_key_pem = self.key_pem.clone();
                secrets
            }
        };
        disk::write_node_files(dir, self, &disk::KeyFile::encode_plain(&keys)?)
    }

    /// Read credentials saved by [`save`](Self::save) and [`validate`](Self::validate) them at
    /// the current time. A key file wrapped by autolock gives [`CaError::SwarmLocked`].
    pub fn load(dir: impl AsRef<Path>) -> Result<NodeCredentials, CaError> {
        let dir = dir.as_ref();
        let secrets = match disk::read_key_file(dir)? {
            None => {
                return Err(CaError::io(
                    "read",
                    dir.join(disk::NODE_KEY_FILE),
                    std::io::Error::from(std::io::ErrorKind::NotFound),
                ))
            }
            Some(disk::KeyFile::Locked { .. }) => return Err(CaError::SwarmLocked),
            Some(disk::KeyFile::Plain(secrets)) => secrets,
        };
        disk::read_node_files(dir, secrets.node_key_pem)
    }
}
