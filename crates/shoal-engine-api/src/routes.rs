//! The routes: system (`/_ping`, `/version`, `/info`), swarm, nodes, services, tasks, logs,
//! networks, secrets and configs (handlers in [`crate::objects`]),
//! and the two compatibility stubs the CLI touches (`/distribution/.../json`, `/containers/json`).
//!
//! ```text
//!   request ─► version middleware (strip /vX.Y, headers) ─► Router ─► handler
//!     handler: parse query/body ─► backend.manager() (503 unless a ready manager)
//!              ─► Control (validated writes) / Store view (reads) ─► convert ─► JSON
//! ```

use crate::backend::{LocalNodeState, SwarmBackend};
use crate::convert;
use crate::error::{
    error_response, ApiError, MSG_MANAGER_NOT_READY, MSG_NOT_IN_SWARM, MSG_PAGE_NOT_FOUND,
    MSG_WORKER,
};
use crate::logs::{self, LogRequest};
use crate::objects;
use crate::params::{Filters, Params};
use crate::version::{version_middleware, ApiVersion, MAX_API_VERSION, MIN_API_VERSION};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use shoal_api::{engine, Node, NodeRole, Service, Task, TaskState};
use shoal_manager::control::Control;
use shoal_store::Store;
use std::collections::HashMap;
use std::sync::Arc;

/// The header carrying base64url registry credentials.
pub const REGISTRY_AUTH_HEADER: &str = "X-Registry-Auth";

/// State shared by the handlers.
#[derive(Clone)]
pub struct AppState {
    pub backend: Arc<dyn SwarmBackend>,
}

type ApiResult<T = Response> = Result<T, ApiError>;

/// The whole API as one router: every route answers with and without the `/vX.Y` prefix.
pub fn router(backend: Arc<dyn SwarmBackend>) -> Router {
    let state = AppState { backend };
    let api = Router::new()
        .route("/_ping", get(ping).head(ping))
        .route("/version", get(version))
        .route("/info", get(info))
        .route("/swarm", get(swarm_inspect))
        .route("/swarm/init", post(swarm_init))
        .route("/swarm/join", post(swarm_join))
        .route("/swarm/leave", post(swarm_leave))
        .route("/swarm/update", post(swarm_update))
        .route("/swarm/unlock", post(swarm_unlock))
        .route("/swarm/unlockkey", get(swarm_unlock_key))
        .route("/nodes", get(node_list))
        .route("/nodes/{id}", get(node_inspect).delete(node_remove))
        .route("/nodes/{id}/update", post(node_update))
        .route("/services", get(service_list))
        .route("/services/create", post(service_create))
        .route(
            "/services/{id}",
            get(service_inspect).delete(service_remove),
        )
        .route("/services/{id}/update", post(service_update))
        .route("/services/{id}/logs", get(service_logs))
        .route("/networks", get(objects::network_list))
        .route("/networks/create", post(objects::network_create))
        .route("/networks/prune", post(objects::network_prune))
        .route(
            "/networks/{id}",
            get(objects::network_inspect).delete(objects::network_remove),
        )
        .route("/secrets", get(objects::secret_list))
        .route("/secrets/create", post(objects::secret_create))
        .route(
            "/secrets/{id}",
            get(objects::secret_inspect).delete(objects::secret_remove),
        )
        .route("/secrets/{id}/update", post(objects::secret_update))
        .route("/configs", get(objects::config_list))
        .route("/configs/create", post(objects::config_create))
        .route(
            "/configs/{id}",
            get(objects::config_inspect).delete(objects::config_remove),
        )
        .route("/configs/{id}/update", post(objects::config_update))
        .route("/tasks", get(task_list))
        .route("/tasks/{id}", get(task_inspect))
        .route("/tasks/{id}/logs", get(task_logs))
        .route("/distribution/{*rest}", get(distribution_inspect))
        .route("/containers/json", get(container_list))
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .with_state(state);
    let versioned = tower::Layer::layer(&axum::middleware::from_fn(version_middleware), api);
    Router::new().fallback_service(versioned)
}

async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, MSG_PAGE_NOT_FOUND)
}

/// The request's API version (the maximum when the path has no prefix).
fn api_version(v: Option<Extension<ApiVersion>>) -> ApiVersion {
    v.map(|Extension(v)| v).unwrap_or(MAX_API_VERSION)
}

/// Decodes a JSON body as Docker does: an empty body is the zero value; otherwise the
/// `Content-Type` (when given) must be `application/json` and the body one JSON value.
pub fn read_json<T: DeserializeOwned + Default>(headers: &HeaderMap, body: &Bytes) -> ApiResult<T> {
    read_json_fixed(headers, body, |_| {})
}

/// [`read_json`], with `fix` applied to the decoded JSON before it is mapped onto `T`.
pub fn read_json_fixed<T: DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: &Bytes,
    fix: impl FnOnce(&mut serde_json::Value),
) -> ApiResult<T> {
    if body.is_empty() {
        return Ok(T::default());
    }
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let raw = ct.to_str().unwrap_or("");
        let media = raw
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if media.is_empty() {
            return Err(ApiError::bad_request(format!(
                "malformed Content-Type header ({raw}): mime: no media type"
            )));
        }
        if media != "application/json" {
            return Err(ApiError::bad_request(format!(
                "unsupported Content-Type header ({raw}): must be 'application/json'"
            )));
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut value = serde_json::Value::deserialize(&mut de).map_err(|e| {
        if e.is_eof() {
            ApiError::bad_request("invalid JSON: got EOF while reading request body")
        } else {
            ApiError::bad_request(format!("invalid JSON: {e}"))
        }
    })?;
    de.end()
        .map_err(|_| ApiError::bad_request("unexpected content after JSON"))?;
    if value.is_null() {
        return Ok(T::default());
    }
    fix(&mut value);
    serde_json::from_value(value).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
}

/// A JSON response from an already built value.
fn json_value(status: StatusCode, v: serde_json::Value) -> Response {
    (status, Json(v)).into_response()
}

/// A service as JSON, with Docker's key spellings.
fn service_json(view: &convert::ServiceView) -> serde_json::Value {
    let mut v = serde_json::to_value(view).unwrap_or_default();
    convert::service_keys_to_docker(&mut v);
    convert::go_numbers(&mut v);
    v
}

/// A task as JSON, with Docker's key spellings and its network attachments
/// (`NetworksAttachments`: each network, by ID and name, with the task's address on it).
fn task_json(
    task: &shoal_api::Task,
    networks: &std::collections::BTreeMap<String, shoal_api::Network>,
) -> serde_json::Value {
    let mut v = serde_json::to_value(convert::task(task)).unwrap_or_default();
    convert::task_keys_to_docker(&mut v);
    convert::go_numbers(&mut v);
    if !task.networks.is_empty() {
        let attachments: Vec<serde_json::Value> = task
            .networks
            .iter()
            .map(|a| {
                let n = networks.get(&a.network_id);
                serde_json::json!({
                    "Network": {
                        "ID": a.network_id,
                        "Spec": {
                            "Name": n.map(|n| n.name()).unwrap_or(""),
                            "DriverConfiguration": {"Name": n.map(|n| n.driver()).unwrap_or("overlay")},
                            "Ingress": n.is_some_and(|n| n.is_ingress()),
                        },
                        "IPAMOptions": {
                            "Configs": n.map(|n| n.subnets.iter().map(|s| serde_json::json!({
                                "Subnet": s.subnet, "Gateway": s.gateway
                            })).collect::<Vec<_>>()).unwrap_or_default()
                        }
                    },
                    "Addresses": [a.address],
                })
            })
            .collect();
        v["NetworksAttachments"] = serde_json::Value::Array(attachments);
    }
    v
}

fn ok_empty() -> Response {
    StatusCode::OK.into_response()
}

/// Store and control of this manager, or Docker's 503 for why there is none.
pub(crate) fn manager(st: &AppState) -> ApiResult<(Store, Arc<Control>)> {
    if let Some(m) = st.backend.manager() {
        return Ok(m);
    }
    Err(no_manager_error(st))
}

fn no_manager_error(st: &AppState) -> ApiError {
    let s = st.backend.status();
    match s.state {
        LocalNodeState::Locked => ApiError::swarm_locked(),
        LocalNodeState::Active if s.control_available => {
            ApiError::unavailable(MSG_MANAGER_NOT_READY)
        }
        LocalNodeState::Active => ApiError::unavailable(MSG_WORKER),
        _ => ApiError::unavailable(MSG_NOT_IN_SWARM),
    }
}

// ------------------------------------------------------------------------------------ system

async fn ping(State(st): State<AppState>, method: Method) -> Response {
    let swarm = st.backend.status().ping_value();
    let mut resp = if method == Method::HEAD {
        let mut r = StatusCode::OK.into_response();
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        r
    } else {
        "OK".into_response()
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert("Swarm", HeaderValue::from_static(swarm));
    resp
}

/// Go's `GOARCH` for a machine name.
fn go_arch(machine: &str) -> String {
    match machine {
        "x86_64" | "amd64" => "amd64".into(),
        "aarch64" | "arm64" => "arm64".into(),
        "armv7l" | "armv6l" | "arm" => "arm".into(),
        "i386" | "i686" => "386".into(),
        other => other.into(),
    }
}

async fn version(State(st): State<AppState>) -> Response {
    let h = st.backend.host_info();
    let arch = go_arch(&h.arch);
    let details = HashMap::from([
        ("ApiVersion".to_string(), MAX_API_VERSION.to_string()),
        ("MinAPIVersion".to_string(), MIN_API_VERSION.to_string()),
        ("Os".to_string(), "linux".to_string()),
        ("Arch".to_string(), arch.clone()),
        ("KernelVersion".to_string(), h.kernel.clone()),
        ("Experimental".to_string(), "false".to_string()),
        ("GitCommit".to_string(), String::new()),
        ("GoVersion".to_string(), String::new()),
        ("BuildTime".to_string(), String::new()),
    ]);
    let v = engine::SystemVersion {
        platform: Some(engine::SystemVersionPlatform {
            name: "Shoal".into(),
        }),
        components: Some(vec![engine::SystemVersionComponents {
            name: "Engine".into(),
            version: h.server_version.clone(),
            details: Some(details),
        }]),
        version: Some(h.server_version.clone()),
        api_version: Some(MAX_API_VERSION.to_string()),
        min_api_version: Some(MIN_API_VERSION.to_string()),
        git_commit: Some(String::new()),
        go_version: Some(String::new()),
        os: Some("linux".into()),
        arch: Some(arch),
        kernel_version: Some(h.kernel),
        experimental: None,
        build_time: None,
    };
    Json(v).into_response()
}

async fn info(State(st): State<AppState>) -> Response {
    let h = st.backend.host_info();
    let s = st.backend.status();
    let mut swarm = engine::SwarmInfo {
        node_id: Some(s.node_id.clone()),
        node_addr: Some(s.node_addr.clone()),
        local_node_state: Some(s.state.to_engine()),
        control_available: Some(s.control_available),
        error: Some(s.error.clone()),
        remote_managers: Some(
            s.remote_managers
                .iter()
                .map(|(id, addr)| engine::PeerNode {
                    node_id: Some(id.clone()),
                    addr: Some(addr.clone()),
                })
                .collect(),
        ),
        nodes: None,
        managers: None,
        cluster: None,
    };
    let mut warnings = Vec::new();
    if s.control_available {
        if let Some((store, _)) = st.backend.manager() {
            store.view(|state| {
                swarm.nodes = Some(state.nodes.len() as i64);
                let managers = state
                    .nodes
                    .values()
                    .filter(|n| n.manager_status.is_some())
                    .count() as i64;
                swarm.managers = Some(managers);
                swarm.cluster = state.cluster.as_ref().map(convert::cluster_info);
                if managers == 2 {
                    warnings.push("WARNING: Running Swarm in a two-manager configuration. This configuration provides\n         no fault tolerance, and poses a high risk to lose control over the cluster.\n         Refer to https://docs.docker.com/engine/swarm/admin_guide/ to configure the\n         Swarm for fault-tolerance.".to_string());
                }
            });
        }
    }
    let runtimes = h
        .runtimes
        .iter()
        .map(|r| (r.clone(), engine::Runtime::default()))
        .collect::<HashMap<_, _>>();
    let info = engine::SystemInfo {
        id: Some(s.node_id.clone()),
        containers: Some(0),
        containers_running: Some(0),
        containers_paused: Some(0),
        containers_stopped: Some(0),
        images: Some(0),
        driver: Some("shoal".into()),
        driver_status: Some(Vec::new()),
        docker_root_dir: Some(h.data_root.clone()),
        plugins: Some(engine::PluginsInfo {
            volume: Some(Vec::new()),
            network: Some(vec!["overlay".into()]),
            authorization: None,
            log: Some(vec!["json-file".into()]),
        }),
        memory_limit: Some(false),
        swap_limit: Some(false),
        ipv4_forwarding: Some(true),
        debug: Some(false),
        logging_driver: Some("json-file".into()),
        kernel_version: Some(h.kernel.clone()),
        operating_system: Some(h.os.clone()),
        os_type: Some("linux".into()),
        architecture: Some(h.arch.clone()),
        ncpu: Some(h.ncpu),
        mem_total: Some(h.mem_total),
        index_server_address: Some("https://index.docker.io/v1/".into()),
        name: Some(h.name.clone()),
        labels: Some(h.labels.clone()),
        experimental_build: Some(false),
        server_version: Some(h.server_version.clone()),
        runtimes: Some(runtimes),
        default_runtime: Some(h.default_runtime.clone()),
        swarm: Some(swarm),
        live_restore_enabled: Some(false),
        security_options: Some(Vec::new()),
        warnings: Some(warnings),
        ..Default::default()
    };
    Json(info).into_response()
}

// ------------------------------------------------------------------------------------- swarm

async fn swarm_inspect(State(st): State<AppState>) -> ApiResult {
    let (store, _) = manager(&st)?;
    let cluster = store
        .view(|s| s.cluster.clone())
        .ok_or_else(ApiError::no_swarm)?;
    Ok(Json(convert::swarm(&cluster)).into_response())
}

async fn swarm_init(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let req: crate::backend::InitRequest = read_json(&headers, &body)?;
    let s = st.backend.status();
    let force = req.base.force_new_cluster.unwrap_or(false);
    if s.state != LocalNodeState::Inactive && !(force && s.control_available) {
        return Err(ApiError::already_in_swarm());
    }
    let node_id = st.backend.init(req).await?;
    Ok(Json(node_id).into_response())
}

async fn swarm_join(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let req: crate::backend::JoinRequest = read_json(&headers, &body)?;
    if st.backend.status().state != LocalNodeState::Inactive {
        return Err(ApiError::already_in_swarm());
    }
    if req.base.remote_addrs.as_deref().unwrap_or(&[]).is_empty() {
        return Err(ApiError::bad_request(
            "at least 1 RemoteAddr is required to join",
        ));
    }
    st.backend.join(req).await?;
    Ok(ok_empty())
}

async fn swarm_leave(State(st): State<AppState>, p: Params) -> ApiResult {
    if st.backend.status().state == LocalNodeState::Inactive {
        return Err(ApiError::no_swarm());
    }
    st.backend.leave(p.flag("force")).await?;
    Ok(ok_empty())
}

fn rotate_flag(p: &Params, key: &str) -> ApiResult<bool> {
    p.parse_bool(key).map(|b| b.unwrap_or(false)).map_err(|_| {
        ApiError::bad_request(format!(
            "invalid value for {key}: {}",
            p.get(key).unwrap_or("")
        ))
    })
}

async fn swarm_update(
    State(st): State<AppState>,
    p: Params,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let spec: engine::SwarmSpec = read_json(&headers, &body)?;
    let version = p.version("swarm")?;
    let worker = rotate_flag(&p, "rotateWorkerToken")?;
    let mgr = rotate_flag(&p, "rotateManagerToken")?;
    let unlock = rotate_flag(&p, "rotateManagerUnlockKey")?;
    let autolock = spec
        .encryption_config
        .as_ref()
        .and_then(|e| e.auto_lock_managers)
        .unwrap_or(false);
    let (_, control) = manager(&st)?;
    control.update_cluster(version, spec, worker, mgr).await?;
    st.backend.update_autolock(autolock, unlock).await?;
    Ok(ok_empty())
}

async fn swarm_unlock(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let req: engine::SwarmUnlockRequest = read_json(&headers, &body)?;
    let s = st.backend.status();
    match s.state {
        LocalNodeState::Locked => {}
        LocalNodeState::Active if s.control_available => return Err(ApiError::not_locked()),
        _ => return Err(no_manager_error(&st)),
    }
    st.backend
        .unlock(req.unlock_key.unwrap_or_default())
        .await?;
    Ok(ok_empty())
}

async fn swarm_unlock_key(State(st): State<AppState>) -> ApiResult {
    manager(&st)?;
    let key = st.backend.unlock_key()?;
    Ok(Json(engine::UnlockKeyResponse {
        unlock_key: Some(key),
    })
    .into_response())
}

// ------------------------------------------------------------------------------------- nodes

fn parse_roles(f: &Filters) -> ApiResult<Vec<NodeRole>> {
    let mut out = Vec::new();
    for r in f.get("role") {
        match r.to_ascii_lowercase().as_str() {
            "worker" => out.push(NodeRole::Worker),
            "manager" => out.push(NodeRole::Manager),
            "" => {}
            _ => return Err(ApiError::bad_request(format!("Invalid role filter: '{r}'"))),
        }
    }
    Ok(out)
}

fn node_matches(n: &Node, f: &Filters, roles: &[NodeRole]) -> bool {
    f.prefix("name", n.hostname())
        && f.prefix("id", &n.id)
        && f.labels("label", n.engine_labels())
        && f.labels("node.label", n.labels())
        && (roles.is_empty() || roles.contains(&n.role))
}

async fn node_list(State(st): State<AppState>, p: Params) -> ApiResult {
    let f = p.filters()?;
    f.validate(&["name", "id", "label", "role", "membership", "node.label"])?;
    let roles = parse_roles(&f)?;
    for m in f.get("membership") {
        if !matches!(m.to_ascii_lowercase().as_str(), "accepted" | "pending" | "") {
            return Err(ApiError::bad_request(format!(
                "Invalid membership filter: '{m}'"
            )));
        }
    }
    // Every node in the store has been accepted.
    let want_accepted = !f.has("membership")
        || f.get("membership")
            .iter()
            .any(|m| m.eq_ignore_ascii_case("accepted"));
    let (store, _) = manager(&st)?;
    let nodes: Vec<engine::Node> = store.view(|s| {
        s.nodes
            .values()
            .filter(|n| want_accepted && node_matches(n, &f, &roles))
            .map(convert::node)
            .collect()
    });
    Ok(Json(nodes).into_response())
}

async fn node_inspect(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let (_, control) = manager(&st)?;
    let node = control.resolve_node(&id)?;
    Ok(Json(convert::node(&node)).into_response())
}

async fn node_remove(State(st): State<AppState>, Path(id): Path<String>, p: Params) -> ApiResult {
    let (_, control) = manager(&st)?;
    control
        .remove_node(&id, p.flag("force"))
        .await
        .map_err(swarmkit_refusal)?;
    Ok(ok_empty())
}

/// Docker passes swarmkit's refusals of node updates and removals through as gRPC prints
/// them (`rpc error: code = FailedPrecondition desc = attempting to demote the last manager
/// of the swarm`).
fn swarmkit_refusal(e: shoal_manager::control::ControlError) -> ApiError {
    use shoal_manager::control::ControlError;
    match e {
        ControlError::FailedPrecondition(m) => {
            ApiError::BadRequest(format!("rpc error: code = FailedPrecondition desc = {m}"))
        }
        other => other.into(),
    }
}

async fn node_update(
    State(st): State<AppState>,
    Path(id): Path<String>,
    p: Params,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let spec: engine::NodeSpec = read_json(&headers, &body)?;
    let version = p.version("node")?;
    let (_, control) = manager(&st)?;
    control
        .update_node(&id, version, spec)
        .await
        .map_err(swarmkit_refusal)?;
    Ok(ok_empty())
}

// ---------------------------------------------------------------------------------- services

/// The runtime names a task spec answers to in `runtime` filters.
fn runtimes_of(
    task: Option<&engine::TaskSpec>,
    service: Option<&engine::ServiceSpec>,
) -> Vec<String> {
    let mut v = vec![task
        .and_then(|t| t.runtime.clone())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "container".into())];
    if let Some(r) = service.and_then(shoal_api::spec::runtime_name) {
        v.push(r);
    }
    v
}

fn runtime_matches(f: &Filters, names: &[String]) -> bool {
    !f.has("runtime") || names.iter().any(|n| f.exact("runtime", n))
}

fn mode_name(spec: &engine::ServiceSpec) -> &'static str {
    use shoal_api::spec::ServiceMode as M;
    match shoal_api::spec::service_mode(spec) {
        M::Replicated { .. } => "replicated",
        M::Global => "global",
        M::ReplicatedJob { .. } => "replicated-job",
        M::GlobalJob => "global-job",
    }
}

fn service_matches(s: &Service, f: &Filters) -> bool {
    f.prefix("name", s.name())
        && f.prefix("id", &s.id)
        && f.labels("label", s.spec.labels.as_ref())
        && f.exact("mode", mode_name(&s.spec))
        && runtime_matches(
            f,
            &runtimes_of(s.spec.task_template.as_ref(), Some(&s.spec)),
        )
}

async fn service_list(
    State(st): State<AppState>,
    v: Option<Extension<ApiVersion>>,
    p: Params,
) -> ApiResult {
    let f = p.filters()?;
    f.validate(&["name", "id", "label", "mode", "runtime"])?;
    let mut status = false;
    if api_version(v).at_least(1, 41) {
        status = p
            .parse_bool("status")
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "invalid value for status: {}: {e}",
                    p.get("status").unwrap_or("")
                ))
            })?
            .unwrap_or(false);
    }
    let (store, _) = manager(&st)?;
    let out: Vec<serde_json::Value> = store.view(|state| {
        state
            .services
            .values()
            .filter(|s| service_matches(s, &f))
            .map(|s| {
                let mut view = convert::service(s, false);
                if status {
                    // As Docker: only tasks on nodes that are not down count.
                    let tasks = state.tasks_of_service(&s.id).filter(|t| {
                        t.node_id
                            .as_ref()
                            .and_then(|n| state.nodes.get(n))
                            .is_some_and(|n| n.status.state != shoal_api::NodeState::Down)
                    });
                    view.service.service_status = Some(convert::service_status(s, tasks));
                }
                service_json(&view)
            })
            .collect()
    });
    Ok(Json(out).into_response())
}

fn registry_auth(headers: &HeaderMap) -> Option<String> {
    headers
        .get(REGISTRY_AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .filter(|s| !s.is_empty())
}

async fn service_create(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let spec: engine::ServiceSpec =
        read_json_fixed(&headers, &body, convert::spec_keys_from_docker)?;
    let (_, control) = manager(&st)?;
    let id = control
        .create_service(spec, registry_auth(&headers))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "ID": id, "Warnings": [] })),
    )
        .into_response())
}

async fn service_inspect(
    State(st): State<AppState>,
    Path(id): Path<String>,
    p: Params,
) -> ApiResult {
    let defaults = p
        .parse_bool("insertDefaults")
        .map_err(|e| {
            ApiError::bad_request(format!(
                "invalid value for insertDefaults: {}: {e}",
                p.get("insertDefaults").unwrap_or("")
            ))
        })?
        .unwrap_or(false);
    let (_, control) = manager(&st)?;
    let svc = control.resolve_service(&id)?;
    Ok(json_value(
        StatusCode::OK,
        service_json(&convert::service(&svc, defaults)),
    ))
}

async fn service_remove(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let (_, control) = manager(&st)?;
    control.remove_service(&id).await?;
    Ok(ok_empty())
}

async fn service_update(
    State(st): State<AppState>,
    Path(id): Path<String>,
    p: Params,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let spec: engine::ServiceSpec =
        read_json_fixed(&headers, &body, convert::spec_keys_from_docker)?;
    let version = p.version("service")?;
    match p.get("registryAuthFrom").unwrap_or("") {
        "" | "spec" | "previous-spec" => {}
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid registryAuthFrom '{other}'"
            )))
        }
    }
    let rollback = match p.get("rollback").unwrap_or("") {
        "" | "none" => false,
        "previous" => true,
        other => {
            return Err(ApiError::bad_request(format!(
                "unrecognized rollback option {other}"
            )))
        }
    };
    let (_, control) = manager(&st)?;
    control
        .update_service(&id, version, spec, registry_auth(&headers), rollback)
        .await?;
    Ok(Json(json!({ "Warnings": [] })).into_response())
}

// ------------------------------------------------------------------------------------- tasks

/// The labels the task list's `label` filter matches: the copy of the service's labels the
/// task got when it was created (swarmkit's `ServiceAnnotations`, so a task still matches once
/// its service is removed: `stack rm` waits on them), else (a task stored before the copy
/// existed) the live service's; then the task's own.
fn task_labels(
    t: &Task,
    services: &std::collections::BTreeMap<String, Service>,
) -> HashMap<String, String> {
    let mut labels = match &t.service_labels {
        Some(copy) => copy.clone(),
        None => services
            .get(&t.service_id)
            .and_then(|s| s.spec.labels.clone())
            .unwrap_or_default(),
    };
    labels.extend(t.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    labels
}

async fn task_list(State(st): State<AppState>, p: Params) -> ApiResult {
    let f = p.filters()?;
    f.validate(&[
        "name",
        "id",
        "label",
        "service",
        "node",
        "desired-state",
        "_up-to-date",
        "runtime",
    ])?;
    let mut desired = Vec::new();
    for s in f.get("desired-state") {
        if s.is_empty() {
            continue;
        }
        match s.parse::<TaskState>() {
            Ok(state) => desired.push(state),
            Err(_) => {
                return Err(ApiError::bad_request(format!(
                    "Invalid desired-state filter: '{s}'"
                )))
            }
        }
    }
    let (store, control) = manager(&st)?;
    let mut service_ids = Vec::new();
    for s in f.get("service") {
        service_ids.push(control.resolve_service(&s)?.id);
    }
    let mut node_ids = Vec::new();
    for n in f.get("node") {
        node_ids.push(control.resolve_node(&n)?.id);
    }
    let up_to_date = f.has("_up-to-date");
    let out: Vec<serde_json::Value> = store.view(|state| {
        state
            .tasks
            .values()
            .filter(|t| {
                let labels = task_labels(t, &state.services);
                let service = state.services.get(&t.service_id);
                f.prefix("name", &t.runtime_name())
                    && f.prefix("id", &t.id)
                    && f.labels("label", Some(&labels))
                    && (service_ids.is_empty() || service_ids.contains(&t.service_id))
                    && (node_ids.is_empty()
                        || t.node_id.as_ref().is_some_and(|n| node_ids.contains(n)))
                    && (desired.is_empty() || desired.contains(&t.desired_state))
                    && runtime_matches(&f, &runtimes_of(Some(&t.spec), service.map(|s| &*s.spec)))
                    && (!up_to_date || service.is_some_and(|s| s.spec_version == t.spec_version))
            })
            .map(|t| task_json(t, &state.networks))
            .collect()
    });
    Ok(Json(out).into_response())
}

async fn task_inspect(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let (store, control) = manager(&st)?;
    let t = control.resolve_task(&id)?;
    let v = store.view(|state| task_json(&t, &state.networks));
    Ok(json_value(StatusCode::OK, v))
}

// -------------------------------------------------------------------------------------- logs

fn logs_response(
    stream: futures::stream::BoxStream<'static, Bytes>,
    tty: bool,
    version: ApiVersion,
) -> Response {
    let content_type = if !tty && version.at_least(1, 42) {
        logs::MULTIPLEXED
    } else {
        logs::RAW
    };
    let body = Body::from_stream(stream.map(Ok::<_, std::convert::Infallible>));
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn is_tty(spec: Option<&engine::TaskSpec>) -> bool {
    spec.and_then(|t| t.container_spec.as_ref())
        .and_then(|c| c.tty)
        .unwrap_or(false)
}

async fn service_logs(
    State(st): State<AppState>,
    v: Option<Extension<ApiVersion>>,
    Path(id): Path<String>,
    p: Params,
) -> ApiResult {
    let req = LogRequest::from_params(&p)?;
    let (store, control) = manager(&st)?;
    let svc = control.resolve_service(&id)?;
    let tty = is_tty(svc.spec.task_template.as_ref());
    let tasks: Vec<Task> = store.view(|s| s.tasks_of_service(&svc.id).cloned().collect());
    let follow = req.follow.then(|| svc.id.clone());
    let stream = logs::stream_logs(st.backend.clone(), store, tasks, follow, req, !tty).await?;
    Ok(logs_response(stream, tty, api_version(v)))
}

async fn task_logs(
    State(st): State<AppState>,
    v: Option<Extension<ApiVersion>>,
    Path(id): Path<String>,
    p: Params,
) -> ApiResult {
    let req = LogRequest::from_params(&p)?;
    let (store, control) = manager(&st)?;
    let t = control.resolve_task(&id)?;
    let tty = is_tty(Some(&t.spec));
    let stream = logs::stream_logs(st.backend.clone(), store, vec![t], None, req, !tty).await?;
    Ok(logs_response(stream, tty, api_version(v)))
}

// ---------------------------------------------------------------------------- compatibility

/// `GET /distribution/{image}/json`: Shoal does not query registries. An answer without a
/// digest or platforms makes the CLI keep the image reference unchanged and print no warning.
async fn distribution_inspect(Path(rest): Path<String>) -> Response {
    if !rest.ends_with("/json") || rest.len() <= "/json".len() {
        return not_found().await;
    }
    Json(json!({
        "Descriptor": {
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": "",
            "size": 0
        },
        "Platforms": []
    }))
    .into_response()
}

/// `GET /containers/json`: Shoal has no standalone containers, so `docker ps` lists none.
async fn container_list() -> Response {
    Json(json!([])).into_response()
}
