//! The collector: one process model over every source. Each process has exactly one
//! [`Source`] (its region, or its legacy-socket connection) that fills one counters view
//! ([`ProcessView`]); the ledger holds its per-buffer detail; a pidfd follows its life.
//!
//! Synchronous, and both clocks come in through [`Now`], so tests drive it tick by tick; the
//! daemon runs it on its own thread.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ttmem_history::{History, SeriesKey};
use ttmem_ledger::{DeviceKey, Ledger, ProcKey};
use ttmem_model::api::{CollectorStats, IncompleteDetail};
use ttmem_model::{DeviceIdentity, DeviceTable, ProcState, ProcessView, SkippedRegion, Snapshot, SnapshotMeta};
use ttmem_store::ProcessRecord;

mod external;
mod facts;
mod legacy;
mod lifecycle;
mod region;

pub use legacy::{ConnectionEvent, Peer};

/// The two clocks a tick reads, passed in so that tests can drive the collector.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Now {
    /// `CLOCK_MONOTONIC` ns: the clock events are stamped with (ages, exits, retention).
    pub monotonic_ns: u64,
    /// Wall clock, ns since the epoch: history buckets and records shown to people.
    pub unix_ns: u64,
}

impl Now {
    /// The system's clocks now.
    pub fn system() -> Now {
        Now {
            monotonic_ns: ttmem_scan::attach::monotonic_ns(),
            unix_ns: ttmem_model::now_ns(),
        }
    }
}

/// Where one process's figures come from: exactly one source per process.
enum Source {
    /// Its own region, drained into the ledger.
    Region(Box<region::RegionSource>),
    /// A client of the legacy allocation-server socket.
    Legacy(Box<legacy::LegacyProc>),
}

struct Proc {
    /// The exact counters and identity every reader sees.
    view: ProcessView,
    source: Source,
    pidfd: Option<OwnedFd>,
    exited_at_ns: Option<u64>,
}

/// What the collector was told at creation.
#[derive(Clone, Debug)]
pub struct CollectorConfig {
    /// Where regions are.
    pub region_dir: PathBuf,
    /// How long exited processes stay.
    pub retention: Duration,
    /// Remove dead processes' region files.
    pub remove_dead_regions: bool,
    /// Where TT-Metal writes its counter files (None: not read).
    pub tt_metal_dir: Option<PathBuf>,
    /// The proc root (the kernel driver's pid lists, the facts about their processes).
    pub proc_root: PathBuf,
    /// The longest a region waits between drains; a busy one is drained sooner, at its pace.
    pub drain_interval: Duration,
    /// Regions followed at once per user other than root.
    pub max_regions_per_user: usize,
    /// Exited processes kept at most (the oldest go first, before their retention ends).
    pub max_exited: usize,
    /// Allocations that exited processes left behind kept at most, in all (the oldest processes
    /// go first).
    pub max_exited_allocations: u64,
    /// Events kept per process in its flight recorder.
    pub flight_recorder_events: usize,
    /// The alert rules.
    pub alert_rules: Vec<ttmem_alerts::Rule>,
    /// Seconds between evaluations of the rules.
    pub alert_interval_s: u64,
}

impl CollectorConfig {
    /// The daemon's defaults for regions in `region_dir` (no TT-Metal files, the real `/proc`).
    pub fn new(region_dir: PathBuf) -> CollectorConfig {
        use crate::config as c;
        CollectorConfig {
            region_dir,
            retention: Duration::from_secs(c::DEFAULT_RETENTION_S),
            remove_dead_regions: true,
            tt_metal_dir: None,
            proc_root: PathBuf::from(ttmem_ttmetal::DEFAULT_PROC_ROOT),
            drain_interval: Duration::from_millis(c::DEFAULT_DRAIN_MS),
            max_regions_per_user: c::DEFAULT_MAX_REGIONS_PER_USER,
            max_exited: c::DEFAULT_MAX_EXITED_PROCESSES,
            max_exited_allocations: c::DEFAULT_MAX_EXITED_ALLOCATIONS,
            flight_recorder_events: c::DEFAULT_FLIGHT_RECORDER_EVENTS,
            alert_rules: ttmem_alerts::default_rules(),
            alert_interval_s: crate::alerting::DEFAULT_INTERVAL_S,
        }
    }
}

/// See the module docs.
pub struct Collector {
    cfg: CollectorConfig,
    ledger: Ledger,
    procs: HashMap<ProcKey, Proc>,
    /// What each ledger device is in the device table.
    identities: HashMap<DeviceKey, DeviceIdentity>,
    regions: region::Discovery,
    /// One drain round's events, converted for the ledger (kept to reuse its allocation).
    events: Vec<ttmem_ledger::Event>,
    /// One drain's per-shard counts (kept, like `events`, to reuse its allocation).
    shard_scratch: Vec<(u64, u64, u64)>,
    next_key: ProcKey,
    stats: CollectorStats,
    history: History,
    last_sample_s: u64,
    records: Vec<ProcessRecord>,
    generation: u64,
    legacy: legacy::LegacyHub,
    external: external::External,
    rescan_requested: bool,
    last_rescan_ns: Option<u64>,
    alerts: ttmem_alerts::Engine,
    last_alert_s: u64,
}

/// How often the region directory is listed without inotify having seen a change.
pub const RESCAN_INTERVAL_NS: u64 = 2_000_000_000;

impl Collector {
    /// A collector with an empty ledger whose ages count from `monotonic_ns`.
    pub fn new(cfg: CollectorConfig, monotonic_ns: u64) -> Self {
        let alerts = ttmem_alerts::Engine::new(cfg.alert_rules.clone());
        let mut ledger = Ledger::new(monotonic_ns);
        ledger.set_flight_recorder_events(cfg.flight_recorder_events);
        Collector {
            cfg,
            ledger,
            procs: HashMap::new(),
            identities: HashMap::new(),
            regions: region::Discovery::default(),
            events: Vec::new(),
            shard_scratch: Vec::new(),
            next_key: ProcKey(1),
            stats: CollectorStats::default(),
            history: History::new(),
            last_sample_s: 0,
            records: Vec::new(),
            generation: 0,
            legacy: legacy::LegacyHub::default(),
            external: external::External::default(),
            rescan_requested: true,
            last_rescan_ns: None,
            alerts,
            last_alert_s: 0,
        }
    }

    /// Asks the next tick to list the region directory (inotify saw a change there, or it is
    /// unavailable and every tick must look).
    pub fn request_rescan(&mut self) {
        self.rescan_requested = true;
    }

    /// The ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Statistics.
    pub fn stats(&self) -> CollectorStats {
        self.stats
    }

    /// Moves whenever anything a snapshot shows may have changed (events, counters, devices,
    /// processes appearing, dying or expiring): equal generations mean equal snapshots.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The region directory.
    pub fn region_dir(&self) -> &Path {
        &self.cfg.region_dir
    }

    /// One round: discover, drain, check liveness, expire old records, and once per
    /// wall-clock second sample history.
    pub fn tick(&mut self, now: Now) {
        self.tick_start(now);
        self.drain_all(now.monotonic_ns);
        self.tick_finish(now);
    }

    /// A tick's first part: discovery. The daemon drains the due regions one at a time after
    /// it ([`Collector::due_regions`], [`Collector::drain_region`]), letting API readers in
    /// between, then calls [`Collector::tick_finish`].
    pub fn tick_start(&mut self, now: Now) {
        self.stats.ticks += 1;
        // The directory is listed when something in it changed (inotify) or, as a backstop,
        // every RESCAN_INTERVAL_NS: a directory of junk costs a listing now and then, not 20
        // a second.
        if self.rescan_requested
            || self
                .last_rescan_ns
                .is_none_or(|t| now.monotonic_ns.saturating_sub(t) >= RESCAN_INTERVAL_NS)
        {
            self.rescan_requested = false;
            self.last_rescan_ns = Some(now.monotonic_ns);
            self.discover();
        }
    }

    /// A tick's last part: liveness, removed regions, TT-Metal's files, retention, and once per
    /// wall-clock second a history sample.
    pub fn tick_finish(&mut self, now: Now) {
        self.check_liveness(now);
        self.let_go_of_unlinked(now.monotonic_ns);
        self.read_external(now.monotonic_ns);
        self.expire(now.monotonic_ns);
        let wall_s = now.unix_ns / 1_000_000_000;
        if wall_s != self.last_sample_s {
            self.last_sample_s = wall_s;
            // Ages in a snapshot move with time: a cached snapshot lives at most a second.
            self.generation += 1;
            self.sample(wall_s);
            if wall_s >= self.last_alert_s.saturating_add(self.cfg.alert_interval_s.max(1)) {
                self.last_alert_s = wall_s;
                self.evaluate_alerts(now.unix_ns);
            }
        }
    }

    /// Evaluates the alert rules over what the collector sees at `unix_ns`.
    pub fn evaluate_alerts(&mut self, unix_ns: u64) {
        let mut engine = std::mem::replace(&mut self.alerts, ttmem_alerts::Engine::new(Vec::new()));
        engine.evaluate(&facts::CollectorFacts::new(self, unix_ns), unix_ns);
        self.alerts = engine;
    }

    /// The alerts: their states, transitions and rules.
    pub fn alerts(&self) -> &ttmem_alerts::Engine {
        &self.alerts
    }

    /// The alerts, to take their transitions or restore them from the database.
    pub fn alerts_mut(&mut self) -> &mut ttmem_alerts::Engine {
        &mut self.alerts
    }

    /// Records one history sample of every device category and of every running process's
    /// device categories.
    pub fn sample(&mut self, wall_s: u64) {
        let (views, _) = self.merged_views();
        let table = self.table_of(&views);
        for (id, d) in table.rows().iter().enumerate() {
            for c in &d.categories {
                if let Some(key) = series_key(&table, id as u32, &c.name, None) {
                    self.history.record(&key, wall_s, c.used);
                }
            }
        }
        for v in views.iter().filter(|v| v.state.is_running()) {
            for (identity, d) in v.identities() {
                let Some(id) = table.id_of(&identity) else { continue };
                for (c, desc) in d.counters.iter().zip(&d.device.categories) {
                    if let Some(key) = series_key(&table, id, &desc.name, Some((v.id.pid, v.id.start_time))) {
                        self.history.record(&key, wall_s, c.live_bytes.max(0) as u64);
                    }
                }
            }
        }
        self.history.prune(wall_s);
    }

    /// Each chip's buffer types with a capacity, with a line fitted to the last `window_s`
    /// seconds of their 1 s history up to `now_s` (wall clock), and when they fill up.
    pub fn forecasts(&self, now_s: u64, window_s: u64) -> Vec<ttmem_model::api::CategoryForecast> {
        let table = self.device_table();
        let from_s = now_s.saturating_sub(window_s);
        let mut out = Vec::new();
        for d in table.rows() {
            for cat in d.categories.iter().filter(|c| c.total > 0) {
                let trend = series_key(&table, d.id, &cat.name, None)
                    .map(|key| self.history.query(&key, 0, from_s, now_s))
                    .and_then(|points| ttmem_history::forecast::trend(&points, from_s, now_s, 1));
                out.push(ttmem_model::api::CategoryForecast {
                    device: d.id,
                    hw_id: d.hw_id.clone(),
                    category: cat.name.clone(),
                    used: cat.used,
                    capacity: cat.total,
                    slope_bytes_per_s: trend.map(|t| t.slope_per_s),
                    r2: trend.map(|t| t.r2),
                    samples: trend.map_or(0, |t| t.samples),
                    time_to_full_s: trend.and_then(|t| t.time_to_full(cat.used, cat.total)),
                });
            }
        }
        out
    }

    /// The history.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The history, to load persisted points or take pending ones.
    pub fn history_mut(&mut self) -> &mut History {
        &mut self.history
    }

    /// Process records to persist since the last call (starts and exits).
    pub fn take_records(&mut self) -> Vec<ProcessRecord> {
        std::mem::take(&mut self.records)
    }

    /// Queues the record of a process that started, or (with `exited_unix_ns`) that exited with
    /// what it left behind, its devices numbered as `ps` numbers them.
    fn push_record(&mut self, key: ProcKey, exited_unix_ns: Option<u64>) {
        let Some(p) = self.procs.get(&key) else { return };
        let row = self.device_table().process_row(&p.view, exited_unix_ns.unwrap_or(0));
        self.records.push(ProcessRecord {
            pid: row.id.pid,
            start_time: row.id.start_time,
            uid: row.id.uid,
            name: row.id.name,
            cmdline: row.id.cmdline,
            started_unix_ns: p.view.started_unix_ns,
            exited_unix_ns,
            peak_bytes: row.peak_bytes,
            left_behind: match exited_unix_ns {
                Some(_) => serde_json::to_value(&row.devices).unwrap_or_default(),
                None => serde_json::Value::Array(vec![]),
            },
        });
    }

    /// Adds a process with its source; its record of start is queued.
    fn add_process(&mut self, view: ProcessView, source: Source, pidfd: Option<OwnedFd>) -> ProcKey {
        let key = self.next_key;
        self.next_key.0 += 1;
        self.ledger.add_process(key);
        self.procs.insert(
            key,
            Proc {
                view,
                source,
                pidfd,
                exited_at_ns: None,
            },
        );
        self.generation += 1;
        self.push_record(key, None);
        key
    }

    /// Checks which running processes died (pidfd readiness, else `/proc` start time) and
    /// records their deaths.
    pub fn check_liveness(&mut self, now: Now) {
        let boot = ttmem_scan::current_boot_id();
        let dead: Vec<ProcKey> = self
            .procs
            .iter()
            .filter(|(_, p)| p.exited_at_ns.is_none())
            .filter(|(_, p)| match (&p.pidfd, &p.source) {
                (Some(fd), _) => lifecycle::pidfd_exited(fd.as_raw_fd()),
                (None, Source::Region(r)) => ttmem_scan::liveness(r.header(), boot) == ttmem_scan::Liveness::Exited,
                (None, Source::Legacy(_)) => ttmem_scan::start_time_of(p.view.id.pid) != Some(p.view.id.start_time),
            })
            .map(|(&k, _)| k)
            .collect();
        for key in dead {
            self.process_died(key, now);
        }
    }

    /// Records a death: a last drain (the ring is still readable), then the process's memory
    /// leaves the totals and stays as what it left behind; its region file is removed.
    pub fn process_died(&mut self, key: ProcKey, now: Now) {
        if let Err(e) = self.drain_one(key, now.monotonic_ns) {
            tracing::debug!(process = key.0, "last drain failed: {e}");
        }
        let Some(p) = self.procs.get_mut(&key) else { return };
        if p.exited_at_ns.is_some() {
            return;
        }
        p.exited_at_ns = Some(now.monotonic_ns);
        p.view.state = ProcState::Exited;
        p.pidfd = None;
        tracing::info!(pid = p.view.id.pid, exe = %p.view.id.name, "process exited");
        if let Source::Region(r) = &mut p.source
            && self.cfg.remove_dead_regions
            && r.detach_and_remove()
        {
            self.stats.regions_removed += 1;
        }
        self.generation += 1;
        self.ledger.process_exited(key, now.monotonic_ns);
        self.stats.deaths += 1;
        self.push_record(key, Some(now.unix_ns));
    }

    /// Forgets exited processes older than the retention period, and the oldest beyond
    /// `max_exited` (their records stay in the database): churn cannot grow the daemon
    /// without bound within the retention period.
    pub fn expire(&mut self, monotonic_ns: u64) {
        let retention = self.cfg.retention.as_nanos() as u64;
        let mut exited: Vec<(u64, ProcKey)> = self
            .procs
            .iter()
            .filter_map(|(&k, p)| p.exited_at_ns.map(|t| (t, k)))
            .collect();
        exited.sort_unstable();
        // The oldest beyond the cap on processes go, then more of the oldest while the rest
        // hold more allocations than the cap on what exited processes left behind.
        let mut beyond_cap = exited.len().saturating_sub(self.cfg.max_exited);
        let mut held: u64 = exited[beyond_cap..]
            .iter()
            .map(|&(_, k)| self.ledger.live_count(k))
            .sum();
        while beyond_cap < exited.len() && held > self.cfg.max_exited_allocations {
            held = held.saturating_sub(self.ledger.live_count(exited[beyond_cap].1));
            beyond_cap += 1;
        }
        let old: Vec<ProcKey> = exited
            .iter()
            .enumerate()
            .filter(|&(i, &(t, _))| i < beyond_cap || monotonic_ns.saturating_sub(t) >= retention)
            .map(|(_, &(_, k))| k)
            .collect();
        for k in old {
            self.generation += 1;
            if let Some(p) = self.procs.remove(&k) {
                match &p.source {
                    Source::Legacy(_) => self.legacy.forget(p.view.id.pid, p.view.id.start_time),
                    Source::Region(r) => self.regions.forget(r.path()),
                }
                self.history.remove_process(p.view.id.pid, p.view.id.start_time);
            }
            self.ledger.remove_process(k);
        }
    }

    /// Pidfds of running processes, for a poll loop that wakes on deaths.
    pub fn pidfds(&self) -> Vec<RawFd> {
        self.procs
            .values()
            .filter_map(|p| p.pidfd.as_ref().map(|f| f.as_raw_fd()))
            .collect()
    }

    /// The process key of a pid: the running process with it, else the latest exited one.
    pub fn key_of_pid(&self, pid: u32) -> Option<ProcKey> {
        self.procs
            .iter()
            .filter(|(_, p)| p.view.id.pid == pid)
            .max_by_key(|(k, p)| (p.exited_at_ns.is_none(), **k))
            .map(|(&k, _)| k)
    }

    /// The pid of a process key.
    pub fn pid_of(&self, key: ProcKey) -> Option<u32> {
        self.procs.get(&key).map(|p| p.view.id.pid)
    }

    /// The view of a process key.
    pub fn view(&self, key: ProcKey) -> Option<&ProcessView> {
        self.procs.get(&key).map(|p| &p.view)
    }

    /// Every process the collector knows, one view each: its regions and legacy clients, and
    /// what TT-Metal's counter files and the kernel driver's pid lists add, merged by
    /// `ttmem_model::sources::merge`; with the sources' notes.
    pub fn merged_views(&self) -> (Vec<ProcessView>, Vec<String>) {
        let mut all: Vec<ProcessView> = self.procs.values().map(|p| p.view.clone()).collect();
        all.extend(self.external.views.iter().cloned());
        let (views, merge_notes) = ttmem_model::sources::merge(all);
        let mut notes = self.external.notes.clone();
        notes.extend(merge_notes);
        (views, notes)
    }

    /// The device table over every process the collector knows (the ids `ps` shows).
    pub fn device_table(&self) -> DeviceTable {
        self.table_of(&self.merged_views().0)
    }

    /// The device table of `views` (from [`Collector::merged_views`]) and the chips TT-Metal's
    /// counter files describe.
    pub fn table_of(&self, views: &[ProcessView]) -> DeviceTable {
        DeviceTable::with_chips(views, &self.external.chips)
    }

    /// Ledger device → `ps` device id, by the one numbering rule.
    pub fn device_ids(&self) -> HashMap<DeviceKey, u32> {
        let table = self.device_table();
        self.identities
            .iter()
            .filter_map(|(&k, identity)| table.id_of(identity).map(|id| (k, id)))
            .collect()
    }

    /// Each `ps` device id of `table` with its ledger device (the lowest key where several
    /// sources name one chip, as [`Collector::ledger_device`] picks).
    pub fn ledger_devices(&self, table: &DeviceTable) -> std::collections::BTreeMap<u32, DeviceKey> {
        let mut out = std::collections::BTreeMap::new();
        for (&dk, identity) in &self.identities {
            if let Some(id) = table.id_of(identity) {
                let e = out.entry(id).or_insert(dk);
                *e = (*e).min(dk);
            }
        }
        out
    }

    /// The ledger device behind a `ps` device id.
    pub fn ledger_device(&self, id: u32) -> Option<DeviceKey> {
        let identity = self.device_table().identity(id)?;
        self.identities
            .iter()
            .filter(|(_, i)| **i == identity)
            .map(|(&k, _)| k)
            .min()
    }

    /// Processes whose ledger detail lacks allocations (all, or those with memory on the `ps`
    /// device `device`): what answers built from the detail must name. `mono_ns` and `unix_ns`
    /// are the clocks now, to date the point the detail resumed.
    pub fn incomplete_detail(&self, device: Option<u32>, mono_ns: u64, unix_ns: u64) -> Vec<IncompleteDetail> {
        let table = device.map(|_| self.device_table());
        let mut out: Vec<IncompleteDetail> = self
            .procs
            .iter()
            .filter_map(|(&key, p)| {
                let c = self.ledger.completeness(key)?;
                if c.is_complete() {
                    return None;
                }
                if let (Some(id), Some(table)) = (device, &table)
                    && !p
                        .view
                        .identities()
                        .any(|(identity, _)| table.id_of(&identity) == Some(id))
                {
                    return None;
                }
                Some(IncompleteDetail {
                    pid: p.view.id.pid,
                    name: p.view.id.name.clone(),
                    events_lost: c.lost,
                    detail_since_unix_ns: c
                        .detail_since_ns
                        .map(|t| unix_ns.saturating_sub(mono_ns.saturating_sub(t))),
                })
            })
            .collect();
        out.sort_by_key(|d| d.pid);
        out
    }

    /// The `ps` snapshot (schema 1) of everything the collector knows, from exact counters.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot_at(ttmem_model::now_ns())
    }

    /// Like [`Collector::snapshot`], with ages counted to `unix_ns`.
    pub fn snapshot_at(&self, unix_ns: u64) -> Snapshot {
        let (views, notes) = self.merged_views();
        self.snapshot_of(&views, notes, unix_ns)
    }

    /// The snapshot of `views` and their `notes` (from [`Collector::merged_views`]), for a
    /// caller that needs the views too.
    pub fn snapshot_of(&self, views: &[ProcessView], notes: Vec<String>, unix_ns: u64) -> Snapshot {
        Snapshot::build(
            views,
            SnapshotMeta {
                source: "daemon".into(),
                region_dir: self.cfg.region_dir.display().to_string(),
                timestamp_ns: unix_ns,
                skipped: self
                    .regions
                    .refused()
                    .map(|(path, reason)| SkippedRegion {
                        path: path.display().to_string(),
                        reason: reason.to_string(),
                    })
                    .chain(self.external.skipped.iter().cloned())
                    .collect(),
                not_permitted: self.regions.not_permitted(),
                notes,
                chips: self.external.chips.clone(),
            },
        )
    }
}

/// The one way to name a history series: device `id`'s stable name, a category, and
/// optionally one process (pid, start time).
pub fn series_key(table: &DeviceTable, id: u32, category: &str, process: Option<(u32, u64)>) -> Option<SeriesKey> {
    Some(SeriesKey {
        device: table.series_name(id)?,
        category: category.to_string(),
        process,
    })
}

/// Modification time of a path, to notice a refused file that changed.
fn mtime(meta: &std::fs::Metadata) -> Option<SystemTime> {
    meta.modified().ok()
}
