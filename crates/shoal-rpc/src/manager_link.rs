//! [`RemoteManagerLink`]: the agent's [`ManagerLink`] to a manager on another machine, over the
//! Dispatcher service, with failover between managers.
//!
//! ```text
//!  managers: [m1, m2, m3]     current: connection to one of them (or none)
//!
//!  call(f):  for each manager at most once, starting with the current one
//!              connect if needed ── fails ─► next manager
//!              f(client)         ── fails ─► drop it, next manager
//!              ok ─► return (that manager stays current)
//!            all failed ─► LinkError listing every manager's error
//!
//!  assignments stream: ends on the first error or when the manager closes it, and marks that
//!  manager failed, so the worker's re-register goes to the next one
//!
//!  heartbeat: only to the manager of the session (the one the assignment stream comes from),
//!  bounded by the heartbeat period (at least HEARTBEAT_TIMEOUT_FLOOR); no answer in time
//!  marks that manager failed, so the worker re-registers elsewhere before the new leader's
//!  dispatcher declares the node down (3 periods). Without the bound, a manager cut off by a
//!  partition (packets dropped, no reset) held every agent until the request timeout and
//!  the new leader marked every node down and restarted every task.
//!
//!  register / heartbeat answers carry the managers' addresses: a non-empty list that differs
//!  from the known one replaces it (set_managers), so the link follows managers that join,
//!  leave or move; and the role the swarm records for this node, published on `role_watch`
//!  (the daemon changes roles when it differs from its certificate's: promote / demote)
//! ```

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Future, StreamExt};
use shoal_agent::worker::{LinkError, ManagerLink};
use shoal_api::dispatch::{AssignmentSet, StatusUpdate};
use shoal_api::engine;
use tokio::sync::watch;

use crate::{ClientOptions, NodeClient, PeerRole, RpcError};

/// The shortest wait for a heartbeat's answer, however short the period.
pub const HEARTBEAT_TIMEOUT_FLOOR: Duration = Duration::from_secs(1);

/// How long a heartbeat may wait for its answer: one period (not less than the floor), so a
/// silent manager is given up at most two periods after the last answer, within the three
/// periods after which a node is declared down.
pub fn heartbeat_timeout(period: Duration) -> Duration {
    period.max(HEARTBEAT_TIMEOUT_FLOOR)
}

/// A [`ManagerLink`] to remote managers, failing over between them.
#[derive(Clone)]
pub struct RemoteManagerLink {
    inner: Arc<Inner>,
}

struct Inner {
    tls: RwLock<Arc<rustls::ClientConfig>>,
    opts: ClientOptions,
    state: Mutex<State>,
    /// The role the managers last said this node has.
    role: watch::Sender<Option<PeerRole>>,
    /// The heartbeat period the managers last gave.
    period: Mutex<Option<Duration>>,
}

#[derive(Default)]
struct State {
    managers: Vec<String>,
    /// Index of the manager to dial when there is no current connection.
    next: usize,
    current: Option<NodeClient>,
}

impl Inner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the state is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets the connection to `addr` if it is the current one, and moves on to the next
    /// manager.
    fn fail(&self, addr: &str) {
        let mut st = self.state();
        if st.current.as_ref().is_some_and(|c| c.addr() == addr) {
            st.current = None;
            if let Some(i) = st.managers.iter().position(|m| m == addr) {
                st.next = i + 1;
            }
        }
    }
}

impl Inner {
    fn set_managers(&self, managers: Vec<String>) {
        let mut st = self.state();
        if let Some(c) = &st.current {
            if !managers.iter().any(|m| m == c.addr()) {
                st.current = None;
            }
        }
        st.managers = managers;
        st.next = 0;
    }

    /// Adopts the managers a manager sent, if it sent some and they differ (as a set) from
    /// the known ones.
    fn learn_managers(&self, mut managers: Vec<String>) {
        if managers.is_empty() {
            return;
        }
        managers.sort();
        managers.dedup();
        let mut known = self.state().managers.clone();
        known.sort();
        if known != managers {
            tracing::info!(?managers, "the swarm's managers changed");
            self.set_managers(managers);
        }
    }
}

impl RemoteManagerLink {
    /// A link to these managers (node-to-node addresses), presenting this node's certificate
    /// through `tls`.
    pub fn new(managers: Vec<String>, tls: Arc<rustls::ClientConfig>) -> Self {
        Self::with_options(managers, tls, ClientOptions::default())
    }

    /// The same with explicit client options.
    pub fn with_options(
        managers: Vec<String>,
        tls: Arc<rustls::ClientConfig>,
        opts: ClientOptions,
    ) -> Self {
        RemoteManagerLink {
            inner: Arc::new(Inner {
                tls: RwLock::new(tls),
                opts,
                state: Mutex::new(State {
                    managers,
                    ..State::default()
                }),
                role: watch::channel(None).0,
                period: Mutex::new(None),
            }),
        }
    }

    /// The managers this link knows of.
    pub fn managers(&self) -> Vec<String> {
        self.inner.state().managers.clone()
    }

    /// Replaces the list of managers. The current connection is kept if its manager is still
    /// listed.
    pub fn set_managers(&self, managers: Vec<String>) {
        self.inner.set_managers(managers);
    }

    /// The role the managers last said this node has (`None` until one says), updated by
    /// every register and heartbeat answer.
    pub fn role_watch(&self) -> watch::Receiver<Option<PeerRole>> {
        self.inner.role.subscribe()
    }

    fn learn_role(&self, role: Option<PeerRole>) {
        if role.is_some() {
            self.inner.role.send_if_modified(|r| {
                let changed = *r != role;
                *r = role;
                changed
            });
        }
    }

    fn period(&self) -> Option<Duration> {
        *self.inner.period.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_period(&self, period: Duration) {
        if !period.is_zero() {
            *self.inner.period.lock().unwrap_or_else(|p| p.into_inner()) = Some(period);
        }
    }

    /// The manager currently connected to, if any.
    pub fn current_manager(&self) -> Option<String> {
        self.inner
            .state()
            .current
            .as_ref()
            .map(|c| c.addr().to_string())
    }

    /// Replaces the client configuration (after a certificate renewal); the current connection
    /// is dropped so the next call presents the new certificate.
    pub fn set_tls(&self, tls: Arc<rustls::ClientConfig>) {
        *self.inner.tls.write().unwrap_or_else(|p| p.into_inner()) = tls;
        self.inner.state().current = None;
    }

    /// The current connection, or a new one to the next manager in turn.
    async fn client(&self) -> Result<NodeClient, String> {
        let addr = {
            let st = self.inner.state();
            if let Some(c) = &st.current {
                return Ok(c.clone());
            }
            if st.managers.is_empty() {
                return Err("no manager addresses are known".into());
            }
            st.managers[st.next % st.managers.len()].clone()
        };
        let tls = Arc::clone(&self.inner.tls.read().unwrap_or_else(|p| p.into_inner()));
        match NodeClient::connect_with(&addr, tls, self.inner.opts.clone()).await {
            Ok(c) => {
                let mut st = self.inner.state();
                if st.current.is_none() && st.managers.contains(&addr) {
                    st.current = Some(c.clone());
                }
                Ok(c)
            }
            Err(e) => {
                let mut st = self.inner.state();
                if let Some(i) = st.managers.iter().position(|m| *m == addr) {
                    st.next = i + 1;
                }
                Err(e.to_string())
            }
        }
    }

    /// Runs `f` against the current manager, failing over to the others in turn.
    async fn call<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T, LinkError>
    where
        F: FnMut(NodeClient) -> Fut,
        Fut: Future<Output = Result<T, RpcError>>,
    {
        let attempts = self.inner.state().managers.len().max(1);
        let mut errors = Vec::new();
        for _ in 0..attempts {
            let client = match self.client().await {
                Ok(c) => c,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let addr = client.addr().to_string();
            match f(client).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    tracing::debug!(manager = %addr, error = %e, "{what} failed; trying the next manager");
                    self.inner.fail(&addr);
                    errors.push(format!("{addr}: {e}"));
                }
            }
        }
        Err(LinkError(format!(
            "{what} failed on every manager: {}",
            errors.join("; ")
        )))
    }
}

#[async_trait::async_trait]
impl ManagerLink for RemoteManagerLink {
    async fn register(
        &self,
        node_id: &str,
        description: engine::NodeDescription,
        addr: &str,
    ) -> Result<Duration, LinkError> {
        let description = &description;
        let info = self
            .call("registering with a manager", |c| async move {
                c.register_info(node_id, description, addr).await
            })
            .await?;
        self.inner.learn_managers(info.managers);
        self.learn_role(info.role);
        self.set_period(info.period);
        Ok(info.period)
    }

    async fn heartbeat(&self, node_id: &str) -> Result<Duration, LinkError> {
        // The session lives on one manager: a heartbeat elsewhere would keep the node alive
        // while its assignment stream hangs on a manager that no longer answers.
        let Some(client) = self.inner.state().current.clone() else {
            return Err(LinkError(
                "no session with a manager (its connection was dropped)".into(),
            ));
        };
        let addr = client.addr().to_string();
        let limit = heartbeat_timeout(self.period().unwrap_or(HEARTBEAT_TIMEOUT_FLOOR));
        let info = match tokio::time::timeout(limit, client.heartbeat_info(node_id)).await {
            Ok(Ok(info)) => info,
            Ok(Err(e)) => {
                self.inner.fail(&addr);
                return Err(LinkError(format!("heartbeat to {addr}: {e}")));
            }
            Err(_) => {
                self.inner.fail(&addr);
                return Err(LinkError(format!(
                    "heartbeat to {addr}: no answer within {limit:?}"
                )));
            }
        };
        self.inner.learn_managers(info.managers);
        self.learn_role(info.role);
        self.set_period(info.period);
        Ok(info.period)
    }

    async fn assignments(
        &self,
        node_id: &str,
    ) -> Result<BoxStream<'static, AssignmentSet>, LinkError> {
        let (addr, stream) = self
            .call("opening the assignment stream", |c| async move {
                let s = c.assignments(node_id).await?;
                Ok((c.addr().to_string(), s))
            })
            .await?;
        let inner = Arc::clone(&self.inner);
        let out = futures::stream::unfold(Some((stream, inner, addr)), |st| async move {
            let (mut s, inner, addr) = st?;
            match s.next().await {
                Some(Ok(set)) => Some((set, Some((s, inner, addr)))),
                Some(Err(e)) => {
                    tracing::warn!(manager = %addr, error = %e, "assignment stream failed");
                    inner.fail(&addr);
                    None
                }
                None => {
                    tracing::info!(manager = %addr, "manager closed the assignment stream");
                    inner.fail(&addr);
                    None
                }
            }
        });
        Ok(out.boxed())
    }

    async fn report(&self, node_id: &str, updates: Vec<StatusUpdate>) -> Result<(), LinkError> {
        let updates = &updates;
        self.call("reporting task status", |c| async move {
            c.report_status(node_id, updates).await
        })
        .await
    }
}
