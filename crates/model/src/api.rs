//! The daemon API's answers beyond the snapshot (`docs/api.md`), typed: the daemon serializes
//! these and readers deserialize them, so a field renamed on one side fails to compile on the
//! other instead of reading as null. Devices are named by their `ps` id and processes by pid,
//! never by the daemon's internal keys.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
pub use ttmem_ledger::{EventKind, Fragmentation, LedgerStats, ProcState as LedgerState};
pub use ttmem_legacy::BookStats;

use crate::snapshot::{DeviceCategory, DeviceRow, ProcessRow};

/// `GET /api/v1/devices`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Devices {
    /// Every device, in id order.
    pub devices: Vec<DeviceRow>,
}

/// `GET /api/v1/processes`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Processes {
    /// Every process, running first.
    pub processes: Vec<ProcessRow>,
}

/// One live allocation in a listing.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Allocation {
    /// Owner.
    pub pid: u32,
    /// The `ps` device id (None only while the device is not in the table).
    pub device: Option<u32>,
    /// Category name.
    pub category: String,
    /// Address (the same in every bank for interleaved buffers).
    pub address: u64,
    /// Bytes on the device.
    pub size: u64,
    /// Age in seconds.
    pub age_s: u64,
    /// Tag text, if any.
    pub tag: Option<String>,
}

/// `GET /api/v1/processes/{pid}/allocations`: one page of a process's live allocations.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AllocationPage {
    /// The process.
    pub pid: u32,
    /// Allocations in total.
    pub total: u64,
    /// Offset of the first item.
    pub offset: u64,
    /// The page.
    pub items: Vec<Allocation>,
    /// Whether the detail is complete (no event of this process was lost).
    pub complete: bool,
    /// Events lost (ring overflow): the list may lack allocations; totals are exact.
    pub events_lost: u64,
    /// Frees that matched no live allocation.
    pub unmatched_frees: u64,
    /// After a loss: wall-clock ns since which the list is complete (allocations made before
    /// it are left out, since a lost event may have freed any of them).
    #[serde(default)]
    pub detail_since_unix_ns: Option<u64>,
}

/// A process whose list of allocations lacks some, because events were lost or written before
/// the daemon attached. Answers built from the lists (fit, fragmentation, maps, leaks) cannot
/// see what it lacks; its totals (from its counters) are exact.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IncompleteDetail {
    /// The process.
    pub pid: u32,
    /// Its executable's name.
    pub name: String,
    /// Events its detail lacks.
    pub events_lost: u64,
    /// Wall-clock ns since which its list is complete again (None: it lacks only events
    /// written before the daemon attached).
    pub detail_since_unix_ns: Option<u64>,
}

/// One event of a process's flight recorder.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecentEvent {
    /// Alloc or free.
    pub kind: EventKind,
    /// The `ps` device id.
    pub device: Option<u32>,
    /// Category name.
    pub category: Option<String>,
    /// Address.
    pub address: u64,
    /// Bytes.
    pub size: u64,
    /// `CLOCK_MONOTONIC` ns.
    pub time_ns: u64,
    /// Tag text.
    pub tag: Option<String>,
    /// Whether a free matched a live allocation.
    pub matched: bool,
}

/// `GET /api/v1/processes/{pid}/events`: the flight recorder, oldest first.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Events {
    /// The process.
    pub pid: u32,
    /// Whether it runs, and when it exited.
    pub state: Option<LedgerState>,
    /// The last events.
    pub events: Vec<RecentEvent>,
    /// The daemon's two clocks read together, to put `time_ns` on the wall clock (absent from
    /// older daemons).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockPair>,
}

/// `CLOCK_MONOTONIC` and the wall clock read at one instant: events carry monotonic times
/// (immune to clock steps), and this pair turns them into Unix times.
#[derive(Copy, Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClockPair {
    /// `CLOCK_MONOTONIC` ns.
    pub monotonic_ns: u64,
    /// Unix ns at the same instant.
    pub unix_ns: u64,
}

impl ClockPair {
    /// The Unix ns of a monotonic instant.
    pub fn unix_of(&self, monotonic_ns: u64) -> u64 {
        (self.unix_ns as i128 + monotonic_ns as i128 - self.monotonic_ns as i128).max(0) as u64
    }
}

/// `GET /api/v1/fit`: can N bytes of a category be allocated on a device now? Owners of the
/// allocations around the gaps are pids (None: a process the daemon has forgotten).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Fit {
    /// The `ps` device id.
    pub device: u32,
    /// Category name.
    pub category: String,
    /// The answer.
    #[serde(flatten)]
    pub fit: ttmem_ledger::Fit<Option<u32>>,
    /// Processes on the device whose lists lack allocations: the gaps may be smaller.
    #[serde(default)]
    pub incomplete: Vec<IncompleteDetail>,
}

/// One category's free space in `GET /api/v1/devices/{id}/fragmentation`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CategoryFragmentation {
    /// Category name.
    pub name: String,
    /// Banks its range repeats across.
    pub banks: u32,
    /// Its free space.
    pub fragmentation: Fragmentation,
}

/// `GET /api/v1/devices/{id}/fragmentation`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DeviceFragmentation {
    /// The `ps` device id.
    pub device: u32,
    /// Categories with an address range.
    pub categories: Vec<CategoryFragmentation>,
    /// Processes on the device whose lists lack allocations: free space may be overstated.
    #[serde(default)]
    pub incomplete: Vec<IncompleteDetail>,
}

/// `GET /api/v1/devices/{id}/map`: one bank's range in equal cells.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Map {
    /// The `ps` device id.
    pub device: u32,
    /// Category name.
    pub category: String,
    /// Occupancy per cell, 0 free to 1 full.
    pub cells: Vec<f32>,
    /// Per cell, the pid holding most of it (null: free, or a process the daemon forgot);
    /// empty from older daemons.
    #[serde(default)]
    pub owners: Vec<Option<u32>>,
    /// The bank's address range the cells cut in equal parts: `[base, end)` (added later: 0
    /// from older daemons).
    #[serde(default)]
    pub addr_base: u64,
    /// See `addr_base`.
    #[serde(default)]
    pub addr_end: u64,
    /// Its free space.
    pub fragmentation: Fragmentation,
    /// Processes on the device whose lists lack allocations: occupancy may be understated.
    #[serde(default)]
    pub incomplete: Vec<IncompleteDetail>,
}

/// One device's map in `GET /api/v1/maps`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DeviceMap {
    /// The `ps` device id.
    pub device: u32,
    /// Occupancy per cell, 0 free to 1 full.
    pub cells: Vec<f32>,
    /// Largest free block of one bank.
    pub largest_free_per_bank: u64,
}

/// `GET /api/v1/maps`: every device's map of one category.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Maps {
    /// Category name.
    pub category: String,
    /// Devices with an address range for it, in id order.
    pub maps: Vec<DeviceMap>,
    /// Processes whose lists lack allocations: occupancy may be understated.
    #[serde(default)]
    pub incomplete: Vec<IncompleteDetail>,
}

/// `GET /api/v1/leaks`: live allocations older than a threshold, oldest first.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Leaks {
    /// The threshold.
    pub min_age_s: u64,
    /// The suspects.
    pub allocations: Vec<Allocation>,
    /// Processes whose lists lack allocations: suspects among them cannot be listed.
    #[serde(default)]
    pub incomplete: Vec<IncompleteDetail>,
}

/// One chip and buffer type's trend in `GET /api/v1/forecast`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CategoryForecast {
    /// The `ps` device id.
    pub device: u32,
    /// The chip's hardware id.
    pub hw_id: String,
    /// Category name.
    pub category: String,
    /// Bytes used now.
    pub used: u64,
    /// Capacity.
    pub capacity: u64,
    /// Growth over the window, bytes per second (None: too little history).
    pub slope_bytes_per_s: Option<f64>,
    /// How well a line fits the window, 0 to 1 (None: too little history).
    pub r2: Option<f64>,
    /// Samples the fit used.
    pub samples: usize,
    /// Seconds until the category is full at this trend: only for a growing series with a good
    /// fit (`r2` at least `min_r2`); 0 when it is full.
    pub time_to_full_s: Option<f64>,
}

/// `GET /api/v1/forecast`: when each chip's buffer types fill up, from a line fitted to the
/// last `window_s` seconds of history (like Prometheus' `predict_linear`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Forecast {
    /// The window the lines are fitted over.
    pub window_s: u64,
    /// The least fit quality a forecast needs.
    pub min_r2: f64,
    /// Per chip and category with a capacity, in device order.
    pub forecasts: Vec<CategoryForecast>,
}

/// `GET /api/v1/history`: a step series of the peak per bucket.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct History {
    /// The `ps` device id.
    pub device: u32,
    /// Category name.
    pub category: String,
    /// One process's series, or the device's.
    pub pid: Option<u32>,
    /// `1s`, `10s` or `1m`.
    pub resolution: String,
    /// First second asked for.
    pub from: u64,
    /// Last second asked for.
    pub to: u64,
    /// `[unix_s, bytes]` pairs.
    pub points: Vec<(u64, u64)>,
}

/// The database's state in [`Health`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DatabaseHealth {
    /// Whether it is open and its last write worked.
    pub ok: bool,
    /// The last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /api/v1/health`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// The daemon's version.
    pub version: String,
    /// Seconds since it started.
    pub uptime_s: f64,
    /// The region directory it watches.
    pub region_dir: String,
    /// The database.
    pub database: DatabaseHealth,
    /// History points held in memory.
    pub history_points: u64,
    /// The host's name, as metrics and alerts give it (added later: empty from older daemons).
    #[serde(default)]
    pub hostname: String,
}

/// The collector's own statistics.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectorStats {
    /// Regions attached since start.
    pub regions_attached: u64,
    /// Region files refused (invalid, other users').
    pub regions_refused: u64,
    /// Events drained into the ledger.
    pub events: u64,
    /// Events lost to ring overflow before they were read.
    pub events_lost: u64,
    /// Shard heads that went backwards or leapt (corrupt or hostile writers).
    pub anomalies: u64,
    /// Processes seen to die.
    pub deaths: u64,
    /// Region files removed after their process died.
    pub regions_removed: u64,
    /// Ticks run.
    pub ticks: u64,
}

/// `GET /api/v1/stats`: what the daemon costs and how much it holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    /// The collector's counters.
    pub collector: CollectorStats,
    /// The ledger's counters.
    pub ledger: LedgerStats,
    /// Live allocations in the ledger.
    pub live_allocations: u64,
    /// Bytes the ledger's maps take.
    pub ledger_map_bytes: u64,
    /// Their ratio.
    pub bytes_per_live_allocation: f64,
}

/// Legacy-socket statistics.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LegacyStats {
    /// Connections accepted.
    pub connections_accepted: u64,
    /// Connections refused at the connection limit.
    pub connections_refused: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Connections per detected version.
    pub connections_by_version: BTreeMap<String, u64>,
    /// Connections closed because their stream could not be framed.
    pub closed_unframeable: u64,
    /// Connections closed because they buffered too many unread replies.
    pub closed_backlog: u64,
    /// Messages received.
    pub messages: u64,
    /// Messages per type name.
    pub messages_by_type: BTreeMap<String, u64>,
    /// Messages whose padding was not zero (used anyway).
    pub padding_errors: u64,
    /// Messages ignored for an invalid field.
    pub invalid: u64,
    /// Messages whose process_id named another process than the peer (attributed to the peer).
    pub pid_mismatches: u64,
    /// State-changing messages from peers whose process could not be identified (ignored).
    pub unidentified: u64,
    /// Replies sent.
    pub replies: u64,
    /// Client processes seen.
    pub processes: u64,
    /// Semantics counters summed over every client process.
    pub book: BookStats,
}

/// `GET /api/v1/legacy`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Legacy {
    /// The figures.
    pub legacy: LegacyStats,
}

/// `GET /api/v1/legacy/dumps`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LegacyDumps {
    /// The latest DUMP_REMAINING and DUMP_KERNELS answers, oldest first.
    pub dumps: Vec<ttmem_legacy::dump::Dump>,
}

/// A device's totals in a [`StreamUpdate`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StreamDevice {
    /// The `ps` device id.
    pub id: u32,
    /// Display name.
    pub name: String,
    /// Use per category.
    pub categories: Vec<DeviceCategory>,
    /// Running processes using it.
    pub processes: u32,
}

/// What happened to a process, in a [`StreamUpdate`].
#[derive(Copy, Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProcessChangeState {
    /// It started (or the stream began).
    Running,
    /// It exited.
    Exited,
    /// Its record expired.
    Forgotten,
}

/// A process that changed, in a [`StreamUpdate`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessChange {
    /// Process id.
    pub pid: u32,
    /// Start time (with pid, the identity).
    pub start_time: u64,
    /// Executable name.
    pub name: String,
    /// What happened.
    pub state: ProcessChangeState,
}

/// One `update` event of `GET /api/v1/stream`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StreamUpdate {
    /// Wall clock, ns since the epoch.
    pub timestamp_ns: u64,
    /// Every device's totals.
    pub devices: Vec<StreamDevice>,
    /// Processes that started, exited or were forgotten since the last update.
    pub process_changes: Vec<ProcessChange>,
}

/// `GET /api/v1/peers`: the other hosts' daemons this daemon's dashboard shows beside its own
/// (the config's `[[peers]]`), as this daemon's one link to each finds them.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeersAnswer {
    /// In the config's order.
    pub peers: Vec<PeerStatus>,
}

/// One peer daemon in [`PeersAnswer`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerStatus {
    /// Its name in the config: the path segment of `/api/v1/peers/{name}/...`.
    pub name: String,
    /// The URL it is reached at (a link to its own dashboard, where the browser can reach it).
    pub url: String,
    /// Whether this daemon follows its stream now.
    pub reachable: bool,
    /// Its host name, from its health when the link came up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Its version, likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Why the link is down (None while it is up, or before the first try ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A `peer` event of `GET /api/v1/stream?peers=true`: what a peer's link did, or what the
/// peer's own stream said, checked and passed on.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PeerEvent {
    /// The peer's name in the config (`*` for [`PeerEventKind::Resync`]).
    pub peer: String,
    /// What happened.
    #[serde(flatten)]
    pub kind: PeerEventKind,
}

/// What a [`PeerEvent`] says, as `{"kind": ..., "data": ...}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum PeerEventKind {
    /// The link is up: the peer's figures follow (read its snapshot through
    /// `/api/v1/peers/{name}/snapshot` to start from).
    Up,
    /// The link is down, and why; it is tried again.
    Down(String),
    /// The peer's `update` event.
    Update(StreamUpdate),
    /// The peer's `alert` event.
    Alert(Alert),
    /// This stream fell behind and lost peer events: read every peer's snapshot again.
    Resync,
}

/// An error answer: `{"error": "..."}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorAnswer {
    /// What went wrong, in words a user can act on.
    pub error: String,
}

/// Where an alert stands: pending while its condition holds for less than the rule's `for_s`,
/// then firing, and resolved once the condition cleared (or its subject is gone).
#[derive(Copy, Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition holds, not yet for the rule's duration.
    Pending,
    /// The condition held for the rule's duration.
    Firing,
    /// It fired, and the condition cleared.
    Resolved,
}

impl AlertState {
    /// The word the API and the database use.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }

    /// The state for its word.
    pub fn parse(s: &str) -> Option<AlertState> {
        match s {
            "pending" => Some(AlertState::Pending),
            "firing" => Some(AlertState::Firing),
            "resolved" => Some(AlertState::Resolved),
            _ => None,
        }
    }
}

/// One alert: a rule's condition on one subject (a chip's buffer type, or a process).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Alert {
    /// The rule's name (Alertmanager's `alertname`).
    pub rule: String,
    /// The rule's kind (`threshold`, `forecast`, `fragmentation`, `left_behind`,
    /// `leak_suspect`, `event_loss`).
    pub kind: String,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    /// Where it stands.
    pub state: AlertState,
    /// What it is about: `device`, `hw_id` and `category` for a chip; `pid`, `start_time`,
    /// `comm` and `user` for a process (and `device`, `category` when it concerns one).
    pub labels: std::collections::BTreeMap<String, String>,
    /// A sentence a person reads, with the figures.
    pub summary: String,
    /// The figure the rule compares (a percentage, seconds, bytes or events; None when there
    /// is none, like a forecast that no longer sees the chip filling).
    pub value: Option<f64>,
    /// When the condition began to hold, ns since the epoch.
    pub active_since_unix_ns: u64,
    /// When it began to fire.
    pub firing_since_unix_ns: Option<u64>,
    /// When it was resolved.
    pub resolved_unix_ns: Option<u64>,
}

impl Alert {
    /// The identity of the alert: its rule and labels (Alertmanager's fingerprint, in words).
    pub fn fingerprint(&self) -> String {
        alert_fingerprint(&self.rule, &self.labels)
    }
}

/// The identity of an alert of `rule` on the subject `labels`.
pub fn alert_fingerprint(rule: &str, labels: &std::collections::BTreeMap<String, String>) -> String {
    let mut s = rule.to_string();
    for (k, v) in labels {
        s.push_str(&format!(",{k}={v}"));
    }
    s
}

/// One configured rule, as `GET /api/v1/alerts` lists it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AlertRuleInfo {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// Its severity.
    pub severity: String,
    /// How long the condition must hold before the alert fires.
    pub for_s: u64,
    /// The condition, in words.
    pub condition: String,
}

/// `GET /api/v1/alerts`: alerts pending and firing now, then those resolved lately (newest
/// first), and the rules that raise them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Alerts {
    /// Pending and firing, firing first, then by start.
    pub active: Vec<Alert>,
    /// Resolved lately (at most the last 256 kept in memory; the database keeps every one).
    pub resolved: Vec<Alert>,
    /// The rules in force.
    pub rules: Vec<AlertRuleInfo>,
    /// Notifications given up on (every retry failed, or a notifier's queue was full).
    pub notifications_failed: u64,
}
