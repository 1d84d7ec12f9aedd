//! Control of the swarm-scoped networks, secrets and configs (swarmkit's `controlapi` for
//! them), and the resolution of the references a service spec makes to them.
//!
//! ```text
//!  create_network(req) ──► validate (overlay only, name, labels) ──► tx: name free, subnets
//!                          (ipam::allocate_subnets) and VNI (ipam::next_vni) ──► Network
//!  remove_network(ref) ──► refused while a service attaches to it
//!  create_secret/config ─► validate name and data size ──► tx ──► the store's name rule
//!  update_secret/config ─► labels only ("only updates to Labels are allowed")
//!  remove_secret/config ─► refused while a service references it
//!  create/update_service ─► resolve_service_refs: network targets (name, ID or prefix) become
//!                           IDs; unknown networks, secrets or configs are refused
//! ```
//!
//! Refusals carry Docker's texts: swarmkit's gRPC errors reach Docker clients as
//! `rpc error: code = ... desc = ...`, and the daemon's own checks as plain messages.

use crate::control::{Control, ControlError};
use crate::ipam;
use base64::Engine as _;
use shoal_api::{engine, new_id, Config, Meta, Network, Object, ObjectKind, Secret};
use shoal_store::{StoreError, StoreState};

type Result<T> = std::result::Result<T, ControlError>;

/// The largest secret swarmkit accepts (500 KiB, exclusive).
pub const MAX_SECRET_SIZE: usize = 500 * 1024;
/// The largest config swarmkit accepts (1000 KiB, exclusive).
pub const MAX_CONFIG_SIZE: usize = 1000 * 1024;
/// Label reserved for swarmkit's own networks.
const INTERNAL_LABEL: &str = "com.docker.swarm.internal";
/// The option key Docker shows a network's VXLAN identifier under.
pub const VXLAN_OPTION: &str = "com.docker.network.driver.overlay.vxlanid_list";
/// Names the daemon reserves for its local networks.
const PREDEFINED: [&str; 4] = ["bridge", "host", "none", "default"];

fn rpc(code: &str, msg: impl std::fmt::Display) -> String {
    format!("rpc error: code = {code} desc = {msg}")
}

fn rpc_invalid(msg: impl std::fmt::Display) -> ControlError {
    ControlError::InvalidArgument(rpc("InvalidArgument", msg))
}

/// swarmkit's rule for secret and config names.
fn validate_object_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(rpc_invalid("name must be provided"));
    }
    let b = name.as_bytes();
    let ok_edge = |c: &u8| c.is_ascii_alphanumeric();
    let valid = b.len() <= 64
        && b.first().is_some_and(ok_edge)
        && b.last().is_some_and(ok_edge)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if !valid {
        return Err(rpc_invalid(
            "invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character must be [a-zA-Z0-9]",
        ));
    }
    Ok(())
}

/// Decodes base64 data as the API sends it.
fn decode_data(data: Option<&str>) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(data.unwrap_or("").trim())
        .map_err(|e| {
            ControlError::InvalidArgument(format!("invalid JSON: illegal base64 data: {e}"))
        })
}

/// The network built for `swarm init`: `ingress`, overlay, VNI 4096, on the first subnet of
/// the swarm's default address pool (10.0.0.0/24 with the defaults).
pub fn ingress_network(pools: &[String], subnet_size: u32) -> Network {
    let subnet = ipam::from_pools(&[], pools, subnet_size)
        .ok()
        .or_else(|| ipam::Cidr::parse(ipam::INGRESS_SUBNET));
    let (subnet, gateway) = subnet
        .map(|c| (c.to_string(), c.first_host().to_string()))
        .unwrap_or_else(|| (ipam::INGRESS_SUBNET.into(), "10.0.0.1".into()));
    Network {
        id: new_id(),
        meta: Meta::new_now(),
        spec: Box::new(engine::NetworkCreateRequest {
            name: "ingress".into(),
            driver: Some("overlay".into()),
            scope: Some("swarm".into()),
            ingress: Some(true),
            labels: Some(Default::default()),
            ipam: Some(engine::Ipam {
                driver: Some("default".into()),
                config: Some(vec![engine::IpamConfig {
                    subnet: Some(subnet.clone()),
                    gateway: Some(gateway.clone()),
                    ..Default::default()
                }]),
                options: None,
            }),
            ..Default::default()
        }),
        subnets: vec![shoal_api::NetworkSubnet {
            subnet,
            gateway,
            ip_range: String::new(),
        }],
        vni: ipam::FIRST_VNI,
    }
}

/// Which services (names, sorted) satisfy `uses`.
fn services_using(
    state: &StoreState,
    uses: impl Fn(&engine::ServiceSpec) -> bool,
) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = state
        .services
        .values()
        .filter(|s| uses(&s.spec))
        .map(|s| (s.id.clone(), s.name().to_string()))
        .collect();
    v.sort_by(|a, b| a.1.cmp(&b.1));
    v
}

/// The network targets of a service spec (task template and the deprecated service level).
fn network_targets(spec: &engine::ServiceSpec) -> impl Iterator<Item = &str> {
    spec.task_template
        .as_ref()
        .and_then(|t| t.networks.as_deref())
        .unwrap_or(&[])
        .iter()
        .chain(spec.networks.as_deref().unwrap_or(&[]))
        .filter_map(|n| n.target.as_deref())
}

fn secret_ids(spec: &engine::ServiceSpec) -> impl Iterator<Item = &str> {
    spec.task_template
        .as_ref()
        .and_then(|t| t.container_spec.as_ref())
        .and_then(|c| c.secrets.as_deref())
        .unwrap_or(&[])
        .iter()
        .filter_map(|s| s.secret_id.as_deref())
}

fn config_ids(spec: &engine::ServiceSpec) -> impl Iterator<Item = &str> {
    spec.task_template
        .as_ref()
        .and_then(|t| t.container_spec.as_ref())
        .and_then(|c| c.configs.as_deref())
        .unwrap_or(&[])
        .iter()
        .filter_map(|s| s.config_id.as_deref())
}

/// Resolves a network reference in `state`: ID, exact name, unique ID prefix.
pub fn find_network<'a>(state: &'a StoreState, reference: &str) -> Result<&'a Network> {
    if let Some(n) = state.networks.get(reference) {
        return Ok(n);
    }
    let by_name: Vec<&Network> = state
        .networks
        .values()
        .filter(|n| n.name() == reference)
        .collect();
    let found = if by_name.is_empty() && !reference.is_empty() {
        state
            .networks
            .values()
            .filter(|n| n.id.starts_with(reference))
            .collect()
    } else {
        by_name
    };
    match found.as_slice() {
        [] => Err(ControlError::NotFound(format!(
            "network {reference} not found"
        ))),
        [one] => Ok(one),
        many => Err(ControlError::InvalidArgument(format!(
            "network {reference} is ambiguous ({} matches found)",
            many.len()
        ))),
    }
}

/// Resolves what a service spec refers to, as the daemon does before handing it to swarmkit:
/// network targets become network IDs (Docker stores IDs); an unknown network is refused with
/// `network X not found`, explicit attachment to the ingress network is refused, and secrets
/// and configs referenced by ID must exist.
pub fn resolve_service_refs(state: &StoreState, spec: &mut engine::ServiceSpec) -> Result<()> {
    let mut lists: Vec<&mut Vec<engine::NetworkAttachmentConfig>> = Vec::new();
    if let Some(t) = spec
        .task_template
        .as_mut()
        .and_then(|t| t.networks.as_mut())
    {
        lists.push(t);
    }
    if let Some(n) = spec.networks.as_mut() {
        lists.push(n);
    }
    for list in lists {
        for att in list.iter_mut() {
            let target = att.target.clone().unwrap_or_default();
            let net = find_network(state, &target).map_err(|e| match e {
                ControlError::NotFound(_) => {
                    ControlError::NotFound(format!("network {target} not found"))
                }
                other => other,
            })?;
            if net.is_ingress() {
                return Err(rpc_invalid(format!(
                    "Service cannot be explicitly attached to the ingress network \"{}\"",
                    net.name()
                )));
            }
            att.target = Some(net.id.clone());
        }
    }
    for id in secret_ids(spec) {
        if !state.secrets.contains_key(id) {
            return Err(rpc_invalid(format!("secret not found: {id}")));
        }
    }
    for id in config_ids(spec) {
        if !state.configs.contains_key(id) {
            return Err(rpc_invalid(format!("config not found: {id}")));
        }
    }
    Ok(())
}

/// Resolution of a secret or config reference: ID, exact name, unique ID prefix.
fn pick_named<'a, T>(
    kind: &str,
    reference: &str,
    all: impl Iterator<Item = &'a T> + Clone,
    id: impl Fn(&T) -> &str,
    name: impl Fn(&T) -> &str,
) -> Result<&'a T>
where
    T: 'a,
{
    if let Some(o) = all.clone().find(|o| id(o) == reference) {
        return Ok(o);
    }
    let mut found: Vec<&T> = all.clone().filter(|o| name(o) == reference).collect();
    if found.is_empty() && !reference.is_empty() {
        found = all.filter(|o| id(o).starts_with(reference)).collect();
    }
    match found.as_slice() {
        [] => Err(ControlError::NotFound(format!(
            "{kind} {reference} not found"
        ))),
        [one] => Ok(one),
        many => Err(ControlError::InvalidArgument(format!(
            "{kind} {reference} is ambiguous ({} matches found)",
            many.len()
        ))),
    }
}

/// The store's name conflict, or any other error, as a control error.
fn store_err(e: StoreError) -> ControlError {
    ControlError::from(e)
}

impl Control {
    // ------------------------------------------------------------------------------ networks

    /// The network with this ID, else this exact name, else the one ID starting with it.
    pub fn resolve_network(&self, reference: &str) -> Result<Network> {
        self.store().view(|s| find_network(s, reference).cloned())
    }

    /// Validates a create request and creates the overlay network, allocating its subnets
    /// (the requested ones or one from the swarm's default address pool) and its VNI.
    pub async fn create_network(&self, mut req: engine::NetworkCreateRequest) -> Result<String> {
        let name = req.name.clone();
        if name.is_empty() {
            return Err(ControlError::InvalidArgument(rpc(
                "InvalidArgument",
                "meta: name must be provided",
            )));
        }
        if PREDEFINED.contains(&name.as_str()) {
            return Err(ControlError::Forbidden(format!(
                "{name} is a pre-defined network and cannot be created"
            )));
        }
        match req.driver.as_deref() {
            None | Some("") | Some("overlay") => req.driver = Some("overlay".into()),
            Some(other) => {
                return Err(ControlError::InvalidArgument(format!(
                    "network driver \"{other}\" is not supported: Shoal creates only swarm-scoped overlay networks (use --driver overlay)"
                )))
            }
        }
        match req.scope.as_deref() {
            None | Some("") | Some("swarm") => req.scope = Some("swarm".into()),
            Some(other) => {
                return Err(ControlError::InvalidArgument(format!(
                    "network scope \"{other}\" is not supported: overlay networks are swarm-scoped"
                )))
            }
        }
        if req.config_only.unwrap_or(false) || req.config_from.is_some() {
            return Err(ControlError::InvalidArgument(
                "config-only networks are not supported by Shoal".into(),
            ));
        }
        if req
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(INTERNAL_LABEL))
        {
            return Err(ControlError::Forbidden(rpc(
                "PermissionDenied",
                format!("label {INTERNAL_LABEL} is for predefined internal networks and cannot be applied by users"),
            )));
        }
        let id = new_id();
        self.store()
            .update(|tx| {
                let state = tx.state();
                if state
                    .networks
                    .values()
                    .any(|n| n.name().eq_ignore_ascii_case(&name))
                {
                    return Err(ControlError::Conflict(format!(
                        "network with name {name} already exists"
                    )));
                }
                if req.ingress.unwrap_or(false) {
                    if let Some(i) = state.networks.values().find(|n| n.is_ingress()) {
                        return Err(ControlError::Conflict(rpc(
                            "AlreadyExists",
                            format!("ingress network ({}) is already present", i.id),
                        )));
                    }
                }
                let (pools, size) = state
                    .cluster
                    .as_ref()
                    .map(|c| (c.default_addr_pool.clone(), c.subnet_size))
                    .unwrap_or_default();
                let subnets = ipam::allocate_subnets(state, req.ipam.as_ref(), &pools, size)
                    .map_err(|m| ControlError::InvalidArgument(rpc("InvalidArgument", m)))?;
                let network = Network {
                    id: id.clone(),
                    meta: Meta::new_now(),
                    spec: Box::new(req.clone()),
                    subnets,
                    vni: ipam::next_vni(state),
                };
                tx.create(Object::Network(network)).map_err(store_err)
            })
            .await?;
        Ok(id)
    }

    /// Removes a network no service attaches to. The ingress network may go once no
    /// service publishes ports through it.
    pub async fn remove_network(&self, reference: &str) -> Result<()> {
        let net = self.resolve_network(reference)?;
        self.store()
            .update(|tx| {
                let state = tx.state();
                let using = services_using(state, |spec| {
                    network_targets(spec).any(|t| t == net.id || t == net.name())
                });
                if let Some((sid, _)) = using.first() {
                    return Err(ControlError::FailedPrecondition(rpc(
                        "FailedPrecondition",
                        format!("network {} is in use by service {sid}", net.id),
                    )));
                }
                if net.is_ingress() {
                    let publishing = services_using(state, |spec| {
                        spec.endpoint_spec
                            .as_ref()
                            .and_then(|e| e.ports.as_ref())
                            .is_some_and(|p| {
                                p.iter().any(|p| {
                                    p.published_port.unwrap_or(0) > 0
                                        && shoal_api::spec::port_is_ingress(p)
                                })
                            })
                    });
                    if let Some((_, name)) = publishing.first() {
                        return Err(ControlError::FailedPrecondition(rpc(
                            "FailedPrecondition",
                            format!("ingress network cannot be removed because service {name} depends on it"),
                        )));
                    }
                }
                match tx.delete(ObjectKind::Network, &net.id) {
                    Err(StoreError::NotFound { .. }) => Err(ControlError::NotFound(format!(
                        "network {reference} not found"
                    ))),
                    other => other.map_err(store_err),
                }
            })
            .await
    }

    // ------------------------------------------------------------------------------- secrets

    /// The secret with this ID, else this exact name, else the one ID starting with it.
    pub fn resolve_secret(&self, reference: &str) -> Result<Secret> {
        self.store().view(|s| {
            pick_named(
                "secret",
                reference,
                s.secrets.values(),
                |o| &o.id,
                |o| o.name(),
            )
            .cloned()
        })
    }

    /// Creates a secret (`Data` base64, 1 byte to 500 KiB, not only white space). `Driver`
    /// and `Templating` are kept but not acted on.
    pub async fn create_secret(&self, spec: engine::SecretSpec) -> Result<String> {
        validate_object_name(spec.name.as_deref().unwrap_or(""))?;
        let data = decode_data(spec.data.as_deref())?;
        if data.is_empty() || data.len() >= MAX_SECRET_SIZE {
            return Err(rpc_invalid(format!(
                "secret data must be larger than 0 and less than {MAX_SECRET_SIZE} bytes"
            )));
        }
        if data.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(rpc_invalid(
                "secret data must contain non white space bytes",
            ));
        }
        let secret = Secret {
            id: new_id(),
            meta: Meta::new_now(),
            spec,
        };
        let id = secret.id.clone();
        self.store()
            .update(|tx| tx.create(Object::Secret(secret.clone())))
            .await
            .map_err(store_err)?;
        Ok(id)
    }

    /// Updates a secret's labels; any other change is refused as swarmkit does.
    pub async fn update_secret(
        &self,
        reference: &str,
        version: u64,
        spec: engine::SecretSpec,
    ) -> Result<()> {
        let id = self.resolve_secret(reference)?.id;
        self.store()
            .update(|tx| {
                let Some(mut secret) = tx.get_secret(&id) else {
                    return Err(ControlError::NotFound(format!("secret {id} not found")));
                };
                labels_only(
                    (&spec.name, spec.data.as_deref()),
                    (&secret.spec.name, secret.spec.data.as_deref()),
                )?;
                secret.meta.version = version;
                secret.spec.labels = spec.labels.clone();
                tx.update(Object::Secret(secret)).map_err(store_err)
            })
            .await
    }

    /// Removes a secret no service references.
    pub async fn remove_secret(&self, reference: &str) -> Result<()> {
        let secret = self.resolve_secret(reference)?;
        self.store()
            .update(|tx| {
                let using =
                    services_using(tx.state(), |spec| secret_ids(spec).any(|s| s == secret.id));
                in_use("secret", secret.name(), &using)?;
                tx.delete(ObjectKind::Secret, &secret.id).map_err(store_err)
            })
            .await
    }

    // ------------------------------------------------------------------------------- configs

    /// The config with this ID, else this exact name, else the one ID starting with it.
    pub fn resolve_config(&self, reference: &str) -> Result<Config> {
        self.store().view(|s| {
            pick_named(
                "config",
                reference,
                s.configs.values(),
                |o| &o.id,
                |o| o.name(),
            )
            .cloned()
        })
    }

    /// Creates a config (`Data` base64, 1 byte to 1000 KiB).
    pub async fn create_config(&self, spec: engine::ConfigSpec) -> Result<String> {
        validate_object_name(spec.name.as_deref().unwrap_or(""))?;
        let data = decode_data(spec.data.as_deref())?;
        if data.is_empty() || data.len() >= MAX_CONFIG_SIZE {
            return Err(rpc_invalid(format!(
                "config data must be larger than 0 and less than {MAX_CONFIG_SIZE} bytes"
            )));
        }
        let config = Config {
            id: new_id(),
            meta: Meta::new_now(),
            spec,
        };
        let id = config.id.clone();
        self.store()
            .update(|tx| tx.create(Object::Config(config.clone())))
            .await
            .map_err(store_err)?;
        Ok(id)
    }

    /// Updates a config's labels; any other change is refused as swarmkit does.
    pub async fn update_config(
        &self,
        reference: &str,
        version: u64,
        spec: engine::ConfigSpec,
    ) -> Result<()> {
        let id = self.resolve_config(reference)?.id;
        self.store()
            .update(|tx| {
                let Some(mut config) = tx.get_config(&id) else {
                    return Err(ControlError::NotFound(format!("config {id} not found")));
                };
                labels_only(
                    (&spec.name, spec.data.as_deref()),
                    (&config.spec.name, config.spec.data.as_deref()),
                )?;
                config.meta.version = version;
                config.spec.labels = spec.labels.clone();
                tx.update(Object::Config(config)).map_err(store_err)
            })
            .await
    }

    /// Removes a config no service references.
    pub async fn remove_config(&self, reference: &str) -> Result<()> {
        let config = self.resolve_config(reference)?;
        self.store()
            .update(|tx| {
                let using =
                    services_using(tx.state(), |spec| config_ids(spec).any(|s| s == config.id));
                in_use("config", config.name(), &using)?;
                tx.delete(ObjectKind::Config, &config.id).map_err(store_err)
            })
            .await
    }
}

/// swarmkit's rule for updating a secret or config: the name stays, and data, when sent, is
/// the stored data (`docker stack deploy` sends it again unchanged); only labels change.
/// Arguments are (name, base64 data) of the request and of the stored object.
fn labels_only(
    asked: (&Option<String>, Option<&str>),
    stored: (&Option<String>, Option<&str>),
) -> Result<()> {
    let data_changed = match asked.1 {
        None | Some("") => false,
        Some(_) => decode_data(asked.1)? != decode_data(stored.1)?,
    };
    if asked.0 != stored.0 || data_changed {
        return Err(rpc_invalid("only updates to Labels are allowed"));
    }
    Ok(())
}

/// swarmkit's refusal to remove a secret or config services still reference.
fn in_use(kind: &str, name: &str, using: &[(String, String)]) -> Result<()> {
    if using.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = using.iter().map(|(_, n)| n.as_str()).collect();
    let noun = if names.len() == 1 {
        "service"
    } else {
        "services"
    };
    Err(rpc_invalid(format!(
        "{kind} '{name}' is in use by the following {noun}: {}",
        names.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_store::Store;

    fn control_with(pools: Vec<String>, size: u32) -> (Control, Store) {
        let store = Store::new();
        let control = Control::new(store.clone());
        let cluster = shoal_api::Cluster {
            id: "c".into(),
            meta: Meta::new_now(),
            spec: Default::default(),
            worker_join_token: String::new(),
            manager_join_token: String::new(),
            root_ca_cert: String::new(),
            root_ca_key: String::new(),
            removed_nodes: Vec::new(),
            unlock_key: String::new(),
            default_addr_pool: pools.clone(),
            subnet_size: size,
            data_path_port: 4789,
        };
        let ingress = ingress_network(&pools, size);
        futures::executor::block_on(store.update(|tx| {
            tx.create(Object::Cluster(cluster))?;
            tx.create(Object::Network(ingress))
        }))
        .expect("seed");
        (control, store)
    }

    fn overlay(name: &str) -> engine::NetworkCreateRequest {
        engine::NetworkCreateRequest {
            name: name.into(),
            driver: Some("overlay".into()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn networks_take_the_next_pool_subnets_and_vnis() {
        let (control, _store) = control_with(vec!["10.20.0.0/16".into()], 26);
        let ingress = control.resolve_network("ingress").unwrap();
        assert_eq!(ingress.subnets[0].subnet, "10.20.0.0/26");
        assert_eq!(ingress.subnets[0].gateway, "10.20.0.1");
        assert_eq!(ingress.vni, 4096);
        let a = control.create_network(overlay("a")).await.unwrap();
        let b = control.create_network(overlay("b")).await.unwrap();
        let a = control.resolve_network(&a).unwrap();
        let b = control.resolve_network(&b).unwrap();
        assert_eq!(a.subnets[0].subnet, "10.20.0.64/26");
        assert_eq!(b.subnets[0].subnet, "10.20.0.128/26");
        assert_eq!((a.vni, b.vni), (4097, 4098));
        assert_eq!(a.spec.scope.as_deref(), Some("swarm"));
        // Freed blocks are reused.
        control.remove_network("a").await.unwrap();
        let c = control.create_network(overlay("c")).await.unwrap();
        let c = control.resolve_network(&c).unwrap();
        assert_eq!(
            (c.subnets[0].subnet.as_str(), c.vni),
            ("10.20.0.64/26", 4097)
        );
    }

    #[tokio::test]
    async fn service_references_resolve_to_ids_or_are_refused() {
        let (control, store) = control_with(Vec::new(), 0);
        let id = control.create_network(overlay("webnet")).await.unwrap();
        let mut spec = engine::ServiceSpec {
            task_template: Some(engine::TaskSpec {
                networks: Some(vec![engine::NetworkAttachmentConfig {
                    target: Some("webnet".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        store.view(|s| resolve_service_refs(s, &mut spec)).unwrap();
        let target = spec
            .task_template
            .as_ref()
            .and_then(|t| t.networks.as_ref());
        assert_eq!(target.unwrap()[0].target.as_deref(), Some(id.as_str()));
        // Already an ID: unchanged.
        store.view(|s| resolve_service_refs(s, &mut spec)).unwrap();
        let mut bad = spec.clone();
        bad.task_template
            .as_mut()
            .unwrap()
            .networks
            .as_mut()
            .unwrap()[0]
            .target = Some("nosuch".into());
        let err = store
            .view(|s| resolve_service_refs(s, &mut bad))
            .unwrap_err();
        assert_eq!(
            err,
            ControlError::NotFound("network nosuch not found".into())
        );
        bad.task_template
            .as_mut()
            .unwrap()
            .networks
            .as_mut()
            .unwrap()[0]
            .target = Some("ingress".into());
        let err = store
            .view(|s| resolve_service_refs(s, &mut bad))
            .unwrap_err();
        assert!(matches!(err, ControlError::InvalidArgument(ref m) if m.contains("ingress")));
    }

    #[tokio::test]
    async fn secret_and_config_validation() {
        let (control, _) = control_with(Vec::new(), 0);
        let spec = |name: &str, data: &str| engine::SecretSpec {
            name: Some(name.into()),
            data: Some(data.into()),
            ..Default::default()
        };
        let err = control
            .create_secret(spec("a b", "eA=="))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("invalid name"), "{err}");
        let err = control.create_secret(spec("ws", "ICAK")).await.unwrap_err();
        assert!(err
            .to_string()
            .ends_with("secret data must contain non white space bytes"));
        let err = control.create_secret(spec("b64", "***")).await.unwrap_err();
        assert!(err.to_string().contains("illegal base64"), "{err}");
        let id = control.create_secret(spec("ok", "eA==")).await.unwrap();
        assert_eq!(control.resolve_secret("ok").unwrap().id, id);
        let cfg = engine::ConfigSpec {
            name: Some("c".into()),
            data: Some(String::new()),
            ..Default::default()
        };
        let err = control.create_config(cfg).await.unwrap_err();
        assert!(err
            .to_string()
            .ends_with("config data must be larger than 0 and less than 1024000 bytes"));
    }
}
