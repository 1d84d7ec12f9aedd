//! The seam over host operations ([`Host`]) and its real implementation ([`RealHost`]) through
//! the `ip`, `unshare` and `nsenter` commands and plain signals.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::model::Record;
use crate::{MachineError, Paths};

/// What the machine logic needs from the host.
pub trait Host {
    fn is_root(&self) -> bool;
    /// Runs `ip ARGS...`; an error carries its stderr.
    fn ip(&self, args: &[&str]) -> Result<(), MachineError>;
    /// Whether interface `name` exists in namespace `netns` (`None`: the host's).
    fn link_exists(&self, netns: Option<&str>, name: &str) -> bool;
    /// Destinations of the host's IPv4 routes with their device: (`10.0.0.0/8`, `eth0`).
    fn routes(&self) -> Vec<(String, String)>;
    fn netns_exists(&self, name: &str) -> bool;
    /// Whether `pid` is still the machine daemon serving `socket` (not a zombie, not a process
    /// that reused the pid after a reboot).
    fn daemon_alive(&self, pid: u32, socket: &Path) -> bool;
    /// Whether the process `pid` (a child just spawned, possibly still between two `exec`s)
    /// exists and is not a zombie.
    fn alive(&self, pid: u32) -> bool;
    /// SIGTERM, then SIGKILL after a bound; returns once the process is gone.
    fn stop_pid(&self, pid: u32) -> Result<(), MachineError>;
    /// SIGKILL to every process still in the namespace, and in the task namespaces its
    /// daemon made (which are then removed).
    fn kill_netns_pids(&self, netns: &str);
    /// Starts the machine's daemon in its namespace and a new UTS namespace; returns its pid.
    /// `args` are the daemon flags after the fixed ones (API over TCP with TLS, resources).
    fn spawn_daemon(&self, rec: &Record, p: &Paths, args: &[OsString])
        -> Result<u32, MachineError>;
    /// Whether the daemon behind `socket` answers `/_ping`; if not, why (for `ls` ERRORS).
    fn ping(&self, socket: &Path) -> Result<(), String>;
    /// (SWARM, DOCKER, ERRORS) columns of `ls`.
    fn engine_info(&self, socket: &Path) -> (String, String, String);
    /// Runs a command inside the namespaces of `pid`; returns its exit code.
    fn exec_in(&self, pid: u32, p: &Paths, command: &[String]) -> i32;
}

/// The host this runs on.
pub struct RealHost;

fn http_get(socket: &Path, path: &str) -> Option<String> {
    let mut s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: shoal\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_string())
}

/// Whether `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

impl Host for RealHost {
    fn is_root(&self) -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    fn ip(&self, args: &[&str]) -> Result<(), MachineError> {
        let out = Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| MachineError::Host(format!("running ip: {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(MachineError::Host(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    fn link_exists(&self, netns: Option<&str>, name: &str) -> bool {
        match netns {
            None => Path::new("/sys/class/net").join(name).exists(),
            Some(ns) => Command::new("ip")
                .args(["-n", ns, "link", "show", "dev", name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
        }
    }

    fn netns_exists(&self, name: &str) -> bool {
        Path::new("/run/netns").join(name).exists()
    }

    fn routes(&self) -> Vec<(String, String)> {
        let Ok(out) = Command::new("ip").args(["-4", "route", "show"]).output() else {
            return Vec::new();
        };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                let dest = words.first()?.to_string();
                let dev = words
                    .iter()
                    .position(|w| *w == "dev")
                    .and_then(|i| words.get(i + 1))
                    .map(|d| d.to_string())
                    .unwrap_or_default();
                Some((dest, dev))
            })
            .collect()
    }

    fn daemon_alive(&self, pid: u32, socket: &Path) -> bool {
        // Every step from `nsenter` to the daemon carries the socket path in its argv.
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            return false;
        };
        let needle = socket.as_os_str().as_encoded_bytes();
        !needle.is_empty() && alive(pid) && cmdline.windows(needle.len()).any(|w| w == needle)
    }

    fn alive(&self, pid: u32) -> bool {
        alive(pid)
    }

    fn stop_pid(&self, pid: u32) -> Result<(), MachineError> {
        let Ok(p) = libc::pid_t::try_from(pid) else {
            return Ok(());
        };
        // SAFETY: kill with a valid signal number.
        unsafe { libc::kill(p, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while alive(pid) {
            if Instant::now() > deadline {
                // SAFETY: as above.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            if Instant::now() > deadline + Duration::from_secs(5) {
                return Err(MachineError::Host(format!("process {pid} did not exit")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn kill_netns_pids(&self, netns: &str) {
        let tasks = owned_task_namespaces(netns);
        for t in tasks.iter().map(String::as_str).chain([netns]) {
            kill_pids_in(t);
        }
        for t in &tasks {
            let _ = Command::new("ip")
                .args(["netns", "del", t])
                .stderr(Stdio::null())
                .status();
        }
    }

    fn spawn_daemon(
        &self,
        rec: &Record,
        p: &Paths,
        args: &[OsString],
    ) -> Result<u32, MachineError> {
        let exe = std::env::current_exe()
            .map_err(|e| MachineError::Host(format!("finding the shoal binary: {e}")))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p.log())
            .map_err(|e| MachineError::Io(p.log().display().to_string(), e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| MachineError::Io(p.log().display().to_string(), e))?;
        // Only the network (and UTS) namespace changes: the daemon shares the host's mount
        // namespace, so the task namespaces it mounts under /run/netns are visible from the
        // host (`ip netns exec` would give it a private mount namespace hiding them).
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", rec.netns()))
            .args(["--", "unshare", "--uts", "sh", "-c"])
            .arg(
                "hostname \"$1\" && exe=\"$2\" && data=\"$3\" && sock=\"$4\" && ip=\"$5\" && shift 5 && \
                 exec \"$exe\" daemon --data-root \"$data\" -H \"unix://$sock\" \
                 --swarm-default-advertise-addr \"$ip\" \"$@\"",
            )
            .arg("sh")
            .arg(&rec.name)
            .arg(&exe)
            .arg(p.data())
            .arg(p.socket())
            .arg(rec.ip.to_string())
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .map_err(|e| MachineError::Host(format!("starting the daemon: {e}")))?;
        // Each step execs the next, so this pid ends up being the daemon's; nobody waits for
        // it here, the daemon outlives this command.
        let pid = child.id();
        std::mem::forget(child);
        Ok(pid)
    }

    fn ping(&self, socket: &Path) -> Result<(), String> {
        if let Err(e) = UnixStream::connect(socket) {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                return Err(format!(
                    "permission denied on {}; run as root",
                    socket.display()
                ));
            }
        }
        match http_get(socket, "/_ping") {
            Some(b) if b.trim() == "OK" => Ok(()),
            _ => Err("daemon not answering".into()),
        }
    }

    fn engine_info(&self, socket: &Path) -> (String, String, String) {
        let version = http_get(socket, "/version")
            .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|v| v["Version"].as_str().map(|s| format!("v{s}")));
        let swarm = http_get(socket, "/info")
            .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
            .map(|v| match v["Swarm"]["LocalNodeState"].as_str() {
                Some("active") if v["Swarm"]["ControlAvailable"].as_bool() == Some(true) => {
                    "manager".to_string()
                }
                Some("active") => "worker".to_string(),
                _ => String::new(),
            })
            .unwrap_or_default();
        match version {
            Some(v) => (swarm, v, String::new()),
            None => (swarm, "Unknown".into(), "daemon not answering".into()),
        }
    }

    fn exec_in(&self, pid: u32, p: &Paths, command: &[String]) -> i32 {
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.to_path_buf()))
            .unwrap_or_default();
        let path = format!(
            "{}:{}",
            exe_dir.display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
        );
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(pid.to_string())
            .args(["-n", "-u", "--"])
            .arg("env")
            .arg(format!("DOCKER_HOST={}", p.socket_url()))
            .arg(format!("HOME={}", p.home().display()))
            .arg(format!("PATH={path}"))
            .current_dir(p.home());
        if command.is_empty() {
            cmd.arg("sh").arg("-i");
        } else {
            // As ssh does: the words form one shell command line.
            cmd.arg("sh").arg("-c").arg(command.join(" "));
        }
        match cmd.status() {
            Ok(s) => s.code().unwrap_or(255),
            Err(e) => {
                eprintln!("running nsenter: {e}");
                255
            }
        }
    }
}

/// The task namespaces (`/run/netns/shtask-*`) a machine's daemon made: their `lo` carries
/// the mark of the node's namespace (`shoal-node:DEV:INODE`, see `shoal_net::kernel`).
pub fn owned_task_namespaces(netns: &str) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(format!("/run/netns/{netns}")) else {
        return Vec::new();
    };
    let mark = format!("shoal-node:{}:{}", meta.dev(), meta.ino());
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("shtask-"))
        .filter(|n| {
            Command::new("ip")
                .args(["-n", n, "-o", "link", "show", "lo"])
                .stderr(Stdio::null())
                .output()
                .is_ok_and(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .any(|w| w == mark)
                })
        })
        .collect()
}

/// SIGKILL to every process in a namespace, a few rounds (a dying parent may spawn).
fn kill_pids_in(netns: &str) {
    for _ in 0..3 {
        let Ok(out) = Command::new("ip").args(["netns", "pids", netns]).output() else {
            return;
        };
        let pids: Vec<libc::pid_t> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect();
        if pids.is_empty() {
            return;
        }
        for p in pids {
            // SAFETY: kill with a valid signal number.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
