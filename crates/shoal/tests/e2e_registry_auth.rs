//! `shoal login` / `logout` and `--with-registry-auth` end to end: credentials stored in a
//! temporary `DOCKER_CONFIG` (other keys kept), sent by `service create --with-registry-auth`,
//! kept by the manager but never shown by inspect or `GET /services`, and handed with the
//! assignments of that service's tasks only, which the agent acknowledges in a debug log line
//! (the process runtime pulls nothing).
//!
//! The daemon runs with `-l debug` (so it is started here rather than by [`TestDaemon`], which
//! fixes `RUST_LOG`); its swarm address is in this file's block, 127.0.74.x.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{client_command, raw_http, run, wait_for, Out, COMMAND_TIMEOUT, WAIT};

const RECEIVED: &str = "registry credentials received with the task";

/// A `shoal daemon -l debug` on a temporary root; stopped (and its tasks killed) on drop.
struct DebugDaemon {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl DebugDaemon {
    fn start(ip: &str) -> DebugDaemon {
        let dir = tempfile::Builder::new()
            .prefix("shoal-e2e-auth-")
            .tempdir()
            .expect("tempdir");
        std::fs::create_dir_all(dir.path().join("docker-config")).expect("config dir");
        let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .arg("daemon")
            // In the host's namespace: tasks share it (no data plane of its own here).
            .args(["--data-plane", "none"])
            .arg("-l")
            .arg("debug")
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("-H")
            .arg(format!("unix://{}", dir.path().join("api.sock").display()))
            .arg("--swarm-default-advertise-addr")
            .arg(ip)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawning shoal daemon");
        let d = DebugDaemon {
            dir,
            child: Some(child),
        };
        wait_for("the daemon answers /_ping", WAIT, || {
            match raw_http(&d.socket(), "GET", "/_ping", None) {
                Ok((200, body)) if body == "OK" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
        d
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("api.sock")
    }

    fn config_dir(&self) -> PathBuf {
        self.dir.path().join("docker-config")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    fn shoal_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = client_command(Path::new(env!("CARGO_BIN_EXE_shoal")), &self.config_dir());
        cmd.arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .args(args);
        cmd
    }

    fn shoal(&self, args: &[&str]) -> Out {
        run(self.shoal_cmd(args), COMMAND_TIMEOUT)
    }

    /// `shoal ARGS` with `input` on its standard input.
    fn shoal_stdin(&self, args: &[&str], input: &str) -> (i32, String, String) {
        let mut child = self
            .shoal_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning shoal");
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes()).expect("stdin");
        }
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        while child.try_wait().ok().flatten().is_none() {
            assert!(Instant::now() < deadline, "shoal {args:?} did not finish");
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("output");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn get(&self, path: &str) -> String {
        let (code, body) = raw_http(&self.socket(), "GET", path, None)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(code, 200, "GET {path}: {body}");
        body
    }

    fn running_tasks(&self, service: &str) -> Vec<serde_json::Value> {
        let filters = serde_json::json!({ "service": [service] }).to_string();
        let body = self.get(&format!("/tasks?filters={}", common::urlencode(&filters)));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v.as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t["Status"]["State"] == "running")
            .collect()
    }
}

impl Drop for DebugDaemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        shoal_agent::process::kill_all_blocking(
            &self.dir.path().join("data").join("runtime").join("process"),
        );
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(300).collect();
            eprintln!("---- daemon log (last lines) ----");
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

#[test]
fn e2e_registry_auth_login_create_and_assignment() {
    let d = DebugDaemon::start("127.0.74.2");
    d.shoal(&["swarm", "init"]).ok();

    // login with --password-stdin keeps the file's other keys.
    let config = d.config_dir().join("config.json");
    std::fs::write(&config, r#"{"psFormat": "table {{.ID}}", "auths": {}}"#).expect("seed");
    let server = "registry.example.com:5000";
    let (code, stdout, stderr) = d.shoal_stdin(
        &["login", "-u", "alice", "--password-stdin", server],
        "s3cret-pw\n",
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("Login Succeeded"), "{stdout}");
    assert!(stderr.contains("stored unencrypted"), "{stderr}");
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).expect("config")).expect("json");
    assert_eq!(file["psFormat"], "table {{.ID}}");
    assert_eq!(
        file["auths"][server]["auth"],
        base64::engine::general_purpose::STANDARD.encode("alice:s3cret-pw")
    );

    // A service of that registry, with its credentials, and one without.
    let private = d
        .shoal(&[
            "service",
            "create",
            "-d",
            "--with-registry-auth",
            "--name",
            "private",
            "registry.example.com:5000/team/app:1",
            "sleep",
            "6741",
        ])
        .ok()
        .trim()
        .to_string();
    let public = d
        .shoal(&[
            "service", "create", "-d", "--name", "public", "busybox", "sleep", "6742",
        ])
        .ok()
        .trim()
        .to_string();
    assert_eq!((private.len(), public.len()), (25, 25));
    let tasks = wait_for("both services run", WAIT, || {
        let (p, q) = (d.running_tasks("private"), d.running_tasks("public"));
        if p.len() == 1 && q.len() == 1 {
            Ok((p, q))
        } else {
            Err(format!("{p:?} {q:?}"))
        }
    });
    let private_task = tasks.0[0]["ID"].as_str().unwrap_or_default().to_string();
    let public_task = tasks.1[0]["ID"].as_str().unwrap_or_default().to_string();

    // Never returned: inspect and the list show no trace of the credentials.
    let inspect = d.shoal(&["service", "inspect", "private"]);
    let listed = d.get("/services");
    let raw_inspect = d.get(&format!("/services/{private}"));
    for text in [inspect.ok(), listed.as_str(), raw_inspect.as_str()] {
        assert!(!text.contains("s3cret-pw"), "{text}");
        assert!(!text.to_lowercase().contains("registryauth"), "{text}");
        assert!(!text.contains("YWxpY2"), "no base64 of the user: {text}");
    }

    // The agent got them with the private service's task only.
    let line = wait_for("the agent acknowledges the credentials", WAIT, || {
        d.log()
            .lines()
            .find(|l| l.contains(RECEIVED) && l.contains(&private_task))
            .map(str::to_string)
            .ok_or_else(|| "no such line yet".to_string())
    });
    assert!(line.contains("DEBUG"), "{line}");
    assert!(line.contains(&private), "{line}");
    assert!(!line.contains("s3cret-pw"), "{line}");
    let log = d.log();
    assert!(
        !log.lines()
            .any(|l| l.contains(RECEIVED) && l.contains(&public_task)),
        "the public service's task got credentials"
    );
    assert!(!log.contains("s3cret-pw"), "the daemon logged the password");

    // `stack deploy --with-registry-auth` sends them too.
    let compose = d.config_dir().join("stack.yml");
    std::fs::write(
        &compose,
        "services:\n  app:\n    image: registry.example.com:5000/team/app:2\n    command: [\"sleep\", \"6745\"]\n",
    )
    .expect("compose file");
    let compose = compose.display().to_string();
    d.shoal(&[
        "stack",
        "deploy",
        "-c",
        &compose,
        "--with-registry-auth",
        "authstack",
    ])
    .ok();
    let stack_task = wait_for("the stack's task runs", WAIT, || {
        match d.running_tasks("authstack_app").as_slice() {
            [t] => Ok(t["ID"].as_str().unwrap_or_default().to_string()),
            other => Err(format!("{other:?}")),
        }
    });
    wait_for(
        "the agent acknowledges the stack's credentials",
        WAIT,
        || {
            d.log()
                .lines()
                .any(|l| l.contains(RECEIVED) && l.contains(&stack_task))
                .then_some(())
                .ok_or_else(|| "no such line yet".to_string())
        },
    );
    d.shoal(&["stack", "rm", "authstack"]).ok();

    // logout removes them, as docker says it.
    let out = d.shoal(&["logout", server]);
    assert_eq!(
        out.ok(),
        "Removing login credentials for registry.example.com:5000\n"
    );
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).expect("config")).expect("json");
    assert!(file["auths"].get(server).is_none(), "{file}");
    assert_eq!(file["psFormat"], "table {{.ID}}");
    let out = d.shoal(&["logout", server]);
    assert_eq!(out.ok(), "Not logged in to registry.example.com:5000\n");

    d.shoal(&["service", "rm", "private", "public"]).ok();
}

#[test]
fn e2e_registry_auth_secret_and_config_flags() {
    let d = DebugDaemon::start("127.0.74.3");
    d.shoal(&["swarm", "init"]).ok();
    let (code, secret_id, err) = d.shoal_stdin(&["secret", "create", "app_pw", "-"], "hunter2");
    assert_eq!(code, 0, "{err}");
    let secret_id = secret_id.trim().to_string();
    let (code, config_id, err) = d.shoal_stdin(&["config", "create", "site", "-"], "a=1\n");
    assert_eq!(code, 0, "{err}");
    let config_id = config_id.trim().to_string();

    let out = d.shoal(&[
        "service", "create", "-d", "--name", "nosuch", "--secret", "missing", "busybox", "sleep",
        "6744",
    ]);
    assert_eq!(out.fails(), "secret not found: missing\n");

    d.shoal(&[
        "service",
        "create",
        "-d",
        "--name",
        "withfiles",
        "--secret",
        "source=app_pw,target=pw,uid=1000,mode=0400",
        "--config",
        "src=site,target=/etc/site.conf",
        "busybox",
        "sleep",
        "6743",
    ])
    .ok();
    let spec = |d: &DebugDaemon| -> serde_json::Value {
        let v: serde_json::Value =
            serde_json::from_str(d.shoal(&["service", "inspect", "withfiles"]).ok()).expect("json");
        v[0]["Spec"]["TaskTemplate"]["ContainerSpec"].clone()
    };
    let cs = spec(&d);
    assert_eq!(cs["Secrets"][0]["SecretName"], "app_pw", "{cs}");
    assert_eq!(cs["Secrets"][0]["SecretID"], secret_id.as_str());
    assert_eq!(cs["Secrets"][0]["File"]["Name"], "pw");
    assert_eq!(cs["Secrets"][0]["File"]["UID"], "1000");
    assert_eq!(cs["Secrets"][0]["File"]["Mode"], 0o400);
    assert_eq!(cs["Configs"][0]["ConfigID"], config_id.as_str());
    assert_eq!(cs["Configs"][0]["File"]["Name"], "/etc/site.conf");

    d.shoal(&[
        "service",
        "update",
        "-d",
        "--secret-rm",
        "app_pw",
        "--config-rm",
        "site",
        "--secret-add",
        "source=app_pw,target=other",
        "withfiles",
    ])
    .ok();
    let cs = spec(&d);
    assert_eq!(cs["Secrets"].as_array().map(Vec::len), Some(1), "{cs}");
    assert_eq!(cs["Secrets"][0]["File"]["Name"], "other");
    assert!(cs["Configs"].as_array().is_none_or(Vec::is_empty), "{cs}");
    d.shoal(&["service", "rm", "withfiles"]).ok();
}
