//! ttmem's data model, shared by every producer of answers (the daemon, the daemonless readers)
//! and every consumer (`ps`, `top`, `watch`, `check`, the API client), in the shape of
//! tokio-console's `console-api`: one crate of plain types both ends depend on.
//!
//! - [`snapshot`]: the schema-1 rows `ttmem ps --json` and `GET /api/v1/snapshot` answer with
//!   (devices, processes, categories), with [`ProcState`] and [`SourceKind`] as enums.
//! - [`view`]: the one counters view every source fills ([`ProcessView`]), the one
//!   device-numbering rule ([`DeviceTable`]), and the one snapshot builder over them.
//! - [`sources`]: TT-Metal's counter files and the kernel driver's pid lists as views, and the
//!   rule that shows a process seen by several sources once.
//! - [`api`]: the daemon API's other answers (allocation pages, events, fit, maps, leaks,
//!   history, health, statistics, legacy-socket figures), typed so that no side patches JSON
//!   keys by name.
//!
//! No I/O happens here; the only clock read is [`now_ns`], the one wall clock of the project.

#![deny(missing_docs)]

pub mod api;
pub mod snapshot;
pub mod sources;
pub mod view;

pub use snapshot::{
    DeviceCategory, DeviceRow, EventStats, ProcState, ProcessCategory, ProcessDevice, ProcessIdentity, ProcessRow,
    SCHEMA_VERSION, SkippedRegion, Snapshot, SourceKind,
};
pub use view::{DeviceIdentity, DeviceTable, ProcessView, SnapshotMeta};

/// Where the daemon's API socket is by default, the one rule the daemon and every reader share:
/// `/run/ttmem/api.sock` for root, else `$XDG_RUNTIME_DIR/ttmem/api.sock`, else
/// `<tmp>/ttmem-<uid>/ttmem/api.sock`. `get` reads an environment variable; `TTMEM_API_SOCKET`
/// is not consulted here (callers treat it as a user's explicit choice).
pub fn default_api_socket(uid: u32, get: &dyn Fn(&str) -> Option<String>) -> std::path::PathBuf {
    if uid == 0 {
        return "/run/ttmem/api.sock".into();
    }
    get("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("ttmem-{uid}")))
        .join("ttmem/api.sock")
}

/// Wall clock, ns since the Unix epoch (0 if the clock is before it). The one wall clock every
/// crate uses for timestamps shown to people.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos().min(u64::MAX as u128) as u64)
        .unwrap_or(0)
}

/// Bytes in short binary units (`512B`, `1.5K`, `10.5G`): how every screen and alert writes a
/// size.
pub fn short_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "K", "M", "G", "T", "P"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}B")
    } else if v >= 100.0 {
        format!("{v:.0}{}", UNITS[u])
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}
