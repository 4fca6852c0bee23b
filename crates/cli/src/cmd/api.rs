//! `ttmem api PATH`: one answer of the daemon's API, printed as it came.

use std::process::ExitCode;

use super::out;
use crate::args::ApiArgs;

/// The path asked: as given when it starts with `/`, else under `/api/v1/`.
fn full_path(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/api/v1/{path}")
    }
}

/// Prints a 2xx answer's body and exits 0; prints a refusal's reason on stderr and exits 1;
/// exits 2 (through the error) when no daemon answers.
pub fn api(a: &ApiArgs) -> anyhow::Result<ExitCode> {
    if a.daemon.no_daemon {
        anyhow::bail!("ttmem api asks a daemon; --no-daemon leaves none to ask");
    }
    let (ep, _) = super::source::endpoint(&a.daemon)?;
    let (status, body) = ttmem_apiclient::get(&ep, &full_path(&a.path))?;
    let text = String::from_utf8_lossy(&body);
    if (200..300).contains(&status) {
        out(&format!("{}\n", text.trim_end()))?;
        return Ok(ExitCode::SUCCESS);
    }
    let reason = serde_json::from_slice::<ttmem_model::api::ErrorAnswer>(&body)
        .map(|e| e.error)
        .unwrap_or_else(|_| text.trim().to_string());
    eprintln!("ttmem: the daemon answered {status}: {reason}");
    Ok(ExitCode::from(1))
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_are_under_the_api_unless_absolute() {
        assert_eq!(super::full_path("devices"), "/api/v1/devices");
        assert_eq!(super::full_path("/api/v1/fit?device=0"), "/api/v1/fit?device=0");
    }
}
