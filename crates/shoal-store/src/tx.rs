//! Write transactions: read the current state, record [`Action`]s.
//!
//! A [`Tx`] sees the applied state plus its own changes for point lookups (`get_*`); scans
//! (`state()`) see only the applied state. Versions are checked when the batch is applied, so an
//! update built from a stale read fails with [`StoreError::OutOfSequence`].

use crate::state::{Action, Batch, StoreState};
use crate::StoreError;
use chrono::Utc;
use shoal_api::{Cluster, Config, Network, Node, Object, ObjectKind, Secret, Service, Task};
use std::collections::HashMap;

/// A write transaction in progress.
pub struct Tx<'a> {
    state: &'a StoreState,
    /// Objects this transaction wrote: the index of their latest action in `actions`
    /// (`None`: deleted). One copy of each object, in its action.
    changed: HashMap<(ObjectKind, String), Option<usize>>,
    actions: Vec<Action>,
}

impl<'a> Tx<'a> {
    pub(crate) fn new(state: &'a StoreState) -> Self {
        Tx {
            state,
            changed: HashMap::new(),
            actions: Vec::new(),
        }
    }

    /// The applied state (without this transaction's changes).
    pub fn state(&self) -> &StoreState {
        self.state
    }

    /// This transaction's latest version of an object: `Some(None)` if it deleted it, `None`
    /// if it did not touch it.
    fn written(&self, kind: ObjectKind, id: &str) -> Option<Option<&Object>> {
        if self.changed.is_empty() {
            return None;
        }
        let at = self.changed.get(&(kind, id.to_string()))?;
        Some(at.and_then(|i| match &self.actions[i] {
            Action::Create(o) | Action::Update(o) => Some(o),
            Action::Delete(..) => None,
        }))
    }

    /// Whether the object exists, including this transaction's changes; its version and
    /// creation time if so.
    fn current_meta(&self, kind: ObjectKind, id: &str) -> Option<shoal_api::Meta> {
        match self.written(kind, id) {
            Some(o) => o.map(|o| o.meta().clone()),
            None => self.state.meta_of(kind, id).cloned(),
        }
    }

    /// Looks up an object, including this transaction's changes.
    pub fn get(&self, kind: ObjectKind, id: &str) -> Option<Object> {
        match self.written(kind, id) {
            Some(o) => o.cloned(),
            None => self.state.get(kind, id),
        }
    }

    pub fn get_cluster(&self) -> Option<Cluster> {
        let id = self.state.cluster.as_ref().map(|c| c.id.clone());
        // A cluster created in this transaction is found too.
        let created = self.changed.iter().find_map(|((k, id), _)| match k {
            ObjectKind::Cluster => match self.written(ObjectKind::Cluster, id) {
                Some(Some(Object::Cluster(c))) => Some(c.clone()),
                _ => None,
            },
            _ => None,
        });
        match (created, id) {
            (Some(c), _) => Some(c),
            (None, Some(id)) => match self.get(ObjectKind::Cluster, &id) {
                Some(Object::Cluster(c)) => Some(c),
                _ => None,
            },
            _ => None,
        }
    }

    pub fn get_node(&self, id: &str) -> Option<Node> {
        match self.get(ObjectKind::Node, id) {
            Some(Object::Node(n)) => Some(n),
            _ => None,
        }
    }

    pub fn get_service(&self, id: &str) -> Option<Service> {
        match self.get(ObjectKind::Service, id) {
            Some(Object::Service(s)) => Some(s),
            _ => None,
        }
    }

    pub fn get_task(&self, id: &str) -> Option<Task> {
        match self.get(ObjectKind::Task, id) {
            Some(Object::Task(t)) => Some(t),
            _ => None,
        }
    }

    pub fn get_network(&self, id: &str) -> Option<Network> {
        match self.get(ObjectKind::Network, id) {
            Some(Object::Network(n)) => Some(n),
            _ => None,
        }
    }

    pub fn get_secret(&self, id: &str) -> Option<Secret> {
        match self.get(ObjectKind::Secret, id) {
            Some(Object::Secret(s)) => Some(s),
            _ => None,
        }
    }

    pub fn get_config(&self, id: &str) -> Option<Config> {
        match self.get(ObjectKind::Config, id) {
            Some(Object::Config(c)) => Some(c),
            _ => None,
        }
    }

    fn record(&mut self, action: Action) {
        let key = match &action {
            Action::Create(o) | Action::Update(o) => (o.kind(), o.id().to_string()),
            Action::Delete(kind, id) => (*kind, id.clone()),
        };
        let at = match action {
            Action::Delete(..) => None,
            _ => Some(self.actions.len()),
        };
        self.changed.insert(key, at);
        self.actions.push(action);
    }

    /// Records the creation of a new object (timestamps set now).
    pub fn create(&mut self, mut o: Object) -> Result<(), StoreError> {
        if self.current_meta(o.kind(), o.id()).is_some() {
            return Err(StoreError::Exists {
                kind: o.kind(),
                id: o.id().to_string(),
            });
        }
        let now = Utc::now();
        let m = o.meta_mut();
        m.created_at = now;
        m.updated_at = now;
        self.record(Action::Create(o));
        Ok(())
    }

    /// Records an update. `o.meta.version` must be the version the caller read.
    pub fn update(&mut self, mut o: Object) -> Result<(), StoreError> {
        let Some(cur) = self.current_meta(o.kind(), o.id()) else {
            return Err(StoreError::NotFound {
                kind: o.kind(),
                id: o.id().to_string(),
            });
        };
        if cur.version != o.meta().version {
            return Err(StoreError::OutOfSequence);
        }
        o.meta_mut().updated_at = Utc::now();
        o.meta_mut().created_at = cur.created_at;
        self.record(Action::Update(o));
        Ok(())
    }

    pub fn delete(&mut self, kind: ObjectKind, id: &str) -> Result<(), StoreError> {
        if self.current_meta(kind, id).is_none() {
            return Err(StoreError::NotFound {
                kind,
                id: id.to_string(),
            });
        }
        self.record(Action::Delete(kind, id.to_string()));
        Ok(())
    }

    /// Number of recorded actions.
    pub fn len(&self) -> usize {
        self.actions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    pub(crate) fn into_batch(self) -> Batch {
        Batch {
            actions: self.actions,
        }
    }
}
