//! Route tests: requests through the whole router (version middleware included) against a
//! [`MockBackend`], checking statuses, headers and Docker's texts.

use crate::backend::{LocalNodeState, SwarmBackend, SwarmStatus};
use crate::error::{MSG_ALREADY_IN_SWARM, MSG_NOT_IN_SWARM, MSG_WORKER};
use crate::router;
use crate::testing::MockBackend;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use chrono::TimeZone;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use shoal_agent::runtime::{LogLine, LogStream};
use shoal_api::{Meta, Object, Task, TaskState, TaskStatus};
use std::sync::Arc;
use tower::ServiceExt;

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn message(&self) -> String {
        self.json()["message"].as_str().unwrap_or("").to_string()
    }
    fn header(&self, k: &str) -> &str {
        self.headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn send(app: &Router, req: Request<Body>) -> Resp {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    Resp {
        status,
        headers,
        body,
    }
}

async fn call(app: &Router, method: &str, uri: &str, body: Option<Value>) -> Resp {
    let mut b = Request::builder().method(method).uri(uri);
    let body = match body {
        Some(v) => {
            b = b.header("Content-Type", "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    send(app, b.body(body).expect("request")).await
}

async fn raw(app: &Router, method: &str, uri: &str, ct: &str, body: &str) -> Resp {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("Content-Type", ct)
        .body(Body::from(body.to_string()))
        .expect("request");
    send(app, req).await
}

async fn swarm() -> (Arc<MockBackend>, Router) {
    let b = MockBackend::initialized().await;
    let app = router(b.clone());
    (b, app)
}

fn service_spec(name: &str, replicas: i64) -> Value {
    json!({
        "Name": name,
        "Labels": {"com.docker.stack.namespace": "demo", "tier": "web"},
        "TaskTemplate": {
            "ContainerSpec": {"Image": "nginx:latest", "Args": ["-g", "daemon off;"], "Env": ["A=1"]},
            "RestartPolicy": {"Condition": "on-failure", "MaxAttempts": 3},
            "Placement": {"Constraints": ["node.role==manager"]}
        },
        "Mode": {"Replicated": {"Replicas": replicas}},
        "UpdateConfig": {"Parallelism": 2, "Delay": 1000000000, "FailureAction": "rollback", "Order": "start-first"},
        "EndpointSpec": {"Mode": "vip", "Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}]}
    })
}

async fn create(app: &Router, spec: Value) -> String {
    let r = call(app, "POST", "/v1.51/services/create", Some(spec)).await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()["ID"].as_str().unwrap_or_default().to_string()
}

fn task(
    id: &str,
    service_id: &str,
    slot: u64,
    node: &str,
    state: TaskState,
    spec_version: u64,
) -> Task {
    Task {
        id: id.into(),
        meta: Meta::new_now(),
        service_id: service_id.into(),
        service_name: "web".into(),
        slot,
        node_id: Some(node.into()),
        spec: Default::default(),
        spec_version,
        desired_state: TaskState::Running,
        status: TaskStatus::new(state, state.as_str()),
        labels: Default::default(),
        job_iteration: None,
        service_labels: None,
        networks: Vec::new(),
    }
}

#[tokio::test]
async fn ping_reports_versions_and_swarm_state() {
    let b = Arc::new(MockBackend::new());
    let app = router(b.clone());
    for (method, uri) in [
        ("GET", "/_ping"),
        ("HEAD", "/_ping"),
        ("GET", "/v1.45/_ping"),
    ] {
        let r = call(&app, method, uri, None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("Api-Version"), "1.51");
        assert_eq!(r.header("Ostype"), "linux");
        assert_eq!(r.header("Docker-Experimental"), "false");
        assert_eq!(
            r.header("Cache-Control"),
            "no-cache, no-store, must-revalidate"
        );
        assert_eq!(r.header("Pragma"), "no-cache");
        assert_eq!(r.header("Swarm"), "inactive");
        if method == "GET" {
            assert_eq!(r.body, b"OK");
        } else {
            assert!(r.body.is_empty());
        }
    }
    b.init(Default::default()).await.unwrap();
    assert_eq!(
        call(&app, "HEAD", "/_ping", None).await.header("Swarm"),
        "active/manager"
    );
    let mut s = b.status();
    s.control_available = false;
    b.set_status(s.clone());
    assert_eq!(
        call(&app, "GET", "/_ping", None).await.header("Swarm"),
        "active/worker"
    );
    s.state = LocalNodeState::Locked;
    b.set_status(s);
    assert_eq!(
        call(&app, "GET", "/_ping", None).await.header("Swarm"),
        "locked"
    );
}

#[tokio::test]
async fn version_prefix_is_optional_and_bounded() {
    let (_b, app) = swarm().await;
    let r = call(&app, "GET", "/version", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["ApiVersion"], "1.51");
    assert_eq!(r.json()["MinAPIVersion"], "1.24");
    assert_eq!(r.json()["Arch"], "amd64");
    assert_eq!(
        call(&app, "GET", "/v1.51/version", None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, "GET", "/v1.24/services", None).await.status,
        StatusCode::OK
    );

    let r = call(&app, "GET", "/v1.52/info", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.header("Content-Type"), "application/json");
    assert_eq!(
        r.message(),
        "client version 1.52 is too new. Maximum supported API version is 1.51"
    );
    let r = call(&app, "GET", "/v1.23/info", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&r.body)
        .starts_with("client version 1.23 is too old. Minimum supported API version is 1.24"));

    let r = call(&app, "GET", "/v1.51/nope", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.message(), "page not found");
    let r = call(&app, "PUT", "/services", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.header("Api-Version"), "1.51");
}

#[tokio::test]
async fn not_in_swarm_and_worker_get_503() {
    let b = Arc::new(MockBackend::new());
    let app = router(b.clone());
    for uri in [
        "/swarm",
        "/v1.51/nodes",
        "/services",
        "/tasks",
        "/services/x",
    ] {
        let r = call(&app, "GET", uri, None).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert_eq!(r.message(), MSG_NOT_IN_SWARM);
    }
    let r = call(&app, "POST", "/swarm/leave", None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.message(), "This node is not part of a swarm");

    let r = call(
        &app,
        "POST",
        "/swarm/join",
        Some(json!({"RemoteAddrs": ["10.1.1.1:2377"], "JoinToken": "SWMTKN-1-x-y"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = call(&app, "GET", "/swarm", None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.message(), MSG_WORKER);
    let r = call(
        &app,
        "POST",
        "/swarm/join",
        Some(json!({"RemoteAddrs": ["10.1.1.1:2377"]})),
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.message(), MSG_ALREADY_IN_SWARM);
    let info = call(&app, "GET", "/info", None).await.json();
    assert_eq!(info["Swarm"]["LocalNodeState"], "active");
    assert_eq!(info["Swarm"]["ControlAvailable"], false);
}

#[tokio::test]
async fn init_returns_node_id_and_refuses_twice() {
    let b = Arc::new(MockBackend::new());
    let app = router(b.clone());
    let r = call(
        &app,
        "POST",
        "/v1.51/swarm/init",
        Some(json!({"ListenAddr": "0.0.0.0:2377", "AdvertiseAddr": "192.0.2.10"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let id = r.json().as_str().unwrap_or_default().to_string();
    assert_eq!(id, b.node_id());
    let r = call(&app, "POST", "/swarm/init", Some(json!({}))).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.message(), MSG_ALREADY_IN_SWARM);

    let node = call(&app, "GET", &format!("/nodes/{id}"), None)
        .await
        .json();
    assert_eq!(node["ID"], id.as_str());
    assert_eq!(node["ManagerStatus"]["Leader"], true);
    assert_eq!(node["ManagerStatus"]["Addr"], "192.0.2.10:2377");
    assert_eq!(node["Status"]["State"], "ready");
    assert_eq!(node["Spec"]["Role"], "manager");
    assert!(node["Version"]["Index"].as_u64().unwrap_or(0) > 0);

    let sw = call(&app, "GET", "/swarm", None).await.json();
    assert!(sw["JoinTokens"]["Worker"]
        .as_str()
        .unwrap_or("")
        .starts_with("SWMTKN-1-"));
    assert!(sw["CreatedAt"].as_str().unwrap_or("").ends_with('Z'));

    let info = call(&app, "GET", "/info", None).await.json();
    let s = &info["Swarm"];
    assert_eq!(s["NodeID"], id.as_str());
    assert_eq!(s["LocalNodeState"], "active");
    assert_eq!(s["ControlAvailable"], true);
    assert_eq!(s["Nodes"], 1);
    assert_eq!(s["Managers"], 1);
    assert_eq!(s["Cluster"]["ID"], sw["ID"]);
    assert!(s["Cluster"].get("JoinTokens").is_none());
    assert_eq!(info["NCPU"], 2);
}

#[tokio::test]
async fn create_then_inspect_round_trips_the_spec() {
    let (_b, app) = swarm().await;
    let spec = service_spec("web", 3);
    let r = call(&app, "POST", "/services/create", Some(spec.clone())).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json()["Warnings"], json!([]));
    let id = r.json()["ID"].as_str().unwrap_or_default().to_string();
    assert_eq!(id.len(), 25);

    let mut expected = spec.clone();
    expected["TaskTemplate"]["ForceUpdate"] = json!(0);
    for uri in [
        format!("/services/{id}"),
        "/v1.51/services/web".to_string(),
        format!("/services/{}", &id[..6]),
    ] {
        let got = call(&app, "GET", &uri, None).await;
        assert_eq!(got.status, StatusCode::OK);
        let v = got.json();
        assert_eq!(v["Spec"], expected, "{uri}");
        assert_eq!(v["ID"], id.as_str());
        assert!(v["Version"]["Index"].as_u64().unwrap_or(0) > 0);
        assert!(v.get("PreviousSpec").is_none());
        assert_eq!(v["Endpoint"]["Spec"], spec["EndpointSpec"]);
    }

    let dup = call(
        &app,
        "POST",
        "/services/create",
        Some(service_spec("web", 1)),
    )
    .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert_eq!(
        dup.message(),
        "name conflicts with an existing object: service web already exists"
    );
}

#[tokio::test]
async fn insert_defaults_fills_swarmkit_defaults() {
    let (_b, app) = swarm().await;
    let id = create(
        &app,
        json!({"Name": "d", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}}),
    )
    .await;
    let plain = call(&app, "GET", &format!("/services/{id}"), None)
        .await
        .json();
    assert!(plain["Spec"].get("UpdateConfig").is_none());
    let v = call(
        &app,
        "GET",
        &format!("/services/{id}?insertDefaults=true"),
        None,
    )
    .await
    .json();
    assert_eq!(v["Spec"]["UpdateConfig"]["Parallelism"], 1);
    assert_eq!(v["Spec"]["UpdateConfig"]["Monitor"], 5_000_000_000i64);
    assert_eq!(v["Spec"]["RollbackConfig"]["FailureAction"], "pause");
    assert_eq!(
        v["Spec"]["TaskTemplate"]["RestartPolicy"]["Condition"],
        "any"
    );
    assert_eq!(
        v["Spec"]["TaskTemplate"]["ContainerSpec"]["StopGracePeriod"],
        10_000_000_000i64
    );
    let bad = call(
        &app,
        "GET",
        &format!("/services/{id}?insertDefaults=maybe"),
        None,
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn invalid_bodies_and_specs_are_400() {
    let (b, app) = swarm().await;
    let r = raw(
        &app,
        "POST",
        "/services/create",
        "application/json",
        "{\"Name\": ",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.message().starts_with("invalid JSON"), "{}", r.message());
    let r = raw(
        &app,
        "POST",
        "/services/create",
        "application/json",
        "{\"Name\": 5}",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.message().starts_with("invalid JSON: "), "{}", r.message());
    let r = raw(
        &app,
        "POST",
        "/services/create",
        "application/json",
        "{} {}",
    )
    .await;
    assert_eq!(r.message(), "unexpected content after JSON");
    let r = raw(&app, "POST", "/services/create", "text/plain", "{}").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.message(),
        "unsupported Content-Type header (text/plain): must be 'application/json'"
    );

    let r = call(
        &app,
        "POST",
        "/services/create",
        Some(service_spec("neg", -1)),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.message(), "Number of replicas must be non-negative");

    let mut bad = service_spec("badc", 1);
    bad["TaskTemplate"]["Placement"]["Constraints"] = json!(["node.role=manager"]);
    let r = call(&app, "POST", "/services/create", Some(bad)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.message(), "constraint expected one operator from ==, !=");

    let mut bad = service_spec("badv", 1);
    bad["TaskTemplate"]["Placement"]["Constraints"] = json!(["node.labels.zone==a<b"]);
    let r = call(&app, "POST", "/services/create", Some(bad)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.message(), "value 'a<b' is invalid");

    let r = call(
        &app,
        "POST",
        "/services/create",
        Some(json!({"Name": "noimg", "TaskTemplate": {"ContainerSpec": {}}})),
    )
    .await;
    assert_eq!(
        r.message(),
        "ContainerSpec: image reference must be provided"
    );
    let r = call(&app, "POST", "/services/create", Some(json!({"Name": "x", "TaskTemplate": {"ContainerSpec": {"Image": "a"}}, "Mode": {"Replicated": {}, "Global": {}}}))).await;
    assert_eq!(r.message(), "must specify only one service mode");
    assert!(b.store().view(|s| s.services.is_empty()));
}

#[tokio::test]
async fn update_with_stale_version_is_out_of_sequence() {
    let (b, app) = swarm().await;
    let id = create(&app, service_spec("web", 1)).await;
    let v1 = call(&app, "GET", &format!("/services/{id}"), None)
        .await
        .json()["Version"]["Index"]
        .as_u64()
        .unwrap_or(0);

    let r = call(
        &app,
        "POST",
        &format!("/services/{id}/update?version={v1}"),
        Some(service_spec("web", 4)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"Warnings": []}));
    let after = b.store().view(|s| s.services[&id].clone());
    assert_eq!(
        after
            .spec
            .mode
            .as_ref()
            .and_then(|m| m.replicated.as_ref())
            .and_then(|r| r.replicas),
        Some(4)
    );

    let mut changed = service_spec("web", 9);
    changed["TaskTemplate"]["ContainerSpec"]["Image"] = json!("nginx:2");
    let r = call(
        &app,
        "POST",
        &format!("/v1.51/services/web/update?version={v1}"),
        Some(changed),
    )
    .await;
    assert!(
        r.message().ends_with("update out of sequence"),
        "{}",
        r.message()
    );
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(b.store().view(|s| s.services[&id].clone()), after);

    let v = call(&app, "GET", &format!("/services/{id}"), None)
        .await
        .json();
    assert_eq!(v["PreviousSpec"]["Mode"]["Replicated"]["Replicas"], 1);

    let r = call(
        &app,
        "POST",
        &format!("/services/{id}/update?version=abc"),
        Some(service_spec("web", 1)),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.message(),
        "invalid service version 'abc': strconv.ParseUint: parsing \"abc\": invalid syntax"
    );
    let r = call(
        &app,
        "POST",
        &format!(
            "/services/{id}/update?version={}&rollback=sideways",
            after.meta.version
        ),
        Some(service_spec("web", 1)),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Rollback restores the previous spec.
    let r = call(
        &app,
        "POST",
        &format!(
            "/services/{id}/update?version={}&rollback=previous",
            after.meta.version
        ),
        Some(service_spec("web", 4)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.message());
    let v = call(&app, "GET", &format!("/services/{id}"), None)
        .await
        .json();
    assert_eq!(v["Spec"]["Mode"]["Replicated"]["Replicas"], 1);
    assert_eq!(v["UpdateStatus"]["State"], "rollback_started");
}

#[tokio::test]
async fn unknown_objects_are_404_with_docker_texts() {
    let (_b, app) = swarm().await;
    for (uri, msg) in [
        ("/services/nope", "service nope not found"),
        ("/v1.51/nodes/nope", "node nope not found"),
        ("/tasks/nope", "task nope not found"),
        ("/services/nope/logs?stdout=1", "service nope not found"),
    ] {
        let r = call(&app, "GET", uri, None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(r.message(), msg);
        assert_eq!(r.header("Content-Type"), "application/json");
    }
    let r = call(&app, "DELETE", "/services/nope", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = call(
        &app,
        "POST",
        "/services/nope/update?version=1",
        Some(service_spec("nope", 1)),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = call(
        &app,
        "GET",
        "/tasks?filters=%7B%22service%22%3A%5B%22nope%22%5D%7D",
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn service_filters_and_status() {
    let (b, app) = swarm().await;
    let web = create(&app, service_spec("web", 2)).await;
    let mut api = service_spec("api", 1);
    api["Labels"] = json!({"tier": "backend"});
    api["EndpointSpec"] = json!({});
    let api_id = create(&app, api).await;
    let _glob = create(&app, json!({"Name": "agent", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}, "Mode": {"Global": {}}})).await;

    let list = |q: &'static str| {
        let app = app.clone();
        async move {
            let r = call(
                &app,
                "GET",
                &format!("/services?filters={}", urlencoding::encode(q)),
                None,
            )
            .await;
            (r.status, r.json())
        }
    };
    let names = |v: &Value| -> Vec<String> {
        let mut n: Vec<String> = v
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| s["Spec"]["Name"].as_str().unwrap_or("").to_string())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(&list(r#"{"name":{"we":true}}"#).await.1), vec!["web"]);
    assert_eq!(
        names(&list(r#"{"label":["tier=backend"]}"#).await.1),
        vec!["api"]
    );
    assert_eq!(
        names(&list(r#"{"label":{"tier":true}}"#).await.1),
        vec!["api", "web"]
    );
    assert_eq!(
        names(&list(r#"{"mode":{"global":true}}"#).await.1),
        vec!["agent"]
    );
    assert_eq!(
        names(&list(r#"{"id":["nomatch"]}"#).await.1),
        Vec::<String>::new()
    );
    let (st, v) = list(r#"{"bogus":{"x":true}}"#).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v["message"], "invalid filter 'bogus'");
    let (st, v) = list("not json").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v["message"], "invalid filter");

    let n = b.node_id();
    b.store()
        .update(|tx| {
            tx.create(Object::Task(task("t1", &web, 1, &n, TaskState::Running, 1)))?;
            tx.create(Object::Task(task(
                "t2",
                &web,
                2,
                &n,
                TaskState::Preparing,
                1,
            )))?;
            tx.create(Object::Task(task(
                "t3",
                &api_id,
                1,
                &n,
                TaskState::Running,
                1,
            )))
        })
        .await
        .unwrap();
    let r = call(&app, "GET", "/services?status=true", None)
        .await
        .json();
    for s in r.as_array().into_iter().flatten() {
        let st = &s["ServiceStatus"];
        match s["Spec"]["Name"].as_str() {
            Some("web") => assert_eq!(
                (st["RunningTasks"].as_u64(), st["DesiredTasks"].as_u64()),
                (Some(1), Some(2))
            ),
            Some("api") => assert_eq!(
                (st["RunningTasks"].as_u64(), st["DesiredTasks"].as_u64()),
                (Some(1), Some(1))
            ),
            Some("agent") => assert_eq!(
                (st["RunningTasks"].as_u64(), st["DesiredTasks"].as_u64()),
                (Some(0), Some(0))
            ),
            other => panic!("unexpected {other:?}"),
        }
    }
    let r = call(&app, "GET", "/services", None).await.json();
    assert!(r[0].get("ServiceStatus").is_none());
    // Before 1.41 the status parameter is ignored.
    let r = call(&app, "GET", "/v1.40/services?status=true", None)
        .await
        .json();
    assert!(r[0].get("ServiceStatus").is_none());

    // As Docker counts: a task still recorded running on a node that is down is not running.
    b.store()
        .update(|tx| {
            let mut node = tx.get_node(&n).unwrap();
            node.status.state = shoal_api::NodeState::Down;
            tx.update(Object::Node(node))
        })
        .await
        .unwrap();
    let r = call(&app, "GET", "/services?status=true", None)
        .await
        .json();
    for s in r.as_array().into_iter().flatten() {
        assert_eq!(s["ServiceStatus"]["RunningTasks"].as_u64(), Some(0), "{s}");
    }
}

#[tokio::test]
async fn task_filters_and_shape() {
    let (b, app) = swarm().await;
    let web = create(&app, service_spec("web", 2)).await;
    let n = b.node_id();
    let mut old = task("t0", &web, 1, &n, TaskState::Shutdown, 0);
    old.desired_state = TaskState::Shutdown;
    b.store()
        .update(|tx| {
            tx.create(Object::Task(task("t1", &web, 1, &n, TaskState::Running, 1)))?;
            tx.create(Object::Task(task("t2", &web, 2, &n, TaskState::Pending, 1)))?;
            tx.create(Object::Task(old))
        })
        .await
        .unwrap();
    let ids = |v: Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|t| t["ID"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let q = |f: &str| format!("/tasks?filters={}", urlencoding::encode(f));
    assert_eq!(
        ids(call(&app, "GET", &q(r#"{"service":{"web":true}}"#), None)
            .await
            .json()),
        vec!["t0", "t1", "t2"]
    );
    assert_eq!(
        ids(call(
            &app,
            "GET",
            &q(r#"{"service":["web"],"desired-state":["running"]}"#),
            None
        )
        .await
        .json()),
        vec!["t1", "t2"]
    );
    assert_eq!(
        ids(
            call(&app, "GET", &q(r#"{"_up-to-date":{"true":true}}"#), None)
                .await
                .json()
        ),
        vec!["t1", "t2"]
    );
    assert_eq!(
        ids(
            call(&app, "GET", &q(&format!(r#"{{"node":["{n}"]}}"#)), None)
                .await
                .json()
        )
        .len(),
        3
    );
    assert_eq!(
        ids(call(&app, "GET", &q(r#"{"node":["mock-host"]}"#), None)
            .await
            .json())
        .len(),
        3
    );
    assert_eq!(
        ids(call(
            &app,
            "GET",
            &q(r#"{"label":["com.docker.stack.namespace=demo"]}"#),
            None
        )
        .await
        .json())
        .len(),
        3
    );
    assert_eq!(
        ids(call(&app, "GET", &q(r#"{"name":["web.2."]}"#), None)
            .await
            .json()),
        vec!["t2"]
    );
    let r = call(&app, "GET", &q(r#"{"desired-state":["sleeping"]}"#), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.message(), "Invalid desired-state filter: 'sleeping'");

    let t = call(&app, "GET", "/tasks/t1", None).await.json();
    assert_eq!(t["ServiceID"], web.as_str());
    assert_eq!(t["Slot"], 1);
    assert_eq!(t["NodeID"], n.as_str());
    assert_eq!(t["DesiredState"], "running");
    assert_eq!(t["Status"]["State"], "running");
    assert_eq!(t["Spec"]["ContainerSpec"]["Image"], "");
    assert_eq!(t["Labels"], json!({}));
}

#[tokio::test]
async fn task_label_filter_matches_the_copy_after_the_service_is_gone() {
    let (b, app) = swarm().await;
    let web = create(&app, service_spec("web", 1)).await;
    let n = b.node_id();
    // t1 was created with a copy of the service's labels (as the orchestrators do); t2 is
    // an older task without one, matched through the live service while it exists.
    let mut copied = task("t1", &web, 1, &n, TaskState::Running, 1);
    copied.service_labels = Some(
        [("com.docker.stack.namespace".to_string(), "demo".to_string())]
            .into_iter()
            .collect(),
    );
    let legacy = task("t2", &web, 2, &n, TaskState::Running, 1);
    b.store()
        .update(|tx| {
            tx.create(Object::Task(copied))?;
            tx.create(Object::Task(legacy))
        })
        .await
        .unwrap();
    let q = format!(
        "/tasks?filters={}",
        urlencoding::encode(r#"{"label":["com.docker.stack.namespace=demo"]}"#)
    );
    let ids = |v: Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|t| t["ID"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(
        ids(call(&app, "GET", &q, None).await.json()),
        vec!["t1", "t2"]
    );
    let r = call(&app, "DELETE", &format!("/services/{web}"), None).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    // The service is gone, its running task still carries the stack's label (`stack rm
    // --detach=false` waits on it); the copy is not shown as the task's own labels.
    assert_eq!(ids(call(&app, "GET", &q, None).await.json()), vec!["t1"]);
    let t = call(&app, "GET", "/tasks/t1", None).await.json();
    assert_eq!(t["Labels"], json!({}));
}

#[tokio::test]
async fn nodes_update_remove_and_filters() {
    let (b, app) = swarm().await;
    let id = b.node_id();
    let node = call(&app, "GET", "/nodes/mock-host", None).await.json();
    let v = node["Version"]["Index"].as_u64().unwrap_or(0);
    let r = call(
        &app,
        "POST",
        &format!("/nodes/{id}/update?version={v}"),
        Some(json!({"Role": "worker", "Availability": "active"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.message(),
        "rpc error: code = FailedPrecondition desc = attempting to demote the last manager of the swarm"
    );
    let r = call(
        &app,
        "POST",
        &format!("/nodes/{id}/update?version={v}"),
        Some(json!({"Role": "manager", "Availability": "drain", "Labels": {"zone": "a"}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.message());
    let r = call(
        &app,
        "POST",
        &format!("/nodes/{id}/update?version={v}"),
        Some(json!({"Role": "manager", "Availability": "active"})),
    )
    .await;
    assert!(r.message().ends_with("update out of sequence"));
    let node = call(&app, "GET", &format!("/nodes/{}", &id[..8]), None)
        .await
        .json();
    assert_eq!(node["Spec"]["Availability"], "drain");

    let list = call(
        &app,
        "GET",
        &format!(
            "/nodes?filters={}",
            urlencoding::encode(r#"{"node.label":["zone=a"],"role":["manager"]}"#)
        ),
        None,
    )
    .await
    .json();
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    let list = call(
        &app,
        "GET",
        &format!(
            "/nodes?filters={}",
            urlencoding::encode(r#"{"role":["worker"]}"#)
        ),
        None,
    )
    .await
    .json();
    assert_eq!(list.as_array().map(Vec::len), Some(0));
    let r = call(
        &app,
        "GET",
        &format!(
            "/nodes?filters={}",
            urlencoding::encode(r#"{"role":["boss"]}"#)
        ),
        None,
    )
    .await;
    assert_eq!(r.message(), "Invalid role filter: 'boss'");

    let r = call(&app, "DELETE", &format!("/nodes/{id}"), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.message().starts_with(&format!(
        "rpc error: code = FailedPrecondition desc = node {id} is a cluster manager"
    )));
}

#[tokio::test]
async fn swarm_update_rotates_tokens() {
    let (_b, app) = swarm().await;
    let sw = call(&app, "GET", "/swarm", None).await.json();
    let v = sw["Version"]["Index"].as_u64().unwrap_or(0);
    let r = call(
        &app,
        "POST",
        &format!("/swarm/update?version={v}&rotateWorkerToken=true"),
        Some(sw["Spec"].clone()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.message());
    let sw2 = call(&app, "GET", "/swarm", None).await.json();
    assert_ne!(sw2["JoinTokens"]["Worker"], sw["JoinTokens"]["Worker"]);
    assert_eq!(sw2["JoinTokens"]["Manager"], sw["JoinTokens"]["Manager"]);
    let r = call(
        &app,
        "POST",
        &format!("/swarm/update?version={v}"),
        Some(sw["Spec"].clone()),
    )
    .await;
    assert!(r.message().ends_with("update out of sequence"));
    let r = call(
        &app,
        "POST",
        "/swarm/update?version=1&rotateWorkerToken=maybe",
        Some(json!({})),
    )
    .await;
    assert_eq!(r.message(), "invalid value for rotateWorkerToken: maybe");
    let r = call(
        &app,
        "POST",
        "/swarm/unlock",
        Some(json!({"UnlockKey": "x"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.message(), "swarm is not locked");
    let r = call(&app, "GET", "/swarm/unlockkey", None).await;
    assert_eq!(r.json(), json!({"UnlockKey": ""}));
}

#[tokio::test]
async fn compatibility_stubs() {
    let (_b, app) = swarm().await;
    let r = call(
        &app,
        "GET",
        "/v1.51/distribution/library/nginx:latest/json",
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["Descriptor"]["digest"], "");
    assert_eq!(r.json()["Platforms"], json!([]));
    let r = call(&app, "GET", "/containers/json?all=1", None).await;
    assert_eq!(r.json(), json!([]));
}

fn line(secs: i64, stream: LogStream, text: &str) -> LogLine {
    LogLine {
        timestamp: chrono::Utc
            .timestamp_opt(secs, 0)
            .single()
            .unwrap_or_default(),
        stream,
        line: text.as_bytes().to_vec(),
    }
}

/// Splits a stdcopy body into (stream, payload) frames.
fn frames(body: &[u8]) -> Vec<(u8, String)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 8 <= body.len() {
        let len = u32::from_be_bytes([body[i + 4], body[i + 5], body[i + 6], body[i + 7]]) as usize;
        assert_eq!(&body[i + 1..i + 4], &[0, 0, 0]);
        out.push((
            body[i],
            String::from_utf8_lossy(&body[i + 8..i + 8 + len]).to_string(),
        ));
        i += 8 + len;
    }
    assert_eq!(i, body.len());
    out
}

#[tokio::test]
async fn service_logs_are_stdcopy_framed_with_details() {
    let (b, app) = swarm().await;
    let web = create(&app, service_spec("web", 2)).await;
    let n = b.node_id();
    b.store()
        .update(|tx| {
            tx.create(Object::Task(task("t1", &web, 1, &n, TaskState::Running, 1)))?;
            tx.create(Object::Task(task("t2", &web, 2, &n, TaskState::Running, 1)))
        })
        .await
        .unwrap();
    b.set_task_logs(
        "t1",
        vec![
            line(1_700_000_000, LogStream::Stdout, "one"),
            line(1_700_000_001, LogStream::Stderr, "oops"),
        ],
    );
    b.set_task_logs("t2", vec![line(1_700_000_002, LogStream::Stdout, "two")]);

    let r = call(
        &app,
        "GET",
        "/v1.51/services/web/logs?stdout=1&stderr=1&tail=all&details=1&timestamps=1",
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("Content-Type"),
        "application/vnd.docker.multiplexed-stream"
    );
    let mut got = frames(&r.body);
    got.sort();
    let d = |t: &str| {
        format!("com.docker.swarm.node.id={n},com.docker.swarm.service.id={web},com.docker.swarm.task.id={t}")
    };
    assert_eq!(
        got,
        vec![
            (
                1,
                format!("2023-11-14T22:13:20.000000000Z {} one\n", d("t1"))
            ),
            (
                1,
                format!("2023-11-14T22:13:22.000000000Z {} two\n", d("t2"))
            ),
            (
                2,
                format!("2023-11-14T22:13:21.000000000Z {} oops\n", d("t1"))
            ),
        ]
    );

    let r = call(&app, "GET", "/services/web/logs?stdout=1", None).await;
    let mut got = frames(&r.body);
    got.sort();
    assert_eq!(
        got,
        vec![(1, "one\n".to_string()), (1, "two\n".to_string())]
    );

    let r = call(&app, "GET", "/tasks/t1/logs?stderr=1", None).await;
    assert_eq!(frames(&r.body), vec![(2, "oops\n".to_string())]);

    let r = call(&app, "GET", "/tasks/t1/logs", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.message(),
        "must specify at least one of 'stdout' or 'stderr'"
    );

    // Before 1.42 the content type is the raw-stream one (the body is still multiplexed).
    let r = call(&app, "GET", "/v1.41/tasks/t1/logs?stdout=1&stderr=1", None).await;
    assert_eq!(
        r.header("Content-Type"),
        "application/vnd.docker.raw-stream"
    );
    assert_eq!(frames(&r.body).len(), 2);
}

#[tokio::test]
async fn followed_service_logs_pick_up_new_tasks() {
    let (b, app) = swarm().await;
    let web = create(&app, service_spec("web", 1)).await;
    let n = b.node_id();
    b.store()
        .update(|tx| tx.create(Object::Task(task("t1", &web, 1, &n, TaskState::Running, 1))))
        .await
        .unwrap();
    b.set_task_logs("t1", vec![line(1, LogStream::Stdout, "first")]);
    b.set_task_logs("t9", vec![line(2, LogStream::Stdout, "later")]);
    let req = Request::builder()
        .uri("/services/web/logs?stdout=1&follow=1")
        .body(Body::empty())
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body().into_data_stream();
    use futures::StreamExt;
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), body.next())
        .await
        .ok()
        .flatten()
        .and_then(Result::ok)
        .unwrap_or_default();
    assert_eq!(frames(&first), vec![(1, "first\n".to_string())]);

    // A new task of the service starts: its output joins the stream.
    b.store()
        .update(|tx| tx.create(Object::Task(task("t9", &web, 2, &n, TaskState::Running, 1))))
        .await
        .unwrap();
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), body.next())
        .await
        .ok()
        .flatten()
        .and_then(Result::ok)
        .unwrap_or_default();
    assert_eq!(frames(&next), vec![(1, "later\n".to_string())]);
    drop(body);
}

#[tokio::test]
async fn remove_service_then_leave() {
    let (b, app) = swarm().await;
    create(&app, service_spec("web", 1)).await;
    let r = call(&app, "DELETE", "/services/web", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(b.store().view(|s| s.services.is_empty()));
    let r = call(&app, "POST", "/swarm/leave?force=1", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(b.status().state, LocalNodeState::Inactive);
    let _ = SwarmStatus::inactive();
}

#[tokio::test]
async fn docker_cli_payload_round_trips_with_go_key_spellings() {
    let (b, app) = swarm().await;
    // What `docker service create --name cli --health-cmd true -p 8080:80 nginx` sends.
    let spec = json!({
        "Name": "cli",
        "Labels": {},
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": "nginx:latest",
                "Init": false,
                "Healthcheck": {"Test": ["CMD-SHELL", "true"]},
                "StopGracePeriod": 10000000000i64,
                "DNSConfig": {},
                "Isolation": "default"
            },
            "Resources": {"Limits": {}, "Reservations": {}},
            "RestartPolicy": {"Condition": "any", "Delay": 5000000000i64, "MaxAttempts": 0},
            "Placement": {},
            "ForceUpdate": 0,
            "Runtime": "container"
        },
        "Mode": {"Replicated": {"Replicas": 1}},
        "UpdateConfig": {"Parallelism": 1, "FailureAction": "pause", "Monitor": 5000000000i64, "MaxFailureRatio": 0, "Order": "stop-first"},
        "RollbackConfig": {"Parallelism": 1, "FailureAction": "pause", "Monitor": 5000000000i64, "MaxFailureRatio": 0, "Order": "stop-first"},
        "EndpointSpec": {"Mode": "vip", "Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}]}
    });
    let id = create(&app, spec.clone()).await;
    let stored = b.store().view(|s| s.services[&id].spec.clone());
    let hc = stored
        .task_template
        .as_ref()
        .and_then(|t| t.container_spec.as_ref())
        .and_then(|c| c.health_check.as_ref())
        .and_then(|h| h.test.clone());
    assert_eq!(hc, Some(vec!["CMD-SHELL".to_string(), "true".to_string()]));
    let got = call(&app, "GET", &format!("/services/{id}"), None)
        .await
        .json();
    assert_eq!(got["Spec"], spec);
    let listed = call(&app, "GET", "/services", None).await.json();
    assert_eq!(listed[0]["Spec"], spec);
}

// ------------------------------------------------------------------ networks, secrets, configs

fn filters(v: Value) -> String {
    urlencoding::encode(&v.to_string()).into_owned()
}

#[tokio::test]
async fn swarm_init_makes_the_ingress_network_and_networks_get_pool_subnets() {
    let (_b, app) = swarm().await;
    let r = call(&app, "GET", "/v1.51/networks", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let list = r.json();
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    let ingress = &list[0];
    assert_eq!(ingress["Name"], "ingress");
    assert_eq!(ingress["Ingress"], true);
    assert_eq!(ingress["Driver"], "overlay");
    assert_eq!(ingress["Scope"], "swarm");
    assert_eq!(ingress["IPAM"]["Config"][0]["Subnet"], "10.0.0.0/24");
    assert_eq!(ingress["IPAM"]["Config"][0]["Gateway"], "10.0.0.1");
    assert_eq!(
        ingress["Options"]["com.docker.network.driver.overlay.vxlanid_list"],
        "4096"
    );

    let r = call(
        &app,
        "POST",
        "/v1.51/networks/create",
        Some(json!({"Name": "webnet", "Driver": "overlay", "Attachable": true,
            "Labels": {"com.docker.stack.namespace": "demo"}, "IPAM": {"Driver": "default", "Config": []}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.message());
    let id = r.json()["Id"].as_str().unwrap_or_default().to_string();
    assert_eq!(r.json()["Warning"], "");
    // By ID, name and ID prefix, with ?scope=swarm as the CLI sends it.
    for reference in [id.clone(), "webnet".into(), id[..6].to_string()] {
        let r = call(
            &app,
            "GET",
            &format!("/v1.51/networks/{reference}?scope=swarm&verbose=false"),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{reference}");
        let n = r.json();
        assert_eq!(n["Id"], id.as_str());
        assert_eq!(n["Attachable"], true);
        assert_eq!(n["IPAM"]["Config"][0]["Subnet"], "10.0.1.0/24");
        assert_eq!(n["IPAM"]["Config"][0]["Gateway"], "10.0.1.1");
        assert_eq!(
            n["Options"]["com.docker.network.driver.overlay.vxlanid_list"],
            "4097"
        );
    }
    // A requested subnet is kept; one overlapping another network is refused.
    let r = call(
        &app,
        "POST",
        "/networks/create",
        Some(json!({"Name": "backend", "Driver": "overlay",
            "IPAM": {"Config": [{"Subnet": "10.50.0.0/16"}]}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.message());
    let r = call(
        &app,
        "POST",
        "/networks/create",
        Some(json!({"Name": "clash", "Driver": "overlay",
            "IPAM": {"Config": [{"Subnet": "10.50.3.0/24"}]}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.message().contains("overlaps"), "{}", r.message());

    // Filters.
    let r = call(
        &app,
        "GET",
        &format!(
            "/networks?filters={}",
            filters(json!({"name": {"web": true}}))
        ),
        None,
    )
    .await;
    let names: Vec<String> = r
        .json()
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n["Name"].as_str().map(str::to_string))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    assert_eq!(names, vec!["webnet".to_string()]);
    let r = call(
        &app,
        "GET",
        &format!(
            "/networks?filters={}",
            filters(json!({"label": {"com.docker.stack.namespace=demo": true}}))
        ),
        None,
    )
    .await;
    assert_eq!(r.json().as_array().map(Vec::len), Some(1));
    let r = call(
        &app,
        "GET",
        &format!(
            "/networks?filters={}",
            filters(json!({"type": {"builtin": true}}))
        ),
        None,
    )
    .await;
    assert_eq!(r.json()[0]["Name"], "ingress");
    let r = call(
        &app,
        "GET",
        &format!(
            "/networks?filters={}",
            filters(json!({"scope": {"local": true}}))
        ),
        None,
    )
    .await;
    assert_eq!(r.json(), json!([]));
    let r = call(
        &app,
        "GET",
        &format!(
            "/networks?filters={}",
            filters(json!({"bogus": {"x": true}}))
        ),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.message(), "invalid filter 'bogus'");
}

#[tokio::test]
async fn network_refusals_have_docker_texts() {
    let (_b, app) = swarm().await;
    let mk = |body: Value| {
        let app = app.clone();
        async move { call(&app, "POST", "/networks/create", Some(body)).await }
    };
    let r = mk(json!({"Name": "n1", "Driver": "overlay"})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = mk(json!({"Name": "n1", "Driver": "overlay"})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.message(), "network with name n1 already exists");
    let r = mk(json!({"Name": "local", "Driver": "bridge"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.message()
            .starts_with("network driver \"bridge\" is not supported"),
        "{}",
        r.message()
    );
    let r = mk(json!({"Name": "bridge", "Driver": "overlay"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        r.message(),
        "bridge is a pre-defined network and cannot be created"
    );
    let r = mk(json!({"Driver": "overlay"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = call(&app, "GET", "/networks/nope", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.message(), "network nope not found");

    // A service's network targets are resolved to IDs; unknown ones are refused.
    let n1 = call(&app, "GET", "/networks/n1", None).await.json()["Id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut spec = service_spec("web", 1);
    spec["TaskTemplate"]["Networks"] = json!([{"Target": "n1", "Aliases": ["w"]}]);
    let svc = create(&app, spec.clone()).await;
    let s = call(&app, "GET", &format!("/services/{svc}"), None)
        .await
        .json();
    assert_eq!(
        s["Spec"]["TaskTemplate"]["Networks"][0]["Target"],
        n1.as_str()
    );
    assert_eq!(s["Spec"]["TaskTemplate"]["Networks"][0]["Aliases"][0], "w");
    spec["Name"] = json!("api");
    spec["EndpointSpec"] = json!({});
    spec["TaskTemplate"]["Networks"] = json!([{"Target": "missing"}]);
    let r = call(&app, "POST", "/services/create", Some(spec)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.message(), "network missing not found");

    // In use: refused; once the service is gone, removed (204).
    let r = call(&app, "DELETE", "/networks/n1", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.message(),
        format!(
            "rpc error: code = FailedPrecondition desc = network {n1} is in use by service {svc}"
        )
    );
    let r = call(&app, "DELETE", "/networks/ingress", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.message()
            .contains("ingress network cannot be removed because service web depends on it"),
        "{}",
        r.message()
    );
    assert_eq!(
        call(&app, "DELETE", &format!("/services/{svc}"), None)
            .await
            .status,
        StatusCode::OK
    );
    let r = call(&app, "DELETE", "/networks/n1", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = call(&app, "DELETE", "/networks/n1", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn secrets_never_show_data_and_update_only_labels() {
    let (_b, app) = swarm().await;
    let r = call(
        &app,
        "POST",
        "/v1.51/secrets/create",
        Some(json!({"Name": "db_pass", "Labels": {"a": "1"}, "Data": "czNjcmV0"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.message());
    let id = r.json()["ID"].as_str().unwrap_or_default().to_string();
    let r = call(
        &app,
        "POST",
        "/secrets/create",
        Some(json!({"Name": "db_pass", "Data": "eA=="})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        r.message(),
        "rpc error: code = AlreadyExists desc = secret db_pass already exists"
    );
    let r = call(
        &app,
        "POST",
        "/secrets/create",
        Some(json!({"Name": "empty", "Data": ""})),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.message(), "rpc error: code = InvalidArgument desc = secret data must be larger than 0 and less than 512000 bytes");

    for reference in [id.clone(), "db_pass".into(), id[..5].to_string()] {
        let r = call(&app, "GET", &format!("/secrets/{reference}"), None).await;
        assert_eq!(r.status, StatusCode::OK);
        let s = r.json();
        assert_eq!(s["ID"], id.as_str());
        assert_eq!(s["Spec"]["Name"], "db_pass");
        assert!(s["Spec"].get("Data").is_none(), "{s}");
    }
    let list = call(&app, "GET", "/secrets", None).await.json();
    assert!(list[0]["Spec"].get("Data").is_none());
    for (f, n) in [
        (json!({"name": {"db": true}}), 1),
        (json!({"names": {"db": true}}), 0),
        (json!({"names": {"db_pass": true}}), 1),
        (json!({"label": {"a=1": true}}), 1),
        (json!({"label": {"a=2": true}}), 0),
        (json!({"id": {&id[..3]: true}}), 1),
    ] {
        let r = call(
            &app,
            "GET",
            &format!("/secrets?filters={}", filters(f.clone())),
            None,
        )
        .await;
        assert_eq!(r.json().as_array().map(Vec::len), Some(n), "{f}");
    }

    // Labels may change, data may not.
    let version = call(&app, "GET", &format!("/secrets/{id}"), None)
        .await
        .json()["Version"]["Index"]
        .as_u64()
        .unwrap_or(0);
    let r = call(
        &app,
        "POST",
        &format!("/secrets/{id}/update?version={version}"),
        Some(json!({"Name": "db_pass", "Labels": {"b": "2"}, "Data": "b3RoZXI="})),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.message(),
        "rpc error: code = InvalidArgument desc = only updates to Labels are allowed"
    );
    let r = call(
        &app,
        "POST",
        &format!("/secrets/{id}/update?version={version}"),
        Some(json!({"Name": "db_pass", "Labels": {"b": "2"}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.message());
    let s = call(&app, "GET", &format!("/secrets/{id}"), None)
        .await
        .json();
    assert_eq!(s["Spec"]["Labels"], json!({"b": "2"}));
    let r = call(
        &app,
        "POST",
        &format!("/secrets/{id}/update?version={version}"),
        Some(json!({"Name": "db_pass", "Labels": {}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.message(), "update out of sequence");

    // In use by a service: refused with swarmkit's text.
    let mut spec = service_spec("web", 1);
    spec["TaskTemplate"]["ContainerSpec"]["Secrets"] = json!([{"SecretID": id, "SecretName": "db_pass",
        "File": {"Name": "db_pass", "UID": "0", "GID": "0", "Mode": 292}}]);
    let svc = create(&app, spec).await;
    let r = call(&app, "DELETE", "/secrets/db_pass", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.message(),
        "rpc error: code = InvalidArgument desc = secret 'db_pass' is in use by the following service: web"
    );
    call(&app, "DELETE", &format!("/services/{svc}"), None).await;
    let r = call(&app, "DELETE", "/secrets/db_pass", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = call(&app, "GET", "/secrets/db_pass", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.message(), "secret db_pass not found");
}

#[tokio::test]
async fn configs_show_their_data_and_follow_the_same_rules() {
    let (_b, app) = swarm().await;
    let r = call(
        &app,
        "POST",
        "/configs/create",
        Some(json!({"Name": "nginx.conf", "Data": "aGVsbG8="})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.message());
    let id = r.json()["ID"].as_str().unwrap_or_default().to_string();
    let c = call(&app, "GET", "/configs/nginx.conf", None).await.json();
    assert_eq!(c["ID"], id.as_str());
    assert_eq!(c["Spec"]["Data"], "aGVsbG8=");
    assert_eq!(c["Spec"]["Labels"], json!({}));
    let r = call(
        &app,
        "POST",
        "/configs/create",
        Some(json!({"Name": "nginx.conf", "Data": "aGVsbG8="})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        r.message(),
        "rpc error: code = AlreadyExists desc = config nginx.conf already exists"
    );
    let r = call(
        &app,
        "POST",
        "/configs/create",
        Some(json!({"Name": "-bad", "Data": "aGVsbG8="})),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Unchanged data is accepted with new labels.
    let v = c["Version"]["Index"].as_u64().unwrap_or(0);
    let r = call(
        &app,
        "POST",
        &format!("/configs/{id}/update?version={v}"),
        Some(json!({"Name": "nginx.conf", "Labels": {"x": "y"}, "Data": "aGVsbG8="})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.message());
    let mut spec = service_spec("web", 1);
    spec["TaskTemplate"]["ContainerSpec"]["Configs"] =
        json!([{"ConfigID": id, "ConfigName": "nginx.conf", "File": {"Name": "/etc/nginx.conf"}}]);
    create(&app, spec.clone()).await;
    spec["Name"] = json!("web2");
    spec["EndpointSpec"] = json!({});
    let r = call(&app, "POST", "/services/create", Some(spec.clone())).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = call(&app, "DELETE", &format!("/configs/{id}"), None).await;
    assert_eq!(
        r.message(),
        "rpc error: code = InvalidArgument desc = config 'nginx.conf' is in use by the following services: web, web2"
    );
    // A reference to a config that does not exist is refused.
    spec["Name"] = json!("web3");
    spec["TaskTemplate"]["ContainerSpec"]["Configs"][0]["ConfigID"] = json!("nope");
    let r = call(&app, "POST", "/services/create", Some(spec)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.message(),
        "rpc error: code = InvalidArgument desc = config not found: nope"
    );
}

#[tokio::test]
async fn network_prune_removes_only_unused_networks() {
    let (_b, app) = swarm().await;
    for (name, labels) in [
        ("keep", json!({"k": "1"})),
        ("used", json!({})),
        ("idle", json!({})),
    ] {
        let r = call(
            &app,
            "POST",
            "/networks/create",
            Some(json!({"Name": name, "Driver": "overlay", "Labels": labels})),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let mut spec = service_spec("web", 1);
    spec["TaskTemplate"]["Networks"] = json!([{"Target": "used"}]);
    create(&app, spec).await;
    let r = call(
        &app,
        "POST",
        &format!(
            "/networks/prune?filters={}",
            filters(json!({"label!": {"k": true}}))
        ),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.message());
    assert_eq!(r.json(), json!({"NetworksDeleted": ["idle"]}));
    let r = call(&app, "POST", "/networks/prune", None).await;
    assert_eq!(r.json(), json!({"NetworksDeleted": ["keep"]}));
    let names: Vec<String> = call(&app, "GET", "/networks", None)
        .await
        .json()
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n["Name"].as_str().map(str::to_string))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    assert_eq!(names, vec!["ingress".to_string(), "used".to_string()]);
}

#[tokio::test]
async fn networks_outside_a_swarm_are_an_empty_list_but_writes_need_a_manager() {
    let b = Arc::new(MockBackend::new());
    let app = router(b.clone());
    let r = call(&app, "GET", "/networks", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!([]));
    let r = call(
        &app,
        "POST",
        "/networks/create",
        Some(json!({"Name": "n", "Driver": "overlay"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.message(), MSG_NOT_IN_SWARM);
    for path in ["/secrets", "/configs"] {
        let r = call(&app, "GET", path, None).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
    }
}

#[tokio::test]
async fn registry_auth_is_stored_with_the_service_and_never_returned() {
    let (b, app) = swarm().await;
    let auth = "eyJ1c2VybmFtZSI6InUiLCJwYXNzd29yZCI6InNlY3JldC1wdyJ9";
    let req = Request::builder()
        .method("POST")
        .uri("/v1.51/services/create")
        .header("Content-Type", "application/json")
        .header("X-Registry-Auth", auth)
        .body(Body::from(service_spec("web", 1).to_string()))
        .expect("request");
    let r = send(&app, req).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let id = r.json()["ID"].as_str().unwrap_or_default().to_string();
    let stored = b.store().view(|s| s.services[&id].registry_auth.clone());
    assert_eq!(stored.as_deref(), Some(auth));
    for uri in [
        format!("/v1.51/services/{id}"),
        "/v1.51/services".to_string(),
        "/v1.51/services?status=true".to_string(),
    ] {
        let r = call(&app, "GET", &uri, None).await;
        assert_eq!(r.status, StatusCode::OK);
        let text = String::from_utf8_lossy(&r.body).to_string();
        assert!(!text.contains(auth), "{uri} leaks the credentials: {text}");
        assert!(!text.to_lowercase().contains("registryauth"), "{text}");
    }
    // An update without the header keeps the credentials; one with it replaces them.
    let version = |b: &MockBackend| b.store().view(|s| s.services[&id].meta.version);
    let v = version(&b);
    let r = call(
        &app,
        "POST",
        &format!("/v1.51/services/{id}/update?version={v}"),
        Some(service_spec("web", 2)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.message());
    let stored = b.store().view(|s| s.services[&id].registry_auth.clone());
    assert_eq!(stored.as_deref(), Some(auth));
    let v = version(&b);
    let req = Request::builder()
        .method("POST")
        .uri(format!("/v1.51/services/{id}/update?version={v}"))
        .header("Content-Type", "application/json")
        .header("X-Registry-Auth", "bmV3")
        .body(Body::from(service_spec("web", 3).to_string()))
        .expect("request");
    let r = send(&app, req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.message());
    let stored = b.store().view(|s| s.services[&id].registry_auth.clone());
    assert_eq!(stored.as_deref(), Some("bmV3"));
}
