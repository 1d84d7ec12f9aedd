//! Parsers for the string forms compose files use: Go durations (`1m30s`), sizes
//! (`50M`), CPU counts (`"0.1"`), short port specs (`"127.0.0.1:4000-4001:80-81/udp"`)
//! and shell command lines.

use super::types::ServicePortConfig;

/// Parses a Go duration (`300ms`, `5s`, `1m30s`, `1.5h`, `0`) into nanoseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    crate::units::parse_go_duration(s)
}

/// Parses a human size (`50M`, `1.5g`, `512k`, `100`, `2GiB`) into bytes, 1024-based
/// as docker's `RAMInBytes`.
pub fn parse_memory(s: &str) -> Result<i64, String> {
    crate::units::ram_in_bytes(s)
}

/// Parses a CPU count (`"0.5"`, `"2"`) into nano CPUs, as docker's `ParseCPUs`; a compose
/// file has no negative counts.
pub fn parse_cpus(s: &str) -> Result<i64, String> {
    if s.trim().starts_with('-') {
        return Err(format!("failed to parse {s} as a rational number"));
    }
    crate::units::nano_cpus(s)
}

fn parse_port_range(s: &str) -> Option<(u32, u32)> {
    let port = |p: &str| -> Option<u32> {
        let n: u32 = p.parse().ok()?;
        (n <= 65535).then_some(n)
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            (b >= a).then_some((a, b))
        }
        None => port(s).map(|p| (p, p)),
    }
}

/// Parses a short port spec (`"4000:80"`, `"80"`, `"8000-8001:80-81"`, `"53:53/udp"`,
/// `"127.0.0.1:4000:80"`) into port configs with mode `ingress`, like docker.
/// A host IP is accepted and ignored (a swarm publishes on every address).
pub fn parse_port_spec(spec: &str) -> Result<Vec<ServicePortConfig>, String> {
    let (raw, proto) = match spec.rsplit_once('/') {
        Some((r, p)) => (r, p),
        None => (spec, "tcp"),
    };
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let parts: Vec<&str> = raw.split(':').collect();
    let (host, container) = match parts.len() {
        1 => ("", parts[0]),
        n => (parts[n - 2], parts[n - 1]),
    };
    if container.is_empty() {
        return Err(format!("no port specified: {spec}<empty>"));
    }
    let (start, end) =
        parse_port_range(container).ok_or_else(|| format!("invalid containerPort: {container}"))?;
    let host_range = if host.is_empty() {
        None
    } else {
        Some(parse_port_range(host).ok_or_else(|| format!("invalid hostPort: {host}"))?)
    };
    if let Some((hs, he)) = host_range {
        if he - hs != end - start && end != start {
            return Err(format!(
                "invalid ranges specified for container and host Ports: {container} and {host}"
            ));
        }
    }
    let mut out = Vec::new();
    let port = |target: u32, published: Option<u32>| ServicePortConfig {
        target,
        published: published.filter(|p| *p != 0),
        protocol: Some(proto.clone()),
        mode: Some("ingress".to_string()),
    };
    match host_range {
        // One container port, a range of host ports: published on each of them.
        Some((hs, he)) if start == end && he != hs => {
            for published in hs..=he {
                out.push(port(start, Some(published)));
            }
        }
        Some((hs, _)) => {
            for (i, target) in (start..=end).enumerate() {
                out.push(port(target, Some(hs + i as u32)));
            }
        }
        None => {
            for target in start..=end {
                out.push(port(target, None));
            }
        }
    }
    Ok(out)
}

/// Splits a command line into words like a POSIX shell (quotes and backslashes;
/// no expansion), as docker does for `command: "a b 'c d'"`.
pub fn split_shell_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return Err(format!("invalid command line string: {s}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(x @ ('"' | '\\' | '$' | '`')) => cur.push(x),
                            Some('\n') => {}
                            Some(x) => {
                                cur.push('\\');
                                cur.push(x);
                            }
                            None => return Err(format!("invalid command line string: {s}")),
                        },
                        Some(x) => cur.push(x),
                        None => return Err(format!("invalid command line string: {s}")),
                    }
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(5_000_000_000));
        assert_eq!(parse_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_duration("300ms"), Ok(300_000_000));
        assert_eq!(parse_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration("10us"), Ok(10_000));
        assert_eq!(
            parse_duration("five"),
            Err("time: invalid duration \"five\"".to_string())
        );
        assert_eq!(
            parse_duration("5"),
            Err("time: missing unit in duration \"5\"".to_string())
        );
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn memory() {
        assert_eq!(parse_memory("50M"), Ok(52_428_800));
        assert_eq!(parse_memory("50m"), Ok(52_428_800));
        assert_eq!(parse_memory("1g"), Ok(1 << 30));
        assert_eq!(parse_memory("2GiB"), Ok(2 << 30));
        assert_eq!(parse_memory("512k"), Ok(524_288));
        assert_eq!(parse_memory("100"), Ok(100));
        assert_eq!(parse_memory("1.5k"), Ok(1536));
        assert_eq!(
            parse_memory("lots"),
            Err("invalid size: 'lots'".to_string())
        );
        assert!(parse_memory("5q").is_err());
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpus("0.1"), Ok(100_000_000));
        assert_eq!(parse_cpus("2"), Ok(2_000_000_000));
        assert_eq!(parse_cpus(".5"), Ok(500_000_000));
        assert_eq!(parse_cpus("1.000000001"), Ok(1_000_000_001));
        assert_eq!(
            parse_cpus("0.0000000001"),
            Err("value is too precise".to_string())
        );
        assert_eq!(
            parse_cpus("abc"),
            Err("failed to parse abc as a rational number".to_string())
        );
    }

    #[test]
    fn ports() {
        let p = parse_port_spec("4000:80").unwrap();
        assert_eq!(
            p,
            [ServicePortConfig {
                target: 80,
                published: Some(4000),
                protocol: Some("tcp".into()),
                mode: Some("ingress".into())
            }]
        );
        let p = parse_port_spec("80").unwrap();
        assert_eq!(p[0].published, None);
        assert_eq!(p[0].target, 80);
        let p = parse_port_spec("8000-8001:80-81/udp").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!((p[1].published, p[1].target), (Some(8001), 81));
        assert_eq!(p[1].protocol.as_deref(), Some("udp"));
        let p = parse_port_spec("127.0.0.1:4000:80").unwrap();
        assert_eq!((p[0].published, p[0].target), (Some(4000), 80));
        assert_eq!(
            parse_port_spec("4000:abc"),
            Err("invalid containerPort: abc".to_string())
        );
        assert_eq!(
            parse_port_spec("x:80"),
            Err("invalid hostPort: x".to_string())
        );
        assert_eq!(
            parse_port_spec("80/xyz"),
            Err("invalid proto: xyz".to_string())
        );
        assert!(parse_port_spec("8000-8002:80-81").is_err());
        let p = parse_port_spec("8000-8002:80").unwrap();
        let published: Vec<Option<u32>> = p.iter().map(|c| c.published).collect();
        assert_eq!(published, [Some(8000), Some(8001), Some(8002)]);
        assert!(p.iter().all(|c| c.target == 80));
        let p = parse_port_spec("127.0.0.1::80").unwrap();
        assert_eq!((p[0].published, p[0].target), (None, 80));
    }

    #[test]
    fn shell_words() {
        assert_eq!(
            split_shell_words(r#"python app.py --name 'a b' "c \"d\"" e\ f"#).unwrap(),
            ["python", "app.py", "--name", "a b", "c \"d\"", "e f"]
        );
        assert_eq!(split_shell_words("  ").unwrap(), Vec::<String>::new());
        assert_eq!(split_shell_words("''").unwrap(), [""]);
        assert!(split_shell_words("echo 'oops").is_err());
    }
}
