//! The [`Store`] handle: reads, serialized writes through a [`Proposer`], watches.

use crate::state::{Batch, Event, StoreState};
use crate::tx::Tx;
use crate::StoreError;
use futures::future::BoxFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::broadcast;

/// Replicates an encoded [`Batch`]; resolves with the log index once the batch was applied to
/// this store (through [`Store::apply_payload`]). A batch that was committed but refused on
/// apply resolves with the error it was refused with ([`StoreError::from_rejection`] of the
/// reason [`Store::apply_payload`] returned).
pub trait Proposer: Send + Sync + 'static {
    fn propose(&self, payload: Vec<u8>) -> BoxFuture<'static, Result<u64, StoreError>>;
}

struct Inner {
    state: RwLock<StoreState>,
    events: broadcast::Sender<Arc<Event>>,
    write: tokio::sync::Mutex<()>,
    proposer: RwLock<Option<Arc<dyn Proposer>>>,
    local_index: AtomicU64,
    /// The batch this store is proposing (one at a time: the write lock) and its payload: when
    /// the entry comes back to be applied here, the batch is used instead of decoding the
    /// payload again (the same bytes decode to the same batch).
    proposing: Mutex<Option<(Vec<u8>, Batch)>>,
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
///
/// The channel keeps every event until each receiver has seen it, so one receiver that is
/// not polled (an agent's assignment stream blocked on a frozen or slow node) pins up to this
/// many events, each a full copy of the object and of its previous version (~8 KB inline plus
/// the specs). At 65,536 that was most of a manager's memory after a burst of 10,000 tasks
/// (three writes each); 1,024 (two of the manager's 500-intent transactions) bounds it to
/// ~10 MB. Every watcher already treats `Lagged` as "re-read the state".
const WATCH_CAPACITY: usize = 1024;

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
                proposing: Mutex::new(None),
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
                self.apply_batch(index, batch)?;
                Ok(index)
            }
            // A batch refused on apply comes back as the proposer's error (the reason the leader
            // saw, identical on every replica), not from this store's own apply: a manager that
            // catches up from a snapshot never applies the entry.
            Some(p) => {
                let start = std::time::Instant::now();
                let actions = batch.actions.len();
                let payload = batch.encode()?;
                let bytes = payload.len();
                let encoded = start.elapsed();
                *self.proposing() = Some((payload.clone(), batch));
                let res = p.propose(payload).await;
                self.proposing().take();
                tracing::debug!(
                    actions,
                    bytes,
                    encode_us = encoded.as_micros() as u64,
                    commit_us = (start.elapsed() - encoded).as_micros() as u64,
                    ok = res.is_ok(),
                    "store write"
                );
                res
            }
        }
    }

    fn proposing(&self) -> std::sync::MutexGuard<'_, Option<(Vec<u8>, Batch)>> {
        self.inner
            .proposing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn apply_batch(&self, index: u64, batch: Batch) -> Result<(), StoreError> {
        let events = {
            let mut st = self.write_state();
            if index <= st.last_index && st.last_index > 0 {
                // Already applied (replay after restore).
                return Ok(());
            }
            match st.apply_owned(index, batch) {
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
    /// apply (a conflict) is skipped on every replica alike; the error is returned as
    /// [`StoreError::to_rejection`] text, which the Raft layer hands to the proposer.
    pub fn apply_payload(&self, index: u64, payload: &[u8]) -> Result<(), String> {
        let own = {
            let mut slot = self.proposing();
            match slot.as_ref() {
                Some((bytes, _)) if bytes.as_slice() == payload => slot.take().map(|(_, b)| b),
                _ => None,
            }
        };
        match own {
            Some(b) => Ok(b),
            None => Batch::decode(payload),
        }
        .and_then(|b| self.apply_batch(index, b))
        .map_err(|e| e.to_rejection())
    }

    /// Serializes the whole applied state (JSON, compressed: see `codec`).
    pub fn snapshot_bytes(&self) -> Vec<u8> {
        let json = serde_json::to_vec(&*self.read()).unwrap_or_default();
        crate::codec::pack(json)
    }

    /// Replaces the whole state from a snapshot taken at Raft log `index`.
    ///
    /// `last_index` stays what the snapshot recorded (the index of the last store write), not
    /// `index`: the entries between them are Raft's own (blank, membership), which replicas that
    /// applied the log never counted either, so every replica ends with the same state.
    pub fn restore_bytes(&self, _index: u64, data: &[u8]) -> Result<(), String> {
        let mut st: StoreState = if data.is_empty() {
            StoreState::default()
        } else {
            let json =
                crate::codec::unpack(data).map_err(|e| format!("corrupt store snapshot: {e}"))?;
            serde_json::from_slice(&json).map_err(|e| format!("corrupt store snapshot: {e}"))?
        };
        st.reindex();
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
    use crate::state::Action;
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
            service_labels: None,
            networks: Vec::new(),
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
        // The snapshot's own last write index, not the Raft index it was taken at (later
        // Raft-only entries): the same state as the store it came from.
        assert_eq!(other.view(|s| s.last_index), store.view(|s| s.last_index));
        assert_eq!(other.view(|s| s.clone()), store.view(|s| s.clone()));
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
    async fn a_services_tasks_share_one_spec_however_they_arrive() {
        let spec = |image: &str| shoal_api::engine::TaskSpec {
            container_spec: Some(shoal_api::engine::TaskSpecContainerSpec {
                image: Some(image.into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let with = |id: &str, image: &str| {
            let mut t = task(id, "s1", None);
            t.spec = std::sync::Arc::new(spec(image));
            t
        };
        let store = Store::new();
        // Each task arrives with its own allocation, as entries decoded from the log do.
        let batch = Batch {
            actions: vec![
                Action::Create(Object::Service(service("s1"))),
                Action::Create(Object::Task(with("t1", "busybox"))),
                Action::Create(Object::Task(with("t2", "busybox"))),
                Action::Create(Object::Task(with("t3", "nginx"))),
            ],
        };
        store.apply_payload(1, &batch.encode().unwrap()).unwrap();
        let update = Batch {
            actions: vec![Action::Update(Object::Task({
                let mut t = with("t2", "busybox");
                t.meta.version = 1;
                t.status = TaskStatus::new(TaskState::Running, "started");
                t
            }))],
        };
        store.apply_payload(2, &update.encode().unwrap()).unwrap();
        let shared = |st: &StoreState, a: &str, b: &str| {
            std::sync::Arc::ptr_eq(&st.tasks[a].spec, &st.tasks[b].spec)
        };
        store.view(|st| {
            assert!(shared(st, "t1", "t2"), "equal specs share");
            assert!(!shared(st, "t1", "t3"), "a different spec is its own");
            assert_eq!(
                st.tasks["t3"]
                    .spec
                    .container_spec
                    .as_ref()
                    .unwrap()
                    .image
                    .as_deref(),
                Some("nginx")
            );
        });
        let other = Store::new();
        other.restore_bytes(2, &store.snapshot_bytes()).unwrap();
        other.view(|st| {
            assert!(shared(st, "t1", "t2"), "shared again after a restore");
            assert!(!shared(st, "t1", "t3"));
        });
        assert_eq!(other.view(|s| s.clone()), store.view(|s| s.clone()));
    }

    #[tokio::test]
    async fn large_snapshots_and_batches_are_compressed_and_round_trip() {
        let store = Store::new();
        store
            .update(|tx| {
                for i in 0..50 {
                    tx.create(Object::Task(task(&format!("t{i}"), "s1", Some("n1"))))?;
                }
                Ok::<_, StoreError>(())
            })
            .await
            .unwrap();
        let snap = store.snapshot_bytes();
        let json = serde_json::to_vec(&store.view(|s| s.clone())).unwrap();
        assert!(
            snap.len() * 4 < json.len(),
            "{} vs {}",
            snap.len(),
            json.len()
        );
        let other = Store::new();
        other.restore_bytes(1, &snap).unwrap();
        assert_eq!(other.view(|s| s.clone()), store.view(|s| s.clone()));
        // Snapshots written before compression (plain JSON) still load.
        let old = Store::new();
        old.restore_bytes(1, &json).unwrap();
        assert_eq!(old.view(|s| s.clone()), store.view(|s| s.clone()));

        let batch = Batch {
            actions: store.view(|s| {
                s.tasks
                    .values()
                    .map(|t| crate::Action::Update(Object::Task(t.clone())))
                    .collect()
            }),
        };
        let bytes = batch.encode().unwrap();
        assert!(bytes.len() * 4 < serde_json::to_vec(&batch).unwrap().len());
        assert_eq!(Batch::decode(&bytes).unwrap(), batch);
        let plain = serde_json::to_vec(&batch).unwrap();
        assert_eq!(Batch::decode(&plain).unwrap(), batch, "older entries");
    }

    /// Raft in one process: the proposed payload is applied to this store and to a follower.
    struct Loopback {
        me: std::sync::Weak<Inner>,
        follower: Store,
        next: AtomicU64,
    }

    impl Proposer for Loopback {
        fn propose(&self, payload: Vec<u8>) -> BoxFuture<'static, Result<u64, StoreError>> {
            let index = self.next.fetch_add(1, Ordering::SeqCst) + 1;
            let me = self.me.upgrade().map(|inner| Store { inner });
            let follower = self.follower.clone();
            Box::pin(async move {
                let me = me.ok_or_else(|| StoreError::Unavailable("gone".into()))?;
                let _ = follower.apply_payload(index, &payload);
                me.apply_payload(index, &payload)
                    .map_err(|r| StoreError::from_rejection(&r))?;
                Ok(index)
            })
        }
    }

    #[tokio::test]
    async fn the_proposer_applies_its_own_batch_as_the_others_decode_it() {
        let leader = Store::new();
        let follower = Store::new();
        leader.set_proposer(Some(Arc::new(Loopback {
            me: Arc::downgrade(&leader.inner),
            follower: follower.clone(),
            next: AtomicU64::new(0),
        })));
        leader
            .update(|tx| {
                tx.create(Object::Service(service("s1")))?;
                for i in 0..20 {
                    tx.create(Object::Task(task(&format!("t{i}"), "s1", Some("n1"))))?;
                }
                Ok::<_, StoreError>(())
            })
            .await
            .unwrap();
        let mut t = leader.view(|s| s.tasks["t1"].clone());
        t.node_id = Some("n2".into());
        leader
            .update(|tx| tx.update(Object::Task(t)))
            .await
            .unwrap();
        // A batch the store refuses on apply is refused on both, and reported to the writer.
        let named = |id: &str| {
            let mut s = service(id);
            s.spec.name = Some("web".into());
            Object::Service(s)
        };
        leader.update(|tx| tx.create(named("a"))).await.unwrap();
        let err = leader.update(|tx| tx.create(named("b"))).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        assert!(leader.proposing().is_none(), "nothing left behind");
        assert_eq!(leader.view(|s| s.clone()), follower.view(|s| s.clone()));
        assert_eq!(leader.view(|s| s.tasks_on_node("n2").count()), 1);
    }

    /// A proposer whose entries the leader refused: the error it reports is what the writer
    /// sees, whatever this store applied (here: nothing at all).
    struct Refusing(StoreError);

    impl Proposer for Refusing {
        fn propose(&self, _payload: Vec<u8>) -> BoxFuture<'static, Result<u64, StoreError>> {
            let e = self.0.clone();
            Box::pin(async move { Err(StoreError::from_rejection(&e.to_rejection())) })
        }
    }

    #[tokio::test]
    async fn a_refusal_reported_by_the_proposer_reaches_the_writer() {
        let store = Store::new();
        store.set_proposer(Some(Arc::new(Refusing(StoreError::OutOfSequence))));
        let err = store
            .update(|tx| tx.create(Object::Service(service("s1"))))
            .await
            .unwrap_err();
        assert_eq!(err, StoreError::OutOfSequence);
    }

    #[tokio::test]
    async fn apply_payload_reports_a_refusal_as_rejection_text() {
        let store = Store::new();
        let create = Batch {
            actions: vec![crate::Action::Create(Object::Service(service("s1")))],
        };
        let bytes = create.encode().unwrap();
        store.apply_payload(1, &bytes).unwrap();
        let reason = store.apply_payload(2, &bytes).unwrap_err();
        assert_eq!(
            StoreError::from_rejection(&reason),
            StoreError::Exists {
                kind: ObjectKind::Service,
                id: "s1".into()
            }
        );
    }

    #[tokio::test]
    async fn apply_payload_rejects_garbage_without_panicking() {
        let store = Store::new();
        assert!(store.apply_payload(1, b"\xff\x00garbage").is_err());
        assert!(store.view(|s| s.tasks.is_empty()));
    }
}
