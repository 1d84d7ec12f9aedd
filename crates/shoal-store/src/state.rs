//! The applied state ([`StoreState`]) and the deterministic apply of a [`Batch`].

use crate::StoreError;
use serde::{Deserialize, Serialize};
use shoal_api::{Cluster, Config, Network, Node, Object, ObjectKind, Secret, Service, Task};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// One change in a batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// Create an object whose ID is not in use.
    Create(Object),
    /// Replace an object; its `meta.version` must equal the stored one.
    Update(Object),
    Delete(ObjectKind, String),
}

/// Actions applied atomically: all or none.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub actions: Vec<Action>,
}

impl Batch {
    /// The Raft payload of this batch: JSON, compressed when large (see `codec`).
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(self)
            .map(crate::codec::pack)
            .map_err(|e| StoreError::Codec(e.to_string()))
    }
    /// Reads a payload made by [`Batch::encode`] (or plain JSON, as older entries are).
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let json = crate::codec::unpack(bytes)?;
        serde_json::from_slice(&json).map_err(|e| StoreError::Codec(e.to_string()))
    }
}

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Updated,
    Deleted,
}

/// A change seen by watchers: `object` is the new version (the last one for a delete).
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub index: u64,
    pub kind: EventKind,
    pub object: Object,
    pub old: Option<Object>,
}

/// Every stored object, with secondary indexes for tasks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreState {
    pub cluster: Option<Cluster>,
    pub nodes: BTreeMap<String, Node>,
    pub services: BTreeMap<String, Service>,
    pub tasks: BTreeMap<String, Task>,
    /// Swarm-scoped networks (absent from snapshots written before networks existed).
    #[serde(default)]
    pub networks: BTreeMap<String, Network>,
    #[serde(default)]
    pub secrets: BTreeMap<String, Secret>,
    #[serde(default)]
    pub configs: BTreeMap<String, Config>,
    /// Index of the last applied write.
    pub last_index: u64,
    #[serde(skip)]
    by_service: BTreeMap<String, BTreeSet<String>>,
    #[serde(skip)]
    by_node: BTreeMap<String, BTreeSet<String>>,
}

impl StoreState {
    /// Looks an object up by kind and ID.
    pub fn get(&self, kind: ObjectKind, id: &str) -> Option<Object> {
        match kind {
            ObjectKind::Cluster => self
                .cluster
                .as_ref()
                .filter(|c| c.id == id)
                .cloned()
                .map(Object::Cluster),
            ObjectKind::Node => self.nodes.get(id).cloned().map(Object::Node),
            ObjectKind::Service => self.services.get(id).cloned().map(Object::Service),
            ObjectKind::Task => self.tasks.get(id).cloned().map(Object::Task),
            ObjectKind::Network => self.networks.get(id).cloned().map(Object::Network),
            ObjectKind::Secret => self.secrets.get(id).cloned().map(Object::Secret),
            ObjectKind::Config => self.configs.get(id).cloned().map(Object::Config),
        }
    }

    fn version_of(&self, kind: ObjectKind, id: &str) -> Option<u64> {
        self.meta_of(kind, id).map(|m| m.version)
    }

    /// Tasks of a service (any state).
    pub fn tasks_of_service<'a>(&'a self, service_id: &str) -> impl Iterator<Item = &'a Task> + 'a {
        self.by_service
            .get(service_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.tasks.get(id))
    }

    /// Tasks assigned to a node (any state).
    pub fn tasks_on_node<'a>(&'a self, node_id: &str) -> impl Iterator<Item = &'a Task> + 'a {
        self.by_node
            .get(node_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.tasks.get(id))
    }

    /// Rebuilds the secondary indexes (after a restore).
    pub fn reindex(&mut self) {
        self.by_service.clear();
        self.by_node.clear();
        let tasks: Vec<(String, String, Option<String>)> = self
            .tasks
            .values()
            .map(|t| (t.id.clone(), t.service_id.clone(), t.node_id.clone()))
            .collect();
        for (id, sid, nid) in tasks {
            self.index_task(&id, &sid, nid.as_deref());
        }
        // One spec allocation per (service, spec version, equal spec), as writes keep it.
        let mut shared: BTreeMap<(String, u64), Vec<Arc<shoal_api::engine::TaskSpec>>> =
            BTreeMap::new();
        for t in self.tasks.values_mut() {
            let held = shared
                .entry((t.service_id.clone(), t.spec_version))
                .or_default();
            match held.iter().find(|h| ***h == *t.spec) {
                Some(h) => t.spec = Arc::clone(h),
                None => held.push(Arc::clone(&t.spec)),
            }
        }
    }

    /// Makes `t` hold the same spec allocation as the stored task it replaces or a sibling made
    /// from the same spec version, when their specs are equal: a service's tasks share one
    /// copy of their spec on every replica, however the task arrived (planned here, decoded
    /// from the log, restored from a snapshot).
    fn share_spec(&self, t: &mut Task) {
        /// Siblings looked at before giving up (bounds the cost of a write).
        const SIBLINGS: usize = 8;
        let same = |held: &Arc<shoal_api::engine::TaskSpec>, t: &Task| {
            Arc::ptr_eq(held, &t.spec) || **held == *t.spec
        };
        if let Some(old) = self.tasks.get(&t.id) {
            if same(&old.spec, t) {
                t.spec = Arc::clone(&old.spec);
                return;
            }
        }
        let Some(ids) = self.by_service.get(&t.service_id) else {
            return;
        };
        let sibling = ids
            .iter()
            .filter(|id| **id != t.id)
            .filter_map(|id| self.tasks.get(id))
            .filter(|s| s.spec_version == t.spec_version)
            .take(SIBLINGS)
            .find(|s| same(&s.spec, t));
        if let Some(s) = sibling {
            t.spec = Arc::clone(&s.spec);
        }
    }

    fn index_task(&mut self, id: &str, service_id: &str, node_id: Option<&str>) {
        self.by_service
            .entry(service_id.to_string())
            .or_default()
            .insert(id.to_string());
        if let Some(n) = node_id {
            self.by_node
                .entry(n.to_string())
                .or_default()
                .insert(id.to_string());
        }
    }

    fn unindex_task(&mut self, task: &Task) {
        if let Some(set) = self.by_service.get_mut(&task.service_id) {
            set.remove(&task.id);
            if set.is_empty() {
                self.by_service.remove(&task.service_id);
            }
        }
        if let Some(n) = &task.node_id {
            if let Some(set) = self.by_node.get_mut(n) {
                set.remove(&task.id);
                if set.is_empty() {
                    self.by_node.remove(n);
                }
            }
        }
    }

    /// Checks that every action of the batch can apply to the current state: IDs, versions, and
    /// the uniqueness rules of `rules` (service, network, secret and config names, published
    /// ports). Deterministic: every
    /// replica refuses the same batches.
    pub fn check(&self, batch: &Batch) -> Result<(), StoreError> {
        // Track IDs created/deleted earlier in the same batch.
        let mut present: BTreeMap<(ObjectKind, String), Option<u64>> = BTreeMap::new();
        for action in &batch.actions {
            match action {
                Action::Create(o) => {
                    let key = (o.kind(), o.id().to_string());
                    let exists = match present.get(&key) {
                        Some(v) => v.is_some(),
                        None => self.version_of(o.kind(), o.id()).is_some(),
                    };
                    if exists || (o.kind() == ObjectKind::Cluster && self.cluster.is_some()) {
                        return Err(StoreError::Exists {
                            kind: o.kind(),
                            id: o.id().to_string(),
                        });
                    }
                    present.insert(key, Some(u64::MAX));
                }
                Action::Update(o) => {
                    let key = (o.kind(), o.id().to_string());
                    let cur = match present.get(&key) {
                        Some(v) => *v,
                        None => self.version_of(o.kind(), o.id()),
                    };
                    match cur {
                        None => {
                            return Err(StoreError::NotFound {
                                kind: o.kind(),
                                id: o.id().to_string(),
                            })
                        }
                        // Objects created/updated earlier in this batch may be updated again.
                        Some(u64::MAX) => {}
                        Some(v) if v != o.meta().version => return Err(StoreError::OutOfSequence),
                        Some(_) => {}
                    }
                    present.insert(key, Some(u64::MAX));
                }
                Action::Delete(kind, id) => {
                    let key = (*kind, id.clone());
                    let exists = match present.get(&key) {
                        Some(v) => v.is_some(),
                        None => self.version_of(*kind, id).is_some(),
                    };
                    if !exists {
                        return Err(StoreError::NotFound {
                            kind: *kind,
                            id: id.clone(),
                        });
                    }
                    present.insert(key, None);
                }
            }
        }
        crate::rules::check_services(self, batch)?;
        crate::rules::check_names(self, batch)?;
        crate::rules::check_network_allocations(self, batch)
    }

    /// Applies a batch at log `index`, atomically: on error nothing changes.
    pub fn apply(&mut self, index: u64, batch: &Batch) -> Result<Vec<Event>, StoreError> {
        self.check(batch)?;
        Ok(self.apply_checked(index, batch.actions.iter().cloned()))
    }

    /// [`StoreState::apply`] of a batch this replica owns (decoded from the log): its objects
    /// move into the state instead of being copied.
    pub fn apply_owned(&mut self, index: u64, batch: Batch) -> Result<Vec<Event>, StoreError> {
        self.check(&batch)?;
        Ok(self.apply_checked(index, batch.actions.into_iter()))
    }

    fn apply_checked(
        &mut self,
        index: u64,
        actions: impl ExactSizeIterator<Item = Action>,
    ) -> Vec<Event> {
        let mut events = Vec::with_capacity(actions.len());
        for action in actions {
            match action {
                Action::Create(mut o) | Action::Update(mut o) => {
                    o.meta_mut().version = index;
                    if let Object::Task(t) = &mut o {
                        self.share_spec(t);
                    }
                    let object = o.clone();
                    let old = self.put(o);
                    let kind = if old.is_some() {
                        EventKind::Updated
                    } else {
                        EventKind::Created
                    };
                    events.push(Event {
                        index,
                        kind,
                        object,
                        old,
                    });
                }
                Action::Delete(kind, id) => {
                    if let Some(old) = self.remove(kind, &id) {
                        events.push(Event {
                            index,
                            kind: EventKind::Deleted,
                            object: old,
                            old: None,
                        });
                    }
                }
            }
        }
        self.last_index = self.last_index.max(index);
        events
    }

    /// The metadata of an object, without copying the object.
    pub(crate) fn meta_of(&self, kind: ObjectKind, id: &str) -> Option<&shoal_api::Meta> {
        match kind {
            ObjectKind::Cluster => self
                .cluster
                .as_ref()
                .filter(|c| c.id == id)
                .map(|c| &c.meta),
            ObjectKind::Node => self.nodes.get(id).map(|o| &o.meta),
            ObjectKind::Service => self.services.get(id).map(|o| &o.meta),
            ObjectKind::Task => self.tasks.get(id).map(|o| &o.meta),
            ObjectKind::Network => self.networks.get(id).map(|o| &o.meta),
            ObjectKind::Secret => self.secrets.get(id).map(|o| &o.meta),
            ObjectKind::Config => self.configs.get(id).map(|o| &o.meta),
        }
    }

    fn put(&mut self, o: Object) -> Option<Object> {
        match o {
            Object::Cluster(c) => self.cluster.replace(c).map(Object::Cluster),
            Object::Node(n) => self.nodes.insert(n.id.clone(), n).map(Object::Node),
            Object::Service(s) => self.services.insert(s.id.clone(), s).map(Object::Service),
            Object::Network(n) => self.networks.insert(n.id.clone(), n).map(Object::Network),
            Object::Secret(s) => self.secrets.insert(s.id.clone(), s).map(Object::Secret),
            Object::Config(c) => self.configs.insert(c.id.clone(), c).map(Object::Config),
            Object::Task(t) => {
                let Some(slot) = self.tasks.get_mut(&t.id) else {
                    self.index_task(&t.id, &t.service_id, t.node_id.as_deref());
                    self.tasks.insert(t.id.clone(), t);
                    return None;
                };
                // Replaced in place (a remove and an insert would shift the B-tree's large
                // values twice); the indexes change only if the task moved.
                let moved = (slot.service_id != t.service_id || slot.node_id != t.node_id)
                    .then(|| (t.id.clone(), t.service_id.clone(), t.node_id.clone()));
                let old = std::mem::replace(slot, t);
                if let Some((id, service_id, node_id)) = moved {
                    self.unindex_task(&old);
                    self.index_task(&id, &service_id, node_id.as_deref());
                }
                Some(Object::Task(old))
            }
        }
    }

    fn remove(&mut self, kind: ObjectKind, id: &str) -> Option<Object> {
        match kind {
            ObjectKind::Cluster => self.cluster.take().map(Object::Cluster),
            ObjectKind::Node => self.nodes.remove(id).map(Object::Node),
            ObjectKind::Service => self.services.remove(id).map(Object::Service),
            ObjectKind::Network => self.networks.remove(id).map(Object::Network),
            ObjectKind::Secret => self.secrets.remove(id).map(Object::Secret),
            ObjectKind::Config => self.configs.remove(id).map(Object::Config),
            ObjectKind::Task => {
                let t = self.tasks.remove(id)?;
                self.unindex_task(&t);
                Some(Object::Task(t))
            }
        }
    }
}
