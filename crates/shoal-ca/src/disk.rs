//! The on-disk layout of a node's credentials, and atomic file replacement.
//!
//! ```text
//!  <dir>/swarm-root-ca.crt   0644  root CA certificate(s), PEM, byte for byte as received
//!  <dir>/swarm-node.crt      0644  this node's certificate, PEM
//!  <dir>/swarm-node.key      0600  this node's secrets, one of two shapes:
//!
//!   autolock off (readable by any PEM tool; the extra blocks only on managers):
//!     -----BEGIN PRIVATE KEY-----            node key, PKCS#8
//!     -----BEGIN SHOAL DATA KEY-----         32-byte Raft data key
//!     -----BEGIN SHOAL PREVIOUS DATA KEY---- only while a data-key rotation is in progress
//!
//!   autolock on:
//!     -----BEGIN SHOAL LOCKED KEYS-----      01 | nonce(12) | ChaCha20-Poly1305(
//!                                               key = unlock key, aad = "shoal swarm-node.key v1",
//!                                               flags | data key | previous | node key PEM)
//! ```
//!
//! swarmkit keeps the Raft data key in PEM headers of the node key; Shoal keeps it in extra
//! PEM blocks of the same file instead. Either way node key and data key live in *one* file, so
//! a rewrap (autolock on/off, unlock-key rotation, data-key rotation) is a single atomic rename
//! and can never leave the two wrapped under different keys.
//!
//! Every write goes to a temporary file in the same directory, is fsynced, renamed over the
//! target, and the directory is fsynced. The certificate and the key change together on
//! renewal; as in swarmkit's `KeyReadWriter`, the new certificate is first written to
//! `.swarm-node.crt`, then the key is replaced, then the certificate is renamed into place; a
//! reader that finds a key not matching `swarm-node.crt` tries `.swarm-node.crt`.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::keystore::{DataKey, UnlockKey};
use crate::x509::{first_cert_from_pem, key_matches_cert, key_pair_from_pem, parse_cert};
use crate::{CaError, NodeCredentials};

/// The root CA certificate file (swarmkit's name).
pub const ROOT_CA_CERT_FILE: &str = "swarm-root-ca.crt";
/// The node certificate file (swarmkit's name).
pub const NODE_CERT_FILE: &str = "swarm-node.crt";
/// The node key file (swarmkit's name), mode 0600.
pub const NODE_KEY_FILE: &str = "swarm-node.key";
/// Where a new certificate waits while its key is being written.
const TEMP_CERT_FILE: &str = ".swarm-node.crt";

const TAG_DATA_KEY: &str = "SHOAL DATA KEY";
const TAG_PREVIOUS_DATA_KEY: &str = "SHOAL PREVIOUS DATA KEY";
const TAG_LOCKED: &str = "SHOAL LOCKED KEYS";
const LOCKED_VERSION: u8 = 1;
const LOCKED_AAD: &[u8] = b"shoal swarm-node.key v1";
const NONCE_LEN: usize = 12;
const FLAG_DATA_KEY: u8 = 1;
const FLAG_PREVIOUS: u8 = 2;

/// Everything secret in the key file.
#[derive(Clone)]
pub(crate) struct Secrets {
    pub(crate) node_key_pem: Zeroizing<String>,
    pub(crate) data_key: Option<DataKey>,
    pub(crate) previous_data_key: Option<DataKey>,
}

impl Secrets {
    pub(crate) fn new(node_key_pem: Zeroizing<String>) -> Secrets {
        Secrets {
            node_key_pem,
            data_key: None,
            previous_data_key: None,
        }
    }
}

/// The key file as read from disk.
pub(crate) enum KeyFile {
    /// Not wrapped.
    Plain(Secrets),
    /// Wrapped by an unlock key: the sealed body.
    Locked { sealed: Vec<u8> },
}

impl KeyFile {
    fn parse(text: &[u8], path: &Path) -> Result<KeyFile, CaError> {
        let corrupt = |reason: String| CaError::CorruptKeyFile {
            path: path.to_owned(),
            reason,
        };
        let blocks = pem::parse_many(text).map_err(|e| corrupt(format!("not PEM: {e}")))?;
        let mut node_key: Option<String> = None;
        let mut data_key = None;
        let mut previous = None;
        let mut locked = None;
        for block in &blocks {
            match block.tag() {
                "PRIVATE KEY" | "EC PRIVATE KEY" => {
                    if node_key.is_some() {
                        return Err(corrupt("more than one private key".into()));
                    }
                    let clean = pem::Pem::new(block.tag(), block.contents());
                    node_key = Some(encode_pems(&[clean]));
                }
                TAG_DATA_KEY => data_key = Some(data_key_from(block.contents()).map_err(&corrupt)?),
                TAG_PREVIOUS_DATA_KEY => {
                    previous = Some(data_key_from(block.contents()).map_err(&corrupt)?)
                }
                TAG_LOCKED => locked = Some(block.contents().to_vec()),
                other => return Err(corrupt(format!("unexpected PEM block {other:?}"))),
            }
        }
        match (locked, node_key) {
            (Some(sealed), None) if data_key.is_none() && previous.is_none() => {
                Ok(KeyFile::Locked { sealed })
            }
            (Some(_), _) => Err(corrupt("both locked and unlocked key material".into())),
            (None, Some(pem)) => Ok(KeyFile::Plain(Secrets {
                node_key_pem: Zeroizing::new(pem),
                data_key,
                previous_data_key: previous,
            })),
            (None, None) => Err(corrupt("no private key".into())),
        }
    }

    /// The unwrapped file text.
    pub(crate) fn encode_plain(secrets: &Secrets) -> Result<Zeroizing<String>, CaError> {
        let node = pem::parse(secrets.node_key_pem.as_bytes())
            .map_err(|e| CaError::pem("node key", e.to_string()))?;
        let mut blocks = vec![pem::Pem::new(node.tag(), node.contents())];
        if let Some(k) = &secrets.data_key {
            blocks.push(pem::Pem::new(TAG_DATA_KEY, k.as_bytes().to_vec()));
        }
        if let Some(k) = &secrets.previous_data_key {
            blocks.push(pem::Pem::new(TAG_PREVIOUS_DATA_KEY, k.as_bytes().to_vec()));
        }
        Ok(Zeroizing::new(encode_pems(&blocks)))
    }

    /// The file text wrapped by `kek`.
    pub(crate) fn encode_locked(
        secrets: &Secrets,
        kek: &UnlockKey,
    ) -> Result<Zeroizing<String>, CaError> {
        let mut plain = Zeroizing::new(Vec::with_capacity(80 + secrets.node_key_pem.len()));
        let mut flags = 0u8;
        if secrets.data_key.is_some() {
            flags |= FLAG_DATA_KEY;
        }
        if secrets.previous_data_key.is_some() {
            flags |= FLAG_PREVIOUS;
        }
        plain.push(flags);
        if let Some(k) = &secrets.data_key {
            plain.extend_from_slice(k.as_bytes());
        }
        if let Some(k) = &secrets.previous_data_key {
            plain.extend_from_slice(k.as_bytes());
        }
        plain.extend_from_slice(secrets.node_key_pem.as_bytes());

        let cipher = ChaCha20Poly1305::new(kek.as_bytes().into());
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: LOCKED_AAD,
                },
            )
            .map_err(|_| CaError::Seal("the node key file"))?;
        let mut body = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        body.push(LOCKED_VERSION);
        body.extend_from_slice(&nonce);
        body.extend_from_slice(&ct);
        Ok(Zeroizing::new(encode_pems(&[pem::Pem::new(
            TAG_LOCKED, body,
        )])))
    }

    /// Open a locked body. A wrong key (or a damaged body, which cannot be told apart) is
    /// [`CaError::InvalidUnlockKey`]; a body of an unknown format is `CorruptKeyFile`.
    pub(crate) fn unseal(sealed: &[u8], kek: &UnlockKey, path: &Path) -> Result<Secrets, CaError> {
        let corrupt = |reason: &str| CaError::CorruptKeyFile {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let Some((&version, rest)) = sealed.split_first() else {
            return Err(corrupt("empty locked block"));
        };
        if version != LOCKED_VERSION {
            return Err(corrupt("unknown locked-key format version"));
        }
        if rest.len() < NONCE_LEN {
            return Err(corrupt("locked block too short"));
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        let cipher = ChaCha20Poly1305::new(kek.as_bytes().into());
        let plain = Zeroizing::new(
            cipher
                .decrypt(
                    Nonce::from_slice(nonce),
                    Payload {
                        msg: ct,
                        aad: LOCKED_AAD,
                    },
                )
                .map_err(|_| CaError::InvalidUnlockKey)?,
        );
        let Some((&flags, mut rest)) = plain.split_first() else {
            return Err(corrupt("empty locked payload"));
        };
        let mut take_key = |present: bool| -> Result<Option<DataKey>, CaError> {
            if !present {
                return Ok(None);
            }
            if rest.len() < 32 {
                return Err(corrupt("locked payload too short"));
            }
            let (k, r) = rest.split_at(32);
            rest = r;
            data_key_from(k).map(Some).map_err(|e| corrupt(&e))
        };
        let data_key = take_key(flags & FLAG_DATA_KEY != 0)?;
        let previous_data_key = take_key(flags & FLAG_PREVIOUS != 0)?;
        let node_key_pem = String::from_utf8(rest.to_vec())
            .map_err(|_| corrupt("the wrapped node key is not PEM text"))?;
        Ok(Secrets {
            node_key_pem: Zeroizing::new(node_key_pem),
            data_key,
            previous_data_key,
        })
    }
}

fn data_key_from(bytes: &[u8]) -> Result<DataKey, String> {
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| format!("a data key must be 32 bytes, found {}", bytes.len()))?;
    Ok(DataKey::from_bytes(arr))
}

fn encode_pems(blocks: &[pem::Pem]) -> String {
    pem::encode_many_config(
        blocks,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Read and parse `<dir>/swarm-node.key`; `None` if it does not exist.
pub(crate) fn read_key_file(dir: &Path) -> Result<Option<KeyFile>, CaError> {
    let path = dir.join(NODE_KEY_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            KeyFile::parse(&bytes, &path).map(Some)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CaError::io("read", path, e)),
    }
}

/// Replace only the key file.
pub(crate) fn write_key_file(dir: &Path, text: &str) -> Result<(), CaError> {
    fs::create_dir_all(dir).map_err(|e| CaError::io("create directory", dir, e))?;
    atomic_write(&dir.join(NODE_KEY_FILE), text.as_bytes(), 0o600)?;
    sync_dir(dir)
}

/// Write root, certificate and key file (already encoded) for `creds`, in crash-safe order.
pub(crate) fn write_node_files(
    dir: &Path,
    creds: &NodeCredentials,
    key_text: &str,
) -> Result<(), CaError> {
    fs::create_dir_all(dir).map_err(|e| CaError::io("create directory", dir, e))?;
    atomic_write(
        &dir.join(ROOT_CA_CERT_FILE),
        creds.root_pem.as_bytes(),
        0o644,
    )?;
    let temp_cert = dir.join(TEMP_CERT_FILE);
    atomic_write(&temp_cert, creds.cert_pem.as_bytes(), 0o644)?;
    atomic_write(&dir.join(NODE_KEY_FILE), key_text.as_bytes(), 0o600)?;
    let cert = dir.join(NODE_CERT_FILE);
    fs::rename(&temp_cert, &cert).map_err(|e| CaError::io("rename", &temp_cert, e))?;
    sync_dir(dir)
}

/// Read root and certificate from `dir`, pair them with `key_pem`, validate at the current time.
pub(crate) fn read_node_files(
    dir: &Path,
    key_pem: Zeroizing<String>,
) -> Result<NodeCredentials, CaError> {
    let root_pem = read_text(&dir.join(ROOT_CA_CERT_FILE))?;
    let cert_path = dir.join(NODE_CERT_FILE);
    let temp_path = dir.join(TEMP_CERT_FILE);
    let key = key_pair_from_pem(&key_pem, "node key")?;
    let matches = |cert_pem: &str| -> bool {
        first_cert_from_pem(cert_pem, "node certificate")
            .ok()
            .and_then(|der| {
                parse_cert(&der, "node certificate")
                    .ok()
                    .map(|c| key_matches_cert(&key, &c))
            })
            .unwrap_or(false)
    };
    let cert_pem = match read_text(&cert_path) {
        Ok(text) if matches(&text) => text,
        first => {
            // Interrupted renewal: the new certificate may still be in the temporary file.
            match read_text(&temp_path) {
                Ok(text) if matches(&text) => {
                    fs::rename(&temp_path, &cert_path)
                        .map_err(|e| CaError::io("rename", &temp_path, e))?;
                    sync_dir(dir)?;
                    text
                }
                _ => match first {
                    Ok(_) => {
                        return Err(CaError::key(
                            cert_path.display().to_string(),
                            "the node key does not match this certificate",
                        ))
                    }
                    Err(e) => return Err(e),
                },
            }
        }
    };
    let creds = NodeCredentials {
        cert_pem,
        key_pem,
        root_pem,
    };
    creds.validate(SystemTime::now())?;
    Ok(creds)
}

fn read_text(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(|e| CaError::io("read", path, e))
}

/// Write `bytes` to `path` through a temporary file in the same directory and a rename.
pub(crate) fn atomic_write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(
        ".{name}.tmp.{}.{:08x}",
        std::process::id(),
        rand::rng().next_u32()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| CaError::io("create", &tmp, e))?;
        f.write_all(bytes)
            .map_err(|e| CaError::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| CaError::io("sync", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| CaError::io("rename", &tmp, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn sync_dir(dir: &Path) -> Result<(), CaError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| CaError::io("sync directory", dir, e))
}
