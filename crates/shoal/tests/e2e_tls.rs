//! TLS end to end: certificates from `shoal_machine::certs::generate`, a daemon listening on
//! `tcp://127.0.0.1:<free port>` with `--tlsverify`, and both the `shoal` and the `docker` CLI
//! reaching it the way `shoal machine env` sets them up (`DOCKER_HOST`, `DOCKER_TLS_VERIFY=1`,
//! `DOCKER_CERT_PATH`), or with the `--tlsverify --tlscacert --tlscert --tlskey` flags.
//! Connections without a client certificate, without TLS or trusting another CA fail with a
//! clear error.
//!
//! ```text
//!  tmp/{certs/, other/, data/, d.sock, daemon.log, docker-config/}
//!  shoal daemon -H unix://tmp/d.sock -H tcp://127.0.0.1:PORT --tlsverify ... --data-root tmp/data
//! ```

mod common;

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{run, Out, COMMAND_TIMEOUT, START_TIMEOUT};

/// A port nobody listens on right now (bound then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The TLS daemon of this test; stopped (SIGTERM, then SIGKILL) on drop, also on panic.
struct TlsDaemon {
    dir: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
}

impl TlsDaemon {
    fn start(dir: tempfile::TempDir, certs: &Path) -> TlsDaemon {
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .arg("daemon")
            // In the host's namespace: tasks share it (no data plane of its own here).
            .args(["--data-plane", "none"])
            .arg("-H")
            .arg(format!("unix://{}", dir.path().join("d.sock").display()))
            .arg("-H")
            .arg(format!("tcp://127.0.0.1:{port}"))
            // --tlsverify --tlscacert ca.pem --tlscert server.pem --tlskey server-key.pem
            .args(shoal_machine::certs::daemon_tls_args(certs))
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .env("RUST_LOG", "info,openraft=warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawning shoal daemon");
        let mut d = TlsDaemon {
            dir,
            child: Some(child),
            port,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let sock = d.dir.path().join("d.sock");
            if let Ok((200, body)) = common::raw_http(&sock, "GET", "/_ping", None) {
                if body == "OK" {
                    break;
                }
            }
            if let Some(Ok(Some(st))) = d.child.as_mut().map(|c| c.try_wait()) {
                d.child = None;
                panic!("shoal daemon exited ({st}) before answering:\n{}", d.log());
            }
            assert!(
                Instant::now() < deadline,
                "shoal daemon did not answer within {START_TIMEOUT:?}:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    fn host(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// Runs `program ARGS...` with only the given `DOCKER_*` variables set.
    fn cli(&self, program: &Path, env: &[(&str, String)], args: &[&str]) -> Out {
        let mut cmd = common::client_command(program, &self.dir.path().join("docker-config"));
        cmd.args(args).env("HOME", self.dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(cmd, COMMAND_TIMEOUT)
    }

    /// The environment `shoal machine env` gives, for the certificates in `certs`.
    fn machine_env(&self, certs: &Path) -> Vec<(&'static str, String)> {
        vec![
            ("DOCKER_HOST", self.host()),
            ("DOCKER_TLS_VERIFY", "1".to_string()),
            ("DOCKER_CERT_PATH", certs.display().to_string()),
        ]
    }
}

impl Drop for TlsDaemon {
    fn drop(&mut self) {
        let mut stopped = true;
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        stopped = false;
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
        }
        shoal_agent::process::kill_all_blocking(
            &self.dir.path().join("data").join("runtime").join("process"),
        );
        if std::thread::panicking() || !stopped {
            eprintln!("---- shoal daemon log ----\n{}", self.log());
        }
    }
}

fn shoal() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_shoal"))
}

#[test]
fn e2e_tls_shoal_and_docker_clis_reach_a_tlsverify_daemon() {
    let tmp = tempfile::Builder::new()
        .prefix("shoal-e2e-tls-")
        .tempdir()
        .expect("tempdir");
    let certs = tmp.path().join("certs");
    let other = tmp.path().join("other");
    shoal_machine::certs::generate(&certs, Ipv4Addr::LOCALHOST, "tls-e2e").expect("certs");
    shoal_machine::certs::generate(&other, Ipv4Addr::LOCALHOST, "tls-e2e").expect("other certs");
    std::fs::create_dir_all(tmp.path().join("docker-config")).expect("docker config");
    let d = TlsDaemon::start(tmp, &certs);
    let env = d.machine_env(&certs);
    let sh = shoal();

    // The shoal CLI, configured by the environment only.
    let out = d.cli(&sh, &env, &["version"]);
    let text = out.ok();
    assert!(text.contains("Server:"), "{text}");
    let text = d.cli(&sh, &env, &["info"]).ok().to_string();
    assert!(text.contains("Swarm: inactive"), "{text}");
    let swarm_port = free_port().to_string();
    let addr = format!("127.0.0.1:{swarm_port}");
    let text = d
        .cli(
            &sh,
            &env,
            &[
                "swarm",
                "init",
                "--advertise-addr",
                &addr,
                "--listen-addr",
                &addr,
            ],
        )
        .ok()
        .to_string();
    assert!(text.contains("Swarm initialized"), "{text}");
    let text = d.cli(&sh, &env, &["service", "ls"]).ok().to_string();
    assert!(text.starts_with("ID"), "{text}");
    let text = d.cli(&sh, &env, &["node", "ls"]).ok().to_string();
    assert!(text.contains("Leader"), "{text}");
    // Typed (bollard) calls over TLS, an answer and an API error.
    d.cli(&sh, &env, &["node", "inspect", "self"]).ok();
    let err = d
        .cli(&sh, &env, &["service", "logs", "nosuch"])
        .fails()
        .to_string();
    assert_eq!(err.trim(), "no such task or service: nosuch");

    // The same with flags instead of the environment.
    let flags = [
        "-H".to_string(),
        d.host(),
        "--tlsverify".to_string(),
        "--tlscacert".to_string(),
        certs.join("ca.pem").display().to_string(),
        "--tlscert".to_string(),
        certs.join("cert.pem").display().to_string(),
        "--tlskey".to_string(),
        certs.join("key.pem").display().to_string(),
    ];
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend(["service", "ls"]);
    d.cli(&sh, &[], &args).ok();
    // `--tls` alone encrypts without verifying the daemon: another CA file is fine.
    let other_ca = other.join("ca.pem").display().to_string();
    args[2] = "--tls";
    args[4] = &other_ca;
    d.cli(&sh, &[], &args).ok();

    // A certificate directory with the CA only (no client certificate).
    let ca_only = d.dir.path().join("ca-only");
    std::fs::create_dir_all(&ca_only).expect("dir");
    std::fs::copy(certs.join("ca.pem"), ca_only.join("ca.pem")).expect("copy");

    // The docker CLI with the same environment.
    if let Some(docker) = common::docker_cli() {
        let text = d.cli(&docker, &env, &["version"]).ok().to_string();
        assert!(text.contains("Server:"), "{text}");
        let text = d.cli(&docker, &env, &["info"]).ok().to_string();
        assert!(text.contains("Swarm: active"), "{text}");
        d.cli(&docker, &env, &["service", "ls"]).ok();
        // Without TLS the daemon cannot be used.
        let err = d
            .cli(&docker, &[("DOCKER_HOST", d.host())], &["version"])
            .fails()
            .to_string();
        eprintln!("docker without TLS: {err}");
        for (what, dir) in [("no client certificate", &ca_only), ("another CA", &other)] {
            let err = d
                .cli(&docker, &d.machine_env(dir), &["version"])
                .fails()
                .to_string();
            eprintln!("docker with {what}: {err}");
        }
    }

    // Without TLS: a clear error pointing at TLS.
    let err = d
        .cli(&sh, &[("DOCKER_HOST", d.host())], &["service", "ls"])
        .fails()
        .to_string();
    eprintln!("shoal without TLS: {err}");
    assert!(err.contains("error during connect"), "{err}");
    assert!(
        err.contains("Are you trying to connect to a TLS-enabled daemon without TLS?"),
        "{err}"
    );

    // TLS without a client certificate: the daemon refuses the handshake.
    let err = d
        .cli(&sh, &d.machine_env(&ca_only), &["service", "ls"])
        .fails()
        .to_string();
    eprintln!("shoal with no client certificate: {err}");
    assert!(err.contains("remote error: tls"), "{err}");

    // Trusting another CA: the daemon's certificate does not verify.
    let err = d
        .cli(&sh, &d.machine_env(&other), &["service", "ls"])
        .fails()
        .to_string();
    eprintln!("shoal with another CA: {err}");
    assert!(
        err.contains(
            "tls: failed to verify certificate: x509: certificate signed by unknown authority"
        ),
        "{err}"
    );

    // A certificate directory without the files: the missing file is named.
    let nowhere = d.dir.path().join("nowhere");
    let err = d
        .cli(&sh, &d.machine_env(&nowhere), &["version"])
        .fails()
        .to_string();
    eprintln!("shoal without certificate files: {err}");
    assert!(
        err.contains(&format!(
            "open {}: no such file or directory",
            nowhere.join("ca.pem").display()
        )),
        "{err}"
    );
}
