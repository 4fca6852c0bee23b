//! Where a reader's snapshot comes from: the daemon the flags name, the default daemon, or the
//! regions read directly. The one rule for every reader (`ps`, `info`, `check`).

use ttmem_apiclient::Endpoint;
use ttmem_model::Snapshot;

use super::Paths;
use crate::args::DaemonArgs;

/// The daemon the flags name (`--url`, `--api-socket`, `TTMEM_API_SOCKET`) or the default
/// socket, and whether the user named it.
pub fn endpoint(d: &DaemonArgs) -> anyhow::Result<(Endpoint, bool)> {
    Ok(Endpoint::resolve(d.url.as_deref(), d.api_socket.as_deref())?)
}

/// The snapshot to show: the rule of [`ttmem_apiclient::source::Reader::snapshot`].
pub fn snapshot(dir: &Paths, d: &DaemonArgs) -> anyhow::Result<Snapshot> {
    let reader = ttmem_apiclient::source::Reader {
        local: dir.local(),
        dir_named: dir.named,
        url: d.url.clone(),
        api_socket: d.api_socket.clone(),
        no_daemon: d.no_daemon,
    };
    Ok(reader.snapshot()?)
}
