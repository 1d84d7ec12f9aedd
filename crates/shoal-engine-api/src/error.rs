//! API errors and the one place they become HTTP responses.
//!
//! ```text
//!   ControlError / backend error ──► ApiError ──► status() + {"message": "..."} (application/json)
//! ```
//!
//! The status decides how clients classify an error (404 not found, 409 conflict, 400 invalid,
//! 503 "not part of a swarm" / "not a manager" / no quorum), so every variant is one class, and
//! the texts are Docker's where clients or users know them.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use shoal_manager::control::ControlError;

/// `swarm init`/`join` on a node that is already in a swarm.
pub const MSG_ALREADY_IN_SWARM: &str = "This node is already part of a swarm. Use \"docker swarm leave\" to leave this swarm and join another one.";
/// A manager-only call on a node that is not in a swarm.
pub const MSG_NOT_IN_SWARM: &str = "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.";
/// A manager-only call on a worker.
pub const MSG_WORKER: &str = "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. Please run this command on a manager node or promote the current node to a manager.";
/// A manager-only call on a manager that is not ready yet.
pub const MSG_MANAGER_NOT_READY: &str = "This node is not a swarm manager. Manager is being prepared or has trouble connecting to the cluster.";
/// A call on a manager whose state is encrypted and locked.
pub const MSG_SWARM_LOCKED: &str = "Swarm is encrypted and needs to be unlocked before it can be used. Please use \"docker swarm unlock\" to unlock it.";
/// `swarm leave` (and similar) when not in a swarm.
pub const MSG_NO_SWARM: &str = "This node is not part of a swarm";
/// `swarm unlock` on a swarm that is not locked.
pub const MSG_NOT_LOCKED: &str = "swarm is not locked";
/// `swarm unlock` with the wrong key.
pub const MSG_INVALID_UNLOCK_KEY: &str = "swarm could not be unlocked: invalid key provided";
/// Unknown route or method.
pub const MSG_PAGE_NOT_FOUND: &str = "page not found";

/// An error answered to an API client. The variant decides the HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or invalid.
    #[error("{0}")]
    BadRequest(String),
    /// 401: wrong credentials or unlock key.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 404: the object (or route) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// 406: the node's swarm state does not allow this.
    #[error("{0}")]
    NotAcceptable(String),
    /// 409: conflicts with an existing object or state.
    #[error("{0}")]
    Conflict(String),
    /// 500: something inside Shoal went wrong.
    #[error("{0}")]
    Internal(String),
    /// 501: not supported.
    #[error("{0}")]
    NotImplemented(String),
    /// 503: not part of a swarm, not a manager, no quorum.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The message sent to the client.
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// 400 with `msg`.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        ApiError::BadRequest(msg.into())
    }

    /// 404 with `msg`.
    pub fn not_found(msg: impl Into<String>) -> Self {
        ApiError::NotFound(msg.into())
    }

    /// 503 with `msg`.
    pub fn unavailable(msg: impl Into<String>) -> Self {
        ApiError::Unavailable(msg.into())
    }

    /// 500 with `msg`.
    pub fn internal(msg: impl Into<String>) -> Self {
        ApiError::Internal(msg.into())
    }

    /// 503: this node is already in a swarm (`init`, `join`).
    pub fn already_in_swarm() -> Self {
        ApiError::Unavailable(MSG_ALREADY_IN_SWARM.into())
    }

    /// 503: this node is not part of a swarm (`leave`).
    pub fn no_swarm() -> Self {
        ApiError::Unavailable(MSG_NO_SWARM.into())
    }

    /// 503: the swarm is locked.
    pub fn swarm_locked() -> Self {
        ApiError::Unavailable(MSG_SWARM_LOCKED.into())
    }

    /// 409: `swarm unlock` on an unlocked swarm.
    pub fn not_locked() -> Self {
        ApiError::Conflict(MSG_NOT_LOCKED.into())
    }

    /// 401: wrong unlock key.
    pub fn invalid_unlock_key() -> Self {
        ApiError::Unauthorized(MSG_INVALID_UNLOCK_KEY.into())
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let msg = e.to_string();
        match e {
            ControlError::NotFound(_) => ApiError::NotFound(msg),
            ControlError::InvalidArgument(_) | ControlError::FailedPrecondition(_) => {
                ApiError::BadRequest(msg)
            }
            ControlError::Conflict(_) => ApiError::Conflict(msg),
            ControlError::Unimplemented(_) => ApiError::NotImplemented(msg),
            ControlError::Forbidden(_) => ApiError::Forbidden(msg),
            // Docker answers a stale version with 500 ("rpc error: code = Unknown desc = update
            // out of sequence"); clients match the text, which ends the same way here.
            ControlError::OutOfSequence | ControlError::Internal(_) => ApiError::Internal(msg),
            ControlError::Unavailable(_) => ApiError::Unavailable(msg),
        }
    }
}

impl From<shoal_store::StoreError> for ApiError {
    fn from(e: shoal_store::StoreError) -> Self {
        ControlError::from(e).into()
    }
}

/// Builds the JSON error body Docker clients parse (`{"message": "..."}`).
pub fn error_response(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(status = status.as_u16(), error = %self, "API request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "API request refused");
        }
        error_response(status, &self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_errors_map_to_docker_statuses() {
        let cases = [
            (ControlError::NotFound("x".into()), 404),
            (ControlError::InvalidArgument("x".into()), 400),
            (ControlError::FailedPrecondition("x".into()), 400),
            (ControlError::Conflict("x".into()), 409),
            (ControlError::Unimplemented("x".into()), 501),
            (ControlError::OutOfSequence, 500),
            (ControlError::Unavailable("x".into()), 503),
        ];
        for (e, code) in cases {
            assert_eq!(ApiError::from(e).status().as_u16(), code);
        }
        assert_eq!(
            ApiError::from(ControlError::OutOfSequence).message(),
            "update out of sequence"
        );
    }

    #[test]
    fn body_is_json_with_message() {
        let r = ApiError::already_in_swarm().into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            r.headers().get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
            Some(&b"application/json"[..])
        );
    }
}
