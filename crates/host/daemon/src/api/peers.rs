//! Other hosts on this dashboard: the config's `[[peers]]` name other hosts' daemons, and the
//! page shows their chips beside this host's. The browser never talks to a peer itself (that
//! would need CORS on every daemon, and open its API to any page a user visits): it reads
//! `/api/v1/peers/{name}/{endpoint}`, and this daemon forwards the request; the peers' live
//! events come in this daemon's own stream (`/api/v1/stream?peers=true`, [`super::peer_hub`]).
//!
//! What a peer shows through here is what it shows any TCP client without a token: aggregates
//! and the process list, no detail and no command lines. No credential is forwarded, so no one
//! who can reach this daemon sees more of a peer than the peer shows everyone. Only the
//! read-only endpoints in [`FORWARDED`] pass, and only to the configured peers (no URL comes
//! from a request).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use http_body_util::{BodyExt as _, Limited};
use serde::Deserialize;
use ttmem_model::api;

use super::extract::P;
use super::{ApiError, Shared, bad, not_found};
use crate::outbound::Target;

/// Peers a config may name: more than a page shows well.
pub const MAX_PEERS: usize = 32;

/// The endpoints read through a peer: what the page's host sections need, all of them what the
/// peer shows everyone. The stream is not among them: the peers' events come in this daemon's
/// own stream ([`super::peer_hub`]), over one link per peer however many pages follow it.
pub const FORWARDED: &[&str] = &[
    "health",
    "devices",
    "processes",
    "snapshot",
    "history",
    "alerts",
    "forecast",
];

/// How long a peer has to accept and send an answer's head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a peer has to send a whole answer.
const BODY_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest answer taken from a peer: a snapshot of a big host is a few megabytes.
const MAX_BODY: usize = 64 << 20;
/// The longest query string forwarded.
const MAX_QUERY: usize = 2048;

/// A `[[peers]]` entry as the config file gives it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    /// A short name: letters, digits, `.`, `_` and `-` (it is a path segment).
    pub name: String,
    /// `http://HOST:PORT` of the peer's TCP API (its `http` setting), optionally with a path
    /// prefix where a proxy serves it.
    pub url: String,
}

/// A peer daemon, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerHost {
    /// Its name (see [`PeerSection::name`]).
    pub name: String,
    /// Its URL as configured.
    pub url: String,
    /// Where requests go.
    pub target: Target,
}

/// Checks the config's `[[peers]]`: names unique and path-safe, URLs plain `http://`.
pub fn check(sections: Vec<PeerSection>) -> Result<Vec<PeerHost>, String> {
    if sections.len() > MAX_PEERS {
        return Err(format!("{} peers; at most {MAX_PEERS}", sections.len()));
    }
    let mut out: Vec<PeerHost> = Vec::with_capacity(sections.len());
    for s in sections {
        let name = s.name.trim().to_string();
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(format!(
                "peer name {name:?}: use 1 to 64 letters, digits, '.', '_' or '-'"
            ));
        }
        if out.iter().any(|p| p.name == name) {
            return Err(format!("peer name {name:?} appears twice"));
        }
        let url = s.url.trim().trim_end_matches('/').to_string();
        let target = Target::parse(&url).map_err(|e| format!("peer {name}: {e}"))?;
        out.push(PeerHost { name, url, target });
    }
    Ok(out)
}

/// `GET /api/v1/peers`: each peer as this daemon's link to it stands.
pub(super) async fn list(State(s): State<Arc<Shared>>) -> Json<api::PeersAnswer> {
    Json(api::PeersAnswer {
        peers: s.peers.as_ref().map(|h| h.statuses()).unwrap_or_default(),
    })
}

/// `GET /api/v1/peers/{name}/{endpoint}`: the peer's answer to `/api/v1/{endpoint}` with the
/// same query, its status kept.
pub(super) async fn forward(
    State(s): State<Arc<Shared>>,
    P((name, endpoint)): P<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let peer = s
        .peers
        .iter()
        .flat_map(|h| h.peers())
        .find(|p| p.name == name)
        .ok_or_else(|| not_found(format!("no peer named {name:?} (the config's [[peers]] name them)")))?;
    if !FORWARDED.contains(&endpoint.as_str()) {
        return Err(not_found(format!(
            "/api/v1/{endpoint} is not read through a peer (these are: {})",
            FORWARDED.join(", ")
        )));
    }
    let query = query.unwrap_or_default();
    if query.len() > MAX_QUERY {
        return Err(bad(format!("a query of at most {MAX_QUERY} bytes is forwarded")));
    }
    let suffix = match query.as_str() {
        "" => format!("/api/v1/{endpoint}"),
        q => format!("/api/v1/{endpoint}?{q}"),
    };
    let gateway = |status: StatusCode, why: String| ApiError(status, format!("peer {name} ({}): {why}", peer.url));
    let answer = peer
        .target
        .get(&suffix, "application/json", HEAD_TIMEOUT)
        .await
        .map_err(|e| gateway(StatusCode::BAD_GATEWAY, e))?;
    let status = answer.status();
    if !(status.is_success() || status.is_client_error() || status.is_server_error()) {
        return Err(gateway(StatusCode::BAD_GATEWAY, format!("it answered {status}")));
    }
    // Only what a daemon answers passes: JSON. Anything else (a page that would run in this
    // daemon's origin, say) is refused.
    let expected = "application/json";
    crate::outbound::expect_type(&answer, expected)
        .map_err(|e| gateway(StatusCode::BAD_GATEWAY, format!("it {e} (is it a ttmem daemon?)")))?;
    let content_type = HeaderValue::from_static(expected);
    let collected = tokio::time::timeout(BODY_TIMEOUT, Limited::new(answer.into_body(), MAX_BODY).collect())
        .await
        .map_err(|_| {
            gateway(
                StatusCode::GATEWAY_TIMEOUT,
                format!("its answer took over {} s", BODY_TIMEOUT.as_secs()),
            )
        })?
        .map_err(|e| gateway(StatusCode::BAD_GATEWAY, format!("reading its answer: {e}")))?;
    let body = axum::body::Body::from(collected.to_bytes());
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        )
        .body(body)
        .map_err(|e| gateway(StatusCode::BAD_GATEWAY, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(name: &str, url: &str) -> PeerSection {
        PeerSection {
            name: name.into(),
            url: url.into(),
        }
    }

    #[test]
    fn peers_are_checked_with_reasons() {
        let ok = check(vec![
            section("tt-host-b", "http://10.0.0.2:9477/"),
            section("c_1.x", "http://c"),
        ])
        .unwrap();
        assert_eq!(ok[0].url, "http://10.0.0.2:9477");
        assert_eq!(ok[0].target.authority, "10.0.0.2:9477");
        assert_eq!(ok[1].target.authority, "c:80");
        let err = |v: Vec<PeerSection>| check(v).unwrap_err();
        assert!(err(vec![section("a/b", "http://h:1")]).contains("letters, digits"));
        assert!(err(vec![section("", "http://h:1")]).contains("letters, digits"));
        assert!(err(vec![section("a", "http://h:1"), section("a", "http://g:1")]).contains("twice"));
        assert!(err(vec![section("a", "https://h:1")]).contains("only http://"));
        assert!(err(vec![section("a", "h:1")]).contains("peer a"));
        let many = (0..=MAX_PEERS)
            .map(|i| section(&format!("p{i}"), "http://h:1"))
            .collect();
        assert!(err(many).contains("at most"));
    }
}
