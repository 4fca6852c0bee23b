//! `ttmem serve`.

use std::path::Path;
use std::process::ExitCode;

use crate::args::ServeArgs;

pub fn serve(dir: Option<&Path>, a: &ServeArgs) -> anyhow::Result<ExitCode> {
    let flags = ttmem_daemon::config::Overrides {
        config_file: a.config.clone(),
        region_dir: a.region_dir.clone().or_else(|| dir.map(Path::to_path_buf)),
        api_socket: a.api_socket.clone(),
        http: a.http.clone(),
        no_http: a.no_http,
        db: a.db.clone(),
        legacy_socket: a.legacy_socket.clone(),
        no_legacy_socket: a.no_legacy_socket,
        legacy_version: a.legacy_version.clone(),
    };
    let config = ttmem_daemon::Config::load(&flags, &|k| std::env::var(k).ok())?;
    ttmem_daemon::serve(config)?;
    Ok(ExitCode::SUCCESS)
}
