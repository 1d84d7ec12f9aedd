//! Stacks on a one-machine swarm, as the guide runs them: `stack deploy -c docker-compose.yml
//! getstartedlab`, `stack ls`, `stack services`, `stack ps`, a re-deploy that scales the
//! service, `stack rm`, through the `shoal` CLI and through the real `docker` CLI; `--prune`
//! and `--detach=false` with both CLIs; a broken compose file leaves nothing created, and every
//! file of `shoal-compose`'s broken corpus, deployed over a running stack, gives its exact
//! error and changes nothing; `stack config` merges files and reads standard input; secrets
//! and configs of a stack are created, resolved to IDs in the service and removed with it; a
//! stack deployed by `shoal` and again by `docker` is updated in place.
//!
//! The guide's file runs no command (its image does); the process runtime records the image
//! and runs the command, so the test's file adds one.
//!
//! The daemons' swarm addresses are in this file's blocks, 127.0.72.x and 127.0.82.x.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{client_command, table, wait_for, Cli, TestDaemon, WAIT};

const STACK: &str = "getstartedlab";

/// The guide's `docker-compose.yml` (part 3), with `replicas` replicas and a command.
fn guide_file(replicas: u32) -> String {
    format!(
        r#"version: "3"
services:
  web:
    # replace username/repo:tag with your name and image details
    image: username/repo:tag
    command: ["sleep", "3172"]
    deploy:
      replicas: {replicas}
      resources:
        limits:
          cpus: "0.1"
          memory: 50M
      restart_policy:
        condition: on-failure
    ports:
      - "4000:80"
    networks:
      - webnet
networks:
  webnet:
"#
    )
}

fn write(d: &TestDaemon, name: &str, text: &str) -> PathBuf {
    let p = d.root().join(name);
    std::fs::write(&p, text).expect("write compose file");
    p
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `stack services` rows as (name, replicas, image, ports).
fn services_rows(d: &TestDaemon, cli: Cli) -> Result<Vec<Vec<String>>, String> {
    let out = d.cli_run(cli, &["stack", "services", STACK]);
    if out.code != 0 {
        return Err(format!("{out:?}"));
    }
    Ok(table(&out.stdout))
}

#[track_caller]
fn wait_stack_replicas(d: &TestDaemon, cli: Cli, replicas: &str) {
    wait_for(&format!("{STACK}_web at {replicas}"), WAIT, || {
        let rows = services_rows(d, cli)?;
        match rows.as_slice() {
            [row] if row.get(3).map(String::as_str) == Some(replicas) => Ok(()),
            _ => Err(format!("{rows:?}")),
        }
    });
}

/// Names of the networks the daemon has (`network ls`).
fn network_names(d: &TestDaemon) -> Vec<String> {
    let out = d.shoal(&["network", "ls", "--format", "{{.Name}}"]);
    out.ok().lines().map(str::to_string).collect()
}

fn guide_flow(cli: Cli, ip: &str) {
    let d = TestDaemon::start_at(ip);
    d.cli_run(cli, &["swarm", "init", "--advertise-addr", d.ip()])
        .ok();
    let file = write(&d, "docker-compose.yml", &guide_file(5));

    let out = d.cli_run(cli, &["stack", "deploy", "-c", path(&file), STACK]);
    assert_eq!(
        out.ok(),
        "Creating network getstartedlab_webnet\nCreating service getstartedlab_web\n",
        "{out:?}"
    );
    assert!(
        out.stderr.contains(
            "Since --detach=false was not specified, tasks will be created in the background."
        ),
        "{out:?}"
    );

    let ls = d.cli_run(cli, &["stack", "ls"]);
    assert_eq!(common::header(ls.ok()), "NAME SERVICES", "{ls:?}");
    assert_eq!(table(&ls.stdout), vec![vec![STACK, "1"]], "{ls:?}");

    wait_stack_replicas(&d, cli, "5/5");
    let rows = services_rows(&d, cli).expect("stack services");
    assert_eq!(
        rows[0][1..5],
        [
            "getstartedlab_web",
            "replicated",
            "5/5",
            "username/repo:tag"
        ],
        "{rows:?}"
    );
    // The published port is in the spec (the PORTS column shows the daemon's allocated
    // endpoint, which `service ls` shows the same way).
    let svc = d.get_json("/services/getstartedlab_web");
    assert_eq!(
        svc["Spec"]["EndpointSpec"]["Ports"][0]["PublishedPort"], 4000,
        "{svc}"
    );
    assert_eq!(
        svc["Spec"]["Labels"]["com.docker.stack.namespace"], STACK,
        "{svc}"
    );
    let service_id = rows[0][0].clone();

    let ps = d.cli_run(cli, &["stack", "ps", STACK]);
    assert_eq!(
        common::header(ps.ok()),
        "ID NAME IMAGE NODE DESIRED STATE CURRENT STATE ERROR PORTS",
        "{ps:?}"
    );
    let mut names: Vec<String> = table(&ps.stdout)
        .into_iter()
        .map(|r| r[1].clone())
        .collect();
    names.sort();
    assert_eq!(
        names,
        (1..=5)
            .map(|i| format!("getstartedlab_web.{i}"))
            .collect::<Vec<_>>(),
        "{ps:?}"
    );
    let quiet = d.cli_run(cli, &["stack", "ps", "-q", STACK]);
    assert_eq!(quiet.ok().lines().count(), 5, "{quiet:?}");
    // As docker's `stack ps` does, `-q` alone keeps IDs truncated.
    assert!(
        quiet.stdout.lines().all(|l| l.len() == 12),
        "truncated IDs: {quiet:?}"
    );
    let full = d.cli_run(cli, &["stack", "ps", "-q", "--no-trunc", STACK]);
    assert!(
        full.ok().lines().all(|l| l.len() == 25),
        "untruncated IDs: {full:?}"
    );

    // The guide edits the file and deploys again: the service is updated and scales.
    write(&d, "docker-compose.yml", &guide_file(3));
    let out = d.cli_run(cli, &["stack", "deploy", "-c", path(&file), STACK]);
    let updated = out.ok();
    assert!(
        updated.starts_with(&format!(
            "Updating service getstartedlab_web (id: {service_id}"
        )),
        "{out:?}"
    );
    assert!(!updated.contains("Creating"), "{out:?}");
    wait_stack_replicas(&d, cli, "3/3");
    wait_for("3 tasks meant to run", WAIT, || {
        let ps = d.cli_run(
            cli,
            &[
                "stack",
                "ps",
                "-f",
                "desired-state=running",
                "--format",
                "{{.Name}} {{.DesiredState}}",
                STACK,
            ],
        );
        let mut lines = ps.lines();
        lines.sort();
        let want: Vec<String> = (1..=3)
            .map(|i| format!("getstartedlab_web.{i} Running"))
            .collect();
        if ps.code == 0 && lines == want {
            Ok(())
        } else {
            Err(format!("{ps:?}"))
        }
    });

    let rm = d.cli_run(cli, &["stack", "rm", STACK]);
    assert_eq!(
        rm.ok(),
        "Removing service getstartedlab_web\nRemoving network getstartedlab_webnet\n",
        "{rm:?}"
    );
    let ls = d.cli_run(cli, &["stack", "ls"]);
    assert!(table(ls.ok()).is_empty(), "{ls:?}");
    let svc = d.shoal(&["service", "ls", "-q"]);
    assert_eq!(svc.ok(), "", "{svc:?}");
    wait_for("the stack network to go", WAIT, || {
        let names = network_names(&d);
        if names.iter().any(|n| n.starts_with(STACK)) {
            Err(format!("{names:?}"))
        } else {
            Ok(())
        }
    });
    let again = d.cli_run(cli, &["stack", "rm", STACK]);
    assert_eq!(
        again.ok(),
        "",
        "nothing to remove is not an error: {again:?}"
    );
    assert_eq!(again.stderr, "Nothing found in stack: getstartedlab\n");
    // The removed services' tasks are listed (by the stack's label) until they stopped.
    wait_for("the stack's tasks to go", WAIT, || {
        let ps = d.cli_run(cli, &["stack", "ps", STACK]);
        if ps.code != 0 {
            assert_eq!(
                ps.stderr, "nothing found in stack: getstartedlab\n",
                "{ps:?}"
            );
            Ok(())
        } else {
            Err(format!("{ps:?}"))
        }
    });
}

#[test]
fn e2e_stack_guide_with_shoal() {
    guide_flow(Cli::Shoal, "127.0.72.2");
}

#[test]
fn e2e_stack_guide_with_docker() {
    if common::docker_cli().is_none() {
        return;
    }
    guide_flow(Cli::Docker, "127.0.72.3");
}

/// What the daemon holds besides the ingress network.
fn objects(d: &TestDaemon) -> (String, Vec<String>, String, String) {
    (
        d.shoal(&["service", "ls", "-q"]).ok().to_string(),
        network_names(d)
            .into_iter()
            .filter(|n| n != "ingress")
            .collect(),
        d.shoal(&["secret", "ls", "-q"]).ok().to_string(),
        d.shoal(&["config", "ls", "-q"]).ok().to_string(),
    )
}

#[test]
fn e2e_stack_broken_files_create_nothing() {
    let d = TestDaemon::start_at("127.0.72.4");
    d.shoal(&["swarm", "init", "--advertise-addr", d.ip()]).ok();
    let empty = (String::new(), Vec::new(), String::new(), String::new());
    assert_eq!(objects(&d), empty);

    let cases: [(&str, &str, &str); 4] = [
        (
            // An undefined network, after a valid service and network.
            "services:\n  a:\n    image: busybox\n    networks: [front]\n  b:\n    image: busybox\n    networks:\n      - back\nnetworks:\n  front: {}\n",
            "undefined.yml:8: ",
            "undefined network \"back\"",
        ),
        (
            "services:\n  web:\n    image: busybox\n    deploy:\n      replicas: five\n",
            "type.yml:5: ",
            "replicas",
        ),
        (
            // The external network does not exist: checked before anything is created.
            "services:\n  web:\n    image: busybox\n    networks: [outside, mine]\nnetworks:\n  mine: {}\n  outside:\n    external: true\n",
            "",
            "network \"outside\" is declared as external, but could not be found. You need to create a swarm-scoped network before the stack is deployed",
        ),
        (
            // The secret file is missing.
            "services:\n  web:\n    image: busybox\n    secrets: [pw]\nsecrets:\n  pw:\n    file: ./nope.txt\n",
            "missing.yml:",
            "nope.txt: no such file or directory",
        ),
    ];
    let names = ["undefined.yml", "type.yml", "external.yml", "missing.yml"];
    for ((text, prefix, message), name) in cases.iter().zip(names) {
        write(&d, name, text);
        // Relative paths, as a user types them.
        let mut cmd = client_command(
            Path::new(env!("CARGO_BIN_EXE_shoal")),
            &d.root().join("docker-config"),
        );
        cmd.current_dir(d.root()).args([
            "-H",
            &d.host(),
            "stack",
            "deploy",
            "-d",
            "-c",
            name,
            "broken",
        ]);
        let out = common::run(cmd, common::COMMAND_TIMEOUT);
        let stderr = out.fails();
        assert!(
            stderr.starts_with(prefix) && stderr.contains(message),
            "{name}: {out:?}"
        );
        assert_eq!(out.stdout, "", "{name}: nothing is created: {out:?}");
        assert_eq!(objects(&d), empty, "{name}");
    }
    let ls = d.shoal(&["stack", "ls"]);
    assert!(table(ls.ok()).is_empty(), "{ls:?}");
}

#[test]
fn e2e_stack_config_merges_files_and_reads_stdin() {
    let d = TestDaemon::start_at("127.0.72.5");
    let base = write(
        &d,
        "base.yml",
        "version: \"3.8\"\nservices:\n  web:\n    image: nginx:${TAG:-1}\n    deploy:\n      replicas: 2\n",
    );
    let over = write(
        &d,
        "override.yml",
        "version: \"3.8\"\nservices:\n  web:\n    deploy:\n      replicas: 4\n",
    );
    let out = d.shoal(&["stack", "config", "-c", path(&base), "-c", path(&over)]);
    assert_eq!(
        out.ok(),
        "version: '3.8'\nservices:\n  web:\n    deploy:\n      replicas: 4\n    image: nginx:1\n",
        "{out:?}"
    );

    // Deploying needs a swarm manager; the file is read first, nothing is created.
    let mut clis = vec![Cli::Shoal];
    if common::docker_cli().is_some() {
        clis.push(Cli::Docker);
    }
    for cli in clis {
        let out = d.cli_run(cli, &["stack", "deploy", "-d", "-c", path(&base), "web"]);
        assert_eq!(
            out.fails(),
            "this node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again\n",
            "{out:?}"
        );
        assert_eq!(out.stdout, "", "{out:?}");
    }

    // `-c -` reads standard input.
    let mut cmd = client_command(
        Path::new(env!("CARGO_BIN_EXE_shoal")),
        &d.root().join("docker-config"),
    );
    cmd.args(["stack", "config", "-c", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn shoal");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"services:\n  db:\n    image: redis\n")
        .expect("write stdin");
    let done = child.wait_with_output().expect("wait shoal");
    assert!(done.status.success(), "{done:?}");
    assert_eq!(
        String::from_utf8_lossy(&done.stdout),
        "services:\n  db:\n    image: redis\n"
    );
}

#[test]
fn e2e_stack_secrets_and_configs() {
    let d = TestDaemon::start_at("127.0.72.6");
    d.shoal(&["swarm", "init", "--advertise-addr", d.ip()]).ok();
    write(&d, "pw.txt", "s3cret\n");
    let file = write(
        &d,
        "app.yml",
        "services:\n  app:\n    image: busybox\n    restart: always\n    command: [\"sleep\", \"3173\"]\n    secrets: [pw]\n    configs:\n      - source: conf\n        target: /etc/app.conf\nsecrets:\n  pw:\n    file: ./pw.txt\nconfigs:\n  conf:\n    content: \"debug = true\"\n",
    );
    let out = d.shoal(&["stack", "deploy", "-c", path(&file), "app"]);
    assert_eq!(
        out.ok(),
        "Creating network app_default\nCreating secret app_pw\nCreating config app_conf\nCreating service app_app\n",
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains("Ignoring unsupported options: restart\n\n"),
        "{out:?}"
    );
    let secret_id = d.shoal(&["secret", "inspect", "-f", "{{.ID}}", "app_pw"]);
    let config_id = d.shoal(&["config", "inspect", "-f", "{{.ID}}", "app_conf"]);
    let svc = d.get_json("/services/app_app");
    let cs = &svc["Spec"]["TaskTemplate"]["ContainerSpec"];
    assert_eq!(cs["Secrets"][0]["SecretName"], "app_pw", "{svc}");
    assert_eq!(
        cs["Secrets"][0]["SecretID"].as_str(),
        Some(secret_id.ok().trim()),
        "{svc}"
    );
    assert_eq!(
        cs["Configs"][0]["ConfigID"].as_str(),
        Some(config_id.ok().trim()),
        "{svc}"
    );

    // Changed secret data: refused by the daemon, as with docker.
    write(&d, "pw.txt", "other\n");
    let out = d.shoal(&["stack", "deploy", "-d", "-c", path(&file), "app"]);
    assert!(
        out.fails().ends_with(
            "\nfailed to update secret app_pw: Error response from daemon: rpc error: code = InvalidArgument desc = only updates to Labels are allowed\n"
        ),
        "{out:?}"
    );
    assert_eq!(out.stdout, "", "{out:?}");

    let rm = d.shoal(&["stack", "rm", "app"]);
    assert_eq!(
        rm.ok(),
        "Removing service app_app\nRemoving secret app_pw\nRemoving config app_conf\nRemoving network app_default\n",
        "{rm:?}"
    );
}

/// Re-running `stack deploy` with an unchanged file updates the stack's secrets with the same
/// data, which swarmkit accepts (it refuses only a change of name or data).
#[test]
fn e2e_stack_redeploy_with_unchanged_secret() {
    let d = TestDaemon::start_at("127.0.72.7");
    d.shoal(&["swarm", "init", "--advertise-addr", d.ip()]).ok();
    write(&d, "pw.txt", "s3cret\n");
    let file = write(
        &d,
        "app.yml",
        "services:\n  app:\n    image: busybox\n    command: [\"sleep\", \"3175\"]\n    secrets: [pw]\nsecrets:\n  pw:\n    file: ./pw.txt\n",
    );
    let out = d.shoal(&["stack", "deploy", "-c", path(&file), "app"]);
    assert_eq!(
        out.ok(),
        "Creating network app_default\nCreating secret app_pw\nCreating service app_app\n",
        "{out:?}"
    );
    // Once the task runs the allocator has given the service its virtual IP (a new version
    // of it): deploying again before that may meet "update out of sequence", as with Docker.
    common::wait_pids(&["sleep", "3175"], 1);
    let out = d.shoal(&["stack", "deploy", "-c", path(&file), "app"]);
    assert!(
        out.ok().starts_with("Updating service app_app (id: "),
        "{out:?}"
    );
    d.shoal(&["stack", "rm", "app"]).ok();
}

/// `--detach=false` waits for every service with the progress display, `--prune` removes the
/// services gone from the file, `stack rm --detach=false` waits for the tasks to end: with
/// both CLIs.
fn prune_and_wait_flow(cli: Cli, ip: &str) {
    let d = TestDaemon::start_at(ip);
    d.cli_run(cli, &["swarm", "init", "--advertise-addr", d.ip()])
        .ok();
    let two = write(
        &d,
        "two.yml",
        "services:\n  web:\n    image: busybox\n    command: [\"sleep\", \"3176\"]\n    deploy: {replicas: 2}\n  worker:\n    image: busybox\n    command: [\"sleep\", \"3177\"]\n",
    );
    let one = write(
        &d,
        "one.yml",
        "services:\n  web:\n    image: busybox\n    command: [\"sleep\", \"3176\"]\n    deploy: {replicas: 1}\n",
    );
    let out = d.cli_run(
        cli,
        &["stack", "deploy", "--detach=false", "-c", path(&two), "pw"],
    );
    let text = out.ok();
    // Docker creates the services in no particular order (Shoal in name order).
    let mut first: Vec<&str> = text.lines().take(3).collect();
    first[1..].sort();
    assert_eq!(
        first,
        [
            "Creating network pw_default",
            "Creating service pw_web",
            "Creating service pw_worker"
        ],
        "{out:?}"
    );
    assert!(
        text.contains("overall progress: 2 out of 2 tasks")
            && text.contains("overall progress: 1 out of 1 tasks"),
        "{out:?}"
    );
    assert_eq!(text.matches(" converged\n").count(), 2, "{out:?}");
    assert!(!out.stderr.contains("Since --detach=false"), "{out:?}");
    // Both services run right away: nothing to wait for in `stack services`.
    let rows = services_rows_of(&d, cli, "pw");
    assert_eq!(
        rows.iter()
            .map(|r| (r[1].as_str(), r[3].as_str(), r[4].as_str()))
            .collect::<Vec<_>>(),
        [
            ("pw_web", "2/2", "busybox:latest"),
            ("pw_worker", "1/1", "busybox:latest")
        ],
        "{rows:?}"
    );

    let out = d.cli_run(
        cli,
        &[
            "stack",
            "deploy",
            "-d",
            "--prune",
            "--with-registry-auth",
            "-c",
            path(&one),
            "pw",
        ],
    );
    let text = out.ok();
    assert!(
        text.starts_with("Removing service pw_worker\nUpdating service pw_web (id: "),
        "{out:?}"
    );
    wait_for("pw_web at 1/1 alone", WAIT, || {
        let rows = services_rows_of(&d, cli, "pw");
        match rows.as_slice() {
            [r] if r[1] == "pw_web" && r[3] == "1/1" => Ok(()),
            _ => Err(format!("{rows:?}")),
        }
    });

    let rm = d.cli_run(cli, &["stack", "rm", "--detach=false", "pw"]);
    assert_eq!(
        rm.ok(),
        "Removing service pw_web\nRemoving network pw_default\n",
        "{rm:?}"
    );
    // The tasks end. (`--detach=false` waits for the tasks the stack's label selects: each
    // task carries a copy of its service's labels, so they are selected until they stopped;
    // `e2e_endpoint.rs` checks the wait itself.)
    wait_for("the stack's tasks to end", WAIT, || {
        let tasks = d.get_json("/tasks");
        let running: Vec<&serde_json::Value> = tasks
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["Status"]["State"] == "running")
            .collect();
        if running.is_empty() {
            Ok(())
        } else {
            Err(format!("{running:?}"))
        }
    });
}

/// `stack services NAME` rows (empty when the stack has none).
fn services_rows_of(d: &TestDaemon, cli: Cli, stack: &str) -> Vec<Vec<String>> {
    table(d.cli_run(cli, &["stack", "services", stack]).ok())
}

#[test]
fn e2e_stack_prune_and_wait_with_shoal() {
    prune_and_wait_flow(Cli::Shoal, "127.0.72.8");
}

#[test]
fn e2e_stack_prune_and_wait_with_docker() {
    if common::docker_cli().is_none() {
        return;
    }
    prune_and_wait_flow(Cli::Docker, "127.0.72.9");
}

/// Everything the daemon holds that a deploy could change: services, networks, secrets and
/// configs as the API returns them (sorted by ID, so whole objects compare, `Version.Index`
/// included), and the IDs of all tasks (a deploy that changed nothing started none).
#[derive(Debug, PartialEq)]
struct Cluster {
    services: Vec<serde_json::Value>,
    networks: Vec<serde_json::Value>,
    secrets: Vec<serde_json::Value>,
    configs: Vec<serde_json::Value>,
    tasks: Vec<String>,
}

fn sorted_by_id(v: serde_json::Value) -> Vec<serde_json::Value> {
    let mut items = match v {
        serde_json::Value::Array(items) => items,
        other => panic!("not a list: {other}"),
    };
    // Networks have an `Id`, the other objects an `ID`.
    let id = |o: &serde_json::Value| o["ID"].as_str().or(o["Id"].as_str()).map(str::to_string);
    items.sort_by_key(id);
    items
}

fn cluster(d: &TestDaemon) -> Cluster {
    let mut tasks: Vec<String> = d
        .get_json("/tasks")
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["ID"].as_str().map(str::to_string))
        .collect();
    tasks.sort();
    Cluster {
        services: sorted_by_id(d.get_json("/services")),
        networks: sorted_by_id(d.get_json("/networks")),
        secrets: sorted_by_id(d.get_json("/secrets")),
        configs: sorted_by_id(d.get_json("/configs")),
        tasks,
    }
}

/// (name, ID, `Version.Index`) of every object of `list`, to show which one changed.
fn versions(list: &[serde_json::Value]) -> Vec<(String, String, u64)> {
    list.iter()
        .map(|o| {
            let name = o["Spec"]["Name"]
                .as_str()
                .or(o["Name"].as_str())
                .unwrap_or_default();
            let id = o["ID"].as_str().or(o["Id"].as_str()).unwrap_or_default();
            let version = o["Version"]["Index"].as_u64().unwrap_or_default();
            (name.to_string(), id.to_string(), version)
        })
        .collect()
}

/// The compose corpus of `shoal-compose` (`tests/broken/NAME.yml` and its error `NAME.err`).
fn broken_corpus() -> (PathBuf, Vec<String>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shoal-compose/tests/broken");
    let dir = dir.canonicalize().expect("the broken compose corpus");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("read the corpus")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yml"))
        .collect();
    names.sort();
    assert!(names.len() >= 12, "only {} broken files", names.len());
    (dir, names)
}

/// `cli stack deploy -c FILE live`, run in the corpus directory with the environment the
/// loader test uses (`PORT=80`, no `USER`).
fn deploy_broken(d: &TestDaemon, cli: Cli, dir: &Path, file: &str) -> common::Out {
    let program = match cli {
        Cli::Shoal => PathBuf::from(env!("CARGO_BIN_EXE_shoal")),
        Cli::Docker => common::docker_cli().expect("the docker CLI"),
    };
    let mut cmd = client_command(&program, &d.root().join("docker-config"));
    cmd.current_dir(dir)
        .env("PORT", "80")
        .env("HOME", d.root())
        .env_remove("USER")
        .args(["-H", &d.host(), "stack", "deploy", "-c", file, "live"]);
    common::run(cmd, common::COMMAND_TIMEOUT)
}

/// A stack `live` deployed with services, a network, a secret and a config; every file of the
/// broken corpus deployed to the same stack fails with its exact error (the loader's, which
/// names the file as given on the command line) and changes nothing in the cluster.
#[test]
fn e2e_stack_broken_corpus_leaves_a_deployed_stack_unchanged() {
    let d = TestDaemon::start_at("127.0.82.2");
    d.shoal(&["swarm", "init", "--advertise-addr", d.ip()]).ok();
    write(&d, "pw.txt", "s3cret\n");
    let file = write(
        &d,
        "live.yml",
        "version: \"3.8\"\nservices:\n  web:\n    image: nginx\n    command: [\"sleep\", \"8201\"]\n    deploy: {replicas: 2}\n    networks: [front]\n    secrets: [pw]\n    configs:\n      - source: conf\n        target: /etc/app.conf\n  worker:\n    image: busybox\n    command: [\"sleep\", \"8202\"]\n    networks: [front]\nnetworks:\n  front: {}\nsecrets:\n  pw:\n    file: ./pw.txt\nconfigs:\n  conf:\n    content: \"debug = true\"\n",
    );
    let out = d.shoal(&["stack", "deploy", "-c", path(&file), "live"]);
    assert_eq!(
        out.ok(),
        "Creating network live_front\nCreating secret live_pw\nCreating config live_conf\nCreating service live_web\nCreating service live_worker\n",
        "{out:?}"
    );
    common::wait_pids(&["sleep", "8201"], 2);
    common::wait_pids(&["sleep", "8202"], 1);
    // Settled: the services' tasks run and their objects have their final versions.
    let before = wait_for("the stack to settle", WAIT, || {
        let a = cluster(&d);
        let running = d
            .get_json("/tasks")
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["Status"]["State"] == "running")
            .count();
        std::thread::sleep(std::time::Duration::from_millis(500));
        let b = cluster(&d);
        if running == 3 && a == b {
            Ok(b)
        } else {
            Err(format!("{running} running; {a:?}"))
        }
    });
    assert_eq!(versions(&before.services).len(), 2, "{before:?}");
    assert_eq!(versions(&before.secrets).len(), 1, "{before:?}");
    assert_eq!(versions(&before.configs).len(), 1, "{before:?}");
    assert!(
        versions(&before.networks)
            .iter()
            .any(|(name, _, _)| name == "live_front"),
        "{before:?}"
    );

    let (dir, names) = broken_corpus();
    let mut failures = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let want =
            std::fs::read_to_string(dir.join(name.replace(".yml", ".err"))).expect("the .err file");
        // The error names the file as given: relative here, absolute every other time (then
        // the corpus directory is cut off to compare with the loader's text).
        let given = if i % 2 == 0 {
            name.clone()
        } else {
            path(&dir.join(name)).to_string()
        };
        let out = deploy_broken(&d, Cli::Shoal, &dir, &given);
        let prefix = format!("{}/", path(&dir));
        let got = out.stderr.strip_prefix(&prefix).unwrap_or(&out.stderr);
        if out.code == 0 || got.trim_end() != want.trim_end() || !out.stdout.is_empty() {
            failures.push(format!(
                "{given}: exit {}\n  want: {}\n  got:  {}\n  stdout: {:?}",
                out.code,
                want.trim_end(),
                out.stderr.trim_end(),
                out.stdout
            ));
        }
        let now = cluster(&d);
        if now != before {
            failures.push(format!(
                "{given} changed the cluster:\n  services {:?} -> {:?}\n  networks {:?} -> {:?}\n  secrets {:?} -> {:?}\n  configs {:?} -> {:?}\n  tasks {:?} -> {:?}",
                versions(&before.services),
                versions(&now.services),
                versions(&before.networks),
                versions(&now.networks),
                versions(&before.secrets),
                versions(&now.secrets),
                versions(&before.configs),
                versions(&now.configs),
                before.tasks,
                now.tasks
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The docker CLI refuses those its loader rejects too (with its own texts) and changes
    // nothing either. (Not the undefined references: docker's loader accepts them, and docker
    // creates the stack's networks before it converts the services and fails.)
    if common::docker_cli().is_some() {
        for name in [
            "duplicate_key.yml",
            "required_variable.yml",
            "tab_indent.yml",
            "unknown_service_key.yml",
            "version_2.yml",
            "wrong_type.yml",
        ] {
            let out = deploy_broken(&d, Cli::Docker, &dir, name);
            assert_ne!(out.code, 0, "docker accepted {name}: {out:?}");
            assert_eq!(out.stdout, "", "{name}: {out:?}");
            assert!(
                cluster(&d) == before,
                "docker with {name} changed the cluster"
            );
        }
    }

    // The stack still runs as deployed.
    let ls = d.shoal(&["stack", "ls"]);
    assert_eq!(table(ls.ok()), vec![vec!["live", "2"]], "{ls:?}");
    assert_eq!(common::pids_running(&["sleep", "8201"]).len(), 2);
    assert_eq!(common::pids_running(&["sleep", "8202"]).len(), 1);
}

/// A stack deployed with `shoal` and deployed again, unchanged, with `docker`: both CLIs send
/// the same spec, so the service is updated in place and no task is replaced.
#[test]
fn e2e_stack_docker_redeploys_a_shoal_stack_in_place() {
    if common::docker_cli().is_none() {
        return;
    }
    let d = TestDaemon::start_at("127.0.82.5");
    d.shoal(&["swarm", "init", "--advertise-addr", d.ip()]).ok();
    let file = write(
        &d,
        "docker-compose.yml",
        &guide_file(3).replace("3172", "8231"),
    );
    let out = d.shoal(&["stack", "deploy", "-c", path(&file), STACK]);
    assert_eq!(
        out.ok(),
        "Creating network getstartedlab_webnet\nCreating service getstartedlab_web\n",
        "{out:?}"
    );
    common::wait_pids(&["sleep", "8231"], 3);
    let tasks = common::flow::wait_running_ids(&d, "getstartedlab_web", 3);
    let before = d.get_json("/services/getstartedlab_web");

    let out = d.docker(&["stack", "deploy", "-c", path(&file), STACK]);
    let id = before["ID"].as_str().expect("service ID");
    assert_eq!(
        out.ok(),
        format!("Updating service getstartedlab_web (id: {id})\n"),
        "{out:?}"
    );
    let after = d.get_json("/services/getstartedlab_web");
    assert_eq!(
        after["Spec"]["TaskTemplate"], before["Spec"]["TaskTemplate"],
        "{after}"
    );
    // Let the orchestrator see the update (a new service runs once it did), then compare.
    d.sync_point(Cli::Shoal, "later", 8232);
    assert_eq!(
        common::flow::running_ids(&d, "getstartedlab_web"),
        tasks,
        "{:?}",
        d.tasks("getstartedlab_web")
    );
    assert_eq!(d.tasks("getstartedlab_web").len(), 3);
}
