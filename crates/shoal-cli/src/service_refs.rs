//! `--secret` / `--config` of `service create` and `--secret-add|rm`, `--config-add|rm` of
//! `service update`, as the docker CLI parses and resolves them.
//!
//! ```text
//!   --secret src                              source = target = src, uid 0, gid 0, mode 0444
//!   --secret source=x,target=y,uid=,gid=,mode=  (mode in Go's base-0 syntax: 0400, 0o400, 256)
//!   names ──GET /secrets (/configs) ?filters={"name":[...]}──► IDs in the service spec
//! ```

use bollard::models::{
    TaskSpecContainerSpecConfigs, TaskSpecContainerSpecFile, TaskSpecContainerSpecFile1,
    TaskSpecContainerSpecSecrets,
};
use serde_json::Value;
use std::collections::{HashMap, HashSet};

use crate::client::{CliError, Client};

/// One requested secret or config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRef {
    pub source: String,
    pub target: String,
    pub uid: String,
    pub gid: String,
    pub mode: u32,
}

/// Parses Go's `strconv.ParseUint(s, 0, 32)` syntax (`0x`, `0o`, `0b` prefixes, leading 0 octal).
fn parse_mode(s: &str) -> Option<u32> {
    let lower = s.to_ascii_lowercase();
    let clean = lower.replace('_', "");
    let (digits, radix) = if let Some(r) = clean.strip_prefix("0x") {
        (r, 16)
    } else if let Some(r) = clean.strip_prefix("0o") {
        (r, 8)
    } else if let Some(r) = clean.strip_prefix("0b") {
        (r, 2)
    } else if clean.len() > 1 && clean.starts_with('0') {
        (&clean[1..], 8)
    } else {
        (clean.as_str(), 10)
    };
    if digits.is_empty() {
        return None;
    }
    u32::from_str_radix(digits, radix).ok()
}

/// The clap value parser of `--secret` / `--config` (and their `-add` forms).
pub fn file_ref(value: &str) -> Result<FileRef, String> {
    let mut r = FileRef {
        source: String::new(),
        target: String::new(),
        uid: "0".into(),
        gid: "0".into(),
        mode: 0o444,
    };
    if !value.contains('=') && !value.contains(',') {
        r.source = value.to_string();
        r.target = value.to_string();
        return Ok(r);
    }
    for field in value.split(',') {
        let Some((key, val)) = field.split_once('=') else {
            return Err(format!("invalid field '{field}' must be a key=value pair"));
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "source" | "src" => r.source = val.to_string(),
            "target" => r.target = val.to_string(),
            "uid" => r.uid = val.to_string(),
            "gid" => r.gid = val.to_string(),
            "mode" => {
                r.mode = parse_mode(val).ok_or_else(|| {
                    format!(
                    "invalid mode specified: strconv.ParseUint: parsing {val:?}: invalid syntax"
                )
                })?
            }
            _ => return Err(format!("invalid field in secret request: {key}")),
        }
    }
    if r.source.is_empty() {
        return Err("source is required".to_string());
    }
    if r.target.is_empty() {
        r.target = r.source.clone();
    }
    Ok(r)
}

/// Which object kind a reference names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefKind {
    Secret,
    Config,
}

impl RefKind {
    fn word(self) -> &'static str {
        match self {
            RefKind::Secret => "secret",
            RefKind::Config => "config",
        }
    }
    fn path(self) -> &'static str {
        match self {
            RefKind::Secret => "/secrets",
            RefKind::Config => "/configs",
        }
    }
}

/// Checks that no two references share a target.
pub fn check_targets<'a>(
    kind: RefKind,
    targets: impl IntoIterator<Item = &'a str>,
) -> Result<(), CliError> {
    let mut seen = HashSet::new();
    for t in targets {
        if !seen.insert(t) {
            return Err(CliError::msg(format!(
                "duplicate {} target for {t} not allowed",
                kind.word()
            )));
        }
    }
    Ok(())
}

/// Maps names (or IDs) to IDs and names through `GET /secrets` or `/configs`.
async fn resolve_ids(
    client: &Client,
    kind: RefKind,
    refs: &[FileRef],
) -> Result<Vec<(String, String)>, CliError> {
    if refs.is_empty() {
        return Ok(Vec::new());
    }
    let raw = client.get_raw(kind.path(), &[]).await?;
    let list: Value = serde_json::from_str(&raw)
        .map_err(|e| CliError::msg(format!("error listing {}s: {e}", kind.word())))?;
    let Some(items) = list.as_array() else {
        let msg = list["message"].as_str().unwrap_or(raw.as_str()).to_string();
        return Err(CliError::msg(msg));
    };
    let mut by_name: HashMap<String, String> = HashMap::new();
    let mut names_by_id: HashMap<String, String> = HashMap::new();
    for it in items {
        let id = it["ID"].as_str().unwrap_or("").to_string();
        let name = it["Spec"]["Name"].as_str().unwrap_or("").to_string();
        by_name.insert(name.clone(), id.clone());
        names_by_id.insert(id, name);
    }
    refs.iter()
        .map(|r| {
            if let Some(id) = by_name.get(&r.source) {
                Ok((id.clone(), r.source.clone()))
            } else if let Some(name) = names_by_id.get(&r.source) {
                Ok((r.source.clone(), name.clone()))
            } else {
                Err(CliError::msg(format!(
                    "{} not found: {}",
                    kind.word(),
                    r.source
                )))
            }
        })
        .collect()
}

/// The spec entries of `--secret` references.
pub async fn secrets(
    client: &Client,
    refs: &[FileRef],
) -> Result<Vec<TaskSpecContainerSpecSecrets>, CliError> {
    check_targets(RefKind::Secret, refs.iter().map(|r| r.target.as_str()))?;
    let ids = resolve_ids(client, RefKind::Secret, refs).await?;
    Ok(refs
        .iter()
        .zip(ids)
        .map(|(r, (id, name))| TaskSpecContainerSpecSecrets {
            file: Some(TaskSpecContainerSpecFile {
                name: Some(r.target.clone()),
                uid: Some(r.uid.clone()),
                gid: Some(r.gid.clone()),
                mode: Some(r.mode),
            }),
            secret_id: Some(id),
            secret_name: Some(name),
        })
        .collect())
}

/// The spec entries of `--config` references.
pub async fn configs(
    client: &Client,
    refs: &[FileRef],
) -> Result<Vec<TaskSpecContainerSpecConfigs>, CliError> {
    check_targets(RefKind::Config, refs.iter().map(|r| r.target.as_str()))?;
    let ids = resolve_ids(client, RefKind::Config, refs).await?;
    Ok(refs
        .iter()
        .zip(ids)
        .map(|(r, (id, name))| TaskSpecContainerSpecConfigs {
            file: Some(TaskSpecContainerSpecFile1 {
                name: Some(r.target.clone()),
                uid: Some(r.uid.clone()),
                gid: Some(r.gid.clone()),
                mode: Some(r.mode),
            }),
            runtime: None,
            config_id: Some(id),
            config_name: Some(name),
        })
        .collect())
}

/// `service update --secret-rm/--secret-add`: drops the named secrets (by name or ID), then adds
/// the new ones, refusing two with the same target.
pub async fn update_secrets(
    client: &Client,
    current: Option<Vec<TaskSpecContainerSpecSecrets>>,
    rm: &[String],
    add: &[FileRef],
) -> Result<Option<Vec<TaskSpecContainerSpecSecrets>>, CliError> {
    if rm.is_empty() && add.is_empty() {
        return Ok(current);
    }
    let added = secrets(client, add).await?;
    let mut kept: Vec<TaskSpecContainerSpecSecrets> = current
        .unwrap_or_default()
        .into_iter()
        .filter(|s| {
            let name = s.secret_name.as_deref().unwrap_or("");
            let id = s.secret_id.as_deref().unwrap_or("");
            !rm.iter().any(|r| r == name || r == id)
        })
        .collect();
    kept.extend(added);
    check_targets(
        RefKind::Secret,
        kept.iter().map(|s| {
            s.file
                .as_ref()
                .and_then(|f| f.name.as_deref())
                .unwrap_or("")
        }),
    )?;
    Ok(Some(kept))
}

/// `service update --config-rm/--config-add`, as [`update_secrets`].
pub async fn update_configs(
    client: &Client,
    current: Option<Vec<TaskSpecContainerSpecConfigs>>,
    rm: &[String],
    add: &[FileRef],
) -> Result<Option<Vec<TaskSpecContainerSpecConfigs>>, CliError> {
    if rm.is_empty() && add.is_empty() {
        return Ok(current);
    }
    let added = configs(client, add).await?;
    let mut kept: Vec<TaskSpecContainerSpecConfigs> = current
        .unwrap_or_default()
        .into_iter()
        .filter(|c| {
            let name = c.config_name.as_deref().unwrap_or("");
            let id = c.config_id.as_deref().unwrap_or("");
            !rm.iter().any(|r| r == name || r == id)
        })
        .collect();
    kept.extend(added);
    check_targets(
        RefKind::Config,
        kept.iter().map(|c| {
            c.file
                .as_ref()
                .and_then(|f| f.name.as_deref())
                .unwrap_or("")
        }),
    )?;
    Ok(Some(kept))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_forms_parse_like_docker() {
        assert_eq!(
            file_ref("db_pw"),
            Ok(FileRef {
                source: "db_pw".into(),
                target: "db_pw".into(),
                uid: "0".into(),
                gid: "0".into(),
                mode: 0o444,
            })
        );
        let r = file_ref("source=db_pw,target=pw,uid=1000,gid=1001,mode=0400").expect("long");
        assert_eq!(
            (
                r.source.as_str(),
                r.target.as_str(),
                r.uid.as_str(),
                r.gid.as_str(),
                r.mode
            ),
            ("db_pw", "pw", "1000", "1001", 0o400)
        );
        assert_eq!(file_ref("src=a").map(|r| r.target), Ok("a".to_string()));
        assert_eq!(file_ref("src=a,mode=0o640").map(|r| r.mode), Ok(0o640));
        assert_eq!(file_ref("src=a,mode=292").map(|r| r.mode), Ok(0o444));
        assert_eq!(file_ref("target=x"), Err("source is required".to_string()));
        assert_eq!(
            file_ref("src=a,bogus=1"),
            Err("invalid field in secret request: bogus".to_string())
        );
        assert_eq!(
            file_ref("src=a,target"),
            Err("invalid field 'target' must be a key=value pair".to_string())
        );
        assert!(file_ref("src=a,mode=9z").is_err());
    }

    #[test]
    fn duplicate_targets_are_refused() {
        assert!(check_targets(RefKind::Secret, ["a", "b"]).is_ok());
        let e = check_targets(RefKind::Config, ["a", "a"]).expect_err("duplicate");
        assert_eq!(e.to_string(), "duplicate config target for a not allowed");
    }
}
