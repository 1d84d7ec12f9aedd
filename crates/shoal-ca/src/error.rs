//! [`CaError`]: every way the security primitives can fail.
//!
//! Messages say what was wrong and where (which file, which certificate, which part of a token).
//! Where Docker or swarmkit has a user-visible wording, it is kept word for word because clients
//! and scripts match on it:
//!
//! | variant                 | text                                                                  |
//! | ----------------------- | --------------------------------------------------------------------- |
//! | [`CaError::InvalidJoinToken`] | `invalid join token: <why>` (swarmkit: `invalid join token`)    |
//! | [`CaError::CaDigestMismatch`] | `remote CA does not match fingerprint. Expected: <hex>`         |
//! | [`CaError::InvalidKeyString`] | `invalid key string` (swarmkit `ParseHumanReadableKey`)         |
//! | [`CaError::InvalidUnlockKey`] | `swarm could not be unlocked: invalid key provided` (moby)      |
//! | [`CaError::NotLocked`]        | `swarm is not locked` (moby)                                    |
//! | [`CaError::SwarmLocked`]      | `Swarm is encrypted and needs to be unlocked before it can be used. Please use "docker swarm unlock" to unlock it.` (moby) |

use std::io;
use std::path::PathBuf;

/// A failure of the CA, token, TLS or key-store code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// A join token could not be parsed. The prefix is swarmkit's text.
    #[error("invalid join token: {0}")]
    InvalidJoinToken(String),

    /// The root CA a manager sent does not hash to the digest in the join token (swarmkit's text,
    /// the expected digest in hex as swarmkit prints it).
    #[error("remote CA does not match fingerprint. Expected: {expected}")]
    CaDigestMismatch {
        /// The SHA-256 the token pins, lowercase hex (64 chars).
        expected: String,
    },

    /// An unlock key string is not `SWMKEY-1-<base64 of 32 bytes>` (swarmkit's text).
    #[error("invalid key string")]
    InvalidKeyString,

    /// The unlock key does not open the key store (moby's text for `docker swarm unlock`).
    #[error("swarm could not be unlocked: invalid key provided")]
    InvalidUnlockKey,

    /// `unlock` was called on a key store that is not locked (moby's text).
    #[error("swarm is not locked")]
    NotLocked,

    /// The key material is wrapped by an unlock key and has not been unlocked yet (moby's text).
    #[error(
        "Swarm is encrypted and needs to be unlocked before it can be used. Please use \"docker swarm unlock\" to unlock it."
    )]
    SwarmLocked,

    /// An unlock key was asked to be rotated while autolock is off.
    #[error("autolock is not enabled: there is no unlock key to rotate (enable it with `swarm update --autolock=true`)")]
    AutolockDisabled,

    /// PEM text could not be decoded.
    #[error("invalid PEM in {what}: {reason}")]
    InvalidPem {
        /// What was being read (e.g. "root CA certificate", "/var/lib/shoal/swarm-node.key").
        what: String,
        /// Why it failed.
        reason: String,
    },

    /// A certificate is malformed or does not carry what a swarm certificate must carry.
    #[error("invalid {what}: {reason}")]
    InvalidCertificate {
        /// Which certificate.
        what: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A certificate did not verify against the swarm's root CA.
    #[error("certificate is not trusted by this swarm's root CA: {0}")]
    UntrustedCertificate(String),

    /// A certificate signing request is malformed, badly signed or uses an unsupported key.
    #[error("invalid certificate signing request: {0}")]
    InvalidCsr(String),

    /// A private key is malformed, of an unsupported type, or does not match its certificate.
    #[error("invalid private key ({what}): {reason}")]
    InvalidKey {
        /// Which key.
        what: String,
        /// What is wrong with it.
        reason: String,
    },

    /// This root CA holds only the certificate (workers, or managers without the root key).
    #[error("this root CA has no private key, so it cannot issue certificates (only a manager holding the root key can)")]
    CannotSign,

    /// A node or cluster id that cannot go into a certificate.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        /// "node id" or "cluster id".
        what: &'static str,
        /// The value given.
        value: String,
        /// What a valid one looks like.
        reason: &'static str,
    },

    /// A certificate validity that is too short.
    #[error("invalid certificate validity {0:?}: node certificates must be valid for at least 1h")]
    InvalidValidity(std::time::Duration),

    /// rcgen failed to generate a key, a CSR or a certificate.
    #[error("could not generate {what}: {source}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },

    /// Building a rustls configuration failed.
    #[error("could not build the TLS configuration: {0}")]
    Tls(String),

    /// Encrypting key material failed (should not happen with a working OS RNG).
    #[error("could not encrypt {0}")]
    Seal(&'static str),

    /// A file could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// "read", "write", "rename", ...
        op: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A key file exists but is not in a format this version understands, or is damaged.
    #[error("corrupt key file {path}: {reason}")]
    CorruptKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The key file has no data key (this node was never set up as a manager).
    #[error("no data key in {path}: this node has no manager key store yet (create one with KeyStore::create)")]
    MissingDataKey {
        /// The key file.
        path: PathBuf,
    },

    /// `KeyStore::create` found a data key already: creating would lose it.
    #[error("{path} already holds a data key; open the key store instead of creating it")]
    DataKeyExists {
        /// The key file.
        path: PathBuf,
    },

    /// A data-key rotation is already in progress (the previous key is still needed).
    #[error("a data key rotation is still in progress: finish it (re-encrypt the Raft data, then call finish_data_key_rotation) before rotating again")]
    RotationInProgress,
}

impl CaError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        CaError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn cert(what: impl Into<String>, reason: impl Into<String>) -> Self {
        CaError::InvalidCertificate {
            what: what.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn pem(what: impl Into<String>, reason: impl Into<String>) -> Self {
        CaError::InvalidPem {
            what: what.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn key(what: impl Into<String>, reason: impl Into<String>) -> Self {
        CaError::InvalidKey {
            what: what.into(),
            reason: reason.into(),
        }
    }
}
