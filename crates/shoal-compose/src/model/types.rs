//! The compose model's structures and the flexible value forms compose accepts
//! (string or list, map or `K=V` list, short or long syntax).

use super::describe_value;
use super::parse::{parse_duration, parse_memory, parse_port_spec, split_shell_words};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_yaml::Value;
use std::collections::BTreeMap;

fn invalid<E: serde::de::Error>(v: &Value, expected: &str) -> E {
    E::custom(format!(
        "invalid type: {}, expected {expected}",
        describe_value(v)
    ))
}

/// Renders a scalar as compose does for string-valued maps (`3` -> `"3"`).
fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Deserializes a nested long-syntax form, keeping docker's wording for errors.
fn nested<T: DeserializeOwned, E: serde::de::Error>(v: Value) -> Result<T, E> {
    serde_yaml::from_value(v).map_err(|e| {
        let msg = e.to_string();
        let msg = match msg.find(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        };
        match msg
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
        {
            Some(f) => E::custom(format!("Additional property {f} is not allowed")),
            None => E::custom(
                msg.replace("expected u32", "expected an integer")
                    .replace("expected u64", "expected an integer")
                    .replace("expected i64", "expected an integer"),
            ),
        }
    })
}

/// A string or a list of strings (`dns`, `tmpfs`, `env_file`, `dns_search`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StringOrList(pub Vec<String>);

impl<'de> Deserialize<'de> for StringOrList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match &v {
            Value::Null => Ok(StringOrList(vec![])),
            Value::Sequence(items) => items
                .iter()
                .map(|i| scalar_string(i).ok_or_else(|| invalid(i, "a string")))
                .collect::<Result<_, _>>()
                .map(StringOrList),
            other => scalar_string(other)
                .map(|s| StringOrList(vec![s]))
                .ok_or_else(|| invalid(other, "a string or a list of strings")),
        }
    }
}

/// `command` / `entrypoint`: a list, or a string split like a shell does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShellCommand(pub Vec<String>);

impl<'de> Deserialize<'de> for ShellCommand {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match &v {
            Value::Null => Ok(ShellCommand(vec![])),
            Value::String(s) => split_shell_words(s)
                .map(ShellCommand)
                .map_err(D::Error::custom),
            Value::Sequence(items) => items
                .iter()
                .map(|i| scalar_string(i).ok_or_else(|| invalid(i, "a string")))
                .collect::<Result<_, _>>()
                .map(ShellCommand),
            other => Err(invalid(other, "a string or a list of strings")),
        }
    }
}

/// A string map written as a map or as a list of `key=value` (labels, sysctls,
/// driver options). A list entry without `=` has an empty value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StringMap(pub BTreeMap<String, String>);

impl<'de> Deserialize<'de> for StringMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let mut out = BTreeMap::new();
        match &v {
            Value::Null => {}
            Value::Mapping(m) => {
                for (k, val) in m {
                    let k = scalar_string(k).ok_or_else(|| invalid(k, "a string key"))?;
                    let val = match val {
                        Value::Null => String::new(),
                        other => scalar_string(other)
                            .ok_or_else(|| invalid(other, "a string, number, boolean or null"))?,
                    };
                    out.insert(k, val);
                }
            }
            Value::Sequence(items) => {
                for i in items {
                    let s = scalar_string(i).ok_or_else(|| invalid(i, "a string"))?;
                    match s.split_once('=') {
                        Some((k, val)) => out.insert(k.to_string(), val.to_string()),
                        None => out.insert(s, String::new()),
                    };
                }
            }
            other => return Err(invalid(other, "a map or a list of key=value strings")),
        }
        Ok(StringMap(out))
    }
}

/// `environment`: a map or a list of `K=V`; a variable without a value (`K` or
/// `K:` with null) is `None` and taken from the deploying shell's environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment(pub BTreeMap<String, Option<String>>);

impl<'de> Deserialize<'de> for Environment {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let mut out = BTreeMap::new();
        match &v {
            Value::Null => {}
            Value::Mapping(m) => {
                for (k, val) in m {
                    let k = scalar_string(k).ok_or_else(|| invalid(k, "a string key"))?;
                    let val =
                        match val {
                            Value::Null => None,
                            other => Some(scalar_string(other).ok_or_else(|| {
                                invalid(other, "a string, number, boolean or null")
                            })?),
                        };
                    out.insert(k, val);
                }
            }
            Value::Sequence(items) => {
                for i in items {
                    let s = scalar_string(i).ok_or_else(|| invalid(i, "a string"))?;
                    match s.split_once('=') {
                        Some((k, val)) => out.insert(k.to_string(), Some(val.to_string())),
                        None => out.insert(s, None),
                    };
                }
            }
            other => return Err(invalid(other, "a map or a list of KEY=VALUE strings")),
        }
        Ok(Environment(out))
    }
}

/// One `env_file` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFile {
    /// Path as written (relative to the compose file's directory).
    pub path: String,
    /// A missing optional file (`required: false`) is skipped.
    pub required: bool,
}

/// `env_file`: a path, a list of paths, or (Compose Specification) a list of
/// `{path, required}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvFiles(pub Vec<EnvFile>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvFileLong {
    path: String,
    #[serde(default = "yes")]
    required: bool,
    #[serde(default)]
    #[allow(dead_code)]
    format: Option<String>,
}

fn yes() -> bool {
    true
}

impl<'de> Deserialize<'de> for EnvFiles {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let item = |i: &Value| -> Result<EnvFile, D::Error> {
            match i {
                Value::String(s) => Ok(EnvFile {
                    path: s.clone(),
                    required: true,
                }),
                Value::Mapping(_) => {
                    let l: EnvFileLong = nested(i.clone())?;
                    Ok(EnvFile {
                        path: l.path,
                        required: l.required,
                    })
                }
                other => Err(invalid(other, "a string")),
            }
        };
        match &v {
            Value::Null => Ok(EnvFiles(vec![])),
            Value::Sequence(items) => items
                .iter()
                .map(item)
                .collect::<Result<_, _>>()
                .map(EnvFiles),
            other => item(other).map(|e| EnvFiles(vec![e])),
        }
    }
}

/// A duration written as a Go duration string (`10s`, `1m30s`), in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub i64);

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match &v {
            Value::String(s) => parse_duration(s).map(Duration).map_err(D::Error::custom),
            other => Err(invalid(other, "a duration string")),
        }
    }
}

/// A byte size: an integer, or a string with a unit (`50M`, `1g`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteSize(pub i64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match &v {
            Value::String(s) => parse_memory(s).map(ByteSize).map_err(D::Error::custom),
            Value::Number(n) => n
                .as_i64()
                .map(ByteSize)
                .ok_or_else(|| invalid(&v, "a size in bytes")),
            other => Err(invalid(
                other,
                "a size such as \"50M\" or a number of bytes",
            )),
        }
    }
}

/// A CPU count as written (`"0.1"`, `0.5`, `2`); parsed by the conversion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cpus(pub String);

impl<'de> Deserialize<'de> for Cpus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match &v {
            Value::String(s) => Ok(Cpus(s.clone())),
            Value::Number(n) => Ok(Cpus(n.to_string())),
            other => Err(invalid(other, "a string such as \"0.5\"")),
        }
    }
}

/// `external:` of a network, volume, secret or config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum External {
    /// `external: true|false`.
    Flag(bool),
    /// Legacy `external: {name: real-name}` (moved into `name` by the model).
    Named {
        /// The real object's name.
        name: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExternalLong {
    #[serde(default)]
    name: Option<String>,
}

impl<'de> Deserialize<'de> for External {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match &v {
            Value::Bool(b) => Ok(External::Flag(*b)),
            Value::Mapping(_) => {
                let l: ExternalLong = nested(v.clone())?;
                Ok(match l.name {
                    Some(name) => External::Named { name },
                    None => External::Flag(true),
                })
            }
            other => Err(invalid(other, "a boolean or a map")),
        }
    }
}

fn is_external(e: &Option<External>) -> bool {
    matches!(e, Some(External::Flag(true)) | Some(External::Named { .. }))
}

/// One published port (short syntax entries are expanded per port of a range).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServicePortConfig {
    /// Container port.
    pub target: u32,
    /// Published port (`None`: a port chosen by the swarm).
    pub published: Option<u32>,
    /// `tcp`, `udp` or `sctp` (`None` in long syntax when not given).
    pub protocol: Option<String>,
    /// `ingress` or `host` (`None` in long syntax when not given).
    pub mode: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PortLong {
    target: u32,
    #[serde(default)]
    published: Option<Value>,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    host_ip: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    name: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    app_protocol: Option<String>,
}

/// One `ports:` entry: short syntax (`"4000:80"`, possibly a range) or long syntax.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortEntry(pub Vec<ServicePortConfig>);

impl<'de> Deserialize<'de> for PortEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match &v {
            Value::String(s) => parse_port_spec(s).map(PortEntry).map_err(D::Error::custom),
            Value::Number(n) => parse_port_spec(&n.to_string())
                .map(PortEntry)
                .map_err(D::Error::custom),
            Value::Mapping(_) => {
                let l: PortLong = nested(v.clone())?;
                let published =
                    match &l.published {
                        None | Some(Value::Null) => None,
                        Some(Value::Number(n)) => {
                            Some(n.as_u64().and_then(|p| u32::try_from(p).ok()).ok_or_else(
                                || D::Error::custom(format!("invalid published port: {n}")),
                            )?)
                        }
                        Some(Value::String(s)) => Some(s.parse::<u32>().map_err(|_| {
                            D::Error::custom(format!("invalid published port: {s}"))
                        })?),
                        Some(other) => return Err(invalid(other, "an integer or a string")),
                    };
                if let Some(m) = &l.mode {
                    if m != "ingress" && m != "host" {
                        return Err(D::Error::custom(format!(
                            "invalid publish mode {m:?}: must be \"ingress\" or \"host\""
                        )));
                    }
                }
                if let Some(p) = &l.protocol {
                    if !matches!(p.as_str(), "tcp" | "udp" | "sctp") {
                        return Err(D::Error::custom(format!("invalid proto: {p}")));
                    }
                }
                Ok(PortEntry(vec![ServicePortConfig {
                    target: l.target,
                    published: published.filter(|p| *p != 0),
                    protocol: l.protocol,
                    mode: l.mode,
                }]))
            }
            other => Err(invalid(other, "a port string, number or map")),
        }
    }
}

/// A service's attachment options for one network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceNetworkConfig {
    /// Extra DNS aliases on this network.
    pub aliases: Option<Vec<String>>,
    /// Driver options for the attachment.
    pub driver_opts: Option<StringMap>,
    /// Static IPv4 address (not used by a swarm).
    pub ipv4_address: Option<String>,
    /// Static IPv6 address (not used by a swarm).
    pub ipv6_address: Option<String>,
    /// Link-local addresses (not used by a swarm).
    pub link_local_ips: Option<Vec<String>>,
    /// MAC address (not used by a swarm).
    pub mac_address: Option<String>,
    /// Priority (not used by a swarm).
    pub priority: Option<i64>,
    /// Gateway priority (not used by a swarm).
    pub gw_priority: Option<i64>,
    /// Interface name (not used by a swarm).
    pub interface_name: Option<String>,
}

/// `networks:` of a service: a list of names or a map name -> options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceNetworks(pub BTreeMap<String, ServiceNetworkConfig>);

impl<'de> Deserialize<'de> for ServiceNetworks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let mut out = BTreeMap::new();
        match &v {
            Value::Null => {}
            Value::Sequence(items) => {
                for i in items {
                    let n = scalar_string(i).ok_or_else(|| invalid(i, "a network name"))?;
                    out.insert(n, ServiceNetworkConfig::default());
                }
            }
            Value::Mapping(m) => {
                for (k, val) in m {
                    let n = scalar_string(k).ok_or_else(|| invalid(k, "a network name"))?;
                    let cfg = if val.is_null() {
                        ServiceNetworkConfig::default()
                    } else {
                        nested(val.clone())?
                    };
                    out.insert(n, cfg);
                }
            }
            other => Err(invalid::<D::Error>(other, "a list or a map of networks"))?,
        }
        Ok(ServiceNetworks(out))
    }
}

/// A service's reference to a secret or config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileReference {
    /// Name of the top-level secret/config.
    pub source: String,
    /// File name or path in the container (default: the source name).
    pub target: Option<String>,
    /// Owner uid (default `"0"`).
    pub uid: Option<String>,
    /// Owner gid (default `"0"`).
    pub gid: Option<String>,
    /// File mode (default `0o444`).
    pub mode: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileReferenceLong {
    source: String,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    uid: Option<Value>,
    #[serde(default)]
    gid: Option<Value>,
    #[serde(default)]
    mode: Option<Value>,
}

impl<'de> Deserialize<'de> for FileReference {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match &v {
            Value::String(s) => Ok(FileReference {
                source: s.clone(),
                ..Default::default()
            }),
            Value::Mapping(_) => {
                let l: FileReferenceLong = nested(v.clone())?;
                let id = |x: &Option<Value>| -> Result<Option<String>, D::Error> {
                    match x {
                        None | Some(Value::Null) => Ok(None),
                        Some(v) => scalar_string(v)
                            .map(Some)
                            .ok_or_else(|| invalid(v, "a string")),
                    }
                };
                let mode = match &l.mode {
                    None | Some(Value::Null) => None,
                    Some(Value::Number(n)) => Some(
                        n.as_u64()
                            .and_then(|m| u32::try_from(m).ok())
                            .ok_or_else(|| invalid(&Value::Number(n.clone()), "a file mode"))?,
                    ),
                    // A string mode is octal, as in a shell: "0440".
                    Some(Value::String(s)) => Some(
                        u32::from_str_radix(s.trim_start_matches("0o"), 8)
                            .map_err(|_| D::Error::custom(format!("invalid file mode {s:?}")))?,
                    ),
                    Some(other) => return Err(invalid(other, "a file mode")),
                };
                Ok(FileReference {
                    uid: id(&l.uid)?,
                    gid: id(&l.gid)?,
                    source: l.source,
                    target: l.target,
                    mode,
                })
            }
            other => Err(invalid(other, "a string or a map")),
        }
    }
}

/// Bind options of a long-syntax volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BindOptions {
    /// Mount propagation (`rprivate`, `shared`, ...).
    pub propagation: Option<String>,
    /// Create the host path when missing (not used by a swarm).
    pub create_host_path: Option<bool>,
    /// SELinux relabeling (not used by a swarm).
    pub selinux: Option<String>,
}

/// Volume options of a long-syntax volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VolumeOptions {
    /// Do not copy the image's data into a new volume.
    pub nocopy: Option<bool>,
    /// Mount a sub-path of the volume.
    pub subpath: Option<String>,
}

/// Tmpfs options of a long-syntax volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TmpfsOptions {
    /// Size limit.
    pub size: Option<ByteSize>,
    /// File mode of the tmpfs root.
    pub mode: Option<u32>,
}

/// One `volumes:` entry of a service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceVolume {
    /// `volume`, `bind`, `tmpfs`, `npipe` or `cluster`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Volume name or host path (empty: anonymous volume / tmpfs).
    pub source: Option<String>,
    /// Path in the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: Option<bool>,
    /// Consistency requirement (`consistent`, `cached`, `delegated`).
    pub consistency: Option<String>,
    /// Bind options.
    pub bind: Option<BindOptions>,
    /// Volume options.
    pub volume: Option<VolumeOptions>,
    /// Tmpfs options.
    pub tmpfs: Option<TmpfsOptions>,
}

/// A service's volume entry in short (`src:dst:ro`) or long syntax.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeEntry(pub ServiceVolume);

fn is_file_path(s: &str) -> bool {
    s.starts_with('.') || s.starts_with('/') || s.starts_with('~')
}

/// Parses the short volume syntax `[source:]target[:mode]`.
pub fn parse_volume_spec(spec: &str) -> Result<ServiceVolume, String> {
    if spec.is_empty() {
        return Err("invalid empty volume spec".to_string());
    }
    let parts: Vec<&str> = spec.split(':').collect();
    let bad = || format!("invalid spec: {spec}: too many colons");
    let mut vol = ServiceVolume::default();
    let (source, target, mode) = match parts.as_slice() {
        [t] => (None, *t, None),
        [s, t] => (Some(*s), *t, None),
        [s, t, m] => (Some(*s), *t, Some(*m)),
        _ => return Err(bad()),
    };
    if target.is_empty() || mode == Some("") {
        return Err(format!(
            "invalid spec: {spec}: empty section between colons"
        ));
    }
    vol.target = target.to_string();
    match source {
        Some("") => {
            return Err(format!(
                "invalid spec: {spec}: empty section between colons"
            ))
        }
        Some(s) => {
            vol.kind = if is_file_path(s) { "bind" } else { "volume" }.to_string();
            vol.source = Some(s.to_string());
        }
        None => vol.kind = "volume".to_string(),
    }
    if let Some(mode) = mode {
        for opt in mode.split(',') {
            match opt {
                "ro" => vol.read_only = Some(true),
                "rw" => vol.read_only = Some(false),
                "nocopy" => {
                    vol.volume = Some(VolumeOptions {
                        nocopy: Some(true),
                        subpath: None,
                    })
                }
                "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate" => {
                    vol.bind = Some(BindOptions {
                        propagation: Some(opt.to_string()),
                        ..Default::default()
                    })
                }
                // Other options (z, Z, consistency, ...) are ignored, as docker does.
                _ => {}
            }
        }
    }
    Ok(vol)
}

impl<'de> Deserialize<'de> for VolumeEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match &v {
            Value::String(s) => parse_volume_spec(s)
                .map(VolumeEntry)
                .map_err(D::Error::custom),
            Value::Mapping(_) => {
                let vol: ServiceVolume = nested(v.clone())?;
                if vol.target.is_empty() {
                    return Err(D::Error::custom("missing field `target`"));
                }
                if !matches!(
                    vol.kind.as_str(),
                    "volume" | "bind" | "tmpfs" | "npipe" | "cluster" | "image"
                ) {
                    return Err(D::Error::custom(
                        "volume type must be volume, bind, tmpfs, npipe, or cluster",
                    ));
                }
                Ok(VolumeEntry(vol))
            }
            other => Err(invalid(other, "a string or a map")),
        }
    }
}

/// A ulimit: one value for soft and hard, or both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ulimit {
    /// Soft limit.
    pub soft: i64,
    /// Hard limit.
    pub hard: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UlimitLong {
    soft: i64,
    hard: i64,
}

impl<'de> Deserialize<'de> for Ulimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match &v {
            Value::Number(n) => n
                .as_i64()
                .map(|x| Ulimit { soft: x, hard: x })
                .ok_or_else(|| invalid(&v, "an integer")),
            Value::Mapping(_) => {
                let l: UlimitLong = nested(v.clone())?;
                Ok(Ulimit {
                    soft: l.soft,
                    hard: l.hard,
                })
            }
            other => Err(invalid(other, "an integer or a map with soft and hard")),
        }
    }
}

/// `extra_hosts`: a list of `host:ip` / `host=ip`, or a map host -> ip.
/// Stored as (host, ip) pairs in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtraHosts(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for ExtraHosts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let mut out = Vec::new();
        match &v {
            Value::Null => {}
            Value::Sequence(items) => {
                for i in items {
                    let s = scalar_string(i).ok_or_else(|| invalid(i, "a string"))?;
                    let pair = s.split_once('=').or_else(|| s.split_once(':'));
                    match pair {
                        Some((h, ip)) => out.push((h.to_string(), ip.to_string())),
                        None => {
                            return Err(D::Error::custom(format!(
                                "invalid extra host {s:?}: expected host:ip"
                            )))
                        }
                    }
                }
            }
            Value::Mapping(m) => {
                for (k, val) in m {
                    let h = scalar_string(k).ok_or_else(|| invalid(k, "a host name"))?;
                    match val {
                        Value::Sequence(ips) => {
                            for ip in ips {
                                let ip = scalar_string(ip).ok_or_else(|| invalid(ip, "an IP"))?;
                                out.push((h.clone(), ip));
                            }
                        }
                        other => {
                            let ip = scalar_string(other).ok_or_else(|| invalid(other, "an IP"))?;
                            out.push((h, ip));
                        }
                    }
                }
            }
            other => return Err(invalid(other, "a list or a map")),
        }
        Ok(ExtraHosts(out))
    }
}

/// `healthcheck.test`: a list (`["CMD", "curl", ...]`) or a string (run by a shell).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthTest(pub Vec<String>);

impl<'de> Deserialize<'de> for HealthTest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match &v {
            Value::String(s) => Ok(HealthTest(vec!["CMD-SHELL".to_string(), s.clone()])),
            Value::Sequence(items) => items
                .iter()
                .map(|i| scalar_string(i).ok_or_else(|| invalid(i, "a string")))
                .collect::<Result<_, _>>()
                .map(HealthTest),
            other => Err(invalid(other, "a string or a list of strings")),
        }
    }
}

/// `healthcheck:`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Healthcheck {
    /// The test command.
    pub test: Option<HealthTest>,
    /// Time between checks.
    pub interval: Option<Duration>,
    /// Time a check may take.
    pub timeout: Option<Duration>,
    /// Consecutive failures before unhealthy.
    pub retries: Option<u64>,
    /// Grace period after start.
    pub start_period: Option<Duration>,
    /// Interval during the start period.
    pub start_interval: Option<Duration>,
    /// Disable the image's health check.
    pub disable: Option<bool>,
}

/// `logging:`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Logging {
    /// Log driver.
    pub driver: Option<String>,
    /// Driver options.
    pub options: Option<StringMap>,
}

/// `deploy.resources.limits`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceLimit {
    /// CPUs (`"0.1"`).
    pub cpus: Option<Cpus>,
    /// Memory (`50M`).
    pub memory: Option<ByteSize>,
    /// Maximum number of processes.
    pub pids: Option<i64>,
}

/// A discrete generic resource reservation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscreteResourceSpec {
    /// Resource kind (`gpu`).
    pub kind: String,
    /// Amount.
    pub value: i64,
}

/// One `generic_resources` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenericResource {
    /// The discrete resource.
    pub discrete_resource_spec: Option<DiscreteResourceSpec>,
}

/// `deploy.resources.reservations`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceReservation {
    /// CPUs.
    pub cpus: Option<Cpus>,
    /// Memory.
    pub memory: Option<ByteSize>,
    /// Generic resources.
    pub generic_resources: Option<Vec<GenericResource>>,
    /// Device reservations (Compose Specification; not used by a swarm).
    pub devices: Option<Value>,
}

/// `deploy.resources`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Resources {
    /// Limits.
    pub limits: Option<ResourceLimit>,
    /// Reservations.
    pub reservations: Option<ResourceReservation>,
}

/// `deploy.restart_policy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestartPolicy {
    /// `none`, `on-failure` or `any`.
    pub condition: Option<String>,
    /// Delay between restarts.
    pub delay: Option<Duration>,
    /// Maximum attempts.
    pub max_attempts: Option<u64>,
    /// Window to decide whether a restart succeeded.
    pub window: Option<Duration>,
}

/// One placement preference.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlacementPreference {
    /// Spread over this node attribute (`node.labels.zone`).
    pub spread: String,
}

/// `deploy.placement`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Placement {
    /// Constraints (`node.role == manager`).
    pub constraints: Option<Vec<String>>,
    /// Preferences.
    pub preferences: Option<Vec<PlacementPreference>>,
    /// Maximum replicas per node.
    pub max_replicas_per_node: Option<u64>,
}

/// `deploy.update_config` / `deploy.rollback_config`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpdateConfig {
    /// Tasks updated at once (0: all).
    pub parallelism: Option<u64>,
    /// Delay between groups.
    pub delay: Option<Duration>,
    /// `pause`, `continue` or `rollback`.
    pub failure_action: Option<String>,
    /// Time to watch each task for failure.
    pub monitor: Option<Duration>,
    /// Tolerated failure ratio.
    pub max_failure_ratio: Option<f64>,
    /// `stop-first` or `start-first`.
    pub order: Option<String>,
}

/// `deploy:`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Deploy {
    /// `replicated`, `global`, `replicated-job` or `global-job`.
    pub mode: Option<String>,
    /// Replica count.
    pub replicas: Option<u64>,
    /// Service labels.
    pub labels: Option<StringMap>,
    /// Rolling update settings.
    pub update_config: Option<UpdateConfig>,
    /// Rollback settings.
    pub rollback_config: Option<UpdateConfig>,
    /// Resources.
    pub resources: Option<Resources>,
    /// Restart policy.
    pub restart_policy: Option<RestartPolicy>,
    /// Placement.
    pub placement: Option<Placement>,
    /// `vip` or `dnsrr`.
    pub endpoint_mode: Option<String>,
}

/// One service.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Service {
    /// The service's key in `services:`.
    #[serde(skip)]
    pub name: String,
    /// Image reference.
    pub image: Option<String>,
    /// Arguments (the image's CMD replacement).
    pub command: Option<ShellCommand>,
    /// Entrypoint.
    pub entrypoint: Option<ShellCommand>,
    /// Environment variables.
    pub environment: Option<Environment>,
    /// Environment files (read by the conversion).
    pub env_file: Option<EnvFiles>,
    /// Container labels.
    pub labels: Option<StringMap>,
    /// Swarm deployment settings.
    pub deploy: Option<Deploy>,
    /// Published ports.
    pub ports: Option<Vec<PortEntry>>,
    /// Networks.
    pub networks: Option<ServiceNetworks>,
    /// Health check.
    pub healthcheck: Option<Healthcheck>,
    /// Secrets.
    pub secrets: Option<Vec<FileReference>>,
    /// Configs.
    pub configs: Option<Vec<FileReference>>,
    /// Hostname.
    pub hostname: Option<String>,
    /// User.
    pub user: Option<String>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// Time to wait after the stop signal.
    pub stop_grace_period: Option<Duration>,
    /// Stop signal.
    pub stop_signal: Option<String>,
    /// Run an init process.
    pub init: Option<bool>,
    /// Read-only root filesystem.
    pub read_only: Option<bool>,
    /// Allocate a TTY.
    pub tty: Option<bool>,
    /// Keep stdin open.
    pub stdin_open: Option<bool>,
    /// DNS servers.
    pub dns: Option<StringOrList>,
    /// DNS search domains.
    pub dns_search: Option<StringOrList>,
    /// DNS options.
    pub dns_opt: Option<Vec<String>>,
    /// Extra `/etc/hosts` entries.
    pub extra_hosts: Option<ExtraHosts>,
    /// Added capabilities.
    pub cap_add: Option<Vec<String>>,
    /// Dropped capabilities.
    pub cap_drop: Option<Vec<String>>,
    /// Kernel parameters.
    pub sysctls: Option<StringMap>,
    /// Ulimits.
    pub ulimits: Option<BTreeMap<String, Ulimit>>,
    /// Volumes.
    pub volumes: Option<Vec<VolumeEntry>>,
    /// Tmpfs mounts (`/run`, `/tmp:size=64m`).
    pub tmpfs: Option<StringOrList>,
    /// Logging driver.
    pub logging: Option<Logging>,
    /// OOM score adjustment.
    pub oom_score_adj: Option<i64>,
    /// Isolation technology (`default`, `process`, `hyperv`).
    pub isolation: Option<String>,
    /// Legacy restart policy (`always`, `on-failure:3`), used when
    /// `deploy.restart_policy` is absent.
    pub restart: Option<String>,
}

impl Service {
    pub(crate) fn named(name: &str) -> Service {
        Service {
            name: name.to_string(),
            ..Default::default()
        }
    }

    /// All published ports, short syntax ranges expanded.
    pub fn port_configs(&self) -> Vec<ServicePortConfig> {
        self.ports
            .iter()
            .flatten()
            .flat_map(|p| p.0.iter().cloned())
            .collect()
    }
}

/// IPAM pool of a network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IpamPool {
    /// Subnet in CIDR form.
    pub subnet: Option<String>,
    /// Allocation range.
    pub ip_range: Option<String>,
    /// Gateway.
    pub gateway: Option<String>,
    /// Auxiliary addresses.
    pub aux_addresses: Option<BTreeMap<String, String>>,
}

/// IPAM settings of a network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ipam {
    /// IPAM driver.
    pub driver: Option<String>,
    /// Pools.
    pub config: Option<Vec<IpamPool>>,
    /// Driver options.
    pub options: Option<StringMap>,
}

/// A top-level network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Real name (not namespaced).
    pub name: Option<String>,
    /// Driver (default `overlay`).
    pub driver: Option<String>,
    /// Driver options.
    pub driver_opts: Option<StringMap>,
    /// Not created by the stack; must exist.
    pub external: Option<External>,
    /// Internal network.
    pub internal: Option<bool>,
    /// Standalone containers may attach.
    pub attachable: Option<bool>,
    /// Labels.
    pub labels: Option<StringMap>,
    /// IPAM.
    pub ipam: Option<Ipam>,
    /// IPv6.
    pub enable_ipv6: Option<bool>,
    /// IPv4.
    pub enable_ipv4: Option<bool>,
}

impl NetworkConfig {
    /// Whether the network is external.
    pub fn is_external(&self) -> bool {
        is_external(&self.external)
    }
}

/// A top-level named volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VolumeConfig {
    /// Real name.
    pub name: Option<String>,
    /// Driver.
    pub driver: Option<String>,
    /// Driver options.
    pub driver_opts: Option<StringMap>,
    /// Not created by the stack.
    pub external: Option<External>,
    /// Labels.
    pub labels: Option<StringMap>,
}

impl VolumeConfig {
    /// Whether the volume is external.
    pub fn is_external(&self) -> bool {
        is_external(&self.external)
    }
}

/// A top-level secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretConfig {
    /// Real name.
    pub name: Option<String>,
    /// File holding the data.
    pub file: Option<String>,
    /// Environment variable holding the data.
    pub environment: Option<String>,
    /// Not created by the stack.
    pub external: Option<External>,
    /// Labels.
    pub labels: Option<StringMap>,
    /// Secret driver.
    pub driver: Option<String>,
    /// Secret driver options.
    pub driver_opts: Option<StringMap>,
    /// Template driver.
    pub template_driver: Option<String>,
}

impl SecretConfig {
    /// Whether the secret is external.
    pub fn is_external(&self) -> bool {
        is_external(&self.external)
    }
}

/// A top-level config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigObjConfig {
    /// Real name.
    pub name: Option<String>,
    /// File holding the data.
    pub file: Option<String>,
    /// Environment variable holding the data.
    pub environment: Option<String>,
    /// Inline content (Compose Specification).
    pub content: Option<String>,
    /// Not created by the stack.
    pub external: Option<External>,
    /// Labels.
    pub labels: Option<StringMap>,
    /// Template driver.
    pub template_driver: Option<String>,
}

impl ConfigObjConfig {
    /// Whether the config is external.
    pub fn is_external(&self) -> bool {
        is_external(&self.external)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_volume_syntax() {
        let v = parse_volume_spec("data:/var/lib/data:ro,nocopy").unwrap();
        assert_eq!(v.kind, "volume");
        assert_eq!(v.source.as_deref(), Some("data"));
        assert_eq!(v.target, "/var/lib/data");
        assert_eq!(v.read_only, Some(true));
        assert_eq!(v.volume.and_then(|o| o.nocopy), Some(true));
        let v = parse_volume_spec("./conf:/etc/conf:rshared,z").unwrap();
        assert_eq!(v.kind, "bind");
        assert_eq!(
            v.bind.and_then(|b| b.propagation).as_deref(),
            Some("rshared")
        );
        let v = parse_volume_spec("/cache").unwrap();
        assert_eq!((v.kind.as_str(), v.source), ("volume", None));
        assert_eq!(
            parse_volume_spec("a:b:c:d").unwrap_err(),
            "invalid spec: a:b:c:d: too many colons"
        );
        assert_eq!(
            parse_volume_spec("a::/b").unwrap_err(),
            "invalid spec: a::/b: empty section between colons"
        );
        assert_eq!(
            parse_volume_spec(":/b").unwrap_err(),
            "invalid spec: :/b: empty section between colons"
        );
        assert_eq!(
            parse_volume_spec("").unwrap_err(),
            "invalid empty volume spec"
        );
    }
}
