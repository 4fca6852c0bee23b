//! Who asks, and what they may see (`docs/api.md`, "Who sees what").
//!
//! Like `nvidia-smi` and `/proc`, every local user sees the aggregates and the process list:
//! devices, totals per process and category, names, users, history. Per-allocation detail
//! (allocations, events, tags, leak suspects, legacy dumps) and command lines are shown only to
//! the process's owner, root and the daemon's own user, as the kernel names the peer of the
//! Unix socket (`SO_PEERCRED`). TCP names no peer: it serves what everyone sees, unless the
//! request carries the operator's API token (or the operator opened TCP to everything).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;

use super::{ApiError, Shared};

/// A connection's peer as the accept loop learned it: its uid on the Unix socket, none over
/// TCP. Added to every request of the connection.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The peer's uid (`SO_PEERCRED`), None where the transport names no peer.
    pub uid: Option<u32>,
}

/// How the daemon grants detail over TCP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TcpAccess {
    /// A request with `Authorization: Bearer <token>` sees everything.
    pub token: Option<String>,
    /// Every TCP request sees everything (a host whose loopback is trusted).
    pub open: bool,
}

/// What a request may see.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Viewer {
    /// Everything: root, the daemon's own user, or a request with the API token.
    All,
    /// The detail of this user's processes, and what everyone sees.
    User(u32),
    /// What everyone sees: aggregates and the process list, no command lines.
    Public,
}

impl Viewer {
    /// The viewer of a request from `peer` that presented `token` (if any), for a daemon
    /// running as `daemon_uid`.
    pub fn of(peer: Option<Peer>, token: Option<&str>, access: &TcpAccess, daemon_uid: u32) -> Viewer {
        let token_ok = match (token, access.token.as_deref()) {
            (Some(given), Some(expected)) => constant_time_eq(given.as_bytes(), expected.as_bytes()),
            _ => false,
        };
        if token_ok {
            return Viewer::All;
        }
        match peer.and_then(|p| p.uid) {
            Some(uid) if uid == 0 || uid == daemon_uid => Viewer::All,
            Some(uid) => Viewer::User(uid),
            None if peer.is_some() && access.open => Viewer::All,
            None => Viewer::Public,
        }
    }

    /// Whether it may see the detail and command line of a process of `uid`.
    pub fn may_see(self, uid: u32) -> bool {
        match self {
            Viewer::All => true,
            Viewer::User(u) => u == uid,
            Viewer::Public => false,
        }
    }

    /// Whether it sees everything.
    pub fn sees_all(self) -> bool {
        self == Viewer::All
    }

    /// A short stable name, for caches and ETags.
    pub fn tag(self) -> String {
        match self {
            Viewer::All => "a".into(),
            Viewer::User(u) => format!("u{u}"),
            Viewer::Public => "p".into(),
        }
    }

    /// The refusal of `what` of process `pid`, owned by `owner` (a user name).
    pub fn refusal(self, what: &str, pid: u32, owner: &str) -> ApiError {
        let how = match self {
            Viewer::Public => {
                "over TCP, send the operator's API token (docs/api.md), or ask the Unix socket as that user"
            }
            _ => "ask as that user or as root",
        };
        ApiError(
            StatusCode::FORBIDDEN,
            format!("the {what} of process {pid} are shown only to its owner ({owner}) and root; {how}"),
        )
    }
}

/// Compares two secrets in time that depends on their lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl FromRequestParts<Arc<Shared>> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<Shared>) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        Ok(Viewer::of(
            parts.extensions.get::<Peer>().copied(),
            token,
            &state.tcp_access,
            state.daemon_uid,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_sees_what() {
        let unix = |uid| Some(Peer { uid: Some(uid) });
        let tcp = Some(Peer { uid: None });
        let closed = TcpAccess::default();
        assert_eq!(Viewer::of(unix(0), None, &closed, 990), Viewer::All);
        assert_eq!(Viewer::of(unix(990), None, &closed, 990), Viewer::All);
        assert_eq!(Viewer::of(unix(1000), None, &closed, 990), Viewer::User(1000));
        assert_eq!(Viewer::of(tcp, None, &closed, 990), Viewer::Public);
        // No peer at all (a request that did not come through the accept loop): nothing more.
        assert_eq!(Viewer::of(None, None, &closed, 990), Viewer::Public);
        let token = TcpAccess {
            token: Some("s3cret".into()),
            open: false,
        };
        assert_eq!(Viewer::of(tcp, Some("s3cret"), &token, 990), Viewer::All);
        assert_eq!(Viewer::of(tcp, Some("s3cres"), &token, 990), Viewer::Public);
        assert_eq!(
            Viewer::of(tcp, Some(""), &closed, 990),
            Viewer::Public,
            "no token configured"
        );
        assert_eq!(Viewer::of(unix(1000), Some("s3cret"), &token, 990), Viewer::All);
        let open = TcpAccess {
            token: None,
            open: true,
        };
        assert_eq!(Viewer::of(tcp, None, &open, 990), Viewer::All);
        assert_eq!(Viewer::of(unix(1000), None, &open, 990), Viewer::User(1000));
        assert!(Viewer::User(7).may_see(7) && !Viewer::User(7).may_see(8));
        assert!(!Viewer::Public.may_see(0) && Viewer::All.may_see(1234));
    }
}
