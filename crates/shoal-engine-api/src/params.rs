//! Query parameters and the `filters` parameter, parsed the way Docker parses them.
//!
//! ```text
//!   ?force=1&filters={"label":{"k=v":true}}      JSON map form
//!   ?filters={"label":["k=v"]}                   legacy list form
//! ```
//! Booleans follow Docker's two readers: [`Params::flag`] (`BoolValue`: anything but empty, `0`,
//! `no`, `false`, `none` is true) and [`Params::parse_bool`] (`strconv.ParseBool`, strict).

use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The decoded query string of a request (repeated keys kept, first one wins in `get`).
#[derive(Clone, Debug, Default)]
pub struct Params(pub Vec<(String, String)>);

fn decode(s: &str) -> String {
    let plus = s.replace('+', " ");
    urlencoding::decode(&plus)
        .map(|c| c.into_owned())
        .unwrap_or(plus)
}

impl Params {
    /// Parses a raw query string (`a=1&b=x%20y`).
    pub fn parse(raw: Option<&str>) -> Self {
        let mut v = Vec::new();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, val) = pair.split_once('=').unwrap_or((pair, ""));
            v.push((decode(k), decode(val)));
        }
        Params(v)
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Docker's `BoolValue`: false when absent, empty, `0`, `no`, `false` or `none`.
    pub fn flag(&self, key: &str) -> bool {
        let v = self.get(key).unwrap_or("").trim().to_ascii_lowercase();
        !matches!(v.as_str(), "" | "0" | "no" | "false" | "none")
    }

    /// `strconv.ParseBool` of `key`: `None` when absent or empty.
    pub fn parse_bool(&self, key: &str) -> Result<Option<bool>, String> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => parse_go_bool(v).map(Some),
        }
    }

    /// The `filters` parameter.
    pub fn filters(&self) -> Result<Filters, ApiError> {
        Filters::from_json(self.get("filters").unwrap_or(""))
    }

    /// A required `version` parameter of an update (`what` names the object in the message).
    pub fn version(&self, what: &str) -> Result<u64, ApiError> {
        let raw = self.get("version").unwrap_or("");
        raw.parse::<u64>().map_err(|_| {
            let why = if raw.is_empty() || !raw.chars().all(|c| c.is_ascii_digit()) {
                "invalid syntax"
            } else {
                "value out of range"
            };
            ApiError::bad_request(format!(
                "invalid {what} version '{raw}': strconv.ParseUint: parsing \"{raw}\": {why}"
            ))
        })
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(v: &str) -> Result<bool, String> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!(
            "strconv.ParseBool: parsing \"{v}\": invalid syntax"
        )),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Params::parse(parts.uri.query()))
    }
}

/// A decoded `filters` parameter: key -> set of values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    fields: BTreeMap<String, BTreeSet<String>>,
}

impl Filters {
    /// Parses the JSON map form, falling back to the legacy list form; empty means no filter.
    pub fn from_json(raw: &str) -> Result<Self, ApiError> {
        let mut f = Filters::default();
        if raw.is_empty() {
            return Ok(f);
        }
        let invalid = || ApiError::bad_request("invalid filter");
        let v: serde_json::Value = serde_json::from_str(raw).map_err(|_| invalid())?;
        let obj = match v {
            serde_json::Value::Object(o) => o,
            serde_json::Value::Null => return Ok(f),
            _ => return Err(invalid()),
        };
        for (k, vals) in obj {
            let set = f.fields.entry(k).or_default();
            match vals {
                serde_json::Value::Object(m) => {
                    set.extend(m.into_iter().map(|(v, _)| v));
                }
                serde_json::Value::Array(a) => {
                    for item in a {
                        match item {
                            serde_json::Value::String(s) => {
                                set.insert(s);
                            }
                            _ => return Err(invalid()),
                        }
                    }
                }
                serde_json::Value::Null => {}
                _ => return Err(invalid()),
            }
        }
        Ok(f)
    }

    /// Builds filters from pairs (tests, internal callers).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut f = Filters::default();
        for (k, v) in pairs {
            f.fields
                .entry(k.to_string())
                .or_default()
                .insert(v.to_string());
        }
        f
    }

    /// Refuses keys not in `accepted` (`invalid filter 'x'`).
    pub fn validate(&self, accepted: &[&str]) -> Result<(), ApiError> {
        for k in self.fields.keys() {
            if !accepted.contains(&k.as_str()) {
                return Err(ApiError::bad_request(format!("invalid filter '{k}'")));
            }
        }
        Ok(())
    }

    /// The values of `key`.
    pub fn get(&self, key: &str) -> Vec<String> {
        self.fields
            .get(key)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether `key` has at least one value.
    pub fn has(&self, key: &str) -> bool {
        self.fields.get(key).is_some_and(|s| !s.is_empty())
    }

    /// No values for `key`, or one equal to `v`.
    pub fn exact(&self, key: &str, v: &str) -> bool {
        match self.fields.get(key) {
            Some(s) if !s.is_empty() => s.contains(v),
            _ => true,
        }
    }

    /// No values for `key`, or one that is a prefix of `v`.
    pub fn prefix(&self, key: &str, v: &str) -> bool {
        match self.fields.get(key) {
            Some(s) if !s.is_empty() => s.iter().any(|p| v.starts_with(p.as_str())),
            _ => true,
        }
    }

    /// swarmkit's label matching: every `k` must be present, every `k=v` must be equal.
    pub fn labels(&self, key: &str, labels: Option<&HashMap<String, String>>) -> bool {
        let Some(wanted) = self.fields.get(key).filter(|s| !s.is_empty()) else {
            return true;
        };
        let empty = HashMap::new();
        let labels = labels.unwrap_or(&empty);
        let mut want: HashMap<&str, &str> = HashMap::new();
        for w in wanted {
            let (k, v) = w.split_once('=').unwrap_or((w.as_str(), ""));
            want.insert(k, v);
        }
        want.iter().all(|(k, v)| match labels.get(*k) {
            None => false,
            Some(have) => v.is_empty() || have == v,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_filter_forms_parse() {
        let a = Filters::from_json(r#"{"label":{"a=b":true},"name":{"web":true}}"#).unwrap();
        let b = Filters::from_json(r#"{"label":["a=b"],"name":["web"]}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.get("name"), vec!["web"]);
        assert!(Filters::from_json("").unwrap().get("x").is_empty());
        assert_eq!(
            Filters::from_json("{nope").unwrap_err().message(),
            "invalid filter"
        );
        assert_eq!(
            a.validate(&["name"]).unwrap_err().message(),
            "invalid filter 'label'"
        );
        assert!(a.validate(&["name", "label"]).is_ok());
    }

    #[test]
    fn label_and_prefix_matching() {
        let f = Filters::from_pairs([("label", "a=b"), ("label", "c"), ("name", "we")]);
        let mut l = HashMap::from([("a".to_string(), "b".to_string())]);
        assert!(!f.labels("label", Some(&l)));
        l.insert("c".into(), "anything".into());
        assert!(f.labels("label", Some(&l)));
        l.insert("a".into(), "x".into());
        assert!(!f.labels("label", Some(&l)));
        assert!(f.prefix("name", "web"));
        assert!(!f.prefix("name", "api"));
        assert!(f.prefix("id", "anything"));
    }

    #[test]
    fn params_decode_and_booleans() {
        let p = Params::parse(Some("force=1&x=a%20b+c&status=maybe&v=&no=none"));
        assert!(p.flag("force"));
        assert!(!p.flag("no"));
        assert!(!p.flag("missing"));
        assert_eq!(p.get("x"), Some("a b c"));
        assert!(p.parse_bool("status").is_err());
        assert_eq!(p.parse_bool("v"), Ok(None));
        assert_eq!(
            Params::parse(Some("version=abc"))
                .version("node")
                .unwrap_err()
                .message(),
            "invalid node version 'abc': strconv.ParseUint: parsing \"abc\": invalid syntax"
        );
        assert_eq!(
            Params::parse(Some("version=12")).version("node").ok(),
            Some(12)
        );
    }
}
