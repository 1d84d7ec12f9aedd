//! [`RpcError`]: the one error type of both sides of the protocol.
//!
//! A handler returns an `RpcError`; the server turns it into a gRPC status (code + message, and a
//! `shoal-leader-addr` metadata entry for [`RpcError::NotLeader`]); the client turns the status it
//! receives back into the same variant. So a caller can match on `RpcError::PermissionDenied`
//! whether the error was raised by the role check, a handler, or another node.
//!
//! ```text
//!  handler ── RpcError ──► tonic::Status ══ wire ══► tonic::Status ──► RpcError ── caller
//!  connect / TLS failure ─────────────────────────────────────────► RpcError::Connect
//! ```

use tonic::{Code, Status};

/// Metadata key carrying the leader's address on a [`RpcError::NotLeader`] status.
pub const LEADER_ADDR_METADATA: &str = "shoal-leader-addr";

/// What went wrong with a node-to-node call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// No connection could be made to `addr` (refused, unreachable, timed out, TLS handshake
    /// rejected). Nothing was sent.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The address dialed.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The request was malformed (gRPC `InvalidArgument`).
    #[error("{0}")]
    InvalidArgument(String),
    /// The call needs a node certificate and the connection presented none (`Unauthenticated`).
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's role or identity does not allow this call (`PermissionDenied`).
    #[error("{0}")]
    PermissionDenied(String),
    /// The named object does not exist (`NotFound`).
    #[error("{0}")]
    NotFound(String),
    /// The object already exists (`AlreadyExists`).
    #[error("{0}")]
    AlreadyExists(String),
    /// The called manager is not the Raft leader; `leader_addr` is where the leader is, if known
    /// (`FailedPrecondition` + `shoal-leader-addr` metadata).
    #[error("{message}")]
    NotLeader {
        /// Human-readable text.
        message: String,
        /// The leader's node-to-node address, when the callee knows it.
        leader_addr: Option<String>,
    },
    /// The callee is not in a state to do this (`FailedPrecondition`).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The callee or the connection is unavailable now; trying again (or elsewhere) may work
    /// (`Unavailable`, and transport failures in the middle of a call).
    #[error("{0}")]
    Unavailable(String),
    /// The call did not finish in time (`DeadlineExceeded`).
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The callee does not serve this call (`Unimplemented`).
    #[error("{0}")]
    Unimplemented(String),
    /// Anything else (`Internal` and the remaining codes).
    #[error("{0}")]
    Internal(String),
}

impl RpcError {
    /// The gRPC code this error travels as.
    pub fn code(&self) -> Code {
        match self {
            RpcError::Connect { .. } | RpcError::Unavailable(_) => Code::Unavailable,
            RpcError::InvalidArgument(_) => Code::InvalidArgument,
            RpcError::Unauthenticated(_) => Code::Unauthenticated,
            RpcError::PermissionDenied(_) => Code::PermissionDenied,
            RpcError::NotFound(_) => Code::NotFound,
            RpcError::AlreadyExists(_) => Code::AlreadyExists,
            RpcError::NotLeader { .. } | RpcError::FailedPrecondition(_) => {
                Code::FailedPrecondition
            }
            RpcError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            RpcError::Unimplemented(_) => Code::Unimplemented,
            RpcError::Internal(_) => Code::Internal,
        }
    }

    /// Whether the failure is about reaching the other node rather than what it answered
    /// (connect errors, `Unavailable`, deadlines): another attempt or another node may succeed.
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            RpcError::Connect { .. } | RpcError::Unavailable(_) | RpcError::DeadlineExceeded(_)
        )
    }

    /// A JSON payload that could not be decoded.
    pub(crate) fn bad_json(what: &str, e: serde_json::Error) -> RpcError {
        RpcError::InvalidArgument(format!("{what} is not valid JSON: {e}"))
    }
}

impl From<RpcError> for Status {
    fn from(e: RpcError) -> Status {
        let mut status = Status::new(e.code(), e.to_string());
        if let RpcError::NotLeader {
            leader_addr: Some(addr),
            ..
        } = &e
        {
            if let Ok(v) = addr.parse() {
                status.metadata_mut().insert(LEADER_ADDR_METADATA, v);
            }
        }
        status
    }
}

impl From<Status> for RpcError {
    fn from(s: Status) -> RpcError {
        let msg = s.message().to_string();
        match s.code() {
            Code::InvalidArgument | Code::OutOfRange => RpcError::InvalidArgument(msg),
            Code::Unauthenticated => RpcError::Unauthenticated(msg),
            Code::PermissionDenied => RpcError::PermissionDenied(msg),
            Code::NotFound => RpcError::NotFound(msg),
            Code::AlreadyExists => RpcError::AlreadyExists(msg),
            Code::FailedPrecondition => match s.metadata().get(LEADER_ADDR_METADATA) {
                Some(v) => RpcError::NotLeader {
                    message: msg,
                    leader_addr: v.to_str().ok().map(str::to_string),
                },
                None => RpcError::FailedPrecondition(msg),
            },
            Code::DeadlineExceeded => RpcError::DeadlineExceeded(msg),
            Code::Unimplemented => RpcError::Unimplemented(msg),
            // tonic reports broken connections and h2 errors as Unavailable/Unknown/Cancelled.
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Aborted => {
                RpcError::Unavailable(with_causes(&s, msg))
            }
            _ => RpcError::Internal(msg),
        }
    }
}

/// `msg` followed by the status's chain of causes (a transport error's TLS alert, I/O error...).
fn with_causes(s: &Status, msg: String) -> String {
    let mut out = if msg.is_empty() {
        format!("{:?}", s.code())
    } else {
        msg
    };
    let mut cur = std::error::Error::source(s);
    while let Some(c) = cur {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = c.source();
    }
    out
}

impl From<shoal_raft::RaftError> for RpcError {
    fn from(e: shoal_raft::RaftError) -> RpcError {
        use shoal_raft::RaftError as E;
        match e {
            E::NotLeader {
                ref leader_addr, ..
            } => RpcError::NotLeader {
                leader_addr: leader_addr.clone(),
                message: e.to_string(),
            },
            E::NoQuorum => RpcError::Unavailable(e.to_string()),
            E::Malformed(_) => RpcError::InvalidArgument(e.to_string()),
            other => RpcError::Internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_survive_the_status_roundtrip() {
        let cases = vec![
            RpcError::InvalidArgument("bad".into()),
            RpcError::Unauthenticated("who".into()),
            RpcError::PermissionDenied("no".into()),
            RpcError::NotFound("gone".into()),
            RpcError::AlreadyExists("dup".into()),
            RpcError::NotLeader {
                message: "not the leader".into(),
                leader_addr: Some("10.0.0.1:2377".into()),
            },
            RpcError::FailedPrecondition("later".into()),
            RpcError::Unavailable("down".into()),
            RpcError::DeadlineExceeded("slow".into()),
            RpcError::Unimplemented("nope".into()),
            RpcError::Internal("bug".into()),
        ];
        for e in cases {
            let back = RpcError::from(Status::from(e.clone()));
            assert_eq!(back, e);
        }
    }

    #[test]
    fn connect_errors_travel_as_unavailable() {
        let e = RpcError::Connect {
            addr: "a:1".into(),
            reason: "refused".into(),
        };
        assert_eq!(Status::from(e).code(), Code::Unavailable);
    }

    #[test]
    fn raft_not_leader_keeps_the_leader_address() {
        let e = RpcError::from(shoal_raft::RaftError::NotLeader {
            leader: Some(2),
            leader_addr: Some("10.0.0.2:2377".into()),
        });
        match e {
            RpcError::NotLeader { leader_addr, .. } => {
                assert_eq!(leader_addr.as_deref(), Some("10.0.0.2:2377"))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
