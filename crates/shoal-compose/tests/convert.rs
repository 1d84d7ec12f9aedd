//! Conversion of compose files into the objects `docker stack deploy` sends to the Engine
//! API: the get-started guide's file, every supported service field, and the errors.

use serde_json::{json, Value as Json};
use shoal_compose::convert::{convert, ConvertContext, ConvertError, Stack};
use shoal_compose::model::ComposeFile;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn model(yaml: &str) -> ComposeFile {
    let v: serde_yaml::Value = serde_yaml::from_str(yaml).expect("test YAML parses");
    ComposeFile::from_value(&v).expect("model")
}

fn ctx(files: &[(&str, &str)], env: &[(&str, &str)]) -> ConvertContext {
    ConvertContext::in_memory(
        "/home/me/app",
        files
            .iter()
            .map(|(p, d)| (PathBuf::from(p), d.as_bytes().to_vec()))
            .collect(),
        env.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn stack(yaml: &str, files: &[(&str, &str)], env: &[(&str, &str)]) -> Stack {
    convert("st", &model(yaml), &ctx(files, env)).expect("convert")
}

fn json_of<T: serde::Serialize>(t: &T) -> Json {
    serde_json::to_value(t).expect("serializable")
}

/// Compares JSON documents, listing every differing path on failure.
fn assert_json_eq(actual: &Json, expected: &Json) {
    fn walk(a: &Json, e: &Json, path: &str, out: &mut Vec<String>) {
        match (a, e) {
            (Json::Object(x), Json::Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let p = format!("{path}.{k}");
                    match (x.get(k), y.get(k)) {
                        (Some(a), Some(e)) => walk(a, e, &p, out),
                        (a, e) => out.push(format!("{p}: actual {a:?}, expected {e:?}")),
                    }
                }
            }
            (Json::Array(x), Json::Array(y)) if x.len() == y.len() => {
                for (i, (a, e)) in x.iter().zip(y).enumerate() {
                    walk(a, e, &format!("{path}[{i}]"), out);
                }
            }
            _ if a == e => {}
            _ => out.push(format!("{path}: actual {a}, expected {e}")),
        }
    }
    let mut diffs = Vec::new();
    walk(actual, expected, "", &mut diffs);
    assert!(diffs.is_empty(), "JSON differs:\n{}", diffs.join("\n"));
}

fn convert_err(yaml: &str) -> String {
    convert("st", &model(yaml), &ctx(&[], &[]))
        .expect_err("conversion fails")
        .to_string()
}

const GET_STARTED: &str = r#"
version: "3"
services:
  web:
    # replace username/repo:tag with your name and image details
    image: username/repo:tag
    deploy:
      replicas: 5
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
"#;

#[test]
fn get_started_file_converts_like_docker_stack_deploy() {
    let f = model(GET_STARTED);
    assert!(f.unsupported().is_empty());
    let s = convert("getstartedlab", &f, &ctx(&[], &[])).expect("convert");

    assert_eq!(s.services.len(), 1);
    assert_eq!(
        json_of(&s.services["web"]),
        json!({
            "Name": "getstartedlab_web",
            "Labels": {
                "com.docker.stack.image": "username/repo:tag",
                "com.docker.stack.namespace": "getstartedlab"
            },
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": "username/repo:tag",
                    "Labels": {"com.docker.stack.namespace": "getstartedlab"},
                    "Privileges": {"NoNewPrivileges": false}
                },
                "Resources": {
                    "Limits": {"NanoCPUs": 100_000_000, "MemoryBytes": 52_428_800}
                },
                "RestartPolicy": {"Condition": "on-failure"},
                "Placement": {},
                "Networks": [{"Target": "getstartedlab_webnet", "Aliases": ["web"]}]
            },
            "Mode": {"Replicated": {"Replicas": 5}},
            "EndpointSpec": {
                "Ports": [{
                    "Protocol": "tcp",
                    "TargetPort": 80,
                    "PublishedPort": 4000,
                    "PublishMode": "ingress"
                }]
            }
        })
    );

    assert_eq!(s.networks.len(), 1);
    assert_eq!(
        json_of(&s.networks["getstartedlab_webnet"]),
        json!({
            "Name": "getstartedlab_webnet",
            "Driver": "overlay",
            "Labels": {"com.docker.stack.namespace": "getstartedlab"}
        })
    );
    assert!(s.external_networks.is_empty());
    assert!(s.secrets.is_empty());
    assert!(s.configs.is_empty());
}

#[test]
fn service_without_networks_joins_the_default_network() {
    let s = stack(
        "services:\n  web:\n    image: nginx\n  db:\n    image: redis\n    networks: [back]\nnetworks:\n  back: {}\n  unused: {}\n",
        &[],
        &[],
    );
    let nets: Vec<&String> = s.networks.keys().collect();
    assert_eq!(nets, ["st_back", "st_default"]);
    assert_eq!(
        s.services["db"].field("TaskTemplate.Networks"),
        json!([{"Target": "st_back", "Aliases": ["db"]}])
    );
}

// serde_json indexing helper for ServiceSpec (keeps the tests short).
trait Field {
    fn field(&self, path: &str) -> Json;
}

impl Field for bollard_stubs::models::ServiceSpec {
    fn field(&self, path: &str) -> Json {
        let mut v = json_of(self);
        for p in path.split('.') {
            v = match p.parse::<usize>() {
                Ok(i) => v.get(i).cloned().unwrap_or(Json::Null),
                Err(_) => v.get(p).cloned().unwrap_or(Json::Null),
            };
        }
        v
    }
}

#[test]
fn default_network_spec() {
    let s = stack("services:\n  web:\n    image: nginx\n", &[], &[]);
    assert_eq!(
        json_of(&s.networks["st_default"]),
        json!({
            "Name": "st_default",
            "Driver": "overlay",
            "Labels": {"com.docker.stack.namespace": "st"}
        })
    );
    assert_eq!(
        s.services["web"].field("TaskTemplate.Networks"),
        json!([{"Target": "st_default", "Aliases": ["web"]}])
    );
    // No ports, no endpoint mode: an empty endpoint spec, as docker sends.
    assert_eq!(s.services["web"].field("EndpointSpec"), json!({}));
    assert_eq!(s.services["web"].field("Mode"), json!({"Replicated": {}}));
}

const FULL: &str = r#"
version: "3.9"
services:
  api:
    image: example/api:1.2
    command: python app.py --name 'my api'
    entrypoint: ["/sbin/tini", "--"]
    environment:
      - DEBUG=1
      - FROM_SHELL
      - UNSET_VAR
    env_file:
      - ./common.env
      - path: ./missing.env
        required: false
    labels:
      - com.example.team=core
      - com.example.flag
    hostname: api-host
    user: "1000:1000"
    working_dir: /srv
    stop_grace_period: 1m30s
    stop_signal: SIGINT
    init: true
    read_only: true
    tty: true
    stdin_open: true
    dns: 8.8.8.8
    dns_search: [example.com]
    extra_hosts:
      - "db.local:10.0.0.5"
      - "cache.local=10.0.0.6"
    cap_add: [net_admin]
    cap_drop: [ALL]
    sysctls:
      net.core.somaxconn: 1024
    ulimits:
      nproc: 65535
      nofile:
        soft: 20000
        hard: 40000
    healthcheck:
      test: curl -f http://localhost/health
      interval: 30s
      timeout: 5s
      retries: 3
      start_period: 1m
    logging:
      driver: json-file
      options:
        max-size: 10m
    ports:
      - "8000-8001:80-81"
      - "53:53/udp"
      - "9090"
      - target: 443
        published: 8443
        protocol: tcp
        mode: host
    networks:
      front:
        aliases: [api-alias]
      outside:
    secrets:
      - db_password
      - source: tls_key
        target: server.key
        uid: "103"
        gid: "103"
        mode: 0400
    configs:
      - source: app_conf
        target: /etc/app.conf
      - external_conf
    volumes:
      - data:/var/lib/data:ro
      - ./conf:/etc/conf:ro
      - /cache
      - type: volume
        source: data
        target: /nocopy
        volume:
          nocopy: true
      - type: tmpfs
        target: /scratch
        tmpfs:
          size: 64M
      - type: bind
        source: /var/run/docker.sock
        target: /var/run/docker.sock
        bind:
          propagation: rslave
    tmpfs:
      - /run
      - /tmp:size=16m
    deploy:
      mode: replicated
      replicas: 2
      endpoint_mode: vip
      labels:
        com.example.tier: backend
      resources:
        limits:
          cpus: "1.5"
          memory: 1G
          pids: 100
        reservations:
          cpus: 0.25
          memory: 256M
      restart_policy:
        condition: any
        delay: 5s
        max_attempts: 3
        window: 2m
      placement:
        constraints: [node.role == worker]
        preferences:
          - spread: node.labels.zone
        max_replicas_per_node: 1
      update_config:
        parallelism: 2
        delay: 10s
        failure_action: rollback
        monitor: 30s
        max_failure_ratio: 0.3
        order: start-first
      rollback_config:
        parallelism: 0
        failure_action: pause
        order: stop-first
  agent:
    image: example/agent
    deploy:
      mode: global
      endpoint_mode: dnsrr
    healthcheck:
      disable: true
  migrate:
    image: example/migrate
    restart: on-failure:3
    deploy:
      mode: replicated-job
      replicas: 3
  sweep:
    image: example/sweep
    deploy:
      mode: global-job
networks:
  front:
    driver_opts:
      encrypted: ""
    attachable: true
    labels:
      com.example.net: front
    ipam:
      config:
        - subnet: 10.20.0.0/24
  outside:
    external: true
    name: host-net
volumes:
  data:
    driver: local
    labels:
      com.example.vol: data
secrets:
  db_password:
    file: ./db_password.txt
  tls_key:
    environment: TLS_KEY
  ext_secret:
    external: true
  named:
    name: shared_named_secret
    file: ./named.txt
configs:
  app_conf:
    file: /etc/shoal/app.conf
    labels: [com.example.cfg=1]
  external_conf:
    external: true
    name: prod_conf
"#;

fn full() -> Stack {
    stack(
        FULL,
        &[
            (
                "/home/me/app/common.env",
                "# comment\nCOMMON=yes\nDEBUG=0\n\nFROM_FILE_SHELL\n",
            ),
            ("/home/me/app/db_password.txt", "s3cret"),
            ("/home/me/app/named.txt", "named"),
            ("/etc/shoal/app.conf", "key=value\n"),
        ],
        &[
            ("FROM_SHELL", "shell-value"),
            ("FROM_FILE_SHELL", "from-file-shell"),
            ("TLS_KEY", "-----KEY-----"),
        ],
    )
}

#[test]
fn full_service_converts_every_field() {
    let s = full();
    let api = &s.services["api"];
    assert_json_eq(
        &json_of(api),
        &json!({
            "Name": "st_api",
            "Labels": {
                "com.docker.stack.image": "example/api:1.2",
                "com.docker.stack.namespace": "st",
                "com.example.tier": "backend"
            },
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": "example/api:1.2",
                    "Labels": {
                        "com.docker.stack.namespace": "st",
                        "com.example.flag": "",
                        "com.example.team": "core"
                    },
                    "Command": ["/sbin/tini", "--"],
                    "Args": ["python", "app.py", "--name", "my api"],
                    "Hostname": "api-host",
                    "Env": [
                        "COMMON=yes",
                        "DEBUG=1",
                        "FROM_FILE_SHELL=from-file-shell",
                        "FROM_SHELL=shell-value",
                        "UNSET_VAR"
                    ],
                    "Dir": "/srv",
                    "User": "1000:1000",
                    "Privileges": {"NoNewPrivileges": false},
                    "TTY": true,
                    "OpenStdin": true,
                    "ReadOnly": true,
                    "Mounts": [
                        {
                            "Type": "volume",
                            "Source": "st_data",
                            "Target": "/var/lib/data",
                            "ReadOnly": true,
                            "VolumeOptions": {
                                "Labels": {
                                    "com.docker.stack.namespace": "st",
                                    "com.example.vol": "data"
                                },
                                "DriverConfig": {"Name": "local"}
                            }
                        },
                        {
                            "Type": "bind",
                            "Source": "/home/me/app/conf",
                            "Target": "/etc/conf",
                            "ReadOnly": true
                        },
                        {"Type": "volume", "Target": "/cache"},
                        {
                            "Type": "volume",
                            "Source": "st_data",
                            "Target": "/nocopy",
                            "VolumeOptions": {
                                "NoCopy": true,
                                "Labels": {
                                    "com.docker.stack.namespace": "st",
                                    "com.example.vol": "data"
                                },
                                "DriverConfig": {"Name": "local"}
                            }
                        },
                        {
                            "Type": "tmpfs",
                            "Target": "/scratch",
                            "TmpfsOptions": {"SizeBytes": 67_108_864}
                        },
                        {
                            "Type": "bind",
                            "Source": "/var/run/docker.sock",
                            "Target": "/var/run/docker.sock",
                            "BindOptions": {"Propagation": "rslave"}
                        },
                        {"Type": "tmpfs", "Target": "/run"},
                        {
                            "Type": "tmpfs",
                            "Target": "/tmp",
                            "TmpfsOptions": {"SizeBytes": 16_777_216}
                        }
                    ],
                    "StopSignal": "SIGINT",
                    "StopGracePeriod": 90_000_000_000_i64,
                    "HealthCheck": {
                        "Test": ["CMD-SHELL", "curl -f http://localhost/health"],
                        "Interval": 30_000_000_000_i64,
                        "Timeout": 5_000_000_000_i64,
                        "Retries": 3,
                        "StartPeriod": 60_000_000_000_i64
                    },
                    "Hosts": ["10.0.0.5 db.local", "10.0.0.6 cache.local"],
                    "DNSConfig": {"Nameservers": ["8.8.8.8"], "Search": ["example.com"]},
                    "Secrets": [
                        {
                            "File": {"Name": "db_password", "UID": "0", "GID": "0", "Mode": 292},
                            "SecretName": "st_db_password"
                        },
                        {
                            "File": {"Name": "server.key", "UID": "103", "GID": "103", "Mode": 0o400},
                            "SecretName": "st_tls_key"
                        }
                    ],
                    "Configs": [
                        {
                            "File": {"Name": "external_conf", "UID": "0", "GID": "0", "Mode": 292},
                            "ConfigName": "prod_conf"
                        },
                        {
                            "File": {"Name": "/etc/app.conf", "UID": "0", "GID": "0", "Mode": 292},
                            "ConfigName": "st_app_conf"
                        }
                    ],
                    "Init": true,
                    "Sysctls": {"net.core.somaxconn": "1024"},
                    "CapabilityAdd": ["CAP_NET_ADMIN"],
                    "CapabilityDrop": ["ALL"],
                    "Ulimits": [
                        {"Name": "nofile", "Soft": 20000, "Hard": 40000},
                        {"Name": "nproc", "Soft": 65535, "Hard": 65535}
                    ]
                },
                "Resources": {
                    "Limits": {
                        "NanoCPUs": 1_500_000_000,
                        "MemoryBytes": 1_073_741_824,
                        "Pids": 100
                    },
                    "Reservations": {"NanoCPUs": 250_000_000, "MemoryBytes": 268_435_456}
                },
                "RestartPolicy": {
                    "Condition": "any",
                    "Delay": 5_000_000_000_i64,
                    "MaxAttempts": 3,
                    "Window": 120_000_000_000_i64
                },
                "Placement": {
                    "Constraints": ["node.role == worker"],
                    "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}],
                    "MaxReplicas": 1
                },
                "Networks": [
                    {"Target": "host-net", "Aliases": ["api"]},
                    {"Target": "st_front", "Aliases": ["api-alias", "api"]}
                ],
                "LogDriver": {"Name": "json-file", "Options": {"max-size": "10m"}}
            },
            "Mode": {"Replicated": {"Replicas": 2}},
            "UpdateConfig": {
                "Parallelism": 2,
                "Delay": 10_000_000_000_i64,
                "FailureAction": "rollback",
                "Monitor": 30_000_000_000_i64,
                "MaxFailureRatio": 0.3,
                "Order": "start-first"
            },
            "RollbackConfig": {
                "Parallelism": 0,
                "FailureAction": "pause",
                "MaxFailureRatio": 0.0,
                "Order": "stop-first"
            },
            "EndpointSpec": {
                "Mode": "vip",
                "Ports": [
                    {"Protocol": "tcp", "TargetPort": 9090, "PublishMode": "ingress"},
                    {"Protocol": "udp", "TargetPort": 53, "PublishedPort": 53, "PublishMode": "ingress"},
                    {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8000, "PublishMode": "ingress"},
                    {"Protocol": "tcp", "TargetPort": 81, "PublishedPort": 8001, "PublishMode": "ingress"},
                    {"Protocol": "tcp", "TargetPort": 443, "PublishedPort": 8443, "PublishMode": "host"}
                ]
            }
        }),
    );
}

#[test]
fn modes_healthcheck_disable_and_legacy_restart() {
    let s = full();
    let agent = &s.services["agent"];
    assert_eq!(agent.field("Mode"), json!({"Global": {}}));
    assert_eq!(agent.field("EndpointSpec"), json!({"Mode": "dnsrr"}));
    assert_eq!(
        agent.field("TaskTemplate.ContainerSpec.HealthCheck"),
        json!({"Test": ["NONE"]})
    );
    let migrate = &s.services["migrate"];
    assert_eq!(
        migrate.field("Mode"),
        json!({"ReplicatedJob": {"MaxConcurrent": 3, "TotalCompletions": 3}})
    );
    assert_eq!(
        migrate.field("TaskTemplate.RestartPolicy"),
        json!({"Condition": "on-failure", "MaxAttempts": 3})
    );
    assert_eq!(s.services["sweep"].field("Mode"), json!({"GlobalJob": {}}));
}

#[test]
fn full_file_networks_secrets_and_configs() {
    let s = full();
    // Only networks the services use are created; external ones are only checked.
    let names: Vec<&String> = s.networks.keys().collect();
    assert_eq!(names, ["st_default", "st_front"]);
    assert_eq!(
        json_of(&s.networks["st_front"]),
        json!({
            "Name": "st_front",
            "Driver": "overlay",
            "Attachable": true,
            "IPAM": {"Config": [{"Subnet": "10.20.0.0/24"}]},
            "Options": {"encrypted": ""},
            "Labels": {"com.docker.stack.namespace": "st", "com.example.net": "front"}
        })
    );
    assert_eq!(s.external_networks, ["host-net"]);

    // Secrets: every declared non-external one, data base64-encoded.
    assert_eq!(
        json_of(&s.secrets),
        json!([
            {
                "Name": "shared_named_secret",
                "Labels": {"com.docker.stack.namespace": "st"},
                "Data": "bmFtZWQ="
            },
            {
                "Name": "st_db_password",
                "Labels": {"com.docker.stack.namespace": "st"},
                "Data": "czNjcmV0"
            },
            {
                "Name": "st_tls_key",
                "Labels": {"com.docker.stack.namespace": "st"},
                "Data": "LS0tLS1LRVktLS0tLQ=="
            }
        ])
    );
    assert!(s.external_secrets.is_empty(), "ext_secret is not used");
    assert_eq!(
        json_of(&s.configs),
        json!([{
            "Name": "st_app_conf",
            "Labels": {"com.docker.stack.namespace": "st", "com.example.cfg": "1"},
            "Data": "a2V5PXZhbHVlCg=="
        }])
    );
    assert_eq!(s.external_configs, ["prod_conf"]);
}

#[test]
fn unsupported_options_are_listed_like_docker() {
    let f = model(
        "services:\n  web:\n    image: nginx\n    build: .\n    depends_on: [db]\n    network_mode: host\n    restart: always\n  db:\n    image: redis\n    links: [web]\n    privileged: true\n",
    );
    assert_eq!(
        f.unsupported(),
        ["build", "links", "network_mode", "privileged", "restart"]
    );
    assert_eq!(
        f.warnings(),
        "Ignoring unsupported options: build, links, network_mode, privileged, restart\n\n"
    );
    // `restart` is still used, as docker does, when deploy.restart_policy is absent.
    let s = convert("st", &f, &ctx(&[], &[])).expect("convert");
    assert_eq!(
        s.services["web"].field("TaskTemplate.RestartPolicy"),
        json!({"Condition": "any"})
    );
}

#[test]
fn undefined_references_name_the_service() {
    assert_eq!(
        convert_err("services:\n  web:\n    image: nginx\n    networks: [webnet]\n"),
        "service web: undefined network \"webnet\""
    );
    assert_eq!(
        convert_err("services:\n  web:\n    image: nginx\n    secrets: [pw]\n"),
        "service web: undefined secret \"pw\""
    );
    assert_eq!(
        convert_err("services:\n  web:\n    image: nginx\n    configs: [cfg]\n"),
        "service web: undefined config \"cfg\""
    );
    assert_eq!(
        convert_err("services:\n  web:\n    image: nginx\n    volumes: [\"data:/data\"]\n"),
        "service web: undefined volume \"data\""
    );
}

#[test]
fn bad_values_are_reported_with_the_service() {
    assert_eq!(
        convert_err("services:\n  web:\n    image: nginx\n    deploy:\n      resources:\n        limits:\n          cpus: lots\n"),
        "service web: failed to parse lots as a rational number"
    );
    assert_eq!(
        convert_err("services:\n  web:\n    image: nginx\n    deploy:\n      mode: global\n      replicas: 2\n"),
        "service web: replicas can only be used with replicated or replicated-job mode"
    );
    assert_eq!(
        convert_err("services:\n  web:\n    image: nginx\n    deploy:\n      mode: sometimes\n"),
        "service web: unknown mode: sometimes"
    );
    assert_eq!(
        convert_err("services:\n  web:\n    image: nginx\n    healthcheck:\n      test: [\"CMD\", \"true\"]\n      disable: true\n"),
        "service web: test and disable can't be set at the same time"
    );
    assert!(
        convert_err("services:\n  web:\n    image: nginx\n    deploy:\n      update_config:\n        order: sideways\n")
            .starts_with("service web: invalid update_config order \"sideways\"")
    );
    assert!(convert_err(
        "services:\n  web:\n    image: nginx\n    deploy:\n      restart_policy:\n        condition: sometimes\n"
    )
    .starts_with("service web: invalid restart policy condition"));
    assert_eq!(
        convert_err("services:\n  web:\n    command: [x]\n"),
        "service web: no image specified"
    );
}

#[test]
fn secret_and_config_sources_must_be_readable() {
    let f = model("services: {}\nsecrets:\n  pw:\n    file: ./pw.txt\n");
    let e = convert("st", &f, &ctx(&[], &[])).unwrap_err();
    assert_eq!(
        e,
        ConvertError::Secret {
            name: "pw".into(),
            message: "open /home/me/app/pw.txt: no such file or directory".into()
        }
    );
    let f = model("services: {}\nconfigs:\n  c:\n    environment: NOPE\n");
    let e = convert("st", &f, &ctx(&[], &[])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "config c: environment variable \"NOPE\" is not set"
    );
    let f = model("services:\n  web:\n    image: x\n    env_file: missing.env\n");
    let e = convert("st", &f, &ctx(&[], &[])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "service web: open /home/me/app/missing.env: no such file or directory"
    );
}

#[test]
fn model_errors_carry_the_key_path() {
    let parse = |y: &str| {
        let v: serde_yaml::Value = serde_yaml::from_str(y).expect("yaml");
        ComposeFile::from_value(&v).expect_err("model error")
    };
    let e = parse("services:\n  web:\n    image: x\n    ports:\n      - \"80:abc\"\n");
    assert_eq!(e.path, ["services", "web", "ports", "0"]);
    assert_eq!(e.message, "invalid containerPort: abc");
    let e = parse("services:\n  web:\n    image: x\n    stop_grace_period: soon\n");
    assert_eq!(e.path, ["services", "web", "stop_grace_period"]);
    assert_eq!(e.message, "time: invalid duration \"soon\"");
    let e = parse("services:\n  web:\n    image: x\n    deploy:\n      resources:\n        limits:\n          memory: lots\n");
    assert_eq!(
        e.path,
        ["services", "web", "deploy", "resources", "limits", "memory"]
    );
    assert_eq!(e.message, "invalid size: 'lots'");
    let e = parse("services:\n  web:\n    image: x\n    tty: maybe\n");
    assert_eq!(e.path, ["services", "web", "tty"]);
    assert_eq!(
        e.message,
        "invalid type: string \"maybe\", expected a boolean"
    );
    let e = parse(
        "services:\n  web:\n    image: x\n    ports:\n      - target: 80\n        bogus: 1\n",
    );
    assert_eq!(e.path, ["services", "web", "ports", "0"]);
    assert_eq!(e.message, "Additional property bogus is not allowed");
    let e = parse("services:\n  web:\n    image: x\nnetworks:\n  n:\n    drivr: overlay\n");
    assert_eq!(e.path, ["networks", "n"]);
    assert_eq!(e.message, "Additional property drivr is not allowed");
    let e = parse("services:\n  web:\n    image: x\n    environment: 5\n");
    assert_eq!(e.path, ["services", "web", "environment"]);
    assert_eq!(
        e.message,
        "invalid type: integer `5`, expected a map or a list of KEY=VALUE strings"
    );
}

#[test]
fn environment_map_and_compose_spec_options() {
    let f = model(
        "services:\n  web:\n    image: nginx\n    pull_policy: always\n    profiles: [debug]\n    environment:\n      PORT: 8080\n      ENABLED: true\n      FROM_SHELL:\n      EMPTY: \"\"\n    entrypoint: /bin/sh -c 'exec nginx'\n",
    );
    assert_eq!(f.unsupported(), ["profiles", "pull_policy"]);
    let s = convert("st", &f, &ctx(&[], &[("FROM_SHELL", "x")])).expect("convert");
    let web = &s.services["web"];
    assert_eq!(
        web.field("TaskTemplate.ContainerSpec.Env"),
        json!(["EMPTY=", "ENABLED=true", "FROM_SHELL=x", "PORT=8080"])
    );
    assert_eq!(
        web.field("TaskTemplate.ContainerSpec.Command"),
        json!(["/bin/sh", "-c", "exec nginx"])
    );
    assert_eq!(web.field("TaskTemplate.ContainerSpec.Args"), Json::Null);
    assert_eq!(
        web.field("TaskTemplate.ContainerSpec.Isolation"),
        Json::Null
    );

    let s = stack(
        "services:\n  web:\n    image: nginx\n    isolation: process\n    oom_score_adj: -500\n",
        &[],
        &[],
    );
    assert_eq!(
        s.services["web"].field("TaskTemplate.ContainerSpec.Isolation"),
        json!("process")
    );
    assert_eq!(
        s.services["web"].field("TaskTemplate.ContainerSpec.OomScoreAdj"),
        json!(-500)
    );
}
