//! Shoal's security primitives: the swarm's root CA, node certificates, join tokens, the rustls
//! configurations of node-to-node traffic, and the key store behind encryption at rest and
//! autolock. Behaviour follows swarmkit's `ca/` and `manager/encryption/` packages.
//!
//! # The join handshake
//!
//! ```text
//!  joining node                                             manager (holds RootCa + key)
//!  ────────────                                             ───────────────────────────
//!  JoinToken::parse("SWMTKN-1-<digest>-<secret>")
//!        │ 1. TLS with dangerous_unverified_bootstrap_client_config()
//!        ├──────────── GetRootCACertificate ──────────────►  server_config(creds)
//!        │◄─────────── root_pem ─────────────────────────────  (client is Peer::Anonymous)
//!  verify_ca_digest(&token, &root_pem)?   ← refuses a root whose SHA-256 is not the token's
//!        │              "remote CA does not match fingerprint. Expected: <hex>"
//!  NodeCredentials::generate_csr() → { csr_pem, key_pem }
//!        │ 2. TLS with pinned_client_config(&root_pem), server name "swarm-ca"
//!        ├──────────── IssueNodeCertificate(csr, token) ──►  role_for(token, worker, manager)
//!        │                                                     None → refuse (constant time)
//!        │                                                   RootCa::issue(csr, node_id, role,
//!        │◄─────────── cert_pem ─────────────────────────────      DEFAULT_NODE_CERT_VALIDITY)
//!  request.into_credentials(cert_pem, root_pem)?  ← key ↔ cert, cert ↔ root
//!  creds.save(dir)          (managers: KeyStore::create(dir, &creds, autolock))
//!        │ 3. from now on: client_config(&creds), server name "swarm-manager" or a node id
//!        ├──────────── raft / dispatcher / renewals ─────►  identify_peer(chain) →
//!                                                              Peer::Node(NodeIdentity{ role.. })
//! ```
//!
//! Renewal: when `creds.needs_renewal(now)` (a point fixed per certificate between 50% and
//! 80% of its life), generate a new CSR and call the CA over mutual TLS, no token needed.
//!
//! # Modules
//! - [`root`]: [`RootCa`] — generate, load, digest, issue, verify.
//! - [`node`]: [`NodeCredentials`], [`NodeIdentity`], [`peer_identity`], save/load.
//! - [`token`]: [`JoinToken`], [`role_for`], [`verify_ca_digest`].
//! - [`tls`]: [`server_config`], [`client_config`], [`pinned_client_config`],
//!   [`dangerous_unverified_bootstrap_client_config`], [`identify_peer`].
//! - [`keystore`]: [`KeyStore`], [`DataKey`], [`UnlockKey`], [`LockState`].
//! - [`disk`]: the files under the certificates directory.
//!
//! Crypto: ECDSA P-256 everywhere (rcgen and rustls on the `ring` provider only), SHA-256,
//! ChaCha20-Poly1305 for key wrapping. Nothing read from a peer, a token or disk is unwrapped
//! with a panic; every failure is a [`CaError`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod disk;
pub mod error;
pub mod keystore;
pub mod node;
pub mod root;
pub mod tls;
pub mod token;
mod x509;

use std::fmt;
use std::str::FromStr;

pub use disk::{NODE_CERT_FILE, NODE_KEY_FILE, ROOT_CA_CERT_FILE};
pub use error::CaError;
pub use keystore::{DataKey, KeyStore, LockState, UnlockKey, UNLOCK_KEY_PREFIX};
pub use node::{peer_identity, NodeCredentials, NodeIdentity, NodeKeyRequest};
pub use root::{
    RootCa, CERT_BACKDATE, DEFAULT_NODE_CERT_VALIDITY, MIN_NODE_CERT_VALIDITY, ROOT_CA_VALIDITY,
};
pub use tls::{
    client_config, dangerous_unverified_bootstrap_client_config, identify_peer,
    pinned_client_config, server_config, server_name, Peer, ALPN_H2, CA_SERVER_NAME,
    MANAGER_SERVER_NAME,
};
pub use token::{role_for, verify_ca_digest, JoinToken, JOIN_TOKEN_PREFIX};

/// The root CA's common name (swarmkit's `rootCN`).
pub const ROOT_CN: &str = "swarm-ca";
/// OU of manager certificates (swarmkit's `ManagerRole`).
pub const MANAGER_OU: &str = "swarm-manager";
/// OU of worker certificates (swarmkit's `WorkerRole`).
pub const WORKER_OU: &str = "swarm-worker";

/// A node's role, as its certificate's OU states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Runs tasks.
    Worker,
    /// Runs tasks and the control plane (Raft member, CA, dispatcher).
    Manager,
}

impl Role {
    /// The certificate OU: `swarm-manager` or `swarm-worker`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => WORKER_OU,
            Role::Manager => MANAGER_OU,
        }
    }

    /// The role named by a certificate OU.
    pub fn from_ou(ou: &str) -> Option<Role> {
        match ou {
            MANAGER_OU => Some(Role::Manager),
            WORKER_OU => Some(Role::Worker),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = CaError;
    /// Accepts the OU (`swarm-manager`) or the API word (`manager`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "manager" | MANAGER_OU => Ok(Role::Manager),
            "worker" | WORKER_OU => Ok(Role::Worker),
            _ => Err(CaError::cert(
                "role",
                format!("unknown role {s:?} (expected manager or worker)"),
            )),
        }
    }
}
