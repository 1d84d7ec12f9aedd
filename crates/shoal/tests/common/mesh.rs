//! Talking to services through the routing mesh from the host, for the machine tests and the
//! mesh benchmark: HTTP GETs to the built-in friendlyhello (`/hostname` answers with the task's
//! hostname, 12 characters of its ID), and which tasks should answer.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::machines::Machines;

/// One HTTP GET on an open connection (keep-alive); the body.
pub fn get_on(s: &mut TcpStream, path: &str) -> Result<String, String> {
    write!(s, "GET {path} HTTP/1.1\r\nHost: shoal\r\n\r\n").map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .ok_or("no content-length")?;
            if body.len() >= len {
                return Ok(body[..len].trim().to_string());
            }
        }
    }
}

pub fn connect(ip: &str, port: u16) -> Result<TcpStream, String> {
    let addr: SocketAddr = format!("{ip}:{port}").parse().map_err(|e| format!("{e}"))?;
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

/// A fresh connection's `GET path` to `ip:port`.
pub fn get(ip: &str, port: u16, path: &str) -> Result<String, String> {
    get_on(&mut connect(ip, port)?, path)
}

/// The hostnames `n` fresh connections to `ip:port` were answered by.
pub fn hostnames(ip: &str, port: u16, n: usize) -> Result<BTreeSet<String>, String> {
    (0..n).map(|_| get(ip, port, "/hostname")).collect()
}

/// The hostnames of a service's running tasks: 12 characters of each task's ID.
pub fn task_hostnames(m: &Machines, on: &str, service: &str) -> Result<BTreeSet<String>, String> {
    Ok(m.tasks(on, service)?
        .iter()
        .filter(|t| t["Status"]["State"] == "running" && t["DesiredState"] == "running")
        .filter_map(|t| t["ID"].as_str().map(|id| id[..12].to_string()))
        .collect())
}
