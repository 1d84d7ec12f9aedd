//! Write transactions: read the current state, record [`Action`]s.
//!
//! A [`Tx`] sees the applied state plus its own changes for point lookups (`get_*`); scans
//! (`state()`) see only the applied state. Versions are checked when the batch is applied, so an
//! update built from a stale read fails with [`StoreError::OutOfSequence`].

use crate::state::{Action, Batch, StoreState};
use crate::StoreError;
use chrono::Utc;
use shoal_api::{Cluster, Node, Object, ObjectKind, Service, Task};
use std::collections::HashMap;

/// A write transaction in progress.
pub struct Tx<'a> {
    state: &'a StoreState,
    changed: HashMap<(ObjectKind, String), Option<Object>>,
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

    /// Looks up an object, including this transaction's changes.
    pub fn get(&self, kind: ObjectKind, id: &str) -> Option<Object> {
        match self.changed.get(&(kind, id.to_string())) {
            Some(o) => o.clone(),
            None => self.state.get(kind, id),
        }
    }

    pub fn get_cluster(&self) -> Option<Cluster> {
        let id = self.state.cluster.as_ref().map(|c| c.id.clone());
        // A cluster created in this transaction is found too.
        let created = self.changed.iter().find_map(|((k, _), o)| match (k, o) {
            (ObjectKind::Cluster, Some(Object::Cluster(c))) => Some(c.clone()),
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

    /// Records the creation of a new object (timestamps set now).
    pub fn create(&mut self, mut o: Object) -> Result<(), StoreError> {
        if self.get(o.kind(), o.id()).is_some() {
            return Err(StoreError::Exists {
                kind: o.kind(),
                id: o.id().to_string(),
            });
        }
        let now = Utc::now();
        let m = o.meta_mut();
        m.created_at = now;
        m.updated_at = now;
        self.changed
            .insert((o.kind(), o.id().to_string()), Some(o.clone()));
        self.actions.push(Action::Create(o));
        Ok(())
    }

    /// Records an update. `o.meta.version` must be the version the caller read.
    pub fn update(&mut self, mut o: Object) -> Result<(), StoreError> {
        let Some(cur) = self.get(o.kind(), o.id()) else {
            return Err(StoreError::NotFound {
                kind: o.kind(),
                id: o.id().to_string(),
            });
        };
        if cur.meta().version != o.meta().version {
            return Err(StoreError::OutOfSequence);
        }
        o.meta_mut().updated_at = Utc::now();
        o.meta_mut().created_at = cur.meta().created_at;
        self.changed
            .insert((o.kind(), o.id().to_string()), Some(o.clone()));
        self.actions.push(Action::Update(o));
        Ok(())
    }

    pub fn delete(&mut self, kind: ObjectKind, id: &str) -> Result<(), StoreError> {
        if self.get(kind, id).is_none() {
            return Err(StoreError::NotFound {
                kind,
                id: id.to_string(),
            });
        }
        self.changed.insert((kind, id.to_string()), None);
        self.actions.push(Action::Delete(kind, id.to_string()));
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
