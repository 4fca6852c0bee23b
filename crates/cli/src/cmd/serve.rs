//! `ttmem serve`.

use std::process::ExitCode;

use super::Paths;
use crate::args::ServeArgs;

pub fn serve(dir: &Paths, a: &ServeArgs) -> anyhow::Result<ExitCode> {
    let flags = ttmem_daemon::config::Overrides {
        config_file: a.config.clone(),
        // The global --dir (or TTMEM_DIR) when named; else the config file's, else the default.
        region_dir: dir.named.then(|| dir.path.clone()),
        api_socket: a.api_socket.clone(),
        http: a.http.clone(),
        no_http: a.no_http,
        db: a.db.clone(),
        legacy_socket: a.legacy_socket.clone(),
        no_legacy_socket: a.no_legacy_socket,
        legacy_version: a.legacy_version.clone(),
        tt_metal_dir: dir.tt_metal.clone().filter(|_| dir.tt_metal_named.is_some()),
        no_tt_metal: a.no_tt_metal || (dir.tt_metal_named.is_some() && dir.tt_metal.is_none()),
        proc_root: dir.proc_root_named.clone(),
    };
    let config = ttmem_daemon::Config::load(&flags, &|k| std::env::var(k).ok())?;
    if a.check_config {
        super::out(&ttmem_daemon::config::describe(&config))?;
        return Ok(ExitCode::SUCCESS);
    }
    ttmem_daemon::serve(config)?;
    Ok(ExitCode::SUCCESS)
}
