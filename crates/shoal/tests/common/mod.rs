//! Harness of the end-to-end tests: a real `shoal daemon` on a temporary data root and socket,
//! driven by the `docker` CLI, the `shoal` CLI and raw HTTP over the socket.
//!
//! ```text
//!  TestDaemon::start() ── tempdir/{data, api.sock, daemon.log, docker-config}
//!     │  spawn `shoal daemon --data-root data -H unix://api.sock`, wait for GET /_ping
//!     ├─ docker(args) / shoal(args)   run a CLI against the socket (bounded), → Out
//!     ├─ api(method, path, body)      one raw HTTP/1.1 request over the socket → (status, body)
//!     ├─ kill9() / stop() / restart() the daemon; the data root stays
//!     └─ Drop (also on panic): SIGTERM the daemon, SIGKILL after a bound, then kill every task
//!        process and shim recorded under data/runtime/process
//! ```
//!
//! Every wait is a poll with a deadline ([`wait_for`]); nothing sleeps for a fixed long time and
//! nothing asserts on timing. Each test uses its own task command (`sleep 6001`, ...) so
//! [`pids_running`] counts only its own processes even when tests run in parallel.

#![allow(dead_code)]

pub mod cluster;
pub mod flow;
pub mod machines;
pub mod mesh;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a daemon may take to answer `/_ping` after it is spawned.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest any single CLI command may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// The default bound of [`wait_for`].
pub const WAIT: Duration = Duration::from_secs(30);
/// How long a stopping daemon gets after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// What a command printed and how it ended.
#[derive(Clone, Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub what: String,
}

impl Out {
    /// Asserts success; returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "`{}` failed (exit {}):\nstdout:\n{}\nstderr:\n{}",
            self.what, self.code, self.stdout, self.stderr
        );
        &self.stdout
    }

    /// Asserts failure; returns stderr.
    #[track_caller]
    pub fn fails(&self) -> &str {
        assert_ne!(
            self.code, 0,
            "`{}` succeeded but should fail:\nstdout:\n{}\nstderr:\n{}",
            self.what, self.stdout, self.stderr
        );
        &self.stderr
    }

    /// Stdout lines, trailing spaces trimmed.
    pub fn lines(&self) -> Vec<String> {
        self.stdout
            .lines()
            .map(|l| l.trim_end().to_string())
            .collect()
    }
}

/// `program` (the docker or shoal CLI) with none of the caller's `DOCKER_*`/`SHOAL_HOST`
/// settings, its client config in `config_dir`, and plain output: arguments still to add.
pub fn client_command(program: &Path, config_dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    for v in [
        "DOCKER_HOST",
        "DOCKER_CONTEXT",
        "DOCKER_TLS",
        "DOCKER_TLS_VERIFY",
        "DOCKER_CERT_PATH",
        "DOCKER_API_VERSION",
        "SHOAL_HOST",
    ] {
        cmd.env_remove(v);
    }
    cmd.env("DOCKER_CONFIG", config_dir)
        .env("DOCKER_CLI_HINTS", "false")
        .env("NO_COLOR", "1")
        .env("TERM", "dumb");
    cmd
}

/// Runs `cmd` to completion within `timeout`, capturing its output.
pub fn run(mut cmd: Command, timeout: Duration) -> Out {
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {what}: {e}"));
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                let out =
                    String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
                let err =
                    String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
                panic!(
                    "`{what}` did not finish within {timeout:?}\nstdout:\n{out}\nstderr:\n{err}"
                );
            }
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    };
    let stdout = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    Out {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
        what,
    }
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `timeout`; panics with the last
/// observation `describe` gives otherwise.
#[track_caller]
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) => {
                if Instant::now() >= deadline {
                    panic!("timed out after {timeout:?} waiting for {what}; last seen:\n{last}");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `docker` CLI to test with, if installed. Set `SHOAL_E2E_REQUIRE_DOCKER=1` to make a
/// missing CLI an error instead of a skip.
pub fn docker_cli() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("docker"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("SHOAL_E2E_REQUIRE_DOCKER").as_deref() == Ok("1") {
            panic!("the docker CLI is not installed and SHOAL_E2E_REQUIRE_DOCKER=1");
        }
        eprintln!("SKIPPED: the docker CLI is not installed");
    }
    found
}

/// A `shoal daemon` of one test, on its own temporary data root and socket.
pub struct TestDaemon {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// The loopback address this daemon advertises and binds its cluster port (2377) on, so
    /// daemons of tests running in parallel never compete for one port.
    ip: String,
}

/// A random loopback address in 127.100.0.0 - 127.250.255.254 for one daemon (the cluster
/// tests use fixed addresses below 127.100).
pub fn random_loopback_ip() -> String {
    use rand::Rng;
    let mut r = rand::rng();
    format!(
        "127.{}.{}.{}",
        r.random_range(100..=250u8),
        r.random_range(0..=255u8),
        r.random_range(2..=254u8)
    )
}

impl TestDaemon {
    /// Starts a daemon and waits until it answers `/_ping`.
    pub fn start() -> TestDaemon {
        Self::start_at(&random_loopback_ip())
    }

    /// Starts a daemon whose swarm address is `ip` (`--swarm-default-advertise-addr`): it
    /// advertises `ip:2377` and listens there.
    pub fn start_at(ip: &str) -> TestDaemon {
        let dir = tempfile::Builder::new()
            .prefix("shoal-e2e-")
            .tempdir()
            .expect("tempdir");
        std::fs::create_dir_all(dir.path().join("docker-config")).expect("docker config dir");
        let mut d = TestDaemon {
            dir,
            child: None,
            ip: ip.to_string(),
        };
        d.spawn();
        d
    }

    /// The daemon's swarm address (an IP).
    pub fn ip(&self) -> &str {
        &self.ip
    }

    /// `ip:2377`.
    pub fn cluster_addr(&self) -> String {
        format!("{}:2377", self.ip)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("api.sock")
    }

    /// `unix://<socket>`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The daemon's process ID while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// What the daemon logged so far (all incarnations).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "the daemon is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .expect("daemon log");
        let child = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .arg("daemon")
            .arg("--data-root")
            .arg(self.data_root())
            .arg("-H")
            .arg(self.host())
            .arg("--swarm-default-advertise-addr")
            .arg(&self.ip)
            // Several daemons share the host's namespace here: tasks share it too (the data
            // plane is tested on machines, each in a namespace of its own).
            .arg("--data-plane")
            .arg("none")
            .env("RUST_LOG", "info,openraft=warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawning shoal daemon");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok((200, body)) = self.try_api("GET", "/_ping", None) {
                if body == "OK" {
                    return;
                }
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                panic!(
                    "shoal daemon exited ({st}) before answering:\n{}",
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "shoal daemon did not answer /_ping within {START_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9` of the daemon (task processes and shims keep running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and waits for the daemon to exit (SIGKILL after a bound). Returns whether it
    /// exited by itself.
    pub fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match c.try_wait() {
                Ok(Some(_)) => return true,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    return false;
                }
            }
        }
    }

    /// Starts the daemon again on the same data root and socket.
    pub fn restart(&mut self) {
        self.spawn();
    }

    fn cli(&self, program: &Path, args: &[&str]) -> Out {
        let mut cmd = client_command(program, &self.dir.path().join("docker-config"));
        cmd.arg("-H").arg(self.host()).args(args);
        run(cmd, COMMAND_TIMEOUT)
    }

    /// Runs `docker -H unix://<socket> ARGS...`.
    pub fn docker(&self, args: &[&str]) -> Out {
        let docker = docker_cli().expect("the docker CLI");
        self.cli(&docker, args)
    }

    /// Runs `shoal -H unix://<socket> ARGS...`.
    pub fn shoal(&self, args: &[&str]) -> Out {
        self.cli(Path::new(env!("CARGO_BIN_EXE_shoal")), args)
    }

    /// One HTTP/1.1 request over the socket: the status and the (de-chunked) body.
    pub fn try_api(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        raw_http(&self.socket(), method, path, body)
    }

    /// [`Self::try_api`], panicking on I/O errors.
    #[track_caller]
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.try_api(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// `GET path` as JSON, asserting 200.
    #[track_caller]
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let (code, body) = self.api("GET", path, None);
        assert_eq!(code, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// The tasks of a service, as `GET /tasks?filters={"service":[name]}` returns them.
    pub fn tasks(&self, service: &str) -> Vec<serde_json::Value> {
        let filters = serde_json::json!({ "service": [service] }).to_string();
        let v = self.get_json(&format!("/tasks?filters={}", urlencode(&filters)));
        v.as_array().cloned().unwrap_or_default()
    }

    /// Tasks of `service` whose observed state is `running`.
    pub fn running_tasks(&self, service: &str) -> Vec<serde_json::Value> {
        self.tasks(service)
            .into_iter()
            .filter(|t| t["Status"]["State"] == "running")
            .collect()
    }

    /// Waits until `docker/shoal service ls` shows `replicas` (e.g. `3/3`) for `service`.
    #[track_caller]
    pub fn wait_replicas(&self, cli: Cli, service: &str, replicas: &str) {
        wait_for(&format!("{service} at {replicas}"), WAIT, || {
            let out = self.cli_run(cli, &["service", "ls"]);
            let row = out
                .lines()
                .into_iter()
                .find(|l| l.split_whitespace().nth(1) == Some(service));
            match row {
                Some(r) if r.split_whitespace().nth(3) == Some(replicas) => Ok(()),
                _ => Err(format!("{}{}", out.stdout, out.stderr)),
            }
        });
    }

    /// Runs the given CLI.
    pub fn cli_run(&self, cli: Cli, args: &[&str]) -> Out {
        match cli {
            Cli::Docker => self.docker(args),
            Cli::Shoal => self.shoal(args),
        }
    }

    /// Zombie children of the daemon (shims it spawned and did not reap).
    pub fn zombie_children(&self) -> Vec<i32> {
        let Some(pid) = self.pid() else {
            return Vec::new();
        };
        procs()
            .into_iter()
            .filter(|p| p.ppid == pid && p.state == 'Z')
            .map(|p| p.pid)
            .collect()
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        let stopped = self.stop();
        shoal_agent::process::kill_all_blocking(&self.data_root().join("runtime").join("process"));
        if std::thread::panicking() || !stopped {
            eprintln!(
                "---- shoal daemon log ({}) ----\n{}",
                self.root().display(),
                self.log()
            );
        }
    }
}

/// Which CLI a flow drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cli {
    Docker,
    Shoal,
}

/// Percent-encodes a query value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One HTTP/1.1 request over a unix socket (`Connection: close`).
pub fn raw_http(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    raw_http_bytes(
        socket,
        method,
        path,
        "application/json",
        body.map(str::as_bytes),
    )
}

/// [`raw_http`] with any content type and body bytes.
pub fn raw_http_bytes(
    socket: &Path,
    method: &str,
    path: &str,
    content_type: &str,
    body: Option<&[u8]>,
) -> std::io::Result<(u16, String)> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: shoal\r\nConnection: close\r\n");
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    if let Some(b) = body {
        s.write_all(b)?;
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let Some((head, rest)) = text.split_once("\r\n\r\n") else {
        return Err(std::io::Error::other(format!("no HTTP head in {text:?}")));
    };
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// One entry of /proc.
#[derive(Clone, Debug)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub state: char,
    pub argv: Vec<String>,
}

/// Every process visible in /proc.
pub fn procs() -> Vec<Proc> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) S ppid ..." — comm may contain spaces and parentheses.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut f = after.split_whitespace();
        let state = f.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let argv = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                b.split(|c| *c == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        out.push(Proc {
            pid,
            ppid,
            state,
            argv,
        });
    }
    out
}

/// Live (not zombie) processes whose argv is exactly `argv`.
pub fn pids_running(argv: &[&str]) -> Vec<i32> {
    let mut v: Vec<i32> = procs()
        .into_iter()
        .filter(|p| p.state != 'Z' && p.argv == argv)
        .map(|p| p.pid)
        .collect();
    v.sort_unstable();
    v
}

/// Waits until exactly `n` processes run `argv`; returns their pids.
#[track_caller]
pub fn wait_pids(argv: &[&str], n: usize) -> Vec<i32> {
    wait_for(&format!("{n} processes {argv:?}"), WAIT, || {
        let p = pids_running(argv);
        if p.len() == n {
            Ok(p)
        } else {
            Err(format!("{} running: {p:?}", p.len()))
        }
    })
}

/// The environment of a process.
pub fn environ(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGKILL one process.
pub fn kill9(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap_or_else(|e| panic!("kill -9 {pid}: {e}"));
}

/// The rows of a table (header excluded) split on runs of 2+ spaces, as the CLIs print them.
pub fn table(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(columns)
        .collect()
}

/// Splits a table line on runs of two or more spaces.
pub fn columns(line: &str) -> Vec<String> {
    let mut cols = Vec::new();
    let mut cur = String::new();
    let mut spaces = 0;
    for ch in line.chars() {
        if ch == ' ' {
            spaces += 1;
            continue;
        }
        if spaces >= 2 && !cur.is_empty() {
            cols.push(std::mem::take(&mut cur));
        } else if spaces == 1 && !cur.is_empty() {
            cur.push(' ');
        } else if spaces >= 1 && cur.is_empty() {
            // leading spaces (e.g. " \_ web.1"): keep the text as is
        }
        spaces = 0;
        cur.push(ch);
    }
    if !cur.is_empty() {
        cols.push(cur);
    }
    cols
}

/// The first line of `out`, i.e. a table's header, with column names separated by one space.
pub fn header(out: &str) -> String {
    out.lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The CLI the single-CLI tests drive: docker when installed, else shoal (their output is the
/// same; `e2e_shoal_output_matches_docker` checks that).
pub fn any_cli() -> Cli {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join("docker").is_file()));
    if found {
        Cli::Docker
    } else {
        Cli::Shoal
    }
}

impl TestDaemon {
    /// A daemon that is already the manager of a new one-machine swarm; returns it and the
    /// node ID.
    pub fn with_swarm(cli: Cli) -> (TestDaemon, String) {
        let d = TestDaemon::start();
        let id = flow::init(&d, cli);
        (d, id)
    }

    /// One task by ID, from the API.
    pub fn task(&self, id: &str) -> serde_json::Value {
        self.get_json(&format!("/tasks/{id}"))
    }

    /// Waits until no child of the daemon is a zombie.
    #[track_caller]
    pub fn wait_no_zombies(&self) {
        wait_for("no zombie children of the daemon", WAIT, || {
            let z = self.zombie_children();
            if z.is_empty() {
                Ok(())
            } else {
                Err(format!("zombies: {z:?}"))
            }
        });
    }

    /// Creates a one-replica service running `sleep {n}` and waits for it to run: a point by
    /// which the orchestrator has handled every earlier event.
    #[track_caller]
    pub fn sync_point(&self, cli: Cli, name: &str, n: u32) {
        let arg = n.to_string();
        flow::create(self, cli, &["--name", name, "busybox", "sleep", &arg]);
        wait_pids(&["sleep", &arg], 1);
    }
}
