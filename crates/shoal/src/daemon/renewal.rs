//! Certificate renewal, on every node.
//!
//! ```text
//!  loop: sleep until creds.needs_renewal(now) (checked at least every CHECK_EVERY)
//!        new key + CSR ─► Ca.RenewCertificate (mutual TLS, current certificate, any manager;
//!                         the CA issues with the role the store records)
//!        save atomically (managers: through the key store, which keeps the data key)
//!        swap TLS: client link + Raft transport (set_tls), server certificate (SwapCert,
//!        used by new connections), the daemon's client config (Logs calls)
//!  a failure is retried after RETRY_AFTER
//! ```

use anyhow::Context;
use shoal_ca::{KeyStore, NodeCredentials};
use shoal_rpc::{ClientOptions, GrpcRaftTransport, NodeClient, RemoteManagerLink};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// How often the renewal point is checked, at most (a clock jump cannot delay it longer).
pub const CHECK_EVERY: Duration = Duration::from_secs(60);
/// Wait after a failed renewal.
pub const RETRY_AFTER: Duration = Duration::from_secs(10);

/// The server's certificate, replaceable while the server runs: new TLS handshakes use the
/// latest one.
#[derive(Debug)]
pub struct SwapCert(RwLock<Arc<dyn rustls::server::ResolvesServerCert>>);

impl SwapCert {
    /// Installs a swappable resolver into `config`, starting with its current certificate.
    pub fn install(config: &mut rustls::ServerConfig) -> Arc<SwapCert> {
        let swap = Arc::new(SwapCert(RwLock::new(config.cert_resolver.clone())));
        config.cert_resolver = swap.clone();
        swap
    }

    /// Presents `creds`' certificate from now on.
    pub fn set(&self, creds: &NodeCredentials) -> anyhow::Result<()> {
        let cfg = shoal_ca::server_config(creds)?;
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = cfg.cert_resolver.clone();
        Ok(())
    }
}

impl rustls::server::ResolvesServerCert for SwapCert {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let inner = self.0.read().unwrap_or_else(|p| p.into_inner()).clone();
        inner.resolve(hello)
    }
}

/// When to look again: `None` when renewal is due now, else how long to sleep (capped at
/// [`CHECK_EVERY`]).
pub fn next_check(creds: &NodeCredentials, now: SystemTime) -> Option<Duration> {
    if creds.needs_renewal(now) {
        return None;
    }
    let at = creds.identity().ok()?.renewal_time();
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(CHECK_EVERY),
    )
}

/// One renewal: a new key and CSR, sent to the first of `managers` that answers, over mutual
/// TLS with the current certificate (`tls`). Returns the new credentials (same root).
pub async fn renew_once(
    creds: &NodeCredentials,
    managers: &[String],
    tls: Arc<rustls::ClientConfig>,
) -> anyhow::Result<NodeCredentials> {
    let me = creds
        .identity()
        .context("reading the current certificate")?;
    let request = NodeCredentials::generate_csr()?;
    let mut errors = Vec::new();
    for addr in managers {
        let opts = ClientOptions::default()
            .with_connect_timeout(Duration::from_secs(2))
            .with_request_timeout(Some(Duration::from_secs(10)));
        let res = match NodeClient::connect_with(addr, tls.clone(), opts).await {
            Ok(c) => c.renew_certificate(&request.csr_pem).await,
            Err(e) => Err(e),
        };
        match res {
            Ok(cert_pem) => {
                let next = request.into_credentials(cert_pem, creds.root_pem.clone())?;
                let id = next.identity()?;
                anyhow::ensure!(
                    id.node_id == me.node_id && id.cluster_id == me.cluster_id,
                    "the renewed certificate names node {} of cluster {}, not this node",
                    id.node_id,
                    id.cluster_id
                );
                return Ok(next);
            }
            Err(e) => errors.push(format!("{addr}: {e}")),
        }
    }
    anyhow::bail!(
        "no manager renewed this node's certificate: {}",
        if errors.is_empty() {
            "no manager addresses".to_string()
        } else {
            errors.join("; ")
        }
    )
}

/// Where renewed credentials go and which TLS users switch to them.
pub struct Renewer {
    /// The certificates directory (workers save there).
    pub certs_dir: PathBuf,
    /// Managers: the key store (keeps the data key, autolock wrapping).
    pub keystore: Option<Arc<Mutex<KeyStore>>>,
    /// The agent's link to the managers (also where renewals are sent).
    pub link: RemoteManagerLink,
    /// Managers: the Raft transport.
    pub transport: Option<Arc<GrpcRaftTransport>>,
    /// The node-to-node server's certificate.
    pub server_cert: Arc<SwapCert>,
    /// Told the new client config (the daemon's status snapshot).
    pub on_client_tls: Box<dyn Fn(Arc<rustls::ClientConfig>) + Send + Sync>,
}

impl Renewer {
    /// Saves `creds` atomically and switches every TLS user to them.
    pub fn apply(&self, creds: &NodeCredentials) -> anyhow::Result<()> {
        match &self.keystore {
            Some(ks) => ks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .save_credentials(creds)?,
            None => creds.save(&self.certs_dir)?,
        }
        let client = Arc::new(shoal_ca::client_config(creds)?);
        self.server_cert.set(creds)?;
        self.link.set_tls(client.clone());
        if let Some(t) = &self.transport {
            t.set_tls(client.clone());
        }
        (self.on_client_tls)(client);
        Ok(())
    }

    /// Renews now; returns the new credentials once saved and in use.
    pub async fn renew(&self, creds: &NodeCredentials) -> anyhow::Result<NodeCredentials> {
        let tls = Arc::new(shoal_ca::client_config(creds)?);
        let next = renew_once(creds, &self.link.managers(), tls).await?;
        self.apply(&next)?;
        Ok(next)
    }

    /// Renews whenever due, until `stop`.
    pub async fn run(self, mut creds: NodeCredentials, mut stop: watch::Receiver<bool>) {
        loop {
            let wait = match next_check(&creds, SystemTime::now()) {
                Some(w) => w,
                None => match self.renew(&creds).await {
                    Ok(next) => {
                        tracing::info!("renewed this node's certificate");
                        creds = next;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "certificate renewal failed; retrying");
                        RETRY_AFTER
                    }
                },
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                r = stop.changed() => if r.is_err() || *stop.borrow() { return },
            }
            if *stop.borrow() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::cluster::{peer_fn, CaService};
    use shoal_api::{Cluster, Meta, Node, NodeRole, Object};
    use shoal_ca::{Role, RootCa};
    use shoal_rpc::Handlers;
    use shoal_store::Store;

    #[test]
    fn renewal_is_due_at_the_certificates_renewal_point() {
        let root = RootCa::generate("c").unwrap();
        let life = Duration::from_secs(3600 * 24);
        let creds = NodeCredentials::issue_local(&root, "n1", Role::Worker, life).unwrap();
        let id = creds.identity().unwrap();
        let now = SystemTime::now();
        let wait = next_check(&creds, now).expect("a fresh certificate is not due");
        assert!(wait > Duration::ZERO && wait <= CHECK_EVERY);
        // Just before the renewal point: the wait ends at the point.
        let before = id.renewal_time() - Duration::from_secs(5);
        let w = next_check(&creds, before).unwrap();
        assert!(w <= Duration::from_secs(5) && w > Duration::from_secs(4));
        assert_eq!(next_check(&creds, id.renewal_time()), None);
        assert_eq!(
            next_check(&creds, id.not_after + Duration::from_secs(1)),
            None
        );
        // An unreadable certificate is due.
        let mut broken = creds.clone();
        broken.cert_pem = "garbage".into();
        assert_eq!(next_check(&broken, now), None);
    }

    fn node(id: &str, role: NodeRole) -> Node {
        crate::daemon::testing::node(id, role, role, None, 0)
    }

    #[tokio::test]
    async fn a_worker_renews_over_mutual_tls_saves_and_takes_the_role_of_the_store() {
        let root = RootCa::generate("cluster1").unwrap();
        let store = Store::new();
        let cluster = Cluster {
            id: "cluster1".into(),
            meta: Meta::new_now(),
            spec: Default::default(),
            worker_join_token: String::new(),
            manager_join_token: String::new(),
            root_ca_cert: root.cert_pem().to_string(),
            root_ca_key: root.key_pem().unwrap().to_string(),
            removed_nodes: Vec::new(),
            unlock_key: String::new(),
            default_addr_pool: Vec::new(),
            subnet_size: 24,
            data_path_port: 4789,
        };
        store
            .update(|tx| {
                tx.create(Object::Cluster(cluster))?;
                tx.create(Object::Node(node("m1", NodeRole::Manager)))?;
                tx.create(Object::Node(node("w1", NodeRole::Worker)))
            })
            .await
            .unwrap();
        let life = Duration::from_secs(3600 * 24);
        let mgr = NodeCredentials::issue_local(&root, "m1", Role::Manager, life).unwrap();
        let worker = NodeCredentials::issue_local(&root, "w1", Role::Worker, life).unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop_tx, stop_rx) = watch::channel(false);
        let handlers = Handlers::new().with_ca(Arc::new(CaService {
            store: store.clone(),
        }));
        let server = tokio::spawn(shoal_rpc::serve(
            listener,
            Arc::new(shoal_ca::server_config(&mgr).unwrap()),
            peer_fn("cluster1".into(), Some(store.clone())),
            handlers,
            stop_rx,
        ));

        let dir = tempfile::tempdir().unwrap();
        worker.save(dir.path()).unwrap();
        let mut server_cfg = shoal_ca::server_config(&worker).unwrap();
        let swap = SwapCert::install(&mut server_cfg);
        let seen = Arc::new(Mutex::new(None));
        let seen2 = seen.clone();
        let link = RemoteManagerLink::new(
            vec![addr.clone()],
            Arc::new(shoal_ca::client_config(&worker).unwrap()),
        );
        let renewer = Renewer {
            certs_dir: dir.path().to_path_buf(),
            keystore: None,
            link,
            transport: None,
            server_cert: swap,
            on_client_tls: Box::new(move |c| *seen2.lock().unwrap() = Some(c)),
        };
        let next = renewer.renew(&worker).await.unwrap();
        assert_ne!(next.cert_pem, worker.cert_pem);
        assert_ne!(next.key_pem, worker.key_pem);
        let id = next.identity().unwrap();
        assert_eq!((id.node_id.as_str(), id.role), ("w1", Role::Worker));
        let saved = NodeCredentials::load(dir.path()).unwrap();
        assert_eq!(saved.cert_pem, next.cert_pem);
        assert!(seen.lock().unwrap().is_some());

        // The renewed certificate is accepted for the next renewal, and a role changed in the
        // store is what the CA issues (promotion).
        store
            .update(|tx| {
                let mut n = tx.get_node("w1").unwrap();
                n.role = NodeRole::Manager;
                tx.update(Object::Node(n))
            })
            .await
            .unwrap();
        let promoted = renewer.renew(&next).await.unwrap();
        assert_eq!(promoted.identity().unwrap().role, Role::Manager);

        // An unknown node is refused.
        let stranger = NodeCredentials::issue_local(&root, "x9", Role::Worker, life).unwrap();
        let err = renew_once(
            &stranger,
            &[addr],
            Arc::new(shoal_ca::client_config(&stranger).unwrap()),
        )
        .await
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("not part of this swarm"),
            "{err:#}"
        );

        let _ = stop_tx.send(true);
        let _ = server.await;
    }
}
