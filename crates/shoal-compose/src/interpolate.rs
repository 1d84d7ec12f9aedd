//! Variable interpolation in compose files, as the docker CLI does it.
//!
//! Every string value (never a key) under `services`, `networks`, `volumes`, `secrets` and
//! `configs` is substituted: `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
//! `${VAR:?error}`, `${VAR?error}`, `${VAR:+alternative}`, `${VAR+alternative}`, and `$$` for a
//! literal `$`. Defaults are taken literally (no nested substitution). An unset variable without
//! a default becomes the empty string, with Docker's warning. Values at the paths where Docker
//! expects a number or a boolean (`deploy.replicas`, `ports[].published`, `read_only`, ...) are
//! converted back from the substituted string.

use std::collections::HashMap;

use serde_yaml::Value;

use crate::error::{component_index, index_component};

/// The top-level sections that are interpolated.
pub const SECTIONS: [&str; 5] = ["services", "networks", "volumes", "secrets", "configs"];

/// Why a template could not be substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// The template is malformed (a `$` followed by nothing valid); holds the whole template.
    Invalid(String),
    /// `${VAR:?message}` or `${VAR?message}` with the variable missing.
    Required {
        /// The variable.
        name: String,
        /// The message written after `?`.
        message: String,
    },
}

impl TemplateError {
    /// The text Docker quotes in its error: the template, or the missing-variable message.
    pub fn template(&self) -> String {
        match self {
            TemplateError::Invalid(t) => t.clone(),
            TemplateError::Required { name, message } => {
                format!("required variable {name} is missing a value: {message}")
            }
        }
    }
}

/// Docker's warning for a variable that is used but not set.
pub fn unset_warning(name: &str) -> String {
    format!("The {name:?} variable is not set. Defaulting to a blank string.")
}

fn is_name_start(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

fn is_name_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

/// Substitutes the variables of `template` from `env`. Unset variables used without a default
/// are added to `unset` (once each, in the order met).
pub fn substitute(
    template: &str,
    env: &HashMap<String, String>,
    unset: &mut Vec<String>,
) -> Result<String, TemplateError> {
    let invalid = || TemplateError::Invalid(template.to_string());
    let chars: Vec<char> = template.chars().collect();
    let mut out = String::with_capacity(template.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('$') => {
                out.push('$');
                i += 2;
            }
            Some(&c) if is_name_start(c) => {
                let start = i + 1;
                let mut end = start;
                while end < chars.len() && is_name_char(chars[end]) {
                    end += 1;
                }
                let name: String = chars[start..end].iter().collect();
                out.push_str(&plain(&name, env, unset));
                i = end;
            }
            Some('{') => {
                let start = i + 2;
                let close = chars[start..]
                    .iter()
                    .position(|&c| c == '}')
                    .map(|p| start + p)
                    .ok_or_else(invalid)?;
                let inner: String = chars[start..close].iter().collect();
                out.push_str(&braced(&inner, env, unset).ok_or_else(invalid)??);
                i = close + 1;
            }
            _ => return Err(invalid()),
        }
    }
    Ok(out)
}

fn plain(name: &str, env: &HashMap<String, String>, unset: &mut Vec<String>) -> String {
    match env.get(name) {
        Some(v) => v.clone(),
        None => {
            if !unset.iter().any(|u| u == name) {
                unset.push(name.to_string());
            }
            String::new()
        }
    }
}

/// Substitutes the inside of `${...}`; `None` when it is malformed.
fn braced(
    inner: &str,
    env: &HashMap<String, String>,
    unset: &mut Vec<String>,
) -> Option<Result<String, TemplateError>> {
    let name_len = inner
        .char_indices()
        .find(|&(i, c)| {
            !(if i == 0 {
                is_name_start(c)
            } else {
                is_name_char(c)
            })
        })
        .map(|(i, _)| i)
        .unwrap_or(inner.len());
    if name_len == 0 {
        return None;
    }
    let (name, rest) = inner.split_at(name_len);
    if rest.is_empty() {
        return Some(Ok(plain(name, env, unset)));
    }
    let (colon, rest) = match rest.strip_prefix(':') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let mut op = rest.chars();
    let op_char = op.next()?;
    let arg = op.as_str();
    let value = env.get(name);
    // With a colon an empty value counts as missing.
    let present = match value {
        Some(v) => !colon || !v.is_empty(),
        None => false,
    };
    let value = value.cloned().unwrap_or_default();
    Some(match op_char {
        '-' => Ok(if present { value } else { arg.to_string() }),
        '+' => Ok(if present {
            arg.to_string()
        } else {
            String::new()
        }),
        '?' => {
            if present {
                Ok(value)
            } else {
                Err(TemplateError::Required {
                    name: name.to_string(),
                    message: arg.to_string(),
                })
            }
        }
        _ => return None,
    })
}

/// The type a value is converted to after substitution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cast {
    Int,
    Float,
    Bool,
}

/// Where Docker converts substituted strings back to numbers and booleans. `*` matches any
/// key, `[]` any list item.
const CASTS: &[(&[&str], Cast)] = &[
    (&["services", "*", "configs", "[]", "mode"], Cast::Int),
    (&["services", "*", "secrets", "[]", "mode"], Cast::Int),
    (&["services", "*", "healthcheck", "retries"], Cast::Int),
    (&["services", "*", "healthcheck", "disable"], Cast::Bool),
    (&["services", "*", "deploy", "replicas"], Cast::Int),
    (
        &["services", "*", "deploy", "update_config", "parallelism"],
        Cast::Int,
    ),
    (
        &[
            "services",
            "*",
            "deploy",
            "update_config",
            "max_failure_ratio",
        ],
        Cast::Float,
    ),
    (
        &["services", "*", "deploy", "rollback_config", "parallelism"],
        Cast::Int,
    ),
    (
        &[
            "services",
            "*",
            "deploy",
            "rollback_config",
            "max_failure_ratio",
        ],
        Cast::Float,
    ),
    (
        &["services", "*", "deploy", "restart_policy", "max_attempts"],
        Cast::Int,
    ),
    (
        &[
            "services",
            "*",
            "deploy",
            "placement",
            "max_replicas_per_node",
        ],
        Cast::Int,
    ),
    (&["services", "*", "ports", "[]", "target"], Cast::Int),
    (&["services", "*", "ports", "[]", "published"], Cast::Int),
    (&["services", "*", "ulimits", "*"], Cast::Int),
    (&["services", "*", "ulimits", "*", "hard"], Cast::Int),
    (&["services", "*", "ulimits", "*", "soft"], Cast::Int),
    (&["services", "*", "privileged"], Cast::Bool),
    (&["services", "*", "read_only"], Cast::Bool),
    (&["services", "*", "stdin_open"], Cast::Bool),
    (&["services", "*", "tty"], Cast::Bool),
    (&["services", "*", "init"], Cast::Bool),
    (&["services", "*", "volumes", "[]", "read_only"], Cast::Bool),
    (
        &["services", "*", "volumes", "[]", "volume", "nocopy"],
        Cast::Bool,
    ),
    (&["networks", "*", "external"], Cast::Bool),
    (&["networks", "*", "internal"], Cast::Bool),
    (&["networks", "*", "attachable"], Cast::Bool),
    (&["volumes", "*", "external"], Cast::Bool),
    (&["secrets", "*", "external"], Cast::Bool),
    (&["configs", "*", "external"], Cast::Bool),
];

fn cast_for(path: &[String]) -> Option<Cast> {
    CASTS.iter().find_map(|(pattern, cast)| {
        let matches = pattern.len() == path.len()
            && pattern.iter().zip(path).all(|(p, c)| match *p {
                "*" => component_index(c).is_none(),
                "[]" => component_index(c).is_some(),
                p => p == c,
            });
        matches.then_some(*cast)
    })
}

/// Converts `s` as Docker does at a typed path; `None` leaves the string (the model then
/// reports the wrong type with its position).
fn convert(s: &str, cast: Cast) -> Option<Value> {
    match cast {
        Cast::Int => s.trim().parse::<i64>().ok().map(Value::from),
        Cast::Float => s.trim().parse::<f64>().ok().map(Value::from),
        Cast::Bool => match s.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" | "true" | "on" => Some(Value::Bool(true)),
            "n" | "no" | "false" | "off" => Some(Value::Bool(false)),
            _ => None,
        },
    }
}

/// Interpolates the sections of a whole compose file in place. On error, returns the key path
/// of the value (list items as `[i]`) and the template error.
pub fn interpolate_file(
    file: &mut Value,
    env: &HashMap<String, String>,
    unset: &mut Vec<String>,
) -> Result<(), (Vec<String>, TemplateError)> {
    let Value::Mapping(map) = file else {
        return Ok(());
    };
    for (key, value) in map.iter_mut() {
        let Some(section) = key.as_str() else {
            continue;
        };
        if SECTIONS.contains(&section) {
            let mut path = vec![section.to_string()];
            interpolate_value(value, &mut path, env, unset)?;
        }
    }
    Ok(())
}

/// Interpolates every string under `value`, which is at `path`.
pub fn interpolate_value(
    value: &mut Value,
    path: &mut Vec<String>,
    env: &HashMap<String, String>,
    unset: &mut Vec<String>,
) -> Result<(), (Vec<String>, TemplateError)> {
    match value {
        Value::String(s) => {
            let out = substitute(s, env, unset).map_err(|e| (path.clone(), e))?;
            match cast_for(path).and_then(|c| convert(&out, c)) {
                Some(v) => *value = v,
                None => *s = out,
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(index_component(i));
                interpolate_value(item, path, env, unset)?;
                path.pop();
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                path.push(key_text(key));
                interpolate_value(item, path, env, unset)?;
                path.pop();
            }
        }
        Value::Tagged(tagged) => interpolate_value(&mut tagged.value, path, env, unset)?,
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

/// A mapping key as text (`80`, `true` and `~` keys are printed as written).
pub fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_string(),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HashMap<String, String> {
        [("SET", "value"), ("EMPTY", ""), ("lower", "low")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sub(t: &str) -> Result<String, TemplateError> {
        substitute(t, &env(), &mut Vec::new())
    }

    #[test]
    fn plain_and_braced_variables() {
        assert_eq!(sub("a $SET b ${SET}c").as_deref(), Ok("a value b valuec"));
        assert_eq!(sub("${lower}/$lower").as_deref(), Ok("low/low"));
        assert_eq!(sub("no vars").as_deref(), Ok("no vars"));
        assert_eq!(sub("$$SET and $${SET}").as_deref(), Ok("$SET and ${SET}"));
    }

    #[test]
    fn unset_variables_are_blank_and_reported() {
        let mut unset = Vec::new();
        let out = substitute("x${NOPE}y$ALSO_NOT$NOPE", &env(), &mut unset);
        assert_eq!(out.as_deref(), Ok("xy"));
        assert_eq!(unset, vec!["NOPE".to_string(), "ALSO_NOT".to_string()]);
        assert_eq!(
            unset_warning("NOPE"),
            "The \"NOPE\" variable is not set. Defaulting to a blank string."
        );
    }

    #[test]
    fn defaults_and_alternatives() {
        assert_eq!(sub("${NOPE:-d}").as_deref(), Ok("d"));
        assert_eq!(sub("${EMPTY:-d}").as_deref(), Ok("d"));
        assert_eq!(sub("${EMPTY-d}").as_deref(), Ok(""));
        assert_eq!(sub("${NOPE-d}").as_deref(), Ok("d"));
        assert_eq!(sub("${SET:-d}").as_deref(), Ok("value"));
        assert_eq!(sub("${SET:+alt}").as_deref(), Ok("alt"));
        assert_eq!(sub("${EMPTY:+alt}").as_deref(), Ok(""));
        assert_eq!(sub("${EMPTY+alt}").as_deref(), Ok("alt"));
        assert_eq!(sub("${NOPE+alt}").as_deref(), Ok(""));
        assert_eq!(sub("${NOPE:-a b:c}").as_deref(), Ok("a b:c"));
    }

    #[test]
    fn required_variables() {
        assert_eq!(sub("${SET:?boom}").as_deref(), Ok("value"));
        assert_eq!(sub("${EMPTY?boom}").as_deref(), Ok(""));
        let err = sub("${EMPTY:?must be set}").expect_err("required");
        assert_eq!(
            err.template(),
            "required variable EMPTY is missing a value: must be set"
        );
        assert!(sub("${NOPE?x}").is_err());
    }

    #[test]
    fn malformed_templates() {
        for t in [
            "${", "a ${SET", "$", "x $1", "${}", "${1A}", "${SET:}", "${SET%x}", "$ {A}",
        ] {
            assert_eq!(sub(t), Err(TemplateError::Invalid(t.to_string())), "{t}");
        }
    }

    #[test]
    fn typed_paths_are_converted_back() {
        let text = "services:\n  web:\n    image: ${SET}\n    read_only: \"${YES}\"\n    deploy:\n      replicas: ${N}\n    ports:\n      - published: ${N}\n        target: ${BAD}\n    environment:\n      N: ${N}\nnetworks:\n  n:\n    external: ${YES}\n";
        let mut v: Value = serde_yaml::from_str(text).expect("yaml");
        let mut env = env();
        env.insert("N".into(), "5".into());
        env.insert("YES".into(), "yes".into());
        env.insert("BAD".into(), "eighty".into());
        interpolate_file(&mut v, &env, &mut Vec::new()).expect("interpolate");
        let web = &v["services"]["web"];
        assert_eq!(web["image"], Value::from("value"));
        assert_eq!(web["read_only"], Value::Bool(true));
        assert_eq!(web["deploy"]["replicas"], Value::from(5));
        assert_eq!(web["ports"][0]["published"], Value::from(5));
        assert_eq!(web["ports"][0]["target"], Value::from("eighty"));
        assert_eq!(web["environment"]["N"], Value::from("5"));
        assert_eq!(v["networks"]["n"]["external"], Value::Bool(true));
    }

    #[test]
    fn errors_carry_the_path() {
        let text = "services:\n  web:\n    volumes:\n      - ${X:?no}\n";
        let mut v: Value = serde_yaml::from_str(text).expect("yaml");
        let (path, _) = interpolate_file(&mut v, &env(), &mut Vec::new()).expect_err("required");
        assert_eq!(path, vec!["services", "web", "volumes", "[0]"]);
    }
}
