//! API versions: the `/v{major}.{minor}` path prefix and the headers every response carries.
//!
//! ```text
//!   /v1.47/services?x ──► strip prefix, check 1.24 <= v <= 1.51 ──► /services?x  + ApiVersion(1.47)
//!   /services         ──────────────────────────────────────────► /services   + ApiVersion(1.51)
//!   every response    ◄── Api-Version: 1.51, Ostype: linux, Docker-Experimental: false, Server
//! ```

use crate::error::error_response;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::cmp::Ordering;
use std::fmt;

/// The highest (and default) API version served.
pub const MAX_API_VERSION: ApiVersion = ApiVersion(1, 51);
/// The lowest API version served.
pub const MIN_API_VERSION: ApiVersion = ApiVersion(1, 24);

/// A `major.minor` API version; the request's one is in the request extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion(pub u32, pub u32);

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

impl ApiVersion {
    /// Whether this version is at least `major.minor`.
    pub fn at_least(self, major: u32, minor: u32) -> bool {
        self >= ApiVersion(major, minor)
    }
}

/// Compares dotted versions as Docker does: numerically, part by part, missing parts as 0.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let parts = |s: &str| -> Vec<u64> { s.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    let (pa, pb) = (parts(a), parts(b));
    for i in 0..pa.len().max(pb.len()) {
        let x = pa.get(i).copied().unwrap_or(0);
        let y = pb.get(i).copied().unwrap_or(0);
        match x.cmp(&y) {
            Ordering::Equal => continue,
            o => return o,
        }
    }
    Ordering::Equal
}

/// Splits `/v1.51/rest` into (`1.51`, `/rest`); `None` when the path has no version prefix.
pub fn split_version(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/v")?;
    let end = rest.find('/').unwrap_or(rest.len());
    let version = &rest[..end];
    if version.is_empty() || !version.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    Some((version, &rest[end..]))
}

fn to_api_version(v: &str) -> ApiVersion {
    let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    ApiVersion(it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// Adds the headers Docker sets on every response.
fn add_headers(resp: &mut Response, server_version: &str) {
    let h = resp.headers_mut();
    h.insert("Api-Version", HeaderValue::from_static(MAX_API_VERSION_STR));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    if let Ok(v) = HeaderValue::from_str(&format!("Shoal/{server_version} (linux)")) {
        h.insert(header::SERVER, v);
    }
}

/// `MAX_API_VERSION` as a string.
pub const MAX_API_VERSION_STR: &str = "1.51";
/// `MIN_API_VERSION` as a string.
pub const MIN_API_VERSION_STR: &str = "1.24";

/// Middleware: strips and checks the version prefix, records the version, adds the headers.
pub async fn version_middleware(mut req: Request, next: Next) -> Response {
    let server_version = env!("CARGO_PKG_VERSION");
    let path = req.uri().path().to_string();
    let mut version = MAX_API_VERSION;
    if let Some((v, rest)) = split_version(&path) {
        if compare_versions(v, MAX_API_VERSION_STR) == Ordering::Greater {
            let mut resp = error_response(
                StatusCode::BAD_REQUEST,
                &format!(
                    "client version {v} is too new. Maximum supported API version is {MAX_API_VERSION_STR}"
                ),
            );
            add_headers(&mut resp, server_version);
            return resp;
        }
        if compare_versions(v, MIN_API_VERSION_STR) == Ordering::Less {
            // Like Docker, answer clients this old in plain text: they do not parse JSON errors.
            let mut resp = (
                StatusCode::BAD_REQUEST,
                format!(
                    "client version {v} is too old. Minimum supported API version is {MIN_API_VERSION_STR}, please upgrade your client to a newer version\n"
                ),
            )
                .into_response();
            add_headers(&mut resp, server_version);
            return resp;
        }
        version = to_api_version(v);
        let rest = if rest.is_empty() { "/" } else { rest };
        let new = match req.uri().query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_string(),
        };
        if let Ok(uri) = new.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
    }
    req.extensions_mut().insert(version);
    let mut resp = next.run(req).await;
    add_headers(&mut resp, server_version);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare_versions("1.9", "1.24"), Ordering::Less);
        assert_eq!(compare_versions("1.51", "1.51.0"), Ordering::Equal);
        assert_eq!(compare_versions("1.52", "1.51"), Ordering::Greater);
        assert_eq!(compare_versions("2", "1.51"), Ordering::Greater);
    }

    #[test]
    fn prefixes_split() {
        assert_eq!(split_version("/v1.51/info"), Some(("1.51", "/info")));
        assert_eq!(split_version("/v1.51"), Some(("1.51", "")));
        assert_eq!(split_version("/version"), None);
        assert_eq!(split_version("/volumes"), None);
        assert_eq!(split_version("/info"), None);
        assert!(ApiVersion(1, 41).at_least(1, 41));
        assert!(!ApiVersion(1, 40).at_least(1, 41));
        assert_eq!(to_api_version("1.47"), ApiVersion(1, 47));
    }
}
