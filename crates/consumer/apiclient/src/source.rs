//! Where a reader's snapshot comes from: the daemon the user named, the default daemon, or the
//! local sources read directly. One rule for every reader: `ttmem ps`, `info`, `check`, and the
//! Python package's `ttmem.snapshot()`.

use std::path::Path;

use ttmem_model::Snapshot;
use ttmem_model::sources::{Local, LocalError};

use crate::{ApiError, Endpoint};

/// What a reader was asked to read.
#[derive(Clone, Debug)]
pub struct Reader {
    /// The local sources (region directory, TT-Metal's counter files, the proc root).
    pub local: Local,
    /// Whether the user named the region directory (so another one is an error).
    pub dir_named: bool,
    /// The daemon's URL, if named.
    pub url: Option<String>,
    /// The daemon's socket, if named (a flag or `TTMEM_API_SOCKET`).
    pub api_socket: Option<std::path::PathBuf>,
    /// Read the local sources even if a daemon runs.
    pub no_daemon: bool,
}

/// Why no snapshot could be had.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The daemon's address is malformed.
    #[error(transparent)]
    Endpoint(ApiError),
    /// A named daemon did not answer.
    #[error(
        "no answer from the daemon at {endpoint} (start it with `ttmem serve`, or pass --no-daemon to read the regions): {source}"
    )]
    NoAnswer {
        /// Where.
        endpoint: Endpoint,
        /// Why.
        source: ApiError,
    },
    /// A named daemon watches another directory than the one named.
    #[error(
        "the daemon at {endpoint} watches {watched}, not {asked}; drop --dir to read it, or pass --no-daemon to read {asked} directly"
    )]
    OtherDirectory {
        /// Where.
        endpoint: Endpoint,
        /// The daemon's directory.
        watched: String,
        /// The directory named.
        asked: String,
    },
    /// The local sources could not be read.
    #[error(transparent)]
    Local(#[from] LocalError),
}

impl Reader {
    /// The daemon named (`url`, then `api_socket`) or the default socket, and whether the user
    /// named it.
    pub fn endpoint(&self) -> Result<(Endpoint, bool), ApiError> {
        Endpoint::resolve(self.url.as_deref(), self.api_socket.as_deref())
    }

    /// The snapshot to show.
    ///
    /// - `no_daemon`: the local sources.
    /// - A daemon the user named: its answer, or an error saying why there is none. When the
    ///   user also named a region directory the daemon does not watch, that is an error too: a
    ///   reader never silently shows another directory than the one asked for.
    /// - Otherwise the default daemon when it answers for this directory, else the local
    ///   sources.
    pub fn snapshot(&self) -> Result<Snapshot, SourceError> {
        if self.no_daemon {
            return Ok(self.local.snapshot()?);
        }
        let (endpoint, named) = self.endpoint().map_err(SourceError::Endpoint)?;
        let here = Path::new(&self.local.regions);
        match crate::get_json::<Snapshot>(&endpoint, "/api/v1/snapshot") {
            Ok(s) if Path::new(&s.region_dir) == here => Ok(s),
            Ok(s) if named && self.dir_named => Err(SourceError::OtherDirectory {
                endpoint,
                watched: s.region_dir,
                asked: here.display().to_string(),
            }),
            Ok(s) if named => Ok(s),
            Ok(s) => {
                tracing::info!(
                    "the daemon at {endpoint} watches {}, not {}; reading regions",
                    s.region_dir,
                    here.display()
                );
                Ok(self.local.snapshot()?)
            }
            Err(source) if named => Err(SourceError::NoAnswer { endpoint, source }),
            Err(ApiError::NotRunning(_)) => Ok(self.local.snapshot()?),
            Err(e) => {
                tracing::warn!("{e}; reading regions directly");
                Ok(self.local.snapshot()?)
            }
        }
    }
}
