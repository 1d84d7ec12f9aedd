//! Secrets and configs reach tasks as files: the `process` runtime with the real `shoal shim`
//! (a private mount namespace per task, files bound at `/run/secrets/<name>` and at a config's
//! target, invisible to the host, removed with the task), then a daemon end to end through the
//! `docker` CLI (or `shoal` when docker is not installed).
//!
//! Both need root (mount namespaces); without it they check that a task with files fails with
//! a message saying so. The daemon's swarm address is in this file's block, 127.0.78.x.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{wait_for, TestDaemon};
use futures::StreamExt;
use shoal_agent::conformance::sh_spec;
use shoal_agent::process::{kill_all_blocking, ProcessRuntime, ShimCommand};
use shoal_agent::runtime::{LogOptions, MountedFile, Runtime};

const T: Duration = Duration::from_secs(20);

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A state root that kills its task processes when dropped (also on panic).
struct Harness {
    dir: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        kill_all_blocking(self.dir.path());
    }
}

fn file(target: &str, data: &str, mode: u32) -> MountedFile {
    MountedFile {
        target: target.to_string(),
        data: data.as_bytes().to_vec(),
        uid: 0,
        gid: 0,
        mode,
    }
}

/// Entries under `dir` (none when it does not exist).
fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_runtime_mounts_files_in_the_tasks_own_namespace() {
    let h = Harness {
        dir: tempfile::tempdir().expect("tempdir"),
    };
    let rt = ProcessRuntime::new(
        h.dir.path().to_path_buf(),
        ShimCommand {
            program: PathBuf::from(env!("CARGO_BIN_EXE_shoal")),
            args: vec!["shim".to_string()],
        },
    );
    let conf_dir = tempfile::tempdir().expect("config dir");
    let conf = conf_dir.path().join("app.conf");
    let conf_target = conf.to_string_lossy().into_owned();
    let mut spec = sh_spec(
        "secrets78a",
        &format!(
            "cat /run/secrets/pw; echo; cat {conf_target}; echo; \
             stat -c '%a %u %g' /run/secrets/pw; \
             {{ echo x > /run/secrets/pw; }} 2>/dev/null && echo writable || echo read-only"
        ),
    );
    spec.files = vec![
        file("/run/secrets/pw", "pw-7801", 0o400),
        file(&conf_target, "port=7802", 0o444),
    ];
    if !is_root() {
        let err = rt.prepare(&spec).await.expect_err("needs root");
        assert!(err.to_string().contains("needs root"), "{err}");
        return;
    }
    // Prepared twice (a retried prepare): the second knows the mount point is its own.
    for _ in 0..2 {
        tokio::time::timeout(T, rt.prepare(&spec))
            .await
            .expect("prepare in time")
            .expect("prepare");
    }
    let files_dir = rt.files_root().join("secrets78a");
    assert_eq!(entries(&files_dir).len(), 2, "one file per secret/config");
    let spec_json =
        std::fs::read_to_string(h.dir.path().join("tasks/secrets78a/spec.json")).expect("spec");
    assert!(
        !spec_json.contains("pw-7801"),
        "no data in the records: {spec_json}"
    );
    tokio::time::timeout(T, rt.start("secrets78a"))
        .await
        .expect("start in time")
        .expect("start");
    let st = tokio::time::timeout(T, rt.wait("secrets78a"))
        .await
        .expect("exit in time")
        .expect("wait");
    let out: Vec<String> = rt
        .logs("secrets78a", LogOptions::default())
        .await
        .expect("logs")
        .map(|l| String::from_utf8_lossy(&l.line).into_owned())
        .collect()
        .await;
    assert_eq!(
        out,
        ["pw-7801", "port=7802", "400 0 0", "read-only"],
        "exit {st:?}"
    );
    assert!(
        !Path::new("/run/secrets/pw").exists(),
        "the host does not see the task's secret"
    );
    assert_eq!(
        std::fs::read(&conf).expect("the empty mount point on the host"),
        b"",
        "the host does not see the config's data at its target"
    );

    rt.remove("secrets78a").await.expect("remove");
    assert!(!files_dir.exists(), "the files go with the task");
    assert!(!conf.exists(), "and so does the mount point made for them");
}

#[test]
fn e2e_secrets_reach_the_task_as_files() {
    let cli = common::any_cli();
    let d = TestDaemon::start_at("127.0.78.2");
    common::flow::init(&d, cli);
    // `secret create NAME -` reads the data from standard input.
    let tool = match cli {
        common::Cli::Docker => common::docker_cli().expect("docker"),
        common::Cli::Shoal => PathBuf::from(env!("CARGO_BIN_EXE_shoal")),
    };
    let mut sh = common::client_command(Path::new("sh"), &d.root().join("docker-config"));
    sh.arg("-c").arg(format!(
        "printf %s pw-7811 | '{}' -H '{}' secret create pw -",
        tool.display(),
        d.host()
    ));
    common::run(sh, Duration::from_secs(30)).ok();
    let conf = d.root().join("app.conf");
    std::fs::write(&conf, "listen=7812\n").expect("config file");
    d.cli_run(cli, &["config", "create", "cfg", &conf.to_string_lossy()])
        .ok();
    let conf_existed = Path::new("/etc/app.conf").exists();

    d.cli_run(
        cli,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "app",
            "--secret",
            "pw",
            "--config",
            "source=cfg,target=/etc/app.conf",
            "busybox",
            "sh",
            "-c",
            "cat /run/secrets/pw; echo; cat /etc/app.conf; sleep 600",
        ],
    )
    .ok();
    let files_root = d.data_root().join("runtime/process/files");
    if !is_root() {
        let err = wait_for("the task to fail", T, || {
            let tasks = d.tasks("app");
            tasks
                .iter()
                .find_map(|t| t["Status"]["Err"].as_str().map(str::to_string))
                .ok_or_else(|| format!("{tasks:?}"))
        });
        assert!(err.contains("needs root"), "{err}");
        d.cli_run(cli, &["service", "rm", "app"]).ok();
        return;
    }
    let logs = wait_for("both files in the service's logs", T, || {
        let out = d.cli_run(cli, &["service", "logs", "--raw", "app"]);
        let text = format!("{}{}", out.stdout, out.stderr);
        if text.contains("pw-7811") && text.contains("listen=7812") {
            Ok(text)
        } else {
            Err(format!("{out:?} tasks {:?}", d.tasks("app")))
        }
    });
    assert!(!logs.contains("No such file"), "{logs}");
    assert!(
        !Path::new("/run/secrets/pw").exists(),
        "the host does not see the secret"
    );
    let on_host = std::fs::read_to_string("/etc/app.conf").unwrap_or_default();
    assert!(
        !on_host.contains("listen=7812"),
        "the host does not see the config's data: {on_host:?}"
    );
    let task_dirs = entries(&files_root);
    assert_eq!(task_dirs.len(), 1, "{task_dirs:?}");

    d.cli_run(cli, &["service", "rm", "app"]).ok();
    wait_for("the task's files to be removed", T, || {
        let left = entries(&files_root);
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    });
    if !conf_existed {
        wait_for("the config's mount point to go", T, || {
            if Path::new("/etc/app.conf").exists() {
                Err("/etc/app.conf is still there".to_string())
            } else {
                Ok(())
            }
        });
    }
}
