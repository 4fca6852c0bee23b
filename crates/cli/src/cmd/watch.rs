//! `ttmem watch`: the old allocation monitor's screen, from the daemon's API.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use ttmem_model::DeviceRow;
use ttmem_model::api::Devices;
use ttmem_report::{WatchDevices, render_watch};

use super::out;
use crate::args::WatchArgs;

/// `GET /api/v1/devices`, as rows.
fn devices(ep: &ttmem_apiclient::Endpoint) -> anyhow::Result<Vec<DeviceRow>> {
    Ok(ttmem_apiclient::get_json::<Devices>(ep, "/api/v1/devices")?.devices)
}

pub fn watch(a: &WatchArgs) -> anyhow::Result<ExitCode> {
    if a.daemon.no_daemon {
        anyhow::bail!("ttmem watch shows what a daemon knows; use `ttmem ps --no-daemon` to read the regions");
    }
    let (ep, _) = super::source::endpoint(&a.daemon)?;
    let which = if a.all {
        WatchDevices::All
    } else if a.devices.is_empty() {
        WatchDevices::Ids(vec![0])
    } else {
        WatchDevices::Ids(a.devices.clone())
    };
    let tty = std::io::stdout().is_terminal();
    let color = tty && super::color_allowed(a.no_color);
    let refresh = Duration::from_millis(a.refresh_ms.max(10));
    loop {
        let now = local_clock();
        let frame = match devices(&ep) {
            Ok(d) => render_watch(
                &d,
                &which,
                color,
                &format!("ttmem watch · {now} · every {} ms · {ep}", refresh.as_millis()),
            ),
            Err(e) if a.once => return Err(e.context("ttmem watch needs a running daemon (ttmem serve)")),
            Err(e) => format!(
                "ttmem watch · {now}\n\n{e}\n(retrying every {} ms; start one with `ttmem serve`)\n",
                refresh.as_millis()
            ),
        };
        if tty && !a.once {
            // Home and clear, then the frame: the screen refreshes in place.
            out(&format!("\x1b[H\x1b[2J{frame}"))?;
        } else {
            out(&format!("{frame}\n"))?;
        }
        if a.once {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(refresh);
    }
}

/// Local wall-clock time as `HH:MM:SS`.
fn local_clock() -> String {
    ttmem_report::clock::LocalTime::now().map_or_else(|| "--:--:--".into(), |t| t.time())
}
