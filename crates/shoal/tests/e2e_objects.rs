//! Networks, secrets and configs on a one-machine swarm, through the real `docker` CLI and the
//! `shoal` CLI side by side: create, ls, inspect, rm, and the refusals (duplicate names,
//! unsupported drivers, objects in use by a service, unknown networks).
//!
//! The daemon's swarm address is in this file's block, 127.0.70.x.

mod common;

use common::{docker_cli, table, TestDaemon};
use serde_json::Value;

fn inspect(d: &TestDaemon, cli: &str, args: &[&str]) -> Value {
    let out = if cli == "docker" {
        d.docker(args)
    } else {
        d.shoal(args)
    };
    serde_json::from_str(out.ok()).unwrap_or_else(|e| panic!("{args:?}: {e}: {out:?}"))
}

#[test]
fn e2e_objects_networks_with_both_clis() {
    if docker_cli().is_none() {
        return;
    }
    let d = TestDaemon::start_at("127.0.70.2");
    d.docker(&["swarm", "init", "--advertise-addr", d.ip()])
        .ok();

    // swarm init made the ingress network.
    let ls = d.docker(&["network", "ls"]);
    assert_eq!(
        common::header(ls.ok()),
        "NETWORK ID NAME DRIVER SCOPE",
        "{ls:?}"
    );
    let rows = table(&ls.stdout);
    assert_eq!(rows.len(), 1, "{ls:?}");
    assert_eq!(rows[0][1..], ["ingress", "overlay", "swarm"]);
    let ingress = inspect(&d, "docker", &["network", "inspect", "ingress"]);
    assert_eq!(ingress[0]["Ingress"], true);
    assert_eq!(ingress[0]["IPAM"]["Config"][0]["Subnet"], "10.0.0.0/24");

    // Created by each CLI; subnets come from the default pool unless given.
    let webnet = d
        .docker(&[
            "network",
            "create",
            "-d",
            "overlay",
            "--attachable",
            "webnet",
        ])
        .ok()
        .trim()
        .to_string();
    assert_eq!(webnet.len(), 25, "{webnet}");
    let backend = d
        .shoal(&[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "10.70.0.0/16",
            "--label",
            "tier=back",
            "backend",
        ])
        .ok()
        .trim()
        .to_string();
    let w = inspect(&d, "shoal", &["network", "inspect", "webnet"]);
    assert_eq!(w[0]["Id"], webnet.as_str());
    assert_eq!(w[0]["Attachable"], true);
    assert_eq!(w[0]["IPAM"]["Config"][0]["Subnet"], "10.0.1.0/24");
    let b = inspect(&d, "docker", &["network", "inspect", &backend[..8]]);
    assert_eq!(b[0]["Name"], "backend");
    assert_eq!(b[0]["IPAM"]["Config"][0]["Subnet"], "10.70.0.0/16");
    assert_eq!(b[0]["Labels"]["tier"], "back");

    // Both CLIs list the same table, sorted by name.
    let docker_ls = d.docker(&["network", "ls"]);
    let shoal_ls = d.shoal(&["network", "ls"]);
    assert_eq!(docker_ls.ok(), shoal_ls.ok());
    let names: Vec<String> = table(&docker_ls.stdout)
        .into_iter()
        .map(|r| r[1].clone())
        .collect();
    assert_eq!(names, ["backend", "ingress", "webnet"]);
    let filtered = d.docker(&["network", "ls", "-q", "--filter", "label=tier=back"]);
    assert_eq!(filtered.ok().trim(), &backend[..12]);

    // Refusals.
    for out in [
        d.docker(&["network", "create", "-d", "overlay", "webnet"]),
        d.shoal(&["network", "create", "-d", "overlay", "webnet"]),
    ] {
        assert!(
            out.fails()
                .contains("Error response from daemon: network with name webnet already exists"),
            "{out:?}"
        );
    }
    for out in [
        d.docker(&["network", "create", "local"]),
        d.shoal(&["network", "create", "local"]),
    ] {
        assert!(
            out.fails()
                .contains("network driver \"bridge\" is not supported"),
            "{out:?}"
        );
    }
    let out = d.docker(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.70.5.0/24",
        "x",
    ]);
    assert!(out.fails().contains("overlaps"), "{out:?}");
    for out in [
        d.docker(&["network", "inspect", "nosuch"]),
        d.shoal(&["network", "inspect", "nosuch"]),
    ] {
        assert!(
            out.fails()
                .contains("Error response from daemon: network nosuch not found"),
            "{out:?}"
        );
    }

    // A service attached by name stores the network's ID; the network is then in use.
    let svc = d
        .shoal(&[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "--network",
            "webnet",
            "busybox",
            "sleep",
            "6701",
        ])
        .ok()
        .trim()
        .to_string();
    let spec = inspect(&d, "docker", &["service", "inspect", "web"]);
    assert_eq!(
        spec[0]["Spec"]["TaskTemplate"]["Networks"][0]["Target"],
        webnet.as_str()
    );
    let out = d.shoal(&[
        "service",
        "create",
        "-d",
        "--name",
        "lost",
        "--network",
        "nosuch",
        "busybox",
        "sleep",
        "6702",
    ]);
    assert!(out.fails().contains("network nosuch not found"), "{out:?}");
    let want = format!(
        "Error response from daemon: rpc error: code = FailedPrecondition desc = network {webnet} is in use by service {svc}"
    );
    for out in [
        d.docker(&["network", "rm", "webnet"]),
        d.shoal(&["network", "rm", "webnet"]),
    ] {
        assert!(out.fails().contains(&want), "{out:?}");
    }
    d.docker(&["service", "rm", "web"]).ok();
    assert_eq!(d.docker(&["network", "rm", "webnet"]).ok().trim(), "webnet");
    assert_eq!(
        d.shoal(&["network", "rm", "backend"]).ok().trim(),
        "backend"
    );
    let rows = table(d.shoal(&["network", "ls"]).ok());
    assert_eq!(rows.len(), 1, "{rows:?}");
}

#[test]
fn e2e_objects_secrets_and_configs_with_both_clis() {
    if docker_cli().is_none() {
        return;
    }
    let d = TestDaemon::start_at("127.0.70.3");
    d.docker(&["swarm", "init", "--advertise-addr", d.ip()])
        .ok();
    let file = d.root().join("secret.txt");
    std::fs::write(&file, "s3cret-6711").expect("secret file");
    let file = file.to_string_lossy().into_owned();
    let conf = d.root().join("app.yml");
    std::fs::write(&conf, "port: 6712\n").expect("config file");
    let conf = conf.to_string_lossy().into_owned();

    let db = d
        .docker(&["secret", "create", "db_pass", &file])
        .ok()
        .trim()
        .to_string();
    let key = d
        .shoal(&["secret", "create", "-l", "env=prod", "api_key", &file])
        .ok()
        .trim()
        .to_string();
    assert_eq!((db.len(), key.len()), (25, 25));
    for out in [
        d.docker(&["secret", "create", "db_pass", &file]),
        d.shoal(&["secret", "create", "db_pass", &file]),
    ] {
        assert!(
            out.fails().contains(
                "Error response from daemon: rpc error: code = AlreadyExists desc = secret db_pass already exists"
            ),
            "{out:?}"
        );
    }
    // Listed alike by both CLIs (the ages may tick between the two calls: compare the rest).
    let cut = |s: &str| -> Vec<Vec<String>> {
        table(s)
            .into_iter()
            .map(|r| r.into_iter().take(2).collect())
            .collect()
    };
    let docker_ls = d.docker(&["secret", "ls"]);
    let shoal_ls = d.shoal(&["secret", "ls"]);
    assert_eq!(
        common::header(docker_ls.ok()),
        "ID NAME DRIVER CREATED UPDATED"
    );
    assert_eq!(
        common::header(docker_ls.ok()),
        common::header(shoal_ls.ok())
    );
    assert_eq!(cut(&docker_ls.stdout), cut(&shoal_ls.stdout));
    assert_eq!(
        cut(&docker_ls.stdout),
        [
            [key.clone(), "api_key".into()],
            [db.clone(), "db_pass".into()]
        ]
    );
    // Inspect never shows the data.
    for cli in ["docker", "shoal"] {
        let s = inspect(&d, cli, &["secret", "inspect", "api_key"]);
        assert_eq!(s[0]["ID"], key.as_str());
        assert_eq!(s[0]["Spec"]["Labels"]["env"], "prod");
        assert!(s[0]["Spec"].get("Data").is_none(), "{s}");
    }
    let pretty_d = d.docker(&["secret", "inspect", "--pretty", "db_pass"]);
    let pretty_s = d.shoal(&["secret", "inspect", "--pretty", "db_pass"]);
    assert_eq!(pretty_d.ok(), pretty_s.ok());
    assert!(!pretty_d.stdout.contains("s3cret"));

    // Configs show their data.
    let app = d
        .docker(&["config", "create", "app.yml", &conf])
        .ok()
        .trim()
        .to_string();
    d.shoal(&["config", "create", "-l", "x=y", "app2.yml", &conf])
        .ok();
    let c = inspect(&d, "shoal", &["config", "inspect", "app.yml"]);
    assert_eq!(c[0]["ID"], app.as_str());
    assert_eq!(c[0]["Spec"]["Data"], "cG9ydDogNjcxMgo=");
    let pretty_d = d.docker(&["config", "inspect", "--pretty", "app2.yml"]);
    let pretty_s = d.shoal(&["config", "inspect", "--pretty", "app2.yml"]);
    assert_eq!(pretty_d.ok(), pretty_s.ok());
    assert!(pretty_d.stdout.contains("port: 6712"), "{pretty_d:?}");
    let docker_ls = d.docker(&["config", "ls"]);
    let shoal_ls = d.shoal(&["config", "ls"]);
    assert_eq!(common::header(docker_ls.ok()), "ID NAME CREATED UPDATED");
    assert_eq!(cut(&docker_ls.stdout), cut(&shoal_ls.stdout));
    let out = d.docker(&["config", "create", "app.yml", &conf]);
    assert!(
        out.fails()
            .contains("rpc error: code = AlreadyExists desc = config app.yml already exists"),
        "{out:?}"
    );

    // In use by a service: refused until the service is gone.
    d.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--secret",
        "db_pass",
        "--config",
        "src=app.yml,target=/etc/app.yml",
        "busybox",
        "sleep",
        "6713",
    ])
    .ok();
    for out in [
        d.docker(&["secret", "rm", "db_pass"]),
        d.shoal(&["secret", "rm", "db_pass"]),
    ] {
        assert!(
            out.fails().contains(
                "rpc error: code = InvalidArgument desc = secret 'db_pass' is in use by the following service: web"
            ),
            "{out:?}"
        );
    }
    let out = d.shoal(&["config", "rm", "app.yml"]);
    assert!(
        out.fails().contains(
            "rpc error: code = InvalidArgument desc = config 'app.yml' is in use by the following service: web"
        ),
        "{out:?}"
    );
    d.docker(&["service", "rm", "web"]).ok();
    assert_eq!(
        d.docker(&["secret", "rm", "db_pass", "api_key"]).ok(),
        "db_pass\napi_key\n"
    );
    assert_eq!(
        d.shoal(&["config", "rm", "app.yml", "app2.yml"]).ok(),
        "app.yml\napp2.yml\n"
    );
    assert!(table(d.shoal(&["secret", "ls"]).ok()).is_empty());
    assert!(table(d.docker(&["config", "ls"]).ok()).is_empty());
    let out = d.docker(&["secret", "inspect", "db_pass"]);
    assert!(out.fails().contains("secret db_pass not found"), "{out:?}");
}
