//! Placement constraints: `key==value` / `key!=value`, ANDed, as swarmkit parses and matches them.
//!
//! ```text
//!  "node.labels.zone == east"  ──parse──►  Constraint { key: NodeLabel("zone"), op: Eq, value: "east" }
//!                                              │
//!  Node ──attribute(key)──► "East" ──eq_ignore_case──► match?   (a missing label reads as "")
//! ```
//!
//! Keys (matched case-insensitively): `node.id`, `node.hostname`, `node.ip` (the value is an IP
//! address or a CIDR, compared with the node's `status.addr`), `node.role`, `node.platform.os`,
//! `node.platform.arch`, `node.labels.<name>`, `engine.labels.<name>`. Label *names* are case
//! sensitive; values are compared case-insensitively, as swarmkit does for every key. A key that
//! names nothing known parses, but no node satisfies it (swarmkit's behaviour).
//!
//! Error texts are swarmkit's (`constraint expected one operator from ==, !=`, `key 'x' is
//! invalid`, `value 'x' is invalid`): the Docker CLI shows them verbatim.

use shoal_api::Node;
use std::net::IpAddr;

/// Prefix of constraint keys that read a node label.
pub const NODE_LABEL_PREFIX: &str = "node.labels.";
/// Prefix of constraint keys that read an engine label.
pub const ENGINE_LABEL_PREFIX: &str = "engine.labels.";

/// A constraint that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    /// Neither `==` nor `!=` appears in the expression.
    #[error("constraint expected one operator from ==, !=")]
    MissingOperator { expr: String },
    /// The part before the operator is not a valid key.
    #[error("key '{key}' is invalid")]
    InvalidKey { expr: String, key: String },
    /// The part after the operator is empty or has characters that are not allowed.
    #[error("value '{value}' is invalid")]
    InvalidValue { expr: String, value: String },
}

impl ConstraintError {
    /// The whole expression that failed to parse.
    pub fn expr(&self) -> &str {
        match self {
            ConstraintError::MissingOperator { expr }
            | ConstraintError::InvalidKey { expr, .. }
            | ConstraintError::InvalidValue { expr, .. } => expr,
        }
    }
}

/// `==` or `!=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Eq,
    NotEq,
}

/// The node attribute a key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Id,
    Hostname,
    Ip,
    Role,
    PlatformOs,
    PlatformArch,
    /// `node.labels.<name>` (the name keeps its case).
    NodeLabel(String),
    /// `engine.labels.<name>`.
    EngineLabel(String),
    /// Anything else: parses, matches no node.
    Unknown(String),
}

impl Key {
    /// Classifies a key (prefixes and fixed keys are case-insensitive).
    pub fn parse(key: &str) -> Key {
        let lower = key.to_ascii_lowercase();
        match lower.as_str() {
            "node.id" => return Key::Id,
            "node.hostname" => return Key::Hostname,
            "node.ip" => return Key::Ip,
            "node.role" => return Key::Role,
            "node.platform.os" => return Key::PlatformOs,
            "node.platform.arch" => return Key::PlatformArch,
            _ => {}
        }
        if key.len() > NODE_LABEL_PREFIX.len() && lower.starts_with(NODE_LABEL_PREFIX) {
            return Key::NodeLabel(key[NODE_LABEL_PREFIX.len()..].to_string());
        }
        if key.len() > ENGINE_LABEL_PREFIX.len() && lower.starts_with(ENGINE_LABEL_PREFIX) {
            return Key::EngineLabel(key[ENGINE_LABEL_PREFIX.len()..].to_string());
        }
        Key::Unknown(key.to_string())
    }

    /// The node's value for this key (`""` when absent), or `None` for an unknown key.
    pub fn value_of<'a>(&self, node: &'a Node) -> Option<&'a str> {
        let platform = node.description.platform.as_ref();
        Some(match self {
            Key::Id => node.id.as_str(),
            Key::Hostname => node.hostname(),
            Key::Ip => node.status.addr.as_str(),
            Key::Role => node.role.as_str(),
            Key::PlatformOs => platform.and_then(|p| p.os.as_deref()).unwrap_or(""),
            Key::PlatformArch => platform
                .and_then(|p| p.architecture.as_deref())
                .unwrap_or(""),
            Key::NodeLabel(name) => node
                .labels()
                .and_then(|l| l.get(name))
                .map(String::as_str)
                .unwrap_or(""),
            Key::EngineLabel(name) => node
                .engine_labels()
                .and_then(|l| l.get(name))
                .map(String::as_str)
                .unwrap_or(""),
            Key::Unknown(_) => return None,
        })
    }
}

/// What a `node.ip` constraint compares with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IpMatch {
    Addr(IpAddr),
    Net(IpAddr, u8),
    /// Neither an address nor a network: no node matches, whatever the operator.
    Malformed,
}

/// One parsed constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    /// The key as written (trimmed).
    pub raw_key: String,
    pub key: Key,
    pub op: Operator,
    /// The value as written (trimmed).
    pub value: String,
    ip: Option<IpMatch>,
}

impl Constraint {
    /// Whether `node` satisfies this constraint.
    pub fn matches(&self, node: &Node) -> bool {
        if self.key == Key::Ip {
            let want = self.ip.unwrap_or(IpMatch::Malformed);
            let node_ip = parse_node_ip(&node.status.addr);
            let hit = match want {
                IpMatch::Addr(ip) => node_ip.is_some_and(|n| canonical(n) == canonical(ip)),
                IpMatch::Net(net, len) => node_ip.is_some_and(|n| cidr_contains(net, len, n)),
                IpMatch::Malformed => return false,
            };
            return hit == (self.op == Operator::Eq);
        }
        let Some(actual) = self.key.value_of(node) else {
            return false;
        };
        let equal = actual.eq_ignore_ascii_case(&self.value) || {
            // Non-ASCII values: fall back to Unicode case folding.
            !actual.is_ascii() && actual.to_lowercase() == self.value.to_lowercase()
        };
        equal == (self.op == Operator::Eq)
    }
}

/// `^[a-z_][a-z0-9\-_.]+$`, case-insensitive.
fn valid_key(k: &str) -> bool {
    let b = k.as_bytes();
    b.len() >= 2
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// `^[a-z0-9:\-_\s\.\*\(\)\?\+\[\]\\\^\$\|\/]+$`, case-insensitive.
fn valid_value(v: &str) -> bool {
    !v.is_empty()
        && v.bytes().all(|c| {
            c.is_ascii_alphanumeric()
                || c.is_ascii_whitespace()
                || matches!(
                    c,
                    b':' | b'-'
                        | b'_'
                        | b'.'
                        | b'*'
                        | b'('
                        | b')'
                        | b'?'
                        | b'+'
                        | b'['
                        | b']'
                        | b'\\'
                        | b'^'
                        | b'$'
                        | b'|'
                        | b'/'
                )
        })
}

/// Parses one expression.
pub fn parse_constraint(expr: &str) -> Result<Constraint, ConstraintError> {
    for (op_str, op) in [("==", Operator::Eq), ("!=", Operator::NotEq)] {
        let Some((k, v)) = expr.split_once(op_str) else {
            continue;
        };
        let k = k.trim();
        if !valid_key(k) {
            return Err(ConstraintError::InvalidKey {
                expr: expr.to_string(),
                key: k.to_string(),
            });
        }
        let v = v.trim();
        if !valid_value(v) {
            return Err(ConstraintError::InvalidValue {
                expr: expr.to_string(),
                value: v.to_string(),
            });
        }
        let key = Key::parse(k);
        let ip = (key == Key::Ip).then(|| parse_ip_match(v));
        return Ok(Constraint {
            raw_key: k.to_string(),
            key,
            op,
            value: v.to_string(),
            ip,
        });
    }
    Err(ConstraintError::MissingOperator {
        expr: expr.to_string(),
    })
}

/// Parses a list of constraint expressions (as stored in `Placement.Constraints`).
pub fn parse_constraints(exprs: &[String]) -> Result<Vec<Constraint>, ConstraintError> {
    exprs.iter().map(|e| parse_constraint(e)).collect()
}

/// Whether `node` satisfies every constraint.
pub fn node_matches(constraints: &[Constraint], node: &Node) -> bool {
    constraints.iter().all(|c| c.matches(node))
}

fn parse_ip_match(v: &str) -> IpMatch {
    if let Ok(ip) = v.parse::<IpAddr>() {
        return IpMatch::Addr(ip);
    }
    if let Some((addr, len)) = v.split_once('/') {
        if let (Ok(ip), Ok(len)) = (addr.parse::<IpAddr>(), len.parse::<u8>()) {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            if len <= max {
                return IpMatch::Net(ip, len);
            }
        }
    }
    IpMatch::Malformed
}

/// The node's address: an IP, or `ip:port` / `[ip]:port` as some agents report it.
fn parse_node_ip(addr: &str) -> Option<IpAddr> {
    let addr = addr.trim();
    addr.parse::<IpAddr>()
        .ok()
        .or_else(|| addr.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
}

/// IPv4-mapped IPv6 addresses compare equal to their IPv4 form (as Go's `net.IP.Equal`).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn cidr_contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (canonical(net), canonical(ip)) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            u128::from(n) & mask == u128::from(a) & mask
        }
        // A v4 network written in v6-mapped form with a v6 prefix length, or a family mismatch.
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::{engine, Meta, NodeRole, NodeState, NodeStatus};
    use std::collections::HashMap;

    fn node() -> Node {
        Node {
            id: "node1abc".into(),
            meta: Meta::new_now(),
            spec: engine::NodeSpec {
                labels: Some(HashMap::from([
                    ("zone".to_string(), "East".to_string()),
                    ("Disk".to_string(), "ssd".to_string()),
                ])),
                ..Default::default()
            },
            description: engine::NodeDescription {
                hostname: Some("worker-1".into()),
                platform: Some(engine::Platform {
                    architecture: Some("x86_64".into()),
                    os: Some("linux".into()),
                }),
                engine: Some(engine::EngineDescription {
                    labels: Some(HashMap::from([("os".to_string(), "ubuntu".to_string())])),
                    ..Default::default()
                }),
                ..Default::default()
            },
            status: NodeStatus {
                state: NodeState::Ready,
                message: String::new(),
                addr: "10.1.2.3".into(),
            },
            role: NodeRole::Worker,
            manager_status: None,
            addr_port: String::new(),
            network_addresses: Default::default(),
        }
    }

    fn m(expr: &str) -> bool {
        let c = parse_constraints(&[expr.to_string()]).expect(expr);
        node_matches(&c, &node())
    }

    #[test]
    fn parses_operators_and_whitespace() {
        let c = parse_constraint("  node.labels.zone  ==  east ").unwrap();
        assert_eq!(c.key, Key::NodeLabel("zone".into()));
        assert_eq!(c.op, Operator::Eq);
        assert_eq!(c.value, "east");
        let c = parse_constraint("node.role!=manager").unwrap();
        assert_eq!(c.op, Operator::NotEq);
        assert_eq!(c.key, Key::Role);
        assert_eq!(Key::parse("NODE.HOSTNAME"), Key::Hostname);
        assert_eq!(
            Key::parse("Node.Labels.Zone"),
            Key::NodeLabel("Zone".into())
        );
    }

    #[test]
    fn parse_errors_use_swarmkit_wording() {
        let e = parse_constraint("node.labels.zone").unwrap_err();
        assert_eq!(
            e.to_string(),
            "constraint expected one operator from ==, !="
        );
        assert_eq!(e.expr(), "node.labels.zone");
        let e = parse_constraint("node.labels.zone=east").unwrap_err();
        assert_eq!(
            e.to_string(),
            "constraint expected one operator from ==, !="
        );
        let e = parse_constraint("9node==x").unwrap_err();
        assert_eq!(e.to_string(), "key '9node' is invalid");
        let e = parse_constraint("node.role==").unwrap_err();
        assert_eq!(e.to_string(), "value '' is invalid");
        let e = parse_constraint("node.role==a>b").unwrap_err();
        assert_eq!(e.to_string(), "value 'a>b' is invalid");
        // `==` is looked for first: the rest is the value.
        let e = parse_constraint("ab==b!=c").unwrap_err();
        assert_eq!(e.to_string(), "value 'b!=c' is invalid");
        assert!(parse_constraints(&["node.role==worker".into(), "x".into()]).is_err());
        assert!(parse_constraints(&[]).unwrap().is_empty());
    }

    #[test]
    fn matches_fixed_keys_case_insensitively() {
        assert!(m("node.id==NODE1ABC"));
        assert!(m("node.hostname==worker-1"));
        assert!(m("node.hostname!=worker-2"));
        assert!(!m("node.hostname==worker-2"));
        assert!(m("node.role==worker"));
        assert!(m("node.role==WORKER"));
        assert!(!m("node.role==manager"));
        assert!(m("node.platform.os==Linux"));
        assert!(m("node.platform.arch==x86_64"));
        assert!(!m("node.platform.arch!=x86_64"));
    }

    #[test]
    fn labels_names_are_case_sensitive_and_missing_reads_empty() {
        assert!(m("node.labels.zone==east"));
        assert!(m("node.labels.zone==EAST"));
        assert!(!m("node.labels.Zone==east"), "label name is case sensitive");
        assert!(m("node.labels.Disk==ssd"));
        assert!(m("node.labels.missing!=anything"));
        assert!(!m("node.labels.missing==anything"));
        assert!(m("engine.labels.os==ubuntu"));
        assert!(!m("engine.labels.os!=ubuntu"));
        assert!(m("engine.labels.none!=x"));
    }

    #[test]
    fn ip_and_cidr() {
        assert!(m("node.ip==10.1.2.3"));
        assert!(!m("node.ip!=10.1.2.3"));
        assert!(m("node.ip==10.1.0.0/16"));
        assert!(m("node.ip!=192.168.0.0/16"));
        assert!(!m("node.ip==10.2.0.0/16"));
        assert!(m("node.ip==::ffff:10.1.2.3"));
        // Malformed address: no node matches, whatever the operator.
        assert!(!m("node.ip==10.1.2"));
        assert!(!m("node.ip!=10.1.2"));
        let mut n = node();
        n.status.addr = "[2001:db8::2]:2377".into();
        let c = parse_constraints(&["node.ip==2001:db8::/32".into()]).unwrap();
        assert!(node_matches(&c, &n));
    }

    #[test]
    fn unknown_key_matches_nothing_and_all_are_anded() {
        assert!(!m("node.foo==bar"));
        assert!(!m("node.foo!=bar"));
        let c = parse_constraints(&["node.role==worker".into(), "node.labels.zone==west".into()])
            .unwrap();
        assert!(!node_matches(&c, &node()));
        let c = parse_constraints(&["node.role==worker".into(), "node.labels.zone==east".into()])
            .unwrap();
        assert!(node_matches(&c, &node()));
    }
}
