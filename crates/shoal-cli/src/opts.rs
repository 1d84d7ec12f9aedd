//! Parsing of flag values the way docker's `opts` package does: durations,
//! CPUs, memory sizes, environment variables and env files, labels, filters,
//! published ports, placement preferences, networks, shell-like command
//! splitting, node addresses, `--since` timestamps and registry credentials
//! from `~/.docker/config.json`.

use std::collections::HashMap;
use std::path::PathBuf;

use base64::Engine as _;
use bollard::auth::DockerCredentials;
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    NetworkAttachmentConfig, TaskSpecPlacementPreferences, TaskSpecPlacementSpread,
};

use crate::format::{parse_go_duration, ram_in_bytes};

/// A `--flag duration` value (Go syntax), in nanoseconds; negative values rejected
/// like docker's `DurationOpt`.
pub fn duration(s: &str) -> Result<i64, String> {
    let d = parse_go_duration(s)?;
    if d < 0 {
        return Err("duration cannot be negative".to_string());
    }
    Ok(d)
}

/// A plain Go `time.Duration` flag (negative allowed), in nanoseconds.
pub fn any_duration(s: &str) -> Result<i64, String> {
    parse_go_duration(s)
}

pub use shoal_compose::units::nano_cpus;

/// A `--limit-memory`/`--reserve-memory` value ("512m", "1g").
pub fn mem_bytes(s: &str) -> Result<i64, String> {
    ram_in_bytes(s)
}

/// An unsigned integer flag (docker's `Uint64Opt`).
pub fn uint(s: &str) -> Result<u64, String> {
    let parsed = if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16)
    } else {
        s.parse::<u64>()
    };
    parsed.map_err(|_| format!("strconv.ParseUint: parsing {s:?}: invalid syntax"))
}

/// `opts.ValidateEnv`: `KEY=value` kept; a bare `KEY` takes its value from the
/// environment when set.
pub fn validate_env(val: &str) -> Result<String, String> {
    let (k, has_value) = match val.split_once('=') {
        Some((k, _)) => (k, true),
        None => (val, false),
    };
    if k.is_empty() {
        return Err(format!("invalid environment variable: {val}"));
    }
    if has_value {
        return Ok(val.to_string());
    }
    match std::env::var(k) {
        Ok(v) => Ok(format!("{k}={v}")),
        Err(_) => Ok(val.to_string()),
    }
}

/// `opts.ValidateLabel`.
pub fn validate_label(val: &str) -> Result<String, String> {
    let k = val.split_once('=').map(|(k, _)| k).unwrap_or(val);
    if k.trim().is_empty() {
        return Err(format!("invalid label '{val}': empty name"));
    }
    if k.chars().any(char::is_whitespace) {
        return Err(format!("label '{k}' contains whitespaces"));
    }
    Ok(val.to_string())
}

/// `opts.ConvertKVStringsToMap`: `k=v` and bare `k` (empty value).
pub fn kv_map(items: &[String]) -> HashMap<String, String> {
    items
        .iter()
        .map(|i| match i.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (i.clone(), String::new()),
        })
        .collect()
}

/// Parses an env file as docker does (`#` comments, blank lines, `KEY=value`
/// passed through untouched, bare `KEY` taken from the environment if set).
pub fn parse_env_file_content(content: &str, file: &str) -> Result<Vec<String>, String> {
    let content = content.strip_prefix('\u{feff}').unwrap_or(content);
    let mut lines = Vec::new();
    for raw in content.lines() {
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (variable, value) = match line.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (line, None),
        };
        let variable = variable.trim_start();
        if variable.chars().any(char::is_whitespace) {
            return Err(format!(
                "variable '{variable}' contains whitespaces (in {file})"
            ));
        }
        if variable.is_empty() {
            return Err(format!("no variable name on line '{line}' (in {file})"));
        }
        match value {
            Some(v) => lines.push(format!("{variable}={v}")),
            None => {
                if let Ok(v) = std::env::var(variable.trim()) {
                    lines.push(format!("{}={v}", variable.trim()));
                }
            }
        }
    }
    Ok(lines)
}

/// `opts.ReadKVEnvStrings` followed by docker's de-duplication in `makeEnv`:
/// env files first, then `-e` values; a later `KEY=` replaces an earlier one.
pub fn make_env(env_files: &[String], env: &[String]) -> Result<Vec<String>, String> {
    let mut all = Vec::new();
    for f in env_files {
        let content = std::fs::read_to_string(f).map_err(|e| format!("open {f}: {e}"))?;
        all.extend(parse_env_file_content(&content, f)?);
    }
    all.extend(env.iter().cloned());
    Ok(dedup_env(all))
}

/// Removes earlier variables that a later one with the same key replaces.
pub fn dedup_env(vars: Vec<String>) -> Vec<String> {
    let mut current: Vec<String> = Vec::with_capacity(vars.len());
    for env in vars {
        let key = env
            .split_once('=')
            .map(|(k, _)| k)
            .unwrap_or(&env)
            .to_string();
        let prefix = format!("{key}=");
        current.retain(|c| !(c.starts_with(&prefix) || c == &key || c == &env));
        current.push(env);
    }
    current
}

/// `filters.ParseFlag`: `key=value`.
pub fn filter(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) => Ok((k.trim().to_lowercase(), v.trim().to_string())),
        None => Err("bad format of filter (expected name=value)".to_string()),
    }
}

/// Collects `--filter` values into the API's filter map.
pub fn filter_map(items: &[(String, String)]) -> HashMap<String, Vec<String>> {
    let mut m: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in items {
        let e = m.entry(k.clone()).or_default();
        if !e.contains(v) {
            e.push(v.clone());
        }
    }
    m
}

/// `--placement-pref spread=node.labels.dc`.
pub fn placement_pref(value: &str) -> Result<TaskSpecPlacementPreferences, String> {
    let (strategy, arg) = match value.split_once('=') {
        Some((s, a)) if !s.is_empty() => (s, a),
        _ => {
            return Err(
                "placement preference must be of the format \"<strategy>=<arg>\"".to_string(),
            )
        }
    };
    if strategy != "spread" {
        return Err(format!(
            "unsupported placement preference {strategy} (only spread is supported)"
        ));
    }
    Ok(TaskSpecPlacementPreferences {
        spread: Some(TaskSpecPlacementSpread {
            spread_descriptor: Some(arg.to_string()),
        }),
    })
}

/// `--network name` or `--network name=net,alias=a,driver-opt=k=v`.
pub fn network(value: &str) -> Result<NetworkAttachmentConfig, String> {
    let mut cfg = NetworkAttachmentConfig::default();
    if !value.contains('=') {
        cfg.target = Some(value.to_string());
        return Ok(cfg);
    }
    for field in value.split(',') {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| format!("invalid field '{field}' must be a key=value pair"))?;
        match k.trim().to_lowercase().as_str() {
            "name" => cfg.target = Some(v.to_string()),
            "alias" => cfg.aliases.get_or_insert_with(Vec::new).push(v.to_string()),
            "driver-opt" => {
                let (ok, ov) = v.split_once('=').ok_or_else(|| {
                    format!("invalid key value pair format in driver options: {v}")
                })?;
                cfg.driver_opts
                    .get_or_insert_with(HashMap::new)
                    .insert(ok.trim().to_lowercase(), ov.trim().to_lowercase());
            }
            other => return Err(format!("invalid field key {other}")),
        }
    }
    if cfg.target.as_deref().unwrap_or("").is_empty() {
        return Err("network name/id is not specified".to_string());
    }
    Ok(cfg)
}

fn protocol_enum(p: &str) -> Result<EndpointPortConfigProtocolEnum, String> {
    match p {
        "tcp" => Ok(EndpointPortConfigProtocolEnum::TCP),
        "udp" => Ok(EndpointPortConfigProtocolEnum::UDP),
        "sctp" => Ok(EndpointPortConfigProtocolEnum::SCTP),
        _ => Err(format!("invalid protocol value '{p}'")),
    }
}

fn port_config(
    target: u32,
    published: u32,
    proto: EndpointPortConfigProtocolEnum,
    mode: EndpointPortConfigPublishModeEnum,
) -> EndpointPortConfig {
    EndpointPortConfig {
        name: None,
        protocol: Some(proto),
        target_port: Some(i64::from(target)),
        published_port: if published == 0 {
            None
        } else {
            Some(i64::from(published))
        },
        publish_mode: Some(mode),
    }
}

fn port_range(s: &str, what: &str) -> Result<(u32, u32), String> {
    let bad = || format!("invalid {what}: {s}");
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let start: u16 = a.parse().map_err(|_| bad())?;
    let end: u16 = b.parse().map_err(|_| bad())?;
    if end < start {
        return Err(format!("invalid range specified for port: {s}"));
    }
    Ok((u32::from(start), u32::from(end)))
}

fn is_long_port_syntax(s: &str) -> bool {
    let b = s.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    (1..b.len().saturating_sub(1)).any(|i| b[i] == b'=' && word(b[i - 1]) && word(b[i + 1]))
}

/// `-p/--publish`: `published=8080,target=80[,protocol=udp][,mode=host]` or
/// `[host:]container[/proto]` with optional ranges.
pub fn publish(value: &str) -> Result<Vec<EndpointPortConfig>, String> {
    if is_long_port_syntax(value) {
        let mut target: u32 = 0;
        let mut published: u32 = 0;
        let mut proto = EndpointPortConfigProtocolEnum::TCP;
        let mut mode = EndpointPortConfigPublishModeEnum::INGRESS;
        for field in value.split(',') {
            let lower = field.to_lowercase();
            let (k, v) = match lower.split_once('=') {
                Some((k, v)) if !k.is_empty() => (k.to_string(), v.to_string()),
                _ => return Err(format!("invalid field: {field}")),
            };
            match k.as_str() {
                "protocol" => proto = protocol_enum(&v)?,
                "mode" => {
                    mode = match v.as_str() {
                        "ingress" => EndpointPortConfigPublishModeEnum::INGRESS,
                        "host" => EndpointPortConfigPublishModeEnum::HOST,
                        _ => {
                            return Err(format!(
                            "invalid publish mode value ({v}): must be either 'ingress' or 'host'"
                        ))
                        }
                    }
                }
                "target" => {
                    target = v.parse::<u16>().map(u32::from).map_err(|_| {
                        format!(
                            "invalid target port ({v}): value must be an integer: invalid syntax"
                        )
                    })?
                }
                "published" => {
                    published = v.parse::<u16>().map(u32::from).map_err(|_| {
                        format!(
                            "invalid published port ({v}): value must be an integer: invalid syntax"
                        )
                    })?
                }
                _ => return Err(format!("invalid field key: {k}")),
            }
        }
        if target == 0 {
            return Err("missing mandatory field 'target'".to_string());
        }
        return Ok(vec![port_config(target, published, proto, mode)]);
    }

    let (spec, proto) = match value.rsplit_once('/') {
        Some((s, p)) => (s, p.to_lowercase()),
        None => (value, "tcp".to_string()),
    };
    let proto = protocol_enum(&proto).map_err(|_| format!("invalid proto: {proto}"))?;
    let parts: Vec<&str> = spec.split(':').collect();
    let (host, container) = match parts.as_slice() {
        [c] => ("", *c),
        [h, c] => (*h, *c),
        [ip, h, c] => {
            if !ip.is_empty() {
                return Err("hostip is not supported".to_string());
            }
            (*h, *c)
        }
        _ => return Err(format!("invalid port format for publish: {value}")),
    };
    if container.is_empty() {
        return Err(format!("no port specified: {value}<empty>"));
    }
    let (c_start, c_end) = port_range(container, "containerPort")?;
    let host_range = if host.is_empty() {
        None
    } else {
        Some(port_range(host, "hostPort")?)
    };
    let mode = EndpointPortConfigPublishModeEnum::INGRESS;
    let mut out = Vec::new();
    match host_range {
        None => {
            for t in c_start..=c_end {
                out.push(port_config(t, 0, proto, mode));
            }
        }
        Some((h_start, h_end)) => {
            let c_len = c_end - c_start;
            let h_len = h_end - h_start;
            if c_len == 0 {
                for h in h_start..=h_end {
                    out.push(port_config(c_start, h, proto, mode));
                }
            } else if c_len == h_len {
                for i in 0..=c_len {
                    out.push(port_config(c_start + i, h_start + i, proto, mode));
                }
            } else {
                return Err(format!(
                    "invalid ranges specified for container and host Ports: {container} and {host}"
                ));
            }
        }
    }
    Ok(out)
}

/// Words of a shell-split flag value (`--entrypoint`, `--args`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Words(pub Vec<String>);

/// Value parser for flags that take a command line.
pub fn words(input: &str) -> Result<Words, String> {
    shlex(input).map(Words)
}

/// Ports of one `--publish` value.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ports(pub Vec<EndpointPortConfig>);

/// Value parser for `--publish`.
pub fn ports(value: &str) -> Result<Ports, String> {
    publish(value).map(Ports)
}

/// Splits a command line like a POSIX shell (google/shlex): whitespace separates
/// words, `'...'` is literal, `"..."` allows `\` escapes, `#` starts a comment.
pub fn shlex(input: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = input.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '#' if !in_word => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(n) => cur.push(n),
                    None => return Err("EOF found after escape character".to_string()),
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(n) => cur.push(n),
                        None => return Err("EOF found when expecting closing quote".to_string()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(n @ ('"' | '\\' | '$' | '`')) => cur.push(n),
                            Some('\n') => {}
                            Some(n) => {
                                cur.push('\\');
                                cur.push(n);
                            }
                            None => {
                                return Err("EOF found when expecting closing quote".to_string())
                            }
                        },
                        Some(n) => cur.push(n),
                        None => return Err("EOF found when expecting closing quote".to_string()),
                    }
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// `NodeAddrOption`: `ip`, `ip:port`, `:port`, `interface` (default port 2377,
/// default host 0.0.0.0), `tcp://` prefix dropped.
pub fn node_addr(value: &str) -> Result<String, String> {
    let v = value.strip_prefix("tcp://").unwrap_or(value);
    if v.contains("://") {
        return Err(format!("Invalid proto, expected tcp: {value}"));
    }
    let (host, port) = crate::client::split_host_port(v);
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    let port = match port {
        None | Some("") => 2377,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("invalid port '{p}' in address {value}"))?,
    };
    if port == 0 {
        return Err(format!("invalid port '0' in address {value}"));
    }
    Ok(format!("{host}:{port}"))
}

/// `timetypes.GetTimestamp` for `--since`: a Go duration is taken relative to now,
/// RFC 3339 times become `seconds.nanos`, anything else is passed through.
pub fn since(value: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    if value.is_empty() {
        return String::new();
    }
    if let Ok(d) = parse_go_duration(value) {
        let t = now - chrono::Duration::nanoseconds(d);
        return format!("{}.{:09}", t.timestamp(), t.timestamp_subsec_nanos());
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(value) {
        return format!("{}.{:09}", t.timestamp(), t.timestamp_subsec_nanos());
    }
    value.to_string()
}

/// Registry host of an image reference ("docker.io" for Docker Hub images).
pub fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_string()
        }
        _ => "docker.io".to_string(),
    }
}

fn docker_config_path() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("DOCKER_CONFIG") {
        if !dir.is_empty() {
            return Some(PathBuf::from(dir).join("config.json"));
        }
    }
    std::env::var("HOME")
        .ok()
        .map(|h| PathBuf::from(h).join(".docker").join("config.json"))
}

fn normalize_registry_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k).to_string()
}

/// Finds the credentials for `image` in a docker config (the `auths` section).
pub fn credentials_from_config(
    config: &serde_json::Value,
    image: &str,
) -> Option<DockerCredentials> {
    let registry = registry_of(image);
    let wanted: Vec<String> = if registry == "docker.io" {
        vec![
            "https://index.docker.io/v1/".to_string(),
            "index.docker.io".to_string(),
            "docker.io".to_string(),
        ]
    } else {
        vec![registry.clone()]
    };
    let auths = config.get("auths")?.as_object()?;
    let (key, entry) = wanted
        .iter()
        .find_map(|w| auths.get_key_value(w.as_str()))
        .or_else(|| {
            auths.iter().find(|(k, _)| {
                let n = normalize_registry_key(k);
                wanted.iter().any(|w| normalize_registry_key(w) == n)
            })
        })?;
    let mut creds = DockerCredentials {
        serveraddress: Some(if registry == "docker.io" {
            "https://index.docker.io/v1/".to_string()
        } else {
            key.clone()
        }),
        ..Default::default()
    };
    let s = |k: &str| {
        entry
            .get(k)
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
    };
    if let Some(auth) = s("auth") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, pass) = text.split_once(':')?;
        creds.username = Some(user.to_string());
        creds.password = Some(pass.trim_end_matches('\0').to_string());
    }
    if let Some(u) = s("username") {
        creds.username = Some(u.to_string());
    }
    if let Some(p) = s("password") {
        creds.password = Some(p.to_string());
    }
    if let Some(t) = s("identitytoken") {
        creds.identitytoken = Some(t.to_string());
    }
    Some(creds)
}

/// Credentials for `image` from `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
/// A credential helper (`credsStore` / `credHelpers`) is asked when the config names one.
pub fn registry_credentials(image: &str) -> Option<DockerCredentials> {
    let path = docker_config_path()?;
    let content = std::fs::read_to_string(path).ok()?;
    let config: serde_json::Value = serde_json::from_str(&content).ok()?;
    let uses_helper = config.get("credsStore").is_some() || config.get("credHelpers").is_some();
    if uses_helper {
        return crate::login::credentials_for_image(image);
    }
    credentials_from_config(&config, image)
}

/// The `X-Registry-Auth` header value: base64url of the JSON auth config, as docker encodes it.
pub fn encode_registry_auth(creds: &DockerCredentials) -> String {
    let mut m = serde_json::Map::new();
    let mut put = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            if !v.is_empty() {
                m.insert(k.to_string(), serde_json::Value::String(v.clone()));
            }
        }
    };
    put("username", &creds.username);
    put("password", &creds.password);
    put("auth", &creds.auth);
    put("email", &creds.email);
    put("serveraddress", &creds.serveraddress);
    put("identitytoken", &creds.identitytoken);
    put("registrytoken", &creds.registrytoken);
    let json = serde_json::Value::Object(m).to_string();
    base64::engine::general_purpose::URL_SAFE.encode(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_and_memory() {
        assert_eq!(nano_cpus("0.5"), Ok(500_000_000));
        assert_eq!(nano_cpus("2"), Ok(2_000_000_000));
        assert_eq!(nano_cpus(".25"), Ok(250_000_000));
        assert_eq!(
            nano_cpus("1.0000000001"),
            Err("value is too precise".to_string())
        );
        assert!(nano_cpus("abc").is_err());
        assert_eq!(mem_bytes("64m"), Ok(64 * 1024 * 1024));
        assert_eq!(duration("10s"), Ok(10_000_000_000));
        assert_eq!(
            duration("-1s"),
            Err("duration cannot be negative".to_string())
        );
        assert_eq!(uint("3"), Ok(3));
        assert!(uint("-1").is_err());
    }

    #[test]
    fn env_and_labels() {
        assert_eq!(validate_env("A=1"), Ok("A=1".to_string()));
        assert_eq!(validate_env("A=").unwrap(), "A=");
        assert!(validate_env("=x").is_err());
        assert_eq!(
            validate_env("SHOAL_SURELY_UNSET_VAR_X"),
            Ok("SHOAL_SURELY_UNSET_VAR_X".to_string())
        );
        assert_eq!(validate_label("a=b"), Ok("a=b".to_string()));
        assert_eq!(validate_label("a"), Ok("a".to_string()));
        assert_eq!(
            validate_label("=b"),
            Err("invalid label '=b': empty name".to_string())
        );
        assert_eq!(
            validate_label("a b=c"),
            Err("label 'a b' contains whitespaces".to_string())
        );
        let m = kv_map(&["a=b".to_string(), "c".to_string(), "d=e=f".to_string()]);
        assert_eq!(m.get("a").map(String::as_str), Some("b"));
        assert_eq!(m.get("c").map(String::as_str), Some(""));
        assert_eq!(m.get("d").map(String::as_str), Some("e=f"));
    }

    #[test]
    fn env_files_and_dedup() {
        let content = "\u{feff}# comment\n\n  A=1\nB= spaced \nC=x=y\n";
        assert_eq!(
            parse_env_file_content(content, "f").unwrap(),
            vec!["A=1", "B= spaced ", "C=x=y"]
        );
        assert!(parse_env_file_content("BAD KEY=1\n", "f").is_err());
        assert!(parse_env_file_content("=1\n", "f").is_err());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("env");
        std::fs::write(&path, "A=from-file\nB=2\n").unwrap();
        let env = make_env(
            &[path.to_string_lossy().into_owned()],
            &["A=from-flag".to_string(), "C=3".to_string()],
        )
        .unwrap();
        assert_eq!(env, vec!["B=2", "A=from-flag", "C=3"]);
        assert!(make_env(&["/nonexistent/envfile".to_string()], &[]).is_err());
    }

    #[test]
    fn ports() {
        let p = publish("8080:80").unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].target_port, Some(80));
        assert_eq!(p[0].published_port, Some(8080));
        assert_eq!(p[0].protocol, Some(EndpointPortConfigProtocolEnum::TCP));
        assert_eq!(
            p[0].publish_mode,
            Some(EndpointPortConfigPublishModeEnum::INGRESS)
        );

        let p = publish("53:53/udp").unwrap();
        assert_eq!(p[0].protocol, Some(EndpointPortConfigProtocolEnum::UDP));

        let p = publish("80").unwrap();
        assert_eq!(p[0].target_port, Some(80));
        assert_eq!(p[0].published_port, None);

        let p = publish("8080-8081:80-81").unwrap();
        assert_eq!(
            p.iter()
                .map(|c| (c.published_port, c.target_port))
                .collect::<Vec<_>>(),
            vec![(Some(8080), Some(80)), (Some(8081), Some(81))]
        );

        let p = publish("published=8080,target=80,protocol=udp,mode=host").unwrap();
        assert_eq!(p[0].published_port, Some(8080));
        assert_eq!(p[0].target_port, Some(80));
        assert_eq!(p[0].protocol, Some(EndpointPortConfigProtocolEnum::UDP));
        assert_eq!(
            p[0].publish_mode,
            Some(EndpointPortConfigPublishModeEnum::HOST)
        );

        assert_eq!(
            publish("published=8080").unwrap_err(),
            "missing mandatory field 'target'"
        );
        assert_eq!(
            publish("target=80,mode=bogus").unwrap_err(),
            "invalid publish mode value (bogus): must be either 'ingress' or 'host'"
        );
        assert_eq!(
            publish("1.2.3.4:80:80").unwrap_err(),
            "hostip is not supported"
        );
        assert!(publish("8080-8082:80-81").is_err());
        assert!(publish("abc").is_err());
    }

    #[test]
    fn prefs_networks_filters() {
        let p = placement_pref("spread=node.labels.dc").unwrap();
        assert_eq!(
            p.spread.unwrap().spread_descriptor.as_deref(),
            Some("node.labels.dc")
        );
        assert_eq!(
            placement_pref("binpack=x").unwrap_err(),
            "unsupported placement preference binpack (only spread is supported)"
        );
        assert!(placement_pref("nope").is_err());

        assert_eq!(network("front").unwrap().target.as_deref(), Some("front"));
        let n = network("name=back,alias=db,alias=pg").unwrap();
        assert_eq!(n.target.as_deref(), Some("back"));
        assert_eq!(n.aliases.unwrap(), vec!["db", "pg"]);
        assert!(network("alias=x").is_err());

        assert_eq!(
            filter("Name=web"),
            Ok(("name".to_string(), "web".to_string()))
        );
        assert_eq!(
            filter("label=a=b"),
            Ok(("label".to_string(), "a=b".to_string()))
        );
        assert!(filter("web").is_err());
        let m = filter_map(&[
            ("name".into(), "a".into()),
            ("name".into(), "b".into()),
            ("name".into(), "a".into()),
        ]);
        assert_eq!(m["name"], vec!["a", "b"]);
    }

    #[test]
    fn shell_splitting() {
        assert_eq!(
            shlex("sh -c 'echo hi; sleep 1'").unwrap(),
            vec!["sh", "-c", "echo hi; sleep 1"]
        );
        assert_eq!(
            shlex(r#"a "b \"c\" d" e\ f"#).unwrap(),
            vec!["a", "b \"c\" d", "e f"]
        );
        assert_eq!(shlex("  ").unwrap(), Vec::<String>::new());
        assert_eq!(shlex("x # comment").unwrap(), vec!["x"]);
        assert_eq!(shlex("''").unwrap(), vec![""]);
        assert!(shlex("'open").is_err());
    }

    #[test]
    fn node_addresses() {
        assert_eq!(node_addr("0.0.0.0:2377"), Ok("0.0.0.0:2377".to_string()));
        assert_eq!(node_addr("10.0.0.1"), Ok("10.0.0.1:2377".to_string()));
        assert_eq!(node_addr(":4000"), Ok("0.0.0.0:4000".to_string()));
        assert_eq!(node_addr("eth0"), Ok("eth0:2377".to_string()));
        assert_eq!(node_addr("tcp://1.2.3.4:5"), Ok("1.2.3.4:5".to_string()));
        assert!(node_addr("udp://1.2.3.4").is_err());
        assert!(node_addr("1.2.3.4:x").is_err());
    }

    #[test]
    fn since_values() {
        let now = chrono::DateTime::parse_from_rfc3339("2024-01-01T00:10:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(since("10m", now), "1704067200.000000000");
        assert_eq!(since("2024-01-01T00:00:00Z", now), "1704067200.000000000");
        assert_eq!(since("1704067200", now), "1704067200");
        assert_eq!(since("", now), "");
    }

    #[test]
    fn registry_auth_lookup() {
        let cfg = serde_json::json!({"auths": {
            "https://index.docker.io/v1/": {"auth": base64::engine::general_purpose::STANDARD.encode("me:secret")},
            "registry.example.com:5000": {"auth": base64::engine::general_purpose::STANDARD.encode("u:p")}
        }});
        let c = credentials_from_config(&cfg, "nginx:latest").unwrap();
        assert_eq!(c.username.as_deref(), Some("me"));
        assert_eq!(c.password.as_deref(), Some("secret"));
        assert_eq!(
            c.serveraddress.as_deref(),
            Some("https://index.docker.io/v1/")
        );
        let c = credentials_from_config(&cfg, "registry.example.com:5000/app:1").unwrap();
        assert_eq!(c.username.as_deref(), Some("u"));
        assert!(credentials_from_config(&cfg, "other.io/app").is_none());
        assert_eq!(registry_of("localhost/x"), "localhost");
        assert_eq!(registry_of("library/nginx"), "docker.io");

        let header = encode_registry_auth(&DockerCredentials {
            username: Some("u".into()),
            password: Some("p".into()),
            ..Default::default()
        });
        let decoded = base64::engine::general_purpose::URL_SAFE
            .decode(header)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&decoded).unwrap();
        assert_eq!(v, serde_json::json!({"username": "u", "password": "p"}));
    }
}
