//! Compose files for `shoal stack`, read client side as the docker CLI does.
//!
//! [`load`] reads one or more compose files (`-c a.yml -c b.yml`, `-c -` for standard input):
//! YAML with anchors and merge keys, `x-` extension fields dropped, variables interpolated from
//! the given environment (see [`environment`] for the process environment plus a `.env` file),
//! the files merged in order. Every error names the file, the line and the key path:
//!
//! ```text
//! docker-compose.yml:12: services.web.deploy.replicas: invalid type: string "five", expected an integer
//! docker-compose.yml:4: invalid interpolation format for services.web.image: "required variable TAG is missing a value: must be set". You may need to escape any $ with another $.
//! ```
//!
//! [`Loaded::model`] turns the result into the typed model ([`model::ComposeFile`]), which
//! [`convert`] turns into swarm objects; [`config_yaml`] prints it for `shoal stack config`.

pub mod convert;
pub mod error;
pub mod interpolate;
pub mod lines;
pub mod load;
pub mod merge;
pub mod model;
pub mod units;

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use serde_yaml::{Mapping, Value};

pub use error::ComposeError;
use error::{component_index, dotted_path, index_component};
use lines::LineIndex;

/// The name given to a compose file read from standard input (`-c -`).
pub const STDIN_NAME: &str = "<stdin>";

/// The text of one compose file and the name errors call it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The file name as given on the command line (`docker-compose.yml`), or [`STDIN_NAME`].
    pub name: String,
    /// The YAML text.
    pub text: String,
}

impl Source {
    /// A source from a name and its text.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Source {
            name: name.into(),
            text: text.into(),
        }
    }

    /// Reads a compose file.
    pub fn from_path(path: &Path) -> Result<Source, ComposeError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ComposeError::in_file(&name, format!("cannot read file: {e}")))?;
        Ok(Source { name, text })
    }

    /// Reads a compose file from a reader (standard input for `-c -`), named [`STDIN_NAME`].
    pub fn from_reader(mut reader: impl Read) -> Result<Source, ComposeError> {
        let mut text = String::new();
        reader.read_to_string(&mut text).map_err(|e| {
            ComposeError::in_file(STDIN_NAME, format!("cannot read standard input: {e}"))
        })?;
        Ok(Source {
            name: STDIN_NAME.to_string(),
            text,
        })
    }
}

/// The environment used for interpolation: `process` (e.g. `std::env::vars()`) plus the `.env`
/// file of `dir` (the directory of the first compose file) if there is one; the process
/// environment wins.
pub fn environment(
    process: impl IntoIterator<Item = (String, String)>,
    dir: Option<&Path>,
) -> Result<HashMap<String, String>, ComposeError> {
    let mut env = HashMap::new();
    if let Some(dir) = dir {
        let path = dir.join(".env");
        if path.is_file() {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ComposeError::in_file(&name, format!("cannot read file: {e}")))?;
            env = load::parse_dotenv(&name, &text)?;
        }
    }
    env.extend(process);
    Ok(env)
}

/// Compose files loaded, merged and interpolated.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The merged result: merge keys applied, `x-` fields removed, variables substituted.
    pub value: Value,
    /// Warnings to print (unset variables), in Docker's words.
    pub warnings: Vec<String>,
    /// The name and line index of each file, in the order given.
    pub files: Vec<(String, LineIndex)>,
}

/// Loads compose files in order, merging each into the previous ones.
pub fn load(sources: &[Source], env: &HashMap<String, String>) -> Result<Loaded, ComposeError> {
    if sources.is_empty() {
        return Err(ComposeError::plain(
            "Please specify a Compose file (with --compose-file).",
        ));
    }
    let mut unset = Vec::new();
    let mut value: Option<Value> = None;
    let mut files = Vec::new();
    let mut version: Option<(String, String)> = None;
    for source in sources {
        let file = load::load_file(&source.name, &source.text, env, &mut unset)?;
        if let Some(v) = &file.version {
            match &version {
                Some((_, first)) if first != v => {
                    return Err(ComposeError::in_file(
                        &source.name,
                        format!("version mismatched between two composefiles : {first} and {v}"),
                    ))
                }
                Some(_) => {}
                None => version = Some((source.name.clone(), v.clone())),
            }
        }
        match &mut value {
            None => value = Some(file.value),
            Some(base) => merge::merge_files(base, file.value),
        }
        files.push((file.name, file.index));
    }
    Ok(Loaded {
        value: value.unwrap_or(Value::Mapping(Mapping::new())),
        warnings: unset
            .iter()
            .map(|v| interpolate::unset_warning(v))
            .collect(),
        files,
    })
}

impl Loaded {
    /// The file and line that set `path` (list items as `[i]` or as plain indices): the file
    /// that knows the longest prefix of the path, the last one on a tie.
    pub fn locate(&self, path: &[String]) -> Option<(&str, usize)> {
        let path = self.normalize(path);
        let mut best: Option<(&str, usize, usize)> = None;
        for (name, index) in &self.files {
            if let Some((line, len)) = index.nearest(&path) {
                if best.is_none_or(|(_, _, l)| len >= l) {
                    best = Some((name, line, len));
                }
            }
        }
        best.map(|(name, line, _)| (name, line))
    }

    /// Writes list indices as `[i]` where the merged value has a list.
    fn normalize(&self, path: &[String]) -> Vec<String> {
        let mut out = Vec::with_capacity(path.len());
        let mut node = Some(&self.value);
        for part in path {
            match node {
                Some(Value::Sequence(items)) => {
                    let i = component_index(part).or_else(|| part.parse().ok());
                    match i {
                        Some(i) => {
                            out.push(index_component(i));
                            node = items.get(i);
                        }
                        None => {
                            out.push(part.clone());
                            node = None;
                        }
                    }
                }
                Some(Value::Mapping(m)) => {
                    out.push(part.clone());
                    node = m
                        .iter()
                        .find(|(k, _)| interpolate::key_text(k) == *part)
                        .map(|(_, v)| v);
                }
                _ => {
                    out.push(part.clone());
                    node = None;
                }
            }
        }
        out
    }

    /// An error about `path`, placed at the file and line that set it.
    pub fn error_at(&self, path: &[String], message: impl Into<String>) -> ComposeError {
        let shown = dotted_path(path);
        match self.locate(path) {
            Some((file, line)) => ComposeError::at(file, Some(line), &shown, message),
            None => match self.files.last() {
                Some((file, _)) if self.files.len() == 1 => {
                    ComposeError::at(file, None, &shown, message)
                }
                _ => ComposeError {
                    path: shown,
                    ..ComposeError::plain(message)
                },
            },
        }
    }

    /// The typed model of the merged files; its errors are placed at their file and line.
    pub fn model(&self) -> Result<model::ComposeFile, ComposeError> {
        model::ComposeFile::from_value(&self.value).map_err(|e| self.model_error(e))
    }

    /// Places an error of the model (a key path and a message) at its file and line.
    pub fn model_error(&self, e: model::ModelError) -> ComposeError {
        let mut path = e.path.clone();
        // `Additional property foo is not allowed` is about the key `foo` under the path.
        if let Some(key) = e
            .message
            .strip_prefix("Additional property ")
            .and_then(|m| m.strip_suffix(" is not allowed"))
        {
            path.push(key.to_string());
        }
        let shown = dotted_path(&e.path);
        let message = if e.path.is_empty() {
            if e.message.starts_with("Additional property") {
                format!("(root) {}", e.message)
            } else {
                e.message.clone()
            }
        } else if e.message.starts_with("Additional property") {
            format!("{shown} {}", e.message)
        } else {
            format!("{shown}: {}", e.message)
        };
        let mut err = self.error_at(&path, message);
        err.path = shown;
        err
    }
}

impl Loaded {
    /// Places an error of the conversion at the file and line of what it is about: the entry
    /// naming an undefined network, secret, config or volume, else the service, secret or
    /// config.
    pub fn convert_error(&self, e: &convert::ConvertError) -> ComposeError {
        let (section, name, message) = match e {
            convert::ConvertError::Service { service, message } => ("services", service, message),
            convert::ConvertError::Secret { name, message } => ("secrets", name, message),
            convert::ConvertError::Config { name, message } => ("configs", name, message),
        };
        let mut path = vec![section.to_string(), name.clone()];
        if section == "services" {
            if let Some(entry) = self.undefined_reference(name, message) {
                path.extend(entry);
            }
        }
        let mut err = self.error_at(&path, e.to_string());
        err.path = dotted_path(&path);
        err
    }

    /// For `undefined network "x"` (or secret, config, volume) in service `service`, the path
    /// under the service of the entry that names it.
    fn undefined_reference(&self, service: &str, message: &str) -> Option<Vec<String>> {
        let rest = message.strip_prefix("undefined ")?;
        let (kind, quoted) = rest.split_once(' ')?;
        let target = quoted.trim_matches('"');
        let field = match kind {
            "network" => "networks",
            "secret" => "secrets",
            "config" => "configs",
            "volume" => "volumes",
            _ => return None,
        };
        let entries = self.value.get("services")?.get(service)?.get(field)?;
        let names = |v: &Value| -> bool {
            match v {
                Value::String(s) => {
                    s == target || (field == "volumes" && s.split(':').next() == Some(target))
                }
                Value::Mapping(m) => m.get("source").and_then(Value::as_str) == Some(target),
                _ => false,
            }
        };
        let entry = match entries {
            Value::Sequence(items) => index_component(items.iter().position(names)?),
            Value::Mapping(m) => m.keys().map(interpolate::key_text).find(|k| k == target)?,
            _ => return None,
        };
        Some(vec![field.to_string(), entry])
    }
}

/// The top-level keys in the order `docker stack config` prints them.
const TOP_LEVEL_ORDER: [&str; 7] = [
    "version", "name", "services", "networks", "volumes", "secrets", "configs",
];

/// The merged, interpolated files as YAML, for `shoal stack config`: the top-level sections in
/// Docker's order, every other mapping sorted by key.
pub fn config_yaml(loaded: &Loaded) -> String {
    let mut top = Mapping::new();
    if let Value::Mapping(m) = &loaded.value {
        for key in TOP_LEVEL_ORDER {
            if let Some(v) = m.get(key) {
                top.insert(Value::from(key), sorted(v));
            }
        }
        for (k, v) in m {
            if !top.contains_key(k) {
                top.insert(k.clone(), sorted(v));
            }
        }
    }
    serde_yaml::to_string(&Value::Mapping(top)).unwrap_or_default()
}

fn sorted(v: &Value) -> Value {
    match v {
        Value::Mapping(m) => {
            let mut entries: Vec<(&Value, &Value)> = m.iter().collect();
            entries.sort_by_key(|(k, _)| interpolate::key_text(k));
            Value::Mapping(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sorted(v)))
                    .collect(),
            )
        }
        Value::Sequence(items) => Value::Sequence(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn locate_prefers_the_file_that_set_the_key() {
        let a = Source::new(
            "a.yml",
            "services:\n  web:\n    image: a\n    deploy:\n      replicas: 2\n",
        );
        let b = Source::new("b.yml", "services:\n  web:\n    image: b\n");
        let loaded = load(&[a, b], &env(&[])).expect("load");
        let p = |s: &str| s.split('.').map(str::to_string).collect::<Vec<_>>();
        assert_eq!(loaded.locate(&p("services.web.image")), Some(("b.yml", 3)));
        assert_eq!(
            loaded.locate(&p("services.web.deploy.replicas")),
            Some(("a.yml", 5))
        );
        assert_eq!(
            loaded.locate(&p("services.web.deploy.replicas.x")),
            Some(("a.yml", 5))
        );
    }

    #[test]
    fn model_errors_are_placed_at_their_line() {
        let loaded = load(
            &[Source::new("c.yml", "services:\n  web:\n    image: a\n    ports:\n      - 80\n      - target: 81\n        bogus: 1\n")],
            &env(&[]),
        )
        .expect("load");
        let e = loaded.model_error(model::ModelError {
            path: vec!["services".into(), "web".into(), "ports".into(), "1".into()],
            message: "Additional property bogus is not allowed".into(),
        });
        assert_eq!(
            e.to_string(),
            "c.yml:7: services.web.ports.1 Additional property bogus is not allowed"
        );
        let e = loaded.model_error(model::ModelError {
            path: vec!["services".into(), "web".into(), "image".into()],
            message: "boom".into(),
        });
        assert_eq!(e.to_string(), "c.yml:3: services.web.image: boom");
    }

    #[test]
    fn config_is_sorted_like_docker() {
        let loaded = load(
            &[Source::new("d.yml", "networks:\n  n: {}\nservices:\n  web:\n    image: ${IMG}\n    environment: {B: \"2\", A: \"1\"}\nversion: \"3.8\"\n")],
            &env(&[("IMG", "nginx")]),
        )
        .expect("load");
        assert_eq!(
            config_yaml(&loaded),
            "version: '3.8'\nservices:\n  web:\n    environment:\n      A: '1'\n      B: '2'\n    image: nginx\nnetworks:\n  n: {}\n"
        );
    }
}
