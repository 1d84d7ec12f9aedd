//! The pure part of `shoal stack`: which networks to create, which services to create,
//! update or prune (with docker's `--resolve-image` rules for the image), secret and config
//! names resolved to IDs in service specs, and the stack counts of `stack ls`. Nothing here
//! talks to the daemon, so every decision is unit tested.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use bollard::models::{Service, ServiceSpec, Task};
use shoal_compose::convert::{LABEL_IMAGE, LABEL_NAMESPACE};

use crate::format::{enum_str, natural_cmp};
use crate::service::normalize_image;

/// `--resolve-image`: when the registry is asked for the image digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolveImage {
    /// Always (docker's default).
    Always,
    /// Only when the image changed since the last deploy.
    Changed,
    /// Never.
    Never,
}

impl FromStr for ResolveImage {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(ResolveImage::Always),
            "changed" => Ok(ResolveImage::Changed),
            "never" => Ok(ResolveImage::Never),
            other => Err(format!("Invalid option {other} for flag --resolve-image")),
        }
    }
}

/// Docker's check of a stack name: it must not be blank.
pub fn validate_stack_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err(format!("invalid stack name: {name:?}"));
    }
    Ok(())
}

/// The label filter selecting the objects of stack `namespace`.
pub fn namespace_filter(namespace: &str) -> String {
    format!("{LABEL_NAMESPACE}={namespace}")
}

/// The name of `full` within the stack (`NS_web` -> `web`).
pub fn descope<'a>(namespace: &str, full: &'a str) -> &'a str {
    full.strip_prefix(namespace)
        .and_then(|rest| rest.strip_prefix('_'))
        .unwrap_or(full)
}

/// External networks that are checked: docker skips the predefined `host`, `bridge`, `none`
/// (and `container:` modes).
pub fn network_needs_check(name: &str) -> bool {
    !matches!(name, "host" | "bridge" | "none" | "default") && !name.starts_with("container:")
}

/// The networks of the stack that do not exist yet, in name order.
pub fn networks_to_create<T>(wanted: &BTreeMap<String, T>, existing: &[String]) -> Vec<String> {
    wanted
        .keys()
        .filter(|n| !existing.contains(n))
        .cloned()
        .collect()
}

/// What `stack deploy` does with one service.
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceAction {
    /// `Creating service NS_web`.
    Create {
        /// Full service name.
        name: String,
        /// The spec to create.
        spec: ServiceSpec,
    },
    /// `Updating service NS_web (id: ...)`: the new spec sent with the current version.
    Update {
        /// Full service name.
        name: String,
        /// Current service ID.
        id: String,
        /// Current version index.
        version: u64,
        /// The spec to send.
        spec: ServiceSpec,
    },
}

impl ServiceAction {
    /// The full service name.
    pub fn name(&self) -> &str {
        match self {
            ServiceAction::Create { name, .. } | ServiceAction::Update { name, .. } => name,
        }
    }

    /// The spec sent.
    pub fn spec(&self) -> &ServiceSpec {
        match self {
            ServiceAction::Create { spec, .. } | ServiceAction::Update { spec, .. } => spec,
        }
    }
}

fn spec_name(s: &Service) -> String {
    s.spec
        .as_ref()
        .and_then(|sp| sp.name.clone())
        .unwrap_or_default()
}

fn image_of(spec: &ServiceSpec) -> Option<String> {
    spec.task_template
        .as_ref()
        .and_then(|t| t.container_spec.as_ref())
        .and_then(|c| c.image.clone())
}

/// Plans the services of a deploy, in full-name order: services not in `existing` are
/// created, the others updated (unchanged ones too, as docker does). Images are sent tagged
/// (`:latest` added as docker's client does); the `com.docker.stack.image` label keeps the
/// file's text, to which the next deploy compares. On update, the image
/// pinned by a previous deploy is kept while the file's image is unchanged (unless
/// `--resolve-image always`), and the current `ForceUpdate` counter is preserved.
pub fn plan_services(
    wanted: &BTreeMap<String, ServiceSpec>,
    existing: &[Service],
    resolve: ResolveImage,
) -> Vec<ServiceAction> {
    let by_name: HashMap<String, &Service> = existing.iter().map(|s| (spec_name(s), s)).collect();
    let mut specs: Vec<ServiceSpec> = wanted.values().cloned().collect();
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    specs
        .into_iter()
        .map(|mut spec| {
            let name = spec.name.clone().unwrap_or_default();
            let file_image = image_of(&spec).unwrap_or_default();
            // The image as docker's client sends it: tagged (`busybox` -> `busybox:latest`).
            if let Some(cs) = spec
                .task_template
                .as_mut()
                .and_then(|t| t.container_spec.as_mut())
            {
                cs.image = cs.image.as_deref().map(normalize_image);
            }
            let Some(current) = by_name.get(&name) else {
                return ServiceAction::Create { name, spec };
            };
            let cur_spec = current.spec.clone().unwrap_or_default();
            let recorded = cur_spec
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_IMAGE))
                .cloned()
                .unwrap_or_default();
            let keep_current_image = resolve != ResolveImage::Always && file_image == recorded;
            if let Some(tt) = spec.task_template.as_mut() {
                if keep_current_image {
                    if let (Some(cs), Some(img)) = (tt.container_spec.as_mut(), image_of(&cur_spec))
                    {
                        cs.image = Some(img);
                    }
                }
                tt.force_update = cur_spec.task_template.as_ref().and_then(|t| t.force_update);
            }
            ServiceAction::Update {
                name,
                id: current.id.clone().unwrap_or_default(),
                version: current.version.as_ref().and_then(|v| v.index).unwrap_or(0),
                spec,
            }
        })
        .collect()
}

/// Services of the stack that the file no longer has (`--prune`): (name, ID) in name order.
pub fn services_to_prune(
    namespace: &str,
    wanted: &BTreeMap<String, ServiceSpec>,
    existing: &[Service],
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = existing
        .iter()
        .filter(|s| !wanted.contains_key(descope(namespace, &spec_name(s))))
        .map(|s| (spec_name(s), s.id.clone().unwrap_or_default()))
        .collect();
    out.sort_by(|a, b| natural_cmp(&a.0, &b.0));
    out
}

/// Secret and config names the services refer to (sorted, deduplicated).
pub fn referenced_names(services: &BTreeMap<String, ServiceSpec>) -> (Vec<String>, Vec<String>) {
    let mut secrets = Vec::new();
    let mut configs = Vec::new();
    for spec in services.values() {
        let Some(cs) = spec
            .task_template
            .as_ref()
            .and_then(|t| t.container_spec.as_ref())
        else {
            continue;
        };
        secrets.extend(
            cs.secrets
                .iter()
                .flatten()
                .filter_map(|s| s.secret_name.clone()),
        );
        configs.extend(
            cs.configs
                .iter()
                .flatten()
                .filter_map(|c| c.config_name.clone()),
        );
    }
    secrets.sort();
    secrets.dedup();
    configs.sort();
    configs.dedup();
    (secrets, configs)
}

/// The compose names of the services that use secret (`config == false`) or config `name`.
pub fn services_using(
    services: &BTreeMap<String, ServiceSpec>,
    name: &str,
    config: bool,
) -> Vec<String> {
    services
        .iter()
        .filter(|(_, spec)| {
            let cs = spec
                .task_template
                .as_ref()
                .and_then(|t| t.container_spec.as_ref());
            match cs {
                Some(cs) if config => cs
                    .configs
                    .iter()
                    .flatten()
                    .any(|c| c.config_name.as_deref() == Some(name)),
                Some(cs) => cs
                    .secrets
                    .iter()
                    .flatten()
                    .any(|s| s.secret_name.as_deref() == Some(name)),
                None => false,
            }
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// Fills the secret and config IDs of a service spec from their names
/// (`secret not found: NAME` / `config not found: NAME` when one is missing).
pub fn resolve_references(
    spec: &mut ServiceSpec,
    secrets: &HashMap<String, String>,
    configs: &HashMap<String, String>,
) -> Result<(), String> {
    let Some(cs) = spec
        .task_template
        .as_mut()
        .and_then(|t| t.container_spec.as_mut())
    else {
        return Ok(());
    };
    for s in cs.secrets.iter_mut().flatten() {
        let name = s.secret_name.clone().unwrap_or_default();
        match secrets.get(&name) {
            Some(id) => s.secret_id = Some(id.clone()),
            None => return Err(format!("secret not found: {name}")),
        }
    }
    for c in cs.configs.iter_mut().flatten() {
        let name = c.config_name.clone().unwrap_or_default();
        match configs.get(&name) {
            Some(id) => c.config_id = Some(id.clone()),
            None => return Err(format!("config not found: {name}")),
        }
    }
    Ok(())
}

/// `stack ls`: every stack with its number of services, in natural name order.
pub fn count_stacks(services: &[Service]) -> Vec<(String, usize)> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for s in services {
        if let Some(ns) = s
            .spec
            .as_ref()
            .and_then(|sp| sp.labels.as_ref())
            .and_then(|l| l.get(LABEL_NAMESPACE))
        {
            *counts.entry(ns.clone()).or_default() += 1;
        }
    }
    let mut out: Vec<(String, usize)> = counts.into_iter().collect();
    out.sort_by(|a, b| natural_cmp(&a.0, &b.0));
    out
}

/// Whether every task has reached a terminal state (what `stack rm --detach=false` waits for).
pub fn all_tasks_terminal(tasks: &[Task]) -> bool {
    tasks.iter().all(|t| {
        matches!(
            enum_str(&t.status.as_ref().and_then(|s| s.state)).as_str(),
            "complete" | "shutdown" | "failed" | "rejected" | "remove" | "orphaned"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{
        ObjectVersion, TaskSpec, TaskSpecContainerSpec, TaskSpecContainerSpecConfigs,
        TaskSpecContainerSpecSecrets,
    };

    fn spec(name: &str, image: &str) -> ServiceSpec {
        ServiceSpec {
            name: Some(name.to_string()),
            labels: Some(HashMap::from([
                (LABEL_NAMESPACE.to_string(), "ns".to_string()),
                (LABEL_IMAGE.to_string(), image.to_string()),
            ])),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(image.to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn service(id: &str, version: u64, spec: ServiceSpec) -> Service {
        Service {
            id: Some(id.to_string()),
            version: Some(ObjectVersion {
                index: Some(version),
            }),
            spec: Some(spec),
            ..Default::default()
        }
    }

    fn image(a: &ServiceAction) -> String {
        image_of(a.spec()).unwrap_or_default()
    }

    #[test]
    fn resolve_image_flag() {
        assert_eq!("changed".parse(), Ok(ResolveImage::Changed));
        assert_eq!(
            "sometimes".parse::<ResolveImage>(),
            Err("Invalid option sometimes for flag --resolve-image".to_string())
        );
    }

    #[test]
    fn stack_names() {
        assert!(validate_stack_name("getstartedlab").is_ok());
        assert_eq!(
            validate_stack_name("  "),
            Err("invalid stack name: \"  \"".to_string())
        );
        assert_eq!(descope("ns", "ns_web"), "web");
        assert_eq!(descope("ns", "other_web"), "other_web");
        assert_eq!(namespace_filter("ns"), "com.docker.stack.namespace=ns");
        assert!(!network_needs_check("host"));
        assert!(network_needs_check("outside"));
    }

    #[test]
    fn only_missing_networks_are_created() {
        let wanted = BTreeMap::from([("ns_a".to_string(), ()), ("ns_b".to_string(), ())]);
        assert_eq!(
            networks_to_create(&wanted, &["ns_a".to_string()]),
            vec!["ns_b".to_string()]
        );
        assert!(networks_to_create(&wanted, &["ns_b".into(), "ns_a".into()]).is_empty());
    }

    #[test]
    fn new_services_are_created_existing_ones_updated() {
        let wanted = BTreeMap::from([
            ("web".to_string(), spec("ns_web", "nginx")),
            ("db".to_string(), spec("ns_db", "redis")),
        ]);
        let mut pinned = spec("ns_web", "nginx");
        if let Some(cs) = pinned
            .task_template
            .as_mut()
            .and_then(|t| t.container_spec.as_mut())
        {
            cs.image = Some("nginx:latest@sha256:abc".into());
        }
        if let Some(t) = pinned.task_template.as_mut() {
            t.force_update = Some(3);
        }
        let existing = vec![service("id1", 7, pinned)];
        let plan = plan_services(&wanted, &existing, ResolveImage::Changed);
        assert_eq!(plan.len(), 2);
        assert!(matches!(&plan[0], ServiceAction::Create { name, .. } if name == "ns_db"));
        match &plan[1] {
            ServiceAction::Update {
                name, id, version, ..
            } => {
                assert_eq!((name.as_str(), id.as_str(), *version), ("ns_web", "id1", 7));
            }
            other => panic!("expected an update, got {other:?}"),
        }
        // Unchanged image: the digest pinned before is kept; ForceUpdate is preserved.
        assert_eq!(image(&plan[1]), "nginx:latest@sha256:abc");
        assert_eq!(
            plan[1]
                .spec()
                .task_template
                .as_ref()
                .and_then(|t| t.force_update),
            Some(3)
        );
        // `always` sends the file's image again.
        let plan = plan_services(&wanted, &existing, ResolveImage::Always);
        assert_eq!(image(&plan[1]), "nginx:latest");
        assert_eq!(image(&plan[0]), "redis:latest");
        assert_eq!(
            plan[0]
                .spec()
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_IMAGE)),
            Some(&"redis".to_string())
        );
    }

    #[test]
    fn changed_image_is_sent() {
        let wanted = BTreeMap::from([("web".to_string(), spec("ns_web", "nginx:2"))]);
        let existing = vec![service("id1", 2, spec("ns_web", "nginx:1"))];
        let plan = plan_services(&wanted, &existing, ResolveImage::Never);
        assert_eq!(image(&plan[0]), "nginx:2");
    }

    #[test]
    fn prune_removes_services_gone_from_the_file() {
        let wanted = BTreeMap::from([("web".to_string(), spec("ns_web", "nginx"))]);
        let existing = vec![
            service("i3", 1, spec("ns_worker10", "x")),
            service("i1", 1, spec("ns_web", "nginx")),
            service("i2", 1, spec("ns_worker9", "x")),
        ];
        assert_eq!(
            services_to_prune("ns", &wanted, &existing),
            vec![
                ("ns_worker9".to_string(), "i2".to_string()),
                ("ns_worker10".to_string(), "i3".to_string())
            ]
        );
    }

    #[test]
    fn references_resolve_to_ids() {
        let mut s = spec("ns_web", "nginx");
        if let Some(cs) = s
            .task_template
            .as_mut()
            .and_then(|t| t.container_spec.as_mut())
        {
            cs.secrets = Some(vec![TaskSpecContainerSpecSecrets {
                secret_name: Some("ns_pw".into()),
                ..Default::default()
            }]);
            cs.configs = Some(vec![TaskSpecContainerSpecConfigs {
                config_name: Some("ns_conf".into()),
                ..Default::default()
            }]);
        }
        let services = BTreeMap::from([("web".to_string(), s.clone())]);
        assert_eq!(
            referenced_names(&services),
            (vec!["ns_pw".to_string()], vec!["ns_conf".to_string()])
        );
        assert_eq!(services_using(&services, "ns_pw", false), vec!["web"]);
        assert!(services_using(&services, "ns_pw", true).is_empty());
        let secrets = HashMap::from([("ns_pw".to_string(), "s1".to_string())]);
        let configs = HashMap::from([("ns_conf".to_string(), "c1".to_string())]);
        let mut missing = s.clone();
        assert_eq!(
            resolve_references(&mut missing, &secrets, &HashMap::new()),
            Err("config not found: ns_conf".to_string())
        );
        assert_eq!(
            resolve_references(&mut missing, &HashMap::new(), &configs),
            Err("secret not found: ns_pw".to_string())
        );
        resolve_references(&mut s, &secrets, &configs).expect("resolve");
        let cs = s
            .task_template
            .and_then(|t| t.container_spec)
            .unwrap_or_default();
        assert_eq!(
            cs.secrets.unwrap_or_default()[0].secret_id.as_deref(),
            Some("s1")
        );
        assert_eq!(
            cs.configs.unwrap_or_default()[0].config_id.as_deref(),
            Some("c1")
        );
    }

    #[test]
    fn stacks_are_counted_by_namespace_label() {
        let mut other = spec("b_x", "x");
        other
            .labels
            .as_mut()
            .map(|l| l.insert(LABEL_NAMESPACE.into(), "stack10".into()));
        let mut plain = spec("lone", "x");
        plain.labels = None;
        let services = vec![
            service("1", 1, spec("ns_a", "x")),
            service("2", 1, other),
            service("3", 1, spec("ns_b", "x")),
            service("4", 1, plain),
        ];
        assert_eq!(
            count_stacks(&services),
            vec![("ns".to_string(), 2), ("stack10".to_string(), 1)]
        );
    }
}
