//! `ttmem top`.

use std::process::ExitCode;

use ttmem_tui::source::Source;

use super::Paths;
use super::source::endpoint;
use crate::args::TopArgs;

pub fn top(dir: &Paths, a: &TopArgs) -> anyhow::Result<ExitCode> {
    let mut sources = Vec::new();
    let local = ttmem_tui::hostname();
    if a.daemon.no_daemon {
        sources.push(Source::Regions(dir.local()));
    } else {
        // A daemon the user named is shown as it answers (its errors on screen); the default
        // one falls back to the regions when nothing listens.
        let (endpoint, named) = endpoint(&a.daemon)?;
        sources.push(Source::Daemon {
            label: local,
            endpoint,
            fallback: (!named).then(|| dir.local()),
        });
    }
    for url in &a.remote {
        let endpoint = ttmem_apiclient::Endpoint::parse(url)?;
        let label = url
            .trim_start_matches("http://")
            .split(['/', ':'])
            .next()
            .unwrap_or(url)
            .to_string();
        sources.push(Source::Daemon {
            label,
            endpoint,
            fallback: None,
        });
    }
    ttmem_tui::run(ttmem_tui::TopOptions {
        sources,
        refresh_ms: a.refresh_ms,
        no_color: !super::color_allowed(a.no_color),
        stop: super::stop_on_signals(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP]),
    })?;
    Ok(ExitCode::SUCCESS)
}
