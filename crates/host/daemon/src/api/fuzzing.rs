//! The request path under any input, for the fuzz target (`crates/host/daemon/fuzz`) and the
//! property test that runs the same check on stable: whatever the path and query, the API
//! answers, never with a server error, always with JSON (the dashboard's own files and
//! `/metrics` aside), every refusal with a reason.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use hyper::service::Service;
use hyper_util::service::TowerToHyperService;

use super::{Peer, Shared, router};

/// Sends `GET <target>` (any bytes) through the router as the peer `uid` (None: TCP) and checks
/// the answer. A target that is not a URI never reaches the router (hyper refuses its request
/// line), so it passes.
pub async fn check(shared: &Arc<Shared>, target: &[u8], uid: Option<u32>) -> Result<(), String> {
    let Ok(uri) = axum::http::Uri::try_from(target) else {
        return Ok(());
    };
    if uri.path().starts_with("/api/v1/stream") {
        return Ok(()); // an endless body, checked by the end-to-end tests
    }
    let request = Request::get(uri.clone())
        .extension(Peer { uid })
        .body(Body::empty())
        .map_err(|e| format!("request: {e}"))?;
    let service = TowerToHyperService::new(router(shared.clone()));
    let response = service.call(request).await.map_err(|e| format!("{uri}: {e:?}"))?;
    let status = response.status();
    let content_type = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    // 503 only where the database is missing, as documented.
    if status.is_server_error()
        && !(status == StatusCode::SERVICE_UNAVAILABLE && uri.path().ends_with("process-records"))
    {
        return Err(format!("{uri}: status {status}"));
    }
    if status == StatusCode::NOT_MODIFIED {
        return Ok(());
    }
    let body = axum::body::to_bytes(response.into_body(), 64 << 20)
        .await
        .map_err(|e| format!("{uri}: body: {e}"))?;
    if uri.path() == "/" || uri.path().starts_with("/ui/") {
        // The dashboard's files: found or not, never a server error; a file is not JSON.
        return match (status.is_success(), content_type.starts_with("application/json")) {
            (true, false) | (false, true) => Ok(()),
            _ => Err(format!("{uri}: {status} as {content_type}")),
        };
    }
    if uri.path() == "/metrics" {
        // The Prometheus text format, whatever the query.
        return match std::str::from_utf8(&body) {
            Ok(text) if status.is_success() && text.contains("# TYPE ttmem_") => Ok(()),
            _ => Err(format!(
                "{uri}: {status}, not metrics: {}",
                String::from_utf8_lossy(&body)
            )),
        };
    }
    if status.is_success() && content_type == "application/octet-stream" && uri.path().ends_with("/export") {
        // A memory-viz export is a pickle; it must be one.
        return match body.first() {
            Some(0x80) => Ok(()),
            _ => Err(format!("{uri}: an export that is not a pickle")),
        };
    }
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| format!("{uri}: not JSON ({e}): {}", String::from_utf8_lossy(&body)))?;
    if !status.is_success() && value["error"].as_str().is_none_or(str::is_empty) {
        return Err(format!("{uri}: {status} without a reason: {value}"));
    }
    Ok(())
}
