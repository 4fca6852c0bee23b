//! Where a reader's snapshot comes from: the daemon the flags name, the default daemon, or the
//! regions read directly. The one rule for every reader (`ps`, `info`, `check`).

use std::path::Path;

use anyhow::{Context, bail};
use ttmem_apiclient::{ApiError, Endpoint};
use ttmem_model::Snapshot;

use super::Paths;
use crate::args::DaemonArgs;

/// The daemon the flags name (`--url`, `--api-socket`, `TTMEM_API_SOCKET`) or the default
/// socket, and whether the user named it.
pub fn endpoint(d: &DaemonArgs) -> anyhow::Result<(Endpoint, bool)> {
    Ok(Endpoint::resolve(d.url.as_deref(), d.api_socket.as_deref())?)
}

/// The snapshot to show.
///
/// - `--no-daemon`: the regions in the directory.
/// - A daemon named by the user: its answer, or an error saying why there is none. When the
///   user also named a region directory the daemon does not watch, that is an error too: the
///   command never silently shows another directory than the one asked for.
/// - Otherwise the default daemon when it answers for this directory, else the regions.
pub fn snapshot(dir: &Paths, d: &DaemonArgs) -> anyhow::Result<Snapshot> {
    if d.no_daemon {
        return read_local(dir);
    }
    let (ep, named) = endpoint(d)?;
    match ttmem_apiclient::get_json::<Snapshot>(&ep, "/api/v1/snapshot") {
        Ok(s) if Path::new(&s.region_dir) == dir.path => Ok(s),
        Ok(s) if named && dir.named => bail!(
            "the daemon at {ep} watches {}, not {}; drop --dir to read it, or pass --no-daemon to read {} directly",
            s.region_dir,
            dir.path.display(),
            dir.path.display()
        ),
        Ok(s) if named => Ok(s),
        Ok(s) => {
            tracing::info!(
                "the daemon at {ep} watches {}, not {}; reading regions",
                s.region_dir,
                dir.path.display()
            );
            read_local(dir)
        }
        Err(e) if named => Err(e).context(format!(
            "no answer from the daemon at {ep} (start it with `ttmem serve`, or pass --no-daemon to read the regions)"
        )),
        Err(ApiError::NotRunning(_)) => read_local(dir),
        Err(e) => {
            tracing::warn!("{e}; reading regions directly");
            read_local(dir)
        }
    }
}

/// Every source this user can read without a daemon: the regions, TT-Metal's counter files and
/// the kernel driver's pid lists.
pub fn read_local(dir: &Paths) -> anyhow::Result<Snapshot> {
    Ok(dir.local().snapshot()?)
}
