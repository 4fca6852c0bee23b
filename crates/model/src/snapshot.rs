//! The snapshot: every device and process on the host, as `ttmem ps --json` prints it and
//! `GET /api/v1/snapshot` answers. A stable interface (schema 1, `docs/ps-json.md`): fields may
//! be added, none removed or changed in meaning.

use serde::{Deserialize, Serialize};

/// Version of the JSON schema. Bumped only for incompatible changes; fields may be added.
pub const SCHEMA_VERSION: u32 = 1;

/// Whether a process still runs. Serialized as `"running"` / `"exited"` (schema 1's strings).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcState {
    /// The same process (pid and start time) runs.
    #[default]
    Running,
    /// It is gone; what it held is shown as left behind, not as use.
    Exited,
}

impl ProcState {
    /// The word shown in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ProcState::Running => "running",
            ProcState::Exited => "exited",
        }
    }

    /// Whether it runs.
    pub fn is_running(self) -> bool {
        self == ProcState::Running
    }
}

impl std::fmt::Display for ProcState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a process's figures come from, so a reader knows how much to trust and expect (only a
/// region has per-buffer events; a legacy client has per-buffer detail but no ring).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// Its own ttmem region (the client library).
    #[default]
    Region,
    /// The legacy allocation-server socket.
    LegacySocket,
    /// TT-Metal's own counter files (`/dev/shm/tt_device_*_memory`): bytes per chip, no
    /// per-buffer detail.
    TtMetalShm,
    /// The kernel driver's pid lists: the process holds a device, memory unknown.
    Kmd,
}

impl SourceKind {
    /// The word shown in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Region => "region",
            SourceKind::LegacySocket => "legacy-socket",
            SourceKind::TtMetalShm => "tt-metal-shm",
            SourceKind::Kmd => "kmd",
        }
    }

    /// Which source wins when two report the same process: the one with the most detail.
    pub fn rank(self) -> u8 {
        match self {
            SourceKind::Region => 0,
            SourceKind::LegacySocket => 1,
            SourceKind::TtMetalShm => 2,
            SourceKind::Kmd => 3,
        }
    }
}

/// One category of one device: used against total.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceCategory {
    /// Category name as the device declared it.
    pub name: String,
    /// Bytes held by running processes.
    pub used: u64,
    /// Allocatable bytes (0: unknown).
    pub total: u64,
    /// Live allocations held by running processes.
    pub count: u64,
}

/// One device (chip), system-wide.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceRow {
    /// Host-wide id: devices sorted by kind and hardware id ([`crate::DeviceTable`]).
    pub id: u32,
    /// Stable hardware id, hex (`0x…`; `pid:N/index:M` when the runtime gave none).
    pub hw_id: String,
    /// Device kind (`tt`, `tt-sim`, `cuda`, …).
    pub kind: String,
    /// Architecture.
    pub arch: String,
    /// Display name.
    pub name: String,
    /// A remote chip.
    pub remote: bool,
    /// Per category, in declaration order.
    pub categories: Vec<DeviceCategory>,
    /// Running processes using it.
    pub processes: u32,
    /// The sources that report it (added in schema 1; older output meant `region`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceKind>,
}

impl DeviceRow {
    /// The history series name of this device (`kind:hw_id`), stable across restarts.
    pub fn series_name(&self) -> String {
        crate::view::series_device(&self.kind, &self.hw_id)
    }

    /// Whether some category holds more than its capacity: a reader must flag it, never show
    /// 110 % silently (two processes on one chip, or a wrong capacity).
    pub fn over_capacity(&self) -> bool {
        self.categories.iter().any(|c| c.total > 0 && c.used > c.total)
    }
}

/// One category of one device in one process.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessCategory {
    /// Category name.
    pub name: String,
    /// Live bytes (for an exited process: left behind).
    pub bytes: u64,
    /// Live allocations.
    pub count: u64,
    /// Peak live bytes.
    pub peak: u64,
    /// Allocations ever.
    pub allocs: u64,
    /// Frees ever.
    pub frees: u64,
}

impl ProcessCategory {
    /// Adds another's figures (counters come from untrusted sources: never overflow).
    pub fn accumulate(&mut self, o: &ProcessCategory) {
        self.bytes = self.bytes.saturating_add(o.bytes);
        self.count = self.count.saturating_add(o.count);
        self.peak = self.peak.saturating_add(o.peak);
        self.allocs = self.allocs.saturating_add(o.allocs);
        self.frees = self.frees.saturating_add(o.frees);
    }
}

/// One device as one process uses it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessDevice {
    /// The host-wide device id ([`DeviceRow::id`]).
    pub id: u32,
    /// Hardware id.
    pub hw_id: String,
    /// Display name.
    pub name: String,
    /// The process's logical id for it.
    pub logical_id: i32,
    /// Per category.
    pub categories: Vec<ProcessCategory>,
}

/// Event ring figures of one process.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EventStats {
    /// Events written.
    pub written: u64,
    /// Events lost before an attached reader read them.
    pub lost: u64,
    /// Ring capacity per thread (0: the source has no ring).
    pub ring_capacity: u32,
}

/// Who a process is: the identity every source reports and every reader shows. In JSON its
/// fields sit directly in the process object (schema 1).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessIdentity {
    /// Process id.
    pub pid: u32,
    /// Start time, clock ticks since boot (with `pid`, the identity: a reused pid differs).
    pub start_time: u64,
    /// Real user id.
    pub uid: u32,
    /// User name (or the uid as text).
    pub user: String,
    /// Executable name.
    pub name: String,
    /// Command line.
    pub cmdline: String,
}

/// One process.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ProcessRow {
    /// Who it is.
    #[serde(flatten)]
    pub id: ProcessIdentity,
    /// Running or exited.
    pub state: ProcState,
    /// An exited process that still held memory when it died.
    pub left_behind: bool,
    /// Seconds since the process registered (wall clock at region creation).
    pub age_s: f64,
    /// Per device.
    pub devices: Vec<ProcessDevice>,
    /// Sum over devices per category name.
    pub totals: Vec<ProcessCategory>,
    /// Sum over devices and categories of the peaks (an upper bound of the combined peak).
    pub peak_bytes: u64,
    /// Ring figures.
    pub events: EventStats,
    /// Calls naming an unregistered device or category.
    pub rejected: u64,
    /// Where its figures are read from: the region file, or the legacy socket's path.
    pub region: String,
    /// Ids of the devices it uses; with the daemon's `?detail=totals`, `devices` is left out and
    /// only this remains.
    #[serde(default)]
    pub device_ids: Vec<u32>,
    /// Which source reported it (added in schema 1; older readers ignore it, older writers
    /// meant `region`).
    #[serde(default)]
    pub source: SourceKind,
    /// Devices it holds open whose memory no source reports (`/dev/tenstorrent/N`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<String>,
    /// When its source last updated its figures, ns since the epoch (TT-Metal's counter files
    /// record it; other sources are live).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_unix_ns: Option<u64>,
}

/// A region (or a TT-Metal counter file) that could not be used.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SkippedRegion {
    /// The file.
    pub path: String,
    /// Why.
    pub reason: String,
}

impl From<&ttmem_scan::Skipped> for SkippedRegion {
    fn from(s: &ttmem_scan::Skipped) -> SkippedRegion {
        SkippedRegion {
            path: s.path.display().to_string(),
            reason: s.reason.clone(),
        }
    }
}

impl From<&ttmem_ttmetal::Skipped> for SkippedRegion {
    fn from(s: &ttmem_ttmetal::Skipped) -> SkippedRegion {
        SkippedRegion {
            path: s.path.display().to_string(),
            reason: s.reason.clone(),
        }
    }
}

/// Everything `ttmem ps` shows.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    /// [`SCHEMA_VERSION`].
    pub schema: u32,
    /// Where the data came from (`regions` without a daemon, `daemon` with one).
    pub source: String,
    /// The region directory read.
    pub region_dir: String,
    /// Wall clock of the snapshot, ns since the epoch.
    pub timestamp_ns: u64,
    /// Devices.
    pub devices: Vec<DeviceRow>,
    /// Processes, running first, then exited; by pid.
    pub processes: Vec<ProcessRow>,
    /// Regions skipped.
    pub skipped: Vec<SkippedRegion>,
    /// Regions of other users this user may not read.
    #[serde(default)]
    pub not_permitted: usize,
    /// What the sources say that a person should know: memory TT-Metal still counts for a dead
    /// process, sources that disagree about one process.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Snapshot {
    /// Processes that run.
    pub fn running(&self) -> impl Iterator<Item = &ProcessRow> {
        self.processes.iter().filter(|p| p.state.is_running())
    }

    /// Category names to show as columns: those any device or process uses, plus each device's
    /// first two (DRAM and L1 for TT), in declaration order.
    pub fn columns(&self) -> Vec<String> {
        let mut cols: Vec<String> = Vec::new();
        let mut add = |n: &str| {
            if !cols.iter().any(|c| c == n) {
                cols.push(n.to_string());
            }
        };
        for d in &self.devices {
            for (i, c) in d.categories.iter().enumerate() {
                let used_anywhere = c.used > 0
                    || self.processes.iter().any(|p| {
                        p.devices
                            .iter()
                            .any(|pd| pd.id == d.id && pd.categories.iter().any(|pc| pc.name == c.name && pc.bytes > 0))
                    });
                if i < 2 || used_anywhere {
                    add(&c.name);
                }
            }
        }
        cols
    }
}
