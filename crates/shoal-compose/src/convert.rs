//! Conversion of a [`ComposeFile`] into the objects `docker stack deploy` creates.
//!
//! Services become `NS_svc` service specs labelled `com.docker.stack.namespace=NS` (and
//! `com.docker.stack.image`), networks `NS_name` (the `NS_default` network for services
//! listing none), secrets and configs `NS_name`. Names set with `name:` are used as they
//! are; `external:` objects are not created. Secret and config references keep their
//! names (the CLI resolves them to IDs). Files and environment variables are read through
//! the [`ConvertContext`], so conversion itself touches neither the disk nor the process
//! environment.

mod service;

use crate::model::ComposeFile;
use base64::Engine as _;
use bollard_stubs::models::{
    ConfigSpec, Driver, Ipam, IpamConfig, NetworkCreateRequest, SecretSpec, ServiceSpec,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};

pub use service::{convert_service, parse_env_file};

/// Label holding the stack name on every object of a stack.
pub const LABEL_NAMESPACE: &str = "com.docker.stack.namespace";
/// Label holding the image as written in the compose file, on services.
pub const LABEL_IMAGE: &str = "com.docker.stack.image";
/// Driver of networks created by a stack when the file names none.
pub const DEFAULT_NETWORK_DRIVER: &str = "overlay";

type FileReader = Box<dyn Fn(&Path) -> io::Result<Vec<u8>> + Send + Sync>;
type EnvLookup = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Where conversion reads files (`env_file`, secret and config `file:`) and environment
/// variables (`environment:` secrets, `KEY` entries without a value) from.
pub struct ConvertContext {
    /// Directory relative paths are resolved against (the first compose file's directory).
    pub working_dir: PathBuf,
    read_file: FileReader,
    lookup_env: EnvLookup,
}

impl std::fmt::Debug for ConvertContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConvertContext")
            .field("working_dir", &self.working_dir)
            .finish_non_exhaustive()
    }
}

impl ConvertContext {
    /// Reads the real disk and the process environment.
    pub fn new(working_dir: impl Into<PathBuf>) -> Self {
        ConvertContext {
            working_dir: working_dir.into(),
            read_file: Box::new(|p| std::fs::read(p)),
            lookup_env: Box::new(|k| std::env::var(k).ok()),
        }
    }

    /// Replaces the file reader (tests use an in-memory map).
    pub fn with_reader(
        mut self,
        f: impl Fn(&Path) -> io::Result<Vec<u8>> + Send + Sync + 'static,
    ) -> Self {
        self.read_file = Box::new(f);
        self
    }

    /// Replaces the environment lookup.
    pub fn with_env(mut self, f: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        self.lookup_env = Box::new(f);
        self
    }

    /// An in-memory context: `files` by path (as resolved against `working_dir`), `env`.
    pub fn in_memory(
        working_dir: impl Into<PathBuf>,
        files: BTreeMap<PathBuf, Vec<u8>>,
        env: BTreeMap<String, String>,
    ) -> Self {
        ConvertContext::new(working_dir)
            .with_reader(move |p| {
                files.get(p).cloned().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, "no such file or directory")
                })
            })
            .with_env(move |k| env.get(k).cloned())
    }

    /// Looks up an environment variable.
    pub fn env(&self, key: &str) -> Option<String> {
        (self.lookup_env)(key)
    }

    /// Resolves a path of the compose file: `~` is the home directory, relative paths
    /// are relative to `working_dir`.
    pub fn resolve(&self, path: &str) -> PathBuf {
        if path == "~" || path.starts_with("~/") {
            if let Some(home) = self.env("HOME") {
                return Path::new(&home).join(path.trim_start_matches('~').trim_start_matches('/'));
            }
        }
        let p = Path::new(path);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            normalize(&self.working_dir.join(p))
        }
    }

    /// Reads a file of the compose file (path resolved with [`ConvertContext::resolve`]),
    /// with a Go-like error text (`open /x/y: no such file or directory`).
    pub fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        let p = self.resolve(path);
        (self.read_file)(&p).map_err(|e| {
            let why = match e.kind() {
                io::ErrorKind::NotFound => "no such file or directory".to_string(),
                io::ErrorKind::PermissionDenied => "permission denied".to_string(),
                _ => e.to_string(),
            };
            format!("open {}: {why}", p.display())
        })
    }
}

/// Removes `.` and `..` components lexically (like Go's `filepath.Clean`).
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Why a compose file cannot be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A service is wrong (`service web: undefined network "webnet"`).
    #[error("service {service}: {message}")]
    Service {
        /// The service's name in the file.
        service: String,
        /// What is wrong.
        message: String,
    },
    /// A top-level secret cannot be made.
    #[error("secret {name}: {message}")]
    Secret {
        /// The secret's key in the file.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A top-level config cannot be made.
    #[error("config {name}: {message}")]
    Config {
        /// The config's key in the file.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// Everything a stack deploy creates or checks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stack {
    /// The stack name.
    pub namespace: String,
    /// Service specs by the service's name in the file.
    pub services: BTreeMap<String, ServiceSpec>,
    /// Networks to create, by their full name (`NS_webnet`).
    pub networks: BTreeMap<String, NetworkCreateRequest>,
    /// External networks the services use: they must exist (sorted).
    pub external_networks: Vec<String>,
    /// Secrets to create or update (sorted by name).
    pub secrets: Vec<SecretSpec>,
    /// Configs to create or update (sorted by name).
    pub configs: Vec<ConfigSpec>,
    /// External secrets the services use: they must exist (sorted).
    pub external_secrets: Vec<String>,
    /// External configs the services use: they must exist (sorted).
    pub external_configs: Vec<String>,
}

/// `NS_name`.
pub fn scope(namespace: &str, name: &str) -> String {
    format!("{namespace}_{name}")
}

pub(crate) fn stack_labels(
    namespace: &str,
    labels: Option<&crate::model::StringMap>,
) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = labels
        .map(|l| l.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    out.insert(LABEL_NAMESPACE.to_string(), namespace.to_string());
    out
}

fn opt_map(m: Option<&crate::model::StringMap>) -> Option<HashMap<String, String>> {
    m.map(|m| m.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// Converts a compose file into the stack `namespace`.
pub fn convert(
    namespace: &str,
    file: &ComposeFile,
    ctx: &ConvertContext,
) -> Result<Stack, ConvertError> {
    let mut stack = Stack {
        namespace: namespace.to_string(),
        ..Default::default()
    };

    // Services (these report undefined networks, secrets, configs and volumes).
    let mut used_networks = BTreeSet::new();
    let mut used_secrets = BTreeSet::new();
    let mut used_configs = BTreeSet::new();
    for (name, svc) in &file.services {
        let spec = convert_service(namespace, svc, file, ctx).map_err(|message| {
            ConvertError::Service {
                service: name.clone(),
                message,
            }
        })?;
        match svc.networks.as_ref().filter(|n| !n.0.is_empty()) {
            Some(n) => used_networks.extend(n.0.keys().cloned()),
            None => {
                used_networks.insert("default".to_string());
            }
        }
        used_secrets.extend(svc.secrets.iter().flatten().map(|s| s.source.clone()));
        used_configs.extend(svc.configs.iter().flatten().map(|s| s.source.clone()));
        stack.services.insert(name.clone(), spec);
    }

    // Networks used by the services.
    for name in &used_networks {
        let nw = file.networks.get(name).cloned().unwrap_or_default();
        if nw.is_external() {
            stack
                .external_networks
                .push(nw.name.clone().unwrap_or_else(|| name.clone()));
            continue;
        }
        let full = nw.name.clone().unwrap_or_else(|| scope(namespace, name));
        let ipam = nw.ipam.as_ref().and_then(|i| {
            let pools = i.config.clone().unwrap_or_default();
            if i.driver.is_none() && pools.is_empty() {
                return None;
            }
            Some(Ipam {
                driver: i.driver.clone(),
                config: (!pools.is_empty()).then(|| {
                    pools
                        .into_iter()
                        .map(|p| IpamConfig {
                            subnet: p.subnet,
                            ip_range: p.ip_range,
                            gateway: p.gateway,
                            auxiliary_addresses: p.aux_addresses.map(|a| a.into_iter().collect()),
                        })
                        .collect()
                }),
                options: opt_map(i.options.as_ref()),
            })
        });
        stack.networks.insert(
            full.clone(),
            NetworkCreateRequest {
                name: full,
                driver: Some(
                    nw.driver
                        .clone()
                        .filter(|d| !d.is_empty())
                        .unwrap_or_else(|| DEFAULT_NETWORK_DRIVER.to_string()),
                ),
                internal: nw.internal.filter(|b| *b),
                attachable: nw.attachable.filter(|b| *b),
                ipam,
                enable_ipv6: nw.enable_ipv6,
                enable_ipv4: nw.enable_ipv4,
                options: opt_map(nw.driver_opts.as_ref()),
                labels: Some(stack_labels(namespace, nw.labels.as_ref())),
                ..Default::default()
            },
        );
    }
    stack.external_networks.sort();
    stack.external_networks.dedup();

    // Secrets (all declared ones, as docker does).
    for (key, s) in &file.secrets {
        let name = s.name.clone().unwrap_or_else(|| scope(namespace, key));
        if s.is_external() {
            if used_secrets.contains(key) {
                stack.external_secrets.push(name);
            }
            continue;
        }
        let err = |message: String| ConvertError::Secret {
            name: key.clone(),
            message,
        };
        let data = if s.driver.is_some() {
            // A secret driver provides the value; the spec carries no data.
            Vec::new()
        } else {
            object_data(ctx, s.file.as_deref(), s.environment.as_deref(), None).map_err(err)?
        };
        stack.secrets.push(SecretSpec {
            name: Some(name),
            labels: Some(stack_labels(namespace, s.labels.as_ref())),
            data: Some(base64::engine::general_purpose::STANDARD.encode(data)),
            driver: s.driver.as_ref().map(|d| Driver {
                name: d.clone(),
                options: opt_map(s.driver_opts.as_ref()),
            }),
            templating: s.template_driver.as_ref().map(|t| Driver {
                name: t.clone(),
                options: None,
            }),
        });
    }
    stack.secrets.sort_by(|a, b| a.name.cmp(&b.name));
    stack.external_secrets.sort();

    // Configs.
    for (key, c) in &file.configs {
        let name = c.name.clone().unwrap_or_else(|| scope(namespace, key));
        if c.is_external() {
            if used_configs.contains(key) {
                stack.external_configs.push(name);
            }
            continue;
        }
        let data = object_data(
            ctx,
            c.file.as_deref(),
            c.environment.as_deref(),
            c.content.as_deref(),
        )
        .map_err(|message| ConvertError::Config {
            name: key.clone(),
            message,
        })?;
        stack.configs.push(ConfigSpec {
            name: Some(name),
            labels: Some(stack_labels(namespace, c.labels.as_ref())),
            data: Some(base64::engine::general_purpose::STANDARD.encode(data)),
            templating: c.template_driver.as_ref().map(|t| Driver {
                name: t.clone(),
                options: None,
            }),
        });
    }
    stack.configs.sort_by(|a, b| a.name.cmp(&b.name));
    stack.external_configs.sort();

    Ok(stack)
}

/// The data of a secret or config from `file:`, `environment:` or `content:`.
fn object_data(
    ctx: &ConvertContext,
    file: Option<&str>,
    environment: Option<&str>,
    content: Option<&str>,
) -> Result<Vec<u8>, String> {
    match (file, environment, content) {
        (Some(f), None, None) => ctx.read(f),
        (None, Some(var), None) => ctx
            .env(var)
            .map(String::into_bytes)
            .ok_or_else(|| format!("environment variable {var:?} is not set")),
        (None, None, Some(c)) => Ok(c.as_bytes().to_vec()),
        (None, None, None) => Err("one of file, environment or content must be set".to_string()),
        _ => Err("only one of file, environment or content may be set".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_paths() {
        let ctx = ConvertContext::in_memory(
            "/srv/app",
            BTreeMap::new(),
            BTreeMap::from([("HOME".to_string(), "/home/u".to_string())]),
        );
        assert_eq!(ctx.resolve("./a/../b.txt"), PathBuf::from("/srv/app/b.txt"));
        assert_eq!(ctx.resolve("/etc/x"), PathBuf::from("/etc/x"));
        assert_eq!(ctx.resolve("~/s"), PathBuf::from("/home/u/s"));
        assert_eq!(
            ctx.read("nope").unwrap_err(),
            "open /srv/app/nope: no such file or directory"
        );
    }
}
