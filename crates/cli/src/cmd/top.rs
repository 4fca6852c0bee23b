//! `ttmem top`.

use std::path::Path;
use std::process::ExitCode;

use ttmem_tui::source::Source;

use super::ps::endpoint;
use crate::args::TopArgs;

pub fn top(dir: &Path, a: &TopArgs) -> anyhow::Result<ExitCode> {
    let mut sources = Vec::new();
    let local = ttmem_tui::hostname();
    if a.daemon.no_daemon {
        sources.push(Source::Regions(dir.to_path_buf()));
    } else {
        sources.push(Source::Daemon {
            label: local,
            endpoint: endpoint(&a.daemon)?,
            fallback: Some(dir.to_path_buf()),
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
        no_color: a.no_color,
        stop: super::stop_on_signals(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP]),
    })?;
    Ok(ExitCode::SUCCESS)
}
