//! Merging several compose files (`-c a.yml -c b.yml`) in order, as `docker stack deploy`
//! does: a later file overrides the earlier ones.
//!
//! - Services are merged by name, field by field: scalars are replaced, mappings merged
//!   recursively, lists appended, except `command`, `entrypoint` and `healthcheck.test`, which are
//!   replaced.
//! - `ports` (by published port and protocol), `volumes` (by target), `secrets` and `configs`
//!   (by source) are merged by their key: an entry of the later file replaces the entry with the
//!   same key, new entries are appended.
//! - `environment`, `labels`, `deploy.labels`, `sysctls` and `networks` may be written as lists
//!   or mappings; they are merged as mappings.
//! - Top-level networks, volumes, secrets and configs are replaced by name.

use serde_yaml::{Mapping, Value};

/// Merges `over` (a later file) into `base`.
pub fn merge_files(base: &mut Value, over: Value) {
    let Value::Mapping(over) = over else {
        return;
    };
    let Value::Mapping(base_map) = base else {
        *base = Value::Mapping(over);
        return;
    };
    for (key, value) in over {
        match (key.as_str(), base_map.get_mut(&key)) {
            (Some("services"), Some(Value::Mapping(services))) => {
                if let Value::Mapping(over_services) = value {
                    for (name, service) in over_services {
                        match services.get_mut(&name) {
                            Some(existing) => merge_service(existing, service),
                            None => {
                                services.insert(name, service);
                            }
                        }
                    }
                }
            }
            (
                Some("networks" | "volumes" | "secrets" | "configs"),
                Some(Value::Mapping(section)),
            ) => {
                if let Value::Mapping(over_section) = value {
                    for (name, item) in over_section {
                        section.insert(name, item);
                    }
                }
            }
            (_, Some(_)) if value.is_null() => {}
            _ => {
                base_map.insert(key, value);
            }
        }
    }
}

/// Merges a service definition of a later file into the earlier one.
pub fn merge_service(base: &mut Value, over: Value) {
    let (Value::Mapping(base_map), Value::Mapping(over_map)) = (&mut *base, &over) else {
        if !over.is_null() {
            *base = over;
        }
        return;
    };
    for (key, value) in over_map.clone() {
        let name = key.as_str().unwrap_or_default().to_string();
        if value.is_null() {
            continue;
        }
        let Some(existing) = base_map.get_mut(&key) else {
            base_map.insert(key, value);
            continue;
        };
        match name.as_str() {
            "command" | "entrypoint" => *existing = value,
            "ports" => merge_keyed(existing, value, port_key),
            "volumes" => merge_keyed(existing, value, volume_key),
            "secrets" | "configs" => merge_keyed(existing, value, source_key),
            "environment" | "labels" | "sysctls" | "networks" => {
                merge_dict(existing, value, name == "networks")
            }
            "healthcheck" => merge_nested(existing, value, &["test"]),
            "deploy" => merge_deploy(existing, value),
            _ => merge_generic(existing, value),
        }
    }
}

fn merge_deploy(base: &mut Value, over: Value) {
    if let (Value::Mapping(b), Value::Mapping(o)) = (&mut *base, &over) {
        if let (Some(bl), Some(ol)) = (b.get("labels").cloned(), o.get("labels").cloned()) {
            let mut labels = bl;
            merge_dict(&mut labels, ol, false);
            let mut o = o.clone();
            o.insert(Value::from("labels"), labels);
            merge_generic(base, Value::Mapping(o));
            return;
        }
    }
    merge_generic(base, over);
}

/// Merges mappings recursively, replacing the values of `replaced` keys.
fn merge_nested(base: &mut Value, over: Value, replaced: &[&str]) {
    match (&mut *base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                if v.is_null() {
                    continue;
                }
                let is_replaced = k.as_str().is_some_and(|k| replaced.contains(&k));
                match b.get_mut(&k) {
                    Some(existing) if !is_replaced => merge_generic(existing, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (_, o) => *base = o,
    }
}

/// Mappings merged recursively, lists appended, anything else replaced.
fn merge_generic(base: &mut Value, over: Value) {
    match (&mut *base, over) {
        (Value::Mapping(_), o @ Value::Mapping(_)) => merge_nested(base, o, &[]),
        (Value::Sequence(b), Value::Sequence(o)) => b.extend(o),
        (_, Value::Null) => {}
        (_, o) => *base = o,
    }
}

/// Merges two lists whose items are identified by `key`: an item of `over` replaces the item of
/// `base` with the same key, other items are appended.
fn merge_keyed(base: &mut Value, over: Value, key: fn(&Value) -> Option<String>) {
    let (Value::Sequence(b), Value::Sequence(o)) = (&mut *base, &over) else {
        *base = over;
        return;
    };
    for item in o {
        let k = key(item);
        let pos = k
            .as_ref()
            .and_then(|k| b.iter().position(|x| key(x).as_ref() == Some(k)));
        match pos {
            Some(i) => b[i] = item.clone(),
            None => b.push(item.clone()),
        }
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `published/protocol` of a port (short `[ip:]published:target[/proto]` or long syntax); a port
/// without a published port is keyed by its target.
fn port_key(v: &Value) -> Option<String> {
    match v {
        Value::Mapping(m) => {
            let proto = m
                .get("protocol")
                .and_then(scalar_text)
                .unwrap_or_else(|| "tcp".into());
            let port = m
                .get("published")
                .and_then(scalar_text)
                .map(|p| format!("p{p}"))
                .or_else(|| {
                    m.get("target")
                        .and_then(scalar_text)
                        .map(|t| format!("t{t}"))
                })?;
            Some(format!("{port}/{proto}"))
        }
        other => {
            let text = scalar_text(other)?;
            let (spec, proto) = match text.split_once('/') {
                Some((s, p)) => (s.to_string(), p.to_string()),
                None => (text.clone(), "tcp".to_string()),
            };
            let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
            let port = match parts.as_slice() {
                [target] => format!("t{target}"),
                [_, published, ..] if !published.is_empty() => format!("p{published}"),
                [target, ..] => format!("t{target}"),
                [] => return None,
            };
            Some(format!("{port}/{proto}"))
        }
    }
}

/// The target of a volume (`source:target[:mode]`, `target`, or long syntax).
fn volume_key(v: &Value) -> Option<String> {
    match v {
        Value::Mapping(m) => m.get("target").and_then(scalar_text),
        other => {
            let text = scalar_text(other)?;
            let parts: Vec<&str> = text.split(':').collect();
            Some(match parts.as_slice() {
                [target] => target.to_string(),
                [_, target, ..] => target.to_string(),
                [] => return None,
            })
        }
    }
}

/// The source of a secret or config reference (short `name` or long syntax).
fn source_key(v: &Value) -> Option<String> {
    match v {
        Value::Mapping(m) => m.get("source").and_then(scalar_text),
        other => scalar_text(other),
    }
}

/// A list (`KEY=value`, or names for networks) or a mapping, as a mapping.
fn as_dict(v: Value, networks: bool) -> Value {
    match v {
        Value::Sequence(items) => {
            let mut m = Mapping::new();
            for item in items {
                let text = scalar_text(&item).unwrap_or_default();
                if networks {
                    m.insert(Value::from(text), Value::Null);
                    continue;
                }
                match text.split_once('=') {
                    Some((k, v)) => m.insert(Value::from(k), Value::from(v)),
                    None => m.insert(Value::from(text), Value::Null),
                };
            }
            Value::Mapping(m)
        }
        other => other,
    }
}

/// Merges two list-or-mapping values as mappings, the later entries winning. Two lists of
/// network names stay a list.
fn merge_dict(base: &mut Value, over: Value, networks: bool) {
    if networks {
        if let (Value::Sequence(b), Value::Sequence(o)) = (&mut *base, &over) {
            for item in o {
                if !b.contains(item) {
                    b.push(item.clone());
                }
            }
            return;
        }
    }
    let b = as_dict(std::mem::take(base), networks);
    let o = as_dict(over, networks);
    match (b, o) {
        (Value::Mapping(mut b), Value::Mapping(o)) => {
            for (k, v) in o {
                b.insert(k, v);
            }
            *base = Value::Mapping(b);
        }
        (_, o) => *base = o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Value {
        serde_yaml::from_str(s).expect("yaml")
    }

    #[test]
    fn services_are_merged_field_by_field() {
        let mut base = yaml(
            "version: \"3.8\"\nservices:\n  web:\n    image: a\n    command: [x, y]\n    dns: [1.1.1.1]\n    deploy:\n      replicas: 2\n      resources:\n        limits:\n          cpus: \"0.5\"\n  db:\n    image: pg\n",
        );
        let over = yaml(
            "services:\n  web:\n    image: b\n    command: [z]\n    dns: [8.8.8.8]\n    deploy:\n      resources:\n        limits:\n          memory: 50M\n  cache:\n    image: redis\n",
        );
        merge_files(&mut base, over);
        let expected = yaml(
            "version: \"3.8\"\nservices:\n  web:\n    image: b\n    command: [z]\n    dns: [1.1.1.1, 8.8.8.8]\n    deploy:\n      replicas: 2\n      resources:\n        limits:\n          cpus: \"0.5\"\n          memory: 50M\n  db:\n    image: pg\n  cache:\n    image: redis\n",
        );
        assert_eq!(base, expected);
    }

    #[test]
    fn keyed_lists_replace_by_key() {
        let mut base = yaml(
            "services:\n  web:\n    ports: [\"8080:80\", \"9000:9000/udp\"]\n    volumes: [\"data:/data\", \"/tmp:/tmp:ro\"]\n    secrets: [a, {source: b, target: bb}]\n",
        );
        let over = yaml(
            "services:\n  web:\n    ports: [{published: 8080, target: 81}, \"9000:9000\"]\n    volumes: [{type: volume, source: other, target: /data}]\n    secrets: [{source: a, mode: 0400}, c]\n",
        );
        merge_files(&mut base, over);
        let expected = yaml(
            "services:\n  web:\n    ports: [{published: 8080, target: 81}, \"9000:9000/udp\", \"9000:9000\"]\n    volumes: [{type: volume, source: other, target: /data}, \"/tmp:/tmp:ro\"]\n    secrets: [{source: a, mode: 0400}, {source: b, target: bb}, c]\n",
        );
        assert_eq!(base, expected);
    }

    #[test]
    fn environment_lists_and_maps_merge_as_maps() {
        let mut base = yaml(
            "services:\n  web:\n    environment: [A=1, B=2, C]\n    labels: {x: \"1\"}\n    networks: [front]\n",
        );
        let over = yaml(
            "services:\n  web:\n    environment: {B: \"3\"}\n    labels: [y=2]\n    networks: {back: {aliases: [b]}}\n",
        );
        merge_files(&mut base, over);
        let expected = yaml(
            "services:\n  web:\n    environment: {A: \"1\", B: \"3\", C: null}\n    labels: {x: \"1\", y: \"2\"}\n    networks: {front: null, back: {aliases: [b]}}\n",
        );
        assert_eq!(base, expected);
    }

    #[test]
    fn top_level_objects_are_replaced_by_name() {
        let mut base = yaml("networks:\n  a: {driver: overlay, attachable: true}\n  b: {}\n");
        let over = yaml("networks:\n  a: {external: true}\nsecrets:\n  s: {file: ./s}\n");
        merge_files(&mut base, over);
        let expected =
            yaml("networks:\n  a: {external: true}\n  b: {}\nsecrets:\n  s: {file: ./s}\n");
        assert_eq!(base, expected);
    }
}
