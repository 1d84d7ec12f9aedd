//! Reading one compose file: YAML parsing, merge keys, `x-` extension fields, the version and
//! the shape of the top-level sections, then interpolation. Also `.env` files.

use std::collections::HashMap;

use serde_yaml::{Mapping, Value};

use crate::error::{docker_path, ComposeError};
use crate::interpolate::{interpolate_file, key_text, SECTIONS};
use crate::lines::LineIndex;

/// The accepted top-level keys (besides `x-` extensions): Docker's, plus the Compose
/// Specification's `name`.
pub const TOP_LEVEL_KEYS: [&str; 7] = [
    "version", "name", "services", "networks", "volumes", "secrets", "configs",
];

/// One compose file after parsing and interpolation.
#[derive(Debug, Clone)]
pub struct LoadedFile {
    /// The file name as given.
    pub name: String,
    /// The file with merge keys applied, `x-` fields removed and variables substituted.
    pub value: Value,
    /// The line of each key path.
    pub index: LineIndex,
    /// The `version:` of the file, if it has one.
    pub version: Option<String>,
}

fn line_of(index: &LineIndex, path: &[String]) -> Option<usize> {
    index.nearest(path).map(|(line, _)| line)
}

fn path_of(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| p.to_string()).collect()
}

/// The message of a `serde_yaml` error without its ` at line L column C` suffix.
fn yaml_message(err: &serde_yaml::Error) -> String {
    let text = err.to_string();
    match text.find(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// The name of the alias (`*name`) at byte `index` of `text`.
fn alias_at(text: &str, index: usize) -> Option<String> {
    let rest = text.get(index..)?.strip_prefix('*')?;
    let end = rest
        .find(|c: char| c.is_whitespace() || matches!(c, ',' | ']' | '}'))
        .unwrap_or(rest.len());
    (end > 0).then(|| rest[..end].to_string())
}

/// Parses, checks and interpolates one file. Names of unset variables are added to `unset`.
pub fn load_file(
    name: &str,
    text: &str,
    env: &HashMap<String, String>,
    unset: &mut Vec<String>,
) -> Result<LoadedFile, ComposeError> {
    // serde_yaml first: it bounds aliases (no "billion laughs"), which the line index copies.
    let parsed = serde_yaml::from_str::<Value>(text);
    let index = match &parsed {
        Ok(_) => LineIndex::build(text),
        // The index names both lines of a duplicate key.
        Err(e) if e.to_string().contains("duplicate entry") => LineIndex::build(text),
        Err(_) => Ok(LineIndex::default()),
    };
    if let Ok(LineIndex {
        duplicate: Some(dup),
        ..
    }) = &index
    {
        return Err(ComposeError::at(
            name,
            Some(dup.line),
            &docker_path(&dup.path),
            format!(
                "{}: mapping key {:?} already defined at line {}",
                docker_path(&dup.path),
                dup.key,
                dup.first_line
            ),
        ));
    }
    let mut value = parsed.map_err(|e| {
        let line = e.location().map(|l| l.line());
        let mut message = yaml_message(&e);
        if message == "unknown anchor" {
            // Name the alias, as go-yaml does.
            if let Some(alias) = e.location().and_then(|l| alias_at(text, l.index())) {
                message = format!("unknown anchor '{alias}' referenced");
            }
        }
        ComposeError::at(name, line, "", format!("yaml: {message}"))
    })?;
    // If the event parser refuses what serde_yaml accepted, go on without lines.
    let index = index.unwrap_or_default();

    let Value::Mapping(_) = value else {
        return Err(ComposeError::in_file(
            name,
            "Top-level object must be a mapping",
        ));
    };
    apply_merge_keys(&mut value, &mut Vec::new()).map_err(|(mut path, msg)| {
        path.push("<<".to_string());
        ComposeError::at(name, line_of(&index, &path), "", msg)
    })?;
    remove_extensions(&mut value);

    let version = check_version(name, &value, &index)?;
    check_shape(name, &mut value, &index)?;

    interpolate_file(&mut value, env, unset).map_err(|(path, err)| {
        let shown = docker_path(&path);
        ComposeError::at(
            name,
            line_of(&index, &path),
            &shown,
            format!(
                "invalid interpolation format for {shown}: {:?}. You may need to escape any $ with another $.",
                err.template()
            ),
        )
    })?;
    Ok(LoadedFile {
        name: name.to_string(),
        value,
        index,
        version,
    })
}

/// Applies the YAML merge keys (`<<: *anchor`, `<<: [*a, *b]`): the keys of the merged
/// mappings fill the keys the mapping does not set, the first merged mapping winning.
fn apply_merge_keys(
    value: &mut Value,
    path: &mut Vec<String>,
) -> Result<(), (Vec<String>, String)> {
    match value {
        Value::Mapping(map) => {
            if let Some(merged) = map.remove("<<") {
                let sources = match merged {
                    Value::Mapping(m) => vec![m],
                    Value::Sequence(items) => {
                        let mut out = Vec::new();
                        for item in items {
                            match item {
                                Value::Mapping(m) => out.push(m),
                                _ => {
                                    return Err((
                                        path.clone(),
                                        format!(
                                            "{}: expected a mapping for merging",
                                            docker_path(path)
                                        ),
                                    ))
                                }
                            }
                        }
                        out
                    }
                    _ => {
                        return Err((
                            path.clone(),
                            format!(
                                "{}: expected a mapping or list of mappings for merging",
                                docker_path(path)
                            ),
                        ))
                    }
                };
                for source in sources {
                    for (k, v) in source {
                        if !map.contains_key(&k) {
                            map.insert(k, v);
                        }
                    }
                }
            }
            for (k, v) in map.iter_mut() {
                path.push(key_text(k));
                apply_merge_keys(v, path)?;
                path.pop();
            }
        }
        Value::Sequence(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                path.push(crate::error::index_component(i));
                apply_merge_keys(v, path)?;
                path.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

fn is_extension(key: &Value) -> bool {
    key.as_str().is_some_and(|k| k.starts_with("x-"))
}

/// Removes the `x-` fields: at the top level, and in each service, network, volume, secret and
/// config definition (and a service's `deploy`).
fn remove_extensions(value: &mut Value) {
    let Value::Mapping(top) = value else {
        return;
    };
    top.retain(|k, _| !is_extension(k));
    for section in SECTIONS {
        let Some(Value::Mapping(items)) = top.get_mut(section) else {
            continue;
        };
        items.retain(|k, _| !is_extension(k));
        for (_, item) in items.iter_mut() {
            if let Value::Mapping(fields) = item {
                fields.retain(|k, _| !is_extension(k));
                if let Some(Value::Mapping(deploy)) = fields.get_mut("deploy") {
                    deploy.retain(|k, _| !is_extension(k));
                }
            }
        }
    }
}

/// Checks `version:`: absent (the Compose Specification) or a 3.x string. Returns it.
fn check_version(
    name: &str,
    value: &Value,
    index: &LineIndex,
) -> Result<Option<String>, ComposeError> {
    let at = |message: String| {
        ComposeError::at(
            name,
            line_of(index, &path_of(&["version"])),
            "version",
            message,
        )
    };
    match value.get("version") {
        None => {
            // A file of format 1 has services at the top level and no `services:`.
            let v1 = value.get("services").is_none()
                && value.as_mapping().is_some_and(|m| {
                    m.keys()
                        .any(|k| !k.as_str().is_some_and(|k| TOP_LEVEL_KEYS.contains(&k)))
                });
            if v1 {
                return Err(ComposeError::in_file(
                    name,
                    "unsupported Compose file version: 1.0",
                ));
            }
            Ok(None)
        }
        Some(Value::String(v)) => {
            let minor_ok =
                |m: &str| m == "x" || (!m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()));
            let supported = v == "3" || v.strip_prefix("3.").is_some_and(minor_ok);
            if supported {
                Ok(Some(v.clone()))
            } else {
                Err(at(format!("unsupported Compose file version: {v}")))
            }
        }
        Some(_) => Err(at("version must be a string".to_string())),
    }
}

/// Checks the top-level keys and that each section and each service is a mapping, as Docker's
/// schema does. An empty section becomes an empty mapping.
fn check_shape(name: &str, value: &mut Value, index: &LineIndex) -> Result<(), ComposeError> {
    let Value::Mapping(top) = value else {
        return Ok(());
    };
    for key in top.keys() {
        let k = key_text(key);
        if !TOP_LEVEL_KEYS.contains(&k.as_str()) {
            return Err(ComposeError::at(
                name,
                line_of(index, std::slice::from_ref(&k)),
                &k,
                format!("(root) Additional property {k} is not allowed"),
            ));
        }
    }
    for section in SECTIONS {
        let Some(items) = top.get_mut(section) else {
            continue;
        };
        match items {
            Value::Null => *items = Value::Mapping(Mapping::new()),
            Value::Mapping(items) => {
                for (key, item) in items.iter_mut() {
                    let k = key_text(key);
                    match item {
                        Value::Mapping(_) => {}
                        Value::Null if section != "services" => {
                            *item = Value::Mapping(Mapping::new())
                        }
                        _ => {
                            let path = vec![section.to_string(), k.clone()];
                            let shown = format!("{section}.{k}");
                            return Err(ComposeError::at(
                                name,
                                line_of(index, &path),
                                &shown,
                                format!("{shown} must be a mapping"),
                            ));
                        }
                    }
                }
            }
            _ => {
                return Err(ComposeError::at(
                    name,
                    line_of(index, &path_of(&[section])),
                    section,
                    format!("{section} must be a mapping"),
                ))
            }
        }
    }
    Ok(())
}

/// Parses a `.env` file: `KEY=value` lines, `#` comments and blank lines, an optional `export `
/// prefix, values optionally in single (literal) or double quotes (with `\n`, `\t`, `\"` and
/// `\\` escapes). A line without `=` is an error naming the file and line.
pub fn parse_dotenv(name: &str, text: &str) -> Result<HashMap<String, String>, ComposeError> {
    let mut out = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(ComposeError::at(
                name,
                Some(i + 1),
                "",
                format!(
                    "unexpected character {:?} in variable name {line:?}",
                    line.chars()
                        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '.'))
                        .unwrap_or(' ')
                ),
            ));
        };
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(ComposeError::at(
                name,
                Some(i + 1),
                "",
                format!("invalid variable name {key:?}"),
            ));
        }
        let value = value.trim();
        let value = if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\''))
        {
            inner.to_string()
        } else if let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            unescape(inner)
        } else {
            // An unquoted value ends at ` #` (an inline comment).
            match value.find(" #") {
                Some(i) => value[..i].trim_end().to_string(),
                None => value.to_string(),
            }
        };
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<LoadedFile, ComposeError> {
        load_file("f.yml", text, &HashMap::new(), &mut Vec::new())
    }

    #[test]
    fn merge_keys_and_extensions() {
        let text = "x-common: &common\n  image: busybox\n  environment: {A: \"1\"}\nservices:\n  a:\n    <<: *common\n    image: alpine\n    x-note: hi\n  b:\n    <<: [*common]\n";
        let f = load(text).expect("load");
        let expected: Value = serde_yaml::from_str(
            "services:\n  a:\n    image: alpine\n    environment: {A: \"1\"}\n  b:\n    image: busybox\n    environment: {A: \"1\"}\n",
        )
        .expect("yaml");
        assert_eq!(f.value, expected);
        assert_eq!(f.version, None);
    }

    #[test]
    fn versions() {
        assert_eq!(
            load("version: \"3.8\"\nservices: {}\n")
                .expect("3.8")
                .version
                .as_deref(),
            Some("3.8")
        );
        assert!(load("version: \"3\"\n").is_ok());
        assert!(load("version: \"3.x\"\n").is_ok());
        let e = load("version: \"2.1\"\nservices: {}\n").expect_err("2.1");
        assert_eq!(
            e.to_string(),
            "f.yml:1: unsupported Compose file version: 2.1"
        );
        let e = load("services: {}\nversion: 3.8\n").expect_err("number");
        assert_eq!(e.to_string(), "f.yml:2: version must be a string");
        let e = load("web:\n  image: busybox\n").expect_err("v1");
        assert_eq!(
            e.to_string(),
            "f.yml: unsupported Compose file version: 1.0"
        );
    }

    #[test]
    fn shapes() {
        let e = load("services:\n  - web\n").expect_err("list");
        assert_eq!(e.to_string(), "f.yml:1: services must be a mapping");
        let e = load("services:\n  web: busybox\n").expect_err("scalar");
        assert_eq!(e.to_string(), "f.yml:2: services.web must be a mapping");
        let f =
            load("services:\n  web: {image: a}\nnetworks:\n  front:\nvolumes:\n").expect("nulls");
        assert_eq!(f.value["networks"]["front"], Value::Mapping(Mapping::new()));
        assert_eq!(f.value["volumes"], Value::Mapping(Mapping::new()));
        let e = load("services: {}\nfoo: 1\n").expect_err("unknown");
        assert_eq!(
            e.to_string(),
            "f.yml:2: (root) Additional property foo is not allowed"
        );
        let e = load("- a\n").expect_err("top");
        assert_eq!(e.to_string(), "f.yml: Top-level object must be a mapping");
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let e = load(&text).expect_err("bomb");
        assert_eq!(e.to_string(), "f.yml: yaml: repetition limit exceeded");
    }

    #[test]
    fn dotenv_files() {
        let env = parse_dotenv(
            ".env",
            "# comment\n\nA=1\nexport B = two words \nC='$lit'\nD=\"x\\ny\"\nE=v # note\nF=\n",
        )
        .expect("parse");
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "two words");
        assert_eq!(env["C"], "$lit");
        assert_eq!(env["D"], "x\ny");
        assert_eq!(env["E"], "v");
        assert_eq!(env["F"], "");
        let e = parse_dotenv(".env", "A=1\nBROKEN\n").expect_err("no =");
        assert_eq!(e.file.as_deref(), Some(".env"));
        assert_eq!(e.line, Some(2));
    }
}
