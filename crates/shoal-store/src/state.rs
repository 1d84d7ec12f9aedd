//! The applied state ([`StoreState`]) and the deterministic apply of a [`Batch`].

use crate::StoreError;
use serde::{Deserialize, Serialize};
use shoal_api::{Cluster, Node, Object, ObjectKind, Service, Task};
use std::collections::{BTreeMap, BTreeSet};

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
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(self).map_err(|e| StoreError::Codec(e.to_string()))
    }
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Codec(e.to_string()))
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
        }
    }

    fn version_of(&self, kind: ObjectKind, id: &str) -> Option<u64> {
        match kind {
            ObjectKind::Cluster => self
                .cluster
                .as_ref()
                .filter(|c| c.id == id)
                .map(|c| c.meta.version),
            ObjectKind::Node => self.nodes.get(id).map(|o| o.meta.version),
            ObjectKind::Service => self.services.get(id).map(|o| o.meta.version),
            ObjectKind::Task => self.tasks.get(id).map(|o| o.meta.version),
        }
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

    /// Checks that every action of the batch can apply to the current state.
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
        Ok(())
    }

    /// Applies a batch at log `index`, atomically: on error nothing changes.
    pub fn apply(&mut self, index: u64, batch: &Batch) -> Result<Vec<Event>, StoreError> {
        self.check(batch)?;
        let mut events = Vec::with_capacity(batch.actions.len());
        for action in &batch.actions {
            match action {
                Action::Create(o) | Action::Update(o) => {
                    let mut o = o.clone();
                    o.meta_mut().version = index;
                    let old = self.put(o.clone());
                    let kind = if old.is_some() {
                        EventKind::Updated
                    } else {
                        EventKind::Created
                    };
                    events.push(Event {
                        index,
                        kind,
                        object: o,
                        old,
                    });
                }
                Action::Delete(kind, id) => {
                    if let Some(old) = self.remove(*kind, id) {
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
        Ok(events)
    }

    fn put(&mut self, o: Object) -> Option<Object> {
        match o {
            Object::Cluster(c) => self.cluster.replace(c).map(Object::Cluster),
            Object::Node(n) => self.nodes.insert(n.id.clone(), n).map(Object::Node),
            Object::Service(s) => self.services.insert(s.id.clone(), s).map(Object::Service),
            Object::Task(t) => {
                let old = self.tasks.remove(&t.id);
                if let Some(old) = &old {
                    self.unindex_task(old);
                }
                self.index_task(&t.id, &t.service_id, t.node_id.as_deref());
                self.tasks.insert(t.id.clone(), t);
                old.map(Object::Task)
            }
        }
    }

    fn remove(&mut self, kind: ObjectKind, id: &str) -> Option<Object> {
        match kind {
            ObjectKind::Cluster => self.cluster.take().map(Object::Cluster),
            ObjectKind::Node => self.nodes.remove(id).map(Object::Node),
            ObjectKind::Service => self.services.remove(id).map(Object::Service),
            ObjectKind::Task => {
                let t = self.tasks.remove(id)?;
                self.unindex_task(&t);
                Some(Object::Task(t))
            }
        }
    }
}
