//! The routes of the swarm-scoped objects: `/networks`, `/secrets`, `/configs`, and their
//! JSON shapes.
//!
//! ```text
//!   GET    /networks[?filters]           name/id (substring), label, driver, scope, type, dangling
//!   GET    /networks/{ref}[?scope=swarm]  ref: full ID, exact name or unique ID prefix
//!   POST   /networks/create              201 {"Id","Warning"}; swarm-scope overlay only
//!   DELETE /networks/{ref}               204; refused while a service attaches to it
//!   POST   /networks/prune               the networks no service uses (not ingress)
//!   GET    /secrets|/configs[?filters]   id (prefix), name (prefix), names (exact), label
//!   POST   /secrets|/configs/create      201 {"ID"}; 409 on a taken name
//!   GET    /secrets|/configs/{ref}       a secret's Data is never returned; a config's is
//!   POST   /secrets|/configs/{ref}/update?version=N   labels only
//!   DELETE /secrets|/configs/{ref}       204; refused while a service references it
//! ```

use crate::convert::{date, rfc3339_nano};
use crate::error::ApiError;
use crate::params::{Filters, Params};
use crate::routes::{manager, read_json, read_json_fixed, AppState};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use shoal_api::{engine, Config, Network, Secret};
use shoal_manager::objects::VXLAN_OPTION;
use shoal_store::StoreState;
use std::collections::HashMap;

type ApiResult<T = Response> = Result<T, ApiError>;

fn version(index: u64) -> Option<engine::ObjectVersion> {
    Some(engine::ObjectVersion { index: Some(index) })
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

// ---------------------------------------------------------------------------------- networks

/// The JSON of one network, its fields in Docker's order (`network.Inspect`).
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkView {
    name: String,
    id: String,
    created: String,
    scope: &'static str,
    driver: String,
    #[serde(rename = "EnableIPv4")]
    enable_ipv4: bool,
    #[serde(rename = "EnableIPv6")]
    enable_ipv6: bool,
    #[serde(rename = "IPAM")]
    ipam: IpamView,
    internal: bool,
    attachable: bool,
    ingress: bool,
    config_from: ConfigFromView,
    config_only: bool,
    containers: Option<HashMap<String, Value>>,
    options: std::collections::BTreeMap<String, String>,
    labels: std::collections::BTreeMap<String, String>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamView {
    driver: String,
    options: Option<std::collections::BTreeMap<String, String>>,
    config: Vec<IpamConfigView>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamConfigView {
    subnet: String,
    #[serde(rename = "IPRange", skip_serializing_if = "String::is_empty")]
    ip_range: String,
    gateway: String,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigFromView {
    network: String,
}

/// A network as Docker's `/networks` answers for a swarm-scoped network on a manager.
pub fn network_json(n: &Network) -> NetworkView {
    let spec = &n.spec;
    let mut options: std::collections::BTreeMap<String, String> = spec
        .options
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    options.insert(VXLAN_OPTION.into(), n.vni.to_string());
    let view = NetworkView {
        name: n.name().to_string(),
        id: n.id.clone(),
        created: rfc3339_nano(&n.meta.created_at),
        scope: "swarm",
        driver: n.driver().to_string(),
        enable_ipv4: true,
        enable_ipv6: spec.enable_ipv6.unwrap_or(false),
        ipam: IpamView {
            driver: spec
                .ipam
                .as_ref()
                .and_then(|i| i.driver.clone())
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| "default".into()),
            options: spec
                .ipam
                .as_ref()
                .and_then(|i| i.options.clone())
                .map(|o| o.into_iter().collect()),
            config: n
                .subnets
                .iter()
                .map(|s| IpamConfigView {
                    subnet: s.subnet.clone(),
                    ip_range: s.ip_range.clone(),
                    gateway: s.gateway.clone(),
                })
                .collect(),
        },
        internal: spec.internal.unwrap_or(false),
        attachable: spec.attachable.unwrap_or(false),
        ingress: n.is_ingress(),
        config_from: ConfigFromView {
            network: String::new(),
        },
        config_only: false,
        containers: None,
        options,
        labels: spec
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
    };
    view
}

/// Docker's `Match`: equal, or (as its pattern match) containing the value.
fn matches(f: &Filters, key: &str, v: &str) -> bool {
    let want = f.get(key);
    want.is_empty() || want.iter().any(|w| v == w || v.contains(w.as_str()))
}

fn network_used(state: &StoreState, n: &Network) -> bool {
    state.services.values().any(|s| {
        s.spec
            .task_template
            .as_ref()
            .and_then(|t| t.networks.as_deref())
            .unwrap_or(&[])
            .iter()
            .chain(s.spec.networks.as_deref().unwrap_or(&[]))
            .any(|a| a.target.as_deref() == Some(&n.id))
    })
}

pub(crate) async fn network_list(State(st): State<AppState>, p: Params) -> ApiResult {
    let f = p.filters()?;
    f.validate(&["name", "id", "label", "driver", "scope", "type", "dangling"])?;
    for t in f.get("type") {
        if !matches!(t.as_str(), "custom" | "builtin") {
            return Err(ApiError::bad_request(format!(
                "invalid filter: 'type'='{t}'"
            )));
        }
    }
    for s in f.get("scope") {
        if !matches!(s.as_str(), "swarm" | "global" | "local") {
            return Err(ApiError::bad_request(format!(
                "invalid filter: 'scope'='{s}'"
            )));
        }
    }
    let mut dangling = None;
    for d in f.get("dangling") {
        dangling = Some(match d.as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "invalid filter 'dangling={d}'"
                )))
            }
        });
    }
    // Outside a swarm, or on a worker, there is no swarm-scoped network to list (and Shoal
    // has no local ones): an empty list, as `docker network ls` shows no overlay there.
    let store = match manager(&st) {
        Ok((store, _)) => store,
        Err(_) if !st.backend.status().control_available => {
            return Ok(Json(Vec::<NetworkView>::new()).into_response())
        }
        Err(e) => return Err(e),
    };
    let out: Vec<NetworkView> = store.view(|s| {
        let mut nets: Vec<&Network> = s
            .networks
            .values()
            .filter(|n| {
                let kind = if n.is_ingress() { "builtin" } else { "custom" };
                matches(&f, "name", n.name())
                    && matches(&f, "id", &n.id)
                    && f.labels("label", n.spec.labels.as_ref())
                    && f.exact("driver", n.driver())
                    && f.exact("scope", "swarm")
                    && f.exact("type", kind)
                    && dangling.is_none_or(|d| d != network_used(s, n))
            })
            .collect();
        nets.sort_by(|a, b| a.name().cmp(b.name()));
        nets.into_iter().map(network_json).collect()
    });
    Ok(Json(out).into_response())
}

pub(crate) async fn network_inspect(
    State(st): State<AppState>,
    Path(id): Path<String>,
    p: Params,
) -> ApiResult {
    match p.get("scope").unwrap_or("") {
        "" | "swarm" | "global" => {}
        "local" => {
            return Err(ApiError::not_found(format!("network {id} not found")));
        }
        other => return Err(ApiError::bad_request(format!("invalid scope: {other}"))),
    }
    let (_, control) = manager(&st)?;
    let n = control.resolve_network(&id)?;
    Ok(Json(network_json(&n)).into_response())
}

/// `Name` is required by the model; a body without it is an empty name (refused later).
fn fill_name(v: &mut Value) {
    if let Some(o) = v.as_object_mut() {
        o.entry("Name").or_insert(Value::String(String::new()));
    }
}

pub(crate) async fn network_create(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let req: engine::NetworkCreateRequest = read_json_fixed(&headers, &body, fill_name)?;
    let (_, control) = manager(&st)?;
    let id = control.create_network(req).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "Id": id, "Warning": "" })),
    )
        .into_response())
}

pub(crate) async fn network_remove(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult {
    let (_, control) = manager(&st)?;
    control.remove_network(&id).await?;
    Ok(no_content())
}

/// `POST /networks/prune`: removes the networks no service attaches to (never the ingress
/// network), as `docker network prune` does for swarm-scoped networks. `label` / `label!`
/// filters select them.
pub(crate) async fn network_prune(State(st): State<AppState>, p: Params) -> ApiResult {
    let f = p.filters()?;
    f.validate(&["label", "label!", "until"])?;
    if f.has("until") {
        return Err(ApiError::NotImplemented(
            "the until filter of network prune is not supported".into(),
        ));
    }
    let (store, control) = manager(&st)?;
    let candidates: Vec<(String, String)> = store.view(|s| {
        s.networks
            .values()
            .filter(|n| !n.is_ingress() && !network_used(s, n))
            .filter(|n| f.labels("label", n.spec.labels.as_ref()))
            .filter(|n| {
                !f.has("label!")
                    || !f.get("label!").iter().any(|l| {
                        Filters::from_pairs([("label", l.as_str())])
                            .labels("label", n.spec.labels.as_ref())
                    })
            })
            .map(|n| (n.id.clone(), n.name().to_string()))
            .collect()
    });
    let mut deleted = Vec::new();
    for (id, name) in candidates {
        // A service may have taken it meanwhile: then it stays.
        if control.remove_network(&id).await.is_ok() {
            deleted.push(name);
        }
    }
    Ok(Json(json!({ "NetworksDeleted": deleted })).into_response())
}

// ----------------------------------------------------------------------- secrets and configs

fn labels_or_empty(l: &Option<HashMap<String, String>>) -> Option<HashMap<String, String>> {
    Some(l.clone().unwrap_or_default())
}

/// A secret as the API shows it: never with its data.
pub fn secret_json(s: &Secret) -> engine::Secret {
    engine::Secret {
        id: Some(s.id.clone()),
        version: version(s.meta.version),
        created_at: date(&s.meta.created_at),
        updated_at: date(&s.meta.updated_at),
        spec: Some(engine::SecretSpec {
            name: s.spec.name.clone(),
            labels: labels_or_empty(&s.spec.labels),
            data: None,
            driver: s.spec.driver.clone(),
            templating: s.spec.templating.clone(),
        }),
    }
}

/// A config as the API shows it: with its data (base64).
pub fn config_json(c: &Config) -> engine::Config {
    let mut spec = c.spec.clone();
    spec.labels = labels_or_empty(&spec.labels);
    engine::Config {
        id: Some(c.id.clone()),
        version: version(c.meta.version),
        created_at: date(&c.meta.created_at),
        updated_at: date(&c.meta.updated_at),
        spec: Some(spec),
    }
}

/// swarmkit's secret/config list filters: `id` and `name` prefixes, `names` exact, `label`.
fn named_matches(
    f: &Filters,
    id: &str,
    name: &str,
    labels: Option<&HashMap<String, String>>,
) -> bool {
    f.prefix("id", id)
        && f.prefix("name", name)
        && f.exact("names", name)
        && f.labels("label", labels)
}

pub(crate) async fn secret_list(State(st): State<AppState>, p: Params) -> ApiResult {
    let f = p.filters()?;
    f.validate(&["id", "label", "name", "names"])?;
    let (store, _) = manager(&st)?;
    let out: Vec<engine::Secret> = store.view(|s| {
        s.secrets
            .values()
            .filter(|x| named_matches(&f, &x.id, x.name(), x.spec.labels.as_ref()))
            .map(secret_json)
            .collect()
    });
    Ok(Json(out).into_response())
}

pub(crate) async fn secret_create(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let spec: engine::SecretSpec = read_json(&headers, &body)?;
    let (_, control) = manager(&st)?;
    let id = control.create_secret(spec).await?;
    Ok((StatusCode::CREATED, Json(json!({ "ID": id }))).into_response())
}

pub(crate) async fn secret_inspect(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult {
    let (_, control) = manager(&st)?;
    let s = control.resolve_secret(&id)?;
    Ok(Json(secret_json(&s)).into_response())
}

pub(crate) async fn secret_update(
    State(st): State<AppState>,
    Path(id): Path<String>,
    p: Params,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let spec: engine::SecretSpec = read_json(&headers, &body)?;
    let version = p.version("secret")?;
    let (_, control) = manager(&st)?;
    control.update_secret(&id, version, spec).await?;
    Ok(StatusCode::OK.into_response())
}

pub(crate) async fn secret_remove(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let (_, control) = manager(&st)?;
    control.remove_secret(&id).await?;
    Ok(no_content())
}

pub(crate) async fn config_list(State(st): State<AppState>, p: Params) -> ApiResult {
    let f = p.filters()?;
    f.validate(&["id", "label", "name", "names"])?;
    let (store, _) = manager(&st)?;
    let out: Vec<engine::Config> = store.view(|s| {
        s.configs
            .values()
            .filter(|x| named_matches(&f, &x.id, x.name(), x.spec.labels.as_ref()))
            .map(config_json)
            .collect()
    });
    Ok(Json(out).into_response())
}

pub(crate) async fn config_create(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let spec: engine::ConfigSpec = read_json(&headers, &body)?;
    let (_, control) = manager(&st)?;
    let id = control.create_config(spec).await?;
    Ok((StatusCode::CREATED, Json(json!({ "ID": id }))).into_response())
}

pub(crate) async fn config_inspect(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult {
    let (_, control) = manager(&st)?;
    let c = control.resolve_config(&id)?;
    Ok(Json(config_json(&c)).into_response())
}

pub(crate) async fn config_update(
    State(st): State<AppState>,
    Path(id): Path<String>,
    p: Params,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let spec: engine::ConfigSpec = read_json(&headers, &body)?;
    let version = p.version("config")?;
    let (_, control) = manager(&st)?;
    control.update_config(&id, version, spec).await?;
    Ok(StatusCode::OK.into_response())
}

pub(crate) async fn config_remove(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let (_, control) = manager(&st)?;
    control.remove_config(&id).await?;
    Ok(no_content())
}
