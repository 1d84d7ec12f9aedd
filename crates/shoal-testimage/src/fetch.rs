//! `fetch` and `resolve`: clients for tests and demos inside tasks. `fetch` resolves the URL's
//! host with the task's resolver (so service names go through the embedded DNS), sends `GET`,
//! and prints one line per request: the response body (trimmed) or `error: ...`. `resolve`
//! prints the addresses names resolve to (`NAME ADDR...`).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// `http://HOST[:PORT]/PATH` split into (host, port, path).
pub fn parse_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("unsupported URL {url:?}: only http:// is"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("invalid port in URL {url:?}"))?,
        ),
        None => (authority, 80),
    };
    if host.is_empty() {
        return Err(format!("no host in URL {url:?}"));
    }
    Ok((host.to_string(), port, path.to_string()))
}

/// One `GET`: the body of the answer.
pub fn get(host: &str, port: u16, path: &str, timeout: Duration) -> std::io::Result<String> {
    let addr = (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("no address for {host}")))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    match answer.split_once("\r\n\r\n") {
        Some((_, body)) => Ok(body.trim().to_string()),
        None => Err(std::io::Error::other("malformed answer")),
    }
}

/// Resolves each name with the task's resolver, `count` times (0: forever), `every` apart,
/// printing one line per name and round: `NAME ADDR ADDR...` sorted, or `NAME error: ...`.
pub fn resolve(names: &[String], count: u64, every: Duration, say: fn(&str)) {
    let mut n = 0u64;
    loop {
        for name in names {
            match (name.as_str(), 0u16).to_socket_addrs() {
                Ok(addrs) => {
                    let mut ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
                    ips.sort();
                    ips.dedup();
                    say(&format!("{name} {}", ips.join(" ")));
                }
                Err(e) => say(&format!("{name} error: {e}")),
            }
        }
        n += 1;
        if count != 0 && n >= count {
            return;
        }
        std::thread::sleep(every);
    }
}

/// Fetches `url` `count` times (0: forever), `every` apart, printing a line each time.
pub fn run(url: &str, count: u64, every: Duration, say: fn(&str)) -> Result<(), String> {
    let (host, port, path) = parse_url(url)?;
    let mut n = 0u64;
    loop {
        match get(&host, port, &path, Duration::from_secs(2)) {
            Ok(body) => say(&body),
            Err(e) => say(&format!("error: {e}")),
        }
        n += 1;
        if count != 0 && n >= count {
            return Ok(());
        }
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_port_and_path() {
        assert_eq!(
            parse_url("http://web/hostname").unwrap(),
            ("web".into(), 80, "/hostname".into())
        );
        assert_eq!(
            parse_url("http://10.0.0.4:8080").unwrap(),
            ("10.0.0.4".into(), 8080, "/".into())
        );
        assert!(parse_url("https://web/")
            .unwrap_err()
            .contains("only http://"));
        assert!(parse_url("http://web:x/")
            .unwrap_err()
            .contains("invalid port"));
        assert!(parse_url("http:///").unwrap_err().contains("no host"));
    }
}
