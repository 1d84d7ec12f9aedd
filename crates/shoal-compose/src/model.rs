//! The typed compose model: Compose file format 3.x and the Compose Specification.
//!
//! [`ComposeFile::from_value`] turns the YAML value produced by the loader (anchors
//! resolved, `x-` fields removed, variables interpolated, files merged) into typed
//! structures, checking every key and type the way `docker stack deploy` does. Failures
//! carry the key path of the offending value ([`ModelError`]). Relative paths (bind
//! sources, `env_file`, secret and config `file:`) are kept as written; the conversion
//! resolves them against the compose file's directory.

mod parse;
mod types;

pub use parse::{parse_cpus, parse_duration, parse_memory, parse_port_spec, split_shell_words};
pub use types::*;

use serde::Deserialize;
use serde_yaml::{Mapping, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A compose file that could not be turned into the typed model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelError {
    /// Key path of the failure, e.g. `["services", "web", "deploy", "replicas"]`.
    pub path: Vec<String>,
    /// Docker-like description of the failure.
    pub message: String,
}

impl ModelError {
    fn new(path: Vec<String>, message: impl Into<String>) -> Self {
        ModelError {
            path,
            message: message.into(),
        }
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else if self.message.starts_with("Additional property") {
            write!(f, "{} {}", self.path.join("."), self.message)
        } else {
            write!(f, "{}: {}", self.path.join("."), self.message)
        }
    }
}

impl std::error::Error for ModelError {}

/// Service options that a swarm ignores: `docker stack deploy` prints
/// `Ignoring unsupported options: ...` when a service sets any of them.
pub const UNSUPPORTED_SERVICE_OPTIONS: &[&str] = &[
    "build",
    "cgroupns_mode",
    "cgroup_parent",
    "devices",
    "domainname",
    "external_links",
    "ipc",
    "links",
    "mac_address",
    "network_mode",
    "pid",
    "privileged",
    "restart",
    "security_opt",
    "shm_size",
    "userns_mode",
];

/// Deprecated service options, with the explanation docker prints after
/// `Ignoring deprecated options:`.
pub const DEPRECATED_SERVICE_OPTIONS: &[(&str, &str)] = &[
    ("container_name", "Setting the container name is not supported."),
    (
        "expose",
        "Exposing ports is unnecessary - services on the same network can access each other's containers on any port.",
    ),
];

/// Service options that make `docker stack deploy` refuse the file, with docker's reason.
pub const FORBIDDEN_SERVICE_OPTIONS: &[(&str, &str)] = &[
    ("cpu_quota", "Set resource limits using deploy.resources"),
    ("cpu_shares", "Set resource limits using deploy.resources"),
    ("cpuset", "Set resource limits using deploy.resources"),
    ("extends", "Support for `extends` is not implemented yet."),
    ("mem_limit", "Set resource limits using deploy.resources"),
    ("memswap_limit", "Set resource limits using deploy.resources"),
    (
        "volume_driver",
        "Instead of setting the volume driver on the service, define a volume using the top-level `volumes` option and specify the driver there.",
    ),
    (
        "volumes_from",
        "To share a volume between services, define it using the top-level `volumes` option and reference it from each service that shares it using the service-level `volumes` option.",
    ),
];

/// Compose Specification service options a swarm has no use for. They are accepted
/// (a file written for `docker compose` still deploys) and reported with the
/// unsupported options.
pub const COMPOSE_SPEC_IGNORED_OPTIONS: &[&str] = &[
    "annotations",
    "attach",
    "blkio_config",
    "cgroup",
    "cpu_count",
    "cpu_percent",
    "cpu_period",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "cpus",
    "develop",
    "device_cgroup_rules",
    "gpus",
    "group_add",
    "label_file",
    "mem_reservation",
    "mem_swappiness",
    "models",
    "oom_kill_disable",
    "pids_limit",
    "platform",
    "post_start",
    "pre_stop",
    "profiles",
    "provider",
    "pull_policy",
    "runtime",
    "scale",
    "storage_opt",
    "use_api_socket",
    "uts",
];

/// Options accepted and silently ignored, as docker does.
const SILENTLY_IGNORED_OPTIONS: &[&str] = &["depends_on", "credential_spec"];

/// A whole compose file (after loading and merging).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ComposeFile {
    /// `version:` as written (`"3.8"`, `3`), absent for the Compose Specification.
    pub version: Option<String>,
    /// Top-level `name:` of the Compose Specification (informational).
    pub name: Option<String>,
    /// Services by name.
    pub services: BTreeMap<String, Service>,
    /// Networks by name.
    pub networks: BTreeMap<String, NetworkConfig>,
    /// Named volumes by name.
    pub volumes: BTreeMap<String, VolumeConfig>,
    /// Secrets by name.
    pub secrets: BTreeMap<String, SecretConfig>,
    /// Configs by name.
    pub configs: BTreeMap<String, ConfigObjConfig>,
    /// Per service: options that are set but ignored by a swarm.
    ignored: BTreeMap<String, BTreeSet<String>>,
}

const TOP_LEVEL_KEYS: &[&str] = &[
    "version", "name", "services", "networks", "volumes", "secrets", "configs",
];

impl ComposeFile {
    /// Builds the typed model from a loaded compose value.
    pub fn from_value(v: &Value) -> Result<ComposeFile, ModelError> {
        let top = match v {
            Value::Mapping(m) => m,
            Value::Null => {
                return Err(ModelError::new(
                    vec![],
                    "Top-level object must be a mapping",
                ))
            }
            other => {
                return Err(ModelError::new(
                    vec![],
                    format!(
                        "Top-level object must be a mapping, got {}",
                        describe_value(other)
                    ),
                ))
            }
        };
        let mut file = ComposeFile::default();
        for (k, val) in top {
            let key = key_string(k, &[])?;
            if key.starts_with("x-") {
                continue;
            }
            if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
                return Err(ModelError::new(
                    vec![],
                    format!("Additional property {key} is not allowed"),
                ));
            }
            let path = vec![key.clone()];
            match key.as_str() {
                "version" => {
                    file.version = match val {
                        Value::String(s) => Some(s.clone()),
                        Value::Number(n) => Some(n.to_string()),
                        Value::Null => None,
                        other => {
                            return Err(ModelError::new(
                                path,
                                format!(
                                    "invalid type: {}, expected a string",
                                    describe_value(other)
                                ),
                            ))
                        }
                    }
                }
                "name" => file.name = Some(typed::<String>(val, path)?),
                "services" => {
                    for (name, svc) in mapping_entries(val, &path)? {
                        let mut spath = path.clone();
                        spath.push(name.clone());
                        let (service, ignored) = parse_service(&name, svc, spath)?;
                        if !ignored.is_empty() {
                            file.ignored.insert(name.clone(), ignored);
                        }
                        file.services.insert(name, service);
                    }
                }
                "networks" => file.networks = nullable_entries(val, &path)?,
                "volumes" => file.volumes = nullable_entries(val, &path)?,
                "secrets" => file.secrets = nullable_entries(val, &path)?,
                "configs" => file.configs = nullable_entries(val, &path)?,
                _ => {}
            }
        }
        file.check_external()?;
        Ok(file)
    }

    /// Service options set in the file that a swarm ignores, sorted and without
    /// duplicates: the list docker prints as `Ignoring unsupported options: a, b`.
    pub fn unsupported(&self) -> Vec<String> {
        let mut all = BTreeSet::new();
        for opts in self.ignored.values() {
            for o in opts {
                if UNSUPPORTED_SERVICE_OPTIONS.contains(&o.as_str())
                    || COMPOSE_SPEC_IGNORED_OPTIONS.contains(&o.as_str())
                {
                    all.insert(o.clone());
                }
            }
        }
        all.into_iter().collect()
    }

    /// Deprecated options set in the file, with docker's explanation, sorted by option.
    pub fn deprecated(&self) -> Vec<(String, String)> {
        let mut all = BTreeMap::new();
        for opts in self.ignored.values() {
            for o in opts {
                if let Some((k, d)) = DEPRECATED_SERVICE_OPTIONS.iter().find(|(k, _)| k == o) {
                    all.insert(k.to_string(), d.to_string());
                }
            }
        }
        all.into_iter().collect()
    }

    /// The warnings docker prints before deploying (empty when there is nothing to say):
    /// `Ignoring unsupported options: build, restart\n\n` and
    /// `Ignoring deprecated options:\n\ncontainer_name: ...\n\n`.
    pub fn warnings(&self) -> String {
        let mut out = String::new();
        let unsupported = self.unsupported();
        if !unsupported.is_empty() {
            out.push_str(&format!(
                "Ignoring unsupported options: {}\n\n",
                unsupported.join(", ")
            ));
        }
        let deprecated = self.deprecated();
        if !deprecated.is_empty() {
            let lines: Vec<String> = deprecated
                .iter()
                .map(|(k, d)| format!("{k}: {d}"))
                .collect();
            out.push_str(&format!(
                "Ignoring deprecated options:\n\n{}\n\n",
                lines.join("\n")
            ));
        }
        out
    }

    /// `external: {name: x}` and `name: y` cannot both be given (docker's rule).
    fn check_external(&mut self) -> Result<(), ModelError> {
        fn fix(
            kind: &str,
            name: &str,
            external: &mut Option<External>,
            obj_name: &mut Option<String>,
        ) -> Result<(), ModelError> {
            if let Some(External::Named { name: ext_name }) = external {
                if obj_name.is_some() {
                    return Err(ModelError::new(
                        vec![format!("{kind}s"), name.to_string()],
                        format!(
                            "{kind}.external.name and {kind}.name conflict; only use {kind}.name"
                        ),
                    ));
                }
                *obj_name = Some(ext_name.clone());
                *external = Some(External::Flag(true));
            }
            if matches!(external, Some(External::Flag(true))) && obj_name.is_none() {
                *obj_name = Some(name.to_string());
            }
            Ok(())
        }
        for (n, c) in self.networks.iter_mut() {
            fix("network", n, &mut c.external, &mut c.name)?;
        }
        for (n, c) in self.volumes.iter_mut() {
            if c.is_external() {
                let conflict = [
                    ("driver", c.driver.is_some()),
                    (
                        "driver_opts",
                        c.driver_opts.as_ref().is_some_and(|o| !o.0.is_empty()),
                    ),
                    ("labels", c.labels.as_ref().is_some_and(|o| !o.0.is_empty())),
                ];
                if let Some((key, _)) = conflict.iter().find(|(_, set)| *set) {
                    return Err(ModelError::new(
                        vec!["volumes".to_string(), n.clone()],
                        format!("conflicting parameters \"external\" and {key:?} specified for volume {n:?}"),
                    ));
                }
            }
            fix("volume", n, &mut c.external, &mut c.name)?;
        }
        for (n, c) in self.secrets.iter_mut() {
            fix("secret", n, &mut c.external, &mut c.name)?;
            if !c.is_external() && c.driver.is_some() && c.file.is_some() {
                return Err(ModelError::new(
                    vec!["secrets".to_string(), n.clone()],
                    format!("secret {n}: secret.driver and secret.file conflict; only use secret.driver"),
                ));
            }
        }
        for (n, c) in self.configs.iter_mut() {
            fix("config", n, &mut c.external, &mut c.name)?;
        }
        Ok(())
    }
}

fn key_string(k: &Value, path: &[String]) -> Result<String, ModelError> {
    match k {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(ModelError::new(
            path.to_vec(),
            format!("invalid key: {}, expected a string", describe_value(other)),
        )),
    }
}

/// Short description of a YAML value for error messages, in serde's style.
pub(crate) fn describe_value(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("boolean `{b}`"),
        Value::Number(n) if n.is_f64() => format!("floating point `{n}`"),
        Value::Number(n) => format!("integer `{n}`"),
        Value::String(s) => format!("string {s:?}"),
        Value::Sequence(_) => "sequence".to_string(),
        Value::Mapping(_) => "map".to_string(),
        Value::Tagged(_) => "tagged value".to_string(),
    }
}

fn mapping_entries<'a>(
    v: &'a Value,
    path: &[String],
) -> Result<Vec<(String, &'a Value)>, ModelError> {
    match v {
        Value::Null => Ok(vec![]),
        Value::Mapping(m) => {
            let mut out = Vec::with_capacity(m.len());
            for (k, val) in m {
                out.push((key_string(k, path)?, val));
            }
            Ok(out)
        }
        other => Err(ModelError::new(
            path.to_vec(),
            format!("invalid type: {}, expected a map", describe_value(other)),
        )),
    }
}

/// A map whose values may be `null` (`webnet:` or `webnet: {}`), each typed as `T`.
fn nullable_entries<T: for<'de> Deserialize<'de> + Default>(
    v: &Value,
    path: &[String],
) -> Result<BTreeMap<String, T>, ModelError> {
    let mut out = BTreeMap::new();
    for (name, val) in mapping_entries(v, path)? {
        let mut p = path.to_vec();
        p.push(name.clone());
        let t = if val.is_null() {
            T::default()
        } else {
            typed::<T>(val, p)?
        };
        out.insert(name, t);
    }
    Ok(out)
}

/// Deserializes `v` as `T`, turning serde's error into a [`ModelError`] below `base`.
fn typed<T: for<'de> Deserialize<'de>>(v: &Value, base: Vec<String>) -> Result<T, ModelError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let mut path = base;
        for seg in e.path().iter() {
            use serde_path_to_error::Segment;
            match seg {
                Segment::Seq { index } => path.push(index.to_string()),
                Segment::Map { key } => path.push(key.clone()),
                Segment::Enum { variant } => path.push(variant.clone()),
                Segment::Unknown => {}
            }
        }
        let message = docker_message(&e.inner().to_string());
        // The path of an unknown key is the map holding it (docker's wording names the key).
        if let Some(key) = message
            .strip_prefix("Additional property ")
            .and_then(|m| m.strip_suffix(" is not allowed"))
        {
            if path.last().map(String::as_str) == Some(key) {
                path.pop();
            }
        }
        ModelError::new(path, message)
    })
}

/// Rewrites serde's wording into docker's where they differ.
fn docker_message(msg: &str) -> String {
    // serde_yaml appends " at line N column M" for some errors; positions are the
    // loader's business.
    let msg = match msg.find(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        if let Some(end) = rest.find('`') {
            return format!("Additional property {} is not allowed", &rest[..end]);
        }
    }
    let mut out = msg.to_string();
    for int in [
        "u8", "u16", "u32", "u64", "i8", "i16", "i32", "i64", "usize",
    ] {
        let from = format!("expected {int}");
        if out.ends_with(&from) {
            out.truncate(out.len() - from.len());
            out.push_str("expected an integer");
        }
    }
    for float in ["f32", "f64"] {
        let from = format!("expected {float}");
        if out.ends_with(&from) {
            out.truncate(out.len() - from.len());
            out.push_str("expected a number");
        }
    }
    out
}

fn parse_service(
    name: &str,
    v: &Value,
    path: Vec<String>,
) -> Result<(Service, BTreeSet<String>), ModelError> {
    let m = match v {
        Value::Mapping(m) => m,
        Value::Null => return Ok((Service::named(name), BTreeSet::new())),
        other => {
            return Err(ModelError::new(
                path,
                format!("invalid type: {}, expected a map", describe_value(other)),
            ))
        }
    };
    let mut kept = Mapping::new();
    let mut ignored = BTreeSet::new();
    for (k, val) in m {
        let key = key_string(k, &path)?;
        if key.starts_with("x-") {
            continue;
        }
        if let Some((_, why)) = FORBIDDEN_SERVICE_OPTIONS.iter().find(|(f, _)| *f == key) {
            let mut p = path.clone();
            p.push(key.clone());
            return Err(ModelError::new(
                p,
                format!("Compose file contains unsupported options:\n\n{key}: {why}\n"),
            ));
        }
        let is_unsupported = UNSUPPORTED_SERVICE_OPTIONS.contains(&key.as_str())
            || COMPOSE_SPEC_IGNORED_OPTIONS.contains(&key.as_str())
            || DEPRECATED_SERVICE_OPTIONS.iter().any(|(d, _)| *d == key);
        if is_unsupported {
            ignored.insert(key.clone());
            // `restart` is still used when `deploy.restart_policy` is absent.
            if key != "restart" {
                continue;
            }
        }
        if SILENTLY_IGNORED_OPTIONS.contains(&key.as_str()) {
            continue;
        }
        kept.insert(k.clone(), val.clone());
    }
    let mut service: Service = typed(&Value::Mapping(kept), path)?;
    service.name = name.to_string();
    Ok((service, ignored))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(s: &str) -> Result<ComposeFile, ModelError> {
        let v: Value = serde_yaml::from_str(s).expect("test yaml parses");
        ComposeFile::from_value(&v)
    }

    #[test]
    fn wrong_type_reports_path_and_docker_wording() {
        let e = load("services:\n  web:\n    image: x\n    deploy:\n      replicas: five\n")
            .unwrap_err();
        assert_eq!(e.path, ["services", "web", "deploy", "replicas"]);
        assert_eq!(
            e.message,
            "invalid type: string \"five\", expected an integer"
        );
    }

    #[test]
    fn unknown_key_is_additional_property() {
        let e = load("services:\n  web:\n    image: x\n    foo: 1\n").unwrap_err();
        assert_eq!(e.path, ["services", "web"]);
        assert_eq!(e.message, "Additional property foo is not allowed");
        assert_eq!(
            e.to_string(),
            "services.web Additional property foo is not allowed"
        );
        let e = load("services:\n  web:\n    deploy:\n      bogus: 1\n").unwrap_err();
        assert_eq!(e.path, ["services", "web", "deploy"]);
        assert_eq!(e.message, "Additional property bogus is not allowed");
        let e = load("servics: {}\n").unwrap_err();
        assert!(e.path.is_empty());
        assert_eq!(e.message, "Additional property servics is not allowed");
    }

    #[test]
    fn unsupported_and_deprecated_options_are_reported() {
        let f = load(
            "services:\n  a:\n    image: x\n    build: .\n    depends_on: [b]\n    restart: always\n    container_name: foo\n  b:\n    image: y\n    privileged: true\n    build: ./b\n",
        )
        .unwrap();
        assert_eq!(f.unsupported(), ["build", "privileged", "restart"]);
        assert_eq!(
            f.deprecated(),
            [(
                "container_name".to_string(),
                "Setting the container name is not supported.".to_string()
            )]
        );
        assert_eq!(
            f.warnings(),
            "Ignoring unsupported options: build, privileged, restart\n\n\
             Ignoring deprecated options:\n\ncontainer_name: Setting the container name is not supported.\n\n"
        );
        assert_eq!(f.services["a"].restart.as_deref(), Some("always"));
    }

    #[test]
    fn forbidden_option_is_an_error() {
        let e = load("services:\n  a:\n    image: x\n    mem_limit: 1g\n").unwrap_err();
        assert_eq!(e.path, ["services", "a", "mem_limit"]);
        assert!(e
            .message
            .contains("mem_limit: Set resource limits using deploy.resources"));
    }

    #[test]
    fn external_name_moves_to_name() {
        let f = load(
            "services: {}\nnetworks:\n  a:\n    external:\n      name: real\n  b:\n    external: true\n",
        )
        .unwrap();
        assert_eq!(f.networks["a"].name.as_deref(), Some("real"));
        assert!(f.networks["a"].is_external());
        assert_eq!(f.networks["b"].name.as_deref(), Some("b"));
        let e =
            load("networks:\n  a:\n    name: x\n    external:\n      name: real\n").unwrap_err();
        assert_eq!(e.path, ["networks", "a"]);
    }

    #[test]
    fn external_volume_conflicts() {
        let e = load("volumes:\n  v:\n    external: true\n    driver: local\n").unwrap_err();
        assert_eq!(e.path, ["volumes", "v"]);
        assert_eq!(
            e.message,
            "conflicting parameters \"external\" and \"driver\" specified for volume \"v\""
        );
        let e = load("secrets:\n  s:\n    driver: vault\n    file: ./s\n").unwrap_err();
        assert_eq!(
            e.message,
            "secret s: secret.driver and secret.file conflict; only use secret.driver"
        );
    }

    #[test]
    fn x_fields_and_null_sections_are_accepted() {
        let f = load(
            "version: 3.8\nservices:\n  web:\n    image: x\n    x-foo: 1\nnetworks:\n  webnet:\n",
        )
        .unwrap();
        assert_eq!(f.version.as_deref(), Some("3.8"));
        assert!(f.networks.contains_key("webnet"));
        assert_eq!(f.services["web"].name, "web");
    }
}
