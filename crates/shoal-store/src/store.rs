//! The [`Store`] handle: reads, serialized writes through a [`Proposer`], watches.

use crate::state::{Batch, Event, StoreState};
use crate::tx::Tx;
use crate::StoreError;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::broadcast;

/// Replicates an encoded [`Batch`]; resolves with the log index once the batch was applied to
/// this store (through [`Store::apply_payload`]).
pub trait Proposer: Send + Sync + 'static {
    fn propose(&self, payload: Vec<u8>) -> BoxFuture<'static, Result<u64, StoreError>>;
}

struct Inner {
    state: RwLock<StoreState>,
    events: broadcast::Sender<Arc<Event>>,
    write: tokio::sync::Mutex<()>,
    proposer: RwLock<Option<Arc<dyn Proposer>>>,
    local_index: AtomicU64,
    apply_errors: Mutex<HashMap<u64, StoreError>>,
}

/// Shared handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

/// Capacity of the watch channel; slower watchers see `Lagged` and must re-read the state.
const WATCH_CAPACITY: usize = 65536;

impl Store {
    /// An empty store with no proposer: writes apply locally.
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(WATCH_CAPACITY);
        Store {
            inner: Arc::new(Inner {
                state: RwLock::new(StoreState::default()),
                events,
                write: tokio::sync::Mutex::new(()),
                proposer: RwLock::new(None),
                local_index: AtomicU64::new(0),
                apply_errors: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Sets (or clears) the proposer writes go through.
    pub fn set_proposer(&self, p: Option<Arc<dyn Proposer>>) {
        if let Ok(mut g) = self.inner.proposer.write() {
            *g = p;
        }
    }

    pub fn has_proposer(&self) -> bool {
        self.inner
            .proposer
            .read()
            .map(|g| g.is_some())
            .unwrap_or(false)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, StoreState> {
        // A panic while holding the lock cannot leave the state half-applied (apply checks
        // first), so a poisoned lock is still safe to read.
        self.inner.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, StoreState> {
        self.inner.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the current applied state.
    pub fn view<R>(&self, f: impl FnOnce(&StoreState) -> R) -> R {
        f(&self.read())
    }

    /// Subscribes to changes applied from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.inner.events.subscribe()
    }

    /// Runs a write transaction: `f` records actions against the current state; they are then
    /// replicated and applied as one batch. Writers are serialized. Returns `f`'s value once the
    /// batch is applied; an empty transaction writes nothing.
    pub async fn update<R, E>(&self, f: impl FnOnce(&mut Tx<'_>) -> Result<R, E>) -> Result<R, E>
    where
        E: From<StoreError>,
    {
        let _w = self.inner.write.lock().await;
        let (r, batch) = {
            let guard = self.read();
            let mut tx = Tx::new(&guard);
            let r = f(&mut tx)?;
            (r, tx.into_batch())
        };
        if batch.actions.is_empty() {
            return Ok(r);
        }
        self.commit(batch).await?;
        Ok(r)
    }

    async fn commit(&self, batch: Batch) -> Result<u64, StoreError> {
        let proposer = self.inner.proposer.read().ok().and_then(|g| g.clone());
        match proposer {
            None => {
                let index = self.inner.local_index.fetch_add(1, Ordering::SeqCst) + 1;
                let index = index.max(self.read().last_index + 1);
                self.apply_batch(index, &batch)?;
                Ok(index)
            }
            Some(p) => {
                let index = p.propose(batch.encode()?).await?;
                let err = self
                    .inner
                    .apply_errors
                    .lock()
                    .ok()
                    .and_then(|mut m| m.remove(&index));
                match err {
                    Some(e) => Err(e),
                    None => Ok(index),
                }
            }
        }
    }

    fn apply_batch(&self, index: u64, batch: &Batch) -> Result<(), StoreError> {
        let events = {
            let mut st = self.write_state();
            if index <= st.last_index && st.last_index > 0 {
                // Already applied (replay after restore).
                return Ok(());
            }
            match st.apply(index, batch) {
                Ok(ev) => ev,
                Err(e) => {
                    st.last_index = st.last_index.max(index);
                    return Err(e);
                }
            }
        };
        for e in events {
            // No receivers is fine.
            let _ = self.inner.events.send(Arc::new(e));
        }
        Ok(())
    }

    /// State machine entry point: applies a committed payload at `index`. A batch that does not
    /// apply (a conflict) is skipped on every replica alike; the proposer sees the error.
    pub fn apply_payload(&self, index: u64, payload: &[u8]) -> Result<(), String> {
        let res = Batch::decode(payload).and_then(|b| self.apply_batch(index, &b));
        if let Err(e) = res {
            if let Ok(mut m) = self.inner.apply_errors.lock() {
                if m.len() > 1024 {
                    m.clear();
                }
                m.insert(index, e.clone());
            }
            return Err(e.to_string());
        }
        Ok(())
    }

    /// Serializes the whole applied state.
    pub fn snapshot_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&*self.read()).unwrap_or_default()
    }

    /// Replaces the whole state from a snapshot taken at `index`.
    pub fn restore_bytes(&self, index: u64, data: &[u8]) -> Result<(), String> {
        let mut st: StoreState = if data.is_empty() {
            StoreState::default()
        } else {
            serde_json::from_slice(data).map_err(|e| format!("corrupt store snapshot: {e}"))?
        };
        st.reindex();
        st.last_index = st.last_index.max(index);
        *self.write_state() = st;
        Ok(())
    }

    /// Empties the store (after leaving the swarm).
    pub fn clear(&self) {
        *self.write_state() = StoreState::default();
        self.inner.local_index.store(0, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::{Meta, Object, ObjectKind, Service, Task, TaskState, TaskStatus};

    fn service(id: &str) -> Service {
        Service {
            id: id.into(),
            meta: Meta::new_now(),
            spec: Default::default(),
            previous_spec: None,
            spec_version: 1,
            endpoint: None,
            update_status: None,
            registry_auth: None,
            job_iteration: 0,
        }
    }

    fn task(id: &str, sid: &str, node: Option<&str>) -> Task {
        Task {
            id: id.into(),
            meta: Meta::new_now(),
            service_id: sid.into(),
            service_name: "web".into(),
            slot: 1,
            node_id: node.map(Into::into),
            spec: Default::default(),
            spec_version: 1,
            desired_state: TaskState::Running,
            status: TaskStatus::new(TaskState::New, "created"),
            labels: Default::default(),
            job_iteration: None,
        }
    }

    #[tokio::test]
    async fn create_update_delete_with_versions_and_events() {
        let store = Store::new();
        let mut rx = store.subscribe();
        store
            .update(|tx| tx.create(Object::Service(service("s1"))))
            .await
            .unwrap();
        let v1 = store.view(|s| s.services["s1"].meta.version);
        assert!(v1 > 0);
        let ev = rx.recv().await.unwrap();
        assert_eq!(ev.kind, crate::EventKind::Created);

        // Stale version is refused and nothing changes.
        let mut stale = store.view(|s| s.services["s1"].clone());
        stale.meta.version = v1 + 100;
        let err = store
            .update(|tx| tx.update(Object::Service(stale.clone())))
            .await
            .unwrap_err();
        assert_eq!(err, StoreError::OutOfSequence);
        assert_eq!(store.view(|s| s.services["s1"].meta.version), v1);

        let mut fresh = store.view(|s| s.services["s1"].clone());
        fresh.spec_version = 2;
        store
            .update(|tx| tx.update(Object::Service(fresh)))
            .await
            .unwrap();
        assert!(store.view(|s| s.services["s1"].meta.version) > v1);
        assert_eq!(store.view(|s| s.services["s1"].spec_version), 2);

        store
            .update(|tx| tx.delete(ObjectKind::Service, "s1"))
            .await
            .unwrap();
        assert!(store.view(|s| s.services.is_empty()));
        let missing = store
            .update(|tx| tx.delete(ObjectKind::Service, "s1"))
            .await
            .unwrap_err();
        assert!(matches!(missing, StoreError::NotFound { .. }));
    }

    #[tokio::test]
    async fn batch_is_atomic_and_indexes_follow() {
        let store = Store::new();
        store
            .update(|tx| {
                tx.create(Object::Task(task("t1", "s1", Some("n1"))))?;
                tx.create(Object::Task(task("t2", "s1", None)))
            })
            .await
            .unwrap();
        assert_eq!(store.view(|s| s.tasks_of_service("s1").count()), 2);
        assert_eq!(store.view(|s| s.tasks_on_node("n1").count()), 1);
        // Second create of t1 fails: the whole batch (including t3) is not applied.
        let r: Result<(), StoreError> = store
            .update(|tx| {
                tx.create(Object::Task(task("t3", "s1", None)))?;
                tx.create(Object::Task(task("t1", "s1", None)))
            })
            .await;
        assert!(r.is_err());
        assert_eq!(store.view(|s| s.tasks.len()), 2);
        // Moving a task to another node moves it in the index.
        let mut t2 = store.view(|s| s.tasks["t2"].clone());
        t2.node_id = Some("n2".into());
        store
            .update(|tx| tx.update(Object::Task(t2)))
            .await
            .unwrap();
        assert_eq!(store.view(|s| s.tasks_on_node("n2").count()), 1);
    }

    #[tokio::test]
    async fn snapshot_restore_round_trips() {
        let store = Store::new();
        store
            .update(|tx| {
                tx.create(Object::Service(service("s1")))?;
                tx.create(Object::Task(task("t1", "s1", Some("n1"))))
            })
            .await
            .unwrap();
        let snap = store.snapshot_bytes();
        let other = Store::new();
        other.restore_bytes(7, &snap).unwrap();
        assert_eq!(
            other.view(|s| s.tasks_on_node("n1").count()),
            1,
            "indexes rebuilt"
        );
        assert_eq!(
            other.view(|s| s.services.clone()),
            store.view(|s| s.services.clone())
        );
        assert!(other.restore_bytes(1, b"{not json").is_err());
    }

    #[tokio::test]
    async fn apply_payload_rejects_garbage_without_panicking() {
        let store = Store::new();
        assert!(store.apply_payload(1, b"\xff\x00garbage").is_err());
        assert!(store.view(|s| s.tasks.is_empty()));
    }
}
