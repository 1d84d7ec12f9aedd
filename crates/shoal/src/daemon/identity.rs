//! This node's swarm identity on disk (`<data-root>/swarm/state.json`): who it is in the swarm
//! and where it listens. Present exactly while the node is part of a swarm.
//!
//! ```text
//!  <data-root>/swarm/
//!    state.json                 Identity (this file's type)
//!    certificates/              swarm-root-ca.crt, swarm-node.crt, swarm-node.key (shoal-ca;
//!                               a manager's key file also holds the Raft data key, wrapped
//!                               by the unlock key under autolock)
//!    raft/raft.redb             managers: the Raft log and snapshots, sealed with the data key
//! ```

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Persisted swarm membership of this node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub node_id: String,
    pub cluster_id: String,
    pub raft_id: u64,
    pub advertise_addr: String,
    pub listen_addr: String,
    pub manager: bool,
    /// The managers' node-to-node addresses as last learned (from the join answer, then from
    /// the dispatcher's register/heartbeat answers): where the agent connects after a restart.
    #[serde(default)]
    pub managers: Vec<String>,
}

/// Where a node keeps its swarm state.
#[derive(Clone, Debug)]
pub struct SwarmDir(pub PathBuf);

impl SwarmDir {
    pub fn new(data_root: &Path) -> Self {
        SwarmDir(data_root.join("swarm"))
    }
    pub fn state_file(&self) -> PathBuf {
        self.0.join("state.json")
    }
    pub fn raft_dir(&self) -> PathBuf {
        self.0.join("raft")
    }
    /// The node's credentials (and, on managers, the key store).
    pub fn certs_dir(&self) -> PathBuf {
        self.0.join("certificates")
    }

    /// Reads the identity; `Ok(None)` when this node is not in a swarm.
    pub fn load(&self) -> anyhow::Result<Option<Identity>> {
        let path = self.state_file();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let id = serde_json::from_slice(&bytes)
                    .map_err(|e| anyhow::anyhow!("corrupt swarm state {}: {e}", path.display()))?;
                Ok(Some(id))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
        }
    }

    /// Writes the identity atomically.
    pub fn save(&self, id: &Identity) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.0)?;
        let tmp = self.0.join("state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(id)?)?;
        std::fs::rename(&tmp, self.state_file())?;
        Ok(())
    }

    /// Forgets the swarm: identity and Raft data.
    pub fn remove(&self) -> std::io::Result<()> {
        match std::fs::remove_dir_all(&self.0) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_remove() {
        let dir = tempfile::tempdir().unwrap();
        let sd = SwarmDir::new(dir.path());
        assert_eq!(sd.load().unwrap(), None);
        let id = Identity {
            node_id: "n".into(),
            cluster_id: "c".into(),
            raft_id: 7,
            advertise_addr: "127.0.0.1:2377".into(),
            listen_addr: "0.0.0.0:2377".into(),
            manager: true,
            managers: vec!["127.0.0.1:2377".into()],
        };
        sd.save(&id).unwrap();
        assert_eq!(sd.load().unwrap(), Some(id));
        std::fs::write(sd.state_file(), b"{oops").unwrap();
        assert!(sd.load().is_err());
        sd.remove().unwrap();
        assert_eq!(sd.load().unwrap(), None);
    }
}
