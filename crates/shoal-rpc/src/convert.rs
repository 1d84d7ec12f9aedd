//! Conversions between the wire messages (`pb`) and the types the handlers and callers use:
//! HTTP requests and responses, log lines and options, roles, JSON payloads.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use shoal_agent::runtime::{LogLine, LogOptions, LogStream};

use crate::pb;
use crate::{PeerRole, RpcError};

pub(crate) fn to_json<T: Serialize>(what: &str, v: &T) -> Result<Vec<u8>, RpcError> {
    serde_json::to_vec(v).map_err(|e| RpcError::Internal(format!("cannot encode {what}: {e}")))
}

pub(crate) fn from_json<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, RpcError> {
    serde_json::from_slice(bytes).map_err(|e| RpcError::bad_json(what, e))
}

pub(crate) fn role_to_pb(r: PeerRole) -> pb::NodeRole {
    match r {
        PeerRole::Worker => pb::NodeRole::Worker,
        PeerRole::Manager => pb::NodeRole::Manager,
    }
}

pub(crate) fn role_from_pb(r: i32) -> Result<PeerRole, RpcError> {
    match pb::NodeRole::try_from(r) {
        Ok(pb::NodeRole::Worker) => Ok(PeerRole::Worker),
        Ok(pb::NodeRole::Manager) => Ok(PeerRole::Manager),
        _ => Err(RpcError::Internal(format!(
            "the CA answered an unknown node role ({r})"
        ))),
    }
}

fn headers_to_pb(h: &http::HeaderMap) -> Vec<pb::Header> {
    h.iter()
        .map(|(k, v)| pb::Header {
            name: k.as_str().to_string(),
            value: v.as_bytes().to_vec(),
        })
        .collect()
}

fn headers_from_pb(list: Vec<pb::Header>) -> Result<http::HeaderMap, RpcError> {
    let mut map = http::HeaderMap::with_capacity(list.len());
    for h in list {
        let name = http::header::HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
            RpcError::InvalidArgument(format!("invalid HTTP header name {:?}", h.name))
        })?;
        let value = http::HeaderValue::from_bytes(&h.value).map_err(|_| {
            RpcError::InvalidArgument(format!("invalid value for HTTP header {:?}", h.name))
        })?;
        map.append(name, value);
    }
    Ok(map)
}

fn status_from_pb(code: u32) -> Result<http::StatusCode, RpcError> {
    u16::try_from(code)
        .ok()
        .and_then(|c| http::StatusCode::from_u16(c).ok())
        .ok_or_else(|| RpcError::Internal(format!("invalid HTTP status {code}")))
}

pub(crate) fn request_to_pb(req: http::Request<Bytes>) -> pb::ApiRequest {
    let (parts, body) = req.into_parts();
    pb::ApiRequest {
        method: parts.method.as_str().to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into()),
        headers: headers_to_pb(&parts.headers),
        body: body.to_vec(),
    }
}

pub(crate) fn request_from_pb(req: pb::ApiRequest) -> Result<http::Request<Bytes>, RpcError> {
    let method = http::Method::from_bytes(req.method.as_bytes())
        .map_err(|_| RpcError::InvalidArgument(format!("invalid HTTP method {:?}", req.method)))?;
    if !req.path_and_query.starts_with('/') {
        return Err(RpcError::InvalidArgument(format!(
            "forwarded path {:?} must start with '/'",
            req.path_and_query
        )));
    }
    let uri: http::Uri = req.path_and_query.parse().map_err(|_| {
        RpcError::InvalidArgument(format!("invalid forwarded path {:?}", req.path_and_query))
    })?;
    let mut out = http::Request::new(Bytes::from(req.body));
    *out.method_mut() = method;
    *out.uri_mut() = uri;
    *out.headers_mut() = headers_from_pb(req.headers)?;
    Ok(out)
}

pub(crate) fn response_to_pb(resp: http::Response<Bytes>) -> pb::ApiResponse {
    let (parts, body) = resp.into_parts();
    pb::ApiResponse {
        status: u32::from(parts.status.as_u16()),
        headers: headers_to_pb(&parts.headers),
        body: body.to_vec(),
    }
}

pub(crate) fn response_from_pb(resp: pb::ApiResponse) -> Result<http::Response<Bytes>, RpcError> {
    let mut out = http::Response::new(Bytes::from(resp.body));
    *out.status_mut() = status_from_pb(resp.status)?;
    *out.headers_mut() = headers_from_pb(resp.headers)?;
    Ok(out)
}

pub(crate) fn head_to_pb<B>(resp: &http::Response<B>) -> pb::ApiResponseHead {
    pb::ApiResponseHead {
        status: u32::from(resp.status().as_u16()),
        headers: headers_to_pb(resp.headers()),
    }
}

pub(crate) fn head_from_pb(head: pb::ApiResponseHead) -> Result<http::Response<()>, RpcError> {
    let mut out = http::Response::new(());
    *out.status_mut() = status_from_pb(head.status)?;
    *out.headers_mut() = headers_from_pb(head.headers)?;
    Ok(out)
}

pub(crate) fn log_options_to_pb(task_id: &str, o: &LogOptions) -> pb::TaskLogsRequest {
    pb::TaskLogsRequest {
        task_id: task_id.to_string(),
        follow: o.follow,
        tail: o.tail.map(|t| t as u64),
        since_unix_nanos: o.since.and_then(|t| t.timestamp_nanos_opt()),
        timestamps: o.timestamps,
    }
}

pub(crate) fn log_options_from_pb(r: &pb::TaskLogsRequest) -> LogOptions {
    LogOptions {
        follow: r.follow,
        tail: r.tail.map(|t| usize::try_from(t).unwrap_or(usize::MAX)),
        since: r
            .since_unix_nanos
            .map(DateTime::<Utc>::from_timestamp_nanos),
        timestamps: r.timestamps,
    }
}

pub(crate) fn log_line_to_pb(l: LogLine) -> pb::LogLineMessage {
    pb::LogLineMessage {
        ts_unix_nanos: l.timestamp.timestamp_nanos_opt().unwrap_or_default(),
        stream: u32::from(u8::from(l.stream)),
        line: l.line,
    }
}

pub(crate) fn log_line_from_pb(m: pb::LogLineMessage) -> Result<LogLine, RpcError> {
    let stream = u8::try_from(m.stream)
        .map_err(|_| format!("unknown log stream {}", m.stream))
        .and_then(LogStream::try_from)
        .map_err(RpcError::Internal)?;
    Ok(LogLine {
        timestamp: DateTime::<Utc>::from_timestamp_nanos(m.ts_unix_nanos),
        stream,
        line: m.line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_request_roundtrip() {
        let req = http::Request::builder()
            .method("POST")
            .uri("/v1.51/services/create?x=1")
            .header("content-type", "application/json")
            .header("x-registry-auth", "abc")
            .body(Bytes::from_static(b"{}"))
            .unwrap();
        let back = request_from_pb(request_to_pb(req)).unwrap();
        assert_eq!(back.method(), http::Method::POST);
        assert_eq!(back.uri(), "/v1.51/services/create?x=1");
        assert_eq!(back.headers()["x-registry-auth"], "abc");
        assert_eq!(back.body().as_ref(), b"{}");
    }

    #[test]
    fn bad_requests_are_invalid_arguments() {
        let mut r = pb::ApiRequest {
            method: "GET".into(),
            path_and_query: "no-slash".into(),
            ..Default::default()
        };
        assert!(matches!(
            request_from_pb(r.clone()),
            Err(RpcError::InvalidArgument(_))
        ));
        r.path_and_query = "/ok".into();
        r.method = "BAD METHOD".into();
        assert!(matches!(
            request_from_pb(r),
            Err(RpcError::InvalidArgument(_))
        ));
    }

    #[test]
    fn log_options_roundtrip() {
        let o = LogOptions {
            follow: true,
            tail: Some(10),
            since: Some(DateTime::<Utc>::from_timestamp_nanos(
                1_700_000_000_123_456_789,
            )),
            timestamps: true,
        };
        assert_eq!(log_options_from_pb(&log_options_to_pb("t", &o)), o);
        let all = LogOptions::default();
        assert_eq!(log_options_from_pb(&log_options_to_pb("t", &all)), all);
    }

    #[test]
    fn log_line_roundtrip() {
        let l = LogLine {
            timestamp: DateTime::<Utc>::from_timestamp_nanos(1_700_000_000_000_000_001),
            stream: LogStream::Stderr,
            line: b"oops".to_vec(),
        };
        assert_eq!(log_line_from_pb(log_line_to_pb(l.clone())).unwrap(), l);
        let bad = pb::LogLineMessage {
            stream: 7,
            ..Default::default()
        };
        assert!(log_line_from_pb(bad).is_err());
    }
}
