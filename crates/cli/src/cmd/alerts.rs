//! `ttmem alerts`: the daemon's alerts, once.

use std::process::ExitCode;

use super::out;
use crate::args::AlertsArgs;

/// Prints the alerts; exits 1 while one fires, 0 otherwise, 2 (through the error) when no
/// daemon answers (alerts live in the daemon: there is nothing to read without one).
pub fn alerts(a: &AlertsArgs) -> anyhow::Result<ExitCode> {
    if a.daemon.no_daemon {
        anyhow::bail!("alerts are the daemon's; --no-daemon leaves none to ask (start `ttmem serve`)");
    }
    let (ep, _) = super::source::endpoint(&a.daemon)?;
    let answer: ttmem_model::api::Alerts = ttmem_apiclient::get_json(&ep, "/api/v1/alerts")?;
    if a.json {
        out(&format!("{}\n", serde_json::to_string_pretty(&answer)?))?;
    } else {
        out(&ttmem_report::alerts::render_alerts(
            &answer,
            ttmem_model::now_ns(),
            a.resolved,
        ))?;
    }
    let firing = answer
        .active
        .iter()
        .any(|x| x.state == ttmem_model::api::AlertState::Firing);
    Ok(if firing { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
