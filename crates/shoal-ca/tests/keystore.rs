//! Autolock and the data key: lock, unlock, wrong key, rewrap, rotations, renewal under lock.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use shoal_ca::{
    CaError, DataKey, KeyStore, LockState, NodeCredentials, Role, RootCa, UnlockKey,
    DEFAULT_NODE_CERT_VALIDITY,
};

fn manager_creds() -> (RootCa, NodeCredentials) {
    let root = RootCa::generate("cluster1").unwrap();
    let creds =
        NodeCredentials::issue_local(&root, "manager1", Role::Manager, DEFAULT_NODE_CERT_VALIDITY)
            .unwrap();
    (root, creds)
}

fn key_file(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("swarm-node.key")).unwrap()
}

#[test]
fn unlock_key_format_round_trips() {
    let k = UnlockKey::generate();
    let s = k.to_string();
    assert!(s.starts_with("SWMKEY-1-"), "{s}");
    assert_eq!(
        s.len(),
        "SWMKEY-1-".len() + 43,
        "raw (unpadded) base64 of 32 bytes: {s}"
    );
    assert_eq!(UnlockKey::parse(&s).unwrap(), k);
    assert_eq!(format!(" {s}\n").parse::<UnlockKey>().unwrap(), k);
    assert_eq!(
        UnlockKey::parse(&format!("{s}=")).unwrap(),
        k,
        "padded form accepted"
    );
    assert_ne!(UnlockKey::generate(), k);
    assert!(!format!("{k:?}").contains(&s[9..]));

    for bad in [
        "",
        "SWMKEY-1-",
        "SWMKEY-2-abcd",
        "swmkey-1-AAAA",
        "SWMKEY-1-!!!!",
        "SWMKEY-1-AAAA",
    ] {
        let err = UnlockKey::parse(bad).unwrap_err();
        assert_eq!(err.to_string(), "invalid key string", "{bad:?}");
    }
}

#[test]
fn without_autolock_the_data_key_is_available_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (_, creds) = manager_creds();
    let (store, dk) = KeyStore::create(dir.path(), &creds, None).unwrap();
    assert!(!store.is_locked() && !store.is_autolocked());
    assert_eq!(store.data_key(), Some(&dk));

    let (store, state) = KeyStore::open(dir.path()).unwrap();
    assert_eq!(state, LockState::Unlocked(dk.clone()));
    assert_eq!(store.credentials().unwrap().cert_pem, creds.cert_pem);
    // Plain credentials loading still works and keeps the data key when saving.
    let loaded = NodeCredentials::load(dir.path()).unwrap();
    loaded.save(dir.path()).unwrap();
    assert_eq!(
        KeyStore::open(dir.path()).unwrap().1,
        LockState::Unlocked(dk)
    );
    assert_eq!(
        std::fs::metadata(dir.path().join("swarm-node.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // Creating again would lose the data key: refused.
    let err = KeyStore::create(dir.path(), &creds, None).unwrap_err();
    assert!(matches!(err, CaError::DataKeyExists { .. }), "{err}");
    // Unlocking an unlocked store: Docker's text.
    let (mut store, _) = KeyStore::open(dir.path()).unwrap();
    assert_eq!(
        store
            .unlock(&UnlockKey::generate())
            .unwrap_err()
            .to_string(),
        "swarm is not locked"
    );
}

#[test]
fn autolock_locks_and_only_the_right_key_unlocks() {
    let dir = tempfile::tempdir().unwrap();
    let (_, creds) = manager_creds();
    let key = UnlockKey::generate();
    let (_, dk) = KeyStore::create(dir.path(), &creds, Some(&key)).unwrap();

    // Nothing secret in clear on disk.
    let text = String::from_utf8(key_file(dir.path())).unwrap();
    assert!(
        !text.contains("PRIVATE KEY") && text.contains("SHOAL LOCKED KEYS"),
        "{text}"
    );

    let (mut store, state) = KeyStore::open(dir.path()).unwrap();
    assert_eq!(state, LockState::Locked);
    assert!(store.is_locked() && store.is_autolocked());
    assert!(store.data_key().is_none());
    assert!(matches!(
        store.credentials().unwrap_err(),
        CaError::SwarmLocked
    ));
    let err = NodeCredentials::load(dir.path()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("Swarm is encrypted and needs to be unlocked"),
        "{err}"
    );
    assert!(matches!(
        creds.save(dir.path()).unwrap_err(),
        CaError::SwarmLocked
    ));

    // Wrong key: Docker's text, nothing changes on disk, still locked, right key still works.
    let before = key_file(dir.path());
    let err = store.unlock(&UnlockKey::generate()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "swarm could not be unlocked: invalid key provided"
    );
    assert!(store.is_locked());
    assert_eq!(key_file(dir.path()), before);

    assert_eq!(store.unlock(&key).unwrap(), dk);
    assert!(!store.is_locked() && store.is_autolocked());
    assert_eq!(store.unlock_key(), Some(&key));
    assert_eq!(
        store.credentials().unwrap().identity().unwrap().node_id,
        "manager1"
    );
    assert!(matches!(
        store.unlock(&key).unwrap_err(),
        CaError::NotLocked
    ));
}

#[test]
fn autolock_can_be_turned_off_on_and_the_unlock_key_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let (_, creds) = manager_creds();
    let (mut store, dk) = KeyStore::create(dir.path(), &creds, None).unwrap();
    assert!(matches!(
        store.rotate_unlock_key().unwrap_err(),
        CaError::AutolockDisabled
    ));

    let k1 = UnlockKey::generate();
    store.set_autolock(Some(&k1)).unwrap();
    assert_eq!(KeyStore::open(dir.path()).unwrap().1, LockState::Locked);

    let k2 = store.rotate_unlock_key().unwrap();
    assert_ne!(k1, k2);
    let (mut reopened, _) = KeyStore::open(dir.path()).unwrap();
    assert!(matches!(
        reopened.unlock(&k1).unwrap_err(),
        CaError::InvalidUnlockKey
    ));
    assert_eq!(reopened.unlock(&k2).unwrap(), dk);

    reopened.set_autolock(None).unwrap();
    assert_eq!(
        KeyStore::open(dir.path()).unwrap().1,
        LockState::Unlocked(dk.clone())
    );
    assert!(NodeCredentials::load(dir.path()).is_ok());

    // Locked stores cannot be rewrapped before unlocking.
    store.set_autolock(Some(&k1)).unwrap();
    let (mut locked, _) = KeyStore::open(dir.path()).unwrap();
    assert!(matches!(
        locked.set_autolock(None).unwrap_err(),
        CaError::SwarmLocked
    ));
    assert!(matches!(
        locked.rotate_data_key().unwrap_err(),
        CaError::SwarmLocked
    ));
}

#[test]
fn data_key_rotation_keeps_the_previous_key_until_finished() {
    for autolock in [None, Some(UnlockKey::generate())] {
        let dir = tempfile::tempdir().unwrap();
        let (_, creds) = manager_creds();
        let (mut store, old) = KeyStore::create(dir.path(), &creds, autolock.as_ref()).unwrap();

        let new = store.rotate_data_key().unwrap();
        assert_ne!(new, old);
        assert_eq!(store.data_key(), Some(&new));
        assert_eq!(store.previous_data_key(), Some(&old));
        assert!(matches!(
            store.rotate_data_key().unwrap_err(),
            CaError::RotationInProgress
        ));

        // Persisted.
        let (mut reopened, state) = KeyStore::open(dir.path()).unwrap();
        if let Some(k) = &autolock {
            assert_eq!(state, LockState::Locked);
            assert_eq!(reopened.unlock(k).unwrap(), new);
        } else {
            assert_eq!(state, LockState::Unlocked(new.clone()));
        }
        assert_eq!(reopened.previous_data_key(), Some(&old));

        reopened.finish_data_key_rotation().unwrap();
        let (mut again, _) = KeyStore::open(dir.path()).unwrap();
        if let Some(k) = &autolock {
            again.unlock(k).unwrap();
        }
        assert_eq!(again.data_key(), Some(&new));
        assert_eq!(again.previous_data_key(), None);
        assert!(again.rotate_data_key().is_ok());
    }
}

#[test]
fn renewed_credentials_are_saved_under_the_same_lock() {
    let dir = tempfile::tempdir().unwrap();
    let (root, creds) = manager_creds();
    let key = UnlockKey::generate();
    let (mut store, dk) = KeyStore::create(dir.path(), &creds, Some(&key)).unwrap();

    let renewed =
        NodeCredentials::issue_local(&root, "manager1", Role::Manager, DEFAULT_NODE_CERT_VALIDITY)
            .unwrap();
    store.save_credentials(&renewed).unwrap();
    assert!(!String::from_utf8(key_file(dir.path()))
        .unwrap()
        .contains("PRIVATE KEY"));

    let (mut reopened, _) = KeyStore::open(dir.path()).unwrap();
    assert_eq!(reopened.unlock(&key).unwrap(), dk);
    let loaded = reopened.credentials().unwrap();
    assert_eq!(loaded.cert_pem, renewed.cert_pem);
    assert_eq!(*loaded.key_pem, *renewed.key_pem);
}

#[test]
fn damaged_or_missing_key_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let err = KeyStore::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("swarm-node.key"), "{err}");

    // A worker's key file has no data key.
    let (_, creds) = manager_creds();
    creds.save(dir.path()).unwrap();
    assert!(matches!(
        KeyStore::open(dir.path()).unwrap_err(),
        CaError::MissingDataKey { .. }
    ));
    // ...which create then adds.
    let (_, dk) = KeyStore::create(dir.path(), &creds, None).unwrap();
    assert_eq!(
        KeyStore::open(dir.path()).unwrap().1,
        LockState::Unlocked(dk)
    );

    std::fs::write(
        dir.path().join("swarm-node.key"),
        "-----BEGIN SHOAL LOCKED KEYS-----\nAA==\n-----END SHOAL LOCKED KEYS-----\n",
    )
    .unwrap();
    let (mut store, state) = KeyStore::open(dir.path()).unwrap();
    assert_eq!(state, LockState::Locked);
    let err = store.unlock(&UnlockKey::generate()).unwrap_err();
    assert!(matches!(err, CaError::CorruptKeyFile { .. }), "{err}");

    std::fs::write(dir.path().join("swarm-node.key"), "not pem at all").unwrap();
    let err = KeyStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, CaError::CorruptKeyFile { .. }), "{err}");
    assert!(err.to_string().contains("swarm-node.key"), "{err}");
    let _ = DataKey::generate();
}
