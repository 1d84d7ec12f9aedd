//! The pass guard: what the manager loop waits for before each planning pass, so that it plans
//! on a store holding every write it must see.
//!
//! ```text
//!  each pass:  guard.ready() ──ok──► plan on the store ──► write the plan (may time out)
//!                 │  └─err──► no pass now (the loop retries on the next event or tick)
//!                 │
//!                 ├─ NoGuard       one store, no Raft (tests, a store of its own): nothing
//!                 │                to wait for, every write is applied when `update` returns
//!                 └─ OwnLogGuard   the Raft leader:
//!                      1. read barrier: leadership confirmed by a quorum, and everything
//!                         committed before it applied here (a new leader has applied its
//!                         predecessor's last writes)
//!                      2. this leader's own log applied up to its last index as of then (a
//!                         write of an earlier pass that timed out stays in the log and may
//!                         still commit: planning without it would plan the same slot again)
//! ```
//!
//! A read barrier alone is not enough for (2): it covers what was *committed* when it was
//! called, and a timed-out proposal may not be committed yet. Waiting for the whole own log
//! is: every orchestration write comes from this leader, so once its log is applied, nothing
//! it wrote earlier can still appear later.
//!
//! The Raft side is behind [`ReplicatedLog`], so this crate does not depend on the Raft crate:
//! the daemon implements it for its Raft node, the simulation for its own.

use futures::future::BoxFuture;
use std::sync::Arc;

/// What the manager awaits before each pass. `Err` carries why the store is not fit to plan
/// on yet (no quorum, no longer the leader, a timeout).
pub trait PassGuard: Send + Sync {
    /// Resolves once the store may be planned on.
    fn ready(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// Nothing to wait for: the store is the only copy (no Raft).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoGuard;

impl PassGuard for NoGuard {
    fn ready(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// The replicated log under the store, as the leader's guard needs it.
pub trait ReplicatedLog: Send + Sync {
    /// Linearizable read barrier: confirms leadership with a quorum and waits until everything
    /// committed before the call is applied to the store.
    fn read_barrier(&self) -> BoxFuture<'_, Result<(), String>>;
    /// The index of the last entry in this node's log (committed or not), if any.
    fn last_log_index(&self) -> Option<u64>;
    /// Waits until the entry at `index` is applied to the store (bounded: `Err` on timeout).
    fn wait_applied(&self, index: u64) -> BoxFuture<'_, Result<(), String>>;
}

/// The Raft leader's guard: read barrier, then the own log applied (see the module docs).
pub struct OwnLogGuard<L> {
    log: L,
}

impl<L: ReplicatedLog> OwnLogGuard<L> {
    pub fn new(log: L) -> Self {
        OwnLogGuard { log }
    }

    /// The guard, ready to hand to [`crate::manager::Manager::with_guard`].
    pub fn shared(log: L) -> Arc<dyn PassGuard>
    where
        L: 'static,
    {
        Arc::new(Self::new(log))
    }
}

impl<L: ReplicatedLog> PassGuard for OwnLogGuard<L> {
    fn ready(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.log
                .read_barrier()
                .await
                .map_err(|e| format!("read barrier: {e}"))?;
            // Read after the barrier: the last index then covers every proposal this leader
            // made before, including the ones whose callers gave up waiting.
            if let Some(last) = self.log.last_log_index() {
                self.log
                    .wait_applied(last)
                    .await
                    .map_err(|e| format!("waiting for the leader's own log (index {last}): {e}"))?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A log whose calls are recorded; `applied` moves to `last` when asked to wait.
    #[derive(Default)]
    struct FakeLog {
        calls: Mutex<Vec<String>>,
        last: Option<u64>,
        barrier_fails: bool,
        wait_fails: bool,
    }

    impl FakeLog {
        fn calls(&self) -> Vec<String> {
            self.calls.lock().map(|c| c.clone()).unwrap_or_default()
        }
        fn note(&self, s: String) {
            if let Ok(mut c) = self.calls.lock() {
                c.push(s);
            }
        }
    }

    impl ReplicatedLog for FakeLog {
        fn read_barrier(&self) -> BoxFuture<'_, Result<(), String>> {
            self.note("barrier".into());
            let fails = self.barrier_fails;
            Box::pin(async move {
                if fails {
                    Err("no quorum".into())
                } else {
                    Ok(())
                }
            })
        }
        fn last_log_index(&self) -> Option<u64> {
            self.note("last".into());
            self.last
        }
        fn wait_applied(&self, index: u64) -> BoxFuture<'_, Result<(), String>> {
            self.note(format!("wait {index}"));
            let fails = self.wait_fails;
            Box::pin(async move {
                if fails {
                    Err("timed out".into())
                } else {
                    Ok(())
                }
            })
        }
    }

    #[tokio::test]
    async fn barrier_first_then_the_own_log_up_to_its_last_index() {
        let g = OwnLogGuard::new(FakeLog {
            last: Some(42),
            ..Default::default()
        });
        assert_eq!(g.ready().await, Ok(()));
        assert_eq!(g.log.calls(), vec!["barrier", "last", "wait 42"]);
    }

    #[tokio::test]
    async fn an_empty_log_needs_no_wait() {
        let g = OwnLogGuard::new(FakeLog::default());
        assert_eq!(g.ready().await, Ok(()));
        assert_eq!(g.log.calls(), vec!["barrier", "last"]);
    }

    #[tokio::test]
    async fn a_failed_barrier_or_wait_is_not_ready() {
        let g = OwnLogGuard::new(FakeLog {
            last: Some(7),
            barrier_fails: true,
            ..Default::default()
        });
        let e = g.ready().await.expect_err("not ready");
        assert!(e.contains("read barrier: no quorum"), "{e}");
        assert_eq!(
            g.log.calls(),
            vec!["barrier"],
            "nothing after a failed barrier"
        );

        let g = OwnLogGuard::new(FakeLog {
            last: Some(7),
            wait_fails: true,
            ..Default::default()
        });
        let e = g.ready().await.expect_err("not ready");
        assert!(e.contains("index 7") && e.contains("timed out"), "{e}");
    }

    #[tokio::test]
    async fn no_guard_is_always_ready() {
        assert_eq!(NoGuard.ready().await, Ok(()));
    }
}
