//! Encryption at rest and autolock: the manager's data key, the unlock key that may wrap it.
//!
//! ```text
//!                      ┌──────────── swarm-node.key (one file, one atomic rename) ─────────┐
//!  autolock off:       │ node key (PKCS#8) + data key, in clear (mode 0600)                 │
//!  autolock on:        │ ChaCha20-Poly1305(unlock key; node key + data key)                 │
//!                      └────────────────────────────────────────────────────────────────────┘
//!  data key (32 random bytes) ──► shoal-raft AeadCodec: seals every Raft log entry/snapshot
//!  unlock key SWMKEY-1-<base64> ──► shown once to the operator; needed after every restart
//!
//!  KeyStore::create(dir, creds, autolock) ─► (store, data key)        swarm init / promotion
//!  KeyStore::open(dir) ─► (store, Unlocked(data key))                 autolock off
//!                      └► (store, Locked) ── unlock(&key) ─► data key autolock on
//!                                              wrong key ─► "swarm could not be unlocked:
//!                                                           invalid key provided", file untouched
//!  set_autolock(Some(k) | None)   rewrap under k / unwrap
//!  rotate_unlock_key()            new unlock key, rewrap          (swarm unlock-key --rotate)
//!  rotate_data_key()              new data key; old kept as "previous" until
//!  finish_data_key_rotation()     the Raft data has been re-encrypted with the new one
//! ```
//!
//! Every change is written before the in-memory state changes, and nothing is written on a
//! failed unlock: a wrong key never loses anything. The unlock key is used directly as the
//! ChaCha20-Poly1305 key (it is 32 uniformly random bytes), as swarmkit uses it directly as its
//! secretbox key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine as _};
use rand::RngCore;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::disk::{self, KeyFile, Secrets};
use crate::{CaError, NodeCredentials};

/// Prefix of a human-readable unlock key (swarmkit's `humanReadablePrefix`).
pub const UNLOCK_KEY_PREFIX: &str = "SWMKEY-1-";

/// Standard base64 alphabet; written without padding (Go's `RawStdEncoding`), read with or
/// without.
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The key that wraps a manager's key material under autolock: 32 random bytes, shown to the
/// operator as `SWMKEY-1-<base64>`. `Display` prints the secret; `Debug` does not.
#[derive(Clone)]
pub struct UnlockKey(Zeroizing<[u8; 32]>);

impl UnlockKey {
    /// A new random unlock key.
    pub fn generate() -> UnlockKey {
        let mut k = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(k.as_mut());
        UnlockKey(k)
    }

    /// Parse `SWMKEY-1-<base64>` (surrounding whitespace ignored). Anything else, including a
    /// key that does not decode to 32 bytes, is `invalid key string`.
    pub fn parse(s: &str) -> Result<UnlockKey, CaError> {
        let body = s
            .trim()
            .strip_prefix(UNLOCK_KEY_PREFIX)
            .ok_or(CaError::InvalidKeyString)?;
        let bytes = Zeroizing::new(B64.decode(body).map_err(|_| CaError::InvalidKeyString)?);
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| CaError::InvalidKeyString)?;
        Ok(UnlockKey(Zeroizing::new(arr)))
    }

    /// The raw key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for UnlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{UNLOCK_KEY_PREFIX}{}", B64.encode(self.0.as_ref()))
    }
}

impl fmt::Debug for UnlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UnlockKey(<redacted>)")
    }
}

impl FromStr for UnlockKey {
    type Err = CaError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UnlockKey::parse(s)
    }
}

impl PartialEq for UnlockKey {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.0.ct_eq(other.0.as_ref()))
    }
}
impl Eq for UnlockKey {}

/// The 32-byte key that encrypts this manager's Raft log and snapshots (hand
/// [`as_bytes`](Self::as_bytes) to `shoal_raft::AeadCodec::new`). `Debug` does not print it.
#[derive(Clone)]
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    /// A new random data key.
    pub fn generate() -> DataKey {
        let mut k = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(k.as_mut());
        DataKey(k)
    }

    /// Wrap existing key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> DataKey {
        DataKey(Zeroizing::new(bytes))
    }

    /// The raw key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

impl PartialEq for DataKey {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.0.ct_eq(other.0.as_ref()))
    }
}
impl Eq for DataKey {}

/// What [`KeyStore::open`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockState {
    /// Not wrapped (autolock off): here is the data key.
    Unlocked(DataKey),
    /// Wrapped by an unlock key: call [`KeyStore::unlock`]. The node reports `locked`.
    Locked,
}

/// A manager's key material under one directory (the same directory as its credentials).
pub struct KeyStore {
    dir: PathBuf,
    state: State,
}

enum State {
    Locked,
    Unlocked {
        secrets: Secrets,
        /// `Some` when autolock is on.
        unlock_key: Option<UnlockKey>,
    },
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStore")
            .field("dir", &self.dir)
            .field("locked", &self.is_locked())
            .field("autolock", &self.is_autolocked())
            .finish()
    }
}

impl KeyStore {
    /// Set up a manager's key store: write `creds` (as [`NodeCredentials::save`] does) with a
    /// new data key, wrapped by `autolock` if given. Fails with [`CaError::DataKeyExists`] if
    /// the directory already holds a data key (open it instead), and with
    /// [`CaError::SwarmLocked`] if it holds a locked key file.
    pub fn create(
        dir: impl AsRef<Path>,
        creds: &NodeCredentials,
        autolock: Option<&UnlockKey>,
    ) -> Result<(KeyStore, DataKey), CaError> {
        let dir = dir.as_ref().to_owned();
        let key_path = dir.join(disk::NODE_KEY_FILE);
        match disk::read_key_file(&dir)? {
            Some(KeyFile::Locked { .. }) => return Err(CaError::SwarmLocked),
            Some(KeyFile::Plain(s)) if s.data_key.is_some() => {
                return Err(CaError::DataKeyExists { path: key_path })
            }
            _ => {}
        }
        let data_key = DataKey::generate();
        let secrets = Secrets {
            node_key_pem: creds.key_pem.clone(),
            data_key: Some(data_key.clone()),
            previous_data_key: None,
        };
        let text = encode(&secrets, autolock)?;
        disk::write_node_files(&dir, creds, &text)?;
        let store = KeyStore {
            dir,
            state: State::Unlocked {
                secrets,
                unlock_key: autolock.cloned(),
            },
        };
        Ok((store, data_key))
    }

    /// Open the key store in `dir`. Without autolock the data key is available at once; with
    /// autolock the store is [`LockState::Locked`] until [`unlock`](Self::unlock).
    pub fn open(dir: impl AsRef<Path>) -> Result<(KeyStore, LockState), CaError> {
        let dir = dir.as_ref().to_owned();
        let key_path = dir.join(disk::NODE_KEY_FILE);
        match disk::read_key_file(&dir)? {
            None => Err(CaError::io(
                "read",
                key_path,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )),
            Some(KeyFile::Locked { .. }) => Ok((
                KeyStore {
                    dir,
                    state: State::Locked,
                },
                LockState::Locked,
            )),
            Some(KeyFile::Plain(secrets)) => {
                let data_key = secrets
                    .data_key
                    .clone()
                    .ok_or(CaError::MissingDataKey { path: key_path })?;
                Ok((
                    KeyStore {
                        dir,
                        state: State::Unlocked {
                            secrets,
                            unlock_key: None,
                        },
                    },
                    LockState::Unlocked(data_key),
                ))
            }
        }
    }

    /// Unlock with the operator's unlock key. A wrong key gives
    /// [`CaError::InvalidUnlockKey`] and changes nothing; unlocking a store that is not locked
    /// gives [`CaError::NotLocked`].
    pub fn unlock(&mut self, key: &UnlockKey) -> Result<DataKey, CaError> {
        if !self.is_locked() {
            return Err(CaError::NotLocked);
        }
        let key_path = self.key_path();
        let secrets = match disk::read_key_file(&self.dir)? {
            Some(KeyFile::Locked { sealed }) => KeyFile::unseal(&sealed, key, &key_path)?,
            // Someone rewrote the file unlocked in between: nothing to unlock.
            Some(KeyFile::Plain(_)) => return Err(CaError::NotLocked),
            None => {
                return Err(CaError::io(
                    "read",
                    key_path,
                    std::io::Error::from(std::io::ErrorKind::NotFound),
                ))
            }
        };
        let data_key = secrets
            .data_key
            .clone()
            .ok_or(CaError::MissingDataKey { path: key_path })?;
        self.state = State::Unlocked {
            secrets,
            unlock_key: Some(key.clone()),
        };
        Ok(data_key)
    }

    /// Whether the key material is still wrapped (before [`unlock`](Self::unlock)).
    pub fn is_locked(&self) -> bool {
        matches!(self.state, State::Locked)
    }

    /// Whether autolock is on. A locked store is autolocked by definition.
    pub fn is_autolocked(&self) -> bool {
        match &self.state {
            State::Locked => true,
            State::Unlocked { unlock_key, .. } => unlock_key.is_some(),
        }
    }

    /// The current data key, once unlocked.
    pub fn data_key(&self) -> Option<&DataKey> {
        self.secrets().ok().and_then(|s| s.data_key.as_ref())
    }

    /// The data key being rotated away, while a rotation is in progress.
    pub fn previous_data_key(&self) -> Option<&DataKey> {
        self.secrets()
            .ok()
            .and_then(|s| s.previous_data_key.as_ref())
    }

    /// The current unlock key (autolock on and unlocked); what `swarm unlock-key` shows.
    pub fn unlock_key(&self) -> Option<&UnlockKey> {
        match &self.state {
            State::Unlocked { unlock_key, .. } => unlock_key.as_ref(),
            State::Locked => None,
        }
    }

    /// This node's credentials (root and certificate from disk, key from the unlocked store),
    /// validated at the current time.
    pub fn credentials(&self) -> Result<NodeCredentials, CaError> {
        let secrets = self.secrets()?;
        disk::read_node_files(&self.dir, secrets.node_key_pem.clone())
    }

    /// Replace the credentials (certificate renewal, role change), keeping the data key and
    /// wrapping the new node key the same way as the old one.
    pub fn save_credentials(&mut self, creds: &NodeCredentials) -> Result<(), CaError> {
        let (secrets, unlock_key) = self.unlocked()?;
        let mut next = secrets.clone();
        next.node_key_pem = creds.key_pem.clone();
        let text = encode(&next, unlock_key.as_ref())?;
        disk::write_node_files(&self.dir, creds, &text)?;
        self.set_state(next, unlock_key);
        Ok(())
    }

    /// Turn autolock on (`Some`: wrap under that key; also how the unlock key is replaced) or
    /// off (`None`: store unwrapped).
    pub fn set_autolock(&mut self, key: Option<&UnlockKey>) -> Result<(), CaError> {
        let (secrets, _) = self.unlocked()?;
        let secrets = secrets.clone();
        disk::write_key_file(&self.dir, &encode(&secrets, key)?)?;
        self.set_state(secrets, key.cloned());
        Ok(())
    }

    /// `swarm unlock-key --rotate`: a new unlock key, the key material rewrapped under it.
    /// Returns the new key (the old one stops working). Fails if autolock is off.
    pub fn rotate_unlock_key(&mut self) -> Result<UnlockKey, CaError> {
        if self.unlocked()?.1.is_none() {
            return Err(CaError::AutolockDisabled);
        }
        let key = UnlockKey::generate();
        self.set_autolock(Some(&key))?;
        Ok(key)
    }

    /// Start a data-key rotation: a new data key becomes current; the old one is kept as
    /// [`previous_data_key`](Self::previous_data_key) so existing Raft records still open.
    /// Re-encrypt the Raft data with the new key (e.g. write a snapshot and purge the log), then
    /// call [`finish_data_key_rotation`](Self::finish_data_key_rotation).
    pub fn rotate_data_key(&mut self) -> Result<DataKey, CaError> {
        let (secrets, unlock_key) = self.unlocked()?;
        if secrets.previous_data_key.is_some() {
            return Err(CaError::RotationInProgress);
        }
        let mut next = secrets.clone();
        let new_key = DataKey::generate();
        next.previous_data_key = next.data_key.take();
        next.data_key = Some(new_key.clone());
        disk::write_key_file(&self.dir, &encode(&next, unlock_key.as_ref())?)?;
        self.set_state(next, unlock_key);
        Ok(new_key)
    }

    /// Forget the previous data key once nothing is encrypted with it any more.
    pub fn finish_data_key_rotation(&mut self) -> Result<(), CaError> {
        let (secrets, unlock_key) = self.unlocked()?;
        if secrets.previous_data_key.is_none() {
            return Ok(());
        }
        let mut next = secrets.clone();
        next.previous_data_key = None;
        disk::write_key_file(&self.dir, &encode(&next, unlock_key.as_ref())?)?;
        self.set_state(next, unlock_key);
        Ok(())
    }

    /// The directory this store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn key_path(&self) -> PathBuf {
        self.dir.join(disk::NODE_KEY_FILE)
    }

    fn secrets(&self) -> Result<&Secrets, CaError> {
        match &self.state {
            State::Unlocked { secrets, .. } => Ok(secrets),
            State::Locked => Err(CaError::SwarmLocked),
        }
    }

    fn unlocked(&self) -> Result<(&Secrets, Option<UnlockKey>), CaError> {
        match &self.state {
            State::Unlocked {
                secrets,
                unlock_key,
            } => Ok((secrets, unlock_key.clone())),
            State::Locked => Err(CaError::SwarmLocked),
        }
    }

    fn set_state(&mut self, secrets: Secrets, unlock_key: Option<UnlockKey>) {
        self.state = State::Unlocked {
            secrets,
            unlock_key,
        };
    }
}

fn encode(secrets: &Secrets, key: Option<&UnlockKey>) -> Result<Zeroizing<String>, CaError> {
    match key {
        Some(k) => KeyFile::encode_locked(secrets, k),
        None => KeyFile::encode_plain(secrets),
    }
}
